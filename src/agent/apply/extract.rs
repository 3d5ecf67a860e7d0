//! Safe extraction of update archives: `archive` updates (.tar.gz, .zip) and `dir` updates, which
//! travel as one .tar.gz made by [`crate::agent::apply::kind::pack_dir`].
//!
//! The one promise of this module is that nothing is ever written outside `target`. The rules:
//!
//! - **Paths.** An entry path must be relative and made of plain names (`.` and empty components
//!   are skipped). Absolute paths, `..`, NUL and backslashes (a Windows separator that would make a
//!   misleading file name here) are refused with an error naming the entry.
//! - **Links.** Every symlink and hard link is refused, wherever it points. Links that stay inside
//!   could be made safe, but neither `puppet module build` nor `pack_dir` emits them, and "no
//!   links" is the rule that cannot be gotten wrong: the tree we build holds only directories and
//!   regular files we created, so no later entry can pass through a symlink. Archive with
//!   `tar --dereference --hard-dereference` to turn links into copies.
//! - **Special files.** Devices, fifos, sockets and other tar types (sparse, ...) are refused.
//! - **Modes.** The rwx bits of each entry are kept; setuid, setgid and sticky are stripped (not
//!   refused: `tar czf` of a directory under a setgid group folder carries them harmlessly), and
//!   counted in the report. Owners are not restored (files belong to the agent, i.e. root), nor
//!   are mtimes.
//! - **Bombs.** [`Limits`] caps the number of entries, each entry's size and the total size, on
//!   the sizes the archive declares and again on the bytes actually decompressed; tar metadata
//!   between two entries (long names, pax headers) is capped at [`MAX_TAR_METADATA`] so a crafted
//!   header cannot make us buffer gigabytes.
//! - **Atomic replace.** The archive is unpacked into a fresh directory created next to `target`
//!   (same filesystem), synced, and only when every entry succeeded swapped with `target` by one
//!   `renameat2(RENAME_EXCHANGE)`; the old tree is then removed. Observers see the whole old tree
//!   or the whole new one. Where the filesystem lacks RENAME_EXCHANGE, the old tree is renamed
//!   aside first (a moment with no `target`). The contents are replaced, never merged. On any error
//!   the temporary directory is removed and `target` is untouched. An existing `target` must be a
//!   real directory and not a mount point (the swap is a rename within its parent's filesystem):
//!   a symlink or file there is refused, never followed or written through.

use crate::fsutil::FileKind;
use std::cell::Cell;
use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

/// Most bytes of tar metadata (padding, headers, GNU long names, pax records) read between two
/// entries. Real archives use a few KiB; the cap bounds what the tar reader buffers in memory.
pub const MAX_TAR_METADATA: u64 = 1024 * 1024;

const S_IFMT: u32 = 0o170_000;
const S_IFSOCK: u32 = 0o140_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFREG: u32 = 0o100_000;
const S_IFBLK: u32 = 0o060_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFIFO: u32 = 0o010_000;
const SPECIAL_BITS: u32 = 0o7000;

/// The container format of an archive payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// gzip-compressed tar (`.tar.gz`, `.tgz`).
    TarGz,
    /// zip with stored or deflated members.
    Zip,
}

impl ArchiveFormat {
    /// The format a file name implies (`.tar.gz`, `.tgz`, `.zip`, any case), if any.
    pub fn from_path(path: &Path) -> Option<ArchiveFormat> {
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            Some(ArchiveFormat::TarGz)
        } else if name.ends_with(".zip") {
            Some(ArchiveFormat::Zip)
        } else {
            None
        }
    }
}

/// Decompression-bomb limits. Sizes are uncompressed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of all regular files together.
    pub max_total_bytes: u64,
    /// Most entries (files, directories and ignored metadata entries).
    pub max_entries: u64,
    /// Most bytes of one file.
    pub max_entry_bytes: u64,
}

impl Default for Limits {
    /// Generous for Puppet modules and site trees, small enough for a small machine's disk:
    /// 4 GiB in all, 1 GiB per file, 100,000 entries.
    fn default() -> Self {
        Limits {
            max_total_bytes: 4 << 30,
            max_entries: 100_000,
            max_entry_bytes: 1 << 30,
        }
    }
}

