//! The production-shaped fleet: each node a copy of a cached Debian bookworm tree
//! (install/systemd-fleet.sh), p2pu installed into it from the .deb install/build-deb.sh makes,
//! booted with its own systemd as PID 1 in `systemd-nspawn` inside a network namespace of a
//! natlab `Lab`. Nothing is started by the test except the containers: the engines and the agent
//! run as the units `p2pu init` rendered.
//!
//! A `Container` owns its nspawn process (a `p2pu::lab::Daemon`); dropping it shuts the container
//! down (SIGTERM, which nspawn turns into an orderly poweroff, then SIGKILL to its whole process
//! group) and a `Node` removes its tree. nspawn
//! runs in a private mount namespace holding the tmpfs it needs on `/run/systemd/nspawn` (where
//! PID 1 is not systemd), so no mount outlives it; the containers' processes live in the lab's
//! namespaces, which the lab kills when dropped or when a later run finds their owner gone.

#![allow(dead_code)]

use nix::sys::signal::Signal;
use p2pu::lab::Daemon;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// Node trees live in `/var/tmp/p2pu-sdfleet-<pid>-*`: on disk, and reaped when `<pid>` is gone.
const WORK_PREFIX: &str = "p2pu-sdfleet-";

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(out.status.success(), "{command:?}: {}", text(&out));
    out
}

/// The cached base tree, built on first use (install/systemd-fleet.sh image).
pub fn base_tree() -> &'static Path {
    static TREE: OnceLock<PathBuf> = OnceLock::new();
    TREE.get_or_init(|| {
        let start = Instant::now();
        let out = run(Command::new("bash")
            .arg(format!("{REPO}/install/systemd-fleet.sh"))
            .arg("image")
            .stderr(Stdio::inherit()));
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        eprintln!("base tree {path} ready in {:.1?}", start.elapsed());
        PathBuf::from(path)
    })
}

/// The .deb of this build (target/debug/p2pu), made once per test process with
/// install/build-deb.sh into target/systemd-fleet/.
pub fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| build_deb(&format!("{REPO}/target/systemd-fleet/deb"), None))
}

/// Packages target/debug/p2pu into `out` (with `version` in place of Cargo's, if given).
pub fn build_deb(out: &str, version: Option<&str>) -> PathBuf {
    // build-deb.sh regenerates target/deb-assets for every package it makes.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out).unwrap();
    let mut command = Command::new("bash");
    command.arg(format!("{REPO}/install/build-deb.sh")).args([
        "--no-build",
        "--profile",
        "dev",
        "--fast",
        "-o",
        out,
    ]);
    if let Some(version) = version {
        command.args(["--deb-version", version]);
    }
    run(&mut command);
    let debs: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    debs.into_iter().next().unwrap()
}

/// A fresh working directory for one test's trees; stale ones of dead runs are removed first.
pub fn workdir() -> tempfile::TempDir {
    reap_stale_workdirs();
    tempfile::Builder::new()
        .prefix(&format!("{WORK_PREFIX}{}-", std::process::id()))
        .tempdir_in("/var/tmp")
        .unwrap()
}

/// Whether `name` is `p2pu-sdfleet-<pid>-...` of a process that is gone.
fn stale_owner(name: &str) -> bool {
    name.strip_prefix(WORK_PREFIX)
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

fn reap_stale_workdirs() {
    for hierarchy in ["/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"] {
        for entry in std::fs::read_dir(hierarchy).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if stale_owner(&name) {
                remove_cgroup(&entry.path().to_string_lossy());
            }
        }
    }
    let Ok(entries) = std::fs::read_dir("/var/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(WORK_PREFIX) else {
            continue;
        };
        let owner = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = owner {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let dir = entry.path();
                // The overlays of a killed run are still mounted there.
                let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
                for target in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
                    if Path::new(target).starts_with(&dir) {
                        unmount(Path::new(target));
                    }
                }
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// A root file system made of read-only layers and its own writes: an overlay mounted at
/// `<dir>/root`, writing into `<dir>/upper`. Copying a 320 MiB tree per node took 8-20 s on a
/// loaded 2-core machine; the overlay is instant. Dropping it unmounts it.
pub struct Tree {
    pub root: PathBuf,
    pub upper: PathBuf,
    mounted: bool,
}

impl Tree {
    /// `lowers` topmost first (`<dir>/upper` of an unmounted tree may be one of them).
    pub fn overlay(dir: &Path, lowers: &[&Path]) -> Tree {
        let [root, upper, work] = ["root", "upper", "work"].map(|d| dir.join(d));
        for d in [&root, &upper, &work] {
            std::fs::create_dir_all(d).unwrap();
        }
        let lowers: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            upper.display(),
            work.display()
        );
        run(Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &options])
            .arg(&root));
        Tree {
            root,
            upper,
            mounted: true,
        }
    }

    pub fn path(&self, path: &str) -> PathBuf {
        inside(&self.root, path)
    }

    pub fn unmount(&mut self) {
        if std::mem::take(&mut self.mounted) {
            unmount(&self.root);
        }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        self.unmount();
    }
}

