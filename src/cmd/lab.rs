//! `p2pu lab`: starts a local test fleet (see [`crate::lab`]) for a newcomer to try p2pu:
//! N nodes in a private network namespace, each with Serf, Transmission and the agent; node 1
//! submits the example manifest and every node applies it with Puppet, shown as it happens;
//! then teardown.

use crate::agent::runtime::state::{StateStore, Status};
use crate::cmd::Outcome;
use crate::engines::MemberStatus;
use crate::error::{Error, Result};
use crate::lab::{self, LabOptions};
use crate::Env;
use nix::sys::signal::{SigSet, Signal};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The update the demo sends.
const EXAMPLE: &str = include_str!("../../install/example.pp");
const EXAMPLE_NAME: &str = "example.pp";
/// How long the example update gets to be applied everywhere.
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(120);

/// Start a local fleet of p2pu nodes on this machine and watch an update reach them all.
///
/// Each node runs its own Serf agent, Transmission daemon and p2pu agent inside one private
/// network namespace (node i is node-i at 10.99.1.i); node 1 signs and submits the example
/// manifest and every node applies it with Puppet (into its own Puppet state dir). Needs
/// root, `ip`, `serf`, `transmission-daemon` and `puppet`. Everything is torn down at the
/// end; Ctrl-C during start-up takes effect once the lab is up.
#[derive(Debug, clap::Args)]
pub struct Lab {
    /// Number of nodes (1 to 254).
    // Checked by clap too, so a wrong count is a usage error before the root and tool checks.
    #[arg(long, default_value_t = 3, value_name = "N",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=254))]
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
        let mut options = LabOptions::new(self.nodes, &base, &binary);
        options.start_agent = true;
        let mut fleet = lab::Lab::start(options)?;
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

        let example = base.join(EXAMPLE_NAME);
        std::fs::write(&example, EXAMPLE).map_err(Error::io("writing", &example))?;
        let sent = Instant::now();
        let submitted = fleet.p2pu(1, &[std::ffi::OsStr::new("submit"), example.as_os_str()])?;
        if !submitted.status.success() {
            fleet.shutdown()?;
            return Err(Error::Usage(format!(
                "p2pu submit on node-1 failed: {}",
                String::from_utf8_lossy(&submitted.stderr).trim()
            )));
        }
        log(env, String::from_utf8_lossy(&submitted.stdout).trim())?;
        let statuses = watch_rollout(env, &fleet)?;
        let elapsed = sent.elapsed().as_secs_f64();
        let table = status_table(&fleet, &statuses)?;
        write!(env.stdout, "{table}").map_err(stdout_error)?;
        let missing: Vec<String> = fleet
            .nodes()
            .iter()
            .zip(&statuses)
            .filter(|(_, status)| **status != Some(Status::Applied))
            .map(|(node, _)| node.name.clone())
            .collect();
        if missing.is_empty() {
            log(
                env,
                &format!("every node applied {EXAMPLE_NAME} within {elapsed:.1} s of the submit"),
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
                "{EXAMPLE_NAME} was not applied on {} within {ROLLOUT_TIMEOUT:?}; see the logs in \
                 each node's logs/ directory",
                missing.join(", ")
            )));
        }
        Ok(Outcome::Success)
    }
}

/// Each node's status of the example update, read from its state dir.
fn statuses(fleet: &lab::Lab) -> Result<Vec<Option<Status>>> {
    fleet
        .nodes()
        .iter()
        .map(|node| {
            let store = StateStore::open(&node.site.agent.state_dir)?;
            let records = store.records(EXAMPLE_NAME)?;
            Ok(records.iter().max_by_key(|r| r.seq).map(|r| r.status))
        })
        .collect()
}

/// Follows the rollout, logging each change, until every node applied or failed, or time is up.
fn watch_rollout(env: &mut Env, fleet: &lab::Lab) -> Result<Vec<Option<Status>>> {
    let deadline = Instant::now() + ROLLOUT_TIMEOUT;
    let started = Instant::now();
    let mut last = Vec::new();
    loop {
        let now = statuses(fleet)?;
        if now != last {
            let line = fleet
                .nodes()
                .iter()
                .zip(&now)
                .map(|(node, s)| format!("{} {}", node.name, s.map_or("waiting", Status::as_str)))
                .collect::<Vec<_>>()
                .join(", ");
            log(
                env,
                &format!("{:>5.1} s  {line}", started.elapsed().as_secs_f64()),
            )?;
            last = now.clone();
        }
        let settled = now
            .iter()
            .all(|s| matches!(s, Some(Status::Applied | Status::Failed)));
        if settled || Instant::now() >= deadline {
            return Ok(now);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn status_table(fleet: &lab::Lab, statuses: &[Option<Status>]) -> Result<String> {
    let mut text = format!(
        "{:<8} {:<12} {:<8} {}\n",
        "NODE", "ADDRESS", "MEMBERS", EXAMPLE_NAME
    );
    for (node, status) in fleet.nodes().iter().zip(statuses) {
        let alive = fleet
            .members(node.index)?
            .iter()
            .filter(|m| m.status == MemberStatus::Alive)
            .count();
        let members = format!("{alive}/{}", fleet.nodes().len());
        let status = status.map_or("missing", Status::as_str);
        text.push_str(&format!(
            "{:<8} {:<12} {:<8} {status}\n",
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

#[cfg(test)]
mod tests {
    use crate::cmd::{exit, testing::run};

    // The lab itself needs root, a network namespace and real engines (tests/lab.rs); in-process
    // it is tested on its arguments, refused before any of that is looked at.
    #[test]
    fn a_node_count_out_of_range_is_a_usage_error_before_anything_starts() {
        let dir = tempfile::tempdir().unwrap();
        for nodes in ["0", "255"] {
            let (code, out, err) = run(dir.path(), &["lab", "--nodes", nodes, "--dir", "lab"]);
            assert_eq!((code, out.as_str()), (exit::USAGE, ""));
            assert!(
                err.contains(&format!("invalid value '{nodes}' for '--nodes <N>'")),
                "{err}"
            );
            assert!(err.contains("1..=254"), "{err}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
