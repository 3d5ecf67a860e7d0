//! The local test fleet ("lab"): N p2pu nodes on this machine, each with its own Serf agent,
//! Transmission daemon and (optionally) `p2pu agent`, all inside one private network namespace
//! where node `i` is `node-i` at 10.99.1.i (Transmission 3.00 drops peers in 127.0.0.0/8).
//! Used by the integration tests of the LAN flow and by `p2pu lab`.
//!
//! Everything a lab writes lives under its base dir; every process it starts is killed (by
//! process group) and the namespace deleted when it shuts down, on drop too, and the kernel
//! SIGKILLs the processes if the thread that started them dies first (PR_SET_PDEATHSIG): keep
//! a `Lab` on the thread that created it.

mod netns;
mod node;
mod process;

pub use node::NodeInfo;

use crate::engines::{Gossip, Member, MemberStatus, Retry, Serf, TorrentEngine, Transmission};
use crate::error::{Error, Result};
use netns::Netns;
use nix::unistd::{Gid, Uid, User};
use process::{confine, Guard};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a daemon gets to answer, and the members to see each other.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long members may disagree before a lagging one is told to join the others.
const JOIN_NUDGE: Duration = Duration::from_secs(2);
/// How long a stopped process gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Labs started by this process so far (part of the namespace name).
static LABS: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the lab must run as root (it creates a network namespace and runs Transmission as its own user); try sudo")]
    NotRoot,
    #[error("`{tool}` is not installed (not found on PATH); install the Debian package {package}")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error("system user {user:?} does not exist; install the Debian package transmission-daemon")]
    NoUser { user: String },
    #[error("{} (mode {mode:o}) is not searchable by other users, so {user} cannot reach the lab under it; choose a base dir under /tmp", path.display())]
    Untraversable {
        path: PathBuf,
        mode: u32,
        user: String,
    },
    #[error("a lab has 1 to 254 nodes, not {nodes}")]
    TooManyNodes { nodes: usize },
    #[error("there is no node {index}: the lab has nodes 1 to {count}")]
    NoSuchNode { index: usize, count: usize },
    #[error("{process} exited ({status}); the end of {}:\n{tail}", log.display())]
    Exited {
        process: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("timed out after {after:?} waiting for {what}; last seen: {last}")]
    Timeout {
        what: String,
        after: Duration,
        last: String,
    },
    #[error("entering network namespace {name}")]
    EnterNetns {
        name: String,
        #[source]
        source: nix::errno::Errno,
    },
}

/// What to start.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Number of nodes, 1 to 254.
    pub nodes: usize,
    /// Everything the lab writes goes here (created if missing, made mode 0755).
    pub base_dir: PathBuf,
    /// The p2pu executable the nodes run (init, the Serf handler, the agent).
    pub binary: PathBuf,
    /// Run `p2pu agent` on every node.
    pub start_agent: bool,
    /// Sets `agent.accept_legacy` on every node.
    pub accept_legacy: bool,
    /// Extra TOML merged into each node's site.toml (tables merge key by key).
    pub site_overrides: Option<String>,
}

impl LabOptions {
    /// `nodes` nodes under `base_dir` running `binary`; no agent, no legacy, no overrides.
    pub fn new(nodes: usize, base_dir: impl Into<PathBuf>, binary: impl Into<PathBuf>) -> Self {
        LabOptions {
            nodes,
            base_dir: base_dir.into(),
            binary: binary.into(),
            start_agent: false,
            accept_legacy: false,
            site_overrides: None,
        }
    }
}

/// The processes of one node; `None` when stopped.
#[derive(Default)]
struct NodeProcs {
    serf: Option<Guard>,
    transmission: Option<Guard>,
    agent: Option<Guard>,
}

impl NodeProcs {
    fn all(&mut self) -> impl Iterator<Item = &mut Guard> {
        [&mut self.agent, &mut self.transmission, &mut self.serf]
            .into_iter()
            .flatten()
    }
}

