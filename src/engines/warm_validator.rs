//! A warm `puppet parser validate`: owns the Ruby process that keeps Puppet loaded for
//! `submit`'s pre-broadcast check, its socket and how it is asked.
//!
//! A cold `puppet parser validate` spends about 0.5 s (1 s on a loaded machine) starting Ruby
//! and loading Puppet before it parses a 2 KiB manifest in milliseconds, and `submit` broadcasts
//! nothing until it answered: most of the time an operator waits for a small update. The first
//! check starts `warm_validator.rb` (detached, in its own process group) with the same settings
//! flags the cold command gets; it loads Puppet once, then validates each manifest it is sent in
//! a forked child, with the face action and error logging `puppet parser validate` itself runs,
//! so its verdict and its `Error:` lines are the command's. It listens on a socket in a
//! directory only its owner can enter (`<agent.state_dir>/puppet-validator`, 0700, checked
//! before every use), and exits after [`IDLE`] unused, once Puppet's files changed, or once its
//! socket is gone. Whenever it cannot answer (no Ruby script behind `puppet`, a directory that
//! is not the caller's, a path it cannot carry, a server that died), the caller runs the cold
//! command instead: the check is never skipped.

use sha2::{Digest, Sha256};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The server's source, run with `ruby -e`.
const SCRIPT: &str = include_str!("warm_validator.rb");
/// How long an unused server stays: long enough for an operator's next submit, short enough
/// that the ~60 MiB of a loaded Puppet are not kept for nothing.
pub const IDLE: Duration = Duration::from_secs(600);
/// The most a socket path may hold (`sun_path`, with its NUL).
const SUN_PATH_MAX: usize = 107;

/// How to reach (or start) the warm validator for one set of Puppet settings.
#[derive(Debug, Clone)]
pub struct WarmValidator {
    ruby: PathBuf,
    dir: PathBuf,
    socket: PathBuf,
    flags: Vec<OsString>,
}

/// What the warm validator answered: `puppet parser validate`'s exit status and output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub status: i32,
    pub output: String,
}

impl WarmValidator {
    /// The warm validator for `puppet` (the resolved binary) run with `flags`, its socket in
    /// `dir`; `None` when `puppet` is not Puppet's Ruby launcher (a test's stand-in, a wrapper)
    /// or the socket's path would be too long: the cold command is run then.
    pub fn new(puppet: &Path, dir: &Path, flags: Vec<OsString>) -> Option<WarmValidator> {
        let ruby = ruby_of(puppet)?;
        // One server per Puppet and settings: a config with other flags gets its own.
        let mut key = ruby.as_os_str().as_encoded_bytes().to_vec();
        for flag in &flags {
            key.push(0);
            key.extend_from_slice(flag.as_encoded_bytes());
        }
        key.extend_from_slice(SCRIPT.as_bytes());
        let digest = Sha256::digest(&key);
        let socket = dir.join(format!("{}.sock", &hex::encode(digest)[..16]));
        (socket.as_os_str().len() <= SUN_PATH_MAX).then(|| WarmValidator {
            ruby,
            dir: dir.to_path_buf(),
            socket,
            flags,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Validates `manifest` (an absolute path) with the warm server, starting it when none
    /// answers; `None` when it could not be asked, for the caller to run the cold command.
    pub fn validate(&self, manifest: &Path, timeout: Option<Duration>) -> Option<Verdict> {
        let path = manifest.to_str()?;
        if !manifest.is_absolute() || path.contains('\n') {
            return None;
        }
        self.own_dir()?;
        match self.ask(path, timeout) {
            Ask::Answered(verdict) => return Some(verdict),
            Ask::Stale => return None,
            Ask::NoServer => {}
        }
        // A socket nobody listens on is a server that died: its file goes, a new one starts.
        let _ = std::fs::remove_file(&self.socket);
        self.start(timeout)?;
        match self.ask(path, timeout) {
            Ask::Answered(verdict) => Some(verdict),
            Ask::Stale | Ask::NoServer => None,
        }
    }

    /// The socket's directory, made if missing and refused unless it is a directory (not a
    /// link) of this user that nobody else may enter: whoever could put a socket there would
    /// answer for Puppet.
    fn own_dir(&self) -> Option<()> {
        if let Err(e) = std::fs::create_dir(&self.dir) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                tracing::debug!(dir = %self.dir.display(), "no warm validator: {e}");
                return None;
            }
        } else {
            std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700)).ok()?;
        }
        let meta = std::fs::symlink_metadata(&self.dir).ok()?;
        let ours = meta.is_dir()
            && meta.uid() == nix::unistd::geteuid().as_raw()
            && meta.mode() & 0o077 == 0;
        if !ours {
            tracing::warn!(dir = %self.dir.display(), "not using the warm validator: its directory is not this user's alone");
        }
        ours.then_some(())
    }

    fn ask(&self, path: &str, timeout: Option<Duration>) -> Ask {
        let Ok(mut stream) = UnixStream::connect(&self.socket) else {
            return Ask::NoServer;
        };
        let _ = stream.set_read_timeout(timeout);
        let _ = stream.set_write_timeout(timeout);
        if stream.write_all(format!("{path}\n").as_bytes()).is_err() {
            return Ask::NoServer;
        }
        let mut answer = Vec::new();
        if stream.read_to_end(&mut answer).is_err() {
            return Ask::Stale;
        }
        parse_answer(&answer).map_or(Ask::Stale, Ask::Answered)
    }

    /// Starts the server and waits (at most `timeout`) until it listens.
    fn start(&self, timeout: Option<Duration>) -> Option<()> {
        let mut child = Command::new(&self.ruby)
            .arg("-e")
            .arg(SCRIPT)
            .arg("--")
            .arg(&self.socket)
            .arg(IDLE.as_secs().to_string())
            .args(&self.flags)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Not the submitter's: a Ctrl-C there must not kill the next submit's server.
            .process_group(0)
            .spawn()
            .map_err(|e| tracing::debug!(ruby = %self.ruby.display(), "starting the warm validator: {e}"))
            .ok()?;
        let stdout = child.stdout.take()?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let ready = BufReader::new(stdout).read_line(&mut line).is_ok() && line == "ready\n";
            let _ = tx.send(ready);
        });
        let ready = match timeout {
            Some(limit) => rx.recv_timeout(limit).unwrap_or(false),
            None => rx.recv().unwrap_or(false),
        };
        // The process started is only the one that detached the server (it exits at once).
        let _ = child.kill();
        let _ = child.wait();
        // Not ready: it failed to load, or another submit's server took the socket first.
        ready.then_some(())
    }
}

