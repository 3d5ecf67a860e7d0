//! Ed25519 signing keys, key ids, the key file texts, and the in-memory set of trusted keys with
//! its rotation/revocation rules. Reading and writing key files and the trusted-keys directory
//! is p2pu's (`p2pu::keys`); nothing here touches the filesystem.
//!
//! File formats (ASCII, one line, a trailing newline is optional on input):
//!
//! - secret key, `signing.key`, mode 0600: `p2pu-ed25519-secret:<standard base64 of the 32-byte seed>`
//! - public key, `*.pub`: `p2pu-ed25519:<standard base64 of the 32-byte key>[ <comment>]`
//! - revocation, `<kid>.revoked` in the trusted dir and the payload of a revoking `key`
//!   announcement: `p2pu-revoke:<kid as 16 hex chars>[ <reason>]`
//!
//! A key id (`kid`) is the first 8 bytes of SHA-256 of the public key bytes, shown as 16 hex chars.
//!
//! The trusted-keys directory holds one `*.pub` file per trusted key (any file name; p2pu's
//! `TrustedKeysDir::add` writes `<kid>.pub`) and one `<kid>.revoked` file per revoked key. A revoked key stays revoked even
//! if its `.pub` file is still there or arrives again; only deleting the `.revoked` file by hand
//! trusts it again. A directory that does not exist is an empty set.
//!
//! Rotation: a `key` announcement signed by `agent.key_threshold` root keys carries a public key
//! file (which becomes trusted), a revocation line (which revokes that kid), a key statement or a
//! root chain; roles and those rules are p2pu's trust layer's. The last trusted key is never
//! revoked, so a node cannot lock itself out of further updates.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub const SECRET_PREFIX: &str = "p2pu-ed25519-secret:";
pub const PUBLIC_PREFIX: &str = "p2pu-ed25519:";
pub const REVOKE_PREFIX: &str = "p2pu-revoke:";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{origin}: {reason}")]
    Malformed { origin: String, reason: String },
    #[error("`{text}` is not a key id (want 16 hex characters)")]
    BadKeyId { text: String },
    #[error("key {kid} is revoked")]
    Revoked { kid: KeyId },
    #[error("refusing to revoke {kid}: it is the last trusted key")]
    LastKey { kid: KeyId },
    #[error("announcement {name} is of kind {kind}, not key")]
    NotKeyKind { name: String, kind: String },
    #[error("key payload of {name}: SHA-256 is {got}, the announcement says {want}")]
    PayloadMismatch {
        name: String,
        want: String,
        got: String,
    },
}

type Result<T, E = KeyError> = std::result::Result<T, E>;

/// A key text that is not what it claims; `origin` (a path or "key announcement x") names it.
pub fn malformed(origin: &str, reason: impl Into<String>) -> KeyError {
    KeyError::Malformed {
        origin: origin.to_string(),
        reason: reason.into(),
    }
}

/// First 8 bytes of SHA-256 of an Ed25519 public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    pub fn of(key: &VerifyingKey) -> KeyId {
        let digest = Sha256::digest(key.as_bytes());
        let mut kid = [0u8; 8];
        kid.copy_from_slice(&digest[..8]);
        KeyId(kid)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl FromStr for KeyId {
    type Err = KeyError;
    fn from_str(text: &str) -> Result<KeyId, KeyError> {
        let mut kid = [0u8; 8];
        hex::decode_to_slice(text, &mut kid).map_err(|_| KeyError::BadKeyId {
            text: text.to_string(),
        })?;
        Ok(KeyId(kid))
    }
}

/// A public key with its free-text comment, as in a `.pub` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub key: VerifyingKey,
    pub comment: String,
}

impl PublicKey {
    pub fn kid(&self) -> KeyId {
        KeyId::of(&self.key)
    }

    /// Parses a `.pub` file; `origin` (a path or "key announcement x") names it in errors.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<PublicKey, KeyError> {
        let line = one_line(bytes, origin)?;
        let rest = line
            .strip_prefix(PUBLIC_PREFIX)
            .ok_or_else(|| malformed(origin, format!("does not start with `{PUBLIC_PREFIX}`")))?;
        let (encoded, comment) = rest.split_once(' ').unwrap_or((rest, ""));
        let key = VerifyingKey::from_bytes(&decode_32(encoded, origin)?)
            .map_err(|_| malformed(origin, "not an Ed25519 public key"))?;
        // Weak (small-order) keys verify forged signatures under lax rules; never trust one.
        if key.is_weak() {
            return Err(malformed(origin, "weak Ed25519 public key"));
        }
        Ok(PublicKey {
            key,
            comment: comment.to_string(),
        })
    }

    pub fn to_text(&self) -> String {
        let key = key_text(self.key.as_bytes());
        if self.comment.is_empty() {
            format!("{key}\n")
        } else {
            format!("{key} {}\n", self.comment)
        }
    }
}

