//! The spool: where `handle-event` (and the NAT client) drop received announcements for the
//! agent. One file per event, written atomically (temp + fsync + rename + fsync dir), named so
//! that a directory listing sorts in arrival order. The agent deletes a file only after the
//! announcement's fate is recorded in the state dir, so nothing is lost when it is down.

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Larger payloads are not announcements (Serf's own limit is 9216 bytes).
pub const MAX_EVENT_BYTES: usize = 16 * 1024;
const SUFFIX: &str = ".event";

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

/// Every complete event in arrival order.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(Error::io("listing the spool", dir))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| is_event(p))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Reads one event; `None` when it vanished meanwhile (already taken).
pub fn read(path: &Path) -> Result<Option<Spooled>> {
    let payload = match std::fs::read(path) {
        Ok(bytes) => bytes,
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
}
