//! The roster: the membership a striped transfer's trees are built from (docs/DESIGN.md
//! section 5.1, `agent::transfer::topology`), fixed by the submitter and signed with the
//! payload. A canonical bencoded dictionary (at most [`MAX_ROSTER_BYTES`]) that travels beside
//! the metainfo as `<info-hash>.roster`; its SHA-256 is the `roster` field of the info dict's
//! `p2pu` key (`formats::blocks::Spec`), so the info-hash the operator signs binds it and a
//! member that serves another roster is caught by the digest. Pure: no I/O.
//!
//! **Why signed, not derived on each node from its own Serf view.** Every node must build the
//! same trees, and views differ: one member more or less shifts every position after it, and a
//! compromised member (it holds the gossip keyring) could join and leave names at will to move
//! others around while the transfer runs, or join names it ground against the info-hash after
//! seeing the announcement, to land at the heads of trees. Fixed at the submit, the roster is
//! the same on every node and was written before the info-hash existed (the info-hash hashes
//! it), so no name can be chosen for a place. What a compromised member can still do is what it
//! could do to any member's view at the submit: be in the roster under its own name, advertise a
//! high rate so that it forwards, in one tree of `stripes`, to its `fanout` children (plus a few
//! more where forwarders are short); there it can send nothing, send slowly or lie, and its
//! children re-parent (`Plan::source`) after a crash's, a hang's or one bad block's detection,
//! which `benches/stripe_sim` counts. It cannot make itself a parent in more than one tree, nor
//! the origin's child in more than one stripe. Advertising absurd rates moves the median by
//! one place per member, so it takes about as many such members as honest ones to make the
//! honest ones slow (leaves); a fleet whose keyring is held by that many is lost to gossip
//! anyway. A keyring holder can also rejoin Serf under the name of a roster member that is
//! down, from its own address (the roster names members, and Serf maps names to addresses):
//! it then holds that member's places, under the same bound, since every block is checked
//! against the signed leaves and its first bad one names it. Members not in the roster
//! (joined later) are leaves that forward nothing.

use crate::bencode::{self, Kind as Ben, Value};
use sha2::{Digest, Sha256};

/// The longest roster a node reads or `submit` writes: room for [`MAX_ROSTER_MEMBERS`] names
/// of 40 bytes (100,000 members of 64-byte names fit too).
pub const MAX_ROSTER_BYTES: usize = 8 << 20;
/// The most members one roster holds.
pub const MAX_ROSTER_MEMBERS: usize = 1 << 17;
/// The longest node name (`node.name`'s rule: 1 to 64 letters, digits, `-`, `_` or `.`).
pub const MAX_NAME_LEN: usize = 64;
/// The most stripes, as `topology::MAX_STRIPES`.
pub const MAX_STRIPES: u64 = 64;
/// The widest fan-out.
pub const MAX_FANOUT: u64 = 1 << 16;
/// The most repair neighbours.
pub const MAX_NEIGHBOURS: u64 = 64;

