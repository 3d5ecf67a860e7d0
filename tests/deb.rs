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
    let found = |args: &[&str]| {
        Command::new("cargo")
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    prereq::have(
        found(&["deb", "--version"]),
        "cargo-deb is not installed; install/run-tests.sh installs it \
         (cargo install cargo-deb --version 3.8.0 --locked)",
    ) && prereq::have(
        found(&["license", "--help"]),
        "cargo-license is not installed (install/deb/copyright.sh lists the crates' licenses \
         with it); install/run-tests.sh installs it (cargo install cargo-license --version \
         0.7.0 --locked)",
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

/// The package built into a temporary directory and unpacked whole (its files, and DEBIAN/
/// with the control files) into `tree` there.
fn unpacked_package() -> (tempfile::TempDir, std::path::PathBuf) {
    let out = tempfile::tempdir().unwrap();
    let deb = build_deb(out.path());
    let tree = out.path().join("tree");
    let unpacked = Command::new("dpkg-deb")
        .arg("--raw-extract")
        .arg(&deb)
        .arg(&tree)
        .output()
        .unwrap();
    assert!(unpacked.status.success(), "{}", text(&unpacked));
    (out, tree)
}

/// DEBIAN/md5sums lists every regular file of the package with its MD5, as dh_md5sums writes
/// it (issue 29: cargo-deb writes none, so `dpkg --verify` and debsums had nothing to check).
#[test]
fn the_package_carries_the_md5sums_of_every_file() {
    if !have_cargo_deb() {
        return;
    }
    let (_out, tree) = unpacked_package();
    let sums = std::fs::read_to_string(tree.join("DEBIAN/md5sums")).expect("DEBIAN/md5sums");
    let listed: Vec<&str> = sums
        .lines()
        .map(|l| l.split_once("  ").unwrap_or_else(|| panic!("{l:?}")).1)
        .collect();
    let files = Command::new("find")
        .arg(".")
        .args([
            "-path", "./DEBIAN", "-prune", "-o", "-type", "f", "-printf", "%P\\n",
        ])
        .current_dir(&tree)
        .output()
        .unwrap();
    let mut files: Vec<String> = String::from_utf8_lossy(&files.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    files.sort();
    assert_eq!(
        listed, files,
        "md5sums lists other files than the package holds"
    );
    assert!(listed.contains(&"usr/bin/p2pu"), "{sums}");
    let checked = Command::new("md5sum")
        .args(["--check", "--quiet", "DEBIAN/md5sums"])
        .current_dir(&tree)
        .output()
        .unwrap();
    assert!(checked.status.success(), "{}", text(&checked));
}

/// /usr/share/doc/p2pu/copyright is DEP-5: p2pu's own stanza with the MIT text, a stanza for
/// each crate linked into the binary, and every license a stanza names given once with its text
/// (or Debian's copy named).
#[test]
fn the_copyright_is_dep5_with_every_linked_crate_and_each_license_text() {
    if !have_cargo_deb() {
        return;
    }
    let (_out, tree) = unpacked_package();
    let copyright = std::fs::read_to_string(tree.join("usr/share/doc/p2pu/copyright")).unwrap();
    let paragraphs: Vec<&str> = copyright.split("\n\n").collect();
    assert!(
        paragraphs[0].starts_with(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        ),
        "{}",
        paragraphs[0]
    );
    assert!(
        paragraphs.contains(&"Files: *\nCopyright: 2017-2026 p2pu authors\nLicense: MIT"),
        "{copyright}"
    );
    let field = |paragraph: &str, name: &str| -> Option<String> {
        paragraph
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(str::to_string)
    };
    let crates: Vec<&str> = paragraphs
        .iter()
        .filter_map(|p| p.strip_prefix("Files: cargo/"))
        .collect();
    // The engines of the binary are there; a crate only tests use is not.
    for linked in ["serde-", "sha2-", "ed25519-dalek-", "tokio-", "tracing-"] {
        assert!(
            crates.iter().any(|c| c.starts_with(linked)),
            "no stanza for {linked}*"
        );
    }
    assert!(crates.len() > 100, "{} crates", crates.len());
    for test_only in ["proptest-", "pretty_assertions-"] {
        assert!(
            !crates.iter().any(|c| c.starts_with(test_only)),
            "{test_only}* is listed"
        );
    }
    // Every short name a Files stanza uses has its own License paragraph, with text.
    let standalone: std::collections::BTreeMap<String, &str> = paragraphs
        .iter()
        .filter(|p| p.starts_with("License: "))
        .map(|p| (field(p, "License").unwrap(), *p))
        .collect();
    for paragraph in paragraphs.iter().filter(|p| p.starts_with("Files: ")) {
        let license = field(paragraph, "License").unwrap_or_else(|| panic!("{paragraph}"));
        assert!(field(paragraph, "Copyright").is_some(), "{paragraph}");
        let names = license
            .replace(['(', ')'], " ")
            .split_whitespace()
            .filter(|w| !matches!(*w, "or" | "and" | "with" | "exception"))
            .filter(|w| !w.ends_with("-exception") && !w.starts_with("LLVM"))
            .map(str::to_string)
            .collect::<Vec<_>>();
        for name in names {
            let text = standalone
                .get(&name)
                .unwrap_or_else(|| panic!("no License: {name} paragraph for {paragraph}"));
            assert!(text.lines().count() > 2, "{text}");
        }
    }
    assert!(standalone["MIT"].contains("Permission is hereby granted"));
}

fn copyright_from(tsv: &str, sources: &Path) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("licenses.tsv");
    std::fs::write(&list, tsv).unwrap();
    Command::new("bash")
        .arg(format!("{REPO}/install/deb/copyright.sh"))
        .env("P2PU_LICENSE_TSV", &list)
        .env("P2PU_CRATE_SOURCES", sources)
        .output()
        .unwrap()
}

const TSV_HEAD: &str = "name\tversion\tauthors\trepository\tlicense\tlicense_file\tdescription\n";

/// What crates say of themselves is registry text: a name that is a path, an expression that
/// is not one, or a field broken over lines (cargo-license quotes those) stops the build; an
/// author's control characters are dropped, so nothing opens a stanza of its own; a license
/// file that is a link is not read (it could name any file of the building machine).
#[test]
fn copyright_generation_takes_crate_metadata_as_text_not_as_stanzas() {
    let sources = tempfile::tempdir().unwrap();
    let good = copyright_from(
        &format!("{TSV_HEAD}ok\t1.0.0\tA \x1b[2JB <a@b>|C\t\tMIT\t\tfine\n"),
        sources.path(),
    );
    assert!(good.status.success(), "{}", text(&good));
    let out = String::from_utf8_lossy(&good.stdout).into_owned();
    assert!(
        out.contains("Files: cargo/ok-1.0.0/*\nCopyright: A [2JB <a@b>, C\nLicense: MIT\n"),
        "{out}"
    );
    for (tsv, why) in [
        ("../../etc\t1.0.0\t\t\tMIT\t\t\n", "a path for a name"),
        (
            "x\t1.0.0\t\t\tMIT\nLicense: evil\t\t\n",
            "a line break in a field",
        ),
        (
            "x\t1.0.0\t\"a\nFiles: *\"\t\tMIT\t\t\n",
            "a quoted field over two lines",
        ),
        ("x\t1.0.0\t\t\tMIT; rm -rf /\t\t\n", "no SPDX expression"),
        ("x\t1.0.0 2\t\t\tMIT\t\t\n", "a version with a space"),
    ] {
        let out = copyright_from(&format!("{TSV_HEAD}{tsv}"), sources.path());
        assert!(!out.status.success(), "{why}: accepted:\n{}", text(&out));
    }
    // A license text found only behind a link: refused, and the linked file is not printed.
    let secret = sources.path().join("secret");
    std::fs::write(&secret, "ROOT-ONLY SECRET\n").unwrap();
    let krate = sources.path().join("linky-1.0.0");
    std::fs::create_dir(&krate).unwrap();
    std::os::unix::fs::symlink(&secret, krate.join("LICENSE")).unwrap();
    let out = copyright_from(
        &format!("{TSV_HEAD}linky\t1.0.0\t\t\tZlib\t\t\n"),
        sources.path(),
    );
    assert!(!text(&out).contains("ROOT-ONLY SECRET"), "{}", text(&out));
    assert!(!out.status.success(), "{}", text(&out));
    // The same file, really in the crate: its text is taken.
    std::fs::remove_file(krate.join("LICENSE")).unwrap();
    std::fs::write(krate.join("LICENSE"), "zlib words\n").unwrap();
    let out = copyright_from(
        &format!("{TSV_HEAD}linky\t1.0.0\t\t\tZlib\t\t\n"),
        sources.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("License: Zlib\n zlib words\n"));
}
