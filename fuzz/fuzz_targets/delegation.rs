//! Fuzzes the key statement decoder past its base64 layer: the input is the bencoding,
//! wrapped as a `p2pu-delegation:` text, so the fuzzer works on the dictionary itself (the
//! lists of names, kinds and targets, the packed `sigs`). It must never panic; whatever it
//! accepts must be the one canonical text of what it decoded, never grant `key`, keep its
//! lists sorted and distinct, and counting signers or checking a permit must not panic.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use p2pu_formats::announcement::Kind;
use p2pu_formats::delegation::{Delegation, PREFIX};
use p2pu_formats::document::SignedDocument;

fuzz_target!(|data: &[u8]| {
    let text = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(data));
    let Ok(statement) = Delegation::decode(text.as_bytes()) else {
        return;
    };
    assert_eq!(statement.to_text(), format!("{text}\n"));
    assert_eq!(statement.to_bencode(), data);
    assert!(!statement.kinds().contains(&Kind::Key));
    assert!(statement.names().windows(2).all(|w| w[0] < w[1]));
    assert!(statement.targets().windows(2).all(|w| w[0] < w[1]));
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
    let signers = statement.signers(|_| Some(key));
    assert!(signers.len() <= statement.kids().len());
    let _ = statement.permits("cam-1.pp", Kind::Manifest, None);
    let _ = statement.permits("cam-1.pp", Kind::Key, Some("tag:role=camera"));
    let mut again = statement.clone();
    again.combine(&statement).expect("a statement combines with itself");
    assert_eq!(again, statement);
});
