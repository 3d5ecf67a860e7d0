//! The heartbeat (TUF's timestamp and snapshot roles in one) and the snapshot document it
//! names. A heartbeat is a canonical bencoded dictionary sent as `p2pu-hb1:` + unpadded
//! URL-safe base64: the fleet, the time it was signed, and the SHA-256 and entry count of a
//! snapshot document, signed like a v2 announcement (`sigs`, same rules, same verification).
//! The snapshot document is the canonical bencoded list of `[name, seq, SHA-256 of the wire
//! text]` of the latest announcement of every name the signing host knows, sorted by name; it
//! travels by hash from members' seed servers, as `<snap hex>.snapshot`.
//!
//! Decoding checks structure only and refuses every non-canonical encoding (one heartbeat has
//! one wire text); [`Heartbeat::verify`] checks the signers. Whether a heartbeat is fresh,
//! newer than the kept one, or from this fleet is the agent's policy.

use super::announcement::{
    self, decode_sigs, encode_sigs, put_bytes, put_int, validate_name, AnnouncementError, FleetId,
    Sig, Signers, MAX_EXPIRES, MAX_SIGS,
};
use super::bencode::{self, Kind as BKind, Value};
use super::document::{Envelope, EnvelopeError};
use crate::keys::{KeyId, TrustedKeys};
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

/// What every heartbeat wire text starts with.
pub const WIRE_PREFIX: &str = "p2pu-hb1:";
/// The longest heartbeat with one signature: with the event name
/// [`HEARTBEAT_EVENT`](super::serf_names::HEARTBEAT_EVENT) it fits Serf's default 482 bytes.
pub const MAX_WIRE_LEN_ONE_SIG: usize = 267;
/// The longest heartbeat (with [`MAX_SIGS`] signatures); longer texts are refused unread.
pub const MAX_WIRE_LEN: usize = 748;
/// The largest snapshot document a node fetches: 64 KiB is some 800 names of 64 bytes.
pub const MAX_SNAPSHOT_BYTES: usize = 64 * 1024;
/// What the seed servers call a snapshot document: `<snap hex>` + this.
pub const SNAPSHOT_SUFFIX: &str = ".snapshot";
/// The name signature errors give a heartbeat.
const WHAT: &str = "heartbeat";

const KEYS: [&str; 6] = ["count", "fleet", "sigs", "snap", "time", "v"];

#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error("heartbeat is {len} bytes, longer than any heartbeat ({MAX_WIRE_LEN})")]
    TooLong { len: usize },
    #[error("heartbeat does not start with `{WIRE_PREFIX}`")]
    BadPrefix,
    #[error("heartbeat is not unpadded URL-safe base64")]
    BadBase64(#[source] base64::DecodeError),
    #[error("{what} is not canonical bencode: {source}")]
    Bencode {
        what: &'static str,
        #[source]
        source: bencode::BencodeError,
    },
    #[error("heartbeat is not a bencoded dictionary")]
    NotDict,
    #[error("heartbeat has unknown key {key:?}")]
    UnknownKey { key: String },
    #[error("heartbeat lacks key `{key}`, or it is not {want}")]
    BadField {
        key: &'static str,
        want: &'static str,
    },
    #[error("heartbeat version is {got}, this p2pu reads version 1")]
    UnsupportedVersion { got: i64 },
    #[error("heartbeat `sigs`: {0}")]
    Sigs(#[source] AnnouncementError),
    #[error("heartbeat signature: {0}")]
    Signature(#[source] AnnouncementError),
    #[error("snapshot document is {len} bytes, more than the {MAX_SNAPSHOT_BYTES} a node takes")]
    SnapshotTooLarge { len: usize },
    #[error("snapshot document entry {index} is not [name, seq, 32-byte SHA-256] ({why})")]
    BadEntry { index: usize, why: String },
    #[error("snapshot document is not sorted by name, or names {name:?} twice")]
    UnsortedEntries { name: String },
}

use HeartbeatError as E;

/// The line around a heartbeat: the one envelope every signed text shares.
const ENVELOPE: Envelope = Envelope {
    prefix: WIRE_PREFIX,
    max_len: MAX_WIRE_LEN,
    keys: &KEYS,
};

impl From<EnvelopeError> for HeartbeatError {
    fn from(error: EnvelopeError) -> HeartbeatError {
        match error {
            EnvelopeError::TooLong { len, .. } => E::TooLong { len },
            EnvelopeError::BadPrefix { .. } => E::BadPrefix,
            EnvelopeError::BadBase64(e) => E::BadBase64(e),
        }
    }
}

/// Whether `text` looks like a heartbeat (the spool's and the handler's filter).
pub fn is_wire(text: &[u8]) -> bool {
    text.starts_with(WIRE_PREFIX.as_bytes())
}

/// One name's latest announcement as a snapshot lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub seq: u64,
    /// SHA-256 of the announcement's wire text (what a node is offered must hash to this).
    pub wire_sha256: [u8; 32],
}

impl Entry {
    pub fn of(name: &str, seq: u64, wire: &str) -> Entry {
        Entry {
            name: name.to_string(),
            seq,
            wire_sha256: Sha256::digest(wire.trim().as_bytes()).into(),
        }
    }
}

/// The snapshot document: every name's latest announcement, sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    entries: Vec<Entry>,
}

