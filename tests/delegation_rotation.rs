//! Delegations, key thresholds and root rotation on a lab of real agents (Serf, Transmission,
//! Puppet in a network namespace): a delegated key's update outside its names is refused and
//! inside them applied; under `key_threshold = 2` one key alone cannot revoke a key; a root
//! rotation reaches a node that was down through two rotations, which then takes the new
//! root's updates and refuses the old root's.

mod support;

use p2pu::agent::runtime::state::{StateStore, Status};
use p2pu::agent::runtime::status::StatusReport;
use p2pu::keys::{KeyId, PublicKey, TrustedKeysDir};
use p2pu::lab::{Lab, LabOptions, LAB_FLEET_ID};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::testlab::{ok, wait};

fn status(lab: &Lab, node: usize) -> StatusReport {
    let out = lab.p2pu(node, &["status", "--json"]).unwrap();
    assert!(matches!(out.status.code(), Some(0 | 3)), "{out:?}");
    p2pu::cmd::json::decode(&out.stdout).unwrap()
}

/// The statuses and reasons of every kept record of `name` on `node`, oldest first.
fn records(lab: &Lab, node: usize, name: &str) -> Vec<(Status, Option<String>)> {
    StateStore::open(&lab.node(node).unwrap().site.agent.state_dir)
        .unwrap()
        .records(name)
        .unwrap()
        .into_iter()
        .map(|r| (r.status, r.reason))
        .collect()
}

fn rejected(lab: &Lab, node: usize, name: &str) -> Option<String> {
    status(lab, node)
        .rejected
        .into_iter()
        .find(|r| r.name.as_deref() == Some(name))
        .map(|r| r.reason)
}

fn manifest(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let text = format!(
        "exec {{ 'count {name}': command => \"/bin/sh -c 'echo run >> ${{settings::vardir}}/{name}.count'\" }}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn runs(lab: &Lab, node: usize, name: &str) -> usize {
    let path = lab
        .node(node)
        .unwrap()
        .dir
        .join(format!("puppet/var/{name}.count"));
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

fn p2pu(args: &[&str]) -> String {
    ok(Command::new(env!("CARGO_BIN_EXE_p2pu"))
        .args(args)
        .env_remove("P2PU_CONFIG")
        .env_remove("P2PU_TRUSTED_KEYS")
        .output()
        .unwrap())
}

/// A signer off the lab (an operator's laptop): its key files and a config naming them.
struct Signer {
    secret: PathBuf,
    public: PathBuf,
    config: PathBuf,
    kid: KeyId,
}

fn signer(dir: &Path, name: &str) -> Signer {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    p2pu(&["keygen", "--out", dir.to_str().unwrap(), "--comment", name]);
    let secret = dir.join("signing.key");
    let config = dir.join("site.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nsigning_key = \"{}\"\nfleet_id = \"{LAB_FLEET_ID}\"\n",
            secret.display()
        ),
    )
    .unwrap();
    let public = dir.join("signing.pub");
    let key = PublicKey::parse(&std::fs::read(&public).unwrap(), "pub").unwrap();
    Signer {
        secret,
        public,
        config,
        kid: key.kid(),
    }
}

/// Sends `path` from node 1 (which seeds it) signed by `signers` only, not by node 1's own
/// key: each signs the announcement node 1 wrote, then node 1 announces their signatures.
fn submit_signed_by(lab: &Lab, dir: &Path, path: &Path, signers: &[&Signer], wait: bool) {
    let seeded = dir.join("seeded.sig");
    let seeded_arg = seeded.to_str().unwrap();
    ok(lab
        .p2pu(
            1,
            &["submit", path.to_str().unwrap(), "--sign-only", seeded_arg],
        )
        .unwrap());
    let mut sigs = Vec::new();
    for (i, s) in signers.iter().enumerate() {
        let sig = dir.join(format!("signer-{i}.sig"));
        p2pu(&[
            "submit",
            "--config",
            s.config.to_str().unwrap(),
            "--sign-only",
            sig.to_str().unwrap(),
            "--with-sig",
            seeded_arg,
        ]);
        sigs.push(sig.to_str().unwrap().to_string());
    }
    let mut args = vec!["submit", "--with-sig"];
    args.extend(sigs.iter().map(String::as_str));
    if wait {
        args.extend(["--wait", "--timeout", "180"]);
    }
    ok(lab.p2pu(1, &args).unwrap());
}

fn trust_everywhere(lab: &Lab, signer: &Signer) {
    let key = PublicKey::parse(&std::fs::read(&signer.public).unwrap(), "pub").unwrap();
    for node in lab.nodes() {
        p2pu::keys::TrustedKeys::add(&node.site.agent.trusted_keys_dir, &key).unwrap();
    }
}

/// The lab operator's key as a signer: node 1's signing key, with a config off the lab.
fn operator(lab: &Lab, dir: &Path) -> Signer {
    let site = &lab.node(1).unwrap().site.agent;
    let config = dir.join("operator.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nsigning_key = \"{}\"\nfleet_id = \"{LAB_FLEET_ID}\"\n",
            site.signing_key.display()
        ),
    )
    .unwrap();
    let key = p2pu::keys::read_secret(&site.signing_key).unwrap();
    Signer {
        secret: site.signing_key.clone(),
        public: PathBuf::new(),
        config,
        kid: KeyId::of(&key.verifying_key()),
    }
}

