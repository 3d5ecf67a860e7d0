//! Fuzzes archive extraction (`archive` and `dir` updates) on the real filesystem: the first
//! byte picks a tar (gzipped here, so mutations reach the tar headers rather than the deflate
//! stream), a raw .tar.gz or a zip. Nothing may panic; whatever happens, nothing appears beside
//! the target (no staging dir left, no entry escaping), and on success the target holds only
//! directories and regular files without setuid/setgid/sticky bits, exactly as many and as
//! large as the report says. On failure the target does not exist.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pu::agent::apply::extract::{extract, ArchiveFormat, Limits};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// `base/jail` holds the archive and the target; `base/sentinel` must stay as it is.
fn base() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let base = tempfile::Builder::new()
            .prefix("p2pu-fuzz-extract-")
            .tempdir_in("/dev/shm")
            .expect("fixture dir")
            .keep();
        std::fs::create_dir(base.join("jail")).expect("fixture");
        std::fs::write(base.join("sentinel"), b"untouched").expect("fixture");
        base
    })
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("listing")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// (files, dirs, bytes) under `dir`, asserting each is a plain directory or regular file.
fn walk(dir: &Path) -> (u64, u64, u64) {
    let mut counts = (0, 0, 0);
    for entry in std::fs::read_dir(dir).expect("listing") {
        let path = entry.expect("entry").path();
        let meta = std::fs::symlink_metadata(&path).expect("stat");
        assert_eq!(
            meta.permissions().mode() & 0o7000,
            0,
            "{path:?} kept special bits"
        );
        if meta.is_dir() {
            let (f, d, b) = walk(&path);
            counts = (counts.0 + f, counts.1 + d + 1, counts.2 + b);
        } else {
            assert!(meta.is_file(), "{path:?} is neither a directory nor a file");
            counts = (counts.0 + 1, counts.1, counts.2 + meta.len());
        }
    }
    counts
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let base = base();
    let jail = base.join("jail");
    let archive = jail.join("payload");
    let target = jail.join("out");
    let (format, bytes) = match mode % 3 {
        0 => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(body).expect("gzip");
            (ArchiveFormat::TarGz, gz.finish().expect("gzip"))
        }
        1 => (ArchiveFormat::TarGz, body.to_vec()),
        _ => (ArchiveFormat::Zip, body.to_vec()),
    };
    std::fs::write(&archive, &bytes).expect("writing the archive");
    let limits = Limits {
        max_total_bytes: 1 << 20,
        max_entries: 1000,
        max_entry_bytes: 256 << 10,
    };
    let result = extract(&archive, format, &target, &limits);
    assert_eq!(
        names(base),
        ["jail", "sentinel"],
        "something escaped the jail"
    );
    assert_eq!(
        std::fs::read(base.join("sentinel")).expect("sentinel"),
        b"untouched"
    );
    match result {
        Ok(report) => {
            assert_eq!(names(&jail), ["out", "payload"], "staging left behind");
            let (files, dirs, bytes) = walk(&target);
            assert_eq!(
                (files, dirs, bytes),
                (report.files, report.dirs, report.bytes)
            );
            assert!(report.bytes <= limits.max_total_bytes);
            std::fs::remove_dir_all(&target).expect("cleaning up");
        }
        Err(_) => assert_eq!(
            names(&jail),
            ["payload"],
            "a failed extraction left something"
        ),
    }
});