impl Snapshot {
    /// The snapshot of `entries` (any order; a name listed twice keeps its highest seq).
    pub fn new(mut entries: Vec<Entry>) -> Snapshot {
        entries.sort_by(|a, b| a.name.cmp(&b.name).then(b.seq.cmp(&a.seq)));
        entries.dedup_by(|later, first| later.name == first.name);
        Snapshot { entries }
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The canonical encoding, which [`Snapshot::digest`] hashes.
    pub fn to_bencode(&self) -> Vec<u8> {
        let mut out = vec![b'l'];
        for entry in &self.entries {
            out.push(b'l');
            put_raw(&mut out, entry.name.as_bytes());
            out.extend_from_slice(format!("i{}e", entry.seq).as_bytes());
            put_raw(&mut out, &entry.wire_sha256);
            out.push(b'e');
        }
        out.push(b'e');
        out
    }

    /// SHA-256 of the canonical encoding: a heartbeat's `snap`.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.to_bencode()).into()
    }

    /// Parses a snapshot document strictly (canonical, sorted, every name a valid
    /// announcement name); its hash is checked against a heartbeat by the caller.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, HeartbeatError> {
        if bytes.len() > MAX_SNAPSHOT_BYTES {
            return Err(E::SnapshotTooLarge { len: bytes.len() });
        }
        let value = bencode::parse(bytes).map_err(|source| E::Bencode {
            what: "snapshot document",
            source,
        })?;
        let Some(items) = value.as_list() else {
            return Err(E::BadEntry {
                index: 0,
                why: "the document is not a list".into(),
            });
        };
        let mut entries: Vec<Entry> = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let entry = entry_of(item).map_err(|why| E::BadEntry { index, why })?;
            if entries.last().is_some_and(|last| last.name >= entry.name) {
                return Err(E::UnsortedEntries { name: entry.name });
            }
            entries.push(entry);
        }
        let snapshot = Snapshot { entries };
        // The parser refuses non-canonical bencode; this also pins the shape.
        if snapshot.to_bencode() != bytes {
            return Err(E::BadEntry {
                index: 0,
                why: "not the canonical encoding".into(),
            });
        }
        Ok(snapshot)
    }
}

