//! A compromised member in a lab of real agents (Serf, Transmission, Puppet in a network
//! namespace). Node 3 holds the Serf keyring but no signing key, and node 2's local
//! `debian-transmission` user (which owns the download dir) is hostile too. While the operator
//! on node 1 submits five signed updates of one name (u2 to u4 bound to rollout plans),
//! they run every attack we know of that a lab can stage:
//!
//! - announcements over Serf from node 3: a genuine applied announcement re-sent with the
//!   `plan` flag added, one with a broken signature, one with its signatures removed, one
//!   signed by a key nobody trusts with a much higher seq, and replays of genuine ones, also
//!   after a later update;
//! - the same forgeries and a replay pushed from node 3's address straight to the honest
//!   nodes' seed servers (`POST /push`), with sync, heartbeat and control texts (400) and a
//!   stranger's push (403); and node 3 advertising another seed port, where it listens, while
//!   node 1 submits u1: `submit` pushes to the site's seed port only;
//! - odd entries in node 2's spool (its NAT part): a FIFO, a directory, a link to
//!   `/etc/shadow`, a 2 GiB sparse file, all named like events;
//! - odd files in node 2's download dir, as `debian-transmission`: the rollout plan swapped
//!   for a FIFO as it arrives (u2); a 2 GiB sparse plan and the metainfo a link to
//!   `/dev/zero` (u3); a directory as the plan and a FIFO as the metainfo (u4), planted before
//!   the update is announced;
//! - twelve connections from node 3 dripping request heads at node 2's seed server while a
//!   member fetches from it, and a stranger on the LAN asking it for a payload;
//! - node 3 holding (and re-taking as they free) relay reader places for u3's payload at node
//!   1's seed server while the others fetch it;
//! - a lying catch-up answer: node 2's agent is down while u5 is sent (its spooled copy lost),
//!   and node 3 answers `p2pu-status` and `p2pu-latest` with u5 plan-flagged and one seq ahead
//!   as its newest applied update (its agent stopped, its state rewritten: Serf's handler
//!   answers from it).
//!
//! Every honest node (1 and 2) must apply exactly the five signed updates, in order, once
//! each; keep answering `p2pu status`; stop on SIGTERM; and keep no record in its state that
//! does not verify against its trusted keys. Node 2's seed server must serve a member and
//! refuse the stranger; node 2 must catch up with the genuine u5, not the forgery.
//!
//! Beside it, smaller labs stage a member's status query with hostile names
//! (`a_members_status_query_names_only_narrow_the_answer`) and a member advertising an
//! absurd rate to a striped submit (`a_members_absurd_rate_tag_makes_no_honest_member_slow`),
//! and a member pulling at the origin's stripe answers, which a complete node keeps in step,
//! while a striped update runs (`a_member_pulling_at_the_origins_stripes_holds_no_honest_node`).
//!
//! Not staged here: lying heartbeat answers (forged snapshots) and odd `<snap>.snapshot`
//! files; `tests/heartbeat.rs` stages the heartbeat's own lying member.

mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p2pu::agent::runtime::state::{Record, StateStore, Status};
use p2pu::agent::runtime::status::StatusReport;
use p2pu::formats::announcement::{Announcement, Draft};
use p2pu::formats::serf_names::UPDATE_EVENT;
use p2pu::keys::{TrustedKeys, TrustedKeysDir};
use p2pu::lab::{Lab, LabOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::testlab::{ok, spooled, wait, TestLab};

const NODES: usize = 3;
const HONEST: [usize; 2] = [1, 2];
const ATTACKER: usize = 3;
const NAME: &str = "hostile.pp";
const ROLLOUT: Duration = Duration::from_secs(120);

fn store(lab: &Lab, node: usize) -> StateStore {
    StateStore::open(&lab.node(node).unwrap().site.agent.state_dir).unwrap()
}

fn records(lab: &Lab, node: usize) -> Vec<Record> {
    let store = store(lab, node);
    store
        .names()
        .unwrap()
        .iter()
        .flat_map(|name| store.records(name).unwrap())
        .collect()
}

fn applied(lab: &Lab, node: usize, seq: u64) -> bool {
    store(lab, node)
        .records(NAME)
        .unwrap()
        .iter()
        .any(|r| r.seq == seq && r.status == Status::Applied)
}

/// The manifest of update `n`: it appends `u<n>` to a log in the node's Puppet vardir, so
/// the log says which updates ran, in which order, how often.
fn manifest(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join(format!("u{n}")).join(NAME);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let text = format!(
        "exec {{ 'update {n}': command => \"/bin/sh -c 'echo u{n} >> ${{settings::vardir}}/{NAME}.log'\" }}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn ran(lab: &Lab, node: usize) -> Vec<String> {
    let path = lab
        .node(node)
        .unwrap()
        .dir
        .join(format!("puppet/var/{NAME}.log"));
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Submits update `n` on node 1 and returns the announcement it broadcast.
fn submit(lab: &Lab, dir: &Path, n: usize, plan: &[&str]) -> Announcement {
    let path = manifest(dir, n);
    let mut args = vec!["submit", path.to_str().unwrap(), "--json"];
    args.extend_from_slice(plan);
    let report: serde_json::Value = serde_json::from_str(&ok(lab.p2pu(1, &args).unwrap())).unwrap();
    Announcement::decode(report["wire"].as_str().unwrap()).unwrap()
}

fn wire(prefix: &str, bencode: &[u8]) -> Vec<u8> {
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bencode)).into_bytes()
}

/// What a member without the signing key can make of a genuine announcement.
fn forgeries(genuine: &Announcement) -> Vec<(&'static str, Vec<u8>)> {
    let bencode = genuine.to_bencode();
    let at = |key: &[u8]| {
        bencode
            .windows(key.len())
            .position(|w| w == key)
            .unwrap_or_else(|| panic!("{:?} not in the bencode", String::from_utf8_lossy(key)))
    };
    // The plan flag added (keys are sorted: `plan` comes right before `seq`), or removed
    // from a plan-bound one.
    let mut flagged = bencode.clone();
    match bencode.windows(9).position(|w| w == b"4:plani1e") {
        Some(plan) => drop(flagged.drain(plan..plan + 9)),
        None => drop(flagged.splice(at(b"3:seqi")..at(b"3:seqi"), *b"4:plani1e")),
    }
    // A byte of the (last) signature changed: `...<sig>1:vi2ee` ends every v2 bencode.
    let mut broken = bencode.clone();
    let last_sig_byte = broken.len() - b"1:vi2ee".len() - 1;
    broken[last_sig_byte] ^= 0x01;
    // The signatures removed.
    let sigs = at(b"4:sigs");
    let value = sigs + b"4:sigs".len();
    let colon = value + bencode[value..].iter().position(|&b| b == b':').unwrap();
    let len: usize = std::str::from_utf8(&bencode[value..colon])
        .unwrap()
        .parse()
        .unwrap();
    let mut unsigned = bencode.clone();
    unsigned.drain(sigs..colon + 1 + len);
    // Signed by the attacker's own key, a billion seqs ahead, for the same payload.
    let binding = *genuine.binding().unwrap();
    let draft = Draft {
        seq: genuine.seq() + 1_000_000_000,
        name: genuine.name().to_string(),
        kind: genuine.kind(),
        info_hash: *genuine.info_hash(),
        len: genuine.payload_len(),
        sha256: *genuine.sha256(),
    };
    let ahead = Announcement::sign_v2(draft, binding, &p2pu::keys::generate()).unwrap();
    vec![
        ("the plan flag added or removed", wire("p2pu2:", &flagged)),
        ("a broken signature", wire("p2pu2:", &broken)),
        ("no signature", wire("p2pu2:", &unsigned)),
        (
            "an untrusted key, seq far ahead",
            ahead.to_wire().into_bytes(),
        ),
    ]
}

/// Node 3 broadcasts every forgery of `genuine`, and `genuine` itself again (a replay).
fn attack_over_serf(lab: &Lab, genuine: &Announcement) {
    for (what, payload) in forgeries(genuine) {
        lab.serf_event(ATTACKER, UPDATE_EVENT, &payload)
            .unwrap_or_else(|e| panic!("sending {what}: {e}"));
    }
    lab.serf_event(ATTACKER, UPDATE_EVENT, genuine.to_wire().as_bytes())
        .unwrap();
}

/// Node 3 (or any process on its machine: no keyring needed) pushes every forgery of
/// `genuine`, `genuine` itself again (a replay), a sync request and a heartbeat-shaped text
/// straight to each honest node's seed server, as `submit` pushes; a stranger on the LAN
/// pushes `genuine`. The forgeries are taken (202: the intake decides, and must refuse them
/// without a record); the texts that are no announcement get 400, the stranger 403.
fn attack_over_push(lab: &Lab, genuine: &Announcement, stranger: std::net::Ipv4Addr) {
    let attacker = lab.node(ATTACKER).unwrap().addr;
    for node in HONEST {
        for (what, text) in forgeries(genuine) {
            let status = seed_push(lab, node, attacker, &text);
            assert_eq!(status, "HTTP/1.1 202 Accepted", "node {node}: {what}");
        }
        let genuine = genuine.to_wire();
        assert_eq!(
            seed_push(lab, node, attacker, genuine.as_bytes()),
            "HTTP/1.1 202 Accepted"
        );
        for text in [&b"p2pu-sync:now"[..], b"p2pu-hb1:e30", b"p2pu-ctl1:x"] {
            assert_eq!(
                seed_push(lab, node, attacker, text),
                "HTTP/1.1 400 Bad Request",
                "node {node}: {}",
                String::from_utf8_lossy(text)
            );
        }
        assert_eq!(
            seed_push(lab, node, stranger, genuine.as_bytes()),
            "HTTP/1.1 403 Forbidden"
        );
    }
}

/// A listener on node 3's address at `port` that keeps the heads of the pushes it gets
/// (what Transmission's web seed GETs there is answered and ignored), until `stop`.
fn push_catcher(
    lab: &Lab,
    port: u16,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    use std::io::Read;
    let at = SocketAddr::from((lab.node(ATTACKER).unwrap().addr, port));
    let listener = lab
        .in_netns(move || std::net::TcpListener::bind(at))
        .unwrap()
        .unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let mut pushes = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let Ok((mut stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut head = [0u8; 256];
            let n = stream.read(&mut head).unwrap_or(0);
            let head = String::from_utf8_lossy(&head[..n]).into_owned();
            if head.starts_with("POST /push") {
                pushes.push(head);
            }
            let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        }
        pushes
    })
}

