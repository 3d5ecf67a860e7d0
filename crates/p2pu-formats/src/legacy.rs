//! The 2017 prototype's torrent payload (its `torrentformat.py`), read and written byte-exactly so
//! a running fleet can be migrated.
//!
//! A payload is `md5hex(torrent)` (32 lowercase hex chars) followed by the torrent with the bytes
//! of its `pieces` string replaced by their standard base64. The prototype's quirks, kept as
//! they are because old nodes decode exactly this: the length prefix stays the raw length; the
//! encoded span is one byte longer than the pieces (it swallows the first byte of the next key,
//! the `7` of `7:private`); the end of the base64 is found at the next `:private`, so a torrent
//! without `private` right after `pieces` (mktorrent's) cannot be sent. Serf appended a newline.
//! Over the overlay the payload travelled as `SendTorrentFile <sender-ip> split <payload>`.
//!
//! Legacy payloads are unsigned: the MD5 only detects corruption. The agent accepts them only
//! when configured to, and only with a newer creation date (see [`LegacyTorrent`]).

use crate::announcement::validate_name;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use md5::{Digest, Md5};
use serde::Deserialize;
use serde_bencode::value::Value;
use sha1::Sha1;
use std::net::IpAddr;

const PIECES_KEY: &[u8] = b"6:pieces";
const END_MARK: &[u8] = b":private";
const OVERLAY_COMMAND: &[u8] = b"SendTorrentFile ";
const OVERLAY_SPLIT: &[u8] = b"split ";
/// Torrents nest three levels (dict, info dict, files list of dicts); anything much deeper is
/// hostile and would make serde recurse off the stack.
const MAX_NESTING: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LegacyError {
    #[error(
        "legacy payload does not start with an MD5 as 32 lowercase hex chars (starts {start:?})"
    )]
    BadMd5Prefix { start: String },
    #[error("legacy payload has no `6:pieces<length>:` string")]
    NoPieces,
    #[error("legacy payload pieces: {reason}")]
    BadPieces { reason: String },
    #[error("legacy payload MD5 mismatch: payload says {want}, its torrent hashes to {got}")]
    Md5Mismatch { want: String, got: String },
    #[error("legacy torrent: {reason}")]
    BadTorrent { reason: String },
    #[error("legacy overlay message: {reason}")]
    BadOverlay { reason: String },
    #[error("cannot encode as a legacy payload: {reason}")]
    Unencodable { reason: String },
    #[error("internal error (a bug in p2pu): {0}")]
    Internal(String),
}

use LegacyError as E;

fn bad_pieces(reason: impl Into<String>) -> LegacyError {
    E::BadPieces {
        reason: reason.into(),
    }
}

fn bad_torrent(reason: impl Into<String>) -> LegacyError {
    E::BadTorrent {
        reason: reason.into(),
    }
}

/// A torrent that arrived in (or goes out as) a legacy payload, with what the agent checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyTorrent {
    /// The .torrent file's bytes.
    pub torrent: Vec<u8>,
    pub md5: [u8; 16],
    pub info_hash: [u8; 20],
    /// The payload's name, checked with [`validate_name`] (the payload is unsigned).
    pub name: String,
    /// Total payload length (sum of the files for a multi-file torrent).
    pub length: u64,
    /// `creation date`, seconds since the epoch, if the torrent has one.
    pub creation_date: Option<i64>,
}

#[derive(Deserialize)]
struct Meta {
    info: Info,
    #[serde(rename = "creation date")]
    creation_date: Option<i64>,
}

#[derive(Deserialize)]
struct Info {
    name: String,
    length: Option<u64>,
    files: Option<Vec<FileEntry>>,
    #[serde(rename = "piece length")]
    piece_length: u64,
    #[serde(with = "serde_bytes")]
    pieces: Vec<u8>,
}

#[derive(Deserialize)]
struct FileEntry {
    length: u64,
}