/// A public key as a `.pub` file writes it, without comment or newline:
/// `p2pu-ed25519:<base64>`.
pub fn key_text(key: &[u8; 32]) -> String {
    format!("{PUBLIC_PREFIX}{}", STANDARD.encode(key))
}

/// Checks a comment or reason can sit on the key file's single line.
pub fn validate_comment(comment: &str) -> Result<(), KeyError> {
    if comment.chars().any(char::is_control) {
        return Err(malformed("comment", "contains a control character"));
    }
    Ok(())
}

/// Input as one UTF-8 line without control characters; one trailing newline allowed.
fn one_line<'a>(bytes: &'a [u8], origin: &str) -> Result<&'a str, KeyError> {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let line = std::str::from_utf8(bytes).map_err(|_| malformed(origin, "not UTF-8"))?;
    if line.chars().any(char::is_control) {
        return Err(malformed(
            origin,
            "more than one line or a control character",
        ));
    }
    Ok(line)
}

fn decode_32(encoded: &str, origin: &str) -> Result<[u8; 32], KeyError> {
    let bytes = STANDARD
        .decode(encoded)
        .map_err(|e| malformed(origin, format!("bad base64: {e}")))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| malformed(origin, format!("key is {} bytes, want 32", bytes.len())))
}

pub fn generate() -> SigningKey {
    SigningKey::generate(&mut rand::rngs::OsRng)
}

pub fn secret_to_text(key: &SigningKey) -> String {
    format!("{SECRET_PREFIX}{}\n", STANDARD.encode(key.to_bytes()))
}

pub fn parse_secret(bytes: &[u8], origin: &str) -> Result<SigningKey, KeyError> {
    let line = one_line(bytes, origin)?;
    let encoded = line
        .strip_prefix(SECRET_PREFIX)
        .ok_or_else(|| malformed(origin, format!("does not start with `{SECRET_PREFIX}`")))?;
    Ok(SigningKey::from_bytes(&decode_32(encoded, origin)?))
}

/// A `key` announcement's payload: a key to trust or a kid to revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPayload {
    Trust(PublicKey),
    Revoke { kid: KeyId, reason: String },
}

impl KeyPayload {
    pub fn parse(bytes: &[u8], origin: &str) -> Result<KeyPayload, KeyError> {
        if !bytes.starts_with(REVOKE_PREFIX.as_bytes()) {
            return PublicKey::parse(bytes, origin).map(KeyPayload::Trust);
        }
        let line = one_line(bytes, origin)?;
        let rest = line.get(REVOKE_PREFIX.len()..).unwrap_or_default();
        let (kid, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        Ok(KeyPayload::Revoke {
            kid: kid.parse()?,
            reason: reason.to_string(),
        })
    }
}

pub fn revocation_text(kid: KeyId, reason: &str) -> String {
    if reason.is_empty() {
        format!("{REVOKE_PREFIX}{kid}\n")
    } else {
        format!("{REVOKE_PREFIX}{kid} {reason}\n")
    }
}

#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub key: PublicKey,
    /// The file it was read from (None for an in-memory set).
    pub path: Option<PathBuf>,
}

/// The keys a node accepts announcements from, by kid, minus the revoked ones.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: BTreeMap<KeyId, TrustedKey>,
    revoked: BTreeSet<KeyId>,
}

/// What applying a key change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChange {
    Trusted(KeyId),
    AlreadyTrusted(KeyId),
    Revoked(KeyId),
    AlreadyRevoked(KeyId),
    /// Trusted within a key statement (see [`crate::trust`]).
    Delegated(KeyId),
    /// The root documents up to this version are kept; it decides the root keys.
    Root(u64),
    /// The chain offered held no version newer than this one, the node's.
    RootUnchanged(u64),
}

