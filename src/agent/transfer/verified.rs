//! The root-only copy of a payload that every applier uses: apply only what was hashed.
//!
//! The download dir belongs to Transmission's user, so whatever sits there can change between
//! the check and the use (issue #13: the `<info-hash>` directory renamed and another manifest
//! planted after verification made root apply it). As RAUC does since CVE-2020-25860, the
//! payload is streamed once into `<state_dir>/verified/<info-hash>-<seq>/<name>` while it is
//! hashed, and the bytes written are the bytes checked: the length and SHA-256 signed in the
//! announcement, or, for legacy payloads, the signed torrent's SHA-1 pieces. Appliers get a
//! [`Verified`], which only this module makes, never a path into the download dir.
//!
//! The staging root is created 0700 and must be a directory of the agent's user (root) with no
//! group or other bits, opened without following links; each update's directory is created
//! fresh in it with `mkdirat` and its file with `openat(O_CREAT | O_EXCL | O_NOFOLLOW)` on those
//! descriptors. The payload is opened `O_NOFOLLOW | O_NONBLOCK` and must be a regular file, read
//! at most one byte past the signed length, in 1 MiB blocks (bounded memory for GiB payloads).

use super::fetch_error::FetchError;
use crate::agent::runtime::state::Record;
use crate::formats::torrent::Metainfo;
use crate::fsutil;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, mkdirat, Mode};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The staging root under the agent's state dir.
pub fn root_of(state_dir: &Path) -> PathBuf {
    state_dir.join("verified")
}

/// What the copied bytes must match. Owned, because the staging keeps it for the whole copy.
#[derive(Debug, Clone)]
pub enum Expected {
    /// The signed length and SHA-256 (hex).
    Sha256 { len: u64, sha256_hex: String },
    /// A legacy payload, which signs no SHA-256: the signed torrent's length and pieces.
    Pieces {
        len: u64,
        piece_length: u64,
        pieces: Vec<[u8; 20]>,
    },
}

impl Expected {
    fn len(&self) -> u64 {
        match *self {
            Expected::Sha256 { len, .. } | Expected::Pieces { len, .. } => len,
        }
    }
}

/// A payload's verified copy in the root-only staging dir. Dropping it leaves the copy; the
/// agent removes it after applying ([`Verified::remove`]) or keeps it (`file` kind).
#[derive(Debug)]
pub struct Verified {
    dir: PathBuf,
    path: PathBuf,
}

impl Verified {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the copy and its directory.
    pub fn remove(self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), "removing a verified copy: {e}");
        }
    }
}

/// A copy being written: every byte goes through [`Staging::write`], which hashes it.
pub struct Staging {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    sha256: Sha256,
    /// Legacy: the SHA-1 of the piece being read, and the pieces that did not match.
    piece: Sha1,
    piece_fill: u64,
    pieces_done: usize,
    bad_piece: Option<usize>,
    written: u64,
    expected: Expected,
}

fn write_error(path: &Path) -> impl Fn(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Write {
        path: path.to_path_buf(),
        source,
    }
}

fn unsafe_root(path: &Path, problem: String) -> FetchError {
    FetchError::UnsafeStaging {
        path: path.to_path_buf(),
        problem,
    }
}

/// Opens (creating it 0700 if missing) the staging root, refusing a link, a non-directory, or
/// a directory that is not the agent user's own with mode 0700.
fn open_root(root: &Path) -> Result<OwnedFd, FetchError> {
    let fd = fsutil::open_dir_nofollow(root, 0o700).map_err(|e| match e.raw_os_error() {
        Some(nix::libc::ELOOP | nix::libc::ENOTDIR) => {
            unsafe_root(root, "not a directory (a link?)".into())
        }
        _ => write_error(root)(e),
    })?;
    let stat = fstat(fd.as_raw_fd()).map_err(|e| write_error(root)(e.into()))?;
    let euid = nix::unistd::geteuid().as_raw();
    if stat.st_uid != euid {
        return Err(unsafe_root(
            root,
            format!("owned by uid {}, not {euid}", stat.st_uid),
        ));
    }
    if stat.st_mode & 0o077 != 0 {
        return Err(unsafe_root(
            root,
            format!("mode {:o}, open to others", stat.st_mode & 0o7777),
        ));
    }
    Ok(fd)
}

