//! `p2pu rollout abort|resume|retry|revert NAME`: signs a control statement for an update already
//! announced (`formats::control`) with this node's key and broadcasts it as the Serf user
//! event `p2pu-control`. Each node verifies it like an announcement (the same trusted keys,
//! the same threshold as the update's name) and acts on its own record of the update.

use crate::cmd::{ConfigArg, Outcome};
use crate::config::{Config, MachineFacts};
use crate::error::{Error, Result};
use crate::formats::control::{parse_nodes, Action};
use crate::Env;
use serde::{Deserialize, Serialize};

#[derive(Debug, clap::Subcommand)]
pub enum Rollout {
    /// Hold every node that has not applied the update (`halted`, "aborted by operator").
    Abort(RolloutArgs),
    /// Let halted nodes go on, past the --max-failures threshold.
    Resume(RolloutArgs),
    /// Make the nodes where the update failed try again now (after fixing the cause).
    Retry(RolloutArgs),
    /// Make the nodes that applied the update apply a kept good version again (`--to SEQ`, or
    /// the last good one before it) and record `reverted`; a node without it kept refuses.
    Revert(RevertArgs),
}

/// `rollout revert`: which update, which nodes, and the version to go back to.
#[derive(Debug, clap::Args)]
pub struct RevertArgs {
    #[command(flatten)]
    args: RolloutArgs,
    /// The seq to go back to (an earlier one the nodes still keep); default: the last good
    /// version before the update.
    #[arg(long, value_name = "SEQ")]
    to: Option<u64>,
}

/// Which update, and which nodes.
#[derive(Debug, clap::Args)]
pub struct RolloutArgs {
    /// The update's name.
    name: String,
    /// The update's seq; default: the newest of NAME this node knows.
    #[arg(long)]
    seq: Option<u64>,
    /// Only nodes whose name matches one of these globs (`cam-1,door-*`).
    #[arg(long, value_name = "GLOB,...")]
    nodes: Option<String>,
    #[command(flatten)]
    config: ConfigArg,
    /// Print JSON (a ControlReport).
    #[arg(long)]
    json: bool,
}

/// `p2pu rollout ... --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlReport {
    pub action: String,
    pub name: String,
    pub seq: u64,
    /// `revert` only: the seq to go back to; null: the last good one before `seq`.
    pub to: Option<u64>,
    /// Unix seconds.
    pub issued: u64,
    /// Node globs it is for; empty: every node.
    pub nodes: Vec<String>,
    /// The signed statement as broadcast (`p2pu-ctl1:...`).
    pub wire: String,
}

impl Rollout {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let (action, args, to) = match self {
            Rollout::Abort(args) => (Action::Abort, args, None),
            Rollout::Resume(args) => (Action::Resume, args, None),
            Rollout::Retry(args) => (Action::Retry, args, None),
            Rollout::Revert(RevertArgs { args, to }) => (Action::Revert, args, to),
        };
        args.run(action, to, env)
    }
}

impl RolloutArgs {
    fn run(self, action: Action, to: Option<u64>, env: &mut Env) -> Result<Outcome> {
        // Refused before anything is read or sent.
        let nodes = self.nodes.as_deref().map(parse_nodes).transpose()?;
        crate::formats::announcement::validate_name(&self.name)?;
        let config = Config::load(&self.config.resolve(env), Some(&MachineFacts::probe()))?;
        let seq = match self.seq {
            Some(seq) => seq,
            None => newest_seq(&config, &self.name)?,
        };
        if to.is_some_and(|to| to >= seq) {
            return Err(Error::Usage(format!(
                "--to {}: not earlier than {} seq {seq}; a revert goes back to an earlier version",
                to.unwrap_or_default(),
                self.name
            )));
        }
        let issued = env.unix_now();
        let gossip = env.engines.gossip(&config)?;
        let control = crate::publish::send_control(
            &config,
            gossip.as_ref(),
            action,
            &self.name,
            seq,
            issued,
            nodes.unwrap_or_default(),
            to,
        )?;
        let wire = control.to_wire();
        let report = ControlReport {
            action: action.as_str().to_string(),
            name: self.name,
            seq,
            to,
            issued,
            nodes: control.nodes.clone(),
            wire,
        };
        crate::cmd::emit(env, self.json, &report, |r| {
            let to = if r.nodes.is_empty() {
                "every node".to_string()
            } else {
                format!("nodes {}", r.nodes.join(","))
            };
            let back =
                r.to.map(|seq| format!(" (back to seq {seq})"))
                    .unwrap_or_default();
            format!(
                "sent {} of {} seq {}{back} to {to}\n",
                r.action, r.name, r.seq
            )
        })?;
        Ok(Outcome::Success)
    }
}

