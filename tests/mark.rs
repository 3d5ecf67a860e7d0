//! `p2pu mark-good` / `mark-bad` on a lab of two real agents (Serf, Transmission, Puppet in a
//! network namespace) whose health check is a person: the site's check waits
//! (`/bin/sleep infinity`) until the operator's verdict. The first version is marked good
//! on both nodes; the second goes out in two waves, and the second wave waits until the first
//! wave's node is marked good; the second node marks it bad while its check runs (u1 runs
//! again there, `reverted`, "marked bad by operator to seq u1"), the first node marks it bad
//! once applied (the same); a verdict on a reverted update is refused with its reason.
//! Assertions are on records and on what Puppet ran, never on timings.

mod support;

use p2pu::agent::runtime::state::Status;
use p2pu::lab::{Lab, LabOptions};
use std::time::Duration;
use support::testlab::{manifest, ok, record, runs, status, submit, wait, TestLab};

const NAME: &str = "app.pp";
/// A generous bound on one step (CI has 2 cores).
const SETTLE: Duration = Duration::from_secs(180);

/// `p2pu mark-good|mark-bad NAME --json` on `node`; the report.
fn mark(lab: &Lab, node: usize, verdict: &str) -> serde_json::Value {
    let out = ok(lab.p2pu(node, &[verdict, NAME, "--json"]).unwrap());
    let report = serde_json::from_str(&out).unwrap();
    // As docs/json.md says.
    let departures = p2pu::cmd::json::departures(verdict, &report);
    assert!(departures.is_empty(), "{departures:?}: {report:#}");
    report
}

#[test]
fn a_person_as_health_check_marks_updates_good_or_bad() {
    if !support::prereq::root("the lab runs in a network namespace") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut options = LabOptions::new(2, dir.path().join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    options.start_agent = true;
    // The check is a person: it waits for the verdict (or fails after 5 minutes).
    options.site_overrides = Some(
        "[agent]\ncatch_up_secs = 3600\nhealth_check = [\"/bin/sleep\", \"infinity\"]\n\
         health_check_timeout_secs = 300\n"
            .into(),
    );
    let lab = TestLab(Lab::start(options).expect("lab starts"));

    // u1: applied everywhere, then held in its check until marked good.
    let u1 = submit(&lab, &manifest(dir.path(), NAME, "u1"), &[]);
    for node in 1..=2 {
        wait(&format!("node {node} to check u1"), SETTLE, || {
            status(&lab, node, NAME) == Some(Status::Checking)
        });
        let report = mark(&lab, node, "mark-good");
        assert_eq!(
            (report["seq"].as_u64(), report["status"].as_str()),
            (Some(u1), Some("applied"))
        );
        let applied = record(&lab, node, NAME).unwrap();
        assert!(
            applied
                .output
                .unwrap_or_default()
                .contains("marked good by operator"),
            "node {node}"
        );
    }

    // u2 in two waves: the second waits for the first wave's node to be marked good.
    let u2 = submit(
        &lab,
        &manifest(dir.path(), NAME, "u2"),
        &["--waves", "1,100%"],
    );
    let mut first = 0;
    wait("the first wave to check u2", SETTLE, || {
        first = (1..=2)
            .find(|&n| {
                record(&lab, n, NAME).is_some_and(|r| r.seq == u2 && r.status == Status::Checking)
            })
            .unwrap_or(0);
        first != 0
    });
    let second = 3 - first;
    wait("the second wave to wait for the first", SETTLE, || {
        record(&lab, second, NAME).is_some_and(|r| r.seq == u2 && r.status == Status::Waiting)
    });
    // Refused while it waits: not applied, no check running.
    let out = lab.p2pu(second, &["mark-good", NAME]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("{NAME} seq {u2} is waiting: mark-good judges")),
        "{err}"
    );
    mark(&lab, first, "mark-good");
    wait("the second wave to check u2", SETTLE, || {
        record(&lab, second, NAME).is_some_and(|r| r.seq == u2 && r.status == Status::Checking)
    });

    // Marked bad while its check runs: the kept u1 runs again.
    let report = mark(&lab, second, "mark-bad");
    let reason = format!("marked bad by operator to seq {u1}");
    assert_eq!(report["status"], "reverted");
    assert_eq!(report["reason"].as_str(), Some(reason.as_str()));
    assert_eq!(runs(&lab, second, NAME), ["u1", "u2", "u1"]);
    // Marked bad once applied: the same way back.
    assert_eq!(runs(&lab, first, NAME), ["u1", "u2"]);
    let report = mark(&lab, first, "mark-bad");
    assert_eq!(report["restored_seq"].as_u64(), Some(u1));
    assert_eq!(report["reason"].as_str(), Some(reason.as_str()));
    assert_eq!(runs(&lab, first, NAME), ["u1", "u2", "u1"]);
    let reverted = record(&lab, first, NAME).unwrap();
    assert_eq!((reverted.seq, reverted.status), (u2, Status::Reverted));

    // A verdict on what was reverted is refused, saying what to do.
    let out = lab.p2pu(first, &["mark-good", NAME]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("`p2pu rollout retry` makes it try again"),
        "{err}"
    );
    let status =
        String::from_utf8_lossy(&lab.p2pu(first, &["status"]).unwrap().stdout).into_owned();
    assert!(status.contains("marked bad by operator"), "{status}");
}
