//! Key statements (delegations), TUF's delegated targets roles carried as a `key` payload: a
//! canonical bencoded dictionary that binds one public key to the names (globs), kinds and
//! target selectors it may sign for, to a fleet and an expiry, signed by root keys. The text
//! form is `p2pu-delegation:` + unpadded URL-safe base64, one line.
//!
//! Decoding checks structure only and refuses every non-canonical encoding (unknown or
//! duplicate keys, unsorted or repeated list entries), so one statement has one text; whether
//! its signers are root keys and enough of them is for the trust layer ([`crate::trust`]) to
//! decide. See docs/wire-delegation.md.

use super::announcement::{
    decode_sigs, encode_sigs, put_bytes, put_int, put_string, AnnouncementError, FleetId, Kind,
    MAX_EXPIRES, MAX_SIGS,
};
use super::document::{sigs_field, DocumentError, Envelope, SignedDocument};
use super::plan::glob_match;
use crate::keys::KeyId;
use ed25519_dalek::VerifyingKey;

/// What a statement's text starts with.
pub const PREFIX: &str = "p2pu-delegation:";
/// The most names, kinds or targets one statement lists.
pub const MAX_ENTRIES: usize = 16;
/// The longest name glob or target selector text.
pub const MAX_ENTRY_LEN: usize = 128;
/// The longest statement text: 3 full lists of long entries and [`MAX_SIGS`] signatures.
pub const MAX_TEXT_LEN: usize = 16 * 1024;

const ENVELOPE_: Envelope = Envelope {
    prefix: PREFIX,
    max_len: MAX_TEXT_LEN,
    keys: &[
        "exp", "fleet", "key", "kinds", "names", "sigs", "targets", "v",
    ],
};

#[derive(Debug, thiserror::Error)]
pub enum DelegationError {
    #[error("key statement {0}")]
    Document(#[from] DocumentError),
    #[error("key statement `{key}` is not {want}")]
    Wrong {
        key: &'static str,
        want: &'static str,
    },
    #[error("key statement `{key}` entry {entry:?}: {why}")]
    BadEntry {
        key: &'static str,
        entry: String,
        why: &'static str,
    },
    #[error("key statement kind `key` refused: a delegated key never signs key updates")]
    KeyKind,
    #[error("key statement `key` is not a usable Ed25519 public key (invalid or weak)")]
    BadKey,
    #[error("key statement signatures")]
    Sigs(#[source] AnnouncementError),
}

use DelegationError as E;

/// A structurally valid key statement; [`Delegation::signers`] says who signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegation {
    key: VerifyingKey,
    /// Sorted, distinct.
    names: Vec<String>,
    kinds: Vec<Kind>,
    /// Selector texts; empty: any target, the whole fleet included.
    targets: Vec<String>,
    fleet: FleetId,
    expires: u64,
    sigs: Vec<(KeyId, [u8; 64])>,
}

/// What a statement grants, before anyone signs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub key: VerifyingKey,
    pub names: Vec<String>,
    pub kinds: Vec<Kind>,
    pub targets: Vec<String>,
    pub fleet: FleetId,
    pub expires: u64,
}

fn check_entry(key: &'static str, entry: &str) -> Result<(), DelegationError> {
    let why = if entry.is_empty() {
        "empty"
    } else if entry.len() > MAX_ENTRY_LEN {
        "longer than 128 bytes"
    } else if entry.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(E::BadEntry {
        key,
        entry: entry.to_string(),
        why,
    })
}

fn check_list<T: Ord>(key: &'static str, list: &[T], may_be_empty: bool) -> Result<(), E> {
    if list.len() > MAX_ENTRIES || (list.is_empty() && !may_be_empty) {
        return Err(E::Wrong {
            key,
            want: "a list of 1 to 16 entries (targets: 0 to 16)",
        });
    }
    Ok(())
}

impl Delegation {
    /// An unsigned statement of `grant` (lists sorted, repeats dropped); refuses what
    /// [`Delegation::decode`] would.
    pub fn new(grant: Grant) -> Result<Delegation, DelegationError> {
        let mut d = Delegation {
            key: grant.key,
            names: grant.names,
            kinds: grant.kinds,
            targets: grant.targets,
            fleet: grant.fleet,
            expires: grant.expires,
            sigs: Vec::new(),
        };
        d.names.sort();
        d.names.dedup();
        d.kinds.sort_by_key(|k| k.as_str());
        d.kinds.dedup();
        d.targets.sort();
        d.targets.dedup();
        d.validate()?;
        Ok(d)
    }

