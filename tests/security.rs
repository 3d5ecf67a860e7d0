//! Checks behind the local-surface rows of docs/SECURITY.md that no engine test covers: the
//! rendered units' privileges and hardening, the spool's owners and modes, and the agent's
//! serving child. That no outside string reaches a shell is `tests/no_shell.rs`.

#[path = "support/prereq.rs"]
mod prereq;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// A file under `/etc` as `p2pu init --root` renders it now for a proxy node with the NAT
/// client and a spool outside /var: what `init` writes, not a checked-in golden copy that could
/// drift from it.
fn rendered(file: &str) -> String {
    static IMAGE: OnceLock<tempfile::TempDir> = OnceLock::new();
    let root = IMAGE.get_or_init(|| {
        let root = tempfile::tempdir().unwrap();
        init_image_with(
            root.path(),
            "[node]\nname = \"gw-01\"\nrole = \"proxy\"\n\
             [agent]\nspool_dir = \"/srv/p2pu/spool\"\n\
             [nat]\nenabled = true\nproxy = \"192.0.2.1:3478\"\n",
        );
        root
    });
    let path = root.path().join("etc").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `[Service]` settings of a unit, as (key, value) lines.
fn service_settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .skip_while(|l| l.trim() != "[Service]")
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn setting<'a>(settings: &'a [(String, String)], key: &str) -> Option<&'a str> {
    settings
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Every hardening directive docs/SECURITY.md's privileges row claims for the two network
/// facing units, on what `init` renders (which `tests/golden_render.rs` keeps equal to the
/// goldens). The exposure score these give is measured on booted units in
/// `tests/systemd_fleet.rs`.
#[test]
fn network_facing_units_run_unprivileged_and_hardened() {
    for unit in ["p2pu-nat-client.service", "p2pu-proxy.service"] {
        let settings = service_settings(&rendered(&format!("systemd/system/{unit}")));
        for (key, want) in [
            ("User", "p2pu"),
            ("Group", "p2pu"),
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("PrivateDevices", "yes"),
            ("PrivateUsers", "yes"),
            ("PrivateIPC", "yes"),
            ("ProtectKernelTunables", "yes"),
            ("ProtectKernelModules", "yes"),
            ("ProtectKernelLogs", "yes"),
            ("ProtectControlGroups", "yes"),
            ("ProtectClock", "yes"),
            ("ProtectHostname", "yes"),
            ("ProtectProc", "invisible"),
            ("ProcSubset", "pid"),
            ("SystemCallFilter", "@system-service"),
            ("SystemCallFilter", "~@privileged @resources"),
            ("SystemCallArchitectures", "native"),
            ("MemoryDenyWriteExecute", "yes"),
            ("RestrictNamespaces", "yes"),
            ("RestrictRealtime", "yes"),
            ("RestrictSUIDSGID", "yes"),
            ("LockPersonality", "yes"),
            ("RemoveIPC", "yes"),
            ("KeyringMode", "private"),
            ("DevicePolicy", "closed"),
            ("UMask", "0077"),
            // Empty: no capability at all, not even the ones root would keep.
            ("CapabilityBoundingSet", ""),
            ("AmbientCapabilities", ""),
            ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ] {
            assert!(
                settings.iter().any(|(k, v)| k == key && v == want),
                "{unit}: {key}={want} missing, has {:?}",
                settings
                    .iter()
                    .filter(|(k, _)| k == key)
                    .map(|(_, v)| v)
                    .collect::<Vec<_>>()
            );
        }
        // Secrets reach the unit as credentials bound read-only over their paths, never by
        // making the root-only files readable.
        let credentials: Vec<&str> = settings
            .iter()
            .filter(|(k, _)| k == "LoadCredential")
            .map(|(_, v)| v.as_str())
            .collect();
        assert!(
            credentials.contains(&"site.toml:/etc/p2pu/site.toml")
                && credentials.contains(&"fleet.secret:/etc/p2pu/fleet.secret"),
            "{unit}: {credentials:?}"
        );
        let bound = setting(&settings, "BindReadOnlyPaths").unwrap_or("");
        assert!(
            bound.contains("%d/site.toml:/etc/p2pu/site.toml")
                && bound.contains("%d/fleet.secret:/etc/p2pu/fleet.secret"),
            "{unit}: {bound}"
        );
    }
    // The NAT client may write its own part of the spool and nothing else.
    let client = service_settings(&rendered("systemd/system/p2pu-nat-client.service"));
    assert_eq!(
        setting(&client, "ReadWritePaths"),
        Some("/srv/p2pu/spool/overlay")
    );
    assert!(
        client
            .iter()
            .any(|(k, v)| k == "LoadCredential"
                && v == "nat-identity.key:/etc/p2pu/nat-identity.key"),
        "the NAT client's identity key"
    );
    // The proxy writes its name bindings (which key each node name is bound to) and nothing
    // else.
    let proxy = service_settings(&rendered("systemd/system/p2pu-proxy.service"));
    assert_eq!(
        setting(&proxy, "ReadWritePaths"),
        Some("/var/lib/p2pu-proxy")
    );
}