/// Sets each `(node, "key=value")` tag with `serf tags -set` (any keyring holder sets its own
/// tags), again every 10 s, until node 1 sees `seen` in its members: a tag change is gossiped
/// once, and under the load of the other labs of this file a member-update can be lost for a
/// while (seen once in 2 runs).
fn set_tags_until(
    lab: &Lab,
    what: &str,
    tags: &[(usize, String)],
    seen: impl Fn(&[p2pu::engines::Member]) -> bool,
) {
    let mut last_set: Option<std::time::Instant> = None;
    wait(what, Duration::from_secs(90), || {
        if last_set.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            for (node, tag) in tags {
                ok(lab.exec(*node, &["serf", "tags", "-set", tag]).unwrap());
            }
            last_set = Some(std::time::Instant::now());
        }
        seen(&lab.members(1).unwrap_or_default())
    });
}

/// Node 3 advertises `p2pu-seed-port` = `port`, until node 1's Serf lists it so.
fn advertise_seed_port(lab: &Lab, port: u16) {
    let want = port.to_string();
    let name = lab.node(ATTACKER).unwrap().name.clone();
    let tag = (ATTACKER, format!("p2pu-seed-port={want}"));
    set_tags_until(lab, "node 3's seed port at node 1", &[tag], |members| {
        members.iter().any(|m| {
            m.name == name && m.tags.get("p2pu-seed-port").map(String::as_str) == Some(&want)
        })
    });
}

/// Plants what the hostile NAT client user may write into node `node`'s spool part.
fn plant_spool_entries(lab: &Lab, node: usize) {
    let spool = &lab.node(node).unwrap().site.agent.spool_dir;
    let overlay = p2pu::agent::runtime::spool::overlay_dir(spool);
    std::fs::create_dir_all(&overlay).unwrap();
    let entry = |n: u64| overlay.join(format!("{n:020}-overlay-{n}.event"));
    nix::unistd::mkfifo(&entry(1), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    std::fs::create_dir(entry(2)).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", entry(3)).unwrap();
    let sparse = std::fs::File::create(entry(4)).unwrap();
    sparse.set_len(2 << 30).unwrap();
}

/// Gives `path` (not following a link) to the owner of `dir`: what the `debian-transmission`
/// user, which owns the download dir, could have made itself.
fn own(dir: &Path, path: &Path) -> bool {
    let Ok(owner) = std::fs::metadata(dir) else {
        return false;
    };
    nix::unistd::fchownat(
        None,
        path,
        Some(owner.uid().into()),
        Some(owner.gid().into()),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .is_ok()
}

/// The odd files planted in place of an update's plan and metainfo.
#[derive(Clone, Copy, Debug)]
enum Odd {
    /// A 2 GiB sparse plan (zeros), and the metainfo a link to `/dev/zero`.
    SparsePlanLinkedMetainfo,
    /// A directory as the plan, and a FIFO as the metainfo.
    DirectoryPlanFifoMetainfo,
}

/// Plants odd files in node `node`'s download dir, as its owner (the `debian-transmission`
/// user Transmission writes as), under the names the agent uses for `info_hash`, before the
/// update is announced.
fn plant_download_files(lab: &Lab, node: usize, info_hash: &str, odd: Odd) {
    let dir = &lab.node(node).unwrap().site.transmission.download_dir;
    let plan = dir.join(format!("{info_hash}.plan"));
    let metainfo = dir.join(format!("{info_hash}.torrent"));
    match odd {
        Odd::SparsePlanLinkedMetainfo => {
            std::fs::File::create(&plan)
                .unwrap()
                .set_len(2 << 30)
                .unwrap();
            std::os::unix::fs::symlink("/dev/zero", &metainfo).unwrap();
        }
        Odd::DirectoryPlanFifoMetainfo => {
            std::fs::create_dir(&plan).unwrap();
            nix::unistd::mkfifo(&metainfo, nix::sys::stat::Mode::from_bits_truncate(0o644))
                .unwrap();
        }
    }
    assert!(own(dir, &plan) && own(dir, &metainfo));
}

/// A `debian-transmission` watcher on node `node`'s download dir: the first time a rollout
/// plan appears there, it is swapped for a FIFO (the review's wedge). Returns how many it
/// swapped once stopped.
fn swap_plans_for_fifos(
    lab: &Lab,
    node: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    let dir = lab
        .node(node)
        .unwrap()
        .site
        .transmission
        .download_dir
        .clone();
    std::thread::spawn(move || {
        let mut swapped = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let is_file = entry.file_type().is_ok_and(|t| t.is_file());
                if !name.ends_with(".plan") || !is_file || swapped.contains(&name) {
                    continue;
                }
                let fifo = dir.join(format!(".{name}.fifo"));
                if nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644))
                    .is_ok()
                    && own(&dir, &fifo)
                    && std::fs::rename(&fifo, entry.path()).is_ok()
                {
                    swapped.push(name);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        swapped
    })
}

/// Node `node`'s seed server, and node 3's address to connect to it from.
fn seed_from_attacker(lab: &Lab, node: usize) -> (SocketAddr, SocketAddr) {
    let node = lab.node(node).unwrap();
    let target = SocketAddr::from((node.addr, node.site.agent.seed_port));
    (
        target,
        SocketAddr::from((lab.node(ATTACKER).unwrap().addr, 0)),
    )
}

/// A connection from `from` to `target` (called in the lab's namespace), with a receive
/// buffer of `buffer` bytes if given, that has sent `request`.
fn send_from(
    from: SocketAddr,
    target: SocketAddr,
    buffer: Option<usize>,
    request: &[u8],
) -> Option<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    if let Some(size) = buffer {
        socket.set_recv_buffer_size(size).ok()?;
    }
    socket.bind(&from.into()).ok()?;
    socket.connect(&target.into()).ok()?;
    let mut stream: TcpStream = socket.into();
    stream.write_all(request).ok()?;
    Some(stream)
}