/// A running lab. Nodes are numbered from 1 (`node-1` is the operator).
pub struct Lab {
    netns: Netns,
    nodes: Vec<NodeInfo>,
    procs: Vec<NodeProcs>,
    binary: PathBuf,
    start_agent: bool,
    transmission_user: (Uid, Gid),
}

impl Lab {
    /// Writes every node's config, runs `p2pu init` for each, starts Serf and Transmission
    /// (and the agent, if asked) in a new namespace, and returns once every RPC answers and
    /// every member sees every other alive. On error everything started so far is torn down.
    pub fn start(opts: LabOptions) -> Result<Lab> {
        preflight()?;
        if !(1..=254).contains(&opts.nodes) {
            return Err(LabError::TooManyNodes { nodes: opts.nodes }.into());
        }
        netns::reap_stale();
        let base = prepare_base(&opts.base_dir)?;
        // The rendered Serf handler runs it from Serf's working directory.
        let binary = opts
            .binary
            .canonicalize()
            .map_err(Error::io("finding the p2pu binary", &opts.binary))?;
        let counter = LABS.fetch_add(1, Ordering::Relaxed) + 1;
        let name = format!("{}{}-{counter}", netns::PREFIX, std::process::id());
        let mut lab = Lab {
            netns: Netns::create(&name)?,
            nodes: Vec::new(),
            procs: Vec::new(),
            binary,
            start_agent: opts.start_agent,
            transmission_user: (Uid::current(), Gid::current()),
        };
        for index in 1..=opts.nodes {
            let overrides = opts.site_overrides.as_deref();
            let node = NodeInfo::create(&base, index, opts.accept_legacy, overrides)?;
            lab.netns.add_addr(node.addr)?;
            lab.nodes.push(node);
            lab.procs.push(NodeProcs::default());
        }
        let user_name = lab
            .nodes
            .first()
            .map(|node| node.site.transmission.user.clone())
            .ok_or_else(|| Error::Internal("a lab without nodes".into()))?;
        let user = User::from_name(&user_name)
            .ok()
            .flatten()
            .ok_or(LabError::NoUser {
                user: user_name.clone(),
            })?;
        check_traversable(&base, &user_name)?;
        lab.transmission_user = (user.uid, user.gid);
        lab.init_nodes()?;
        lab.install_keys()?;
        // The others join node 1 at start, and Serf retries a failed join only every 30 s:
        // node 1 listens first.
        lab.spawn_serf(1)?;
        lab.wait_serf(1)?;
        for index in 1..=opts.nodes {
            if index > 1 {
                lab.spawn_serf(index)?;
            }
            lab.spawn_transmission(index)?;
        }
        for index in 1..=opts.nodes {
            lab.wait_serf(index)?;
            lab.wait_transmission(index)?;
        }
        lab.wait_converged()?;
        if opts.start_agent {
            for index in 1..=opts.nodes {
                lab.start_agent(index)?;
            }
        }
        Ok(lab)
    }

    /// Every node, `nodes()[i - 1]` being node `i`.
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    /// Node `index` (1-based).
    pub fn node(&self, index: usize) -> Result<&NodeInfo> {
        index
            .checked_sub(1)
            .and_then(|i| self.nodes.get(i))
            .ok_or_else(|| {
                LabError::NoSuchNode {
                    index,
                    count: self.nodes.len(),
                }
                .into()
            })
    }

    /// The network namespace's name (for `ip netns exec <name> ...` by hand).
    pub fn netns_name(&self) -> &str {
        self.netns.name()
    }

