//! The p2pu overlay message: what fleet members, the proxy and session peers say to each other
//! over UDP. Versioned, bounded in size, authenticated with HMAC-SHA256 keyed by the fleet
//! secret, and stamped with a time and a nonce so a captured datagram cannot be replayed.
//!
//! Layout: `MAGIC(4) | VERSION(1) | unix seconds (u64 BE) | nonce (u64 BE) | JSON | HMAC(32)`.
//! The tag covers everything before it. The first byte, 0x2F, lies outside the ranges of STUN
//! (0-3) and QUIC (64-255) in the RFC 7983 / RFC 9443 demultiplexing scheme, so one socket can
//! carry all three.
//!
//! Bulk frames carry the QUIC packets of a tunnel through the proxy's relay:
//! `BULK_MAGIC(4) | VERSION(1) | time (u64 BE) | seq (u64 BE) | from_len(1) | from |
//! to_len(1) | to | packet | HMAC(32)`, binary because a 1200-byte QUIC packet in JSON would
//! not fit a datagram. `seq` counts up from the sender's start time in nanoseconds, so the
//! proxy and the receiver each drop a frame they saw before with a sliding window per sender
//! ([`SeqWindow`]): a captured frame replayed would otherwise spend the relay's cap.
//!
//! A registration is also signed by the node's own Ed25519 identity key ([`sign_register`]),
//! over the name, the time and nonce and every field, so the proxy can bind a node name to one
//! key: holding the fleet secret is not enough to take over another member's name.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;

pub const MAGIC: [u8; 4] = [0x2F, b'P', b'2', b'P'];
pub const BULK_MAGIC: [u8; 4] = [0x2E, b'P', b'2', b'P'];
pub const VERSION: u8 = 1;
/// Fits one Ethernet frame with IPv4/IPv6 and UDP headers; nothing larger is accepted.
pub const MAX_DATAGRAM: usize = 1400;
pub const TAG_LEN: usize = 32;
const HEADER_LEN: usize = MAGIC.len() + 1 + 8 + 8;
/// How far a sender's clock may be off; the replay guard remembers nonces this long.
pub const WINDOW_SECS: u64 = 120;
/// A secret shorter than this is a configuration mistake, not a key.
pub const MIN_SECRET_LEN: usize = 16;

type HmacSha256 = Hmac<Sha256>;

/// What a message says. Tagged JSON so a new kind is a new variant, not a new layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case", deny_unknown_fields)]
pub enum Body {
    /// Member -> proxy, every keepalive: here I am, this is my LAN endpoint.
    Register {
        local: SocketAddr,
        keepalive_secs: u32,
        /// SHA-256 of the member's tunnel certificate (hex), which its session peers pin.
        #[serde(default)]
        cert: String,
        /// The member's Ed25519 identity key (hex), which the proxy binds its name to.
        #[serde(default)]
        key: String,
        /// Ed25519 signature (hex) by `key` over [`register_claim`].
        #[serde(default)]
        sig: String,
    },
    /// Proxy -> member: registered; this is the address your datagrams come from. STUN is
    /// also answered on `alt_port` (0: not), so a member can compare the mappings towards two
    /// destinations and tell an endpoint-independent NAT from a symmetric one.
    Registered {
        mapped: SocketAddr,
        #[serde(default)]
        alt_port: u16,
    },
    /// Proxy -> member: I do not know you (e.g. I restarted); register again.
    Unknown,
    /// Member -> proxy: a member leaving for good.
    Unregister,
    /// Member -> proxy: start a session with `target`.
    TalkTo {
        target: String,
    },
    /// Proxy -> both members of a new session: punch towards each other now.
    Punch {
        peer: String,
        local: SocketAddr,
        mapped: SocketAddr,
        #[serde(default)]
        cert: String,
    },
    /// Proxy -> member: a request could not be carried out.
    Refused {
        target: String,
        reason: String,
    },
    /// Peer -> peer over a candidate path.
    Probe,
    /// Peer -> peer: your probe arrived, from `seen_as`.
    ProbeAck {
        seen_as: SocketAddr,
    },
    /// Peer -> peer keepalive of the session and of the punched path.
    Ping,
    Pong,
    /// The other session peers of the sender, so the receiver can join them too.
    Peers {
        names: Vec<String>,
    },
    /// A signed announcement's wire text (`p2pu1:...`), id for acknowledgement and dedup.
    Announce {
        id: u64,
        wire: String,
    },
    AnnounceAck {
        id: u64,
    },
    EndSession,
    /// Member -> proxy: forward `inner` to `to` (no direct path).
    Relay {
        to: String,
        inner: Box<Body>,
    },
    /// Proxy -> member: `inner` from the message's sender, forwarded.
    Relayed {
        inner: Box<Body>,
    },
}