/// The newest seq of `name` in this node's state: the update the operator means.
fn newest_seq(config: &Config, name: &str) -> Result<u64> {
    let store =
        crate::agent::runtime::state::StateStore::open_read_only(&config.site.agent.state_dir);
    store
        .records(name)?
        .iter()
        .map(|r| r.seq)
        .max()
        .ok_or_else(|| {
            Error::Usage(format!(
                "{name}: this node has no record of it; give --seq (see `p2pu fleet status {name}`)"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::ControlReport;
    use crate::cmd::testing::{keyed_site, run, Run};
    use crate::engines::clients::Engines;
    use crate::engines::fake::FakeGossip;
    use crate::formats::control::{Action, Control};
    use std::sync::Arc;

    /// `rollout abort` signs a statement for the update this node knows (or --seq) and
    /// broadcasts it as `p2pu-control`; the JSON report decodes with unknown fields denied.
    #[test]
    fn abort_signs_and_broadcasts_a_control_statement() {
        let dir = keyed_site();
        let gossip = Arc::new(FakeGossip::default());
        let engines = || Engines::fakes().gossip_engine(gossip.clone());
        // No record of it here and no --seq: refused, nothing sent.
        let (code, _, err) = Run::new(dir.path()).engines(engines()).run(&[
            "rollout",
            "abort",
            "site.pp",
            "--config",
            "site.toml",
        ]);
        assert_ne!(code, 0);
        assert!(err.contains("give --seq"), "{err}");
        assert!(gossip.events().is_empty());
        let (code, out, err) = Run::new(dir.path()).engines(engines()).run(&[
            "rollout",
            "abort",
            "site.pp",
            "--seq",
            "5",
            "--nodes",
            "cam-*",
            "--config",
            "site.toml",
            "--json",
        ]);
        assert_eq!(code, 0, "{err}");
        let report: ControlReport = crate::cmd::json::decode(out.as_bytes()).unwrap();
        assert_eq!((report.action.as_str(), report.seq), ("abort", 5));
        let events = gossip.events();
        let (event, wire, coalesce) = &events[0];
        assert_eq!((event.as_str(), *coalesce), ("p2pu-control", false));
        let control = Control::decode(wire).unwrap();
        assert_eq!(control.action, Action::Abort);
        assert_eq!(control.nodes, ["cam-*"]);
        assert_eq!(control.to_wire(), report.wire);
        let secret = crate::keys::read_secret(&dir.path().join("k/signing.key")).unwrap();
        let trusted = crate::keys::TrustedKeys::from_keys([secret.verifying_key()]);
        assert_eq!(control.verify(&trusted).unwrap().len(), 1);
        let extra = out.replacen("\"seq\"", "\"surprise\":0,\"seq\"", 1);
        assert!(serde_json::from_str::<ControlReport>(&extra).is_err());
    }

    /// `rollout revert --to` signs a revert that carries its target; a `--to` that is not
    /// earlier than the update is refused before anything is sent.
    #[test]
    fn revert_signs_its_target_and_refuses_a_later_one() {
        let dir = keyed_site();
        let gossip = Arc::new(FakeGossip::default());
        let engines = || Engines::fakes().gossip_engine(gossip.clone());
        let revert = |to: &str| {
            Run::new(dir.path()).engines(engines()).run(&[
                "rollout",
                "revert",
                "site.pp",
                "--seq",
                "5",
                "--to",
                to,
                "--config",
                "site.toml",
                "--json",
            ])
        };
        let (code, _, err) = revert("5");
        assert_ne!(code, 0);
        assert!(err.contains("--to 5"), "{err}");
        assert!(gossip.events().is_empty());
        let (code, out, err) = revert("3");
        assert_eq!(code, 0, "{err}");
        let report: ControlReport = crate::cmd::json::decode(out.as_bytes()).unwrap();
        assert_eq!((report.action.as_str(), report.to), ("revert", Some(3)));
        let control = Control::decode(&gossip.events()[0].1).unwrap();
        assert_eq!((control.action, control.to()), (Action::Revert, Some(3)));
    }

    /// A bad glob list is refused naming the flag and value, before any config is read.
    #[test]
    fn bad_nodes_are_refused_before_anything_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let (code, _, err) = run(
            dir.path(),
            &[
                "rollout",
                "retry",
                "site.pp",
                "--nodes",
                "a,,b",
                "--config",
                "/nonexistent/site.toml",
            ],
        );
        assert_ne!(code, 0);
        assert!(err.contains("--nodes \"a,,b\""), "{err}");
    }
}
