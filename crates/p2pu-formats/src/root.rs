//! Root documents, TUF's root metadata carried over gossip: version n of the fleet's trust
//! anchors (the root keys and how many of them must sign), bound to a fleet and an expiry. A
//! canonical bencoded dictionary, text `p2pu-root1:` + unpadded URL-safe base64, one line;
//! a `key` payload carries the chain, one document per line, oldest first.
//!
//! Decoding checks structure only (unknown or duplicate keys and every non-canonical encoding
//! refused); [`RootDoc::follows`] is the chain rule: version n+1 counts only when the
//! threshold of version n's keys and its own threshold of its own keys signed it. See
//! docs/wire-root.md.

use super::announcement::{
    decode_sigs, encode_sigs, put_bytes, put_int, put_string, AnnouncementError, FleetId,
    MAX_EXPIRES,
};
use super::document::{sigs_field, DocumentError, Envelope, SignedDocument};
use crate::keys::KeyId;
use ed25519_dalek::VerifyingKey;

/// What a root document's text starts with.
pub const PREFIX: &str = "p2pu-root1:";
/// The most root keys one document lists.
pub const MAX_KEYS: usize = 16;
/// The most signatures: the old set's threshold and the new set's, from distinct keys.
pub const MAX_SIGS: usize = 2 * MAX_KEYS;
/// The longest document text.
pub const MAX_TEXT_LEN: usize = 8 * 1024;
/// The most documents one chain payload carries.
pub const MAX_CHAIN: usize = 64;
/// The longest chain payload: a node refuses to fetch more for an announcement it cannot
/// verify before the chain is applied.
pub const MAX_CHAIN_BYTES: u64 = (MAX_CHAIN * (MAX_TEXT_LEN + 1)) as u64;
/// The name a root chain is announced under (kind `key`): one name, so the newest chain is
/// what every node, however far behind, is offered.
pub const ROOT_NAME: &str = "p2pu-root";

const ENVELOPE_: Envelope = Envelope {
    prefix: PREFIX,
    max_len: MAX_TEXT_LEN,
    keys: &["exp", "fleet", "keys", "sigs", "threshold", "v", "version"],
};

#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("root document {0}")]
    Document(#[from] DocumentError),
    #[error("root document `{key}` is not {want}")]
    Wrong {
        key: &'static str,
        want: &'static str,
    },
    #[error("root document signatures")]
    Sigs(#[source] AnnouncementError),
    #[error("root chain: {0}")]
    Chain(String),
}

use RootError as E;

/// A structurally valid root document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootDoc {
    version: u64,
    /// Sorted by their bytes, distinct.
    keys: Vec<VerifyingKey>,
    threshold: u64,
    fleet: FleetId,
    expires: u64,
    sigs: Vec<(KeyId, [u8; 64])>,
}

impl RootDoc {
    /// An unsigned document (keys sorted, repeats dropped); refuses what decode would.
    pub fn new(
        version: u64,
        mut keys: Vec<VerifyingKey>,
        threshold: u64,
        fleet: FleetId,
        expires: u64,
    ) -> Result<RootDoc, RootError> {
        keys.sort_by_key(|k| *k.as_bytes());
        keys.dedup();
        let doc = RootDoc {
            version,
            keys,
            threshold,
            fleet,
            expires,
            sigs: Vec::new(),
        };
        doc.validate()?;
        Ok(doc)
    }

