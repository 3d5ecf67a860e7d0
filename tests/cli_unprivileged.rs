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
    Command::new(env!("CARGO_BIN_EXE_p2pu"))
        .args(["status", "--config"])
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
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no updates yet\n");
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
}
