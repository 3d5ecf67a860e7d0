//! The root agent's side of `p2pu agent-serve`: starts it as `agent.serve_user` (or `nobody`)
//! with no supplementary groups, no capabilities and no way to gain privileges back, waits for
//! its ready line, feeds it membership snapshots, spools the announcements members push to it
//! (`agent::transfer::push`: what the child writes after its ready line, checked again here),
//! restarts it with a backoff when it dies, and stops it with the agent. Only the process that
//! applies updates keeps root.

use super::peers::PeersSnapshot;
use crate::agent::transfer::serve::{Ready, ServeOptions};
use crate::error::chain;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The account every Debian system has, for machines without the `p2pu` user (labs, CI).
pub const FALLBACK_USER: &str = "nobody";

/// How long a new child may take to bind and print its ready line.
const READY_WAIT: Duration = Duration::from_secs(10);
/// How long the agent keeps trying at start, e.g. while a killed agent's old child still holds
/// the ports for the moment it takes to see its stdin close.
const STARTUP: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The first pause between attempts to start the child when the agent starts.
const FIRST_START_RETRY: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A child that ran this long before dying restarts after the first backoff again.
const HEALTHY: Duration = Duration::from_secs(60);
/// How long a stopping child gets after its stdin closed before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// The longest line the child may write after its ready line (a push: the wire text, JSON
/// escaped, and its sender); a longer one is read through and dropped.
const MAX_PUSH_LINE: usize = 2 * crate::agent::transfer::push::MAX_WIRE_BYTES + 256;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("neither agent.serve_user {user:?} nor {FALLBACK_USER:?} exists, so the tracker and web seed server have no unprivileged user to run as")]
    NoUser { user: String },
    #[error("agent.serve_user {user:?} is uid 0: the tracker and web seed server face the network and must not run as root")]
    RootUser { user: String },
    #[error("running `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` {status} before it was ready (its stderr is in the agent's log)")]
    Exited { command: String, status: String },
    #[error("`{command}` printed no ready line within {after:?}")]
    NotReady { command: String, after: Duration },
    #[error("`{command}` printed {line:?} instead of its ready line")]
    BadReady {
        command: String,
        line: String,
        #[source]
        source: serde_json::Error,
    },
}

impl crate::error::LayerError for ServeError {}

/// The user the serving process switches to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Who the serving process runs as: `None` (the agent's own user) unless the agent is root;
/// then `wanted`, or `nobody` with a warning when `wanted` does not exist.
pub fn run_as(
    wanted: &str,
    agent_is_root: bool,
    lookup: impl Fn(&str) -> Option<(u32, u32)>,
) -> Result<Option<RunAs>, ServeError> {
    if !agent_is_root {
        return Ok(None);
    }
    let (name, (uid, gid)) = match lookup(wanted) {
        Some(ids) => (wanted, ids),
        None => {
            let ids = lookup(FALLBACK_USER).ok_or_else(|| ServeError::NoUser {
                user: wanted.to_string(),
            })?;
            tracing::warn!(
                "agent.serve_user `{wanted}` does not exist, so the tracker and web seed server run as `{FALLBACK_USER}` (install/install.sh creates `{wanted}`)"
            );
            (FALLBACK_USER, ids)
        }
    };
    if uid == 0 {
        return Err(ServeError::RootUser {
            user: name.to_string(),
        });
    }
    Ok(Some(RunAs {
        name: name.to_string(),
        uid,
        gid,
    }))
}

/// The system's user database.
pub fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let user = nix::unistd::User::from_name(name).ok()??;
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

/// What to start: where to serve, as whom, with which log filter.
#[derive(Debug, Clone)]
pub struct ServeSpec {
    pub options: ServeOptions,
    /// `agent.serve_user`.
    pub user: String,
    pub log_filter: String,
    /// Where the announcements members push are spooled (`None`: they are dropped).
    pub spool: Option<std::path::PathBuf>,
}

