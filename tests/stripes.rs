//! `transfer.mode = "stripes"` on real agents in the lab (issue 24, stage 3 as far as it is
//! built, docs/DESIGN.md 5.1): `submit` binds the block tree and the roster of the alive
//! members into the info dict and writes the documents and the held-block mark beside the
//! metainfo; the origin's seed server serves a member the documents and a stripe's blocks,
//! each of which checks against the signed leaves; and every node fetches by stripes and
//! applies once, past a lying and a dead member, naming the liar. Every assertion is on what
//! happened, none on timings.

mod support;

use p2pu::agent::runtime::state::{StateStore, Status};
use p2pu::agent::transfer::http_get::{Client, GetError};
use p2pu::agent::transfer::stripes_fetch::documents;
use p2pu::formats::blocks::Spec;
use p2pu::lab::{Lab, LabOptions};
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use support::testlab::TestLab;

/// A scratch dir under /tmp the nodes' unprivileged users can traverse.
fn lab_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("p2pu-stripes-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    dir
}

/// `nodes` agents in stripes mode (`[transfer]` keys beyond the mode in `transfer`), every
/// member seeing every other.
fn stripes_lab(dir: &tempfile::TempDir, nodes: usize, transfer: &str) -> TestLab {
    let mut options = LabOptions::new(nodes, dir.path().join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    options.start_agent = true;
    options.site_overrides = Some(format!("[transfer]\nmode = \"stripes\"\n{transfer}"));
    let mut lab =
        TestLab(Lab::start(options).unwrap_or_else(|e| panic!("{}", p2pu::error::chain(&e))));
    lab.wait_members()
        .unwrap_or_else(|e| panic!("{}", p2pu::error::chain(&e)));
    lab
}

#[test]
fn a_striped_submit_binds_blocks_and_roster_and_the_origin_serves_checked_stripes() {
    if !support::prereq::root("the lab runs agents in a network namespace") {
        return;
    }
    let dir = lab_dir();
    let lab = stripes_lab(&dir, 4, "");

    // Above DIRECT_MAX (4 MiB): the payload a striped transfer is for.
    let data: Vec<u8> = (0..(5 << 20) + 777u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let path = dir.path().join("blob.bin");
    std::fs::write(&path, &data).unwrap();
    let out = lab.p2pu(1, &["submit", path.to_str().unwrap()]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seq: u64 = text
        .split_whitespace()
        .skip_while(|w| *w != "seq")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no seq in {text:?}"));

    // Every node applies it, once.
    let mut info_hash = String::new();
    for node in 1..=4 {
        let state = lab.node(node).unwrap().site.agent.state_dir.clone();
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let records = StateStore::open_read_only(&state)
                .records("blob.bin")
                .unwrap_or_default();
            let mine: Vec<_> = records.iter().filter(|r| r.seq == seq).collect();
            if let [record] = mine.as_slice() {
                match record.status {
                    Status::Applied => {
                        info_hash = record.info_hash.clone();
                        break;
                    }
                    Status::Failed => panic!("node {node} failed: {:?}", record.reason),
                    _ => {}
                }
            }
            assert!(mine.len() <= 1, "node {node} holds {} records", mine.len());
            assert!(
                Instant::now() < deadline,
                "node {node} did not apply seq {seq}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // What submit wrote beside the metainfo, checked as a member checks it.
    let origin = lab.node(1).unwrap();
    let root = &origin.site.transmission.download_dir;
    let metainfo = std::fs::read(root.join(format!("{info_hash}.torrent"))).unwrap();
    let spec = Spec::from_metainfo(&metainfo)
        .unwrap()
        .expect("the info dict carries the p2pu key");
    assert_eq!(spec.layout.len(), data.len() as u64);
    let seed = SocketAddr::new(IpAddr::V4(origin.addr), origin.site.agent.seed_port);
    let member = lab.node(2).unwrap().addr;
    let names: Vec<String> = (1..=4).map(|n| lab.node(n).unwrap().name.clone()).collect();
    let origin_name = origin.name.clone();
    let ih = info_hash.clone();
    let (docs, stripe_status, stripe) = lab
        .in_netns(move || {
            let client = Client {
                bind: Some(IpAddr::V4(member)),
                connect_timeout: Duration::from_secs(3),
                read_timeout: Duration::from_secs(20),
            };
            let docs = documents(&client, &ih, &spec, &[(origin_name, seed)]);
            // Past the roster's `d`, so past the plan's stripes too.
            let d = docs.as_ref().map_or(8, |d| d.roster.stripes);
            // A stripe the payload does not have is refused.
            let refused = match client.get(seed, &format!("/{ih}/blob.bin?stripe={d}&from={d}"), 0)
            {
                Err(GetError::Status { status, .. }) => status,
                other => other.map(|r| r.status).unwrap_or(0),
            };
            let mut stripe = Vec::new();
            let mut response = client
                .get(seed, &format!("/{ih}/blob.bin?stripe=1&from=1"), 0)
                .unwrap();
            response.body.read_to_end(&mut stripe).unwrap();
            (docs, refused, (spec, stripe))
        })
        .unwrap();
    let docs = docs.expect("the origin serves a member the leaves and the roster");
    assert!(docs.named.is_empty());
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        docs.roster.members, sorted,
        "the roster is the alive members"
    );
    assert_eq!(docs.roster.origin, names[0]);
    assert_eq!(stripe_status, 400);
    // Stripe 1 is blocks 1, 1 + d, ...: each checks against its signed leaf.
    let (spec, stripe) = stripe;
    // The plan's stripes: fewer than the roster's `d` where fewer members forward.
    let plan = p2pu::agent::transfer::topology::Plan::from_roster(
        &hex::decode(&info_hash).unwrap(),
        &docs.roster,
    )
    .unwrap();
    let d = plan.stripes() as u32;
    let mut at = 0usize;
    for index in (1..spec.layout.count()).step_by(d as usize) {
        let len = spec.layout.block_len(index).unwrap();
        docs.leaves
            .check(index, &stripe[at..at + len])
            .unwrap_or_else(|e| panic!("block {index}: {e}"));
        at += len;
    }
    assert_eq!(at, stripe.len());
}

/// A member that lies: node `liar`'s seed port answers every request by asking the origin's
/// seed server (from the liar's own address, a member's) and passing the answer on with its
/// first body byte flipped, as a compromised member or a rewritten download dir would.
fn start_liar(lab: &Lab, liar: usize, origin: SocketAddr) {
    use std::io::{BufRead, BufReader, Write};
    let addr = lab.node(liar).unwrap().addr;
    let port = lab.node(liar).unwrap().site.agent.seed_port;
    lab.in_netns(move || {
        let listener = std::net::TcpListener::bind((addr, port)).unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(&stream);
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() {
                        return;
                    }
                    let Some(path) = line.split_whitespace().nth(1).map(str::to_string) else {
                        return;
                    };
                    let client = Client {
                        bind: Some(IpAddr::V4(addr)),
                        connect_timeout: Duration::from_secs(3),
                        read_timeout: Duration::from_secs(20),
                    };
                    let mut out = &stream;
                    let Ok(mut response) = client.get(origin, &path, 0) else {
                        let _ = out.write_all(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n");
                        return;
                    };
                    let mut body = Vec::new();
                    if response.body.read_to_end(&mut body).is_err() {
                        return;
                    }
                    if let Some(first) = body.first_mut() {
                        *first ^= 0x01;
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = out.write_all(head.as_bytes());
                    let _ = out.write_all(&body);
                });
            }
        });
    })
    .unwrap();
}

/// Stripes mode end to end on six real agents: node 5 lies (every answer's first byte
/// flipped) and node 6 is dead (its agent stopped; Serf still lists it, so the roster holds
/// it). Every live node fetches by stripes (its `.have` mark ends with every block held),
/// applies exactly once, and names the liar in its record, which `status` shows.
#[test]
fn stripes_deliver_to_every_node_past_a_liar_and_a_dead_member() {
    if !support::prereq::root("the lab runs agents in a network namespace") {
        return;
    }
    let dir = lab_dir();
    let mut lab = stripes_lab(&dir, 6, "");
    lab.stop_agent(5).unwrap();
    lab.stop_agent(6).unwrap();
    let origin = lab.node(1).unwrap();
    let origin_seed = SocketAddr::new(IpAddr::V4(origin.addr), origin.site.agent.seed_port);
    start_liar(&lab, 5, origin_seed);
    let liar = lab.node(5).unwrap().name.clone();

    let data: Vec<u8> = (0..(6 << 20) + 333u32)
        .map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8)
        .collect();
    let path = dir.path().join("blob.bin");
    std::fs::write(&path, &data).unwrap();
    let out = lab.p2pu(1, &["submit", path.to_str().unwrap()]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seq: u64 = text
        .split_whitespace()
        .skip_while(|w| *w != "seq")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no seq in {text:?}"));

    for node in 1..=4 {
        let info = lab.node(node).unwrap();
        let state = info.site.agent.state_dir.clone();
        let deadline = Instant::now() + Duration::from_secs(300);
        let record = loop {
            let records = StateStore::open_read_only(&state)
                .records("blob.bin")
                .unwrap_or_default();
            let mine: Vec<_> = records.into_iter().filter(|r| r.seq == seq).collect();
            assert!(mine.len() <= 1, "node {node} holds {} records", mine.len());
            if let Some(record) = mine.into_iter().next() {
                match record.status {
                    Status::Applied => break record,
                    Status::Failed => panic!("node {node} failed: {:?}", record.reason),
                    _ => {}
                }
            }
            let log = std::fs::read_to_string(info.log("agent")).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "node {node} did not apply seq {seq}; its log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        if node == 1 {
            continue;
        }
        let log = std::fs::read_to_string(info.log("agent")).unwrap_or_default();
        assert!(
            log.contains("fetched by stripes"),
            "node {node} did not fetch by stripes; its log:\n{log}"
        );
        let root = &info.site.transmission.download_dir;
        let mark = std::fs::read(root.join(format!("{}.have", record.info_hash))).unwrap();
        let have = p2pu::formats::have::Have::decode(&mark).unwrap();
        assert!((0..have.layout().count()).all(|i| have.holds(i)));
        assert!(
            record.sources.iter().any(|s| s.addr == liar
                && s.left
                    .as_deref()
                    .is_some_and(|l| l.contains("lied") || l.contains("wrong"))),
            "node {node} did not name the liar {liar}: {:?}",
            record.sources
        );
        // `status` names it as a lying member.
        let out = lab.p2pu(node, &["status"]).unwrap();
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(
            shown.contains(&format!("! {liar} sent")),
            "node {node}'s status does not name {liar}:\n{shown}"
        );
        assert!(
            record
                .sources
                .iter()
                .all(|s| s.addr == liar || !s.left.as_deref().unwrap_or("").contains("lied")),
            "node {node} named an honest member a liar: {:?}",
            record.sources
        );
    }
}

/// Issue 24: a slow member is never a parent. Five agents in stripes mode with the site's
/// `stripes = 2` and `fan_out = 2` (so each of four full-rate members would forward in one
/// tree, and the slow one would too, were it not slow); node 5's link shaped to 8 Mbit/s
/// each way. A first payload of 3 MiB (plain HTTP from the origin) is every node's first
/// measured fetch, and each agent advertises what it measured (`p2pu-rate`, set through
/// Serf), which the origin's Serf shows, and again after node 5's agent and Serf restart (the
/// figure is kept in its state dir). Then a striped payload: the roster names node 5
/// slow; by every node's per-stripe record no node asked node 5 for any stripe, every block
/// came from a member that was not it, every node applied once, and node 5 finished too.
/// `status` and `fleet status --json` show the stripes' sources.
#[test]
fn a_slow_member_advertises_its_rate_and_is_never_a_parent() {
    if !support::prereq::root("the lab runs agents in a network namespace") {
        return;
    }
    use support::testlab::{ok, record, submit, wait};
    let dir = lab_dir();
    let mut lab = stripes_lab(&dir, 5, "stripes = 2\nfan_out = 2\n");
    lab.shape(&[10_000, 10_000, 10_000, 10_000, 8])
        .unwrap_or_else(|e| panic!("{}", p2pu::error::chain(&e)));
    let names: Vec<String> = (1..=5).map(|n| lab.node(n).unwrap().name.clone()).collect();
    let slow = names[4].clone();

    // The first fetch every node measures: 3 MiB, below DIRECT_MAX.
    let first = dir.path().join("first.bin");
    std::fs::write(&first, vec![7u8; 3 << 20]).unwrap();
    let seq = submit(&lab, &first, &[]);
    for node in 1..=5 {
        wait(
            &format!("node {node} applying first.bin"),
            Duration::from_secs(120),
            || {
                record(&lab, node, "first.bin")
                    .is_some_and(|r| r.seq == seq && r.status == Status::Applied)
            },
        );
    }
    // Every fetching member's rate, as the origin's Serf shows it: node 5's under half the
    // others'.
    let rate_of = |members: &[p2pu::engines::Member], name: &str| {
        members
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| m.tags.get("p2pu-rate"))
            .and_then(|r| r.parse::<u64>().ok())
    };
    wait(
        "every fetching member's p2pu-rate at the origin",
        Duration::from_secs(60),
        || {
            let members = lab.members(1).unwrap_or_default();
            names[1..].iter().all(|n| rate_of(&members, n).is_some())
        },
    );
    let members = lab.members(1).unwrap();
    let rates: Vec<_> = names.iter().map(|n| (n, rate_of(&members, n))).collect();
    eprintln!("advertised rates (bytes/s) at the origin: {rates:?}");
    let slow_rate = rate_of(&members, &slow).unwrap();
    for name in &names[1..4] {
        let rate = rate_of(&members, name).unwrap();
        assert!(
            slow_rate * 2 < rate,
            "{slow} advertises {slow_rate}, {name} {rate}"
        );
    }
    // The figure survives a restart of node 5's agent and Serf (which forgets tags set at
    // run time): the agent reads it back from its state dir and sets the tag again.
    lab.stop_agent(5).unwrap();
    lab.stop_serf(5).unwrap();
    lab.start_serf(5).unwrap();
    let own = lab.members(5).unwrap();
    assert_eq!(
        rate_of(&own, &slow),
        None,
        "a restarted Serf forgot the tag: {own:?}"
    );
    lab.start_agent(5).unwrap();
    lab.wait_members()
        .unwrap_or_else(|e| panic!("{}", p2pu::error::chain(&e)));
    wait(
        "node 5's p2pu-rate again after its restart",
        Duration::from_secs(60),
        || rate_of(&lab.members(1).unwrap_or_default(), &slow) == Some(slow_rate),
    );

    let data: Vec<u8> = (0..(6 << 20) + 99u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    let path = dir.path().join("striped.bin");
    std::fs::write(&path, &data).unwrap();
    let seq = submit(&lab, &path, &[]);
    let mut info_hash = String::new();
    for node in 1..=5 {
        wait(
            &format!("node {node} applying striped.bin"),
            Duration::from_secs(300),
            || {
                let r = record(&lab, node, "striped.bin").filter(|r| r.seq == seq);
                assert!(
                    r.as_ref().is_none_or(|r| r.status != Status::Failed),
                    "node {node} failed: {r:?}"
                );
                r.is_some_and(|r| r.status == Status::Applied)
            },
        );
        let records = StateStore::open_read_only(&lab.node(node).unwrap().site.agent.state_dir)
            .records("striped.bin")
            .unwrap();
        assert_eq!(records.iter().filter(|r| r.seq == seq).count(), 1);
        info_hash = records[0].info_hash.clone();
    }
    let root = &lab.node(1).unwrap().site.transmission.download_dir;
    let roster = p2pu::formats::roster::Roster::decode(
        &std::fs::read(root.join(format!("{info_hash}.roster"))).unwrap(),
    )
    .unwrap();
    assert_eq!(
        roster.slow,
        [slow.as_str()],
        "the roster classes {slow} slow"
    );
    assert_eq!((roster.stripes, roster.fanout), (2, 2));
    let blocks =
        Spec::from_metainfo(&std::fs::read(root.join(format!("{info_hash}.torrent"))).unwrap())
            .unwrap()
            .unwrap()
            .layout
            .count();
    for node in 2..=5 {
        let r = record(&lab, node, "striped.bin").unwrap();
        assert!(
            !r.stripes.is_empty(),
            "node {node} did not fetch by stripes: {r:?}"
        );
        assert!(
            r.stripes.iter().all(|u| u.member != slow),
            "node {node} asked the slow member {slow}: {:?}",
            r.stripes
        );
        let kept: u32 = r.stripes.iter().map(|u| u.blocks).sum();
        assert_eq!(kept, blocks, "node {node}: {:?}", r.stripes);
        let shown = ok(lab.p2pu(node, &["status"]).unwrap());
        assert!(shown.contains("    stripe 0: "), "node {node}:\n{shown}");
    }
    let fleet = ok(lab.p2pu(1, &["fleet", "status", "--json"]).unwrap());
    let reports: Vec<p2pu::agent::runtime::status::MemberReport> =
        serde_json::from_str(&fleet).unwrap();
    let answered_stripes = reports
        .iter()
        .filter(|r| {
            r.updates
                .iter()
                .flatten()
                .any(|u| u.name == "striped.bin" && !u.stripes.is_empty())
        })
        .count();
    assert!(
        answered_stripes >= 1,
        "no member's answer carried its stripes: {fleet}"
    );
}
