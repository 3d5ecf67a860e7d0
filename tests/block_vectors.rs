//! The striped transfer's block format and roster (`formats::blocks`, `formats::roster`)
//! against captured bytes in tests/vectors/blocks/, whose leaves, root and proof were computed
//! by a second implementation (Python's hashlib, as docs/wire-blocks.md describes), and the
//! info dict's `p2pu` key against Transmission: a torrent that carries it is still a torrent
//! that `transmission-show` reads, with the info-hash p2pu computes, so nodes and clients that
//! do not know the key keep working, and a real `transmission-daemon` verifies and seeds it
//! (each node's seeding step, and the Transmission fallback).

mod support;

use p2pu::engines::{TorrentEngine, TorrentState};
use p2pu::formats::blocks::{BlocksError, Layout, Leaves, Proof, Spec, SpecError};
use p2pu::formats::roster::{Roster, RosterError};
use p2pu::formats::torrent::{self, Metainfo};
use std::path::Path;
use std::process::Command;

/// The vectors' payload: 3 blocks of 16 KiB and 5 bytes, `(i * 7919) % 251`.
fn payload() -> Vec<u8> {
    (0..3 * 16384 + 5).map(|i| (i * 7919 % 251) as u8).collect()
}

fn vector(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors/blocks")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn root() -> [u8; 32] {
    let text = String::from_utf8(vector("p2pu-49157.root")).unwrap();
    hex::decode(text.trim()).unwrap().try_into().unwrap()
}

#[test]
fn leaves_root_and_proof_match_the_captured_vectors() {
    let data = payload();
    let layout = Layout::for_length(data.len() as u64).unwrap();
    let leaves = Leaves::of_payload(layout, &data).unwrap();
    assert_eq!(leaves.encode(), vector("p2pu-49157.leaves"));
    assert_eq!(leaves.root(), root());
    assert_eq!(
        Leaves::decode(layout, &root(), &vector("p2pu-49157.leaves")).unwrap(),
        leaves
    );
    let proof = vector("p2pu-49157-block3.proof");
    assert_eq!(leaves.proof(3).unwrap().encode(), proof);
    let read = Proof::decode(layout, 3, &proof).unwrap();
    read.verify(layout, &root(), &data[3 * 16384..]).unwrap();
    // The short last block padded to a whole one (what a lazy member might send) is refused.
    let mut padded = data[3 * 16384..].to_vec();
    padded.resize(16384, 0);
    assert!(matches!(
        read.verify(layout, &root(), &padded),
        Err(BlocksError::BlockLength { .. })
    ));
}

#[test]
fn the_spec_vector_reads_back_and_re_encodes_to_its_bytes() {
    let bytes = vector("p2pu-49157.spec");
    let value = p2pu::formats::bencode::parse(&bytes).unwrap();
    let spec = Spec::decode(&value, 3 * 16384 + 5).unwrap();
    assert_eq!(spec.root, root());
    assert_eq!(spec.roster, Some([0x11; 32]));
    assert_eq!(spec.prev, None);
    assert_eq!(spec.to_bencode(), bytes);
}

#[test]
fn the_roster_vectors_read_as_captured() {
    let bytes = vector("four.roster");
    let roster = Roster::decode(&bytes).unwrap();
    assert_eq!(roster.origin, "origin");
    assert_eq!(roster.members.len(), 4);
    assert!(roster.is_slow("node-c"));
    assert_eq!(roster.encode(), bytes);
    assert_eq!(
        Roster::decode(&vector("version-2.roster")),
        Err(RosterError::UnsupportedVersion { got: 2 })
    );
}

