//! Fuzzes the version 2 announcement decoder past its base64 layer: the input is the
//! bencoding, wrapped as a `p2pu2:` wire text, so the fuzzer works on the dictionary itself
//! (`exp`, `fleet`, the packed `sigs`). It must never panic; whatever it accepts must be the
//! one canonical wire text of what it decoded, with its signers sorted and distinct; verifying
//! against a trusted key must not panic; and combining it with itself must change nothing.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use p2pu_formats::announcement::{Announcement, WIRE_PREFIX_V2};
use p2pu_formats::keys::TrustedKeys;

fuzz_target!(|data: &[u8]| {
    let text = format!("{WIRE_PREFIX_V2}{}", URL_SAFE_NO_PAD.encode(data));
    let Ok(announcement) = Announcement::decode(&text) else {
        return;
    };
    assert_eq!(announcement.to_wire(), text);
    assert_eq!(announcement.to_bencode(), data);
    assert_eq!(announcement.version(), 2);
    let kids = announcement.kids();
    assert!(kids.windows(2).all(|w| w[0] < w[1]), "{kids:?}");
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let trusted = TrustedKeys::from_keys([key.verifying_key()]);
    if let Ok(signers) = announcement.verify(&trusted, Some(b"d1:vi1ee")) {
        assert!(signers.valid.len() <= kids.len());
    }
    let mut again = announcement.clone();
    again.combine(&announcement).expect("an announcement combines with itself");
    assert_eq!(again, announcement);
});
