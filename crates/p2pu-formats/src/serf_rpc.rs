//! Serf's RPC protocol (IPC version 1), the part p2pu speaks: MessagePack objects back to back
//! on one TCP stream, each request a header (`Command`, `Seq`) and a body, each reply a header
//! (`Seq`, `Error`) and, for `members`, `members-filtered`, `join` and every record of a
//! running `query`, a body. Serf documents it in its `docs/agent/rpc` page. p2pu talks to its
//! Serf only this way (members, user events, joins, tags, queries): a `serf` CLI process per
//! call cost a Go start each, three of them before every broadcast.
//!
//! Framing comes first and is done here by hand ([`read_object`]): it reads exactly one object
//! from the stream, keeps at most `limit` bytes of it and reads any larger one through to its
//! end without keeping it, so a length in the stream never sizes an allocation. Only a kept
//! object is decoded (rmp-serde, from the slice). [`collect_query`] reads a query's records
//! into a [`Collector`], which ends the query once every member alive when it began answered.
//!
//! What a member controls is a record's `From` and `Payload` (Serf relays them as the member
//! sent them); both decode from any bytes, so a member's garbage is an answer, never an error.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};

/// The only IPC version Serf speaks.
pub const IPC_VERSION: i32 = 1;

/// The largest answer an honest member sends: its Serf refuses a response message past
/// `query_response_size_limit`, 8 KiB in p2pu's config (templates/serf/p2pu.json).
pub const MAX_ANSWER_BYTES: usize = 8192;

/// The most kept of one header or query record: an honest answer, its `From` (a host name)
/// and the keys. The querying Serf does not check the size of what it receives, and a
/// compromised member's compressed UDP packet may inflate to 64 KiB and more: a larger record
/// is read through and skipped ([`Object::Skipped`]), not an error, so each alive name holds
/// at most this much (3 times it as text, where every byte is invalid UTF-8) per query.
pub const MAX_RECORD_BYTES: usize = MAX_ANSWER_BYTES + 4096;

/// The most kept of the `members-filtered` reply: a name and at most 512 bytes of tags per
/// member, so 8 MiB is thousands of members.
pub const MAX_MEMBERS_BYTES: usize = 8 << 20;

/// Members outside the alive list whose answers are kept (a member that joined after the
/// list was read, or a name a member made up); beyond that they are dropped, so the answers
/// stay bounded by the fleet's size.
pub const MAX_STRANGERS: usize = 64;

pub const HANDSHAKE: &str = "handshake";
pub const AUTH: &str = "auth";
pub const MEMBERS: &str = "members";
pub const MEMBERS_FILTERED: &str = "members-filtered";
pub const QUERY: &str = "query";
pub const EVENT: &str = "event";
pub const JOIN: &str = "join";
pub const TAGS: &str = "tags";

/// Serf's `Error` texts that p2pu tells apart.
pub const AUTH_REQUIRED: &str = "Authentication required";
pub const INVALID_AUTH_TOKEN: &str = "Invalid authentication token";