    fn validate(&self) -> Result<(), DelegationError> {
        if self.key.is_weak() {
            return Err(E::BadKey);
        }
        check_list("names", &self.names, false)?;
        check_list("targets", &self.targets, true)?;
        if self.kinds.is_empty() || self.kinds.len() > MAX_ENTRIES {
            return Err(E::Wrong {
                key: "kinds",
                want: "a list of 1 to 16 entries",
            });
        }
        if self.kinds.contains(&Kind::Key) {
            return Err(E::KeyKind);
        }
        let kinds: Vec<&str> = self.kinds.iter().map(|k| k.as_str()).collect();
        let sorted = |list: &[&str]| list.windows(2).all(|w| w[0] < w[1]);
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        let targets: Vec<&str> = self.targets.iter().map(String::as_str).collect();
        if !(sorted(&kinds) && sorted(&names) && sorted(&targets)) {
            // One statement, one text.
            return Err(E::Wrong {
                key: "names/kinds/targets",
                want: "sorted lists without repeats",
            });
        }
        for name in &self.names {
            check_entry("names", name)?;
        }
        for target in &self.targets {
            check_entry("targets", target)?;
        }
        if self.expires > MAX_EXPIRES {
            return Err(E::Wrong {
                key: "exp",
                want: "unix seconds up to 9999999999",
            });
        }
        Ok(())
    }

    pub fn key(&self) -> &VerifyingKey {
        &self.key
    }
    pub fn kid(&self) -> KeyId {
        KeyId::of(&self.key)
    }
    pub fn names(&self) -> &[String] {
        &self.names
    }
    pub fn kinds(&self) -> &[Kind] {
        &self.kinds
    }
    pub fn targets(&self) -> &[String] {
        &self.targets
    }
    pub fn fleet(&self) -> FleetId {
        self.fleet
    }
    pub fn expires(&self) -> u64 {
        self.expires
    }
    /// Every signer's key id, sorted.
    pub fn kids(&self) -> Vec<KeyId> {
        self.sigs.iter().map(|(kid, _)| *kid).collect()
    }

    /// Whether the key may sign an update of `name` and `kind` for `target` (a selector's
    /// canonical text; `None`: the whole fleet). `Err` is the rule that refuses it, for the
    /// record's reason. Expiry is checked apart ([`Delegation::expired`]).
    pub fn permits(&self, name: &str, kind: Kind, target: Option<&str>) -> Result<(), String> {
        let kid = self.kid();
        if !self.kinds.contains(&kind) {
            let kinds: Vec<&str> = self.kinds.iter().map(|k| k.as_str()).collect();
            return Err(format!(
                "key {kid} may sign kinds {} only, not {kind}",
                kinds.join(",")
            ));
        }
        if !self.names.iter().any(|glob| glob_match(glob, name)) {
            return Err(format!(
                "key {kid} may sign names {} only, not {name:?}",
                self.names.join(",")
            ));
        }
        if self.targets.is_empty() {
            return Ok(());
        }
        match target {
            Some(t) if self.targets.iter().any(|allowed| allowed == t) => Ok(()),
            Some(t) => Err(format!(
                "key {kid} may sign for targets {} only, not {t}",
                self.targets.join(" ")
            )),
            None => Err(format!(
                "key {kid} may sign for targets {} only, not the whole fleet",
                self.targets.join(" ")
            )),
        }
    }

    /// Whether the statement has expired at `now` (unix seconds).
    pub fn expired(&self, now: u64) -> bool {
        self.expires < now
    }

