//! Processes of a lab and of the tests that drive the real engines: a [`Daemon`] runs in its
//! own process group with stdout and stderr in a log file, and stops its whole group (handler
//! children included) when dropped, also when a test panics. [`confine`] makes a command start
//! inside a network namespace, optionally as another user, with PR_SET_PDEATHSIG=SIGKILL so
//! nothing outlives a crashed test.

use super::{io, LabError, Result};
use nix::errno::Errno;
use nix::sched::{setns, CloneFlags};
use nix::sys::prctl;
use nix::sys::signal::{kill, killpg, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::unistd::{getppid, setgid, setgroups, setuid, Gid, Pid, Uid};
use std::fs::File;
use std::io as stdio;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long [`Daemon::stop`] (and drop) waits between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);
/// How many log lines an error about a daemon quotes.
const TAIL_LINES: usize = 40;

/// Makes `command` enter the namespace `netns` (a descriptor the closure keeps open, so the
/// command may outlive the caller's handle) and become `user`, if given, in the child, and die
/// with the thread that spawns it: spawn it from the thread that keeps its [`Daemon`].
pub(super) fn confine(command: &mut Command, netns: OwnedFd, user: Option<(Uid, Gid)>) {
    let parent = Pid::this();
    let child_setup = move || -> stdio::Result<()> {
        setns(netns.as_fd(), CloneFlags::CLONE_NEWNET)?;
        // Root is needed for setns, so the user changes after it, here rather than through
        // Command::uid (std applies that before pre_exec runs).
        if let Some((uid, gid)) = user {
            setgroups(&[gid])?;
            setgid(gid)?;
            setuid(uid)?;
        }
        // std leaves the spawning thread's signal mask in place, and `p2pu lab` blocks SIGINT
        // and SIGTERM to wait for them: a daemon inheriting that would never see its SIGTERM.
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
        // Set last: a credential change clears it.
        prctl::set_pdeathsig(Signal::SIGKILL)?;
        if getppid() != parent {
            // The parent died before the line above took effect.
            return Err(Errno::ESRCH.into());
        }
        Ok(())
    };
    // SAFETY: the closure only makes system calls (setns, set*id, sigprocmask, prctl,
    // getppid), which are async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(child_setup);
    }
}

