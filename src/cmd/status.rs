//! `p2pu status`: this node's updates (applied, pending, failed, held, with reasons) and the
//! announcements it rejected, from the agent's state dir.

use crate::agent::state::{Record, Rejection, StateStore};
use crate::cmd::Outcome;
use crate::config::Config;
use crate::error::Result;
use crate::Env;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Show this node's updates and rejected announcements.
#[derive(Debug, clap::Args)]
pub struct Status {
    /// The site config.
    #[arg(long, env = "P2PU_CONFIG", default_value = "/etc/p2pu/site.toml")]
    config: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Show every kept record of each name, not just the newest.
    #[arg(long)]
    all: bool,
}

/// `p2pu status --json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    pub updates: Vec<Record>,
    pub rejected: Vec<Rejection>,
}

impl Status {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let config = Config::load(&env.resolve(&self.config), None)?;
        let store = StateStore::open(&config.site.agent.state_dir)?;
        let updates = if self.all {
            let mut all = Vec::new();
            for name in store.names()? {
                all.extend(store.records(&name)?);
            }
            all
        } else {
            store.latest()?
        };
        let report = StatusReport {
            updates,
            rejected: store.rejections()?,
        };
        crate::cmd::emit(env, self.json, &report, table)?;
        Ok(Outcome::Success)
    }
}

fn table(report: &StatusReport) -> String {
    let mut out = String::new();
    if report.updates.is_empty() {
        out.push_str("no updates yet\n");
    } else {
        out.push_str(&format!(
            "{:<24} {:>14} {:<9} {:<8} {}\n",
            "NAME", "SEQ", "KIND", "STATUS", "REASON"
        ));
        for r in &report.updates {
            let reason = r.reason.as_deref().unwrap_or("");
            out.push_str(&format!(
                "{:<24} {:>14} {:<9} {:<8} {}\n",
                r.name,
                r.seq,
                r.kind,
                r.status.as_str(),
                reason
            ));
        }
    }
    if !report.rejected.is_empty() {
        out.push_str(&format!(
            "\n{} rejected announcement(s), newest last:\n",
            report.rejected.len()
        ));
        for r in report.rejected.iter().rev().take(10).rev() {
            let what = match (&r.name, r.seq) {
                (Some(name), Some(seq)) => format!("{name} seq {seq}"),
                (Some(name), None) => name.clone(),
                _ => "(undecodable)".into(),
            };
            out.push_str(&format!("  {what} from {}: {}\n", r.source, r.reason));
        }
    }
    out
}
