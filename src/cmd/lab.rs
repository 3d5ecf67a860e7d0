//! `p2pu lab`: starts a local test fleet (see [`crate::lab`]) for a newcomer to try p2pu:
//! N nodes in a private network namespace, a test event broadcast from node 1 and seen in
//! every node's spool, a status table, then teardown.

use crate::agent::spool;
use crate::cmd::Outcome;
use crate::engines::MemberStatus;
use crate::error::{Error, Result};
use crate::lab::{self, LabOptions};
use crate::render::UPDATE_EVENT;
use crate::Env;
use nix::sys::signal::{SigSet, Signal};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The demo event's payload.
const HELLO: &[u8] = b"hello";
/// How long the demo event gets to reach every spool.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Start a local test fleet of p2pu nodes on this machine and show an event reach them all.
///
/// Each node runs its own Serf agent and Transmission daemon inside one private network
/// namespace (node i is node-i at 10.99.1.i). Needs root, `ip`, `serf` and
/// `transmission-daemon`. Everything is torn down at the end; Ctrl-C during start-up takes
/// effect once the lab is up.
#[derive(Debug, clap::Args)]
pub struct Lab {
    /// Number of nodes (1 to 254).
    #[arg(long, default_value_t = 3, value_name = "N")]
    nodes: usize,
    /// Put the nodes' files in DIR and leave them there (default: a temporary directory,
    /// removed at the end).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// After the demo, keep the lab running until Ctrl-C or SIGTERM, then tear it down.
    #[arg(long)]
    keep: bool,
}

impl Lab {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        lab::preflight()?;
        // Held back until the lab is up, so that any way out tears it down (with --keep, a
        // Ctrl-C during start-up ends the wait at once).
        let signals = stop_signals();
        signals
            .thread_block()
            .map_err(|e| Error::Internal(format!("blocking SIGINT and SIGTERM: {e}")))?;
        let binary =
            std::env::current_exe().map_err(Error::io("finding", "the running p2pu binary"))?;
        let temp = match &self.dir {
            Some(_) => None,
            None => Some(
                tempfile::Builder::new()
                    .prefix("p2pu-lab-")
                    .tempdir()
                    .map_err(Error::io("creating a temporary directory in", "/tmp"))?,
            ),
        };
        let base = match (&self.dir, &temp) {
            (Some(dir), _) => env.resolve(dir),
            (None, Some(temp)) => temp.path().to_path_buf(),
            (None, None) => return Err(Error::Internal("lab without a directory".into())),
        };
        log(
            env,
            &format!("starting {} nodes in {}", self.nodes, base.display()),
        )?;
        let started = Instant::now();
        let mut fleet = lab::Lab::start(LabOptions::new(self.nodes, &base, &binary))?;
        log(
            env,
            &format!(
                "all {} members alive after {:.1} s (namespace {})",
                self.nodes,
                started.elapsed().as_secs_f64(),
                fleet.netns_name()
            ),
        )?;
        for node in fleet.nodes() {
            let line = format!("{}\t{}\t{}", node.name, node.addr, node.dir.display());
            writeln!(env.stdout, "{line}").map_err(stdout_error)?;
        }

        log(
            env,
            &format!("sending {UPDATE_EVENT} \"hello\" from node-1"),
        )?;
        // A reused --dir may hold earlier events: only new ones count.
        let before = fleet
            .nodes()
            .iter()
            .map(|node| spool::list(&node.site.agent.spool_dir))
            .collect::<Result<Vec<_>>>()?;
        let sent = Instant::now();
        fleet.serf_event(1, UPDATE_EVENT, HELLO)?;
        let received = wait_for_hello(&fleet, &before)?;
        let elapsed = sent.elapsed().as_secs_f64();
        let table = status_table(&fleet, &received)?;
        write!(env.stdout, "{table}").map_err(stdout_error)?;
        let missing: Vec<String> = fleet
            .nodes()
            .iter()
            .zip(&received)
            .filter(|(_, got)| !**got)
            .map(|(node, _)| node.name.clone())
            .collect();
        if missing.is_empty() {
            log(
                env,
                &format!("every node spooled the event within {elapsed:.1} s"),
            )?;
        }

        if self.keep {
            let ns = fleet.netns_name().to_owned();
            let serf = fleet.node(1).map(|n| n.serf_rpc.to_string())?;
            log(
                env,
                &format!(
                    "the lab keeps running; try: ip netns exec {ns} serf members -rpc-addr={serf} \
                     -rpc-auth=\"$(cat {})\"\npress Ctrl-C to tear it down",
                    fleet.node(1)?.site.serf.rpc_auth_file.display()
                ),
            )?;
            signals
                .wait()
                .map_err(|e| Error::Internal(format!("waiting for SIGINT or SIGTERM: {e}")))?;
        }
        log(env, "tearing down")?;
        fleet.shutdown()?;
        if !missing.is_empty() {
            return Err(Error::Usage(format!(
                "the test event did not reach {} within {DELIVERY_TIMEOUT:?}; see the logs in \
                 each node's logs/ directory",
                missing.join(", ")
            )));
        }
        Ok(Outcome::Success)
    }
}

/// Which nodes have a new hello event in their spool (not among `before`), once all do or
/// the time is up.
fn wait_for_hello(fleet: &lab::Lab, before: &[Vec<PathBuf>]) -> Result<Vec<bool>> {
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let received = fleet
            .nodes()
            .iter()
            .zip(before)
            .map(|(node, old)| spooled_hello(&node.site.agent.spool_dir, old))
            .collect::<Result<Vec<bool>>>()?;
        if received.iter().all(|got| *got) || Instant::now() >= deadline {
            return Ok(received);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn spooled_hello(dir: &std::path::Path, old: &[PathBuf]) -> Result<bool> {
    for path in spool::list(dir)? {
        if old.contains(&path) {
            continue;
        }
        if spool::read(&path)?.is_some_and(|event| event.payload == HELLO) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn status_table(fleet: &lab::Lab, received: &[bool]) -> Result<String> {
    let mut text = format!(
        "{:<8} {:<12} {:<8} {}\n",
        "NODE", "ADDRESS", "MEMBERS", "TEST EVENT"
    );
    for (node, got) in fleet.nodes().iter().zip(received) {
        let alive = fleet
            .members(node.index)?
            .iter()
            .filter(|m| m.status == MemberStatus::Alive)
            .count();
        let members = format!("{alive}/{}", fleet.nodes().len());
        let event = if *got { "spooled" } else { "missing" };
        text.push_str(&format!(
            "{:<8} {:<12} {:<8} {event}\n",
            node.name,
            node.addr.to_string(),
            members
        ));
    }
    Ok(text)
}

/// SIGINT (Ctrl-C) and SIGTERM.
fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}

fn log(env: &mut Env, line: &str) -> Result<()> {
    writeln!(env.stderr, "p2pu lab: {line}").map_err(Error::io("writing to", "standard error"))
}

fn stdout_error(source: std::io::Error) -> Error {
    Error::Io {
        action: "writing to",
        path: "standard output".into(),
        source,
    }
}
