//! The payloads a health-check revert applies again: `<state_dir>/good/<name>/<seq>/<name>`,
//! root-only (directories 0700), each beside a `meta.json` with the length and SHA-256 it must
//! still have. Which of them is the *last good* version is not kept here but read from the
//! state: the newest record of the name that is `applied` and has its copy kept.
//!
//! A payload is kept (a hard link to its verified copy, or a copy when the link cannot be made)
//! before it is applied, written under a temporary name and renamed into place, so a kept
//! version is whole or absent, and an agent restarted in the middle of a check still has it.
//! Once a version passes its check, the older ones of its name are removed; a version that
//! failed is removed after the revert. A revert re-verifies the kept bytes against `meta.json`
//! into the verified staging ([`crate::agent::transfer::verified::copy_verified`]) and applies
//! that copy, as any update.

use crate::fsutil::write_atomic_unsynced;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

const META: &str = "meta.json";

#[derive(Debug, thiserror::Error)]
pub enum GoodError {
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("update name {name:?} is not one plain path component")]
    BadName { name: String },
    #[error(transparent)]
    Fs(#[from] crate::fsutil::FsError),
}

impl crate::error::LayerError for GoodError {}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> GoodError + 'a {
    move |source| GoodError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// What a kept payload must still be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    len: u64,
    sha256: String,
}

/// A kept payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub path: PathBuf,
    pub len: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// The kept payloads under one state dir.
pub struct GoodStore {
    root: PathBuf,
}

impl GoodStore {
    pub fn of(state_dir: &Path) -> GoodStore {
        GoodStore {
            root: state_dir.join("good"),
        }
    }

    fn name_dir(&self, name: &str) -> Result<PathBuf, GoodError> {
        let mut parts = Path::new(name).components();
        match (parts.next(), parts.next()) {
            (Some(std::path::Component::Normal(_)), None) => Ok(self.root.join(name)),
            _ => Err(GoodError::BadName { name: name.into() }),
        }
    }

    /// Keeps `payload` (a verified copy) as version `seq` of `name`; `sha256` is the signed
    /// one, or `None` (a legacy payload), and then it is computed here.
    pub fn keep(
        &self,
        name: &str,
        seq: u64,
        payload: &Path,
        sha256: Option<[u8; 32]>,
    ) -> Result<(), GoodError> {
        let name_dir = self.name_dir(name)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&name_dir)
            .map_err(io("creating", &name_dir))?;
        let temp = name_dir.join(format!(".{seq}.tmp"));
        if temp.exists() {
            std::fs::remove_dir_all(&temp).map_err(io("removing", &temp))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&temp)
            .map_err(io("creating", &temp))?;
        let kept = temp.join(name);
        if std::fs::hard_link(payload, &kept).is_err() {
            std::fs::copy(payload, &kept).map_err(io("copying into", &kept))?;
        }
        let len = std::fs::metadata(&kept)
            .map_err(io("reading", &kept))?
            .len();
        let sha256 = match sha256 {
            Some(sha256) => hex::encode(sha256),
            None => {
                let mut file = std::fs::File::open(&kept).map_err(io("reading", &kept))?;
                let mut hasher = Sha256::new();
                std::io::copy(&mut file, &mut hasher).map_err(io("reading", &kept))?;
                hex::encode(hasher.finalize())
            }
        };
        let meta = serde_json::to_vec(&Meta { len, sha256 }).map_err(|e| GoodError::Io {
            action: "encoding",
            path: temp.join(META),
            source: e.into(),
        })?;
        let meta_path = temp.join(META);
        // Not synced: nor are the payload's link or copy, nor the directory's rename below, so
        // a power cut may lose a kept version whatever this sync did; a torn meta reads as not
        // kept, and a revert verifies the kept payload against its SHA-256 before using it.
        // The two syncs cost about 20 ms before every apply on a loaded machine (issue 30).
        write_atomic_unsynced(&meta_path, &meta, 0o600)?;
        let dir = name_dir.join(seq.to_string());
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io("removing", &dir))?;
        }
        std::fs::rename(&temp, &dir).map_err(io("renaming into", &dir))
    }

    /// Version `seq` of `name`, when it is kept whole.
    pub fn get(&self, name: &str, seq: u64) -> Option<Kept> {
        let dir = self.name_dir(name).ok()?.join(seq.to_string());
        let meta: Meta = serde_json::from_slice(&std::fs::read(dir.join(META)).ok()?).ok()?;
        Some(Kept {
            path: dir.join(name),
            len: meta.len,
            sha256: meta.sha256,
        })
    }

    /// Removes every kept version of `name` but those in `keep`.
    pub fn keep_only(&self, name: &str, keep: &[u64]) {
        let Ok(name_dir) = self.name_dir(name) else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(&name_dir) else {
            return;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let file_name = entry.file_name();
            let seq = file_name.to_str().and_then(|s| s.parse::<u64>().ok());
            if seq.is_some_and(|seq| keep.contains(&seq)) {
                continue;
            }
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(path = %entry.path().display(), "removing a kept version: {e}");
            }
        }
    }

    /// Removes version `seq` of `name`.
    pub fn discard(&self, name: &str, seq: u64) {
        if let Ok(name_dir) = self.name_dir(name) {
            let dir = name_dir.join(seq.to_string());
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %dir.display(), "removing a kept version: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_kept_version_is_root_only_whole_and_older_ones_go() {
        let tmp = tempfile::tempdir().unwrap();
        let store = GoodStore::of(&tmp.path().join("state"));
        let payload = tmp.path().join("site.pp");
        std::fs::write(&payload, "notice('v1')\n").unwrap();
        store.keep("site.pp", 1, &payload, None).unwrap();
        std::fs::write(tmp.path().join("v2"), "notice('v2')\n").unwrap();
        store
            .keep("site.pp", 2, &tmp.path().join("v2"), Some([7; 32]))
            .unwrap();
        let one = store.get("site.pp", 1).unwrap();
        assert_eq!(one.path.file_name().unwrap(), "site.pp");
        assert_eq!(
            std::fs::read_to_string(&one.path).unwrap(),
            "notice('v1')\n"
        );
        assert_eq!(
            one.sha256,
            hex::encode(Sha256::digest(b"notice('v1')\n")),
            "a legacy payload's SHA-256 is computed"
        );
        assert_eq!(store.get("site.pp", 2).unwrap().sha256, "07".repeat(32));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&tmp.path().join("state/good/site.pp")), 0o700);
        assert_eq!(mode(&tmp.path().join("state/good/site.pp/1")), 0o700);
        store.keep_only("site.pp", &[2]);
        assert_eq!(store.get("site.pp", 1), None);
        assert!(store.get("site.pp", 2).is_some());
        store.discard("site.pp", 2);
        assert_eq!(store.get("site.pp", 2), None);
        assert!(matches!(
            store.keep("../x", 1, &payload, None),
            Err(GoodError::BadName { .. })
        ));
    }
}