    fn validate(&self) -> Result<(), RootError> {
        if self.keys.is_empty() || self.keys.len() > MAX_KEYS {
            return Err(E::Wrong {
                key: "keys",
                want: "a list of 1 to 16 keys",
            });
        }
        if !self
            .keys
            .windows(2)
            .all(|w| w[0].as_bytes() < w[1].as_bytes())
        {
            return Err(E::Wrong {
                key: "keys",
                want: "sorted by their bytes, without repeats",
            });
        }
        if self.keys.iter().any(VerifyingKey::is_weak) {
            return Err(E::Wrong {
                key: "keys",
                want: "a list of usable Ed25519 keys (one is weak)",
            });
        }
        if self.threshold == 0 || self.threshold > self.keys.len() as u64 {
            return Err(E::Wrong {
                key: "threshold",
                want: "from 1 to the number of keys",
            });
        }
        if self.version == 0 || self.version > i64::MAX as u64 {
            return Err(E::Wrong {
                key: "version",
                want: "a positive integer",
            });
        }
        if self.expires > MAX_EXPIRES {
            return Err(E::Wrong {
                key: "exp",
                want: "unix seconds up to 9999999999",
            });
        }
        Ok(())
    }

    pub fn version(&self) -> u64 {
        self.version
    }
    pub fn keys(&self) -> &[VerifyingKey] {
        &self.keys
    }
    pub fn threshold(&self) -> usize {
        usize::try_from(self.threshold).unwrap_or(usize::MAX)
    }
    pub fn fleet(&self) -> FleetId {
        self.fleet
    }
    pub fn expires(&self) -> u64 {
        self.expires
    }
    pub fn kids(&self) -> Vec<KeyId> {
        self.sigs.iter().map(|(kid, _)| *kid).collect()
    }

    /// The root key with id `kid`, if it is one.
    pub fn key(&self, kid: &KeyId) -> Option<VerifyingKey> {
        self.keys.iter().find(|k| KeyId::of(k) == *kid).copied()
    }

    /// The chain rule: this document may follow the trust anchors `prev_keys` (version
    /// `prev_version`, needing `prev_threshold`) only as version `prev_version + 1`, for
    /// `fleet`, signed by `prev_threshold` of `prev_keys` and by its own threshold of its own
    /// keys (so a new set cannot be named without its holders). `Err` says which rule failed.
    pub fn follows(
        &self,
        prev_version: u64,
        prev_keys: &[VerifyingKey],
        prev_threshold: usize,
        fleet: FleetId,
    ) -> Result<(), RootError> {
        let version = self.version;
        if version != prev_version.saturating_add(1) {
            return Err(E::Chain(format!(
                "version {version} cannot follow version {prev_version}"
            )));
        }
        if self.fleet != fleet {
            return Err(E::Chain(format!(
                "version {version} is for fleet {}, this node is in fleet {fleet}",
                self.fleet
            )));
        }
        let by_prev = self
            .signers(|kid| prev_keys.iter().find(|k| KeyId::of(k) == *kid).copied())
            .len();
        if by_prev < prev_threshold {
            return Err(E::Chain(format!(
                "version {version} is signed by {by_prev} of the {prev_threshold} keys of version {prev_version} it needs"
            )));
        }
        let by_own = self.signers(|kid| self.key(kid)).len();
        if by_own < self.threshold() {
            return Err(E::Chain(format!(
                "version {version} is signed by {by_own} of the {} of its own keys it needs",
                self.threshold
            )));
        }
        Ok(())
    }

    /// Parses one document's text (one trailing newline allowed). Structure only.
    pub fn decode(text: &[u8]) -> Result<RootDoc, RootError> {
        let bytes = ENVELOPE_.bytes(text).map_err(DocumentError::from)?;
        let fields = ENVELOPE_.open(&bytes)?;
        let uint = |key: &'static str| fields.uint(key, "a non-negative integer");
        let want_keys = E::Wrong {
            key: "keys",
            want: "a list of 32-byte Ed25519 public keys",
        };
        let list = fields.list("keys")?;
        let mut keys = Vec::with_capacity(list.len());
        for item in list {
            let raw = item
                .as_bytes()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .and_then(|b| VerifyingKey::from_bytes(&b).ok());
            match raw {
                Some(key) => keys.push(key),
                None => return Err(want_keys),
            }
        }
        let fleet = fields.fixed("fleet", "8 bytes")?;
        let doc = RootDoc {
            version: uint("version")?,
            keys,
            threshold: uint("threshold")?,
            fleet: FleetId(fleet),
            expires: uint("exp")?,
            sigs: decode_sigs(fields.bytes("sigs")?, MAX_SIGS).map_err(E::Sigs)?,
        };
        doc.validate()?;
        if doc.to_bencode() != bytes {
            return Err(E::Wrong {
                key: "v",
                want: "the canonical encoding",
            });
        }
        Ok(doc)
    }

