//! The local test fleet against the real engines in real network namespaces: a lab starts,
//! its members gossip with p2pu's tags, user events reach every node's spool through the
//! rendered handler, Transmission moves bytes between nodes from their own addresses, labs
//! running at once stay apart, and nothing outlives a lab (not even one dropped by a panic).
//! Also the namespace plumbing the NAT lab of tests/support is built from (veth pairs, a
//! dropped namespace killing what runs inside).

use p2pu::agent::runtime::spool;
use p2pu::engines::{Gossip, MemberStatus, TorrentEngine};
use p2pu::lab::{Lab, LabOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A lab with its base dir; the lab (first field) is dropped before the dir.
struct Fixture {
    lab: Lab,
    dir: tempfile::TempDir,
}

fn start(nodes: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let options = LabOptions::new(nodes, dir.path(), env!("CARGO_BIN_EXE_p2pu"));
    let lab = Lab::start(options).unwrap_or_else(|e| panic!("{}", p2pu::error::chain(&e)));
    Fixture { lab, dir }
}

fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The payloads of the user events in a node's spool, in arrival order (not the requests to
/// catch up that the handler spools on every member-join).
fn spooled(dir: &Path) -> Vec<String> {
    spool::list(dir)
        .unwrap()
        .iter()
        .filter_map(|path| spool::read(path).unwrap())
        .filter(|event| event.source != spool::Source::Sync)
        .map(|event| String::from_utf8_lossy(&event.payload).into_owned())
        .collect()
}

/// Every node's spool holds exactly `want`, in any order: gossip delivers each event once
/// but, on a loaded machine, not always in the order sent.
fn spools_hold(lab: &Lab, want: &[&str]) -> bool {
    let mut want: Vec<&str> = want.to_vec();
    want.sort_unstable();
    (1..=lab.nodes().len()).all(|i| {
        let mut got = spooled(lab.spool_dir(i).unwrap());
        got.sort_unstable();
        got == want
    })
}

fn namespaces() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Processes whose command line mentions `dir` (the lab's daemons and handlers all do).
fn processes_under(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

/// Shuts the lab down and checks that its namespace and every process are gone.
fn shutdown_leaves_nothing(fixture: &mut Fixture) {
    let name = fixture.lab.netns_name().to_owned();
    let pids = fixture.lab.pids();
    assert!(!pids.is_empty());
    assert!(namespaces().contains(&name));
    fixture.lab.shutdown().unwrap();
    assert!(!namespaces().contains(&name), "{}", namespaces());
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} survived"
        );
    }
    assert_eq!(processes_under(fixture.dir.path()), Vec::<String>::new());
    stopped_gracefully(fixture.lab.nodes().iter().map(|n| n.dir.as_path()));
}

/// Each node's Transmission and Serf exited on their SIGTERM, not on the SIGKILL that follows
/// when they do not.
fn stopped_gracefully<'a>(node_dirs: impl Iterator<Item = &'a Path>) {
    for dir in node_dirs {
        let transmission = std::fs::read_to_string(dir.join("logs/transmission.log")).unwrap();
        assert!(
            transmission.contains("Closing transmission session... done."),
            "{}: {transmission}",
            dir.display()
        );
        let serf = std::fs::read_to_string(dir.join("logs/serf.log")).unwrap();
        assert!(
            serf.contains("agent: shutdown complete"),
            "{}: {serf}",
            dir.display()
        );
    }
}