    /// Parses a statement's text (one trailing newline allowed). Structure only.
    pub fn decode(text: &[u8]) -> Result<Delegation, DelegationError> {
        let bytes = ENVELOPE_.bytes(text).map_err(DocumentError::from)?;
        let fields = ENVELOPE_.open(&bytes)?;
        let texts = |key: &'static str| -> Result<Vec<String>, E> {
            (fields.list(key)?.iter())
                .map(|item| {
                    let b = item.as_bytes().ok_or(E::Wrong {
                        key,
                        want: "a list of byte strings",
                    })?;
                    String::from_utf8(b.to_vec()).map_err(|_| E::BadEntry {
                        key,
                        entry: String::from_utf8_lossy(b).into_owned(),
                        why: "not UTF-8",
                    })
                })
                .collect()
        };
        let key = <[u8; 32]>::try_from(fields.bytes("key")?).map_err(|_| E::BadKey)?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| E::BadKey)?;
        let fleet = fields.fixed("fleet", "8 bytes")?;
        let expires = fields.uint("exp", "unix seconds up to 9999999999")?;
        let kinds = texts("kinds")?
            .into_iter()
            .map(|k| {
                k.parse().map_err(|_| E::BadEntry {
                    key: "kinds",
                    entry: k.clone(),
                    why: "not a kind (manifest, module, archive, dir or file)",
                })
            })
            .collect::<Result<Vec<Kind>, E>>()?;
        let d = Delegation {
            key,
            names: texts("names")?,
            kinds,
            targets: texts("targets")?,
            fleet: FleetId(fleet),
            expires,
            sigs: decode_sigs(fields.bytes("sigs")?, MAX_SIGS).map_err(E::Sigs)?,
        };
        d.validate()?;
        if d.to_bencode() != bytes {
            return Err(E::Wrong {
                key: "v",
                want: "the canonical encoding",
            });
        }
        Ok(d)
    }
}

impl SignedDocument for Delegation {
    const ENVELOPE: Envelope = ENVELOPE_;
    const WHAT: &'static str = "key statements";
    const MAX_SIGS: usize = MAX_SIGS;
    type Error = DelegationError;

    fn bencode(&self, with_sigs: bool) -> Vec<u8> {
        let list = |out: &mut Vec<u8>, key: &str, items: &[&str]| {
            put_string(out, key.as_bytes());
            out.push(b'l');
            for item in items {
                put_string(out, item.as_bytes());
            }
            out.push(b'e');
        };
        let mut out = vec![b'd'];
        put_int(&mut out, "exp", self.expires);
        put_bytes(&mut out, "fleet", &self.fleet.0);
        put_bytes(&mut out, "key", self.key.as_bytes());
        let kinds: Vec<&str> = self.kinds.iter().map(|k| k.as_str()).collect();
        list(&mut out, "kinds", &kinds);
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        list(&mut out, "names", &names);
        if with_sigs {
            put_bytes(&mut out, "sigs", &encode_sigs(&self.sigs));
        }
        let targets: Vec<&str> = self.targets.iter().map(String::as_str).collect();
        list(&mut out, "targets", &targets);
        put_int(&mut out, "v", 1);
        out.push(b'e');
        out
    }

    sigs_field!(DelegationError);
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use ed25519_dalek::SigningKey;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn grant(targets: &[&str]) -> Grant {
        Grant {
            key: key(5).verifying_key(),
            names: vec!["cam-*".into(), "cam.pp".into()],
            kinds: vec![Kind::Manifest, Kind::File],
            targets: targets.iter().map(|t| t.to_string()).collect(),
            fleet: FleetId([7; 8]),
            expires: 4_000_000_000,
        }
    }

    fn signed(targets: &[&str]) -> Delegation {
        let mut d = Delegation::new(grant(targets)).unwrap();
        d.sign(&key(1)).unwrap();
        d
    }

    /// Replaces the first `from` in `d`'s bencoding by `to` and decodes the result.
    fn mutated(d: &Delegation, from: &[u8], to: &[u8]) -> DelegationError {
        let mut bytes = d.to_bencode();
        let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
        bytes.splice(at..at + from.len(), to.iter().copied());
        let text = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
        Delegation::decode(text.as_bytes()).unwrap_err()
    }

    #[test]
    fn round_trips_and_counts_its_signers() {
        let mut d = signed(&["tag:role=camera"]);
        d.sign(&key(2)).unwrap();
        let text = d.to_text();
        assert!(text.starts_with(PREFIX) && text.ends_with('\n'));
        let back = Delegation::decode(text.as_bytes()).unwrap();
        assert_eq!(back, d);
        let known = |kid: &KeyId| {
            [key(1), key(3)]
                .iter()
                .map(|k| k.verifying_key())
                .find(|k| KeyId::of(k) == *kid)
        };
        // key(2) signed but is not known: only key(1) counts.
        assert_eq!(
            back.signers(known),
            vec![KeyId::of(&key(1).verifying_key())]
        );
        // Signatures cover the statement: another grant does not take them.
        let mut other = Delegation::new(Grant {
            names: vec!["base.pp".into()],
            ..grant(&["tag:role=camera"])
        })
        .unwrap();
        assert!(other.combine(&d).is_err());
        let mut same = Delegation::new(grant(&["tag:role=camera"])).unwrap();
        same.combine(&d).unwrap();
        assert_eq!(same, d);
    }

