//! Roles over the trusted-keys directory (TUF's root and delegated targets roles): which keys
//! are trust anchors (root keys), which are trusted only within a key statement, and the
//! rules key updates are held to when applied.
//!
//! The directory holds, besides `keys`' `*.pub` and `*.revoked` files, one `<kid>.delegation`
//! per delegated key (its statement's text) and the root chain as `root.<N>` files (each
//! document's text). Without a root document every trusted key without a statement is a root
//! key, as before roles existed; with one, the newest document's keys are the root keys and a
//! `*.pub` key is trusted only with a statement.
//!
//! Every file here was verified before it was written ([`apply_key_update`]): loading parses
//! it, and checks nothing a signature says.

use crate::formats::announcement::{Announcement, FleetId, Kind};
use crate::formats::delegation::{self, Delegation};
use crate::formats::document::SignedDocument;
use crate::formats::root::{RootDoc, ROOT_NAME};
use crate::fsutil::write_atomic;
use crate::keys::{KeyChange, KeyId, KeyPayload, PublicKey, TrustedKeys, TrustedKeysDir};
use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", path.display())]
    StatementFile {
        path: PathBuf,
        #[source]
        source: crate::formats::delegation::DelegationError,
    },
    #[error("{}", path.display())]
    RootFile {
        path: PathBuf,
        #[source]
        source: crate::formats::root::RootError,
    },
    #[error(transparent)]
    Keys(#[from] crate::keys::KeyError),
    #[error(transparent)]
    KeyFiles(#[from] crate::keys::KeyFileError),
    #[error("{}: names key {inside}, its file name says {named}", path.display())]
    MisnamedStatement {
        path: PathBuf,
        inside: KeyId,
        named: String,
    },
    #[error("key update {name}: signed by {got} of the {want} root keys agent.key_threshold requires ({kids})")]
    BelowKeyThreshold {
        name: String,
        got: usize,
        want: usize,
        kids: String,
    },
    #[error("key statement for {kid}: {reason}")]
    Statement { kid: KeyId, reason: String },
    #[error("key update {name}: {reason}")]
    Refused { name: String, reason: String },
}

impl crate::error::LayerError for TrustError {}

/// What key updates are held to, from the config: `agent.key_threshold` root keys sign every
/// one, and statements and root documents are for this node's fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPolicy {
    pub key_threshold: usize,
    pub fleet: FleetId,
}

/// The trusted keys with their roles.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Every key an announcement may count: root keys and delegated ones, minus revoked ones.
    pub keys: TrustedKeys,
    delegations: BTreeMap<KeyId, Delegation>,
    root: Option<RootDoc>,
}

/// Which of an update's valid signers count toward its threshold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Count {
    pub counted: Vec<KeyId>,
    /// Why each delegated signer that did not count was refused (its rule, naming the key).
    pub refused: Vec<String>,
}

