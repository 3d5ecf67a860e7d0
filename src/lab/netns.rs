//! One network namespace per lab: created with `ip netns add`, its `lo` up and carrying the
//! nodes' 10.99.1.N/32 addresses, entered by `setns` (in a forked child before exec, or on a
//! short-lived thread), and deleted on drop. Namespaces left behind by a crashed process are
//! reaped by the next lab.

use super::LabError;
use crate::error::{Error, Result};
use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;
use std::sync::Mutex;

/// Where `ip netns` keeps its named namespaces.
const NETNS_DIR: &str = "/run/netns";
/// Every lab namespace is named `p2pu-lab-<pid>-<counter>`.
pub(super) const PREFIX: &str = "p2pu-lab-";

/// `ip netns add` makes /run/netns a shared mount on first use; two labs of one process doing
/// that at the same moment race, so creation is serialized within the process.
static CREATE: Mutex<()> = Mutex::new(());

pub(super) struct Netns {
    name: String,
    /// Held open so `setns` needs no path lookup in a forked child.
    file: File,
    deleted: bool,
}

impl Netns {
    /// Creates namespace `name` (replacing a stale one of that name) with `lo` up.
    pub fn create(name: &str) -> Result<Netns> {
        let _serial = CREATE.lock().unwrap_or_else(|e| e.into_inner());
        let path = Path::new(NETNS_DIR).join(name);
        if path.exists() {
            // Only a dead process can have left this name: the pid is ours, the counter unique.
            ip(&["netns", "del", name])?;
        }
        ip(&["netns", "add", name])?;
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) => {
                let _ = ip(&["netns", "del", name]);
                return Err(Error::io("opening network namespace", &path)(e));
            }
        };
        let netns = Netns {
            name: name.to_owned(),
            file,
            deleted: false,
        };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(netns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's file descriptor, for `setns` in a forked child.
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Adds `addr/32` to the namespace's loopback interface.
    pub fn add_addr(&self, addr: Ipv4Addr) -> Result<()> {
        ip(&[
            "-n",
            &self.name,
            "addr",
            "add",
            &format!("{addr}/32"),
            "dev",
            "lo",
        ])
    }

    /// Runs `f` on a thread that has entered the namespace: sockets it opens and processes it
    /// starts live there. A panic in `f` is resumed on the caller's thread.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let outcome = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| {
                        LabError::EnterNetns {
                            name: self.name.clone(),
                            source,
                        }
                    })?;
                    Ok::<T, LabError>(f())
                })
                .join()
        });
        match outcome {
            Ok(result) => Ok(result?),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Deletes the namespace; the kernel frees it once no process is left inside.
    pub fn delete(&mut self) -> Result<()> {
        if self.deleted {
            return Ok(());
        }
        ip(&["netns", "del", &self.name])?;
        self.deleted = true;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.delete();
    }
}

/// Deletes lab namespaces whose creating process is gone (a test that was SIGKILLed has no
/// chance to run its Drop). Best effort: a namespace another process deletes meanwhile is fine.
pub(super) fn reap_stale() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

/// The pid in `p2pu-lab-<pid>-<n>`.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, counter) = rest.split_once('-')?;
    counter.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Runs `ip` with `args`; a failure carries the command line and ip's stderr.
fn ip(args: &[&str]) -> Result<()> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    Ok(crate::engines::run_checked("ip", &args)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_reads_only_lab_names() {
        assert_eq!(owner_pid("p2pu-lab-1234-7"), Some(1234));
        assert_eq!(owner_pid("p2pu-lab-1234"), None);
        assert_eq!(owner_pid("p2pu-lab-x-1"), None);
        assert_eq!(owner_pid("p2pu-lab-12-x"), None);
        assert_eq!(owner_pid("other-1234-1"), None);
    }
}
