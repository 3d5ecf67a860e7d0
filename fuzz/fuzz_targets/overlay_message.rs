//! Fuzzes what the proxy and the NAT client do with a datagram from anyone: the overlay
//! and bulk-frame decoders (framing, tag, window), the body parser behind a valid tag (sealed here with the
//! fuzzer's bytes as the body), and the proxy's whole handling including STUN. None may panic;
//! a body that decodes must encode back to something that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pu::nat::protocol::{decode, decode_bulk, encode, seal_raw, Secret};
use p2pu::nat::proxy::{ProxyConfig, ProxyState};
use std::time::Instant;

fuzz_target!(|data: &[u8]| {
    let Ok(secret) = Secret::new(b"fuzzing-fleet-secret-0123456789") else {
        return;
    };
    let _ = decode(&secret, 1_000_000, data);
    let _ = decode_bulk(&secret, 1_000_000, data);
    if let Ok(sealed) = seal_raw(&secret, 1_000_000, 1, data) {
        if let Ok(message) = decode(&secret, 1_000_000, &sealed) {
            // Re-encoding is canonical JSON, never longer than what it parsed.
            let again = encode(&secret, 1_000_000, 2, &message.payload).expect("re-encode");
            let back = decode(&secret, 1_000_000, &again).expect("decode re-encoded");
            assert_eq!(back.payload, message.payload);
        }
    }
    let mut proxy = ProxyState::new(ProxyConfig::new(secret, 64), Instant::now());
    let from = std::net::SocketAddr::from(([100, 64, 0, 9], 4000));
    let _ = proxy.handle(Instant::now(), 1_000_000, from, data);
});
