//! Rollout plans on a lab of real agents (Serf, Transmission, Puppet in a network namespace):
//! an update for `role=camera` is applied only by the camera nodes, the others record it
//! `not-targeted` and still seed it; a manifest that fails on 2 of 8 nodes, rolled out in
//! waves with `--max-failures 1`, halts after the wave that crosses the threshold and the
//! later waves never apply it; `p2pu rollout retry` after fixing the cause makes the failed
//! nodes apply it, and `p2pu rollout resume` lets the halted ones go on; `p2pu rollout
//! abort` holds the nodes still waiting for their wave. One lab for all: CI has two cores.

mod support;

use p2pu::agent::runtime::state::Status;
use p2pu::formats::announcement::Announcement;
use p2pu::formats::plan;
use p2pu::lab::{Lab, LabOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::testlab::{ok, record, status, wait};

const NODES: usize = 8;
/// The camera nodes (node 1 submits and is not one).
const CAMERAS: [usize; 3] = [2, 3, 5];

fn vardir(lab: &Lab, node: usize) -> PathBuf {
    lab.node(node).unwrap().dir.join("puppet/var")
}

/// Makes `waves.pp` pass on `node`.
fn fix(lab: &Lab, node: usize) {
    let dir = vardir(lab, node);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ok"), "").unwrap();
}

/// A manifest that counts its runs in the node's Puppet vardir, and fails where the vardir
/// lacks `ok` when `needs_ok`.
fn manifest(dir: &Path, name: &str, needs_ok: bool) -> PathBuf {
    let path = dir.join(name);
    let test = if needs_ok {
        "test -e ${settings::vardir}/ok && "
    } else {
        ""
    };
    let text = format!(
        "exec {{ 'count {name}': command => \"/bin/sh -c '{test}echo run >> ${{settings::vardir}}/{name}.count'\" }}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn runs(lab: &Lab, node: usize, name: &str) -> usize {
    std::fs::read_to_string(vardir(lab, node).join(format!("{name}.count")))
        .map_or(0, |t| t.lines().count())
}

fn log_tail(lab: &Lab, node: usize) -> String {
    let log = std::fs::read_to_string(lab.node(node).unwrap().log("agent")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

fn settled(lab: &Lab, node: usize, want: Status) {
    wait(
        &format!("node {node} to record waves.pp {want:?}"),
        Duration::from_secs(180),
        || status(lab, node, "waves.pp") == Some(want),
    )
}

#[test]
fn targeting_waves_halt_and_retry() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = LabOptions::new(NODES, dir.path().join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    options.start_agent = true;
    // A failed apply is final at once: the waves see it without waiting out retries.
    options.site_overrides = Some("[agent]\nretries = 0\n".into());
    for node in CAMERAS {
        options
            .node_overrides
            .insert(node, "[serf]\ntags = { role = \"camera\" }\n".into());
    }
    let lab = Lab::start(options).expect("lab starts");

    // Bad plan flags are refused naming the flag and value, before any engine is touched.
    let cams = manifest(dir.path(), "cams.pp", false);
    let cams_arg = cams.to_str().unwrap();
    for (flag, value) in [
        ("--target", "camera"),
        ("--waves", "1,50%"),
        ("--max-failures", "many"),
        ("--wave-wait", "soon"),
    ] {
        let out = lab.p2pu(1, &["submit", cams_arg, flag, value]).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} was accepted");
        assert!(err.contains(&format!("{flag} \"{value}\"")), "{err}");
    }

    // 1. Targeting: cameras apply, the others seed it and record not-targeted.
    ok(lab
        .p2pu(1, &["submit", cams_arg, "--target", "role=camera"])
        .unwrap());
    for node in 1..=NODES {
        let want = if CAMERAS.contains(&node) {
            Status::Applied
        } else {
            Status::NotTargeted
        };
        wait(
            &format!("node {node} to record cams.pp {want:?}"),
            Duration::from_secs(120),
            || status(&lab, node, "cams.pp") == Some(want),
        );
    }
    for node in 1..=NODES {
        let want = usize::from(CAMERAS.contains(&node));
        assert_eq!(runs(&lab, node, "cams.pp"), want, "node {node}");
        let kept = record(&lab, node, "cams.pp").unwrap();
        let info = lab.node(node).unwrap();
        // Fetched, verified and offered to the others: the completion mark the seed server
        // serves, and the plan beside it.
        let download = &info.site.transmission.download_dir;
        assert!(
            download
                .join(format!("{}.torrent", kept.info_hash))
                .is_file(),
            "node {node} does not seed cams.pp"
        );
        assert!(download.join(format!("{}.plan", kept.info_hash)).is_file());
        if !CAMERAS.contains(&node) {
            let why = kept.reason.unwrap_or_default();
            assert!(why.contains("tag:role=camera"), "node {node}: {why}");
        }
    }

    // 2. Waves: signed first (the info-hash decides the waves), then the failing nodes
    // chosen in waves 2 and 3 of 4, then announced.
    let waves_pp = manifest(dir.path(), "waves.pp", true);
    let sig = dir.path().join("waves.sig");
    let sig_arg = sig.to_str().unwrap();
    ok(lab
        .p2pu(
            1,
            &[
                "submit",
                waves_pp.to_str().unwrap(),
                "--sign-only",
                sig_arg,
                "--waves",
                "1,25%,50%,100%",
                "--max-failures",
                "1",
            ],
        )
        .unwrap());
    let signed = Announcement::decode(std::fs::read_to_string(&sig).unwrap().trim()).unwrap();
    assert!(signed.has_plan());
    let names: Vec<String> = lab.nodes().iter().map(|n| n.name.clone()).collect();
    let waves = plan::assign_waves(
        signed.info_hash(),
        &names,
        &plan::parse_waves("1,25%,50%,100%").unwrap(),
    );
    let index = |name: &String| names.iter().position(|n| n == name).unwrap() + 1;
    let order: Vec<usize> = waves.concat().iter().map(index).collect();
    assert_eq!(waves.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 2, 4]);
    let failing = [order[1], order[2]];
    for node in 1..=NODES {
        if !failing.contains(&node) {
            fix(&lab, node);
        }
    }
    ok(lab.p2pu(1, &["submit", "--with-sig", sig_arg]).unwrap());
    settled(&lab, order[0], Status::Applied);
    settled(&lab, order[1], Status::Failed);
    settled(&lab, order[2], Status::Failed);
    settled(&lab, order[3], Status::Applied);
    for &node in &order[4..] {
        settled(&lab, node, Status::Halted);
        let why = record(&lab, node, "waves.pp").unwrap().reason.unwrap();
        assert!(why.starts_with("halted: 2 member(s)"), "node {node}: {why}");
    }
    // Halted means never applied. A later update applied on every node shows each agent went
    // past the halted one: only then is "not applied" an answer.
    let after = manifest(dir.path(), "after.pp", false);
    ok(lab.p2pu(1, &["submit", after.to_str().unwrap()]).unwrap());
    for node in 1..=NODES {
        wait(
            &format!("node {node} to apply after.pp"),
            Duration::from_secs(120),
            || runs(&lab, node, "after.pp") == 1,
        );
    }
    for &node in &order[4..] {
        assert_eq!(runs(&lab, node, "waves.pp"), 0, "node {node} applied it");
        assert_eq!(status(&lab, node, "waves.pp"), Some(Status::Halted));
    }
    let fleet = lab
        .p2pu(1, &["fleet", "status", "waves.pp", "--timeout", "10"])
        .unwrap();
    let table = String::from_utf8_lossy(&fleet.stdout);
    // Every member that answered in time; one busy member may not have.
    assert!(
        table.contains("rollout waves.pp seq") && table.contains("HALTED on "),
        "{table}"
    );
    assert!(
        table.contains("more than the 1 --max-failures allows"),
        "{table}"
    );
    assert!(table.contains("tags: role=camera"), "{table}");

    // 3. The cause fixed, retry: the failed nodes apply; resume: the halted ones go on.
    for node in failing {
        fix(&lab, node);
    }
    ok(lab.p2pu(1, &["rollout", "retry", "waves.pp"]).unwrap());
    for node in failing {
        wait(
            &format!("node {node} to apply waves.pp on retry"),
            Duration::from_secs(180),
            || status(&lab, node, "waves.pp") == Some(Status::Applied),
        );
    }
    for &node in &order[4..] {
        assert_eq!(
            runs(&lab, node, "waves.pp"),
            0,
            "node {node}: {}",
            log_tail(&lab, node)
        );
    }
    ok(lab.p2pu(1, &["rollout", "resume", "waves.pp"]).unwrap());
    for node in 1..=NODES {
        wait(
            &format!("node {node} to apply waves.pp after resume"),
            Duration::from_secs(180),
            || status(&lab, node, "waves.pp") == Some(Status::Applied),
        );
        assert_eq!(runs(&lab, node, "waves.pp"), 1, "node {node}");
    }

    // 4. Abort: a rollout whose second wave waits an hour is aborted; the waiting nodes
    // hold as halted and never apply it.
    let late = manifest(dir.path(), "late.pp", false);
    let out = ok(lab
        .p2pu(
            1,
            &[
                "submit",
                late.to_str().unwrap(),
                "--waves",
                "1,100%",
                "--wave-wait",
                "1h",
            ],
        )
        .unwrap());
    assert!(out.starts_with("submitted late.pp"), "{out}");
    let waiting = |node: usize| status(&lab, node, "late.pp") == Some(Status::Waiting);
    let deadline = Instant::now() + Duration::from_secs(120);
    while (1..=NODES).filter(|&n| waiting(n)).count() != NODES - 1 {
        let seen: Vec<_> = (1..=NODES)
            .map(|n| record(&lab, n, "late.pp").map(|r| (r.status, r.reason)))
            .collect();
        assert!(
            Instant::now() < deadline,
            "seven nodes never waited for the wave wait: {seen:#?}\n{}",
            log_tail(&lab, 2)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let first = (1..=NODES).find(|&n| !waiting(n)).unwrap();
    ok(lab.p2pu(1, &["rollout", "abort", "late.pp"]).unwrap());
    for node in (1..=NODES).filter(|&n| n != first) {
        wait(
            &format!("node {node} to halt late.pp"),
            Duration::from_secs(60),
            || status(&lab, node, "late.pp") == Some(Status::Halted),
        );
        let why = record(&lab, node, "late.pp").unwrap().reason.unwrap();
        assert!(why.contains("aborted by operator"), "node {node}: {why}");
        assert_eq!(runs(&lab, node, "late.pp"), 0, "node {node}");
    }
}