fn run(program: &str, args: &[&str], cwd: &Path) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("running {program} (is it installed?): {e}"));
    assert!(
        output.status.success(),
        "`{program} {}` {}: {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The vectors' payload in a temp dir as `content.bin`, and its torrent with the `p2pu` key
/// (the roster digest of `four.roster`), as `submit` will write it in stripes mode.
fn torrent_with_spec(dir: &Path) -> (Vec<u8>, Metainfo, Spec) {
    let data = payload();
    let file = dir.join("content.bin");
    std::fs::write(&file, &data).unwrap();
    let plain = torrent::create(&file, &torrent::CreateOptions::default()).unwrap();
    let top = p2pu::formats::bencode::parse(&plain.bytes).unwrap();
    let info = top.get("info").unwrap().raw;
    let layout = Layout::for_length(data.len() as u64).unwrap();
    let spec = Spec {
        layout,
        root: Leaves::of_payload(layout, &data).unwrap().root(),
        roster: Some(Roster::decode(&vector("four.roster")).unwrap().digest()),
        prev: None,
    };
    let with = spec.insert_into(info).unwrap();
    let bytes = [b"d4:info".as_slice(), &with, b"e"].concat();
    (bytes, plain, spec)
}

/// Nodes that do not know the `p2pu` key (older p2pu, Transmission) must keep the info dict as
/// it is: p2pu's own parser reads the torrent, and `transmission-show` names the same
/// info-hash, so the signature over the info-hash binds the root for everyone.
#[test]
fn a_torrent_with_the_p2pu_key_is_read_by_transmission_with_the_same_info_hash() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, plain, spec) = torrent_with_spec(dir.path());
    let with = p2pu::formats::bencode::parse(&bytes)
        .unwrap()
        .get("info")
        .unwrap()
        .raw
        .to_vec();
    let meta = Metainfo::from_bytes(&bytes).unwrap();
    assert_ne!(meta.info_hash, plain.info_hash);
    assert_eq!(
        (meta.total_length, &meta.pieces),
        (plain.total_length, &plain.pieces)
    );
    assert_eq!(Spec::from_metainfo(&bytes).unwrap(), Some(spec.clone()));
    assert_eq!(Spec::from_metainfo(&plain.bytes).unwrap(), None);
    assert_eq!(spec.insert_into(&with), Err(SpecError::AlreadyThere));

    std::fs::write(dir.path().join("t.torrent"), &bytes).unwrap();
    let shown = run("transmission-show", &["t.torrent"], dir.path());
    let hash = shown
        .lines()
        .find_map(|l| l.trim().strip_prefix("Hash: "))
        .unwrap_or_else(|| panic!("no Hash line in:\n{shown}"));
    assert_eq!(hash, hex::encode(meta.info_hash));
    assert!(shown.contains("content.bin"), "{shown}");
}

/// A real `transmission-daemon` 3.00 given such a torrent with its data present checks every
/// piece against the info dict it hashed (the key included) and seeds it, under p2pu's
/// info-hash: what every node does after an apply, and what the fallback relies on.
#[test]
fn transmission_verifies_and_seeds_a_torrent_with_the_p2pu_key() {
    let dir = tempfile::tempdir().unwrap();
    let node = support::start_transmission(
        dir.path(),
        support::free_port(),
        support::free_port(),
        "p2pu",
        "correct horse",
    )
    .unwrap();
    let (bytes, _, _) = torrent_with_spec(&node.download_dir);
    let meta = Metainfo::from_bytes(&bytes).unwrap();
    let client = node.client();
    let added = client
        .add_metainfo(&bytes, Some(&node.download_dir), false)
        .unwrap();
    let hash = hex::encode(meta.info_hash);
    assert_eq!(added.hash_string, hash);
    let seeding = support::wait_for(std::time::Duration::from_secs(30), || {
        client
            .get(std::slice::from_ref(&hash))
            .ok()
            .and_then(|v| v.into_iter().next())
            .filter(|s| s.status == TorrentState::Seeding)
    })
    .expect("the torrent never reached seeding");
    assert!(seeding.is_complete());
    assert_eq!(seeding.error, 0, "{}", seeding.error_string);
    assert_eq!(seeding.total_size, meta.total_length);
}