impl Body {
    /// A short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Register { .. } => "register",
            Body::Registered { .. } => "registered",
            Body::Unknown => "unknown",
            Body::Unregister => "unregister",
            Body::TalkTo { .. } => "talkto",
            Body::Punch { .. } => "punch",
            Body::Refused { .. } => "refused",
            Body::Probe => "probe",
            Body::ProbeAck { .. } => "probe_ack",
            Body::Ping => "ping",
            Body::Pong => "pong",
            Body::Peers { .. } => "peers",
            Body::Announce { .. } => "announce",
            Body::AnnounceAck { .. } => "announce_ack",
            Body::EndSession => "end_session",
            Body::Relay { .. } => "relay",
            Body::Relayed { .. } => "relayed",
        }
    }
}

/// The authenticated part: who sends (a node name, or `proxy`) and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    pub from: String,
    pub body: Body,
}

/// A decoded, authenticated message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub time: u64,
    pub nonce: u64,
    pub payload: Payload,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("datagram of {len} bytes: at most {MAX_DATAGRAM}")]
    TooLong { len: usize },
    #[error("datagram of {len} bytes is shorter than a header and tag")]
    TooShort { len: usize },
    #[error("not a p2pu overlay message (magic)")]
    Magic,
    #[error("overlay version {got}, this build speaks {VERSION}")]
    Version { got: u8 },
    #[error("authentication tag does not match the fleet secret")]
    Tag,
    #[error("timestamp {time} is more than {WINDOW_SECS} s from now ({now})")]
    Stale { time: u64, now: u64 },
    #[error("nonce already seen (replay)")]
    Replay,
    #[error("body: {0}")]
    Body(String),
    #[error("fleet secret of {len} bytes: at least {MIN_SECRET_LEN} wanted")]
    WeakSecret { len: usize },
    #[error("registration signature: {0}")]
    Signature(&'static str),
    #[error("sequence number {seq} already seen or older than the window (replay)")]
    BulkReplay { seq: u64 },
}

/// The fleet secret, checked for length once, as a keyed HMAC ready to clone.
#[derive(Clone)]
pub struct Secret(HmacSha256);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// The secret file's text with surrounding whitespace (the trailing newline) removed.
    pub fn new(bytes: &[u8]) -> Result<Secret, ProtocolError> {
        let text = bytes.trim_ascii();
        if text.len() < MIN_SECRET_LEN {
            return Err(ProtocolError::WeakSecret { len: text.len() });
        }
        let mac = HmacSha256::new_from_slice(text)
            .map_err(|_| ProtocolError::WeakSecret { len: text.len() })?;
        Ok(Secret(mac))
    }

    fn mac(&self) -> HmacSha256 {
        self.0.clone()
    }
}

/// Encodes and signs `payload`.
pub fn encode(
    secret: &Secret,
    time: u64,
    nonce: u64,
    payload: &Payload,
) -> Result<Vec<u8>, ProtocolError> {
    let json = serde_json::to_vec(payload).map_err(|e| ProtocolError::Body(e.to_string()))?;
    seal_raw(secret, time, nonce, &json)
}

/// Frames and signs an arbitrary body; exposed so tests and the fuzz target can reach the body
/// parser behind the tag.
pub fn seal_raw(
    secret: &Secret,
    time: u64,
    nonce: u64,
    body: &[u8],
) -> Result<Vec<u8>, ProtocolError> {
    seal(secret, MAGIC, time, nonce, &[body])
}

/// The framing both kinds of datagram share: `magic`, version, time, a second word (the
/// message's nonce, the bulk frame's sequence number), the body `parts` in order, and the tag
/// over all of it.
fn seal(
    secret: &Secret,
    magic: [u8; 4],
    time: u64,
    word: u64,
    parts: &[&[u8]],
) -> Result<Vec<u8>, ProtocolError> {
    let len = HEADER_LEN + parts.iter().map(|p| p.len()).sum::<usize>() + TAG_LEN;
    if len > MAX_DATAGRAM {
        return Err(ProtocolError::TooLong { len });
    }
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&magic);
    out.push(VERSION);
    out.extend_from_slice(&time.to_be_bytes());
    out.extend_from_slice(&word.to_be_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
    let mut mac = secret.mac();
    mac.update(&out);
    out.extend_from_slice(&mac.finalize().into_bytes());
    Ok(out)
}