const KEYS: [&str; 7] = [
    "fanout",
    "members",
    "neighbours",
    "origin",
    "slow",
    "stripes",
    "v",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RosterError {
    #[error("roster is {len} bytes, more than the {MAX_ROSTER_BYTES} a roster may be")]
    TooLong { len: usize },
    #[error("roster is not canonical bencode: {0}")]
    Bencode(#[from] bencode::BencodeError),
    #[error("roster is not a dictionary")]
    NotADict,
    #[error("roster has unknown field {key:?} (this p2pu knows {})", KEYS.join(", "))]
    UnknownKey { key: String },
    #[error("roster lacks field `{key}`")]
    MissingKey { key: &'static str },
    #[error("roster field `{key}` is not {want}")]
    WrongType {
        key: &'static str,
        want: &'static str,
    },
    #[error("roster version is {got}, this p2pu reads version 1")]
    UnsupportedVersion { got: i64 },
    #[error("roster field `{key}` is {got}, not from {min} to {max}")]
    OutOfRange {
        key: &'static str,
        got: i64,
        min: u64,
        max: u64,
    },
    #[error("roster names {count} members, not from 1 to {MAX_ROSTER_MEMBERS}")]
    MemberCount { count: usize },
    #[error("roster name {name:?} is not 1 to 64 letters, digits, `-`, `_` or `.`")]
    Name { name: String },
    #[error("roster list `{key}` is not sorted without repeats at {name:?}")]
    Unsorted { key: &'static str, name: String },
    #[error("roster's slow member {name:?} is not among its members")]
    SlowNotMember { name: String },
    #[error("roster's origin {name:?} is not among its members, or is listed slow")]
    Origin { name: String },
    #[error("roster's SHA-256 is not the one the signed info dict names")]
    Digest,
}

bencode::v1_keys_error!(RosterError);

use RosterError as E;

/// The membership a plan is built from and the plan's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roster {
    /// The member that holds the payload first (the submitter).
    pub origin: String,
    /// Every member, sorted, no name twice; the origin among them.
    pub members: Vec<String>,
    /// The members that never forward (their advertised rate was under half the median),
    /// sorted, each a member, never the origin.
    pub slow: Vec<String>,
    pub stripes: u64,
    pub fanout: u64,
    pub neighbours: u64,
}

/// `node.name`'s rule, which every Serf member of a p2pu fleet follows.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
}

fn put_int(out: &mut Vec<u8>, key: &str, value: u64) {
    put_bytes(out, key.as_bytes());
    out.extend_from_slice(format!("i{value}e").as_bytes());
}

fn put_list(out: &mut Vec<u8>, key: &str, names: &[String]) {
    put_bytes(out, key.as_bytes());
    out.push(b'l');
    for name in names {
        put_bytes(out, name.as_bytes());
    }
    out.push(b'e');
}

fn sorted_names(key: &'static str, names: &[String]) -> Result<(), RosterError> {
    if let Some(bad) = names.iter().find(|n| !valid_name(n)) {
        return Err(E::Name { name: bad.clone() });
    }
    if let Some(w) = names.windows(2).find(|w| w[0] >= w[1]) {
        return Err(E::Unsorted {
            key,
            name: w[1].clone(),
        });
    }
    Ok(())
}

impl Roster {
    /// A roster of `members` (in any order), the `slow` among them, from `origin`; checked
    /// as [`Roster::decode`] checks one read back.
    pub fn new(
        origin: &str,
        mut members: Vec<String>,
        mut slow: Vec<String>,
        (stripes, fanout, neighbours): (u64, u64, u64),
    ) -> Result<Roster, RosterError> {
        members.sort();
        slow.sort();
        let roster = Roster {
            origin: origin.to_string(),
            members,
            slow,
            stripes,
            fanout,
            neighbours,
        };
        roster.validate()?;
        Ok(roster)
    }

    /// What [`Roster::decode`] refuses in a roster's content, past its encoding.
    pub fn validate(&self) -> Result<(), RosterError> {
        for (key, got, min, max) in [
            ("stripes", self.stripes, 1, MAX_STRIPES),
            ("fanout", self.fanout, 2, MAX_FANOUT),
            ("neighbours", self.neighbours, 0, MAX_NEIGHBOURS),
        ] {
            if !(min..=max).contains(&got) {
                return Err(E::OutOfRange {
                    key,
                    got: i64::try_from(got).unwrap_or(i64::MAX),
                    min,
                    max,
                });
            }
        }
        if !(1..=MAX_ROSTER_MEMBERS).contains(&self.members.len()) {
            return Err(E::MemberCount {
                count: self.members.len(),
            });
        }
        sorted_names("members", &self.members)?;
        sorted_names("slow", &self.slow)?;
        if let Some(name) = self
            .slow
            .iter()
            .find(|s| self.members.binary_search(s).is_err())
        {
            return Err(E::SlowNotMember { name: name.clone() });
        }
        if self.members.binary_search(&self.origin).is_err()
            || self.slow.binary_search(&self.origin).is_ok()
        {
            return Err(E::Origin {
                name: self.origin.clone(),
            });
        }
        Ok(())
    }

    /// Whether `name` is a slow member.
    pub fn is_slow(&self, name: &str) -> bool {
        self.slow.binary_search_by(|s| s.as_str().cmp(name)).is_ok()
    }

    /// The canonical bencoding: what is served, and what [`Roster::digest`] hashes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![b'd'];
        put_int(&mut out, "fanout", self.fanout);
        put_list(&mut out, "members", &self.members);
        put_int(&mut out, "neighbours", self.neighbours);
        put_bytes(&mut out, b"origin");
        put_bytes(&mut out, self.origin.as_bytes());
        put_list(&mut out, "slow", &self.slow);
        put_int(&mut out, "stripes", self.stripes);
        put_int(&mut out, "v", 1);
        out.push(b'e');
        out
    }

    /// SHA-256 of the encoding: the `roster` field of the info dict's `p2pu` key.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.encode()).into()
    }

    /// Reads a roster a member served, against the digest the signed info dict names: the
    /// length, then the digest, and only then the parse. In that order because parsing is
    /// what costs: 8 MiB of one-byte names would make millions of values before the member
    /// count is known, so only the operator's own roster is ever parsed.
    pub fn decode_signed(bytes: &[u8], digest: &[u8; 32]) -> Result<Roster, RosterError> {
        if bytes.len() > MAX_ROSTER_BYTES {
            return Err(E::TooLong { len: bytes.len() });
        }
        if Sha256::digest(bytes).as_slice() != digest {
            return Err(E::Digest);
        }
        Roster::decode(bytes)
    }

    /// Reads a roster's encoding, without a digest to check it against (what the operator's
    /// tools and [`Roster::decode_signed`] use; a node reads a served one only through that).
    /// The length is checked before anything is parsed.
    pub fn decode(bytes: &[u8]) -> Result<Roster, RosterError> {
        if bytes.len() > MAX_ROSTER_BYTES {
            return Err(E::TooLong { len: bytes.len() });
        }
        let value = bencode::parse(bytes)?;
        let Ben::Dict(_) = &value.kind else {
            return Err(E::NotADict);
        };
        value.check_v1_keys(&KEYS)?;
        let get = |key: &'static str| value.get(key).ok_or(E::MissingKey { key });
        let int = |key: &'static str| -> Result<u64, RosterError> {
            let n = get(key)?.as_int().ok_or(E::WrongType {
                key,
                want: "an integer",
            })?;
            u64::try_from(n).map_err(|_| E::OutOfRange {
                key,
                got: n,
                min: 0,
                max: u64::MAX,
            })
        };
        let text = |key: &'static str, v: &Value| -> Result<String, RosterError> {
            v.as_bytes()
                .and_then(|b| std::str::from_utf8(b).ok())
                .map(str::to_string)
                .ok_or(E::WrongType {
                    key,
                    want: "a UTF-8 name",
                })
        };
        let names = |key: &'static str| -> Result<Vec<String>, RosterError> {
            let list = get(key)?.as_list().ok_or(E::WrongType {
                key,
                want: "a list",
            })?;
            if list.len() > MAX_ROSTER_MEMBERS {
                return Err(E::MemberCount { count: list.len() });
            }
            list.iter().map(|v| text(key, v)).collect()
        };
        let roster = Roster {
            origin: text("origin", get("origin")?)?,
            members: names("members")?,
            slow: names("slow")?,
            stripes: int("stripes")?,
            fanout: int("fanout")?,
            neighbours: int("neighbours")?,
        };
        roster.validate()?;
        // The parser already refused unsorted keys and non-canonical integers; this keeps
        // "one roster, one encoding" true whatever the parser lets through.
        if roster.encode() != bytes {
            return Err(E::WrongType {
                key: "(whole)",
                want: "in its canonical encoding",
            });
        }
        Ok(roster)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_roster_sorts_its_members_and_reads_back_as_itself() {
        let r = Roster::new("o", names(&["b", "o", "a"]), names(&["b"]), (8, 8, 4)).unwrap();
        assert_eq!(r.members, names(&["a", "b", "o"]));
        let bytes = r.encode();
        assert_eq!(
            bytes,
            b"d6:fanouti8e7:membersl1:a1:b1:oe10:neighboursi4e6:origin1:o4:slowl1:be7:stripesi8e1:vi1ee"
        );
        assert_eq!(Roster::decode(&bytes).unwrap(), r);
        assert!(r.is_slow("b") && !r.is_slow("a"));
    }

    #[test]
    fn a_roster_is_read_strictly() {
        let ok =
            "d6:fanouti8e7:membersl1:a1:oe10:neighboursi4e6:origin1:o4:slowle7:stripesi8e1:vi1ee";
        assert!(Roster::decode(ok.as_bytes()).is_ok());
        let cases = [
            (ok.replace("1:vi1e", "1:vi2e"), "version is 2"),
            (ok.replace("1:vi1e", "1:vi1e1:xi0e"), "unknown field"),
            (ok.replace("l1:a1:oe", "l1:o1:ae"), "not sorted"),
            (ok.replace("l1:a1:oe", "l1:a1:a1:oe"), "not sorted"),
            (ok.replace("l1:a1:oe", "l1:/1:oe"), "not 1 to 64"),
            (ok.replace("4:slowle", "4:slowl1:oe"), "origin"),
            (
                ok.replace("4:slowle", "4:slowl1:ze"),
                "not among its members",
            ),
            (ok.replace("6:origin1:o", "6:origin1:z"), "origin"),
            (ok.replace("stripesi8e", "stripesi65e"), "`stripes` is 65"),
            (ok.replace("fanouti8e", "fanouti1e"), "`fanout` is 1"),
            (ok.replace("fanouti8e", "fanouti-8e"), "`fanout` is -8"),
            (
                ok.replace("10:neighboursi4e", ""),
                "lacks field `neighbours`",
            ),
            (ok.replace("7:membersl1:a1:oe", "7:membersle"), "0 members"),
        ];
        for (text, want) in cases {
            let err = Roster::decode(text.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
        let long = vec![b'd'; MAX_ROSTER_BYTES + 1];
        assert!(matches!(
            Roster::decode(&long),
            Err(RosterError::TooLong { .. })
        ));
    }

    /// The digest is what the signature binds: any change to the roster changes it.
    #[test]
    fn the_digest_covers_every_field() {
        let base = Roster::new("o", names(&["a", "b", "o"]), vec![], (8, 8, 4)).unwrap();
        let variants = [
            Roster::new("a", names(&["a", "b", "o"]), vec![], (8, 8, 4)),
            Roster::new("o", names(&["a", "c", "o"]), vec![], (8, 8, 4)),
            Roster::new("o", names(&["a", "b", "o"]), names(&["a"]), (8, 8, 4)),
            Roster::new("o", names(&["a", "b", "o"]), vec![], (4, 8, 4)),
            Roster::new("o", names(&["a", "b", "o"]), vec![], (8, 4, 4)),
            Roster::new("o", names(&["a", "b", "o"]), vec![], (8, 8, 2)),
        ];
        for v in variants {
            assert_ne!(v.unwrap().digest(), base.digest());
        }
    }

    /// A member serving a roster other than the signed one is refused by its digest before
    /// the roster is parsed: a list of 4 million empty names (8 MiB) would otherwise make
    /// millions of values first.
    #[test]
    fn a_served_roster_is_checked_against_its_digest_before_it_is_parsed() {
        let r = Roster::new("o", names(&["a", "o"]), vec![], (8, 8, 4)).unwrap();
        assert_eq!(
            Roster::decode_signed(&r.encode(), &r.digest()),
            Ok(r.clone())
        );
        let mut bomb = b"d6:fanouti8e7:membersl".to_vec();
        bomb.extend(std::iter::repeat_n(b"0:".as_slice(), 4 << 20).flatten());
        bomb.truncate(MAX_ROSTER_BYTES);
        assert_eq!(
            Roster::decode_signed(&bomb, &r.digest()),
            Err(RosterError::Digest)
        );
        let other = Roster::new("o", names(&["b", "o"]), vec![], (8, 8, 4)).unwrap();
        assert_eq!(
            Roster::decode_signed(&other.encode(), &r.digest()),
            Err(RosterError::Digest)
        );
    }

    fn roster() -> impl Strategy<Value = Roster> {
        (
            prop::collection::btree_set("[a-zA-Z0-9._-]{1,12}", 1..40),
            any::<u64>(),
            1u64..=64,
            2u64..=64,
            0u64..=8,
        )
            .prop_map(|(set, pick, d, k, r)| {
                let members: Vec<String> = set.into_iter().collect();
                let origin = members[pick as usize % members.len()].clone();
                let slow = members
                    .iter()
                    .enumerate()
                    .filter(|(i, m)| (pick >> (i % 64)) & 1 == 1 && **m != origin)
                    .map(|(_, m)| m.clone())
                    .collect();
                Roster::new(&origin, members, slow, (d, k, r)).unwrap()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// One roster, one encoding: any valid roster decodes back to itself.
        #[test]
        fn any_roster_round_trips(r in roster()) {
            let bytes = r.encode();
            prop_assert_eq!(Roster::decode(&bytes).unwrap(), r);
        }
    }
}
