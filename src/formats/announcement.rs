//! Announcement v1, the signed update notice both transports carry (Serf events and the NAT
//! overlay): a canonical bencoded dictionary, sent as `p2pu1:` + unpadded URL-safe base64.
//!
//! Decoding checks structure only (and rejects every non-canonical encoding, so one announcement
//! has exactly one wire text); [`Announcement::verify`] checks the signer and the signature.

use crate::keys::{KeyId, TrustedKeys};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// What every wire text starts with; the digit is the format version.
pub const WIRE_PREFIX: &str = "p2pu1:";
pub const MAX_NAME_LEN: usize = 64;
/// The longest possible v1 wire text (64-byte name, `manifest`, seq and len of 19 digits).
/// Anything longer is rejected before decoding; with the event name
/// [`UPDATE_EVENT`](super::serf_names::UPDATE_EVENT) it fits
/// Serf's 482 bytes.
pub const MAX_WIRE_LEN: usize = 414;

const KEYS: [&str; 9] = [
    "ih", "kid", "kind", "len", "name", "seq", "sha256", "sig", "v",
];

#[derive(Debug, thiserror::Error)]
pub enum AnnouncementError {
    #[error("announcement is {len} bytes, longer than any v1 announcement ({max})")]
    TooLong { len: usize, max: usize },
    #[error("announcement does not start with `{WIRE_PREFIX}` (starts with {start:?})")]
    BadPrefix { start: String },
    #[error("announcement is not unpadded URL-safe base64")]
    BadBase64(#[source] base64::DecodeError),
    #[error("announcement is not a bencoded dictionary of integers and byte strings")]
    Bencode(#[source] serde_bencode::Error),
    #[error("announcement has key {key:?} twice")]
    DuplicateKey { key: String },
    #[error("announcement has unknown key {key:?}")]
    UnknownKey { key: String },
    #[error("announcement lacks key `{key}`")]
    MissingKey { key: &'static str },
    #[error("announcement key `{key}` is not {want}")]
    WrongType {
        key: &'static str,
        want: &'static str,
    },
    #[error("announcement key `{key}` is {got} bytes, want {want}")]
    WrongLength {
        key: &'static str,
        want: usize,
        got: usize,
    },
    #[error(
        "announcement key `{key}` is {value}, want an integer from 0 to {}",
        i64::MAX
    )]
    OutOfRange { key: &'static str, value: i128 },
    #[error("announcement version is {got}, this p2pu reads version 1")]
    UnsupportedVersion { got: i64 },
    #[error("unsafe payload name {name:?}: {reason}")]
    UnsafeName { name: String, reason: &'static str },
    #[error(
        "unknown announcement kind {kind:?} (want manifest, module, archive, key, dir or file)"
    )]
    UnknownKind { kind: String },
    #[error("announcement is not canonical bencode (key order, leading zeros or trailing bytes)")]
    NonCanonical,
    #[error("announcement {name:?} is signed by unknown key {kid}")]
    UnknownSigner { name: String, kid: KeyId },
    #[error("announcement {name:?} is signed by revoked key {kid}")]
    RevokedSigner { name: String, kid: KeyId },
    #[error("announcement {name:?} has a bad signature for key {kid}")]
    BadSignature { name: String, kid: KeyId },
}

impl crate::error::LayerError for AnnouncementError {}

use AnnouncementError as E;

/// What the payload is, which decides how a node applies it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A Puppet manifest (*.pp): each node runs `puppet apply` on it.
    Manifest,
    /// A Puppet module (`puppet module build` .tar.gz): installed into puppet.modulepath.
    Module,
    /// A .tar.gz or .zip: unpacked into agent.archive_dir/NAME (the whole name, e.g. web.tar.gz).
    Archive,
    /// A p2pu public key (*.pub): added to every node's trusted keys.
    Key,
    /// A directory, sent as one archive: each top-level member applied by its own kind.
    Dir,
    /// Anything else: kept, root-only, under agent.state_dir/verified/; nothing run.
    File,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Manifest,
        Kind::Module,
        Kind::Archive,
        Kind::Key,
        Kind::Dir,
        Kind::File,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Manifest => "manifest",
            Kind::Module => "module",
            Kind::Archive => "archive",
            Kind::Key => "key",
            Kind::Dir => "dir",
            Kind::File => "file",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = AnnouncementError;
    fn from_str(text: &str) -> Result<Kind, E> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == text)
            .ok_or_else(|| E::UnknownKind {
                kind: text.to_string(),
            })
    }
}

