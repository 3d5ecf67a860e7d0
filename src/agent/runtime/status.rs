//! What a node says about its updates, and what the fleet said: the answer to the
//! `p2pu-status` query (built from the state dir by the event handler, decoded by
//! `fleet status`, `submit --wait` and catch-up), the answer to `p2pu-latest`, and the
//! `p2pu status --json` report. One owner for the records both ends of the query share.

use super::state::{Record, Rejection, StateStore, Status};
use super::Result;
use crate::engines::{Gossip, MemberStatus};
use crate::formats::serf_names::STATUS_QUERY;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A node's answer to the `p2pu-status` query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeStatus {
    pub node: String,
    pub updates: Vec<UpdateStatus>,
    /// The answering binary's `p2pu --version`; absent in answers from before it was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateStatus {
    pub name: String,
    pub seq: u64,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub at: u64,
    /// Members whose seed servers sent this node pieces that did not match the signed torrent:
    /// a lying (or compromised) member, named so the operator can act on it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bad_sources: Vec<String>,
    /// Attempts that ended (retries count); absent from nodes that do not retry.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Query answers travel over UDP; keep them well under the rendered response limit.
const MAX_ANSWER: usize = 7 * 1024;

/// `p2pu status --json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    pub updates: Vec<Record>,
    pub rejected: Vec<Rejection>,
}

/// This node's newest update of each name, newest first, within the answer limit.
pub fn node_status(store: &StateStore, node: String) -> Result<NodeStatus> {
    let mut latest: Vec<Record> = store.latest()?;
    latest.sort_by_key(|r| std::cmp::Reverse(r.updated_at));
    let mut status = NodeStatus {
        node,
        updates: Vec::new(),
        version: Some(crate::VERSION.to_string()),
    };
    // The node name, the version and the JSON around the updates.
    let mut size = 160;
    for record in latest {
        let bad_sources = record
            .sources
            .iter()
            .filter(|s| s.bad_pieces > 0)
            .map(|s| s.addr.clone())
            .collect();
        let update = UpdateStatus {
            bad_sources,
            name: record.name,
            seq: record.seq,
            status: record.status,
            reason: record.reason.map(|r| r.chars().take(200).collect()),
            at: record.updated_at,
            attempts: record.attempts,
        };
        size += serde_json::to_string(&update).map_or(0, |s| s.len() + 1);
        if size > MAX_ANSWER {
            break;
        }
        status.updates.push(update);
    }
    Ok(status)
}

/// The newest accepted announcement of `name`, as received, for a node catching up.
pub fn latest_wire(store: &StateStore, name: &str) -> Result<Option<String>> {
    if crate::formats::announcement::validate_name(name).is_err() {
        return Ok(None);
    }
    Ok(store
        .records(name)?
        .into_iter()
        .filter(|r| r.status != Status::Held)
        .max_by_key(|r| r.seq)
        .map(|r| r.wire))
}

/// One member's row of `p2pu fleet status --json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MemberReport {
    pub node: String,
    /// Its Serf address, `ip:port`.
    pub addr: String,
    pub alive: bool,
    /// Its `p2pu --version`; `None` when it did not answer or runs a p2pu that does not say.
    pub version: Option<String>,
    /// `None`: the member did not answer in time (or answered garbage).
    pub updates: Option<Vec<UpdateStatus>>,
    /// Seconds since its newest update changed, by this machine's clock.
    pub newest_age_secs: Option<u64>,
}

/// Asks the fleet; every member appears once, answered or not.
pub fn fleet_status(
    gossip: &dyn Gossip,
    timeout: Duration,
    name: Option<&str>,
    now: u64,
) -> Result<Vec<MemberReport>> {
    let members = gossip.members()?;
    let answers = gossip.query(STATUS_QUERY, b"", timeout)?;
    let mut reports: Vec<MemberReport> = members
        .iter()
        .filter(|m| m.status != MemberStatus::Left)
        .map(|m| {
            let answer = answers
                .iter()
                .find(|(node, _)| node == &m.name)
                .and_then(|(_, text)| serde_json::from_str::<NodeStatus>(text).ok());
            let version = answer.as_ref().and_then(|a| a.version.clone());
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
                addr: std::net::SocketAddr::new(m.addr, m.port).to_string(),
                alive: m.status == MemberStatus::Alive,
                version,
                updates,
                newest_age_secs,
            }
        })
        .collect();
    reports.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(reports)
}