    /// Runs `f` on a thread inside the lab's namespace: use the [`Lab::serf`] and
    /// [`Lab::transmission`] clients, or open sockets to the nodes, only in here.
    pub fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        self.netns.run(f)
    }

    /// A client for node `index`'s Serf RPC (call it inside [`Lab::in_netns`]).
    pub fn serf(&self, index: usize) -> Result<Serf> {
        let node = self.node(index)?;
        Ok(Serf::new(node.serf_rpc.to_string()).with_auth(Some(node.serf_rpc_auth()?)))
    }

    /// A client for node `index`'s Transmission RPC (call it inside [`Lab::in_netns`]).
    pub fn transmission(&self, index: usize) -> Result<Transmission> {
        let node = self.node(index)?;
        let credentials = crate::engines::Credentials {
            user: node.site.transmission.rpc_user.clone(),
            password: node.transmission_password()?,
        };
        Ok(Transmission::new(
            node.transmission_url(),
            Some(credentials),
        ))
    }

    /// Node `index`'s Serf members as it sees them.
    pub fn members(&self, index: usize) -> Result<Vec<Member>> {
        let serf = self.serf(index)?;
        Ok(self.netns.run(|| serf.members())??)
    }

    /// Broadcasts a user event from node `index`, coalescing off (as p2pu always sends).
    pub fn serf_event(&self, index: usize, name: &str, payload: &[u8]) -> Result<()> {
        let serf = self.serf(index)?;
        Ok(self.netns.run(|| serf.user_event(name, payload, false))??)
    }

    /// Runs `args` (program first) inside the namespace with node `index`'s environment:
    /// `SERF_RPC_ADDR` and `SERF_RPC_AUTH` (the `serf` CLI reads both), `TR_AUTH` (for
    /// `transmission-remote --authenv`) and `P2PU_CONFIG`. A non-zero exit is not an error
    /// here: the caller reads `Output::status`.
    pub fn exec<S: AsRef<OsStr>>(&self, index: usize, args: &[S]) -> Result<Output> {
        let node = self.node(index)?;
        let Some((program, rest)) = args.split_first() else {
            return Err(Error::Internal("Lab::exec without a program".into()));
        };
        let mut command = Command::new(program);
        command
            .args(rest)
            .env("SERF_RPC_ADDR", node.serf_rpc.to_string())
            .env("SERF_RPC_AUTH", node.serf_rpc_auth()?)
            .env(
                "TR_AUTH",
                format!(
                    "{}:{}",
                    node.site.transmission.rpc_user,
                    node.transmission_password()?
                ),
            )
            .env("P2PU_CONFIG", &node.config);
        confine(&mut command, self.netns.raw_fd(), None);
        command.output().map_err(|source| Error::Spawn {
            command: process::shown(&command),
            source,
        })
    }

    /// Runs `<binary> <args> --config <node's site.toml>` like [`Lab::exec`]. `--config` goes
    /// after `args`, so `args` must end where the subcommand takes its own flags (e.g.
    /// `["submit", "site.pp"]`, not a nested subcommand's positional after it).
    pub fn p2pu<S: AsRef<OsStr>>(&self, index: usize, args: &[S]) -> Result<Output> {
        let config = self.node(index)?.config.clone();
        let mut argv: Vec<&OsStr> = vec![self.binary.as_os_str()];
        argv.extend(args.iter().map(AsRef::as_ref));
        argv.extend([OsStr::new("--config"), config.as_os_str()]);
        self.exec(index, &argv)
    }

    /// Node `index`'s spool dir, where `handle-event` drops announcements.
    pub fn spool_dir(&self, index: usize) -> Result<&Path> {
        Ok(&self.node(index)?.site.agent.spool_dir)
    }

    /// Starts `p2pu agent` on node `index` and waits until its tracker accepts connections.
    pub fn start_agent(&mut self, index: usize) -> Result<()> {
        let node = self.node(index)?.clone();
        let mut command = Command::new(&self.binary);
        command
            .arg("agent")
            .arg("--config")
            .arg(&node.config)
            .env("HOME", &node.dir);
        confine(&mut command, self.netns.raw_fd(), None);
        let guard = Guard::spawn(
            format!("p2pu agent on {}", node.name),
            command,
            &node.log("agent"),
        )?;
        self.procs_mut(index)?.agent = Some(guard);
        let port = node.site.agent.tracker_port;
        let what = format!("the agent's tracker on {} (127.0.0.1:{port})", node.name);
        self.poll(&what, |lab| {
            lab.check_running(index)?;
            let connected = lab.netns.run(|| TcpStream::connect(("127.0.0.1", port)))?;
            Ok(connected.map(drop).map_err(|e| e.to_string()))
        })
    }

    /// SIGTERM to node `index`'s agent (SIGKILL after a grace period); waits for it to exit.
    pub fn stop_agent(&mut self, index: usize) -> Result<()> {
        if let Some(mut agent) = self.procs_mut(index)?.agent.take() {
            agent.stop(STOP_GRACE);
        }
        Ok(())
    }

    /// SIGKILL to node `index`'s agent: a crash, as far as it can tell.
    pub fn kill_agent(&mut self, index: usize) -> Result<()> {
        if let Some(mut agent) = self.procs_mut(index)?.agent.take() {
            agent.kill();
        }
        Ok(())
    }

    /// Stops and starts node `index`'s Transmission; returns once its RPC answers again.
    pub fn restart_transmission(&mut self, index: usize) -> Result<()> {
        if let Some(mut daemon) = self.procs_mut(index)?.transmission.take() {
            daemon.stop(STOP_GRACE);
        }
        self.spawn_transmission(index)?;
        self.wait_transmission(index)
    }

    /// Stops every process of node `index` (agent, Transmission, Serf, without a graceful
    /// leave: the others see it fail), as for a partition or a power cut.
    pub fn stop_node(&mut self, index: usize) -> Result<()> {
        let procs = self.procs_mut(index)?;
        for guard in procs.all() {
            guard.signal(nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        for guard in procs.all() {
            guard.reap(deadline);
        }
        *procs = NodeProcs::default();
        Ok(())
    }

    /// Starts node `index`'s processes again (the agent only if the lab runs agents) and
    /// returns once its RPCs answer and it sees every running node alive.
    pub fn start_node(&mut self, index: usize) -> Result<()> {
        self.stop_node(index)?;
        self.spawn_serf(index)?;
        self.spawn_transmission(index)?;
        self.wait_serf(index)?;
        self.wait_transmission(index)?;
        self.wait_converged()?;
        if self.start_agent {
            self.start_agent(index)?;
        }
        Ok(())
    }

    /// Process ids of every process the lab runs now (group leaders), for checks.
    pub fn pids(&mut self) -> Vec<u32> {
        let mut pids = Vec::new();
        for procs in &mut self.procs {
            for guard in procs.all() {
                if guard.is_running() {
                    pids.push(guard.pid());
                }
            }
        }
        pids
    }

    /// Stops every process (SIGTERM to each process group, SIGKILL after a grace period) and
    /// deletes the namespace. Also done on drop; calling it twice is harmless.
    pub fn shutdown(&mut self) -> Result<()> {
        for procs in &mut self.procs {
            for guard in procs.all() {
                guard.signal(nix::sys::signal::Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        for procs in &mut self.procs {
            for guard in procs.all() {
                guard.reap(deadline);
            }
            *procs = NodeProcs::default();
        }
        self.netns.delete()
    }

    /// Installs the fleet's signing keys before any agent starts.
    ///
    /// LEAD: fill in once `p2pu keygen --out DIR` and src/keys.rs are merged: write node 1's
    /// signing key to its `agent.signing_key` path and its public key into every node's
    /// `agent.trusted_keys_dir` (e.g. run `self.binary keygen --out <node-1 dir>/keys` and
    /// copy the files). Until then the lab installs no keys.
    fn install_keys(&self) -> Result<()> {
        Ok(())
    }

    /// `p2pu init` for every node; node 1's generated gossip keyring is copied to the others
    /// first so the whole lab shares it.
    fn init_nodes(&self) -> Result<()> {
        let Some((first, others)) = self.nodes.split_first() else {
            return Ok(());
        };
        self.init_node(first)?;
        let keyring = &first.site.serf.keyring_file;
        let bytes = std::fs::read(keyring).map_err(Error::io("reading", keyring))?;
        for node in others {
            let target = &node.site.serf.keyring_file;
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(Error::io("creating directory", parent))?;
            }
            crate::fsutil::write_atomic(target, &bytes, 0o600)?;
        }
        // init only writes files, so the others can run at once.
        std::thread::scope(|scope| {
            let runs: Vec<_> = others
                .iter()
                .map(|node| scope.spawn(|| self.init_node(node)))
                .collect();
            runs.into_iter().try_for_each(|run| {
                run.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
        })
    }

    fn init_node(&self, node: &NodeInfo) -> Result<()> {
        let mut command = Command::new(&self.binary);
        command
            .arg("init")
            .arg("--config")
            .arg(&node.config)
            .arg("--no-systemd")
            .arg("--binary")
            .arg(&self.binary)
            .env_remove("P2PU_CONFIG")
            .env_remove("P2PU_TEMPLATES")
            .env_remove("P2PU_BINARY");
        let shown = format!(
            "{} init --config {}",
            self.binary.display(),
            node.config.display()
        );
        let output = command.output().map_err(|source| Error::Spawn {
            command: shown.clone(),
            source,
        })?;
        if output.status.success() {
            return Ok(());
        }
        Err(Error::Command {
            command: shown,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    fn spawn_serf(&mut self, index: usize) -> Result<()> {
        let node = self.node(index)?;
        let mut command = Command::new("serf");
        command
            .arg("agent")
            .arg(format!(
                "-config-file={}",
                node.site.serf.config_file.display()
            ))
            .env("HOME", &node.dir);
        confine(&mut command, self.netns.raw_fd(), None);
        let guard = Guard::spawn(
            format!("serf agent on {}", node.name),
            command,
            &node.log("serf"),
        )?;
        self.procs_mut(index)?.serf = Some(guard);
        Ok(())
    }

    fn spawn_transmission(&mut self, index: usize) -> Result<()> {
        let node = self.node(index)?;
        let settings = &node.site.transmission.settings_file;
        let settings_dir = settings.parent().unwrap_or(Path::new("/"));
        let mut command = Command::new("transmission-daemon");
        command
            .arg("-f")
            .arg("-g")
            .arg(settings_dir)
            .env("HOME", settings_dir);
        confine(
            &mut command,
            self.netns.raw_fd(),
            Some(self.transmission_user),
        );
        let name = format!("transmission-daemon on {}", node.name);
        let guard = Guard::spawn(name, command, &node.log("transmission"))?;
        self.procs_mut(index)?.transmission = Some(guard);
        Ok(())
    }

    fn wait_serf(&mut self, index: usize) -> Result<()> {
        let node = self.node(index)?;
        let serf = self.serf(index)?;
        let (name, rpc) = (node.name.clone(), node.serf_rpc);
        self.poll(&format!("Serf RPC of {name} at {rpc}"), |lab| {
            lab.check_running(index)?;
            Ok(match lab.netns.run(|| serf.members())? {
                Ok(members) if members.iter().any(|m| m.name == name) => Ok(()),
                Ok(_) => Err(format!("{name} does not list itself yet")),
                Err(e) => Err(crate::error::chain(&e)),
            })
        })
    }

    fn wait_transmission(&mut self, index: usize) -> Result<()> {
        let client = self.transmission(index)?.with_retry(Retry::none());
        let what = format!("Transmission RPC at {}", client.url());
        self.poll(&what, |lab| {
            lab.check_running(index)?;
            let answer = lab.netns.run(|| client.session_get())?;
            Ok(answer.map(drop).map_err(|e| crate::error::chain(&e)))
        })
    }

    /// Waits until every node whose Serf runs sees all of them alive. A node that lags is
    /// asked to join the others now and then: Serf itself retries joins and reconnects to
    /// failed members only every 30 s, and a restarted node 1 joins nobody by config.
    fn wait_converged(&mut self) -> Result<()> {
        let running: Vec<usize> = (1..=self.nodes.len())
            .filter(|&i| {
                self.procs[i - 1]
                    .serf
                    .as_mut()
                    .is_some_and(Guard::is_running)
            })
            .collect();
        let want: BTreeSet<String> = running
            .iter()
            .map(|&i| self.nodes[i - 1].name.clone())
            .collect();
        let gossip: Vec<String> = running
            .iter()
            .map(|&i| self.nodes[i - 1].serf_bind.to_string())
            .collect();
        let mut next_join = Instant::now() + JOIN_NUDGE;
        self.poll("every member to see every other alive", |lab| {
            let mut lagging = Vec::new();
            for &index in &running {
                let alive: BTreeSet<String> = lab
                    .members(index)?
                    .into_iter()
                    .filter(|m| m.status == MemberStatus::Alive)
                    .map(|m| m.name)
                    .collect();
                if !want.is_subset(&alive) {
                    let name = &lab.node(index)?.name;
                    lagging.push((index, format!("{name} sees alive {alive:?}, want {want:?}")));
                }
            }
            let Some((_, why)) = lagging.first() else {
                return Ok(Ok(()));
            };
            let why = why.clone();
            if Instant::now() >= next_join {
                next_join = Instant::now() + JOIN_NUDGE;
                for (index, _) in lagging {
                    let serf = lab.serf(index)?;
                    // Best effort: the next poll tells whether it worked.
                    let _ = lab.netns.run(|| serf.join(&gossip))?;
                }
            }
            Ok(Err(why))
        })
    }

    /// Fails when one of node `index`'s processes has exited.
    fn check_running(&mut self, index: usize) -> Result<()> {
        for guard in self.procs_mut(index)?.all() {
            guard.check_running()?;
        }
        Ok(())
    }

    /// Polls `probe` every 100 ms until it returns `Ok(Ok(value))`; `Ok(Err(why))` means "not
    /// yet" (`why` ends up in the timeout error), `Err` stops at once.
    fn poll<T>(
        &mut self,
        what: &str,
        mut probe: impl FnMut(&mut Lab) -> Result<std::result::Result<T, String>>,
    ) -> Result<T> {
        let started = Instant::now();
        loop {
            let last = match probe(self)? {
                Ok(value) => return Ok(value),
                Err(why) => why,
            };
            if started.elapsed() >= START_TIMEOUT {
                return Err(LabError::Timeout {
                    what: what.to_owned(),
                    after: START_TIMEOUT,
                    last,
                }
                .into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn procs_mut(&mut self, index: usize) -> Result<&mut NodeProcs> {
        self.node(index)?;
        self.procs
            .get_mut(index - 1)
            .ok_or_else(|| Error::Internal(format!("no processes for node {index}")))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Checks what the lab needs before it touches anything.
pub fn preflight() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(LabError::NotRoot.into());
    }
    let tools = [
        ("ip", "iproute2"),
        ("serf", "serf"),
        ("transmission-daemon", "transmission-daemon"),
    ];
    for (tool, package) in tools {
        if find_on_path(tool).is_none() {
            return Err(LabError::MissingTool { tool, package }.into());
        }
    }
    Ok(())
}

/// The first executable file named `program` on PATH.
fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Creates the base dir and opens it to other users (Transmission runs as its own user).
fn prepare_base(base: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(base).map_err(Error::io("creating directory", base))?;
    let base = base.canonicalize().map_err(Error::io("resolving", base))?;
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755))
        .map_err(Error::io("making searchable", &base))?;
    Ok(base)
}

/// The lab writes nothing outside its base dir, so it cannot fix a closed parent: it says so.
fn check_traversable(base: &Path, user: &str) -> Result<()> {
    for dir in base.ancestors().skip(1) {
        let mode = dir
            .metadata()
            .map_err(Error::io("reading", dir))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(LabError::Untraversable {
                path: dir.to_path_buf(),
                mode: mode & 0o7777,
                user: user.to_owned(),
            }
            .into());
        }
    }
    Ok(())
}
