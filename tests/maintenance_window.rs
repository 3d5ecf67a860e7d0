//! Maintenance windows on a lab of real agents (Serf, Transmission, Puppet in a network
//! namespace). Node 2 has `agent.apply_window`; node 1 has none and submits.
//!
//! 1. A rollout with its own signed `--window`, open now, replaces node 2's closed window:
//!    both apply at once.
//! 2. A rollout without one: node 1 applies at once, node 2 downloads it and records
//!    `waiting for its window (opens ...)` (in `status` and `fleet status`) until its window
//!    opens, a minute or two later, then applies it.
//! 3. A rollout whose `--window` is closed: every node waits, node 2 too once its own window is
//!    open (the rollout's replaces it), and `p2pu verify` of the wire text with the plan from
//!    the download dir shows the signed window.
//!
//! Windows are in whole minutes of the real local clock, so the test waits for the next
//! minute boundary rather than injecting a clock: nothing in the agent reads a clock a test
//! could set, and no test-only switch ships in the binary.

mod support;

use p2pu::agent::runtime::state::Status;
use p2pu::lab::{Lab, LabOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::testlab::{ok, record, status, wait, TestLab};

fn vardir(lab: &Lab, node: usize) -> PathBuf {
    lab.node(node).unwrap().dir.join("puppet/var")
}

/// A manifest that counts its runs in the node's Puppet vardir.
fn manifest(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let text = format!(
        "exec {{ 'count {name}': command => \"/bin/sh -c 'echo run >> ${{settings::vardir}}/{name}.count'\" }}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn runs(lab: &Lab, node: usize, name: &str) -> usize {
    std::fs::read_to_string(vardir(lab, node).join(format!("{name}.count")))
        .map_or(0, |t| t.lines().count())
}

/// This machine's local wall-clock seconds (what the agents' windows are written in).
fn wall_now() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    p2pu::civil::local_secs(now)
}

/// `daily HH:MM-HH:MM` from `from` to `from + minutes` (wall-clock seconds, whole minutes).
fn daily(from: u64, minutes: u64) -> String {
    let hm = |secs: u64| format!("{:02}:{:02}", secs % 86_400 / 3600, secs % 3600 / 60);
    format!("daily {}-{}", hm(from), hm(from + minutes * 60))
}

#[test]
fn updates_wait_for_their_window_and_a_signed_rollout_window_replaces_the_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = LabOptions::new(2, dir.path().join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    options.start_agent = true;
    // Closed for the first step: twelve hours away.
    let far = daily((wall_now() / 60 + 12 * 60) * 60, 10);
    options
        .node_overrides
        .insert(2, format!("[agent]\napply_window = [\"{far}\"]\n"));
    let mut lab = TestLab(Lab::start(options).expect("lab starts"));

    // 1. The rollout's own window, open now, replaces node 2's closed one.
    let open = daily((wall_now() / 60 - 1) * 60, 60);
    let now_pp = manifest(dir.path(), "now.pp");
    ok(lab
        .p2pu(1, &["submit", now_pp.to_str().unwrap(), "--window", &open])
        .unwrap());
    for node in [1, 2] {
        wait(
            &format!("node {node} to apply now.pp"),
            Duration::from_secs(90),
            || status(&lab, node, "now.pp") == Some(Status::Applied),
        );
    }

    // 2. Node 2's own window, opening at a minute boundary at least 40 s away: set it and
    //    restart node 2's agent, which reads its config when it starts.
    let opens = (wall_now() + 40).div_ceil(60) * 60;
    let soon = daily(opens, 5);
    let config = lab.node(2).unwrap().config.clone();
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains(&far), "{text}");
    std::fs::write(&config, text.replace(&far, &soon)).unwrap();
    lab.stop_agent(2).unwrap();
    lab.start_agent(2).unwrap();
    let later = manifest(dir.path(), "later.pp");
    ok(lab.p2pu(1, &["submit", later.to_str().unwrap()]).unwrap());
    wait("node 1 to apply later.pp", Duration::from_secs(60), || {
        status(&lab, 1, "later.pp") == Some(Status::Applied)
    });
    wait(
        "node 2 to wait for its window with later.pp",
        Duration::from_secs(60),
        || status(&lab, 2, "later.pp") == Some(Status::Waiting),
    );
    assert!(
        wall_now() < opens,
        "the window opened before the test could see node 2 wait (a very slow machine)"
    );
    let reason = record(&lab, 2, "later.pp")
        .unwrap()
        .reason
        .unwrap_or_default();
    let hhmm = &soon["daily ".len().."daily ".len() + 5];
    assert!(
        reason.starts_with("waiting for its window (opens ")
            && reason.contains(hhmm)
            && reason.contains("agent.apply_window"),
        "{reason}"
    );
    assert_eq!(runs(&lab, 2, "later.pp"), 0, "applied outside its window");
    // Downloaded at once: the verified payload is seeded before the window opens.
    let shown = ok(lab.p2pu(2, &["status"]).unwrap());
    assert!(shown.contains("waiting for its window"), "{shown}");
    let fleet = ok(lab.p2pu(1, &["fleet", "status", "later.pp"]).unwrap());
    assert!(fleet.contains("waiting for its window"), "{fleet}");

    // 3. A rollout whose signed window is closed: both nodes wait, node 2 too once its own
    //    window opens. Its plan, as the download dir holds it, verifies with the wire text.
    let shut = manifest(dir.path(), "shut.pp");
    let report = ok(lab
        .p2pu(
            1,
            &["submit", shut.to_str().unwrap(), "--window", &far, "--json"],
        )
        .unwrap());
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let wire = report["wire"].as_str().unwrap();
    let info_hash = report["info_hash"].as_str().unwrap();
    for node in [1, 2] {
        wait(
            &format!("node {node} to wait for shut.pp's window"),
            Duration::from_secs(60),
            || status(&lab, node, "shut.pp") == Some(Status::Waiting),
        );
        let reason = record(&lab, node, "shut.pp")
            .unwrap()
            .reason
            .unwrap_or_default();
        assert!(reason.contains("the rollout's --window"), "{reason}");
    }
    let info = lab.node(2).unwrap();
    let plan = info
        .site
        .transmission
        .download_dir
        .join(format!("{info_hash}.plan"));
    let wire_file = dir.path().join("shut.wire");
    std::fs::write(&wire_file, wire).unwrap();
    let verified = ok(lab
        .p2pu(
            2,
            &[
                "verify",
                wire_file.to_str().unwrap(),
                "--with",
                plan.to_str().unwrap(),
            ],
        )
        .unwrap());
    assert!(
        verified.contains(&far) && verified.contains("\nvalid"),
        "{verified}"
    );

    // Node 2's own window opens: later.pp applies; shut.pp keeps waiting.
    wait(
        "node 2 to apply later.pp once its window opened",
        Duration::from_secs(150),
        || status(&lab, 2, "later.pp") == Some(Status::Applied),
    );
    assert!(wall_now() >= opens, "applied before its window opened");
    assert_eq!(runs(&lab, 2, "later.pp"), 1);
    std::thread::sleep(Duration::from_secs(2));
    for node in [1, 2] {
        assert_eq!(
            status(&lab, node, "shut.pp"),
            Some(Status::Waiting),
            "node {node}"
        );
        assert_eq!(runs(&lab, node, "shut.pp"), 0, "node {node}");
    }
}