/// Connections from node 3's address to node `node`'s seed server, each dripping a request
/// head a byte at a time until `stop`: more than one source may hold.
fn drip_at_seed_server(
    lab: &Lab,
    node: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    let (target, from) = seed_from_attacker(lab, node);
    let streams: Vec<TcpStream> = lab
        .in_netns(move || {
            (0..12)
                .filter_map(|_| send_from(from, target, None, b"GET / HTTP/1.1\r\n"))
                .collect()
        })
        .unwrap();
    let opened = Mutex::new(streams);
    std::thread::spawn(move || {
        let mut streams = opened.into_inner().unwrap();
        let count = streams.len();
        while !stop.load(Ordering::SeqCst) {
            for stream in &mut streams {
                let _ = stream.write_all(b"X");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        count
    })
}

/// Connections from node 3's address to node `node`'s seed server, each asking for `path`
/// with `?relay` (a relay reader's place) and never reading, re-opened as the server closes
/// them, until `stop`: a member trying to hold every relay place for the payload. Returns the
/// status lines it was answered with.
fn hog_relay_places(
    lab: &Lab,
    node: usize,
    path: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    let (target, from) = seed_from_attacker(lab, node);
    let netns = lab.netns().path();
    std::thread::spawn(move || {
        // Sockets are made in the lab's namespace; the thread enters it once.
        let ns = std::fs::File::open(netns).unwrap();
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let request = format!("GET {path}?relay HTTP/1.1\r\nHost: p2pu\r\n\r\n");
        let open = || -> Option<TcpStream> {
            let stream = send_from(from, target, None, request.as_bytes())?;
            stream.set_nonblocking(true).ok()?;
            Some(stream)
        };
        let mut answers = Vec::new();
        let mut held: Vec<TcpStream> = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            // A place the server answered (or closed) is taken again; one still waiting is held.
            held.retain(|stream| {
                let mut head = [0u8; 64];
                match stream.peek(&mut head) {
                    Ok(n) => {
                        let line = String::from_utf8_lossy(&head[..n]);
                        answers.push(line.lines().next().unwrap_or("").to_string());
                        false
                    }
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                }
            });
            while held.len() < p2pu::agent::transfer::seed_http::MAX_RELAY_READERS {
                match open() {
                    Some(stream) => held.push(stream),
                    None => break,
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        answers
    })
}

/// `genuine` (a plain announcement) with the `plan` flag added and its seq one ahead: what a
/// member without the signing key can answer catch-up with to look newer than the truth.
fn plan_flagged_ahead(genuine: &Announcement) -> String {
    assert!(!genuine.has_plan());
    let bencode = genuine.to_bencode();
    let seq = bencode.windows(6).position(|w| w == b"3:seqi").unwrap();
    let end = seq + 6 + bencode[seq + 6..].iter().position(|&b| b == b'e').unwrap();
    let mut forged = bencode[..seq].to_vec();
    forged.extend_from_slice(b"4:plani1e");
    forged.extend_from_slice(format!("3:seqi{}", genuine.seq() + 1).as_bytes());
    forged.extend_from_slice(&bencode[end..]);
    String::from_utf8(wire("p2pu2:", &forged)).unwrap()
}

/// The status line node `node`'s seed server gives a GET of `path` from `from`.
fn seed_get(lab: &Lab, node: usize, from: std::net::Ipv4Addr, path: &str) -> String {
    seed_ask(
        lab,
        node,
        from,
        format!("GET {path} HTTP/1.1\r\nHost: p2pu\r\n\r\n"),
    )
}

/// The status line node `node`'s seed server gives `text` pushed from `from` (`POST /push`,
/// as `submit` sends it).
fn seed_push(lab: &Lab, node: usize, from: std::net::Ipv4Addr, text: &[u8]) -> String {
    let mut request = b"POST /push HTTP/1.1\r\nHost: p2pu\r\nX-P2pu-Announcement: ".to_vec();
    request.extend_from_slice(text);
    request.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
    seed_ask(
        lab,
        node,
        from,
        String::from_utf8_lossy(&request).into_owned(),
    )
}

fn seed_ask(lab: &Lab, node: usize, from: std::net::Ipv4Addr, request: String) -> String {
    use std::io::Read;
    let target = SocketAddr::from((
        lab.node(node).unwrap().addr,
        lab.node(node).unwrap().site.agent.seed_port,
    ));
    lab.in_netns(move || {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.bind(&SocketAddr::from((from, 0)).into()).unwrap();
        socket.connect(&target.into()).unwrap();
        let mut stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        // A refusal at accept may close before the request is all written.
        let _ = stream.write_all(request.as_bytes());
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    })
    .unwrap()
}

fn status_answers(lab: &Lab, node: usize) -> StatusReport {
    let out = lab.p2pu(node, &["status", "--json"]).unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "node {node}: status: {out:?}"
    );
    p2pu::cmd::json::decode(&out.stdout).unwrap()
}

/// Every kept record verifies against the node's trusted keys, with the plan it keeps.
fn assert_only_signed_records(lab: &Lab, node: usize) {
    let trusted = TrustedKeys::load(&lab.node(node).unwrap().site.agent.trusted_keys_dir).unwrap();
    for record in records(lab, node) {
        let verified = Announcement::decode(&record.wire)
            .map_err(|e| e.to_string())
            .and_then(|a| {
                a.verify(&trusted, record.plan.as_deref().map(str::as_bytes))
                    .map_err(|e| e.to_string())
            });
        assert!(
            verified.is_ok(),
            "node {node} keeps a record that does not verify ({:?}): {} seq {} {:?} {:?}",
            verified.err(),
            record.name,
            record.seq,
            record.status,
            record.reason
        );
    }
}

/// The pid of node `node`'s `p2pu agent`.
fn agent_pid(lab: &mut Lab, node: usize) -> u32 {
    let config = lab.node(node).unwrap().config.clone();
    lab.pids()
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|&b| b == 0).collect();
                args.contains(&&b"agent"[..])
                    && args.contains(&config.as_os_str().as_encoded_bytes())
            })
        })
        .unwrap_or_else(|| panic!("node {node}'s agent is not running"))
}

