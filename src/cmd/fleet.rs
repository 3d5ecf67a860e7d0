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
        "{:<20} {:<6} {:>7} {:<24} {:>14} {:<8} {}\n",
        "NODE", "ALIVE", "NEWEST", "NAME", "SEQ", "STATUS", "REASON"
    );
    for r in reports {
        let alive = if r.alive { "yes" } else { "no" };
        // How long ago this member's newest update changed: a frozen node shows here.
        let newest = r.newest_age_secs.map_or_else(|| "-".to_string(), age);
        match &r.updates {
            None => out.push_str(&format!(
                "{:<20} {:<6} {:>7} (no answer)\n",
                r.node, alive, newest
            )),
            Some(updates) if updates.is_empty() => out.push_str(&format!(
                "{:<20} {:<6} {:>7} (no updates)\n",
                r.node, alive, newest
            )),
            Some(updates) => {
                for u in updates {
                    let reason = u.reason.as_deref().unwrap_or("");
                    out.push_str(&format!(
                        "{:<20} {:<6} {:>7} {:<24} {:>14} {:<8} {}\n",
                        r.node,
                        alive,
                        newest,
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

/// An age in the largest whole unit: `45s`, `12m`, `5h`, `3d`.
fn age(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        7200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::state::Status;
    use crate::engines::{Member, SerfError};

    struct Fake;

    impl Gossip for Fake {
        fn members(&self) -> std::result::Result<Vec<Member>, SerfError> {
            let member = |name: &str, status| Member {
                name: name.into(),
                addr: [10, 0, 0, 1].into(),
                port: 7946,
                status,
                tags: Default::default(),
            };
            Ok(vec![
                member("b-frozen", MemberStatus::Alive),
                member("a-fresh", MemberStatus::Alive),
                member("c-silent", MemberStatus::Failed),
            ])
        }
        fn user_event(&self, _: &str, _: &[u8], _: bool) -> std::result::Result<(), SerfError> {
            Ok(())
        }
        fn query(
            &self,
            _: &str,
            _: &[u8],
            _: Duration,
        ) -> std::result::Result<Vec<(String, String)>, SerfError> {
            let answer = |node: &str, ats: &[u64]| {
                let status = NodeStatus {
                    node: node.into(),
                    updates: ats
                        .iter()
                        .map(|&at| UpdateStatus {
                            name: format!("u{at}.pp"),
                            seq: at * 1000,
                            status: Status::Applied,
                            reason: None,
                            at,
                        })
                        .collect(),
                };
                (node.to_string(), serde_json::to_string(&status).unwrap())
            };
            Ok(vec![
                answer("a-fresh", &[1_000, 9_990]),
                answer("b-frozen", &[1_000]),
            ])
        }
    }

    #[test]
    fn status_shows_how_old_each_members_newest_update_is() {
        let reports = fleet_status(&Fake, Duration::ZERO, None, 10_000).unwrap();
        let ages: Vec<_> = reports
            .iter()
            .map(|r| (r.node.as_str(), r.newest_age_secs))
            .collect();
        assert_eq!(
            ages,
            [
                ("a-fresh", Some(10)),
                ("b-frozen", Some(9_000)),
                ("c-silent", None)
            ]
        );
        let text = table(&reports);
        assert!(text.lines().next().unwrap().contains("NEWEST"), "{text}");
        let words = |start: &str| -> Vec<String> {
            let line = text.lines().find(|l| l.starts_with(start)).unwrap_or("");
            line.split_whitespace().map(str::to_string).collect()
        };
        assert_eq!(
            words("b-frozen")[..4],
            ["b-frozen", "yes", "2h", "u1000.pp"]
        );
        assert_eq!(words("c-silent"), ["c-silent", "no", "-", "(no", "answer)"]);
    }

    #[test]
    fn ages_use_the_largest_whole_unit() {
        let got: Vec<String> = [0, 119, 120, 7199, 7200, 172_799, 172_800]
            .into_iter()
            .map(age)
            .collect();
        assert_eq!(got, ["0s", "119s", "2m", "119m", "2h", "47h", "2d"]);
    }
}
