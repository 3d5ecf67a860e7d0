//! The Puppet runner against the real `puppet` (7.23), every run with its var/log/run/ssl dirs
//! in a temp dir; each test also checks that Puppet's system directories were left alone.

mod support;

use anyhow::{bail, Result};
use p2pu::engines::puppet::ModuleInstalled;
use p2pu::engines::{Applier, ApplyStatus, Puppet, PuppetError};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// Where Debian's Puppet writes when not told otherwise.
const SYSTEM_DIRS: [&str; 5] = [
    "/var/lib/puppet",
    "/var/cache/puppet",
    "/var/log/puppet",
    "/run/puppet",
    "/etc/puppet",
];

/// Every path under the system dirs with its modification time and size.
fn snapshot() -> BTreeMap<PathBuf, (Option<SystemTime>, u64)> {
    fn walk(path: &Path, into: &mut BTreeMap<PathBuf, (Option<SystemTime>, u64)>) {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return;
        };
        into.insert(path.to_path_buf(), (meta.modified().ok(), meta.len()));
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(path) {
                for entry in entries.flatten() {
                    walk(&entry.path(), into);
                }
            }
        }
    }
    let mut all = BTreeMap::new();
    for dir in SYSTEM_DIRS {
        walk(Path::new(dir), &mut all);
    }
    all
}

fn assert_untouched(before: &BTreeMap<PathBuf, (Option<SystemTime>, u64)>) {
    let after = snapshot();
    let changed: Vec<&PathBuf> = before
        .keys()
        .chain(after.keys())
        .filter(|path| before.get(*path) != after.get(*path))
        .collect();
    assert!(
        changed.is_empty(),
        "puppet touched system paths: {changed:?}"
    );
}

fn puppet(dir: &Path) -> Puppet {
    Puppet {
        vardir_root: Some(dir.join("puppet-root")),
        ..Puppet::default()
    }
}