/// Checks what [`seal`] wrote: size (at least `min_body` body bytes), magic, version, tag and
/// time window, in that order, so nothing past the tag is read from a forgery. Returns the
/// time, the second word and the body.
fn open<'a>(
    secret: &Secret,
    magic: [u8; 4],
    now: u64,
    bytes: &'a [u8],
    min_body: usize,
) -> Result<(u64, u64, &'a [u8]), ProtocolError> {
    let len = bytes.len();
    if len > MAX_DATAGRAM {
        return Err(ProtocolError::TooLong { len });
    }
    let short = || ProtocolError::TooShort { len };
    let tag_at = len
        .checked_sub(TAG_LEN)
        .filter(|at| *at >= HEADER_LEN + min_body)
        .ok_or_else(short)?;
    let (signed, tag) = bytes.split_at(tag_at);
    let (got_magic, rest) = signed.split_at(magic.len());
    if got_magic != magic {
        return Err(ProtocolError::Magic);
    }
    let (version, rest) = rest.split_at(1);
    if version != [VERSION] {
        return Err(ProtocolError::Version {
            got: version.first().copied().unwrap_or(0),
        });
    }
    let mut mac = secret.mac();
    mac.update(signed);
    mac.verify_slice(tag).map_err(|_| ProtocolError::Tag)?;
    let (time, rest) = rest.split_at(8);
    let (word, body) = rest.split_at(8);
    let time = u64::from_be_bytes(time.try_into().map_err(|_| short())?);
    let word = u64::from_be_bytes(word.try_into().map_err(|_| short())?);
    if time.abs_diff(now) > WINDOW_SECS {
        return Err(ProtocolError::Stale { time, now });
    }
    Ok((time, word, body))
}

/// Whether `bytes` claims to be an overlay message (cheap demultiplexing by the first byte).
pub fn looks_like_overlay(bytes: &[u8]) -> bool {
    bytes.first() == Some(&MAGIC[0])
}

/// Checks size, framing, tag and time window, then parses the body. Pure: the replay check,
/// which needs memory, is [`ReplayGuard::check`].
pub fn decode(secret: &Secret, now: u64, bytes: &[u8]) -> Result<Message, ProtocolError> {
    let (time, nonce, body) = open(secret, MAGIC, now, bytes, 0)?;
    let payload: Payload =
        serde_json::from_slice(body).map_err(|e| ProtocolError::Body(e.to_string()))?;
    // Only the form `encode` writes: serde also takes structs and tagged enums as arrays, and
    // such a body can be too long to forward once re-encoded (found by the fuzz target).
    if serde_json::to_vec(&payload).ok().as_deref() != Some(body) {
        return Err(ProtocolError::Body(
            "not the canonical JSON `encode` writes".into(),
        ));
    }
    Ok(Message {
        time,
        nonce,
        payload,
    })
}

/// A decoded bulk frame, borrowing from the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bulk<'a> {
    /// The sender's sequence number, for [`SeqWindow`].
    pub seq: u64,
    pub from: &'a str,
    pub to: &'a str,
    pub packet: &'a [u8],
}

/// Whether `bytes` claims to be a bulk frame.
pub fn looks_like_bulk(bytes: &[u8]) -> bool {
    bytes.first() == Some(&BULK_MAGIC[0])
}

/// Frames and signs one tunnel packet from `from` to `to`; `seq` must grow with every frame
/// the sender sends (see [`SeqWindow`]).
pub fn encode_bulk(
    secret: &Secret,
    time: u64,
    seq: u64,
    from: &str,
    to: &str,
    packet: &[u8],
) -> Result<Vec<u8>, ProtocolError> {
    let too_long = |len| ProtocolError::TooLong { len };
    let from_len = u8::try_from(from.len()).map_err(|_| too_long(from.len()))?;
    let to_len = u8::try_from(to.len()).map_err(|_| too_long(to.len()))?;
    seal(
        secret,
        BULK_MAGIC,
        time,
        seq,
        &[
            &[from_len],
            from.as_bytes(),
            &[to_len],
            to.as_bytes(),
            packet,
        ],
    )
}

