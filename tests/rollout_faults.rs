//! The transfer in the conditions of a real fleet, against real agents in the lab (root,
//! network namespaces, links shaped with htb): a slow member does not cap the nodes after it, a
//! hung one is abandoned, a crashed one is replaced by the member before it from the piece
//! reached, a lying one is caught at its first bad piece and named, the origin is not stampeded
//! when much of the fleet fails over, and an agent restarted mid-transfer resumes from what it
//! verified. Every assertion is on what happened (records, logs), none on timings.

#[path = "../benches/support/liar.rs"]
mod liar;
mod support;

use p2pu::agent::runtime::state::{Record, SourceUse, StateStore, Status};
use p2pu::lab::{Lab, LabOptions};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A lab with agents and its base dir; the lab (first field) is dropped before the dir, and the
/// turn last.
struct Fleet {
    lab: Lab,
    dir: tempfile::TempDir,
    _turn: std::sync::MutexGuard<'static, ()>,
}

/// One shaped lab at a time: these tests watch rates, which several labs on a small machine's
/// cores would blur.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `nodes` nodes with agents, node `i`'s link at `mbit[i - 1]` Mbit/s each way.
fn fleet(mbit: &[u32]) -> Option<Fleet> {
    if !support::prereq::root("the rollout fault tests shape links in a network namespace") {
        return None;
    }
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let dir = support::testlab::lab_dir("p2pu-faults-");
    let mut options = LabOptions::new(
        mbit.len(),
        dir.path().join("lab"),
        env!("CARGO_BIN_EXE_p2pu"),
    );
    options.start_agent = true;
    let lab = Lab::start(options).unwrap_or_else(|e| panic!("{}", p2pu::error::chain(&e)));
    lab.shape(mbit)
        .unwrap_or_else(|e| panic!("{}", p2pu::error::chain(&e)));
    Some(Fleet {
        lab,
        dir,
        _turn: turn,
    })
}

impl Fleet {
    /// A random `mib` MiB file (kind `file`) submitted from node 1; its name and seq.
    fn submit(&self, mib: usize) -> (String, u64) {
        use rand::RngCore;
        let name = "blob.bin".to_string();
        let path = self.dir.path().join(&name);
        let mut data = vec![0u8; mib << 20];
        rand::thread_rng().fill_bytes(&mut data);
        std::fs::write(&path, &data).unwrap();
        let out = self
            .lab
            .p2pu(1, &["submit", path.to_str().unwrap()])
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let seq = text
            .split_whitespace()
            .skip_while(|w| *w != "seq")
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no seq in {text:?}"));
        (name, seq)
    }

    fn state_dir(&self, node: usize) -> PathBuf {
        self.lab.node(node).unwrap().site.agent.state_dir.clone()
    }

    fn record(&self, node: usize, name: &str, seq: u64) -> Option<Record> {
        StateStore::open_read_only(&self.state_dir(node))
            .records(name)
            .ok()?
            .into_iter()
            .find(|r| r.seq == seq)
    }

