//! Catch-up: a node that was down or partitioned when an update was announced asks the fleet
//! (Serf queries answered by every node's handler from its state dir) for the newest
//! announcement of each name, and spools what it lacks.
//!
//! Any member may answer, and a member may lie, so every answer is put through the intake's
//! own decision (signature, seq, hold, cap) before one is chosen: the newest answer that the
//! intake would accept is spooled. Choosing the highest seq first would let one member's
//! higher-seq forgery (an untrusted key, or a far-future seq that is only ever held) stand in
//! for the real announcement on every round, and the node would never catch up.
//!
//! With a verified heartbeat's snapshot document in hand ([`catch_up_with`]), the snapshot
//! decides instead of the members: every name it lists at a seq this node lacks is asked for,
//! and for those names only the announcement whose wire text hashes to the snapshot's entry
//! (or a newer one than the snapshot knows, verified on its own) is taken. A member that
//! answers with an older, validly signed announcement (mix-and-match, a partial rollback) is
//! not believed.
//!
//! Only verified answers are chosen: one bound to a rollout plan this node lacks counts once
//! the plan, fetched from the members and kept in the state dir, verifies it.

use super::clock;
use super::intake::{self, Accepted, Decision, Policy};
use super::spool::{self, Source, Spooled};
use super::state::{Lineage, StateStore, Status};
use super::status::NodeStatus;
use crate::engines::Gossip;
use crate::formats::announcement::validate_name;
use crate::formats::heartbeat::{Entry, Snapshot};
use crate::formats::serf_names::{LATEST_QUERY, STATUS_QUERY};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Asks the fleet and spools every newer announcement; returns how many. An answer bound to a
/// plan this node lacks is not taken (no plan is fetched here).
pub fn catch_up(
    gossip: &dyn Gossip,
    store: &StateStore,
    policy: &Policy,
    spool_dir: &Path,
    now_ms: u64,
    timeout: Duration,
) -> super::Result<usize> {
    let no_plans = |_: &str, _: &str| false;
    catch_up_with(
        gossip, store, policy, spool_dir, now_ms, timeout, None, &no_plans,
    )
}

/// [`catch_up`], held to `snapshot` (a verified heartbeat's) for the names it lists, with
/// `fetch_plan(info_hash, wire)` to fetch and keep (in the state dir) the plan an answer is
/// bound to, true once one that verifies it is kept.
#[allow(clippy::too_many_arguments)]
pub fn catch_up_with(
    gossip: &dyn Gossip,
    store: &StateStore,
    policy: &Policy,
    spool_dir: &Path,
    now_ms: u64,
    timeout: Duration,
    snapshot: Option<&Snapshot>,
    fetch_plan: &dyn Fn(&str, &str) -> bool,
) -> super::Result<usize> {
    let asked_ms = wall_ms();
    // Every name, and the answering node's clock (`now_ms` goes only to askers that send a
    // payload: an older node's reader denies the field).
    let all = super::status::ALL_NAMES.as_bytes();
    let answers = gossip.query(STATUS_QUERY, all, timeout)?;
    let answered_ms = wall_ms();
    let mut newest: BTreeMap<String, u64> = BTreeMap::new();
    let mut members_now_ms = Vec::new();
    for (node, text) in &answers {
        let Ok(status) = serde_json::from_str::<NodeStatus>(text) else {
            continue;
        };
        if node != policy.node {
            members_now_ms.extend(status.now_ms);
        }
        // A name no announcement can carry (NUL, `/`, 300 bytes) is never looked up: its state
        // file would fail to open or lie outside the state dir, and the error would let one
        // member's answer stop every catch-up (found writing the fuzz target `serf_answers`).
        for update in status
            .updates
            .into_iter()
            .filter(|u| u.status != Status::Held && validate_name(&u.name).is_ok())
        {
            let seq = newest.entry(update.name).or_default();
            *seq = (*seq).max(update.seq);
        }
    }
    keep_clock(store.dir(), &members_now_ms, asked_ms, answered_ms);
    let listed: BTreeMap<&str, &Entry> = snapshot
        .map(|s| s.entries().iter().map(|e| (e.name.as_str(), e)).collect())
        .unwrap_or_default();
    for entry in listed.values() {
        let seq = newest.entry(entry.name.clone()).or_default();
        *seq = (*seq).max(entry.seq);
    }
    let mut spooled = 0;
    for (name, seq) in newest {
        // The status answers only say which names to ask about; a lie there costs a query.
        let known = store
            .highest(&name, Lineage::Signed)?
            .max(store.highest(&name, Lineage::Legacy)?);
        if known.is_some_and(|k| k >= seq) {
            continue;
        }
        let entry = listed.get(name.as_str()).copied();
        if let Some(entry) = entry.filter(|e| known.is_none_or(|k| k < e.seq)) {
            tracing::info!(name = %name, seq = entry.seq, held = known, "heartbeat: the snapshot lists an update this node lacks; asking the fleet");
        }
        let answers = gossip.query(LATEST_QUERY, name.as_bytes(), timeout)?;
        let chosen = newest_acceptable(&name, &answers, store, policy, now_ms, entry, fetch_plan)?;
        if let Some((seq, wire)) = chosen {
            tracing::info!(name = %name, seq, "catch-up: spooling a missed announcement");
            spool::put(spool_dir, Source::CatchUp, wire.as_bytes())?;
            spooled += 1;
        }
    }
    Ok(spooled)
}