/// In words, for the record's summary: `3 file(s), 2 dir(s), 120 byte(s), replaced`.
impl std::fmt::Display for ExtractReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} file(s), {} dir(s), {} byte(s), {}",
            self.files,
            self.dirs,
            self.bytes,
            if self.replaced { "replaced" } else { "created" }
        )?;
        if self.special_bits_stripped > 0 {
            write!(
                f,
                ", setuid/setgid/sticky bits dropped from {}",
                self.special_bits_stripped
            )?;
        }
        if let Some(old) = &self.old_tree_left {
            write!(f, ", the old tree left at {}", old.display())?;
        }
        Ok(())
    }
}

/// What an extraction produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractReport {
    /// Regular files written.
    pub files: u64,
    /// Directories created (named by an entry or implied by a path).
    pub dirs: u64,
    /// Bytes of file contents written.
    pub bytes: u64,
    /// Entries whose setuid/setgid/sticky bits were dropped.
    pub special_bits_stripped: u64,
    /// Whether an existing `target` was replaced (else it was created).
    pub replaced: bool,
    /// Where the old tree was left when removing it after the swap failed (the new tree is in
    /// place either way; the caller should log this).
    pub old_tree_left: Option<PathBuf>,
}

/// Which kind of link an archive tried to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    Symlink,
    Hardlink,
}

impl std::fmt::Display for LinkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LinkKind::Symlink => "symlink",
            LinkKind::Hardlink => "hard link",
        })
    }
}

