//! Strict bencode reading: a borrowed value tree that accepts only the canonical encoding (dict
//! keys sorted and unique, no leading zeros, no `-0`, nothing after the value) and keeps the raw
//! bytes of every value, so an info-hash is taken over the exact bytes of an existing torrent.
//! Encoding is serde_bencode's job (it sorts keys); this module is what serde_bencode lacks.

use std::fmt;

/// Nesting deeper than this is refused: real metainfo and announcements nest 4 levels at most,
/// and the parser recurses once per level.
pub const MAX_DEPTH: usize = 64;

/// A decoded value and the exact bytes it was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value<'a> {
    pub kind: Kind<'a>,
    /// The value's own encoding, e.g. `d...e` for a dict: hash this for an info-hash.
    pub raw: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    List(Vec<Value<'a>>),
    /// Entries in encoded order, which the parser guarantees is strictly ascending by key.
    Dict(Vec<(&'a [u8], Value<'a>)>),
}

/// Why a dict is not a version-1 document of known keys ([`Value::check_v1_keys`]); each
/// format turns it into its own error's variants, so its messages stay its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V1KeysError {
    /// No `v` key.
    MissingVersion,
    /// `v` is not an integer.
    VersionNotInt,
    /// `v` is an integer other than 1.
    UnsupportedVersion(i64),
    /// A key the format does not know (lossily decoded).
    UnknownKey(String),
}

/// `From<V1KeysError>` for a format's error with the variants `MissingKey { key }`,
/// `WrongType { key, want }`, `UnsupportedVersion { got }` and `UnknownKey { key }`.
macro_rules! v1_keys_error {
    ($error:ty) => {
        impl From<$crate::bencode::V1KeysError> for $error {
            fn from(e: $crate::bencode::V1KeysError) -> Self {
                use $crate::bencode::V1KeysError as V;
                match e {
                    V::MissingVersion => Self::MissingKey { key: "v" },
                    V::VersionNotInt => Self::WrongType {
                        key: "v",
                        want: "an integer",
                    },
                    V::UnsupportedVersion(got) => Self::UnsupportedVersion { got },
                    V::UnknownKey(key) => Self::UnknownKey { key },
                }
            }
        }
    };
}
pub(crate) use v1_keys_error;

impl<'a> Value<'a> {
    /// For a dict: its `v` is 1 (checked first: a later version may well have other keys) and
    /// it holds no key outside `known`. Plans, rosters and the info dict's `p2pu` key read so.
    pub fn check_v1_keys(&self, known: &[&str]) -> Result<(), V1KeysError> {
        match self.get("v").map(Value::as_int) {
            None => return Err(V1KeysError::MissingVersion),
            Some(None) => return Err(V1KeysError::VersionNotInt),
            Some(Some(1)) => {}
            Some(Some(got)) => return Err(V1KeysError::UnsupportedVersion(got)),
        }
        let Kind::Dict(entries) = &self.kind else {
            return Ok(());
        };
        match entries
            .iter()
            .find(|(k, _)| !known.iter().any(|name| name.as_bytes() == *k))
        {
            Some((key, _)) => Err(V1KeysError::UnknownKey(
                String::from_utf8_lossy(key).into_owned(),
            )),
            None => Ok(()),
        }
    }

