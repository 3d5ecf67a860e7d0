//! The engines p2pu drives, each behind a small trait so commands and the agent can be tested
//! with an in-process fake: Transmission over its HTTP RPC ([`TorrentEngine`]), Serf through
//! its CLI and, for queries, its RPC ([`Gossip`]) and `puppet apply` ([`Applier`]); systemd
//! for `init`; the clients this node's config describes ([`clients`]). Also owns the one
//! subprocess runner the CLI wrappers share (argument vectors, never a shell; captured output;
//! an optional deadline).

pub mod clients;
#[cfg(test)]
pub mod fake;
pub mod puppet;
pub mod serf;
pub mod systemd;
pub mod transmission;
pub mod warm_validator;

pub use puppet::{Applier, ApplyReport, ApplyStatus, Puppet, PuppetError};
pub use serf::{Gossip, JoinEvents, Member, MemberStatus, Serf, SerfError};
pub use transmission::{
    Added, Credentials, Retry, Session, TorrentEngine, TorrentState, TorrentStatus, Transmission,
    TransmissionError,
};

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// A subprocess to run: program, arguments and environment changes. `shown` is what error
/// messages print; it never contains secrets (those travel in `env`, which is never printed).
#[derive(Clone)]
pub(crate) struct Invocation {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub env_remove: Vec<OsString>,
    /// Send stderr into the same pipe as stdout so the output keeps its order (puppet).
    pub merge_stderr: bool,
}

/// What a finished subprocess left behind.
pub(crate) struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub elapsed: Duration,
}

/// Why a subprocess did not finish.
pub(crate) enum RunFailure {
    Spawn(std::io::Error),
    TimedOut(Duration),
}