fn manifest(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

#[test]
fn apply_creates_a_file_then_finds_nothing_to_change() -> Result<()> {
    let before = snapshot();
    let dir = tempfile::tempdir()?;
    let target = dir.path().join("motd");
    let site = manifest(
        dir.path(),
        "site.pp",
        &format!(
            "file {{ '{}': ensure => file, content => \"hello\\n\" }}\n",
            target.display()
        ),
    )?;
    let runner = puppet(dir.path());

    let first = runner.apply(&site)?;
    assert_eq!(first.status, ApplyStatus::Changed, "{}", first.output);
    assert_eq!(first.exit_code, 2);
    assert_eq!(std::fs::read_to_string(&target)?, "hello\n");
    assert!(
        first.output.contains("defined content as"),
        "{}",
        first.output
    );

    let second = runner.apply(&site)?;
    assert_eq!(second.status, ApplyStatus::Unchanged, "{}", second.output);
    assert_eq!(second.exit_code, 0);
    eprintln!(
        "puppet apply: first (changed) {:?}, second (unchanged) {:?}",
        first.elapsed, second.elapsed
    );
    assert!(dir.path().join("puppet-root/var/state").is_dir());
    assert_untouched(&before);
    Ok(())
}

#[test]
fn failing_resource_is_a_typed_error_with_puppets_reason() -> Result<()> {
    let before = snapshot();
    let dir = tempfile::tempdir()?;
    let good = dir.path().join("good.txt");
    let site = manifest(
        dir.path(),
        "fail.pp",
        &format!(
            "file {{ '{}/missing/dir/x': ensure => file, content => 'x' }}\n\
             file {{ '{}': ensure => file, content => 'ok' }}\n",
            dir.path().display(),
            good.display()
        ),
    )?;
    match puppet(dir.path()).apply(&site) {
        Err(err @ PuppetError::ResourceFailures { .. }) => {
            let PuppetError::ResourceFailures {
                exit_code,
                changed,
                ref output,
                ..
            } = err
            else {
                unreachable!()
            };
            // The other resource still applied: failures and changes, exit 6.
            assert_eq!((exit_code, changed), (6, true));
            assert!(
                output.contains("Notice:"),
                "the full output is kept: {output}"
            );
            let text = err.to_string();
            assert!(text.contains("fail.pp had failing resources"), "{text}");
            assert!(text.contains("missing/dir/x"), "{text}");
            assert!(text.contains("exit status: 6"), "{text}");
            assert!(!text.contains("Facter"), "{text}");
        }
        other => bail!("want ResourceFailures, got {other:?}"),
    }
    assert!(good.is_file());
    assert_untouched(&before);
    Ok(())
}

#[test]
fn syntax_error_is_a_compile_error() -> Result<()> {
    let before = snapshot();
    let dir = tempfile::tempdir()?;
    let site = manifest(dir.path(), "broken.pp", "file { '/tmp/never': ensure =>\n")?;
    match puppet(dir.path()).apply(&site) {
        Err(err @ PuppetError::Compile { .. }) => {
            let text = err.to_string();
            assert!(text.starts_with("puppet could not compile"), "{text}");
            assert!(text.contains("Syntax error"), "{text}");
            assert!(text.contains("broken.pp"), "{text}");
        }
        other => bail!("want Compile, got {other:?}"),
    }
    assert!(!Path::new("/tmp/never").exists());
    assert_untouched(&before);
    Ok(())
}

/// A module tarball `p2pu-hello-<version>.tar.gz` whose class `hello` notifies `message`.
fn module_tarball(dir: &Path, version: &str, message: &str) -> Result<PathBuf> {
    let top = format!("p2pu-hello-{version}");
    let root = dir.join("src").join(&top);
    std::fs::create_dir_all(root.join("manifests"))?;
    std::fs::write(
        root.join("metadata.json"),
        format!(
            r#"{{"name":"p2pu-hello","version":"{version}","author":"p2pu","summary":"test",
"license":"MIT","source":"none","dependencies":[]}}"#
        ),
    )?;
    std::fs::write(
        root.join("manifests/init.pp"),
        format!("class hello {{ notify {{ '{message}': }} }}\n"),
    )?;
    let tarball = dir.join(format!("{top}.tar.gz"));
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(dir.join("src"))
        .arg(&top)
        .status()?;
    if !status.success() {
        bail!("tar failed: {status}");
    }
    Ok(tarball)
}

#[test]
fn module_installs_offline_from_a_local_tarball_and_upgrades_in_place() -> Result<()> {
    let before = snapshot();
    let dir = tempfile::tempdir()?;
    // Puppet with no network at all: proves the install never asks the Forge.
    let offline = dir.path().join("puppet-offline");
    std::fs::write(&offline, "#!/bin/sh\nexec unshare -n puppet \"$@\"\n")?;
    std::fs::set_permissions(&offline, std::fs::Permissions::from_mode(0o755))?;
    let modules = dir.path().join("modules");
    let runner = Puppet {
        binary: offline,
        modulepath: vec![modules.clone()],
        ..puppet(dir.path())
    };

    let v1 = module_tarball(dir.path(), "0.1.0", "hello v1")?;
    let started = std::time::Instant::now();
    let ModuleInstalled { output } = runner.module_install(&v1, &modules)?;
    eprintln!("puppet module install took {:?}", started.elapsed());
    assert!(output.contains("p2pu-hello (v0.1.0)"), "{output}");
    assert!(modules.join("hello/manifests/init.pp").is_file());

    let site = manifest(dir.path(), "site.pp", "include hello\n")?;
    let report = runner.apply(&site)?;
    assert_eq!(report.status, ApplyStatus::Changed);
    assert!(report.output.contains("hello v1"), "{}", report.output);

    // A new version replaces the installed one (Puppet refuses this without --force).
    let v2 = module_tarball(dir.path(), "0.2.0", "hello v2")?;
    runner.module_install(&v2, &modules)?;
    let metadata = std::fs::read_to_string(modules.join("hello/metadata.json"))?;
    assert!(metadata.contains("0.2.0"), "{metadata}");
    assert!(runner.apply(&site)?.output.contains("hello v2"));

    let corrupt = dir.path().join("corrupt.tar.gz");
    std::fs::write(&corrupt, b"not gzip")?;
    match runner.module_install(&corrupt, &modules) {
        Err(err @ PuppetError::Failed { .. }) => {
            let text = err.to_string();
            assert!(text.contains("module install"), "{text}");
            assert!(text.contains("Could not extract"), "{text}");
        }
        other => bail!("want Failed for a corrupt archive, got {other:?}"),
    }
    assert_untouched(&before);
    Ok(())
}