/// Starts the copy of `info_hash`'s payload (update `seq`) named `name`, keeping what a fetch
/// cut short left of it: the whole pieces at its start that match the torrent's `pieces`
/// (length, SHA-1s), each read back, hashed as if written now and handed to `keep` (which
/// refills the download dir). Anything after the first piece that does not match is cut off;
/// a copy that cannot be read starts afresh ([`begin`]).
pub fn resume(
    root: &Path,
    info_hash: &str,
    seq: u64,
    name: &str,
    expected: Expected,
    pieces: (u64, &[[u8; 20]]),
    keep: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<Staging, FetchError> {
    match reopen(root, info_hash, seq, name, &expected) {
        Some(staging) => staging.recheck(pieces, keep),
        None => begin(root, info_hash, seq, name, expected),
    }
}

/// Starts the striped transfer's copy of `info_hash`'s payload (update `seq`) named `name`,
/// keeping the copy an earlier fetch of it left (an agent killed or stopped mid-way) as it
/// is, `true` then: nothing in it is trusted, the caller reads each block back and keeps only
/// those that match their signed leaf (`stripes::Receiver::restore`), and the whole SHA-256 is
/// checked at the end ([`Staging::finish_written`]). Otherwise a fresh copy ([`begin`]).
pub fn resume_blocks(
    root: &Path,
    info_hash: &str,
    seq: u64,
    name: &str,
    expected: Expected,
) -> Result<(Staging, bool), FetchError> {
    match reopen(root, info_hash, seq, name, &expected) {
        Some(staging) => Ok((staging, true)),
        None => begin(root, info_hash, seq, name, expected).map(|s| (s, false)),
    }
}

/// The copy an earlier fetch left, opened for reading and writing without following links,
/// when it is root's own regular file in a root-only directory.
fn reopen(
    root: &Path,
    info_hash: &str,
    seq: u64,
    name: &str,
    expected: &Expected,
) -> Option<Staging> {
    if !plain_name(name) || !info_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let root_fd = open_root(root).ok()?;
    let sub = format!("{info_hash}-{seq}");
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
    let dir_fd = fsutil::openat_nofollow(&root_fd, &sub, dir_flags, 0).ok()?;
    let file = File::from(fsutil::openat_nofollow(&dir_fd, name, OFlag::O_RDWR, 0).ok()?);
    let meta = file.metadata().ok()?;
    let euid = nix::unistd::geteuid().as_raw();
    if !meta.is_file() || std::os::unix::fs::MetadataExt::uid(&meta) != euid {
        return None;
    }
    let dir = root.join(&sub);
    Some(Staging::empty(dir.join(name), dir, file, expected.clone()))
}

fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

impl Staging {
    /// Keeps the whole pieces at the start of the reopened copy that match, cuts off the
    /// rest, and leaves the copy positioned for the next piece.
    fn recheck(
        mut self,
        (piece_length, hashes): (u64, &[[u8; 20]]),
        keep: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<Staging, FetchError> {
        use sha1::Digest as _;
        use std::io::{Read, Seek, SeekFrom};
        let len = self.expected.len();
        let mut piece = vec![0u8; usize::try_from(piece_length.min(len)).unwrap_or(0)];
        for want in hashes {
            let size = usize::try_from(piece_length.min(len - self.written)).unwrap_or(0);
            if size == 0 || self.file.read_exact(&mut piece[..size]).is_err() {
                break;
            }
            if Sha1::digest(&piece[..size]).as_slice() != want {
                break;
            }
            keep(&piece[..size]).map_err(write_error(&self.path))?;
            let bytes = std::mem::take(&mut piece);
            self.hash(&bytes[..size]);
            piece = bytes;
        }
        let kept = self.written;
        self.file.set_len(kept).map_err(write_error(&self.path))?;
        self.file
            .seek(SeekFrom::Start(kept))
            .map_err(write_error(&self.path))?;
        Ok(self)
    }
}

/// Starts the copy of `info_hash`'s payload (update `seq`) named `name`, in a fresh directory
/// under `root`.
pub fn begin(
    root: &Path,
    info_hash: &str,
    seq: u64,
    name: &str,
    expected: Expected,
) -> Result<Staging, FetchError> {
    if !plain_name(name) || !info_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(unsafe_root(
            root,
            format!("asked to hold {info_hash:?}/{name:?}, not one plain name"),
        ));
    }
    let root_fd = open_root(root)?;
    let sub = format!("{info_hash}-{seq}");
    let dir = root.join(&sub);
    // A copy left by an agent that stopped mid-way is not trusted: start again.
    for attempt in 0..2 {
        match mkdirat(Some(root_fd.as_raw_fd()), sub.as_str(), Mode::S_IRWXU) {
            Ok(()) => break,
            Err(Errno::EEXIST) if attempt == 0 => {
                std::fs::remove_dir_all(&dir).map_err(write_error(&dir))?;
            }
            Err(e) => return Err(write_error(&dir)(e.into())),
        }
    }
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
    let dir_fd =
        fsutil::openat_nofollow(&root_fd, &sub, dir_flags, 0).map_err(write_error(&dir))?;
    let path = dir.join(name);
    // Readable too: a striped copy is read back through this descriptor to be hashed
    // ([`Staging::finish_written`]).
    let file_flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL;
    let file =
        fsutil::openat_nofollow(&dir_fd, name, file_flags, 0o600).map_err(write_error(&path))?;
    Ok(Staging::empty(path, dir, File::from(file), expected))
}

impl Staging {
    /// A copy at `path` in `dir` with nothing hashed yet.
    fn empty(path: PathBuf, dir: PathBuf, file: File, expected: Expected) -> Staging {
        let expected = match expected {
            Expected::Pieces {
                len,
                piece_length,
                pieces,
            } => Expected::Pieces {
                len,
                piece_length: piece_length.max(1),
                pieces,
            },
            sha256 => sha256,
        };
        Staging {
            dir,
            path,
            file,
            sha256: Sha256::new(),
            piece: Sha1::new(),
            piece_fill: 0,
            pieces_done: 0,
            bad_piece: None,
            written: 0,
            expected,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many bytes the copy holds.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes `bytes` to the copy and hashes them.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), FetchError> {
        self.file
            .write_all(bytes)
            .map_err(write_error(&self.path))?;
        self.hash(bytes);
        Ok(())
    }

    /// Hashes `bytes` as the next ones of the copy.
    fn hash(&mut self, bytes: &[u8]) {
        self.written += bytes.len() as u64;
        match &self.expected {
            Expected::Sha256 { .. } => self.sha256.update(bytes),
            Expected::Pieces { piece_length, .. } => {
                let piece_length = *piece_length;
                let mut rest = bytes;
                while !rest.is_empty() {
                    let room = (piece_length - self.piece_fill) as usize;
                    let (now, later) = rest.split_at(room.min(rest.len()));
                    self.piece.update(now);
                    self.piece_fill += now.len() as u64;
                    rest = later;
                    if self.piece_fill == piece_length {
                        self.end_piece();
                    }
                }
            }
        }
    }

    fn end_piece(&mut self) {
        let digest: [u8; 20] = std::mem::take(&mut self.piece).finalize().into();
        if let Expected::Pieces { pieces, .. } = &self.expected {
            if pieces.get(self.pieces_done) != Some(&digest) && self.bad_piece.is_none() {
                self.bad_piece = Some(self.pieces_done);
            }
        }
        self.pieces_done += 1;
        self.piece_fill = 0;
    }

    /// Writes `bytes` at `offset` of the copy without hashing them (the striped transfer's
    /// blocks arrive out of order): such a copy is finished only with
    /// [`Staging::finish_written`], which hashes what the file holds.
    pub fn write_at(&self, bytes: &[u8], offset: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.file, bytes, offset)
    }

    /// The file being written, for writes at offsets ([`Staging::write_at`]).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Reads back the whole copy written by [`Staging::write_at`] (it lies in the root-only
    /// staging dir), hashes it as if written now, and checks it as [`Staging::finish`] does.
    pub fn finish_written(mut self) -> Result<Verified, FetchError> {
        let mut buffer = vec![0u8; 1 << 20];
        let mut at = 0u64;
        let read = loop {
            match std::os::unix::fs::FileExt::read_at(&self.file, &mut buffer, at) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    at += n as u64;
                    self.hash(&buffer[..n]);
                }
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = read {
            let path = self.path.clone();
            self.discard();
            return Err(write_error(&path)(e));
        }
        self.finish()
    }

    /// Checks what was written against what was signed: the copy when it matches; otherwise
    /// the copy is removed and the mismatch returned.
    pub fn finish(mut self) -> Result<Verified, FetchError> {
        let checked = self.check();
        let dir = self.dir.clone();
        match checked {
            Ok(()) => Ok(Verified {
                dir: self.dir,
                path: self.path,
            }),
            Err(e) => {
                drop(self.file);
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// Removes the copy (a fetch that failed).
    pub fn discard(self) {
        drop(self.file);
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    fn check(&mut self) -> Result<(), FetchError> {
        let want_len = self.expected.len();
        if self.written != want_len {
            return Err(FetchError::PayloadLength {
                path: self.path.clone(),
                want: want_len,
                got: self.written,
            });
        }
        match &self.expected {
            Expected::Sha256 { sha256_hex, .. } => {
                let got = hex::encode(std::mem::take(&mut self.sha256).finalize());
                if got != *sha256_hex {
                    return Err(FetchError::Sha256Mismatch {
                        path: self.path.clone(),
                        want: sha256_hex.clone(),
                        got,
                    });
                }
            }
            Expected::Pieces { .. } => {
                if self.piece_fill > 0 {
                    self.end_piece();
                }
                let Expected::Pieces { pieces, .. } = &self.expected else {
                    unreachable!("matched above");
                };
                if self.bad_piece.is_some() || self.pieces_done != pieces.len() {
                    return Err(FetchError::PieceMismatch {
                        path: self.path.clone(),
                        piece: self.bad_piece.unwrap_or(self.pieces_done),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Copies the payload at `source` (in the download dir) into the staging root while hashing
/// it, and returns the copy when it is the signed payload. Whatever happens to `source`
/// afterwards, the copy is what was checked.
pub fn copy_verified(
    root: &Path,
    source: &Path,
    info_hash: &str,
    seq: u64,
    expected: Expected,
) -> Result<Verified, FetchError> {
    let read_error = |source_error| FetchError::Read {
        path: source.to_path_buf(),
        source: source_error,
    };
    // A link or a fifo planted in place of the payload is neither followed nor waited on.
    let (file, _) = crate::untrusted::open(source).map_err(FetchError::Untrusted)?;
    let name = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let limit = expected.len().saturating_add(1);
    let mut staging = begin(root, info_hash, seq, &name, expected)?;
    let mut limited = file.take(limit);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = match limited.read(&mut buffer) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                staging.discard();
                return Err(read_error(e));
            }
        };
        if n == 0 {
            break;
        }
        if let Err(e) = staging.write(&buffer[..n]) {
            staging.discard();
            return Err(e);
        }
    }
    staging.finish()
}

/// What a payload must match: the signed length and SHA-256, or for a legacy payload (which
/// signs none) its signed torrent's length and pieces.
pub fn expected(record: &Record, metainfo: Option<&Metainfo>) -> Result<Expected, FetchError> {
    if let Some(sha256) = record.sha256 {
        return Ok(Expected::Sha256 {
            len: record.len,
            sha256_hex: hex::encode(sha256),
        });
    }
    match metainfo {
        Some(metainfo) => Ok(Expected::Pieces {
            len: metainfo.total_length,
            piece_length: metainfo.piece_length,
            pieces: metainfo.pieces.clone(),
        }),
        None => Err(FetchError::Unverifiable {
            name: record.name.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sha(content: &[u8]) -> String {
        hex::encode(Sha256::digest(content))
    }

    const HASH: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn the_copy_is_the_checked_bytes_and_a_mismatch_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let root = root_of(tmp.path());
        let source = tmp.path().join("site.pp");
        std::fs::write(&source, b"good").unwrap();
        let want = sha(b"good");
        let expected = Expected::Sha256 {
            len: 4,
            sha256_hex: want.clone(),
        };
        let copy = copy_verified(&root, &source, HASH, 7, expected.clone()).unwrap();
        assert_eq!(copy.path(), root.join(format!("{HASH}-7/site.pp")));
        assert_eq!(std::fs::read(copy.path()).unwrap(), b"good");
        let mode = std::fs::metadata(&root).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o700);
        copy.remove();
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);

        std::fs::write(&source, b"evil").unwrap();
        let err = copy_verified(&root, &source, HASH, 8, expected.clone()).unwrap_err();
        assert!(matches!(err, FetchError::Sha256Mismatch { .. }), "{err}");
        std::fs::write(&source, b"good and more").unwrap();
        let err = copy_verified(&root, &source, HASH, 9, expected.clone()).unwrap_err();
        assert!(matches!(err, FetchError::PayloadLength { .. }), "{err}");
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
    }

    /// The staging root must be root's own 0700 directory: one that others can enter or
    /// write, or a link to elsewhere, is refused rather than used.
    #[test]
    fn a_staging_root_open_to_others_or_a_link_is_refused() {
        if !crate::testing::root("chown to another uid") {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let source = tmp.path().join("site.pp");
        std::fs::write(&source, b"good").unwrap();
        let want = sha(b"good");
        let expected = Expected::Sha256 {
            len: 4,
            sha256_hex: want.clone(),
        };
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = copy_verified(&open, &source, HASH, 1, expected.clone()).unwrap_err();
        assert!(matches!(err, FetchError::UnsafeStaging { .. }), "{err}");

        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        let err = copy_verified(&link, &source, HASH, 1, expected.clone()).unwrap_err();
        assert!(matches!(err, FetchError::UnsafeStaging { .. }), "{err}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);

        let theirs = tmp.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
        nix::unistd::chown(&theirs, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        let err = copy_verified(&theirs, &source, HASH, 1, expected.clone()).unwrap_err();
        assert!(matches!(err, FetchError::UnsafeStaging { .. }), "{err}");
    }

    /// A link planted in place of the payload is not followed (root would copy any file).
    #[test]
    fn a_link_in_place_of_the_payload_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let secret = tmp.path().join("secret");
        std::fs::write(&secret, b"good").unwrap();
        let source = tmp.path().join("site.pp");
        std::os::unix::fs::symlink(&secret, &source).unwrap();
        let want = sha(b"good");
        let expected = Expected::Sha256 {
            len: 4,
            sha256_hex: want.clone(),
        };
        let err =
            copy_verified(&root_of(tmp.path()), &source, HASH, 1, expected.clone()).unwrap_err();
        assert!(
            matches!(
                err,
                FetchError::Untrusted(crate::untrusted::UntrustedError::Open { .. })
            ),
            "{err}"
        );
    }

    /// Legacy payloads sign no SHA-256; their copy is checked against the signed torrent's
    /// pieces instead.
    #[test]
    fn a_legacy_copy_is_checked_piece_by_piece() {
        use crate::formats::torrent::{create, CreateOptions};
        let tmp = tempfile::tempdir().unwrap();
        let source = tmp.path().join("site.pp");
        let content: Vec<u8> = (0..100_000u32).map(|n| n as u8).collect();
        std::fs::write(&source, &content).unwrap();
        let torrent = create(
            &source,
            &CreateOptions {
                piece_length: Some(16 << 10),
                ..CreateOptions::default()
            },
        )
        .unwrap();
        let expected = Expected::Pieces {
            len: torrent.total_length,
            piece_length: torrent.piece_length,
            pieces: torrent.pieces.clone(),
        };
        let root = root_of(tmp.path());
        let copy = copy_verified(&root, &source, HASH, 1, expected.clone()).unwrap();
        assert_eq!(std::fs::read(copy.path()).unwrap(), content);
        let mut changed = content.clone();
        changed[50_000] ^= 1;
        std::fs::write(&source, &changed).unwrap();
        let err = copy_verified(&root, &source, HASH, 2, expected.clone()).unwrap_err();
        assert!(
            matches!(err, FetchError::PieceMismatch { piece: 3, .. }),
            "{err}"
        );
    }
}
