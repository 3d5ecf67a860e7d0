//! p2pu's torrents against the real tools: piece hashes and info-hashes equal those of
//! mktorrent 1.1 and transmission-create 3.00 for the same content and fields, and
//! transmission-show reads what p2pu writes. Needs `mktorrent` and `transmission-cli` installed.

use p2pu::formats::torrent::{self, CreateOptions, Metainfo, TorrentError};
use std::fs;
use std::path::Path;
use std::process::Command;

const PIECE: u64 = 32 << 10;

/// Runs a tool and returns its stdout; fails the test with its command and stderr otherwise.
fn tool(program: &str, args: &[&str], cwd: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| {
            panic!("running {program} (install mktorrent and transmission-cli): {e}")
        });
    assert!(
        out.status.success(),
        "`{program} {}` {}: {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn content(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn p2pu(path: &Path, private: Option<bool>) -> Metainfo {
    let opts = CreateOptions {
        piece_length: Some(PIECE),
        private,
        ..CreateOptions::default()
    };
    torrent::create(path, &opts).unwrap_or_else(|e| panic!("p2pu create {}: {e}", path.display()))
}

fn mktorrent(dir: &Path, input: &str, extra: &[&str]) -> Metainfo {
    let _ = fs::remove_file(dir.join("mk.torrent"));
    let args = [&["-l", "15", "-o", "mk.torrent"], extra, &[input]].concat();
    tool("mktorrent", &args, dir);
    torrent::read(&dir.join("mk.torrent")).expect("p2pu reads mktorrent's output")
}

fn transmission_create(dir: &Path, input: &str) -> Metainfo {
    let _ = fs::remove_file(dir.join("tc.torrent"));
    tool(
        "transmission-create",
        &["-s", "32", "-o", "tc.torrent", input],
        dir,
    );
    torrent::read(&dir.join("tc.torrent")).expect("p2pu reads transmission-create's output")
}

/// 1 byte, less than a piece, exact multiples of the piece size, and a ragged last piece.
const SIZES: [usize; 5] = [
    1,
    1000,
    PIECE as usize,
    3 * PIECE as usize,
    3 * PIECE as usize + 7,
];

#[test]
fn single_file_matches_mktorrent() {
    let dir = tempfile::tempdir().unwrap();
    for (i, size) in SIZES.into_iter().enumerate() {
        fs::write(dir.path().join("payload.bin"), content(size, i as u32)).unwrap();
        let ours = p2pu(&dir.path().join("payload.bin"), None);
        let theirs = mktorrent(dir.path(), "payload.bin", &[]);
        assert_eq!(ours.pieces, theirs.pieces, "pieces, {size} bytes");
        assert_eq!(
            ours.info_hash_hex(),
            theirs.info_hash_hex(),
            "info-hash, {size} bytes"
        );
        assert_eq!(ours.total_length, size as u64);
    }
}

#[test]
fn private_flag_matches_mktorrent_private() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("p.bin"), content(70_000, 9)).unwrap();
    let ours = p2pu(&dir.path().join("p.bin"), Some(true));
    let theirs = mktorrent(dir.path(), "p.bin", &["-p"]);
    assert_eq!(theirs.private, Some(true));
    assert_eq!(ours.info_hash, theirs.info_hash);
}

/// transmission-create writes `private: 0` into every public torrent; p2pu matches it on request.
#[test]
fn private_zero_matches_transmission_create() {
    let dir = tempfile::tempdir().unwrap();
    for (i, size) in SIZES.into_iter().enumerate() {
        fs::write(dir.path().join("t.bin"), content(size, 100 + i as u32)).unwrap();
        let theirs = transmission_create(dir.path(), "t.bin");
        assert_eq!(theirs.private, Some(false));
        assert_eq!(
            p2pu(&dir.path().join("t.bin"), Some(false)).info_hash,
            theirs.info_hash
        );
        let without = p2pu(&dir.path().join("t.bin"), None);
        assert_eq!(without.pieces, theirs.pieces, "pieces, {size} bytes");
        assert_ne!(without.info_hash, theirs.info_hash);
    }
}

/// Names chosen so a path-component sort and a whole-path sort differ (`a.txt` vs `a/b`) and
/// case matters (`B`, `Z`); plus a hidden file, an empty file and pieces spanning files.
fn tricky_tree(root: &Path) {
    fs::create_dir_all(root.join("a")).unwrap();
    fs::create_dir_all(root.join("B/deep/er")).unwrap();
    let files: [(&str, usize); 7] = [
        ("a.txt", 40_000),
        ("a/b", 1),
        ("B/deep/er/c", 70_000),
        ("Z", PIECE as usize),
        (".hidden", 10),
        ("zero", 0),
        ("ünïcode", 5_000),
    ];
    for (i, (name, len)) in files.into_iter().enumerate() {
        fs::write(root.join(name), content(len, 1000 + i as u32)).unwrap();
    }
}

