//! `p2pu init` as an operator runs it: into an image root, dry runs, bad configs, re-runs.

use std::path::Path;
use std::process::{Command, Output};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/install/site.example.toml");

fn p2pu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_p2pu"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every file and directory below `dir`, for "nothing was written" checks.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        out.push(path.display().to_string());
        if path.is_dir() && !path.is_symlink() {
            out.extend(listing(&path));
        }
    }
    out.sort();
    out
}

#[test]
fn image_build_renders_everything_and_a_rerun_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    let first = p2pu(&[
        "init",
        "--config",
        EXAMPLE,
        "--root",
        r,
        "--detailed-exitcodes",
    ]);
    assert_eq!(first.status.code(), Some(2), "{}", text(&first.stderr));
    for file in [
        "etc/transmission-daemon/settings.json",
        "etc/serf/p2pu.json",
        "etc/p2pu/serf-handler",
        "etc/p2pu/site.toml",
        "etc/p2pu/.first-boot",
        "etc/systemd/system/p2pu-agent.service",
        "etc/systemd/system/p2pu-firstboot.service",
        "etc/systemd/system/serf.service.d/p2pu.conf",
        "etc/systemd/system/multi-user.target.wants/p2pu-agent.service",
        "etc/systemd/system/multi-user.target.wants/p2pu-firstboot.service",
    ] {
        // The enable links point at target-system paths: check the links, not their targets.
        assert!(
            root.path().join(file).symlink_metadata().is_ok(),
            "{file} missing"
        );
    }
    // Node-specific values are left to the device.
    let serf = std::fs::read_to_string(root.path().join("etc/serf/p2pu.json")).unwrap();
    assert!(!serf.contains("node_name"), "{serf}");
    for secret in ["transmission-rpc.secret", "serf-rpc.secret", "serf.keyring"] {
        let meta = std::fs::metadata(root.path().join("etc/p2pu").join(secret)).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600
        );
    }
    let again = p2pu(&[
        "init",
        "--config",
        EXAMPLE,
        "--root",
        r,
        "--detailed-exitcodes",
    ]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stdout));
    assert!(text(&again.stdout).contains("nothing to change"));
}

#[test]
fn changed_parameter_rerenders_only_what_depends_on_it() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    assert!(p2pu(&["init", "--config", EXAMPLE, "--root", r])
        .status
        .success());
    let changed = root.path().join("changed.toml");
    std::fs::write(&changed, "[transmission]\npeer_port = 51999\n").unwrap();
    let out = p2pu(&[
        "init",
        "--config",
        changed.to_str().unwrap(),
        "--root",
        r,
        "--detailed-exitcodes",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("updated /etc/transmission-daemon/settings.json"),
        "{stdout}"
    );
    assert!(!stdout.contains("serf-handler"), "{stdout}");
    let settings =
        std::fs::read_to_string(root.path().join("etc/transmission-daemon/settings.json")).unwrap();
    assert!(settings.contains("\"peer-port\": 51999"));
}

#[test]
fn dry_run_shows_diffs_and_writes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    let out = p2pu(&[
        "init",
        "--config",
        EXAMPLE,
        "--root",
        r,
        "--dry-run",
        "--detailed-exitcodes",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("--- /dev/null\n+++ /etc/serf/p2pu.json"),
        "{stdout}"
    );
    assert!(
        stdout.contains("would generate secret /etc/p2pu/serf.keyring"),
        "{stdout}"
    );
    assert_eq!(listing(root.path()), Vec::<String>::new());

    // After a real run, a dry run of a change shows the diff with secrets masked.
    assert!(p2pu(&["init", "--config", EXAMPLE, "--root", r])
        .status
        .success());
    let changed = root.path().join("changed.toml");
    std::fs::write(&changed, "[serf]\nuser_event_size_limit = 2048\n").unwrap();
    let before = listing(root.path());
    let settings = root.path().join("etc/transmission-daemon/settings.json");
    let old = std::fs::read(&settings).unwrap();
    let out = p2pu(&[
        "init",
        "--config",
        changed.to_str().unwrap(),
        "--root",
        r,
        "--dry-run",
    ]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("-  \"user_event_size_limit\": 1024,\n+  \"user_event_size_limit\": 2048,"),
        "{stdout}"
    );
    let secret = std::fs::read_to_string(root.path().join("etc/p2pu/serf-rpc.secret")).unwrap();
    assert!(
        !stdout.contains(secret.trim()),
        "a secret leaked into the diff"
    );
    assert_eq!(listing(root.path()), before);
    assert_eq!(std::fs::read(&settings).unwrap(), old);
}

