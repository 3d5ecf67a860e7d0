//! Update locks on a lab of real agents (Serf, Transmission, Puppet in a network namespace).
//! Node 2 has `agent.update_lock` and `agent.veto_command`; node 1 has neither and submits.
//!
//! 1. An application's lock file holds an update on node 2 (downloaded, `waiting`, the
//!    holder's name and age in `status` and `fleet status`) while node 1 applies it.
//! 2. A rollout signed with `--force-locks` applies on node 2 past the same lock.
//! 3. The lock removed, the held update applies.
//! 4. The veto command exiting non-zero holds the next update with what it said; once it
//!    passes, the update applies.

mod support;

use p2pu::agent::runtime::state::Status;
use p2pu::lab::{Lab, LabOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::testlab::{ok, record, status, wait, TestLab};

fn applied(lab: &Lab, node: usize, name: &str) {
    wait(
        &format!("node {node} to apply {name}"),
        Duration::from_secs(90),
        || status(lab, node, name) == Some(Status::Applied),
    );
}

fn held(lab: &Lab, node: usize, name: &str) -> String {
    wait(
        &format!("node {node} to hold {name}"),
        Duration::from_secs(90),
        || status(lab, node, name) == Some(Status::Waiting),
    );
    record(lab, node, name).unwrap().reason.unwrap_or_default()
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
    let dir = lab.node(node).unwrap().dir.join("puppet/var");
    std::fs::read_to_string(dir.join(format!("{name}.count"))).map_or(0, |t| t.lines().count())
}

#[test]
fn a_lock_and_a_veto_hold_updates_and_force_locks_applies_past_them() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("run/update.lock");
    let busy = dir.path().join("busy");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let mut options = LabOptions::new(2, dir.path().join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    options.start_agent = true;
    options.node_overrides.insert(
        2,
        format!(
            "[agent]\nupdate_lock = \"{}\"\nveto_command = [\"/bin/sh\", \"-c\", \"test ! -e {} || {{ echo still busy with $P2PU_NAME; exit 1; }}\"]\n",
            lock.display(),
            busy.display()
        ),
    );
    // The agents tell a service manager what they do (sd_notify STATUS=): this test listens
    // where systemd would. The only test in this binary, so the variable reaches no other.
    let notify = dir.path().join("notify");
    let manager = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    manager.set_nonblocking(true).unwrap();
    std::env::set_var("NOTIFY_SOCKET", &notify);
    let mut lab = TestLab(Lab::start(options).expect("lab starts"));

    // 1. The application holds updates: node 2 downloads and waits, saying who holds it.
    std::fs::write(&lock, "backup-job pid 4242\n").unwrap();
    let a = manifest(dir.path(), "a.pp");
    ok(lab.p2pu(1, &["submit", a.to_str().unwrap()]).unwrap());
    applied(&lab, 1, "a.pp");
    let reason = held(&lab, 2, "a.pp");
    assert!(
        reason.starts_with(&format!("held by the update lock {}", lock.display()))
            && reason.contains("backup-job pid 4242, for 0 min since "),
        "{reason}"
    );
    assert_eq!(runs(&lab, 2, "a.pp"), 0, "applied under the lock");
    let shown = ok(lab.p2pu(2, &["status"]).unwrap());
    assert!(shown.contains("backup-job pid 4242"), "{shown}");
    // Issue 29: `systemctl status p2pu-agent` would show the hold (sd_notify STATUS=).
    let mut said = Vec::new();
    wait(
        "the agent to say it holds a.pp",
        Duration::from_secs(10),
        || {
            let mut buf = [0u8; 512];
            while let Ok(n) = manager.recv(&mut buf) {
                said.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            said.iter().any(|s| {
                s.starts_with("STATUS=a.pp seq ")
                    && s.contains(": waiting: held by the update lock")
            })
        },
    );
    assert!(said.iter().any(|s| s == "READY=1"), "{said:?}");
    // Issue 29: status says whether the daemons run, as systemctl status would.
    assert!(
        shown.starts_with("services: agent running, serf running, transmission running\n"),
        "{shown}"
    );
    let fleet = ok(lab.p2pu(1, &["fleet", "status", "a.pp"]).unwrap());
    assert!(fleet.contains("held by the update lock"), "{fleet}");

    // 2. Signed with --force-locks: applied past the lock.
    let b = manifest(dir.path(), "b.pp");
    ok(lab
        .p2pu(1, &["submit", b.to_str().unwrap(), "--force-locks"])
        .unwrap());
    applied(&lab, 2, "b.pp");
    assert!(lock.exists());
    assert_eq!(status(&lab, 2, "a.pp"), Some(Status::Waiting));

    // 3. The lock removed: the held update applies, once.
    std::fs::remove_file(&lock).unwrap();
    applied(&lab, 2, "a.pp");
    assert_eq!(runs(&lab, 2, "a.pp"), 1);

    // 4. The veto command holds the next update with what it said, until it passes.
    std::fs::write(&busy, "").unwrap();
    let c = manifest(dir.path(), "c.pp");
    ok(lab.p2pu(1, &["submit", c.to_str().unwrap()]).unwrap());
    applied(&lab, 1, "c.pp");
    let reason = held(&lab, 2, "c.pp");
    assert!(
        reason.starts_with(
            "held by agent.veto_command: veto command `/bin/sh` exited 1: still busy with c.pp"
        ),
        "{reason}"
    );
    assert_eq!(runs(&lab, 2, "c.pp"), 0, "applied past the veto");
    std::fs::remove_file(&busy).unwrap();
    applied(&lab, 2, "c.pp");
    assert_eq!(runs(&lab, 2, "c.pp"), 1);

    // Issue 29: with the agent down, `status --check` fails and says so (it said "ok").
    let out = lab.p2pu(2, &["status", "--check"]).unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    lab.stop_agent(2).unwrap();
    let out = lab.p2pu(2, &["status", "--check"]).unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(6), "{line}");
    assert!(line.starts_with("down: the agent is not running"), "{line}");
}
