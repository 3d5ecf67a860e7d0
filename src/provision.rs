//! Brings a node's files to what `render` says: compares with what is on disk, shows diffs,
//! writes atomically with the right owner and mode, creates the directories and secrets the
//! engines need. All paths are target-system paths, mapped under `--root` when given.

mod compare;
mod owner;
mod secrets;
pub mod services;

pub use owner::Owners;
pub use secrets::{ensure_secrets, SecretStatus};

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::render::ManagedFile;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The file system being provisioned: `/`, or an image's root file system.
#[derive(Debug, Clone)]
pub struct Target {
    pub root: Option<PathBuf>,
}

impl Target {
    /// Where a target-system path lives on this machine.
    pub fn host(&self, path: &Path) -> PathBuf {
        match &self.root {
            Some(root) => root.join(path.strip_prefix("/").unwrap_or(path)),
            None => path.to_path_buf(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Create,
    Update,
    /// Only the owner or mode differ.
    Permissions,
    Remove,
}

impl Change {
    pub fn verb(self) -> &'static str {
        match self {
            Change::Create => "created",
            Change::Update => "updated",
            Change::Permissions => "fixed owner/mode of",
            Change::Remove => "removed",
        }
    }
}

#[derive(Debug)]
pub struct PlannedChange {
    pub file: ManagedFile,
    pub change: Change,
    pub old: Option<Vec<u8>>,
}

/// Compares each managed file with the disk; returns only what must change.
pub fn plan(
    files: Vec<ManagedFile>,
    target: &Target,
    owners: &Owners,
) -> Result<Vec<PlannedChange>> {
    let mut changes = Vec::new();
    for file in files {
        let host = target.host(&file.path);
        let old = match fs::read(&host) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("reading", &host)(e)),
        };
        let change = match (&old, &file.contents) {
            (None, None) => continue,
            (Some(_), None) => Change::Remove,
            (None, Some(_)) => Change::Create,
            (Some(old), Some(new)) => {
                if !compare::same(file.compare, old, new) {
                    Change::Update
                } else if !permissions_match(&host, &file, owners)? {
                    Change::Permissions
                } else {
                    continue;
                }
            }
        };
        changes.push(PlannedChange { file, change, old });
    }
    Ok(changes)
}

fn permissions_match(host: &Path, file: &ManagedFile, owners: &Owners) -> Result<bool> {
    let meta = fs::metadata(host).map_err(Error::io("reading metadata of", host))?;
    let mode_ok = meta.permissions().mode() & 0o7777 == file.mode;
    let owner_ok = match owners.wanted_uid(file.owner.as_deref())? {
        Some(uid) => meta.uid() == uid,
        None => true,
    };
    Ok(mode_ok && owner_ok)
}

/// A unified diff of one planned change, for `--dry-run`, with every secret masked.
pub fn diff(change: &PlannedChange, secrets: &[&str]) -> String {
    let path = change.file.path.display().to_string();
    let old = String::from_utf8_lossy(change.old.as_deref().unwrap_or_default()).into_owned();
    let new =
        String::from_utf8_lossy(change.file.contents.as_deref().unwrap_or_default()).into_owned();
    if change.change == Change::Permissions {
        return format!(
            "--- {path}\n+++ {path}\n(owner or mode becomes {:o})\n",
            change.file.mode
        );
    }
    let old_label = if change.old.is_some() {
        path.clone()
    } else {
        "/dev/null".into()
    };
    let new_label = if change.file.contents.is_some() {
        path
    } else {
        "/dev/null".into()
    };
    let text = similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header(&old_label, &new_label)
        .to_string();
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(text, |text, secret| text.replace(secret, "********"))
}

/// Writes (or removes) one planned change atomically with its owner and mode.
pub fn apply(change: &PlannedChange, target: &Target, owners: &Owners) -> Result<()> {
    let host = target.host(&change.file.path);
    match &change.file.contents {
        None => fs::remove_file(&host).map_err(Error::io("removing", &host)),
        Some(contents) => {
            write_atomic(&host, contents, change.file.mode)?;
            owners.chown(&host, change.file.owner.as_deref())
        }
    }
}

