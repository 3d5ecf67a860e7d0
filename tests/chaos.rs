//! Every node gets every update, whatever happens to the network, the disk or the processes
//! (issue 25), on labs of real serf agents, transmission-daemons, `p2pu agent`s and puppet.
//! Each lab sets `agent.catch_up_secs` to an hour: the periodic round never runs within a test,
//! so what arrives came by the way under test (a member-join round after the fault cleared,
//! `submit`'s re-sends, the agent's first round after its start, its own retries).
//!
//! Tests assert outcomes, never timings; each cleans up its namespace, mounts and processes
//! (the lab and the guards below do on drop, a failed assertion included).

mod support;

use p2pu::agent::runtime::state::{Record, Status};
use p2pu::agent::runtime::status::StatusReport;
use p2pu::lab::{Lab, LabOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::testlab::{hourly_lab, manifest, ok, records, runs, submit, TestLab};

/// How long a test waits for an outcome; far below `catch_up_secs`.
const WITHIN: Duration = Duration::from_secs(150);

fn record(lab: &Lab, node: usize, name: &str, seq: u64) -> Option<Record> {
    records(lab, node)
        .into_iter()
        .find(|r| r.name == name && r.seq == seq)
}

fn status(lab: &Lab, node: usize, name: &str, seq: u64) -> Option<Status> {
    record(lab, node, name, seq).map(|r| r.status)
}

/// Waits until `name` seq `seq` is `want` on each of `nodes`; shows their records if not.
fn wait_status(lab: &Lab, nodes: &[usize], name: &str, seq: u64, want: Status) {
    let deadline = Instant::now() + WITHIN;
    while !nodes
        .iter()
        .all(|&n| status(lab, n, name, seq) == Some(want))
    {
        if Instant::now() > deadline {
            let all: Vec<_> = nodes.iter().map(|&n| (n, records(lab, n))).collect();
            panic!("{name} seq {seq} not {want:?} on every one of {nodes:?}: {all:#?}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn wait_applied(lab: &Lab, nodes: &[usize], name: &str, seq: u64) {
    wait_status(lab, nodes, name, seq, Status::Applied);
}

/// Cuts the nodes of `a` off from those of `b` in the lab's namespace, where every node's
/// address lives on `lo`: `-I` to cut, `-D` to heal; the rules go with the namespace when the
/// lab is dropped. Dropped on receipt (INPUT), as a lost packet would be: dropped on sending,
/// Serf's `sendto` fails with EPERM, which memberlist takes for its own fault and never
/// suspects anyone. Every packet between the two sides' addresses goes, and so does every TCP
/// packet whose source is its destination: a connection opened without binding an address
/// (memberlist's state exchange and joins, the agents' HTTP fetches) takes its destination as
/// source here, so which node opened it cannot be told, and a cut that let it through let a
/// re-sent update's join carry it across. Within a side that leaves Serf's gossip (bound
/// UDP) and Transmission's peer connections (bound to the node's address).
fn cut(lab: &Lab, a: &[usize], b: &[usize], action: &str) {
    let addr = |n: usize| lab.node(n).unwrap().addr.to_string();
    let iptables = |rule: &[&str]| {
        let mut args = vec!["iptables", action, "INPUT"];
        args.extend_from_slice(rule);
        args.extend_from_slice(&["-j", "DROP"]);
        let out = lab.exec(1, &args).unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    for &x in a {
        for &y in b {
            for (from, to) in [(x, y), (y, x)] {
                iptables(&["-s", &addr(from), "-d", &addr(to)]);
            }
        }
    }
    for n in a.iter().chain(b) {
        iptables(&["-p", "tcp", "-s", &addr(*n), "-d", &addr(*n)]);
    }
}

/// Signs `name` for nodes 1 and 3 in waves of one and the rest (`--sign-only`, so nothing is
/// sent), trying contents until node 3 comes first: node 1 then waits on it. Returns the wire's
/// file and the seq.
fn waved_with_node_3_first(lab: &Lab, dir: &Path, name: &str) -> (PathBuf, u64) {
    use p2pu::formats::announcement::Announcement;
    let waves = p2pu::formats::plan::parse_waves("1,100%").unwrap();
    let members = ["node-1".to_string(), "node-3".to_string()];
    for attempt in 0..40 {
        let path = manifest(dir, name, &format!("waved-{attempt}"));
        let sig = dir.join(format!("{name}-{attempt}.sig"));
        ok(lab
            .p2pu(
                1,
                &[
                    "submit",
                    path.to_str().unwrap(),
                    "--target-nodes",
                    "node-1,node-3",
                    "--waves",
                    "1,100%",
                    "--sign-only",
                    sig.to_str().unwrap(),
                ],
            )
            .unwrap());
        let wire = std::fs::read_to_string(&sig).unwrap();
        let announcement = Announcement::decode(wire.trim()).unwrap();
        let order = p2pu::formats::plan::assign_waves(announcement.info_hash(), &members, &waves);
        if order[0] == ["node-3"] {
            return (sig, announcement.seq());
        }
    }
    panic!("node 3 never came first in 40 contents");
}

/// Half of a fleet of four (nodes 3 and 4) is cut off while `y.pp` goes out twice and a waved
/// `w.pp` (node 3's wave first, then node 1's) goes out; then the cut heals. Meanwhile node 1
/// never applies `w.pp`: its earlier wave is a silent member, and a node never decides that a
/// member it cannot hear settled. Once healed every node ends on the newest `y.pp`, node 3
/// applies `w.pp` and then node 1; nothing runs twice.
#[test]
fn a_fleet_cut_in_half_during_a_rollout_converges_on_the_newest_once_healed() {
    let dir = tempfile::tempdir().unwrap();
    let lab = hourly_lab(dir.path(), 4);
    let (w_sig, w_seq) = waved_with_node_3_first(&lab, dir.path(), "w.pp");
    let (near, far) = ([1, 2], [3, 4]);
    cut(&lab, &near, &far, "-I");
    // Once node 1 sees the far side fail, `submit` re-sends only to the members it can hear.
    let deadline = Instant::now() + WITHIN;
    while lab.members(1).unwrap().iter().any(|m| {
        m.status == p2pu::engines::MemberStatus::Alive && (m.name == "node-3" || m.name == "node-4")
    }) {
        assert!(
            Instant::now() < deadline,
            "node 1 never saw the far side fail"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // Sent once: `submit`'s re-sends first join members over TCP, which the cut makes wait
    // for a connect timeout even within the near side (see `cut`).
    let y1 = submit(&lab, &manifest(dir.path(), "y.pp", "one"), &["--once"]);
    let out = ok(lab
        .p2pu(
            1,
            &[
                "submit",
                "--quiet",
                "--json",
                "--once",
                "--with-sig",
                w_sig.to_str().unwrap(),
            ],
        )
        .unwrap());
    assert!(out.contains(&w_seq.to_string()), "{out}");
    let y2 = submit(&lab, &manifest(dir.path(), "y.pp", "two"), &["--once"]);
    wait_applied(&lab, &near, "y.pp", y2);
    wait_status(&lab, &[2], "w.pp", w_seq, Status::NotTargeted);
    // Node 1 fetched w.pp and waits on node 3, whom it cannot hear.
    wait_status(&lab, &[1], "w.pp", w_seq, Status::Waiting);
    let waiting = record(&lab, 1, "w.pp", w_seq).unwrap();
    let reason = waiting.reason.clone().unwrap_or_default();
    assert!(reason.contains("node-3"), "{waiting:#?}");
    for node in far {
        let heard: Vec<Record> = records(&lab, node)
            .into_iter()
            .filter(|r| r.name == "y.pp" || r.name == "w.pp")
            .collect();
        assert!(
            heard.is_empty(),
            "node {node} heard through the cut: {heard:#?}"
        );
    }

    cut(&lab, &near, &far, "-D");
    wait_applied(&lab, &[1, 2, 3, 4], "y.pp", y2);
    wait_applied(&lab, &[3, 1], "w.pp", w_seq);
    wait_status(&lab, &[4], "w.pp", w_seq, Status::NotTargeted);
    // The older one may have run before the newer arrived (on the far side too: Serf's state
    // exchange on reconnecting replays its recent events), never after it, never twice.
    for node in 1..=4 {
        let y = runs(&lab, node, "y.pp");
        assert!(
            y == ["one", "two"] || y == ["two"],
            "node {node} ran y.pp {y:?}"
        );
        let one = status(&lab, node, "y.pp", y1);
        assert!(
            matches!(one, None | Some(Status::Applied | Status::Failed)),
            "node {node}: y.pp one is {one:?}"
        );
    }
    for node in [1, 3] {
        assert_eq!(runs(&lab, node, "w.pp").len(), 1, "node {node}");
    }
    for node in [2, 4] {
        assert!(runs(&lab, node, "w.pp").is_empty(), "node {node}");
    }
}

/// libfaketime, where Debian's `faketime` package puts it.
fn libfaketime() -> Option<PathBuf> {
    let dir = std::fs::read_dir("/usr/lib").ok()?;
    dir.filter_map(|e| e.ok())
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists())
}

/// The environment that puts a process `offset` (`+600s`) off the real clock: libfaketime
/// shifts what `clock_gettime(CLOCK_REALTIME)` returns to the process and its children, which
/// is every clock the agent reads (Rust's `SystemTime`, Puppet, the `serf` commands); the
/// monotonic clock is left alone, so timeouts and sleeps still take as long as they say.
fn skewed(lib: &Path, offset: &str) -> Vec<(String, String)> {
    vec![
        ("LD_PRELOAD".into(), lib.display().to_string()),
        ("FAKETIME".into(), offset.into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ("FAKETIME_NO_CACHE".into(), "1".into()),
    ]
}

/// `p2pu status --json` on `node`, run under `env` (the node's own clock).
fn status_with(lab: &Lab, node: usize, env: &[(String, String)]) -> StatusReport {
    let config = lab.node(node).unwrap().config.clone();
    let mut args: Vec<String> = vec!["env".into()];
    args.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    args.extend([
        env!("CARGO_BIN_EXE_p2pu").into(),
        "status".into(),
        "--json".into(),
        "--config".into(),
        config.display().to_string(),
    ]);
    let out = lab.exec(node, &args).unwrap();
    p2pu::cmd::json::decode(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// The announcement `sig` (a `submit --sign-only` file, seeded) signed again to expire at
/// `expires` (unix seconds) with a seq of its own: what an operator's old or short-lived
/// announcement is.
fn expiring(lab: &Lab, sig: &Path, expires: u64, seq: u64) -> String {
    use p2pu::formats::announcement::{Announcement, Binding, Draft};
    let signed = Announcement::decode(std::fs::read_to_string(sig).unwrap().trim()).unwrap();
    let key = p2pu::keys::read_secret(&lab.node(1).unwrap().site.agent.signing_key).unwrap();
    let draft = Draft {
        seq,
        name: signed.name().to_string(),
        kind: signed.kind(),
        info_hash: *signed.info_hash(),
        len: signed.payload_len(),
        sha256: *signed.sha256(),
    };
    let binding = Binding {
        expires,
        fleet: signed.binding().unwrap().fleet,
    };
    Announcement::sign_v2(draft, binding, &key)
        .unwrap()
        .to_wire()
}

fn rejection(report: &StatusReport, name: &str) -> Option<String> {
    report
        .rejected
        .iter()
        .find(|r| r.name.as_deref() == Some(name))
        .map(|r| r.reason.clone())
}

/// Node 2's clock is 10 minutes ahead and node 3's 10 minutes behind (their agents and their
/// commands run under libfaketime). Both take a valid update and the heartbeat; an
/// announcement that expired an hour ago is refused everywhere; one that expires in 5 minutes
/// is taken by nodes 1 and 3 and refused by node 2 alone, whose reason says its clock is 600 s
/// ahead and that by the fleet's the announcement is still valid. `status` on each skewed node
/// says how far its clock is off the fleet's.
#[test]
fn nodes_ten_minutes_off_take_valid_updates_refuse_expired_ones_and_say_how_far_off() {
    let Some(lib) = libfaketime() else {
        support::prereq::have(false, "libfaketime (apt-get install faketime)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut options = LabOptions::new(3, dir.path().join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    options.start_agent = true;
    options.site_overrides =
        Some("[agent]\ncatch_up_secs = 3600\nheartbeat_window_secs = 3600\n".into());
    let mut lab = TestLab(Lab::start(options).expect("lab starts"));
    let clocks = [
        (1, Vec::new()),
        (2, skewed(&lib, "+600s")),
        (3, skewed(&lib, "-600s")),
    ];
    for (node, env) in &clocks[1..] {
        lab.stop_agent(*node).unwrap();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        lab.start_agent_with_env(*node, &env).unwrap();
    }

    let seq = submit(&lab, &manifest(dir.path(), "a.pp", "valid"), &[]);
    wait_applied(&lab, &[1, 2, 3], "a.pp", seq);
    ok(lab.p2pu(1, &["heartbeat"]).unwrap());
    // A refusal says how far off the clock is only once a catch-up round measured it: the
    // skewed nodes have their measure before the expired announcements go out (CI once sent
    // them first, and node 2's refusal was recorded without the note).
    let measured = Instant::now() + WITHIN;
    for (node, env) in &clocks[1..] {
        while status_with(&lab, *node, env).clock.is_none() {
            assert!(Instant::now() < measured, "node {node}: no clock measured");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    // Signed and seeded once; sent again with other expiries and seqs.
    let b = manifest(dir.path(), "b.pp", "short-lived");
    let sig = dir.path().join("b.sig");
    ok(lab
        .p2pu(
            1,
            &[
                "submit",
                b.to_str().unwrap(),
                "--sign-only",
                sig.to_str().unwrap(),
            ],
        )
        .unwrap());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = expiring(&lab, &sig, now - 3600, now * 1000 - 1000);
    let short = expiring(&lab, &sig, now + 300, now * 1000);
    for wire in [&expired, &short, &expired, &short] {
        lab.serf_event(1, "p2pu-update", wire.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }
    wait_applied(&lab, &[1, 3], "b.pp", now * 1000);

    let deadline = Instant::now() + WITHIN;
    for (node, env) in &clocks {
        let report = loop {
            let report = status_with(&lab, *node, env);
            let heard = report
                .heartbeat
                .as_ref()
                .is_some_and(|h| h.state != "never");
            let refused = rejection(&report, "b.pp").is_some();
            if (heard && refused && report.clock.is_some()) || Instant::now() > deadline {
                break report;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        let heartbeat = report.heartbeat.as_ref().unwrap();
        assert_eq!(heartbeat.state, "fresh", "node {node}: {report:#?}");
        let reasons: Vec<&str> = report
            .rejected
            .iter()
            .filter(|r| r.name.as_deref() == Some("b.pp"))
            .map(|r| r.reason.as_str())
            .collect();
        assert!(
            reasons.iter().all(|r| r.starts_with("expired: ")),
            "node {node}: {reasons:?}"
        );
        let clock = report
            .clock
            .unwrap_or_else(|| panic!("node {node}: no clock measured"));
        let ahead = clock.ahead_secs();
        let expect = match node {
            2 => 600,
            3 => -600,
            _ => 0,
        };
        assert!(
            (ahead - expect).abs() <= 5,
            "node {node}: {}",
            clock.describe()
        );
        let by_seq = |seq: u64| {
            report
                .rejected
                .iter()
                .find(|r| r.seq == Some(seq))
                .map(|r| r.reason.clone())
        };
        let old = by_seq(now * 1000 - 1000)
            .unwrap_or_else(|| panic!("node {node} took the expired one: {report:#?}"));
        match node {
            2 => assert!(
                old.contains("s ahead of the fleet's") && old.contains("ago too"),
                "{old}"
            ),
            3 => assert!(
                old.contains("s behind the fleet's") && old.contains("ago too"),
                "{old}"
            ),
            _ => assert!(!old.contains("clock"), "{old}"),
        }
        let short_reason = by_seq(now * 1000);
        match node {
            2 => {
                let why = short_reason.expect("node 2 took what had expired by its clock");
                assert!(
                    why.contains("s ahead of the fleet's") && why.contains("fix this node's clock"),
                    "{why}"
                );
            }
            _ => assert_eq!(short_reason, None, "node {node}"),
        }
    }
    let text = lab.p2pu(2, &["status"]).unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("clock: this node's clock is"), "{text}");
}

/// A small tmpfs mounted over `dir` (keeping its owner and mode) and filled by a root file,
/// unmounted on drop, a failed assertion included.
struct FullDisk {
    dir: PathBuf,
    filler: PathBuf,
}

impl FullDisk {
    fn mount(dir: &Path, size: &str) -> FullDisk {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(dir).unwrap();
        let options = format!(
            "size={size},mode={:o},uid={},gid={}",
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid()
        );
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "p2pu-chaos-full"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount: {out:?}");
        let disk = FullDisk {
            dir: dir.to_path_buf(),
            filler: dir.join(".filler"),
        };
        // Fill it to the last block: writing stops at ENOSPC.
        use std::io::Write;
        let mut file = std::fs::File::create(&disk.filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        while file.write_all(&block[..512]).is_ok() {}
        disk
    }

    /// Frees the space (the file goes; the mount stays).
    fn free(&self) {
        std::fs::remove_file(&self.filler).unwrap();
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.filler);
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

/// Node 2's download dir (where Transmission and the agent's own fetch write the payload) is
/// a full 1 MiB tmpfs when a 300 KiB update goes out. Node 2 records why (out of space, retried
/// until space is freed, not counted as an attempt), its state stays readable, nothing is
/// applied; once the space is freed it applies the update by itself, once. Retries are set to
/// 2 at 1 s: counted, they would be spent before the space came back.
#[test]
fn a_node_out_of_space_says_why_applies_nothing_and_resumes_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = LabOptions::new(2, dir.path().join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    options.start_agent = true;
    options.site_overrides = Some(
        "[agent]\ncatch_up_secs = 3600\nretries = 2\nretry_backoff_secs = 1\nretry_backoff_max_secs = 2\n"
            .into(),
    );
    let lab = TestLab(Lab::start(options).expect("lab starts"));
    let download = lab.node(2).unwrap().site.transmission.download_dir.clone();
    let disk = FullDisk::mount(&download, "1m");

    let path = dir.path().join("big.pp");
    let mut text = String::from("file { \"${settings::vardir}/big.pp.out\": content => \"big\\n\" }\nexec { 'count big.pp': command => \"/bin/sh -c 'echo big >> ${settings::vardir}/big.pp.count'\" }\n");
    for _ in 0..3000 {
        text.push_str(&format!("# {}\n", "x".repeat(100)));
    }
    std::fs::write(&path, text).unwrap();
    let seq = submit(&lab, &path, &[]);
    wait_applied(&lab, &[1], "big.pp", seq);

    let deadline = Instant::now() + WITHIN;
    let stuck = loop {
        let record = record(&lab, 2, "big.pp", seq);
        let reason = record
            .as_ref()
            .and_then(|r| r.reason.clone())
            .unwrap_or_default();
        if reason.contains("out of space") || Instant::now() > deadline {
            break record.unwrap_or_else(|| panic!("node 2 never heard of it"));
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(stuck.status, Status::Retrying, "{stuck:#?}");
    assert!(
        stuck
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("No space left on device"),
        "{stuck:#?}"
    );
    assert!(
        runs(&lab, 2, "big.pp").is_empty(),
        "node 2 applied with a full disk"
    );
    // Let the retries that would have been counted pass.
    std::thread::sleep(Duration::from_secs(5));
    assert_ne!(status(&lab, 2, "big.pp", seq), Some(Status::Failed));

    disk.free();
    wait_applied(&lab, &[2], "big.pp", seq);
    assert_eq!(runs(&lab, 2, "big.pp"), ["big"]);
    let state = lab
        .node(2)
        .unwrap()
        .site
        .agent
        .state_dir
        .join("names/big.pp.json");
    let text = std::fs::read_to_string(&state).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap();
    drop(disk);
}

/// Every JSON file of `node`'s state (records, highest seqs, rejections, clock) parses: none
/// was left half-written.
fn state_files_whole(lab: &Lab, node: usize) {
    let state = lab.node(node).unwrap().site.agent.state_dir.clone();
    let mut dirs = vec![state];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() && !path.ends_with("verified") && !path.ends_with("serf") {
                dirs.push(path);
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "json") {
                let text = std::fs::read_to_string(&path).unwrap();
                if let Err(e) = serde_json::from_str::<serde_json::Value>(&text) {
                    panic!("node {node}: {} is torn ({e}): {text:?}", path.display());
                }
            }
        }
    }
}

/// Power cuts: nodes 2 and 3 lose their agent, Transmission, Serf or all three to SIGKILL
/// (with their children: Puppet, handlers, the seed server) at random moments while `p.pp`
/// goes out anew every fourth cut, and start again: 30 cuts (about 55 s here; the 50
/// would pass 90 s, too long beside the rest of the suite on CI's 2 cores: run them by hand
/// with `P2PU_CHAOS_CUTS=50`). After every cut each state file is whole; in the end every node
/// applied the newest. A version a node had recorded applied never runs there again, and no
/// version runs after a newer one. (One that a cut interrupted mid-apply runs again on the
/// next start, as documented: Puppet applies are meant to be idempotent.)
#[test]
fn power_cuts_at_random_moments_never_apply_a_record_twice_nor_tear_a_state_file() {
    use rand::Rng;
    let cuts: usize = std::env::var("P2PU_CHAOS_CUTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(30);
    const WHAT: [&str; 4] = ["agent", "transmission", "serf", "node"];
    let dir = tempfile::tempdir().unwrap();
    let mut lab = hourly_lab(dir.path(), 3);
    let mut rng = rand::thread_rng();
    let mut versions: Vec<(String, u64)> = Vec::new();
    // Per node: the runs of each version it had recorded applied before a cut.
    let mut settled: Vec<std::collections::BTreeMap<String, usize>> = vec![Default::default(); 4];
    for cut in 0..cuts {
        if cut % 4 == 0 {
            let version = format!("v{}", versions.len() + 1);
            let seq = submit(&lab, &manifest(dir.path(), "p.pp", &version), &["--once"]);
            versions.push((version, seq));
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..1500)));
        let node = rng.gen_range(2..=3);
        let what = WHAT[rng.gen_range(0..WHAT.len())];
        let ran = runs(&lab, node, "p.pp");
        for record in records(&lab, node) {
            if record.name == "p.pp" && record.status == Status::Applied {
                if let Some((version, _)) = versions.iter().find(|(_, s)| *s == record.seq) {
                    let count = ran.iter().filter(|r| *r == version).count();
                    settled[node].insert(version.clone(), count);
                }
            }
        }
        lab.kill(node, what).unwrap();
        state_files_whole(&lab, node);
        match what {
            "agent" => lab.start_agent(node).unwrap(),
            "transmission" => lab.restart_transmission(node).unwrap(),
            "serf" => lab.start_serf(node).unwrap(),
            _ => lab.start_node(node).unwrap(),
        }
    }
    // The last one with re-sends: a node whose copy of a `--once` event was lost and that
    // was not cut afterwards gets it so.
    let seq = submit(&lab, &manifest(dir.path(), "p.pp", "last"), &[]);
    versions.push(("last".into(), seq));
    wait_applied(&lab, &[1, 2, 3], "p.pp", seq);
    let order: Vec<&str> = versions.iter().map(|(v, _)| v.as_str()).collect();
    for (node, settled) in settled.iter().enumerate().skip(1) {
        state_files_whole(&lab, node);
        let ran = runs(&lab, node, "p.pp");
        let positions: Vec<usize> = ran
            .iter()
            .map(|r| order.iter().position(|v| v == r).unwrap())
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] <= w[1]),
            "node {node} ran an older version after a newer: {ran:?}"
        );
        for (version, count) in settled {
            let now = ran.iter().filter(|r| *r == version).count();
            assert_eq!(
                now, *count,
                "node {node} ran {version} again after recording it applied: {ran:?}"
            );
        }
        assert_eq!(ran.last().map(String::as_str), Some("last"), "node {node}");
    }
}