    /// The value under `key` when this is a dict.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        match &self.kind {
            Kind::Dict(entries) => entries
                .binary_search_by(|(k, _)| (*k).cmp(key.as_bytes()))
                .ok()
                .and_then(|i| entries.get(i))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self.kind {
            Kind::Int(i) => Some(i),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self.kind {
            Kind::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match &self.kind {
            Kind::List(items) => Some(items),
            _ => None,
        }
    }

    pub fn is_dict(&self) -> bool {
        matches!(self.kind, Kind::Dict(_))
    }
}

/// Where the input stopped being canonical bencode, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid bencode at byte {offset}: {problem}")]
pub struct BencodeError {
    pub offset: usize,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    UnexpectedEnd,
    UnexpectedByte(u8),
    LeadingZero,
    NegativeZero,
    IntegerOverflow,
    /// A string's declared length runs past the end of the input.
    LengthPastEnd(u64),
    KeyNotBytes,
    UnsortedKey,
    DuplicateKey,
    TooDeep,
    TrailingData,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::UnexpectedEnd => write!(f, "unexpected end of input"),
            Problem::UnexpectedByte(b) => write!(f, "unexpected byte {:?}", char::from(*b)),
            Problem::LeadingZero => write!(f, "number with a leading zero"),
            Problem::NegativeZero => write!(f, "integer -0"),
            Problem::IntegerOverflow => write!(f, "integer does not fit in 64 bits"),
            Problem::LengthPastEnd(n) => write!(f, "string of {n} bytes runs past the end"),
            Problem::KeyNotBytes => write!(f, "dict key is not a byte string"),
            Problem::UnsortedKey => write!(f, "dict keys not in sorted order"),
            Problem::DuplicateKey => write!(f, "duplicate dict key"),
            Problem::TooDeep => write!(f, "nested deeper than {MAX_DEPTH} levels"),
            Problem::TrailingData => write!(f, "data after the end of the value"),
        }
    }
}