/// A query record's `Type`.
pub const RECORD_ACK: &str = "ack";
pub const RECORD_RESPONSE: &str = "response";
pub const RECORD_DONE: &str = "done";

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("reading the stream")]
    Read(#[source] io::Error),
    #[error("the stream holds the reserved MessagePack marker 0xc1")]
    Reserved,
    #[error("a {what} that does not decode: {reason}")]
    Decode { what: &'static str, reason: String },
    #[error("a {what} of more than {limit} bytes")]
    Oversize { what: &'static str, limit: usize },
    #[error("a reply for request {got}, where {want} was the one waiting")]
    WrongSeq { want: u64, got: u64 },
    #[error("replied to `{command}` with an error: {error}")]
    Refused { command: String, error: String },
}

/// One MessagePack object read from the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Object {
    /// All of its bytes.
    Kept(Vec<u8>),
    /// Over the limit: read through to its end and dropped; `len` bytes.
    Skipped { len: u64 },
}

/// Reads one whole object from `r`, keeping it when it is at most `limit` bytes. Nothing is
/// allocated from a length read: bytes are kept only once read, up to `limit`.
pub fn read_object<R: Read>(r: &mut R, limit: usize) -> Result<Object, RpcError> {
    let mut taker = Taker {
        r,
        kept: Vec::new(),
        limit,
        over: false,
        len: 0,
    };
    // Objects still to read: a map or an array adds its children.
    let mut pending: u64 = 1;
    while pending > 0 {
        pending -= 1;
        let marker = taker.be(1)? as u8;
        let (children, data) = match marker {
            0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => (0, 0),
            0x80..=0x8f => (2 * u64::from(marker & 0x0f), 0),
            0x90..=0x9f => (u64::from(marker & 0x0f), 0),
            0xa0..=0xbf => (0, u64::from(marker & 0x1f)),
            0xc1 => return Err(RpcError::Reserved),
            0xc4 | 0xd9 => (0, taker.be(1)?),
            0xc5 | 0xda => (0, taker.be(2)?),
            0xc6 | 0xdb => (0, taker.be(4)?),
            // ext 8/16/32: a length, then a type byte and the data.
            0xc7 => (0, taker.be(1)? + 1),
            0xc8 => (0, taker.be(2)? + 1),
            0xc9 => (0, taker.be(4)? + 1),
            0xca => (0, 4),
            0xcb => (0, 8),
            0xcc | 0xd0 => (0, 1),
            0xcd | 0xd1 => (0, 2),
            0xce | 0xd2 => (0, 4),
            0xcf | 0xd3 => (0, 8),
            // fixext 1/2/4/8/16: a type byte and the data.
            0xd4 => (0, 2),
            0xd5 => (0, 3),
            0xd6 => (0, 5),
            0xd7 => (0, 9),
            0xd8 => (0, 17),
            0xdc => (taker.be(2)?, 0),
            0xdd => (taker.be(4)?, 0),
            0xde => (2 * taker.be(2)?, 0),
            0xdf => (2 * taker.be(4)?, 0),
        };
        taker.skip_or_keep(data)?;
        pending = pending.saturating_add(children);
    }
    Ok(if taker.over {
        Object::Skipped { len: taker.len }
    } else {
        Object::Kept(taker.kept)
    })
}

/// Reads bytes of one object, keeping them while the object fits its limit.
struct Taker<'a, R> {
    r: &'a mut R,
    kept: Vec<u8>,
    limit: usize,
    over: bool,
    len: u64,
}

impl<R: Read> Taker<'_, R> {
    /// Reads `n` (at most 8) bytes as a big-endian number.
    fn be(&mut self, n: usize) -> Result<u64, RpcError> {
        let mut buf = [0u8; 8];
        let bytes = &mut buf[..n];
        self.r.read_exact(bytes).map_err(RpcError::Read)?;
        self.keep(bytes);
        Ok(bytes.iter().fold(0, |v, b| (v << 8) | u64::from(*b)))
    }

    /// Reads `n` bytes in slices, so a length of 4 GiB costs reading it, not allocating it.
    fn skip_or_keep(&mut self, mut n: u64) -> Result<(), RpcError> {
        let mut scratch = [0u8; 8192];
        while n > 0 {
            let chunk = n.min(scratch.len() as u64) as usize;
            self.r
                .read_exact(&mut scratch[..chunk])
                .map_err(RpcError::Read)?;
            self.keep(&scratch[..chunk]);
            n -= chunk as u64;
        }
        Ok(())
    }

    fn keep(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if self.over {
            return;
        }
        if self.kept.len() + bytes.len() > self.limit {
            self.over = true;
            self.kept = Vec::new();
        } else {
            self.kept.extend_from_slice(bytes);
        }
    }
}

/// Every request starts with one.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestHeader<'a> {
    pub command: &'a str,
    pub seq: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Handshake {
    pub version: i32,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Auth<'a> {
    pub auth_key: &'a str,
}

/// `members-filtered`: Serf anchors each value as a regular expression.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MembersFiltered<'a> {
    pub status: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct QueryRequest<'a> {
    pub request_ack: bool,
    /// Go's `time.Duration`: nanoseconds.
    pub timeout: i64,
    pub name: &'a str,
    #[serde(with = "serde_bytes")]
    pub payload: &'a [u8],
}