/// In words, for an apply's summary: `trusted key 0123456789abcdef`.
impl fmt::Display for KeyChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyChange::Trusted(kid) => write!(f, "trusted key {kid}"),
            KeyChange::AlreadyTrusted(kid) => write!(f, "key {kid} already trusted"),
            KeyChange::Revoked(kid) => write!(f, "revoked key {kid}"),
            KeyChange::AlreadyRevoked(kid) => write!(f, "key {kid} already revoked"),
            KeyChange::Delegated(kid) => write!(f, "trusted key {kid} by delegation"),
            KeyChange::Root(version) => write!(f, "root document version {version} kept"),
            KeyChange::RootUnchanged(version) => {
                write!(f, "no root document newer than version {version}")
            }
        }
    }
}

impl TrustedKeys {
    /// An in-memory set (for tests and one-off checks).
    pub fn from_keys(keys: impl IntoIterator<Item = VerifyingKey>) -> TrustedKeys {
        let keys = keys
            .into_iter()
            .map(|key| {
                let key = PublicKey {
                    key,
                    comment: String::new(),
                };
                (key.kid(), TrustedKey { key, path: None })
            })
            .collect();
        TrustedKeys {
            keys,
            revoked: BTreeSet::new(),
        }
    }

    /// The set a trusted-keys directory holds: its `*.pub` keys (with the file each came from)
    /// minus the kids of its `*.revoked` files, which stay revoked.
    pub fn from_files(
        keys: impl IntoIterator<Item = (PublicKey, PathBuf)>,
        revoked: BTreeSet<KeyId>,
    ) -> TrustedKeys {
        let keys = keys
            .into_iter()
            .filter(|(key, _)| !revoked.contains(&key.kid()))
            .map(|(key, path)| {
                let path = Some(path);
                (key.kid(), TrustedKey { key, path })
            })
            .collect();
        TrustedKeys { keys, revoked }
    }

    /// Revokes `kid` in this in-memory set: it leaves the keys and stays out.
    pub fn mark_revoked(&mut self, kid: KeyId) {
        self.keys.remove(&kid);
        self.revoked.insert(kid);
    }

    /// What trusting `key` would do to this set: `Ok(None)` when it is new and valid (the caller
    /// writes it), `AlreadyTrusted` when it is in, an error when its kid is revoked.
    pub fn check_add(&self, key: &PublicKey) -> Result<Option<KeyChange>> {
        let kid = key.kid();
        if self.is_revoked(&kid) {
            return Err(KeyError::Revoked { kid });
        }
        if self.get(&kid).is_some() {
            return Ok(Some(KeyChange::AlreadyTrusted(kid)));
        }
        validate_comment(&key.comment)?;
        Ok(None)
    }

    /// What revoking `kid` would do: `Ok(None)` when the caller may write the revocation,
    /// `AlreadyRevoked`, or an error for the last trusted key (so a node cannot lock itself out
    /// of further updates). A kid not (yet) trusted may be revoked, so a leaked key can be
    /// blocked before it arrives.
    pub fn check_revoke(&self, kid: KeyId, reason: &str) -> Result<Option<KeyChange>> {
        if self.is_revoked(&kid) {
            return Ok(Some(KeyChange::AlreadyRevoked(kid)));
        }
        if self.get(&kid).is_some() && self.len() == 1 {
            return Err(KeyError::LastKey { kid });
        }
        validate_comment(reason)?;
        Ok(None)
    }

    /// Trusts `key` in this in-memory set (a root document's key); a revoked kid stays out.
    pub fn insert(&mut self, key: PublicKey) {
        let kid = key.kid();
        if !self.revoked.contains(&kid) {
            self.keys.insert(kid, TrustedKey { key, path: None });
        }
    }

    /// Keeps only the keys `keep` says yes to, in this in-memory set.
    pub fn retain(&mut self, mut keep: impl FnMut(&KeyId) -> bool) {
        self.keys.retain(|kid, _| keep(kid));
    }

    pub fn get(&self, kid: &KeyId) -> Option<&TrustedKey> {
        self.keys.get(kid)
    }

    pub fn is_revoked(&self, kid: &KeyId) -> bool {
        self.revoked.contains(kid)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&KeyId, &TrustedKey)> {
        self.keys.iter()
    }

