//! `p2pu init` against the real engines: render into a temp dir, start real `serf agent` and
//! `transmission-daemon` (foreground, not systemd) on the rendered files, and check that they
//! run as configured.

use p2pu::lab::Daemon;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Starts `command` under the lab's process guard (stopped when the test ends, passed or
/// failed), logging to `log`.
fn daemon(name: &str, command: Command, log: &Path) -> Daemon {
    Daemon::spawn(name, command, log).unwrap_or_else(|e| panic!("{}", p2pu::error::chain(&e)))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn p2pu(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_p2pu"))
        .args(args)
        .output()
        .unwrap()
}

struct Node {
    dir: tempfile::TempDir,
    config: String,
    serf_rpc: String,
    rpc_port: u16,
}

/// The lab's one-node site.toml (every path in a temp dir), on loopback and free ports: this
/// test runs in the host's namespace, beside other tests.
fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let (serf_port, serf_rpc, rpc_port, peer_port, tracker, seed) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let overrides = format!(
        r#"
[serf]
bind = "127.0.0.1:{serf_port}"
rpc_addr = "127.0.0.1:{serf_rpc}"
[serf.tags]
site = "lab"
[transmission]
rpc_port = {rpc_port}
peer_port = {peer_port}
[agent]
tracker_port = {tracker}
seed_port = {seed}
"#
    );
    let info = p2pu::lab::NodeInfo::standalone(
        dir.path(),
        "lab-1",
        std::net::Ipv4Addr::LOCALHOST,
        Some(&overrides),
    )
    .unwrap();
    Node {
        config: info.config.display().to_string(),
        dir,
        serf_rpc: format!("127.0.0.1:{serf_rpc}"),
        rpc_port,
    }
}

fn read_secret(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

fn serf(node: &Node, args: &[&str]) -> std::process::Output {
    let auth = read_secret(&node.dir.path().join("p2pu/serf-rpc.secret"));
    Command::new("serf")
        .args(args)
        .arg(format!("-rpc-addr={}", node.serf_rpc))
        .env("SERF_RPC_AUTH", auth)
        .output()
        .unwrap()
}

/// One Transmission RPC call with the session-id handshake; returns the HTTP status.
fn transmission_status(port: u16, user: &str, password: &str) -> u16 {
    use base64::Engine;
    let url = format!("http://127.0.0.1:{port}/transmission/rpc");
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    let body = r#"{"method":"session-get"}"#;
    let first = ureq::post(&url)
        .set("Authorization", &auth)
        .send_string(body);
    let session = match first {
        Ok(response) => return response.status(),
        Err(ureq::Error::Status(409, response)) => response
            .header("X-Transmission-Session-Id")
            .unwrap()
            .to_string(),
        Err(ureq::Error::Status(code, _)) => return code,
        Err(e) => panic!("transmission unreachable: {e}"),
    };
    match ureq::post(&url)
        .set("Authorization", &auth)
        .set("X-Transmission-Session-Id", &session)
        .send_string(body)
    {
        Ok(response) => {
            let text = response.into_string().unwrap();
            assert!(text.contains(r#""result":"success""#), "{text}");
            200
        }
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("transmission unreachable: {e}"),
    }
}

#[test]
fn rendered_configs_run_real_serf_and_transmission() {
    let node = node();
    let d = node.dir.path();
    let out = p2pu(&[
        "init",
        "--config",
        &node.config,
        "--no-systemd",
        "--binary",
        env!("CARGO_BIN_EXE_p2pu"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut serf_agent = Command::new("serf");
    serf_agent.arg("agent").arg(format!(
        "-config-file={}",
        d.join("serf/p2pu.json").display()
    ));
    let _serf = daemon("serf agent", serf_agent, &d.join("serf.log"));
    let members = wait_until("serf members", || {
        let out = serf(&node, &["members", "-format=json"]);
        out.status
            .success()
            .then(|| String::from_utf8(out.stdout).unwrap())
    });
    let members: serde_json::Value = serde_json::from_str(&members).unwrap();
    let me = &members["members"][0];
    assert_eq!(me["name"], "lab-1");
    assert_eq!(me["status"], "alive");
    assert_eq!(me["tags"]["site"], "lab");
    assert_eq!(me["tags"]["p2pu-role"], "node");
    // Gossip encryption is on, with the generated keyring.
    let info = serf(&node, &["info", "-format=json"]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["serf"]["encrypted"], "true", "{info}");
    // The RPC refuses a wrong auth key.
    let wrong = Command::new("serf")
        .args(["members", &format!("-rpc-addr={}", node.serf_rpc)])
        .env("SERF_RPC_AUTH", "wrong")
        .output()
        .unwrap();
    assert!(!wrong.status.success());

    let password = read_secret(&d.join("p2pu/transmission-rpc.secret"));
    // As Debian runs it: as its own user, which must reach the temp dir.
    std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let user = nix::unistd::User::from_name("debian-transmission")
        .unwrap()
        .expect("transmission-daemon is installed");
    let mut command = Command::new("transmission-daemon");
    command
        .uid(user.uid.as_raw())
        .gid(user.gid.as_raw())
        .args(["-f", "-g"])
        .arg(d.join("transmission"));
    let mut transmission = daemon("transmission-daemon", command, &d.join("transmission.log"));
    wait_until("transmission RPC", || {
        ureq::get(&format!(
            "http://127.0.0.1:{}/transmission/rpc",
            node.rpc_port
        ))
        .call()
        .err()
        .filter(|e| matches!(e, ureq::Error::Status(..)))
    });
    assert_eq!(transmission_status(node.rpc_port, "p2pu", &password), 200);
    assert_eq!(transmission_status(node.rpc_port, "p2pu", "wrong"), 401);
    assert_eq!(
        transmission_status(node.rpc_port, "transmission", "transmission"),
        401
    );

    // Transmission rewrites settings.json on exit (password salted and hashed); the same
    // config must still count as unchanged.
    transmission.signal(nix::sys::signal::Signal::SIGTERM);
    wait_until("transmission-daemon to exit", || {
        (!transmission.is_running()).then_some(())
    });
    let rewritten = std::fs::read_to_string(d.join("transmission/settings.json")).unwrap();
    assert!(rewritten.contains("\"rpc-password\": \"{"), "{rewritten}");
    let again = p2pu(&[
        "init",
        "--config",
        &node.config,
        "--no-systemd",
        "--detailed-exitcodes",
        "--binary",
        env!("CARGO_BIN_EXE_p2pu"),
    ]);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert_eq!(again.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("nothing to change"), "{stdout}");
}
