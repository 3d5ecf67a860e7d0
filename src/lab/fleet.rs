//! The [`Lab`] handle: what tests and `p2pu lab` do with a running lab (run commands inside
//! it, send events, stop and start nodes and their processes) and its teardown.

use super::netns::Netns;
use super::node::NodeInfo;
use super::process::{self, Daemon};
use super::{check_traversable, io, preflight, prepare_base, LabError, LabOptions, Result};
use crate::engines::{Credentials, Gossip, Member, Serf, Transmission};
use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid, User};
use std::ffi::OsStr;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// How long a stopped process gets between SIGTERM and SIGKILL. Generous: Transmission sends
/// its "stopped" announces before it writes its resume files, and on a loaded machine 3 s was
/// once too little (the restarted daemon had lost its torrent). A process that exits sooner
/// costs nothing more.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Every lab namespace is named `p2pu-lab-<pid>-<n>`.
const NETNS_PREFIX: &str = "p2pu-lab-";

/// The processes of one node; `None` when stopped.
#[derive(Default)]
pub(super) struct NodeProcs {
    pub(super) serf: Option<Daemon>,
    pub(super) transmission: Option<Daemon>,
    pub(super) agent: Option<Daemon>,
}

impl NodeProcs {
    pub(super) fn all(&mut self) -> impl Iterator<Item = &mut Daemon> {
        [&mut self.agent, &mut self.transmission, &mut self.serf]
            .into_iter()
            .flatten()
    }
}

/// A running lab. Nodes are numbered from 1 (`node-1` is the operator).
pub struct Lab {
    pub(super) netns: Netns,
    pub(super) nodes: Vec<NodeInfo>,
    pub(super) procs: Vec<NodeProcs>,
    pub(super) binary: PathBuf,
    pub(super) start_agent: bool,
    pub(super) transmission_user: (Uid, Gid),
}

impl Lab {
    /// Writes every node's config, runs `p2pu init` for each, starts Serf and Transmission
    /// (and the agent, if asked) in a new namespace, and returns once every RPC answers and
    /// every member sees every other alive. On error everything started so far is torn down.
    pub fn start(opts: LabOptions) -> Result<Lab> {
        preflight()?;
        if !(1..=254).contains(&opts.nodes) {
            return Err(LabError::TooManyNodes { nodes: opts.nodes });
        }
        let base = prepare_base(&opts.base_dir)?;
        // The rendered Serf handler runs it from Serf's working directory.
        let binary = opts
            .binary
            .canonicalize()
            .map_err(io("finding the p2pu binary", &opts.binary))?;
        let mut lab = Lab {
            netns: Netns::fresh(NETNS_PREFIX)?,
            nodes: Vec::new(),
            procs: Vec::new(),
            binary,
            start_agent: opts.start_agent,
            transmission_user: (Uid::current(), Gid::current()),
        };
        for index in 1..=opts.nodes {
            let overrides = match (&opts.site_overrides, opts.node_overrides.get(&index)) {
                (Some(all), Some(own)) => Some(merged_toml(all, own)?),
                (Some(all), None) => Some(all.clone()),
                (None, own) => own.cloned(),
            };
            let node = NodeInfo::create(&base, index, opts.accept_legacy, overrides.as_deref())?;
            lab.netns.add_addr(node.addr)?;
            lab.nodes.push(node);
            lab.procs.push(NodeProcs::default());
        }
        let user_name = lab
            .nodes
            .first()
            .map(|node| node.site.transmission.user.clone())
            .ok_or_else(|| LabError::Internal("a lab without nodes".into()))?;
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
            .ok_or(LabError::NoSuchNode {
                index,
                count: self.nodes.len(),
            })
    }

    /// The network namespace's name (for `ip netns exec <name> ...` by hand).
    pub fn netns_name(&self) -> &str {
        self.netns.name()
    }

