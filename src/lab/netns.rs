//! Named network namespaces and the plumbing between them: created with `ip netns add` (its
//! `lo` up), given addresses, bridges, routes and veth pairs, entered by `setns` (in a forked
//! child before exec, or on a short-lived thread), and deleted on drop together with whatever
//! still runs inside. A name carries its creator's pid (`<prefix><pid>-<n>`), so namespaces left
//! behind by a crashed process are reaped by the next one that uses the same prefix.

use super::process::{self, confine};
use super::{io, LabError, Result};
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::ffi::OsStr;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Where `ip netns` keeps its named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// `ip netns add` makes /run/netns a shared mount on first use; two namespaces of one process
/// created at the same moment race, so creation is serialized within the process.
static CREATE: Mutex<()> = Mutex::new(());
/// Namespaces named by this process so far (the `<n>` of their names).
static NAMED: AtomicUsize = AtomicUsize::new(0);

/// A named network namespace, deleted on drop.
pub struct Netns {
    name: String,
    /// Held open so `setns` needs no path lookup in a forked child.
    file: File,
    deleted: bool,
}

impl Netns {
    /// A new namespace named `<prefix><pid>-<n>` (unique in this process), after reaping the
    /// ones of that prefix whose process is gone.
    pub fn fresh(prefix: &str) -> Result<Netns> {
        reap_stale(prefix);
        let n = NAMED.fetch_add(1, Ordering::Relaxed) + 1;
        Netns::create(&format!("{prefix}{}-{n}", std::process::id()))
    }

    /// Creates namespace `name` with `lo` up, replacing one of that name: the caller owns its
    /// names ([`Netns::fresh`] makes them unique).
    pub fn create(name: &str) -> Result<Netns> {
        let _serial = CREATE.lock().unwrap_or_else(|e| e.into_inner());
        let path = Path::new(NETNS_DIR).join(name);
        if path.exists() {
            // Left by a dead process: a fresh name carries our pid and a counter of ours.
            ip(&["netns", "del", name])?;
        }
        ip(&["netns", "add", name])?;
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) => {
                let _ = ip(&["netns", "del", name]);
                return Err(io("opening network namespace", &path)(e));
            }
        };
        let netns = Netns {
            name: name.to_owned(),
            file,
            deleted: false,
        };
        netns.ip(&["link", "set", "lo", "up"])?;
        // A new namespace takes the host's congestion control (BBR on some build machines),
        // where a node runs Debian's, CUBIC: BBR paces every flow with timers of its own, and
        // with a striped transfer's many flows the lab's two cores went to that instead of the
        // nodes (issue 24). Best effort: a kernel without CUBIC keeps what it has.
        let _ = netns.run(|| std::fs::write("/proc/sys/net/ipv4/tcp_congestion_control", "cubic"));
        Ok(netns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, for tools that take a path (`systemd-nspawn
    /// --network-namespace-path`).
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// Runs `ip -n <name> <args>`; a failure carries the command line and ip's stderr.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Adds `addr/32` to the namespace's loopback interface.
    pub fn add_addr(&self, addr: Ipv4Addr) -> Result<()> {
        self.add_addr_on("lo", addr, 32)
    }

    /// Adds `addr/prefix` to interface `dev`.
    pub fn add_addr_on(&self, dev: &str, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        self.ip(&["addr", "add", &format!("{addr}/{prefix}"), "dev", dev])
    }

    /// Sets interface `dev` up.
    pub fn link_up(&self, dev: &str) -> Result<()> {
        self.ip(&["link", "set", dev, "up"])
    }

    /// Creates bridge `dev` and sets it up.
    pub fn add_bridge(&self, dev: &str) -> Result<()> {
        self.ip(&["link", "add", dev, "type", "bridge"])?;
        self.link_up(dev)
    }

    /// Enslaves interface `dev` to bridge `bridge` and sets it up.
    pub fn attach(&self, dev: &str, bridge: &str) -> Result<()> {
        self.ip(&["link", "set", dev, "master", bridge, "up"])
    }

    /// Routes everything without a more specific route through `gateway`.
    pub fn default_route(&self, gateway: Ipv4Addr) -> Result<()> {
        self.ip(&["route", "add", "default", "via", &gateway.to_string()])
    }

    /// `program` set up to start inside the namespace. The child dies with the thread that
    /// spawns it (PR_SET_PDEATHSIG), so spawn it from the thread that keeps it.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Result<Command> {
        let mut command = Command::new(program);
        self.confine(&mut command, None)?;
        Ok(command)
    }

    /// Makes `command` start inside the namespace, as `user` if given; see [`Netns::command`].
    pub(super) fn confine(
        &self,
        command: &mut Command,
        user: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
    ) -> Result<()> {
        confine(command, self.fd()?, user);
        Ok(())
    }

    /// Runs `args` (program first) inside the namespace and returns its output; a failure to
    /// start or a non-zero exit is an error carrying the command line and its stderr.
    pub fn exec_ok<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<Output> {
        let Some((program, rest)) = args.split_first() else {
            return Err(LabError::Internal(
                "Netns::exec_ok without a program".into(),
            ));
        };
        let mut command = self.command(program)?;
        command.args(rest);
        let output = command.output().map_err(|source| LabError::Spawn {
            command: process::shown(&command),
            source,
        })?;
        if output.status.success() {
            return Ok(output);
        }
        Err(LabError::Command {
            command: format!("{} (in {})", process::shown(&command), self.name),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
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
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// The processes whose network namespace this is (what `ip netns pids` lists).
    pub fn pids(&self) -> Vec<u32> {
        let Ok(ours) = self.file.metadata() else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                let ns = std::fs::metadata(entry.path().join("ns/net")).ok()?;
                (ns.dev() == ours.dev() && ns.ino() == ours.ino()).then_some(pid)
            })
            .collect()
    }

    /// SIGKILLs every process inside, then deletes the namespace (which removes its
    /// interfaces, routes and firewall rules). Also done on drop; calling it twice is harmless.
    pub fn delete(&mut self) -> Result<()> {
        if self.deleted {
            return Ok(());
        }
        kill_all(&self.pids());
        ip(&["netns", "del", &self.name])?;
        self.deleted = true;
        Ok(())
    }

    /// A descriptor of the namespace for a forked child's `setns`.
    fn fd(&self) -> Result<OwnedFd> {
        let file = self
            .file
            .try_clone()
            .map_err(io("duplicating the descriptor of", self.path()))?;
        Ok(file.into())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.delete();
    }
}