/// Which non-regular file an archive tried to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialKind {
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl std::fmt::Display for SpecialKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SpecialKind::CharDevice => "character device",
            SpecialKind::BlockDevice => "block device",
            SpecialKind::Fifo => "fifo",
            SpecialKind::Socket => "socket",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("opening archive {}", path.display())]
    OpenArchive {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading archive {} {position}", archive.display())]
    ReadArchive {
        archive: PathBuf,
        /// Where in the archive: `at entry "x"`, `after entry "x"`, `at the start`.
        position: String,
        #[source]
        source: io::Error,
    },
    #[error("reading zip archive {} {position}", archive.display())]
    Zip {
        archive: PathBuf,
        /// Where in the archive: `at entry "x"`, `at entry #3`, `in the central directory`.
        position: String,
        #[source]
        source: zip::result::ZipError,
    },
    #[error("archive entry {entry:?} has an absolute path; refused")]
    AbsolutePath { entry: String },
    #[error("archive entry {entry:?} has a `..` component; refused")]
    ParentDir { entry: String },
    #[error("archive entry {entry:?} {reason}; refused")]
    BadName { entry: String, reason: &'static str },
    #[error("archive entry {entry:?} is a {kind} to {target:?}; archives may not contain links")]
    Link {
        entry: String,
        kind: LinkKind,
        target: String,
    },
    #[error("archive entry {entry:?} is a {kind}; refused")]
    Special { entry: String, kind: SpecialKind },
    #[error("archive entry {entry:?} has unsupported type {kind}; refused")]
    Unsupported { entry: String, kind: String },
    #[error("archive entry {entry:?} names a path an earlier entry already created")]
    Duplicate { entry: String },
    #[error("archive has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("archive entry {entry:?} is {size} bytes, over the per-file limit of {limit}")]
    EntryTooLarge {
        entry: String,
        size: u64,
        limit: u64,
    },
    #[error("archive entry {entry:?} takes the total past the limit of {limit} bytes")]
    TotalTooLarge { entry: String, limit: u64 },
    #[error("archive has over {limit} bytes of tar headers and padding after {after}")]
    MetadataTooLarge { after: String, limit: u64 },
    #[error("archive entry {entry:?}: writing {}", path.display())]
    Write {
        entry: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{action} {}", path.display())]
    Target {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("extraction target {} is a {found}, not a directory; refusing to replace it", path.display())]
    TargetNotDirectory { path: PathBuf, found: &'static str },
}

impl crate::error::LayerError for ExtractError {}

fn target_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ExtractError {
    let path = path.to_path_buf();
    move |source| ExtractError::Target {
        action,
        path,
        source,
    }
}

/// Extracts `archive` (in `format`) so that `target` becomes exactly the archive's tree, under
/// the rules in the module header. Nothing outside `target` is written except a temporary
/// directory beside it that is gone when this returns.
pub fn extract(
    archive: &Path,
    format: ArchiveFormat,
    target: &Path,
    limits: &Limits,
) -> Result<ExtractReport, ExtractError> {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        Some(_) => PathBuf::from("."),
        None => {
            return Err(ExtractError::TargetNotDirectory {
                path: target.to_path_buf(),
                found: "filesystem root",
            })
        }
    };
    let existing_mode = match fs::symlink_metadata(target) {
        Ok(meta) if meta.is_dir() => Some(meta.mode() & 0o777),
        Ok(meta) => {
            return Err(ExtractError::TargetNotDirectory {
                path: target.to_path_buf(),
                found: FileKind::of(&meta.file_type()).short_name(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(target_err("inspecting", target)(e)),
    };
    let file = File::open(archive).map_err(|source| ExtractError::OpenArchive {
        path: archive.to_path_buf(),
        source,
    })?;

    // Dropping `staging` removes it, which is the cleanup on every error path below.
    let staging = tempfile::Builder::new()
        .prefix(".p2pu-extract-")
        .tempdir_in(&parent)
        .map_err(target_err("creating a temporary directory in", &parent))?;
    let mut tree = Tree::new(archive, staging.path(), limits);
    match format {
        ArchiveFormat::TarGz => unpack_tar_gz(file, &mut tree)?,
        ArchiveFormat::Zip => unpack_zip(file, &mut tree)?,
    }
    tree.finish(existing_mode.unwrap_or(0o755))?;

    let root = File::open(staging.path()).map_err(target_err("opening", staging.path()))?;
    nix::unistd::syncfs(root.as_raw_fd())
        .map_err(|e| target_err("syncing the filesystem of", staging.path())(e.into()))?;
    drop(root);

    let mut report = tree.report;
    if existing_mode.is_some() {
        report.replaced = true;
        report.old_tree_left = swap_into_place(staging, target, &parent)?;
    } else {
        fs::rename(staging.path(), target).map_err(target_err("moving the new tree to", target))?;
        // The path is now `target`; stop the guard from removing whatever takes its old name.
        let _ = staging.keep();
    }
    // Makes the rename itself durable.
    File::open(&parent)
        .and_then(|d| d.sync_all())
        .map_err(target_err("syncing directory", &parent))?;
    Ok(report)
}

/// Puts the tree at `staging` where the directory `target` is, then removes the old tree.
/// Returns where the old tree was left if removing it failed.
fn swap_into_place(
    staging: tempfile::TempDir,
    target: &Path,
    parent: &Path,
) -> Result<Option<PathBuf>, ExtractError> {
    use nix::fcntl::{renameat2, RenameFlags};
    match renameat2(
        None,
        staging.path(),
        None,
        target,
        RenameFlags::RENAME_EXCHANGE,
    ) {
        Ok(()) => {
            // `staging` now names the old tree; closing it removes that.
            let old = staging.path().to_path_buf();
            Ok(staging.close().err().map(|_| old))
        }
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {
            swap_by_renames(staging, target, parent)
        }
        Err(e) => Err(target_err("swapping the new tree with", target)(e.into())),
    }
}

/// The fallback for filesystems without RENAME_EXCHANGE: a moment with no `target`, never a
/// mixed tree.
fn swap_by_renames(
    staging: tempfile::TempDir,
    target: &Path,
    parent: &Path,
) -> Result<Option<PathBuf>, ExtractError> {
    // No atomic exchange here: move the old tree into an empty placeholder (rename replaces an
    // empty directory), then the new one into place, undoing the first move if the second fails.
    let aside = tempfile::Builder::new()
        .prefix(".p2pu-old-")
        .tempdir_in(parent)
        .map_err(target_err("creating a temporary directory in", parent))?;
    fs::rename(target, aside.path()).map_err(target_err("moving aside", target))?;
    if let Err(e) = fs::rename(staging.path(), target) {
        let _ = fs::rename(aside.path(), target);
        return Err(target_err("moving the new tree to", target)(e));
    }
    let _ = staging.keep();
    let old = aside.path().to_path_buf();
    Ok(aside.close().err().map(|_| old))
}

/// Turns an entry's path bytes into a relative path of plain names; empty means the root.
fn safe_relative_path(entry: &str, raw: &[u8]) -> Result<PathBuf, ExtractError> {
    if raw.contains(&0) {
        return Err(ExtractError::BadName {
            entry: entry.to_string(),
            reason: "contains a NUL byte",
        });
    }
    if raw.contains(&b'\\') {
        return Err(ExtractError::BadName {
            entry: entry.to_string(),
            reason: "contains a backslash",
        });
    }
    if raw.first() == Some(&b'/') {
        return Err(ExtractError::AbsolutePath {
            entry: entry.to_string(),
        });
    }
    let mut path = PathBuf::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                return Err(ExtractError::ParentDir {
                    entry: entry.to_string(),
                })
            }
            name => path.push(OsStr::from_bytes(name)),
        }
    }
    // Splitting on '/' leaves only plain names, but keep the invariant checked where it matters.
    if path
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(ExtractError::BadName {
            entry: entry.to_string(),
            reason: "is not a plain relative path",
        });
    }
    Ok(path)
}

/// The tree being built in the staging directory, with the running limits.
struct Tree<'a> {
    archive: &'a Path,
    root: &'a Path,
    limits: &'a Limits,
    entries: u64,
    total: u64,
    /// Explicit directory modes, applied last so a read-only directory can still be filled.
    dir_modes: Vec<(PathBuf, u32)>,
    report: ExtractReport,
}

impl<'a> Tree<'a> {
    fn new(archive: &'a Path, root: &'a Path, limits: &'a Limits) -> Self {
        Tree {
            archive,
            root,
            limits,
            entries: 0,
            total: 0,
            dir_modes: Vec::new(),
            report: ExtractReport::default(),
        }
    }

    fn count_entry(&mut self) -> Result<(), ExtractError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ExtractError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        Ok(())
    }

    fn permissions(&mut self, mode: u32) -> u32 {
        if mode & SPECIAL_BITS != 0 {
            self.report.special_bits_stripped += 1;
        }
        mode & 0o777
    }

    fn make_parents(&mut self, entry: &str, rel: &Path) -> Result<(), ExtractError> {
        let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) else {
            return Ok(());
        };
        // Count the directories a path implies so the report says what exists.
        let mut dir = self.root.to_path_buf();
        for part in parent.components() {
            dir.push(part);
            match fs::symlink_metadata(&dir) {
                Ok(meta) if meta.is_dir() => continue,
                Ok(_) => {
                    return Err(ExtractError::Duplicate {
                        entry: entry.to_string(),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(ExtractError::Write {
                        entry: entry.to_string(),
                        path: dir,
                        source,
                    })
                }
            }
            DirBuilder::new()
                .mode(0o755)
                .create(&dir)
                .map_err(|source| ExtractError::Write {
                    entry: entry.to_string(),
                    path: dir.clone(),
                    source,
                })?;
            self.report.dirs += 1;
        }
        Ok(())
    }

    fn add_dir(&mut self, entry: &str, rel: &Path, mode: u32) -> Result<(), ExtractError> {
        let mode = self.permissions(mode);
        if rel.as_os_str().is_empty() {
            // The archive's own root (`./`): its mode is the caller's to decide.
            return Ok(());
        }
        self.make_parents(entry, rel)?;
        let path = self.root.join(rel);
        match DirBuilder::new().mode(0o755).create(&path) {
            Ok(()) => self.report.dirs += 1,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let is_dir = fs::symlink_metadata(&path).map(|m| m.is_dir());
                if !matches!(is_dir, Ok(true)) {
                    return Err(ExtractError::Duplicate {
                        entry: entry.to_string(),
                    });
                }
            }
            Err(source) => {
                return Err(ExtractError::Write {
                    entry: entry.to_string(),
                    path,
                    source,
                })
            }
        }
        self.dir_modes.push((path, mode));
        Ok(())
    }

    fn add_file(
        &mut self,
        entry: &str,
        rel: &Path,
        mode: u32,
        declared: u64,
        data: &mut dyn Read,
    ) -> Result<(), ExtractError> {
        if rel.as_os_str().is_empty() {
            return Err(ExtractError::BadName {
                entry: entry.to_string(),
                reason: "names no file",
            });
        }
        let limits = *self.limits;
        let room = limits.max_total_bytes.saturating_sub(self.total);
        if declared > limits.max_entry_bytes {
            return Err(ExtractError::EntryTooLarge {
                entry: entry.to_string(),
                size: declared,
                limit: limits.max_entry_bytes,
            });
        }
        if declared > room {
            return Err(ExtractError::TotalTooLarge {
                entry: entry.to_string(),
                limit: limits.max_total_bytes,
            });
        }
        let mode = self.permissions(mode);
        self.make_parents(entry, rel)?;
        let path = self.root.join(rel);
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            let entry = entry.to_string();
            move |source| ExtractError::Write {
                entry,
                path,
                source,
            }
        };
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    ExtractError::Duplicate {
                        entry: entry.to_string(),
                    }
                } else {
                    write_err(&path)(e)
                }
            })?;
        // Declared sizes can lie (zip); cap on the bytes that really come out.
        let cap = room.min(limits.max_entry_bytes);
        let mut buf = vec![0u8; 64 * 1024];
        let mut written: u64 = 0;
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(ExtractError::ReadArchive {
                        archive: self.archive.to_path_buf(),
                        position: format!("at entry {entry:?}"),
                        source,
                    })
                }
            };
            written += n as u64;
            if written > cap {
                return Err(if written > limits.max_entry_bytes {
                    ExtractError::EntryTooLarge {
                        entry: entry.to_string(),
                        size: written,
                        limit: limits.max_entry_bytes,
                    }
                } else {
                    ExtractError::TotalTooLarge {
                        entry: entry.to_string(),
                        limit: limits.max_total_bytes,
                    }
                });
            }
            let chunk = buf.get(..n).unwrap_or_default();
            out.write_all(chunk).map_err(write_err(&path))?;
        }
        out.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(write_err(&path))?;
        self.total += written;
        self.report.files += 1;
        self.report.bytes += written;
        Ok(())
    }

    /// Applies directory modes, deepest first so a read-only parent is set after its children.
    fn finish(&mut self, root_mode: u32) -> Result<(), ExtractError> {
        self.dir_modes
            .sort_by_key(|(path, _)| std::cmp::Reverse(path.components().count()));
        for (path, mode) in &self.dir_modes {
            fs::set_permissions(path, fs::Permissions::from_mode(*mode))
                .map_err(target_err("setting the mode of", path))?;
        }
        fs::set_permissions(self.root, fs::Permissions::from_mode(root_mode))
            .map_err(target_err("setting the mode of", self.root))
    }
}