    pub fn revoked(&self) -> impl Iterator<Item = &KeyId> {
        self.revoked.iter()
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

    #[test]
    fn kid_is_sha256_prefix_in_hex() {
        let k = key(1).verifying_key();
        let digest = Sha256::digest(k.as_bytes());
        let kid = KeyId::of(&k);
        assert_eq!(kid.to_string(), hex::encode(&digest[..8]));
        assert_eq!(kid.to_string().parse::<KeyId>().unwrap(), kid);
        for bad in ["", "abc", "0123456789abcdeg", "0123456789abcdef00"] {
            assert!(matches!(
                bad.parse::<KeyId>(),
                Err(KeyError::BadKeyId { .. })
            ));
        }
    }

    #[test]
    fn public_key_text_round_trips() {
        for comment in ["", "ops@example laptop"] {
            let p = public(3, comment);
            let text = p.to_text();
            assert!(text.starts_with("p2pu-ed25519:") && text.ends_with('\n'));
            assert_eq!(PublicKey::parse(text.as_bytes(), "t").unwrap(), p);
            let no_newline = text.trim_end().as_bytes();
            assert_eq!(PublicKey::parse(no_newline, "t").unwrap(), p);
        }
    }

    #[test]
    fn secret_key_text_round_trips() {
        let k = key(4);
        let text = secret_to_text(&k);
        assert!(text.starts_with("p2pu-ed25519-secret:"));
        assert_eq!(
            parse_secret(text.as_bytes(), "t").unwrap().to_bytes(),
            k.to_bytes()
        );
    }

    #[test]
    fn malformed_key_files_name_the_problem() {
        let good = public(3, "").to_text();
        let short = format!("p2pu-ed25519:{}", STANDARD.encode([1u8; 31]));
        // The identity point is a small-order (weak) key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = format!("p2pu-ed25519:{}", STANDARD.encode(identity));
        let cases = [
            ("ssh-ed25519 AAAA".to_string(), "does not start with"),
            ("p2pu-ed25519:!!!".to_string(), "bad base64"),
            (short, "31 bytes, want 32"),
            (weak, "weak"),
            (format!("{good}{good}"), "more than one line"),
        ];
        for (text, want) in cases {
            let err = PublicKey::parse(text.as_bytes(), "/k/x.pub").unwrap_err();
            let shown = err.to_string();
            assert!(
                shown.starts_with("/k/x.pub: ") && shown.contains(want),
                "{shown}"
            );
        }
        assert!(PublicKey::parse(b"\xff", "t").is_err());
        assert!(parse_secret(good.as_bytes(), "t").is_err());
    }

    /// The rules p2pu's trusted-keys directory applies before writing: a revoked kid is
    /// refused, the last trusted key stays, a kid never seen may be revoked in advance.
    #[test]
    fn add_and_revoke_rules_in_memory() {
        let (a, b, c) = (public(1, "a"), public(2, "b"), public(3, ""));
        let mut set = TrustedKeys::from_keys([a.key]);
        assert_eq!(set.check_add(&b).unwrap(), None);
        assert_eq!(
            set.check_add(&a).unwrap(),
            Some(KeyChange::AlreadyTrusted(a.kid()))
        );
        assert!(matches!(
            set.check_revoke(a.kid(), ""),
            Err(KeyError::LastKey { .. })
        ));
        set.insert(b.clone());
        assert_eq!(set.check_revoke(a.kid(), "lost").unwrap(), None);
        set.mark_revoked(a.kid());
        assert!(set.get(&a.kid()).is_none() && set.is_revoked(&a.kid()));
        assert_eq!(
            set.check_revoke(a.kid(), "").unwrap(),
            Some(KeyChange::AlreadyRevoked(a.kid()))
        );
        assert!(matches!(set.check_add(&a), Err(KeyError::Revoked { .. })));
        set.insert(a.clone());
        assert!(set.get(&a.kid()).is_none(), "a revoked kid stays out");
        assert_eq!(set.check_revoke(c.kid(), "").unwrap(), None);
        assert!(matches!(
            set.check_add(&public(4, "two\nlines")),
            Err(KeyError::Malformed { .. })
        ));
    }

    #[test]
    fn key_payload_parses_both_forms() {
        let kid = public(1, "").kid();
        assert_eq!(
            KeyPayload::parse(revocation_text(kid, "why not").as_bytes(), "t").unwrap(),
            KeyPayload::Revoke {
                kid,
                reason: "why not".to_string()
            }
        );
        assert!(KeyPayload::parse(b"p2pu-revoke:xyz", "t").is_err());
        assert!(matches!(
            KeyPayload::parse(public(1, "").to_text().as_bytes(), "t").unwrap(),
            KeyPayload::Trust(_)
        ));
    }
}