impl LegacyTorrent {
    /// Checks a .torrent file and extracts its info-hash, name, length and creation date.
    pub fn parse(torrent: Vec<u8>) -> Result<LegacyTorrent, LegacyError> {
        if !nesting_within(&torrent, MAX_NESTING) {
            return Err(bad_torrent(format!("nested deeper than {MAX_NESTING}")));
        }
        // The one place serde_bencode still reads (announcements and torrents use the strict
        // `crate::bencode`): the prototype's torrents map onto `Meta`/`Info` by derive, and the
        // re-encode check below accepts only canonical input, the same set the strict reader
        // accepts. Legacy payloads are frozen (2017), so this reader never grows.
        let whole: Value =
            serde_bencode::from_bytes(&torrent).map_err(|e| bad_torrent(e.to_string()))?;
        // The info-hash is taken over a re-encoding, so it is right only for canonical input.
        let canonical = serde_bencode::to_bytes(&whole).map_err(|e| bad_torrent(e.to_string()))?;
        if canonical != torrent {
            return Err(bad_torrent("not canonical bencode"));
        }
        let meta: Meta =
            serde_bencode::from_bytes(&torrent).map_err(|e| bad_torrent(e.to_string()))?;
        let info = match &whole {
            Value::Dict(dict) => dict.get(&b"info"[..]),
            _ => None,
        }
        .ok_or_else(|| E::Internal("torrent parsed without an info dict".to_string()))?;
        let info_bytes = serde_bencode::to_bytes(info).map_err(|e| bad_torrent(e.to_string()))?;
        let Info {
            name,
            length,
            files,
            piece_length,
            pieces,
        } = meta.info;
        validate_name(&name).map_err(|e| bad_torrent(e.to_string()))?;
        if piece_length == 0 || pieces.len() % 20 != 0 {
            return Err(bad_torrent(format!(
                "piece length {piece_length} and {} bytes of piece hashes",
                pieces.len()
            )));
        }
        let length = match (length, files) {
            (Some(length), None) => length,
            (None, Some(files)) => files
                .iter()
                .try_fold(0u64, |sum, f| sum.checked_add(f.length))
                .ok_or_else(|| bad_torrent("file lengths overflow"))?,
            _ => {
                return Err(bad_torrent(
                    "info has neither or both of `length` and `files`",
                ))
            }
        };
        Ok(LegacyTorrent {
            md5: Md5::digest(&torrent).into(),
            info_hash: Sha1::digest(&info_bytes).into(),
            torrent,
            name,
            length,
            creation_date: meta.creation_date,
        })
    }

    pub fn md5_hex(&self) -> String {
        hex::encode(self.md5)
    }
}

/// Decodes a prototype payload (one trailing newline, as Serf appended, is ignored) and checks
/// its MD5.
pub fn decode_payload(payload: &[u8]) -> Result<LegacyTorrent, LegacyError> {
    let payload = payload.strip_suffix(b"\n").unwrap_or(payload);
    let (md5_hex, body) = payload
        .split_at_checked(32)
        .filter(|(hex, _)| hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .ok_or_else(|| E::BadMd5Prefix {
            start: String::from_utf8_lossy(payload.get(..32).unwrap_or(payload)).into_owned(),
        })?;
    let want = String::from_utf8_lossy(md5_hex).into_owned();
    // A name could contain `6:pieces` too: take the first candidate whose torrent has the MD5,
    // and otherwise report why the first one failed.
    let mut first_error = None;
    for at in find_all(body, PIECES_KEY) {
        let error = match restore(body, at) {
            Ok(torrent) => {
                let got = hex::encode(Md5::digest(&torrent));
                if got == want {
                    return LegacyTorrent::parse(torrent);
                }
                E::Md5Mismatch {
                    want: want.clone(),
                    got,
                }
            }
            Err(e) => e,
        };
        first_error.get_or_insert(error);
    }
    Err(first_error.unwrap_or(E::NoPieces))
}

/// The torrent inside `body` when its `6:pieces` key sits at `at`.
fn restore(body: &[u8], at: usize) -> Result<Vec<u8>, LegacyError> {
    let (start, length) =
        string_after_key(body, at).ok_or_else(|| bad_pieces("no `<length>:` after `6:pieces`"))?;
    let rest = body.get(start..).unwrap_or_default();
    let span = find_all(rest, END_MARK)
        .next()
        .ok_or_else(|| bad_pieces("no `:private` after the base64"))?;
    let encoded = rest.get(..span).unwrap_or_default();
    let decoded = STANDARD
        .decode(encoded)
        .map_err(|e| bad_pieces(format!("bad base64: {e}")))?;
    if Some(decoded.len()) != length.checked_add(1) {
        return Err(bad_pieces(format!(
            "base64 decodes to {} bytes, want the {length} pieces bytes and one more",
            decoded.len()
        )));
    }
    let head = body.get(..start).unwrap_or_default();
    let tail = rest.get(span..).unwrap_or_default();
    Ok([head, &decoded, tail].concat())
}

/// For a `6:pieces` at `at`: where the string value starts and its declared length.
fn string_after_key(bytes: &[u8], at: usize) -> Option<(usize, usize)> {
    let digits_at = at.checked_add(PIECES_KEY.len())?;
    let rest = bytes.get(digits_at..)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if rest.get(digits) != Some(&b':') {
        return None;
    }
    let length = std::str::from_utf8(rest.get(..digits)?)
        .ok()?
        .parse()
        .ok()?;
    Some((digits_at + digits + 1, length))
}

fn find_all<'a>(haystack: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(move |(_, w)| *w == needle)
        .map(|(i, _)| i)
}

