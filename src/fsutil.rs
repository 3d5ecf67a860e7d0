//! Durable file writes: temp file in the same directory, fsync, rename, fsync the directory,
//! so a crash leaves either the old file or the new one, never a torn one. And the creating
//! opens the root agent uses where another user may swap a path under it: never through a
//! link, on a directory descriptor (reading such a file is [`crate::untrusted`]'s). Also what
//! kind of file a path that was not followed turned out to be, named once for every message
//! that refuses one.

use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A durable write that failed: what was being done, to which path. Printed as the shared
/// error's `Io` and `Internal` were, so messages did not change when this layer got its own.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("internal error (a bug in p2pu): {} has no parent directory", path.display())]
    NoParent { path: PathBuf },
}

impl crate::error::LayerError for FsError {}

type Result<T> = std::result::Result<T, FsError>;

/// The kind of a file as `symlink_metadata` sees it (a link is not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    Fifo,
    Socket,
    Device,
}

impl FileKind {
    pub fn of(file_type: &fs::FileType) -> FileKind {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_file() {
            FileKind::Regular
        } else if file_type.is_dir() {
            FileKind::Directory
        } else if file_type.is_symlink() {
            FileKind::Symlink
        } else if file_type.is_fifo() {
            FileKind::Fifo
        } else if file_type.is_socket() {
            FileKind::Socket
        } else {
            FileKind::Device
        }
    }

    /// Its name in a sentence about one file (`not a regular file but a symbolic link`).
    pub fn name(self) -> &'static str {
        match self {
            FileKind::Symlink => "symbolic link",
            FileKind::Fifo => "FIFO",
            _ => self.short_name(),
        }
    }

    /// Its name among the entries of a tree or an archive (`a symlink`, `a fifo`), as the
    /// archive's own entry kinds are spelled.
    pub fn short_name(self) -> &'static str {
        match self {
            FileKind::Regular => "regular file",
            FileKind::Directory => "directory",
            FileKind::Symlink => "symlink",
            FileKind::Fifo => "fifo",
            FileKind::Socket => "socket",
            FileKind::Device => "device",
        }
    }
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FsError {
    let path = path.to_path_buf();
    move |source| FsError::Io {
        action,
        path,
        source,
    }
}

/// Writes `contents` to `path` atomically with `mode`, creating parent directories; durable
/// once it returns (the file and the rename synced).
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    replace(path, contents, mode, true)
}

/// [`write_atomic`] of several files, in order: each appears whole, none before the ones
/// listed before it, all durable once it returns. Their data is synced together (in parallel,
/// so the filesystem's journal takes them in one commit or two rather than one each) before
/// the first rename, and each directory once after the last: a striped submit writes four
/// files before it broadcasts, and eight syncs in a row took 1.4 s of it on a loaded machine
/// (issue 24).
pub fn write_atomic_all(files: &[(&Path, &[u8], u32)]) -> Result<()> {
    let mut staged = Vec::with_capacity(files.len());
    for &(path, contents, mode) in files {
        let (dir, tmp) = stage(path, contents, mode)?;
        staged.push((path, dir, tmp));
    }
    std::thread::scope(|scope| {
        let syncs: Vec<_> = staged
            .iter()
            .map(|(_, _, tmp)| {
                scope.spawn(|| tmp.as_file().sync_all().map_err(io("syncing", tmp.path())))
            })
            .collect();
        syncs.into_iter().try_for_each(|sync| {
            sync.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    })?;
    let mut dirs: Vec<&Path> = Vec::new();
    for (path, dir, tmp) in staged {
        tmp.persist(path)
            .map_err(|e| io("renaming into place", path)(e.error))?;
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs.into_iter().try_for_each(sync_dir)
}

/// [`write_atomic`] without its two syncs: readers see the old file or the new one, never a
/// part, but a power cut may leave the old one, none, or (the rename durable before the data)
/// an empty or partial one. Only for files every reader checks and that can be made again:
/// each sync costs about 10 ms on a loaded machine.
pub fn write_atomic_unsynced(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    replace(path, contents, mode, false)
}

/// `contents` with `mode` in a temporary file beside `path` (its directory made when missing),
/// to be renamed onto it; removed if dropped first.
fn stage<'a>(
    path: &'a Path,
    contents: &[u8],
    mode: u32,
) -> Result<(&'a Path, tempfile::NamedTempFile)> {
    let dir = path.parent().ok_or_else(|| FsError::NoParent {
        path: path.to_path_buf(),
    })?;
    fs::create_dir_all(dir).map_err(io("creating directory", dir))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".p2pu-")
        .tempfile_in(dir)
        .map_err(io("creating a temporary file in", dir))?;
    tmp.write_all(contents).map_err(io("writing", tmp.path()))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io("setting the mode of", tmp.path()))?;
    Ok((dir, tmp))
}

