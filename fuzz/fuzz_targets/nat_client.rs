//! Fuzzes the NAT client's datagram handling past authentication: each input line is one
//! datagram whose first byte picks the source (the proxy, the session peer `b`, a stranger) and
//! whose rest is the JSON payload, sealed with the fleet secret so the fuzzer drives what the
//! client does with an authentic message (bit 2 of the first byte sends the bytes as they are,
//! for STUN and the framing). Before them the proxy registers the client and opens a session
//! with `b`, so peer messages reach the session code. Nothing may panic, and the client only
//! ever spools announcement texts (or the prototype's overlay message) within the spool's size
//! limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pu::agent::runtime::spool::MAX_EVENT_BYTES;
use p2pu::nat::client::{Client, ClientConfig};
use p2pu::nat::protocol::{encode, seal_raw, unix_now, Body, Payload, Secret};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"fuzzing-fleet-secret-0123456789";

struct Fixture {
    /// Stands in for the proxy so the client's sends go somewhere on loopback; never read.
    proxy: UdpSocket,
    peer: UdpSocket,
    spool: PathBuf,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let bind = || UdpSocket::bind("127.0.0.1:0").expect("binding a loopback socket");
        Fixture {
            proxy: bind(),
            peer: bind(),
            spool: tempfile::Builder::new()
                .prefix("p2pu-fuzz-nat-client-")
                .tempdir_in("/dev/shm")
                .expect("fixture dir")
                .keep(),
        }
    })
}

fn addr(socket: &UdpSocket) -> SocketAddr {
    socket.local_addr().expect("local address")
}

fn check_and_clear(spool: &Path) {
    for entry in std::fs::read_dir(spool).expect("listing the spool") {
        let path = entry.expect("entry").path();
        let text = std::fs::read(&path).expect("reading a spooled event");
        // Announcements, and the prototype's overlay message the agent takes under
        // `accept_legacy` (the client's `spoolable`): nothing else.
        assert!(
            p2pu::formats::announcement::is_wire(&text)
                || p2pu::formats::legacy::is_overlay(&text),
            "spooled {text:?}"
        );
        assert!(text.len() <= MAX_EVENT_BYTES);
        std::fs::remove_file(&path).expect("cleaning up");
    }
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let secret = Secret::new(SECRET).expect("secret");
    let (proxy, peer) = (addr(&fixture.proxy), addr(&fixture.peer));
    let stranger = SocketAddr::from(([127, 0, 0, 1], 9));
    let config = ClientConfig {
        name: "a".into(),
        bind: "127.0.0.1:0".parse().expect("address"),
        proxy,
        stun_server: proxy,
        secret: secret.clone(),
        identity: ed25519_dalek::SigningKey::from_bytes(&[3; 32]),
        keepalive: Duration::from_secs(5),
        peer_expiry: Duration::from_secs(30),
        spool_dir: fixture.spool.clone(),
    };
    let Ok(mut client) = Client::bind(config, None, None) else {
        return;
    };
    let now = Instant::now();
    let wall = unix_now();
    let mut nonce = 0u64;
    for body in [
        Body::Registered {
            mapped: client.local_addr(),
            alt_port: 0,
        },
        Body::Punch {
            peer: "b".into(),
            local: peer,
            mapped: peer,
            cert: String::new(),
        },
    ] {
        nonce += 1;
        let payload = Payload {
            from: "proxy".into(),
            body,
        };
        let datagram = encode(&secret, wall, nonce, &payload).expect("encoding");
        client.handle_datagram(now, proxy, &datagram);
    }
    for line in data.split(|&b| b == b'\n') {
        let Some((&flags, rest)) = line.split_first() else {
            continue;
        };
        let from = match flags & 3 {
            0 | 3 => proxy,
            1 => peer,
            _ => stranger,
        };
        nonce += 1;
        if flags & 4 != 0 {
            client.handle_datagram(now, from, rest);
        } else if let Ok(datagram) = seal_raw(&secret, wall, nonce, rest) {
            client.handle_datagram(now, from, &datagram);
        }
    }
    check_and_clear(&fixture.spool);
});
