//! Fuzzes what other members answer to Serf queries, as the local agent relays it: the
//! decoder of a query's RPC records (as read after the query's reply header) and of a
//! `members` reply (every member printable by name, never an unreachable address), the `p2pu-status` answer (JSON) and the two consumers of the answers,
//! `fleet status` and the agent's catch-up, through a stand-in gossip layer that hands them the
//! fuzzed answers. Nothing may panic; the answers are sorted, one per node, never more than
//! the alive members and the strangers' cap; an answer that parses writes back to the same
//! status; `fleet status` reports each member in order, with what it answered made printable;
//! catch-up copes with any answer (an error would let one member stop every catch-up) and only
//! ever spools announcement texts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pu::agent::runtime::catchup::catch_up;
use p2pu::agent::runtime::state::StateStore;
use p2pu::agent::runtime::intake::Policy;
use p2pu::agent::runtime::status::{fleet_status, printable, NodeStatus};
use p2pu::engines::serf::fuzzing::{decode_members, decode_query, ALIVE};
use p2pu::formats::serf_rpc::MAX_STRANGERS;
use p2pu::engines::{Gossip, Member, MemberStatus, SerfError};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

struct Answers(Vec<(String, String)>);

impl Gossip for Answers {
    fn members(&self) -> Result<Vec<Member>, SerfError> {
        let member = |name: &str, status| Member {
            name: name.to_owned(),
            addr: [10, 0, 0, 1].into(),
            port: 7946,
            status,
            tags: Default::default(),
        };
        let mut members: Vec<Member> = self
            .0
            .iter()
            .map(|(node, _)| member(node, MemberStatus::Alive))
            .collect();
        members.push(member("\u{10ffff}silent", MemberStatus::Failed));
        members.push(member("\u{10ffff}gone", MemberStatus::Left));
        Ok(members)
    }
    fn user_event(&self, _: &str, _: &[u8], _: bool) -> Result<(), SerfError> {
        Ok(())
    }
    fn query(&self, _: &str, _: &[u8], _: Duration) -> Result<Vec<(String, String)>, SerfError> {
        Ok(self.0.clone())
    }
}

/// `base/state` and `base/spool` of a node with no records.
fn base() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let base = tempfile::Builder::new()
            .prefix("p2pu-fuzz-serf-")
            .tempdir_in("/dev/shm")
            .expect("fixture dir")
            .keep();
        std::fs::create_dir(base.join("spool")).expect("fixture");
        base
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok((members, _unreadable)) = decode_members(data) {
        for member in &members {
            assert!(
                !member.name.chars().any(char::is_control),
                "a member's name kept a control character: {:?}",
                member.name
            );
        }
    }
    let (answers, _ended) = decode_query(data);
    assert!(
        answers.windows(2).all(|w| w[0].0 < w[1].0),
        "answers not sorted by node, or a node twice"
    );
    assert!(answers.len() <= ALIVE.len() + MAX_STRANGERS, "answers unbounded");
    let statuses: Vec<Option<NodeStatus>> = answers
        .iter()
        .map(|(_, text)| serde_json::from_str::<NodeStatus>(text).ok())
        .collect();
    for status in statuses.iter().flatten() {
        let text = serde_json::to_string(status).expect("encoding a status");
        assert_eq!(
            serde_json::from_str::<NodeStatus>(&text).ok().as_ref(),
            Some(status)
        );
    }
    let gossip = Answers(answers);
    let reports = fleet_status(&gossip, Duration::ZERO, &[], 1_800_000_000).expect("fleet status");
    assert_eq!(reports.len(), gossip.0.len() + 1);
    assert!(reports.windows(2).all(|w| w[0].node <= w[1].node));
    // Reports show members' strings cleaned of what a terminal acts on, so two names may clean
    // to one: each member's answer is in some report under its cleaned name.
    let shown = |updates: &[p2pu::agent::runtime::status::UpdateStatus]| -> Vec<(String, u64)> {
        updates.iter().map(|u| (printable(&u.name), u.seq)).collect()
    };
    for ((node, _), status) in gossip.0.iter().zip(&statuses) {
        let expected = status.as_ref().map(|s| shown(&s.updates));
        assert!(
            reports
                .iter()
                .any(|r| r.node == printable(node) && r.updates.as_deref().map(shown) == expected),
            "a report per member"
        );
    }
    for report in &reports {
        assert_eq!(printable(&report.node), report.node, "a name a terminal acts on");
        for u in report.updates.iter().flatten() {
            assert_eq!(printable(&u.name), u.name, "an update name a terminal acts on");
        }
    }
    let base = base();
    let store = StateStore::open(&base.join("state")).expect("state store");
    let spool = base.join("spool");
    let trusted = base.join("trusted");
    let policy = Policy {
        trusted_keys_dir: &trusted,
        accept_legacy: true,
        accept_v1: true,
        fleet: p2pu::formats::announcement::FleetId([0; 8]),
        thresholds: p2pu::agent::runtime::intake::Thresholds::one(),
        max_future_ms: 86_400_000,
        max_payload_bytes: u64::MAX,
        // No plan is kept here: a plan-bound answer waits for its plan.
        plans_dir: &base.join("plans"),
        node: "fuzzed-node",
    };
    let spooled = match catch_up(&gossip, &store, &policy, &spool, 1_800_000_000_000, Duration::ZERO) {
        Ok(spooled) => spooled,
        Err(e) => panic!(
            "catch-up failed on fuzzed answers: {}",
            p2pu::error::chain(&e)
        ),
    };
    let mut found = 0;
    for entry in std::fs::read_dir(&spool).expect("listing the spool") {
        let path = entry.expect("entry").path();
        let text = std::fs::read(&path).expect("reading a spooled event");
        assert!(p2pu::formats::announcement::is_wire(&text), "spooled {text:?}");
        std::fs::remove_file(&path).expect("cleaning up");
        found += 1;
    }
    assert_eq!(found, spooled);
});
