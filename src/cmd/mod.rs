//! The command line: one struct per command in its own file; this enum only dispatches.

use crate::env::Env;
use crate::error::{chain, Result};
use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::io::Write;

pub mod agent;
pub mod agent_serve;
pub mod complete;
pub mod completions;
pub mod config;
pub mod config_get;
pub mod event;
pub mod fleet;
pub mod handle_event;
pub mod heartbeat;
pub mod help;
pub mod history;
pub mod init;
pub mod json;
pub mod key;
pub mod keygen;
pub mod lab;
pub mod logs;
pub mod mark;
pub mod nat_client;
pub mod proxy;
pub mod rollout;
pub mod status;
pub mod submit;
pub mod sync;
pub mod torrent;
pub mod verify;

/// p2pu: peer-to-peer updates for a fleet of small Linux machines.
///
/// Renders and runs Serf, Transmission and Puppet on each node, signs and broadcasts updates,
/// and applies them everywhere exactly once. Colour and progress only on a terminal, never
/// with NO_COLOR set; output is never paged; --json is the format in docs/json.md.
#[derive(Debug, Parser)]
#[command(name = "p2pu", version = VERSION, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// `p2pu --version` ([`crate::VERSION`]).
pub const VERSION: &str = crate::VERSION;

/// Exit statuses shared by the commands (README, Commands; the man pages' EXIT STATUS).
pub mod exit {
    /// Done, and nothing failed.
    pub const OK: i32 = 0;
    /// The command could not do its job: bad config, unreadable state, an engine unreachable.
    pub const ERROR: i32 = 1;
    /// The command line is wrong (clap's status).
    pub const USAGE: i32 = 2;
    /// An update failed: on this node (`status`, `sync`), on some member (`fleet status`,
    /// `submit --wait`).
    pub const FAILED: i32 = 3;
    /// Nothing failed, but some member did not answer (`fleet status`), an alive one had not
    /// applied the update in time (`submit --wait`), or what `sync` found had not settled.
    pub const INCOMPLETE: i32 = 4;
    /// This node holds no heartbeat signed within `agent.heartbeat_window_secs`
    /// (`status --check`): updates may be withheld from it.
    pub const STALE: i32 = 5;
    /// `status --check`: the agent is not running, or its state dir does not exist.
    pub const DOWN: i32 = 6;
    /// `submit --wait` has statuses of its own (issue 14), 0 when every targeted member
    /// applied the update ([`OK`]), else: it failed (or was reverted) on some member ...
    pub const WAIT_FAILED: i32 = 1;
    /// ... some member had not settled it by `--timeout` ...
    pub const WAIT_TIMED_OUT: i32 = 2;
    /// ... the rollout halted itself (some member reports it `halted`).
    pub const WAIT_HALTED: i32 = 3;
    /// `verify`: the file is not valid (malformed, tampered, signers not trusted or too few,
    /// another fleet's, expired).
    pub const INVALID: i32 = 3;
    /// `verify`: the file is well-formed but carries no signature of its own (a plan or a
    /// snapshot without the file it is signed through, a public key).
    pub const UNSIGNED: i32 = 4;
}

// Plumbing that services and packagers run (handle-event, agent-serve, config-get,
// completions, complete, man) is hidden from `--help`; the man pages leave it out too.
#[derive(Debug, Subcommand)]
pub enum Command {
    Init(init::Init),
    #[command(hide = true)]
    HandleEvent(handle_event::HandleEvent),
    Agent(agent::AgentCommand),
    #[command(hide = true)]
    AgentServe(agent_serve::AgentServe),
    Status(status::Status),
    History(history::History),
    Logs(logs::Logs),
    Submit(submit::Submit),
    Sync(sync::Sync),
    MarkGood(mark::MarkGood),
    MarkBad(mark::MarkBad),
    Heartbeat(heartbeat::HeartbeatCommand),
    /// Ask every member of the fleet what it applied.
    ///
    /// A Serf query that each node's event handler answers from its own state dir.
    #[command(subcommand)]
    Fleet(fleet::Fleet),
    /// Steer a rollout already announced: abort it, resume it, retry it where it failed.
    ///
    /// A signed control statement, broadcast to the fleet and verified by every node.
    #[command(subcommand)]
    Rollout(rollout::Rollout),
    #[command(subcommand)]
    Torrent(torrent::Torrent),
    Verify(verify::Verify),
    Keygen(keygen::Keygen),
    #[command(subcommand)]
    Key(key::Key),
    #[command(subcommand)]
    Config(config::ConfigCommand),
    #[command(hide = true)]
    ConfigGet(config_get::ConfigGet),
    #[command(hide = true)]
    Completions(completions::Completions),
    #[command(hide = true)]
    Complete(complete::Complete),
    #[command(hide = true)]
    Man(completions::Man),
    Lab(lab::Lab),
    Proxy(proxy::Proxy),
    NatClient(nat_client::NatClient),
    Event(event::Event),
}

