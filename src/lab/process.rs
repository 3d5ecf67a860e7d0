//! Processes of a lab: started inside its namespace (setns in the forked child), optionally
//! as another user, in their own process group, with PR_SET_PDEATHSIG=SIGKILL so nothing
//! outlives a crashed test, and with stdout and stderr in a log file. A [`Guard`] stops its
//! whole group (handler children included) when dropped.

use super::LabError;
use crate::error::{Error, Result};
use nix::errno::Errno;
use nix::sched::{setns, CloneFlags};
use nix::sys::prctl;
use nix::sys::signal::{killpg, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::unistd::{getppid, setgid, setgroups, setuid, Gid, Pid, Uid};
use std::fs::File;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Makes `command` enter the namespace behind `netns_fd` (and become `user`, if given) in the
/// child, and die with the thread that spawns it.
///
/// The fd must stay open until the command has been spawned.
pub(super) fn confine(command: &mut Command, netns_fd: RawFd, user: Option<(Uid, Gid)>) {
    let parent = Pid::this();
    let child_setup = move || -> io::Result<()> {
        // SAFETY: the caller keeps the namespace file open across spawn (see above).
        let netns = unsafe { BorrowedFd::borrow_raw(netns_fd) };
        setns(netns, CloneFlags::CLONE_NEWNET)?;
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

/// A running process in its own group, logging to a file.
pub(super) struct Guard {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Guard {
    /// Spawns `command` (already [`confine`]d) in a new process group, logging to `log`.
    pub fn spawn(name: String, mut command: Command, log: &Path) -> Result<Guard> {
        let out = File::create(log).map_err(Error::io("creating log file", log))?;
        let err = out
            .try_clone()
            .map_err(Error::io("duplicating log file", log))?;
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = command.spawn().map_err(|source| Error::Spawn {
            command: shown(&command),
            source,
        })?;
        Ok(Guard {
            name,
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

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
            }
            .into()),
            Err(e) => Err(Error::Internal(format!("waiting for {}: {e}", self.name))),
        }
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Sends `signal` to the whole process group (handlers and helpers included).
    pub fn signal(&mut self, signal: Signal) {
        if !self.is_running() {
            return;
        }
        if let Ok(raw) = i32::try_from(self.child.id()) {
            // ESRCH: it exited between the check and here.
            let _ = killpg(Pid::from_raw(raw), signal);
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
        if let Ok(raw) = i32::try_from(self.child.id()) {
            let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        self.signal(Signal::SIGTERM);
        self.reap(Instant::now() + grace);
    }

    /// SIGKILL at once (a crash, as far as the process can tell).
    pub fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        self.reap(Instant::now());
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}