    /// Parses a chain payload: one document per line, consecutive versions, oldest first.
    pub fn decode_chain(text: &[u8]) -> Result<Vec<RootDoc>, RootError> {
        let text = text.strip_suffix(b"\n").unwrap_or(text);
        let mut chain: Vec<RootDoc> = Vec::new();
        if text.len() as u64 > MAX_CHAIN_BYTES {
            return Err(E::Chain(format!(
                "{} bytes, more than {MAX_CHAIN_BYTES}",
                text.len()
            )));
        }
        for line in text.split(|b| *b == b'\n') {
            if chain.len() == MAX_CHAIN {
                return Err(E::Chain(format!("more than {MAX_CHAIN} documents")));
            }
            let doc = RootDoc::decode(line)?;
            if let Some(last) = chain.last() {
                if doc.version != last.version + 1 {
                    return Err(E::Chain(format!(
                        "version {} follows version {} in the payload",
                        doc.version, last.version
                    )));
                }
            }
            chain.push(doc);
        }
        Ok(chain)
    }
}

impl SignedDocument for RootDoc {
    const ENVELOPE: Envelope = ENVELOPE_;
    const WHAT: &'static str = "root documents";
    const MAX_SIGS: usize = MAX_SIGS;
    type Error = RootError;

    fn bencode(&self, with_sigs: bool) -> Vec<u8> {
        let mut out = vec![b'd'];
        put_int(&mut out, "exp", self.expires);
        put_bytes(&mut out, "fleet", &self.fleet.0);
        put_string(&mut out, b"keys");
        out.push(b'l');
        for key in &self.keys {
            put_string(&mut out, key.as_bytes());
        }
        out.push(b'e');
        if with_sigs {
            put_bytes(&mut out, "sigs", &encode_sigs(&self.sigs));
        }
        put_int(&mut out, "threshold", self.threshold);
        put_int(&mut out, "v", 1);
        put_int(&mut out, "version", self.version);
        out.push(b'e');
        out
    }

    sigs_field!(RootError);
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

    fn public(ns: &[u8]) -> Vec<VerifyingKey> {
        ns.iter().map(|n| key(*n).verifying_key()).collect()
    }

    fn sorted(ns: &[u8]) -> Vec<VerifyingKey> {
        let mut keys = public(ns);
        keys.sort_by_key(|k| *k.as_bytes());
        keys
    }

    const FLEET: FleetId = FleetId([7; 8]);

    fn doc(version: u64, keys: &[u8], threshold: u64, signers: &[u8]) -> RootDoc {
        let mut d = RootDoc::new(version, public(keys), threshold, FLEET, 4_000_000_000).unwrap();
        for n in signers {
            d.sign(&key(*n)).unwrap();
        }
        d
    }

    #[test]
    fn round_trips_one_document_and_a_chain() {
        let one = doc(1, &[3, 1, 2], 2, &[1, 2]);
        let text = one.to_text();
        assert_eq!(RootDoc::decode(text.as_bytes()).unwrap(), one);
        assert_eq!(one.keys(), sorted(&[1, 2, 3]).as_slice());
        let two = doc(2, &[4, 5], 1, &[1, 2, 4]);
        let chain = format!("{}{}", one.to_text(), two.to_text());
        assert_eq!(
            RootDoc::decode_chain(chain.as_bytes()).unwrap(),
            [one.clone(), two.clone()]
        );
        let gap = format!("{}{}", two.to_text(), one.to_text());
        assert!(RootDoc::decode_chain(gap.as_bytes()).is_err());
    }

