//! The spool: where `handle-event` (and the NAT client) drop received announcements for the
//! agent. One file per event, written atomically (temp + fsync + rename + fsync dir), named so
//! that a directory listing sorts in arrival order. The agent deletes a file only after the
//! announcement's fate is recorded in the state dir, so nothing is lost when it is down.
//!
//! Writers are kept apart by user: the spool itself admits writes from the handler's user
//! (root, under Serf) only; the NAT client, which runs as the unprivileged `p2pu` user, writes
//! into its own `overlay/` subdirectory. The agent reads both, in one arrival order, and never
//! follows a link planted in either.

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Larger payloads are not announcements (Serf's own limit is 9216 bytes).
pub const MAX_EVENT_BYTES: usize = 16 * 1024;
const SUFFIX: &str = ".event";
/// The NAT client's part of the spool (owned by the `p2pu` user).
pub const OVERLAY_SUBDIR: &str = "overlay";

/// Where the NAT client spools the announcements it receives.
pub fn overlay_dir(spool: &Path) -> PathBuf {
    spool.join(OVERLAY_SUBDIR)
}

/// Where an event came from, kept in its file name for the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Serf,
    Overlay,
    CatchUp,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Serf => "serf",
            Source::Overlay => "overlay",
            Source::CatchUp => "catchup",
        }
    }

    fn parse(text: &str) -> Option<Source> {
        [Source::Serf, Source::Overlay, Source::CatchUp]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// One spooled event.
#[derive(Debug, Clone)]
pub struct Spooled {
    pub path: PathBuf,
    pub source: Source,
    pub payload: Vec<u8>,
}

/// Writes `payload` into `dir` as a new event file; returns its path.
pub fn put(dir: &Path, source: Source, payload: &[u8]) -> Result<PathBuf> {
    if payload.len() > MAX_EVENT_BYTES {
        return Err(Error::Usage(format!(
            "event of {} bytes refused: the spool takes at most {MAX_EVENT_BYTES}",
            payload.len()
        )));
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let unique: u32 = rand::random();
    let name = format!("{nanos:020}-{}-{unique:08x}{SUFFIX}", source.as_str());
    let path = dir.join(name);
    write_atomic(&path, payload, 0o600)?;
    Ok(path)
}

/// Whether a directory entry is a complete event (temp files of a write in progress are not).
pub fn is_event(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(SUFFIX) && !n.starts_with('.'))
}

/// Every complete event of the spool and its overlay part, in arrival order.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths = events_in(dir)?;
    let overlay = overlay_dir(dir);
    if overlay.is_dir() {
        paths.extend(events_in(&overlay)?);
    }
    // File names start with the arrival time; the directory must not decide the order.
    paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(paths)
}

fn events_in(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(std::fs::read_dir(dir)
        .map_err(Error::io("listing the spool", dir))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| is_event(p))
        .collect())
}

/// Reads one event; `None` when it vanished meanwhile (already taken). A symbolic link is not
/// followed (the agent, as root, must not read what a spool writer points it at), and no more
/// than one byte past [`MAX_EVENT_BYTES`] is read, which intake then refuses as oversized.
pub fn read(path: &Path) -> Result<Option<Spooled>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path);
    let mut payload = Vec::new();
    let read = file.and_then(|f| f.take(MAX_EVENT_BYTES as u64 + 1).read_to_end(&mut payload));
    match read {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("reading spooled event", path)(e)),
    };
    let source = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('-').nth(1))
        .and_then(Source::parse)
        .unwrap_or(Source::Serf);
    Ok(Some(Spooled {
        path: path.to_path_buf(),
        source,
        payload,
    }))
}

/// Removes an event once its outcome is durable elsewhere.
pub fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing spooled event", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_list_in_arrival_order_and_skip_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = put(dir.path(), Source::Serf, b"first").unwrap();
        let b = put(dir.path(), Source::Overlay, b"second").unwrap();
        std::fs::write(dir.path().join(".p2pu-tmp123"), b"partial").unwrap();
        assert_eq!(list(dir.path()).unwrap(), vec![a.clone(), b.clone()]);
        let read_b = read(&b).unwrap().unwrap();
        assert_eq!(
            (read_b.source, read_b.payload),
            (Source::Overlay, b"second".to_vec())
        );
        remove(&a).unwrap();
        remove(&a).unwrap();
        assert!(read(&a).unwrap().is_none());
        assert_eq!(list(dir.path()).unwrap(), vec![b]);
    }

    #[test]
    fn oversized_events_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(put(dir.path(), Source::Serf, &vec![b'x'; MAX_EVENT_BYTES + 1]).is_err());
        assert!(list(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn overlay_events_merge_in_arrival_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(overlay_dir(dir.path())).unwrap();
        let first = put(dir.path(), Source::Serf, b"one").unwrap();
        let second = put(&overlay_dir(dir.path()), Source::Overlay, b"two").unwrap();
        let third = put(dir.path(), Source::Serf, b"three").unwrap();
        assert_eq!(
            list(dir.path()).unwrap(),
            vec![first, second.clone(), third]
        );
        let event = read(&second).unwrap().unwrap();
        assert_eq!(
            (event.source, event.payload.as_slice()),
            (Source::Overlay, &b"two"[..])
        );
    }

    #[test]
    fn links_planted_in_the_spool_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"root only").unwrap();
        let link = dir
            .path()
            .join("00000000000000000001-overlay-00000000.event");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        assert!(read(&link).is_err());
    }

    #[test]
    fn a_huge_spool_file_is_read_only_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000001-serf-00000000.event");
        std::fs::write(&path, vec![b'x'; 4 * MAX_EVENT_BYTES]).unwrap();
        assert_eq!(
            read(&path).unwrap().unwrap().payload.len(),
            MAX_EVENT_BYTES + 1
        );
    }
}