    /// Waits (generously) until node `node` applied the update; its record.
    fn applied(&self, node: usize, name: &str, seq: u64) -> Record {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if let Some(record) = self.record(node, name, seq) {
                match record.status {
                    Status::Applied => {
                        assert!(
                            !record.sources.is_empty() || node == 1,
                            "node {node} did not get the payload over HTTP; its log:\n{}",
                            self.log_tail(node)
                        );
                        return record;
                    }
                    Status::Failed => panic!("node {node} failed: {:?}", record.reason),
                    _ => {}
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {node} did not apply {name} seq {seq}; its log:\n{}",
                self.log_tail(node)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Bytes of `name` node `node` holds verified (the download dir holds checked pieces only).
    fn received(&self, node: usize, name: &str) -> u64 {
        let root = &self.lab.node(node).unwrap().site.transmission.download_dir;
        std::fs::read_dir(root)
            .map(|dirs| {
                dirs.flatten()
                    .filter_map(|d| std::fs::metadata(d.path().join(name)).ok())
                    .map(|m| m.len())
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    }

    /// Waits until node `node` holds at least `bytes` of the payload.
    fn wait_received(&self, node: usize, name: &str, bytes: u64) {
        let deadline = Instant::now() + Duration::from_secs(300);
        while self.received(node, name) < bytes {
            assert!(
                Instant::now() < deadline,
                "node {node} never got {bytes} bytes"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn seed_addr(&self, node: usize) -> String {
        let info = self.lab.node(node).unwrap();
        format!("{}:{}", info.addr, info.site.agent.seed_port)
    }

    fn log_tail(&self, node: usize) -> String {
        let log =
            std::fs::read_to_string(self.lab.node(node).unwrap().log("agent")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn log(&self, node: usize) -> String {
        std::fs::read_to_string(self.lab.node(node).unwrap().log("agent")).unwrap_or_default()
    }
}

fn left(source: &SourceUse) -> &str {
    source.left.as_deref().unwrap_or("")
}

/// The chain is 1 → 2 → 3 → 4 (nodes by address, from the origin). Node 2's link is a tenth
/// of the others': node 3 leaves it for node 1 and finishes long before node 2, and node 4
/// follows node 3, not the slow node.
#[test]
fn a_throttled_source_does_not_cap_the_nodes_after_it() {
    let Some(fleet) = fleet(&[40, 4, 40, 40]) else {
        return;
    };
    let (name, seq) = fleet.submit(12);
    let third = fleet.applied(3, &name, seq);
    let fourth = fleet.applied(4, &name, seq);
    // Node 2 was still receiving when the nodes after it had it all.
    let second = fleet.record(2, &name, seq).unwrap();
    assert!(
        second.status != Status::Applied,
        "the slow node had finished first: {second:?}\nthird: {third:?}\n{}",
        fleet.log_tail(3)
    );
    assert_eq!(
        third.sources[0].addr,
        fleet.seed_addr(2),
        "{:?}",
        third.sources
    );
    assert!(
        left(&third.sources[0]).starts_with("slow:"),
        "{:?}",
        third.sources
    );
    let rest: u64 = third.sources[1..].iter().map(|s| s.bytes).sum();
    assert!(rest > third.sources[0].bytes, "{:?}", third.sources);
    assert!(third.sources[1..]
        .iter()
        .all(|s| s.addr != fleet.seed_addr(2)));
    assert!(
        fourth
            .sources
            .iter()
            .all(|s| s.addr != fleet.seed_addr(2) || s.bytes == 0),
        "{:?}",
        fourth.sources
    );
    fleet.applied(2, &name, seq);
}

/// Node 2 hangs (its agent and seed server SIGSTOPped: alive to Serf, silent on HTTP) at a
/// quarter of the payload, and node 4 crashes (every process SIGKILLed) at half of it. Node 3
/// abandons node 2 for node 1; node 5 goes on from node 3, the member before the crashed one,
/// not from the origin; both resume from the piece they reached.
#[test]
fn a_hung_source_is_abandoned_and_a_crashed_one_replaced_from_where_it_stopped() {
    let Some(mut fleet) = fleet(&[20, 20, 20, 20, 20]) else {
        return;
    };
    let (name, seq) = fleet.submit(16);
    fleet.wait_received(2, &name, 4 << 20);
    fleet
        .lab
        .signal_agent(2, nix::sys::signal::Signal::SIGSTOP)
        .unwrap();
    fleet.wait_received(4, &name, 8 << 20);
    fleet.lab.crash_node(4).unwrap();
    let third = fleet.applied(3, &name, seq);
    let fifth = fleet.applied(5, &name, seq);
    fleet
        .lab
        .signal_agent(2, nix::sys::signal::Signal::SIGCONT)
        .unwrap();

    assert_eq!(
        third.sources[0].addr,
        fleet.seed_addr(2),
        "{:?}",
        third.sources
    );
    // Hung, or slow if the watcher compared rates before the silence was long enough.
    assert!(
        left(&third.sources[0]).starts_with("hung:")
            || left(&third.sources[0]).starts_with("slow:"),
        "{:?}",
        third.sources
    );
    assert_eq!(
        third.sources[1].addr,
        fleet.seed_addr(1),
        "{:?}",
        third.sources
    );
    assert!(third.sources[1].from > 0, "{:?}", third.sources);

    assert_eq!(
        fifth.sources[0].addr,
        fleet.seed_addr(4),
        "{:?}",
        fifth.sources
    );
    assert!(fifth.sources[0].left.is_some(), "{:?}", fifth.sources);
    let next = &fifth.sources[1];
    assert_eq!(next.addr, fleet.seed_addr(3), "{:?}", fifth.sources);
    assert_eq!(next.from, fifth.sources[0].bytes, "{:?}", fifth.sources);
    assert!(next.from > 0);
}

/// Node 2's seed server is replaced by a member that claims the payload and sends wrong bytes
/// at full speed. Node 3 refuses its first piece, names it (in `p2pu status` and in `fleet
/// status`) and gets the payload from node 1; every node applies the signed bytes only.
#[test]
fn a_liar_is_refused_named_and_nobody_applies_its_bytes() {
    let Some(mut fleet) = fleet(&[40, 40, 40, 40]) else {
        return;
    };
    fleet.lab.stop_agent(2).unwrap();
    let info = fleet.lab.node(2).unwrap().clone();
    let port = info.site.agent.seed_port;
    let listener = fleet
        .lab
        .in_netns(move || TcpListener::bind((info.addr, port)))
        .unwrap()
        .unwrap();
    let len = 12u64 << 20;
    let liar = liar::Liar::start(listener, len);
    let (name, seq) = fleet.submit(12);
    let signed = std::fs::read(fleet.dir.path().join(&name)).unwrap();
    for node in [3, 4] {
        let record = fleet.applied(node, &name, seq);
        let kept = verified_copy(&fleet.state_dir(node), &record);
        assert!(
            std::fs::read(&kept).unwrap() == signed,
            "node {node} kept other bytes"
        );
    }
    assert!(
        liar.served.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the liar was never asked"
    );
    let third = fleet.record(3, &name, seq).unwrap();
    assert_eq!(
        third.sources[0].addr,
        fleet.seed_addr(2),
        "{:?}",
        third.sources
    );
    assert_eq!(third.sources[0].bad_pieces, 1, "{:?}", third.sources);
    assert_eq!(third.sources[0].bytes, 0, "{:?}", third.sources);
    let status = fleet.lab.p2pu(3, &["status"]).unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains(&format!("! {} sent 1 bad piece(s)", fleet.seed_addr(2))),
        "{text}"
    );
    let fleet_status = fleet.lab.p2pu(1, &["fleet", "status"]).unwrap();
    let text = String::from_utf8_lossy(&fleet_status.stdout);
    assert!(
        text.contains(&format!("! {} sent", fleet.seed_addr(2))),
        "{text}"
    );
}

/// The kept (`file` kind) verified copy of a record.
fn verified_copy(state_dir: &Path, record: &Record) -> PathBuf {
    let dir = state_dir
        .join("verified")
        .join(format!("{}-{}", record.info_hash, record.seq));
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .next()
        .unwrap()
        .path()
}

/// Nodes 2, 4 and 6 of eight crash at a third of the payload: nodes 3, 5 and 7 fail over to
/// the members before the crashed ones, so the origin serves its own child and at most one
/// more, not half the fleet.
#[test]
fn the_origin_fan_out_stays_bounded_when_half_the_fleet_fails_over() {
    let Some(mut fleet) = fleet(&[20; 8]) else {
        return;
    };
    let (name, seq) = fleet.submit(12);
    for node in [2, 4, 6] {
        fleet.wait_received(node, &name, 4 << 20);
        fleet.lab.crash_node(node).unwrap();
    }
    let origin = fleet.seed_addr(1);
    let mut served_by_origin = Vec::new();
    for node in [3, 5, 7, 8] {
        let record = fleet.applied(node, &name, seq);
        if record
            .sources
            .iter()
            .any(|s| s.addr == origin && s.bytes > 0)
        {
            served_by_origin.push(node);
        }
        if node != 8 {
            assert!(
                record.sources.len() >= 2,
                "node {node}: {:?}",
                record.sources
            );
            assert!(
                record.sources[1].from > 0,
                "node {node}: {:?}",
                record.sources
            );
        }
    }
    assert!(
        served_by_origin.len() <= 1,
        "the origin served {served_by_origin:?}"
    );
}

/// An agent stopped mid-transfer and started again resumes from the pieces it had verified.
#[test]
fn an_agent_restarted_mid_transfer_resumes_from_what_it_verified() {
    let Some(mut fleet) = fleet(&[10, 10, 10]) else {
        return;
    };
    let (name, seq) = fleet.submit(12);
    fleet.wait_received(3, &name, 4 << 20);
    fleet.lab.stop_agent(3).unwrap();
    fleet.lab.start_agent(3).unwrap();
    let record = fleet.applied(3, &name, seq);
    let log = fleet.log(3);
    let resumed = log
        .lines()
        .find(|l| l.contains("resuming from the verified pieces"))
        .unwrap_or_else(|| panic!("no resume in the log:\n{}", fleet.log_tail(3)));
    let from: u64 = resumed
        .split("from=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{resumed}"));
    assert!(from >= 4 << 20, "{resumed}");
    assert_eq!(record.sources[0].from, from, "{:?}", record.sources);
}
