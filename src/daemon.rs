//! What every long-running p2pu process (agent, agent-serve, nat-client, proxy) sets up the
//! same way: logging, and stopping on signals. One log setting (`--log`, or `P2PU_LOG`) for
//! all of them; SIGTERM or SIGINT ask for a clean stop, and a second one exits at once, so a
//! stuck shutdown never needs SIGKILL.
//!
//! Logs are `tracing` to stderr, one line per event, no colour unless stderr is a terminal.
//! Under systemd, where stderr is the journal's stream, each line starts with its syslog
//! priority (`<4>` for a warning, sd-daemon(3)) and carries no time or level of its own:
//! journald stamps it, files it under that priority (`journalctl -p warning`), and the line
//! holds one timestamp, not two. Owns [`DaemonError`], what that set-up fails with.
//!
//! Also the one owner of journald priorities for commands that are not daemons but run as
//! units (`heartbeat` from its timer, `init --first-boot`): [`JournalLines`] prefixes each
//! line they print with the same priority numbers, `<3>` for an `error:` line, `<4>` for a
//! `warning:` line, `<6>` for the rest, so `journalctl -p warning` finds their trouble too.

/// Setting up a daemon failed: its log filter, or its signal handlers.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("log filter `{filter}`")]
    LogFilter {
        filter: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("installing a handler for signal {signal}")]
    Signal {
        signal: i32,
        #[source]
        source: std::io::Error,
    },
}

impl crate::error::LayerError for DaemonError {}

type Result<T> = std::result::Result<T, DaemonError>;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;

/// The log filter every daemon takes, in tracing's env-filter syntax.
pub const DEFAULT_LOG: &str = "info";

/// Logging as the module header says; a second call is a no-op.
pub fn init_logging(filter: &str) -> Result<()> {
    init_logging_to(filter, logs_to_journal())
}

/// Whether this process's stderr is the journal's stream (see the module header).
pub fn logs_to_journal() -> bool {
    stderr_is_journal()
}

/// Logging in the journal's format when `journal`: for a child that inherited the journal
/// stream as its stderr but cannot see that for itself (the agent's serving child runs with an
/// empty environment under another uid), so its parent tells it.
pub fn init_logging_to(filter: &str, journal: bool) -> Result<()> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(filter).map_err(|source| {
        DaemonError::LogFilter {
            filter: filter.to_string(),
            source,
        }
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if journal {
        let format = tracing_subscriber::fmt::format()
            .with_target(false)
            .with_level(false)
            .without_time();
        let _ = builder.event_format(Journald(format)).try_init();
    } else {
        let _ = builder.with_target(false).try_init();
    }
    Ok(())
}

/// systemd names the journal stream it connected in `JOURNAL_STREAM` (`<dev>:<inode>`);
/// stderr is that stream unless it was redirected since (systemd.exec(5)).
fn stderr_is_journal() -> bool {
    fd_is_journal(2)
}

/// Whether the process's stdout (`fd` 1) or stderr (2) is the journal's stream.
pub fn fd_is_journal(fd: u8) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(file) = std::fs::metadata(format!("/proc/self/fd/{fd}")) else {
        return false;
    };
    stream.to_string_lossy() == format!("{}:{}", file.dev(), file.ino())
}

/// A command's output stream to the journal, each line prefixed with its priority: `error:`
/// lines err, `warning:` lines warning, others `default` (see the module header). Partial
/// lines wait for their end; what is left is written on flush and on drop.
pub struct JournalLines<W: std::io::Write> {
    inner: W,
    line: Vec<u8>,
    default: tracing::Level,
    /// The start of the current line was already written (with its prefix) by a flush.
    continued: bool,
}

impl<W: std::io::Write> JournalLines<W> {
    pub fn new(inner: W, default: tracing::Level) -> JournalLines<W> {
        JournalLines {
            inner,
            line: Vec::new(),
            default,
            continued: false,
        }
    }

    /// The level a line of command output is filed under.
    fn level_of(&self, line: &[u8]) -> tracing::Level {
        let line = line.trim_ascii_start();
        if line.starts_with(b"error:") {
            tracing::Level::ERROR
        } else if line.starts_with(b"warning:") {
            tracing::Level::WARN
        } else {
            self.default
        }
    }