/// `event`: a user event, broadcast to the fleet.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EventRequest<'a> {
    pub name: &'a str,
    #[serde(with = "serde_bytes")]
    pub payload: &'a [u8],
    pub coalesce: bool,
}

/// `join`: a state exchange with each of `existing` (`host:port`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinRequest<'a> {
    pub existing: &'a [String],
    pub replay: bool,
}

/// How many of a `join`'s addresses answered.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinReply {
    #[serde(default)]
    pub num: i64,
}

/// `tags`: this member's tags to set (added or replaced) and to delete.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TagsRequest<'a> {
    pub tags: BTreeMap<&'a str, &'a str>,
    pub delete_tags: &'a [&'a str],
}

/// Encodes a request: its header, then its body (Go's decoder reads structs as maps).
pub fn request<B: Serialize>(command: &str, seq: u64, body: Option<&B>) -> Vec<u8> {
    // Encoding these structs into a Vec cannot fail: every field is a string, bytes, a bool
    // or a number.
    let mut out = rmp_serde::to_vec_named(&RequestHeader { command, seq }).unwrap_or_default();
    if let Some(body) = body {
        out.extend(rmp_serde::to_vec_named(body).unwrap_or_default());
    }
    out
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ResponseHeader {
    pub seq: u64,
    #[serde(default)]
    pub error: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MembersReply {
    #[serde(default)]
    pub members: Vec<MemberRecord>,
}

/// A member as Serf lists it (the reply has its protocol versions too). Its name, address and
/// tags are what it advertised: bytes of any kind, which decode whatever a member put there.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MemberRecord {
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    #[serde(default, with = "serde_bytes")]
    pub addr: Vec<u8>,
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub tags: BTreeMap<serde_bytes::ByteBuf, serde_bytes::ByteBuf>,
    #[serde(default)]
    pub status: String,
}

/// A member of a `members` reply, as p2pu uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Made printable ([`node_name`]).
    pub name: String,
    pub addr: std::net::IpAddr,
    pub port: u16,
    pub status: String,
    /// Keys and values as text, invalid UTF-8 replaced (their readers parse them strictly).
    pub tags: BTreeMap<String, String>,
}

/// The members of a `members` (or `members-filtered`) reply. A member whose address is
/// neither 4 nor 16 bytes (memberlist passes on whatever a member's alive message carried)
/// cannot be reached and is left out, counted in the second value: one keyring holder's odd
/// record must not fail every listing.
pub fn members(reply: &[u8]) -> Result<(Vec<Member>, usize), RpcError> {
    let reply: MembersReply = decode(reply, "members reply")?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut unreadable = 0;
    let members = reply
        .members
        .into_iter()
        .filter_map(|m| {
            let addr = match m.addr.len() {
                4 => <[u8; 4]>::try_from(m.addr.as_slice())
                    .ok()
                    .map(std::net::IpAddr::from),
                16 => <[u8; 16]>::try_from(m.addr.as_slice())
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_canonical()),
                _ => None,
            };
            let Some(addr) = addr else {
                unreadable += 1;
                return None;
            };
            Some(Member {
                name: node_name(&m.name),
                addr,
                port: m.port,
                status: m.status,
                tags: m.tags.iter().map(|(k, v)| (text(k), text(v))).collect(),
            })
        })
        .collect();
    Ok((members, unreadable))
}

/// One record of a running query. `From` and `Payload` are a member's: bytes, whatever the
/// marker (rmp-serde hands a string that is not UTF-8 over as bytes).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct QueryRecord {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(default, with = "serde_bytes")]
    pub from: Option<Vec<u8>>,
    #[serde(default, with = "serde_bytes")]
    pub payload: Option<Vec<u8>>,
}

/// Decodes a kept object as `what`.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &'static str) -> Result<T, RpcError> {
    rmp_serde::from_slice(bytes).map_err(|e| RpcError::Decode {
        what,
        reason: e.to_string(),
    })
}