/// Shared between the reader handed to the tar parser and the loop driving it: how many more
/// decompressed bytes may be read, and whether that budget ran out.
#[derive(Default)]
struct Budget {
    left: Cell<u64>,
    exceeded: Cell<bool>,
}

/// A reader that fails once its [`Budget`] is spent, so the tar parser cannot be made to buffer
/// an unbounded pax or long-name header.
struct Budgeted<R> {
    inner: R,
    budget: Rc<Budget>,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.budget.left.get();
        if left == 0 && !buf.is_empty() {
            self.budget.exceeded.set(true);
            return Err(io::Error::other("decompressed-size budget exceeded"));
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(buf.get_mut(..want).unwrap_or_default())?;
        self.budget.left.set(left - n as u64);
        Ok(n)
    }
}

fn unpack_tar_gz(file: File, tree: &mut Tree<'_>) -> Result<(), ExtractError> {
    let budget = Rc::new(Budget::default());
    let reader = Budgeted {
        inner: flate2::read::MultiGzDecoder::new(io::BufReader::new(file)),
        budget: Rc::clone(&budget),
    };
    let mut archive = tar::Archive::new(reader);
    let archive_path = tree.archive;
    let read_err = |position: String| {
        let archive = archive_path.to_path_buf();
        move |source| ExtractError::ReadArchive {
            archive,
            position,
            source,
        }
    };
    let mut entries = archive.entries().map_err(read_err("at the start".into()))?;
    let mut previous = String::from("the start");
    loop {
        budget.left.set(MAX_TAR_METADATA);
        let next = match entries.next() {
            None => break,
            Some(next) => next,
        };
        let mut entry = match next {
            Ok(entry) => entry,
            Err(_) if budget.exceeded.get() => {
                return Err(ExtractError::MetadataTooLarge {
                    after: previous,
                    limit: MAX_TAR_METADATA,
                })
            }
            Err(e) => return Err(read_err(format!("after {previous}"))(e)),
        };
        tree.count_entry()?;
        let raw_path = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_path).into_owned();
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().unwrap_or(0o644);
        let size = entry.size();
        use tar::EntryType as T;
        match kind {
            T::XGlobalHeader => {
                // `git archive` puts its commit id here; it describes nothing to write.
                previous = format!("entry {name:?}");
                continue;
            }
            T::Symlink | T::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .unwrap_or_default();
                let kind = if kind == T::Symlink {
                    LinkKind::Symlink
                } else {
                    LinkKind::Hardlink
                };
                return Err(ExtractError::Link {
                    entry: name,
                    kind,
                    target,
                });
            }
            T::Char | T::Block | T::Fifo => {
                let kind = match kind {
                    T::Char => SpecialKind::CharDevice,
                    T::Block => SpecialKind::BlockDevice,
                    _ => SpecialKind::Fifo,
                };
                return Err(ExtractError::Special { entry: name, kind });
            }
            T::Directory => {
                let rel = safe_relative_path(&name, &raw_path)?;
                tree.add_dir(&name, &rel, mode)?;
            }
            // Pre-POSIX tars mark directories only by the trailing slash.
            T::Regular if raw_path.ends_with(b"/") => {
                let rel = safe_relative_path(&name, &raw_path)?;
                tree.add_dir(&name, &rel, mode)?;
            }
            T::Regular | T::Continuous => {
                let rel = safe_relative_path(&name, &raw_path)?;
                // The data is read in full below, so the budget only has to cover it.
                budget.left.set(size.saturating_add(MAX_TAR_METADATA));
                tree.add_file(&name, &rel, mode, size, &mut entry)?;
            }
            other => {
                return Err(ExtractError::Unsupported {
                    entry: name,
                    kind: format!("{other:?}"),
                })
            }
        }
        previous = format!("entry {name:?}");
    }
    Ok(())
}