    /// Writes what is held, prefixed unless its line's start was written already.
    fn emit(&mut self) -> std::io::Result<()> {
        if self.line.is_empty() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(self.line.len() + 3);
        if !self.continued {
            out.extend_from_slice(format!("<{}>", priority(&self.level_of(&self.line))).as_bytes());
        }
        out.extend_from_slice(&self.line);
        self.inner.write_all(&out)?;
        self.continued = self.line.last() != Some(&b'\n');
        self.line.clear();
        Ok(())
    }
}

impl<W: std::io::Write> std::io::Write for JournalLines<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&rest[..=end]);
            self.emit()?;
            rest = &rest[end + 1..];
        }
        self.line.extend_from_slice(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.emit()?;
        self.inner.flush()
    }
}

impl<W: std::io::Write> Drop for JournalLines<W> {
    fn drop(&mut self) {
        let _ = std::io::Write::flush(self);
    }
}

/// Prefixes each event with its syslog priority for journald.
struct Journald<F>(F);

impl<S, N, F> FormatEvent<S, N> for Journald<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// syslog(3) priorities: err, warning, info, debug.
fn priority(level: &tracing::Level) -> u8 {
    match *level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    }
}

static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// The flag SIGTERM and SIGINT set, for the daemon's loops to end cleanly on; with the flag
/// already set, the signal exits the process at once (status 1). Installed once per process.
pub fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    if let Some(stop) = STOP.get() {
        return Ok(stop.clone());
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // Registered first, so it sees the flag as the earlier signal left it.
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())
            .and_then(|_| signal_hook::flag::register(signal, stop.clone()))
            .map_err(|source| DaemonError::Signal { signal, source })?;
    }
    Ok(STOP.get_or_init(|| stop).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(priority(&tracing::Level::ERROR), 3);
        assert_eq!(priority(&tracing::Level::WARN), 4);
        assert_eq!(priority(&tracing::Level::INFO), 6);
        assert_eq!(priority(&tracing::Level::DEBUG), 7);
        assert_eq!(priority(&tracing::Level::TRACE), 7);
    }

    /// A command's lines reach the journal with the priority their words say, whole lines at
    /// a time however they were written, and a last line without its newline is not lost.
    #[test]
    fn command_lines_carry_the_priority_their_words_say() {
        use std::io::Write;
        let mut out = Vec::new();
        {
            let mut lines = JournalLines::new(&mut out, tracing::Level::INFO);
            lines
                .write_all(b"heartbeat signed at 5 for 2 name(s)\nwarn")
                .unwrap();
            lines
                .write_all(b"ing: serf.service is not installed\n")
                .unwrap();
            lines
                .write_all(b"error: Serf's RPC refuses\nno newline")
                .unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<6>heartbeat signed at 5 for 2 name(s)\n\
             <4>warning: serf.service is not installed\n\
             <3>error: Serf's RPC refuses\n\
             <6>no newline"
        );
        // A flush in mid-line writes its start once, prefixed; the rest follows bare.
        let mut out = Vec::new();
        {
            let mut lines = JournalLines::new(&mut out, tracing::Level::WARN);
            lines.write_all(b"half").unwrap();
            lines.flush().unwrap();
            lines.write_all(b" a line\nnext\n").unwrap();
        }
        assert_eq!(String::from_utf8(out).unwrap(), "<4>half a line\n<4>next\n");
    }

    /// A line that carries its own priority (text a command prints from elsewhere: a remote
    /// node's Puppet output, a file) keeps it as text: journald reads only the first prefix.
    #[test]
    fn a_priority_in_the_text_is_not_taken() {
        use std::io::Write;
        let mut out = Vec::new();
        {
            let mut lines = JournalLines::new(&mut out, tracing::Level::INFO);
            lines.write_all(b"<0>the sky is falling\n").unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<6><0>the sky is falling\n"
        );
    }

    #[test]
    fn stderr_is_not_the_journal_without_journal_stream() {
        // The test runner's stderr is no journal stream whatever JOURNAL_STREAM says.
        if std::env::var_os("JOURNAL_STREAM").is_none() {
            assert!(!stderr_is_journal());
        }
    }
}