/// A directory the node needs, with its owner and mode.
#[derive(Debug, Clone)]
pub struct ManagedDir {
    pub path: PathBuf,
    pub mode: u32,
    pub owner: Option<String>,
    /// Modes an older p2pu gave this directory: an existing one still in such a mode is
    /// brought to `mode`. Any other mode is the operator's choice and is left alone.
    pub upgrade_from: &'static [u32],
}

/// What `ensure_dirs` did (or would do) to one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirChange {
    Created(PathBuf),
    Moded { path: PathBuf, from: u32, to: u32 },
}

impl DirChange {
    /// One line for init's report; `dry_run` says "would".
    pub fn describe(&self, dry_run: bool) -> String {
        match (self, dry_run) {
            (DirChange::Created(path), false) => format!("created directory {}", path.display()),
            (DirChange::Created(path), true) => {
                format!("would create directory {}", path.display())
            }
            (DirChange::Moded { path, from, to }, dry) => format!(
                "{} the mode of directory {} from {from:04o} to {to:04o}",
                if dry { "would change" } else { "changed" },
                path.display()
            ),
        }
    }
}

/// Creates missing directories and upgrades the modes of old ones; returns what it did (or
/// would do).
pub fn ensure_dirs(
    dirs: &[ManagedDir],
    target: &Target,
    owners: &Owners,
    dry_run: bool,
) -> Result<Vec<DirChange>> {
    let mut changes = Vec::new();
    for dir in dirs {
        let host = target.host(&dir.path);
        if host.is_dir() {
            let from = fs::metadata(&host)
                .map_err(Error::io("reading", &host))?
                .permissions()
                .mode()
                & 0o7777;
            if from != dir.mode && dir.upgrade_from.contains(&from) {
                if !dry_run {
                    fs::set_permissions(&host, fs::Permissions::from_mode(dir.mode))
                        .map_err(Error::io("setting the mode of", &host))?;
                }
                changes.push(DirChange::Moded {
                    path: dir.path.clone(),
                    from,
                    to: dir.mode,
                });
            }
            continue;
        }
        changes.push(DirChange::Created(dir.path.clone()));
        if dry_run {
            continue;
        }
        fs::create_dir_all(&host).map_err(Error::io("creating directory", &host))?;
        fs::set_permissions(&host, fs::Permissions::from_mode(dir.mode))
            .map_err(Error::io("setting the mode of", &host))?;
        owners.chown(&host, dir.owner.as_deref())?;
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_mode_an_older_p2pu_gave_is_upgraded() {
        let root = tempfile::tempdir().unwrap();
        let target = Target {
            root: Some(root.path().to_path_buf()),
        };
        let owners = Owners::new(Some(root.path().to_path_buf()));
        let dir = |name: &str, mode: u32| {
            let host = root.path().join(name);
            fs::create_dir(&host).unwrap();
            fs::set_permissions(&host, fs::Permissions::from_mode(mode)).unwrap();
            ManagedDir {
                path: Path::new("/").join(name),
                mode: 0o711,
                owner: None,
                upgrade_from: &[0o700],
            }
        };
        let dirs = [dir("old", 0o700), dir("chosen", 0o750)];
        let mode = |name: &str| {
            fs::metadata(root.path().join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        let planned = ensure_dirs(&dirs, &target, &owners, true).unwrap();
        let moded = DirChange::Moded {
            path: "/old".into(),
            from: 0o700,
            to: 0o711,
        };
        assert_eq!(planned, std::slice::from_ref(&moded));
        assert_eq!(mode("old"), 0o700, "a dry run changes nothing");
        assert_eq!(
            moded.describe(false),
            "changed the mode of directory /old from 0700 to 0711"
        );
        assert_eq!(
            ensure_dirs(&dirs, &target, &owners, false).unwrap(),
            [moded]
        );
        assert_eq!((mode("old"), mode("chosen")), (0o711, 0o750));
        assert!(ensure_dirs(&dirs, &target, &owners, false)
            .unwrap()
            .is_empty());
    }
}