enum Ask {
    Answered(Verdict),
    /// It answered but not a verdict (Puppet changed under it, or it died mid-answer).
    Stale,
    NoServer,
}

/// `"<status>\n<output>"` as the server writes it; anything else is no verdict.
fn parse_answer(answer: &[u8]) -> Option<Verdict> {
    let text = String::from_utf8_lossy(answer);
    let (status, output) = text.split_once('\n')?;
    Some(Verdict {
        status: status.parse().ok()?,
        output: output.to_string(),
    })
}

/// The Ruby that runs `puppet`, when `puppet` is Puppet's own launcher: a script whose `#!`
/// line names a `ruby` and which loads Puppet's command line.
fn ruby_of(puppet: &Path) -> Option<PathBuf> {
    let mut head = vec![0u8; 512];
    let n = std::fs::File::open(puppet).ok()?.read(&mut head).ok()?;
    let head = String::from_utf8_lossy(&head[..n]);
    let interpreter = head.lines().next()?.strip_prefix("#!")?.trim();
    let ruby = Path::new(interpreter);
    let named_ruby = ruby
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("ruby"));
    (ruby.is_absolute() && named_ruby && head.contains("puppet/util/command_line"))
        .then(|| ruby.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_puppets_ruby_launcher_gets_a_warm_validator() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let launcher = write(
            "puppet",
            "#!/usr/bin/ruby\n\nbegin\n  require 'puppet/util/command_line'\n  Puppet::Util::CommandLine.new.execute\nend\n",
        );
        assert_eq!(ruby_of(&launcher), Some(PathBuf::from("/usr/bin/ruby")));
        // A test's stand-in, or a wrapper script: the cold command runs it as it is.
        let stand_in = write("fake", "#!/bin/sh\necho 'Error: no'\nexit 1\n");
        assert_eq!(ruby_of(&stand_in), None);
        let other_ruby = write("other", "#!/usr/bin/ruby\nputs 'hi'\n");
        assert_eq!(ruby_of(&other_ruby), None);
        let sock_dir = dir.path().join("v");
        assert!(WarmValidator::new(&stand_in, &sock_dir, Vec::new()).is_none());
        let warm = WarmValidator::new(&launcher, &sock_dir, vec!["--color=false".into()]).unwrap();
        let other = WarmValidator::new(&launcher, &sock_dir, vec!["--vardir".into()]).unwrap();
        assert_ne!(warm.socket(), other.socket(), "one server per set of flags");
    }

    #[test]
    fn answers_are_a_status_line_then_the_output() {
        assert_eq!(
            parse_answer(b"1\nError: Syntax error at end of input (file: /x.pp)\n"),
            Some(Verdict {
                status: 1,
                output: "Error: Syntax error at end of input (file: /x.pp)\n".into()
            })
        );
        assert_eq!(
            parse_answer(b"0\n"),
            Some(Verdict {
                status: 0,
                output: String::new()
            })
        );
        assert_eq!(parse_answer(b"stale\n"), None);
        assert_eq!(parse_answer(b""), None);
    }

    /// Whoever else could enter the socket's directory could answer for Puppet: such a
    /// directory is not used (the cold command runs).
    #[test]
    fn a_socket_dir_others_may_enter_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let puppet = dir.path().join("puppet");
        std::fs::write(
            &puppet,
            "#!/usr/bin/ruby\nrequire 'puppet/util/command_line'\n",
        )
        .unwrap();
        let sock_dir = dir.path().join("v");
        std::fs::create_dir(&sock_dir).unwrap();
        std::fs::set_permissions(&sock_dir, std::fs::Permissions::from_mode(0o733)).unwrap();
        let warm = WarmValidator::new(&puppet, &sock_dir, Vec::new()).unwrap();
        assert_eq!(warm.own_dir(), None);
        std::fs::set_permissions(&sock_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(warm.own_dir(), Some(()));
        // A link to a directory is refused too.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&sock_dir, &link).unwrap();
        let linked = WarmValidator::new(&puppet, &link, Vec::new()).unwrap();
        assert_eq!(linked.own_dir(), None);
    }
}
