//! Announcements, the signed update notice both transports carry (Serf events and the NAT
//! overlay): a canonical bencoded dictionary, sent as `p2pu<v>:` + unpadded URL-safe base64.
//! Version 1 (`p2pu1:`) carries one signature and is valid forever on any fleet; version 2
//! (`p2pu2:`) adds an expiry and the fleet id it is meant for, and carries up to [`MAX_SIGS`]
//! signatures over the same bytes, so a node can require k of them (thresholds).
//!
//! Decoding checks structure only (and rejects every non-canonical encoding, so one announcement
//! has exactly one wire text); [`Announcement::verify`] checks the signers and the signatures.
//! Whether a version, an expiry, a fleet or a number of signers is acceptable is the intake's
//! policy, not this module's.

use crate::document::{Envelope, EnvelopeError};
use crate::keys::{KeyId, TrustedKeys};
use ed25519_dalek::{Signature, Signer, SigningKey};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// What every version 1 wire text starts with; the digit is the format version.
pub const WIRE_PREFIX: &str = "p2pu1:";
/// What every version 2 wire text starts with.
pub const WIRE_PREFIX_V2: &str = "p2pu2:";
pub const MAX_NAME_LEN: usize = 64;
/// The longest possible v1 wire text (64-byte name, `manifest`, seq and len of 19 digits).
/// With the event name [`UPDATE_EVENT`](super::serf_names::UPDATE_EVENT) it fits Serf's 482
/// bytes.
pub const MAX_WIRE_LEN_V1: usize = 414;
/// The longest possible v2 wire text with one signature, bound to a rollout plan (`4:plani1e`
/// adds 12 characters): it fits Serf's default 482 bytes with the event name, as v1 does.
pub const MAX_WIRE_LEN_ONE_SIG: usize = 464;
/// The most signatures one v2 announcement carries: the most whose worst case still fits
/// the `user_event_size_limit` of 1024 that `init` renders (with the event name).
pub const MAX_SIGS: usize = 6;
/// The longest possible wire text of any version (v2 with [`MAX_SIGS`] signatures); anything
/// longer is rejected before decoding.
pub const MAX_WIRE_LEN: usize = 945;
/// The latest expiry a v2 announcement may state (unix seconds, the year 2286): ten digits
/// at most, which keeps the one-signature worst case within Serf's default limit.
pub const MAX_EXPIRES: u64 = 9_999_999_999;
/// One signature entry of `sigs`: the signer's key id and its Ed25519 signature.
const SIG_ENTRY: usize = 8 + 64;

const KEYS_V1: [&str; 9] = [
    "ih", "kid", "kind", "len", "name", "seq", "sha256", "sig", "v",
];
const KEYS_V2: [&str; 11] = [
    "exp", "fleet", "ih", "kind", "len", "name", "plan", "seq", "sha256", "sigs", "v",
];

#[derive(Debug, thiserror::Error)]
pub enum AnnouncementError {
    #[error("announcement is {len} bytes, longer than any announcement of its version ({max})")]
    TooLong { len: usize, max: usize },
    #[error("announcement does not start with `{WIRE_PREFIX}` or `{WIRE_PREFIX_V2}` (starts with {start:?})")]
    BadPrefix { start: String },
    #[error("announcement is not unpadded URL-safe base64")]
    BadBase64(#[source] base64::DecodeError),
    /// Not canonical bencode (the reader's error says where), or canonical but not a flat
    /// dictionary (no source).
    #[error("announcement is not a canonical bencoded dictionary of integers and byte strings")]
    Bencode(#[source] Option<crate::bencode::BencodeError>),
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
    #[error("announcement key `{key}` is {value}, want an integer from 0 to {max}")]
    OutOfRange {
        key: &'static str,
        value: i128,
        max: u64,
    },
    #[error("announcement version is {got}, this p2pu reads versions 1 and 2")]
    UnsupportedVersion { got: i64 },
    #[error("announcement says version {got} inside a `p2pu{prefix}:` wire text")]
    VersionMismatch { prefix: u8, got: i64 },
    #[error("`sigs` is {got} bytes: want 1 to {max} entries of 72 bytes (key id, signature)")]
    BadSigs { got: usize, max: usize },
    #[error("announcement `sigs` is not sorted by key id, or names key {kid} twice")]
    UnsortedSigs { kid: KeyId },
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
    #[error("signatures of different announcements cannot be combined: {what}")]
    CannotCombine { what: String },
    #[error("fleet id {text:?} is not 16 hexadecimal digits")]
    BadFleetId { text: String },
    #[error("announcement {name:?} is bound to a rollout plan, and its plan was not given: its signatures cover the plan's SHA-256")]
    PlanMissing { name: String },
    #[error("announcement key `plan` is {got}, want 1 (present) or no key at all")]
    BadPlanFlag { got: i64 },
}

use AnnouncementError as E;

/// The lines around both versions: the one envelope every signed text shares. The keys are
/// [`Fields::parse`]'s to check (a v1 text may hold a `v` of 2, refused as a mismatch).
const ENVELOPE_V1: Envelope = Envelope {
    prefix: WIRE_PREFIX,
    max_len: MAX_WIRE_LEN_V1,
    keys: &KEYS_V1,
};
const ENVELOPE_V2: Envelope = Envelope {
    prefix: WIRE_PREFIX_V2,
    max_len: MAX_WIRE_LEN,
    keys: &KEYS_V2,
};

/// What the payload is, which decides how a node applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
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

/// Which fleet a node belongs to: 8 random bytes, written as 16 hexadecimal digits. A v2
/// announcement names the fleet it is for, so a staging fleet's update is refused by
/// production nodes that trust the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FleetId(pub [u8; 8]);

impl FleetId {
    pub fn generate() -> FleetId {
        use rand::RngCore;
        let mut id = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut id);
        FleetId(id)
    }
}

impl fmt::Display for FleetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl FromStr for FleetId {
    type Err = AnnouncementError;
    fn from_str(text: &str) -> Result<FleetId, E> {
        let mut id = [0u8; 8];
        let lower = text.len() == 16 && !text.bytes().any(|b| b.is_ascii_uppercase());
        match hex::decode_to_slice(text, &mut id) {
            Ok(()) if lower => Ok(FleetId(id)),
            _ => Err(E::BadFleetId {
                text: text.to_string(),
            }),
        }
    }
}

/// What binds a v2 announcement to a time and a fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// Unix seconds after which no node accepts it.
    pub expires: u64,
    pub fleet: FleetId,
}