/// Checks size, framing, tag and time window of a bulk frame.
pub fn decode_bulk<'a>(
    secret: &Secret,
    now: u64,
    bytes: &'a [u8],
) -> Result<Bulk<'a>, ProtocolError> {
    let (_, seq, rest) = open(secret, BULK_MAGIC, now, bytes, 2)?;
    let short = ProtocolError::TooShort { len: bytes.len() };
    let (from, rest) = take_name(rest).ok_or(short.clone())?;
    let (to, packet) = take_name(rest).ok_or(short)?;
    Ok(Bulk {
        seq,
        from,
        to,
        packet,
    })
}

fn take_name(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let (&len, rest) = bytes.split_first()?;
    let name = rest.get(..usize::from(len))?;
    let rest = rest.get(usize::from(len)..)?;
    Some((std::str::from_utf8(name).ok()?, rest))
}

/// Remembers the nonces of the last [`WINDOW_SECS`], at most `capacity` of them (the oldest go
/// first), so an authenticated datagram is accepted once.
#[derive(Debug)]
pub struct ReplayGuard {
    seen: HashSet<u64>,
    order: VecDeque<(u64, u64)>,
    capacity: usize,
}

impl ReplayGuard {
    pub fn new(capacity: usize) -> ReplayGuard {
        ReplayGuard {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records `message`'s nonce; `Err(Replay)` when it was seen before.
    pub fn check(&mut self, now: u64, message: &Message) -> Result<(), ProtocolError> {
        while let Some(&(time, nonce)) = self.order.front() {
            if now.saturating_sub(time) <= WINDOW_SECS && self.order.len() < self.capacity {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&nonce);
        }
        if !self.seen.insert(message.nonce) {
            return Err(ProtocolError::Replay);
        }
        self.order.push_back((message.time, message.nonce));
        Ok(())
    }
}

/// How far back [`SeqWindow`] remembers: frames reordered by more than this are dropped.
pub const SEQ_WINDOW: u64 = 128;

/// The anti-replay window of one sender's bulk frames (as IPsec's, RFC 4303 section 3.4.3):
/// the highest sequence number seen and which of the [`SEQ_WINDOW`] below it were seen too.
/// A sender starts counting at its start time in nanoseconds, so a restarted one is ahead of
/// everything its previous run sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqWindow {
    top: Option<u64>,
    seen: u128,
}

impl SeqWindow {
    /// Records `seq`; `Err(BulkReplay)` when it was seen before or is too old to tell.
    pub fn check(&mut self, seq: u64) -> Result<(), ProtocolError> {
        let Some(top) = self.top else {
            self.top = Some(seq);
            self.seen = 1;
            return Ok(());
        };
        if seq > top {
            let shift = seq - top;
            self.seen = if shift >= SEQ_WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.top = Some(seq);
            return Ok(());
        }
        let back = top - seq;
        let bit = 1u128.checked_shl(u32::try_from(back).unwrap_or(u32::MAX));
        match bit {
            Some(bit) if back < SEQ_WINDOW && self.seen & bit == 0 => {
                self.seen |= bit;
                Ok(())
            }
            _ => Err(ProtocolError::BulkReplay { seq }),
        }
    }
}

/// The first sequence number of a bulk sender starting now: its clock in nanoseconds.
pub fn first_seq() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What a member's identity key signs in a registration: every field, the sender's name and
/// the datagram's time and nonce (so the signature cannot be lifted into another datagram),
/// each length-prefixed after a domain tag.
pub fn register_claim(
    time: u64,
    nonce: u64,
    from: &str,
    local: SocketAddr,
    keepalive_secs: u32,
    cert: &str,
    key: &str,
) -> Vec<u8> {
    let mut out = b"p2pu-nat-register-v1\0".to_vec();
    out.extend_from_slice(&time.to_be_bytes());
    out.extend_from_slice(&nonce.to_be_bytes());
    out.extend_from_slice(&keepalive_secs.to_be_bytes());
    for field in [from, &local.to_string(), cert, key] {
        out.extend_from_slice(&(field.len() as u64).to_be_bytes());
        out.extend_from_slice(field.as_bytes());
    }
    out
}

/// A registration signed by `identity`, to send with exactly this `time` and `nonce`.
pub fn sign_register(
    identity: &SigningKey,
    time: u64,
    nonce: u64,
    from: &str,
    local: SocketAddr,
    keepalive_secs: u32,
    cert: String,
) -> Body {
    let key = hex::encode(identity.verifying_key().as_bytes());
    let claim = register_claim(time, nonce, from, local, keepalive_secs, &cert, &key);
    let sig = hex::encode(identity.sign(&claim).to_bytes());
    Body::Register {
        local,
        keepalive_secs,
        cert,
        key,
        sig,
    }
}

/// The identity key that signed `message`, a registration; an error when it is not one, or
/// the key or signature is missing, malformed or does not verify.
pub fn verify_register(message: &Message) -> Result<VerifyingKey, ProtocolError> {
    let Body::Register {
        local,
        keepalive_secs,
        cert,
        key,
        sig,
    } = &message.payload.body
    else {
        return Err(ProtocolError::Signature("not a registration"));
    };
    let key_bytes: [u8; 32] = hex::decode(key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(ProtocolError::Signature("no 32-byte hex key"))?;
    let verifying = VerifyingKey::from_bytes(&key_bytes)
        .map_err(|_| ProtocolError::Signature("not an Ed25519 key"))?;
    let sig_bytes: [u8; 64] = hex::decode(sig)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(ProtocolError::Signature("no 64-byte hex signature"))?;
    let claim = register_claim(
        message.time,
        message.nonce,
        &message.payload.from,
        *local,
        *keepalive_secs,
        cert,
        key,
    );
    verifying
        .verify_strict(&claim, &Signature::from_bytes(&sig_bytes))
        .map_err(|_| ProtocolError::Signature("does not verify"))?;
    Ok(verifying)
}

/// Seconds since the Unix epoch (0 before it: such a clock fails every window check anyway).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secret() -> Secret {
        Secret::new(b"0123456789abcdef0123456789abcdef\n").unwrap()
    }

