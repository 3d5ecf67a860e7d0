//! The Debian package: install/build-deb.sh (cargo-deb) builds it with the binary, templates,
//! man page and completions, depending on the engines; install.sh --deb unpacks it into an
//! image root.

#[path = "support/prereq.rs"]
mod prereq;

use std::path::Path;
use std::process::{Command, Output};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn have_cargo_deb() -> bool {
    let found = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    prereq::have(
        found,
        "cargo-deb is not installed; install/run-tests.sh installs it \
         (cargo install cargo-deb --version 3.8.0 --locked)",
    )
}

/// Packages the test's own (dev) build into `out`, fast compression. `--no-build`: a nested
/// `cargo build` could replace target/debug/p2pu while other tests run it.
fn build_deb(out: &Path) -> std::path::PathBuf {
    // build-deb.sh regenerates target/deb-assets for every package it makes.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let built = Command::new("bash")
        .arg(format!("{REPO}/install/build-deb.sh"))
        .args(["--no-build", "--profile", "dev", "--fast", "-o"])
        .arg(out)
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", text(&built));
    let debs: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    debs.into_iter().next().unwrap()
}

#[test]
fn package_holds_binary_templates_docs_completions_and_depends_on_the_engines() {
    if !have_cargo_deb() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let deb = build_deb(out.path());
    let arch = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .unwrap();
    let arch = String::from_utf8_lossy(&arch.stdout).trim().to_string();
    assert_eq!(
        deb.file_name().unwrap().to_string_lossy(),
        format!("p2pu_{}_{arch}.deb", env!("CARGO_PKG_VERSION"))
    );

    let listing = Command::new("dpkg-deb")
        .arg("-c")
        .arg(&deb)
        .output()
        .unwrap();
    assert!(listing.status.success(), "{}", text(&listing));
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    for (path, mode) in [
        ("./usr/bin/p2pu", "-rwxr-xr-x"),
        (
            "./usr/share/p2pu/templates/transmission/settings.json",
            "-rw-r--r--",
        ),
        (
            "./usr/share/p2pu/templates/systemd/p2pu-agent.service",
            "-rw-r--r--",
        ),
        (
            "./usr/share/p2pu/templates/systemd/p2pu-firstboot.service",
            "-rw-r--r--",
        ),
        (
            "./usr/share/p2pu/puppet/p2pu/manifests/init.pp",
            "-rw-r--r--",
        ),
        ("./usr/share/doc/p2pu/site.example.toml", "-rw-r--r--"),
        ("./usr/share/man/man1/p2pu.1.gz", "-rw-r--r--"),
        ("./usr/share/man/man1/p2pu-submit.1.gz", "-rw-r--r--"),
        ("./usr/share/man/man1/p2pu-fleet-status.1.gz", "-rw-r--r--"),
        ("./usr/share/man/man5/site.toml.5.gz", "-rw-r--r--"),
        ("./usr/share/bash-completion/completions/p2pu", "-rw-r--r--"),
        ("./usr/share/zsh/vendor-completions/_p2pu", "-rw-r--r--"),
        (
            "./usr/share/fish/vendor_completions.d/p2pu.fish",
            "-rw-r--r--",
        ),
    ] {
        let line = listing.lines().find(|l| l.ends_with(&format!(" {path}")));
        let line = line.unwrap_or_else(|| panic!("{path} missing from:\n{listing}"));
        assert!(line.starts_with(mode), "{line}");
    }
    // A man page for every page the binary generates (every visible command), none for
    // plumbing, and none of them refers to a page that is not shipped.
    let pages = tempfile::tempdir().unwrap();
    let made = Command::new(env!("CARGO_BIN_EXE_p2pu"))
        .arg("man")
        .arg("--out-dir")
        .arg(pages.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made));
    let made = String::from_utf8_lossy(&made.stdout).into_owned();
    assert!(made.lines().count() > 20, "{made}");
    for page in made.lines() {
        let section = page.rsplit('.').next().unwrap();
        let shipped = format!(" ./usr/share/man/man{section}/{page}.gz");
        assert!(
            listing.lines().any(|l| l.ends_with(&shipped)),
            "{page} not shipped:\n{listing}"
        );
    }
    assert!(!listing.contains("p2pu-handle-event"), "{listing}");
    // Nothing is enabled or started by installing: no unit ships ready to run.
    assert!(!listing.contains("/lib/systemd/system/"), "{listing}");

    let field = |name: &str| {
        let out = Command::new("dpkg-deb")
            .args(["-f"])
            .arg(&deb)
            .arg(name)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // transmission-cli only inspects torrents by hand: suggested, not needed.
    for (name, packages) in [
        ("Depends", &["serf", "transmission-daemon", "puppet"][..]),
        ("Suggests", &["transmission-cli"][..]),
        ("Recommends", &["systemd-timesyncd"][..]),
    ] {
        let value = field(name);
        for package in packages {
            assert!(
                value
                    .split(", ")
                    .any(|d| d == *package || d.starts_with(&format!("{package} "))),
                "{package} not in {name}: {value}"
            );
        }
    }
    assert!(!field("Depends").contains("transmission-cli"));
    for (path, mode) in [
        ("./usr/share/p2pu/templates/serf/handler.sh", "-rwxr-xr-x"),
        ("./usr/lib/sysusers.d/p2pu.conf", "-rw-r--r--"),
        ("./usr/share/doc/p2pu/changelog.gz", "-rw-r--r--"),
    ] {
        let line = listing.lines().find(|l| l.ends_with(&format!(" {path}")));
        let line = line.unwrap_or_else(|| panic!("{path} missing from:\n{listing}"));
        assert!(line.starts_with(mode), "{line}");
    }

    // The image path: install.sh --deb unpacks it into a bare root and runs init from it.
    if !prereq::root("install.sh --deb runs useradd --root") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let installed = Command::new("bash")
        .arg(format!("{REPO}/install/install.sh"))
        .arg("--root")
        .arg(root.path())
        .arg("--deb")
        .arg(&deb)
        .output()
        .unwrap();
    assert!(installed.status.success(), "{}", text(&installed));
    let version = Command::new(root.path().join("usr/bin/p2pu"))
        .arg("--version")
        .output()
        .unwrap();
    // `p2pu 0.1.0 (<commit> <build date>)`.
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    assert!(
        version.starts_with(&format!("p2pu {} (", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    assert!(root
        .path()
        .join("etc/transmission-daemon/settings.json")
        .is_file());
    assert!(root.path().join("usr/share/man/man1/p2pu.1.gz").is_file());
    assert!(root
        .path()
        .join("usr/share/man/man5/site.toml.5.gz")
        .is_file());
}

#[test]
fn lintian_finds_nothing_to_report() {
    if !have_cargo_deb() {
        return;
    }
    let found = Command::new("lintian")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !prereq::have(found, "lintian: install/engines.sh --test installs it") {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let deb = build_deb(out.path());
    let report = Command::new("lintian")
        .args(["--tag-display-limit", "0"])
        .arg(&deb)
        .output()
        .unwrap();
    // As root lintian says it would rather not run so; that note is not about the package.
    let tags: Vec<String> = String::from_utf8_lossy(&report.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&report.stderr).lines())
        .filter(|l| !l.contains("running with root privileges"))
        .map(str::to_string)
        .collect();
    assert!(
        report.status.success() && tags.is_empty(),
        "{}",
        tags.join("\n")
    );
}
