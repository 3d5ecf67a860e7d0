//! The production-shaped fleet (issue #18): Debian bookworm trees booted with their own systemd
//! in systemd-nspawn, p2pu installed from the .deb with install/install.sh, the engines and the
//! agent running as the units `p2pu init` rendered. Nothing here starts an engine itself.
//!
//! Needs root, debootstrap and systemd-nspawn (install/systemd-fleet.sh installs them), the
//! Debian archive once to build the cached tree, and cargo-deb.

#[path = "support/natlab.rs"]
mod natlab;
#[path = "support/prereq.rs"]
mod prereq;
#[path = "support/sdfleet.rs"]
mod sdfleet;

use natlab::{Lab, Lan};
use sdfleet::{text, wait_until, Node, Tree};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_p2pu");
/// Boot to `running`: measured ~3 s per container when the machine is idle; generous for a
/// loaded 2-core CI machine, and far below the 90 s start timeout a deadlock would hit.
const BOOT: Duration = Duration::from_secs(60);

fn prerequisites() -> bool {
    if !prereq::root("systemd-nspawn, network namespaces, debootstrap") {
        return false;
    }
    let have = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let cargo_deb = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    prereq::have(
        have("debootstrap") && have("systemd-nspawn") && have("nsenter"),
        "debootstrap and systemd-nspawn: install/systemd-fleet.sh packages",
    ) && prereq::have(cargo_deb, "cargo-deb: install/run-tests.sh installs it")
}

/// The fleet operator's key pair, made with `p2pu keygen` into `dir`.
fn operator_key(dir: &Path) -> PathBuf {
    let out = Command::new(BIN)
        .args(["keygen", "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    dir.join("signing.pub")
}

/// An image as the README makes one: the cached bookworm tree (engines included), then
/// `install.sh --root IMAGE --deb ... --config ... --trust operator.pub`. Returned unmounted:
/// its `upper` holds what install.sh added, a layer for the nodes' trees.
fn make_image(work: &Path, site: &str, operator_pub: &Path) -> Tree {
    let mut image = Tree::overlay(&work.join("image"), &[sdfleet::base_tree()]);
    let config = work.join("site.toml");
    std::fs::write(&config, site).unwrap();
    let start = Instant::now();
    let deb = sdfleet::deb();
    let out = sdfleet::install_image(
        &image.root,
        &[
            "--deb",
            deb.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--trust",
            operator_pub.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "install.sh --root: {}", text(&out));
    eprintln!("install.sh --root took {:.1?}", start.elapsed());
    image.unmount();
    image
}

/// `count` nodes on one LAN of `lab`, each an overlay of `image` on the base tree.
fn nodes_of(work: &Path, lab: &Lab, image: &Tree, count: usize) -> Vec<Node> {
    (0..count)
        .map(|j| {
            Node::new(
                work,
                &format!("n{}", j + 1),
                Lab::node_ip(1, j),
                &lab.node(1, j),
                &[&image.upper, sdfleet::base_tree()],
            )
        })
        .collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Waits until every node's Serf sees `count` alive members.
fn wait_for_members(nodes: &[Node], count: usize) {
    for node in nodes {
        let seen = wait_until(Duration::from_secs(60), || {
            let out = node.c().sh(
                "serf members -status=alive -rpc-addr=127.0.0.1:7373 \
                 -rpc-auth=\"$(cat /etc/p2pu/serf-rpc.secret)\"",
            );
            String::from_utf8_lossy(&out.stdout).lines().count() == count
        });
        assert!(
            seen,
            "{}: serf does not see {count} members: {}",
            node.name,
            node.c().journal("serf")
        );
    }
}

/// Asserts the node booted to `running` with no failed unit and the engines and agent active.
fn assert_booted_clean(node: &Node) -> Duration {
    let (state, took) = node.c().wait_booted(BOOT);
    let failed = node.c().failed_units();
    assert!(
        state == "running" && failed.trim().is_empty(),
        "{}: booted {state} in {took:?}, failed units:\n{failed}\nfirst boot:\n{}\nconsole:\n{}",
        node.name,
        node.c().journal("p2pu-firstboot"),
        node.c().log_text()
    );
    for unit in ["serf", "transmission-daemon", "p2pu-agent"] {
        assert!(
            node.c().is_active(unit),
            "{}: {unit} is not active: {}",
            node.name,
            node.c().journal(unit)
        );
    }
    took
}

#[test]
fn an_image_boots_with_no_failed_unit_and_its_own_secrets() {
    if !prerequisites() {
        return;
    }
    let work = sdfleet::workdir();
    let keys = work.path().join("operator");
    std::fs::create_dir(&keys).unwrap();
    let operator_pub = operator_key(&keys);
    let lab = Lab::new(&[Lan::cone(2)]);
    let image = make_image(
        work.path(),
        &sdfleet::site_config(&[Lab::node_ip(1, 0)], ""),
        &operator_pub,
    );

    // Two devices flashed from one image.
    let mut nodes = nodes_of(work.path(), &lab, &image, 2);
    for node in &mut nodes {
        node.boot();
    }
    let booting = Instant::now();
    for node in &nodes {
        assert_booted_clean(node);
        eprintln!(
            "{}: booted with no failed unit {:.1?} after the first container started",
            node.name,
            booting.elapsed()
        );
        let first_boot = node.c().exec_ok(&[
            "systemctl",
            "show",
            "-p",
            "Result",
            "-p",
            "ActiveState",
            "p2pu-firstboot.service",
        ]);
        assert!(
            first_boot.contains("Result=success"),
            "{}: {first_boot}",
            node.name
        );
        assert!(
            !node.path("/etc/p2pu/.first-boot").exists(),
            "the first-boot marker is gone"
        );
    }

    // Per-node secrets: each device its own, none the image's; the fleet's keyring shared.
    for secret in [
        "/etc/p2pu/serf-rpc.secret",
        "/etc/p2pu/transmission-rpc.secret",
        "/etc/p2pu/keys/signing.key",
    ] {
        let [a, b] = [&nodes[0], &nodes[1]].map(|n| read(&n.path(secret)));
        assert_ne!(a, b, "{secret} is shared by two devices of one image");
        if let Ok(baked) = std::fs::read_to_string(sdfleet::inside(&image.upper, secret)) {
            assert_ne!(a, baked, "{secret} is still the image's");
        }
    }
    assert_eq!(
        read(&nodes[0].path("/etc/p2pu/serf.keyring")),
        read(&nodes[1].path("/etc/p2pu/serf.keyring")),
    );
    wait_for_members(&nodes, 2);
    eprintln!("joined {:.1?} after boot", booting.elapsed());
    let stopping = Instant::now();
    for node in &mut nodes {
        node.shutdown();
    }
    eprintln!("shut down in {:.1?}", stopping.elapsed());
    drop(lab);
}