/// Encodes a .torrent file as the prototype's payload (without the newline Serf adds).
pub fn encode_payload(torrent: &[u8]) -> Result<Vec<u8>, LegacyError> {
    LegacyTorrent::parse(torrent.to_vec())?;
    find_all(torrent, PIECES_KEY)
        .filter_map(|at| encode_at(torrent, at))
        // Only what the decoder reads back as this very torrent.
        .find(|payload| decode_payload(payload).is_ok_and(|d| d.torrent == torrent))
        .ok_or_else(|| E::Unencodable {
            reason: "`pieces` is not followed by `7:private` (the prototype's decoder needs it)"
                .to_string(),
        })
}

fn encode_at(torrent: &[u8], at: usize) -> Option<Vec<u8>> {
    let (start, length) = string_after_key(torrent, at)?;
    let end = start.checked_add(length)?.checked_add(1)?;
    let tail = torrent.get(end..)?;
    if !tail.starts_with(END_MARK) {
        return None;
    }
    let md5 = hex::encode(Md5::digest(torrent));
    let encoded = STANDARD.encode(torrent.get(start..end)?);
    let head = torrent.get(..start)?;
    Some([md5.as_bytes(), head, encoded.as_bytes(), tail].concat())
}

/// A decoded overlay message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayMessage {
    pub sender: IpAddr,
    pub torrent: LegacyTorrent,
}

/// Whether `message` is meant as the prototype's overlay message (it may still be malformed).
pub fn is_overlay(message: &[u8]) -> bool {
    message.starts_with(OVERLAY_COMMAND)
}

/// Splits `SendTorrentFile <sender-ip> split <payload>` into the sender and the payload, as it
/// would have travelled over Serf (undecoded).
pub fn split_overlay(message: &[u8]) -> Result<(IpAddr, &[u8]), LegacyError> {
    let bad = |reason: &str| E::BadOverlay {
        reason: reason.to_string(),
    };
    let rest = message
        .strip_prefix(OVERLAY_COMMAND)
        .ok_or_else(|| bad("does not start with `SendTorrentFile `"))?;
    let space = rest
        .iter()
        .position(|&b| b == b' ')
        .ok_or_else(|| bad("no space after the sender address"))?;
    let (sender, rest) = rest.split_at(space);
    let sender = std::str::from_utf8(sender)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| E::BadOverlay {
            reason: format!(
                "sender {:?} is not an IP address",
                String::from_utf8_lossy(sender)
            ),
        })?;
    let payload = rest
        .strip_prefix(b" ")
        .and_then(|r| r.strip_prefix(OVERLAY_SPLIT))
        .ok_or_else(|| bad("no `split` after the sender address"))?;
    Ok((sender, payload))
}

/// Decodes `SendTorrentFile <sender-ip> split <payload>`.
pub fn decode_overlay(message: &[u8]) -> Result<OverlayMessage, LegacyError> {
    let (sender, payload) = split_overlay(message)?;
    Ok(OverlayMessage {
        sender,
        torrent: decode_payload(payload)?,
    })
}

/// Encodes a .torrent file as the overlay message `sender` would have sent.
pub fn encode_overlay(sender: IpAddr, torrent: &[u8]) -> Result<Vec<u8>, LegacyError> {
    let payload = encode_payload(torrent)?;
    let head = format!("SendTorrentFile {sender} split ");
    Ok([head.as_bytes(), &payload].concat())
}