/// Whether `text` looks like an announcement of either version (the NAT client's filter
/// before it spools; the intake decides).
pub fn is_wire(text: &[u8]) -> bool {
    text.starts_with(WIRE_PREFIX.as_bytes()) || text.starts_with(WIRE_PREFIX_V2.as_bytes())
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
    /// `None`: version 1.
    binding: Option<Binding>,
    /// Sorted by key id, no key twice; exactly one in version 1.
    sigs: Vec<(KeyId, [u8; 64])>,
    /// Version 2 only: whether the signatures also cover a rollout plan's SHA-256
    /// (`4:plani1e`; the plan travels beside the metainfo, not in the event).
    plan: bool,
    /// The plan document, once known: given when signing, attached after a node found and
    /// verified it. Not part of the wire text.
    attached_plan: Option<Vec<u8>>,
}

/// What [`Announcement::verify`] found: the distinct trusted, unrevoked keys whose signature
/// is valid, and the signatures that did not count, with why.
#[derive(Debug)]
pub struct Signers {
    pub valid: Vec<KeyId>,
    pub ignored: Vec<AnnouncementError>,
}

impl Announcement {
    /// Signs `draft` as version 1 with `key`; refuses what [`Announcement::decode`] would
    /// reject.
    pub fn sign(draft: Draft, signer: &SigningKey) -> Result<Announcement, AnnouncementError> {
        Announcement::unsigned(draft, None)?.signed_by(signer)
    }

    /// Signs `draft` as version 2, bound to `binding`'s expiry and fleet.
    pub fn sign_v2(
        draft: Draft,
        binding: Binding,
        signer: &SigningKey,
    ) -> Result<Announcement, AnnouncementError> {
        if binding.expires > MAX_EXPIRES {
            let value = i128::from(binding.expires);
            return Err(E::OutOfRange {
                key: "exp",
                value,
                max: MAX_EXPIRES,
            });
        }
        Announcement::unsigned(draft, Some(binding))?.signed_by(signer)
    }

    /// Signs `draft` as version 2 bound to the rollout plan `plan` (its bytes as served): the
    /// announcement carries only the flag, every signature covers the plan's SHA-256 too.
    pub fn sign_v2_with_plan(
        draft: Draft,
        binding: Binding,
        plan: &[u8],
        signer: &SigningKey,
    ) -> Result<Announcement, AnnouncementError> {
        if binding.expires > MAX_EXPIRES {
            let value = i128::from(binding.expires);
            return Err(E::OutOfRange {
                key: "exp",
                value,
                max: MAX_EXPIRES,
            });
        }
        let mut unsigned = Announcement::unsigned(draft, Some(binding))?;
        unsigned.plan = true;
        unsigned.attached_plan = Some(plan.to_vec());
        unsigned.signed_by(signer)
    }

    fn unsigned(draft: Draft, binding: Option<Binding>) -> Result<Announcement, E> {
        validate_name(&draft.name)?;
        for (key, value) in [("seq", draft.seq), ("len", draft.len)] {
            if i64::try_from(value).is_err() {
                let value = i128::from(value);
                return Err(E::OutOfRange {
                    key,
                    value,
                    max: i64::MAX as u64,
                });
            }
        }
        Ok(Announcement {
            seq: draft.seq,
            name: draft.name,
            kind: draft.kind,
            info_hash: draft.info_hash,
            len: draft.len,
            sha256: draft.sha256,
            binding,
            sigs: Vec::new(),
            plan: false,
            attached_plan: None,
        })
    }

    fn signed_by(mut self, signer: &SigningKey) -> Result<Announcement, E> {
        self.add_signature(signer)?;
        Ok(self)
    }

    /// Adds `signer`'s signature (a v2 co-signer's); signing again with a key that already
    /// signed changes nothing.
    pub fn add_signature(&mut self, signer: &SigningKey) -> Result<(), AnnouncementError> {
        let kid = KeyId::of(&signer.verifying_key());
        if self.binding.is_none() && self.sigs.is_empty() {
            // Version 1 signs its `kid` too: it must be in place before the bytes are taken.
            self.sigs.push((kid, [0; 64]));
            let sig = signer.sign(&self.signed_bytes()).to_bytes();
            self.sigs[0].1 = sig;
            return Ok(());
        }
        let message = self.message(self.attached_plan.as_deref())?;
        let sig = signer.sign(&message).to_bytes();
        self.insert_sig(kid, sig)
    }

    /// What a v2 signature covers: the signed bytes, and the plan's SHA-256 when the
    /// announcement is bound to one.
    fn message(&self, plan: Option<&[u8]>) -> Result<Vec<u8>, AnnouncementError> {
        let mut message = self.signed_bytes();
        if self.plan {
            let plan = plan.ok_or_else(|| E::PlanMissing {
                name: self.name.clone(),
            })?;
            message.extend_from_slice(&crate::plan::Plan::digest(plan));
        }
        Ok(message)
    }

    /// Whether this announcement is bound to a rollout plan.
    pub fn has_plan(&self) -> bool {
        self.plan
    }

    /// The plan document given when signing or attached since.
    pub fn attached_plan(&self) -> Option<&[u8]> {
        self.attached_plan.as_deref()
    }

    /// Keeps the plan document a node found for this announcement (verify checks it).
    pub fn attach_plan(&mut self, plan: &[u8]) {
        self.attached_plan = Some(plan.to_vec());
    }

    /// The same announcement carrying `signer`'s signature alone: a co-signer's detached
    /// signature (`submit --sign-only --with-sig`).
    pub fn cosigned_by(&self, signer: &SigningKey) -> Result<Announcement, AnnouncementError> {
        let mut copy = self.clone();
        copy.sigs.clear();
        copy.add_signature(signer)?;
        Ok(copy)
    }

    /// Takes the signatures of `other`, which must be the same announcement (the same signed
    /// bytes) signed by other keys: how `submit --with-sig` combines detached signatures.
    pub fn combine(&mut self, other: &Announcement) -> Result<(), AnnouncementError> {
        if self.signed_bytes() != other.signed_bytes() {
            // A plan's digest is not in the signed bytes, but both carry the flag there, and
            // the signatures of a different plan simply fail to verify.
            return Err(E::CannotCombine {
                what: format!(
                    "{:?} seq {} and {:?} seq {} differ in what they sign",
                    self.name, self.seq, other.name, other.seq
                ),
            });
        }
        for (kid, sig) in &other.sigs {
            self.insert_sig(*kid, *sig)?;
        }
        Ok(())
    }

    fn insert_sig(&mut self, kid: KeyId, sig: [u8; 64]) -> Result<(), E> {
        let at = match self.sigs.binary_search_by_key(&kid, |(k, _)| *k) {
            Ok(_) => return Ok(()),
            Err(at) => at,
        };
        let most = if self.binding.is_some() { MAX_SIGS } else { 1 };
        if self.sigs.len() >= most {
            return Err(E::CannotCombine {
                what: format!(
                    "{:?} would carry more than {most} signatures (the most a version {} announcement holds)",
                    self.name,
                    self.version()
                ),
            });
        }
        self.sigs.insert(at, (kid, sig));
        Ok(())
    }