fn unmount(path: &Path) {
    let done = Command::new("umount")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    if !done {
        // Something (a dying container) still holds it: detach now, freed when released.
        let _ = Command::new("umount").arg("-l").arg(path).status();
    }
}

/// `install/install.sh --root <root> <args>`: the README's image build.
pub fn install_image(root: &Path, args: &[&str]) -> Output {
    Command::new("bash")
        .arg(format!("{REPO}/install/install.sh"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap()
}

/// A path inside a tree.
pub fn inside(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// A booted container: systemd-nspawn with the tree's systemd as PID 1.
pub struct Container {
    pub name: String,
    pub root: PathBuf,
    pub log: PathBuf,
    nspawn: Option<Daemon>,
    /// The container's PID 1, as this machine numbers it.
    leader: u32,
    /// Its own cgroups on this machine, removed after it stopped.
    cgroups: Vec<String>,
}

/// A cgroup per container in the hierarchies systemd uses (the named v1 one and the unified
/// one), named after the test process, a boot counter and the machine. The counter matters:
/// tests run in parallel in one process and name their machines alike (n1, n2), and two
/// containers sharing a cgroup failed units with 219/CGROUP when one of them stopped.
fn container_cgroups(name: &str) -> Vec<String> {
    static BOOTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let boot = BOOTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ["/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"]
        .iter()
        .filter(|h| Path::new(h).join("cgroup.procs").exists())
        .map(|h| format!("{h}/{WORK_PREFIX}{}-{boot}-{name}", std::process::id()))
        .collect()
}

/// Removes a cgroup and what the container's systemd left below it (deepest first).
fn remove_cgroup(path: &str) {
    let _ = Command::new("find")
        .args([path, "-depth", "-type", "d", "-exec", "rmdir", "{}", ";"])
        .stderr(Stdio::null())
        .status();
}

impl Container {
    /// Boots `root` as machine `name` in network namespace `netns` (its path); returns once its
    /// PID 1 runs.
    pub fn boot(name: &str, root: &Path, netns: &Path, log: &Path) -> Container {
        std::fs::create_dir_all("/run/systemd/nspawn").unwrap();
        let cgroups = container_cgroups(name);
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            // nspawn --keep-unit makes the container's cgroups (its "payload") below its own;
            // where PID 1 is not systemd every nspawn starts in the root cgroup, so containers
            // booting side by side would share and remove each other's unit cgroups (units
            // failing with 219/CGROUP). Each gets its own first.
            // Without the tmpfs nspawn fails where PID 1 is not systemd ("Failed to open
            // system bus", "Attempted to remove disk file system").
            .arg(
                "for h in $P2PU_CGROUPS; do mkdir -p \"$h\" && echo $$ >\"$h/cgroup.procs\" || exit 1; done; \
                 mount -t tmpfs tmpfs /run/systemd/nspawn && exec \"$@\"",
            )
            .env("P2PU_CGROUPS", cgroups.join(" "))
            .arg("sh")
            .args(["systemd-nspawn", "--register=no", "--keep-unit", "--boot"])
            .arg(format!("--directory={}", root.display()))
            .arg(format!("--machine={name}"))
            .arg(format!("--network-namespace-path={}", netns.display()))
            .arg("--console=read-only");
        let nspawn = Daemon::spawn(format!("systemd-nspawn {name}"), command, log)
            .unwrap_or_else(|e| panic!("{}", p2pu::error::chain(&e)));
        // unshare and sh exec it: the pid is nspawn's.
        let pid = nspawn.pid();
        let mut container = Container {
            name: name.to_owned(),
            root: root.to_owned(),
            log: log.to_owned(),
            nspawn: Some(nspawn),
            leader: 0,
            cgroups,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(init) = container_init(pid) {
                container.leader = init;
                break;
            }
            let nspawn = container.nspawn.as_mut().expect("just spawned");
            if !nspawn.is_running() || Instant::now() > deadline {
                panic!("{}", nspawn.failed("did not start PID 1"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        container
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A command run inside the container (all its namespaces, root directory included).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .args(["--target", &self.leader.to_string(), "--all", "--"])
            .args([
                "env",
                "-i",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG=C.UTF-8",
            ])
            .arg(program);
        command
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        let (program, rest) = args.split_first().expect("a command");
        self.command(program).args(rest).output().unwrap()
    }

    /// Runs `args` and panics, with its output and the container's console, when it fails.
    pub fn exec_ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "{}: {args:?}: {}",
            self.name,
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn sh(&self, script: &str) -> Output {
        self.exec(&["sh", "-c", script])
    }

    /// Waits until systemd has finished booting; returns `systemctl is-system-running`'s
    /// answer ("running", or "degraded" with a failed unit) and how long it took.
    pub fn wait_booted(&self, timeout: Duration) -> (String, Duration) {
        let start = Instant::now();
        loop {
            let out = self.exec(&["systemctl", "is-system-running", "--wait"]);
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if matches!(
                state.as_str(),
                "running" | "degraded" | "maintenance" | "stopping"
            ) {
                return (state, start.elapsed());
            }
            assert!(
                start.elapsed() < timeout,
                "{}: not booted after {timeout:?} ({state}): {}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn failed_units(&self) -> String {
        self.exec_ok(&[
            "systemctl",
            "list-units",
            "--failed",
            "--no-legend",
            "--plain",
        ])
    }

    pub fn is_active(&self, unit: &str) -> bool {
        self.exec(&["systemctl", "is-active", "--quiet", unit])
            .status
            .success()
    }

    pub fn journal(&self, unit: &str) -> String {
        text(&self.exec(&["journalctl", "--no-pager", "-b", "-u", unit]))
    }

    /// Shuts the container down in order (nspawn turns SIGTERM into a poweroff of the
    /// container), killing it if that takes longer than 30 s.
    pub fn shutdown(&mut self) {
        let Some(mut nspawn) = self.nspawn.take() else {
            return;
        };
        // nspawn alone: it powers the container off in order, which a group-wide SIGTERM
        // would cut short.
        nspawn.signal_leader(Signal::SIGTERM);
        nspawn.reap(Instant::now() + Duration::from_secs(30));
        self.remove_cgroups();
    }

    fn remove_cgroups(&self) {
        for cgroup in &self.cgroups {
            remove_cgroup(cgroup);
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The container's PID 1: the process under `nspawn` that is PID 1 of its own PID namespace.
fn container_init(nspawn: u32) -> Option<u32> {
    let mut queue = vec![nspawn];
    while let Some(pid) = queue.pop() {
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            let status =
                std::fs::read_to_string(format!("/proc/{child}/status")).unwrap_or_default();
            let nspid = status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .unwrap_or("");
            let levels: Vec<&str> = nspid.split_whitespace().collect();
            if levels.len() > 1 && levels.last() == Some(&"1") {
                let comm =
                    std::fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
                // nspawn's inner child becomes PID 1 before it execs the tree's systemd.
                if comm.trim() == "systemd" || comm.trim() == "init" {
                    return Some(child);
                }
                return None;
            }
            queue.push(child);
        }
    }
    None
}

/// One node: its own overlay of the image, booted in its own network namespace. Field order
/// is drop order: the container goes before its tree is unmounted.
pub struct Node {
    pub name: String,
    pub ip: Ipv4Addr,
    /// Its network namespace's path.
    pub netns: PathBuf,
    pub container: Option<Container>,
    pub tree: Tree,
}

impl Node {
    /// Node `name` in `<dir>/<name>`, its tree `lowers` (topmost first) plus its own writes.
    pub fn new(
        dir: &Path,
        name: &str,
        ip: Ipv4Addr,
        netns: &p2pu::lab::Netns,
        lowers: &[&Path],
    ) -> Node {
        Node {
            name: name.to_owned(),
            ip,
            netns: netns.path(),
            container: None,
            tree: Tree::overlay(&dir.join(name), lowers),
        }
    }

    pub fn path(&self, path: &str) -> PathBuf {
        self.tree.path(path)
    }

    /// Boots the node; returns once its PID 1 runs.
    pub fn boot(&mut self) {
        assert!(self.container.is_none(), "{} is running", self.name);
        let log = self.tree.root.with_extension("console.log");
        self.container = Some(Container::boot(
            &self.name,
            &self.tree.root,
            &self.netns,
            &log,
        ));
    }

    pub fn c(&self) -> &Container {
        self.container.as_ref().expect("the node is booted")
    }

    pub fn shutdown(&mut self) {
        if let Some(mut c) = self.container.take() {
            c.shutdown();
        }
    }
}

/// A site config for a systemd fleet node: the example's defaults, gossip joining `join`.
pub fn site_config(join: &[Ipv4Addr], extra: &str) -> String {
    let join: Vec<String> = join.iter().map(|ip| format!("\"{ip}\"")).collect();
    format!(
        "[node]\nrole = \"node\"\n\n[serf]\njoin = [{}]\n\n{extra}",
        join.join(", ")
    )
}

pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    cond()
}