/// Issue 15 items 3 and 4 on real engines: under `key_threshold = 2`, the operator's key
/// alone cannot revoke the second root key (held, never applied); the camera team's key,
/// delegated `cam-*` manifests by both root keys, has `base.pp` refused with the rule that
/// refuses it, and `cam-front.pp` applied.
#[test]
fn a_delegated_key_is_held_to_its_names_and_one_root_key_cannot_revoke_under_threshold_two() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = LabOptions::new(2, dir.path().join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    options.start_agent = true;
    options.site_overrides = Some("[agent]\nkey_threshold = 2\n".into());
    let lab = Lab::start(options).expect("lab starts");
    let op = operator(&lab, dir.path());
    let second = signer(dir.path(), "second-root");
    let camera = signer(dir.path(), "camera-team");
    trust_everywhere(&lab, &second);

    // One root key alone: held at the intake, never applied.
    let revoke = dir.path().join("second.revoke");
    std::fs::write(&revoke, format!("p2pu-revoke:{} stolen?\n", second.kid)).unwrap();
    submit_signed_by(&lab, dir.path(), &revoke, &[&op], false);
    for node in 1..=2 {
        wait(
            &format!("node {node} to hold the revocation"),
            Duration::from_secs(30),
            || {
                records(&lab, node, "second.revoke").iter().any(|(s, why)| {
                    *s == Status::Held
                        && why
                            .as_deref()
                            .is_some_and(|w| w.contains("signed by 1 of the 2"))
                })
            },
        );
    }

    // The delegation, signed by both root keys, sent as a key update both signed.
    let statement = dir.path().join("cameras.delegation");
    let out = p2pu(&[
        "key",
        "delegate",
        "--key",
        camera.public.to_str().unwrap(),
        "--names",
        "cam-*",
        "--kinds",
        "manifest",
        "--fleet",
        LAB_FLEET_ID,
        "--sign",
        op.secret.to_str().unwrap(),
        "--sign",
        second.secret.to_str().unwrap(),
        "--out",
        statement.to_str().unwrap(),
    ]);
    assert!(
        out.starts_with(&format!("key statement for {} signed by", camera.kid)),
        "{out}"
    );
    submit_signed_by(&lab, dir.path(), &statement, &[&op, &second], true);
    for node in lab.nodes() {
        let kept = node
            .site
            .agent
            .trusted_keys_dir
            .join(format!("{}.delegation", camera.kid));
        assert!(kept.is_file(), "{}", kept.display());
        assert!(
            !node
                .site
                .agent
                .trusted_keys_dir
                .join(format!("{}.revoked", second.kid))
                .exists(),
            "the held revocation was applied"
        );
    }

    // Outside its names: refused, naming the key and the rule. Inside: applied.
    let base = manifest(dir.path(), "base.pp");
    submit_signed_by(&lab, dir.path(), &base, &[&camera], false);
    let cam = manifest(dir.path(), "cam-front.pp");
    submit_signed_by(&lab, dir.path(), &cam, &[&camera], true);
    for node in 1..=2 {
        wait(
            &format!("node {node} to refuse base.pp"),
            Duration::from_secs(30),
            || {
                rejected(&lab, node, "base.pp").is_some_and(|why| {
                    why.contains(&format!("key {} may sign names cam-* only", camera.kid))
                })
            },
        );
        assert_eq!(runs(&lab, node, "base.pp"), 0, "node {node}");
        assert_eq!(runs(&lab, node, "cam-front.pp"), 1, "node {node}");
    }
}