/// Checks a payload name is one safe path component: non-empty UTF-8 of at most 64 bytes,
/// no `/`, not `.` or `..`, no NUL or other control characters.
pub fn validate_name(name: &str) -> Result<(), AnnouncementError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_NAME_LEN {
        "longer than 64 bytes"
    } else if name == "." || name == ".." {
        "`.` and `..` are not names"
    } else if name.contains('/') {
        "contains `/`"
    } else if name.chars().any(char::is_control) {
        "contains NUL or a control character"
    } else {
        return Ok(());
    };
    Err(E::UnsafeName {
        name: name.to_string(),
        reason,
    })
}

/// The fields an operator signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub seq: u64,
    pub name: String,
    pub kind: Kind,
    pub info_hash: [u8; 20],
    pub len: u64,
    pub sha256: [u8; 32],
}

/// A structurally valid announcement; call [`Announcement::verify`] before trusting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    seq: u64,
    name: String,
    kind: Kind,
    info_hash: [u8; 20],
    len: u64,
    sha256: [u8; 32],
    kid: KeyId,
    sig: [u8; 64],
}

impl Announcement {
    /// Signs `draft` with `key`; refuses what [`Announcement::decode`] would reject.
    pub fn sign(draft: Draft, signer: &SigningKey) -> Result<Announcement, AnnouncementError> {
        validate_name(&draft.name)?;
        for (key, value) in [("seq", draft.seq), ("len", draft.len)] {
            if i64::try_from(value).is_err() {
                let value = i128::from(value);
                return Err(E::OutOfRange { key, value });
            }
        }
        let mut announcement = Announcement {
            seq: draft.seq,
            name: draft.name,
            kind: draft.kind,
            info_hash: draft.info_hash,
            len: draft.len,
            sha256: draft.sha256,
            kid: KeyId::of(&signer.verifying_key()),
            sig: [0; 64],
        };
        announcement.sig = signer.sign(&announcement.signed_bytes()).to_bytes();
        Ok(announcement)
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn kind(&self) -> Kind {
        self.kind
    }
    pub fn info_hash(&self) -> &[u8; 20] {
        &self.info_hash
    }
    /// The payload's length in bytes.
    pub fn payload_len(&self) -> u64 {
        self.len
    }
    pub fn sha256(&self) -> &[u8; 32] {
        &self.sha256
    }
    pub fn kid(&self) -> KeyId {
        self.kid
    }
    pub fn sig(&self) -> &[u8; 64] {
        &self.sig
    }

    /// The bytes the signature covers: the bencoding without `sig`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        self.bencode(false)
    }

    /// The complete canonical bencoding.
    pub fn to_bencode(&self) -> Vec<u8> {
        self.bencode(true)
    }

    pub fn to_wire(&self) -> String {
        format!("{WIRE_PREFIX}{}", URL_SAFE_NO_PAD.encode(self.to_bencode()))
    }

    // Written by hand, in sorted key order, so encoding cannot fail and is canonical by
    // construction; a test checks it against serde_bencode.
    fn bencode(&self, with_sig: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(300);
        out.push(b'd');
        put_bytes(&mut out, "ih", &self.info_hash);
        put_bytes(&mut out, "kid", &self.kid.0);
        put_bytes(&mut out, "kind", self.kind.as_str().as_bytes());
        put_int(&mut out, "len", self.len);
        put_bytes(&mut out, "name", self.name.as_bytes());
        put_int(&mut out, "seq", self.seq);
        put_bytes(&mut out, "sha256", &self.sha256);
        if with_sig {
            put_bytes(&mut out, "sig", &self.sig);
        }
        put_int(&mut out, "v", 1);
        out.push(b'e');
        out
    }