/// Parses exactly one canonical value spanning all of `input`.
pub fn parse(input: &[u8]) -> Result<Value<'_>, BencodeError> {
    let mut parser = Parser { input, pos: 0 };
    let value = parser.value(0)?;
    if parser.pos != input.len() {
        return Err(parser.error(Problem::TrailingData));
    }
    Ok(value)
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn error(&self, problem: Problem) -> BencodeError {
        BencodeError {
            offset: self.pos,
            problem,
        }
    }

    fn peek(&self) -> Result<u8, BencodeError> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or_else(|| self.error(Problem::UnexpectedEnd))
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, BencodeError> {
        if depth >= MAX_DEPTH {
            return Err(self.error(Problem::TooDeep));
        }
        let start = self.pos;
        let kind = match self.peek()? {
            b'i' => {
                self.pos += 1;
                let n = self.integer(b'e')?;
                Kind::Int(n)
            }
            b'0'..=b'9' => Kind::Bytes(self.bytes()?),
            b'l' => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Kind::List(items)
            }
            b'd' => {
                self.pos += 1;
                let mut entries: Vec<(&'a [u8], Value<'a>)> = Vec::new();
                while self.peek()? != b'e' {
                    if !self.peek()?.is_ascii_digit() {
                        return Err(self.error(Problem::KeyNotBytes));
                    }
                    let key_at = self.pos;
                    let key = self.bytes()?;
                    if let Some((last, _)) = entries.last() {
                        let problem = match (*last).cmp(key) {
                            std::cmp::Ordering::Less => None,
                            std::cmp::Ordering::Equal => Some(Problem::DuplicateKey),
                            std::cmp::Ordering::Greater => Some(Problem::UnsortedKey),
                        };
                        if let Some(problem) = problem {
                            return Err(BencodeError {
                                offset: key_at,
                                problem,
                            });
                        }
                    }
                    let value = self.value(depth + 1)?;
                    entries.push((key, value));
                }
                self.pos += 1;
                Kind::Dict(entries)
            }
            b => return Err(self.error(Problem::UnexpectedByte(b))),
        };
        let raw = self.input.get(start..self.pos).unwrap_or_default();
        Ok(Value { kind, raw })
    }

    /// A decimal integer terminated by `end`; `-` only for `i...e` integers.
    fn integer(&mut self, end: u8) -> Result<i64, BencodeError> {
        let negative = end == b'e' && self.peek()? == b'-';
        if negative {
            self.pos += 1;
        }
        let first_at = self.pos;
        let mut value: i64 = 0;
        loop {
            let b = self.peek()?;
            if b == end && self.pos > first_at {
                break;
            }
            if !b.is_ascii_digit() {
                return Err(self.error(Problem::UnexpectedByte(b)));
            }
            if self.pos > first_at && value == 0 {
                return Err(BencodeError {
                    offset: first_at,
                    problem: Problem::LeadingZero,
                });
            }
            let digit = i64::from(b - b'0');
            // Accumulate negatively so i64::MIN parses; negate at the end for positives.
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_sub(digit))
                .ok_or_else(|| self.error(Problem::IntegerOverflow))?;
            self.pos += 1;
        }
        self.pos += 1;
        if negative {
            if value == 0 {
                return Err(BencodeError {
                    offset: first_at - 1,
                    problem: Problem::NegativeZero,
                });
            }
            Ok(value)
        } else {
            value.checked_neg().ok_or(BencodeError {
                offset: first_at,
                problem: Problem::IntegerOverflow,
            })
        }
    }

    fn bytes(&mut self) -> Result<&'a [u8], BencodeError> {
        let len_at = self.pos;
        let len = self.integer(b':')?;
        let len = u64::try_from(len).map_err(|_| BencodeError {
            offset: len_at,
            problem: Problem::IntegerOverflow,
        })?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| self.pos.checked_add(l))
            .filter(|&end| end <= self.input.len())
            .ok_or(BencodeError {
                offset: len_at,
                problem: Problem::LengthPastEnd(len),
            })?;
        let bytes = self.input.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn problem(input: &[u8]) -> (usize, Problem) {
        let e = parse(input).expect_err("should be rejected");
        (e.offset, e.problem)
    }

    #[test]
    fn parses_values_and_keeps_raw_spans() {
        let input = b"d4:infod6:lengthi5ee4:listli-3e0:ee";
        let v = parse(input).unwrap();
        assert_eq!(v.raw, input);
        let info = v.get("info").unwrap();
        assert_eq!(info.raw, b"d6:lengthi5ee");
        assert_eq!(info.get("length").unwrap().as_int(), Some(5));
        let list = v.get("list").unwrap().as_list().unwrap();
        assert_eq!(list[0].as_int(), Some(-3));
        assert_eq!(list[1].as_bytes(), Some(&b""[..]));
        assert!(v.get("missing").is_none());
    }

    #[test]
    fn integer_extremes() {
        assert_eq!(parse(b"i0e").unwrap().as_int(), Some(0));
        assert_eq!(
            parse(b"i-9223372036854775808e").unwrap().as_int(),
            Some(i64::MIN)
        );
        assert_eq!(
            parse(b"i9223372036854775807e").unwrap().as_int(),
            Some(i64::MAX)
        );
        assert_eq!(
            problem(b"i9223372036854775808e").1,
            Problem::IntegerOverflow
        );
        assert_eq!(
            problem(b"i-9223372036854775809e").1,
            Problem::IntegerOverflow
        );
    }

    #[test]
    fn rejects_non_canonical_forms() {
        assert_eq!(problem(b"i03e"), (1, Problem::LeadingZero));
        assert_eq!(problem(b"i-0e"), (1, Problem::NegativeZero));
        assert_eq!(problem(b"i-03e"), (2, Problem::LeadingZero));
        assert_eq!(problem(b"ie"), (1, Problem::UnexpectedByte(b'e')));
        assert_eq!(problem(b"i-e"), (2, Problem::UnexpectedByte(b'e')));
        assert_eq!(problem(b"i+1e"), (1, Problem::UnexpectedByte(b'+')));
        assert_eq!(problem(b"03:abc"), (0, Problem::LeadingZero));
        assert_eq!(problem(b"-1:a"), (0, Problem::UnexpectedByte(b'-')));
        assert_eq!(problem(b"d1:bi1e1:ai2ee"), (7, Problem::UnsortedKey));
        assert_eq!(problem(b"d1:ai1e1:ai2ee"), (7, Problem::DuplicateKey));
        assert_eq!(problem(b"di1ei2ee"), (1, Problem::KeyNotBytes));
        assert_eq!(problem(b"i1ei2e"), (3, Problem::TrailingData));
        assert_eq!(problem(b"5:abc"), (0, Problem::LengthPastEnd(5)));
        assert_eq!(problem(b"l"), (1, Problem::UnexpectedEnd));
        assert_eq!(problem(b""), (0, Problem::UnexpectedEnd));
        assert_eq!(
            problem(b"99999999999999999999:a"),
            (18, Problem::IntegerOverflow)
        );
        assert_eq!(
            problem(b"18446744073709551615:a").1,
            Problem::IntegerOverflow
        );
    }

    #[test]
    fn depth_is_bounded() {
        let ok = [vec![b'l'; MAX_DEPTH], vec![b'e'; MAX_DEPTH]].concat();
        assert!(parse(&ok).is_ok());
        let deep = vec![b'l'; 100_000];
        assert_eq!(problem(&deep), (MAX_DEPTH, Problem::TooDeep));
    }

    #[test]
    fn serde_bencode_output_is_canonical() {
        #[derive(serde::Serialize)]
        struct S {
            zeta: i64,
            alpha: String,
            #[serde(rename = "piece length")]
            piece_length: u64,
            none: Option<i64>,
        }
        let bytes = serde_bencode::to_bytes(&S {
            zeta: -1,
            alpha: "x".into(),
            piece_length: 16384,
            none: None,
        })
        .unwrap();
        let v = parse(&bytes).unwrap();
        assert_eq!(v.raw, &bytes[..]);
        assert!(v.get("none").is_none());
    }

    /// An owned tree for the round-trip property; dict keys deduplicated and sorted.
    #[derive(Debug, Clone)]
    enum Tree {
        Int(i64),
        Bytes(Vec<u8>),
        List(Vec<Tree>),
        Dict(std::collections::BTreeMap<Vec<u8>, Tree>),
    }

    fn encode(tree: &Tree, out: &mut Vec<u8>) {
        match tree {
            Tree::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
            Tree::Bytes(b) => {
                out.extend_from_slice(format!("{}:", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Tree::List(items) => {
                out.push(b'l');
                items.iter().for_each(|t| encode(t, out));
                out.push(b'e');
            }
            Tree::Dict(map) => {
                out.push(b'd');
                for (k, v) in map {
                    encode(&Tree::Bytes(k.clone()), out);
                    encode(v, out);
                }
                out.push(b'e');
            }
        }
    }

    fn same(tree: &Tree, value: &Value<'_>) -> bool {
        match (tree, &value.kind) {
            (Tree::Int(a), Kind::Int(b)) => a == b,
            (Tree::Bytes(a), Kind::Bytes(b)) => a == b,
            (Tree::List(a), Kind::List(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(t, v)| same(t, v))
            }
            (Tree::Dict(a), Kind::Dict(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|((tk, tv), (vk, vv))| tk == vk && same(tv, vv))
            }
            _ => false,
        }
    }

    fn tree() -> impl Strategy<Value = Tree> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Tree::Int),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(Tree::Bytes),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Tree::List),
                proptest::collection::btree_map(
                    proptest::collection::vec(any::<u8>(), 0..6),
                    inner,
                    0..6
                )
                .prop_map(Tree::Dict),
            ]
        })
    }

    proptest! {
        #[test]
        fn canonical_round_trip(t in tree()) {
            let mut bytes = Vec::new();
            encode(&t, &mut bytes);
            let v = parse(&bytes).unwrap();
            prop_assert_eq!(v.raw, &bytes[..]);
            prop_assert!(same(&t, &v));
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Err(e) = parse(&bytes) {
                prop_assert!(e.offset <= bytes.len());
            }
        }

        #[test]
        fn never_panics_on_mutated_encodings(t in tree(), at in any::<usize>(), byte in any::<u8>()) {
            let mut bytes = Vec::new();
            encode(&t, &mut bytes);
            let i = at % bytes.len();
            bytes[i] = byte;
            if let Err(e) = parse(&bytes) {
                prop_assert!(e.offset <= bytes.len());
            }
            let _ = parse(&bytes[..i]);
        }
    }
}