fn entry_of(item: &Value<'_>) -> Result<Entry, String> {
    let [name, seq, hash] = item.as_list().ok_or("not a list")? else {
        return Err("not 3 items".into());
    };
    let name = name.as_bytes().ok_or("name is not a byte string")?;
    let name = String::from_utf8(name.to_vec()).map_err(|_| "name is not UTF-8".to_string())?;
    validate_name(&name).map_err(|e| e.to_string())?;
    let seq = seq
        .as_int()
        .and_then(|s| u64::try_from(s).ok())
        .ok_or("seq is not a non-negative integer")?;
    let wire_sha256 = hash
        .as_bytes()
        .and_then(|h| <[u8; 32]>::try_from(h).ok())
        .ok_or("hash is not 32 bytes")?;
    Ok(Entry {
        name,
        seq,
        wire_sha256,
    })
}

/// A structurally valid heartbeat; call [`Heartbeat::verify`] before trusting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    fleet: FleetId,
    /// Unix seconds when it was signed.
    time: u64,
    snap: [u8; 32],
    count: u64,
    /// Sorted by key id, no key twice.
    sigs: Vec<Sig>,
}

impl Heartbeat {
    /// Signs a heartbeat for `fleet` at `time` naming `snapshot`.
    pub fn sign(
        fleet: FleetId,
        time: u64,
        snapshot: &Snapshot,
        signer: &SigningKey,
    ) -> Result<Heartbeat, HeartbeatError> {
        if time > MAX_EXPIRES {
            return Err(E::BadField {
                key: "time",
                want: "unix seconds of at most 10 digits",
            });
        }
        let len = snapshot.to_bencode().len();
        if len > MAX_SNAPSHOT_BYTES {
            // Every node would refuse to fetch it.
            return Err(E::SnapshotTooLarge { len });
        }
        let mut heartbeat = Heartbeat {
            fleet,
            time,
            snap: snapshot.digest(),
            count: snapshot.entries.len() as u64,
            sigs: Vec::new(),
        };
        heartbeat.add_signature(signer);
        Ok(heartbeat)
    }

    /// Adds `signer`'s signature (up to [`MAX_SIGS`]; a key already there changes nothing).
    pub fn add_signature(&mut self, signer: &SigningKey) {
        let kid = KeyId::of(&signer.verifying_key());
        let sig = signer.sign(&self.bencode(false)).to_bytes();
        if let Err(at) = self.sigs.binary_search_by_key(&kid, |(k, _)| *k) {
            if self.sigs.len() < MAX_SIGS {
                self.sigs.insert(at, (kid, sig));
            }
        }
    }

    pub fn fleet(&self) -> FleetId {
        self.fleet
    }
    pub fn time(&self) -> u64 {
        self.time
    }
    pub fn snap(&self) -> &[u8; 32] {
        &self.snap
    }
    pub fn count(&self) -> u64 {
        self.count
    }
    pub fn kids(&self) -> Vec<KeyId> {
        self.sigs.iter().map(|(kid, _)| *kid).collect()
    }

    pub fn to_wire(&self) -> String {
        ENVELOPE.text(&self.bencode(true))
    }

    // By hand, in sorted key order: canonical by construction.
    fn bencode(&self, with_sigs: bool) -> Vec<u8> {
        let mut out = vec![b'd'];
        put_int(&mut out, "count", self.count);
        put_bytes(&mut out, "fleet", &self.fleet.0);
        if with_sigs {
            put_bytes(&mut out, "sigs", &encode_sigs(&self.sigs));
        }
        put_bytes(&mut out, "snap", &self.snap);
        put_int(&mut out, "time", self.time);
        put_int(&mut out, "v", 1);
        out.push(b'e');
        out
    }