#[test]
fn parser_validate_refuses_a_syntax_error_naming_its_file_and_line() -> Result<()> {
    let before = snapshot();
    let dir = tempfile::tempdir()?;
    let runner = puppet(dir.path());
    let good = manifest(dir.path(), "good.pp", "notify { 'hi': }\n")?;
    runner.validate(&good)?;
    let broken = manifest(
        dir.path(),
        "broken.pp",
        "notify { 'a': }\nnotify { 'b' \nfile { '/tmp/never': ensure => file }\n",
    )?;
    match runner.validate(&broken) {
        Err(err @ PuppetError::Invalid { .. }) => {
            let cause = err.cause().unwrap_or_default();
            assert!(cause.starts_with("Error: "), "{cause}");
            assert!(cause.contains("Syntax error"), "{cause}");
            assert!(cause.ends_with("(broken.pp:3)"), "{cause}");
        }
        other => bail!("want Invalid, got {other:?}"),
    }
    assert!(!Path::new("/tmp/never").exists());
    assert_untouched(&before);
    Ok(())
}

#[test]
fn noop_shows_the_change_and_makes_none() -> Result<()> {
    let before = snapshot();
    let dir = tempfile::tempdir()?;
    let target = dir.path().join("motd");
    let site = manifest(
        dir.path(),
        "site.pp",
        &format!("file {{ '{}': content => \"hi\\n\" }}\n", target.display()),
    )?;
    let report = puppet(dir.path()).noop(&site)?;
    assert!(report.output.contains("(noop)"), "{}", report.output);
    assert!(!target.exists(), "--noop changed something");
    assert_untouched(&before);
    Ok(())
}

/// Puppet 7.23's output for each captured failure in tests/vectors/puppet/, and the cause p2pu
/// records for it: the vectors still say what the real engine says.
#[test]
fn the_recorded_cause_is_puppets_first_error_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let runner = puppet(dir.path());
    let cases = [
        ("syntax.pp", "Error: Could not parse for environment production: Syntax error at '}' (syntax.pp:2)"),
        ("unknown-class.pp", "Error: Evaluation Error: Error while evaluating a Function Call, Could not find class ::nope for"),
        ("exec-fails.pp", "Error: '/bin/false' returned 1 instead of one of [0]"),
    ];
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/puppet");
    for (name, want) in cases {
        let site = manifest(
            dir.path(),
            name,
            &std::fs::read_to_string(vectors.join(name))?,
        )?;
        let err = match runner.apply(&site) {
            Err(err) => err,
            Ok(report) => bail!("{name} applied: {}", report.output),
        };
        let cause = err.cause().unwrap_or_default();
        assert!(cause.starts_with(want), "{name}: {cause}");
        let captured = std::fs::read_to_string(vectors.join(format!("{name}.out")))?;
        let recorded = p2pu::engines::puppet::first_error(&captured).unwrap_or_default();
        assert!(recorded.starts_with(want), "{name}.out: {recorded}");
    }
    Ok(())
}