fn unpack_zip(file: File, tree: &mut Tree<'_>) -> Result<(), ExtractError> {
    let archive_path = tree.archive;
    let zip_err = |position: String| {
        let archive = archive_path.to_path_buf();
        move |source| ExtractError::Zip {
            archive,
            position,
            source,
        }
    };
    let mut archive = zip::ZipArchive::new(io::BufReader::new(file))
        .map_err(zip_err("in the central directory".into()))?;
    if archive.len() as u64 > tree.limits.max_entries {
        return Err(ExtractError::TooManyEntries {
            limit: tree.limits.max_entries,
        });
    }
    for index in 0..archive.len() {
        let mut member = archive
            .by_index(index)
            .map_err(zip_err(format!("at entry #{index}")))?;
        let name = member
            .name()
            .map_err(zip_err(format!("at entry #{index}")))?
            .into_owned();
        tree.count_entry()?;
        if member.encrypted() {
            return Err(ExtractError::Unsupported {
                entry: name,
                kind: "encrypted".into(),
            });
        }
        let rel = safe_relative_path(&name, name.as_bytes())?;
        let unix = member.unix_mode();
        let file_type = unix.map_or(0, |m| m & S_IFMT);
        match file_type {
            S_IFLNK => {
                let mut target = Vec::new();
                // The link text is only read for the error message; a few KiB is plenty.
                let _ = (&mut member).take(4096).read_to_end(&mut target);
                return Err(ExtractError::Link {
                    entry: name,
                    kind: LinkKind::Symlink,
                    target: String::from_utf8_lossy(&target).into_owned(),
                });
            }
            S_IFCHR | S_IFBLK | S_IFIFO | S_IFSOCK => {
                let kind = match file_type {
                    S_IFCHR => SpecialKind::CharDevice,
                    S_IFBLK => SpecialKind::BlockDevice,
                    S_IFIFO => SpecialKind::Fifo,
                    _ => SpecialKind::Socket,
                };
                return Err(ExtractError::Special { entry: name, kind });
            }
            _ if file_type == S_IFDIR || member.is_dir() => {
                tree.add_dir(&name, &rel, unix.unwrap_or(0o755))?;
            }
            0 | S_IFREG => {
                let size = member.size();
                tree.add_file(&name, &rel, unix.unwrap_or(0o644), size, &mut member)?;
            }
            other => {
                return Err(ExtractError::Unsupported {
                    entry: name,
                    kind: format!("mode {other:o}"),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An archive reader that hands over more bytes than the entry declared (a zip's sizes are
    /// the archive's word only): p2pu's own cap on the bytes that really come out stops it,
    /// whatever the archive library would have done.
    #[test]
    fn an_entry_yielding_more_than_declared_is_capped_on_real_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("liar.zip");
        let limits = Limits {
            max_total_bytes: 4 << 20,
            max_entries: 10,
            max_entry_bytes: 1 << 20,
        };
        // Declares 10 bytes, yields 3 MiB: past the entry cap.
        let root = dir.path().join("entry");
        fs::create_dir(&root).unwrap();
        let mut tree = Tree::new(&archive, &root, &limits);
        let mut endless = io::repeat(0).take(3 << 20);
        let err = tree
            .add_file("zeros", Path::new("zeros"), 0o644, 10, &mut endless)
            .unwrap_err();
        assert!(
            matches!(err, ExtractError::EntryTooLarge { size, limit, .. }
                if size > limit && limit == 1 << 20),
            "{err}"
        );
        // Within the entry cap but past what is left of the total: the total cap trips.
        let root = dir.path().join("total");
        fs::create_dir(&root).unwrap();
        let mut tree = Tree::new(&archive, &root, &limits);
        tree.total = (4 << 20) - 1000;
        let mut more = io::repeat(0).take(512 << 10);
        let err = tree
            .add_file("zeros", Path::new("zeros"), 0o644, 10, &mut more)
            .unwrap_err();
        assert!(matches!(err, ExtractError::TotalTooLarge { .. }), "{err}");
        // Honest entries within both caps are written whole.
        let mut honest = io::repeat(7).take(1000);
        tree.total = 0;
        tree.add_file("ok", Path::new("ok"), 0o644, 1000, &mut honest)
            .unwrap();
        assert_eq!(fs::read(root.join("ok")).unwrap(), vec![7u8; 1000]);
    }

    #[test]
    fn safe_relative_path_keeps_plain_names_and_skips_dots() {
        let p = safe_relative_path("x", b"./a//b/./c.txt").unwrap();
        assert_eq!(p, PathBuf::from("a/b/c.txt"));
        assert_eq!(safe_relative_path("x", b"./").unwrap(), PathBuf::new());
    }

    #[test]
    fn safe_relative_path_refuses_escapes() {
        assert!(matches!(
            safe_relative_path("x", b"../evil"),
            Err(ExtractError::ParentDir { .. })
        ));
        assert!(matches!(
            safe_relative_path("x", b"a/../../evil"),
            Err(ExtractError::ParentDir { .. })
        ));
        assert!(matches!(
            safe_relative_path("x", b"/abs/evil"),
            Err(ExtractError::AbsolutePath { .. })
        ));
        assert!(matches!(
            safe_relative_path("x", b"..\\evil"),
            Err(ExtractError::BadName { .. })
        ));
        assert!(matches!(
            safe_relative_path("x", b"a\0b"),
            Err(ExtractError::BadName { .. })
        ));
    }

    #[test]
    fn format_from_path_ignores_case() {
        assert_eq!(
            ArchiveFormat::from_path(Path::new("/x/M-1.0.TAR.GZ")),
            Some(ArchiveFormat::TarGz)
        );
        assert_eq!(
            ArchiveFormat::from_path(Path::new("a.tgz")),
            Some(ArchiveFormat::TarGz)
        );
        assert_eq!(
            ArchiveFormat::from_path(Path::new("a.zip")),
            Some(ArchiveFormat::Zip)
        );
        assert_eq!(ArchiveFormat::from_path(Path::new("a.tar")), None);
    }

    #[test]
    fn budgeted_reader_stops_at_budget() {
        let budget = Rc::new(Budget::default());
        budget.left.set(10);
        let mut r = Budgeted {
            inner: io::repeat(7),
            budget: Rc::clone(&budget),
        };
        let mut buf = [0u8; 64];
        assert_eq!(r.read(&mut buf).unwrap(), 10);
        assert!(r.read(&mut buf).is_err());
        assert!(budget.exceeded.get());
    }

    #[test]
    fn swap_by_renames_replaces_the_tree_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("old"), b"old").unwrap();
        let staging = tempfile::tempdir_in(dir.path()).unwrap();
        fs::write(staging.path().join("new"), b"new").unwrap();
        let left = swap_by_renames(staging, &target, dir.path()).unwrap();
        assert_eq!(left, None);
        assert_eq!(fs::read(target.join("new")).unwrap(), b"new");
        assert!(!target.join("old").exists());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["target"]);
    }

    #[test]
    fn target_that_is_a_symlink_is_refused_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let archive = dir.path().join("a.tar.gz");
        fs::write(&archive, b"").unwrap();
        let err = extract(&archive, ArchiveFormat::TarGz, &link, &Limits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                ExtractError::TargetNotDirectory {
                    found: "symlink",
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
