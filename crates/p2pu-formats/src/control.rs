//! Control statements: an operator's signed word on a rollout already under way (`p2pu
//! rollout abort|resume|retry|revert NAME`), broadcast as the Serf user event `p2pu-control` and
//! spooled like announcements. The wire text is `p2pu-ctl1:` + unpadded URL-safe base64 of a
//! canonical bencoded dictionary: `action`, `exp`, `fleet`, `issued`, `name`, optional `nodes`
//! (name globs), `seq` (the update's), `sigs` (as in announcements v2: key id and Ed25519
//! signature, sorted by key id), and for `revert` only an optional `to` (the seq to go back to;
//! none: the last good one before `seq`). A statement without `to` is byte for byte what it was
//! before `revert` existed; a node that predates `revert` refuses it (an unknown action, or the
//! unknown key `to`) without acting. Signatures cover `p2pu-ctl1:` followed by the dictionary
//! without `sigs`, so no announcement signature can pass for a control signature.
//!
//! Decoding is strict (unknown and duplicate keys, any non-canonical encoding refused);
//! [`Control::verify`] counts the valid signers. Whether enough signed, whether it expired,
//! is for this fleet or is older than the last one seen is the intake's policy.

use crate::announcement::{decode_sigs, validate_name, FleetId, MAX_EXPIRES, MAX_SIGS};
use crate::bencode::{self, Kind as Ben, Value};
use crate::document::{Envelope, EnvelopeError};
use crate::keys::{KeyId, TrustedKeys};
use ed25519_dalek::{Signature, Signer, SigningKey};
use std::fmt;
use std::str::FromStr;

