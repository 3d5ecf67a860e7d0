//! Fuzzes the heartbeat decoder past its base64 layer (the input is the bencoding, wrapped as
//! a `p2pu-hb1:` wire text) and the snapshot document decoder on the raw input. Neither may
//! panic; a heartbeat either accepts is the one canonical wire text of what it decoded, with
//! its signers sorted and distinct, and verifying it must not panic; an accepted snapshot
//! document re-encodes to the input.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use p2pu_formats::heartbeat::{Heartbeat, Snapshot, WIRE_PREFIX};
use p2pu_formats::keys::TrustedKeys;

fuzz_target!(|data: &[u8]| {
    if let Ok(snapshot) = Snapshot::decode(data) {
        assert_eq!(snapshot.to_bencode(), data);
    }
    let text = format!("{WIRE_PREFIX}{}", URL_SAFE_NO_PAD.encode(data));
    let Ok(heartbeat) = Heartbeat::decode(&text) else {
        return;
    };
    assert_eq!(heartbeat.to_wire(), text);
    let kids = heartbeat.kids();
    assert!(kids.windows(2).all(|w| w[0] < w[1]), "{kids:?}");
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let trusted = TrustedKeys::from_keys([key.verifying_key()]);
    if let Ok(signers) = heartbeat.verify(&trusted) {
        assert!(signers.valid.len() <= kids.len());
    }
});