/// False when bencode `bytes` nests lists/dicts deeper than `limit`. Malformed input counts as
/// within: the parser then stops at the first bad byte, no deeper than the scan went.
fn nesting_within(bytes: &[u8], limit: usize) -> bool {
    let (mut depth, mut i) = (0usize, 0usize);
    while let Some(&byte) = bytes.get(i) {
        let rest = bytes.get(i..).unwrap_or_default();
        match byte {
            b'd' | b'l' => {
                depth += 1;
                if depth > limit {
                    return false;
                }
                i += 1;
            }
            b'e' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'i' => match rest.iter().position(|&b| b == b'e') {
                Some(end) => i += end + 1,
                None => return true,
            },
            b'0'..=b'9' => {
                let Some(colon) = rest.iter().position(|&b| b == b':') else {
                    return true;
                };
                let length = std::str::from_utf8(rest.get(..colon).unwrap_or_default())
                    .ok()
                    .and_then(|s| s.parse::<usize>().ok());
                match length {
                    Some(length) => i = i.saturating_add(colon + 1).saturating_add(length),
                    None => return true,
                }
            }
            _ => return true,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TORRENT: &[u8] = include_bytes!("../tests/vectors/legacy/lizard.torrent");
    const CONTENT: &[u8] = include_bytes!("../tests/vectors/legacy/lizard.jpg");
    const SERF_PAYLOAD: &[u8] = include_bytes!("../tests/vectors/legacy/lizard.serf-payload");
    const OVERLAY: &[u8] = include_bytes!("../tests/vectors/legacy/lizard.overlay-message");

    fn check_lizard(t: &LegacyTorrent) {
        assert_eq!(t.torrent, TORRENT);
        assert_eq!(t.md5_hex(), "894965c354f2e486be51bf76140a8e58");
        // As printed by `transmission-show lizard.torrent`.
        assert_eq!(
            hex::encode(t.info_hash),
            "216c31a26f6fcbcd8feabd9bc4d869a9233eac60"
        );
        assert_eq!(t.name, "lizard.jpg");
        assert_eq!(t.length, CONTENT.len() as u64);
        assert_eq!(t.creation_date, Some(1_497_349_863));
    }

    #[test]
    fn vector_torrent_describes_the_content() {
        let meta: Meta = serde_bencode::from_bytes(TORRENT).unwrap();
        let hashes: Vec<u8> = CONTENT
            .chunks(meta.info.piece_length as usize)
            .flat_map(|piece| Sha1::digest(piece).to_vec())
            .collect();
        assert_eq!(hashes, meta.info.pieces);
    }

    #[test]
    fn decodes_the_serf_vector_with_and_without_newline() {
        check_lizard(&decode_payload(SERF_PAYLOAD).unwrap());
        check_lizard(&decode_payload(&[SERF_PAYLOAD, b"\n"].concat()).unwrap());
    }

    #[test]
    fn encodes_the_serf_vector_byte_exactly() {
        assert_eq!(encode_payload(TORRENT).unwrap(), SERF_PAYLOAD);
    }

    #[test]
    fn overlay_vector_round_trips_byte_exactly() {
        let message = decode_overlay(OVERLAY).unwrap();
        assert_eq!(message.sender, "203.0.113.7".parse::<IpAddr>().unwrap());
        check_lizard(&message.torrent);
        assert_eq!(encode_overlay(message.sender, TORRENT).unwrap(), OVERLAY);
    }

    /// The vector payload with its first `from` replaced by `to`.
    fn payload_with(from: &[u8], to: &[u8]) -> Vec<u8> {
        let at = find_all(SERF_PAYLOAD, from).next().unwrap();
        let mut bytes = SERF_PAYLOAD.to_vec();
        bytes.splice(at..at + from.len(), to.iter().copied());
        bytes
    }

    /// A payload for any torrent bytes, valid MD5 included, without the encoder's checks.
    fn raw_payload(torrent: &[u8]) -> Vec<u8> {
        let at = find_all(torrent, PIECES_KEY).next().unwrap();
        encode_at(torrent, at).unwrap()
    }

    #[test]
    fn md5_mismatch_is_reported() {
        // A newer creation date without a new MD5: the prototype's only integrity check fails.
        let err = decode_payload(&payload_with(b"i1497349863e", b"i1497349864e")).unwrap_err();
        assert!(
            matches!(&err, E::Md5Mismatch { want, .. } if want == "894965c354f2e486be51bf76140a8e58"),
            "{err}"
        );
    }

    #[test]
    fn malformed_payloads_say_why() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"short".to_vec(), "MD5"),
            (payload_with(b"894965c3", b"894965C3"), "MD5"),
            (payload_with(b"6:pieces", b"6:piecez"), "no `6:pieces"),
            (payload_with(b"pieces60:", b"pieces60"), "no `<length>:`"),
            (payload_with(b":private", b":public!"), "no `:private`"),
            (payload_with(b"vE22", b"v*22"), "bad base64"),
            (
                payload_with(b"pieces60:", b"pieces59:"),
                "decodes to 61 bytes",
            ),
        ];
        for (payload, want) in cases {
            let err = decode_payload(&payload).unwrap_err();
            assert!(err.to_string().contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn bad_torrents_with_good_md5_are_rejected() {
        let unsafe_name = [
            &b"d4:infod6:lengthi1e4:name5:../..12:piece lengthi1e"[..],
            b"6:pieces20:aaaaaaaaaaaaaaaaaaaa7:privatei0eee",
        ]
        .concat();
        let err = decode_payload(&raw_payload(&unsafe_name)).unwrap_err();
        assert!(err.to_string().contains("unsafe payload name"), "{err}");

        let unsorted = [
            &b"d4:infod4:name1:x6:lengthi1e12:piece lengthi1e"[..],
            b"6:pieces20:aaaaaaaaaaaaaaaaaaaa7:privatei0eee",
        ]
        .concat();
        let err = decode_payload(&raw_payload(&unsorted)).unwrap_err();
        assert!(err.to_string().contains("not canonical"), "{err}");

        let no_length = [
            &b"d4:infod4:name1:x12:piece lengthi1e"[..],
            b"6:pieces20:aaaaaaaaaaaaaaaaaaaa7:privatei0eee",
        ]
        .concat();
        let err = decode_payload(&raw_payload(&no_length)).unwrap_err();
        assert!(err.to_string().contains("neither or both"), "{err}");
    }

    #[test]
    fn multi_file_length_is_the_sum() {
        let torrent = [
            &b"d13:creation datei7e4:infod5:filesld6:lengthi3eed6:lengthi4eee"[..],
            b"4:name1:x12:piece lengthi1e6:pieces20:aaaaaaaaaaaaaaaaaaaa7:privatei1eee",
        ]
        .concat();
        let t = decode_payload(&encode_payload(&torrent).unwrap()).unwrap();
        assert_eq!((t.length, t.creation_date), (7, Some(7)));
    }

    #[test]
    fn torrent_without_private_after_pieces_cannot_be_encoded() {
        // mktorrent omits `private`: old nodes could not decode the payload, so refuse it.
        let torrent =
            b"d4:infod6:lengthi1e4:name1:x12:piece lengthi1e6:pieces20:aaaaaaaaaaaaaaaaaaaaee";
        let err = encode_payload(torrent).unwrap_err();
        assert!(matches!(err, E::Unencodable { .. }), "{err}");
    }

    #[test]
    fn deep_nesting_is_rejected_without_recursion() {
        let deep = [vec![b'l'; 100_000], vec![b'e'; 100_000]].concat();
        let err = LegacyTorrent::parse(deep).unwrap_err();
        assert!(err.to_string().contains("nested deeper"), "{err}");
        assert!(nesting_within(b"d1:ali1eee", 2));
        assert!(!nesting_within(b"d1:alli1eeee", 2));
        assert!(
            nesting_within(b"d3:lll1:ae", 1),
            "string contents are skipped"
        );
    }

    #[test]
    fn malformed_overlay_messages_say_why() {
        let rest = OVERLAY
            .strip_prefix(b"SendTorrentFile 203.0.113.7 split ")
            .unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"GetTorrentFile x".to_vec(), "does not start"),
            (b"SendTorrentFile 203.0.113.7".to_vec(), "no space"),
            (
                [&b"SendTorrentFile host split "[..], rest].concat(),
                "not an IP address",
            ),
            (
                [&b"SendTorrentFile 203.0.113.7 join "[..], rest].concat(),
                "no `split`",
            ),
            (b"SendTorrentFile ::1 split nonsense".to_vec(), "MD5"),
        ];
        for (message, want) in cases {
            let err = decode_overlay(&message).unwrap_err();
            assert!(err.to_string().contains(want), "{want}: {err}");
        }
    }

    #[derive(serde::Serialize)]
    struct GenInfo {
        length: u64,
        name: String,
        #[serde(rename = "piece length")]
        piece_length: u64,
        #[serde(with = "serde_bytes")]
        pieces: Vec<u8>,
        private: u8,
    }

    #[derive(serde::Serialize)]
    struct GenTorrent {
        #[serde(rename = "creation date")]
        creation_date: i64,
        info: GenInfo,
    }

    fn arb_torrent() -> impl Strategy<Value = Vec<u8>> {
        let name = "[a-zA-Z0-9 ._-]{1,40}".prop_filter("safe", |n| validate_name(n).is_ok());
        let pieces = (0usize..8).prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n * 20));
        (any::<u32>(), name, any::<u32>(), pieces, 0u8..2).prop_map(
            |(date, name, length, pieces, private)| {
                serde_bencode::to_bytes(&GenTorrent {
                    creation_date: i64::from(date),
                    info: GenInfo {
                        length: u64::from(length),
                        name,
                        piece_length: 16384,
                        pieces,
                        private,
                    },
                })
                .unwrap()
            },
        )
    }

    /// Inputs assembled from the format's own fragments, to get past the first checks.
    fn arb_fragments() -> impl Strategy<Value = Vec<u8>> {
        let fragment = prop_oneof![
            Just(b"894965c354f2e486be51bf76140a8e58".to_vec()),
            Just(b"6:pieces".to_vec()),
            Just(b":private".to_vec()),
            Just(b"7:privatei0ee".to_vec()),
            "[0-9]{1,3}:".prop_map(String::into_bytes),
            "[A-Za-z0-9+/=]{0,12}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..6),
        ];
        proptest::collection::vec(fragment, 0..12).prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn prop_round_trip(torrent in arb_torrent()) {
            let payload = encode_payload(&torrent).unwrap();
            prop_assert_eq!(&decode_payload(&payload).unwrap().torrent, &torrent);
            let message = encode_overlay("198.51.100.1".parse().unwrap(), &torrent).unwrap();
            prop_assert_eq!(decode_overlay(&message).unwrap().torrent.torrent, torrent);
        }

        /// The MD5 detects corruption: a payload decodes to its torrent, and with one byte
        /// changed it decodes to nothing else (it fails, or the change left the torrent as it
        /// was). Raw bytes never decode.
        #[test]
        fn prop_a_changed_payload_never_decodes_to_another_torrent(
            torrent in arb_torrent(),
            at in any::<proptest::sample::Index>(),
            flip in 1u8..,
            raw in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let payload = encode_payload(&torrent).unwrap();
            prop_assert_eq!(&decode_payload(&payload).unwrap().torrent, &torrent);
            let mut changed = payload.clone();
            let at = at.index(changed.len());
            changed[at] ^= flip;
            if let Ok(decoded) = decode_payload(&changed) {
                prop_assert_eq!(decoded.torrent, torrent);
            }
            prop_assert!(decode_payload(&raw).is_err());
            prop_assert!(decode_overlay(&raw).is_err());
            if let Ok(parsed) = LegacyTorrent::parse(raw.clone()) {
                prop_assert_eq!(parsed.torrent, raw);
            }
        }

        /// A payload with the format's own fragments spliced in (to get past the first
        /// checks) decodes only to a torrent whose MD5 is the one the payload starts with,
        /// which is canonical and which the codec carries again unchanged. With nothing
        /// spliced in it decodes to the torrent.
        #[test]
        fn prop_near_misses_decode_only_to_the_torrent_their_md5_names(
            torrent in arb_torrent(),
            splice in arb_fragments(),
            at in any::<proptest::sample::Index>(),
        ) {
            let mut payload = encode_payload(&torrent).unwrap();
            let at = at.index(payload.len() + 1);
            payload.splice(at..at, splice.iter().copied());
            match decode_payload(&payload) {
                Ok(decoded) => {
                    let md5 = decoded.md5_hex();
                    prop_assert_eq!(md5.as_bytes(), &payload[..32]);
                    let again = encode_payload(&decoded.torrent).unwrap();
                    prop_assert_eq!(decode_payload(&again).unwrap().torrent, decoded.torrent);
                }
                Err(e) => prop_assert!(!splice.is_empty(), "the payload itself refused: {}", e),
            }
        }

        #[test]
        fn prop_vector_mutations_decode_to_what_encodes_again(at in any::<proptest::sample::Index>(), byte in any::<u8>()) {
            let mut payload = SERF_PAYLOAD.to_vec();
            payload[at.index(SERF_PAYLOAD.len())] = byte;
            // What still decodes is a torrent the codec can carry again unchanged.
            if let Ok(decoded) = decode_payload(&payload) {
                let again = encode_payload(&decoded.torrent).unwrap();
                prop_assert_eq!(decode_payload(&again).unwrap().torrent, decoded.torrent);
            }
        }
    }
}