    pub fn version(&self) -> u8 {
        if self.binding.is_some() {
            2
        } else {
            1
        }
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
    /// Expiry and fleet; `None` for version 1.
    pub fn binding(&self) -> Option<&Binding> {
        self.binding.as_ref()
    }
    /// The first signer (the only one in version 1).
    pub fn kid(&self) -> KeyId {
        self.sigs
            .first()
            .map(|(kid, _)| *kid)
            .unwrap_or(KeyId([0; 8]))
    }
    /// The first signature (the only one in version 1).
    pub fn sig(&self) -> &[u8; 64] {
        self.sigs.first().map(|(_, sig)| sig).unwrap_or(&[0; 64])
    }
    /// Every signer's key id, sorted.
    pub fn kids(&self) -> Vec<KeyId> {
        self.sigs.iter().map(|(kid, _)| *kid).collect()
    }

    /// The bytes every signature covers: the bencoding without `sig` (v1) or `sigs` (v2).
    pub fn signed_bytes(&self) -> Vec<u8> {
        self.bencode(false)
    }

    /// The complete canonical bencoding.
    pub fn to_bencode(&self) -> Vec<u8> {
        self.bencode(true)
    }

    pub fn to_wire(&self) -> String {
        let envelope = match self.binding {
            None => ENVELOPE_V1,
            Some(_) => ENVELOPE_V2,
        };
        envelope.text(&self.to_bencode())
    }

    // Written by hand, in sorted key order, so encoding cannot fail and is canonical by
    // construction; a test checks it against serde_bencode.
    fn bencode(&self, with_sig: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(300 + SIG_ENTRY * self.sigs.len());
        out.push(b'd');
        match &self.binding {
            None => {
                put_bytes(&mut out, "ih", &self.info_hash);
                put_bytes(&mut out, "kid", &self.kid().0);
                put_bytes(&mut out, "kind", self.kind.as_str().as_bytes());
                put_int(&mut out, "len", self.len);
                put_bytes(&mut out, "name", self.name.as_bytes());
                put_int(&mut out, "seq", self.seq);
                put_bytes(&mut out, "sha256", &self.sha256);
                if with_sig {
                    put_bytes(&mut out, "sig", self.sig());
                }
                put_int(&mut out, "v", 1);
            }
            Some(binding) => {
                put_int(&mut out, "exp", binding.expires);
                put_bytes(&mut out, "fleet", &binding.fleet.0);
                put_bytes(&mut out, "ih", &self.info_hash);
                put_bytes(&mut out, "kind", self.kind.as_str().as_bytes());
                put_int(&mut out, "len", self.len);
                put_bytes(&mut out, "name", self.name.as_bytes());
                if self.plan {
                    put_int(&mut out, "plan", 1);
                }
                put_int(&mut out, "seq", self.seq);
                put_bytes(&mut out, "sha256", &self.sha256);
                if with_sig {
                    put_bytes(&mut out, "sigs", &encode_sigs(&self.sigs));
                }
                put_int(&mut out, "v", 2);
            }
        }
        out.push(b'e');
        out
    }

    /// Parses a wire text of either version (one trailing newline, as Serf appends, is
    /// ignored). Structure only: see [`Announcement::verify`].
    pub fn decode(wire: impl AsRef<[u8]>) -> Result<Announcement, AnnouncementError> {
        let wire = wire.as_ref();
        let (version, envelope) = if wire.starts_with(WIRE_PREFIX.as_bytes()) {
            (1, ENVELOPE_V1)
        } else {
            (2, ENVELOPE_V2)
        };
        let bytes = envelope.bytes(wire).map_err(|error| match error {
            EnvelopeError::TooLong { len, max } => E::TooLong { len, max },
            EnvelopeError::BadPrefix { prefix } => {
                let line = wire.strip_suffix(b"\n").unwrap_or(wire);
                let start = line.get(..prefix.len()).unwrap_or(line);
                E::BadPrefix {
                    start: String::from_utf8_lossy(start).into_owned(),
                }
            }
            EnvelopeError::BadBase64(e) => E::BadBase64(e),
        })?;
        let announcement = Fields::parse(&bytes, version)?.into_announcement(version)?;
        if announcement.to_bencode() != bytes {
            return Err(E::NonCanonical);
        }
        Ok(announcement)
    }

    /// Checks every signature: a signer counts when its key is trusted, not revoked, and its
    /// signature valid (`verify_strict`: no malleable signatures, no small-order keys). The
    /// others are ignored, as TUF ignores them, but when none counts the first reason is the
    /// error. How many signers are enough is the intake's threshold.
    ///
    /// An announcement bound to a rollout plan verifies only with that plan's bytes (`plan`),
    /// and is refused without them ([`AnnouncementError::PlanMissing`]): a node must not act
    /// on it before it knows which nodes, and in which waves, the signers meant.
    pub fn verify(
        &self,
        trusted: &TrustedKeys,
        plan: Option<&[u8]>,
    ) -> Result<Signers, AnnouncementError> {
        let signed = if self.binding.is_some() {
            self.message(plan)?
        } else {
            self.signed_bytes()
        };
        verify_sigs(&signed, &self.sigs, trusted, &self.name)
    }
}

/// One entry of `sigs`: the signer's key id and its Ed25519 signature.
pub(crate) type Sig = (KeyId, [u8; 64]);

/// Checks each of `sigs` over `signed` (see [`Announcement::verify`]); `name` is what the
/// errors call the signed statement. Shared with the heartbeat, whose `sigs` follow the same
/// rules.
pub(crate) fn verify_sigs(
    signed: &[u8],
    sigs: &[Sig],
    trusted: &TrustedKeys,
    name: &str,
) -> Result<Signers, AnnouncementError> {
    let mut signers = Signers {
        valid: Vec::new(),
        ignored: Vec::new(),
    };
    for (kid, sig) in sigs {
        let (name, kid) = (name.to_string(), *kid);
        let Some(signer) = trusted.get(&kid) else {
            signers.ignored.push(if trusted.is_revoked(&kid) {
                E::RevokedSigner { name, kid }
            } else {
                E::UnknownSigner { name, kid }
            });
            continue;
        };
        match signer
            .key
            .key
            .verify_strict(signed, &Signature::from_bytes(sig))
        {
            Ok(()) => signers.valid.push(kid),
            Err(_) => signers.ignored.push(E::BadSignature { name, kid }),
        }
    }
    if signers.valid.is_empty() {
        let first = signers.ignored.into_iter().next();
        return Err(first.unwrap_or(E::MissingKey { key: "sigs" }));
    }
    Ok(signers)
}

/// The packed `sigs` value of a v2 announcement, which the other signed documents
/// (delegations, root documents) share: entries of key id and signature, in order.
pub(crate) fn encode_sigs(sigs: &[(KeyId, [u8; 64])]) -> Vec<u8> {
    sigs.iter()
        .flat_map(|(kid, sig)| kid.0.iter().chain(sig.iter()).copied())
        .collect()
}

/// Reads a packed `sigs` value: 1 to `max` entries of key id and signature, sorted by key id
/// with none twice, so one set of signatures has one spelling and no key counts twice.
pub(crate) fn decode_sigs(
    bytes: &[u8],
    max: usize,
) -> Result<Vec<(KeyId, [u8; 64])>, AnnouncementError> {
    let count = bytes.len() / SIG_ENTRY;
    if bytes.len() % SIG_ENTRY != 0 || !(1..=max).contains(&count) {
        return Err(E::BadSigs {
            got: bytes.len(),
            max,
        });
    }
    let mut sigs: Vec<(KeyId, [u8; 64])> = Vec::with_capacity(count);
    for entry in bytes.chunks_exact(SIG_ENTRY) {
        let (kid, sig) = entry.split_at(8);
        let mut k = [0u8; 8];
        k.copy_from_slice(kid);
        let mut s = [0u8; 64];
        s.copy_from_slice(sig);
        let kid = KeyId(k);
        if sigs.last().is_some_and(|(last, _)| *last >= kid) {
            return Err(E::UnsortedSigs { kid });
        }
        sigs.push((kid, s));
    }
    Ok(sigs)
}

/// Adds `signer`'s signature over `signed` to `sigs` in key-id order (again by the same key
/// changes nothing); refuses more than `max`.
pub(crate) fn add_sig(
    sigs: &mut Vec<(KeyId, [u8; 64])>,
    signed: &[u8],
    signer: &SigningKey,
    max: usize,
) -> Result<(), AnnouncementError> {
    let kid = KeyId::of(&signer.verifying_key());
    let sig = signer.sign(signed).to_bytes();
    merge_sig(sigs, kid, sig, max)
}

/// Takes `other`'s signatures into `sigs` when both sign the same bytes (`--with-sig`);
/// `what` names the two documents in the error.
pub(crate) fn combine_sigs(
    (sigs, signed): (&mut Vec<(KeyId, [u8; 64])>, &[u8]),
    (other, other_signed): (&[(KeyId, [u8; 64])], &[u8]),
    what: &str,
    max: usize,
) -> Result<(), AnnouncementError> {
    if signed != other_signed {
        return Err(E::CannotCombine {
            what: format!("the {what} differ in what they sign"),
        });
    }
    for (kid, sig) in other {
        merge_sig(sigs, *kid, *sig, max)?;
    }
    Ok(())
}

/// Inserts one (key id, signature) entry in key-id order; a key already there is kept.
pub(crate) fn merge_sig(
    sigs: &mut Vec<(KeyId, [u8; 64])>,
    kid: KeyId,
    sig: [u8; 64],
    max: usize,
) -> Result<(), AnnouncementError> {
    let at = match sigs.binary_search_by_key(&kid, |(k, _)| *k) {
        Ok(_) => return Ok(()),
        Err(at) => at,
    };
    if sigs.len() >= max {
        return Err(E::CannotCombine {
            what: format!("more than {max} signatures"),
        });
    }
    sigs.insert(at, (kid, sig));
    Ok(())
}

/// The distinct keys among `sigs` that `key_of` knows and whose signature over `signed` is
/// valid (`verify_strict`, as announcements are verified).
pub(crate) fn valid_signers(
    signed: &[u8],
    sigs: &[(KeyId, [u8; 64])],
    key_of: impl Fn(&KeyId) -> Option<ed25519_dalek::VerifyingKey>,
) -> Vec<KeyId> {
    sigs.iter()
        .filter(|(kid, sig)| {
            key_of(kid).is_some_and(|key| {
                key.verify_strict(signed, &Signature::from_bytes(sig))
                    .is_ok()
            })
        })
        .map(|(kid, _)| *kid)
        .collect()
}

pub(crate) fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    put_string(out, key.as_bytes());
    put_string(out, value);
}

