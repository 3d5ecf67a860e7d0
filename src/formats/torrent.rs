//! Creating a .torrent for a file or a directory on disk, with pieces hashed on every core in
//! bounded memory, and reading one from a file. The metainfo itself (encoding, parsing,
//! validating) is the formats crate's ([`p2pu_formats::torrent`], re-exported here); this
//! module owns the filesystem half.

pub use p2pu_formats::torrent::*;

use std::fs;
use std::path::Path;

mod hashing;

/// Creates a torrent for the file or directory at `path`.
pub fn create(path: &Path, opts: &CreateOptions<'_>) -> Result<Metainfo, TorrentError> {
    let name = match &opts.name {
        Some(name) => name.clone(),
        None => default_name(path)?,
    };
    check_component(&name, "info.name").map_err(|_| TorrentError::Name {
        name: name.clone(),
        reason: "want one non-empty path component without `/`, `.` or `..`",
    })?;
    let (files, multi_file) = hashing::scan(path)?;
    let total: u64 = files.iter().map(|f| f.length).sum();
    if total == 0 {
        return Err(TorrentError::Empty {
            path: path.to_path_buf(),
        });
    }
    let piece_length = match opts.piece_length {
        Some(p) if p.is_power_of_two() && (MIN_PIECE_LENGTH..=MAX_PIECE_LENGTH).contains(&p) => p,
        Some(p) => return Err(TorrentError::PieceLength(p)),
        None => auto_piece_length(total),
    };
    let count = total.div_ceil(piece_length);
    if count > MAX_PIECES {
        return Err(TorrentError::TooManyPieces {
            pieces: count,
            piece_length,
        });
    }
    let pieces = hashing::hash_pieces(&files, total, piece_length, opts.progress)?;
    for file in &files {
        let found = fs::symlink_metadata(&file.path)
            .map_err(|source| read_error(&file.path, source))?
            .len();
        if found != file.length {
            return Err(TorrentError::Changed {
                path: file.path.clone(),
                expected: file.length,
                found,
            });
        }
    }
    let bytes = encode(
        opts,
        &name,
        &entries(&files),
        multi_file,
        piece_length,
        &pieces,
    )?;
    Metainfo::from_bytes(&bytes)
}

/// The number of content bytes `create` would hash for `path`, after the same checks.
pub fn content_length(path: &Path) -> Result<u64, TorrentError> {
    Ok(hashing::scan(path)?.0.iter().map(|f| f.length).sum())
}

fn default_name(path: &Path) -> Result<String, TorrentError> {
    // `.` and `dir/..` have no file name of their own; the resolved path does.
    let resolved = fs::canonicalize(path).map_err(|source| read_error(path, source))?;
    let name = resolved.file_name().unwrap_or(resolved.as_os_str());
    name.to_str()
        .map(str::to_string)
        .ok_or_else(|| TorrentError::NonUtf8Name {
            path: path.to_path_buf(),
        })
}

