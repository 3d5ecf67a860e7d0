//! Durable file writes: temp file in the same directory, fsync, rename, fsync the directory,
//! so a crash leaves either the old file or the new one, never a torn one.

use crate::error::{Error, Result};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes `contents` to `path` atomically with `mode`, creating parent directories.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::Internal(format!("{} has no parent directory", path.display())))?;
    fs::create_dir_all(dir).map_err(Error::io("creating directory", dir))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".p2pu-")
        .tempfile_in(dir)
        .map_err(Error::io("creating a temporary file in", dir))?;
    tmp.write_all(contents)
        .map_err(Error::io("writing", tmp.path()))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(Error::io("setting the mode of", tmp.path()))?;
    tmp.as_file()
        .sync_all()
        .map_err(Error::io("syncing", tmp.path()))?;
    tmp.persist(path)
        .map_err(|e| Error::io("renaming into place", path)(e.error))?;
    sync_dir(dir)
}

/// Makes a rename or create inside `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("syncing directory", dir))
}