/// Reads one reply header; one for another request, or one with an error, is an error.
pub fn read_header<R: Read>(r: &mut R, seq: u64, command: &str) -> Result<(), RpcError> {
    let header: ResponseHeader = match read_object(r, MAX_RECORD_BYTES)? {
        Object::Kept(bytes) => decode(&bytes, "reply header")?,
        Object::Skipped { .. } => {
            return Err(RpcError::Oversize {
                what: "reply header",
                limit: MAX_RECORD_BYTES,
            })
        }
    };
    if header.seq != seq {
        return Err(RpcError::WrongSeq {
            want: seq,
            got: header.seq,
        });
    }
    if !header.error.is_empty() {
        return Err(RpcError::Refused {
            command: command.to_owned(),
            error: header.error,
        });
    }
    Ok(())
}

/// The names of the members in `reply` (a `members-filtered` body), as text.
pub fn member_names(reply: &[u8]) -> Result<BTreeSet<String>, RpcError> {
    let reply: MembersReply = decode(reply, "members reply")?;
    Ok(reply
        .members
        .into_iter()
        .map(|m| node_name(&m.name))
        .collect())
}

/// A member's name as p2pu shows, logs and compares it: invalid UTF-8 and control characters
/// (a member picks its name, and a `From` at will) become U+FFFD, so a newline or a terminal
/// escape in one forges no log line of the asker's and moves no cursor. Honest names are host
/// names, which have neither.
pub fn node_name(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// The answers of one query as they come: the first answer under each name counts (Serf
/// itself drops a second response with the same `From`), members outside `alive` count up to
/// [`MAX_STRANGERS`], and the query is complete once every name in `alive` answered.
#[derive(Debug, Default)]
pub struct Collector {
    alive: BTreeSet<String>,
    answers: BTreeMap<String, String>,
    waiting: usize,
    strangers: usize,
    /// Responses not kept: duplicates, strangers past the cap, oversize records.
    pub dropped: usize,
}

impl Collector {
    pub fn new(alive: BTreeSet<String>) -> Collector {
        Collector {
            waiting: alive.len(),
            alive,
            ..Collector::default()
        }
    }

    /// Takes one response; invalid UTF-8 in either becomes U+FFFD (as `serf query
    /// -format=json` printed it), and so do control characters in `from` ([`node_name`]).
    pub fn response(&mut self, from: &[u8], payload: &[u8]) {
        let from = node_name(from);
        if self.answers.contains_key(&from) {
            self.dropped += 1;
            return;
        }
        if self.alive.contains(&from) {
            self.waiting -= 1;
        } else if self.strangers < MAX_STRANGERS {
            self.strangers += 1;
        } else {
            self.dropped += 1;
            return;
        }
        let text = String::from_utf8_lossy(payload).into_owned();
        self.answers.insert(from, text);
    }

    /// Every member alive when the query began has answered.
    pub fn complete(&self) -> bool {
        self.waiting == 0
    }

    /// `(node, answer)` sorted by node.
    pub fn into_answers(self) -> Vec<(String, String)> {
        self.answers.into_iter().collect()
    }
}

/// How [`collect_query`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Every member alive when it began answered.
    Complete,
    /// Serf's `done`: its timeout passed.
    Done,
}