#[test]
fn a_hostile_member_cannot_make_honest_nodes_apply_skip_or_record_anything_unsigned() {
    if !support::prereq::root("the lab runs real agents in a network namespace") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut options = LabOptions::new(NODES, dir.path().join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    options.start_agent = true;
    let mut lab = TestLab(Lab::start(options).expect("lab starts"));

    // Before anything is sent: the hostile NAT-client user's spool entries on node 2.
    plant_spool_entries(&lab, 2);

    // Update 1, plain, while node 3 advertises another seed port, where it listens: `submit`
    // pushes to the site's seed port of each member, never to a port a member chose. Once
    // applied everywhere, node 3 forges and replays it.
    let seed_port = lab.node(ATTACKER).unwrap().site.agent.seed_port;
    let catching = Arc::new(AtomicBool::new(false));
    let catcher = push_catcher(&lab, seed_port + 1, catching.clone());
    advertise_seed_port(&lab, seed_port + 1);
    let u1 = submit(&lab, dir.path(), 1, &[]);
    catching.store(true, Ordering::SeqCst);
    let caught = catcher.join().unwrap();
    assert!(
        caught.is_empty(),
        "pushed to node 3's chosen port: {caught:?}"
    );
    advertise_seed_port(&lab, seed_port);
    for node in HONEST {
        wait(&format!("node {node} to apply u1"), ROLLOUT, || {
            applied(&lab, node, u1.seq())
        });
    }
    // Node 2's seed server serves u1's metainfo to a member and refuses a stranger on the
    // LAN, by the membership the agent gave it.
    let u1_metainfo = format!("/{}.torrent", hex::encode(u1.info_hash()));
    let member = lab.node(1).unwrap().addr;
    let [a, b, c, _] = member.octets();
    let stranger = std::net::Ipv4Addr::new(a, b, c, 200);
    lab.netns().add_addr(stranger).unwrap();
    assert_eq!(seed_get(&lab, 2, member, &u1_metainfo), "HTTP/1.1 200 OK");
    assert_eq!(
        seed_get(&lab, 2, stranger, &u1_metainfo),
        "HTTP/1.1 403 Forbidden"
    );
    attack_over_serf(&lab, &u1);
    attack_over_push(&lab, &u1, stranger);

    // Update 2, bound to a rollout plan, while node 2's download dir swaps the plan for a
    // FIFO as it arrives and node 3 drips at node 2's seed server.
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = swap_plans_for_fifos(&lab, 2, stop.clone());
    let dripper = drip_at_seed_server(&lab, 2, stop.clone());
    let u2 = submit(&lab, dir.path(), 2, &["--max-failures", "1"]);
    assert!(u2.has_plan());
    // The dripping member holds what one source may; a member is still served.
    assert_eq!(seed_get(&lab, 2, member, &u1_metainfo), "HTTP/1.1 200 OK");
    for node in HONEST {
        wait(&format!("node {node} to apply u2"), ROLLOUT, || {
            applied(&lab, node, u2.seq())
        });
    }
    stop.store(true, Ordering::SeqCst);
    let swapped = swapper.join().unwrap();
    let dripping = dripper.join().unwrap();
    eprintln!("plans swapped for FIFOs on node 2: {swapped:?}; {dripping} dripping connections");
    attack_over_serf(&lab, &u2);
    // The first update replayed once more, after a later one.
    lab.serf_event(ATTACKER, UPDATE_EVENT, u1.to_wire().as_bytes())
        .unwrap();

    // Updates 3 and 4, bound to plans: signed first, so node 2's download dir can hold odd
    // files under their info-hash before they are announced.
    let mut later = Vec::new();
    let hog_stop = Arc::new(AtomicBool::new(false));
    for (n, odd) in [
        (3, Odd::SparsePlanLinkedMetainfo),
        (4, Odd::DirectoryPlanFifoMetainfo),
    ] {
        let path = manifest(dir.path(), n);
        let sig = dir.path().join(format!("u{n}.sig"));
        let sig_arg = sig.to_str().unwrap();
        ok(lab
            .p2pu(
                1,
                &[
                    "submit",
                    path.to_str().unwrap(),
                    "--sign-only",
                    sig_arg,
                    "--max-failures",
                    "1",
                ],
            )
            .unwrap());
        let update = Announcement::decode(std::fs::read_to_string(&sig).unwrap().trim()).unwrap();
        let hash = hex::encode(update.info_hash());
        plant_download_files(&lab, 2, &hash, odd);
        // While u3 spreads, node 3 tries to hold every relay reader place for its payload at
        // node 1's seed server (issue 28's untried attack): a source holds at most two.
        let hog = (n == 3)
            .then(|| hog_relay_places(&lab, 1, format!("/{hash}/{NAME}"), hog_stop.clone()));
        ok(lab.p2pu(1, &["submit", "--with-sig", sig_arg]).unwrap());
        // The positive event after the attacks: each later signed update applied everywhere.
        for node in HONEST {
            wait(
                &format!("node {node} to apply u{n} ({odd:?} on node 2)"),
                ROLLOUT,
                || applied(&lab, node, update.seq()),
            );
        }
        if let Some(hog) = hog {
            hog_stop.store(true, Ordering::SeqCst);
            let answers = hog.join().unwrap();
            let payload = lab
                .node(1)
                .unwrap()
                .site
                .transmission
                .download_dir
                .join(&hash);
            assert!(
                payload.join(NAME).is_file(),
                "the hog asked for the wrong path"
            );
            let busy = answers.iter().filter(|a| a.contains(" 503 ")).count();
            eprintln!(
                "node 3's relay place hog was answered {} times, {busy} of them 503",
                answers.len()
            );
        }
        later.push(update);
    }
    let (u3, u4) = (&later[0], &later[1]);

    // Update 5, plain, while node 2's agent is down, and the event its handler spooled lost:
    // node 2 must catch up. Node 3 (its agent stopped, its state rewritten) answers the
    // catch-up queries with a forgery: u5 with the plan flag added and its seq one ahead, as
    // its newest applied update, and the genuine u1.
    lab.stop_agent(2).unwrap();
    let u5_path = manifest(dir.path(), 5);
    let report = ok(lab
        .p2pu(
            1,
            &["submit", u5_path.to_str().unwrap(), "--once", "--json"],
        )
        .unwrap());
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let u5 = Announcement::decode(report["wire"].as_str().unwrap()).unwrap();
    for node in [1, ATTACKER] {
        wait(&format!("node {node} to apply u5"), ROLLOUT, || {
            applied(&lab, node, u5.seq())
        });
    }
    let spool = lab.spool_dir(2).unwrap().to_path_buf();
    let u5_wire = u5.to_wire();
    let holds_u5 = |event: &PathBuf| {
        std::fs::read_to_string(event).is_ok_and(|text| text.contains(u5_wire.as_str()))
    };
    wait(
        "node 2's handler to spool u5",
        Duration::from_secs(30),
        || spooled(&spool).iter().any(holds_u5),
    );
    for event in spooled(&spool).iter().filter(|e| holds_u5(e)) {
        std::fs::remove_file(event).unwrap();
    }
    lab.stop_agent(ATTACKER).unwrap();
    let names = lab
        .node(ATTACKER)
        .unwrap()
        .site
        .agent
        .state_dir
        .join(format!("names/{NAME}.json"));
    let kept: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&names).unwrap()).unwrap();
    let of = |seq: u64| {
        kept.iter()
            .find(|r| r["seq"].as_u64() == Some(seq))
            .unwrap()
            .clone()
    };
    let mut forged = of(u5.seq());
    forged["seq"] = (u5.seq() + 1).into();
    forged["wire"] = plan_flagged_ahead(&u5).into();
    std::fs::write(&names, serde_json::to_vec(&[of(u1.seq()), forged]).unwrap()).unwrap();
    lab.start_agent(2).unwrap();
    wait("node 2 to catch up with u5", ROLLOUT, || {
        // `p2pu sync` asks for a catch-up round now; until the agent answers it fails.
        let _ = lab.p2pu(2, &["sync"]);
        applied(&lab, 2, u5.seq())
    });
    // Node 2 heard the forgery and did not take it: no member serves a plan that verifies it.
    let log = std::fs::read_to_string(lab.node(2).unwrap().log("agent")).unwrap();
    assert!(
        log.contains("no member serves a rollout plan that verifies this answer"),
        "node 2 never weighed node 3's forged answer:\n{log}"
    );

    for node in HONEST {
        assert_eq!(
            ran(&lab, node),
            ["u1", "u2", "u3", "u4", "u5"],
            "node {node} ran"
        );
        let kept: Vec<(u64, Status)> = store(&lab, node)
            .records(NAME)
            .unwrap()
            .iter()
            .map(|r| (r.seq, r.status))
            .collect();
        assert_eq!(
            kept,
            [
                (u1.seq(), Status::Applied),
                (u2.seq(), Status::Applied),
                (u3.seq(), Status::Applied),
                (u4.seq(), Status::Applied),
                (u5.seq(), Status::Applied)
            ],
            "node {node} keeps"
        );
        assert_only_signed_records(&lab, node);
        let report = status_answers(&lab, node);
        assert!(
            !report.rejected.is_empty(),
            "node {node} recorded no rejection of the forgeries"
        );
    }

    // Node 2 took the spool's next event past its planted entries and still stops on
    // SIGTERM, promptly.
    let pid = agent_pid(&mut lab, 2);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait(
        "node 2's agent to stop on SIGTERM",
        Duration::from_secs(20),
        || !lab.pids().contains(&pid),
    );
    let log = std::fs::read_to_string(lab.node(2).unwrap().log("agent")).unwrap();
    assert!(log.contains("agent stopping"), "{log}");
}