pub(super) fn read_error(path: &Path, source: std::io::Error) -> TorrentError {
    TorrentError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// The files as the metainfo lists them: the path inside the torrent and the length.
fn entries(files: &[hashing::Source]) -> Vec<FileEntry> {
    files
        .iter()
        .map(|f| FileEntry {
            path: f.components.clone(),
            length: f.length,
        })
        .collect()
}

/// Reads and validates the .torrent at `path`; errors name the file.
pub fn read(path: &Path) -> Result<Metainfo, TorrentError> {
    fs::read(path)
        .map_err(|source| read_error(path, source))
        .and_then(|bytes| Metainfo::from_bytes(&bytes))
        .map_err(|e| match e {
            e @ TorrentError::Read { .. } => e,
            e => TorrentError::InFile {
                path: path.to_path_buf(),
                source: Box::new(e),
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::bencode;
    use sha1::{Digest, Sha1};
    use std::fs::File;
    use std::os::unix::fs::symlink;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn sha1(data: &[u8]) -> [u8; 20] {
        Sha1::digest(data).into()
    }

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    fn piece_hashes(content: &[u8], piece: usize) -> Vec<[u8; 20]> {
        content.chunks(piece).map(sha1).collect()
    }

    fn opts(piece: u64) -> CreateOptions<'static> {
        CreateOptions {
            piece_length: Some(piece),
            ..CreateOptions::default()
        }
    }

    #[test]
    fn single_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let content = data(100_000, 7);
        let path = dir.path().join("payload.bin");
        fs::write(&path, &content).unwrap();
        let progress = AtomicU64::new(0);
        let count = |n: u64| {
            progress.fetch_add(n, Ordering::Relaxed);
        };
        let m = create(
            &path,
            &CreateOptions {
                piece_length: Some(32 << 10),
                private: Some(true),
                trackers: vec!["http://127.0.0.1:1/announce".into(), "udp://b:2".into()],
                web_seeds: vec!["http://127.0.0.1:2/payload.bin".into()],
                comment: Some("c".into()),
                created_by: Some("p2pu test".into()),
                creation_date: Some(1_700_000_000),
                progress: Some(&count),
                ..CreateOptions::default()
            },
        )
        .unwrap();
        assert_eq!(progress.load(Ordering::Relaxed), 100_000);
        assert_eq!(m.name, "payload.bin");
        assert_eq!(m.total_length, 100_000);
        assert!(!m.multi_file);
        assert_eq!(m.pieces, piece_hashes(&content, 32 << 10));
        assert_eq!(m.private, Some(true));
        assert_eq!(m.trackers.len(), 2);
        assert_eq!(m.web_seeds.len(), 1);
        assert_eq!(m.creation_date, Some(1_700_000_000));
        let info = bencode::parse(&m.bytes).unwrap().get("info").unwrap().raw;
        assert_eq!(m.info_hash, sha1(info));
        assert_eq!(info_total_length(info).unwrap(), 100_000);
        assert_eq!(Metainfo::from_bytes(&m.bytes).unwrap(), m);
    }

    #[test]
    fn directory_pieces_span_files_in_mktorrent_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        fs::create_dir_all(root.join("a")).unwrap();
        let files = [
            ("a.txt", data(20_000, 1)),
            ("a/b", data(50_000, 2)),
            ("empty", vec![]),
            ("Z", data(3, 3)),
        ];
        for (name, content) in &files {
            fs::write(root.join(name), content).unwrap();
        }
        let m = create(&root, &opts(16 << 10)).unwrap();
        let paths: Vec<String> = m.files.iter().map(|f| f.path.join("/")).collect();
        assert_eq!(paths, ["Z", "a.txt", "a/b", "empty"]);
        let concat = [&files[3].1[..], &files[0].1, &files[1].1].concat();
        assert_eq!(m.pieces, piece_hashes(&concat, 16 << 10));
        assert_eq!(m.name, "tree");
        assert!(m.multi_file);
    }

    #[test]
    fn refuses_what_a_torrent_cannot_carry() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("f"), b"x").unwrap();
        symlink(root.join("f"), root.join("link")).unwrap();
        let err = create(&root.join("link"), &opts(16 << 10)).unwrap_err();
        assert!(matches!(err, TorrentError::Symlink { .. }), "{err}");
        let err = create(root, &opts(16 << 10)).unwrap_err();
        assert!(matches!(err, TorrentError::Symlink { .. }), "{err}");
        fs::remove_file(root.join("link")).unwrap();

        nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = create(root, &opts(16 << 10)).unwrap_err();
        assert!(err.to_string().contains("named pipe"), "{err}");
        fs::remove_file(root.join("fifo")).unwrap();

        fs::create_dir(root.join("hollow")).unwrap();
        let err = create(root, &opts(16 << 10)).unwrap_err();
        assert!(matches!(err, TorrentError::EmptyDirectory { .. }), "{err}");
        fs::remove_dir(root.join("hollow")).unwrap();

        fs::write(root.join("f"), b"").unwrap();
        let err = create(root, &opts(16 << 10)).unwrap_err();
        assert!(matches!(err, TorrentError::Empty { .. }), "{err}");
        fs::write(root.join("f"), b"x").unwrap();

        // Sparse: the piece count is checked before anything is read.
        let huge = File::create(root.join("huge")).unwrap();
        huge.set_len((MAX_PIECES + 1) * MIN_PIECE_LENGTH).unwrap();
        let err = create(&root.join("huge"), &opts(MIN_PIECE_LENGTH)).unwrap_err();
        assert!(matches!(err, TorrentError::TooManyPieces { .. }), "{err}");
        fs::remove_file(root.join("huge")).unwrap();

        let err = create(root, &opts(3 << 14)).unwrap_err();
        assert!(matches!(err, TorrentError::PieceLength(_)), "{err}");
        let bad_name = CreateOptions {
            name: Some("..".into()),
            ..CreateOptions::default()
        };
        let err = create(root, &bad_name).unwrap_err();
        assert!(matches!(err, TorrentError::Name { .. }), "{err}");
    }
}
