//! `p2pu verify FILE`, the binary as an operator runs it: every kind of file p2pu signs is
//! accepted when genuine and refused with its reason when tampered with, signed by a key not
//! trusted here, for another fleet or expired; a plan and a snapshot verify through the file
//! that signs them; and hostile files (a FIFO, a link, a sparse giant, binary with terminal
//! escapes) are refused without blocking, following or echoing them.

use ed25519_dalek::SigningKey;
use p2pu::formats::announcement::{Announcement, Binding, Draft, FleetId, Kind};
use p2pu::formats::control::{Action, Control};
use p2pu::formats::delegation::{Delegation, Grant};
use p2pu::formats::document::SignedDocument;
use p2pu::formats::heartbeat::{Entry, Heartbeat, Snapshot};
use p2pu::formats::plan::{Plan, Selector};
use p2pu::formats::root::RootDoc;
use p2pu::keys::{PublicKey, TrustedKeys, TrustedKeysDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const FLEET: FleetId = FleetId([7; 8]);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Fixture {
    dir: tempfile::TempDir,
    root: SigningKey,
    stranger: SigningKey,
    delegated: SigningKey,
}

impl Fixture {
    /// A trusted-keys dir with one root key and one key delegated for `cam-*` manifests, and a
    /// config naming it and the fleet.
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = SigningKey::from_bytes(&[1; 32]);
        let stranger = SigningKey::from_bytes(&[2; 32]);
        let delegated = SigningKey::from_bytes(&[3; 32]);
        let keys = dir.path().join("trusted");
        std::fs::create_dir(&keys).unwrap();
        let public = |k: &SigningKey| PublicKey {
            key: k.verifying_key(),
            comment: String::new(),
        };
        TrustedKeys::add(&keys, &public(&root)).unwrap();
        let mut statement = Delegation::new(Grant {
            key: delegated.verifying_key(),
            names: vec!["cam-*".into()],
            kinds: vec![Kind::Manifest],
            targets: Vec::new(),
            fleet: FLEET,
            expires: now() + 86_400,
        })
        .unwrap();
        statement.sign(&root).unwrap();
        let kid = statement.kid();
        std::fs::write(keys.join(format!("{kid}.delegation")), statement.to_text()).unwrap();
        TrustedKeys::add(&keys, &public(&delegated)).unwrap();
        std::fs::write(
            dir.path().join("site.toml"),
            format!(
                "[agent]\ntrusted_keys_dir = \"{}\"\nfleet_id = \"{FLEET}\"\n",
                keys.display()
            ),
        )
        .unwrap();
        Fixture {
            dir,
            root,
            stranger,
            delegated,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// `p2pu verify ARGS --config site.toml`: exit status, stdout, stderr. Fails the test if it
    /// has not returned within 20 s (a FIFO read with a plain open would hang it).
    fn verify(&self, args: &[&str]) -> (i32, String, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_p2pu"))
            .arg("verify")
            .args(args)
            .arg("--config")
            .arg(self.path("site.toml"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("p2pu verify {args:?} blocked");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn valid(&self, args: &[&str]) -> String {
        let (code, out, err) = self.verify(args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        assert!(out.contains("\nvalid"), "{out}");
        out
    }

    fn invalid(&self, args: &[&str], why: &str) -> String {
        let (code, out, err) = self.verify(args);
        assert_eq!(code, 3, "{args:?} should be invalid: {out}{err}");
        assert!(
            out.contains("INVALID: ") && out.contains(why),
            "{args:?} want {why:?}: {out}"
        );
        out
    }
}

fn draft(name: &str) -> Draft {
    Draft {
        seq: now() * 1000,
        name: name.into(),
        kind: Kind::Manifest,
        info_hash: [0xab; 20],
        len: 42,
        sha256: [0xcd; 32],
    }
}

fn binding() -> Binding {
    Binding {
        expires: now() + 3600,
        fleet: FLEET,
    }
}

/// Flips one character of the base64 body, well inside it (a signature byte for every format
/// here, whose `sigs` come late in key order... or any field: either way the text no longer
/// verifies).
fn tamper(text: &str) -> String {
    let mut bytes = text.trim_end().as_bytes().to_vec();
    let at = bytes.len() - 10;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[test]
fn every_signed_format_verifies_and_each_tampered_one_is_refused_with_its_reason() {
    let f = Fixture::new();

    // An announcement, signed by the root key.
    let wire = Announcement::sign_v2(draft("site.pp"), binding(), &f.root)
        .unwrap()
        .to_wire();
    let a = f.write("a.sig", format!("{wire}\n"));
    let out = f.valid(&[a.to_str().unwrap()]);
    assert!(
        out.contains(": announcement\n") && out.contains("site.pp"),
        "{out}"
    );
    assert!(out.contains("(root key)"), "{out}");
    let t = f.write("a-tampered.sig", tamper(&wire));
    f.invalid(&[t.to_str().unwrap()], "");
    // Signed by a key this dir does not trust.
    let wire = Announcement::sign_v2(draft("site.pp"), binding(), &f.stranger)
        .unwrap()
        .to_wire();
    let s = f.write("stranger.sig", &wire);
    let out = f.invalid(&[s.to_str().unwrap()], "unknown key");
    assert!(out.contains("not trusted"), "{out}");
    // Another fleet's, and an expired one.
    let other = Binding {
        fleet: FleetId([9; 8]),
        ..binding()
    };
    let wire = Announcement::sign_v2(draft("site.pp"), other, &f.root)
        .unwrap()
        .to_wire();
    let o = f.write("other-fleet.sig", &wire);
    f.invalid(
        &[o.to_str().unwrap()],
        "this node is in fleet 0707070707070707",
    );
    let expired = Binding {
        expires: now() - 60,
        ..binding()
    };
    let wire = Announcement::sign_v2(draft("site.pp"), expired, &f.root)
        .unwrap()
        .to_wire();
    let e = f.write("expired.sig", &wire);
    f.invalid(&[e.to_str().unwrap()], "expired at ");

    // A delegated key within its statement, and outside it.
    let wire = Announcement::sign_v2(draft("cam-1.pp"), binding(), &f.delegated)
        .unwrap()
        .to_wire();
    let d = f.write("cam.sig", &wire);
    let out = f.valid(&[d.to_str().unwrap()]);
    assert!(out.contains("statement permits this"), "{out}");
    let wire = Announcement::sign_v2(draft("door.pp"), binding(), &f.delegated)
        .unwrap()
        .to_wire();
    let d = f.write("door.sig", &wire);
    f.invalid(&[d.to_str().unwrap()], "signed by 0 of the 1 trusted keys");

    // A plan-bound announcement: refused without its plan, valid with it, and a changed plan
    // (a member's or Transmission's user's edit in the download dir) refused.
    let plan = Plan {
        target: Some(Selector::name("cam-*").unwrap()),
        ..Plan::default()
    };
    let plan_bytes = plan.to_bencode();
    let wire = Announcement::sign_v2_with_plan(draft("cam-2.pp"), binding(), &plan_bytes, &f.root)
        .unwrap()
        .to_wire();
    let a = f.write("planned.sig", &wire);
    let p = f.write("planned.plan", &plan_bytes);
    f.invalid(&[a.to_str().unwrap()], "give the plan with --with");
    let out = f.valid(&[a.to_str().unwrap(), "--with", p.to_str().unwrap()]);
    assert!(out.contains("name:cam-*"), "{out}");
    let (code, out, _) = f.verify(&[p.to_str().unwrap()]);
    assert_eq!(code, 4, "a plan alone is not signed: {out}");
    let out = f.valid(&[p.to_str().unwrap(), "--with", a.to_str().unwrap()]);
    assert!(out.contains(": rollout plan\n"), "{out}");
    let wider = Plan::default().to_bencode();
    let w = f.write("wider.plan", &wider);
    f.invalid(
        &[a.to_str().unwrap(), "--with", w.to_str().unwrap()],
        "bad signature",
    );

    // A member serving the plan of a windowed rollout without its window (to have nodes
    // apply it now) breaks the signatures: the window is signed with the plan.
    let windowed = Plan {
        window: p2pu::formats::plan::parse_windows(&["Sat,Sun 01:00-03:00".to_string()]).unwrap(),
        ..Plan::default()
    };
    let wire = Announcement::sign_v2_with_plan(
        draft("night.pp"),
        binding(),
        &windowed.to_bencode(),
        &f.root,
    )
    .unwrap()
    .to_wire();
    let n = f.write("night.sig", &wire);
    let good = f.write("night.plan", windowed.to_bencode());
    let out = f.valid(&[n.to_str().unwrap(), "--with", good.to_str().unwrap()]);
    assert!(out.contains("Sat-Sun 01:00-03:00"), "{out}");
    let stripped = f.write("stripped.plan", Plan::default().to_bencode());
    f.invalid(
        &[n.to_str().unwrap(), "--with", stripped.to_str().unwrap()],
        "bad signature",
    );

    // A control statement.
    let mut control = Control::new(
        Action::Retry,
        "site.pp",
        1,
        now(),
        FLEET,
        now() + 600,
        Vec::new(),
    )
    .unwrap();
    control.sign(&f.root).unwrap();
    let c = f.write("retry.ctl", control.to_wire());
    let out = f.valid(&[c.to_str().unwrap()]);
    assert!(
        out.contains(": control statement\n") && out.contains("retry"),
        "{out}"
    );
    let t = f.write("retry-tampered.ctl", tamper(&control.to_wire()));
    f.invalid(&[t.to_str().unwrap()], "");
    // A revert shows the version it goes back to.
    let mut revert = Control::new(
        Action::Revert,
        "site.pp",
        9,
        now(),
        FLEET,
        now() + 600,
        Vec::new(),
    )
    .unwrap()
    .revert_to(4)
    .unwrap();
    revert.sign(&f.root).unwrap();
    let r = f.write("revert.ctl", revert.to_wire());
    let out = f.valid(&[r.to_str().unwrap()]);
    assert!(out.contains("revert") && out.contains("seq 4"), "{out}");

    // A heartbeat and its snapshot, each through the other.
    let snapshot = Snapshot::new(vec![Entry::of("site.pp", 5, "p2pu2:x")]);
    let hb = Heartbeat::sign(FLEET, now(), &snapshot, &f.root).unwrap();
    let h = f.write("hb", hb.to_wire());
    let snap = f.write("s.snapshot", snapshot.to_bencode());
    let out = f.valid(&[h.to_str().unwrap(), "--with", snap.to_str().unwrap()]);
    assert!(out.contains(": heartbeat\n"), "{out}");
    let out = f.valid(&[snap.to_str().unwrap(), "--with", h.to_str().unwrap()]);
    assert!(
        out.contains(": snapshot\n") && out.contains("site.pp"),
        "{out}"
    );
    let other = Snapshot::new(vec![Entry::of("site.pp", 6, "p2pu2:y")]);
    let o = f.write("o.snapshot", other.to_bencode());
    f.invalid(
        &[h.to_str().unwrap(), "--with", o.to_str().unwrap()],
        "is not the one it signs",
    );
    let t = f.write("hb-tampered", tamper(&hb.to_wire()));
    f.invalid(&[t.to_str().unwrap()], "");

    // A key statement: root-signed is valid; one its key signed for itself is not.
    let grant = Grant {
        key: f.stranger.verifying_key(),
        names: vec!["*".into()],
        kinds: vec![Kind::Manifest],
        targets: Vec::new(),
        fleet: FLEET,
        expires: now() + 600,
    };
    let mut statement = Delegation::new(grant.clone()).unwrap();
    statement.sign(&f.root).unwrap();
    let k = f.write("k.delegation", statement.to_text());
    let out = f.valid(&[k.to_str().unwrap()]);
    assert!(out.contains(": key statement\n"), "{out}");
    let mut selfish = Delegation::new(grant).unwrap();
    selfish.sign(&f.stranger).unwrap();
    let k = f.write("self.delegation", selfish.to_text());
    f.invalid(&[k.to_str().unwrap()], "signed by 0 of the 1 root keys");

    // A root document: version 1 signed by the current root and by its own keys; one signed
    // only by its new key is refused by the chain rule.
    let mut doc = RootDoc::new(1, vec![f.stranger.verifying_key()], 1, FLEET, now() + 600).unwrap();
    doc.sign(&f.root).unwrap();
    doc.sign(&f.stranger).unwrap();
    let r = f.write("root.1", doc.to_text());
    let out = f.valid(&[r.to_str().unwrap()]);
    assert!(out.contains(": root document\n"), "{out}");
    let mut coup =
        RootDoc::new(1, vec![f.stranger.verifying_key()], 1, FLEET, now() + 600).unwrap();
    coup.sign(&f.stranger).unwrap();
    let r = f.write("coup.1", coup.to_text());
    f.invalid(
        &[r.to_str().unwrap()],
        "signed by 0 of the 1 keys of version 0",
    );

    // --json: the report reads back with unknown fields denied.
    let (code, out, _) = f.verify(&[a.to_str().unwrap(), "--with", p.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0);
    let report: p2pu::inspect::VerifyReport = p2pu::cmd::json::decode(out.as_bytes()).unwrap();
    assert_eq!(report.inspection.verdict, p2pu::inspect::Verdict::Valid);
    assert_eq!(report.inspection.format, "announcement");
    assert!(report.config);
}

/// The file may be anyone's (copied out of the download dir Transmission's user writes, say):
/// a FIFO is not waited on, a link not followed, a sparse giant not read, and binary with
/// terminal escapes is refused without echoing the escapes.
#[test]
fn hostile_files_are_refused_without_blocking_following_or_echoing_them() {
    let f = Fixture::new();
    let fifo = f.path("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let (code, _, err) = f.verify(&[fifo.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a regular file but a FIFO"), "{err}");

    let wire = Announcement::sign_v2(draft("site.pp"), binding(), &f.root)
        .unwrap()
        .to_wire();
    let target = f.write("real.sig", &wire);
    let link = f.path("link.sig");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let (code, _, err) = f.verify(&[link.to_str().unwrap()]);
    assert_eq!(code, 1, "a link is not followed: {err}");

    let sparse = std::fs::File::create(f.path("sparse")).unwrap();
    sparse.set_len(1 << 40).unwrap();
    let (code, _, err) = f.verify(&[f.path("sparse").to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("larger than"), "{err}");

    let junk = f.write("junk", b"\x1b]0;owned\x07\x1b[2J\x00\xff binary");
    let (code, out, err) = f.verify(&[junk.to_str().unwrap()]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("not a file p2pu signs"), "{out}");
    assert!(!out.contains('\x1b') && !out.contains('\x07'), "{out:?}");

    // A plan-shaped and a snapshot-shaped file of garbage are refused by their decoders.
    let d = f.write("bad.plan", b"d6:target3:xyze");
    f.invalid(&[d.to_str().unwrap()], "");
    let l = f.write("bad.snapshot", b"li1ee");
    f.invalid(&[l.to_str().unwrap()], "");
}

/// Without a readable config the keys must be named; with --keys alone the signatures and
/// expiry are checked and the fleet is not.
#[test]
fn without_a_config_verify_needs_keys_and_says_what_it_checked() {
    let f = Fixture::new();
    let wire = Announcement::sign_v2(draft("site.pp"), binding(), &f.root)
        .unwrap()
        .to_wire();
    let a = f.write("a.sig", &wire);
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_p2pu"))
            .arg("verify")
            .args(args)
            .args(["--config", "/nonexistent/site.toml"])
            .output()
            .unwrap()
    };
    let out = run(&[a.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--keys DIR"), "{err}");
    let keys: &Path = &f.path("trusted");
    let out = run(&[a.to_str().unwrap(), "--keys", keys.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("any fleet, one signer"), "{stdout}");
}