/// `p2pu submit` of a manifest Puppet cannot parse fails before it reads a key or asks
/// Transmission or Serf anything (none of them exists here), naming Puppet's error and line.
#[test]
fn submit_refuses_a_manifest_with_a_syntax_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("site.toml"),
        format!(
            "[puppet]\nstate_root = \"{d}/puppet-root\"\n\
             [transmission]\nrpc_password_file = \"{d}/none.secret\"\ndownload_dir = \"{d}/dl\"\n\
             [serf]\nrpc_auth_file = \"{d}/none-serf.secret\"\n\
             [agent]\nsigning_key = \"{d}/none.key\"\n"
        ),
    )?;
    manifest(
        dir.path(),
        "site.pp",
        "notify { 'a': }\nnotify { 'b' \nnotify { 'c': }\n",
    )?;
    let out = Command::new(env!("CARGO_BIN_EXE_p2pu"))
        .args(["submit", "--config", "site.toml", "site.pp"])
        .current_dir(dir.path())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "site.pp: refused, nothing was broadcast: `puppet parser validate` rejects it: Error: "
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("Syntax error at 'notify' (site.pp:3)"),
        "{stderr}"
    );
    assert!(!dir.path().join("dl").exists(), "nothing was seeded");
    Ok(())
}

/// The pid of the warm validator listening on `socket` (its command line names it).
fn warm_validator_pid(socket: &Path) -> Option<u32> {
    let want = socket.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            cmdline
                .split(|b| *b == 0)
                .any(|arg| arg == want)
                .then_some(pid)
        })
}

/// `submit`'s pre-broadcast check through the warm validator (a Ruby process that keeps
/// Puppet loaded, so the check does not pay a Ruby start): the first check starts it, it says
/// what the cold `puppet parser validate` says (a manifest it accepts passes, one it rejects
/// fails with the same first `Error:` line, a missing file fails), it keeps its socket in a
/// directory only its user may enter, and it exits once that directory is gone.
#[test]
fn the_warm_validator_gives_puppet_parser_validates_verdicts() -> Result<()> {
    let before = snapshot();
    let dir = tempfile::tempdir()?;
    let warm_dir = dir.path().join("validator");
    let warm = Puppet {
        warm_dir: Some(warm_dir.clone()),
        ..puppet(dir.path())
    };
    let cold = puppet(dir.path());
    let good = manifest(dir.path(), "good.pp", "notify { 'a': }\n")?;
    let bad = manifest(
        dir.path(),
        "site.pp",
        "notify { 'a': }\nnotify { 'b' \nnotify { 'c': }\n",
    )?;
    warm.validate(&good)?;
    let socket = std::fs::read_dir(&warm_dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "sock"))
        .expect("the warm validator's socket");
    let pid = warm_validator_pid(&socket).expect("the warm validator runs");
    assert_eq!(
        std::fs::metadata(&warm_dir)?.permissions().mode() & 0o777,
        0o700
    );
    let (Err(warm_err), Err(cold_err)) = (warm.validate(&bad), cold.validate(&bad)) else {
        bail!("a manifest Puppet cannot parse passed");
    };
    assert_eq!(warm_err.cause(), cold_err.cause());
    assert_eq!(
        warm_err.cause().as_deref(),
        Some(
            "Error: Could not parse for environment production: Syntax error at 'notify' \
             (site.pp:3)"
        )
    );
    warm.validate(&good)?;
    assert!(warm.validate(&dir.path().join("none.pp")).is_err());
    assert_eq!(
        warm_validator_pid(&socket),
        Some(pid),
        "one server answered every check"
    );
    drop(dir);
    let gone = support::wait_for(std::time::Duration::from_secs(30), || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie nobody reaped yet.
        (stat.is_empty() || stat.contains(") Z ")).then_some(())
    });
    assert!(gone.is_some(), "the warm validator outlived its directory");
    assert_untouched(&before);
    Ok(())
}