/// Issue 29's new surface: the `p2pu-status` query now carries the names asked for
/// (`fleet status NAME...`), and any holder of the gossip keyring sends it. Node 3 asks node 1
/// with names that climb out of the state dir, control characters and far more names than
/// allowed: node 1's handler answers with valid names alone (at most 64 taken), reads nothing
/// outside its state, and a genuine ask by name still gets its one update, however many
/// newer ones fill the answer.
#[test]
fn a_members_status_query_names_only_narrow_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let options = LabOptions::new(NODES, dir.path().join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    let lab = TestLab(Lab::start(options).expect("lab starts"));
    let state = store(&lab, 1);
    let template = |name: &str, at: u64| Record {
        name: name.into(),
        seq: 1,
        kind: p2pu::agent::runtime::state::RecordKind::Signed(
            p2pu::formats::announcement::Kind::Manifest,
        ),
        info_hash: "00".repeat(20),
        len: 1,
        sha256: Some([0; 32]),
        wire: "p2pu2:x".into(),
        status: Status::Applied,
        reason: Some("r".repeat(200)),
        output: None,
        received_at: at,
        updated_at: at,
        sources: Vec::new(),
        stripes: Vec::new(),
        attempts: 1,
        next_attempt_at: None,
        restored_seq: None,
        plan: None,
    };
    for i in 0..120u64 {
        state
            .put(template(&format!("n{i:03}.pp"), 1_000 + i))
            .unwrap();
    }
    let ask = |payload: &str| -> p2pu::agent::runtime::status::NodeStatus {
        let out = lab
            .exec(
                ATTACKER,
                &[
                    "serf",
                    "query",
                    "-format=json",
                    "-timeout=5s",
                    "-node=node-1",
                    "p2pu-status",
                    payload,
                ],
            )
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let answer = value["Responses"]["node-1"]
            .as_str()
            .unwrap_or_else(|| panic!("{text}"));
        serde_json::from_str(answer).unwrap()
    };
    // Everything: cut, and saying how much it left out to an asker that reads it ...
    let all = ask("/");
    assert!(
        all.omitted > 0 && all.updates.len() + all.omitted == 120,
        "{}",
        all.omitted
    );
    assert!(!all.updates.iter().any(|u| u.name == "n000.pp"));
    // ... but not to an empty ask (the wave gate's, every older p2pu's), whose reader denies
    // unknown fields and would take the answer for none.
    let old = ask("");
    assert_eq!((old.omitted, old.updates.len()), (0, all.updates.len()));
    // Hostile names: none reads outside the state; only the valid one is answered.
    let hostile =
        "../../../etc/passwd\n/etc/shadow\nn000.pp\n\u{1b}]0;x\u{7}\n..\nn000.pp/../../x\n";
    let answer = ask(hostile);
    let names: Vec<&str> = answer.updates.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["n000.pp"]);
    // Far more names than allowed: at most 64 taken, the answer stays whole.
    // (Serf itself caps a query at 1024 bytes, name included.)
    let many: String = (0..100).rev().map(|i| format!("n{i:03}.pp\n")).collect();
    let answer = ask(&many);
    assert!(answer.updates.len() <= 64, "{}", answer.updates.len());
    // The node still answers its operator.
    let out = lab.p2pu(1, &["status"]).unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Issue 24's new member-sent surface: the advertised rate (`p2pu-rate`), which any holder
