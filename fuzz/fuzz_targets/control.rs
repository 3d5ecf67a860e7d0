//! Fuzzes the control statement decoder (`p2pu rollout`) past its base64 layer: it must never
//! panic; whatever it accepts must be the one canonical wire text of what it decoded, with its
//! signers sorted and distinct; verifying against a trusted key must not panic.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use p2pu_formats::control::{Control, WIRE_PREFIX};
use p2pu_formats::keys::TrustedKeys;

fuzz_target!(|data: &[u8]| {
    let text = format!("{WIRE_PREFIX}{}", URL_SAFE_NO_PAD.encode(data));
    let Ok(control) = Control::decode(&text) else {
        return;
    };
    assert_eq!(control.to_wire(), text);
    let kids = control.kids();
    assert!(kids.windows(2).all(|w| w[0] < w[1]), "{kids:?}");
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let trusted = TrustedKeys::from_keys([key.verifying_key()]);
    let _ = control.verify(&trusted);
});