/// Reads the records of the query sent as `seq` (its reply header already read) into
/// `collector` until it is complete or Serf says done. A read error (the caller's deadline
/// among them) leaves what came before in `collector`.
pub fn collect_query<R: Read>(
    r: &mut R,
    seq: u64,
    collector: &mut Collector,
) -> Result<Ending, RpcError> {
    loop {
        if collector.complete() {
            return Ok(Ending::Complete);
        }
        read_header(r, seq, QUERY)?;
        let bytes = match read_object(r, MAX_RECORD_BYTES)? {
            Object::Kept(bytes) => bytes,
            // Only a member's answer can be this large (its Serf does not check what it
            // receives): dropped, as a member's answer that never came.
            Object::Skipped { .. } => {
                collector.dropped += 1;
                continue;
            }
        };
        let record: QueryRecord = decode(&bytes, "query record")?;
        match record.kind.as_str() {
            RECORD_RESPONSE => collector.response(
                record.from.as_deref().unwrap_or_default(),
                record.payload.as_deref().unwrap_or_default(),
            ),
            RECORD_DONE => return Ok(Ending::Done),
            // Acks (never asked for) and kinds a later Serf may add.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `members` reply as Serf encodes it: one IPv4 member with tags, one IPv6 (16 bytes,
    /// as Go keeps an IPv4-mapped one too), one whose name carries an escape and whose tag is
    /// not UTF-8, and one with a 3-byte address.
    #[test]
    fn members_decode_with_their_addresses_and_tags_and_an_unreachable_one_left_out() {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct M<'a> {
            #[serde(with = "serde_bytes")]
            name: &'a [u8],
            #[serde(with = "serde_bytes")]
            addr: &'a [u8],
            port: u16,
            tags: BTreeMap<&'a str, serde_bytes::ByteBuf>,
            status: &'a str,
            protocol_cur: u8,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Reply<'a> {
            members: Vec<M<'a>>,
        }
        let mut mapped = [0u8; 16];
        mapped[10..12].copy_from_slice(&[0xff, 0xff]);
        mapped[12..].copy_from_slice(&[10, 0, 0, 2]);
        let v6: std::net::Ipv6Addr = "fd00::1".parse().unwrap_or(std::net::Ipv6Addr::LOCALHOST);
        let v6 = v6.octets();
        let tag = |v: &[u8]| serde_bytes::ByteBuf::from(v.to_vec());
        let m = |name, addr, port, tags, status| M {
            name,
            addr,
            port,
            tags,
            status,
            protocol_cur: 5,
        };
        let none = BTreeMap::new;
        let reply = Reply {
            members: vec![
                m(
                    b"n1",
                    &[127, 0, 0, 1],
                    7946,
                    [("p2pu-rate", tag(b"125"))].into(),
                    "alive",
                ),
                m(b"n2", &mapped, 7947, none(), "failed"),
                m(b"n3", &v6, 7948, none(), "left"),
                m(
                    b"n\x1b[2J4",
                    &[10, 0, 0, 4],
                    1,
                    [("role", tag(b"a\xffb"))].into(),
                    "alive",
                ),
                m(b"odd", &[1, 2, 3], 1, none(), "alive"),
            ],
        };
        let bytes = rmp_serde::to_vec_named(&reply).unwrap_or_default();
        let (members, unreadable) = match members(&bytes) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(unreadable, 1, "the 3-byte address");
        let shown: Vec<(&str, String, u16, &str)> = members
            .iter()
            .map(|m| {
                (
                    m.name.as_str(),
                    m.addr.to_string(),
                    m.port,
                    m.status.as_str(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("n1", "127.0.0.1".to_string(), 7946, "alive"),
                ("n2", "10.0.0.2".to_string(), 7947, "failed"),
                ("n3", "fd00::1".to_string(), 7948, "left"),
                ("n\u{fffd}[2J4", "10.0.0.4".to_string(), 1, "alive"),
            ]
        );
        assert_eq!(members[0].tags["p2pu-rate"], "125");
        assert_eq!(members[3].tags["role"], "a\u{fffd}b");
    }

    fn header(seq: u64, error: &str) -> Vec<u8> {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct H<'a> {
            seq: u64,
            error: &'a str,
        }
        rmp_serde::to_vec_named(&H { seq, error }).unwrap_or_default()
    }

    fn record(kind: &str, from: &[u8], payload: &[u8]) -> Vec<u8> {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct R<'a> {
            #[serde(rename = "Type")]
            kind: &'a str,
            #[serde(with = "serde_bytes")]
            from: &'a [u8],
            #[serde(with = "serde_bytes")]
            payload: &'a [u8],
        }
        rmp_serde::to_vec_named(&R {
            kind,
            from,
            payload,
        })
        .unwrap_or_default()
    }

    fn alive(names: &[&str]) -> Collector {
        Collector::new(names.iter().map(|n| n.to_string()).collect())
    }

    /// What Serf 0.9.4 (Debian's `serf`, one agent `alpha` whose handler prints `pong from
    /// alpha`) sent back for handshake, auth, `members-filtered` (alive) and a 0.5 s query,
    /// captured on a plain socket sending the requests `request` encodes: keys sorted, strings
    /// as str, `Payload` as bin, and `done` with an empty `From` and a nil `Payload`.
    const CAPTURED: &[u8] = include_bytes!("../tests/vectors/serf_rpc/query-one-member.bin");

    #[test]
    fn a_captured_serf_session_decodes() {
        let mut stream = CAPTURED;
        for (seq, command) in [(0, HANDSHAKE), (1, AUTH), (2, MEMBERS_FILTERED)] {
            assert!(read_header(&mut stream, seq, command).is_ok(), "{command}");
        }
        let Ok(Object::Kept(members)) = read_object(&mut stream, MAX_MEMBERS_BYTES) else {
            panic!("no members reply");
        };
        let alive = match member_names(&members) {
            Ok(alive) => alive,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(alive, BTreeSet::from(["alpha".to_owned()]));
        assert!(read_header(&mut stream, 3, QUERY).is_ok());
        // With a second member that never answers, the query runs to Serf's `done`.
        let mut collector = Collector::new(BTreeSet::from(["alpha".into(), "beta".into()]));
        let ending = collect_query(&mut stream, 3, &mut collector);
        assert_eq!(ending.ok(), Some(Ending::Done));
        assert!(stream.is_empty());
        assert_eq!(
            collector.into_answers(),
            [("alpha".to_owned(), "pong from alpha".to_owned())]
        );
    }

    #[test]
    fn a_query_ends_once_every_alive_member_answered() {
        let mut stream = Vec::new();
        for from in ["b", "a"] {
            stream.extend(header(7, ""));
            stream.extend(record("response", from.as_bytes(), b"hi"));
        }
        // Never read: the query is complete before it.
        stream.extend(b"\xc1");
        let mut collector = alive(&["a", "b"]);
        let ending = collect_query(&mut stream.as_slice(), 7, &mut collector);
        assert_eq!(ending.ok(), Some(Ending::Complete));
        assert_eq!(collector.into_answers().len(), 2);
    }

    #[test]
    fn a_duplicate_from_keeps_the_first_answer_and_strangers_are_capped() {
        let mut collector = alive(&["a", "b"]);
        collector.response(b"a", b"first");
        collector.response(b"a", b"second");
        for n in 0..MAX_STRANGERS + 10 {
            collector.response(format!("stranger-{n}").as_bytes(), b"x");
        }
        assert!(!collector.complete(), "strangers do not stand in for b");
        assert_eq!(collector.dropped, 11);
        collector.response(b"b", b"\xffbye");
        assert!(collector.complete());
        let answers = collector.into_answers();
        assert_eq!(answers.len(), 2 + MAX_STRANGERS);
        assert!(answers.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(answers[0], ("a".to_owned(), "first".to_owned()));
        assert_eq!(answers[1], ("b".to_owned(), "\u{fffd}bye".to_owned()));
    }

    #[test]
    fn an_oversize_record_is_read_through_and_dropped() {
        let big = vec![b'x'; MAX_RECORD_BYTES + 1];
        let mut stream = header(1, "");
        stream.extend(record("response", b"a", &big));
        stream.extend(header(1, ""));
        stream.extend(record("response", b"b", b"fine"));
        let mut collector = alive(&["a", "b"]);
        let ending = collect_query(&mut stream.as_slice(), 1, &mut collector);
        // `a`'s answer never came, so the stream runs out before `done`.
        assert!(matches!(ending, Err(RpcError::Read(_))), "{ending:?}");
        assert_eq!(collector.dropped, 1);
        assert_eq!(
            collector.into_answers(),
            [("b".to_owned(), "fine".to_owned())]
        );
    }

    #[test]
    fn an_answer_past_what_an_honest_serf_sends_is_dropped_and_one_at_the_limit_kept() {
        let host = "n".repeat(253);
        let mut stream = header(1, "");
        stream.extend(record(
            "response",
            host.as_bytes(),
            &[b'x'; MAX_ANSWER_BYTES],
        ));
        stream.extend(header(1, ""));
        stream.extend(record("response", b"liar", &[0xff; 2 * MAX_ANSWER_BYTES]));
        stream.extend(header(1, ""));
        stream.extend(record("done", b"", b""));
        let mut collector = alive(&[&host, "liar"]);
        let ending = collect_query(&mut stream.as_slice(), 1, &mut collector);
        assert_eq!(ending.ok(), Some(Ending::Done));
        assert_eq!(collector.dropped, 1);
        let answers = collector.into_answers();
        assert_eq!(answers.len(), 1);
        assert_eq!(
            (answers[0].0.as_str(), answers[0].1.len()),
            (host.as_str(), MAX_ANSWER_BYTES)
        );
    }

    #[test]
    fn control_characters_in_a_members_name_are_replaced_alike_in_the_list_and_its_answer() {
        let name = b"evil\n2026-12-06T23:00:00Z  INFO agent: applied\x1b[2J";
        let mut members = Vec::new();
        members.extend(b"\x81\xa7Members\x91\x82\xa4Name");
        members.push(0xc4);
        members.push(name.len() as u8);
        members.extend(name);
        members.extend(b"\xa6Status\xa5alive");
        let alive = member_names(&members).unwrap_or_default();
        let mut collector = Collector::new(alive);
        collector.response(name, b"hi");
        assert!(collector.complete());
        let answers = collector.into_answers();
        assert_eq!(answers.len(), 1);
        assert!(
            !answers[0].0.chars().any(char::is_control),
            "{:?}",
            answers[0].0
        );
        assert!(
            answers[0].0.starts_with("evil\u{fffd}2026"),
            "{:?}",
            answers[0].0
        );
    }

    #[test]
    fn a_huge_claimed_length_is_not_allocated() {
        // bin32 of 4 GiB - 1 with 3 bytes behind it: read as far as it goes, nothing sized
        // from the length.
        let stream = b"\xc6\xff\xff\xff\xffabc";
        match read_object(&mut &stream[..], 16) {
            Err(RpcError::Read(e)) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof),
            other => panic!("{other:?}"),
        }
        // A map claiming 2^32 - 1 entries likewise.
        let stream = b"\xdf\xff\xff\xff\xff\x01\x02";
        assert!(matches!(
            read_object(&mut &stream[..], 16),
            Err(RpcError::Read(_))
        ));
    }

    #[test]
    fn objects_are_framed_exactly() {
        let nested = rmp_serde::to_vec_named(&BTreeMap::from([
            ("a", vec![1u64, 300, 70_000, u64::MAX]),
            ("b", vec![]),
        ]))
        .unwrap_or_default();
        let mut stream = nested.clone();
        stream.extend(header(9, "x"));
        let mut reader = stream.as_slice();
        assert_eq!(
            read_object(&mut reader, 1024).ok(),
            Some(Object::Kept(nested))
        );
        assert_eq!(
            read_object(&mut reader, 4).ok(),
            Some(Object::Skipped {
                len: header(9, "x").len() as u64
            })
        );
        assert!(reader.is_empty());
    }

    #[test]
    fn an_error_in_the_reply_header_names_the_command() {
        let stream = header(2, INVALID_AUTH_TOKEN);
        match read_header(&mut stream.as_slice(), 2, AUTH) {
            Err(RpcError::Refused { command, error }) => {
                assert_eq!(
                    (command.as_str(), error.as_str()),
                    (AUTH, INVALID_AUTH_TOKEN)
                )
            }
            other => panic!("{other:?}"),
        }
        let stream = header(5, "");
        assert!(matches!(
            read_header(&mut stream.as_slice(), 2, AUTH),
            Err(RpcError::WrongSeq { want: 2, got: 5 })
        ));
    }

    #[test]
    fn requests_encode_as_maps_with_go_field_names() {
        let bytes = request(
            QUERY,
            4,
            Some(&QueryRequest {
                request_ack: false,
                timeout: 2_000_000_000,
                name: "p2pu-latest",
                payload: b"site",
            }),
        );
        let mut reader = bytes.as_slice();
        let Ok(Object::Kept(head)) = read_object(&mut reader, 1024) else {
            panic!("no header");
        };
        assert_eq!(head, b"\x82\xa7Command\xa5query\xa3Seq\x04");
        let text = String::from_utf8_lossy(reader);
        for field in ["RequestAck", "Timeout", "Name", "p2pu-latest", "Payload"] {
            assert!(text.contains(field), "{text}");
        }
        // The payload travels as bin (Serf's decoder takes bin or str for []byte).
        assert!(reader.windows(6).any(|w| w == b"\xc4\x04site"));
    }
}