    fn payload() -> Payload {
        Payload {
            from: "a1".into(),
            body: Body::Register {
                local: "192.168.1.10:3478".parse().unwrap(),
                keepalive_secs: 20,
                cert: String::new(),
                key: String::new(),
                sig: String::new(),
            },
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&secret(), 1000, 7, &payload()).unwrap();
        assert!(looks_like_overlay(&bytes));
        let message = decode(&secret(), 1000, &bytes).unwrap();
        assert_eq!(message.payload, payload());
        assert_eq!(message.nonce, 7);
    }

    #[test]
    fn first_byte_is_neither_stun_nor_quic() {
        assert!(MAGIC[0] > 3 && MAGIC[0] < 64);
        assert!(BULK_MAGIC[0] > 3 && BULK_MAGIC[0] < 64);
    }

    #[test]
    fn wrong_secret_is_rejected() {
        let bytes = encode(&secret(), 1000, 7, &payload()).unwrap();
        let other = Secret::new(b"another secret of enough length").unwrap();
        assert_eq!(decode(&other, 1000, &bytes), Err(ProtocolError::Tag));
    }

    #[test]
    fn any_flipped_bit_is_rejected() {
        let bytes = encode(&secret(), 1000, 7, &payload()).unwrap();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(
                decode(&secret(), 1000, &bad).is_err(),
                "bit flip at byte {i}"
            );
        }
    }

    #[test]
    fn stale_and_future_timestamps_are_rejected() {
        let bytes = encode(&secret(), 1000, 7, &payload()).unwrap();
        assert!(decode(&secret(), 1000 + WINDOW_SECS, &bytes).is_ok());
        assert!(matches!(
            decode(&secret(), 1001 + WINDOW_SECS, &bytes),
            Err(ProtocolError::Stale { .. })
        ));
        assert!(matches!(
            decode(&secret(), 1000 - WINDOW_SECS - 1, &bytes),
            Err(ProtocolError::Stale { .. })
        ));
    }

    #[test]
    fn replayed_nonce_is_rejected_once_seen() {
        let mut guard = ReplayGuard::new(16);
        let bytes = encode(&secret(), 1000, 7, &payload()).unwrap();
        let message = decode(&secret(), 1000, &bytes).unwrap();
        guard.check(1000, &message).unwrap();
        assert_eq!(guard.check(1001, &message), Err(ProtocolError::Replay));
    }

    #[test]
    fn replay_guard_stays_bounded() {
        let mut guard = ReplayGuard::new(8);
        for nonce in 0..100 {
            let message = Message {
                time: 1000,
                nonce,
                payload: payload(),
            };
            guard.check(1000, &message).unwrap();
        }
        assert!(guard.seen.len() <= 8 && guard.order.len() <= 8);
    }

    #[test]
    fn oversized_bodies_are_refused_on_both_ends() {
        let big = vec![b' '; MAX_DATAGRAM];
        assert!(matches!(
            seal_raw(&secret(), 1000, 1, &big),
            Err(ProtocolError::TooLong { .. })
        ));
        let mut bytes = MAGIC.to_vec();
        bytes.resize(MAX_DATAGRAM + 1, 0);
        assert!(matches!(
            decode(&secret(), 1000, &bytes),
            Err(ProtocolError::TooLong { .. })
        ));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(
            Secret::new(b"short\n"),
            Err(ProtocolError::WeakSecret { len: 5 })
        ));
    }

    #[test]
    fn unknown_fields_in_an_authentic_body_are_rejected() {
        let body = br#"{"from":"a","body":{"t":"announce_ack","id":1,"extra":1}}"#;
        let bytes = seal_raw(&secret(), 1000, 1, body).unwrap();
        assert!(matches!(
            decode(&secret(), 1000, &bytes),
            Err(ProtocolError::Body(_))
        ));
    }

    #[test]
    fn bulk_round_trip_and_rejection() {
        let packet = vec![0x40u8; 1200];
        let bytes = encode_bulk(&secret(), 1000, 3, "node-a", "node-b", &packet).unwrap();
        assert!(
            bytes.len() <= MAX_DATAGRAM && looks_like_bulk(&bytes) && !looks_like_overlay(&bytes)
        );
        let bulk = decode_bulk(&secret(), 1000, &bytes).unwrap();
        assert_eq!(
            (bulk.from, bulk.to, bulk.packet),
            ("node-a", "node-b", &packet[..])
        );
        let other = Secret::new(b"another secret of enough length").unwrap();
        assert_eq!(decode_bulk(&other, 1000, &bytes), Err(ProtocolError::Tag));
        assert!(decode_bulk(&secret(), 5000, &bytes).is_err());
        // The longest node names still leave room for a full QUIC packet.
        let long = "n".repeat(64);
        assert!(encode_bulk(&secret(), 1000, 3, &long, &long, &packet).is_ok());
    }

    #[test]
    fn a_replayed_bulk_sequence_number_is_rejected() {
        let mut window = SeqWindow::default();
        let frame = encode_bulk(&secret(), 1000, 500, "a", "b", b"packet").unwrap();
        let bulk = decode_bulk(&secret(), 1000, &frame).unwrap();
        assert_eq!(bulk.seq, 500);
        window.check(bulk.seq).unwrap();
        assert_eq!(
            window.check(bulk.seq),
            Err(ProtocolError::BulkReplay { seq: 500 })
        );
        // Reordered within the window: taken once; older than the window: refused.
        window.check(510).unwrap();
        window.check(505).unwrap();
        assert!(window.check(505).is_err());
        assert!(window.check(510).is_err());
        window.check(499).unwrap();
        window.check(510 + SEQ_WINDOW).unwrap();
        assert!(window.check(510).is_err());
        assert!(window.check(511).is_ok());
        // A jump far ahead (a restarted sender) is taken.
        window.check(u64::MAX).unwrap();
        assert!(window.check(u64::MAX).is_err());
    }

    #[test]
    fn a_signed_registration_verifies_and_any_change_breaks_it() {
        let identity = SigningKey::from_bytes(&[5; 32]);
        let local: SocketAddr = "192.168.1.10:3478".parse().unwrap();
        let body = sign_register(&identity, 1000, 7, "a1", local, 20, "ab".repeat(32));
        let message = |from: &str, time, nonce, body: Body| Message {
            time,
            nonce,
            payload: Payload {
                from: from.into(),
                body,
            },
        };
        assert_eq!(
            verify_register(&message("a1", 1000, 7, body.clone())),
            Ok(identity.verifying_key())
        );
        // Another name, time or nonce: the signature was not made for that datagram.
        assert!(verify_register(&message("a2", 1000, 7, body.clone())).is_err());
        assert!(verify_register(&message("a1", 1001, 7, body.clone())).is_err());
        assert!(verify_register(&message("a1", 1000, 8, body.clone())).is_err());
        let Body::Register {
            local,
            keepalive_secs,
            key,
            sig,
            ..
        } = body
        else {
            unreachable!()
        };
        let changed = Body::Register {
            local,
            keepalive_secs,
            cert: "cd".repeat(32),
            key: key.clone(),
            sig: sig.clone(),
        };
        assert!(verify_register(&message("a1", 1000, 7, changed)).is_err());
        let unsigned = Body::Register {
            local,
            keepalive_secs,
            cert: String::new(),
            key: String::new(),
            sig: String::new(),
        };
        assert!(verify_register(&message("a1", 1000, 7, unsigned)).is_err());
    }

    fn arb_addr() -> impl Strategy<Value = SocketAddr> {
        // Through `SocketAddr::new`: JSON carries an address as text, which has no place for
        // an IPv6 flow label.
        (any::<std::net::IpAddr>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
    }

    fn arb_text() -> impl Strategy<Value = String> {
        "\\PC{0,12}"
    }

    /// Every kind of body, relays nested two deep.
    fn arb_body() -> impl Strategy<Value = Body> {
        let leaf = prop_oneof![
            (arb_addr(), any::<u32>(), arb_text(), arb_text(), arb_text()).prop_map(
                |(local, keepalive_secs, cert, key, sig)| Body::Register {
                    local,
                    keepalive_secs,
                    cert,
                    key,
                    sig
                }
            ),
            (arb_addr(), any::<u16>())
                .prop_map(|(mapped, alt_port)| Body::Registered { mapped, alt_port }),
            Just(Body::Unknown),
            Just(Body::Unregister),
            arb_text().prop_map(|target| Body::TalkTo { target }),
            (arb_text(), arb_addr(), arb_addr(), arb_text()).prop_map(
                |(peer, local, mapped, cert)| Body::Punch {
                    peer,
                    local,
                    mapped,
                    cert
                }
            ),
            (arb_text(), arb_text()).prop_map(|(target, reason)| Body::Refused { target, reason }),
            Just(Body::Probe),
            arb_addr().prop_map(|seen_as| Body::ProbeAck { seen_as }),
            Just(Body::Ping),
            Just(Body::Pong),
            proptest::collection::vec(arb_text(), 0..4).prop_map(|names| Body::Peers { names }),
            (any::<u64>(), arb_text()).prop_map(|(id, wire)| Body::Announce { id, wire }),
            any::<u64>().prop_map(|id| Body::AnnounceAck { id }),
            Just(Body::EndSession),
        ];
        leaf.prop_recursive(2, 8, 1, |inner| {
            prop_oneof![
                (arb_text(), inner.clone()).prop_map(|(to, inner)| Body::Relay {
                    to,
                    inner: Box::new(inner)
                }),
                inner.prop_map(|inner| Body::Relayed {
                    inner: Box::new(inner)
                }),
            ]
        })
    }

    fn arb_payload() -> impl Strategy<Value = Payload> {
        (arb_text(), arb_body()).prop_map(|(from, body)| Payload { from, body })
    }

    /// Bodies to seal: the canonical JSON of a payload (which must be taken), the same with
    /// one byte changed, and raw bytes. The flag says whether the body must be taken.
    fn arb_sealed_body() -> impl Strategy<Value = (Vec<u8>, bool)> {
        prop_oneof![
            arb_payload().prop_map(|p| (serde_json::to_vec(&p).unwrap(), true)),
            (arb_payload(), any::<proptest::sample::Index>(), any::<u8>()).prop_map(
                |(p, at, byte)| {
                    let mut json = serde_json::to_vec(&p).unwrap();
                    let at = at.index(json.len());
                    json[at] = byte;
                    (json, false)
                }
            ),
            proptest::collection::vec(any::<u8>(), 0..400).prop_map(|b| (b, false)),
        ]
    }

    proptest! {
        /// Every message `encode` writes decodes to itself, and any changed byte is refused
        /// (the tag covers every byte): what is taken is exactly what a holder of the secret
        /// sealed.
        #[test]
        fn messages_round_trip_and_any_changed_byte_is_refused(
            payload in arb_payload(),
            time in 0u64..1 << 40,
            nonce in any::<u64>(),
            at in any::<proptest::sample::Index>(),
            flip in 1u8..,
        ) {
            let bytes = encode(&secret(), time, nonce, &payload).unwrap();
            prop_assert!(looks_like_overlay(&bytes));
            let message = decode(&secret(), time, &bytes).unwrap();
            prop_assert_eq!(message, Message { time, nonce, payload });
            let mut changed = bytes;
            let at = at.index(changed.len());
            changed[at] ^= flip;
            prop_assert!(decode(&secret(), time, &changed).is_err(), "byte {} changed", at);
        }

        /// Bytes nobody sealed are never taken, bare or behind a valid header.
        #[test]
        fn unsealed_bytes_are_never_taken(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
            prop_assert!(decode(&secret(), 1000, &bytes).is_err());
            prop_assert!(decode_bulk(&secret(), 1000, &bytes).is_err());
            for magic in [MAGIC, BULK_MAGIC] {
                let mut framed = magic.to_vec();
                framed.push(VERSION);
                framed.extend_from_slice(&1000u64.to_be_bytes());
                framed.extend_from_slice(&bytes);
                prop_assert!(decode(&secret(), 1000, &framed).is_err());
                prop_assert!(decode_bulk(&secret(), 1000, &framed).is_err());
            }
        }

        /// Every bulk frame `encode_bulk` writes decodes to the same names, packet and
        /// sequence number; one that does not fit a datagram is refused when encoding; any
        /// changed byte is refused.
        #[test]
        fn bulk_frames_round_trip_and_any_changed_byte_is_refused(
            from in "\\PC{0,20}",
            to in "\\PC{0,20}",
            packet in proptest::collection::vec(any::<u8>(), 0..1400),
            seq in any::<u64>(),
            at in any::<proptest::sample::Index>(),
            flip in 1u8..,
        ) {
            let len = HEADER_LEN + 2 + from.len() + to.len() + packet.len() + TAG_LEN;
            let bytes = match encode_bulk(&secret(), 1000, seq, &from, &to, &packet) {
                Ok(bytes) => bytes,
                Err(e) => {
                    prop_assert!(len > MAX_DATAGRAM, "{e} for a {len}-byte frame");
                    return Ok(());
                }
            };
            prop_assert!(looks_like_bulk(&bytes));
            let bulk = decode_bulk(&secret(), 1000, &bytes).unwrap();
            prop_assert_eq!(bulk, Bulk { seq, from: &from, to: &to, packet: &packet });
            let mut changed = bytes.clone();
            let at = at.index(changed.len());
            changed[at] ^= flip;
            prop_assert!(decode_bulk(&secret(), 1000, &changed).is_err(), "byte {} changed", at);
        }

        /// What decodes from an authentic body is canonical: it re-encodes to the very bytes,
        /// one spelling per message, which the proxy can forward unchanged. Canonical JSON
        /// is always taken.
        #[test]
        fn sealed_bodies_that_decode_re_encode_unchanged((body, canonical) in arb_sealed_body()) {
            let bytes = seal_raw(&secret(), 1000, 1, &body).unwrap();
            match decode(&secret(), 1000, &bytes) {
                Ok(message) => {
                    let again = encode(&secret(), message.time, message.nonce, &message.payload);
                    prop_assert_eq!(again.ok(), Some(bytes));
                }
                Err(e) => prop_assert!(!canonical, "canonical body refused: {}", e),
            }
        }
    }

    /// Found by the `overlay_message` fuzz target: the same payload as a JSON array decodes
    /// with serde's defaults, but re-encodes longer than a datagram may be. Only the canonical
    /// form is taken.
    #[test]
    fn only_the_canonical_json_body_is_accepted() {
        let canonical = serde_json::to_vec(&payload()).unwrap();
        assert!(decode(
            &secret(),
            1000,
            &seal_raw(&secret(), 1000, 1, &canonical).unwrap()
        )
        .is_ok());
        let p = payload();
        let array = serde_json::to_vec(&serde_json::json!([p.from, p.body])).unwrap();
        let spaced = format!(" {}", String::from_utf8(canonical).unwrap());
        for body in [array, spaced.into_bytes()] {
            let sealed = seal_raw(&secret(), 1000, 1, &body).unwrap();
            assert!(
                matches!(
                    decode(&secret(), 1000, &sealed),
                    Err(ProtocolError::Body(_))
                ),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
        let found = include_bytes!("../../fuzz/regressions/overlay_message-crash-b84b02e9");
        let sealed = seal_raw(&secret(), 1000, 1, found).unwrap();
        assert!(matches!(
            decode(&secret(), 1000, &sealed),
            Err(ProtocolError::Body(_))
        ));
    }
}