#[test]
fn four_nodes_gossip_and_spool_every_event() {
    let mut fixture = start(4);
    let lab = &mut fixture.lab;

    for node in lab.nodes() {
        let members = lab.members(node.index).unwrap();
        assert_eq!(members.len(), 4, "{members:?}");
        for (i, member) in (1u8..).zip(sorted(members)) {
            assert_eq!(member.name, format!("node-{i}"));
            assert_eq!(member.status, MemberStatus::Alive);
            assert_eq!(member.addr, Ipv4Addr::new(10, 99, 1, i));
            assert_eq!(member.tags["p2pu-bt-port"], "51413", "{member:?}");
            assert_eq!(member.tags["p2pu-role"], "node", "{member:?}");
        }
    }

    lab.serf_event(1, "p2pu-update", b"first").unwrap();
    wait_for(
        "the first event in every spool",
        Duration::from_secs(10),
        || spools_hold(lab, &["first"]).then_some(()),
    );
    // No coalescing: a burst arrives whole.
    for payload in ["a", "b", "c"] {
        lab.serf_event(1, "p2pu-update", payload.as_bytes())
            .unwrap();
    }
    wait_for("the burst in every spool", Duration::from_secs(30), || {
        spools_hold(lab, &["first", "a", "b", "c"]).then_some(())
    });
    // Other user events are not p2pu's business.
    lab.serf_event(2, "something-else", b"x").unwrap();

    // A stopped node misses what is sent meanwhile, and rejoins when started.
    lab.stop_node(4).unwrap();
    lab.serf_event(1, "p2pu-update", b"while-down").unwrap();
    let three = ["a", "b", "c", "first", "while-down"];
    wait_for(
        "the event on the running nodes",
        Duration::from_secs(30),
        || {
            (1..=3)
                .all(|i| {
                    let mut got = spooled(lab.spool_dir(i).unwrap());
                    got.sort_unstable();
                    got == three
                })
                .then_some(())
        },
    );
    lab.start_node(4).unwrap();
    let serf = lab.serf(4).unwrap();
    let alive = lab
        .in_netns(|| serf.members().unwrap())
        .unwrap()
        .into_iter()
        .filter(|m| m.status == MemberStatus::Alive)
        .count();
    assert_eq!(alive, 4);
    // Serf may or may not replay a user event a rejoining member missed (it keeps a recent
    // event buffer): both are fine; p2pu's catch-up covers the case where it does not.
    let mut got = spooled(lab.spool_dir(4).unwrap());
    got.sort_unstable();
    assert!(
        got == ["a", "b", "c", "first"] || got == ["a", "b", "c", "first", "while-down"],
        "{got:?}"
    );

    // Node 1 joins nobody by config; restarted, it is brought back all the same.
    lab.stop_node(1).unwrap();
    lab.start_node(1).unwrap();
    for i in 1..=4 {
        let alive = lab.members(i).unwrap();
        assert!(
            alive.iter().all(|m| m.status == MemberStatus::Alive),
            "{alive:?}"
        );
    }

    // The commands a test runs see the node's environment inside the namespace.
    let out = lab.exec(2, &["serf", "members", "-status=alive"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 4);
    let out = lab
        .exec(3, &["ip", "-o", "addr", "show", "dev", "lo"])
        .unwrap();
    let addrs = String::from_utf8_lossy(&out.stdout);
    assert!(addrs.contains("10.99.1.4/32"), "{addrs}");

    shutdown_leaves_nothing(&mut fixture);
}

fn sorted(mut members: Vec<p2pu::engines::Member>) -> Vec<p2pu::engines::Member> {
    members.sort_by(|a, b| a.name.cmp(&b.name));
    members
}

/// A tracker that answers every announce with one peer, inside the lab's namespace.
struct Tracker {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Tracker {
    fn start(lab: &Lab, peer: Ipv4Addr, peer_port: u16) -> Tracker {
        let listener = lab
            .in_netns(|| TcpListener::bind("127.0.0.1:0").unwrap())
            .unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let mut body = b"d8:intervali60e5:peers6:".to_vec();
        body.extend(peer.octets());
        body.extend(peer_port.to_be_bytes());
        body.push(b'e');
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let mut request = [0u8; 4096];
                        let _ = stream.read(&mut request);
                        let head = format!(
                            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        );
                        let _ = stream.write_all(head.as_bytes());
                        let _ = stream.write_all(&body);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Tracker {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn transmission_downloads_between_nodes_from_their_own_addresses() {
    let mut fixture = start(2);
    let lab = &fixture.lab;
    let seeder = lab.node(1).unwrap().clone();
    let tracker = Tracker::start(lab, seeder.addr, seeder.site.transmission.peer_port);

    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i * 7 + i / 4096) as u8).collect();
    let seed_dir = &seeder.site.transmission.download_dir;
    std::fs::write(seed_dir.join("blob.bin"), &data).unwrap();
    let torrent = fixture.dir.path().join("blob.torrent");
    let announce = format!("http://127.0.0.1:{}/announce", tracker.port);
    let out = Command::new("transmission-create")
        .arg("-o")
        .arg(&torrent)
        .args(["-t", &announce])
        .arg(seed_dir.join("blob.bin"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let metainfo = std::fs::read(&torrent).unwrap();

    let (one, two) = (lab.transmission(1).unwrap(), lab.transmission(2).unwrap());
    let added = lab
        .in_netns(|| {
            one.add_metainfo(&metainfo, Some(seed_dir), false).unwrap();
            two.add_metainfo(&metainfo, None, false).unwrap()
        })
        .unwrap();
    let hash = added.hash_string;

    // The seeder sees the leecher at the leecher's own address (not at its own, as it would
    // if Transmission did not bind outgoing connections to bind-address-ipv4).
    let rpc = format!("127.0.0.1:{}", seeder.site.transmission.rpc_port);
    let peers = wait_for("node-1 to see a peer", Duration::from_secs(30), || {
        let out = lab
            .exec(
                1,
                &["transmission-remote", &rpc, "--authenv", "-t", &hash, "-pi"],
            )
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("10.99.1.").then_some(text)
    });
    assert!(peers.contains("10.99.1.2"), "{peers}");
    assert!(!peers.contains("10.99.1.1 "), "{peers}");

    let started = Instant::now();
    let status = wait_for("node-2 to complete", Duration::from_secs(40), || {
        let status = lab
            .in_netns(|| two.get(std::slice::from_ref(&hash)).unwrap())
            .unwrap();
        status.into_iter().find(|s| s.is_complete())
    });
    eprintln!("4 MiB from node-1 to node-2 in {:?}", started.elapsed());
    let got = std::fs::read(status.download_dir.join("blob.bin")).unwrap();
    assert!(got == data, "node-2's copy differs");

    // A restarted daemon answers again and still has the torrent (its resume files).
    let old_pid = fixture.lab.pids();
    fixture.lab.restart_transmission(2).unwrap();
    assert_ne!(fixture.lab.pids(), old_pid);
    let lab = &fixture.lab;
    let two = lab.transmission(2).unwrap();
    // Its RPC may answer before it has loaded its torrents (seen at load 20 in CI).
    wait_for(
        "node-2's restarted daemon to list the torrent",
        Duration::from_secs(30),
        || {
            let again = lab
                .in_netns(|| two.get(std::slice::from_ref(&hash)).unwrap())
                .unwrap();
            (again.len() == 1).then_some(())
        },
    );

    drop(tracker);
    shutdown_leaves_nothing(&mut fixture);
}

#[test]
fn two_labs_at_once_do_not_interfere() {
    let mut a = start(2);
    let mut b = start(2);
    assert_ne!(a.lab.netns_name(), b.lab.netns_name());
    // Same addresses, same ports, different namespaces.
    assert_eq!(a.lab.nodes()[0].addr, b.lab.nodes()[0].addr);
    for fixture in [&a, &b] {
        for i in 1..=2 {
            let names: Vec<String> = sorted(fixture.lab.members(i).unwrap())
                .into_iter()
                .map(|m| m.name)
                .collect();
            assert_eq!(names, ["node-1", "node-2"]);
        }
    }
    a.lab.serf_event(1, "p2pu-update", b"to-a").unwrap();
    b.lab.serf_event(2, "p2pu-update", b"to-b").unwrap();
    wait_for("each lab's own event", Duration::from_secs(10), || {
        (spools_hold(&a.lab, &["to-a"]) && spools_hold(&b.lab, &["to-b"])).then_some(())
    });
    // Positive evidence instead of a pause: a second event from the other node of each lab
    // has gone all the way round it, and still neither spool holds the other lab's event
    // (spools_hold wants exactly these events, nothing more).
    a.lab.serf_event(2, "p2pu-update", b"then-a").unwrap();
    b.lab.serf_event(1, "p2pu-update", b"then-b").unwrap();
    wait_for(
        "the second events, and nothing crossed over",
        Duration::from_secs(10),
        || {
            (spools_hold(&a.lab, &["to-a", "then-a"]) && spools_hold(&b.lab, &["to-b", "then-b"]))
                .then_some(())
        },
    );

    shutdown_leaves_nothing(&mut a);
    // The other lab is untouched.
    b.lab.serf_event(1, "p2pu-update", b"still-here").unwrap();
    wait_for("lab b to work on alone", Duration::from_secs(10), || {
        spools_hold(&b.lab, &["to-b", "then-b", "still-here"]).then_some(())
    });
    shutdown_leaves_nothing(&mut b);
}

#[test]
fn a_lab_dropped_by_a_panic_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen: Option<(String, Vec<u32>)> = None;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let options = LabOptions::new(2, dir.path(), env!("CARGO_BIN_EXE_p2pu"));
        let mut lab = Lab::start(options).unwrap();
        seen = Some((lab.netns_name().to_owned(), lab.pids()));
        panic!("a test failing with a lab up");
    }));
    assert!(outcome.is_err());
    let (name, pids) = seen.unwrap();
    assert_eq!(pids.len(), 4);
    assert!(!namespaces().contains(&name));
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} survived"
        );
    }
    assert_eq!(processes_under(dir.path()), Vec::<String>::new());
}