/// `--config`: the site config, as every command that reads one takes it (also from
/// `P2PU_CONFIG`). Declared once so the flag, its variable and its default cannot drift apart.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// The site config.
    #[arg(long, env = "P2PU_CONFIG", default_value = "/etc/p2pu/site.toml")]
    pub config: std::path::PathBuf,
}

impl ConfigArg {
    /// The config's path, relative paths taken from the command's working directory.
    pub fn resolve(&self, env: &Env) -> std::path::PathBuf {
        env.resolve(&self.config)
    }
}

/// `--since` / `--until`: when a record's status changed, as `history` and `logs` bound it.
/// TIME is RFC 3339, a UTC date or an age (`crate::civil::parse_when`).
#[derive(Debug, Clone, clap::Args)]
pub struct TimeBounds {
    /// Only what changed at or after TIME (RFC 3339, a UTC date, or an age such as 2h or 7d).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only what changed at or before TIME.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
}

impl TimeBounds {
    /// The bounds in seconds since the epoch; a bad TIME is a usage error naming its flag.
    pub fn resolve(&self, now: u64) -> Result<(Option<u64>, Option<u64>)> {
        let when = |flag: &str, text: &Option<String>| {
            text.as_deref()
                .map(|t| crate::civil::parse_when(t, now))
                .transpose()
                .map_err(|e| crate::error::Error::BadArgument(format!("{flag} {e}")))
        };
        Ok((when("--since", &self.since)?, when("--until", &self.until)?))
    }

    pub fn given(&self) -> bool {
        self.since.is_some() || self.until.is_some()
    }
}

/// What a command reports back for the exit status (beyond plain failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Exit with this status without printing an error (e.g. `init --detailed-exitcodes`).
    Status(i32),
}

impl Command {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        match self {
            Command::Init(c) => c.run(env),
            Command::HandleEvent(c) => c.run(env),
            Command::Agent(c) => c.run(env),
            Command::AgentServe(c) => c.run(env),
            Command::Status(c) => c.run(env),
            Command::History(c) => c.run(env),
            Command::Logs(c) => c.run(env),
            Command::Submit(c) => c.run(env),
            Command::Sync(c) => c.run(env),
            Command::MarkGood(c) => c.run(env),
            Command::MarkBad(c) => c.run(env),
            Command::Heartbeat(c) => c.run(env),
            Command::Fleet(c) => c.run(env),
            Command::Rollout(c) => c.run(env),
            Command::Torrent(c) => c.run(env),
            Command::Verify(c) => c.run(env),
            Command::Keygen(c) => c.run(env),
            Command::Key(c) => c.run(env),
            Command::Config(c) => c.run(env),
            Command::ConfigGet(c) => c.run(env),
            Command::Completions(c) => c.run(env),
            Command::Complete(c) => c.run(env),
            Command::Man(c) => c.run(env),
            Command::Lab(c) => c.run(env),
            Command::Proxy(c) => c.run(env),
            Command::NatClient(c) => c.run(env),
            Command::Event(c) => c.run(env),
        }
    }
}

/// Writes a report to stdout: pretty JSON of `value` with `--json`, else `table`'s text.
pub fn emit<T: serde::Serialize>(
    env: &mut Env,
    json: bool,
    value: &T,
    table: impl FnOnce(&T) -> String,
) -> Result<()> {
    let text = if json {
        json::render(&env.command, value)?
    } else {
        table(value)
    };
    env.stdout
        .write_all(text.as_bytes())
        .map_err(crate::Error::io("writing to", "standard output"))
}

