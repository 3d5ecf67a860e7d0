//! BEP 3 announce requests: the query string of `GET /announce?...` parsed into an [`Announce`],
//! with a typed [`TrackerError`] for every way it can be malformed. Pure, so it can be fuzzed.

use percent_encoding::percent_decode;

/// Longest query accepted. A real announce is ~300 bytes; this leaves room for extensions.
pub const MAX_QUERY: usize = 2048;

/// Most a reported value is echoed back in an error, so a failure reason stays short.
const MAX_ECHO: usize = 40;

/// A validated announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
    /// The announcer's BitTorrent listening port (never 0).
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    /// Bytes still missing; 0 means the announcer is a seeder.
    pub left: u64,
    pub event: Event,
    /// Peers wanted; `None` when the client did not say.
    pub numwant: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A regular re-announce (no `event`, or an empty one).
    None,
    Started,
    Stopped,
    Completed,
    /// BEP 21's partial seed.
    Paused,
}

/// Why an announce was refused; its text is sent back as the bencoded `failure reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackerError {
    #[error("announce query is {len} bytes, more than the {max} accepted")]
    QueryTooLong { len: usize, max: usize },
    #[error("`{field}` has a malformed percent-escape")]
    BadEscape { field: String },
    #[error("missing `{field}`")]
    Missing { field: &'static str },
    #[error("`{field}` given more than once")]
    Duplicate { field: &'static str },
    #[error("`{field}` is {got} bytes, want {want}")]
    BadLength {
        field: &'static str,
        want: usize,
        got: usize,
    },
    #[error("`{field}` is {value:?}, want a decimal number")]
    BadNumber { field: &'static str, value: String },
    #[error("`port` is {value:?}, want 1-65535")]
    BadPort { value: String },
    #[error("`event` is {value:?}, want started, stopped, completed, paused or empty")]
    BadEvent { value: String },
}

/// Parses the query string of an announce (the bytes after `?`, still percent-encoded).
/// Unknown keys (`key`, `compact`, `supportcrypto`, `ip`, ...) are ignored: the answer is
/// always compact (BEP 23), and the announcer's address comes from the connection.
pub fn parse_announce(query: &[u8]) -> Result<Announce, TrackerError> {
    if query.len() > MAX_QUERY {
        return Err(TrackerError::QueryTooLong {
            len: query.len(),
            max: MAX_QUERY,
        });
    }
    let mut fields = Fields::default();
    for pair in query.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        let key = decode(key, "(key)")?;
        let slot = match key.as_slice() {
            b"info_hash" => &mut fields.info_hash,
            b"peer_id" => &mut fields.peer_id,
            b"port" => &mut fields.port,
            b"uploaded" => &mut fields.uploaded,
            b"downloaded" => &mut fields.downloaded,
            b"left" => &mut fields.left,
            b"event" => &mut fields.event,
            b"numwant" => &mut fields.numwant,
            _ => continue,
        };
        if slot.1.is_some() {
            return Err(TrackerError::Duplicate { field: slot.0 });
        }
        slot.1 = Some(decode(value, slot.0)?);
    }
    Ok(Announce {
        info_hash: twenty(fields.info_hash)?,
        peer_id: twenty(fields.peer_id)?,
        port: port(fields.port)?,
        uploaded: number(fields.uploaded)?,
        downloaded: number(fields.downloaded)?,
        left: number(fields.left)?,
        event: event(fields.event)?,
        numwant: match fields.numwant.1 {
            None => None,
            Some(value) => Some(number(("numwant", Some(value)))?),
        },
    })
}

type Field = (&'static str, Option<Vec<u8>>);

struct Fields {
    info_hash: Field,
    peer_id: Field,
    port: Field,
    uploaded: Field,
    downloaded: Field,
    left: Field,
    event: Field,
    numwant: Field,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            info_hash: ("info_hash", None),
            peer_id: ("peer_id", None),
            port: ("port", None),
            uploaded: ("uploaded", None),
            downloaded: ("downloaded", None),
            left: ("left", None),
            event: ("event", None),
            numwant: ("numwant", None),
        }
    }
}