/// Issue 15 item 5 on real engines: node 3 is down through two root rotations (operator ->
/// A -> B); started again, it catches up through the chain, ends at root version 2, applies
/// an update signed by B and refuses one signed by the operator's old root key.
#[test]
fn a_root_rotation_reaches_a_node_that_was_down_through_two_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = LabOptions::new(3, dir.path().join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    options.start_agent = true;
    let mut lab = Lab::start(options).expect("lab starts");
    let op = operator(&lab, dir.path());
    let a = signer(dir.path(), "root-a");
    let b = signer(dir.path(), "root-b");
    let trusted = lab.node(1).unwrap().site.agent.trusted_keys_dir.clone();
    let chain = dir.path().join("p2pu-root");
    let has_root = |lab: &Lab, node: usize, version: u64| {
        lab.node(node)
            .unwrap()
            .site
            .agent
            .trusted_keys_dir
            .join(format!("root.{version}"))
            .is_file()
    };

    lab.stop_node(3).unwrap();
    for (version, old, new) in [(1, &op, &a), (2, &a, &b)] {
        p2pu(&[
            "key",
            "rotate-root",
            "--keys",
            new.public.to_str().unwrap(),
            "--threshold",
            "1",
            "--dir",
            trusted.to_str().unwrap(),
            "--fleet",
            LAB_FLEET_ID,
            "--sign",
            old.secret.to_str().unwrap(),
            "--sign",
            new.secret.to_str().unwrap(),
            "--out",
            chain.to_str().unwrap(),
        ]);
        submit_signed_by(&lab, dir.path(), &chain, &[new], true);
        for node in 1..=2 {
            assert!(
                has_root(&lab, node, version),
                "node {node} at version {version}"
            );
        }
    }

    lab.start_node(3).unwrap();
    wait(
        "node 3 to catch up to root version 2",
        Duration::from_secs(90),
        || has_root(&lab, 3, 2),
    );
    assert!(has_root(&lab, 3, 1), "the chain is kept whole");
    assert!(
        records(&lab, 3, "p2pu-root")
            .iter()
            .any(|(s, _)| *s == Status::Applied),
        "{:?}",
        records(&lab, 3, "p2pu-root")
    );

    // The new root's key is obeyed everywhere, node 3 included; the old root's is not.
    let new_root = manifest(dir.path(), "after.pp");
    submit_signed_by(&lab, dir.path(), &new_root, &[&b], true);
    assert_eq!(runs(&lab, 3, "after.pp"), 1);
    let old_root = manifest(dir.path(), "old-root.pp");
    submit_signed_by(&lab, dir.path(), &old_root, &[&op], false);
    for node in 1..=3 {
        wait(
            &format!("node {node} to refuse the old root's update"),
            Duration::from_secs(30),
            || {
                rejected(&lab, node, "old-root.pp")
                    .is_some_and(|why| why.contains(&format!("unknown key {}", op.kid)))
            },
        );
        assert_eq!(runs(&lab, node, "old-root.pp"), 0, "node {node}");
    }
}
