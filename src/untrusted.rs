//! The one way root reads a file that another user can write: the download dir (Transmission's
//! user, and the seed root the same dir), the spool's `overlay/` part (the NAT client's user),
//! anything that is not root-only. Opened `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC`, so a link
//! planted there is not followed and a FIFO does not block the reading thread; checked on the
//! open descriptor (a regular file, one link, no larger than the caller's cap), so a swap
//! between a look at the path and the open changes nothing; and read to at most the cap plus
//! one byte, so a sparse or growing file cannot fill root's memory.
//!
//! Issue 28 found the agent's main thread wedged on a FIFO put in place of a rollout plan, and
//! the catch-up thread on one in place of a snapshot document, both read with a plain open.
//! `tests/structure.rs` (`only_the_owners_open_files`) keeps other modules from opening files
//! themselves unless they are listed there with the reason their paths are root's.

use crate::fsutil::FileKind;
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a file another user can write was not read.
#[derive(Debug, thiserror::Error)]
pub enum UntrustedError {
    #[error("{} is missing", path.display())]
    Missing { path: PathBuf },
    #[error("opening {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a regular file but a {}", path.display(), kind.name())]
    NotRegular { path: PathBuf, kind: FileKind },
    #[error("{} has {links} hard links; a file here must have one", path.display())]
    HardLinked { path: PathBuf, links: u64 },
    #[error("{} is larger than the {cap} bytes it may be", path.display())]
    TooLarge { path: PathBuf, cap: u64 },
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl crate::error::LayerError for UntrustedError {}

impl UntrustedError {
    /// Nothing there: the usual case for a file not fetched yet, not worth a warning.
    pub fn is_missing(&self) -> bool {
        matches!(self, UntrustedError::Missing { .. })
    }
}

/// Opens `path` without following a link there and without blocking on a FIFO, with what the
/// open file is, whatever its kind: for the callers that type a refusal themselves (the spool
/// quarantines what is not an event; `submit` packs the operator's own tree). Everything else
/// takes [`open`] or [`read`].
pub fn open_any(path: &Path) -> std::io::Result<(File, Metadata)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    Ok((file, meta))
}

/// Opens the regular file `path` (one link) for a caller that streams it: the seed server, the
/// verified copy of a payload. The size is the caller's to bound (`meta.len()` is the size on
/// the open file; it may still grow, so read at most what was expected).
pub fn open(path: &Path) -> Result<(File, Metadata), UntrustedError> {
    let (file, meta) = open_any(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => UntrustedError::Missing {
            path: path.to_path_buf(),
        },
        _ => UntrustedError::Open {
            path: path.to_path_buf(),
            source,
        },
    })?;
    checked(path, file, meta)
}

/// `file` (opened from `path`) when it is a regular file with one link.
fn checked(path: &Path, file: File, meta: Metadata) -> Result<(File, Metadata), UntrustedError> {
    if !meta.file_type().is_file() {
        return Err(UntrustedError::NotRegular {
            path: path.to_path_buf(),
            kind: FileKind::of(&meta.file_type()),
        });
    }
    // A hard link to a root-only file (where the kernel allows it) must not be read as root's.
    if meta.nlink() != 1 {
        return Err(UntrustedError::HardLinked {
            path: path.to_path_buf(),
            links: meta.nlink(),
        });
    }
    Ok((file, meta))
}

