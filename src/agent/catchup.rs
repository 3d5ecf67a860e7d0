//! Catch-up: a node that was down or partitioned when an update was announced asks the fleet
//! (Serf queries answered by every node's handler from its state dir) for the newest
//! announcement of each name, and spools what it lacks. The announcements are signed, so it
//! does not matter which member answers; the intake verifies them like any other.

use super::spool::{self, Source};
use super::state::{StateStore, Status};
use crate::cmd::handle_event::NodeStatus;
use crate::engines::Gossip;
use crate::formats::announcement::Announcement;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Asks the fleet and spools every newer announcement; returns how many.
pub fn catch_up(
    gossip: &dyn Gossip,
    store: &StateStore,
    spool_dir: &Path,
    timeout: Duration,
) -> crate::Result<usize> {
    let answers = gossip.query("p2pu-status", b"", timeout)?;
    let mut newest: BTreeMap<String, u64> = BTreeMap::new();
    for (_, text) in &answers {
        let Ok(status) = serde_json::from_str::<NodeStatus>(text) else {
            continue;
        };
        for update in status
            .updates
            .into_iter()
            .filter(|u| u.status != Status::Held)
        {
            let seq = newest.entry(update.name).or_default();
            *seq = (*seq).max(update.seq);
        }
    }
    let mut spooled = 0;
    for (name, seq) in newest {
        let known = store.records(&name)?.iter().map(|r| r.seq).max();
        if known.is_some_and(|k| k >= seq) {
            continue;
        }
        let answers = gossip.query("p2pu-latest", name.as_bytes(), timeout)?;
        let best = answers
            .iter()
            .filter_map(|(_, wire)| {
                Announcement::decode(wire.trim())
                    .ok()
                    .map(|a| (a, wire.trim()))
            })
            .filter(|(a, _)| a.name() == name)
            .max_by_key(|(a, _)| a.seq());
        if let Some((announcement, wire)) = best {
            tracing::info!(name = %name, seq = announcement.seq(), "catch-up: spooling a missed announcement");
            spool::put(spool_dir, Source::CatchUp, wire.as_bytes())?;
            spooled += 1;
        }
    }
    Ok(spooled)
}