pub const WIRE_PREFIX: &str = "p2pu-ctl1:";
/// Longer wire texts are refused before decoding (a statement with 16 globs and 6 signatures
/// fits well within the rendered 1024-byte event limit).
pub const MAX_WIRE_LEN: usize = 1000;
/// The most node globs one statement names.
pub const MAX_NODES: usize = 16;
const KEYS: [&str; 9] = [
    "action", "exp", "fleet", "issued", "name", "nodes", "seq", "sigs", "to",
];
const SIG_ENTRY: usize = 8 + 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("control statement is {len} bytes, longer than any ({MAX_WIRE_LEN})")]
    TooLong { len: usize },
    #[error("control statement does not start with `{WIRE_PREFIX}`")]
    BadPrefix,
    #[error("control statement is not unpadded URL-safe base64")]
    BadBase64,
    #[error("control statement is not canonical bencode: {0}")]
    Bencode(#[from] bencode::BencodeError),
    #[error("control statement is not a dictionary")]
    NotADict,
    #[error("control statement has unknown key {key:?}")]
    UnknownKey { key: String },
    #[error("control statement lacks key `{key}`, or it is not {want}")]
    BadField {
        key: &'static str,
        want: &'static str,
    },
    #[error("unknown rollout action {action:?} (want abort, resume, retry or revert)")]
    UnknownAction { action: String },
    #[error("control statement `sigs` is {got} bytes: want 1 to {MAX_SIGS} entries of 72 bytes, sorted by key id")]
    BadSigs { got: usize },
    #[error("control statement is not canonical (key order, encoding)")]
    NonCanonical,
    #[error("control statement for {name:?} is signed by no trusted key with a valid signature")]
    NoValidSigner { name: String },
    #[error("--nodes {text:?}: {reason}")]
    BadNodes { text: String, reason: &'static str },
    #[error("{0}")]
    Name(String),
}

use ControlError as E;

/// The line around a statement: the one envelope every signed text shares.
const ENVELOPE: Envelope = Envelope {
    prefix: WIRE_PREFIX,
    max_len: MAX_WIRE_LEN,
    keys: &KEYS,
};

impl From<EnvelopeError> for ControlError {
    fn from(error: EnvelopeError) -> ControlError {
        match error {
            EnvelopeError::TooLong { len, .. } => E::TooLong { len },
            EnvelopeError::BadPrefix { .. } => E::BadPrefix,
            EnvelopeError::BadBase64(_) => E::BadBase64,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Action {
    /// Nodes that have not applied the update hold (`halted`, "aborted by operator").
    Abort,
    /// Halted nodes go on, past the failure threshold.
    Resume,
    /// Nodes where the update failed try again now.
    Retry,
    /// Nodes that applied the update apply a kept good version again (`to`, or the last good
    /// one before it) and record `reverted`.
    Revert,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Abort => "abort",
            Action::Resume => "resume",
            Action::Retry => "retry",
            Action::Revert => "revert",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = ControlError;
    fn from_str(text: &str) -> Result<Action, ControlError> {
        [Action::Abort, Action::Resume, Action::Retry, Action::Revert]
            .into_iter()
            .find(|a| a.as_str() == text)
            .ok_or_else(|| E::UnknownAction {
                action: text.to_string(),
            })
    }
}

/// A control statement; call [`Control::verify`] before acting on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    pub action: Action,
    pub name: String,
    /// The update's seq.
    pub seq: u64,
    /// When the operator signed it (unix seconds): an older one than the last seen is refused.
    pub issued: u64,
    pub fleet: FleetId,
    /// Unix seconds after which no node acts on it.
    pub expires: u64,
    /// Node-name globs it is for; empty: every node.
    pub nodes: Vec<String>,
    /// `revert` only: the seq to go back to; none: the last good one before `seq`.
    to: Option<u64>,
    sigs: Vec<(KeyId, [u8; 64])>,
}

/// Parses `--nodes a,cam-*`.
pub fn parse_nodes(text: &str) -> Result<Vec<String>, ControlError> {
    let bad = |reason| E::BadNodes {
        text: text.to_string(),
        reason,
    };
    let nodes: Vec<String> = text.split(',').map(str::to_string).collect();
    if nodes.len() > MAX_NODES {
        return Err(bad("more than 16 globs"));
    }
    if nodes.iter().any(|n| {
        n.is_empty() || n.len() > 128 || n.chars().any(|c| c.is_control() || c.is_whitespace())
    }) {
        return Err(bad(
            "an empty glob, or one with a space or a control character",
        ));
    }
    Ok(nodes)
}

impl Control {
    /// An unsigned statement; `nodes` as [`parse_nodes`] makes them.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        action: Action,
        name: &str,
        seq: u64,
        issued: u64,
        fleet: FleetId,
        expires: u64,
        nodes: Vec<String>,
    ) -> Result<Control, ControlError> {
        validate_name(name).map_err(|e| E::Name(e.to_string()))?;
        if expires > MAX_EXPIRES || i64::try_from(seq).is_err() || issued > MAX_EXPIRES {
            return Err(E::BadField {
                key: "exp",
                want: "within range",
            });
        }
        Ok(Control {
            action,
            name: name.to_string(),
            seq,
            issued,
            fleet,
            expires,
            nodes,
            to: None,
            sigs: Vec::new(),
        })
    }

    /// A `revert` to `to` (unsigned; sign after). Refused for other actions, and for a `to`
    /// that is not an earlier seq.
    pub fn revert_to(mut self, to: u64) -> Result<Control, ControlError> {
        if self.action != Action::Revert || to >= self.seq {
            return Err(E::BadField {
                key: "to",
                want: "an earlier seq, on a revert",
            });
        }
        self.to = Some(to);
        Ok(self)
    }

    /// `revert` only: the seq to go back to; none: the last good one before `seq`.
    pub fn to(&self) -> Option<u64> {
        self.to
    }

    /// Adds `signer`'s signature; one key signs once.
    pub fn sign(&mut self, signer: &SigningKey) -> Result<(), ControlError> {
        let kid = KeyId::of(&signer.verifying_key());
        let sig = signer.sign(&self.signed_message()).to_bytes();
        match self.sigs.binary_search_by_key(&kid, |(k, _)| *k) {
            Ok(_) => Ok(()),
            Err(_) if self.sigs.len() >= MAX_SIGS => Err(E::BadSigs {
                got: (self.sigs.len() + 1) * SIG_ENTRY,
            }),
            Err(at) => {
                self.sigs.insert(at, (kid, sig));
                Ok(())
            }
        }
    }

    /// Whether it is for the node `name`.
    pub fn is_for(&self, name: &str) -> bool {
        self.nodes.is_empty()
            || self
                .nodes
                .iter()
                .any(|glob| crate::plan::glob_match(glob, name))
    }

    /// What the signatures cover: the prefix, then the dictionary without `sigs`.
    fn signed_message(&self) -> Vec<u8> {
        let mut message = WIRE_PREFIX.as_bytes().to_vec();
        message.extend(self.bencode(false));
        message
    }

    fn bencode(&self, with_sigs: bool) -> Vec<u8> {
        let mut out = vec![b'd'];
        put_bytes(&mut out, "action", self.action.as_str().as_bytes());
        put_int(&mut out, "exp", self.expires);
        put_bytes(&mut out, "fleet", &self.fleet.0);
        put_int(&mut out, "issued", self.issued);
        put_bytes(&mut out, "name", self.name.as_bytes());
        if !self.nodes.is_empty() {
            put_string(&mut out, b"nodes");
            out.push(b'l');
            for node in &self.nodes {
                put_string(&mut out, node.as_bytes());
            }
            out.push(b'e');
        }
        put_int(&mut out, "seq", self.seq);
        // `to` sorts after `sigs`; absent, the statement is what it was before `revert`.
        let to = self.to.map(|to| {
            let mut entry = Vec::new();
            put_int(&mut entry, "to", to);
            entry
        });
        if with_sigs {
            let sigs: Vec<u8> = self
                .sigs
                .iter()
                .flat_map(|(kid, sig)| kid.0.iter().chain(sig.iter()).copied())
                .collect();
            put_bytes(&mut out, "sigs", &sigs);
        }
        if let Some(to) = to {
            out.extend(to);
        }
        out.push(b'e');
        out
    }

    pub fn to_wire(&self) -> String {
        ENVELOPE.text(&self.bencode(true))
    }

    /// Every signer's key id, sorted.
    pub fn kids(&self) -> Vec<KeyId> {
        self.sigs.iter().map(|(kid, _)| *kid).collect()
    }

    /// Parses a wire text (one trailing newline ignored); structure only.
    pub fn decode(wire: impl AsRef<[u8]>) -> Result<Control, ControlError> {
        let bytes = ENVELOPE.bytes(wire.as_ref())?;
        let value = known_dict(&bytes)?;
        let text = |key: &'static str| -> Result<String, ControlError> {
            value
                .get(key)
                .and_then(Value::as_bytes)
                .and_then(|b| std::str::from_utf8(b).ok())
                .map(str::to_string)
                .ok_or(E::BadField {
                    key,
                    want: "a UTF-8 string",
                })
        };
        let uint = |key: &'static str, max: u64| -> Result<u64, ControlError> {
            value
                .get(key)
                .and_then(Value::as_int)
                .and_then(|n| u64::try_from(n).ok())
                .filter(|n| *n <= max)
                .ok_or(E::BadField {
                    key,
                    want: "an integer in range",
                })
        };
        let action: Action = text("action")?.parse()?;
        let fleet = value
            .get("fleet")
            .and_then(Value::as_bytes)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(FleetId)
            .ok_or(E::BadField {
                key: "fleet",
                want: "8 bytes",
            })?;
        let nodes = nodes_of(&value)?;
        let sigs_bytes = value
            .get("sigs")
            .and_then(Value::as_bytes)
            .ok_or(E::BadField {
                key: "sigs",
                want: "a byte string",
            })?;
        // The packed `sigs` every signed text shares: 1 to MAX_SIGS entries, sorted by key id.
        let sigs = decode_sigs(sigs_bytes, MAX_SIGS).map_err(|_| E::BadSigs {
            got: sigs_bytes.len(),
        })?;
        let name = text("name")?;
        validate_name(&name).map_err(|e| E::Name(e.to_string()))?;
        let control = Control {
            action,
            name,
            seq: uint("seq", i64::MAX as u64)?,
            issued: uint("issued", MAX_EXPIRES)?,
            fleet,
            expires: uint("exp", MAX_EXPIRES)?,
            nodes,
            to: value
                .get("to")
                .map(|_| uint("to", i64::MAX as u64))
                .transpose()?,
            sigs,
        };
        if control
            .to
            .is_some_and(|to| control.action != Action::Revert || to >= control.seq)
        {
            return Err(E::BadField {
                key: "to",
                want: "an earlier seq, on a revert",
            });
        }
        if control.bencode(true) != bytes {
            return Err(E::NonCanonical);
        }
        Ok(control)
    }

    /// The distinct trusted, unrevoked keys whose signature is valid (`verify_strict`); an
    /// error when there is none.
    pub fn verify(&self, trusted: &TrustedKeys) -> Result<Vec<KeyId>, ControlError> {
        let message = self.signed_message();
        let valid: Vec<KeyId> = self
            .sigs
            .iter()
            .filter(|(kid, sig)| {
                trusted.get(kid).is_some_and(|signer| {
                    signer
                        .key
                        .key
                        .verify_strict(&message, &Signature::from_bytes(sig))
                        .is_ok()
                })
            })
            .map(|(kid, _)| *kid)
            .collect();
        if valid.is_empty() {
            return Err(E::NoValidSigner {
                name: self.name.clone(),
            });
        }
        Ok(valid)
    }
}