#[test]
fn bad_configs_get_a_clear_error_and_nothing_is_written() {
    let cases = [
        (
            "[serf]\nbind = \"nope\"\n",
            ":2: serf.bind = \"nope\": expected an address:port",
        ),
        (
            "[transmision]\n",
            ":1: transmision: unknown key `transmision`; did you mean `transmission`?",
        ),
        (
            "[agent]\ntracker_port = 9091\n",
            ":2: agent.tracker_port = 9091: port 9091 is already used by transmission.rpc_port",
        ),
        (
            "[transmission]\ndownload_dir = \"downloads\"\n",
            ":2: transmission.download_dir = \"downloads\": must be an absolute path",
        ),
        ("not toml at all", ":1:5: expected"),
    ];
    for (config_text, want) in cases {
        let root = tempfile::tempdir().unwrap();
        let config = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(config.path(), config_text).unwrap();
        let path = config.path().to_str().unwrap();
        let out = p2pu(&[
            "init",
            "--config",
            path,
            "--root",
            root.path().to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{config_text}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.starts_with(&format!("error: {path}{want}")),
            "{config_text:?} gave {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert_eq!(listing(root.path()), Vec::<String>::new(), "{config_text}");
    }
    let out = p2pu(&["init", "--config", "/nonexistent/site.toml", "--dry-run"]);
    assert_eq!(
        text(&out.stderr),
        "error: config /nonexistent/site.toml does not exist: create it (an empty file is valid: \
         every key has a default; the commented example is /usr/share/doc/p2pu/site.example.toml, \
         install/site.example.toml in the source tree) or name another file with --config or P2PU_CONFIG\n"
    );
}

#[test]
fn every_config_error_is_printed_on_its_own_line() {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        "[serf]\njoin = [\"10.0.0.300\"]\n[transmission]\npeer_port = 99999\n[agent]\nspool_dir = \"s\"\n",
    )
    .unwrap();
    let path = config.path().to_str().unwrap();
    let out = p2pu(&["init", "--config", path, "--dry-run"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("error: {path}:2: serf.join = \"10.0.0.300\": ")),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!("{path}:4: transmission.peer_port = 99999: ")),
        "{stderr}"
    );
    assert!(
        lines[2].starts_with(&format!("{path}:6: agent.spool_dir = \"s\": ")),
        "{stderr}"
    );
}

#[test]
fn first_boot_regenerates_node_secrets_and_disarms_itself() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let config = dir.path().join("site.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"dev-1\"\n[serf]\nkeyring_file = \"{d}/p/kr\"\nrpc_auth_file = \"{d}/p/auth\"\nevent_handler = \"{d}/p/h\"\nconfig_file = \"{d}/serf.json\"\n\
             [transmission]\nrpc_password_file = \"{d}/p/tr\"\ndownload_dir = \"{d}/dl\"\nsettings_file = \"{d}/tr/settings.json\"\n\
             [agent]\nspool_dir = \"{d}/s\"\nstate_dir = \"{d}/st\"\ntrusted_keys_dir = \"{d}/p/tk\"\nsigning_key = \"{d}/p/k/key\"\narchive_dir = \"{d}/a\"\n\
             [paths]\nconfig_dir = \"{d}/p\"\nsystemd_dir = \"{d}/sd\"\ntimesyncd_dir = \"{d}/ts\"\n"
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    assert!(p2pu(&["init", "--config", c, "--no-systemd"])
        .status
        .success());
    let read = |name: &str| std::fs::read_to_string(dir.path().join("p").join(name)).unwrap();
    let (auth, password, keyring) = (read("auth"), read("tr"), read("kr"));
    std::fs::write(dir.path().join("p/.first-boot"), "pending\n").unwrap();
    let out = p2pu(&["init", "--config", c, "--no-systemd", "--first-boot"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_ne!(read("auth"), auth);
    assert_ne!(read("tr"), password);
    assert_eq!(
        read("kr"),
        keyring,
        "the fleet-wide keyring must survive first boot"
    );
    assert!(!dir.path().join("p/.first-boot").exists());
    let serf = std::fs::read_to_string(dir.path().join("serf.json")).unwrap();
    assert!(serf.contains("\"node_name\": \"dev-1\"") && serf.contains(read("auth").trim()));
}

#[test]
fn help_describes_every_flag() {
    let top = text(&p2pu(&["--help"]).stdout);
    assert!(
        top.contains("init") && top.contains("Render and start every engine"),
        "{top}"
    );
    let help = text(&p2pu(&["init", "--help"]).stdout);
    for flag in [
        "--config",
        "--root",
        "--dry-run",
        "--templates",
        "--binary",
        "--first-boot",
        "--no-restart",
        "--no-systemd",
        "--detailed-exitcodes",
        "--help",
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(flag) || l.contains(&format!(" {flag}")));
        assert!(line.is_some(), "{flag} missing from init --help:\n{help}");
    }
}
