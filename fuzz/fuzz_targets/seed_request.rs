//! Fuzzes the web seed server behind its socket: the request head parser, then the whole answer
//! (method, path resolution, `Range`) over a fixed tree that holds every case `resolve` tells
//! apart, with links out of the root and a secret beside it. Nothing may panic, a file is served
//! only when the path resolves to a regular file inside the root, the `Range` parser only ever
//! yields a range inside the file, and a 206 says exactly which bytes it sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pu::agent::transfer::seed_http::fuzzing::{answer, range, resolve_path, RangeAnswer};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const COMPLETE: &str = "0123456789abcdef0123456789abcdef01234567";
const RELAYED: &str = "89abcdef0123456789abcdef0123456789abcdef";
const PARTIAL: &str = "fedcba9876543210fedcba9876543210fedcba98";

/// `base/root` is served; `base/secret` must never be.
fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let base = tempfile::Builder::new()
            .prefix("p2pu-fuzz-seed-")
            .tempdir_in("/dev/shm")
            .expect("fixture dir")
            .keep();
        let root = base.join("root");
        let write = |path: PathBuf, bytes: &[u8]| std::fs::write(path, bytes).expect("fixture");
        std::fs::create_dir(&root).expect("fixture");
        write(base.join("secret"), b"never served");
        write(root.join("payload.bin"), &[7u8; 100]);
        write(root.join("empty"), b"");
        std::fs::create_dir(root.join("dir")).expect("fixture");
        std::os::unix::fs::symlink("../secret", root.join("out")).expect("fixture");
        std::os::unix::fs::symlink("/etc/passwd", root.join("abs")).expect("fixture");
        std::os::unix::fs::symlink("payload.bin", root.join("in")).expect("fixture");
        nix::unistd::mkfifo(
            &root.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .expect("fixture");
        for (hash, mark) in [(COMPLETE, "torrent"), (RELAYED, "relay"), (PARTIAL, "")] {
            std::fs::create_dir(root.join(hash)).expect("fixture");
            write(root.join(hash).join("file"), &[1u8; 40]);
            std::os::unix::fs::symlink("../../secret", root.join(hash).join("up"))
                .expect("fixture");
            if !mark.is_empty() {
                write(root.join(format!("{hash}.{mark}")), b"64\n");
            }
        }
        root.canonicalize().expect("fixture")
    })
}

fn check_range(header: &[u8]) {
    for size in [0, 1, 40, 100, u64::MAX] {
        match range(header, size) {
            RangeAnswer::Whole => {}
            RangeAnswer::Unsatisfiable => {}
            RangeAnswer::Bytes { start, end } => {
                assert!(start <= end && end < size, "{start}-{end} of {size}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let root = root();
    // The Range parser alone, on the raw bytes too (the server only hands it header values).
    check_range(data);
    let Some(answer) = answer(root, data) else {
        return;
    };
    assert!(
        [200, 206, 400, 404, 405, 416, 431].contains(&answer.status),
        "status {}",
        answer.status
    );
    if let Some(header) = &answer.range {
        check_range(header);
    }
    let Some(target) = answer.target else {
        return;
    };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    for relay in [false, true] {
        if let Some((file, _)) = resolve_path(root, path, relay) {
            assert!(file.starts_with(root), "{target:?} resolved to {file:?}");
        }
    }
    if matches!(answer.status, 200 | 206) {
        let (file, relayed) =
            resolve_path(root, path, query == "relay").expect("served without resolving");
        let meta = std::fs::symlink_metadata(&file).expect("served file exists");
        assert!(
            meta.is_file(),
            "{target:?} served {file:?}, not a regular file"
        );
        let size = relayed.unwrap_or(meta.len());
        if answer.status == 200 {
            assert_eq!(answer.body_len, size);
        } else {
            let content_range = answer
                .headers
                .iter()
                .find(|(name, _)| *name == "Content-Range")
                .map(|(_, value)| value.as_str())
                .expect("206 without Content-Range");
            let (span, total) = content_range
                .strip_prefix("bytes ")
                .and_then(|r| r.split_once('/'))
                .expect("Content-Range form");
            let (start, end) = span.split_once('-').expect("Content-Range span");
            let (start, end): (u64, u64) = (start.parse().unwrap(), end.parse().unwrap());
            assert_eq!(total, size.to_string());
            assert!(start <= end && end < size);
            assert_eq!(answer.body_len, end - start + 1);
        }
    }
});