    /// Parses a wire text (one trailing newline, as Serf appends, is ignored).
    pub fn decode(wire: impl AsRef<[u8]>) -> Result<Heartbeat, HeartbeatError> {
        let bytes = ENVELOPE.bytes(wire.as_ref())?;
        // Sorted, unique keys, no leading zeros, nothing trailing: the parser refuses the rest.
        let value = bencode::parse(&bytes).map_err(|source| E::Bencode {
            what: "heartbeat",
            source,
        })?;
        let BKind::Dict(entries) = &value.kind else {
            return Err(E::NotDict);
        };
        // The version first: a later version may have other keys.
        let version = value.get("v").and_then(Value::as_int);
        match version {
            Some(1) => {}
            Some(got) => return Err(E::UnsupportedVersion { got }),
            None => {
                return Err(E::BadField {
                    key: "v",
                    want: "an integer",
                })
            }
        }
        if let Some((key, _)) = entries
            .iter()
            .find(|(k, _)| !KEYS.iter().any(|known| known.as_bytes() == *k))
        {
            return Err(E::UnknownKey {
                key: String::from_utf8_lossy(key).into_owned(),
            });
        }
        let uint = |key: &'static str, max: u64| {
            value
                .get(key)
                .and_then(Value::as_int)
                .and_then(|v| u64::try_from(v).ok())
                .filter(|v| *v <= max)
                .ok_or(E::BadField {
                    key,
                    want: "a non-negative integer in range",
                })
        };
        let fixed = |key: &'static str, want: &'static str| {
            value
                .get(key)
                .and_then(Value::as_bytes)
                .ok_or(E::BadField { key, want })
        };
        let fleet = <[u8; 8]>::try_from(fixed("fleet", "8 bytes")?).map_err(|_| E::BadField {
            key: "fleet",
            want: "8 bytes",
        })?;
        let snap = <[u8; 32]>::try_from(fixed("snap", "32 bytes")?).map_err(|_| E::BadField {
            key: "snap",
            want: "32 bytes",
        })?;
        let heartbeat = Heartbeat {
            fleet: FleetId(fleet),
            time: uint("time", MAX_EXPIRES)?,
            snap,
            count: uint("count", i64::MAX as u64)?,
            sigs: decode_sigs(fixed("sigs", "a byte string")?, MAX_SIGS).map_err(E::Sigs)?,
        };
        if heartbeat.bencode(true) != bytes {
            return Err(E::BadField {
                key: "v",
                want: "the canonical encoding",
            });
        }
        Ok(heartbeat)
    }

    /// Checks every signature as [`announcement::Announcement::verify`] does: the signers
    /// that count are trusted, unrevoked and valid; how many are enough is the agent's policy.
    pub fn verify(&self, trusted: &TrustedKeys) -> Result<Signers, HeartbeatError> {
        announcement::verify_sigs(&self.bencode(false), &self.sigs, trusted, WHAT)
            .map_err(E::Signature)
    }
}