/// Parses `args` and runs the command; prints errors as one line on stderr.
pub fn main(args: impl IntoIterator<Item = OsString>, env: &mut Env) -> i32 {
    let parsed = help::command()
        .try_get_matches_from(args)
        .and_then(|matches| {
            env.command = command_path(&matches);
            <Cli as clap::FromArgMatches>::from_arg_matches(&matches)
        });
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let code = e.exit_code();
            let text = if env.interactive {
                e.render().ansi().to_string()
            } else {
                e.render().to_string()
            };
            let stream = if e.use_stderr() {
                &mut env.stderr
            } else {
                &mut env.stdout
            };
            let _ = stream.write_all(text.as_bytes());
            return code;
        }
    };
    match cli.command.run(env) {
        Ok(Outcome::Success) => 0,
        Ok(Outcome::Status(code)) => code,
        Err(crate::Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            0
        }
        Err(e) => {
            let _ = writeln!(env.stderr, "error: {}", chain(&e));
            if is_bad_argument(&e) {
                exit::USAGE
            } else {
                exit::ERROR
            }
        }
    }
}

/// Asks `ask` every 200 ms until it has an answer or `until` passed (`sync` and
/// `mark-good|mark-bad` waiting for the agent's answer file, then for the records to settle).
pub(crate) fn poll_until<T, E>(
    until: std::time::Instant,
    mut ask: impl FnMut() -> std::result::Result<Option<T>, E>,
) -> std::result::Result<Option<T>, E> {
    loop {
        if let Some(answer) = ask()? {
            return Ok(Some(answer));
        }
        if std::time::Instant::now() >= until {
            return Ok(None);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The words of the subcommand `matches` chose (`fleet status`).
fn command_path(matches: &clap::ArgMatches) -> String {
    let mut words = Vec::new();
    let mut at = matches;
    while let Some((name, sub)) = at.subcommand() {
        words.push(name);
        at = sub;
    }
    words.join(" ")
}

/// Whether `e` says a flag's value is wrong, which exits 2 like clap's own usage errors
/// (issue 29: `--waves 1,50%` exited 1, as if an engine had failed).
fn is_bad_argument(e: &crate::Error) -> bool {
    use crate::formats::plan::PlanError;
    matches!(e, crate::Error::BadArgument(_))
        || matches!(e.layer::<PlanError>(), Some(PlanError::BadValue { .. }))
}

/// Runs `p2pu` in-process for the commands' unit tests, with the working directory, stdin,
/// environment variables and (fake) engines a test gives.
#[cfg(test)]
pub(crate) mod testing {
    use crate::engines::clients::Engines;
    use crate::env::Env;
    use std::path::{Path, PathBuf};

    /// `p2pu <args>` in `cwd`, with empty stdin and no engine: exit status, stdout, stderr.
    pub fn run(cwd: &Path, args: &[&str]) -> (i32, String, String) {
        Run::new(cwd).run(args)
    }

    /// A temporary directory holding `site` as `site.toml`, for `--config site.toml`.
    pub fn site_dir(site: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("a temporary directory: {e}"));
        std::fs::write(dir.path().join("site.toml"), site)
            .unwrap_or_else(|e| panic!("writing site.toml: {e}"));
        dir
    }

    /// A dir with a signing key (`k/`, also the trusted-keys dir) and a site.toml naming it,
    /// a fleet and a state dir (`state/`).
    pub fn keyed_site() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("a temporary directory: {e}"));
        let (code, _, err) = run(dir.path(), &["keygen", "--out", "k"]);
        assert_eq!(code, 0, "{err}");
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("site.toml"),
            format!(
                "[agent]\nsigning_key = \"{d}/k/signing.key\"\nfleet_id = \"4242424242424242\"\n\
                 state_dir = \"{d}/state\"\ntrusted_keys_dir = \"{d}/k\"\n"
            ),
        )
        .unwrap_or_else(|e| panic!("writing site.toml: {e}"));
        dir
    }

    /// One run to set up before [`Run::run`].
    pub struct Run {
        cwd: PathBuf,
        stdin: Vec<u8>,
        vars: Vec<(String, String)>,
        engines: Engines,
    }

    impl Run {
        pub fn new(cwd: &Path) -> Run {
            Run {
                cwd: cwd.to_path_buf(),
                stdin: Vec::new(),
                vars: Vec::new(),
                engines: Engines::fakes(),
            }
        }

        pub fn stdin(mut self, bytes: &[u8]) -> Run {
            self.stdin = bytes.to_vec();
            self
        }

        /// Environment variables, as Serf passes event details.
        pub fn vars(mut self, vars: &[(&str, &str)]) -> Run {
            self.vars = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            self
        }

        pub fn engines(mut self, engines: Engines) -> Run {
            self.engines = engines;
            self
        }

        /// Runs `p2pu <args>`: exit status, stdout, stderr.
        pub fn run(self, args: &[&str]) -> (i32, String, String) {
            let (mut env, out, err) = Env::capture_with(&self.cwd, &self.stdin, self.engines);
            env.vars = self.vars.into_iter().collect();
            let argv = std::iter::once("p2pu").chain(args.iter().copied());
            let code = super::main(argv.map(Into::into), &mut env);
            (code, out.text(), err.text())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
        help::command().debug_assert();
    }

    #[test]
    fn version_names_the_commit_and_build_date() {
        let dir = tempfile::tempdir().unwrap();
        let (code, out, _) = testing::run(dir.path(), &["--version"]);
        assert_eq!(code, 0);
        let want = format!("p2pu {} (", env!("CARGO_PKG_VERSION"));
        assert!(out.starts_with(&want), "{out}");
        let date = env!("P2PU_BUILD_DATE");
        assert!(out.trim_end().ends_with(&format!("{date})")), "{out}");
        let shape: String = date
            .chars()
            .map(|c| if c.is_ascii_digit() { 'N' } else { c })
            .collect();
        assert_eq!(shape, "NNNN-NN-NN");
        // Built from a git checkout (as here): the commit is named, and it is one of this
        // repository's commits (not necessarily HEAD: a commit may land between build and test).
        let in_checkout = std::process::Command::new("git")
            .args(["rev-parse", "--git-dir"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .is_ok_and(|o| o.status.success());
        if in_checkout {
            let commit = out
                .trim_end()
                .strip_suffix(&format!(" {date})"))
                .and_then(|rest| rest.rsplit('(').next())
                .unwrap_or_else(|| panic!("no commit in {out}"));
            let known = std::process::Command::new("git")
                .args(["rev-parse", "--verify", "--quiet"])
                .arg(format!("{commit}^{{commit}}"))
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .is_ok_and(|o| o.status.success());
            assert!(known, "{commit} is not a commit of this repository: {out}");
        }
    }

    #[test]
    fn a_status_outcome_is_the_exit_code_without_an_error_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("site.toml"),
            format!("[agent]\nstate_dir = \"{}/s\"\n", dir.path().display()),
        )
        .unwrap();
        let store = crate::agent::runtime::state::StateStore::open(&dir.path().join("s")).unwrap();
        let mut record = crate::agent::runtime::state::Record::pending("x.pp", "00", b"x");
        record.status = crate::agent::runtime::state::Status::Failed;
        store.put(record).unwrap();
        let (code, _, err) = testing::run(dir.path(), &["status", "--config", "site.toml"]);
        assert_eq!((code, err.as_str()), (exit::FAILED, ""));
        let (code, _, _) = testing::run(dir.path(), &["status", "--bogus"]);
        assert_eq!(code, exit::USAGE);
    }
}

/// The state dir belongs to root (the agent): a user running `p2pu COMMAND` gets told what
/// to do, not just EACCES. Shared by the commands that read the state.
fn denied_state(e: crate::agent::runtime::RuntimeError, command: &str) -> crate::error::Error {
    match e {
        crate::agent::runtime::RuntimeError::Io { source, path, .. }
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            crate::error::Error::Usage(format!(
                "{}: permission denied: the agent's state is readable by root only; \
                 run as root (sudo p2pu {command})",
                path.display()
            ))
        }
        other => other.into(),
    }
}
