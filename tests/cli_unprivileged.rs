//! Read-only commands as an operator's own user: the agent's state belongs to root, so `p2pu
//! status` must neither try to create it nor answer with a bare EACCES. Needs root to set the
//! state up and to drop to `nobody` for the command.

#[path = "support/prereq.rs"]
mod prereq;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

/// `p2pu status --config CONFIG` as uid/gid 65534 (nobody).
fn status_as_nobody(config: &Path) -> Output {
    as_nobody(&["status"], config)
}

/// `p2pu ARGS --config CONFIG` as uid/gid 65534 (nobody).
fn as_nobody(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_p2pu"))
        .args(args)
        .arg("--config")
        .arg(config)
        .uid(65534)
        .gid(65534)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn status_as_a_user_creates_no_state_and_says_run_as_root_when_it_cannot_read() {
    if !prereq::root("drops to uid 65534 to run status as a user") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let config = dir.path().join("site.toml");
    let state = dir.path().join("state");
    std::fs::write(
        &config,
        format!("[agent]\nstate_dir = \"{}\"\n", state.display()),
    )
    .unwrap();
    chmod(&config, 0o644);

    // Before the agent ever ran: nothing to read, nothing created.
    let out = status_as_nobody(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.ends_with("no updates yet\n"), "{stdout}");
    assert!(stdout.contains("state dir does not exist"), "{stdout}");
    assert!(!state.exists(), "status created {}", state.display());

    // The agent's state, root's only (as the agent leaves it).
    std::fs::create_dir_all(state.join("names")).unwrap();
    chmod(&state, 0o700);
    let out = status_as_nobody(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("permission denied") && stderr.contains("run as root"),
        "{stderr}"
    );
    assert!(stderr.contains(&state.display().to_string()), "{stderr}");
    // An operator's verdict as a user: told to run as root, nothing spooled.
    for verdict in ["mark-good", "mark-bad"] {
        let out = as_nobody(&[verdict, "site.pp"], &config);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("run as root (sudo p2pu {verdict})")),
            "{stderr}"
        );
    }
}

/// `p2pu ARGS` as root (this process's user), with NO_COLOR: exit status and stderr.
fn p2pu(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_p2pu"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("P2PU_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Issue 29: the errors an operator meets first say what to do next, not a bare EACCES or
/// `connection refused`: the config readable by root only (run as root), the Serf RPC secret
/// missing (run p2pu init), Serf not running (systemctl status serf), no signing key (the
/// keygen command), and a bad flag value exits 2 like other usage errors.
#[test]
fn first_errors_say_what_to_do_next() {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let config = dir.path().join("site.toml");
    let secret = dir.path().join("serf-rpc.secret");
    let key = dir.path().join("keys/signing.key");
    let port = free_port();
    std::fs::write(
        &config,
        format!(
            "[serf]\nrpc_addr = \"127.0.0.1:{port}\"\nrpc_auth_file = \"{}\"\n[agent]\nsigning_key = \"{}\"\nfleet_id = \"0707070707070707\"\nstate_dir = \"{}\"\n",
            secret.display(),
            key.display(),
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();

    // No RPC secret yet: run p2pu init.
    let (code, err) = p2pu(&["fleet", "status", "--config", config_arg]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("the RPC secret is missing: run `p2pu init`"),
        "{err}"
    );

    // A secret, but no Serf listening: what to check.
    std::fs::write(&secret, "s3cret\n").unwrap();
    let (code, err) = p2pu(&["fleet", "status", "--config", config_arg]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "Serf's RPC at 127.0.0.1:{port} refuses connections: is serf.service running? (systemctl status serf)"
        )),
        "{err}"
    );

    // No signing key: the keygen command that makes one, where the config looks.
    let (code, err) = p2pu(&[
        "rollout", "abort", "site.pp", "--seq", "1", "--config", config_arg,
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "no signing key at {} (agent.signing_key): make one with `p2pu keygen --out {}`",
            key.display(),
            key.parent().unwrap().display()
        )),
        "{err}"
    );

    // A bad flag value is a usage error: exit 2, naming the flag.
    for (flag, value) in [
        ("--waves", "1,50%"),
        ("--max-failures", "150%"),
        ("--wave-wait", "5x"),
    ] {
        let (code, err) = p2pu(&["submit", "x.pp", flag, value, "--config", config_arg]);
        assert_eq!(code, Some(2), "{flag} {value}: {err}");
        assert!(err.contains(&format!("{flag} {value:?}")), "{err}");
    }

    // The config root's only, read by a user: run as root.
    if !prereq::root("drops to uid 65534 to read a root-only config") {
        return;
    }
    chmod(&config, 0o600);
    let out = Command::new(env!("CARGO_BIN_EXE_p2pu"))
        .args(["fleet", "status", "--config", config_arg])
        .uid(65534)
        .gid(65534)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("permission denied: the site config is readable by root only; run as root"),
        "{err}"
    );
}

/// Issue 29: `submit --noop` of a valid manifest as a user whose HOME Puppet cannot write
/// (`/nonexistent`, as system users have) showed Puppet's `Permission denied @ dir_s_mkdir -
/// /nonexistent` as the manifest's fault; it runs with a temporary HOME and says what would
/// change.
#[test]
fn submit_noop_as_a_user_without_a_home_checks_the_manifest() {
    if !prereq::root("drops to uid 65534 to run submit --noop as a user")
        || !prereq::have(
            Command::new("puppet").arg("--version").output().is_ok(),
            "puppet (apt-get install puppet)",
        )
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let config = dir.path().join("site.toml");
    std::fs::write(&config, "").unwrap();
    chmod(&config, 0o644);
    let manifest = dir.path().join("motd.pp");
    std::fs::write(&manifest, "notify { 'hello': }\n").unwrap();
    chmod(&manifest, 0o644);
    let out = Command::new(env!("CARGO_BIN_EXE_p2pu"))
        .args(["submit", "--noop", "--config"])
        .arg(&config)
        .arg(&manifest)
        .current_dir(dir.path())
        .uid(65534)
        .gid(65534)
        .env("HOME", "/nonexistent")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(!stderr.contains("/nonexistent"), "{stderr}");
    assert!(stdout.contains("nothing was broadcast"), "{stdout}");
}