fn put_raw(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PublicKey;
    use crate::serf_names::HEARTBEAT_EVENT;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn trusting(keys: &[&SigningKey]) -> TrustedKeys {
        let mut trusted = TrustedKeys::default();
        for k in keys {
            trusted.insert(PublicKey {
                key: k.verifying_key(),
                comment: "ops".into(),
            });
        }
        trusted
    }

    fn snapshot() -> Snapshot {
        Snapshot::new(vec![
            Entry::of("site.pp", 7, "p2pu2:seven"),
            Entry::of("base.pp", 3, "p2pu2:three"),
            Entry::of("site.pp", 5, "p2pu2:five"),
        ])
    }

    #[test]
    fn round_trips_and_verifies_and_the_worst_case_fits_the_event() {
        let snap = snapshot();
        assert_eq!(snap.entries().len(), 2);
        assert_eq!(snap.entries()[1].seq, 7);
        assert_eq!(Snapshot::decode(&snap.to_bencode()).unwrap(), snap);
        let mut hb = Heartbeat::sign(FleetId([3; 8]), MAX_EXPIRES, &snap, &key(1)).unwrap();
        hb.count = i64::MAX as u64;
        hb.sigs.clear();
        hb.add_signature(&key(1));
        let wire = hb.to_wire();
        assert_eq!(wire.len(), MAX_WIRE_LEN_ONE_SIG);
        assert!(wire.len() + HEARTBEAT_EVENT.len() <= 482);
        assert_eq!(Heartbeat::decode(format!("{wire}\n")).unwrap(), hb);
        let trusted = trusting(&[&key(1)]);
        assert_eq!(hb.verify(&trusted).unwrap().valid.len(), 1);
        for n in 2..=MAX_SIGS as u8 {
            hb.add_signature(&key(n));
        }
        assert_eq!(hb.to_wire().len(), MAX_WIRE_LEN);
        assert_eq!(Heartbeat::decode(hb.to_wire()).unwrap(), hb);
    }

    #[test]
    fn a_bad_signature_or_an_unknown_signer_is_refused() {
        let hb = Heartbeat::sign(FleetId([3; 8]), 1_800_000_000, &snapshot(), &key(1)).unwrap();
        let strangers = trusting(&[&key(2)]);
        assert!(matches!(
            hb.verify(&strangers),
            Err(E::Signature(AnnouncementError::UnknownSigner { .. }))
        ));
        let mut forged = hb.clone();
        forged.time += 1;
        let trusted = trusting(&[&key(1)]);
        assert!(matches!(
            forged.verify(&trusted),
            Err(E::Signature(AnnouncementError::BadSignature { .. }))
        ));
        assert!(hb.verify(&trusted).is_ok());
    }

    #[test]
    fn unknown_keys_other_versions_and_non_canonical_texts_are_refused() {
        let hb = Heartbeat::sign(FleetId([3; 8]), 1_800_000_000, &snapshot(), &key(1)).unwrap();
        let bytes = hb.bencode(true);
        let wire = |b: &[u8]| ENVELOPE.text(b);
        // An extra key `x` (sorts last).
        let mut extra = bytes[..bytes.len() - 1].to_vec();
        extra.extend_from_slice(b"1:xi0ee");
        assert!(matches!(
            Heartbeat::decode(wire(&extra)),
            Err(E::UnknownKey { .. })
        ));
        let replace = |from: &[u8], to: &[u8]| {
            let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
            [&bytes[..at], to, &bytes[at + from.len()..]].concat()
        };
        assert!(matches!(
            Heartbeat::decode(wire(&replace(b"1:vi1e", b"1:vi2e"))),
            Err(E::UnsupportedVersion { got: 2 })
        ));
        assert!(matches!(
            Heartbeat::decode(wire(&replace(b"4:timei", b"4:timei0"))),
            Err(E::Bencode { .. })
        ));
        assert!(matches!(
            Heartbeat::decode(format!("p2pu2:{}", &hb.to_wire()[9..])),
            Err(E::BadPrefix)
        ));
        // A snapshot out of order, or listing a name twice.
        let mut doc = b"l".to_vec();
        for name in ["b", "a"] {
            doc.extend_from_slice(format!("l1:{name}i1e32:").as_bytes());
            doc.extend_from_slice(&[0; 32]);
            doc.push(b'e');
        }
        doc.push(b'e');
        assert!(matches!(
            Snapshot::decode(&doc),
            Err(E::UnsortedEntries { .. })
        ));
    }

    /// The vectors in tests/vectors/heartbeat decode to what their names say.
    #[test]
    fn vectors() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/heartbeat");
        let trusted = trusting(&[&key(1)]);
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.ends_with(".hb") {
                continue;
            }
            let text = std::fs::read(&path).unwrap();
            if name.starts_with("valid") {
                let hb = Heartbeat::decode(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
                hb.verify(&trusted).unwrap();
                let doc = std::fs::read(dir.join("snapshot.bencode")).unwrap();
                assert_eq!(Snapshot::decode(&doc).unwrap().digest(), *hb.snap());
            } else if name.starts_with("invalid") {
                assert!(Heartbeat::decode(&text).is_err(), "{name} decoded");
            } else {
                continue;
            }
            seen += 1;
        }
        assert!(seen >= 4, "{seen} vectors");
    }
}