/// [`open`] for `path` under `root` (a directory of root's whose own path is trusted, such as
/// the download dir): every directory between is opened on the one before without following
/// a link, so a directory below `root` that another user swaps for a link (after the caller
/// checked the path, say) is refused, not followed. [`open`]'s `O_NOFOLLOW` covers only the last
/// component. A `path` not under `root`, or with `.`/`..` in it, is refused as missing.
pub fn open_beneath(root: &Path, path: &Path) -> Result<(File, Metadata), UntrustedError> {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::Mode;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::path::Component;
    let missing = || UntrustedError::Missing {
        path: path.to_path_buf(),
    };
    let opening = |source: nix::errno::Errno| match source {
        nix::errno::Errno::ENOENT => missing(),
        source => UntrustedError::Open {
            path: path.to_path_buf(),
            source: source.into(),
        },
    };
    let rel = path.strip_prefix(root).map_err(|_| missing())?;
    let mut names = Vec::new();
    for component in rel.components() {
        match component {
            Component::Normal(name) => names.push(name),
            _ => return Err(missing()),
        }
    }
    let Some((last, dirs)) = names.split_last() else {
        return Err(missing());
    };
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let root_fd = nix::fcntl::open(root, dir_flags, Mode::empty()).map_err(opening)?;
    // SAFETY: `open` just returned this descriptor and nothing else owns it.
    let mut dir = unsafe { OwnedFd::from_raw_fd(root_fd) };
    for name in dirs {
        let fd = openat(
            Some(dir.as_raw_fd()),
            *name,
            dir_flags | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .map_err(opening)?;
        // SAFETY: `openat` just returned this descriptor and nothing else owns it.
        dir = unsafe { OwnedFd::from_raw_fd(fd) };
    }
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = openat(Some(dir.as_raw_fd()), *last, flags, Mode::empty()).map_err(opening)?;
    // SAFETY: `openat` just returned this descriptor and nothing else owns it.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let meta = file.metadata().map_err(|source| UntrustedError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    checked(path, file, meta)
}

/// The bytes of the regular file `path`, at most `cap` of them: larger is refused, on the
/// open file's size and again on what was read (at most `cap + 1` bytes).
pub fn read(path: &Path, cap: u64) -> Result<Vec<u8>, UntrustedError> {
    read_keeping(path, cap).map(|(_, bytes)| bytes)
}

/// [`read`], keeping the open file: for a reader that reads parts of it again later (the seed
/// server's view of a `.have` mark). The checks held when it was opened: its owner may still
/// truncate or rewrite it, and the path may hold another file by now.
pub fn read_keeping(path: &Path, cap: u64) -> Result<(File, Vec<u8>), UntrustedError> {
    let (file, meta) = open(path)?;
    let too_large = || UntrustedError::TooLarge {
        path: path.to_path_buf(),
        cap,
    };
    if meta.len() > cap {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    (&file)
        .take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| UntrustedError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > cap {
        return Err(too_large());
    }
    Ok((file, bytes))
}

/// [`read`], with a missing file as `None`.
pub fn read_if_there(path: &Path, cap: u64) -> Result<Option<Vec<u8>>, UntrustedError> {
    match read(path, cap) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.is_missing() => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Runs `f` on a thread and fails if it has not returned within 10 s: what a FIFO did to
    /// the agent's main thread before this reader.
    fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the read blocked")
    }

    /// Issue 28: a FIFO, a link, a directory, a sparse file and a hard link in a directory
    /// another user writes are each refused with their own reason, none of them blocking or
    /// read past the cap; a regular file within the cap is read whole.
    #[test]
    fn files_another_user_can_write_are_read_only_when_regular_and_within_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        std::fs::write(d.join("good"), b"plan").unwrap();
        nix::unistd::mkfifo(&d.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        std::os::unix::fs::symlink(d.join("good"), d.join("link")).unwrap();
        std::fs::create_dir(d.join("dir")).unwrap();
        let sparse = File::create(d.join("sparse")).unwrap();
        sparse.set_len(1 << 40).unwrap();
        std::fs::write(d.join("linked"), b"root's").unwrap();
        std::fs::hard_link(d.join("linked"), d.join("hard")).unwrap();

        let results = within_10s(move || {
            ["good", "fifo", "link", "dir", "sparse", "hard", "none"]
                .map(|name| read(&d.join(name), 4096))
        });
        let [good, fifo, link, dir_, sparse, hard, none] = results;
        assert_eq!(good.unwrap(), b"plan");
        assert!(matches!(
            fifo,
            Err(UntrustedError::NotRegular {
                kind: FileKind::Fifo,
                ..
            })
        ));
        // O_NOFOLLOW: the open itself fails (ELOOP) on a link.
        assert!(matches!(link, Err(UntrustedError::Open { .. })), "{link:?}");
        assert!(matches!(
            dir_,
            Err(UntrustedError::NotRegular {
                kind: FileKind::Directory,
                ..
            })
        ));
        assert!(matches!(
            sparse,
            Err(UntrustedError::TooLarge { cap: 4096, .. })
        ));
        assert!(matches!(
            hard,
            Err(UntrustedError::HardLinked { links: 2, .. })
        ));
        assert!(none.as_ref().is_err_and(UntrustedError::is_missing));
        assert_eq!(
            read_if_there(&dir.path().join("none"), 1).unwrap(),
            None,
            "missing is not an error for read_if_there"
        );
        let exact = read(&dir.path().join("good"), 4).unwrap();
        assert_eq!(exact, b"plan", "a file of exactly the cap is read");
        assert!(matches!(
            read(&dir.path().join("good"), 3),
            Err(UntrustedError::TooLarge { .. })
        ));
    }

    /// A directory below the root swapped for a link is refused, and so are paths that leave
    /// the root; the file under real directories is opened.
    #[test]
    fn beneath_a_root_no_directory_link_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("ih")).unwrap();
        std::fs::write(root.join("ih/f"), b"mine").unwrap();
        std::fs::create_dir(dir.path().join("other")).unwrap();
        std::fs::write(dir.path().join("other/f"), b"other's").unwrap();
        std::os::unix::fs::symlink(dir.path().join("other"), root.join("link")).unwrap();
        let (_, meta) = open_beneath(&root, &root.join("ih/f")).unwrap();
        assert_eq!(meta.len(), 4);
        assert!(matches!(
            open_beneath(&root, &root.join("link/f")),
            Err(UntrustedError::Open { .. })
        ));
        for outside in [
            dir.path().join("other/f"),
            root.join("ih/../link/f"),
            root.clone(),
        ] {
            assert!(
                open_beneath(&root, &outside).is_err_and(|e| e.is_missing()),
                "{outside:?}"
            );
        }
        assert!(open_beneath(&root, &root.join("ih/none")).is_err_and(|e| e.is_missing()));
    }
}