/// The statement's dictionary, with none but its keys.
fn known_dict(bytes: &[u8]) -> Result<Value<'_>, ControlError> {
    let value = bencode::parse(bytes)?;
    let Ben::Dict(entries) = &value.kind else {
        return Err(E::NotADict);
    };
    if let Some((key, _)) = entries
        .iter()
        .find(|(k, _)| !KEYS.iter().any(|known| known.as_bytes() == *k))
    {
        return Err(E::UnknownKey {
            key: String::from_utf8_lossy(key).into_owned(),
        });
    }
    Ok(value)
}

/// The optional `nodes` list of globs; none is every node.
fn nodes_of(value: &Value<'_>) -> Result<Vec<String>, ControlError> {
    let Some(list) = value.get("nodes") else {
        return Ok(Vec::new());
    };
    let bad = E::BadField {
        key: "nodes",
        want: "a list of globs",
    };
    let items = list.as_list().ok_or(bad.clone())?;
    let nodes = items
        .iter()
        .map(|v| {
            v.as_bytes()
                .and_then(|b| std::str::from_utf8(b).ok())
                .map(str::to_string)
        })
        .collect::<Option<Vec<String>>>()
        .ok_or(bad)?;
    parse_nodes(&nodes.join(","))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn statement(action: Action, nodes: &str) -> Control {
        let nodes = if nodes.is_empty() {
            Vec::new()
        } else {
            parse_nodes(nodes).unwrap()
        };
        let mut c = Control::new(
            action,
            "site.pp",
            1_700_000_000_000,
            1_700_000_100,
            FleetId([0x42; 8]),
            1_700_086_500,
            nodes,
        )
        .unwrap();
        c.sign(&key(1)).unwrap();
        c
    }

    fn wire(bencode: &[u8]) -> String {
        ENVELOPE.text(bencode)
    }

    #[test]
    fn round_trip_verify_and_vector() {
        let c = statement(Action::Retry, "cam-*,door-1");
        let text = c.to_wire();
        let back = Control::decode(&text).unwrap();
        assert_eq!(back, c);
        let trusted = TrustedKeys::from_keys([key(1).verifying_key()]);
        assert_eq!(back.verify(&trusted).unwrap().len(), 1);
        assert!(back.is_for("cam-7") && back.is_for("door-1") && !back.is_for("door-2"));
        assert!(statement(Action::Abort, "").is_for("anything"));
        let vector = include_str!("../tests/vectors/control/retry.wire");
        assert_eq!(text, vector.trim_end());
        assert!(text.len() + super::super::serf_names::CONTROL_EVENT.len() <= 482);
    }

    #[test]
    fn forged_and_rebound_statements_do_not_verify() {
        let c = statement(Action::Abort, "");
        let trusted = TrustedKeys::from_keys([key(1).verifying_key()]);
        assert!(c
            .verify(&TrustedKeys::from_keys([key(2).verifying_key()]))
            .is_err());
        // The same signature on another action or another update.
        let mut resumed = c.clone();
        resumed.action = Action::Resume;
        assert!(resumed.verify(&trusted).is_err());
        let mut other = c.clone();
        other.seq += 1;
        assert!(other.verify(&trusted).is_err());
    }

    /// `revert` carries `to` after `sigs` and round-trips; without `to` a statement is byte
    /// for byte what it was before `revert` existed; `to` is refused on other actions and when
    /// it is not an earlier seq; the signature covers `to`.
    #[test]
    fn revert_round_trips_and_leaves_old_statements_unchanged() {
        let plain = statement(Action::Revert, "cam-*");
        assert_eq!(plain.to(), None);
        assert_eq!(Control::decode(plain.to_wire()).unwrap(), plain);
        let mut to = Control::new(
            Action::Revert,
            "site.pp",
            1_700_000_000_000,
            1_700_000_100,
            FleetId([0x42; 8]),
            1_700_086_500,
            Vec::new(),
        )
        .unwrap()
        .revert_to(1_600_000_000_000)
        .unwrap();
        to.sign(&key(1)).unwrap();
        let text = to.to_wire();
        let vector = include_str!("../tests/vectors/control/revert.wire");
        assert_eq!(text, vector.trim_end());
        let back = Control::decode(&text).unwrap();
        assert_eq!(back.to(), Some(1_600_000_000_000));
        assert_eq!(back, to);
        let bytes = to.bencode(true);
        assert!(bytes.ends_with(b"2:toi1600000000000ee"));
        let trusted = TrustedKeys::from_keys([key(1).verifying_key()]);
        assert_eq!(back.verify(&trusted).unwrap().len(), 1);
        // Another target under the same signature does not verify.
        let mut moved = back.clone();
        moved.to = Some(1_500_000_000_000);
        assert!(moved.verify(&trusted).is_err());
        // The old vector is unchanged (also in round_trip_verify_and_vector).
        let retry = statement(Action::Retry, "cam-*,door-1");
        assert!(!retry.bencode(true).windows(4).any(|w| w == b"2:to"));
        // `to` on another action, or not earlier, is refused both ways.
        assert!(statement(Action::Abort, "").revert_to(1).is_err());
        assert!(statement(Action::Revert, "")
            .revert_to(1_700_000_000_000)
            .is_err());
        let on_abort = {
            let mut b = statement(Action::Abort, "").bencode(true);
            b.pop();
            b.extend_from_slice(b"2:toi1ee");
            b
        };
        assert!(matches!(
            Control::decode(wire(&on_abort)),
            Err(E::BadField { key: "to", .. })
        ));
        let later = {
            let mut b = statement(Action::Revert, "").bencode(true);
            b.pop();
            b.extend_from_slice(b"2:toi1700000000001ee");
            b
        };
        assert!(matches!(
            Control::decode(wire(&later)),
            Err(E::BadField { key: "to", .. })
        ));
        // A node that predates `revert` knows neither the action nor `to`: both refused.
        assert!(matches!(
            "revert2".parse::<Action>(),
            Err(E::UnknownAction { .. })
        ));
    }

    #[test]
    fn strict_decoding() {
        let good = statement(Action::Resume, "").bencode(true);
        let mutate = |from: &[u8], to: &[u8]| {
            let mut bytes = good.clone();
            let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
            bytes.splice(at..at + from.len(), to.iter().copied());
            Control::decode(wire(&bytes)).unwrap_err()
        };
        assert!(matches!(
            mutate(b"6:action", b"4:aaaai1e6:action"),
            E::UnknownKey { key } if key == "aaaa"
        ));
        assert!(matches!(
            mutate(b"6:resume", b"6:unpack"),
            E::UnknownAction { .. }
        ));
        assert!(matches!(mutate(b"3:seq", b"3:seq3:seqi1e"), E::Bencode(_)));
        assert!(matches!(mutate(b"3:seqi", b"3:seqi0"), E::Bencode(_)));
        assert!(matches!(Control::decode("p2pu2:abc"), Err(E::BadPrefix)));
        assert!(matches!(
            Control::decode(format!("{WIRE_PREFIX}{}", "A".repeat(MAX_WIRE_LEN))),
            Err(E::TooLong { .. })
        ));
        assert!(matches!(Control::decode("p2pu-ctl1:*"), Err(E::BadBase64)));
        assert!(parse_nodes("a,,b").is_err());
        assert!(parse_nodes("a b").is_err());
    }
}