/// This node's clock now (ms since the epoch): the one its decisions use, which the members'
/// answers are measured against.
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How far this node's clock is off the members' ([`clock`]), kept for `p2pu status` and the
/// reasons of refusals; a minute or more is worth a warning. Best effort: it only explains.
fn keep_clock(state_dir: &Path, members_now_ms: &[u64], asked_ms: u64, answered_ms: u64) {
    let Some(offset) = clock::Offset::measure(members_now_ms, asked_ms, answered_ms) else {
        return;
    };
    if offset.ahead_secs().abs() >= 60 {
        tracing::warn!("{}: fix it (systemd-timesyncd)", offset.describe());
    }
    if let Err(e) = clock::record(state_dir, &offset) {
        tracing::warn!("keeping the clock's offset: {}", crate::error::chain(&e));
    }
}

/// The newest of `answers` (node, wire) for `name` that the intake accepts now, with its seq;
/// with the snapshot's `entry` for the name, one at or below its seq must be the very
/// announcement it lists. The others are logged, not chosen.
///
/// Only a verified answer is chosen: one bound to a plan this node lacks is unverified
/// (issue 28: a member's plan-flagged seq + 1 used to win, and the node waited on it instead
/// of taking the genuine one). Those newer than the best verified answer get their plan asked
/// for (`fetch_plan`, newest first), and one counts once the plan fetched verifies it.
fn newest_acceptable<'a>(
    name: &str,
    answers: &'a [(String, String)],
    store: &StateStore,
    policy: &Policy,
    now_ms: u64,
    entry: Option<&Entry>,
    fetch_plan: &dyn Fn(&str, &str) -> bool,
) -> super::Result<Option<(u64, &'a str)>> {
    let mut best: Option<(u64, &str)> = None;
    // Waiting for their plan: seq, wire, info-hash.
    let mut unverified: Vec<(u64, &str, String)> = Vec::new();
    // Members mostly answer with the same announcement: decide each text once (a decision
    // reads the trusted keys and the state), naming the first member that sent it.
    let mut seen = std::collections::HashSet::new();
    // Whether the snapshot's entry for the name rules `seq` out for `wire`: at or below the
    // listed seq, only the listed announcement is believed (mix-and-match).
    let unlisted = |seq: u64, wire: &str| {
        entry.is_some_and(|e| seq <= e.seq && Entry::of(name, seq, wire) != *e)
    };
    for (node, wire) in answers {
        let wire = wire.trim();
        if wire.is_empty() || wire.len() > spool::MAX_EVENT_BYTES || !seen.insert(wire) {
            continue;
        }
        let event = Spooled {
            path: Default::default(),
            source: Source::CatchUp,
            payload: wire.as_bytes().to_vec(),
        };
        match intake::decide(&event, store, policy, now_ms)? {
            Decision::Accepted(Accepted { record, .. }) if record.name != name => {
                tracing::warn!(%node, asked = %name, got = %record.name, "catch-up: answer for another name ignored")
            }
            Decision::NeedsPlan { name: got, .. } if got != name => {
                tracing::warn!(%node, asked = %name, %got, "catch-up: answer for another name ignored")
            }
            Decision::Accepted(Accepted { record, .. }) => {
                if unlisted(record.seq, wire) {
                    let listed = entry.map_or(0, |e| e.seq);
                    tracing::warn!(%node, name = %name, seq = record.seq, listed, "catch-up: answer is not the announcement the heartbeat's snapshot lists, ignored");
                } else if best.is_none_or(|(seq, _)| record.seq > seq) {
                    best = Some((record.seq, wire));
                }
            }
            Decision::NeedsPlan { seq, info_hash, .. } => {
                if unlisted(seq, wire) {
                    let listed = entry.map_or(0, |e| e.seq);
                    tracing::warn!(%node, name = %name, seq, listed, "catch-up: answer is not the announcement the heartbeat's snapshot lists, ignored");
                } else {
                    unverified.push((seq, wire, info_hash));
                }
            }
            Decision::Held(record) => {
                tracing::warn!(%node, name = %record.name, seq = record.seq, "catch-up: answer from the far future ignored")
            }
            Decision::Rejected(rejection) => {
                tracing::warn!(%node, name = %name, seq = rejection.seq, reason = %rejection.reason, "catch-up: answer rejected")
            }
            // The latest announcement is what catch-up asks for, never a control statement.
            Decision::Control { .. } => {
                tracing::warn!(%node, asked = %name, "catch-up: a control statement as an answer ignored")
            }
        }
    }
    unverified.sort_by_key(|u| std::cmp::Reverse(u.0));
    for (seq, wire, info_hash) in unverified {
        if best.is_some_and(|(best_seq, _)| best_seq >= seq) {
            break;
        }
        if !fetch_plan(&info_hash, wire) {
            tracing::warn!(name = %name, seq, plan = %info_hash, "catch-up: no member serves a rollout plan that verifies this answer; not taken");
            continue;
        }
        let event = Spooled {
            path: Default::default(),
            source: Source::CatchUp,
            payload: wire.as_bytes().to_vec(),
        };
        if let Decision::Accepted(Accepted { record, .. }) =
            intake::decide(&event, store, policy, now_ms)?
        {
            if record.name == name && record.seq == seq {
                best = Some((seq, wire));
                break;
            }
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::{Member, SerfError};
    use crate::formats::announcement::{Announcement, Draft, Kind};
    use crate::keys::{PublicKey, TrustedKeys, TrustedKeysDir};
    use ed25519_dalek::SigningKey;

    const NOW_MS: u64 = 1_800_000_000_000;

    /// A fleet whose members give fixed answers to the two catch-up queries.
    struct Fleet {
        status: Vec<(String, String)>,
        latest: Vec<(String, String)>,
    }

    impl Gossip for Fleet {
        fn members(&self) -> Result<Vec<Member>, SerfError> {
            Ok(Vec::new())
        }
        fn user_event(&self, _: &str, _: &[u8], _: bool) -> Result<(), SerfError> {
            Ok(())
        }
        fn query(
            &self,
            name: &str,
            _: &[u8],
            _: Duration,
        ) -> Result<Vec<(String, String)>, SerfError> {
            Ok(match name {
                "p2pu-status" => self.status.clone(),
                _ => self.latest.clone(),
            })
        }
    }

    fn wire(key: &SigningKey, name: &str, seq: u64) -> String {
        let draft = Draft {
            seq,
            name: name.into(),
            kind: Kind::Manifest,
            info_hash: [1; 20],
            len: 10,
            sha256: [2; 32],
        };
        Announcement::sign(draft, key).unwrap().to_wire()
    }

    fn status_of(node: &str, name: &str, seq: u64) -> (String, String) {
        let text = format!(
            r#"{{"node":"{node}","updates":[{{"name":"{name}","seq":{seq},"status":"applied","at":1}}]}}"#
        );
        (node.to_string(), text)
    }

    struct Node {
        dir: tempfile::TempDir,
        key: SigningKey,
        store: StateStore,
    }

    fn node() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[7; 32]);
        let public = PublicKey {
            key: key.verifying_key(),
            comment: "ops".into(),
        };
        TrustedKeys::add(&dir.path().join("trusted"), &public).unwrap();
        std::fs::create_dir_all(dir.path().join("spool")).unwrap();
        let store = StateStore::open(&dir.path().join("state")).unwrap();
        Node { dir, key, store }
    }

    fn policy(keys_dir: &Path) -> Policy<'_> {
        Policy {
            trusted_keys_dir: keys_dir,
            accept_legacy: false,
            accept_v1: true,
            fleet: crate::formats::announcement::FleetId([0; 8]),
            thresholds: intake::Thresholds::one(),
            max_future_ms: 86_400_000,
            max_payload_bytes: u64::MAX,
            plans_dir: Path::new("/nonexistent"),
            node: "node-1",
        }
    }

    /// Runs one catch-up round on `node`; returns what it spooled.
    fn round(node: &Node, fleet: &Fleet) -> Vec<Vec<u8>> {
        round_with(node, fleet, None)
    }

    fn round_with(node: &Node, fleet: &Fleet, snapshot: Option<&Snapshot>) -> Vec<Vec<u8>> {
        let keys_dir = node.dir.path().join("trusted");
        let spool_dir = node.dir.path().join("spool");
        let count = catch_up_with(
            fleet,
            &node.store,
            &policy(&keys_dir),
            &spool_dir,
            NOW_MS,
            Duration::ZERO,
            snapshot,
            &|_, _| false,
        )
        .unwrap();
        let events = spool::list(&spool_dir).unwrap();
        assert_eq!(events.len(), count);
        events
            .iter()
            .map(|p| spool::read(p).unwrap().unwrap().payload)
            .collect()
    }

    /// A held (far-future) announcement is not an update this node has: it must not make
    /// the node believe it is already newer than the fleet.
    #[test]
    fn a_held_announcement_does_not_stop_catching_up() {
        let node = node();
        let future = wire(&node.key, "site.pp", NOW_MS + 9 * 86_400_000);
        let event = Spooled {
            path: Default::default(),
            source: Source::Serf,
            payload: future.into_bytes(),
        };
        let keys_dir = node.dir.path().join("trusted");
        let decision = intake::decide(&event, &node.store, &policy(&keys_dir), NOW_MS).unwrap();
        let Decision::Held(held) = decision else {
            panic!("not held");
        };
        node.store.put(held).unwrap();
        let real = wire(&node.key, "site.pp", NOW_MS);
        let fleet = Fleet {
            status: vec![status_of("honest", "site.pp", NOW_MS)],
            latest: vec![("honest".into(), real.clone())],
        };
        assert_eq!(round(&node, &fleet), vec![real.into_bytes()]);
    }

    /// One member answers with a higher seq signed by an untrusted key, another with one from
    /// the far future: the real, lower one from the honest member is what gets spooled.
    #[test]
    fn a_lying_members_higher_seq_does_not_hide_the_valid_answer() {
        let node = node();
        let stranger = SigningKey::from_bytes(&[9; 32]);
        let real = wire(&node.key, "site.pp", NOW_MS);
        let fleet = Fleet {
            status: vec![
                status_of("honest", "site.pp", NOW_MS),
                status_of("liar", "site.pp", NOW_MS + 5),
            ],
            latest: vec![
                ("honest".into(), format!("{real}\n")),
                ("liar".into(), wire(&stranger, "site.pp", NOW_MS + 5)),
                (
                    "future".into(),
                    wire(&node.key, "site.pp", NOW_MS + 9 * 86_400_000),
                ),
                ("other".into(), wire(&node.key, "other.pp", NOW_MS + 6)),
            ],
        };
        assert_eq!(round(&node, &fleet), vec![real.into_bytes()]);
    }

    /// One member's status answer names updates no announcement could carry: a NUL byte,
    /// 300 bytes, a path out of the state dir. They are skipped, and the real update of
    /// another member's answer is still caught up with.
    #[test]
    fn answers_naming_impossible_updates_do_not_stop_catch_up() {
        let node = node();
        // Where `../../x` leads from the state dir's `names/`: a file that is no record, so
        // reading it (outside the state dir) would fail the round.
        std::fs::write(node.dir.path().join("x.json"), "not a record").unwrap();
        let real = wire(&node.key, "site.pp", NOW_MS);
        let updates: Vec<serde_json::Value> = [
            "x".repeat(300),
            "nul\0name".into(),
            "../../x".into(),
        ]
        .into_iter()
        .map(|name| serde_json::json!({"name": name, "seq": 7, "status": "applied", "at": 1}))
        .collect();
        let evil = serde_json::json!({"node": "evil", "updates": updates}).to_string();
        let fleet = Fleet {
            status: vec![
                ("evil".into(), evil),
                status_of("honest", "site.pp", NOW_MS),
            ],
            latest: vec![("honest".into(), real.clone())],
        };
        assert_eq!(round(&node, &fleet), vec![real.into_bytes()]);
    }

    /// Mix-and-match: the heartbeat's snapshot lists site.pp at seq NOW_MS + 2; the only
    /// member that answers offers NOW_MS + 1, validly signed and newer than what this node
    /// holds. Without the snapshot it would be taken; with it, it is not, and the listed one is
    /// taken as soon as a member offers it, even one no status answer mentions.
    #[test]
    fn an_older_answer_than_the_snapshot_lists_is_not_believed() {
        let node = node();
        let (older, listed) = (
            wire(&node.key, "site.pp", NOW_MS + 1),
            wire(&node.key, "site.pp", NOW_MS + 2),
        );
        let snapshot = Snapshot::new(vec![Entry::of("site.pp", NOW_MS + 2, &listed)]);
        let liar = Fleet {
            status: vec![status_of("liar", "site.pp", NOW_MS + 1)],
            latest: vec![("liar".into(), older.clone())],
        };
        assert!(round_with(&node, &liar, Some(&snapshot)).is_empty());
        let honest = Fleet {
            status: Vec::new(),
            latest: vec![
                ("liar".into(), older.clone()),
                ("honest".into(), listed.clone()),
            ],
        };
        assert_eq!(
            round_with(&node, &honest, Some(&snapshot)),
            vec![listed.into_bytes()]
        );
        // What catch-up did before heartbeats: the liar's answer is the newest acceptable.
        let node = self::node();
        assert_eq!(round(&node, &liar), vec![older.into_bytes()]);
    }

    /// Issue 28, item 4: a member answers with a plan-flagged seq + 1 whose plan no member
    /// has (its signatures do not cover the flag). It used to be chosen as "acceptable" over
    /// the genuine answer, so the node spooled the forgery and never applied the genuine one,
    /// even with a heartbeat listing it. Only verified answers are chosen; a genuine plan-bound
    /// answer counts once its plan is fetched and verifies it.
    #[test]
    fn an_unverified_plan_bound_answer_does_not_win_catch_up() {
        use crate::formats::announcement::{Binding, FleetId};
        let node = node();
        let binding = Binding {
            expires: NOW_MS / 1000 + 86_400,
            fleet: FleetId([0; 8]),
        };
        let draft = |seq| Draft {
            seq,
            name: "site.pp".into(),
            kind: Kind::Manifest,
            info_hash: [1; 20],
            len: 10,
            sha256: [2; 32],
        };
        let genuine = Announcement::sign_v2(draft(NOW_MS + 1), binding, &node.key)
            .unwrap()
            .to_wire();
        let signed_higher = Announcement::sign_v2(draft(NOW_MS + 2), binding, &node.key)
            .unwrap()
            .to_bencode();
        // The member adds the flag to a signed announcement: no plan makes it verify.
        let at = signed_higher
            .windows(5)
            .position(|w| w == b"3:seq")
            .unwrap();
        let mut flagged = signed_higher.clone();
        flagged.splice(at..at, b"4:plani1e".iter().copied());
        use base64::Engine;
        let forged = format!(
            "{}{}",
            crate::formats::announcement::WIRE_PREFIX_V2,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&flagged)
        );
        let fleet = Fleet {
            status: vec![
                status_of("honest", "site.pp", NOW_MS + 1),
                status_of("liar", "site.pp", NOW_MS + 2),
            ],
            latest: vec![
                ("liar".into(), forged.clone()),
                ("honest".into(), genuine.clone()),
            ],
        };
        let asked = std::cell::Cell::new(0);
        let no_member_has_it = |_: &str, _: &str| {
            asked.set(asked.get() + 1);
            false
        };
        let keys_dir = node.dir.path().join("trusted");
        let spool_dir = node.dir.path().join("spool");
        let snapshot = Snapshot::new(vec![Entry::of("site.pp", NOW_MS + 1, &genuine)]);
        for listed in [None, Some(&snapshot)] {
            let count = catch_up_with(
                &fleet,
                &node.store,
                &policy(&keys_dir),
                &spool_dir,
                NOW_MS,
                Duration::ZERO,
                listed,
                &no_member_has_it,
            )
            .unwrap();
            assert_eq!(count, 1);
            let events = spool::list(&spool_dir).unwrap();
            let spooled = spool::read(&events[0]).unwrap().unwrap().payload;
            assert_eq!(spooled, genuine.as_bytes(), "the verified answer is chosen");
            spool::remove(&events[0]).unwrap();
        }
        assert_eq!(
            asked.get(),
            2,
            "the unverified answer's plan was asked for, then dropped"
        );

        // A genuine plan-bound answer: chosen once the plan fetched verifies it.
        let plan = b"d1:vi1ee";
        let bound = Announcement::sign_v2_with_plan(draft(NOW_MS + 3), binding, plan, &node.key)
            .unwrap()
            .to_wire();
        let fleet = Fleet {
            status: vec![status_of("honest", "site.pp", NOW_MS + 3)],
            latest: vec![("honest".into(), bound.clone())],
        };
        let store_dir = node.store.dir().to_path_buf();
        let fetch = |hash: &str, _: &str| {
            intake::keep_plan(&store_dir, hash, plan).unwrap();
            true
        };
        let count = catch_up_with(
            &fleet,
            &node.store,
            &policy(&keys_dir),
            &spool_dir,
            NOW_MS,
            Duration::ZERO,
            None,
            &fetch,
        )
        .unwrap();
        assert_eq!(count, 1);
        let events = spool::list(&spool_dir).unwrap();
        let spooled = spool::read(&events[0]).unwrap().unwrap().payload;
        assert_eq!(spooled, bound.as_bytes());
    }
}
