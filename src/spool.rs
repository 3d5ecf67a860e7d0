//! The spool: where `handle-event` (and the NAT client) drop received announcements for the
//! agent. One file per event, written atomically (temp + fsync + rename + fsync dir), named so
//! that a directory listing sorts in arrival order. The agent deletes a file only after the
//! announcement's fate is recorded in the state dir, so nothing is lost when it is down.
//!
//! Writers are kept apart by user: the spool itself admits writes from the handler's user
//! (root, under Serf) only; the NAT client, which runs as the unprivileged `p2pu` user, writes
//! into its own `overlay/` subdirectory. The agent reads both, in one arrival order, and never
//! follows a link planted in either.
//!
//! The agent runs as root and must survive whatever a writer leaves: an entry that is not a
//! regular file owned by its directory's owner (a directory, link, FIFO, device, hard link) is
//! moved aside into `quarantine/` (root's, 0700) instead of stopping or blocking the agent.
//!
//! It sits below both of its writers' layers and the agent (it was `agent/runtime/spool.rs`,
//! which put an arrow from `nat/client.rs` up into the agent); `agent::runtime::spool`
//! re-exports it for the agent's readers.

use crate::error::IoError;
use crate::fsutil::{write_atomic, FileKind, FsError};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// A spool entry could not be written, listed, moved or removed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("event of {len} bytes refused: the spool takes at most {max}")]
    EventTooLarge { len: usize, max: usize },
    #[error(transparent)]
    Write(#[from] FsError),
}

impl crate::error::LayerError for SpoolError {}

type Result<T, E = SpoolError> = std::result::Result<T, E>;

/// Larger payloads are not announcements (Serf's own limit is 9216 bytes).
pub const MAX_EVENT_BYTES: usize = 16 * 1024;
const SUFFIX: &str = ".event";
/// The NAT client's part of the spool (owned by the `p2pu` user).
pub const OVERLAY_SUBDIR: &str = "overlay";
/// Where entries the agent refuses to read are moved (root's).
pub const QUARANTINE_SUBDIR: &str = "quarantine";

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
    /// A request to ask the fleet now ([`crate::agent::runtime::sync`]): from the handler when a member
    /// joined, or from `p2pu sync`. Honoured only from the spool itself (root's part).
    Sync,
    /// An operator's verdict on an update (`p2pu mark-good|mark-bad`,
    /// [`crate::agent::runtime::mark`]). Honoured only from the spool itself (root's part).
    Operator,
    /// An announcement a member pushed to this node's web seed server
    /// ([`crate::agent::transfer::push`]), spooled by the agent; refused, it makes no record.
    Push,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Serf => "serf",
            Source::Overlay => "overlay",
            Source::CatchUp => "catchup",
            Source::Sync => "sync",
            Source::Operator => "operator",
            Source::Push => "push",
        }
    }

    fn parse(text: &str) -> Option<Source> {
        [
            Source::Serf,
            Source::Overlay,
            Source::CatchUp,
            Source::Sync,
            Source::Operator,
            Source::Push,
        ]
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
        return Err(SpoolError::EventTooLarge {
            len: payload.len(),
            max: MAX_EVENT_BYTES,
        });
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

/// Every complete event of the spool and its overlay part, in arrival order. An overlay part
/// that is not a real directory, or cannot be listed, is skipped with a warning: the events
/// of the spool itself must still be taken.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths = events_in(dir)?;
    let overlay = overlay_dir(dir);
    // Not `is_dir()`, which follows a link: the agent must not list where a link points.
    if std::fs::symlink_metadata(&overlay).is_ok_and(|m| m.is_dir()) {
        match events_in(&overlay) {
            Ok(more) => paths.extend(more),
            Err(e) => tracing::warn!("skipping the overlay part: {}", crate::error::chain(&e)),
        }
    }
    // File names start with the arrival time; the directory must not decide the order.
    paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(paths)
}

fn events_in(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(std::fs::read_dir(dir)
        .map_err(IoError::on("listing the spool", dir))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| is_event(p))
        .collect())
}

