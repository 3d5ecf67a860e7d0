//! The agent's tracker and web seed server over real HTTP on loopback, and the tracker driven by
//! a real `transmission-daemon` 3.00 through a magnet link.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use p2pu::agent::transfer::seed_http::SeedServer;
use p2pu::agent::transfer::tracker::{Announce, Event, PeerSource, Tracker};
use p2pu::lab::Daemon;
use serde::Deserialize;

/// A fleet whose peers are fixed, recording every announce it is told about.
#[derive(Default)]
struct FakeFleet {
    peers: Vec<SocketAddr>,
    priority: Vec<SocketAddr>,
    announces: Mutex<Vec<(Announce, SocketAddr)>>,
}

impl PeerSource for FakeFleet {
    fn peers(&self, _: &[u8; 20]) -> Vec<SocketAddr> {
        self.peers.clone()
    }
    fn priority_peers(&self, _: &[u8; 20]) -> Vec<SocketAddr> {
        self.priority.clone()
    }
    fn announced(&self, announce: &Announce, from: SocketAddr) {
        self.announces
            .lock()
            .unwrap()
            .push((announce.clone(), from));
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    complete: u32,
    incomplete: u32,
    interval: u64,
    #[serde(rename = "min interval")]
    min_interval: u64,
    #[serde(with = "serde_bytes")]
    peers: Vec<u8>,
}

#[derive(Debug, Deserialize)]
struct FailureAnswer {
    #[serde(rename = "failure reason")]
    reason: String,
}

const INFO_HASH: [u8; 20] = [
    0x9a, 0xd3, 0x00, 0x26, 0x3d, 0x25, 0x20, 0xff, 0x80, b'a', b'/', b'?', b'#', 7, 8, 9, 10, 11,
    12, 13,
];

fn escaped(bytes: &[u8]) -> String {
    percent_encoding::percent_encode(bytes, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn get(url: &str) -> (u16, Vec<u8>) {
    let response = match ureq::get(url).call() {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(e) => panic!("GET {url}: {e}"),
    };
    let status = response.status();
    let mut body = Vec::new();
    response.into_reader().read_to_end(&mut body).unwrap();
    (status, body)
}

/// Sends `request` as is (ureq would normalise `..` away) and returns the status code.
fn raw_status(addr: SocketAddr, request: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out.get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {out:?}"))
}

fn announce_query(port: u32, extra: &str) -> String {
    format!(
        "info_hash={}&peer_id=-TR3000-abcdefghijkl&port={port}&uploaded=0&downloaded=0&left=42\
         &compact=1{extra}",
        escaped(&INFO_HASH)
    )
}

#[test]
fn tracker_answers_fleet_peers_over_http() {
    let fleet = Arc::new(FakeFleet {
        peers: vec!["10.99.1.2:51413".parse().unwrap()],
        priority: vec!["10.99.1.3:51414".parse().unwrap()],
        ..FakeFleet::default()
    });
    let tracker = Tracker::start("127.0.0.1:0".parse().unwrap(), fleet.clone()).unwrap();
    assert_eq!(tracker.addr().ip().to_string(), "127.0.0.1");
    assert_ne!(tracker.addr().port(), 0);
    let url = tracker.announce_url();
    assert_eq!(
        url,
        format!("http://127.0.0.1:{}/announce", tracker.addr().port())
    );

    let (status, body) = get(&format!("{url}?{}", announce_query(6881, "&event=started")));
    assert_eq!(status, 200);
    let answer: Answer = serde_bencode::from_bytes(&body).unwrap();
    assert_eq!((answer.interval, answer.min_interval), (30, 10));
    // The fleet peer not known to hold the payload counts as a leecher.
    assert_eq!((answer.complete, answer.incomplete), (1, 2));
    // The priority peer (has the payload) comes first.
    assert_eq!(
        answer.peers,
        [10, 99, 1, 3, 0xc8, 0xd6, 10, 99, 1, 2, 0xc8, 0xd5]
    );

    let announces = fleet.announces.lock().unwrap();
    let (announce, from) = &announces[0];
    assert_eq!(announce.info_hash, INFO_HASH);
    assert_eq!(
        (announce.port, announce.left, announce.event),
        (6881, 42, Event::Started)
    );
    assert!(from.ip().is_loopback());
}

#[test]
fn tracker_refuses_bad_announces_and_other_paths() {
    let tracker = Tracker::start(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(FakeFleet::default()),
    )
    .unwrap();
    let url = tracker.announce_url();

    let (status, body) = get(&format!("{url}?{}", announce_query(70000, "")));
    assert_eq!(status, 200, "trackers refuse in the body");
    let failure: FailureAnswer = serde_bencode::from_bytes(&body).unwrap();
    assert_eq!(failure.reason, "`port` is \"70000\", want 1-65535");

    let (_, body) = get(&format!("{url}?info_hash=%01%02&port=1"));
    let failure: FailureAnswer = serde_bencode::from_bytes(&body).unwrap();
    assert_eq!(failure.reason, "`info_hash` is 2 bytes, want 20");

    let base = format!("http://{}", tracker.addr());
    for path in ["/scrape", "/", "/announce/x", "/favicon.ico"] {
        assert_eq!(get(&format!("{base}{path}")).0, 404, "{path}");
    }
    let huge = "x".repeat(10_000);
    let status = raw_status(
        tracker.addr(),
        &format!("GET /announce?{huge} HTTP/1.1\r\nHost: t\r\n\r\n"),
    );
    assert_eq!(status, 431);
    let status = raw_status(tracker.addr(), "POST /announce HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status, 405);
}

#[test]
fn tracker_stops_on_drop() {
    let tracker = Tracker::start(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(FakeFleet::default()),
    )
    .unwrap();
    let addr = tracker.addr();
    drop(tracker);
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after drop"
    );
}

fn seed_root() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let payload: Vec<u8> = (0..1000u32).map(|n| (n % 251) as u8).collect();
    std::fs::write(root.join("payload.bin"), &payload).unwrap();
    std::fs::write(dir.path().join("secret"), b"outside").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret"), root.join("escape")).unwrap();
    std::os::unix::fs::symlink("payload.bin", root.join("alias")).unwrap();
    std::fs::create_dir(root.join("sub")).unwrap();
    nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    (dir, root)
}

#[test]
fn seed_server_serves_files_and_ranges() {
    let (_dir, root) = seed_root();
    let payload = std::fs::read(root.join("payload.bin")).unwrap();
    let seed = SeedServer::start("127.0.0.1:0".parse().unwrap(), &root).unwrap();
    let base = seed.base_url();
    assert_eq!(base, format!("http://{}/", seed.addr()));

    let (status, body) = get(&format!("{base}payload.bin"));
    assert_eq!((status, body.as_slice()), (200, payload.as_slice()));
    // A symlink that stays inside the root is fine.
    assert_eq!(get(&format!("{base}alias")).1, payload);

    let ranged = |range: &str| {
        let response = match ureq::get(&format!("{base}payload.bin"))
            .set("Range", range)
            .call()
        {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{e}"),
        };
        let status = response.status();
        let content_range = response.header("Content-Range").map(str::to_string);
        let mut body = Vec::new();
        response.into_reader().read_to_end(&mut body).unwrap();
        (status, content_range, body)
    };
    let (status, content_range, body) = ranged("bytes=10-19");
    assert_eq!(status, 206);
    assert_eq!(content_range.as_deref(), Some("bytes 10-19/1000"));
    assert_eq!(body, &payload[10..20]);
    let (status, content_range, body) = ranged("bytes=990-");
    assert_eq!(
        (status, content_range.as_deref()),
        (206, Some("bytes 990-999/1000"))
    );
    assert_eq!(body, &payload[990..]);
    let (status, _, body) = ranged("bytes=-5");
    assert_eq!((status, body.as_slice()), (206, &payload[995..]));
    let (status, content_range, _) = ranged("bytes=1000-1001");
    assert_eq!(
        (status, content_range.as_deref()),
        (416, Some("bytes */1000"))
    );

    let head = ureq::head(&format!("{base}payload.bin")).call().unwrap();
    assert_eq!(head.header("Content-Length"), Some("1000"));
    assert_eq!(head.header("Accept-Ranges"), Some("bytes"));
}

#[test]
fn seed_server_refuses_traversal_and_non_files() {
    let (_dir, root) = seed_root();
    let seed = SeedServer::start("127.0.0.1:0".parse().unwrap(), &root).unwrap();
    for path in [
        "/../etc/passwd",
        "/%2e%2e/etc/passwd",
        "/%2e%2e%2fsecret",
        "/..%2fsecret",
        "/escape",
        "/sub",
        "/fifo",
        "/sub/../payload.bin",
        "/",
        "/missing",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
    ] {
        let status = raw_status(
            seed.addr(),
            &format!("GET {path} HTTP/1.1\r\nHost: s\r\n\r\n"),
        );
        assert_eq!(status, 404, "{path}");
    }
    let status = raw_status(seed.addr(), "PUT /payload.bin HTTP/1.1\r\nHost: s\r\n\r\n");
    assert_eq!(status, 405);
}

#[test]
fn seed_server_needs_an_existing_root() {
    let dir = tempfile::tempdir().unwrap();
    let Err(e) = SeedServer::start("127.0.0.1:0".parse().unwrap(), &dir.path().join("nope")) else {
        panic!("started on a missing root");
    };
    assert!(p2pu::error::chain(&e).contains("nope"), "{e}");
}

/// A `transmission-daemon` in the foreground with everything under a temp dir; stopped on
/// drop (the lab's process guard), before its dir goes.
struct Transmission {
    daemon: Daemon,
    rpc_url: String,
    peer_port: u16,
    session: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Transmission {
    fn start() -> Transmission {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        let downloads = dir.path().join("downloads");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::create_dir_all(&downloads).unwrap();
        let rpc_port = free_port();
        let peer_port = free_port();
        let settings = serde_json::json!({
            "rpc-enabled": true,
            "rpc-bind-address": "127.0.0.1",
            "rpc-port": rpc_port,
            "rpc-authentication-required": false,
            "rpc-whitelist-enabled": true,
            "rpc-whitelist": "127.0.0.1",
            "rpc-host-whitelist-enabled": false,
            "dht-enabled": false,
            "lpd-enabled": false,
            "pex-enabled": false,
            "utp-enabled": false,
            "port-forwarding-enabled": false,
            "peer-port": peer_port,
            "peer-port-random-on-start": false,
            "bind-address-ipv4": "127.0.0.1",
            "download-dir": downloads,
            "incomplete-dir-enabled": false,
            "watch-dir-enabled": false,
            "message-level": 2,
        });
        std::fs::write(
            config.join("settings.json"),
            serde_json::to_vec_pretty(&settings).unwrap(),
        )
        .unwrap();
        let mut command = Command::new("transmission-daemon");
        command.arg("-f").arg("-g").arg(&config);
        let daemon = Daemon::spawn(
            "transmission-daemon",
            command,
            &dir.path().join("daemon.log"),
        )
        .unwrap_or_else(|e| {
            panic!(
                "{} (is transmission-daemon installed?)",
                p2pu::error::chain(&e)
            )
        });
        let mut daemon = Transmission {
            daemon,
            rpc_url: format!("http://127.0.0.1:{rpc_port}/transmission/rpc"),
            peer_port,
            session: String::new(),
            _dir: dir,
        };
        daemon.wait_for_rpc();
        daemon
    }

    fn wait_for_rpc(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !self.daemon.is_running() {
                panic!("{}", self.daemon.failed("exited"));
            }
            match ureq::post(&self.rpc_url).call() {
                Ok(_) | Err(ureq::Error::Status(..)) => return,
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        panic!("transmission RPC not up after 10 s: {}", self.log_text());
    }

    /// One RPC call, doing the X-Transmission-Session-Id handshake on a 409.
    fn rpc(&mut self, method: &str, arguments: serde_json::Value) -> serde_json::Value {
        let body = serde_json::json!({ "method": method, "arguments": arguments });
        for _ in 0..3 {
            match ureq::post(&self.rpc_url)
                .set("X-Transmission-Session-Id", &self.session)
                .send_json(&body)
            {
                Ok(response) => {
                    let reply: serde_json::Value = response.into_json().unwrap();
                    assert_eq!(reply["result"], "success", "{method}: {reply}");
                    return reply["arguments"].clone();
                }
                Err(ureq::Error::Status(409, response)) => {
                    self.session = response
                        .header("X-Transmission-Session-Id")
                        .expect("a 409 carries the session id")
                        .to_string();
                }
                Err(e) => panic!("{method}: {e}: {}", self.log_text()),
            }
        }
        panic!("{method}: no session id accepted");
    }

    fn log_text(&self) -> String {
        self.daemon.log()
    }
}

fn wait_for<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = probe() {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn transmission_announces_a_magnet_to_the_tracker_and_takes_its_peers() {
    let fleet = Arc::new(FakeFleet {
        // Not loopback (Transmission drops 127/8 as martian); nothing listens there.
        peers: vec![
            "10.255.0.1:51413".parse().unwrap(),
            "10.255.0.2:51413".parse().unwrap(),
        ],
        ..FakeFleet::default()
    });
    let tracker = Tracker::start("127.0.0.1:0".parse().unwrap(), fleet.clone()).unwrap();
    let mut daemon = Transmission::start();
    let info_hash: [u8; 20] = *b"p2pu-tracker-test-01";
    let magnet = format!(
        "magnet:?xt=urn:btih:{}&dn=p2pu-test&tr={}",
        hex::encode(info_hash),
        escaped(tracker.announce_url().as_bytes())
    );
    let added = daemon.rpc(
        "torrent-add",
        serde_json::json!({ "filename": magnet, "paused": false }),
    );
    assert!(added.get("torrent-added").is_some(), "{added}");

    let announce = wait_for(Duration::from_secs(15), || {
        fleet
            .announces
            .lock()
            .unwrap()
            .iter()
            .find(|(a, _)| a.info_hash == info_hash)
            .cloned()
    });
    let Some((announce, from)) = announce else {
        panic!("no announce within 15 s: {}", daemon.log_text());
    };
    assert!(from.ip().is_loopback(), "{from}");
    assert_eq!(announce.port, daemon.peer_port);
    assert_eq!(announce.event, Event::Started);
    assert!(
        announce.peer_id.starts_with(b"-TR"),
        "{:?}",
        announce.peer_id
    );

    // Transmission accepted the bencoded answer and counted the fleet's two peers.
    let stats = wait_for(Duration::from_secs(10), || {
        let got = daemon.rpc(
            "torrent-get",
            serde_json::json!({ "fields": ["trackerStats"] }),
        );
        let stats = got["torrents"][0]["trackerStats"][0].clone();
        (stats["lastAnnounceSucceeded"] == true).then_some(stats)
    });
    let Some(stats) = stats else {
        panic!(
            "Transmission never saw a successful announce: {}",
            daemon.log_text()
        );
    };
    assert_eq!(stats["lastAnnouncePeerCount"], 2, "{stats}");
}

#[test]
fn transmission_downloads_a_torrent_from_the_web_seed_server() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    // Not a whole number of pieces, so the last range request is a short one.
    let payload: Vec<u8> = (0..300_001u32)
        .map(|n| (n.wrapping_mul(7) % 253) as u8)
        .collect();
    std::fs::write(root.join("payload.bin"), &payload).unwrap();
    let seed = SeedServer::start("127.0.0.1:0".parse().unwrap(), &root).unwrap();
    // No fleet: every byte has to come from the web seed.
    let tracker = Tracker::start(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(FakeFleet::default()),
    )
    .unwrap();
    let torrent = dir.path().join("payload.torrent");
    let made = Command::new("mktorrent")
        .args([
            "-l",
            "15",
            "-a",
            &tracker.announce_url(),
            "-w",
            &seed.base_url(),
            "-o",
        ])
        .arg(&torrent)
        .arg(root.join("payload.bin"))
        .output()
        .expect("mktorrent is installed");
    assert!(
        made.status.success(),
        "mktorrent: {}",
        String::from_utf8_lossy(&made.stderr)
    );

    let mut daemon = Transmission::start();
    let metainfo = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        std::fs::read(&torrent).unwrap(),
    );
    let added = daemon.rpc(
        "torrent-add",
        serde_json::json!({ "metainfo": metainfo, "paused": false }),
    );
    assert!(added.get("torrent-added").is_some(), "{added}");
    let started = Instant::now();
    let done = wait_for(Duration::from_secs(20), || {
        let got = daemon.rpc(
            "torrent-get",
            serde_json::json!({ "fields": ["percentDone", "downloadDir", "name"] }),
        );
        let torrent = got["torrents"][0].clone();
        (torrent["percentDone"] == 1).then_some(torrent)
    });
    let Some(torrent) = done else {
        panic!(
            "not downloaded from the web seed in 20 s: {}",
            daemon.log_text()
        );
    };
    eprintln!("web seed download took {:?}", started.elapsed());
    let dir = torrent["downloadDir"].as_str().unwrap();
    let name = torrent["name"].as_str().unwrap();
    assert_eq!(std::fs::read(Path::new(dir).join(name)).unwrap(), payload);
}

#[test]
fn seed_server_answers_fleet_members_only() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (_dir, root) = seed_root();
    let payload = std::fs::read(root.join("payload.bin")).unwrap();
    // Membership as the agent's FleetPeers would answer it, switched by the test.
    let member = Arc::new(AtomicBool::new(true));
    let asked = member.clone();
    let allow =
        Arc::new(move |ip: std::net::IpAddr| ip.is_loopback() && asked.load(Ordering::SeqCst));
    let seed = SeedServer::start_for("127.0.0.1:0".parse().unwrap(), &root, allow).unwrap();
    let url = format!("{}payload.bin", seed.base_url());
    assert_eq!(get(&url), (200, payload));
    member.store(false, Ordering::SeqCst);
    let (status, body) = get(&url);
    assert_eq!(status, 403);
    assert!(body.len() < 100, "a stranger got {} bytes", body.len());
}