fn replace(path: &Path, contents: &[u8], mode: u32, durable: bool) -> Result<()> {
    let (dir, tmp) = stage(path, contents, mode)?;
    if durable {
        tmp.as_file()
            .sync_all()
            .map_err(io("syncing", tmp.path()))?;
    }
    tmp.persist(path)
        .map_err(|e| io("renaming into place", path)(e.error))?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Reads `reader` to its end in 1 MiB chunks, handing each to `chunk` (a hash, say); returns
/// how many bytes there were.
pub fn read_chunks(
    reader: &mut impl std::io::Read,
    mut chunk: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(len);
        }
        chunk(&buf[..n])?;
        len += n as u64;
    }
}

/// Makes a rename or create inside `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing directory", dir))
}

/// The directory `dir`, made with `mode` (and its parents) when missing, opened without
/// following a link there: a descriptor to create files on with [`openat_nofollow`].
pub fn open_dir_nofollow(dir: &Path, mode: u32) -> std::io::Result<OwnedFd> {
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent)?;
    }
    match nix::unistd::mkdir(dir, Mode::from_bits_truncate(mode)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::open(dir, flags, Mode::empty())?;
    // SAFETY: `open` just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `name` in the directory `dir` (one component), opened with `flags` plus `O_NOFOLLOW` and
/// `O_CLOEXEC`, created with `mode` where `flags` say so.
pub fn openat_nofollow(
    dir: &OwnedFd,
    name: &str,
    flags: nix::fcntl::OFlag,
    mode: u32,
) -> std::io::Result<OwnedFd> {
    use nix::fcntl::OFlag;
    let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mode = nix::sys::stat::Mode::from_bits_truncate(mode);
    let fd = nix::fcntl::openat(Some(dir.as_raw_fd()), name, flags, mode)?;
    // SAFETY: `openat` just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_written_together_each_appear_whole_with_their_mode_and_leave_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("sub/b"));
        fs::write(&a, b"old").unwrap();
        write_atomic_all(&[(&a, b"first", 0o600), (&b, b"second", 0o644)]).unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"first");
        assert_eq!(fs::read(&b).unwrap(), b"second");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&a), mode(&b)), (0o600, 0o644));
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        // A parent that is a file: named, and nothing listed is written.
        let c = dir.path().join("a/c");
        let d = dir.path().join("d");
        let err = write_atomic_all(&[(&d, b"d", 0o644), (&c, b"c", 0o644)]).unwrap_err();
        assert!(err.to_string().contains("a"), "{err}");
        assert!(!d.exists());
    }

    #[test]
    fn file_kinds_are_read_without_following_links_and_named_in_both_registers() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        std::os::unix::fs::symlink(&file, dir.path().join("l")).unwrap();
        nix::unistd::mkfifo(&dir.path().join("p"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let kind = |name: &str| {
            let meta = fs::symlink_metadata(dir.path().join(name)).unwrap();
            FileKind::of(&meta.file_type())
        };
        assert_eq!(kind("f"), FileKind::Regular);
        assert_eq!(kind("l"), FileKind::Symlink);
        assert_eq!(kind("p"), FileKind::Fifo);
        assert_eq!(
            FileKind::of(&fs::metadata("/").unwrap().file_type()),
            FileKind::Directory
        );
        let dev = fs::symlink_metadata("/dev/null").unwrap().file_type();
        assert_eq!(FileKind::of(&dev), FileKind::Device);
        let names = [FileKind::Symlink, FileKind::Fifo, FileKind::Device].map(FileKind::name);
        assert_eq!(names, ["symbolic link", "FIFO", "device"]);
        let short =
            [FileKind::Symlink, FileKind::Fifo, FileKind::Regular].map(FileKind::short_name);
        assert_eq!(short, ["symlink", "fifo", "regular file"]);
    }
}
