//! The legacy codec against torrents made by the real tools the prototype's fleet used:
//! `transmission-create` (which adds `private: 0`, so the prototype could send them) and
//! `mktorrent` (which does not, so they cannot go out in the prototype's format), with
//! `transmission-show` as the reference for the info-hash.

use p2pu::formats::legacy::{decode_payload, encode_payload, LegacyError, LegacyTorrent};
use std::path::Path;
use std::process::Command;

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

/// The info-hash as `transmission-show` prints it.
fn shown_hash(dir: &Path, torrent: &str) -> String {
    let shown = run("transmission-show", &[torrent], dir);
    shown
        .lines()
        .find_map(|l| l.trim().strip_prefix("Hash: "))
        .unwrap_or_else(|| panic!("no Hash line in:\n{shown}"))
        .to_string()
}

/// A temp dir holding `content.bin` of `size` pseudo-random bytes.
fn content(size: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = (0..size).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(dir.path().join("content.bin"), bytes).unwrap();
    dir
}

#[test]
fn transmission_create_torrents_round_trip_through_the_legacy_payload() {
    for size in [1, 70_000, 1_000_000] {
        let dir = content(size);
        run(
            "transmission-create",
            &["-o", "t.torrent", "content.bin"],
            dir.path(),
        );
        let torrent = std::fs::read(dir.path().join("t.torrent")).unwrap();

        let payload = encode_payload(&torrent).unwrap();
        let decoded = decode_payload(&[&payload[..], b"\n"].concat()).unwrap();
        assert_eq!(decoded.torrent, torrent);
        assert_eq!(
            hex::encode(decoded.info_hash),
            shown_hash(dir.path(), "t.torrent")
        );
        assert_eq!(
            (decoded.name.as_str(), decoded.length),
            ("content.bin", size as u64)
        );
        assert!(decoded.creation_date.is_some());
    }
}

#[test]
fn mktorrent_torrents_parse_but_cannot_be_sent_in_the_legacy_format() {
    let dir = content(100_000);
    run("mktorrent", &["-o", "m.torrent", "content.bin"], dir.path());
    let torrent = std::fs::read(dir.path().join("m.torrent")).unwrap();

    let parsed = LegacyTorrent::parse(torrent.clone()).unwrap();
    assert_eq!(
        hex::encode(parsed.info_hash),
        shown_hash(dir.path(), "m.torrent")
    );
    assert!(matches!(
        encode_payload(&torrent),
        Err(LegacyError::Unencodable { .. })
    ));
}
