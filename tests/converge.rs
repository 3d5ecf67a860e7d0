//! Every node gets every update promptly, whatever happened to Serf (issue 25), on a lab of 3
//! nodes with real serf agents, transmission-daemons, `p2pu agent`s and puppet. Each lab sets
//! `agent.catch_up_secs` to an hour: the periodic catch-up never runs within a test, so an
//! update that arrives came by the way under test (a member-join making the agent ask at once,
//! `submit`'s re-sends, the agent's first round after its start).

mod support;

use p2pu::agent::runtime::state::{Record, Status};
use p2pu::agent::runtime::status::StatusReport;
use p2pu::cmd::sync::{SyncOutcome, SyncReport};
use p2pu::lab::{Lab, LabOptions};
use std::time::{Duration, Instant};
use support::testlab::{hourly_lab, manifest, ok, records, runs, spooled, submit, wait, TestLab};

const NODES: usize = 3;
/// How long a test waits for an outcome; far below `catch_up_secs`.
const WITHIN: Duration = Duration::from_secs(120);

fn applied(lab: &Lab, node: usize, name: &str, seq: u64) -> bool {
    records(lab, node)
        .iter()
        .any(|r| r.name == name && r.seq == seq && r.status == Status::Applied)
}

/// Waits until `name` seq `seq` is applied on each of `nodes`; shows their records if not.
fn wait_applied(lab: &Lab, nodes: &[usize], name: &str, seq: u64) {
    let deadline = Instant::now() + WITHIN;
    while !nodes.iter().all(|&n| applied(lab, n, name, seq)) {
        if Instant::now() > deadline {
            let all: Vec<_> = nodes.iter().map(|&n| (n, records(lab, n))).collect();
            panic!("{name} seq {seq} not applied on every one of {nodes:?}: {all:#?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn sync(lab: &Lab, node: usize) -> (Option<i32>, SyncReport) {
    let out = lab
        .p2pu(node, &["sync", "--json", "--timeout", "60"])
        .unwrap();
    let report = p2pu::cmd::json::decode(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "p2pu sync on node {node}: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

/// Node 3's Serf is down while an update goes out once (`--once`): it never hears the event.
/// When its Serf is back, Serf's member-join makes the agent ask the fleet at once, long before
/// `catch_up_secs`. Then `p2pu sync` on it and on another node finds nothing missing.
#[test]
fn an_update_sent_while_a_nodes_serf_was_down_arrives_when_serf_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = hourly_lab(dir.path(), NODES);
    lab.stop_serf(3).unwrap();
    let site = manifest(dir.path(), "site.pp", "one");
    // Serf alone: node 3's agent runs, and would take a push while its Serf is listed alive.
    let seq = submit(&lab, &site, &["--once", "--no-push"]);
    wait_applied(&lab, &[1, 2], "site.pp", seq);
    assert!(
        records(&lab, 3).is_empty(),
        "node 3 heard of it with its Serf down"
    );
    lab.start_serf(3).unwrap();
    wait_applied(&lab, &[3], "site.pp", seq);
    assert_eq!(runs(&lab, 3, "site.pp"), ["one"]);

    for node in [3, 2] {
        let (code, report) = sync(&lab, node);
        assert_eq!(code, Some(0), "node {node}: {report:?}");
        assert!(
            matches!(report.outcome, SyncOutcome::UpToDate | SyncOutcome::Applied),
            "node {node}: {report:?}"
        );
        assert_eq!(report.members_alive, NODES - 1, "node {node}: {report:?}");
        assert_eq!(report.found, 0, "node {node}: {report:?}");
    }
}

/// Node 3's Serf runs but hands no event on (its handler drops them, as a handler that
/// failed or a Serf that lost the event would): `submit --once` still reaches it, by the push
/// to its web seed server, at once, and its agent says so. With `--no-push` it came 8 s
/// later, by the agent's first catch-up round (`source="catchup"`: the assertion fails).
#[test]
fn a_node_whose_serf_lost_the_event_takes_the_pushed_announcement() {
    let dir = tempfile::tempdir().unwrap();
    let lab = hourly_lab(dir.path(), NODES);
    let handler = &lab.node(3).unwrap().site.serf.event_handler;
    std::fs::write(handler, "#!/bin/sh\nexec cat >/dev/null\n").unwrap();
    let site = manifest(dir.path(), "site.pp", "pushed");
    let seq = submit(&lab, &site, &["--once"]);
    wait_applied(&lab, &[1, 2, 3], "site.pp", seq);
    assert_eq!(runs(&lab, 3, "site.pp"), ["pushed"]);
    let log = std::fs::read_to_string(lab.node(3).unwrap().log("agent")).unwrap();
    let accepted = log
        .lines()
        .find(|l| l.contains(" accepted") && l.contains(&format!("seq={seq}")))
        .unwrap_or_else(|| panic!("no accepted line for seq {seq}:\n{log}"));
    assert!(accepted.contains("source=\"push\""), "{accepted}");
}

/// Every node's Serf restarts (what a Serf setting changed through Puppet does), and an update
/// goes out at once: Serf drops events older than a member's rejoin, and some members joined
/// only after the first send. `submit`'s re-sends and the agents' member-join rounds bring it
/// to every node anyway, with nothing recorded as rejected (the re-sent copies are known).
#[test]
fn an_update_sent_right_after_every_serf_restarted_reaches_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = hourly_lab(dir.path(), NODES);
    for node in 1..=NODES {
        lab.stop_serf(node).unwrap();
    }
    for node in 1..=NODES {
        lab.start_serf(node).unwrap();
    }
    let site = manifest(dir.path(), "site.pp", "after-restart");
    // Serf alone: what is under test is how its event gets through the restarts.
    let seq = submit(&lab, &site, &["--no-push"]);
    wait_applied(&lab, &[1, 2, 3], "site.pp", seq);
    for node in 1..=NODES {
        assert_eq!(
            runs(&lab, node, "site.pp"),
            ["after-restart"],
            "node {node}"
        );
        let out = lab.p2pu(node, &["status", "--json"]).unwrap();
        let report: StatusReport = p2pu::cmd::json::decode(&out.stdout).unwrap();
        assert!(
            report.rejected.is_empty(),
            "node {node} recorded re-sends as rejections: {:?}",
            report.rejected
        );
    }
}

/// The restarts a Serf setting changed through Puppet makes come one node at a time. Node 3's
/// Serf restarts and joins node 1, whose Lamport clock is high: node 3 now ignores events
/// older than that. Then node 1's Serf restarts (its clock starts over; it joins nobody, the
/// others find it) and the update goes out from node 1 at once, with a clock below node 3's
/// minimum. Node 3 drops that event, and would drop every later one until node 1's next state
/// exchange (30 s): each re-send first joins the alive members, which brings node 1's clock up
/// to the fleet's, and node 3 takes it.
///
/// Before Serf kept a snapshot this failed 4 of 4 runs, then 1 of 3: node 1's Serf knew
/// nobody when `submit` asked who lacked the update 2 s after sending it (its agent's rejoin
/// waited for its back-off), so no re-send went out, and the first send's Lamport time was below
/// what nodes 2 and 3 took since (`render::serf_snapshot_file`).
#[test]
fn an_update_sent_from_a_node_whose_serf_just_restarted_reaches_a_node_that_rejoined_before() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = hourly_lab(dir.path(), NODES);
    // A fleet's clock moves with every event; 40 stand for a few days of heartbeats.
    for _ in 0..40 {
        lab.serf_event(2, "p2pu-noise", b"x").unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));
    lab.stop_serf(3).unwrap();
    lab.start_serf(3).unwrap();
    lab.wait_members().unwrap();
    // Signed and seeded beforehand, so that it goes out within moments of the restart.
    let site = manifest(dir.path(), "site.pp", "staggered");
    let sig = dir.path().join("site.sig");
    let (site, sig) = (site.to_str().unwrap(), sig.to_str().unwrap());
    ok(lab.p2pu(1, &["submit", site, "--sign-only", sig]).unwrap());
    lab.stop_serf(1).unwrap();
    lab.start_serf(1).unwrap();
    let out = ok(lab
        .p2pu(
            1,
            &[
                "submit",
                "--quiet",
                "--json",
                "--no-push",
                "--with-sig",
                sig,
            ],
        )
        .unwrap());
    let seq = serde_json::from_str::<serde_json::Value>(&out).unwrap()["seq"]
        .as_u64()
        .unwrap();
    wait_applied(&lab, &[1, 2, 3], "site.pp", seq);
    for node in 1..=NODES {
        assert_eq!(runs(&lab, node, "site.pp"), ["staggered"], "node {node}");
    }
}

/// Node `node`'s Serf event clock, from `serf info`.
fn event_time(lab: &Lab, node: usize) -> u64 {
    let out = ok(lab.exec(node, &["serf", "info", "-format=json"]).unwrap());
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    info["serf"]["event_time"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no event_time in node {node}'s serf info: {info}"))
}

/// What makes the test above pass, seen directly: a restarted Serf takes up its event clock
/// where it left off (its snapshot), where it used to start over at 0, below the minimum every
/// member that joined it since holds, so that all it sent was dropped until a state exchange.
#[test]
fn a_restarted_serf_takes_up_its_event_clock_where_it_left_off() {
    let dir = tempfile::tempdir().unwrap();
    let options = LabOptions::new(2, dir.path().join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    let mut lab = TestLab(Lab::start(options).expect("lab starts"));
    for _ in 0..20 {
        lab.serf_event(2, "p2pu-noise", b"x").unwrap();
    }
    let deadline = Instant::now() + WITHIN;
    while event_time(&lab, 1) < 20 {
        assert!(Instant::now() < deadline, "node 1 never heard the events");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The snapshot is written every half second and on shutdown.
    std::thread::sleep(Duration::from_secs(1));
    let before = event_time(&lab, 1);
    lab.stop_serf(1).unwrap();
    lab.start_serf(1).unwrap();
    let after = event_time(&lab, 1);
    assert!(
        after >= before,
        "node 1's restarted Serf starts its event clock at {after}, below the {before} it had"
    );
}

/// Node 2's agent is down (its Serf up, so its spool gathers every event) and node 3 is down
/// altogether while c.pp goes out three times and d.pp once. Back, each applies only the newest
/// c.pp and d.pp, once each: node 2 skips the older ones its spool held (superseded), node 3
/// joins late and its first round brings only the newest of each name.
#[test]
fn nodes_down_through_several_updates_apply_only_the_newest_of_each_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = hourly_lab(dir.path(), NODES);
    lab.stop_agent(2).unwrap();
    lab.stop_node(3).unwrap();
    let mut seqs = Vec::new();
    for version in ["v1", "v2", "v3"] {
        let c = manifest(dir.path(), "c.pp", version);
        seqs.push(submit(&lab, &c, &["--once"]));
    }
    let d = manifest(dir.path(), "d.pp", "only");
    let d_seq = submit(&lab, &d, &["--once"]);
    let newest = seqs[2];
    wait_applied(&lab, &[1], "c.pp", newest);
    wait_applied(&lab, &[1], "d.pp", d_seq);
    // Node 1 applies by its own push, before gossip may have brought node 2's Serf the last
    // events: its agent starts once its spool holds all four (else it applies v2, then v3).
    let spool = lab.node(2).unwrap().site.agent.spool_dir.clone();
    wait(
        "node 2's spool to hold the four events",
        Duration::from_secs(60),
        || spooled(&spool).len() >= 4,
    );
    lab.start_agent(2).unwrap();
    lab.start_node(3).unwrap();
    wait_applied(&lab, &[2, 3], "c.pp", newest);
    wait_applied(&lab, &[2, 3], "d.pp", d_seq);
    for node in [2, 3] {
        assert_eq!(runs(&lab, node, "c.pp"), ["v3"], "node {node}");
        assert_eq!(runs(&lab, node, "d.pp"), ["only"], "node {node}");
        let older: Vec<Record> = records(&lab, node)
            .into_iter()
            .filter(|r| r.name == "c.pp" && r.seq < newest && r.status == Status::Applied)
            .collect();
        assert!(older.is_empty(), "node {node} applied {older:?}");
    }
}