/// A veth pair: interface `a_dev` in `a` and its peer `b_dev` in `b`, both down.
pub fn veth_pair(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) -> Result<()> {
    a.ip(&[
        "link", "add", a_dev, "type", "veth", "peer", "name", b_dev, "netns", &b.name,
    ])
}

/// Deletes the namespaces named `<prefix><pid>-<n>` whose process is gone, and kills what
/// still runs in them (a test that was SIGKILLed has no chance to run its Drop). Best effort:
/// a namespace another process deletes meanwhile is fine.
fn reap_stale(prefix: &str) {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner_pid(prefix, &name) else {
            continue;
        };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            if let Ok(file) = File::open(entry.path()) {
                let stale = Netns {
                    name,
                    file,
                    deleted: false,
                };
                // Its drop kills and deletes.
                drop(stale);
            }
        }
    }
}

/// The pid in `<prefix><pid>-<n>`.
fn owner_pid(prefix: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let (pid, counter) = rest.split_once('-')?;
    counter.parse::<u64>().ok()?;
    pid.parse().ok()
}

fn kill_all(pids: &[u32]) {
    let me = std::process::id();
    for &pid in pids.iter().filter(|&&pid| pid != me) {
        if let Ok(raw) = i32::try_from(pid) {
            // ESRCH: it exited meanwhile.
            let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
        }
    }
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
    fn owner_pid_reads_only_names_of_the_prefix() {
        let lab = "p2pu-lab-";
        assert_eq!(owner_pid(lab, "p2pu-lab-1234-7"), Some(1234));
        assert_eq!(owner_pid(lab, "p2pu-lab-1234"), None);
        assert_eq!(owner_pid(lab, "p2pu-lab-x-1"), None);
        assert_eq!(owner_pid(lab, "p2pu-lab-12-x"), None);
        assert_eq!(owner_pid(lab, "p2pu-lab-12-1-other"), None);
        assert_eq!(owner_pid(lab, "other-1234-1"), None);
        assert_eq!(owner_pid(lab, "p2pu-natlab-1234-1"), None);
        assert_eq!(owner_pid("p2pu-natlab-", "p2pu-natlab-1234-1"), Some(1234));
    }
}