/// Percent-decodes, refusing a `%` not followed by two hex digits (which `percent_decode` would
/// pass through literally, turning a truncated info_hash into a wrong one).
fn decode(raw: &[u8], field: &str) -> Result<Vec<u8>, TrackerError> {
    let mut rest = raw;
    while let Some(at) = rest.iter().position(|&b| b == b'%') {
        let ok = rest
            .get(at + 1..at + 3)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
        if !ok {
            return Err(TrackerError::BadEscape {
                field: field.to_string(),
            });
        }
        rest = &rest[at + 3..];
    }
    Ok(percent_decode(raw).collect())
}

fn required((field, value): Field) -> Result<Vec<u8>, TrackerError> {
    value.ok_or(TrackerError::Missing { field })
}

fn echo(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    text.chars().take(MAX_ECHO).collect()
}

fn twenty(field: Field) -> Result<[u8; 20], TrackerError> {
    let name = field.0;
    let value = required(field)?;
    <[u8; 20]>::try_from(value.as_slice()).map_err(|_| TrackerError::BadLength {
        field: name,
        want: 20,
        got: value.len(),
    })
}

fn number<T: std::str::FromStr>(field: Field) -> Result<T, TrackerError> {
    let name = field.0;
    let value = required(field)?;
    // `FromStr` for integers accepts a leading `+`; a tracker has no reason to.
    std::str::from_utf8(&value)
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| TrackerError::BadNumber {
            field: name,
            value: echo(&value),
        })
}

fn port(field: Field) -> Result<u16, TrackerError> {
    let value = required(field)?;
    std::str::from_utf8(&value)
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|&p| p != 0)
        .ok_or_else(|| TrackerError::BadPort {
            value: echo(&value),
        })
}

