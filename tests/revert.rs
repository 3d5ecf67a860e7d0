//! `p2pu rollout revert` on a lab of real agents (Serf, Transmission, Puppet in a network
//! namespace): three nodes apply `app.pp` u1 then u2; a revert signed by a key the fleet does
//! not trust (what a member with the Serf keyring but no signing key can send) is refused
//! and changes nothing; `rollout revert app.pp --to u1 --nodes node-3` reverts that node
//! alone; the operator's `rollout revert app.pp --to u1` then makes every node run
//! u1's manifest again and record u2 `reverted` ("reverted by operator to seq u1"); the same
//! statement sent again is refused as a replay. Assertions are on records and on what Puppet
//! ran, never on timings.

mod support;

use p2pu::agent::runtime::state::{Record, StateStore, Status};
use p2pu::formats::control::{Action, Control};
use p2pu::lab::{Lab, LabOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::testlab::{ok, TestLab};

const NODES: usize = 3;
const NAME: &str = "app.pp";
/// A generous bound on one step (CI has 2 cores).
const SETTLE: Duration = Duration::from_secs(120);

fn store(lab: &Lab, node: usize) -> StateStore {
    StateStore::open_read_only(&lab.node(node).unwrap().site.agent.state_dir)
}

fn record(lab: &Lab, node: usize, seq: u64) -> Option<Record> {
    store(lab, node)
        .records(NAME)
        .ok()?
        .into_iter()
        .find(|r| r.seq == seq)
}

fn wait(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETTLE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Which versions of app.pp Puppet ran on `node`, in order (each run appends its tag to a
/// file in the node's own Puppet vardir).
fn runs(lab: &Lab, node: usize) -> Vec<String> {
    let path = lab.node(node).unwrap().dir.join("puppet/var/app.runs");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `app.pp` version `tag`, in its own directory (the update's name is the file's name).
fn manifest(dir: &Path, tag: &str) -> PathBuf {
    let path = dir.join(tag).join(NAME);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let text = format!(
        "exec {{ 'run {tag}': command => \"/bin/sh -c 'echo {tag} >> ${{settings::vardir}}/app.runs'\" }}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Submits version `tag` from node 1 and waits until every node applied it; its seq.
fn apply(lab: &Lab, dir: &Path, tag: &str) -> u64 {
    let path = manifest(dir, tag);
    let out = ok(lab.p2pu(1, &["submit", path.to_str().unwrap()]).unwrap());
    let seq = out
        .split_whitespace()
        .skip_while(|w| *w != "seq")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no seq in {out:?}"));
    for node in 1..=NODES {
        wait(&format!("node {node} to apply {tag}"), || {
            record(lab, node, seq).is_some_and(|r| r.status == Status::Applied)
        });
    }
    seq
}

/// Whether `node` recorded a rejection of app.pp whose reason contains `want`.
fn rejected(lab: &Lab, node: usize, want: &str) -> bool {
    store(lab, node)
        .rejections()
        .unwrap_or_default()
        .iter()
        .any(|r| r.name.as_deref() == Some(NAME) && r.reason.contains(want))
}

/// Sends `wire` as `p2pu-control` from `from` until every node shows `done` (Serf user events
/// can be dropped: re-sent, as `p2pu submit` does).
fn send_until(lab: &Lab, from: usize, wire: &str, what: &str, done: impl Fn(usize) -> bool) {
    let deadline = Instant::now() + SETTLE;
    loop {
        lab.serf_event(from, "p2pu-control", wire.as_bytes())
            .unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if (1..=NODES).all(&done) {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
    }
}

#[test]
fn an_operators_revert_reapplies_the_kept_version_and_a_forged_one_is_refused() {
    if !support::prereq::root("the lab runs in a network namespace") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut options = LabOptions::new(NODES, dir.path().join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    options.start_agent = true;
    let lab = TestLab(Lab::start(options).expect("lab starts"));

    let u1 = apply(&lab, dir.path(), "u1");
    let u2 = apply(&lab, dir.path(), "u2");
    for node in 1..=NODES {
        assert_eq!(runs(&lab, node), ["u1", "u2"], "node {node}");
    }

    // A member with the Serf keyring but no signing key: its revert, signed by a key of its
    // own for this fleet, is refused everywhere and changes nothing.
    let fleet = p2pu::config::Config::load(&lab.node(2).unwrap().config, None)
        .unwrap()
        .fleet_id()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut forged = Control::new(Action::Revert, NAME, u2, now, fleet, now + 600, Vec::new())
        .unwrap()
        .revert_to(u1)
        .unwrap();
    forged
        .sign(&ed25519_dalek::SigningKey::from_bytes(&[7; 32]))
        .unwrap();
    send_until(
        &lab,
        2,
        &forged.to_wire(),
        "the forged revert's refusal",
        |n| rejected(&lab, n, "signed by no trusted key"),
    );
    for node in 1..=NODES {
        let record = record(&lab, node, u2).unwrap();
        assert_eq!(record.status, Status::Applied, "node {node}: {record:?}");
        assert_eq!(runs(&lab, node), ["u1", "u2"], "node {node}");
    }

    // The operator's revert, from node 1 with its key: first on node 3 alone.
    let u1_arg = u1.to_string();
    let third = lab.node(3).unwrap().name.clone();
    let out = ok(lab
        .p2pu(
            1,
            &[
                "rollout", "revert", NAME, "--to", &u1_arg, "--nodes", &third, "--json",
            ],
        )
        .unwrap());
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let only_third = report["wire"].as_str().unwrap().to_string();
    send_until(&lab, 1, &only_third, "node 3 to revert", |n| {
        n != 3 || record(&lab, n, u2).is_some_and(|r| r.status == Status::Reverted)
    });
    assert_eq!(runs(&lab, 3), ["u1", "u2", "u1"]);
    for node in [1, 2] {
        assert_eq!(record(&lab, node, u2).unwrap().status, Status::Applied);
        assert_eq!(runs(&lab, node), ["u1", "u2"], "node {node}");
    }
    // Then everywhere (node 3, reverted already, refuses it: as a replay when signed in the
    // same second, else as nothing applied to revert).
    let out = ok(lab
        .p2pu(1, &["rollout", "revert", NAME, "--to", &u1_arg, "--json"])
        .unwrap());
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["seq"], u2);
    let wire = report["wire"].as_str().unwrap().to_string();
    send_until(&lab, 1, &wire, "every node to revert", |n| {
        record(&lab, n, u2).is_some_and(|r| r.status == Status::Reverted)
    });
    for node in 1..=NODES {
        let record = record(&lab, node, u2).unwrap();
        assert_eq!(record.restored_seq, Some(u1), "node {node}: {record:?}");
        assert_eq!(
            record.reason.as_deref(),
            Some(format!("reverted by operator to seq {u1}").as_str()),
            "node {node}"
        );
        assert_eq!(
            runs(&lab, node),
            ["u1", "u2", "u1"],
            "node {node}: u1 ran again"
        );
    }
    // (`status` exits non-zero: an update was reverted and events rejected.)
    let status = String::from_utf8_lossy(&lab.p2pu(2, &["status"]).unwrap().stdout).into_owned();
    assert!(status.contains("reverted by operator"), "{status}");

    // The same statement again (a member replaying it): refused, nothing runs.
    send_until(&lab, 3, &wire, "the replay's refusal", |n| {
        rejected(&lab, n, "replay:")
    });
    for node in 1..=NODES {
        assert_eq!(runs(&lab, node), ["u1", "u2", "u1"], "node {node}");
    }
}
