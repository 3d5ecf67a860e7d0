//! Bringing a lab up: `p2pu init` for every node, the engines' processes, and the waits for
//! their RPCs and for the members to see each other.

use super::fleet::Lab;
use super::node::NodeInfo;
use super::process::Daemon;
use super::{io, LabError, Result};
use crate::engines::{Gossip, MemberStatus, Retry, TorrentEngine};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a daemon gets to answer, and the members to see each other.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long members may disagree before a lagging one is told to join the others.
const JOIN_NUDGE: Duration = Duration::from_secs(2);

impl Lab {
    /// Installs the fleet's signing key before any agent starts: node 1 is the operator and
    /// holds the secret key; every node trusts its public key.
    pub(super) fn install_keys(&self) -> Result<()> {
        match self.nodes.first() {
            Some(operator) => install_keys(operator, &self.nodes),
            None => Ok(()),
        }
    }

    /// `p2pu init` for every node; node 1's generated gossip keyring is copied to the others
    /// first so the whole lab shares it.
    pub(super) fn init_nodes(&self) -> Result<()> {
        let Some((first, others)) = self.nodes.split_first() else {
            return Ok(());
        };
        self.init_node(first)?;
        let keyring = &first.site.serf.keyring_file;
        let bytes = std::fs::read(keyring).map_err(io("reading", keyring))?;
        for node in others {
            let target = &node.site.serf.keyring_file;
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io("creating directory", parent))?;
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

    pub(super) fn init_node(&self, node: &NodeInfo) -> Result<()> {
        init_node(&self.binary, node)
    }

    pub(super) fn spawn_serf(&mut self, index: usize) -> Result<()> {
        let node = self.node(index)?;
        let mut command = serf_command(node);
        self.netns.confine(&mut command, None)?;
        let guard = Daemon::spawn(
            format!("serf agent on {}", node.name),
            command,
            &node.log("serf"),
        )?;
        self.procs_mut(index)?.serf = Some(guard);
        Ok(())
    }

    pub(super) fn spawn_transmission(&mut self, index: usize) -> Result<()> {
        let node = self.node(index)?;
        let mut command = transmission_command(node);
        self.netns
            .confine(&mut command, Some(self.transmission_user))?;
        let name = format!("transmission-daemon on {}", node.name);
        let guard = Daemon::spawn(name, command, &node.log("transmission"))?;
        self.procs_mut(index)?.transmission = Some(guard);
        Ok(())
    }

    pub(super) fn wait_serf(&mut self, index: usize) -> Result<()> {
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

    pub(super) fn wait_transmission(&mut self, index: usize) -> Result<()> {
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
    pub(super) fn wait_converged(&mut self) -> Result<()> {
        let running: Vec<usize> = (1..=self.nodes.len())
            .filter(|&i| {
                self.procs[i - 1]
                    .serf
                    .as_mut()
                    .is_some_and(Daemon::is_running)
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
                    let _ = lab
                        .netns
                        .run(|| serf.join(&gossip, crate::engines::JoinEvents::IgnoreOld))?;
                }
            }
            Ok(Err(why))
        })
    }

    /// Fails when one of node `index`'s processes has exited.
    pub(super) fn check_running(&mut self, index: usize) -> Result<()> {
        for guard in self.procs_mut(index)?.all() {
            guard.check_running()?;
        }
        Ok(())
    }

    /// Polls `probe` every 100 ms until it returns `Ok(Ok(value))`; `Ok(Err(why))` means "not
    /// yet" (`why` ends up in the timeout error), `Err` stops at once.
    pub(super) fn poll<T>(
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
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The operator's key pair: its secret key becomes `operator`'s signing key, and every node
/// in `nodes` trusts its public key.
pub fn install_keys(operator: &NodeInfo, nodes: &[NodeInfo]) -> Result<()> {
    let key = crate::keys::generate();
    let secret = crate::keys::secret_to_text(&key);
    crate::fsutil::write_atomic(&operator.site.agent.signing_key, secret.as_bytes(), 0o600)?;
    let public = crate::keys::PublicKey {
        key: key.verifying_key(),
        comment: "lab operator".into(),
    };
    for node in nodes {
        let dir = &node.site.agent.trusted_keys_dir;
        <crate::keys::TrustedKeys as crate::keys::TrustedKeysDir>::add(dir, &public).map_err(
            |source| LabError::Keys {
                dir: dir.clone(),
                source,
            },
        )?;
    }
    Ok(())
}

/// `<binary> init --no-systemd` for `node`: renders its engines' configs and secrets.
pub fn init_node(binary: &Path, node: &NodeInfo) -> Result<()> {
    let mut command = Command::new(binary);
    command
        .arg("init")
        .arg("--config")
        .arg(&node.config)
        .arg("--no-systemd")
        .arg("--binary")
        .arg(binary)
        .env_remove("P2PU_CONFIG")
        .env_remove("P2PU_TEMPLATES")
        .env_remove("P2PU_BINARY");
    let shown = format!(
        "{} init --config {}",
        binary.display(),
        node.config.display()
    );
    let output = command.output().map_err(|source| LabError::Spawn {
        command: shown.clone(),
        source,
    })?;
    if output.status.success() {
        return Ok(());
    }
    Err(LabError::Command {
        command: shown,
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// `serf agent` with `node`'s rendered config (the caller picks namespace and process group).
pub fn serf_command(node: &NodeInfo) -> Command {
    let mut command = Command::new("serf");
    command
        .arg("agent")
        .arg(format!(
            "-config-file={}",
            node.site.serf.config_file.display()
        ))
        .env("HOME", &node.dir);
    command
}

/// `transmission-daemon -f` with `node`'s settings dir; the caller runs it as
/// `transmission.user`.
pub fn transmission_command(node: &NodeInfo) -> Command {
    let settings = &node.site.transmission.settings_file;
    let settings_dir = settings.parent().unwrap_or(Path::new("/"));
    let mut command = Command::new("transmission-daemon");
    command
        .arg("-f")
        .arg("-g")
        .arg(settings_dir)
        .env("HOME", settings_dir);
    command
}