fn event((_, value): Field) -> Result<Event, TrackerError> {
    Ok(match value.as_deref() {
        None | Some(b"") => Event::None,
        Some(b"started") => Event::Started,
        Some(b"stopped") => Event::Stopped,
        Some(b"completed") => Event::Completed,
        Some(b"paused") => Event::Paused,
        Some(other) => return Err(TrackerError::BadEvent { value: echo(other) }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    /// Every byte value, so escapes of non-ASCII and reserved characters are all exercised.
    const HASH: [u8; 20] = [
        0x00, 0x01, 0x25, 0x26, 0x2b, 0x3d, 0x7f, 0x80, 0xff, b'a', b'Z', b'~', b'.', b'-', b'_',
        b'%', b'&', b'?', b' ', 0x10,
    ];

    fn escaped(bytes: &[u8]) -> String {
        percent_encoding::percent_encode(bytes, percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    fn query(replace: &[(&str, Option<&str>)]) -> String {
        let mut pairs = vec![
            ("info_hash".to_string(), escaped(&HASH)),
            ("peer_id".to_string(), "-TR3000-abcdefghijkl".to_string()),
            ("port".to_string(), "51413".to_string()),
            ("uploaded".to_string(), "0".to_string()),
            ("downloaded".to_string(), "10".to_string()),
            ("left".to_string(), "1234".to_string()),
            ("numwant".to_string(), "80".to_string()),
            ("key".to_string(), "5e3a".to_string()),
            ("compact".to_string(), "1".to_string()),
            ("supportcrypto".to_string(), "1".to_string()),
            ("event".to_string(), "started".to_string()),
        ];
        for (key, value) in replace {
            pairs.retain(|(k, _)| k != key);
            if let Some(value) = value {
                pairs.push((key.to_string(), value.to_string()));
            }
        }
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    }

    fn parse(q: &str) -> Result<Announce, TrackerError> {
        parse_announce(q.as_bytes())
    }

    #[test]
    fn parses_a_transmission_style_announce() {
        let announce = parse(&query(&[])).unwrap();
        assert_eq!(
            announce,
            Announce {
                info_hash: HASH,
                peer_id: *b"-TR3000-abcdefghijkl",
                port: 51413,
                uploaded: 0,
                downloaded: 10,
                left: 1234,
                event: Event::Started,
                numwant: Some(80),
            }
        );
    }

    /// Captured from transmission-daemon 3.00 announcing a magnet (no metadata yet, so `left`
    /// is i64::MAX) to a tracker on 127.0.0.1.
    #[test]
    fn parses_a_captured_transmission_query() {
        let q = b"info_hash=%9a%d3%e5%0c%aa%e1%b3%8c%15%87%ac%7d%a1%0e%8ah%eb%c0%ban\
&peer_id=-TR3000-o4hzjre21k6b&port=42149&uploaded=0&downloaded=0&left=9223372036854775807\
&numwant=80&key=1c839f1b&compact=1&supportcrypto=1&event=started";
        let a = parse_announce(q).unwrap();
        assert_eq!(
            hex::encode(a.info_hash),
            "9ad3e50caae1b38c1587ac7da10e8a68ebc0ba6e"
        );
        assert_eq!(&a.peer_id, b"-TR3000-o4hzjre21k6b");
        assert_eq!(
            (a.port, a.left, a.numwant),
            (42149, i64::MAX as u64, Some(80))
        );
        assert_eq!(a.event, Event::Started);
    }

    #[test]
    fn lowercase_escapes_and_unescaped_bytes_mix() {
        let q = query(&[(
            "info_hash",
            Some("%00%01%25%26%2b%3d%7f%80%ffaZ~.-_%25%26%3f%20%10"),
        )]);
        assert_eq!(parse(&q).unwrap().info_hash, HASH);
    }

    #[test]
    fn optional_fields_default() {
        let q = query(&[("event", None), ("numwant", None)]);
        let a = parse(&q).unwrap();
        assert_eq!((a.event, a.numwant), (Event::None, None));
        let q = query(&[("event", Some(""))]);
        assert_eq!(parse(&q).unwrap().event, Event::None);
        for (text, want) in [
            ("stopped", Event::Stopped),
            ("completed", Event::Completed),
            ("paused", Event::Paused),
        ] {
            assert_eq!(parse(&query(&[("event", Some(text))])).unwrap().event, want);
        }
    }

    #[test]
    fn refuses_each_malformed_input() {
        let cases: Vec<(String, TrackerError)> = vec![
            (
                query(&[("info_hash", None)]),
                TrackerError::Missing { field: "info_hash" },
            ),
            (
                query(&[("info_hash", Some(&escaped(&HASH[..19])))]),
                TrackerError::BadLength {
                    field: "info_hash",
                    want: 20,
                    got: 19,
                },
            ),
            (
                query(&[("info_hash", Some("%zz"))]),
                TrackerError::BadEscape {
                    field: "info_hash".into(),
                },
            ),
            (
                query(&[("info_hash", Some("abcdefghijklmnopqrs%4"))]),
                TrackerError::BadEscape {
                    field: "info_hash".into(),
                },
            ),
            (
                query(&[("peer_id", Some("short"))]),
                TrackerError::BadLength {
                    field: "peer_id",
                    want: 20,
                    got: 5,
                },
            ),
            (
                query(&[("port", Some("65536"))]),
                TrackerError::BadPort {
                    value: "65536".into(),
                },
            ),
            (
                query(&[("port", Some("0"))]),
                TrackerError::BadPort { value: "0".into() },
            ),
            (
                query(&[("port", Some("+80"))]),
                TrackerError::BadPort {
                    value: "+80".into(),
                },
            ),
            (
                query(&[("port", None)]),
                TrackerError::Missing { field: "port" },
            ),
            (
                query(&[("left", Some("-1"))]),
                TrackerError::BadNumber {
                    field: "left",
                    value: "-1".into(),
                },
            ),
            (
                query(&[("numwant", Some("lots"))]),
                TrackerError::BadNumber {
                    field: "numwant",
                    value: "lots".into(),
                },
            ),
            (
                query(&[("event", Some("exploded"))]),
                TrackerError::BadEvent {
                    value: "exploded".into(),
                },
            ),
            (
                format!("{}&port=1", query(&[])),
                TrackerError::Duplicate { field: "port" },
            ),
        ];
        for (q, want) in cases {
            assert_eq!(parse(&q), Err(want), "query {q}");
        }
    }

    #[test]
    fn refuses_an_oversized_query_before_parsing_it() {
        let q = format!("{}&pad={}", query(&[]), "x".repeat(MAX_QUERY));
        assert_eq!(
            parse(&q),
            Err(TrackerError::QueryTooLong {
                len: q.len(),
                max: MAX_QUERY
            })
        );
    }

    #[test]
    fn echoed_values_are_bounded() {
        let long = "9".repeat(500);
        let Err(TrackerError::BadPort { value }) = parse(&query(&[("port", Some(&long))])) else {
            panic!("want BadPort");
        };
        assert_eq!(value.len(), MAX_ECHO);
    }

    #[test]
    fn empty_and_junk_queries_are_errors_not_panics() {
        for q in [&b""[..], b"&&&", b"=", b"%", b"info_hash", b"\xff\xfe=\x00"] {
            assert!(parse_announce(q).is_err());
        }
    }

    proptest::proptest! {
        /// What parses keeps the promises the tracker relies on: a usable port, and a query
        /// within the cap. The inputs are announces as clients write them (with unknown keys,
        /// port 0 among the ports, and padding past the cap), the same with one byte changed,
        /// and raw bytes; an announce with a usable port within the cap always parses.
        #[test]
        fn any_bytes_parse_or_fail_without_panicking(
            info_hash in proptest::array::uniform20(proptest::num::u8::ANY),
            peer_id in proptest::array::uniform20(proptest::num::u8::ANY),
            port in proptest::prop_oneof![proptest::strategy::Just(0u16), proptest::num::u16::ANY],
            left in proptest::num::u64::ANY,
            extra in proptest::collection::vec("x[a-z]{0,7}=[a-z0-9%]{0,8}", 0..4),
            pad in proptest::option::of(0usize..2 * MAX_QUERY),
            change in proptest::option::of((proptest::num::usize::ANY, proptest::num::u8::ANY)),
            raw in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
        ) {
            let mut query = format!(
                "info_hash={}&peer_id={}&port={port}&uploaded=1&downloaded=2&left={left}",
                escaped(&info_hash),
                escaped(&peer_id)
            )
            .into_bytes();
            for pair in &extra {
                query.push(b'&');
                query.extend_from_slice(pair.as_bytes());
            }
            if let Some(pad) = pad {
                query.extend_from_slice(b"&xpad=");
                query.extend(std::iter::repeat_n(b'p', pad));
            }
            if let Some((at, byte)) = change {
                let at = at % query.len();
                query[at] = byte;
            }
            for query in [&query, &raw] {
                let parsed = parse_announce(query);
                if let Ok(announce) = &parsed {
                    proptest::prop_assert!(announce.port != 0);
                    proptest::prop_assert!(query.len() <= MAX_QUERY);
                }
                if query.len() > MAX_QUERY {
                    let too_long = matches!(parsed, Err(TrackerError::QueryTooLong { .. }));
                    proptest::prop_assert!(too_long, "{:?}", parsed);
                }
            }
            if change.is_none() && query.len() <= MAX_QUERY {
                let parsed = parse_announce(&query);
                if port == 0 {
                    let bad_port = matches!(parsed, Err(TrackerError::BadPort { .. }));
                    proptest::prop_assert!(bad_port, "{:?}", parsed);
                } else {
                    proptest::prop_assert_eq!(parsed.map(|a| (a.info_hash, a.peer_id, a.port, a.left)), Ok((info_hash, peer_id, port, left)));
                }
            }
        }

        #[test]
        fn encoded_announces_parse_back(
            info_hash in proptest::array::uniform20(proptest::num::u8::ANY),
            peer_id in proptest::array::uniform20(proptest::num::u8::ANY),
            port in 1u16..,
            left in proptest::num::u64::ANY,
            numwant in proptest::option::of(proptest::num::u32::ANY),
        ) {
            let mut q = format!(
                "info_hash={}&peer_id={}&port={port}&uploaded=1&downloaded=2&left={left}",
                escaped(&info_hash),
                escaped(&peer_id)
            );
            if let Some(n) = numwant {
                q.push_str(&format!("&numwant={n}"));
            }
            let want = Announce {
                info_hash,
                peer_id,
                port,
                uploaded: 1,
                downloaded: 2,
                left,
                event: Event::None,
                numwant,
            };
            proptest::prop_assert_eq!(parse(&q), Ok(want));
        }
    }
}
