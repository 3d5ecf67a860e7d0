//! Expiry, fleet binding and thresholds on a lab of real agents (Serf, Transmission, Puppet
//! in a network namespace): an expired announcement and another fleet's are refused with
//! their reason in `p2pu status`; a name that needs 2 of 3 keys is held with one signature
//! and applied once the same update arrives with two, combined by `submit --with-sig`.

mod support;

use p2pu::agent::runtime::state::{StateStore, Status};
use p2pu::agent::runtime::status::StatusReport;
use p2pu::formats::announcement::{Announcement, Binding, Draft, FleetId, Kind};
use p2pu::lab::{Lab, LabOptions, LAB_FLEET_ID};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::testlab::{ok, wait};

const NODES: usize = 3;

fn status(lab: &Lab, node: usize) -> StatusReport {
    let out = lab.p2pu(node, &["status", "--json"]).unwrap();
    assert!(matches!(out.status.code(), Some(0 | 3)), "{out:?}");
    p2pu::cmd::json::decode(&out.stdout).unwrap()
}

/// The statuses of every kept record of `name` on `node`, oldest first.
fn records(lab: &Lab, node: usize, name: &str) -> Vec<(Status, Option<String>)> {
    StateStore::open(&lab.node(node).unwrap().site.agent.state_dir)
        .unwrap()
        .records(name)
        .unwrap()
        .into_iter()
        .map(|r| (r.status, r.reason))
        .collect()
}

fn manifest(dir: &Path, name: &str) -> std::path::PathBuf {
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

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn expired_and_other_fleets_are_refused_and_two_of_three_is_held_until_two_signed() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = LabOptions::new(NODES, dir.path().join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    options.start_agent = true;
    options.site_overrides = Some("[agent]\nthresholds = [{ names = \"base*\", k = 2 }]\n".into());
    let lab = Lab::start(options).expect("lab starts");

    // Two more keys every node trusts: 2 of these 3 must sign `base*`.
    let cosigner = p2pu::keys::generate();
    let third = p2pu::keys::generate();
    for key in [&cosigner, &third] {
        let public = p2pu::keys::PublicKey {
            key: key.verifying_key(),
            comment: "co-signer".into(),
        };
        for node in lab.nodes() {
            <p2pu::keys::TrustedKeys as p2pu::keys::TrustedKeysDir>::add(
                &node.site.agent.trusted_keys_dir,
                &public,
            )
            .unwrap();
        }
    }

    // Signed by the operator's own trusted key, but expired, or for another fleet.
    let operator = p2pu::keys::read_secret(&lab.node(1).unwrap().site.agent.signing_key).unwrap();
    let draft = |name: &str| Draft {
        seq: now_secs() * 1000,
        name: name.into(),
        kind: Kind::Manifest,
        info_hash: [1; 20],
        len: 1,
        sha256: [2; 32],
    };
    let fleet: FleetId = LAB_FLEET_ID.parse().unwrap();
    let expired = Binding {
        expires: now_secs() - 60,
        fleet,
    };
    let staging = Binding {
        expires: now_secs() + 86_400,
        fleet: FleetId([0x5e; 8]),
    };
    for (name, binding) in [("old.pp", expired), ("staging.pp", staging)] {
        let text = Announcement::sign_v2(draft(name), binding, &operator)
            .unwrap()
            .to_wire();
        lab.serf_event(1, "p2pu-update", text.as_bytes()).unwrap();
    }
    for node in 1..=NODES {
        wait(
            &format!("node {node} to refuse both"),
            Duration::from_secs(30),
            || {
                let report = status(&lab, node);
                let why = |name: &str| {
                    report
                        .rejected
                        .iter()
                        .find(|r| r.name.as_deref() == Some(name))
                        .map(|r| r.reason.clone())
                };
                why("old.pp").is_some_and(|r| r.starts_with("expired: "))
                    && why("staging.pp").is_some_and(|r| {
                        r.contains("is for fleet 5e5e5e5e5e5e5e5e")
                            && r.contains(&format!("this node is in fleet {LAB_FLEET_ID}"))
                    })
            },
        );
    }

    // 2 of 3: the operator signs on node 1 (which seeds the payload) and announces alone.
    let base = manifest(dir.path(), "base.pp");
    let a = dir.path().join("a.sig");
    let (base_arg, a_arg) = (base.to_str().unwrap(), a.to_str().unwrap());
    ok(lab
        .p2pu(1, &["submit", base_arg, "--sign-only", a_arg])
        .unwrap());
    ok(lab.p2pu(1, &["submit", "--with-sig", a_arg]).unwrap());
    for node in 1..=NODES {
        wait(
            &format!("node {node} to hold base.pp"),
            Duration::from_secs(30),
            || {
                records(&lab, node, "base.pp").iter().any(|(s, why)| {
                    *s == Status::Held
                        && why
                            .as_deref()
                            .is_some_and(|w| w.starts_with("held: signed by 1 of the 2"))
                })
            },
        );
    }
    // Held means never applied. A later update, which needs one signature, applied on every
    // node shows each agent went past the held one: only then is "not applied" an answer.
    let later = manifest(dir.path(), "later.pp");
    ok(lab
        .p2pu(
            1,
            &[
                "submit",
                later.to_str().unwrap(),
                "--wait",
                "--timeout",
                "180",
            ],
        )
        .unwrap());
    for node in 1..=NODES {
        wait(
            &format!("node {node} to apply later.pp"),
            Duration::from_secs(60),
            || runs(&lab, node, "later.pp") == 1,
        );
        assert_eq!(runs(&lab, node, "base.pp"), 0, "node {node} applied it");
    }

    // The co-signer signs the same announcement on its own machine (no lab, no network).
    let keys = dir.path().join("cosigner");
    std::fs::create_dir_all(&keys).unwrap();
    let secret = keys.join("signing.key");
    p2pu::fsutil::write_atomic(
        &secret,
        p2pu::keys::secret_to_text(&cosigner).as_bytes(),
        0o600,
    )
    .unwrap();
    let config = keys.join("site.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nsigning_key = \"{}\"\nfleet_id = \"{LAB_FLEET_ID}\"\n",
            secret.display()
        ),
    )
    .unwrap();
    let b = dir.path().join("b.sig");
    let b_arg = b.to_str().unwrap();
    ok(std::process::Command::new(env!("CARGO_BIN_EXE_p2pu"))
        .args(["submit", "--config", config.to_str().unwrap()])
        .args(["--sign-only", b_arg, "--with-sig", a_arg])
        .env_remove("P2PU_CONFIG")
        .output()
        .unwrap());
    ok(lab
        .p2pu(
            1,
            &[
                "submit",
                "--with-sig",
                a_arg,
                b_arg,
                "--wait",
                "--timeout",
                "180",
            ],
        )
        .unwrap());
    for node in 1..=NODES {
        let kept = records(&lab, node, "base.pp");
        assert_eq!(
            kept.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            [Status::Applied],
            "node {node}: the held record became the applied one"
        );
        assert_eq!(runs(&lab, node, "base.pp"), 1, "node {node}");
    }
}