    /// Parses a wire text (one trailing newline, as Serf appends, is ignored). Structure only:
    /// see [`Announcement::verify`].
    pub fn decode(wire: impl AsRef<[u8]>) -> Result<Announcement, AnnouncementError> {
        let wire = wire.as_ref();
        let wire = wire.strip_suffix(b"\n").unwrap_or(wire);
        if wire.len() > MAX_WIRE_LEN {
            let (len, max) = (wire.len(), MAX_WIRE_LEN);
            return Err(E::TooLong { len, max });
        }
        let encoded = wire.strip_prefix(WIRE_PREFIX.as_bytes()).ok_or_else(|| {
            let start = wire.get(..WIRE_PREFIX.len()).unwrap_or(wire);
            E::BadPrefix {
                start: String::from_utf8_lossy(start).into_owned(),
            }
        })?;
        let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(E::BadBase64)?;
        let announcement = Fields::parse(&bytes)?.into_announcement()?;
        if announcement.to_bencode() != bytes {
            return Err(E::NonCanonical);
        }
        Ok(announcement)
    }

    /// Checks the signer is trusted (and not revoked) and the signature is valid.
    pub fn verify(&self, trusted: &TrustedKeys) -> Result<(), AnnouncementError> {
        let (name, kid) = (self.name.clone(), self.kid);
        let Some(signer) = trusted.get(&kid) else {
            return Err(if trusted.is_revoked(&kid) {
                E::RevokedSigner { name, kid }
            } else {
                E::UnknownSigner { name, kid }
            });
        };
        // verify_strict rejects malleable signatures and small-order keys.
        signer
            .key
            .key
            .verify_strict(&self.signed_bytes(), &Signature::from_bytes(&self.sig))
            .map_err(|_| E::BadSignature { name, kid })
    }
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
}

fn put_bytes(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    put_string(out, key.as_bytes());
    put_string(out, value);
}

fn put_int(out: &mut Vec<u8>, key: &str, value: u64) {
    put_string(out, key.as_bytes());
    out.extend_from_slice(format!("i{value}e").as_bytes());
}

