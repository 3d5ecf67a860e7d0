//! The LAN update flow end to end, on a lab of 4 nodes in a network namespace, each with its
//! own real serf agent, transmission-daemon, `p2pu agent` and puppet: submit on node 1, every
//! node verifies, downloads from its peers and applies, exactly once.

mod support;

use p2pu::agent::runtime::state::Status;
use p2pu::agent::runtime::status::MemberReport;
use p2pu::agent::runtime::status::StatusReport;
use p2pu::lab::{Lab, LabOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::testlab::{ok, TestLab};

const NODES: usize = 4;
const ROLLOUT: Duration = Duration::from_secs(180);

fn start(dir: &Path, accept_legacy: bool) -> TestLab {
    let mut options = LabOptions::new(NODES, dir.join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    options.start_agent = true;
    options.accept_legacy = accept_legacy;
    TestLab(Lab::start(options).expect("lab starts"))
}

fn submit(lab: &Lab, path: &Path, extra: &[&str]) -> String {
    let mut args = vec!["submit", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    ok(lab.p2pu(1, &args).unwrap())
}

fn status(lab: &Lab, node: usize) -> StatusReport {
    let out = lab.p2pu(node, &["status", "--json"]).unwrap();
    // 3: some update failed on this node, which some tests wait for.
    assert!(matches!(out.status.code(), Some(0 | 3)), "{out:?}");
    p2pu::cmd::json::decode(&out.stdout).unwrap()
}

fn status_of(lab: &Lab, node: usize, name: &str) -> Option<Status> {
    status(lab, node)
        .updates
        .into_iter()
        .find(|u| u.name == name)
        .map(|u| u.status)
}

/// Waits until `name` reached `want` on every node; shows every node's state on time-out.
fn wait_everywhere(lab: &Lab, name: &str, want: Status) {
    let deadline = Instant::now() + ROLLOUT;
    loop {
        let states: Vec<Option<Status>> = (1..=NODES).map(|i| status_of(lab, i, name)).collect();
        if states.iter().all(|s| *s == Some(want)) {
            return;
        }
        if Instant::now() > deadline {
            let all: Vec<_> = (1..=NODES).map(|i| status(lab, i)).collect();
            panic!("{name} did not reach {want:?} everywhere: {states:?}\n{all:#?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn vardir(lab: &Lab, node: usize) -> PathBuf {
    lab.node(node).unwrap().dir.join("puppet/var")
}

/// A manifest that leaves a file and counts its runs in each node's own Puppet vardir.
fn manifest(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    let text = format!(
        "file {{ \"${{settings::vardir}}/{name}.out\": content => \"{content}\\n\" }}\n\
         exec {{ 'count {name}': command => \"/bin/sh -c 'echo run >> ${{settings::vardir}}/{name}.count'\" }}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn runs(lab: &Lab, node: usize, name: &str) -> usize {
    std::fs::read_to_string(vardir(lab, node).join(format!("{name}.count")))
        .map_or(0, |t| t.lines().count())
}

fn tar_gz(path: &Path, members: &[(&str, &[u8])]) {
    let file = std::fs::File::create(path).unwrap();
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::fast(),
    ));
    for (name, data) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        // Written raw: the builder refuses `..`, which is what the hostile test needs.
        let bytes = name.as_bytes();
        header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        header.set_cksum();
        tar.append(&header, *data).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
}

#[test]
fn manifest_module_and_archive_are_applied_on_every_node_and_fleet_status_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start(dir.path(), false);
    let site = manifest(dir.path(), "site.pp", "hello");
    let module = dir.path().join("acme-motd-0.1.0.tar.gz");
    tar_gz(
        &module,
        &[
            ("acme-motd-0.1.0/metadata.json", br#"{"name":"acme-motd","version":"0.1.0","author":"acme","summary":"t","license":"MIT","source":"t","dependencies":[]}"#),
            ("acme-motd-0.1.0/manifests/init.pp", b"class motd { }\n"),
        ],
    );
    let archive = dir.path().join("web.tar.gz");
    tar_gz(&archive, &[("web/index.html", b"<h1>p2pu</h1>\n")]);

    // Two updates of different names in the same second, then a third.
    let first = submit(&lab, &site, &[]);
    assert!(first.starts_with("submitted site.pp seq "), "{first}");
    submit(&lab, &module, &[]);
    submit(&lab, &archive, &["--wait", "--timeout", "180"]);
    wait_everywhere(&lab, "site.pp", Status::Applied);
    wait_everywhere(&lab, "acme-motd-0.1.0.tar.gz", Status::Applied);
    for node in 1..=NODES {
        let out = std::fs::read_to_string(vardir(&lab, node).join("site.pp.out")).unwrap();
        assert_eq!(out, "hello\n");
        assert_eq!(
            runs(&lab, node, "site.pp"),
            1,
            "node {node} applied site.pp more than once"
        );
        let info = lab.node(node).unwrap();
        assert!(
            info.dir
                .join("puppet/modules/motd/manifests/init.pp")
                .exists(),
            "module on node {node}"
        );
        let index = info
            .site
            .agent
            .archive_dir
            .join("web.tar.gz/web/index.html");
        assert_eq!(
            std::fs::read_to_string(&index).unwrap(),
            "<h1>p2pu</h1>\n",
            "archive on node {node}"
        );
        // Issue #13: each update is applied from a root-only verified copy, removed after.
        let verified = p2pu::agent::transfer::verified::root_of(&info.site.agent.state_dir);
        assert_eq!(
            std::fs::read_dir(&verified).map(|d| d.count()).unwrap_or(0),
            0,
            "verified copies left on node {node}"
        );
    }
    let reports: Vec<MemberReport> = p2pu::cmd::json::decode(
        ok(lab.p2pu(2, &["fleet", "status", "--json"]).unwrap()).as_bytes(),
    )
    .unwrap();
    assert_eq!(reports.len(), NODES);
    for report in &reports {
        let updates = report.updates.as_ref().expect("every node answers");
        for name in ["site.pp", "acme-motd-0.1.0.tar.gz", "web.tar.gz"] {
            let update = updates.iter().find(|u| u.name == name).expect(name);
            assert_eq!(update.status, Status::Applied, "{} {name}", report.node);
        }
        assert!(report.newest_age_secs.is_some());
        // Each node says which p2pu answers, and where it is.
        assert_eq!(report.version.as_deref(), Some(p2pu::cmd::VERSION));
        assert!(report.addr.ends_with(":7946"), "{}", report.addr);
    }
}

/// A payload over the direct-fetch size travels down the relay chain (node 1 → 2 → 3 → 4,
/// the members ordered by address from the submitter), so node 1's uplink carries it once;
/// then every node seeds it in Transmission for nodes that fetch by BitTorrent.
#[test]
fn a_large_archive_travels_down_the_relay_chain_and_every_node_seeds_it() {
    use p2pu::engines::TorrentEngine;
    use rand::RngCore;
    let dir = tempfile::tempdir().unwrap();
    let lab = start(dir.path(), false);
    let mut noise = vec![0u8; 6 << 20];
    rand::thread_rng().fill_bytes(&mut noise);
    let archive = dir.path().join("big.tar.gz");
    tar_gz(&archive, &[("big/noise.bin", &noise)]);
    submit(&lab, &archive, &[]);
    wait_everywhere(&lab, "big.tar.gz", Status::Applied);
    let info_hash = status(&lab, 1).updates[0].info_hash.clone();
    for node in 2..=NODES {
        let info = lab.node(node).unwrap();
        let unpacked = std::fs::read(info.site.agent.archive_dir.join("big.tar.gz/big/noise.bin"));
        assert!(unpacked.unwrap() == noise, "archive on node {node}");
        let log = std::fs::read_to_string(info.log("agent")).unwrap();
        let received: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("received over HTTP") && l.contains("big.tar.gz"))
            .collect();
        let parent = format!("source=10.99.1.{}:", node - 1);
        assert!(
            received.len() == 1 && received[0].contains(&parent),
            "node {node} should receive it all from node {}: {received:?}",
            node - 1
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for node in 1..=NODES {
        let transmission = lab.transmission(node).unwrap();
        loop {
            let hashes = std::slice::from_ref(&info_hash);
            let torrents = lab.in_netns(|| transmission.get(hashes)).unwrap().unwrap();
            if torrents.first().is_some_and(|t| t.is_complete()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {node} does not seed it: {torrents:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

#[test]
fn replays_downgrades_tampering_and_strangers_are_rejected_with_reasons() {
    use p2pu::formats::announcement::{Announcement, Draft, Kind};
    let dir = tempfile::tempdir().unwrap();
    let lab = start(dir.path(), false);
    let site = manifest(dir.path(), "base.pp", "v2");
    submit(
        &lab,
        &site,
        &["--seq", "2000", "--wait", "--timeout", "180"],
    );
    let wire =
        p2pu::agent::runtime::state::StateStore::open(&lab.node(2).unwrap().site.agent.state_dir)
            .unwrap()
            .records("base.pp")
            .unwrap()[0]
            .wire
            .clone();

    // The same announcement again (a re-send: dropped as known, not a rejection); another one
    // under the same seq (a replay); an older seq signed by the real key; a tampered copy; a
    // stranger's key.
    lab.serf_event(3, "p2pu-update", wire.as_bytes()).unwrap();
    let other = manifest(dir.path(), "base.pp", "v2-again");
    // Re-sent (not --once): Serf may drop a single event, and every copy is a replay.
    submit(&lab, &other, &["--seq", "2000"]);
    let older = manifest(dir.path(), "base.pp", "v1");
    submit(&lab, &older, &["--seq", "1000", "--once"]);
    let signed = Announcement::decode(&wire).unwrap();
    let mut bytes = signed.to_bencode();
    let at = bytes.windows(64).position(|w| w == signed.sig()).unwrap();
    bytes[at] ^= 1;
    use base64::Engine;
    let tampered = format!(
        "p2pu2:{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    lab.serf_event(1, "p2pu-update", tampered.as_bytes())
        .unwrap();
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let draft = Draft {
        seq: 3000,
        name: "evil.pp".into(),
        kind: Kind::Manifest,
        info_hash: [1; 20],
        len: 1,
        sha256: [2; 32],
    };
    let binding = p2pu::formats::announcement::Binding {
        expires: 9_999_999_999,
        fleet: p2pu::lab::LAB_FLEET_ID.parse().unwrap(),
    };
    let evil = Announcement::sign_v2(draft, binding, &stranger)
        .unwrap()
        .to_wire();
    lab.serf_event(1, "p2pu-update", evil.as_bytes()).unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    for node in 1..=NODES {
        loop {
            let report = status(&lab, node);
            let reasons: Vec<&str> = report.rejected.iter().map(|r| r.reason.as_str()).collect();
            let has = |needle: &str| reasons.iter().any(|r| r.contains(needle));
            if has("replay") && has("downgrade") && has("signature") && has("unknown") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {node} rejections: {reasons:#?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(
            runs(&lab, node, "base.pp"),
            1,
            "only the first base.pp was applied on node {node}"
        );
        assert_eq!(
            std::fs::read_to_string(vardir(&lab, node).join("base.pp.out")).unwrap(),
            "v2\n"
        );
        assert_eq!(status_of(&lab, node, "evil.pp"), None);
    }
}

#[test]
fn agent_and_transmission_restarts_lose_nothing_and_apply_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = start(dir.path(), false);
    // Node 3's agent is down when the event arrives: Serf's handler still spools it.
    lab.stop_agent(3).unwrap();
    // Node 2 cannot reach any member's seed server or BitTorrent port (its outgoing TCP to
    // them is reset; Serf still works), so once it has accepted the update it stays in the
    // middle of the download: that is where its agent is killed, for certain.
    let node = lab.node(2).unwrap().clone();
    let block = |lab: &Lab, action: &str| {
        let ports = format!(
            "{},{}",
            node.site.agent.seed_port, node.site.transmission.peer_port
        );
        let source = node.addr.to_string();
        let out = lab
            .exec(
                2,
                &[
                    "iptables",
                    action,
                    "OUTPUT",
                    "-s",
                    &source,
                    "-p",
                    "tcp",
                    "-m",
                    "multiport",
                    "--dports",
                    &ports,
                    "-j",
                    "REJECT",
                    "--reject-with",
                    "tcp-reset",
                ],
            )
            .unwrap();
        assert!(out.status.success(), "iptables {action}: {out:?}");
    };
    block(&lab, "-I");
    let site = manifest(dir.path(), "restart.pp", "ok");
    submit(&lab, &site, &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while status_of(&lab, 2, "restart.pp") != Some(Status::Pending) {
        assert!(
            Instant::now() < deadline,
            "node 2 never accepted the update: {:?}",
            status_of(&lab, 2, "restart.pp")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    lab.kill_agent(2).unwrap();
    // The path under test was taken: killed with the update accepted, not yet applied.
    assert_eq!(status_of(&lab, 2, "restart.pp"), Some(Status::Pending));
    assert_eq!(runs(&lab, 2, "restart.pp"), 0);
    block(&lab, "-D");
    // Node 4's Transmission restarts meanwhile.
    lab.restart_transmission(4).unwrap();
    lab.start_agent(2).unwrap();
    lab.start_agent(3).unwrap();
    wait_everywhere(&lab, "restart.pp", Status::Applied);
    for node in 1..=NODES {
        assert_eq!(runs(&lab, node, "restart.pp"), 1, "node {node}");
    }
    assert!(
        std::fs::read_dir(lab.spool_dir(3).unwrap())
            .unwrap()
            .next()
            .is_none(),
        "spool emptied"
    );
}

#[test]
fn a_node_down_during_the_announcement_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = start(dir.path(), false);
    lab.stop_node(4).unwrap();
    let site = manifest(dir.path(), "late.pp", "caught up");
    submit(&lab, &site, &["--wait", "--timeout", "180"]);
    assert_eq!(status_of(&lab, 4, "late.pp"), None);
    lab.start_node(4).unwrap();
    wait_everywhere(&lab, "late.pp", Status::Applied);
    assert_eq!(runs(&lab, 4, "late.pp"), 1);
}

#[test]
fn legacy_payloads_are_refused_by_default_and_processed_with_accept_legacy() {
    let legacy = include_bytes!("../crates/p2pu-formats/tests/vectors/legacy/lizard.serf-payload");
    let torrent = include_bytes!("../crates/p2pu-formats/tests/vectors/legacy/lizard.torrent");
    let jpg = include_bytes!("../crates/p2pu-formats/tests/vectors/legacy/lizard.jpg");
    for accept in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let lab = start(dir.path(), accept);
        // Node 1 seeds the prototype's file, as a running prototype fleet would.
        let seed_dir = lab.node(1).unwrap().dir.join("legacy-seed");
        std::fs::create_dir_all(&seed_dir).unwrap();
        std::fs::write(seed_dir.join("lizard.jpg"), jpg).unwrap();
        let user = nix::unistd::User::from_name("debian-transmission")
            .unwrap()
            .unwrap();
        nix::unistd::chown(&seed_dir, Some(user.uid), Some(user.gid)).unwrap();
        let tracked = {
            let url = format!(
                "http://127.0.0.1:{}/announce",
                lab.node(1).unwrap().site.agent.tracker_port
            );
            let mut t = format!("d8:announce{}:{url}", url.len()).into_bytes();
            t.extend_from_slice(&torrent[1..]);
            t
        };
        lab.in_netns(|| {
            use p2pu::engines::TorrentEngine;
            lab.transmission(1)
                .unwrap()
                .add_metainfo(&tracked, Some(&seed_dir), false)
                .unwrap();
        })
        .unwrap();
        lab.serf_event(1, "torrent", legacy).unwrap();
        let deadline = Instant::now() + ROLLOUT;
        for node in 2..=NODES {
            loop {
                let report = status(&lab, node);
                let done = if accept {
                    report
                        .updates
                        .iter()
                        .any(|u| u.name == "lizard.jpg" && u.status == Status::Applied)
                } else {
                    report
                        .rejected
                        .iter()
                        .any(|r| r.reason.contains("accept_legacy = false"))
                };
                if done {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {node} (accept_legacy = {accept}): {report:#?}"
                );
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
}

#[test]
fn hostile_archives_are_refused_and_nothing_is_written_outside_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start(dir.path(), false);
    let evil = dir.path().join("evil.tar.gz");
    tar_gz(
        &evil,
        &[("ok.txt", b"fine"), ("../../escaped.txt", b"pwned")],
    );
    let absolute = dir.path().join("abs.tar.gz");
    let outside = dir.path().join("outside-abs.txt");
    tar_gz(&absolute, &[(outside.to_str().unwrap(), b"pwned")]);
    submit(&lab, &evil, &["--kind", "archive"]);
    submit(&lab, &absolute, &["--kind", "archive"]);
    wait_everywhere(&lab, "evil.tar.gz", Status::Failed);
    wait_everywhere(&lab, "abs.tar.gz", Status::Failed);
    for node in 1..=NODES {
        let report = status(&lab, node);
        let reason = |name: &str| {
            report
                .updates
                .iter()
                .find(|u| u.name == name)
                .and_then(|u| u.reason.clone())
                .unwrap_or_default()
        };
        assert!(
            reason("evil.tar.gz").contains(".."),
            "{}",
            reason("evil.tar.gz")
        );
        assert!(
            reason("abs.tar.gz").contains("absolute"),
            "{}",
            reason("abs.tar.gz")
        );
        let archives = &lab.node(node).unwrap().site.agent.archive_dir;
        assert!(!archives.join("evil.tar.gz").exists() && !archives.join("abs.tar.gz").exists());
        assert!(!archives.parent().unwrap().join("escaped.txt").exists());
    }
    assert!(!outside.exists());
    let escaped: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.ends_with("escaped.txt"))
        .collect();
    assert!(escaped.is_empty(), "{escaped:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                out.extend(walk(&path));
            }
            out.push(path);
        }
    }
    out
}

/// TUF's key compromise, recovered with signed `key` updates on the real engines: the operator
/// trusts a new key (signed by the old one), revokes the old one (signed by the new one); the
/// fleet then applies the new key's updates and refuses the old key's.
#[test]
fn a_compromised_key_is_rotated_out_by_signed_key_updates() {
    use p2pu::formats::announcement::{Announcement, Draft, Kind};
    let dir = tempfile::tempdir().unwrap();
    let lab = start(dir.path(), false);
    let operator = lab.node(1).unwrap().site.agent.clone();
    let old = p2pu::keys::read_secret(&operator.signing_key).unwrap();
    let old_kid = p2pu::keys::KeyId::of(&old.verifying_key()).to_string();

    // A new key, made away from the fleet, trusted through an update signed by the old key.
    let fresh = dir.path().join("fresh");
    // Operator-side commands, run outside the lab (they need no config).
    let local = |args: &[&str]| {
        ok(std::process::Command::new(env!("CARGO_BIN_EXE_p2pu"))
            .args(args)
            .output()
            .unwrap())
    };
    local(&["keygen", "--out", fresh.to_str().unwrap()]);
    let new_pub = dir.path().join("ops-2.pub");
    std::fs::copy(fresh.join("signing.pub"), &new_pub).unwrap();
    submit(
        &lab,
        &new_pub,
        &["--kind", "key", "--wait", "--timeout", "180"],
    );

    // The revocation of the old key, signed by the new one.
    let scratch = dir.path().join("scratch-trusted");
    std::fs::create_dir(&scratch).unwrap();
    for entry in std::fs::read_dir(&operator.trusted_keys_dir).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, scratch.join(path.file_name().unwrap())).unwrap();
    }
    local(&[
        "key",
        "revoke",
        &old_kid,
        "--dir",
        scratch.to_str().unwrap(),
        "--reason",
        "compromised",
    ]);
    let revocation = dir.path().join("ops-1.revoked");
    std::fs::copy(scratch.join(format!("{old_kid}.revoked")), &revocation).unwrap();
    std::fs::copy(fresh.join("signing.key"), &operator.signing_key).unwrap();
    submit(
        &lab,
        &revocation,
        &["--kind", "key", "--wait", "--timeout", "180"],
    );

    // The new key's update is applied everywhere; the old key's is refused everywhere.
    let after = manifest(dir.path(), "after.pp", "new key");
    submit(&lab, &after, &["--wait", "--timeout", "180"]);
    let draft = Draft {
        seq: u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap(),
        name: "stolen.pp".into(),
        kind: Kind::Manifest,
        info_hash: [1; 20],
        len: 1,
        sha256: [2; 32],
    };
    let binding = p2pu::formats::announcement::Binding {
        expires: 9_999_999_999,
        fleet: p2pu::lab::LAB_FLEET_ID.parse().unwrap(),
    };
    let stolen = Announcement::sign_v2(draft, binding, &old)
        .unwrap()
        .to_wire();
    lab.serf_event(2, "p2pu-update", stolen.as_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in 1..=NODES {
        assert_eq!(status_of(&lab, node, "after.pp"), Some(Status::Applied));
        loop {
            let report = status(&lab, node);
            let refused = report
                .rejected
                .iter()
                .any(|r| r.name.as_deref() == Some("stolen.pp") && r.reason.contains("revoked"));
            if refused {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {node}: {:#?}",
                report.rejected
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(status_of(&lab, node, "stolen.pp"), None);
    }
}

/// A manifest that fails on one node is tried `1 + agent.retries` times there, waiting the
/// backoff between attempts, then recorded failed with Puppet's first `Error:` line as the
/// reason (not the command line), which `p2pu status` and `fleet status` show; the node where
/// it works applies it once.
#[test]
fn a_manifest_failing_on_a_node_is_retried_then_failed_with_puppets_error_line() {
    const TWO: usize = 2;
    let dir = tempfile::tempdir().unwrap();
    let mut options = LabOptions::new(TWO, dir.path().join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    options.start_agent = true;
    options.site_overrides =
        Some("[agent]\nretries = 2\nretry_backoff_secs = 1\nretry_backoff_max_secs = 2\n".into());
    let lab = TestLab(Lab::start(options).expect("lab starts"));
    // Node 2 has what the manifest's check refuses.
    std::fs::create_dir_all(vardir(&lab, 2)).unwrap();
    std::fs::write(vardir(&lab, 2).join("broken"), "").unwrap();
    let path = dir.path().join("check.pp");
    std::fs::write(
        &path,
        "exec { 'count check.pp': command => \"/bin/sh -c 'echo run >> ${settings::vardir}/check.pp.count'\" }\n\
         exec { 'check': command => \"/bin/sh -c 'test ! -e ${settings::vardir}/broken'\", require => Exec['count check.pp'] }\n",
    )
    .unwrap();
    submit(&lab, &path, &[]);

    let deadline = Instant::now() + ROLLOUT;
    while status_of(&lab, 2, "check.pp") != Some(Status::Failed)
        || status_of(&lab, 1, "check.pp") != Some(Status::Applied)
    {
        assert!(
            Instant::now() < deadline,
            "check.pp did not fail on node 2 and apply on node 1: {:#?}",
            [status(&lab, 1), status(&lab, 2)]
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(runs(&lab, 1, "check.pp"), 1, "applied once where it works");
    assert_eq!(
        runs(&lab, 2, "check.pp"),
        3,
        "the first attempt and 2 retries"
    );
    let record = status(&lab, 2)
        .updates
        .into_iter()
        .find(|u| u.name == "check.pp")
        .unwrap();
    assert_eq!(record.attempts, 3);
    let reason = record.reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("Error: ") && reason.contains("returned 1 instead of one of [0]"),
        "{reason}"
    );
    assert!(
        !reason.contains("--detailed-exitcodes"),
        "not the command line: {reason}"
    );
    assert!(
        record.output.unwrap_or_default().contains("Notice:"),
        "the whole output is kept"
    );

    let table = lab.p2pu(2, &["status"]).unwrap();
    assert_eq!(
        table.status.code(),
        Some(3),
        "status exits 3: it failed here"
    );
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table.lines().any(|l| l.starts_with("check.pp")
            && l.contains(" failed ")
            && l.contains(&format!("       3 {reason}"))),
        "{table}"
    );
    let fleet = lab.p2pu(1, &["fleet", "status", "check.pp"]).unwrap();
    assert_eq!(fleet.status.code(), Some(3), "fleet status exits 3");
    let fleet = String::from_utf8_lossy(&fleet.stdout).into_owned();
    assert!(
        fleet
            .lines()
            .any(|l| l.starts_with("node-2")
                && l.contains(&format!("failed   [3 attempts] {reason}"))),
        "{fleet}"
    );
    let reports: Vec<MemberReport> = p2pu::cmd::json::decode(
        &lab.p2pu(1, &["fleet", "status", "check.pp", "--json"])
            .unwrap()
            .stdout,
    )
    .unwrap();
    let node2 = reports.iter().find(|r| r.node == "node-2").unwrap();
    let update = &node2.updates.as_ref().unwrap()[0];
    assert_eq!(
        (update.status, update.attempts, update.reason.as_deref()),
        (Status::Failed, 3, Some(reason.as_str()))
    );
    // Node 2's kept output, fetched from node 1 with the bounded `p2pu-logs` query: by
    // default only its Error and Warning lines (Puppet's Notice lines can carry file diffs).
    let logs = ok(lab
        .p2pu(1, &["logs", "check.pp", "--node", "node-2"])
        .unwrap());
    assert!(
        logs.starts_with("== node-2: check.pp seq ")
            && logs.contains(&format!("failed after 3 attempts: {reason}"))
            && logs.contains(p2pu::agent::runtime::status::FILTERED_NOTE)
            && !logs.contains("Notice:"),
        "{logs}"
    );
}