/// of the gossip keyring sets on itself (`serf tags -set`). Node 5 advertises the largest
/// number a tag can say; the honest members advertise what they measured, node 4 under half
/// the others. A striped submit from node 1 classes node 4 slow and no honest member else:
/// the liar moves the median one place (it would take as many liars as honest members above
/// the median to make honest members slow), and its absurd value is read as the clamp.
#[test]
fn a_members_absurd_rate_tag_makes_no_honest_member_slow() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = LabOptions::new(5, dir.path().join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    options.site_overrides = Some("[transfer]\nmode = \"stripes\"\n".into());
    let mut lab = TestLab(Lab::start(options).expect("lab starts"));
    lab.wait_members().unwrap();
    let rates = [
        (2, "10000000"),
        (3, "10000000"),
        (4, "3000000"),
        (5, "18446744073709551615"),
    ];
    let tags: Vec<(usize, String)> = rates
        .iter()
        .map(|(node, rate)| (*node, format!("p2pu-rate={rate}")))
        .collect();
    set_tags_until(&lab, "the rates at node 1", &tags, |members| {
        members
            .iter()
            .filter(|m| m.tags.contains_key("p2pu-rate"))
            .count()
            == 4
    });
    let path = dir.path().join("big.bin");
    std::fs::write(&path, vec![5u8; 5 << 20]).unwrap();
    let out = ok(lab
        .p2pu(1, &["submit", path.to_str().unwrap(), "--json", "--quiet"])
        .unwrap());
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let info_hash = report["info_hash"].as_str().unwrap();
    let root = &lab.node(1).unwrap().site.transmission.download_dir;
    let roster = p2pu::formats::roster::Roster::decode(
        &std::fs::read(root.join(format!("{info_hash}.roster"))).unwrap(),
    )
    .unwrap();
    assert_eq!(roster.members.len(), 5);
    assert_eq!(roster.slow, [lab.node(4).unwrap().name.clone()]);
}

/// The info-hash and `.have` mark of the striped payload in node `node`'s download dir, once
/// there is one.
fn striped_payload(lab: &Lab, node: usize) -> Option<(String, p2pu::formats::have::Have)> {
    let root = &lab.node(node).unwrap().site.transmission.download_dir;
    std::fs::read_dir(root).ok()?.flatten().find_map(|entry| {
        let name = entry.file_name().into_string().ok()?;
        let hash = name.strip_suffix(".have")?.to_string();
        let have = p2pu::formats::have::Have::decode(&std::fs::read(entry.path()).ok()?).ok()?;
        Some((hash, have))
    })
}