#[test]
fn only_the_agent_that_applies_updates_runs_as_root() {
    let agent = service_settings(&rendered("systemd/system/p2pu-agent.service"));
    assert_eq!(
        setting(&agent, "User"),
        None,
        "the agent runs Puppet as root"
    );
    assert_eq!(setting(&agent, "PrivateTmp"), Some("yes"));
    assert_eq!(setting(&agent, "ProtectHome"), Some("read-only"));
    // Serf runs the handler as root: the handler must stay an exec of p2pu, nothing more.
    let handler = rendered("p2pu/serf-handler");
    let code: Vec<&str> = handler
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert_eq!(
        code,
        ["exec /usr/bin/p2pu handle-event --config /etc/p2pu/site.toml"]
    );
}

#[test]
fn engine_rpc_is_loopback_only_and_authenticated() {
    let serf: serde_json::Value = serde_json::from_str(&rendered("serf/p2pu.json")).unwrap();
    let rpc = serf["rpc_addr"].as_str().unwrap();
    assert!(rpc.starts_with("127.0.0.1:"), "{rpc}");
    assert!(!serf["rpc_auth"].as_str().unwrap_or("").is_empty());
    assert!(serf["keyring_file"].as_str().is_some(), "gossip encryption");
    let transmission: serde_json::Value =
        serde_json::from_str(&rendered("transmission-daemon/settings.json")).unwrap();
    for (key, want) in [
        ("rpc-bind-address", serde_json::json!("127.0.0.1")),
        ("rpc-authentication-required", serde_json::json!(true)),
        ("rpc-whitelist-enabled", serde_json::json!(true)),
        ("rpc-whitelist", serde_json::json!("127.0.0.1")),
    ] {
        assert_eq!(transmission[key], want, "{key}");
    }
}