impl Trust {
    /// Reads the directory; a missing one is an empty set.
    pub fn load(dir: &Path) -> Result<Trust, TrustError> {
        let mut keys = TrustedKeys::load(dir)?;
        let mut delegations = BTreeMap::new();
        let mut root: Option<RootDoc> = None;
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Trust::default());
            }
            Err(source) => {
                let path = dir.to_path_buf();
                return Err(TrustError::Io {
                    action: "reading directory",
                    path,
                    source,
                });
            }
        };
        for entry in entries {
            let path = entry
                .map_err(|source| TrustError::Io {
                    action: "reading directory",
                    path: dir.to_path_buf(),
                    source,
                })?
                .path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            let read = || {
                std::fs::read(&path).map_err(|source| TrustError::Io {
                    action: "reading",
                    path: path.clone(),
                    source,
                })
            };
            if let Some(stem) = name.strip_suffix(".delegation") {
                let d = Delegation::decode(&read()?).map_err(|source| {
                    let path = path.clone();
                    TrustError::StatementFile { path, source }
                })?;
                if d.kid().to_string() != stem {
                    let (inside, named) = (d.kid(), stem.to_string());
                    return Err(TrustError::MisnamedStatement {
                        path,
                        inside,
                        named,
                    });
                }
                delegations.insert(d.kid(), d);
            } else if let Some(n) = name.strip_prefix("root.") {
                if n.parse::<u64>().is_err() {
                    continue;
                }
                let doc = RootDoc::decode(&read()?).map_err(|source| {
                    let path = path.clone();
                    TrustError::RootFile { path, source }
                })?;
                if root.as_ref().is_none_or(|r| r.version() < doc.version()) {
                    root = Some(doc);
                }
            }
        }
        if let Some(root) = &root {
            // The root document decides the anchors: a plain `.pub` key outside it (an old
            // root key, say) no longer counts.
            keys.retain(|kid| root.key(kid).is_some() || delegations.contains_key(kid));
            for key in root.keys() {
                keys.insert(PublicKey {
                    key: *key,
                    comment: format!("root key (version {})", root.version()),
                });
            }
        }
        Ok(Trust {
            keys,
            delegations,
            root,
        })
    }

    /// Trust in exactly `keys`, all root keys (tests and one-off checks).
    pub fn from_keys(keys: impl IntoIterator<Item = VerifyingKey>) -> Trust {
        Trust {
            keys: TrustedKeys::from_keys(keys),
            ..Trust::default()
        }
    }

    /// The newest root document, if the node has one.
    pub fn root(&self) -> Option<&RootDoc> {
        self.root.as_ref()
    }

    pub fn delegation(&self, kid: &KeyId) -> Option<&Delegation> {
        self.delegations.get(kid)
    }

    /// Whether `kid` is a trusted root key: in the root document, or (without one) trusted
    /// and without a statement.
    pub fn is_root(&self, kid: &KeyId) -> bool {
        if self.keys.get(kid).is_none() {
            return false;
        }
        match &self.root {
            Some(root) => root.key(kid).is_some(),
            None => !self.delegations.contains_key(kid),
        }
    }

    /// `kid`'s key when it is a trusted root key.
    pub(crate) fn root_key(&self, kid: &KeyId) -> Option<VerifyingKey> {
        self.is_root(kid)
            .then(|| self.keys.get(kid).map(|k| k.key.key))
            .flatten()
    }

    /// The anchors the next root document must be signed by: the current version, its keys
    /// and threshold; before any root document, version 0, every root key, `key_threshold`.
    pub fn anchors(&self, key_threshold: usize) -> (u64, Vec<VerifyingKey>, usize) {
        match &self.root {
            Some(root) => (root.version(), root.keys().to_vec(), root.threshold()),
            None => {
                let keys = self
                    .keys
                    .iter()
                    .filter(|(kid, _)| self.is_root(kid))
                    .map(|(_, k)| k.key.key)
                    .collect();
                (0, keys, key_threshold)
            }
        }
    }

    /// Which of `valid` (signers whose signature checked out) count for an update of `name`
    /// and `kind` for `target` (`None`: the whole fleet): a root key always; a delegated key
    /// only within its statement, unexpired and for `fleet`.
    pub fn count(
        &self,
        valid: &[KeyId],
        name: &str,
        kind: Kind,
        target: Option<&str>,
        fleet: FleetId,
        now: u64,
    ) -> Count {
        let mut count = Count::default();
        for kid in valid {
            if self.is_root(kid) {
                count.counted.push(*kid);
                continue;
            }
            let Some(d) = self.delegations.get(kid) else {
                continue;
            };
            let verdict = if d.fleet() != fleet {
                Err(format!("key {kid}'s statement is for fleet {}", d.fleet()))
            } else if d.expired(now) {
                Err(format!(
                    "key {kid}'s statement expired at {} (unix seconds)",
                    d.expires()
                ))
            } else {
                d.permits(name, kind, target)
            };
            match verdict {
                Ok(()) => count.counted.push(*kid),
                Err(why) => count.refused.push(why),
            }
        }
        count
    }

    /// The valid root signers of a key update; an error unless there are `key_threshold`.
    fn key_update_signers(
        &self,
        announcement: &Announcement,
        key_threshold: usize,
    ) -> crate::error::Result<Vec<KeyId>> {
        let signers = announcement.verify(&self.keys, announcement.attached_plan())?;
        let roots: Vec<KeyId> = signers
            .valid
            .into_iter()
            .filter(|kid| self.is_root(kid))
            .collect();
        if roots.len() < key_threshold {
            let kids: Vec<String> = roots.iter().map(ToString::to_string).collect();
            return Err(TrustError::BelowKeyThreshold {
                name: announcement.name().to_string(),
                got: roots.len(),
                want: key_threshold,
                kids: kids.join(", "),
            }
            .into());
        }
        Ok(roots)
    }
}