    #[test]
    fn permits_only_within_names_kinds_and_targets() {
        let any = signed(&[]);
        assert!(any.permits("cam-front.pp", Kind::Manifest, None).is_ok());
        assert!(any.permits("cam.pp", Kind::File, Some("name:x")).is_ok());
        let why = any.permits("base.pp", Kind::Manifest, None).unwrap_err();
        assert!(
            why.contains("may sign names cam-*,cam.pp only, not \"base.pp\""),
            "{why}"
        );
        let why = any.permits("cam-1", Kind::Module, None).unwrap_err();
        assert!(
            why.contains("kinds file,manifest only, not module"),
            "{why}"
        );
        assert!(any.permits("cam-1", Kind::Key, None).is_err());

        let cameras = signed(&["tag:role=camera"]);
        assert!(cameras
            .permits("cam-1", Kind::Manifest, Some("tag:role=camera"))
            .is_ok());
        let why = cameras.permits("cam-1", Kind::Manifest, None).unwrap_err();
        assert!(why.contains("not the whole fleet"), "{why}");
        let why = cameras
            .permits("cam-1", Kind::Manifest, Some("name:*"))
            .unwrap_err();
        assert!(why.contains("not name:*"), "{why}");
        assert!(!cameras.expired(4_000_000_000) && cameras.expired(4_000_000_001));
    }

    #[test]
    fn strict_decoder_refuses_what_is_not_the_one_text() {
        let d = signed(&[]);
        let unknown = mutated(&d, b"3:key", b"3:kez");
        assert!(
            matches!(
                unknown,
                E::Document(DocumentError::Bencode(_) | DocumentError::UnknownKey { .. })
            ),
            "{unknown}"
        );
        // Unsorted list entries.
        let swapped = mutated(&d, b"5:cam-*6:cam.pp", b"6:cam.pp5:cam-*");
        assert!(swapped.to_string().contains("sorted lists"), "{swapped}");
        // The same entry twice.
        let twice = mutated(&d, b"5:cam-*6:cam.pp", b"6:cam.pp6:cam.pp");
        assert!(twice.to_string().contains("sorted lists"), "{twice}");
        let version = mutated(&d, b"1:vi1e", b"1:vi2e");
        assert!(
            matches!(
                version,
                E::Document(DocumentError::UnsupportedVersion { got: 2 })
            ),
            "{version}"
        );
        let key_kind = mutated(&d, b"4:file", b"3:key");
        assert!(
            matches!(key_kind, E::KeyKind | E::Wrong { .. }),
            "{key_kind}"
        );
        let no_sigs = {
            let mut bytes = d.signed_bytes();
            bytes.truncate(bytes.len());
            Delegation::decode(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)).as_bytes())
                .unwrap_err()
        };
        assert!(
            matches!(
                no_sigs,
                E::Document(DocumentError::MissingKey { key: "sigs" })
            ),
            "{no_sigs}"
        );
        for bad in [
            &b"p2pu-root1:AAAA"[..],
            b"p2pu-delegation:!!",
            b"p2pu-delegation:",
        ] {
            assert!(Delegation::decode(bad).is_err());
        }
    }

    #[test]
    fn new_refuses_what_decode_would() {
        for bad in [
            Grant {
                names: vec![],
                ..grant(&[])
            },
            Grant {
                kinds: vec![Kind::Key],
                ..grant(&[])
            },
            Grant {
                names: vec!["a\nb".into()],
                ..grant(&[])
            },
            Grant {
                targets: vec!["x".repeat(129)],
                ..grant(&[])
            },
        ] {
            assert!(Delegation::new(bad).is_err());
        }
    }

    #[test]
    fn vectors_decode_to_what_they_say() {
        let text = include_str!("../tests/vectors/delegation/cameras.delegation");
        let d = Delegation::decode(text.as_bytes()).unwrap();
        assert_eq!(d.to_text(), text);
        assert_eq!(d.names(), ["cam-*"]);
        assert_eq!(d.kinds(), [Kind::File, Kind::Manifest]);
        assert_eq!(d.targets(), ["tag:role=camera"]);
        assert_eq!(d.kid(), KeyId::of(&key(5).verifying_key()));
        let roots = |kid: &KeyId| {
            [key(1), key(2)]
                .iter()
                .map(|k| k.verifying_key())
                .find(|k| KeyId::of(k) == *kid)
        };
        assert_eq!(d.signers(roots).len(), 2);
    }
}