/// What a member (any process on node 3's address, no key needed) can do to the origin's
/// step, from the moment node `origin`'s `.have` mark shows the payload until `stop`: ask
/// every stripe and hang up, four times a second (the stripes' tracks made before the heads
/// come, fourth review I1, and the unsent blocks of answers cut short, I3); read one answer a
/// stripe from its first block at a trickle, 512 bytes a quarter second through a 4 KiB
/// receive buffer (a reader that all but stops); and ask each stripe from its last block
/// (far ahead). Returns how many answers began `200 OK`.
fn pull_at_stripes(
    lab: &Lab,
    origin: usize,
    name: &'static str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    use std::io::Read;
    let (hash, have) = {
        let mut found = None;
        wait("the origin's .have mark", ROLLOUT, || {
            found = striped_payload(lab, origin);
            found.is_some()
        });
        found.unwrap()
    };
    let (target, from) = seed_from_attacker(lab, origin);
    let netns = lab.netns().path();
    std::thread::spawn(move || {
        let ns = std::fs::File::open(netns).unwrap();
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let (stripes, count) = (have.stripes(), have.layout().count());
        let ask = |block: u32, buffer: Option<usize>| -> Option<TcpStream> {
            let stripe = block % stripes;
            let request = format!(
                "GET /{hash}/{name}?stripe={stripe}&from={block} HTTP/1.1\r\nHost: p2pu\r\n\r\n"
            );
            let stream = send_from(from, target, buffer, request.as_bytes())?;
            stream.set_nonblocking(true).ok()?;
            Some(stream)
        };
        let last = |stripe: u32| (stripe..count).step_by(stripes as usize).next_back();
        let mut trickles: Vec<TcpStream> =
            (0..stripes).filter_map(|s| ask(s, Some(4096))).collect();
        let mut ahead: Vec<TcpStream> = (0..stripes)
            .filter_map(|s| last(s).and_then(|b| ask(b, None)))
            .collect();
        let mut heads: Vec<Vec<u8>> = vec![Vec::new(); trickles.len() + ahead.len()];
        let mut buffer = vec![0u8; 64 * 1024];
        while !stop.load(Ordering::SeqCst) {
            for s in 0..stripes {
                drop(ask(s, None));
            }
            let streams = trickles
                .iter_mut()
                .map(|t| (t, 512))
                .chain(ahead.iter_mut().map(|a| (a, 64 * 1024)));
            for ((stream, take), head) in streams.zip(heads.iter_mut()) {
                if let Ok(n) = stream.read(&mut buffer[..take]) {
                    if head.len() < 16 {
                        head.extend_from_slice(&buffer[..n.min(16)]);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        heads
            .iter()
            .filter(|h| h.starts_with(b"HTTP/1.1 200"))
            .count()
    })
}

/// A member pulls at the origin's stripe answers while a striped update runs (see
/// [`pull_at_stripes`]): every honest node still applies it by stripes, none names an honest
/// member a liar, the member's answers were real ones (`200 OK`: its address is a member's),
/// and a stranger on the LAN asking the same stripe is refused.
#[test]
fn a_member_pulling_at_the_origins_stripes_holds_no_honest_node() {
    if !support::prereq::root("the lab runs real agents in a network namespace") {
        return;
    }
    const BLOB: &str = "pulled.bin";
    let dir = support::testlab::lab_dir("p2pu-hostile-");
    let mut options = LabOptions::new(5, dir.path().join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    options.start_agent = true;
    options.site_overrides = Some("[transfer]\nmode = \"stripes\"\n".into());
    let mut lab = TestLab(Lab::start(options).expect("lab starts"));
    lab.wait_members().unwrap();
    // Slow enough links that the transfer is under way while the member pulls.
    lab.shape(&[20; 5]).unwrap();
    let path = dir.path().join(BLOB);
    let data: Vec<u8> = (0..(8u32 << 20) + 999)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(&path, &data).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (seq, answered) = std::thread::scope(|scope| {
        let submitting = scope.spawn(|| support::testlab::submit(&lab, &path, &[]));
        let puller = pull_at_stripes(&lab, 1, BLOB, stop.clone());
        let seq = submitting.join().unwrap();
        let honest = [1, 2, 3, 4];
        for node in honest {
            wait(
                &format!("node {node} to apply the striped update"),
                ROLLOUT,
                || support::testlab::status(&lab, node, BLOB) == Some(Status::Applied),
            );
        }
        stop.store(true, Ordering::SeqCst);
        (seq, puller.join().unwrap())
    });
    assert!(answered > 0, "the member's stripe asks were never answered");
    let honest_names: Vec<String> = (1..=4).map(|n| lab.node(n).unwrap().name.clone()).collect();
    for node in 1..=4 {
        let record = support::testlab::record(&lab, node, BLOB).unwrap();
        assert_eq!(record.seq, seq);
        for source in &record.sources {
            let lied = source.left.as_deref().is_some_and(|l| l.contains("lied"));
            assert!(
                !(lied && honest_names.contains(&source.addr)),
                "node {node} named honest {} a liar: {:?}",
                source.addr,
                record.sources
            );
        }
    }
    let member = lab.node(1).unwrap().addr;
    let [a, b, c, _] = member.octets();
    let stranger = std::net::Ipv4Addr::new(a, b, c, 201);
    lab.netns().add_addr(stranger).unwrap();
    let (hash, _) = striped_payload(&lab, 1).unwrap();
    assert_eq!(
        seed_get(
            &lab,
            1,
            stranger,
            &format!("/{hash}/{BLOB}?stripe=0&from=0")
        ),
        "HTTP/1.1 403 Forbidden"
    );
}
