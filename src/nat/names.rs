//! The proxy's name bindings: which Ed25519 identity key each node name belongs to. A name is
//! bound by its first signed registration (trust on first use) or by the operator, who writes
//! the file before the proxy starts; after that only that key may register the name, so a
//! holder of the fleet secret cannot take over another member's mapped address or pinned
//! certificate hash. The bindings survive a proxy restart in one JSON file,
//! `{"name": "p2pu-ed25519:<base64>"}` (the format of `keys`' public key files); a node whose
//! key changed for good (reinstalled) is freed by deleting its line and restarting the proxy.

use crate::fsutil::write_atomic;
use crate::keys::{key_text, PublicKey, PUBLIC_PREFIX};
use ed25519_dalek::VerifyingKey;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file the proxy keeps in its state directory.
pub const BINDINGS_FILE: &str = "names.json";

#[derive(Debug, thiserror::Error)]
pub enum NamesError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a JSON object of node name to `{PUBLIC_PREFIX}<base64>`: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("writing {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// What a registration under `name` with a key amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The name is bound to this key.
    Known,
    /// The name was free and is now bound to this key.
    Bound,
    /// The name is bound to another key: refused.
    Conflict,
    /// The name is free but no more names fit: refused.
    Full,
    /// The name is free but its key is bound to another name already: one identity key, one
    /// name, so a member cannot take every free name with the key it holds.
    KeyTaken,
    /// The name is free but its source bound too many names lately (see the proxy).
    TooMany,
}

/// Name -> identity key, bounded, optionally persisted.
#[derive(Debug, Clone)]
pub struct Bindings {
    keys: BTreeMap<String, [u8; 32]>,
    path: Option<PathBuf>,
    capacity: usize,
}

impl Bindings {
    /// In memory only (tests, or a proxy with no state directory).
    pub fn in_memory(capacity: usize) -> Bindings {
        Bindings {
            keys: BTreeMap::new(),
            path: None,
            capacity,
        }
    }

    /// Reads `path` (missing: no bindings yet); new bindings are written back to it.
    pub fn load(path: &Path, capacity: usize) -> Result<Bindings, NamesError> {
        let mut bindings = Bindings {
            path: Some(path.to_path_buf()),
            ..Bindings::in_memory(capacity)
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(bindings),
            Err(source) => {
                return Err(NamesError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let malformed = |reason: String| NamesError::Malformed {
            path: path.to_path_buf(),
            reason,
        };
        let entries: BTreeMap<String, String> =
            serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
        for (name, key) in entries {
            // Read as a `.pub` file's line is, and nothing after the key.
            let public = PublicKey::parse(key.as_bytes(), &format!("{name:?}"))
                .ok()
                .filter(|public| public.comment.is_empty())
                .ok_or_else(|| malformed(format!("{name:?}: {key:?} is not an Ed25519 key")))?;
            bindings.keys.insert(name, public.key.to_bytes());
        }
        Ok(bindings)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks `name` against `key`, binding it when free (and writing the file).
    pub fn check(&mut self, name: &str, key: &VerifyingKey) -> Verdict {
        self.check_new(name, key, || true)
    }

    /// [`check`](Self::check), binding a free name only when `may_bind` says so (the proxy's
    /// bound on new names per source address).
    pub fn check_new(
        &mut self,
        name: &str,
        key: &VerifyingKey,
        may_bind: impl FnOnce() -> bool,
    ) -> Verdict {
        match self.keys.get(name) {
            Some(bound) if bound == key.as_bytes() => Verdict::Known,
            Some(_) => Verdict::Conflict,
            None if self.keys.len() >= self.capacity => Verdict::Full,
            None if self.keys.values().any(|bound| bound == key.as_bytes()) => Verdict::KeyTaken,
            None if !may_bind() => Verdict::TooMany,
            None => {
                self.keys.insert(name.to_owned(), *key.as_bytes());
                if let Err(e) = self.save() {
                    // Kept in memory: the name stays bound until a restart, and the operator
                    // sees why it would not survive one.
                    tracing::error!(error = %e, "cannot persist a name binding");
                }
                Verdict::Bound
            }
        }
    }

    fn save(&self) -> Result<(), NamesError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let entries: BTreeMap<&str, String> = self
            .keys
            .iter()
            .map(|(name, key)| (name.as_str(), key_text(key)))
            .collect();
        let mut text = serde_json::to_string_pretty(&entries).map_err(|e| NamesError::Write {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        text.push('\n');
        write_atomic(path, text.as_bytes(), 0o644).map_err(|e| NamesError::Write {
            path: path.clone(),
            reason: crate::error::chain(&e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn key(n: u8) -> VerifyingKey {
        SigningKey::from_bytes(&[n; 32]).verifying_key()
    }

    #[test]
    fn the_first_key_binds_a_name_and_another_is_refused() {
        let mut names = Bindings::in_memory(8);
        assert_eq!(names.check("a", &key(1)), Verdict::Bound);
        assert_eq!(names.check("a", &key(1)), Verdict::Known);
        assert_eq!(names.check("a", &key(2)), Verdict::Conflict);
        assert_eq!(names.check("b", &key(2)), Verdict::Bound);
    }

    #[test]
    fn bindings_are_bounded() {
        let mut names = Bindings::in_memory(2);
        assert_eq!(names.check("a", &key(1)), Verdict::Bound);
        assert_eq!(names.check("b", &key(2)), Verdict::Bound);
        assert_eq!(names.check("c", &key(3)), Verdict::Full);
        assert_eq!(names.check("a", &key(1)), Verdict::Known);
    }

    /// Issue 28's untried attack: a member binding every free name with the key it holds
    /// would lock every later node out of the proxy. One key binds one name, and a source
    /// refused more new names binds none.
    #[test]
    fn one_key_binds_one_name_and_a_source_may_be_refused_new_ones() {
        let mut names = Bindings::in_memory(8);
        assert_eq!(names.check("a", &key(1)), Verdict::Bound);
        assert_eq!(names.check("b", &key(1)), Verdict::KeyTaken);
        assert_eq!(names.check_new("b", &key(2), || false), Verdict::TooMany);
        assert_eq!(names.len(), 1);
        assert_eq!(names.check_new("a", &key(1), || false), Verdict::Known);
    }

    #[test]
    fn bindings_survive_a_reload_and_operators_can_write_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(BINDINGS_FILE);
        let mut names = Bindings::load(&path, 8).unwrap();
        assert!(names.is_empty());
        assert_eq!(names.check("a", &key(1)), Verdict::Bound);
        let mut again = Bindings::load(&path, 8).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again.check("a", &key(2)), Verdict::Conflict);
        assert_eq!(again.check("a", &key(1)), Verdict::Known);

        let provisioned = format!("{{\"b\": \"{}\"}}", key_text(key(3).as_bytes()));
        std::fs::write(&path, provisioned).unwrap();
        let mut operator = Bindings::load(&path, 8).unwrap();
        assert_eq!(operator.check("b", &key(1)), Verdict::Conflict);
        assert_eq!(operator.check("b", &key(3)), Verdict::Known);

        std::fs::write(&path, "{\"b\": \"p2pu-ed25519:AAAA\"}").unwrap();
        assert!(matches!(
            Bindings::load(&path, 8),
            Err(NamesError::Malformed { .. })
        ));
    }
}