/// Why a spool entry is not read as an event. The agent quarantines it and goes on.
#[derive(Debug, thiserror::Error)]
pub enum BadEntry {
    #[error("not a regular file but a {0}")]
    NotAFile(&'static str),
    #[error("owned by uid {uid}, but its directory by uid {expected}")]
    Owner { uid: u32, expected: u32 },
    #[error("a regular file with {0} hard links")]
    HardLinked(u64),
    #[error("{action}: {source}")]
    Io {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// What a spooled event may be: a regular file, owned by the owner of the directory it lies in
/// (root for the spool, the NAT client's user for `overlay/`), with one link. The owner check
/// keeps a writer from handing the agent a file it did not write; the link count keeps a
/// writer from hard-linking a root-only file into its part (its first bytes would otherwise
/// end up in a rejection reason, which `p2pu status` shows).
fn check_entry(meta: &std::fs::Metadata, expected_uid: u32) -> Result<(), BadEntry> {
    if !meta.file_type().is_file() {
        return Err(BadEntry::NotAFile(FileKind::of(&meta.file_type()).name()));
    }
    if meta.uid() != expected_uid {
        return Err(BadEntry::Owner {
            uid: meta.uid(),
            expected: expected_uid,
        });
    }
    if meta.nlink() != 1 {
        return Err(BadEntry::HardLinked(meta.nlink()));
    }
    Ok(())
}

/// Reads one event; `Ok(None)` when it vanished meanwhile (already taken). Whatever is not a
/// plain event is refused before anything is read: the entry is looked at without following a
/// link, then opened with `O_NOFOLLOW | O_NONBLOCK` (a FIFO must not block the agent, nor a
/// link swapped in meanwhile be followed) and checked again on the open file. No more than one
/// byte past [`MAX_EVENT_BYTES`] is read, which intake then refuses as oversized.
pub fn read(path: &Path) -> Result<Option<Spooled>, BadEntry> {
    use std::io::Read;
    let io = |action| move |source| BadEntry::Io { action, source };
    let dir = path.parent().unwrap_or(Path::new("."));
    let expected_uid = std::fs::symlink_metadata(dir)
        .map_err(io("looking at the spool directory"))?
        .uid();
    match std::fs::symlink_metadata(path) {
        Ok(meta) => check_entry(&meta, expected_uid)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("looking at the entry")(e)),
    }
    let Some(file) = open_checked(path, expected_uid)? else {
        return Ok(None);
    };
    let mut payload = Vec::new();
    file.take(MAX_EVENT_BYTES as u64 + 1)
        .read_to_end(&mut payload)
        .map_err(io("reading"))?;
    // The overlay part's writer names its files as it likes: what lies there is the overlay's,
    // whatever its name says (the bounds on announcements waiting for a plan are per source).
    let in_overlay = dir.file_name().is_some_and(|n| n == OVERLAY_SUBDIR);
    let source = if in_overlay {
        Source::Overlay
    } else {
        path.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split('-').nth(1))
            .and_then(Source::parse)
            .unwrap_or(Source::Serf)
    };
    Ok(Some(Spooled {
        path: path.to_path_buf(),
        source,
        payload,
    }))
}

/// Opens an entry that looked like an event, for an entry swapped meanwhile: a link is not
/// followed, a FIFO does not block, and the open file is checked like the entry was.
fn open_checked(path: &Path, expected_uid: u32) -> Result<Option<std::fs::File>, BadEntry> {
    let (file, meta) = match crate::untrusted::open_any(path) {
        Ok(opened) => opened,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(BadEntry::Io {
                action: "opening",
                source,
            })
        }
    };
    check_entry(&meta, expected_uid)?;
    Ok(Some(file))
}

/// Moves a refused entry out of the way, into `<spool>/quarantine/` (created root-only), so
/// that it is neither read again nor lost to the operator who wants to see what was planted.
/// Returns where it went.
pub fn quarantine(spool: &Path, path: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = spool.join(QUARANTINE_SUBDIR);
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(IoError::on("creating the spool's quarantine", &dir)(e).into()),
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let to = dir.join(format!("{nanos:020}-{name}"));
    // A rename moves the entry itself (a link stays a link, a directory keeps its contents)
    // without opening it.
    std::fs::rename(path, &to).map_err(IoError::on("quarantining spool entry", path))?;
    Ok(to)
}

