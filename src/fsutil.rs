//! Durable file writes: temp file in the same directory, fsync, rename, fsync the directory,
//! so a crash leaves either the old file or the new one, never a torn one.

use std::fs;
use std::io::Write;
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

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FsError {
    let path = path.to_path_buf();
    move |source| FsError::Io {
        action,
        path,
        source,
    }
}

/// Writes `contents` to `path` atomically with `mode`, creating parent directories.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
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
    tmp.as_file()
        .sync_all()
        .map_err(io("syncing", tmp.path()))?;
    tmp.persist(path)
        .map_err(|e| io("renaming into place", path)(e.error))?;
    sync_dir(dir)
}

/// Makes a rename or create inside `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing directory", dir))
}