/// The running `agent-serve` child and how to replace it.
pub struct ServeChild {
    spec: ServeSpec,
    run_as: Option<RunAs>,
    /// Kept apart from `state` so workers asking for the tracker URL never wait on a restart.
    ready: Mutex<Ready>,
    state: Mutex<State>,
}

struct State {
    running: Option<Running>,
    backoff: Duration,
    next_try: Instant,
    stopped: bool,
}

struct Running {
    child: Child,
    stdin: ChildStdin,
    since: Instant,
}

impl ServeChild {
    /// Starts the child and waits until it serves; retries for a few seconds, then fails.
    pub fn start(spec: ServeSpec) -> Result<ServeChild, ServeError> {
        let run_as = run_as(&spec.user, nix::unistd::geteuid().is_root(), lookup_user)?;
        let deadline = Instant::now() + STARTUP;
        // Backs off too (0.25 s, 0.5 s, 1 s...): a port still held by a child that is going
        // away frees in a moment, a real fault is not hammered at.
        let mut pause = FIRST_START_RETRY;
        let (running, ready) = loop {
            match spawn(&spec, run_as.as_ref()) {
                Ok(started) => break started,
                Err(e) if Instant::now() + pause < deadline => {
                    tracing::warn!(
                        retry_in_ms = pause.as_millis() as u64,
                        "starting the tracker and web seed server: {}; retrying",
                        chain(&e)
                    );
                    std::thread::sleep(pause);
                    pause = next_backoff(pause, MAX_BACKOFF);
                }
                Err(e) => return Err(e),
            }
        };
        tracing::info!(
            pid = running.child.id(),
            user = run_as.as_ref().map_or("(the agent's)", |u| u.name.as_str()),
            "tracker and web seed server process started"
        );
        Ok(ServeChild {
            spec,
            run_as,
            ready: Mutex::new(ready),
            state: Mutex::new(State {
                running: Some(running),
                backoff: FIRST_BACKOFF,
                next_try: Instant::now(),
                stopped: false,
            }),
        })
    }

