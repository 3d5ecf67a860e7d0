//! The outside world a command sees: working directory, standard streams, the clock and the
//! engine clients. Tests build an [`Env`] with captured streams and fake engines and run
//! commands in-process.

use crate::engines::clients::Engines;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

pub struct Env {
    pub cwd: PathBuf,
    pub stdin: Box<dyn Read + Send>,
    pub stdout: Box<dyn Write + Send>,
    pub stderr: Box<dyn Write + Send>,
    /// True when stderr is a terminal and colour/progress bars are welcome.
    pub interactive: bool,
    /// True when stdout is a terminal and NO_COLOR is unset: tables may be coloured.
    pub color: bool,
    pub clock: fn() -> SystemTime,
    /// Environment variables (Serf passes event details this way).
    pub vars: std::collections::BTreeMap<String, String>,
    /// Transmission, Serf and Puppet behind their traits: the real ones built from the config
    /// a command loads, or a test's fakes.
    pub engines: Engines,
    /// The command being run (`fleet status`): its `--json` is documented under that name.
    pub command: String,
}

/// A shared byte buffer that a test keeps a handle on while the command writes into it.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `stream` as it is, or with each line's journald priority where it is the journal's stream
/// (a command run as a unit: `heartbeat`, `init --first-boot`; see [`crate::daemon`]).
fn journal_or(
    stream: impl Write + Send + 'static,
    fd: u8,
    default: tracing::Level,
) -> Box<dyn Write + Send> {
    if crate::daemon::fd_is_journal(fd) {
        Box::new(crate::daemon::JournalLines::new(stream, default))
    } else {
        Box::new(stream)
    }
}

impl Env {
    /// The real process: its cwd, streams and wall clock.
    pub fn process() -> Env {
        use std::io::IsTerminal;
        Env {
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            stdin: Box::new(io::stdin()),
            stdout: journal_or(io::stdout(), 1, tracing::Level::INFO),
            stderr: journal_or(io::stderr(), 2, tracing::Level::WARN),
            interactive: io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            color: io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            clock: SystemTime::now,
            vars: std::env::vars().collect(),
            engines: Engines::from_config(),
            command: String::new(),
        }
    }

    /// An environment for tests: given stdin, captured stdout and stderr, and no engine (a
    /// command that asks for one fails rather than reach a real daemon).
    pub fn capture(cwd: &Path, stdin: &[u8]) -> (Env, Captured, Captured) {
        Env::capture_with(cwd, stdin, Engines::fakes())
    }

    /// [`Env::capture`] with the fake engines a test hands in.
    pub fn capture_with(cwd: &Path, stdin: &[u8], engines: Engines) -> (Env, Captured, Captured) {
        let out = Captured::default();
        let err = Captured::default();
        let env = Env {
            cwd: cwd.to_path_buf(),
            stdin: Box::new(io::Cursor::new(stdin.to_vec())),
            stdout: Box::new(out.clone()),
            stderr: Box::new(err.clone()),
            interactive: false,
            color: false,
            clock: SystemTime::now,
            vars: Default::default(),
            engines,
            command: String::new(),
        };
        (env, out, err)
    }

    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// Seconds since the Unix epoch by this environment's clock.
    pub fn unix_now(&self) -> u64 {
        (self.clock)()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// Milliseconds since the Unix epoch by this environment's clock (the default `seq`).
    pub fn unix_now_ms(&self) -> u64 {
        (self.clock)()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    /// Resolves a path given on the command line against the command's working directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.cwd.join(path)
        }
    }
}
