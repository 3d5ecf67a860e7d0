//! Key files on disk: reading a secret or public key file, and the trusted-keys directory
//! (loading it, trusting a key, revoking a kid). The key types, their texts and the rules of
//! the set are the formats crate's ([`p2pu_formats::keys`], re-exported here); this module owns
//! only the directory I/O.
//!
//! The trusted-keys directory holds one `*.pub` file per trusted key (any file name;
//! [`TrustedKeysDir::add`] writes `<kid>.pub`) and one `<kid>.revoked` file per revoked key. A
//! revoked key stays revoked even if its `.pub` file is still there or arrives again; only
//! deleting the `.revoked` file by hand trusts it again. A directory that does not exist is an
//! empty set. Roles and rotation are [`crate::trust`]'s.

pub use p2pu_formats::keys::*;

use crate::error::IoError;
use crate::fsutil::{write_atomic, FsError};
use ed25519_dalek::{SigningKey, VerifyingKey};
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// File names `p2pu keygen` writes in its output directory.
pub const SECRET_FILE: &str = "signing.key";
pub const PUBLIC_FILE: &str = "signing.pub";

/// A key file or the trusted-keys directory could not be read or written, or a key in it is
/// malformed or refused ([`KeyError`], kept as its own variant so callers can match it).
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Write(#[from] FsError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("no signing key at {} (agent.signing_key): make one with `p2pu keygen --out {}` and trust its signing.pub on the nodes (`p2pu key trust`)", path.display(), path.parent().map_or(".".into(), |d| d.display().to_string()))]
    NoSigningKey { path: PathBuf },
    #[error("{}: permission denied: the signing key is readable by its owner only; run as root", path.display())]
    SecretDenied { path: PathBuf },
    #[error("{}: secret key is readable by others (mode {mode:04o}); chmod 600 it", path.display())]
    SecretKeyExposed { path: PathBuf, mode: u32 },
    #[error("{} already exists (use --force to overwrite)", path.display())]
    Exists { path: PathBuf },
    #[error("trusted-keys path {} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
}

impl crate::error::LayerError for KeyError {}

/// A refused or malformed key stays a [`KeyError`] in the library's error (so
/// `Error::layer::<KeyError>()` finds a revoked or last key whichever half said it); the rest
/// is the file's.
impl From<KeyFileError> for crate::error::Error {
    fn from(error: KeyFileError) -> crate::error::Error {
        match error {
            KeyFileError::Key(key) => key.into(),
            other => crate::error::Error::Layer(Box::new(other)),
        }
    }
}

type Result<T, E = KeyFileError> = std::result::Result<T, E>;

/// Reads a secret key file, refusing one that group or others can read (as ssh does).
pub fn read_secret(path: &Path) -> Result<SigningKey> {
    let meta = std::fs::metadata(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => KeyFileError::NoSigningKey {
            path: path.to_path_buf(),
        },
        _ => IoError::on("reading", path)(source).into(),
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::SecretKeyExposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    let bytes = std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::PermissionDenied => KeyFileError::SecretDenied {
            path: path.to_path_buf(),
        },
        _ => IoError::on("reading", path)(source).into(),
    })?;
    Ok(parse_secret(&bytes, &path.display().to_string())?)
}

/// The public key of a secret or public key file, whichever `path` holds.
pub fn read_any_public(path: &Path) -> Result<VerifyingKey> {
    let bytes = std::fs::read(path).map_err(IoError::on("reading", path))?;
    if bytes.starts_with(SECRET_PREFIX.as_bytes()) {
        return Ok(read_secret(path)?.verifying_key());
    }
    Ok(PublicKey::parse(&bytes, &path.display().to_string())?.key)
}

/// The trusted-keys directory, as associated functions of [`TrustedKeys`] (the set is the
/// formats crate's type, so its directory I/O joins it through this trait).
pub trait TrustedKeysDir: Sized {
    /// The set `dir` holds; a directory that does not exist is empty.
    fn load(dir: &Path) -> Result<Self>;
    /// Trusts `key` by writing `<dir>/<kid>.pub` atomically; a revoked kid is refused.
    fn add(dir: &Path, key: &PublicKey) -> Result<KeyChange>;
    /// Revokes `kid` by writing `<dir>/<kid>.revoked`; never the last trusted key.
    fn revoke(dir: &Path, kid: KeyId, reason: &str) -> Result<KeyChange>;
}