/// A dictionary value: announcements have no nested lists or dictionaries, so none are parsed
/// (which also keeps hostile nesting from recursing).
enum Scalar {
    Int(i64),
    Bytes(Vec<u8>),
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Scalar, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer or a byte string")
            }
            fn visit_i64<Er: de::Error>(self, v: i64) -> Result<Scalar, Er> {
                Ok(Scalar::Int(v))
            }
            fn visit_bytes<Er: de::Error>(self, v: &[u8]) -> Result<Scalar, Er> {
                Ok(Scalar::Bytes(v.to_vec()))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// The top-level dictionary's entries in wire order, so duplicates are seen (a map would keep
/// only one of them).
struct Entries(Vec<(Vec<u8>, Scalar)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Entries, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a dictionary")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Entries, M::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<serde_bytes::ByteBuf>()? {
                    entries.push((key.into_vec(), map.next_value::<Scalar>()?));
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

struct Fields(BTreeMap<&'static str, Scalar>);

impl Fields {
    fn parse(bytes: &[u8]) -> Result<Fields, AnnouncementError> {
        let entries: Entries = serde_bencode::from_bytes(bytes).map_err(E::Bencode)?;
        let mut seen = BTreeMap::new();
        let mut unknown = None;
        for (key, value) in entries.0 {
            let text = String::from_utf8_lossy(&key).into_owned();
            let Some(known) = KEYS.into_iter().find(|k| k.as_bytes() == key) else {
                unknown.get_or_insert(text);
                continue;
            };
            if seen.insert(known, value).is_some() {
                return Err(E::DuplicateKey { key: text });
            }
        }
        let fields = Fields(seen);
        // The version first: a future version may well have other keys.
        match fields.int("v")? {
            1 => {}
            got => return Err(E::UnsupportedVersion { got }),
        }
        match unknown {
            Some(key) => Err(E::UnknownKey { key }),
            None => Ok(fields),
        }
    }

    fn get(&self, key: &'static str) -> Result<&Scalar, AnnouncementError> {
        self.0.get(key).ok_or(E::MissingKey { key })
    }

    fn int(&self, key: &'static str) -> Result<i64, AnnouncementError> {
        match self.get(key)? {
            Scalar::Int(value) => Ok(*value),
            Scalar::Bytes(_) => Err(E::WrongType {
                key,
                want: "an integer",
            }),
        }
    }

    fn uint(&self, key: &'static str) -> Result<u64, AnnouncementError> {
        let value = self.int(key)?;
        u64::try_from(value).map_err(|_| E::OutOfRange {
            key,
            value: i128::from(value),
        })
    }

    fn bytes(&self, key: &'static str) -> Result<&[u8], AnnouncementError> {
        match self.get(key)? {
            Scalar::Bytes(value) => Ok(value),
            Scalar::Int(_) => Err(E::WrongType {
                key,
                want: "a byte string",
            }),
        }
    }

    fn fixed<const N: usize>(&self, key: &'static str) -> Result<[u8; N], AnnouncementError> {
        let value = self.bytes(key)?;
        <[u8; N]>::try_from(value).map_err(|_| E::WrongLength {
            key,
            want: N,
            got: value.len(),
        })
    }

    fn into_announcement(self) -> Result<Announcement, AnnouncementError> {
        let name = self.bytes("name")?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| E::UnsafeName {
            name: String::from_utf8_lossy(name).into_owned(),
            reason: "not UTF-8",
        })?;
        validate_name(&name)?;
        let kind = self.bytes("kind")?;
        let kind = std::str::from_utf8(kind)
            .ok()
            .and_then(|k| k.parse().ok())
            .ok_or_else(|| E::UnknownKind {
                kind: String::from_utf8_lossy(kind).into_owned(),
            })?;
        Ok(Announcement {
            seq: self.uint("seq")?,
            name,
            kind,
            info_hash: self.fixed("ih")?,
            len: self.uint("len")?,
            sha256: self.fixed("sha256")?,
            kid: KeyId(self.fixed("kid")?),
            sig: self.fixed("sig")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::serf_names::UPDATE_EVENT;
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn draft(name: &str) -> Draft {
        Draft {
            seq: 1_700_000_000_000,
            name: name.to_string(),
            kind: Kind::Manifest,
            info_hash: [0xab; 20],
            len: 1234,
            sha256: [0xcd; 32],
        }
    }

    fn signed(name: &str) -> Announcement {
        Announcement::sign(draft(name), &key(1)).unwrap()
    }

    fn trusted() -> TrustedKeys {
        TrustedKeys::from_keys([key(1).verifying_key()])
    }

    /// Wraps raw bencode as a wire text.
    fn wire(bencode: &[u8]) -> String {
        format!("{WIRE_PREFIX}{}", URL_SAFE_NO_PAD.encode(bencode))
    }

    /// The bencoding of a good announcement with its first `from` replaced by `to`.
    fn mutated(from: &[u8], to: &[u8]) -> AnnouncementError {
        let mut bytes = signed("site.pp").to_bencode();
        let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
        bytes.splice(at..at + from.len(), to.iter().copied());
        Announcement::decode(wire(&bytes)).unwrap_err()
    }

    #[test]
    fn round_trip_and_verify() {
        let a = signed("site.pp");
        let text = a.to_wire();
        assert!(text.starts_with("p2pu1:"));
        assert_eq!(Announcement::decode(&text).unwrap(), a);
        a.verify(&trusted()).unwrap();
    }

    #[test]
    fn serf_trailing_newline_is_ignored_once() {
        let text = signed("site.pp").to_wire();
        assert!(Announcement::decode(format!("{text}\n")).is_ok());
        assert!(matches!(
            Announcement::decode(format!("{text}\n\n")),
            Err(E::BadBase64(_))
        ));
    }

    #[test]
    fn hand_encoding_matches_serde_bencode() {
        #[derive(serde::Serialize)]
        struct Reference<'a> {
            v: u8,
            seq: u64,
            name: &'a str,
            kind: &'a str,
            ih: &'a serde_bytes::Bytes,
            len: u64,
            sha256: &'a serde_bytes::Bytes,
            kid: &'a serde_bytes::Bytes,
            sig: &'a serde_bytes::Bytes,
        }
        let a = signed("naïve name.pp");
        let reference = serde_bencode::to_bytes(&Reference {
            v: 1,
            seq: a.seq,
            name: &a.name,
            kind: a.kind.as_str(),
            ih: serde_bytes::Bytes::new(&a.info_hash),
            len: a.len,
            sha256: serde_bytes::Bytes::new(&a.sha256),
            kid: serde_bytes::Bytes::new(&a.kid.0),
            sig: serde_bytes::Bytes::new(&a.sig),
        })
        .unwrap();
        assert_eq!(a.to_bencode(), reference);
        assert!(!a.signed_bytes().windows(5).any(|w| w == b"3:sig"));
    }

    fn longest(digits_max: bool) -> Announcement {
        let mut d = draft(&"n".repeat(64));
        if digits_max {
            (d.seq, d.len) = (i64::MAX as u64, i64::MAX as u64);
        } else {
            // 13-digit ms timestamp (until the year 2286) and a 1 TiB payload.
            (d.seq, d.len) = (9_999_999_999_999, 1 << 40);
        }
        Announcement::sign(d, &key(1)).unwrap()
    }

    #[test]
    fn worst_case_wire_text_fits_serf_default_limit() {
        let design_worst = longest(false).to_wire();
        assert_eq!(design_worst.len(), 398, "DESIGN.md states 398 bytes");
        assert!(UPDATE_EVENT.len() + design_worst.len() <= 482);
        let absolute_worst = longest(true).to_wire();
        assert_eq!(absolute_worst.len(), MAX_WIRE_LEN);
        assert!(UPDATE_EVENT.len() + MAX_WIRE_LEN <= 482);
        assert!(Announcement::decode(&absolute_worst).is_ok());
    }

    #[test]
    fn sign_refuses_what_decode_rejects() {
        let mut d = draft("x");
        d.seq = u64::MAX;
        assert!(matches!(
            Announcement::sign(d, &key(1)),
            Err(E::OutOfRange { key: "seq", .. })
        ));
        assert!(matches!(
            Announcement::sign(draft("a/b"), &key(1)),
            Err(E::UnsafeName { .. })
        ));
    }

    #[test]
    fn rejects_oversized_input() {
        let text = format!("p2pu1:{}", "A".repeat(MAX_WIRE_LEN));
        assert!(matches!(
            Announcement::decode(text),
            Err(E::TooLong {
                max: MAX_WIRE_LEN,
                ..
            })
        ));
    }

    #[test]
    fn rejects_bad_prefix() {
        let text = signed("x").to_wire().replacen("p2pu1:", "p2pu2:", 1);
        let err = Announcement::decode(text).unwrap_err();
        assert!(
            matches!(&err, E::BadPrefix { start } if start == "p2pu2:"),
            "{err}"
        );
        assert!(matches!(Announcement::decode(""), Err(E::BadPrefix { .. })));
    }

    #[test]
    fn rejects_bad_base64() {
        for text in [
            "p2pu1:a*b",
            "p2pu1:ZA==",
            "p2pu1:Z",
            "p2pu1:ZB",
            "p2pu1:ab+/",
        ] {
            let err = Announcement::decode(text).unwrap_err();
            assert!(matches!(err, E::BadBase64(_)), "{text}: {err}");
        }
    }

    #[test]
    fn rejects_non_dictionaries_and_nested_values() {
        for bencode in [
            &b"hello"[..],
            b"li1ee",
            b"d1:vi1e",
            b"d1:vli1eee",
            b"d1:vd1:ai1eee",
            b"",
        ] {
            let err = Announcement::decode(wire(bencode)).unwrap_err();
            assert!(matches!(err, E::Bencode(_)), "{bencode:?}: {err}");
        }
    }

    #[test]
    fn rejects_duplicate_key() {
        let err = mutated(b"1:vi1e", b"1:vi1e1:vi1e");
        assert!(
            matches!(&err, E::DuplicateKey { key } if key == "v"),
            "{err}"
        );
    }

    #[test]
    fn rejects_unknown_key() {
        let err = mutated(b"1:vi1e", b"1:vi1e1:xi0e");
        assert!(matches!(&err, E::UnknownKey { key } if key == "x"), "{err}");
    }

    #[test]
    fn rejects_missing_keys() {
        let a = signed("site.pp");
        let sig = [b"3:sig64:", &a.sig[..]].concat();
        let cases: [(&[u8], &str); 4] = [
            (&sig, "sig"),
            (b"1:vi1e", "v"),
            (b"4:kind8:manifest", "kind"),
            (b"3:leni1234e", "len"),
        ];
        for (entry, key) in cases {
            let err = mutated(entry, b"");
            assert!(
                matches!(&err, E::MissingKey { key: k } if *k == key),
                "{err}"
            );
        }
    }

    #[test]
    fn rejects_wrong_lengths() {
        // Shorten each fixed-size value by its first byte.
        let a = signed("site.pp");
        let cases: [(&str, &[u8], usize); 4] = [
            ("ih", &a.info_hash, 20),
            ("sha256", &a.sha256, 32),
            ("kid", &a.kid.0, 8),
            ("sig", &a.sig, 64),
        ];
        for (key, value, want) in cases {
            let entry = |len: usize, value: &[u8]| {
                [format!("{}:{key}{len}:", key.len()).as_bytes(), value].concat()
            };
            let err = mutated(&entry(want, value), &entry(want - 1, &value[1..]));
            assert!(
                matches!(&err, E::WrongLength { key: k, want: w, got } if *k == key && *w == want && *got == want - 1),
                "{key}: {err}"
            );
        }
    }

    #[test]
    fn rejects_wrong_types() {
        let err = mutated(b"3:leni1234e", b"3:len4:1234");
        assert!(matches!(err, E::WrongType { key: "len", .. }), "{err}");
        let err = mutated(b"4:kind8:manifest", b"4:kindi8e");
        assert!(matches!(err, E::WrongType { key: "kind", .. }), "{err}");
    }

    #[test]
    fn rejects_other_versions() {
        let err = mutated(b"1:vi1e", b"1:vi2e");
        assert!(matches!(err, E::UnsupportedVersion { got: 2 }), "{err}");
    }

    #[test]
    fn rejects_negative_ints() {
        let err = mutated(b"3:leni1234e", b"3:leni-1234e");
        assert!(
            matches!(
                err,
                E::OutOfRange {
                    key: "len",
                    value: -1234
                }
            ),
            "{err}"
        );
        let err = mutated(b"3:seqi", b"3:seqi-");
        assert!(matches!(err, E::OutOfRange { key: "seq", .. }), "{err}");
    }

    #[test]
    fn rejects_unknown_kind() {
        let err = mutated(b"4:kind8:manifest", b"4:kind8:manifesx");
        assert!(
            matches!(&err, E::UnknownKind { kind } if kind == "manifesx"),
            "{err}"
        );
        let err = mutated(b"4:kind8:manifest", b"4:kind8:\xffanifest");
        assert!(matches!(err, E::UnknownKind { .. }), "{err}");
    }

    #[test]
    fn rejects_unsafe_names_on_the_wire() {
        for (to, reason) in [
            (&b"4:name2:.."[..], "`.` and `..` are not names"),
            (b"4:name3:a/b", "contains `/`"),
            (b"4:name0:", "empty"),
            (b"4:name3:a\0b", "contains NUL or a control character"),
            (b"4:name2:\xc3\x28", "not UTF-8"),
        ] {
            let err = mutated(b"4:name7:site.pp", to);
            assert!(
                matches!(&err, E::UnsafeName { reason: r, .. } if *r == reason),
                "{err}"
            );
        }
        let long = [&b"4:name65:"[..], &[b'a'; 65]].concat();
        let err = mutated(b"4:name7:site.pp", &long);
        assert!(matches!(err, E::UnsafeName { .. }), "{err}");
    }

    #[test]
    fn validate_name_cases() {
        for good in [
            "site.pp",
            "a",
            "mod-1.2.tar.gz",
            "ünïcode",
            &"x".repeat(64),
            "...",
            ".hidden",
        ] {
            validate_name(good).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "/",
            "a\0",
            "tab\there",
            "del\u{7f}",
            "c1\u{85}",
            &"x".repeat(65),
            &"é".repeat(33),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rejects_non_canonical_bencode() {
        // Leading zero and plus sign parse as the same integer.
        let err = mutated(b"3:leni1234e", b"3:leni01234e");
        assert!(matches!(err, E::NonCanonical), "{err}");
        let err = mutated(b"3:leni1234e", b"3:leni+1234e");
        assert!(matches!(err, E::NonCanonical), "{err}");
        // Keys out of order.
        let a = signed("x");
        let bytes = a.to_bencode();
        let swapped = [&b"d1:vi1e"[..], &bytes[1..bytes.len() - 7], b"e"].concat();
        assert!(matches!(
            Announcement::decode(wire(&swapped)),
            Err(E::NonCanonical)
        ));
        // Trailing bytes after the dictionary.
        let trailing = [&bytes[..], b"0:"].concat();
        assert!(matches!(
            Announcement::decode(wire(&trailing)),
            Err(E::NonCanonical)
        ));
    }

    #[test]
    fn verify_rejects_unknown_revoked_and_forged() {
        let a = signed("x");
        let other = TrustedKeys::from_keys([key(2).verifying_key()]);
        assert!(matches!(a.verify(&other), Err(E::UnknownSigner { .. })));

        let dir = tempfile::tempdir().unwrap();
        TrustedKeys::add(
            dir.path(),
            &crate::keys::PublicKey {
                key: key(1).verifying_key(),
                comment: String::new(),
            },
        )
        .unwrap();
        TrustedKeys::add(
            dir.path(),
            &crate::keys::PublicKey {
                key: key(2).verifying_key(),
                comment: String::new(),
            },
        )
        .unwrap();
        TrustedKeys::revoke(dir.path(), a.kid(), "leaked").unwrap();
        let revoked = TrustedKeys::load(dir.path()).unwrap();
        assert!(matches!(a.verify(&revoked), Err(E::RevokedSigner { .. })));

        let mut forged = a.clone();
        forged.seq += 1;
        assert!(matches!(
            forged.verify(&trusted()),
            Err(E::BadSignature { .. })
        ));
        // Signed by key 2 but claiming key 1's id.
        let mut impostor = Announcement::sign(draft("x"), &key(2)).unwrap();
        impostor.kid = a.kid;
        assert!(matches!(
            impostor.verify(&trusted()),
            Err(E::BadSignature { .. })
        ));
    }

    /// Flips one bit of a wire text and reports whether decode+verify still accepts it.
    fn accepts_flip(text: &[u8], bit: usize, trusted: &TrustedKeys) -> bool {
        let mut flipped = text.to_vec();
        flipped[bit / 8] ^= 1 << (bit % 8);
        Announcement::decode(&flipped).is_ok_and(|a| a.verify(trusted).is_ok())
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let trusted = trusted();
        let text = longest(false).to_wire();
        for bit in 0..text.len() * 8 {
            assert!(!accepts_flip(text.as_bytes(), bit, &trusted), "bit {bit}");
        }
    }

    fn arb_draft() -> impl Strategy<Value = Draft> {
        let name = "[^/\\p{Cc}]{1,20}".prop_filter("safe name", |n| validate_name(n).is_ok());
        let kind = proptest::sample::select(Kind::ALL.to_vec());
        (
            0..=i64::MAX as u64,
            name,
            kind,
            any::<[u8; 20]>(),
            0..=i64::MAX as u64,
            any::<[u8; 32]>(),
        )
            .prop_map(|(seq, name, kind, info_hash, len, sha256)| Draft {
                seq,
                name,
                kind,
                info_hash,
                len,
                sha256,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn prop_round_trip(d in arb_draft(), seed in any::<[u8; 32]>()) {
            let signer = SigningKey::from_bytes(&seed);
            let a = Announcement::sign(d, &signer).unwrap();
            let text = a.to_wire();
            prop_assert!(text.len() <= MAX_WIRE_LEN);
            let back = Announcement::decode(&text).unwrap();
            prop_assert_eq!(&back, &a);
            prop_assert!(back.verify(&TrustedKeys::from_keys([signer.verifying_key()])).is_ok());
        }

        #[test]
        fn prop_single_bit_flip_rejected(d in arb_draft(), bit in any::<proptest::sample::Index>()) {
            let a = Announcement::sign(d, &key(1)).unwrap();
            let text = a.to_wire();
            prop_assert!(!accepts_flip(text.as_bytes(), bit.index(text.len() * 8), &trusted()));
        }

        #[test]
        fn prop_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Announcement::decode(&bytes);
        }

        /// Whatever a changed byte still lets through is canonical: it re-encodes to exactly
        /// the text that was decoded, so two spellings of one announcement cannot exist.
        #[test]
        fn prop_what_decodes_after_a_changed_byte_is_canonical(
            d in arb_draft(),
            at in any::<proptest::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut text = Announcement::sign(d, &key(1)).unwrap().to_wire().into_bytes();
            let at = at.index(text.len());
            text[at] = byte;
            if let Ok(back) = Announcement::decode(&text) {
                let text = text.strip_suffix(b"\n").unwrap_or(&text);
                let again = back.to_wire();
                prop_assert_eq!(again.as_bytes(), text);
            }
        }

        #[test]
        fn prop_decode_never_panics_on_base64(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Announcement::decode(wire(&bytes));
        }
    }
}
