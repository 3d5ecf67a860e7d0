//! The download dir's layout on disk, owned here and nowhere else: each update's payload in
//! `<root>/<info-hash>/<name>`, its completion mark `<root>/<info-hash>.torrent` (the verified
//! metainfo, written only once the payload is complete and checked: what the seed server waits
//! for before serving it) and, while it is still being relayed, its relay mark
//! `<root>/<info-hash>.relay` (the signed length). Fetching, relaying, submitting and the seed
//! server all name these paths through [`DownloadDir`].

use super::fetch_error::FetchError;
use std::path::{Path, PathBuf};

/// The extension of a relay mark, `<info-hash>.relay`.
const RELAY_EXTENSION: &str = "relay";
/// The extension of a completion mark, `<info-hash>.torrent`.
const COMPLETION_EXTENSION: &str = "torrent";

/// A download root (Transmission's `download-dir`) and the paths of its layout.
#[derive(Debug, Clone, Copy)]
pub struct DownloadDir<'a> {
    root: &'a Path,
}

impl<'a> DownloadDir<'a> {
    pub fn new(root: &'a Path) -> DownloadDir<'a> {
        DownloadDir { root }
    }

    pub fn root(&self) -> &'a Path {
        self.root
    }

    /// Each update gets its own directory, so two updates of one name never collide.
    pub fn payload_dir(&self, info_hash: &str) -> PathBuf {
        self.root.join(info_hash)
    }

    pub fn payload(&self, info_hash: &str, name: &str) -> PathBuf {
        self.payload_dir(info_hash).join(name)
    }

    /// Where the payload of `info_hash` is marked complete (its metainfo, written only once the
    /// payload is verified): what the server waits for before serving `<info_hash>/<name>`.
    pub fn completion_mark(&self, info_hash: &str) -> PathBuf {
        self.root
            .join(format!("{info_hash}.{COMPLETION_EXTENSION}"))
    }

    /// Where a download still being relayed is marked, with its signed length.
    pub fn relay_mark(&self, info_hash: &str) -> PathBuf {
        self.root.join(format!("{info_hash}.{RELAY_EXTENSION}"))
    }

    /// The striped transfer's leaf layer (`formats::blocks::Leaves`), written by `submit` in
    /// stripes mode and served to the members as any single name under the root; checked by
    /// every reader against the root in the signed info dict.
    pub fn leaves(&self, info_hash: &str) -> PathBuf {
        self.root.join(format!("{info_hash}.leaves"))
    }

    /// The striped transfer's roster (`formats::roster`), beside the leaf layer; checked by
    /// every reader against the digest in the signed info dict.
    pub fn roster(&self, info_hash: &str) -> PathBuf {
        self.root.join(format!("{info_hash}.roster"))
    }

    /// Which blocks of a striped transfer this node holds checked (`formats::have`), beside
    /// the payload's file: what the seed server sends from it (`?stripe=`).
    pub fn have_mark(&self, info_hash: &str) -> PathBuf {
        self.root.join(format!("{info_hash}.have"))
    }

    /// Whether `path` is named like a relay mark.
    pub fn is_relay_mark(path: &Path) -> bool {
        path.extension().is_some_and(|e| e == RELAY_EXTENSION)
    }
}

/// Writes one of the marks the seed server reads, world-readable: the server runs unprivileged.
pub fn write_mark(path: &Path, bytes: &[u8]) -> Result<(), FetchError> {
    crate::fsutil::write_atomic(path, bytes, 0o644).map_err(|e| FetchError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(crate::error::chain(&e)),
    })
}

/// Writes the completion mark (the payload's checked info dict, which tells the seed server
/// the payload is whole), world-readable like the others but not synced: every reader checks
/// it (this node's `fetch` against the signed info-hash and the payload's SHA-256 before using
/// it, the members against the signed info-hash), so one that a power cut lost or tore only
/// costs a fetch from the fleet, while the two syncs cost about 20 ms of every update on a
/// loaded machine.
pub fn write_completion_mark(path: &Path, bytes: &[u8]) -> Result<(), FetchError> {
    crate::fsutil::write_atomic_unsynced(path, bytes, 0o644).map_err(|e| FetchError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(crate::error::chain(&e)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_the_one_the_seed_server_and_transmission_expect() {
        let dir = DownloadDir::new(Path::new("/srv/dl"));
        assert_eq!(dir.payload_dir("ab"), Path::new("/srv/dl/ab"));
        assert_eq!(
            dir.payload("ab", "site.pp"),
            Path::new("/srv/dl/ab/site.pp")
        );
        assert_eq!(dir.completion_mark("ab"), Path::new("/srv/dl/ab.torrent"));
        assert_eq!(dir.relay_mark("ab"), Path::new("/srv/dl/ab.relay"));
        assert!(DownloadDir::is_relay_mark(&dir.relay_mark("ab")));
        assert!(!DownloadDir::is_relay_mark(&dir.completion_mark("ab")));
    }
}