#[test]
fn options_are_checked_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    for nodes in [0, 255] {
        let options = LabOptions::new(nodes, dir.path(), env!("CARGO_BIN_EXE_p2pu"));
        let err = Lab::start(options).err().map(|e| e.to_string());
        assert_eq!(err, Some(format!("a lab has 1 to 254 nodes, not {nodes}")));
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

fn p2pu_lab() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_p2pu"));
    command.arg("lab");
    command
}

#[test]
fn p2pu_lab_shows_the_example_update_applied_on_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let out = p2pu_lab()
        .args(["--nodes", "2", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("node-1\t10.99.1.1\t"), "{stdout}");
    assert!(stdout.contains("NODE     ADDRESS"), "{stdout}");
    for line in [
        "node-1   10.99.1.1    2/2      applied",
        "node-2   10.99.1.2    2/2      applied",
    ] {
        assert!(stdout.contains(line), "{stdout}");
    }
    assert!(stderr.contains("every node applied example.pp"), "{stderr}");
    for node in ["node-1", "node-2"] {
        let applied = dir.path().join(node).join("puppet/var/p2pu-example.txt");
        assert_eq!(
            std::fs::read_to_string(applied).unwrap(),
            "applied by p2pu\n"
        );
    }
    // --dir is kept (with the logs); the processes are not.
    assert!(dir.path().join("node-2/logs/serf.log").exists());
    assert_eq!(processes_under(dir.path()), Vec::<String>::new());
}