    /// The lab's network namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
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
        let credentials = Credentials {
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
            return Err(LabError::Internal("Lab::exec without a program".into()));
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
        self.netns.confine(&mut command, None)?;
        command.output().map_err(|source| LabError::Spawn {
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
        self.start_agent_with_env(index, &[])
    }

    /// [`Lab::start_agent`] with `env` added to the agent's environment (and so its children's):
    /// for a test that runs it under another clock (libfaketime's `LD_PRELOAD` and `FAKETIME`).
    pub fn start_agent_with_env(&mut self, index: usize, env: &[(&str, &str)]) -> Result<()> {
        let node = self.node(index)?.clone();
        let mut command = super::node::agent_command(&self.binary, &node);
        command.envs(env.iter().copied());
        self.netns.confine(&mut command, None)?;
        let guard = Daemon::spawn(
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
            agent.stop_within(STOP_GRACE);
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

    /// SIGKILL to what `which` names of node `index` ("agent", "transmission", "serf", each with
    /// its process group: the agent's Puppet and seed server, Serf's handlers), or to all of
    /// them at once ("node": a power cut, as far as the processes can tell). Start them again
    /// with [`Lab::start_node`].
    pub fn kill(&mut self, index: usize, which: &str) -> Result<()> {
        let procs = self.procs_mut(index)?;
        let guards = match which {
            "agent" => vec![procs.agent.take()],
            "transmission" => vec![procs.transmission.take()],
            "serf" => vec![procs.serf.take()],
            "node" => vec![
                procs.agent.take(),
                procs.transmission.take(),
                procs.serf.take(),
            ],
            other => return Err(LabError::Internal(format!("Lab::kill of {other:?}"))),
        };
        let mut guards: Vec<Daemon> = guards.into_iter().flatten().collect();
        for guard in &mut guards {
            guard.signal(Signal::SIGKILL);
        }
        for guard in &mut guards {
            guard.kill();
        }
        Ok(())
    }

    /// Stops and starts node `index`'s Transmission; returns once its RPC answers again.
    pub fn restart_transmission(&mut self, index: usize) -> Result<()> {
        if let Some(mut daemon) = self.procs_mut(index)?.transmission.take() {
            daemon.stop_within(STOP_GRACE);
        }
        self.spawn_transmission(index)?;
        self.wait_transmission(index)
    }

    /// Stops node `index`'s Serf alone (SIGTERM; the rendered config skips the graceful leave,
    /// so the others see it fail), as a crash or `systemctl stop serf` would.
    pub fn stop_serf(&mut self, index: usize) -> Result<()> {
        if let Some(mut serf) = self.procs_mut(index)?.serf.take() {
            serf.stop_within(STOP_GRACE);
        }
        Ok(())
    }

    /// Starts node `index`'s Serf again and returns once its RPC answers; it rejoins the
    /// others by itself (its `retry_join`; node 1 joins nobody and is found by the others).
    pub fn start_serf(&mut self, index: usize) -> Result<()> {
        self.spawn_serf(index)?;
        self.wait_serf(index)
    }

    /// Waits until every node whose Serf runs sees every such node alive.
    pub fn wait_members(&mut self) -> Result<()> {
        self.wait_converged()
    }

    /// Stops every process of node `index` (agent, Transmission, Serf, without a graceful
    /// leave: the others see it fail), as for a partition or a power cut.
    pub fn stop_node(&mut self, index: usize) -> Result<()> {
        let procs = self.procs_mut(index)?;
        for guard in procs.all() {
            guard.signal(Signal::SIGTERM);
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
                guard.signal(Signal::SIGTERM);
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

    pub(super) fn procs_mut(&mut self, index: usize) -> Result<&mut NodeProcs> {
        self.node(index)?;
        self.procs
            .get_mut(index - 1)
            .ok_or_else(|| LabError::Internal(format!("no processes for node {index}")))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// `own` merged over `all`, table by table, as one TOML text.
fn merged_toml(all: &str, own: &str) -> Result<String> {
    let parse = |text: &str| {
        text.parse::<toml::Table>()
            .map_err(|e| LabError::Internal(format!("lab overrides: {e}")))
    };
    let mut table = parse(all)?;
    for (key, value) in parse(own)? {
        match (table.get_mut(&key), value) {
            (Some(toml::Value::Table(mine)), toml::Value::Table(theirs)) => mine.extend(theirs),
            (_, value) => {
                table.insert(key, value);
            }
        }
    }
    toml::to_string(&table).map_err(|e| LabError::Internal(e.to_string()))
}
