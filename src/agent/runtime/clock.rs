//! How far this node's clock is off the fleet's, measured from the members' answers to the
//! `p2pu-status` query each catch-up round sends (every answer says when it was written,
//! [`super::status::NodeStatus::now_ms`]), and kept in `<state_dir>/clock.json` for `p2pu
//! status` and for the reasons of refusals that depend on the clock.
//!
//! Operators misread a skewed clock as an attack (every update "expired", a heartbeat "stale"):
//! the node says how far off it is, and a refusal on its clock says so. The offset is never
//! used to decide anything: members answer it, and a member may lie; the local clock decides,
//! as before, and the offset only explains.

use super::{Result, RuntimeError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The state dir's file.
const FILE: &str = "clock.json";
/// Within this, the clocks agree as far as a query's round trip can tell.
pub const IN_STEP_MS: i64 = 2_000;

/// The fleet's clock minus this node's, as last measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offset {
    /// Positive: this node's clock is behind the fleet's; negative: ahead.
    pub fleet_minus_local_ms: i64,
    /// How many members' answers the median was taken over.
    pub members: usize,
    /// When (this node's clock, unix seconds).
    pub measured_at: u64,
}

impl Offset {
    /// The median of what the members said the time was, against the middle of the query on
    /// this node's clock (`asked_ms` .. `answered_ms`); `None` without an answer that says.
    pub fn measure(members_now_ms: &[u64], asked_ms: u64, answered_ms: u64) -> Option<Offset> {
        let middle = (asked_ms as i128 + answered_ms as i128) / 2;
        let mut offsets: Vec<i64> = members_now_ms
            .iter()
            .map(|&now| (now as i128 - middle).clamp(i64::MIN as i128, i64::MAX as i128) as i64)
            .collect();
        if offsets.is_empty() {
            return None;
        }
        offsets.sort_unstable();
        Some(Offset {
            fleet_minus_local_ms: offsets[offsets.len() / 2],
            members: offsets.len(),
            measured_at: answered_ms / 1000,
        })
    }

    /// How far this node's clock is ahead of the fleet's, in whole seconds (negative: behind).
    pub fn ahead_secs(&self) -> i64 {
        -((self.fleet_minus_local_ms as f64) / 1000.0).round() as i64
    }

    /// "this node's clock is 600 s ahead of the fleet's (median of 2 members, measured at ...)".
    pub fn describe(&self) -> String {
        let ahead = self.ahead_secs();
        let how = if self.fleet_minus_local_ms.abs() < IN_STEP_MS {
            "in step with the fleet's (within 2 s)".to_string()
        } else if ahead >= 0 {
            format!("{ahead} s ahead of the fleet's")
        } else {
            format!("{} s behind the fleet's", -ahead)
        };
        format!(
            "this node's clock is {how} (median of {} member(s), measured at {} unix seconds)",
            self.members, self.measured_at
        )
    }
}

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// Keeps `offset` (root's, 0600).
pub fn record(state_dir: &Path, offset: &Offset) -> Result<()> {
    let path = path(state_dir);
    let bytes = serde_json::to_vec(offset).map_err(|source| RuntimeError::Encode {
        path: path.clone(),
        source,
    })?;
    crate::fsutil::write_atomic(&path, &bytes, 0o600)?;
    Ok(())
}

/// The last measured offset; `None` before the first round that measured one, or when the
/// file cannot be read (it only explains, so it never fails a caller).
pub fn read(state_dir: &Path) -> Option<Offset> {
    let bytes = std::fs::read(path(state_dir)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// For a refusal on this node's clock: how far off it is, when that is measured and more than
/// the clocks' agreement, with what the fleet's clock says of `expires` (unix seconds).
pub fn expiry_note(state_dir: &Path, expires: u64, now: u64) -> String {
    let Some(offset) = read(state_dir).filter(|o| o.fleet_minus_local_ms.abs() >= IN_STEP_MS)
    else {
        return String::new();
    };
    let fleet_now = now as i128 + (offset.fleet_minus_local_ms / 1000) as i128;
    let verdict = if (expires as i128) < fleet_now {
        format!(
            "by the fleet's it expired {} s ago too",
            fleet_now - expires as i128
        )
    } else {
        format!(
            "by the fleet's it is valid for {} s more: fix this node's clock",
            expires as i128 - fleet_now
        )
    };
    format!(" (by this node's clock; {}; {verdict})", offset.describe())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The median resists one member with a wild clock, and the sign says which way.
    #[test]
    fn the_offset_is_the_median_of_the_members_against_the_middle_of_the_query() {
        let local = 1_000_000_000;
        let ahead = Offset::measure(
            &[local - 600_000, local - 599_000, local + 9_999_999],
            local - 500,
            local + 500,
        )
        .unwrap();
        assert_eq!((ahead.members, ahead.ahead_secs()), (3, 599));
        assert!(
            ahead.describe().contains("599 s ahead of the fleet's"),
            "{}",
            ahead.describe()
        );
        let behind = Offset::measure(&[local + 600_000], local, local).unwrap();
        assert!(behind.describe().contains("600 s behind the fleet's"));
        let in_step = Offset::measure(&[local + 900], local, local).unwrap();
        assert!(in_step.describe().contains("in step"));
        assert_eq!(Offset::measure(&[], local, local), None);
    }

    /// A refusal on a skewed clock says so, and whether the fleet's clock agrees.
    #[test]
    fn an_expiry_on_a_skewed_clock_says_how_far_off_it_is_and_what_the_fleet_says() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_800_000_000;
        assert_eq!(expiry_note(dir.path(), now - 10, now), "");
        let ahead = Offset {
            fleet_minus_local_ms: -600_000,
            members: 2,
            measured_at: now,
        };
        record(dir.path(), &ahead).unwrap();
        let note = expiry_note(dir.path(), now - 10, now);
        assert!(
            note.contains("600 s ahead") && note.contains("valid for 590 s more"),
            "{note}"
        );
        let note = expiry_note(dir.path(), now - 3600, now);
        assert!(note.contains("expired 3000 s ago too"), "{note}");
    }
}