/// The command line for messages: program and arguments, never the environment (which
/// carries RPC secrets).
pub(super) fn shown(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|word| word.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A running process in its own process group, logging to a file. Dropping it stops the
/// group: SIGTERM, then SIGKILL after [`STOP_GRACE`].
pub struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Spawns `command` in a new process group, stdin empty, stdout and stderr into `log`
    /// (created or truncated). `name` is what errors call it.
    pub fn spawn(name: impl Into<String>, mut command: Command, log: &Path) -> Result<Daemon> {
        let out = File::create(log).map_err(io("creating log file", log))?;
        let err = out.try_clone().map_err(io("duplicating log file", log))?;
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = command.spawn().map_err(|source| LabError::Spawn {
            command: shown(&command),
            source,
        })?;
        Ok(Daemon {
            name: name.into(),
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its pid, which is also its process group's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// False once the process has exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Fails with the exit status and the end of the log when the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(LabError::Exited {
                process: self.name.clone(),
                status: status.to_string(),
                log: self.log.clone(),
                tail: self.log_tail(15),
            }),
            Err(e) => Err(LabError::Internal(format!(
                "waiting for {}: {e}",
                self.name
            ))),
        }
    }

    /// Where it logs.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// What it has logged so far (empty if the log cannot be read).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// An error saying the daemon `what` (e.g. "did not answer RPC"), whether it still runs,
    /// and the end of its log: for a start-up or a check that went wrong.
    pub fn failed(&mut self, what: &str) -> LabError {
        let state = match self.child.try_wait() {
            Ok(Some(status)) => format!("exited with {status}"),
            Ok(None) => "still running".to_owned(),
            Err(e) => format!("cannot tell whether it runs: {e}"),
        };
        LabError::Failed {
            process: self.name.clone(),
            what: what.to_owned(),
            state,
            log: self.log.clone(),
            tail: self.log_tail(TAIL_LINES),
        }
    }

    /// Sends `signal` to the whole process group (handlers and helpers included).
    pub fn signal(&mut self, signal: Signal) {
        if !self.is_running() {
            return;
        }
        if let Some(group) = self.group() {
            // ESRCH: it exited between the check and here.
            let _ = killpg(group, signal);
        }
    }

    /// Sends `signal` to the process alone, for one that stops its own children in order
    /// (systemd-nspawn turns SIGTERM into a poweroff of its container).
    pub fn signal_leader(&mut self, signal: Signal) {
        if !self.is_running() {
            return;
        }
        if let Some(pid) = self.group() {
            let _ = kill(pid, signal);
        }
    }

    /// Waits until the process exits or `deadline` passes, then SIGKILLs the group.
    pub fn reap(&mut self, deadline: Instant) {
        while self.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.is_running() {
            self.signal(Signal::SIGKILL);
            let _ = self.child.wait();
        }
        // Children the leader left behind in its group (a handler in flight) go too.
        if let Some(group) = self.group() {
            let _ = killpg(group, Signal::SIGKILL);
        }
    }

    /// SIGTERM to the group, then SIGKILL after [`STOP_GRACE`].
    pub fn stop(&mut self) {
        self.stop_within(STOP_GRACE);
    }

    /// SIGTERM to the group, then SIGKILL after `grace`.
    pub fn stop_within(&mut self, grace: Duration) {
        self.signal(Signal::SIGTERM);
        self.reap(Instant::now() + grace);
    }

    /// SIGKILL at once (a crash, as far as the process can tell).
    pub fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        self.reap(Instant::now());
    }

    fn group(&self) -> Option<Pid> {
        i32::try_from(self.child.id()).ok().map(Pid::from_raw)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_daemon_takes_its_whole_group_along() {
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(e) => panic!("{e}"),
        };
        let pid_file = dir.path().join("child.pid");
        let mut command = Command::new("sh");
        // The grandchild ignores nothing but is not the leader: only a group signal reaches it.
        command
            .arg("-c")
            .arg(format!("sleep 600 & echo $! >{}; wait", pid_file.display()));
        let daemon = match Daemon::spawn("sh", command, &dir.path().join("log")) {
            Ok(daemon) => daemon,
            Err(e) => panic!("{}", crate::error::chain(&e)),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let grandchild = loop {
            let text = std::fs::read_to_string(&pid_file).unwrap_or_default();
            if let Ok(pid) = text.trim().parse::<i32>() {
                break Pid::from_raw(pid);
            }
            assert!(
                Instant::now() < deadline,
                "the shell never wrote its child's pid"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        drop(daemon);
        // Reaped by the shell's exit or ours: gone either way once the group got SIGKILL.
        let gone = (0..500).any(|_| {
            let zombie_or_gone = std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
                .map_or(true, |stat| stat.contains(") Z "));
            if !zombie_or_gone {
                std::thread::sleep(Duration::from_millis(20));
            }
            zombie_or_gone
        });
        assert!(gone, "{grandchild} outlived its daemon");
    }

    #[test]
    fn failed_says_what_and_quotes_the_log() {
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(e) => panic!("{e}"),
        };
        let mut command = Command::new("sh");
        command.args(["-c", "echo first words; exit 3"]);
        let mut daemon = match Daemon::spawn("the shell", command, &dir.path().join("log")) {
            Ok(daemon) => daemon,
            Err(e) => panic!("{}", crate::error::chain(&e)),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while daemon.is_running() {
            assert!(Instant::now() < deadline, "sh -c exit 3 never exited");
            std::thread::sleep(Duration::from_millis(20));
        }
        let text = daemon.failed("did not listen").to_string();
        assert!(
            text.starts_with("the shell did not listen (exited with"),
            "{text}"
        );
        assert!(text.contains("first words"), "{text}");
        assert!(daemon.check_running().is_err());
    }
}