impl TrustedKeysDir for TrustedKeys {
    fn load(dir: &Path) -> Result<TrustedKeys> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TrustedKeys::default()),
            Err(_) if dir.exists() && !dir.is_dir() => {
                return Err(KeyFileError::NotADirectory {
                    path: dir.to_path_buf(),
                })
            }
            Err(e) => return Err(IoError::on("reading directory", dir)(e).into()),
        };
        let mut keys = Vec::new();
        let mut revoked = BTreeSet::new();
        for entry in entries {
            let path = entry.map_err(IoError::on("reading directory", dir))?.path();
            let origin = path.display().to_string();
            match path.extension().and_then(|e| e.to_str()) {
                Some("pub") => {
                    let bytes = std::fs::read(&path).map_err(IoError::on("reading", &path))?;
                    keys.push((PublicKey::parse(&bytes, &origin)?, path));
                }
                Some("revoked") => {
                    let stem = path
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .unwrap_or_default();
                    let kid = stem.parse().map_err(|_| {
                        malformed(&origin, "file name is not <16 hex chars>.revoked")
                    })?;
                    revoked.insert(kid);
                }
                _ => {}
            }
        }
        Ok(TrustedKeys::from_files(keys, revoked))
    }

    fn add(dir: &Path, key: &PublicKey) -> Result<KeyChange> {
        if let Some(change) = TrustedKeys::load(dir)?.check_add(key)? {
            return Ok(change);
        }
        let kid = key.kid();
        let path = dir.join(format!("{kid}.pub"));
        write_atomic(&path, key.to_text().as_bytes(), 0o644)?;
        Ok(KeyChange::Trusted(kid))
    }

    fn revoke(dir: &Path, kid: KeyId, reason: &str) -> Result<KeyChange> {
        if let Some(change) = TrustedKeys::load(dir)?.check_revoke(kid, reason)? {
            return Ok(change);
        }
        let path = dir.join(format!("{kid}.revoked"));
        write_atomic(&path, revocation_text(kid, reason).as_bytes(), 0o644)?;
        Ok(KeyChange::Revoked(kid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn public(n: u8, comment: &str) -> PublicKey {
        PublicKey {
            key: key(n).verifying_key(),
            comment: comment.to_string(),
        }
    }

    fn key_error(result: Result<impl std::fmt::Debug>) -> KeyFileError {
        match result {
            Err(e) => e,
            other => panic!("want a KeyFileError, got {other:?}"),
        }
    }

    #[test]
    fn read_secret_refuses_group_readable_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        write_atomic(&path, secret_to_text(&key(5)).as_bytes(), 0o640).unwrap();
        let err = key_error(read_secret(&path));
        assert!(
            matches!(err, KeyFileError::SecretKeyExposed { mode: 0o640, .. }),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret(&path).unwrap().to_bytes(), key(5).to_bytes());
        assert_eq!(read_any_public(&path).unwrap(), key(5).verifying_key());
    }

    #[test]
    fn missing_dir_is_empty_and_a_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(TrustedKeys::load(&dir.path().join("nope"))
            .unwrap()
            .is_empty());
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let err = key_error(TrustedKeys::load(&file));
        assert!(matches!(err, KeyFileError::NotADirectory { .. }), "{err}");
    }

    #[test]
    fn load_reads_pub_files_and_names_a_malformed_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("alice.pub"), public(1, "alice").to_text()).unwrap();
        std::fs::write(dir.path().join("README"), "not a key").unwrap();
        let set = TrustedKeys::load(dir.path()).unwrap();
        assert_eq!(set.len(), 1);
        let kid = KeyId::of(&key(1).verifying_key());
        assert_eq!(set.get(&kid).unwrap().key.comment, "alice");

        std::fs::write(dir.path().join("bad.pub"), "garbage").unwrap();
        let err = key_error(TrustedKeys::load(dir.path()));
        assert!(err.to_string().contains("bad.pub"), "{err}");
    }

    #[test]
    fn add_and_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (public(1, "a"), public(2, "b"));
        assert_eq!(
            TrustedKeys::add(dir.path(), &a).unwrap(),
            KeyChange::Trusted(a.kid())
        );
        assert_eq!(
            TrustedKeys::add(dir.path(), &a).unwrap(),
            KeyChange::AlreadyTrusted(a.kid())
        );
        assert!(dir.path().join(format!("{}.pub", a.kid())).is_file());

        // The last trusted key stays.
        let err = key_error(TrustedKeys::revoke(dir.path(), a.kid(), ""));
        assert!(
            matches!(err, KeyFileError::Key(KeyError::LastKey { .. })),
            "{err}"
        );

        TrustedKeys::add(dir.path(), &b).unwrap();
        assert_eq!(
            TrustedKeys::revoke(dir.path(), a.kid(), "lost").unwrap(),
            KeyChange::Revoked(a.kid())
        );
        assert_eq!(
            TrustedKeys::revoke(dir.path(), a.kid(), "").unwrap(),
            KeyChange::AlreadyRevoked(a.kid())
        );
        let set = TrustedKeys::load(dir.path()).unwrap();
        assert!(set.get(&a.kid()).is_none() && set.is_revoked(&a.kid()));
        assert_eq!(set.len(), 1);

        // A revoked key cannot come back by being added again.
        let err = key_error(TrustedKeys::add(dir.path(), &a));
        assert!(
            matches!(err, KeyFileError::Key(KeyError::Revoked { .. })),
            "{err}"
        );

        // Revoking a kid never seen blocks it in advance.
        let c = public(3, "");
        TrustedKeys::revoke(dir.path(), c.kid(), "").unwrap();
        assert!(key_error(TrustedKeys::add(dir.path(), &c))
            .to_string()
            .contains("revoked"));
    }

    #[test]
    fn revoked_file_with_bad_name_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("oops.revoked"), "").unwrap();
        let err = key_error(TrustedKeys::load(dir.path()));
        assert!(err.to_string().contains("oops.revoked"), "{err}");
    }
}