/// A `key` update's payload: a key to trust or revoke ([`KeyPayload`]), a key statement
/// (`p2pu-delegation:`), or a root chain (`p2pu-root1:` lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Key(KeyPayload),
    Delegation(Delegation),
    Root(Vec<RootDoc>),
}

impl Payload {
    pub fn parse(bytes: &[u8], origin: &str) -> crate::error::Result<Payload> {
        if bytes.starts_with(delegation::PREFIX.as_bytes()) {
            return Ok(Payload::Delegation(Delegation::decode(bytes)?));
        }
        if bytes.starts_with(crate::formats::root::PREFIX.as_bytes()) {
            return Ok(Payload::Root(RootDoc::decode_chain(bytes)?));
        }
        Ok(Payload::Key(KeyPayload::parse(bytes, origin)?))
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn write(path: &Path, text: &str) -> crate::error::Result<()> {
    Ok(write_atomic(path, text.as_bytes(), 0o644)?)
}

/// Applies a received `key` update, checked again against the keys trusted right now (one
/// revoked since the intake no longer counts): `announcement` must be of kind `key`, match
/// `payload`'s SHA-256 and carry `key_threshold` root signatures; a root chain must follow the
/// node's root version by version, and its announcement is counted against the new root keys.
pub fn apply_key_update(
    dir: &Path,
    announcement: &Announcement,
    payload: &[u8],
    policy: &KeyPolicy,
) -> crate::error::Result<KeyChange> {
    let name = announcement.name().to_string();
    if announcement.kind() != Kind::Key {
        let kind = announcement.kind().to_string();
        return Err(crate::keys::KeyError::NotKeyKind { name, kind }.into());
    }
    let got: [u8; 32] = Sha256::digest(payload).into();
    if &got != announcement.sha256() {
        return Err(crate::keys::KeyError::PayloadMismatch {
            name,
            want: hex::encode(announcement.sha256()),
            got: hex::encode(got),
        }
        .into());
    }
    let refuse = |reason: String| -> crate::error::Error {
        TrustError::Refused {
            name: name.clone(),
            reason,
        }
        .into()
    };
    let trust = Trust::load(dir)?;
    let payload = Payload::parse(payload, &format!("key announcement {name}"))?;
    let is_root_chain = matches!(payload, Payload::Root(_));
    if is_root_chain != (name == ROOT_NAME) {
        return Err(refuse(format!(
            "a root chain is announced as {ROOT_NAME:?}, and that name carries nothing else"
        )));
    }
    match payload {
        Payload::Root(chain) => apply_root_chain(dir, &trust, announcement, chain, policy),
        Payload::Key(KeyPayload::Trust(key)) => {
            trust.key_update_signers(announcement, policy.key_threshold)?;
            if let Some(root) = trust.root() {
                return Err(refuse(format!(
                    "under root version {} a key is trusted by a key statement (p2pu key \
                     delegate) or a root rotation, not as a plain key",
                    root.version()
                )));
            }
            Ok(TrustedKeys::add(dir, &key)?)
        }
        Payload::Key(KeyPayload::Revoke { kid, reason }) => {
            trust.key_update_signers(announcement, policy.key_threshold)?;
            Ok(TrustedKeys::revoke(dir, kid, &reason)?)
        }
        Payload::Delegation(d) => {
            trust.key_update_signers(announcement, policy.key_threshold)?;
            let kid = d.kid();
            let statement = |reason: String| -> crate::error::Error {
                TrustError::Statement { kid, reason }.into()
            };
            if d.fleet() != policy.fleet {
                return Err(statement(format!(
                    "it is for fleet {}, this node is in fleet {}",
                    d.fleet(),
                    policy.fleet
                )));
            }
            if d.expired(now_secs()) {
                return Err(statement(format!("expired at {}", d.expires())));
            }
            if trust.root().is_some_and(|r| r.key(&kid).is_some()) {
                return Err(statement(
                    "it is a root key; a root key is not restricted".into(),
                ));
            }
            let signers = d.signers(|k| trust.root_key(k));
            if signers.len() < policy.key_threshold {
                return Err(statement(format!(
                    "signed by {} of the {} root keys agent.key_threshold requires",
                    signers.len(),
                    policy.key_threshold
                )));
            }
            if trust.keys.is_revoked(&kid) {
                return Err(crate::keys::KeyError::Revoked { kid }.into());
            }
            // The statement first: a crash between the two writes must not leave the key
            // trusted without its limits.
            write(&dir.join(format!("{kid}.delegation")), &d.to_text())?;
            let key = PublicKey {
                key: *d.key(),
                comment: "delegated".into(),
            };
            TrustedKeys::add(dir, &key)?;
            Ok(KeyChange::Delegated(kid))
        }
    }
}

/// Walks `chain` from the node's root version: each newer document must follow the one
/// before it; the newest must not have expired, and the announcement must carry
/// `key_threshold` signatures of the newest keys. Only then are the new `root.<N>` files
/// written, oldest first (a crash in between leaves a shorter valid chain).
fn apply_root_chain(
    dir: &Path,
    trust: &Trust,
    announcement: &Announcement,
    chain: Vec<RootDoc>,
    policy: &KeyPolicy,
) -> crate::error::Result<KeyChange> {
    let (mut version, mut keys, mut threshold) = trust.anchors(policy.key_threshold);
    let mut newer = Vec::new();
    for doc in chain {
        if doc.version() <= version {
            continue;
        }
        doc.follows(version, &keys, threshold, policy.fleet)?;
        (version, keys, threshold) = (doc.version(), doc.keys().to_vec(), doc.threshold());
        newer.push(doc);
    }
    let Some(newest) = newer.last() else {
        return Ok(KeyChange::RootUnchanged(version));
    };
    if newest.expires() < now_secs() {
        return Err(TrustError::Refused {
            name: announcement.name().to_string(),
            reason: format!(
                "root version {} expired at {} (unix seconds)",
                newest.version(),
                newest.expires()
            ),
        }
        .into());
    }
    let mut after = trust.clone();
    after.keys.retain(|kid| trust.delegations.contains_key(kid));
    for key in newest.keys() {
        after.keys.insert(PublicKey {
            key: *key,
            comment: String::new(),
        });
    }
    after.root = Some(newest.clone());
    after.key_update_signers(announcement, policy.key_threshold)?;
    for doc in &newer {
        write(&dir.join(format!("root.{}", doc.version())), &doc.to_text())?;
    }
    Ok(KeyChange::Root(version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::announcement::{Binding, Draft};
    use crate::formats::delegation::Grant;
    use crate::keys::revocation_text;
    use ed25519_dalek::SigningKey;

    const FLEET: FleetId = FleetId([7; 8]);
    const TWO: KeyPolicy = KeyPolicy {
        key_threshold: 2,
        fleet: FLEET,
    };

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn kid(n: u8) -> KeyId {
        KeyId::of(&key(n).verifying_key())
    }

    /// A trusted-keys dir with keys `ns` trusted.
    fn dir_with(ns: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for n in ns {
            let public = PublicKey {
                key: key(*n).verifying_key(),
                comment: format!("k{n}"),
            };
            TrustedKeys::add(dir.path(), &public).unwrap();
        }
        dir
    }

    /// A v2 `key` announcement of `payload` named `name`, signed by `signers`.
    fn key_update(name: &str, payload: &[u8], signers: &[u8]) -> Announcement {
        let draft = Draft {
            seq: 1,
            name: name.into(),
            kind: Kind::Key,
            info_hash: [0; 20],
            len: payload.len() as u64,
            sha256: Sha256::digest(payload).into(),
        };
        let binding = Binding {
            expires: 4_000_000_000,
            fleet: FLEET,
        };
        let mut a = Announcement::sign_v2(draft, binding, &key(signers[0])).unwrap();
        for n in &signers[1..] {
            a.add_signature(&key(*n)).unwrap();
        }
        a
    }

    fn apply(
        dir: &Path,
        name: &str,
        payload: &str,
        signers: &[u8],
    ) -> crate::error::Result<KeyChange> {
        let a = key_update(name, payload.as_bytes(), signers);
        apply_key_update(dir, &a, payload.as_bytes(), &TWO)
    }

    fn cameras(signers: &[u8]) -> String {
        let mut d = Delegation::new(Grant {
            key: key(9).verifying_key(),
            names: vec!["cam-*".into()],
            kinds: vec![Kind::Manifest],
            targets: vec![],
            fleet: FLEET,
            expires: 4_000_000_000,
        })
        .unwrap();
        for n in signers {
            d.sign(&key(*n)).unwrap();
        }
        d.to_text()
    }

    fn shown(result: crate::error::Result<KeyChange>) -> String {
        match result {
            Err(e) => crate::error::chain(&e),
            Ok(change) => panic!("want an error, got {change:?}"),
        }
    }

    /// TUF's key compromise below the threshold: with key_threshold 2, one key alone can
    /// neither add nor revoke a key, nor delegate; two can.
    #[test]
    fn one_key_alone_cannot_change_keys_under_key_threshold_two() {
        let dir = dir_with(&[1, 2, 3]);
        let new = PublicKey {
            key: key(4).verifying_key(),
            comment: String::new(),
        }
        .to_text();
        let revoke = revocation_text(kid(2), "");
        for (payload, name) in [
            (&new, "k4.pub"),
            (&revoke, "k2.revoke"),
            (&cameras(&[1, 2]), "cam"),
        ] {
            let why = shown(apply(dir.path(), name, payload, &[1]));
            assert!(why.contains("signed by 1 of the 2 root keys"), "{why}");
        }
        let trust = Trust::load(dir.path()).unwrap();
        assert_eq!(trust.keys.len(), 3);
        assert_eq!(
            apply(dir.path(), "k4.pub", &new, &[1, 3]).unwrap(),
            KeyChange::Trusted(kid(4))
        );
        assert_eq!(
            apply(dir.path(), "k2.revoke", &revoke, &[1, 3]).unwrap(),
            KeyChange::Revoked(kid(2))
        );
    }

    /// The threshold is counted again when a key update is applied, against the keys trusted
    /// then: a signer revoked between the intake and the apply no longer counts.
    #[test]
    fn a_signer_revoked_after_the_intake_does_not_count_when_applied() {
        let dir = dir_with(&[1, 2, 3]);
        let new = PublicKey {
            key: key(4).verifying_key(),
            comment: String::new(),
        }
        .to_text();
        // Accepted at the intake with keys 1 and 2; key 2 is revoked before it is applied.
        let update = key_update("k4.pub", new.as_bytes(), &[1, 2]);
        TrustedKeys::revoke(dir.path(), kid(2), "lost").unwrap();
        let why = shown(apply_key_update(dir.path(), &update, new.as_bytes(), &TWO));
        assert!(why.contains("signed by 1 of the 2 root keys"), "{why}");
        assert!(Trust::load(dir.path()).unwrap().keys.get(&kid(4)).is_none());
    }

    #[test]
    fn a_delegated_key_counts_only_within_its_statement() {
        let dir = dir_with(&[1, 2]);
        // The statement itself needs two root signatures, whatever signs its announcement.
        let why = shown(apply(dir.path(), "cam", &cameras(&[1]), &[1, 2]));
        assert!(why.contains("signed by 1 of the 2 root keys"), "{why}");
        assert_eq!(
            apply(dir.path(), "cam", &cameras(&[1, 2]), &[1, 2]).unwrap(),
            KeyChange::Delegated(kid(9))
        );
        let trust = Trust::load(dir.path()).unwrap();
        assert!(trust.is_root(&kid(1)) && !trust.is_root(&kid(9)));
        let count = |name: &str, kind: Kind| trust.count(&[kid(9)], name, kind, None, FLEET, 1);
        assert_eq!(count("cam-1.pp", Kind::Manifest).counted, [kid(9)]);
        let outside = count("base.pp", Kind::Manifest);
        assert!(outside.counted.is_empty());
        assert!(
            outside.refused[0].contains("names cam-* only"),
            "{outside:?}"
        );
        assert!(count("cam-1", Kind::Key).counted.is_empty());
        // Another fleet's or an expired statement does not count either.
        assert!(trust
            .count(&[kid(9)], "cam-1", Kind::Manifest, None, FleetId([1; 8]), 1)
            .counted
            .is_empty());
        assert!(trust
            .count(
                &[kid(9)],
                "cam-1",
                Kind::Manifest,
                None,
                FLEET,
                4_000_000_001
            )
            .counted
            .is_empty());
        // A delegated key never signs key updates.
        let revoke = revocation_text(kid(2), "");
        let why = shown(apply(dir.path(), "k2.revoke", &revoke, &[1, 9]));
        assert!(why.contains("signed by 1 of the 2 root keys"), "{why}");
    }

    fn root_doc(version: u64, keys: &[u8], threshold: u64, signers: &[u8]) -> RootDoc {
        let keys = keys.iter().map(|n| key(*n).verifying_key()).collect();
        let mut d = RootDoc::new(version, keys, threshold, FLEET, 4_000_000_000).unwrap();
        for n in signers {
            d.sign(&key(*n)).unwrap();
        }
        d
    }

    #[test]
    fn a_root_chain_is_applied_version_by_version() {
        let dir = dir_with(&[1, 2]);
        let v1 = root_doc(1, &[1, 2, 3], 2, &[1, 2]);
        let v2 = root_doc(2, &[4, 5], 2, &[1, 3, 4, 5]);
        let chain = format!("{}{}", v1.to_text(), v2.to_text());
        // The chain goes under its own name only, and nothing else goes under that name.
        let why = shown(apply(dir.path(), "other", &chain, &[4, 5]));
        assert!(why.contains("p2pu-root"), "{why}");
        // Its announcement counts against the new root keys: the old ones are not enough.
        let why = shown(apply(dir.path(), ROOT_NAME, &chain, &[1, 2]));
        assert!(why.contains("signed by unknown key"), "{why}");
        let why = shown(apply(dir.path(), ROOT_NAME, &chain, &[1, 4]));
        assert!(why.contains("signed by 1 of the 2 root keys"), "{why}");
        // A version the old keys did not sign enough breaks the chain.
        let forged = root_doc(2, &[4, 5], 2, &[1, 4, 5]);
        let bad = format!("{}{}", v1.to_text(), forged.to_text());
        let why = shown(apply(dir.path(), ROOT_NAME, &bad, &[4, 5]));
        assert!(why.contains("1 of the 2 keys of version 1"), "{why}");
        assert!(Trust::load(dir.path()).unwrap().root().is_none());

        assert_eq!(
            apply(dir.path(), ROOT_NAME, &chain, &[4, 5]).unwrap(),
            KeyChange::Root(2)
        );
        let trust = Trust::load(dir.path()).unwrap();
        assert_eq!(trust.root().map(RootDoc::version), Some(2));
        assert!(trust.is_root(&kid(4)) && trust.is_root(&kid(5)));
        // The old root keys' files are still there and count for nothing.
        assert!(trust.keys.get(&kid(1)).is_none() && !trust.is_root(&kid(1)));
        assert_eq!(
            apply(dir.path(), ROOT_NAME, &chain, &[4, 5]).unwrap(),
            KeyChange::RootUnchanged(2)
        );
        // Under a root a plain key is not trusted by a key update.
        let plain = PublicKey {
            key: key(6).verifying_key(),
            comment: String::new(),
        }
        .to_text();
        let why = shown(apply(dir.path(), "k6.pub", &plain, &[4, 5]));
        assert!(why.contains("under root version 2"), "{why}");
        let why = shown(apply(dir.path(), "k6.pub", &plain, &[1, 2]));
        assert!(
            why.contains("unknown key") || why.contains("0 of the 2"),
            "{why}"
        );
    }

    #[test]
    fn payload_parses_each_form() {
        assert!(matches!(
            Payload::parse(cameras(&[1]).as_bytes(), "t").unwrap(),
            Payload::Delegation(_)
        ));
        let chain = root_doc(1, &[1], 1, &[1]).to_text();
        assert!(matches!(
            Payload::parse(chain.as_bytes(), "t").unwrap(),
            Payload::Root(_)
        ));
        let revoke = revocation_text(kid(1), "");
        assert!(matches!(
            Payload::parse(revoke.as_bytes(), "t").unwrap(),
            Payload::Key(_)
        ));
        assert!(Payload::parse(b"p2pu-delegation:!!", "t").is_err());
    }
}
