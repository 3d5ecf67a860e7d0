//! Fuzzes the root document decoder past its base64 layer (the input is the bencoding,
//! wrapped as a `p2pu-root1:` text) and the chain decoder on the raw input. Nothing may
//! panic; an accepted document is the one canonical text of what it decoded, its keys sorted
//! and distinct, its threshold within them; the chain rule must not panic on it; a chain
//! decodes to consecutive versions.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use p2pu_formats::announcement::FleetId;
use p2pu_formats::document::SignedDocument;
use p2pu_formats::root::{RootDoc, PREFIX};

fuzz_target!(|data: &[u8]| {
    if let Ok(chain) = RootDoc::decode_chain(data) {
        assert!(chain.windows(2).all(|w| w[1].version() == w[0].version() + 1));
    }
    let text = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(data));
    let Ok(doc) = RootDoc::decode(text.as_bytes()) else {
        return;
    };
    assert_eq!(doc.to_text(), format!("{text}\n"));
    assert_eq!(doc.to_bencode(), data);
    assert!(doc.keys().windows(2).all(|w| w[0].as_bytes() < w[1].as_bytes()));
    assert!((1..=doc.keys().len()).contains(&doc.threshold()));
    let previous = doc.keys().to_vec();
    let _ = doc.follows(doc.version().saturating_sub(1), &previous, 1, FleetId([7; 8]));
    let mut again = doc.clone();
    again.combine(&doc).expect("a document combines with itself");
    assert_eq!(again, doc);
});
