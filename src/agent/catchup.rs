//! Catch-up: a node that was down or partitioned when an update was announced asks the fleet
//! (Serf queries answered by every node's handler from its state dir) for the newest
//! announcement of each name, and spools what it lacks. The announcements are signed, so it
//! does not matter which member answers; the intake verifies them like any other.

use super::spool::{self, Source};
use super::state::{StateStore, Status};
use crate::cmd::handle_event::NodeStatus;
use crate::engines::Gossip;
use crate::formats::announcement::{validate_name, Announcement};
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
        // A name no announcement can carry (NUL, `/`, 300 bytes) is never looked up: its state
        // file would fail to open or lie outside the state dir, and the error would let one
        // member's answer stop every catch-up (found by the fuzz target `serf_answers`).
        for update in status
            .updates
            .into_iter()
            .filter(|u| u.status != Status::Held && validate_name(&u.name).is_ok())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::handle_event::UpdateStatus;
    use crate::engines::{Member, SerfError};

    /// A member whose status answer names updates no announcement could carry.
    struct Hostile;

    impl Gossip for Hostile {
        fn members(&self) -> std::result::Result<Vec<Member>, SerfError> {
            Ok(Vec::new())
        }
        fn user_event(&self, _: &str, _: &[u8], _: bool) -> std::result::Result<(), SerfError> {
            Ok(())
        }
        fn query(
            &self,
            name: &str,
            _: &[u8],
            _: Duration,
        ) -> std::result::Result<Vec<(String, String)>, SerfError> {
            if name != "p2pu-status" {
                return Ok(Vec::new());
            }
            let update = |name: String| UpdateStatus {
                name,
                seq: 7,
                status: Status::Applied,
                reason: None,
                at: 1,
            };
            let status = NodeStatus {
                node: "evil".into(),
                updates: vec![update("x".repeat(300)), update("nul\0name".into())],
            };
            let text = serde_json::to_string(&status).map_err(|e| SerfError::Malformed {
                command: "test".into(),
                reason: e.to_string(),
            })?;
            Ok(vec![("evil".into(), text)])
        }
    }

    #[test]
    fn answers_naming_impossible_updates_do_not_stop_catch_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(&dir.path().join("state")).unwrap();
        let spool = dir.path().join("spool");
        std::fs::create_dir(&spool).unwrap();
        let spooled = catch_up(&Hostile, &store, &spool, Duration::ZERO);
        assert!(matches!(spooled, Ok(0)), "{spooled:?}");
    }
}
