//! `p2pu agent` as systemd starts it, before it does anything: it refuses to start without the
//! engines it runs as programs (puppet, serf) and says which package to install, instead of
//! starting and then failing every update.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

/// A config whose every path the agent touches before serving lies in `dir`.
fn config(dir: &Path) -> std::path::PathBuf {
    let d = dir.display();
    let path = dir.join("site.toml");
    std::fs::write(
        &path,
        format!(
            "[node]\nname = \"t-1\"\n[serf]\nrpc_auth_file = \"{d}/missing-serf.secret\"\n\
             [transmission]\nrpc_password_file = \"{d}/missing-tr.secret\"\n\
             [agent]\nspool_dir = \"{d}/spool\"\nstate_dir = \"{d}/state\"\n"
        ),
    )
    .unwrap();
    path
}

/// Runs the agent with PATH set to `path` only.
fn agent(config: &Path, path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_p2pu"))
        .arg("agent")
        .arg("--config")
        .arg(config)
        .env("PATH", path)
        .env_remove("P2PU_CONFIG")
        .output()
        .unwrap()
}

fn fake_program(dir: &Path, name: &str) {
    let path = dir.join(name);
    std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn agent_refuses_to_start_without_puppet_and_names_the_package() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    fake_program(&bin, "serf");

    let out = agent(&config, &bin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.ends_with(&format!(
            "error: `puppet` is not installed (not found on PATH={}): the agent applies manifest \
             and module updates with it; install the Debian package puppet\n",
            bin.display()
        )),
        "{stderr}"
    );
    // Refused before anything was created.
    assert!(!dir.path().join("state").exists());
}

#[test]
fn agent_refuses_to_start_without_serf() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    fake_program(&bin, "puppet");

    let out = agent(&config, &bin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("error: `serf` is not installed (not found on PATH="),
        "{stderr}"
    );
    assert!(
        stderr.contains("install the Debian package serf"),
        "{stderr}"
    );
}

#[test]
fn agent_with_its_engines_gets_past_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    fake_program(&bin, "puppet");
    fake_program(&bin, "serf");

    // It stops at the next thing it needs: the secrets `p2pu init` generates.
    let out = agent(&config, &bin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(!stderr.contains("not installed"), "{stderr}");
    assert!(stderr.contains("missing-tr.secret"), "{stderr}");
}