pub(crate) fn put_int(out: &mut Vec<u8>, key: &str, value: u64) {
    put_string(out, key.as_bytes());
    out.extend_from_slice(format!("i{value}e").as_bytes());
}

/// A dictionary value: announcements have no nested lists or dictionaries (the reader bounds
/// hostile nesting at [`crate::bencode::MAX_DEPTH`]; such a value is refused here).
enum Scalar {
    Int(i64),
    Bytes(Vec<u8>),
}

impl Scalar {
    /// An integer or a byte string; anything nested is not an announcement's.
    fn of(value: &crate::bencode::Value<'_>) -> Result<Scalar, AnnouncementError> {
        match value.kind {
            crate::bencode::Kind::Int(i) => Ok(Scalar::Int(i)),
            crate::bencode::Kind::Bytes(b) => Ok(Scalar::Bytes(b.to_vec())),
            _ => Err(E::Bencode(None)),
        }
    }
}

struct Fields(BTreeMap<&'static str, Scalar>);

impl Fields {
    fn parse(bytes: &[u8], version: u8) -> Result<Fields, AnnouncementError> {
        // The one strict reader (crate::bencode): keys sorted and distinct, no leading zeros,
        // nothing trailing, so one announcement has one text before any field is read.
        let value = crate::bencode::parse(bytes).map_err(|e| E::Bencode(Some(e)))?;
        let crate::bencode::Kind::Dict(entries) = &value.kind else {
            return Err(E::Bencode(None));
        };
        let mut seen = BTreeMap::new();
        let mut unknown = None;
        let keys: &[&'static str] = if version == 1 { &KEYS_V1 } else { &KEYS_V2 };
        for (key, value) in entries {
            let key = *key;
            let value = Scalar::of(value)?;
            let text = String::from_utf8_lossy(key).into_owned();
            // `v` is read before unknown keys are refused: a later version may add keys.
            let Some(known) = keys
                .iter()
                .chain(["v"].iter())
                .copied()
                .find(|k| k.as_bytes() == key)
            else {
                unknown.get_or_insert(text);
                continue;
            };
            seen.insert(known, value);
        }
        let fields = Fields(seen);
        // The version first: a future version may well have other keys.
        match fields.int("v")? {
            got @ (1 | 2) if got != i64::from(version) => {
                return Err(E::VersionMismatch {
                    prefix: version,
                    got,
                })
            }
            1 | 2 => {}
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

    fn uint(&self, key: &'static str, max: u64) -> Result<u64, AnnouncementError> {
        let value = self.int(key)?;
        u64::try_from(value)
            .ok()
            .filter(|v| *v <= max)
            .ok_or(E::OutOfRange {
                key,
                value: i128::from(value),
                max,
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

    /// `sigs`: 1 to [`MAX_SIGS`] entries of key id and signature, sorted by key id with none
    /// twice, so one set of signatures has one spelling and no key counts twice.
    fn sigs(&self) -> Result<Vec<(KeyId, [u8; 64])>, AnnouncementError> {
        decode_sigs(self.bytes("sigs")?, MAX_SIGS)
    }

    fn into_announcement(self, version: u8) -> Result<Announcement, AnnouncementError> {
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
        let max = i64::MAX as u64;
        let plan = match self.0.get("plan") {
            None => false,
            Some(Scalar::Int(1)) => true,
            Some(Scalar::Int(got)) => return Err(E::BadPlanFlag { got: *got }),
            Some(Scalar::Bytes(_)) => {
                return Err(E::WrongType {
                    key: "plan",
                    want: "an integer",
                })
            }
        };
        let (binding, sigs) = if version == 1 {
            (None, vec![(KeyId(self.fixed("kid")?), self.fixed("sig")?)])
        } else {
            let binding = Binding {
                expires: self.uint("exp", MAX_EXPIRES)?,
                fleet: FleetId(self.fixed("fleet")?),
            };
            (Some(binding), self.sigs()?)
        };
        Ok(Announcement {
            seq: self.uint("seq", max)?,
            name,
            kind,
            info_hash: self.fixed("ih")?,
            len: self.uint("len", max)?,
            sha256: self.fixed("sha256")?,
            binding,
            sigs,
            plan,
            attached_plan: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serf_names::UPDATE_EVENT;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
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
        a.verify(&trusted(), None).unwrap();
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
            kid: serde_bytes::Bytes::new(&a.kid().0),
            sig: serde_bytes::Bytes::new(a.sig()),
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
        assert_eq!(absolute_worst.len(), MAX_WIRE_LEN_V1);
        assert!(UPDATE_EVENT.len() + MAX_WIRE_LEN_V1 <= 482);
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
        let text = format!("p2pu1:{}", "A".repeat(MAX_WIRE_LEN_V1));
        assert!(matches!(
            Announcement::decode(text),
            Err(E::TooLong {
                max: MAX_WIRE_LEN_V1,
                ..
            })
        ));
        let text = format!("p2pu2:{}", "A".repeat(MAX_WIRE_LEN));
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
        let text = signed("x").to_wire().replacen("p2pu1:", "p2pu3:", 1);
        let err = Announcement::decode(text).unwrap_err();
        assert!(
            matches!(&err, E::BadPrefix { start } if start == "p2pu3:"),
            "{err}"
        );
        // A v1 body behind the v2 prefix.
        let text = signed("x").to_wire().replacen("p2pu1:", "p2pu2:", 1);
        let err = Announcement::decode(text).unwrap_err();
        assert!(
            matches!(err, E::VersionMismatch { prefix: 2, got: 1 }),
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
        assert!(matches!(&err, E::Bencode(Some(_))), "{err}");
    }

    #[test]
    fn rejects_unknown_key() {
        let err = mutated(b"1:vi1e", b"1:vi1e1:xi0e");
        assert!(matches!(&err, E::UnknownKey { key } if key == "x"), "{err}");
    }

    #[test]
    fn rejects_missing_keys() {
        let a = signed("site.pp");
        let sig = [b"3:sig64:", &a.sig()[..]].concat();
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
            ("kid", &a.kid().0, 8),
            ("sig", a.sig(), 64),
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
        let err = mutated(b"1:vi1e", b"1:vi3e");
        assert!(matches!(err, E::UnsupportedVersion { got: 3 }), "{err}");
        let err = mutated(b"1:vi1e", b"1:vi2e");
        assert!(
            matches!(err, E::VersionMismatch { prefix: 1, got: 2 }),
            "{err}"
        );
    }

    #[test]
    fn rejects_negative_ints() {
        let err = mutated(b"3:leni1234e", b"3:leni-1234e");
        assert!(
            matches!(
                err,
                E::OutOfRange {
                    key: "len",
                    value: -1234,
                    ..
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
        // The strict reader refuses each before a field is read.
        // Leading zero and plus sign parse as the same integer.
        let err = mutated(b"3:leni1234e", b"3:leni01234e");
        assert!(matches!(err, E::Bencode(Some(_))), "{err}");
        let err = mutated(b"3:leni1234e", b"3:leni+1234e");
        assert!(matches!(err, E::Bencode(Some(_))), "{err}");
        // Keys out of order.
        let a = signed("x");
        let bytes = a.to_bencode();
        let swapped = [&b"d1:vi1e"[..], &bytes[1..bytes.len() - 7], b"e"].concat();
        assert!(matches!(
            Announcement::decode(wire(&swapped)),
            Err(E::Bencode(Some(_)))
        ));
        // Trailing bytes after the dictionary.
        let trailing = [&bytes[..], b"0:"].concat();
        assert!(matches!(
            Announcement::decode(wire(&trailing)),
            Err(E::Bencode(Some(_)))
        ));
    }

    #[test]
    fn verify_rejects_unknown_revoked_and_forged() {
        let a = signed("x");
        let other = TrustedKeys::from_keys([key(2).verifying_key()]);
        assert!(matches!(
            a.verify(&other, None),
            Err(E::UnknownSigner { .. })
        ));

        let mut revoked = TrustedKeys::from_keys([key(1).verifying_key(), key(2).verifying_key()]);
        revoked.mark_revoked(a.kid());
        assert!(matches!(
            a.verify(&revoked, None),
            Err(E::RevokedSigner { .. })
        ));

        let mut forged = a.clone();
        forged.seq += 1;
        assert!(matches!(
            forged.verify(&trusted(), None),
            Err(E::BadSignature { .. })
        ));
        // Signed by key 2 but claiming key 1's id.
        let mut impostor = Announcement::sign(draft("x"), &key(2)).unwrap();
        impostor.sigs[0].0 = a.kid();
        assert!(matches!(
            impostor.verify(&trusted(), None),
            Err(E::BadSignature { .. })
        ));
    }

    /// Flips one bit of a wire text and reports whether decode+verify still accepts it.
    fn accepts_flip(text: &[u8], bit: usize, trusted: &TrustedKeys) -> bool {
        let mut flipped = text.to_vec();
        flipped[bit / 8] ^= 1 << (bit % 8);
        Announcement::decode(&flipped).is_ok_and(|a| a.verify(trusted, None).is_ok())
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let trusted = trusted();
        let text = longest(false).to_wire();
        for bit in 0..text.len() * 8 {
            assert!(!accepts_flip(text.as_bytes(), bit, &trusted), "bit {bit}");
        }
    }

    const FLEET: FleetId = FleetId([0x5a; 8]);

    fn binding() -> Binding {
        Binding {
            expires: 1_800_000_000,
            fleet: FLEET,
        }
    }

    /// A v2 announcement signed by keys `signers` (by their seed byte), in that order.
    fn signed_v2(name: &str, signers: &[u8]) -> Announcement {
        let mut a = Announcement::sign_v2(draft(name), binding(), &key(signers[0])).unwrap();
        for n in &signers[1..] {
            a.add_signature(&key(*n)).unwrap();
        }
        a
    }

    fn trusting(keys: &[u8]) -> TrustedKeys {
        TrustedKeys::from_keys(keys.iter().map(|n| key(*n).verifying_key()))
    }

    #[test]
    fn v2_round_trip_and_verify() {
        let a = signed_v2("site.pp", &[1, 2]);
        let text = a.to_wire();
        assert!(text.starts_with("p2pu2:"), "{text}");
        let back = Announcement::decode(&text).unwrap();
        assert_eq!(back, a);
        assert_eq!(back.version(), 2);
        assert_eq!(back.binding(), Some(&binding()));
        let signers = back.verify(&trusting(&[1, 2]), None).unwrap();
        assert_eq!(signers.valid.len(), 2);
        assert!(signers.ignored.is_empty());
        // One spelling: the signatures are sorted by key id whoever signed first.
        assert_eq!(signed_v2("site.pp", &[2, 1]).to_wire(), text);
    }

    fn longest_v2(sigs: u8) -> Announcement {
        let mut d = draft(&"n".repeat(64));
        (d.seq, d.len) = (i64::MAX as u64, i64::MAX as u64);
        let binding = Binding {
            expires: MAX_EXPIRES,
            fleet: FLEET,
        };
        let mut a = Announcement::sign_v2_with_plan(d, binding, b"d1:vi1ee", &key(1)).unwrap();
        for n in 2..=sigs {
            a.add_signature(&key(n)).unwrap();
        }
        a
    }

    /// Serf delivers 482 bytes of event name and payload at its default limit, and the
    /// `user_event_size_limit` p2pu renders is 1024: one signature must fit the first at the
    /// longest name, seq, length and expiry, and the most signatures the second.
    #[test]
    fn v2_worst_case_fits_serf_limits() {
        let one = longest_v2(1).to_wire();
        assert_eq!(one.len(), MAX_WIRE_LEN_ONE_SIG);
        assert!(one.len() == 452 + 12, "a plan flag adds 12 wire characters");
        assert!(UPDATE_EVENT.len() + one.len() <= 482, "{}", one.len());
        let most = longest_v2(MAX_SIGS as u8).to_wire();
        assert_eq!(most.len(), MAX_WIRE_LEN);
        assert!(UPDATE_EVENT.len() + most.len() <= 1024);
        assert!(Announcement::decode(&most).is_ok());
        // One more would not fit the rendered limit: that is why MAX_SIGS is what it is.
        let mut over = longest_v2(MAX_SIGS as u8);
        over.sigs.push((KeyId([0xff; 8]), [0; 64]));
        assert!(UPDATE_EVENT.len() + over.to_wire().len() > 1024);
        assert!(matches!(
            Announcement::decode(over.to_wire()),
            Err(E::TooLong { .. })
        ));
        let mut full = longest_v2(MAX_SIGS as u8);
        assert!(matches!(
            full.add_signature(&key(99)),
            Err(E::CannotCombine { .. })
        ));
    }

    /// A plan travels beside the metainfo, bound by the signatures: the announcement carries
    /// only `4:plani1e`, and without the plan (or with another one) nothing verifies.
    #[test]
    fn plan_bound_announcements_verify_only_with_their_plan() {
        let plan = b"d6:target15:tag:role=camera1:vi1ee";
        let a =
            Announcement::sign_v2_with_plan(draft("site.pp"), binding(), plan, &key(1)).unwrap();
        let wire = a.to_wire();
        assert!(a.to_bencode().windows(9).any(|w| w == b"4:plani1e"));
        let back = Announcement::decode(&wire).unwrap();
        assert!(back.has_plan());
        assert_eq!(back.to_wire(), wire);
        let trusted = trusting(&[1]);
        back.verify(&trusted, Some(plan)).unwrap();
        let err = back.verify(&trusted, None).unwrap_err();
        assert!(matches!(err, E::PlanMissing { .. }), "{err}");
        // Another plan (all nodes instead of cameras) under the same signature.
        let err = back.verify(&trusted, Some(b"d1:vi1ee")).unwrap_err();
        assert!(matches!(err, E::BadSignature { .. }), "{err}");
        // The flag stripped: the signature no longer verifies without the plan either.
        let plain = Announcement::sign_v2(draft("site.pp"), binding(), &key(1)).unwrap();
        let mut stripped = a.to_bencode();
        let at = stripped.windows(9).position(|w| w == b"4:plani1e").unwrap();
        stripped.drain(at..at + 9);
        let stripped = Announcement::decode(wire_v2(&stripped)).unwrap();
        assert!(stripped.verify(&trusted, None).is_err());
        plain.verify(&trusted, None).unwrap();
        // Co-signing needs the plan too, and a decoded one has it once attached.
        let mut cosigned = back.clone();
        assert!(matches!(
            cosigned.add_signature(&key(2)),
            Err(E::PlanMissing { .. })
        ));
        cosigned.attach_plan(plan);
        cosigned.add_signature(&key(2)).unwrap();
        assert_eq!(
            cosigned
                .verify(&trusting(&[1, 2]), Some(plan))
                .unwrap()
                .valid
                .len(),
            2
        );
        for (from, to) in [
            (&b"4:plani1e"[..], &b"4:plani0e"[..]),
            (b"4:plani1e", b"4:plan1:1"),
        ] {
            let mut bytes = a.to_bencode();
            let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
            bytes.splice(at..at + from.len(), to.iter().copied());
            assert!(Announcement::decode(wire_v2(&bytes)).is_err());
        }
    }

    /// Captured wire texts (`tests/vectors/announcement/`): what this decoder must keep
    /// reading, byte for byte, and what it must keep writing.
    #[test]
    fn v2_vectors_decode_to_their_fields() {
        let one = include_str!("../tests/vectors/announcement/v2-one-signature.wire");
        let two = include_str!("../tests/vectors/announcement/v2-two-signatures.wire");
        let v1 = include_str!("../tests/vectors/announcement/v1.wire");
        for (text, want) in [
            (one, signed_v2("site.pp", &[1])),
            (two, signed_v2("site.pp", &[1, 2])),
            (v1, signed("site.pp")),
        ] {
            let back = Announcement::decode(text).unwrap();
            assert_eq!(back, want);
            assert_eq!(back.to_wire(), text.trim_end());
            back.verify(&trusting(&[1, 2]), None).unwrap();
        }
    }

    #[test]
    fn v2_signatures_must_be_sorted_and_distinct() {
        let a = signed_v2("x", &[1, 2]);
        let mut swapped = a.clone();
        swapped.sigs.swap(0, 1);
        let err = Announcement::decode(swapped.to_wire()).unwrap_err();
        assert!(matches!(err, E::UnsortedSigs { .. }), "{err}");
        // The same key twice would count twice if it were let through.
        let mut twice = a.clone();
        twice.sigs[1] = twice.sigs[0];
        let err = Announcement::decode(twice.to_wire()).unwrap_err();
        assert!(matches!(err, E::UnsortedSigs { .. }), "{err}");
        let mut none = a.clone();
        none.sigs.clear();
        let err = Announcement::decode(none.to_wire()).unwrap_err();
        assert!(matches!(err, E::BadSigs { got: 0, .. }), "{err}");
        let mut ragged = a.to_bencode();
        let at = ragged.windows(8).position(|w| w == b"4:sigs14").unwrap();
        ragged.splice(at..at + 10, b"4:sigs143:".iter().copied());
        let at = ragged.len() - 8;
        ragged.remove(at);
        let err = Announcement::decode(wire_v2(&ragged)).unwrap_err();
        assert!(matches!(err, E::BadSigs { got: 143, .. }), "{err}");
    }

    fn wire_v2(bencode: &[u8]) -> String {
        format!("{WIRE_PREFIX_V2}{}", URL_SAFE_NO_PAD.encode(bencode))
    }

    /// k-of-n counts distinct, trusted, unrevoked keys with a valid signature; the others
    /// are ignored, and only when none counts is it an error.
    #[test]
    fn v2_signature_counting_ignores_untrusted_revoked_and_bad() {
        let a = signed_v2("x", &[1, 2, 3]);
        assert_eq!(
            a.verify(&trusting(&[1, 2, 3]), None).unwrap().valid.len(),
            3
        );
        // Key 3 untrusted.
        let signers = a.verify(&trusting(&[1, 2]), None).unwrap();
        assert_eq!(signers.valid.len(), 2);
        assert!(matches!(signers.ignored[..], [E::UnknownSigner { .. }]));
        // Key 2 revoked.
        let mut trusted = TrustedKeys::from_keys([1, 2, 3].map(|n| key(n).verifying_key()));
        trusted.mark_revoked(KeyId::of(&key(2).verifying_key()));
        let signers = a.verify(&trusted, None).unwrap();
        assert_eq!(signers.valid.len(), 2);
        assert!(matches!(signers.ignored[..], [E::RevokedSigner { .. }]));
        // A signature that does not verify does not count.
        let mut bad = a.clone();
        bad.sigs[0].1[0] ^= 1;
        let signers = bad.verify(&trusting(&[1, 2, 3]), None).unwrap();
        assert_eq!(signers.valid.len(), 2);
        assert!(matches!(signers.ignored[..], [E::BadSignature { .. }]));
        // Nobody trusted: the first reason is the error.
        assert!(matches!(
            a.verify(&trusting(&[9]), None),
            Err(E::UnknownSigner { .. })
        ));
        // The signed bytes cover expiry and fleet: changing either breaks every signature.
        let mut moved = a.clone();
        moved.binding = Some(Binding {
            expires: 1,
            fleet: FLEET,
        });
        assert!(moved.verify(&trusting(&[1, 2, 3]), None).is_err());
        let mut other_fleet = a;
        other_fleet.binding = Some(Binding {
            expires: 1_800_000_000,
            fleet: FleetId([1; 8]),
        });
        assert!(other_fleet.verify(&trusting(&[1, 2, 3]), None).is_err());
    }

    #[test]
    fn combining_takes_only_signatures_of_the_same_announcement() {
        let mut a = signed_v2("x", &[1]);
        a.combine(&signed_v2("x", &[2])).unwrap();
        a.combine(&signed_v2("x", &[2, 3])).unwrap();
        assert_eq!(a, signed_v2("x", &[1, 2, 3]));
        let err = a.combine(&signed_v2("y", &[4])).unwrap_err();
        assert!(matches!(err, E::CannotCombine { .. }), "{err}");
        // A v1 announcement holds one signature.
        let mut v1 = signed("x");
        assert!(v1.add_signature(&key(2)).is_err());
        v1.add_signature(&key(1)).unwrap();
    }

    #[test]
    fn v2_expiry_out_of_range_and_fleet_ids() {
        let far = Binding {
            expires: MAX_EXPIRES + 1,
            fleet: FLEET,
        };
        assert!(matches!(
            Announcement::sign_v2(draft("x"), far, &key(1)),
            Err(E::OutOfRange { key: "exp", .. })
        ));
        let mut over = signed_v2("x", &[1]);
        over.binding = Some(far);
        let err = Announcement::decode(over.to_wire()).unwrap_err();
        assert!(matches!(err, E::OutOfRange { key: "exp", .. }), "{err}");
        assert_eq!("5a5a5a5a5a5a5a5a".parse::<FleetId>().unwrap(), FLEET);
        assert_eq!(FLEET.to_string(), "5a5a5a5a5a5a5a5a");
        for bad in [
            "",
            "5a5a",
            "5A5A5A5A5A5A5A5A",
            "5a5a5a5a5a5a5a5g",
            "5a5a5a5a5a5a5a5a5a",
        ] {
            assert!(bad.parse::<FleetId>().is_err(), "{bad}");
        }
        assert_ne!(FleetId::generate(), FleetId::generate());
        // v1 keys in a v2 text are unknown there.
        let err = Announcement::decode(wire_v2(&signed("x").to_bencode())).unwrap_err();
        assert!(matches!(err, E::VersionMismatch { .. }), "{err}");
    }

    fn arb_binding() -> impl Strategy<Value = Binding> {
        (0..=MAX_EXPIRES, any::<[u8; 8]>()).prop_map(|(expires, fleet)| Binding {
            expires,
            fleet: FleetId(fleet),
        })
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

    /// Signed by `key(1)`: v1 without a binding, v2 with one, bound to a rollout plan too.
    fn signed_any(d: Draft, binding: Option<Binding>, plan: bool) -> Announcement {
        match (binding, plan) {
            (None, _) => Announcement::sign(d, &key(1)).unwrap(),
            (Some(b), false) => Announcement::sign_v2(d, b, &key(1)).unwrap(),
            (Some(b), true) => Announcement::sign_v2_with_plan(d, b, b"plan", &key(1)).unwrap(),
        }
    }

    /// `bencode` as the wire text of `a`'s version.
    fn wire_as(a: &Announcement, bencode: &[u8]) -> String {
        let prefix = if a.binding.is_some() {
            WIRE_PREFIX_V2
        } else {
            WIRE_PREFIX
        };
        format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bencode))
    }

    /// Inputs for the decoder, and whether each must decode: raw bytes, either prefix with
    /// any base64 text, a signed announcement's bencode with one byte changed, and signed
    /// announcements as sent (with Serf's newline or without).
    fn arb_near_wire() -> impl Strategy<Value = (Vec<u8>, bool)> {
        let signed = || {
            (
                arb_draft(),
                proptest::option::of(arb_binding()),
                any::<bool>(),
            )
                .prop_map(|(d, b, plan)| signed_any(d, b, plan))
        };
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..600).prop_map(|b| (b, false)),
            (
                proptest::sample::select(vec![WIRE_PREFIX, WIRE_PREFIX_V2]),
                "[A-Za-z0-9_-]{0,500}"
            )
                .prop_map(|(p, b64)| (format!("{p}{b64}").into_bytes(), false)),
            (signed(), any::<proptest::sample::Index>(), any::<u8>()).prop_map(|(a, at, byte)| {
                let mut bencode = a.to_bencode();
                let at = at.index(bencode.len());
                bencode[at] = byte;
                (wire_as(&a, &bencode).into_bytes(), false)
            }),
            // What the canonical check alone refuses: a leading zero or a sign in an
            // integer, and bytes after the dictionary.
            (
                signed(),
                any::<proptest::sample::Index>(),
                proptest::sample::select(vec![&b"0"[..], b"+", b"-0"]),
            )
                .prop_map(|(a, at, insert)| {
                    let mut bencode = a.to_bencode();
                    let ints: Vec<usize> = (0..bencode.len())
                        .filter(|&i| bencode[i] == b'i')
                        .map(|i| i + 1)
                        .collect();
                    let at = ints[at.index(ints.len())];
                    bencode.splice(at..at, insert.iter().copied());
                    (wire_as(&a, &bencode).into_bytes(), false)
                }),
            (
                signed(),
                proptest::sample::select(vec![&b"0:"[..], b"e", b"i0e"])
            )
                .prop_map(|(a, tail)| {
                    let bencode = [&a.to_bencode()[..], tail].concat();
                    (wire_as(&a, &bencode).into_bytes(), false)
                }),
            (signed(), any::<bool>()).prop_map(|(a, newline)| {
                let mut text = a.to_wire().into_bytes();
                if newline {
                    text.push(b'\n');
                }
                (text, true)
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever decodes, from any layer a sender can reach (raw bytes, the prefix with
        /// any base64, a signed announcement's bencode with one byte changed), re-encodes to
        /// exactly the text taken: one spelling per announcement. A signed one always
        /// decodes.
        #[test]
        fn prop_what_decodes_from_any_bytes_is_canonical((bytes, must) in arb_near_wire()) {
            match Announcement::decode(&bytes) {
                Ok(back) => {
                    let text = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
                    let again = back.to_wire();
                    prop_assert_eq!(again.as_bytes(), text);
                }
                Err(e) => prop_assert!(!must, "a signed announcement refused: {}", e),
            }
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
            prop_assert!(back.verify(&TrustedKeys::from_keys([signer.verifying_key()]), None).is_ok());
        }

        /// Any v2 announcement, with 1 to MAX_SIGS signers, decodes to itself from its one
        /// wire text, which never exceeds MAX_WIRE_LEN, and verifies with every signer.
        #[test]
        fn prop_v2_round_trip(
            d in arb_draft(),
            binding in arb_binding(),
            seeds in proptest::collection::btree_set(any::<[u8; 32]>(), 1..=MAX_SIGS),
        ) {
            let keys: Vec<SigningKey> = seeds.iter().map(SigningKey::from_bytes).collect();
            let mut a = Announcement::sign_v2(d, binding, &keys[0]).unwrap();
            for k in &keys[1..] {
                a.add_signature(k).unwrap();
            }
            let text = a.to_wire();
            prop_assert!(text.len() <= MAX_WIRE_LEN);
            let back = Announcement::decode(&text).unwrap();
            prop_assert_eq!(&back, &a);
            let trusted = TrustedKeys::from_keys(keys.iter().map(|k| k.verifying_key()));
            let signers = back.verify(&trusted, None).unwrap();
            prop_assert_eq!(signers.valid.len(), keys.len());
        }

        #[test]
        fn prop_v2_single_bit_flip_rejected(
            d in arb_draft(),
            binding in arb_binding(),
            bit in any::<proptest::sample::Index>(),
        ) {
            let a = Announcement::sign_v2(d, binding, &key(1)).unwrap();
            let text = a.to_wire();
            prop_assert!(!accepts_flip(text.as_bytes(), bit.index(text.len() * 8), &trusted()));
        }

        #[test]
        fn prop_single_bit_flip_rejected(d in arb_draft(), bit in any::<proptest::sample::Index>()) {
            let a = Announcement::sign(d, &key(1)).unwrap();
            let text = a.to_wire();
            prop_assert!(!accepts_flip(text.as_bytes(), bit.index(text.len() * 8), &trusted()));
        }

        /// A signed announcement (v1, v2, v2 with a plan) whose bencode had one byte changed
        /// either fails to decode, or decodes canonically and then fails verification: no
        /// change to the signed bytes is taken, whichever field it lands in.
        #[test]
        fn prop_a_changed_bencode_byte_never_verifies(
            d in arb_draft(),
            binding in proptest::option::of(arb_binding()),
            plan in any::<bool>(),
            at in any::<proptest::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let a = signed_any(d, binding, plan);
            let mut bencode = a.to_bencode();
            let at = at.index(bencode.len());
            let changed = bencode[at] != byte;
            bencode[at] = byte;
            let text = wire_as(&a, &bencode);
            match Announcement::decode(&text) {
                Ok(back) => {
                    prop_assert_eq!(back.to_wire(), text.clone());
                    let plan = back.has_plan().then_some(&b"plan"[..]);
                    prop_assert_eq!(back.verify(&trusted(), plan).is_ok(), !changed, "{}", text);
                }
                Err(e) => prop_assert!(changed, "the unchanged announcement refused: {}", e),
            }
        }
    }
}
