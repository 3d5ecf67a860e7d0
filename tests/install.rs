//! install/install.sh --root as an image build runs it: into a throwaway tree, checking what
//! landed there and that nothing on the build host changed.

#[path = "support/prereq.rs"]
mod prereq;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_p2pu");

/// Host paths an install into a root must leave alone (the ones p2pu would write live).
const HOST_PATHS: &[&str] = &[
    "/etc/p2pu",
    "/etc/serf",
    "/etc/systemd/system",
    "/etc/transmission-daemon",
    "/var/lib/p2pu",
    "/var/spool/p2pu",
    "/usr/bin/p2pu",
    "/usr/share/p2pu",
    "/etc/passwd",
    "/etc/group",
    "/etc/shadow",
];

fn install(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(format!("{REPO}/install/install.sh"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn is_root() -> bool {
    prereq::root("install.sh runs useradd --root")
}

/// Every path below the host paths with its mtime, size and mode (missing ones as such).
fn host_snapshot() -> BTreeMap<PathBuf, Option<(i64, i64, u64, u32)>> {
    fn walk(path: &Path, out: &mut BTreeMap<PathBuf, Option<(i64, i64, u64, u32)>>) {
        let meta = path.symlink_metadata().ok();
        out.insert(
            path.to_path_buf(),
            meta.as_ref()
                .map(|m| (m.mtime(), m.mtime_nsec(), m.size(), m.mode())),
        );
        if meta.is_some_and(|m| m.is_dir()) {
            for entry in std::fs::read_dir(path).unwrap() {
                walk(&entry.unwrap().path(), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    for path in HOST_PATHS {
        walk(Path::new(path), &mut out);
    }
    out
}

fn operator_key(dir: &Path) -> PathBuf {
    let out = Command::new(BIN)
        .args(["keygen", "--comment", "operator", "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    dir.join("signing.pub")
}

#[test]
fn root_install_lands_everything_in_the_tree_and_nothing_on_the_host() {
    if !is_root() {
        return;
    }
    let before = host_snapshot();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let r = root.to_str().unwrap();
    let operator = operator_key(&work.path().join("operator"));
    let args = [
        "--root",
        r,
        "--binary",
        BIN,
        "--trust",
        operator.to_str().unwrap(),
    ];
    let out = install(&args);
    let log = text(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("the image still needs these packages: serf transmission-daemon"),
        "{log}"
    );

    let binary = root.join("usr/bin/p2pu");
    assert_eq!(std::fs::read(&binary).unwrap(), std::fs::read(BIN).unwrap());
    assert_eq!(
        std::fs::metadata(&binary).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let example = std::fs::read(format!("{REPO}/install/site.example.toml")).unwrap();
    assert_eq!(
        std::fs::read(root.join("etc/p2pu/site.toml")).unwrap(),
        example
    );
    for file in [
        "etc/transmission-daemon/settings.json",
        "etc/serf/p2pu.json",
        "etc/p2pu/serf-handler",
        "etc/p2pu/.first-boot",
        "etc/systemd/system/p2pu-agent.service",
        "etc/systemd/system/p2pu-firstboot.service",
        "usr/share/p2pu/templates/transmission/settings.json",
        "usr/share/p2pu/puppet/p2pu/manifests/init.pp",
        "usr/share/doc/p2pu/site.example.toml",
        "usr/share/bash-completion/completions/p2pu",
    ] {
        assert!(root.join(file).is_file(), "{file} missing\n{log}");
    }
    let settings =
        std::fs::read_to_string(root.join("etc/transmission-daemon/settings.json")).unwrap();
    assert!(settings.contains("\"peer-port\": 51413"), "{settings}");
    // Enable links point at target-system paths, so look at the links themselves.
    for unit in ["p2pu-agent.service", "p2pu-firstboot.service"] {
        let link = root
            .join("etc/systemd/system/multi-user.target.wants")
            .join(unit);
        let meta = link.symlink_metadata().unwrap();
        assert!(meta.file_type().is_symlink(), "{unit} is not a symlink");
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            Path::new("/etc/systemd/system").join(unit)
        );
    }
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(passwd.contains("\np2pu:x:"), "{passwd}");
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    assert!(group.contains("\np2pu:x:"), "{group}");
    // The node key is made on the device, never baked into the image.
    assert!(!root.join("etc/p2pu/keys/signing.key").exists());
    let dropin = std::fs::read_to_string(
        root.join("etc/systemd/system/p2pu-firstboot.service.d/keygen.conf"),
    )
    .unwrap();
    assert!(
        dropin.contains(
            "test -e /etc/p2pu/keys/signing.key || exec /usr/bin/p2pu keygen --out /etc/p2pu/keys"
        ),
        "{dropin}"
    );
    let trusted: Vec<_> = std::fs::read_dir(root.join("etc/p2pu/trusted-keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(trusted.len(), 1, "{trusted:?}");

    // Re-running is safe and changes nothing.
    let settings_mtime = std::fs::metadata(root.join("etc/transmission-daemon/settings.json"))
        .unwrap()
        .mtime_nsec();
    let again = install(&args);
    let log = text(&again.stderr);
    assert!(again.status.success(), "{log}");
    assert!(log.contains("unchanged"), "{log}");
    assert!(log.contains("user p2pu exists"), "{log}");
    assert!(
        text(&again.stdout).contains("nothing to change"),
        "{}",
        text(&again.stdout)
    );
    assert_eq!(
        std::fs::metadata(root.join("etc/transmission-daemon/settings.json"))
            .unwrap()
            .mtime_nsec(),
        settings_mtime
    );
    assert_eq!(
        passwd,
        std::fs::read_to_string(root.join("etc/passwd")).unwrap()
    );

    assert_eq!(
        host_snapshot(),
        before,
        "install.sh --root changed the host"
    );
}

#[test]
fn a_given_signing_key_and_config_are_installed_as_they_are() {
    if !is_root() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let node_key = work.path().join("node");
    operator_key(&node_key);
    let config = work.path().join("site.toml");
    std::fs::write(&config, "[transmission]\npeer_port = 52001\n").unwrap();
    let out = install(&[
        "--root",
        root.to_str().unwrap(),
        "--binary",
        BIN,
        "--config",
        config.to_str().unwrap(),
        "--signing-key",
        node_key.join("signing.key").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = root.join("etc/p2pu/keys/signing.key");
    assert_eq!(
        std::fs::read(&key).unwrap(),
        std::fs::read(node_key.join("signing.key")).unwrap()
    );
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(root.join("etc/p2pu/keys/signing.pub").is_file());
    assert!(!root
        .join("etc/systemd/system/p2pu-firstboot.service.d/keygen.conf")
        .exists());
    let settings =
        std::fs::read_to_string(root.join("etc/transmission-daemon/settings.json")).unwrap();
    assert!(settings.contains("\"peer-port\": 52001"), "{settings}");
}

#[test]
fn bad_options_stop_before_anything_is_written() {
    let work = tempfile::tempdir().unwrap();
    let missing = work.path().join("nope");
    let out = install(&["--root", missing.to_str().unwrap(), "--binary", BIN]);
    assert_eq!(out.status.code(), Some(1));
    let log = text(&out.stderr);
    assert!(log.contains("not a directory"), "{log}");
    assert!(log.contains("failed during: checking the machine"), "{log}");
    let out = install(&["--frobnicate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unknown option --frobnicate"));
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
}

/// Runs `script` in a private mount namespace where /etc, /usr and /var are overlays on a
/// tmpfs: install.sh's live mode writes "the machine" there, and all of it vanishes on exit.
fn in_throwaway_system(script: &str) -> Output {
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path().display();
    let setup = format!(
        "set -euo pipefail
mount -t tmpfs tmpfs {s}
for d in /etc /usr /var; do
    mkdir -p {s}/upper$d {s}/work$d
    mount -t overlay overlay -o lowerdir=$d,upperdir={s}/upper$d,workdir={s}/work$d $d
done
"
    );
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "bash", "-c"])
        .arg(format!("{setup}{script}"))
        .output()
        .unwrap()
}

#[test]
fn live_install_sets_up_this_machine_and_a_rerun_changes_nothing() {
    if !is_root() {
        return;
    }
    let before = host_snapshot();
    let work = tempfile::tempdir().unwrap();
    let operator = operator_key(&work.path().join("operator"));
    let config = work.path().join("site.toml");
    std::fs::write(
        &config,
        "[node]\nname = \"live-1\"\n[serf]\nadvertise = \"127.0.0.1\"\n[transmission]\npeer_port = 51777\n",
    )
    .unwrap();
    let install = format!("bash {REPO}/install/install.sh --binary {BIN} --no-systemd");
    let script = format!(
        "{install} --config {config} --trust {operator}
echo '== again' >&2
{install}
echo '== evidence'
getent passwd p2pu
stat -c '%a %U %n' /usr/bin/p2pu /etc/p2pu/site.toml /etc/p2pu/keys /etc/p2pu/keys/signing.key \
    /etc/transmission-daemon/settings.json
ls /etc/p2pu/trusted-keys
grep -o '\"peer-port\": [0-9]*' /etc/transmission-daemon/settings.json
",
        config = config.display(),
        operator = operator.display()
    );
    let out = in_throwaway_system(&script);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let (first, again) = stderr.split_once("== again").unwrap();
    for step in [
        "created group p2pu",
        "created user p2pu",
        "installed /etc/p2pu/site.toml",
        "generated node key /etc/p2pu/keys/signing.key",
        "done: this machine is a p2pu node",
    ] {
        assert!(first.contains(step), "{step}\n{first}");
    }
    for step in [
        "user p2pu exists",
        "using /etc/p2pu/site.toml",
        "node key /etc/p2pu/keys/signing.key exists",
    ] {
        assert!(again.contains(step), "{step}\n{again}");
    }
    assert!(stdout.contains("nothing to change"), "{stdout}");
    let evidence = stdout.split_once("== evidence").unwrap().1;
    assert!(evidence.contains("p2pu:x:"), "{evidence}");
    for line in [
        "755 root /usr/bin/p2pu",
        "600 root /etc/p2pu/site.toml",
        "700 root /etc/p2pu/keys",
        "600 root /etc/p2pu/keys/signing.key",
        "600 debian-transmission /etc/transmission-daemon/settings.json",
        "\"peer-port\": 51777",
    ] {
        assert!(evidence.contains(line), "{line}\n{evidence}");
    }
    assert!(evidence.contains(".pub"), "{evidence}");
    assert_eq!(
        host_snapshot(),
        before,
        "the live install leaked out of its namespace"
    );
}
