//! What the dashboard page reads from `/api/fleet`: the fleet's status answers as they came
//! (bounded by the status query's own answer limit), and what the page draws from them for
//! the newest rollout (counts, the halt, the waves still waiting, applied-over-time), worked
//! out here once so the page's script only lays it out.

use crate::agent::runtime::state::{RolloutOutcome, Status};
use crate::agent::runtime::status::{is_settled, newest_rollout, MemberReport, RolloutId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The most members one view lists: a fleet larger than this is cut (and says so), so a view
/// stays a few MiB at most (each member's answer is at most the status query's 7 KiB).
pub const MAX_MEMBERS: usize = 2000;

/// `GET /api/fleet`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetView {
    /// When the fleet was asked (unix seconds, this machine's clock); 0 before the first answer.
    pub asked_at: u64,
    /// Every member, answered or not, sorted by name.
    pub members: Vec<MemberReport>,
    /// Members left out past [`MAX_MEMBERS`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cut: usize,
    /// The newest update any member reports.
    pub rollout: Option<RolloutId>,
    /// Whether every alive member is done with it.
    pub settled: bool,
    /// Alive members by their status of the rollout (`unaware`: not heard of it yet,
    /// `no-answer`: did not answer).
    pub counts: BTreeMap<String, usize>,
    /// Where it halted: on how many members, and the first one's reason.
    pub halt: Option<Halt>,
    /// Members waiting for a later wave, by wave.
    pub waves: Vec<Wave>,
    /// Applied over time.
    pub progress: Option<Progress>,
    /// Whether this dashboard sends operator actions (`--allow-actions`).
    pub actions: bool,
    /// Why the fleet could not be asked, the last time (Serf down, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Halt {
    pub members: usize,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wave {
    /// Wave `wave` of `of` (from the waiting members' reasons, `waiting: wave 2 of 4 ...`).
    pub wave: u32,
    pub of: u32,
    pub waiting: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// The earliest time any member recorded the rollout: the closest to its submit the
    /// answers tell (unix seconds).
    pub start: u64,
    /// Seconds after `start` at which each member that applied it recorded so, ascending.
    pub applied_after: Vec<u64>,
    /// Alive members it is for: every alive member but those that recorded it not targeted.
    pub targeted: usize,
}

impl FleetView {
    /// The view of these answers, asked at `now`.
    pub fn of(mut members: Vec<MemberReport>, now: u64, actions: bool) -> FleetView {
        let cut = members.len().saturating_sub(MAX_MEMBERS);
        members.truncate(MAX_MEMBERS);
        let rollout = newest_rollout(&members);
        let settled = rollout.as_ref().is_some_and(|r| is_settled(&members, r));
        let mut view = FleetView {
            asked_at: now,
            members,
            cut,
            rollout,
            settled,
            counts: BTreeMap::new(),
            halt: None,
            waves: Vec::new(),
            progress: None,
            actions,
            error: None,
        };
        view.summarise();
        view
    }

    fn summarise(&mut self) {
        let Some(rollout) = self.rollout.clone() else {
            return;
        };
        let mut halt: Option<Halt> = None;
        let mut waves: BTreeMap<(u32, u32), usize> = BTreeMap::new();
        let mut recorded = Vec::new();
        let mut applied = Vec::new();
        let mut targeted = 0;
        for member in self.members.iter().filter(|m| m.alive) {
            let Some(updates) = &member.updates else {
                *self.counts.entry("no-answer".into()).or_default() += 1;
                continue;
            };
            let Some(update) = updates
                .iter()
                .find(|u| u.name == rollout.name && u.seq == rollout.seq)
            else {
                *self.counts.entry("unaware".into()).or_default() += 1;
                targeted += 1;
                continue;
            };
            *self
                .counts
                .entry(update.status.as_str().into())
                .or_default() += 1;
            recorded.push(update.at);
            match update.status.rollout_outcome() {
                RolloutOutcome::NotTargeted => {}
                RolloutOutcome::Applied => {
                    targeted += 1;
                    applied.push(update.at);
                }
                RolloutOutcome::Halted => {
                    targeted += 1;
                    let entry = halt.get_or_insert_with(|| Halt {
                        members: 0,
                        reason: update.reason.clone().unwrap_or_default(),
                    });
                    entry.members += 1;
                }
                _ => targeted += 1,
            }
            if update.status == Status::Waiting {
                if let Some(wave) = update.reason.as_deref().and_then(wave_of) {
                    *waves.entry(wave).or_default() += 1;
                }
            }
        }
        self.halt = halt;
        self.waves = waves
            .into_iter()
            .map(|((wave, of), waiting)| Wave { wave, of, waiting })
            .collect();
        if let Some(&start) = recorded.iter().min() {
            let mut applied_after: Vec<u64> =
                applied.iter().map(|at| at.saturating_sub(start)).collect();
            applied_after.sort_unstable();
            self.progress = Some(Progress {
                start,
                applied_after,
                targeted,
            });
        }
    }
}

/// `(k, n)` from a waiting member's reason, `waiting: wave k of n...`.
fn wave_of(reason: &str) -> Option<(u32, u32)> {
    let rest = reason.strip_prefix("waiting: wave ")?;
    let mut words = rest.split([' ', ';', ',']);
    let k = words.next()?.parse().ok()?;
    (words.next()? == "of").then_some(())?;
    let n = words.next()?.parse().ok()?;
    Some((k, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::runtime::status::UpdateStatus;

    fn member(node: &str, status: Option<(Status, &str, u64)>) -> MemberReport {
        MemberReport {
            node: node.into(),
            addr: "10.0.0.1:7946".into(),
            alive: true,
            version: None,
            omitted: 0,
            updates: status.map(|(status, reason, at)| {
                vec![UpdateStatus {
                    name: "site.pp".into(),
                    seq: 7,
                    status,
                    reason: (!reason.is_empty()).then(|| reason.into()),
                    at,
                    bad_sources: Vec::new(),
                    attempts: 0,
                    sources: Vec::new(),
                    stripes: Vec::new(),
                }]
            }),
            newest_age_secs: None,
            heartbeat: None,
            tags: Default::default(),
        }
    }

    /// The summary the page draws: counts by status, the halt with its reason, the waves still
    /// waiting, and applied members against seconds since the first record.
    #[test]
    fn the_view_counts_the_newest_rollout_and_finds_its_halt_waves_and_progress() {
        let members = vec![
            member("a", Some((Status::Applied, "", 100))),
            member("b", Some((Status::Applied, "", 130))),
            member("c", Some((Status::Failed, "Error: boom", 120))),
            member(
                "d",
                Some((Status::Halted, "halted: 1 member(s) failed", 140)),
            ),
            member("e", Some((Status::Halted, "halted: other", 141))),
            member(
                "f",
                Some((Status::Waiting, "waiting: wave 3 of 4; earlier waves", 105)),
            ),
            member("g", Some((Status::NotTargeted, "tag:role=camera", 101))),
            member("h", None),
        ];
        let view = FleetView::of(members, 200, false);
        assert_eq!(
            view.rollout,
            Some(RolloutId {
                name: "site.pp".into(),
                seq: 7
            })
        );
        let counts: Vec<(&str, usize)> =
            view.counts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            counts,
            [
                ("applied", 2),
                ("failed", 1),
                ("halted", 2),
                ("no-answer", 1),
                ("not-targeted", 1),
                ("waiting", 1)
            ]
        );
        assert_eq!(
            view.halt,
            Some(Halt {
                members: 2,
                reason: "halted: 1 member(s) failed".into()
            })
        );
        assert_eq!(
            view.waves,
            [Wave {
                wave: 3,
                of: 4,
                waiting: 1
            }]
        );
        assert_eq!(
            view.progress,
            Some(Progress {
                start: 100,
                applied_after: vec![0, 30],
                targeted: 6
            })
        );
        assert!(!view.settled);
        let json = serde_json::to_string(&view).unwrap();
        let back: FleetView = serde_json::from_str(&json).unwrap();
        assert_eq!(back, view);
        let extra = json.replacen("\"settled\"", "\"surprise\":1,\"settled\"", 1);
        assert!(serde_json::from_str::<FleetView>(&extra).is_err());
    }

    #[test]
    fn a_fleet_larger_than_the_bound_is_cut_and_says_so() {
        let members: Vec<MemberReport> = (0..MAX_MEMBERS + 3)
            .map(|n| member(&format!("n{n:05}"), None))
            .collect();
        let view = FleetView::of(members, 1, false);
        assert_eq!((view.members.len(), view.cut), (MAX_MEMBERS, 3));
    }
}