#[test]
fn p2pu_lab_keep_runs_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let mut child = p2pu_lab()
        .args(["--nodes", "1", "--keep", "--dir"])
        .arg(dir.path().join("lab"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    let waited = wait_for(
        "the lab to wait for a signal",
        Duration::from_secs(20),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if matches!(child.try_wait(), Ok(Some(_))) {
                return Some(Err(text));
            }
            text.contains("press Ctrl-C").then_some(Ok(()))
        },
    );
    if let Err(text) = waited {
        panic!("p2pu lab exited early: {text}");
    }
    // The kept lab answers the command it suggests: a lab that did not keep would be torn
    // down by then (or mid-way), so the check is made after something it had to do.
    let text = std::fs::read_to_string(&log).unwrap();
    let suggested = text
        .lines()
        .find_map(|l| l.split_once("try: ").map(|(_, c)| c.to_string()))
        .unwrap_or_else(|| panic!("no command suggested: {text}"));
    let answered = Command::new("sh")
        .args(["-c", &suggested])
        .output()
        .unwrap();
    assert!(
        answered.status.success(),
        "{suggested}: {}",
        String::from_utf8_lossy(&answered.stderr)
    );
    assert!(matches!(child.try_wait(), Ok(None)), "--keep did not keep");
    assert!(!std::fs::read_to_string(&log)
        .unwrap()
        .contains("tearing down"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{text}");
    assert!(text.contains("tearing down"), "{text}");
    assert!(!namespaces().contains(&format!("p2pu-lab-{}-", child.id())));
    assert_eq!(processes_under(dir.path()), Vec::<String>::new());
    // p2pu lab blocks SIGTERM to wait for it; the daemons must not inherit that.
    stopped_gracefully([dir.path().join("lab/node-1")].iter().map(|p| p.as_path()));
}

#[test]
fn p2pu_lab_says_what_is_missing() {
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let out = p2pu_lab()
        .uid(nobody.uid.as_raw())
        .gid(nobody.gid.as_raw())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("must run as root"), "{stderr}");

    let out = p2pu_lab().env("PATH", "/nonexistent").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains(
            "`ip` is not installed (not found on PATH); install the Debian package iproute2"
        ),
        "{stderr}"
    );
}

