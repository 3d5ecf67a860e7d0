//! Fuzzes the proxy's dispatch after authentication. Each input line is one datagram: its first
//! byte picks the source address (two registered members, two strangers), how far the clock
//! moves (so members expire), and the framing: an overlay message whose JSON payload is the
//! rest of the line, sealed with the fleet secret so the fuzzer drives what the proxy does with
//! an authentic message; a bulk frame between two names; the exact previous datagram again (a
//! replay); or the bytes as they are. Two members, `a` and `b`, register first.
//!
//! Nothing may panic, and: every reply is a datagram of at most MAX_DATAGRAM bytes, sealed with
//! the secret or a STUN answer or a forwarded bulk frame; the proxy only ever sends to addresses
//! datagrams came from (never to an address named in a body, so it cannot be made to reflect
//! traffic elsewhere); a replayed overlay message and unauthenticated bytes other than STUN get
//! no reply; the registry stays within its bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pu::nat::protocol::{
    decode, encode, encode_bulk, looks_like_bulk, looks_like_overlay, seal_raw, sign_register,
    Payload, Secret, MAX_DATAGRAM,
};
use p2pu::nat::proxy::{ProxyConfig, ProxyState};
use p2pu::nat::stun::looks_like_stun;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"fuzzing-fleet-secret-0123456789";
const WALL: u64 = 1_800_000_000;
const NAMES: [&str; 4] = ["a", "b", "c", "proxy"];

fuzz_target!(|data: &[u8]| {
    let secret = Secret::new(SECRET).expect("secret");
    let sources: [SocketAddr; 4] = [
        ([100, 64, 0, 1], 4000).into(),
        ([100, 64, 0, 2], 4000).into(),
        ([100, 64, 0, 3], 4000).into(),
        ([198, 51, 100, 7], 3478).into(),
    ];
    let mut config = ProxyConfig::new(secret.clone(), 64);
    config.max_members = 4;
    config.max_sources = 8;
    config.alt_port = 3479;
    let mut now = Instant::now();
    let mut proxy = ProxyState::new(config, now);
    let mut nonce = 0u64;
    for (n, (name, from)) in [("a", sources[0]), ("b", sources[1])].into_iter().enumerate() {
        nonce += 1;
        // Each member registers signed by its own identity key, as the proxy now requires.
        let identity = ed25519_dalek::SigningKey::from_bytes(&[n as u8 + 1; 32]);
        let payload = Payload {
            from: name.into(),
            body: sign_register(
                &identity,
                WALL,
                nonce,
                name,
                ([192, 168, 1, 10], 4000).into(),
                5,
                format!("cert-of-{name}"),
            ),
        };
        let datagram = encode(&secret, WALL, nonce, &payload).expect("encoding");
        assert_eq!(proxy.handle(now, WALL, from, &datagram).len(), 1);
    }
    let mut previous: Option<Vec<u8>> = None;
    for line in data.split(|&b| b == b'\n') {
        let Some((&flags, rest)) = line.split_first() else {
            continue;
        };
        let from = sources[usize::from(flags & 3)];
        now += Duration::from_secs(u64::from((flags >> 2) & 3) * 5);
        nonce += 1;
        let (datagram, authentic_overlay, raw) = match flags >> 4 {
            0..=9 => match seal_raw(&secret, WALL, nonce, rest) {
                Ok(sealed) => (sealed, true, false),
                Err(_) => continue,
            },
            10 | 11 => {
                let (Some(&f), Some(&t)) = (rest.first(), rest.get(1)) else {
                    continue;
                };
                let (f, t) = (NAMES[usize::from(f & 3)], NAMES[usize::from(t & 3)]);
                let packet = rest.get(2..).unwrap_or_default();
                match encode_bulk(&secret, WALL, nonce, f, t, packet) {
                    Ok(frame) => (frame, false, false),
                    Err(_) => continue,
                }
            }
            12 | 13 => {
                let Some(again) = previous.clone() else {
                    continue;
                };
                let out = proxy.handle(now, WALL, from, &again);
                if looks_like_overlay(&again) {
                    assert!(out.is_empty(), "a replayed message was answered: {out:?}");
                }
                continue;
            }
            _ => (rest.to_vec(), false, true),
        };
        let rate_limited = proxy.counters.dropped_rate;
        let out = proxy.handle(now, WALL, from, &datagram);
        assert!(proxy.member_count() <= 4);
        if raw && !looks_like_stun(&datagram) {
            assert!(
                out.is_empty(),
                "unauthenticated bytes were answered: {out:?}"
            );
        }
        for (to, bytes) in &out {
            assert!(
                sources.contains(to),
                "sent to {to}, where no datagram came from"
            );
            assert!(bytes.len() <= MAX_DATAGRAM);
            if looks_like_overlay(bytes) {
                decode(&secret, WALL, bytes).expect("the proxy's replies are authentic");
            } else if looks_like_bulk(bytes) {
                assert_eq!(bytes, &datagram, "a bulk frame is forwarded as it came");
            } else {
                assert!(
                    looks_like_stun(&datagram) && *to == from,
                    "unexpected reply"
                );
            }
        }
        // A datagram the rate limit dropped never reached the replay guard.
        if authentic_overlay && proxy.counters.dropped_rate == rate_limited {
            previous = Some(datagram);
        }
    }
});