    /// The addresses the current child bound.
    pub fn ready(&self) -> Ready {
        *self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tracker URL for magnets.
    pub fn tracker_url(&self) -> String {
        self.ready().tracker_url()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands `snapshot` to the child. A child that died is logged and, once its backoff has
    /// passed, replaced (and given this snapshot).
    pub fn send(&self, snapshot: &PeersSnapshot) {
        let mut state = self.state();
        if state.stopped {
            return;
        }
        if let Some(running) = state.running.as_mut() {
            match running.child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => {
                    let running = state.running.take();
                    state.died(running, &format!("exited ({status})"));
                }
                Err(e) => {
                    let running = state.running.take();
                    state.died(running, &format!("could not be waited for ({e})"));
                }
            }
        }
        if state.running.is_none() {
            if Instant::now() < state.next_try {
                return;
            }
            match spawn(&self.spec, self.run_as.as_ref()) {
                Ok((running, ready)) => {
                    tracing::info!(
                        pid = running.child.id(),
                        "tracker and web seed server process restarted"
                    );
                    *self.ready.lock().unwrap_or_else(|e| e.into_inner()) = ready;
                    state.running = Some(running);
                }
                Err(e) => {
                    state.died(None, &format!("did not restart: {}", chain(&e)));
                    return;
                }
            }
        }
        let Some(running) = state.running.as_mut() else {
            return;
        };
        let mut line = match serde_json::to_vec(snapshot) {
            Ok(line) => line,
            Err(e) => {
                tracing::error!("encoding a membership snapshot (a bug): {e}");
                return;
            }
        };
        line.push(b'\n');
        if let Err(e) = running.stdin.write_all(&line) {
            let mut running = state.running.take();
            if let Some(r) = running.as_mut() {
                let _ = r.child.kill();
                let _ = r.child.wait();
            }
            state.died(running, &format!("stopped reading its stdin ({e})"));
        }
    }

    /// Closes the child's stdin (which ends it), kills it if it lingers; no restarts after.
    pub fn shutdown(&self) {
        let mut state = self.state();
        state.stopped = true;
        if let Some(Running {
            mut child, stdin, ..
        }) = state.running.take()
        {
            drop(stdin);
            let status = reap(&mut child, STOP_GRACE);
            tracing::debug!("tracker and web seed server process ended ({status})");
        }
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl State {
    /// Logs why the child is gone and schedules the next start: the backoff doubles with each
    /// failure in a row, and starts over after a child that ran for a while.
    fn died(&mut self, running: Option<Running>, why: &str) {
        if running.is_some_and(|r| r.since.elapsed() >= HEALTHY) {
            self.backoff = FIRST_BACKOFF;
        }
        tracing::warn!(
            retry_in_secs = self.backoff.as_secs(),
            "the tracker and web seed server process {why}"
        );
        self.next_try = Instant::now() + self.backoff;
        self.backoff = next_backoff(self.backoff, MAX_BACKOFF);
    }
}

/// The pause after `pause`: twice as long, at most `max`.
fn next_backoff(pause: Duration, max: Duration) -> Duration {
    pause.saturating_mul(2).min(max)
}

/// The command line for messages.
fn shown(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|word| word.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The child's command: this very binary (through `/proc/self/exe`, so that after a package
/// upgrade replaced the file the child is still the agent's build and speaks its snapshot
/// format), an empty environment, `/` as its directory, and dropped privileges.
pub(crate) fn command(spec: &ServeSpec, run_as: Option<&RunAs>) -> Command {
    let mut command = Command::new("/proc/self/exe");
    if let Ok(exe) = std::env::current_exe() {
        command.arg0(exe);
    }
    let options = &spec.options;
    command
        .arg("agent-serve")
        .arg("--tracker")
        .arg(options.tracker.to_string())
        .arg("--seed")
        .arg(options.seed.to_string())
        .arg("--root")
        .arg(&options.root)
        .arg("--fan-out")
        .arg(options.fan_out.to_string())
        .arg("--log")
        .arg(&spec.log_filter)
        // The child inherits the journal stream as its stderr, but with an empty environment
        // and another uid it cannot tell: say so, or its lines carry a second timestamp.
        .args(crate::daemon::logs_to_journal().then_some("--journal"))
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(user) = run_as {
        // std calls setgroups(0, NULL) before setgid and setuid when no groups are given, so
        // root's supplementary groups go too; the switch away from uid 0 clears every
        // capability.
        command.uid(user.uid).gid(user.gid);
    }
    // SAFETY: prctl is a plain system call (async-signal-safe) and nothing here allocates.
    // It runs after std's credential switch, and survives exec: no setuid binary or file
    // capability can hand privileges back to the child or anything it runs.
    unsafe {
        command.pre_exec(|| nix::sys::prctl::set_no_new_privs().map_err(std::io::Error::from));
    }
    command
}

/// Starts a child and waits for its ready line.
fn spawn(spec: &ServeSpec, run_as: Option<&RunAs>) -> Result<(Running, Ready), ServeError> {
    let mut command = command(spec, run_as);
    let shown = shown(&command);
    let mut child = command.spawn().map_err(|source| ServeError::Spawn {
        command: shown.clone(),
        source,
    })?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        reap(&mut child, Duration::ZERO);
        return Err(ServeError::Spawn {
            command: shown,
            source: std::io::Error::other("no pipes to the child (a bug)"),
        });
    };
    let (tx, rx) = mpsc::channel();
    let spool = spec.spool.clone();
    let reader = std::thread::Builder::new()
        .name("serve-output".into())
        .spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = String::new();
            let read = (&mut stdout).take(4096).read_line(&mut line);
            let ready = read.is_ok() && !line.is_empty();
            let _ = tx.send(read.map(|_| line));
            if ready {
                take_pushes(stdout, spool.as_deref());
            }
        });
    if let Err(source) = reader {
        reap(&mut child, Duration::ZERO);
        return Err(ServeError::Spawn {
            command: shown,
            source,
        });
    }
    let line = match rx.recv_timeout(READY_WAIT) {
        Ok(Ok(line)) if !line.is_empty() => line,
        Ok(_) | Err(RecvTimeoutError::Disconnected) => {
            let status = reap(&mut child, Duration::from_secs(2));
            return Err(ServeError::Exited {
                command: shown,
                status,
            });
        }
        Err(RecvTimeoutError::Timeout) => {
            reap(&mut child, Duration::ZERO);
            return Err(ServeError::NotReady {
                command: shown,
                after: READY_WAIT,
            });
        }
    };
    match serde_json::from_str::<Ready>(line.trim()) {
        Ok(ready) => Ok((
            Running {
                child,
                stdin,
                since: Instant::now(),
            },
            ready,
        )),
        Err(source) => {
            reap(&mut child, Duration::ZERO);
            Err(ServeError::BadReady {
                command: shown,
                line: line.trim().chars().take(200).collect(),
                source,
            })
        }
    }
}

/// Spools each announcement the child hands on after its ready line, until its stdout ends.
/// The child is unprivileged and faces the network, so each line is bounded and checked again
/// here ([`crate::agent::transfer::push::acceptable`]) and held to the seed server's rate
/// again ([`Rate`](crate::agent::transfer::push::Rate): a child taken over writes as fast as
/// it likes, and each spooled push costs root a synced write and the intake a verification)
/// before it is written, as a `push`. A line past the rate is dropped: the announcement, if
/// genuine, comes by Serf too.
fn take_pushes(mut stdout: impl BufRead, spool: Option<&std::path::Path>) {
    use crate::agent::transfer::push::{acceptable, Pushed, Rate};
    use crate::agent::transfer::serve::{next_line, Line};
    let rate = Rate::default();
    let mut over_rate: u64 = 0;
    loop {
        // The newline counted: a line's text is at most `MAX_PUSH_LINE - 1` bytes.
        let line = match next_line(&mut stdout, MAX_PUSH_LINE - 1) {
            Ok(None) | Err(_) => return,
            Ok(Some(Line::Text(line))) => line,
            Ok(Some(Line::TooLong(_))) => {
                tracing::warn!("the web seed server wrote an overlong line; dropped");
                continue;
            }
        };
        let pushed = match serde_json::from_slice::<Pushed>(&line) {
            Ok(pushed) if acceptable(pushed.push.as_bytes()) => pushed,
            _ => {
                tracing::warn!(
                    len = line.len(),
                    "the web seed server wrote a line that is no push; dropped"
                );
                continue;
            }
        };
        if !rate.take(pushed.from.ip()) {
            over_rate += 1;
            if over_rate.is_power_of_two() {
                tracing::warn!(
                    over_rate,
                    "the web seed server hands on pushes past its rate; dropped"
                );
            }
            continue;
        }
        let Some(spool) = spool else {
            continue;
        };
        match crate::spool::put(spool, crate::spool::Source::Push, pushed.push.as_bytes()) {
            Ok(_) => tracing::debug!(from = %pushed.from, "a pushed announcement spooled"),
            Err(e) => {
                tracing::warn!(from = %pushed.from, "spooling a pushed announcement: {}", chain(&e))
            }
        }
    }
}

/// Waits up to `grace` for the child to exit, then kills it; returns how it ended.
fn reap(child: &mut Child, grace: Duration) -> String {
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.to_string(),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                return child.wait().map_or_else(
                    |e| format!("could not be waited for ({e})"),
                    |status| status.to_string(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The child faces the network and is unprivileged: of what it writes after its ready
    /// line, only a push line whose text is acceptable is spooled (as a push), and an overlong
    /// line is dropped whole without stopping the reading.
    #[test]
    fn only_acceptable_push_lines_from_the_child_are_spooled() {
        let dir = tempfile::tempdir().unwrap();
        let line = |text: &str| format!("{{\"push\":{text:?},\"from\":\"10.0.0.2:4000\"}}\n");
        let overlong = line(&format!("p2pu2:{}", "a".repeat(3 * MAX_PUSH_LINE)));
        let output = [
            line("p2pu2:first"),
            "not json\n".to_string(),
            line("p2pu-sync:now"),
            line("p2pu2:a\nb"),
            overlong,
            "{\"push\":\"p2pu2:x\",\"from\":\"10.0.0.2:4000\",\"more\":1}\n".to_string(),
            line("p2pu1:second"),
        ]
        .concat();
        take_pushes(
            BufReader::with_capacity(64, output.as_bytes()),
            Some(dir.path()),
        );
        let mut spooled: Vec<(String, String)> = crate::spool::list(dir.path())
            .unwrap()
            .iter()
            .map(|path| {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(path).unwrap())
            })
            .collect();
        spooled.sort();
        let texts: Vec<&str> = spooled.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(texts, ["p2pu2:first", "p2pu1:second"]);
        assert!(
            spooled.iter().all(|(name, _)| name.contains("-push-")),
            "{spooled:?}"
        );
    }

    /// A child taken over writes acceptable push lines as fast as it likes, each from another
    /// sender: the agent holds them to the seed server's rate and drops the rest.
    #[test]
    fn a_child_writing_pushes_past_the_rate_gets_them_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let output: String = (0..100)
            .map(|i| format!("{{\"push\":\"p2pu2:n{i}\",\"from\":\"10.0.{i}.2:4000\"}}\n"))
            .collect();
        take_pushes(BufReader::new(output.as_bytes()), Some(dir.path()));
        let spooled = crate::spool::list(dir.path()).unwrap().len();
        // The burst, and what the rate refilled while the test wrote them (no more than a
        // few seconds' worth: the 100 lines would take 8.5 s at the rate).
        assert!(
            (crate::agent::transfer::push::BURST as usize..64).contains(&spooled),
            "{spooled}"
        );
    }

    fn users(name: &str) -> Option<(u32, u32)> {
        match name {
            "p2pu" => Some((998, 997)),
            "nobody" => Some((65534, 65534)),
            "toor" => Some((0, 0)),
            _ => None,
        }
    }

    #[test]
    fn root_switches_to_the_serve_user_or_nobody_and_never_to_uid_0() {
        let p2pu = run_as("p2pu", true, users).unwrap().unwrap();
        assert_eq!((p2pu.name.as_str(), p2pu.uid, p2pu.gid), ("p2pu", 998, 997));
        let nobody = run_as("missing", true, users).unwrap().unwrap();
        assert_eq!((nobody.name.as_str(), nobody.uid), ("nobody", 65534));
        assert!(matches!(
            run_as("toor", true, users),
            Err(ServeError::RootUser { .. })
        ));
        assert!(matches!(
            run_as("missing", true, |_| None),
            Err(ServeError::NoUser { .. })
        ));
        // An unprivileged agent cannot switch and does not try.
        assert_eq!(run_as("p2pu", false, users).unwrap(), None);
    }

    /// A child that keeps dying is restarted ever more slowly (1 s, 2 s, 4 s... up to a
    /// minute), not every half second; one that ran for a while starts over at 1 s.
    #[test]
    fn a_child_that_keeps_dying_is_restarted_with_a_growing_backoff() {
        let mut state = State {
            running: None,
            backoff: FIRST_BACKOFF,
            next_try: Instant::now(),
            stopped: false,
        };
        let mut waits = Vec::new();
        for _ in 0..9 {
            let before = Instant::now();
            state.died(None, "exited");
            waits.push((state.next_try - before).as_secs_f64().round() as u64);
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(
            next_backoff(FIRST_START_RETRY, MAX_BACKOFF),
            Duration::from_millis(500)
        );
    }
}