/// A LAN observer must not read payloads (configs) off the peer wire: Transmission prefers
/// encrypted connections unless a site config says otherwise. NAT nodes are the exception:
/// their tunnel edits the BitTorrent extension handshake, which it cannot read encrypted.
#[test]
fn peer_wire_prefers_encryption_by_default() {
    let plain = tempfile::tempdir().unwrap();
    init_image_with(plain.path(), "[node]\nname = \"n1\"\n");
    let settings: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(plain.path().join("etc/transmission-daemon/settings.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(settings["encryption"], serde_json::json!(1));
    // rendered() is a node with nat.enabled.
    let nat: serde_json::Value =
        serde_json::from_str(&rendered("transmission-daemon/settings.json")).unwrap();
    assert_eq!(nat["encryption"], serde_json::json!(0));
}

/// `p2pu init --root <root>` for a node with the NAT client, on an image whose passwd has
/// the `p2pu` user; panics unless it succeeds, returns its stdout.
fn init_image(root: &Path) -> String {
    init_image_with(
        root,
        "[node]\nname = \"n1\"\n[nat]\nenabled = true\nproxy = \"192.0.2.1:3478\"\n",
    )
}

/// `p2pu init --root <root>` with `site_toml`, as [`init_image`].
fn init_image_with(root: &Path, site_toml: &str) -> String {
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\n\
         debian-transmission:x:103:106::/var/lib:/usr/sbin/nologin\n\
         p2pu:x:998:997::/var/lib/p2pu:/usr/sbin/nologin\n",
    )
    .unwrap();
    let config = root.join("site.toml");
    std::fs::write(&config, site_toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_p2pu"))
        .arg("init")
        .arg("--config")
        .arg(&config)
        .arg("--root")
        .arg(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn init_gives_the_spool_to_root_and_the_overlay_part_to_p2pu() {
    let root = tempfile::tempdir().unwrap();
    init_image(root.path());
    let spool = std::fs::metadata(root.path().join("var/spool/p2pu")).unwrap();
    assert_eq!(spool.permissions().mode() & 0o777, 0o711);
    let overlay = std::fs::metadata(root.path().join("var/spool/p2pu/overlay")).unwrap();
    assert_eq!(overlay.permissions().mode() & 0o777, 0o700);
    if prereq::root("init chowns the spool's overlay part to p2pu") {
        assert_eq!((spool.uid(), overlay.uid(), overlay.gid()), (0, 998, 997));
    }
}

/// Serf's snapshot lists the members' names and addresses, and a restarted Serf joins what it
/// lists: in a directory of root's alone, beneath the state dir.
#[test]
fn serfs_snapshot_lies_in_a_directory_of_roots_alone() {
    let root = tempfile::tempdir().unwrap();
    init_image(root.path());
    assert_eq!(mode(&root.path().join("var/lib/p2pu/serf")), 0o700);
    let serf = std::fs::read_to_string(root.path().join("etc/serf/p2pu.json")).unwrap();
    let serf: serde_json::Value = serde_json::from_str(&serf).unwrap();
    assert_eq!(serf["snapshot_path"], "/var/lib/p2pu/serf/snapshot");
}

/// The key the proxy binds this node's name to: generated once, private, read back by the
/// NAT client in the format of a `p2pu keygen` secret key.
#[test]
fn init_generates_the_nat_identity_key() {
    let root = tempfile::tempdir().unwrap();
    let out = init_image(root.path());
    let key = root.path().join("etc/p2pu/nat-identity.key");
    assert!(
        out.contains("generated secret /etc/p2pu/nat-identity.key"),
        "{out}"
    );
    assert_eq!(mode(&key), 0o600);
    let first = p2pu::keys::read_secret(&key).unwrap();
    init_image(root.path());
    assert_eq!(p2pu::keys::read_secret(&key).unwrap(), first);
}

#[test]
fn init_brings_an_old_0700_spool_to_the_0711_layout() {
    // Installs before the NAT client's overlay part made the spool 0700, which keeps that
    // client (user p2pu) from reaching its own subdirectory.
    let root = tempfile::tempdir().unwrap();
    let spool = root.path().join("var/spool/p2pu");
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(spool.join("pending-event"), b"p2pu1:x").unwrap();
    let out = init_image(root.path());
    assert!(
        out.contains("changed the mode of directory /var/spool/p2pu from 0700 to 0711"),
        "{out}"
    );
    assert_eq!(mode(&spool), 0o711);
    assert_eq!(mode(&spool.join("overlay")), 0o700);
    assert!(spool.join("pending-event").exists(), "spooled events stay");
    let again = init_image(root.path());
    assert!(!again.contains("/var/spool/p2pu"), "{again}");
}

/// `ss -ltnp` inside the lab's namespace: the local address and the pid of whoever listens on
/// TCP `port`, if anyone does.
fn try_listener(lab: &p2pu::lab::Lab, port: u16) -> Option<(String, u32)> {
    let out = lab.exec(1, &["ss", "-ltnpH"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text.lines().find(|l| {
        l.split_whitespace()
            .nth(3)
            .is_some_and(|local| local.ends_with(&format!(":{port}")))
    })?;
    let local = line.split_whitespace().nth(3)?.to_string();
    let pid = line
        .split("pid=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        // A socket being handed over (the serving child restarting) is briefly listed
        // without its process: ask again rather than fail.
        .and_then(|pid| pid.parse().ok())?;
    Some((local, pid))
}

fn listener(lab: &p2pu::lab::Lab, port: u16) -> (String, u32) {
    wait_until(&format!("a process listening on port {port}"), 20, || {
        try_listener(lab, port)
    })
}

fn wait_until<T>(what: &str, timeout_secs: u64, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout_secs);
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A field of /proc/<pid>/status, e.g. `Uid`.
fn proc_status(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

#[test]
fn the_agents_tracker_and_web_seeds_run_unprivileged_and_the_tracker_on_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut options =
        p2pu::lab::LabOptions::new(1, dir.path().join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    options.start_agent = true;
    let lab =
        p2pu::lab::Lab::start(options).unwrap_or_else(|e| panic!("{}", p2pu::error::chain(&e)));
    let node = lab.node(1).unwrap().clone();
    let agent = &node.site.agent;

    let (tracker, pid) = listener(&lab, agent.tracker_port);
    assert_eq!(
        tracker,
        format!("127.0.0.1:{}", agent.tracker_port),
        "loopback only"
    );
    let (seed, seed_pid) = listener(&lab, agent.seed_port);
    assert_eq!(seed, format!("{}:{}", node.addr, agent.seed_port));
    assert_eq!(seed_pid, pid, "one serving process");

    // The agent that started it is root (it applies updates); the server is not, and cannot
    // become root again.
    let parent: u32 = proc_status(pid, "PPid").parse().unwrap();
    assert!(
        proc_status(parent, "Uid").starts_with("0\t"),
        "the agent runs as root"
    );
    for field in ["Uid", "Gid"] {
        let ids = proc_status(pid, field);
        assert!(
            ids.split_whitespace().all(|id| id != "0"),
            "{field}: {ids} (real, effective, saved, fs)"
        );
    }
    assert_eq!(proc_status(pid, "Groups"), "", "root's groups dropped");
    assert_eq!(proc_status(pid, "NoNewPrivs"), "1");
    for caps in ["CapEff", "CapPrm", "CapAmb"] {
        assert_eq!(proc_status(pid, caps), "0000000000000000", "{caps}");
    }

    // It reads what root seeded from a 0600 file: submit leaves it readable for the server.
    let payload = dir.path().join("private.pp");
    std::fs::write(&payload, "notice('private')\n").unwrap();
    std::fs::set_permissions(&payload, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = lab.p2pu(1, &["submit", payload.to_str().unwrap()]).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hash = stdout
        .split("info-hash ")
        .nth(1)
        .map(str::trim)
        .unwrap_or_else(|| panic!("{stdout}"))
        .to_string();
    let url = format!("http://{seed}/{hash}/private.pp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        // Its own address counts as a member once the agent's first snapshot arrived.
        let got = lab
            .in_netns(|| match ureq::get(&url).call() {
                Ok(response) => response.into_string().map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            })
            .unwrap();
        match got {
            Ok(body) => {
                assert_eq!(body, "notice('private')\n");
                break;
            }
            Err(e) => assert!(std::time::Instant::now() < deadline, "{url}: {e}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // A server that dies is replaced, on the same ports...
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let restarted = wait_until("a new tracker process", 30, || {
        try_listener(&lab, agent.tracker_port).filter(|(_, new)| *new != pid)
    });
    assert_eq!(restarted.0, tracker);
    assert_ne!(
        proc_status(restarted.1, "Uid").split_whitespace().next(),
        Some("0")
    );
    // ...and one whose agent is gone ends with it: its stdin closed.
    kill(Pid::from_raw(parent as i32), Signal::SIGKILL).unwrap();
    wait_until("the server to exit with its agent", 10, || {
        let state = std::fs::read_to_string(format!("/proc/{}/status", restarted.1));
        let exited = state.map_or(true, |s| s.contains("\nState:\tZ"));
        exited.then_some(())
    });
}

/// A FIFO, a directory and a link named like events in the NAT client's part of the spool
/// used to wedge the root agent (blocked on the FIFO, it never saw SIGTERM) or make it exit
/// on every start. A real agent quarantines them, takes the events after them, and still
/// stops cleanly on SIGTERM.
#[test]
fn hostile_spool_entries_neither_stop_nor_wedge_the_agent() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let dir = tempfile::tempdir().unwrap();
    let mut options =
        p2pu::lab::LabOptions::new(1, dir.path().join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    options.start_agent = true;
    let mut lab =
        p2pu::lab::Lab::start(options).unwrap_or_else(|e| panic!("{}", p2pu::error::chain(&e)));
    let node = lab.node(1).unwrap().clone();
    let spool = node.site.agent.spool_dir.clone();
    let overlay = p2pu::agent::runtime::spool::overlay_dir(&spool);
    std::fs::create_dir_all(&overlay).unwrap();
    nix::unistd::mkfifo(
        &overlay.join("00000000000000000001-overlay-1.event"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    std::fs::create_dir(overlay.join("00000000000000000002-overlay-2.event")).unwrap();
    std::os::unix::fs::symlink(
        "/etc/shadow",
        overlay.join("00000000000000000003-overlay-3.event"),
    )
    .unwrap();
    let after = p2pu::agent::runtime::spool::put(
        &spool,
        p2pu::agent::runtime::spool::Source::Serf,
        b"not an announcement",
    )
    .unwrap();

    let quarantine = spool.join(p2pu::agent::runtime::spool::QUARANTINE_SUBDIR);
    wait_until(
        "the agent to quarantine three entries and take the event",
        30,
        || {
            let moved = std::fs::read_dir(&quarantine).map_or(0, |d| d.count());
            (moved == 3 && !after.exists()).then_some(())
        },
    );
    let log = node.log("agent");
    let agent = lab
        .pids()
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).any(|arg| arg == b"agent"))
        })
        .unwrap_or_else(|| panic!("the agent is not running: {}", read(&log)));
    kill(Pid::from_raw(agent as i32), Signal::SIGTERM).unwrap();
    wait_until("the agent to stop on SIGTERM", 15, || {
        (!lab.pids().contains(&agent)).then_some(())
    });
    let text = read(&log);
    assert!(text.contains("agent stopping"), "{text}");
    assert!(text.contains("spool entry quarantined"), "{text}");
}

/// Issue 28 on real agents. As the download dir's owner, `<info-hash>.plan` on node 2 is a
/// FIFO when one plan-bound update is announced and garbage when the next is: the agent used
/// to block on the FIFO for good (a later update never taken, SIGTERM ignored) and to reject
/// the signed update for good on garbage ("bad signature"). Now node 2 takes a later plain
/// update meanwhile, applies both signed updates once it has fetched their plan from node 1,
/// and stops on SIGTERM. A member then sends a plan-flagged copy of the applied announcement
/// with `serf event`: the record stays `applied` (it used to turn `held`).
#[test]
fn a_hostile_plan_file_or_a_forged_plan_flag_neither_wedges_nor_rewrites_the_agent() {
    use p2pu::agent::runtime::state::{StateStore, Status};
    use p2pu::formats::announcement::Announcement;
    let dir = tempfile::tempdir().unwrap();
    let mut options =
        p2pu::lab::LabOptions::new(2, dir.path().join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    options.start_agent = true;
    let mut lab =
        p2pu::lab::Lab::start(options).unwrap_or_else(|e| panic!("{}", p2pu::error::chain(&e)));
    let node2 = lab.node(2).unwrap().clone();
    let downloads = node2.site.transmission.download_dir.clone();
    let store = StateStore::open(&node2.site.agent.state_dir).unwrap();
    let status_of = |name: &str| {
        store
            .records(name)
            .unwrap()
            .into_iter()
            .last()
            .map(|r| r.status)
    };
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let log = node2.log("agent");
    let applied = |name: &str| {
        let what = format!("node 2 to apply {name}");
        wait_until(&what, 120, || {
            (status_of(name) == Some(Status::Applied)).then_some(())
        });
    };
    // Signed first, so the plan's name is known; then the hostile file; then announced.
    let plan_bound = |name: &str, plant: &dyn Fn(&Path)| {
        let manifest = dir.path().join(name);
        std::fs::write(&manifest, format!("notice('{name}')\n")).unwrap();
        let sig = dir.path().join(format!("{name}.sig"));
        let (manifest, sig_arg) = (manifest.to_str().unwrap(), sig.to_str().unwrap());
        ok(lab
            .p2pu(
                1,
                &[
                    "submit",
                    manifest,
                    "--sign-only",
                    sig_arg,
                    "--max-failures",
                    "1",
                ],
            )
            .unwrap());
        let signed = Announcement::decode(read(&sig).trim()).unwrap();
        assert!(signed.has_plan());
        plant(&downloads.join(format!("{}.plan", hex::encode(signed.info_hash()))));
        ok(lab.p2pu(1, &["submit", "--with-sig", sig_arg]).unwrap());
    };
    plan_bound("fifo.pp", &|at| {
        nix::unistd::mkfifo(at, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap()
    });
    let later = dir.path().join("later.pp");
    std::fs::write(&later, "notice('later')\n").unwrap();
    ok(lab.p2pu(1, &["submit", later.to_str().unwrap()]).unwrap());
    applied("later.pp");
    applied("fifo.pp");
    plan_bound("garbage.pp", &|at| std::fs::write(at, b"d1:vi9ee").unwrap());
    applied("garbage.pp");

    // The forged flag on the applied announcement, sent as any member can.
    let before = store.records("later.pp").unwrap();
    let plain = store
        .records("later.pp")
        .unwrap()
        .into_iter()
        .last()
        .unwrap();
    let forged = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let prefix = p2pu::formats::announcement::WIRE_PREFIX_V2;
        let mut bencode = b64.decode(&plain.wire.trim()[prefix.len()..]).unwrap();
        let at = bencode.windows(5).position(|w| w == b"3:seq").unwrap();
        bencode.splice(at..at, b"4:plani1e".iter().copied());
        format!("{prefix}{}", b64.encode(bencode))
    };
    ok(lab
        .exec(
            1,
            &["serf", "event", "-coalesce=false", "p2pu-update", &forged],
        )
        .unwrap());
    // Something that comes after it: the next update applied means the forgery was taken.
    let after = dir.path().join("after.pp");
    std::fs::write(&after, "notice('after')\n").unwrap();
    ok(lab.p2pu(1, &["submit", after.to_str().unwrap()]).unwrap());
    applied("after.pp");
    assert_eq!(
        store.records("later.pp").unwrap(),
        before,
        "the record changed"
    );
    let text = read(&log);
    assert!(
        text.contains("replay"),
        "the forged copy was not refused: {text}"
    );

    lab.stop_agent(2).unwrap();
    let text = read(&log);
    assert!(
        text.contains("agent stopping"),
        "no clean stop on SIGTERM: {text}"
    );
    assert!(text.contains("rollout plan not read"), "{text}");
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