    #[test]
    fn a_version_follows_only_with_both_thresholds() {
        let v1 = doc(1, &[1, 2, 3], 2, &[1, 2]);
        assert!(v1.follows(0, &public(&[1, 2]), 2, FLEET).is_ok());
        // One of the old keys is not enough for a threshold of 2.
        let weak = doc(2, &[4, 5], 1, &[1, 4]);
        let why = weak
            .follows(1, v1.keys(), v1.threshold(), FLEET)
            .unwrap_err();
        assert!(
            why.to_string().contains("1 of the 2 keys of version 1"),
            "{why}"
        );
        // The new set's own threshold is needed too.
        let unsigned_by_new = doc(2, &[4, 5], 1, &[1, 2]);
        let why = unsigned_by_new
            .follows(1, v1.keys(), v1.threshold(), FLEET)
            .unwrap_err();
        assert!(why.to_string().contains("of its own keys"), "{why}");
        let good = doc(2, &[4, 5], 1, &[1, 2, 5]);
        good.follows(1, v1.keys(), v1.threshold(), FLEET).unwrap();
        // Skipping a version, or another fleet, is refused.
        assert!(good.follows(0, v1.keys(), 2, FLEET).is_err());
        assert!(good.follows(1, v1.keys(), 2, FleetId([8; 8])).is_err());
    }

    #[test]
    fn strict_decoder_refuses_what_is_not_the_one_text() {
        let d = doc(1, &[1, 2], 1, &[1]);
        let bytes = d.to_bencode();
        let redo = |from: &[u8], to: &[u8]| {
            let mut b = bytes.clone();
            let at = b.windows(from.len()).position(|w| w == from).unwrap();
            b.splice(at..at + from.len(), to.iter().copied());
            RootDoc::decode(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(b)).as_bytes())
                .unwrap_err()
        };
        assert!(matches!(
            redo(b"9:thresholdi1e", b"9:thresholdi3e"),
            E::Wrong {
                key: "threshold",
                ..
            }
        ));
        assert!(matches!(
            redo(b"9:thresholdi1e", b"9:thresholdi0e"),
            E::Wrong {
                key: "threshold",
                ..
            }
        ));
        assert!(matches!(
            redo(b"1:vi1e", b"1:vi2e"),
            E::Document(DocumentError::UnsupportedVersion { got: 2 })
        ));
        assert!(matches!(
            redo(b"4:keys", b"4:kez_"),
            E::Document(DocumentError::Bencode(_) | DocumentError::UnknownKey { .. })
        ));
        // The keys in the other order.
        let (a, b) = (d.keys()[0].to_bytes(), d.keys()[1].to_bytes());
        let sorted = [&b"32:"[..], &a, b"32:", &b].concat();
        let unsorted = [&b"32:"[..], &b, b"32:", &a].concat();
        assert!(redo(&sorted, &unsorted).to_string().contains("sorted"));
        assert!(RootDoc::decode(b"p2pu-delegation:AAAA").is_err());
        assert!(RootDoc::new(1, public(&[1]), 2, FLEET, 1).is_err());
        assert!(RootDoc::new(0, public(&[1]), 1, FLEET, 1).is_err());
    }

    #[test]
    fn vectors_decode_to_what_they_say() {
        let text = include_str!("../tests/vectors/root/chain-1-2.root");
        let chain = RootDoc::decode_chain(text.as_bytes()).unwrap();
        let again: String = chain.iter().map(RootDoc::to_text).collect();
        assert_eq!(again, text);
        assert_eq!(chain.len(), 2);
        chain[0].follows(0, &public(&[1, 2]), 2, FLEET).unwrap();
        chain[1]
            .follows(1, chain[0].keys(), chain[0].threshold(), FLEET)
            .unwrap();
        assert_eq!(chain[1].keys(), sorted(&[4, 5]).as_slice());
    }
}
