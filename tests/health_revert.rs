//! The health check and automatic revert against a real agent and real Puppet, on a one-node
//! lab: a manifest whose result the site's check rejects is undone by applying the last good
//! version again, and reported `reverted` with the check's output (`status`, `fleet status`,
//! `logs`); a check that hangs past its timeout has failed; an agent killed in the middle of a
//! check finishes it when it starts again. Every assertion is on what happened (records, the
//! file Puppet manages), none on timings.

mod support;

use p2pu::agent::runtime::state::{Record, StateStore, Status};
use p2pu::agent::runtime::status::MemberReport;
use p2pu::lab::{Lab, LabOptions};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A generous bound on one update's way through a one-node lab (CI has 2 cores).
const SETTLE: Duration = Duration::from_secs(240);

/// A one-node lab with the check below; the lab (first field) is dropped before its dir.
struct Fleet {
    lab: Lab,
    dir: tempfile::TempDir,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent log (last lines)\n{}", self.log_tail());
        }
    }
}

/// The site's check: prints what the app's state file says, hangs while `hang` exists, and
/// fails when the state says B.
const CHECK: &str = r#"#!/bin/sh
echo "checking $1: $(cat "$1" 2>&1)"
if [ -e "$2" ]; then echo "hanging"; sleep 300; fi
if grep -q B "$1"; then echo "FAIL: the app state is B"; exit 1; fi
echo "app ok"
"#;

fn fleet() -> Option<Fleet> {
    if !support::prereq::root("the lab runs in a network namespace") {
        return None;
    }
    let dir = support::testlab::lab_dir("p2pu-health-");
    std::fs::create_dir(dir.path().join("app")).unwrap();
    let check = dir.path().join("check.sh");
    std::fs::write(&check, CHECK).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&check, mode).unwrap();
    let mut options = LabOptions::new(1, dir.path().join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    options.start_agent = true;
    options.site_overrides = Some(format!(
        "[agent]\nhealth_check = [{:?}, {:?}, {:?}]\nhealth_check_timeout_secs = 20\n",
        check.display().to_string(),
        dir.path().join("app/state").display().to_string(),
        dir.path().join("hang").display().to_string(),
    ));
    let lab = Lab::start(options).unwrap_or_else(|e| panic!("{}", p2pu::error::chain(&e)));
    Some(Fleet { lab, dir })
}

impl Fleet {
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The app's state file, as Puppet left it.
    fn state(&self) -> String {
        std::fs::read_to_string(self.path("app/state")).unwrap_or_default()
    }

    /// Submits `site.pp` making the app's state say `content`; its seq.
    fn submit(&self, content: &str) -> u64 {
        let manifest = self.path("site.pp");
        let state = self.path("app/state");
        let text = format!(
            "file {{ '{}': content => \"{content}\\n\" }}\n",
            state.display()
        );
        std::fs::write(&manifest, text).unwrap();
        let out = self
            .lab
            .p2pu(1, &["submit", manifest.to_str().unwrap()])
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text.split_whitespace()
            .skip_while(|w| *w != "seq")
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no seq in {text:?}"))
    }

    fn record(&self, seq: u64) -> Option<Record> {
        let state_dir = &self.lab.node(1).unwrap().site.agent.state_dir;
        StateStore::open_read_only(state_dir)
            .records("site.pp")
            .ok()?
            .into_iter()
            .find(|r| r.seq == seq)
    }

    /// Waits until the record of `seq` is in a status `until` accepts.
    fn wait(&self, seq: u64, until: impl Fn(Status) -> bool) -> Record {
        let deadline = Instant::now() + SETTLE;
        loop {
            if let Some(record) = self.record(seq) {
                if until(record.status) {
                    return record;
                }
            }
            assert!(
                Instant::now() < deadline,
                "site.pp seq {seq} stayed {:?}",
                self.record(seq)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn settled(&self, seq: u64) -> Record {
        self.wait(seq, |s| !s.is_open())
    }

    fn p2pu(&self, args: &[&str]) -> String {
        let out = self.lab.p2pu(1, args).unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.lab.node(1).unwrap().log("agent")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

fn assert_reverted(record: &Record, to: u64) {
    assert_eq!(
        (record.status, record.restored_seq),
        (Status::Reverted, Some(to)),
        "{record:#?}"
    );
}

#[test]
fn a_failing_health_check_reverts_to_the_last_good_version_and_reports_its_output() {
    let Some(fleet) = fleet() else { return };
    let good = fleet.submit("A");
    let record = fleet.settled(good);
    assert_eq!(record.status, Status::Applied, "{record:#?}");
    assert!(record.output.unwrap_or_default().contains("app ok"));
    assert_eq!(fleet.state(), "A\n");

    let bad = fleet.submit("B");
    let record = fleet.settled(bad);
    assert_reverted(&record, good);
    assert_eq!(
        fleet.state(),
        "A\n",
        "the last good manifest was applied again"
    );
    let reason = record.reason.clone().unwrap_or_default();
    assert!(reason.contains("FAIL: the app state is B"), "{reason}");
    assert!(record
        .output
        .unwrap_or_default()
        .contains("checking /tmp/p2pu-health-"));

    // What the operator reads: the node's own status, the fleet's, and the kept output.
    let status = fleet.p2pu(&["status"]);
    assert!(
        status.contains("reverted") && status.contains("FAIL: the app state is B"),
        "{status}"
    );
    let reports: Vec<MemberReport> =
        p2pu::cmd::json::decode(fleet.p2pu(&["fleet", "status", "--json"]).as_bytes()).unwrap();
    let update = reports[0].updates.as_ref().unwrap();
    assert_eq!(
        update
            .iter()
            .find(|u| u.name == "site.pp")
            .map(|u| u.status),
        Some(Status::Reverted)
    );
    assert!(fleet.p2pu(&["fleet", "status"]).contains("reverted"));
    let logs = fleet.p2pu(&["logs", "site.pp"]);
    assert!(
        logs.contains("reverted") && logs.contains("FAIL: the app state is B"),
        "{logs}"
    );

    // A check that hangs is killed at its timeout and has failed: reverted too.
    std::fs::write(fleet.path("hang"), "").unwrap();
    let hung = fleet.submit("A, hung");
    let record = fleet.settled(hung);
    assert_reverted(&record, good);
    let reason = record.reason.unwrap_or_default();
    assert!(reason.contains("did not finish within 20 s"), "{reason}");
    assert_eq!(fleet.state(), "A\n");
}

#[test]
fn an_agent_killed_during_a_health_check_runs_it_again_when_it_starts() {
    let Some(mut fleet) = fleet() else { return };
    let good = fleet.submit("A");
    assert_eq!(fleet.settled(good).status, Status::Applied);

    // The check hangs until the agent is killed: the record says `checking`.
    std::fs::write(fleet.path("hang"), "").unwrap();
    let bad = fleet.submit("B");
    fleet.wait(bad, |s| s == Status::Checking);
    fleet.lab.kill_agent(1).unwrap();
    assert_eq!(fleet.record(bad).map(|r| r.status), Some(Status::Checking));
    assert_eq!(fleet.state(), "B\n");

    std::fs::remove_file(fleet.path("hang")).unwrap();
    fleet.lab.start_agent(1).unwrap();
    let record = fleet.settled(bad);
    assert_reverted(&record, good);
    assert_eq!(fleet.state(), "A\n");
    assert!(record
        .reason
        .unwrap_or_default()
        .contains("FAIL: the app state is B"));
}