/// Removes an event once its outcome is durable elsewhere.
pub fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(IoError::on("removing spooled event", path)(e).into()),
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

    /// A link planted in the spool is refused without reading its target, and moved, as a
    /// link, into the quarantine (`intake::tests::bad_spool_entries_are_quarantined_and_the_pass_goes_on`
    /// shows the agent's pass surviving it).
    #[test]
    fn links_planted_in_the_spool_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"root only").unwrap();
        let link = dir
            .path()
            .join("00000000000000000001-overlay-00000000.event");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let why = read(&link).unwrap_err();
        assert!(matches!(why, BadEntry::NotAFile("symbolic link")), "{why}");
        let moved = quarantine(dir.path(), &link).unwrap();
        assert!(std::fs::symlink_metadata(&moved)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(list(dir.path()).unwrap().is_empty());
        assert_eq!(std::fs::read(&secret).unwrap(), b"root only");
    }

    /// The open itself refuses a link swapped in after the entry was looked at (`O_NOFOLLOW`),
    /// and returns at once on a FIFO (`O_NONBLOCK`) instead of waiting for a writer, which
    /// would stop the agent's main loop and with it its reaction to SIGTERM.
    #[test]
    fn opening_neither_follows_links_nor_waits_on_a_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"root only").unwrap();
        let link = dir.path().join("link.event");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let fifo = dir.path().join("fifo.event");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let results = [&link, &fifo].map(|p| open_checked(p, 0).map(|f| f.is_some()));
            let _ = tx.send(results.map(|r| r.map_err(|e| e.to_string())));
        });
        let [link, fifo] = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("opening a FIFO blocked");
        assert!(link.is_err(), "a link was followed: {link:?}");
        assert_eq!(fifo, Err("not a regular file but a FIFO".to_string()));
    }

    #[test]
    fn entries_of_another_owner_or_with_hard_links_are_refused() {
        if !crate::testing::root("chown to another uid") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let foreign = put(dir.path(), Source::Serf, b"p2pu1:x").unwrap();
        std::os::unix::fs::chown(&foreign, Some(12345), None).unwrap();
        let why = read(&foreign).unwrap_err();
        assert!(matches!(why, BadEntry::Owner { uid: 12345, .. }), "{why}");

        let linked = put(dir.path(), Source::Serf, b"p2pu1:y").unwrap();
        std::fs::hard_link(&linked, dir.path().join("elsewhere")).unwrap();
        let why = read(&linked).unwrap_err();
        assert!(matches!(why, BadEntry::HardLinked(2)), "{why}");

        // The overlay part belongs to the NAT client's user: its files must be that user's.
        let overlay = overlay_dir(dir.path());
        std::fs::create_dir(&overlay).unwrap();
        let own = put(&overlay, Source::Overlay, b"p2pu1:z").unwrap();
        std::os::unix::fs::chown(&overlay, Some(12345), None).unwrap();
        assert!(matches!(
            read(&own),
            Err(BadEntry::Owner {
                uid: 0,
                expected: 12345
            })
        ));
        std::os::unix::fs::chown(&own, Some(12345), None).unwrap();
        assert_eq!(read(&own).unwrap().unwrap().payload, b"p2pu1:z");
    }

    #[test]
    fn a_directory_named_like_an_event_is_refused_and_quarantined_whole() {
        let dir = tempfile::tempdir().unwrap();
        let planted = dir.path().join("00000000000000000001-serf-00000000.event");
        std::fs::create_dir(&planted).unwrap();
        std::fs::write(planted.join("inside"), b"x").unwrap();
        assert!(matches!(
            read(&planted),
            Err(BadEntry::NotAFile("directory"))
        ));
        let moved = quarantine(dir.path(), &planted).unwrap();
        assert_eq!(std::fs::read(moved.join("inside")).unwrap(), b"x");
        let quarantine_dir = std::fs::metadata(dir.path().join(QUARANTINE_SUBDIR)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(quarantine_dir.permissions().mode() & 0o777, 0o700);
        assert!(list(dir.path()).unwrap().is_empty());
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

    #[test]
    fn an_event_over_the_size_limit_is_refused_with_both_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        let err = put(dir.path(), Source::Serf, &big).unwrap_err();
        assert_eq!(
            err.to_string(),
            "event of 16385 bytes refused: the spool takes at most 16384"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