#[test]
fn directory_matches_mktorrent() {
    let dir = tempfile::tempdir().unwrap();
    tricky_tree(&dir.path().join("tree"));
    let ours = p2pu(&dir.path().join("tree"), None);
    let theirs = mktorrent(dir.path(), "tree", &[]);
    assert_eq!(ours.files, theirs.files);
    assert_eq!(ours.pieces, theirs.pieces);
    assert_eq!(ours.info_hash, theirs.info_hash);
    assert_eq!(ours.files.len(), 7, "nothing skipped: {:?}", ours.files);
}

/// transmission-create skips hidden and empty files and sorts without case, so compare on a
/// tree where those rules agree with p2pu's.
#[test]
fn directory_matches_transmission_create() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("plain");
    fs::create_dir_all(root.join("a/x")).unwrap();
    fs::create_dir_all(root.join("c")).unwrap();
    for (i, (name, len)) in [("a/x/1", 50_000), ("b", 3), ("c/d", 90_000)]
        .into_iter()
        .enumerate()
    {
        fs::write(root.join(name), content(len, 2000 + i as u32)).unwrap();
    }
    let theirs = transmission_create(dir.path(), "plain");
    let ours = p2pu(&root, Some(false));
    assert_eq!(ours.files, theirs.files);
    assert_eq!(ours.info_hash, theirs.info_hash);
}

#[test]
fn transmission_show_reads_p2pu_torrents() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("one.bin"), content(100_000, 5)).unwrap();
    tricky_tree(&dir.path().join("tree"));
    for (input, files) in [
        ("one.bin", &["one.bin"][..]),
        ("tree", &["tree/a/b", "tree/ünïcode", "tree/zero"]),
    ] {
        let opts = CreateOptions {
            trackers: vec![
                "http://127.0.0.1:1/announce".into(),
                "http://127.0.0.2:1/announce".into(),
            ],
            web_seeds: vec!["http://127.0.0.1:2/seed".into()],
            comment: Some("interop".into()),
            created_by: Some("p2pu test".into()),
            creation_date: Some(1_700_000_000),
            ..CreateOptions::default()
        };
        let m = torrent::create(&dir.path().join(input), &opts).unwrap();
        fs::write(dir.path().join("ours.torrent"), &m.bytes).unwrap();
        let shown = tool("transmission-show", &["ours.torrent"], dir.path());
        assert!(
            shown.contains(&format!("Hash: {}", m.info_hash_hex())),
            "{shown}"
        );
        assert!(shown.contains("http://127.0.0.2:1/announce"), "{shown}");
        assert!(shown.contains("http://127.0.0.1:2/seed"), "{shown}");
        for file in files {
            assert!(shown.contains(file), "{file} missing from {shown}");
        }
    }
}

/// mktorrent writes a 0-piece torrent for an empty file and transmission-create fails on it;
/// p2pu refuses it up front, naming the path.
#[test]
fn empty_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("empty"), b"").unwrap();
    let err = torrent::create(&dir.path().join("empty"), &CreateOptions::default()).unwrap_err();
    assert!(matches!(err, TorrentError::Empty { .. }));
    assert!(err.to_string().contains("empty holds no data"), "{err}");
}

#[test]
fn binary_creates_a_torrent_transmission_reads() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("site.pp"), content(20_000, 77)).unwrap();
    let out = tool(
        env!("CARGO_BIN_EXE_p2pu"),
        &[
            "torrent",
            "create",
            "site.pp",
            "-o",
            "out/site.torrent",
            "--piece-size",
            "16K",
        ],
        dir.path(),
    );
    let m = torrent::read(&dir.path().join("out/site.torrent")).unwrap();
    assert!(out.contains(&m.info_hash_hex()), "{out}");
    let shown = tool("transmission-show", &["out/site.torrent"], dir.path());
    assert!(shown.contains("Piece Count: 2"), "{shown}");
    let ours = tool(
        env!("CARGO_BIN_EXE_p2pu"),
        &["torrent", "show", "out/site.torrent"],
        dir.path(),
    );
    assert!(
        ours.contains(&format!("info-hash:  {}", m.info_hash_hex())),
        "{ours}"
    );
}

/// A 4 GiB input is streamed, never loaded: peak RSS of the binary stays far under 64 MiB.
/// The file is sparse, so this costs hashing time but no disk.
#[test]
fn binary_hashes_4_gib_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let file = fs::File::create(dir.path().join("big.img")).unwrap();
    file.set_len(4 << 30).unwrap();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "maxrss_kib=%M", env!("CARGO_BIN_EXE_p2pu")])
        .args(["torrent", "create", "big.img", "--reproducible"])
        .current_dir(dir.path())
        .output()
        .expect("running /usr/bin/time (install the `time` package)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rss_kib: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("maxrss_kib="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no max RSS in {stderr}"));
    assert!(rss_kib < 32 << 10, "peak RSS {rss_kib} KiB");
    let m = torrent::read(&dir.path().join("big.img.torrent")).unwrap();
    assert_eq!(m.total_length, 4 << 30);
    assert_eq!(m.piece_length, 2 << 20);
    let zeros = sha1_of_zeros(2 << 20);
    assert!(m.pieces.iter().all(|p| *p == zeros));
}

fn sha1_of_zeros(len: usize) -> [u8; 20] {
    use sha1::Digest;
    sha1::Sha1::digest(vec![0u8; len]).into()
}
