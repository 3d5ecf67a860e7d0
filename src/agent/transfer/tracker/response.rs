//! Announce answers as bencoded dictionaries: BEP 23 compact `peers` (6 bytes per IPv4 peer),
//! BEP 7 `peers6` (18 bytes per IPv6 peer), and the `failure reason` for refused announces.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

/// What the tracker tells one announcer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceResponse {
    pub interval: Duration,
    pub min_interval: Duration,
    /// Peers known to hold the whole payload.
    pub complete: u32,
    /// Peers known to still download it.
    pub incomplete: u32,
    /// In the order they should be tried; split by family when encoded.
    pub peers: Vec<SocketAddr>,
}

#[derive(Serialize)]
struct Wire {
    complete: u32,
    incomplete: u32,
    interval: u64,
    #[serde(rename = "min interval")]
    min_interval: u64,
    #[serde(with = "serde_bytes")]
    peers: Vec<u8>,
    #[serde(with = "serde_bytes", skip_serializing_if = "Vec::is_empty")]
    peers6: Vec<u8>,
}

#[derive(Serialize)]
struct Failure<'a> {
    #[serde(rename = "failure reason")]
    reason: &'a str,
}

impl AnnounceResponse {
    pub fn encode(&self) -> Vec<u8> {
        let (peers, peers6) = compact(&self.peers);
        let wire = Wire {
            complete: self.complete,
            incomplete: self.incomplete,
            interval: self.interval.as_secs(),
            min_interval: self.min_interval.as_secs(),
            peers,
            peers6,
        };
        bencode(&wire)
    }
}

/// The bencoded answer to a refused announce.
pub fn encode_failure(reason: &str) -> Vec<u8> {
    bencode(&Failure { reason })
}

/// Compact peer strings: (IPv4 as 4+2 bytes each, IPv6 as 16+2 bytes each), ports big-endian.
/// IPv4-mapped IPv6 addresses go in the IPv4 list, where every client looks for them.
pub fn compact(peers: &[SocketAddr]) -> (Vec<u8>, Vec<u8>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for peer in peers {
        match peer {
            SocketAddr::V4(a) => {
                v4.extend_from_slice(&a.ip().octets());
                v4.extend_from_slice(&a.port().to_be_bytes());
            }
            SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
                Some(ip) => {
                    v4.extend_from_slice(&ip.octets());
                    v4.extend_from_slice(&a.port().to_be_bytes());
                }
                None => {
                    v6.extend_from_slice(&a.ip().octets());
                    v6.extend_from_slice(&a.port().to_be_bytes());
                }
            },
        }
    }
    (v4, v6)
}

fn bencode<T: Serialize>(value: &T) -> Vec<u8> {
    match serde_bencode::to_bytes(value) {
        Ok(bytes) => bytes,
        // Only integers, byte strings and string keys go in; serde_bencode cannot fail on them.
        Err(e) => {
            tracing::error!(error = %e, "bencoding a tracker answer failed (a bug in p2pu)");
            b"d14:failure reason14:internal errore".to_vec()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_encoding_matches_bep_23_and_bep_7() {
        let peers: Vec<SocketAddr> = vec![
            "10.99.1.2:51413".parse().unwrap(),
            "[2001:db8::1]:6881".parse().unwrap(),
            "[::ffff:192.0.2.7]:258".parse().unwrap(),
        ];
        let (v4, v6) = compact(&peers);
        assert_eq!(v4, [10, 99, 1, 2, 0xc8, 0xd5, 192, 0, 2, 7, 0x01, 0x02]);
        let mut want6 = vec![0x20, 0x01, 0x0d, 0xb8];
        want6.extend([0u8; 11]);
        want6.extend([1, 0x1a, 0xe1]);
        assert_eq!(v6, want6);
    }

    #[test]
    fn answer_is_a_sorted_bencoded_dict() {
        let response = AnnounceResponse {
            interval: Duration::from_secs(30),
            min_interval: Duration::from_secs(10),
            complete: 1,
            incomplete: 2,
            peers: vec!["10.0.0.1:258".parse().unwrap()],
        };
        assert_eq!(
            response.encode(),
            b"d8:completei1e10:incompletei2e8:intervali30e12:min intervali10e\
5:peers6:\x0a\x00\x00\x01\x01\x02e"
                .to_vec()
        );
    }

    #[test]
    fn empty_answer_still_has_a_peers_key() {
        let response = AnnounceResponse {
            interval: Duration::from_secs(30),
            min_interval: Duration::from_secs(10),
            complete: 0,
            incomplete: 0,
            peers: vec![],
        };
        let bytes = response.encode();
        assert!(bytes.windows(8).any(|w| w == b"5:peers0"), "{bytes:?}");
        assert!(!bytes.windows(6).any(|w| w == b"peers6"));
    }

    #[test]
    fn ipv6_peers_go_in_peers6() {
        let response = AnnounceResponse {
            interval: Duration::from_secs(30),
            min_interval: Duration::from_secs(10),
            complete: 0,
            incomplete: 0,
            peers: vec!["[fd00::2]:7000".parse().unwrap()],
        };
        let bytes = response.encode();
        assert!(bytes.windows(10).any(|w| w == b"6:peers618"), "{bytes:?}");
    }

    #[test]
    fn failure_reason_is_bencoded() {
        assert_eq!(
            encode_failure("missing `port`"),
            b"d14:failure reason14:missing `port`e".to_vec()
        );
    }
}
