//! No string from outside reaches a shell. Engines run with argument vectors, and Serf's handler
//! is one `exec` that expands nothing; this checks the behaviour rather than grepping the
//! source: with recording `sh`, `bash` and `dash` first on PATH, a 2-node lab takes shell syntax
//! through the places it enters (an event's payload, the path of a submitted manifest, which
//! also becomes the torrent Transmission seeds), treats it literally, and no command hidden in
//! it ever runs. Its own test binary, because it sets PATH for the whole process.

use p2pu::agent::runtime::state::Status;
use p2pu::agent::runtime::status::StatusReport;
use p2pu::lab::{Lab, LabOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Shell syntax that would leave a file named `PWNED-<how>` in `dir` if any shell ran it.
fn hostile(dir: &Path, how: &str) -> String {
    let mark = dir.join(format!("PWNED-{how}"));
    let mark = mark.display();
    format!("$(touch {mark}-sub)`touch {mark}-tick`;touch {mark}-semi|touch {mark}-pipe&&x")
}

/// A `sh`/`bash`/`dash` that logs its arguments to `record`, then runs the real one.
fn recording_shells(bin: &Path, record: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(bin).unwrap();
    for shell in ["sh", "bash", "dash"] {
        let real = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(shell))
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("/bin/sh"));
        let path = bin.join(shell);
        std::fs::write(
            &path,
            format!(
                "#!/bin/dash\nprintf '%s\\n' \"$0 $*\" >> '{}'\nexec {} \"$@\"\n",
                record.display(),
                real.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn status(lab: &Lab, node: usize) -> StatusReport {
    let out = lab.p2pu(node, &["status", "--json"]).unwrap();
    // 3: some update failed on this node.
    assert!(matches!(out.status.code(), Some(0 | 3)), "{out:?}");
    p2pu::cmd::json::decode(&out.stdout).unwrap()
}

/// Every file below `dir` whose name starts with `PWNED`.
fn marks(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(path);
            } else if entry.file_name().to_string_lossy().starts_with("PWNED") {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn shell_syntax_from_outside_arrives_literally_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    let record = dir.path().join("shells.log");
    recording_shells(&bin, &record);
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![bin.clone()];
    paths.extend(std::env::split_paths(&path));
    // SAFETY: this test binary has this one test, so no other thread reads the environment.
    std::env::set_var("PATH", std::env::join_paths(paths).unwrap());
    // The shims are in effect: a shell looked up on PATH is recorded.
    let probe = std::process::Command::new("sh")
        .args(["-c", "true"])
        .status()
        .unwrap();
    assert!(probe.success());
    assert!(std::fs::read_to_string(&record).is_ok_and(|t| t.contains("-c true")));

    let mut options = LabOptions::new(2, dir.path().join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    options.start_agent = true;
    let lab = Lab::start(options).expect("lab starts");

    // An event payload full of shell syntax: spooled byte for byte, then refused by intake as
    // the malformed announcement it is.
    let payload = format!("p2pu1:{}", hostile(dir.path(), "event"));
    lab.serf_event(1, "p2pu-update", payload.as_bytes())
        .unwrap();

    // A manifest under a directory whose name is shell syntax: torrent creation, seeding in
    // Transmission and signing all take that path, and every node applies the manifest.
    let nasty = dir
        .path()
        .join(hostile(dir.path(), "path").replace('/', "_"));
    std::fs::create_dir_all(&nasty).unwrap();
    let manifest = nasty.join("literal.pp");
    std::fs::write(
        &manifest,
        "file { \"${settings::vardir}/literal.out\": content => \"ok\\n\" }\n",
    )
    .unwrap();
    let out = lab
        .p2pu(1, &["submit".as_ref(), manifest.as_os_str()])
        .unwrap();
    assert!(out.status.success(), "submit: {out:?}");

    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let reports = [status(&lab, 1), status(&lab, 2)];
        let applied = reports.iter().all(|r| {
            r.updates
                .iter()
                .any(|u| u.name == "literal.pp" && u.status == Status::Applied)
        });
        let refused = !reports[0].rejected.is_empty() && !reports[1].rejected.is_empty();
        if applied && refused {
            break;
        }
        assert!(Instant::now() < deadline, "{reports:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    for node in 1..=2 {
        let out = lab.node(node).unwrap().dir.join("puppet/var/literal.out");
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "ok\n",
            "node {node}"
        );
    }

    // Nothing hidden in those strings ran, through a shell found on PATH or any other way.
    assert_eq!(marks(dir.path()), Vec::<PathBuf>::new());
    assert_eq!(marks(Path::new("/tmp")), Vec::<PathBuf>::new());
    let shells = std::fs::read_to_string(&record).unwrap_or_default();
    assert!(
        !shells.contains("PWNED"),
        "a shell was given an outside string:\n{shells}"
    );
}