impl Invocation {
    pub fn new(program: impl Into<OsString>) -> Invocation {
        Invocation {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            merge_stderr: false,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Invocation {
        self.args.push(arg.into());
        self
    }

    /// The command line as an operator would type it, for error messages.
    pub fn shown(&self) -> String {
        std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(shell_quote)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs to completion, or kills the process after `deadline`.
    pub fn run(&self, deadline: Option<Duration>) -> Result<Finished, RunFailure> {
        // In duct the innermost redirection wins, so the merge goes on before the captures.
        let mut expr = duct::cmd(&self.program, &self.args);
        if self.merge_stderr {
            expr = expr.stderr_to_stdout();
        }
        expr = expr
            .stdin_null()
            .stdout_capture()
            .stderr_capture()
            .unchecked();
        for (key, value) in &self.env {
            expr = expr.env(key, value);
        }
        for key in &self.env_remove {
            expr = expr.env_remove(key);
        }
        let started = Instant::now();
        let handle = expr.start().map_err(RunFailure::Spawn)?;
        // Polling with a growing pause keeps short commands (a warm check: ~10 ms) quick without a
        // waiter thread per call.
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(output) = handle.try_wait().map_err(RunFailure::Spawn)? {
                return Ok(Finished {
                    status: output.status,
                    stdout: output.stdout.clone(),
                    elapsed: started.elapsed(),
                });
            }
            if let Some(limit) = deadline {
                if started.elapsed() >= limit {
                    // Best effort: the process may have exited between the two calls.
                    let _ = handle.kill();
                    return Err(RunFailure::TimedOut(limit));
                }
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(25));
        }
    }
}

/// An argument vector as an operator would type it, for messages (the health check's).
pub fn shown_command(argv: &[String]) -> String {
    argv.iter()
        .map(|word| shell_quote(OsStr::new(word)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes one word for display when it holds anything a shell would split or expand.
fn shell_quote(word: &OsStr) -> String {
    let text = word.to_string_lossy();
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
    if plain {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// Output of a subprocess as one line for an error message: trimmed, lines joined with ` | `,
/// and cut to `max_lines` (keeping the last ones, where tools put the final error).
pub(crate) fn one_line(text: &str, max_lines: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|line| !line.trim().is_empty())
        .collect();
    let skip = lines.len().saturating_sub(max_lines);
    let mut joined = lines[skip..].join(" | ");
    if skip > 0 {
        joined.insert_str(0, "... | ");
    }
    joined
}

/// A program run by [`run_checked`] that failed: the command with its exit status and trimmed
/// stderr, or why it could not start.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("`{command}` {status}{}", crate::error::stderr_suffix(stderr))]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("running `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
}

impl crate::error::LayerError for CommandError {}

/// Runs a command with an argument vector; a failure carries the command, status and stderr.
pub fn run_checked(program: &str, args: &[String]) -> Result<(), CommandError> {
    let command = std::iter::once(program.to_string())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let output = duct::cmd(program, args)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .map_err(|source| CommandError::Spawn {
            command: command.clone(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(CommandError::Failed {
        command,
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// An engine the node runs as a program, missing: said once when a daemon starts, with the
/// package to install, rather than as a spawn error on every update that needs it.
#[derive(Debug, thiserror::Error)]
#[error("`{}` is not installed ({searched}): {needed_for}; install the Debian package {package}",
    program.display())]
pub struct NotInstalled {
    pub program: PathBuf,
    /// Where it was looked for: the PATH searched, or why a path is not a program.
    pub searched: String,
    pub needed_for: &'static str,
    pub package: &'static str,
}

impl NotInstalled {
    /// Where `program` runs from, looked up on this process's PATH; the error says what it is
    /// `needed_for` and which Debian `package` brings it.
    pub fn check(
        program: &Path,
        needed_for: &'static str,
        package: &'static str,
    ) -> Result<PathBuf, NotInstalled> {
        let path = std::env::var_os("PATH");
        find_program(program, path.as_deref()).map_err(|searched| NotInstalled {
            program: program.to_path_buf(),
            searched,
            needed_for,
            package,
        })
    }
}
impl crate::error::LayerError for NotInstalled {}

/// Where `program` runs from: itself when it names a path, else the first executable file of
/// that name on `path_var` (the value of PATH), as the kernel's exec lookup would find it.
pub fn find_program(program: &Path, path_var: Option<&OsStr>) -> Result<PathBuf, String> {
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.components().count() > 1 || program.is_absolute() {
        return if executable(program) {
            Ok(program.to_path_buf())
        } else {
            Err("not an executable file".into())
        };
    }
    let path_var = path_var.unwrap_or_default();
    std::env::split_paths(path_var)
        .map(|dir| dir.join(program))
        .find(|candidate| executable(candidate))
        .ok_or_else(|| format!("not found on PATH={}", path_var.to_string_lossy()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_program_searches_path_and_wants_an_executable_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (empty, bin) = (dir.path().join("empty"), dir.path().join("bin"));
        std::fs::create_dir(&empty).unwrap();
        std::fs::create_dir(&bin).unwrap();
        let tool = bin.join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::write(bin.join("plain"), "").unwrap();
        std::fs::create_dir(bin.join("dir")).unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(bin.join("dir"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([&empty, &bin]).unwrap();
        assert_eq!(
            find_program(Path::new("tool"), Some(&path)),
            Ok(tool.clone())
        );
        assert_eq!(find_program(&tool, None), Ok(tool.clone()));
        let searched = format!("not found on PATH={}", path.to_string_lossy());
        for missing in ["plain", "dir", "nothing"] {
            assert_eq!(
                find_program(Path::new(missing), Some(&path)),
                Err(searched.clone())
            );
        }
        assert_eq!(
            find_program(&bin.join("plain"), Some(&path)),
            Err("not an executable file".to_string())
        );
        assert_eq!(
            find_program(Path::new("tool"), None),
            Err("not found on PATH=".to_string())
        );
    }

    #[test]
    fn shown_command_quotes_words_a_shell_would_split() {
        let inv = Invocation::new("serf")
            .arg("event")
            .arg("-coalesce=false")
            .arg("--")
            .arg("p2pu-update")
            .arg("two words")
            .arg("it's");
        assert_eq!(
            inv.shown(),
            r"serf event -coalesce=false -- p2pu-update 'two words' 'it'\''s'"
        );
    }

    #[test]
    fn one_line_keeps_the_last_lines() {
        assert_eq!(one_line("a\n\n  b  \nc\n", 5), "a |   b | c");
        assert_eq!(one_line("a\nb\nc\n", 2), "... | b | c");
        assert_eq!(one_line(" \n", 2), "");
    }

    #[test]
    fn run_captures_output_and_status() {
        let finished = match Invocation::new("sh")
            .arg("-c")
            .arg("echo out; echo err >&2; exit 3")
            .run(Some(Duration::from_secs(10)))
        {
            Ok(finished) => finished,
            Err(_) => panic!("sh did not run"),
        };
        assert_eq!(finished.status.code(), Some(3));
        assert_eq!(finished.stdout, b"out\n", "stderr is not mixed in");
    }

    #[test]
    fn merged_stderr_lands_in_stdout_in_order() {
        let mut invocation = Invocation::new("sh")
            .arg("-c")
            .arg("echo one; echo two >&2; echo three");
        invocation.merge_stderr = true;
        let Ok(finished) = invocation.run(None) else {
            panic!("sh did not run")
        };
        assert_eq!(finished.stdout, b"one\ntwo\nthree\n");
    }

    #[test]
    fn run_kills_a_process_past_its_deadline() {
        let started = Instant::now();
        // A sleep far longer than any machine's hiccup: returning well before it ends proves the
        // kill, without a tight bound that a loaded CI machine could miss.
        let result = Invocation::new("sleep")
            .arg("600")
            .run(Some(Duration::from_millis(100)));
        assert!(matches!(result, Err(RunFailure::TimedOut(_))));
        assert!(started.elapsed() < Duration::from_secs(300));
    }
}