#[test]
fn namespaces_left_by_dead_processes_are_reaped() {
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let stale = format!("p2pu-lab-{dead}-1");
    // Another lab's namespace (a live pid: ours) and one not named like a lab stay.
    let alive = format!("p2pu-lab-{}-999999", std::process::id());
    let foreign = format!("p2pu-lab-{dead}-1-other");
    for name in [&stale, &alive, &foreign] {
        let out = Command::new("ip")
            .args(["netns", "add", name])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let mut fixture = start(1);
    let listed = namespaces();
    let (has_stale, has_alive, has_foreign) = (
        listed.contains(&format!("{stale} ")) || listed.lines().any(|l| l == stale),
        listed.contains(&alive),
        listed.contains(&foreign),
    );
    for name in [&stale, &alive, &foreign] {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
    }
    assert!(!has_stale, "{listed}");
    assert!(has_alive && has_foreign, "{listed}");
    shutdown_leaves_nothing(&mut fixture);
}

/// The plumbing the NAT lab is built from: a veth pair joins two namespaces, each end with its
/// address, and a datagram sent from one arrives at a socket bound in the other.
#[test]
fn a_veth_pair_joins_two_namespaces() {
    use p2pu::lab::{veth_pair, Netns};
    let ok = |e: p2pu::lab::LabError| -> ! { panic!("{}", p2pu::error::chain(&e)) };
    let a = Netns::fresh("p2pu-labtest-").unwrap_or_else(|e| ok(e));
    let b = Netns::fresh("p2pu-labtest-").unwrap_or_else(|e| ok(e));
    let (a_ip, b_ip) = (Ipv4Addr::new(10, 98, 0, 1), Ipv4Addr::new(10, 98, 0, 2));
    veth_pair(&a, "left", &b, "right").unwrap_or_else(|e| ok(e));
    for (ns, dev, ip) in [(&a, "left", a_ip), (&b, "right", b_ip)] {
        ns.add_addr_on(dev, ip, 24).unwrap_or_else(|e| ok(e));
        ns.link_up(dev).unwrap_or_else(|e| ok(e));
    }
    let receiver = b
        .run(|| std::net::UdpSocket::bind((b_ip, 0)).unwrap())
        .unwrap_or_else(|e| ok(e));
    receiver
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let to = receiver.local_addr().unwrap();
    a.run(|| {
        let sender = std::net::UdpSocket::bind((a_ip, 0)).unwrap();
        sender.send_to(b"across", to).unwrap();
    })
    .unwrap_or_else(|e| ok(e));
    let mut buf = [0u8; 16];
    let (len, from) = receiver.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..len], b"across");
    assert_eq!(from.ip(), a_ip);
    // exec_ok runs inside: `ip` there sees the address on this end.
    let out = a.exec_ok(&["ip", "-br", "addr", "show", "left"]);
    let shown = String::from_utf8_lossy(&out.unwrap_or_else(|e| ok(e)).stdout).into_owned();
    assert!(shown.contains("10.98.0.1/24"), "{shown}");
}

/// Deleting a namespace (dropping it) kills what still runs inside, whoever started it.
#[test]
fn a_dropped_namespace_takes_its_processes_along() {
    let ns = p2pu::lab::Netns::fresh("p2pu-labtest-")
        .unwrap_or_else(|e| panic!("{}", p2pu::error::chain(&e)));
    let name = ns.name().to_owned();
    // Not through the lab's guard: a stray the namespace alone must take care of.
    let mut stray = Command::new("ip")
        .args(["netns", "exec", &name, "sleep", "600"])
        .spawn()
        .unwrap();
    let pid = stray.id();
    wait_for(
        "sleep inside the namespace",
        Duration::from_secs(10),
        || ns.pids().contains(&pid).then_some(()),
    );
    drop(ns);
    let status = stray.wait().unwrap();
    assert!(!status.success(), "{status}");
    assert!(
        !namespaces()
            .lines()
            .any(|l| l.split_whitespace().next() == Some(name.as_str())),
        "{}",
        namespaces()
    );
}
