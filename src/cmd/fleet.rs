//! `p2pu fleet status`: asks every member (a Serf query answered by each node's handler from
//! its state dir) which updates it applied, and shows who failed and who did not answer.

use crate::cmd::handle_event::{NodeStatus, UpdateStatus};
use crate::cmd::Outcome;
use crate::config::Config;
use crate::engines::{Gossip, MemberStatus};
use crate::error::{Error, Result};
use crate::Env;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, clap::Subcommand)]
pub enum Fleet {
    /// Which members applied which update, which failed, which did not answer.
    Status(FleetStatus),
}

impl Fleet {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        match self {
            Fleet::Status(c) => c.run(env),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct FleetStatus {
    /// Only this update name.
    name: Option<String>,
    /// The site config.
    #[arg(long, env = "P2PU_CONFIG", default_value = "/etc/p2pu/site.toml")]
    config: PathBuf,
    /// How long to wait for answers, in seconds.
    #[arg(long, default_value_t = 3.0)]
    timeout: f64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One member's row of `p2pu fleet status --json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MemberReport {
    pub node: String,
    pub alive: bool,
    /// `None`: the member did not answer in time (or answered garbage).
    pub updates: Option<Vec<UpdateStatus>>,
    /// Seconds since its newest update changed, by this machine's clock.
    pub newest_age_secs: Option<u64>,
}

impl FleetStatus {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let config = Config::load(&env.resolve(&self.config), None)?;
        let serf = crate::node::serf(&config)?;
        let timeout = Duration::try_from_secs_f64(self.timeout).map_err(|_| {
            Error::Usage(format!(
                "--timeout {}: not a duration in seconds",
                self.timeout
            ))
        })?;
        let reports = fleet_status(&serf, timeout, self.name.as_deref(), env.unix_now())?;
        crate::cmd::emit(env, self.json, &reports, |r| table(r))?;
        Ok(Outcome::Success)
    }
}

/// Asks the fleet; every member appears once, answered or not.
pub fn fleet_status(
    gossip: &dyn Gossip,
    timeout: Duration,
    name: Option<&str>,
    now: u64,
) -> Result<Vec<MemberReport>> {
    let members = gossip.members()?;
    let answers = gossip.query("p2pu-status", b"", timeout)?;
    let mut reports: Vec<MemberReport> = members
        .iter()
        .filter(|m| m.status != MemberStatus::Left)
        .map(|m| {
            let answer = answers
                .iter()
                .find(|(node, _)| node == &m.name)
                .and_then(|(_, text)| serde_json::from_str::<NodeStatus>(text).ok());
            let updates = answer.map(|status| {
                status
                    .updates
                    .into_iter()
                    .filter(|u| name.is_none_or(|n| u.name == n))
                    .collect::<Vec<_>>()
            });
            let newest_age_secs = updates
                .as_ref()
                .and_then(|u| u.iter().map(|u| u.at).max())
                .map(|at| now.saturating_sub(at));
            MemberReport {
                node: m.name.clone(),
                alive: m.status == MemberStatus::Alive,
                updates,
                newest_age_secs,
            }
        })
        .collect();
    reports.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(reports)
}

fn table(reports: &[MemberReport]) -> String {
    let mut out = format!(
        "{:<20} {:<6} {:<24} {:>14} {:<8} {}\n",
        "NODE", "ALIVE", "NAME", "SEQ", "STATUS", "REASON"
    );
    for r in reports {
        let alive = if r.alive { "yes" } else { "no" };
        match &r.updates {
            None => out.push_str(&format!("{:<20} {:<6} (no answer)\n", r.node, alive)),
            Some(updates) if updates.is_empty() => {
                out.push_str(&format!("{:<20} {:<6} (no updates)\n", r.node, alive))
            }
            Some(updates) => {
                for u in updates {
                    let reason = u.reason.as_deref().unwrap_or("");
                    out.push_str(&format!(
                        "{:<20} {:<6} {:<24} {:>14} {:<8} {}\n",
                        r.node,
                        alive,
                        u.name,
                        u.seq,
                        u.status.as_str(),
                        reason
                    ));
                }
            }
        }
    }
    out
}
