//! Updates across NAT in a real NAT lab (network namespaces, iptables MASQUERADE, conntrack
//! NEW dropped on the routers' WAN side): registration with the right mapped address, hole
//! punching to a direct path, the relay where both NATs are symmetric, keepalive against a
//! short conntrack timeout, a proxy restart, strangers' and malformed datagrams, and interop
//! with coturn. Needs root, `ip`, `iptables` and coturn (install/engines.sh --test).

#[path = "support/natfleet.rs"]
mod natfleet;
#[path = "support/natfull.rs"]
mod natfull;
#[path = "support/natlab.rs"]
mod natlab;
mod support;

use natfleet::{fake_transmission, through_tunnel, Fleet, Node, NodeOpts, PORT, SECRET};
use natfull::FullNode;
use natlab::{Lab, Lan, PROXY_IP};
use p2pu::formats::announcement::{Announcement, Draft, Kind};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use support::{wait_for, Daemon};

const COTURN_PORT: u16 = 3479;

/// A real signed announcement's wire text, as `p2pu submit` would send it.
fn announcement(seq: u64) -> String {
    let key = p2pu::keys::generate();
    let draft = Draft {
        seq,
        name: "motd".into(),
        kind: Kind::Manifest,
        info_hash: [7; 20],
        len: 42,
        sha256: [9; 32],
    };
    Announcement::sign(draft, &key).expect("sign").to_wire()
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn wan_ip(lan: usize) -> IpAddr {
    IpAddr::V4(Lab::router_wan_ip(lan))
}

fn wait_spooled(node: &Node, count: usize) -> Vec<Vec<u8>> {
    wait_for(Duration::from_secs(5), || {
        let got = node.spooled();
        (got.len() >= count).then_some(got)
    })
    .unwrap_or_else(|| node.spooled())
}

#[test]
fn cone_nats_punch_a_direct_path_and_carry_an_announcement() {
    let fleet = Fleet::new(&[Lan::cone(1), Lan::cone(1), Lan::cone(1)]);
    let _proxy = fleet.start_proxy();
    let mut a = fleet.start_node(1, 0, "a", NodeOpts::default());
    let mut b = fleet.start_node(2, 0, "b", NodeOpts::default());
    let c = fleet.start_node(3, 0, "c", NodeOpts::default());

    // Registration through NAT: both the proxy and STUN see the router's WAN address.
    let status = a.status();
    assert_eq!(status.local.ip(), IpAddr::V4(Lab::node_ip(1, 0)));
    assert_eq!(status.mapped.map(|m| m.ip()), Some(wan_ip(1)));
    assert_eq!(status.proxy_sees, status.mapped);
    assert_eq!(b.status().mapped.map(|m| m.ip()), Some(wan_ip(2)));

    let (code, _, err) = a.event(&["talkto", "nobody"]);
    assert_eq!(code, 1);
    assert_eq!(err.trim(), "error: nobody: not registered with the proxy");
    assert_eq!(a.talkto("b"), "session with b: direct");
    let peer = wait_for(Duration::from_secs(3), || {
        b.status().peers.into_iter().find(|p| p.path == "direct")
    })
    .expect("b sees a direct session");
    assert_eq!(peer.node, "a");
    assert_eq!(peer.addr.map(|a| a.ip()), Some(wan_ip(1)));
    let a_status = a.status();
    assert_eq!(a_status.peers[0].addr.map(|a| a.ip()), Some(wan_ip(2)));
    assert_eq!(a_status.nat, "endpoint-independent");

    let wire = announcement(1);
    assert_eq!(a.announce(&wire), "delivered to b");
    let spooled = wait_spooled(&b, 1);
    assert_eq!(spooled, vec![wire.into_bytes()]);
    assert!(a.spooled().is_empty());

    // The bytes: a connection to a's tunnel end for b reaches b's Transmission port over QUIC
    // on the punched path.
    fake_transmission(&fleet.lab, &fleet.lab.node(2, 0), "b:");
    let sent = payload(256 * 1024);
    let answer = through_tunnel(&fleet.lab, &fleet.lab.node(1, 0), &a, "b", sent.clone());
    assert_eq!(answer.len(), sent.len() + 2);
    assert!(answer.starts_with(b"b:") && answer[2..] == sent[..]);
    let via = format!("via={}:{PORT}", wan_ip(2));
    assert!(a.daemon.log().contains(&via), "{}", a.daemon.log());

    // A new session peer is told about the others and joins them (shared peers).
    assert_eq!(a.talkto("c"), "session with c: direct");
    let joined = wait_for(Duration::from_secs(8), || {
        (c.peer_path("b").as_deref() == Some("direct")).then_some(())
    });
    assert!(joined.is_some(), "c did not join b: {:?}", c.status());

    // Ending a session ends it on both sides.
    assert_eq!(a.event(&["endsession", "c"]).0, 0);
    assert!(wait_for(Duration::from_secs(3), || {
        c.peer_path("a").is_none().then_some(())
    })
    .is_some());
    // `exit` says goodbye to the peers and stops the client.
    let (code, out, err) = b.event(&["exit"]);
    assert_eq!((code, out.trim()), (0, "nat-client exiting"), "{err}");
    assert!(wait_for(Duration::from_secs(3), || (!b.daemon.is_running())
        .then_some(()))
    .is_some());
    assert!(!b.socket.exists());
    assert!(wait_for(Duration::from_secs(3), || a
        .status()
        .peers
        .is_empty()
        .then_some(()))
    .is_some());
    let (code, _, err) = b.event(&["status"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: no p2pu nat-client is running"),
        "{err}"
    );
}

#[test]
fn symmetric_nats_on_both_sides_fall_back_to_the_relay() {
    let fleet = Fleet::new(&[Lan::symmetric(1), Lan::symmetric(1)]);
    let _proxy = fleet.start_proxy();
    let mut a = fleet.start_node(1, 0, "a", NodeOpts::default());
    let b = fleet.start_node(2, 0, "b", NodeOpts::default());

    assert_eq!(a.talkto("b"), "session with b: relayed");
    assert!(wait_for(Duration::from_secs(6), || {
        (b.peer_path("a").as_deref() == Some("relayed")).then_some(())
    })
    .is_some());
    let wire = announcement(2);
    assert_eq!(a.announce(&wire), "delivered to b");
    assert_eq!(wait_spooled(&b, 1), vec![wire.into_bytes()]);
    assert_eq!(a.peer_path("b").as_deref(), Some("relayed"));
    // The proxy's two STUN ports saw two different mappings.
    assert_eq!(a.status().nat, "address-dependent (symmetric)");

    // The bytes go through the proxy's relay (512 kbit/s in this lab), both ways.
    fake_transmission(&fleet.lab, &fleet.lab.node(2, 0), "b:");
    let sent = payload(48 * 1024);
    let answer = through_tunnel(&fleet.lab, &fleet.lab.node(1, 0), &a, "b", sent.clone());
    assert!(answer.starts_with(b"b:") && answer[2..] == sent[..]);
    assert!(
        a.daemon.log().contains("via=240.0.0."),
        "{}",
        a.daemon.log()
    );
}

/// The router forgets idle UDP mappings after 8 s. A client with a 5 s keepalive stays
/// reachable from the proxy after 20 s idle; one with a 29 s keepalive behind the same router
/// does not (the control that shows the short timeout is real).
#[test]
fn keepalive_holds_the_mapping_under_a_short_conntrack_timeout() {
    let lan = Lan {
        udp_timeout: Some(8),
        ..Lan::cone(2)
    };
    let fleet = Fleet::new(&[lan, Lan::cone(1)]);
    let _proxy = fleet.start_proxy();
    let kept = fleet.start_node(1, 0, "kept", NodeOpts::default());
    let lapsed = fleet.start_node(
        1,
        1,
        "lapsed",
        NodeOpts {
            keepalive: 29,
            ..NodeOpts::default()
        },
    );
    let mut b = fleet.start_node(2, 0, "b", NodeOpts::default());
    // Two members behind one NAT are two registrations (keyed by name, not address).
    let (k, l) = (kept.status(), lapsed.status());
    assert_eq!(k.mapped.map(|m| m.ip()), l.mapped.map(|m| m.ip()));
    assert_ne!(k.mapped, l.mapped);
    std::thread::sleep(Duration::from_secs(20));

    assert_eq!(b.talkto("kept"), "session with kept: direct");
    assert!(wait_for(Duration::from_secs(3), || {
        (kept.peer_path("b").as_deref() == Some("direct")).then_some(())
    })
    .is_some());

    // The proxy's punch request to `lapsed` dies at its router: it never learns of b.
    b.talkto("lapsed");
    assert!(lapsed.status().peers.is_empty());
}

#[test]
fn clients_register_again_after_a_proxy_restart() {
    let fleet = Fleet::new(&[Lan::cone(1), Lan::cone(1)]);
    let mut proxy = fleet.start_proxy();
    let mut a = fleet.start_node(1, 0, "a", NodeOpts::default());
    let b = fleet.start_node(2, 0, "b", NodeOpts::default());
    proxy.stop();
    let proxy = fleet.start_proxy();
    let back = wait_for(Duration::from_secs(12), || {
        let log = proxy.log();
        (log.contains("member=a") && log.contains("member=b")).then_some(())
    });
    assert!(
        back.is_some(),
        "no re-registration; proxy log:\n{}",
        proxy.log()
    );
    assert_eq!(a.talkto("b"), "session with b: direct");
    let wire = announcement(3);
    assert_eq!(a.announce(&wire), "delivered to b");
    assert_eq!(wait_spooled(&b, 1), vec![wire.into_bytes()]);
}

/// Regression (security issue #13, item 8): a second client with the fleet secret but its
/// own identity key registered as `a` and replaced a's mapped address and certificate hash.
/// The proxy binds `a` to a's key, also across a restart, and refuses the impostor.
#[test]
fn an_impostor_with_the_fleet_secret_cannot_take_over_a_name() {
    let fleet = Fleet::new(&[Lan::cone(1), Lan::cone(2)]);
    let mut proxy = fleet.start_proxy();
    let a = fleet.start_node(1, 0, "a", NodeOpts::default());
    let mut b = fleet.start_node(2, 0, "b", NodeOpts::default());
    let a_mapped = a.status().mapped;
    let mut impostor = fleet.start_impostor(2, 1, "a-impostor", "a");
    let refused = |proxy: &Daemon| {
        wait_for(Duration::from_secs(8), || {
            proxy
                .log()
                .contains("registration refused member=a ")
                .then_some(())
        })
    };
    assert!(refused(&proxy).is_some(), "{}", proxy.log());
    assert!(impostor.is_running(), "{}", impostor.failed("exited"));
    assert!(
        impostor.log().contains("the proxy refused"),
        "{}",
        impostor.log()
    );
    // b still reaches the real a, at a's address, and its tunnel certificate.
    assert_eq!(b.talkto("a"), "session with a: direct");
    let peer = b.status().peers.into_iter().find(|p| p.node == "a");
    assert_eq!(peer.and_then(|p| p.addr), a_mapped);
    let wire = announcement(5);
    assert_eq!(b.announce(&wire), "delivered to a");
    assert_eq!(wait_spooled(&a, 1), vec![wire.into_bytes()]);

    // A restarted proxy remembers the binding: with a away, only the impostor asks for the
    // name, and is refused; a, back, gets it.
    proxy.stop();
    drop(a);
    let proxy = fleet.start_proxy();
    assert!(refused(&proxy).is_some(), "{}", proxy.log());
    assert!(
        !proxy.log().contains("registered member=a "),
        "{}",
        proxy.log()
    );
    let _a = fleet.start_node(1, 0, "a", NodeOpts::default());
    let back = wait_for(Duration::from_secs(12), || {
        proxy.log().contains("registered member=b ").then_some(())
    });
    assert!(back.is_some(), "{}", proxy.log());
    assert_eq!(b.talkto("a"), "session with a: direct");
    let peer = b.status().peers.into_iter().find(|p| p.node == "a");
    assert_eq!(peer.and_then(|p| p.addr).map(|a| a.ip()), Some(wan_ip(1)));
}

#[test]
fn strangers_malformed_and_oversized_datagrams_are_dropped() {
    let fleet = Fleet::new(&[Lan::cone(2), Lan::cone(1)]);
    let mut proxy = fleet.start_proxy();
    let mut a = fleet.start_node(1, 0, "a", NodeOpts::default());
    let mut b = fleet.start_node(2, 0, "b", NodeOpts::default());
    assert_eq!(a.talkto("b"), "session with b: direct");

    use p2pu::nat::protocol::{encode, seal_raw, unix_now, Body, Payload, Secret};
    let wrong = Secret::new(b"not the fleet secret, but long").expect("secret");
    let right = Secret::new(SECRET.as_bytes()).expect("secret");
    let forged = |from: &str, body: Body| {
        let payload = Payload {
            from: from.into(),
            body,
        };
        encode(&wrong, unix_now(), rand::random(), &payload).expect("encode")
    };
    let announce = Body::Announce {
        id: 1,
        wire: announcement(9),
    };
    let mut garbage: Vec<Vec<u8>> = vec![
        forged(
            "a",
            Body::Register {
                local: "192.168.1.11:1".parse().unwrap(),
                keepalive_secs: 5,
                cert: String::new(),
                key: String::new(),
                sig: String::new(),
            },
        ),
        forged(
            "a",
            Body::Relay {
                to: "b".into(),
                inner: Box::new(announce.clone()),
            },
        ),
        forged("a", Body::TalkTo { target: "b".into() }),
        // Authentic framing, broken body.
        seal_raw(&right, unix_now(), 5, b"{\"from\":").expect("seal"),
        // Authentic but an hour old.
        encode(
            &right,
            unix_now() - 3600,
            6,
            &Payload {
                from: "a".into(),
                body: announce.clone(),
            },
        )
        .expect("encode"),
        b"\x2fP2P\x01truncated".to_vec(),
        vec![0x2f; 9000],
        vec![0; 20],
        vec![0xff; 1200],
        Vec::new(),
    ];
    for i in 0..200u8 {
        garbage.push(
            (0..(i as usize * 7))
                .map(|j| (j as u8).wrapping_mul(i))
                .collect(),
        );
    }
    // A stranger on the internet side talks to the proxy...
    let outside = fleet.lab.udp_socket(&fleet.lab.inet(), "100.64.0.1:0");
    outside
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    // ...and one on a's LAN talks to a directly.
    let inside = fleet.lab.udp_socket(&fleet.lab.node(1, 1), "0.0.0.0:0");
    let proxy_addr: SocketAddr = (PROXY_IP, PORT).into();
    let a_local: SocketAddr = (Lab::node_ip(1, 0), PORT).into();
    for datagram in &garbage {
        let _ = outside.send_to(datagram, proxy_addr);
        let _ = inside.send_to(datagram, a_local);
    }
    let _ = inside.send_to(&forged("b", announce), a_local);
    let mut buf = [0u8; 2048];
    assert!(
        outside.recv_from(&mut buf).is_err(),
        "the proxy answered a stranger"
    );

    // Everything still works for the fleet, and that is the evidence that the garbage was
    // dealt with: a's one socket takes datagrams in turn, and the garbage (and the forgery)
    // sat in it before this announcement came. Exactly this one is spooled, nothing else.
    let wire = announcement(4);
    assert_eq!(b.announce(&wire), "delivered to a");
    assert_eq!(wait_spooled(&a, 1), vec![wire.into_bytes()]);
    assert!(b.spooled().is_empty());
    assert!(proxy.is_running(), "{}", proxy.failed("crashed"));
    assert!(a.daemon.is_running(), "{}", a.daemon.failed("crashed"));
    assert_eq!(a.peer_path("b").as_deref(), Some("direct"));
}

/// Software nobody here wrote: coturn's STUN client reads its mapped address from `p2pu
/// proxy`, and `p2pu nat-client` learns its mapped address from coturn's STUN-only server.
#[test]
fn coturn_interop_both_ways() {
    let fleet = Fleet::new(&[Lan::cone(2)]);
    let _proxy = fleet.start_proxy();
    let turn_log = fleet.dir.path().join("turnserver.log");
    let mut turn = fleet.lab.command(&fleet.lab.inet(), "turnserver");
    turn.args([
        "-S",
        "-n",
        "--no-cli",
        "--no-tls",
        "--no-dtls",
        "--simple-log",
    ])
    .args(["--listening-ip", &PROXY_IP.to_string()])
    .args(["--listening-port", &COTURN_PORT.to_string()])
    .args(["--log-file", "stdout"]);
    let _turn = Daemon::spawn("turnserver", turn, &turn_log).expect("turnserver");

    let out = fleet
        .lab
        .command(&fleet.lab.node(1, 1), "turnutils_stunclient")
        .args(["-p", &PORT.to_string(), &PROXY_IP.to_string()])
        .output()
        .expect("turnutils_stunclient");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wan = wan_ip(1).to_string();
    assert!(
        text.lines()
            .any(|l| l.contains("reflexive") && l.contains(&wan)),
        "turnutils_stunclient did not read {wan}:\n{text}"
    );

    let a = fleet.start_node(
        1,
        0,
        "a",
        NodeOpts {
            stun_server: Some((PROXY_IP, COTURN_PORT).into()),
            ..NodeOpts::default()
        },
    );
    let status = a.status();
    assert_eq!(status.stun_server, (PROXY_IP, COTURN_PORT).into());
    assert_eq!(status.mapped.map(|m| m.ip()), Some(wan_ip(1)));
    assert!(a
        .daemon
        .log()
        .contains(&format!("server={PROXY_IP}:{COTURN_PORT}")));
}

/// A peer that vanishes without a goodbye (killed, its router gone) is dropped after
/// `peer_expiry_secs`, and its tunnel end closes.
#[test]
fn silent_session_peers_expire() {
    let fleet = Fleet::new(&[Lan::cone(1), Lan::cone(1)]);
    let _proxy = fleet.start_proxy();
    // b keeps alive every 5 s, so when it is killed a last heard from it up to 5 s before:
    // the "still there" look at 2 s after the kill is at most 7 s after, well inside 15 s,
    // however loaded the machine.
    let opts = || NodeOpts {
        peer_expiry: 15,
        ..NodeOpts::default()
    };
    let mut a = fleet.start_node(1, 0, "a", opts());
    let b = fleet.start_node(2, 0, "b", opts());
    assert_eq!(a.talkto("b"), "session with b: direct");
    assert!(a.status().peers[0].tunnel.is_some());
    let pid = nix::unistd::Pid::from_raw(b.daemon.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("killing b");
    // Still there within the expiry...
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(a.peer_path("b").as_deref(), Some("direct"));
    // ...gone after it.
    let gone = wait_for(Duration::from_secs(30), || {
        a.status().peers.is_empty().then_some(())
    });
    assert!(gone.is_some(), "{:?}", a.status());
}

/// A tracker on `ns`'s 127.0.0.1:6969 that hands every announce the same `peers` (compact),
/// as the agent's tracker does with the tunnel ends.
fn mini_tracker(lab: &Lab, ns: &str, peers: Vec<SocketAddr>) {
    let listener = lab.within(ns, || {
        std::net::TcpListener::bind(("127.0.0.1", 6969)).expect("tracker port")
    });
    let mut compact = Vec::new();
    for peer in &peers {
        if let IpAddr::V4(ip) = peer.ip() {
            compact.extend_from_slice(&ip.octets());
            compact.extend_from_slice(&peer.port().to_be_bytes());
        }
    }
    let mut body =
        format!("d8:intervali5e12:min intervali2e5:peers{}:", compact.len()).into_bytes();
    body.extend_from_slice(&compact);
    body.push(b'e');
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                request.push(byte[0]);
            }
            let head = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
}

/// Real Transmission 3.00 daemons in the two LANs: the one on LAN A downloads a torrent from
/// the one on LAN B, whose only way in is a's tunnel end for b (QUIC on the punched path).
#[test]
fn transmission_downloads_through_the_punched_tunnel() {
    transmission_through_the_tunnel(Lan::cone(1), 3 * 1024 * 1024 + 17, "direct");
}

/// The same where both NATs are symmetric: the QUIC packets go through the proxy's relay.
#[test]
fn transmission_downloads_through_the_relayed_tunnel() {
    transmission_through_the_tunnel(Lan::symmetric(1), 200 * 1024 + 17, "relayed");
}

fn transmission_through_the_tunnel(lan: Lan, len: usize, path: &str) {
    use p2pu::engines::{TorrentEngine, Transmission};
    let fleet = Fleet::new(&[lan, lan]);
    let _proxy = fleet.start_proxy();
    let mut a = fleet.start_node(1, 0, "a", NodeOpts::default());
    let b = fleet.start_node(2, 0, "b", NodeOpts::default());
    assert_eq!(a.talkto("b"), format!("session with b: {path}"));
    let end = wait_for(Duration::from_secs(3), || {
        a.status().peers.into_iter().find_map(|p| p.tunnel)
    })
    .expect("a tunnel end for b");
    assert_eq!(end.ip(), IpAddr::V4(Lab::node_ip(1, 0)));
    let (ns_a, ns_b) = (fleet.lab.node(1, 0), fleet.lab.node(2, 0));
    mini_tracker(&fleet.lab, &ns_a, vec![end]);
    mini_tracker(&fleet.lab, &ns_b, Vec::new());

    let start = |dir: PathBuf| {
        move || {
            let mut opts = support::TransmissionOpts::new(9091, 51413, "p2pu", "pw");
            opts.extra
                .insert("utp-enabled".into(), serde_json::Value::Bool(false));
            support::start_transmission_with(&dir, opts).expect("transmission-daemon")
        }
    };
    let seeder = fleet
        .lab
        .within(&ns_b, start(fleet.dir.path().join("b").join("bt")));
    let leecher = fleet
        .lab
        .within(&ns_a, start(fleet.dir.path().join("a").join("bt")));

    let content = payload(len);
    let file = seeder.download_dir.join("update.bin");
    std::fs::write(&file, &content).expect("content");
    let torrent = fleet.dir.path().join("update.torrent");
    let created = Command::new("transmission-create")
        .arg("-o")
        .arg(&torrent)
        .args(["-t", "http://127.0.0.1:6969/announce"])
        .arg(&file)
        .output()
        .expect("transmission-create");
    assert!(created.status.success(), "{created:?}");
    let metainfo = std::fs::read(&torrent).expect("torrent");

    let rpc = |d: &support::TransmissionDaemon| (d.url.clone(), d.credentials.clone());
    let (url, credentials) = rpc(&seeder);
    let (bytes, dir) = (metainfo.clone(), seeder.download_dir.clone());
    fleet.lab.within(&ns_b, move || {
        let client = Transmission::new(url, Some(credentials));
        let added = client
            .add_metainfo(&bytes, Some(&dir), false)
            .expect("seed");
        let seeding = wait_for(Duration::from_secs(20), || {
            let got = client.get(std::slice::from_ref(&added.hash_string)).ok()?;
            got.first().filter(|t| t.is_complete()).cloned()
        });
        assert!(seeding.is_some(), "the seeder did not verify its data");
    });
    let (url, credentials) = rpc(&leecher);
    let dir = leecher.download_dir.clone();
    let done = fleet.lab.within(&ns_a, move || {
        let client = Transmission::new(url, Some(credentials));
        let added = client
            .add_metainfo(&metainfo, Some(&dir), false)
            .expect("leech");
        wait_for(Duration::from_secs(60), || {
            let got = client.get(std::slice::from_ref(&added.hash_string)).ok()?;
            got.first().filter(|t| t.is_complete()).cloned()
        })
    });
    assert!(
        done.is_some(),
        "no download through the tunnel; a's log:\n{}\nleecher:\n{}",
        a.daemon.log(),
        leecher.daemon.log()
    );
    let got = std::fs::read(leecher.download_dir.join("update.bin")).expect("downloaded file");
    assert!(got == content, "the downloaded bytes differ");
    assert_eq!(a.peer_path("b").as_deref(), Some(path));
    drop(b);
}

/// Issue 6 end to end across two NATs: `talkto`, then `sendfile` of a manifest on a's LAN;
/// b's agent gets the announcement over the overlay, the metainfo and the payload over HTTP
/// from a's web seed server through b's seed end for a (issue 30: not Transmission's magnet
/// path, which took 31-34 s), checks them as every HTTP source and applies it with Puppet.
/// b's tracker still lists its tunnel end for a for Transmission.
///
/// Needs the tunnel to strip `p` from the extension handshakes (see `nat::tunnel::pipe`)
/// and PEX off on NAT nodes.
#[test]
fn sendfile_across_cone_nats_is_applied_over_the_punched_path() {
    let via = [
        format!("via={}:{PORT}", wan_ip(2)),
        format!("via={}:{PORT}", wan_ip(1)),
    ];
    sendfile_across_nats(Lan::cone(1), "direct", via);
}

/// The same where both NATs are symmetric: the bytes go through the proxy's relay.
#[test]
fn sendfile_across_symmetric_nats_is_applied_over_the_relay() {
    let via = ["via=240.0.0.".to_owned(), "via=240.0.0.".to_owned()];
    sendfile_across_nats(Lan::symmetric(1), "relayed", via);
}

/// Issue 30's seed end is a door to a's web seed server, which admits a's own address: b's
/// seed end for a takes connections from b's host only, so a stranger on b's LAN (another
/// machine there) gets nothing from a's seed server, while b's own agent gets its answer.
#[test]
fn a_seed_end_refuses_other_hosts_on_its_lan() {
    let fleet = Fleet::new(&[Lan::cone(1), Lan::cone(2)]);
    let _proxy = fleet.start_proxy();
    let mut configs = fleet.full_configs(&[(1, 0, "a"), (2, 0, "b")]).into_iter();
    let mut a = fleet.start_full(1, 0, configs.next().expect("a"));
    let b = fleet.start_full(2, 0, configs.next().expect("b"));
    assert_eq!(a.nat.talkto("b"), "session with b: direct");
    let end = wait_for(Duration::from_secs(3), || {
        b.nat.status().peers.into_iter().find_map(|p| p.seed)
    })
    .expect("b has a seed end for a");
    let ask = move || {
        let mut stream = std::net::TcpStream::connect(end).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream
            .write_all(b"GET /nothing.torrent HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        Some(String::from_utf8_lossy(&answer).into_owned())
    };
    let own = fleet.lab.within(&b.ns, ask).unwrap_or_default();
    assert!(own.starts_with("HTTP/1.1 "), "b's own request: {own:?}");
    let stranger = fleet
        .lab
        .within(&fleet.lab.node(2, 1), ask)
        .unwrap_or_default();
    assert!(
        !stranger.contains("HTTP/"),
        "a stranger on b's LAN reached a's seed server: {stranger:?}"
    );
}

fn logs(lab: &Lab, a: &FullNode, b: &FullNode) -> String {
    format!("{}{}", a.dump_logs(lab), b.dump_logs(lab))
}

/// `via`: what a's and b's client log when a stream of theirs crosses the expected path.
fn sendfile_across_nats(lan: Lan, path: &str, via: [String; 2]) {
    let fleet = Fleet::new(&[lan, lan]);
    let _proxy = fleet.start_proxy();
    let mut configs = fleet.full_configs(&[(1, 0, "a"), (2, 0, "b")]).into_iter();
    let mut a = fleet.start_full(1, 0, configs.next().expect("a"));
    let b = fleet.start_full(2, 0, configs.next().expect("b"));

    assert_eq!(a.nat.talkto("b"), format!("session with b: {path}"));
    let end = wait_for(Duration::from_secs(3), || {
        b.nat.status().peers.into_iter().find_map(|p| p.tunnel)
    })
    .expect("b has a tunnel end for a");
    assert_eq!(end.ip(), IpAddr::V4(Lab::node_ip(2, 0)));
    // b's agent hands its tunnel end for a to Transmission (it reads the ends every 2 s).
    let listed = wait_for(Duration::from_secs(5), || {
        b.tracker_peers(&fleet.lab).contains(&end).then_some(())
    });
    assert!(listed.is_some(), "b's tracker does not list {end}");

    let manifest = fleet.dir.path().join("motd.pp");
    std::fs::write(
        &manifest,
        "file { \"${settings::vardir}/motd.out\": content => \"across the NAT\\n\" }\n",
    )
    .expect("manifest");
    let sent = std::time::Instant::now();
    let (code, out, err) = a.p2pu(
        &fleet.lab,
        &["event", "sendfile", manifest.to_str().expect("utf-8")],
    );
    assert_eq!(
        code,
        0,
        "sendfile: {out}{err}\n{}",
        logs(&fleet.lab, &a, &b)
    );
    assert!(out.contains("submitted motd.pp"), "{out}");
    assert!(out.contains("delivered to b"), "{out}");

    use p2pu::agent::runtime::state::Status;
    let applied = wait_for(Duration::from_secs(60), || {
        (b.update_status(&fleet.lab, "motd.pp") == Some(Status::Applied)).then_some(())
    });
    let took = sent.elapsed();
    assert!(
        applied.is_some(),
        "not applied on b ({:?}) after {took:?}\n{}",
        b.update_status(&fleet.lab, "motd.pp"),
        logs(&fleet.lab, &a, &b)
    );
    eprintln!("sendfile to applied on b over the {path} path: {took:?}");
    let out = std::fs::read_to_string(b.info.dir.join("puppet/var/motd.out")).expect("applied");
    assert_eq!(out, "across the NAT\n");
    // The tunnel is up on this path, and the payload came through b's seed end for a (its
    // record names the source), not by Transmission.
    assert_eq!(b.nat.peer_path("a").as_deref(), Some(path));
    let crossed = a.nat.daemon.log().contains(&via[0]) || b.nat.daemon.log().contains(&via[1]);
    assert!(crossed, "no tunnel {via:?}\n{}", logs(&fleet.lab, &a, &b));
    let seed_end = b
        .nat
        .status()
        .peers
        .into_iter()
        .find_map(|p| p.seed)
        .expect("b has a seed end for a");
    let store =
        p2pu::agent::runtime::state::StateStore::open_read_only(&b.info.site.agent.state_dir);
    let records = store.records("motd.pp").expect("b's records");
    let sources: Vec<String> = records
        .iter()
        .flat_map(|r| r.sources.iter().map(|s| s.addr.clone()))
        .collect();
    assert!(
        sources.contains(&seed_end.to_string()),
        "b's sources {sources:?}, not its seed end {seed_end}\n{}",
        logs(&fleet.lab, &a, &b)
    );
}
