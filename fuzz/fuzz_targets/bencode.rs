//! The strict bencode parser never panics, and whatever it accepts is canonical: it spans the
//! whole input and an independent encoder (serde_bencode) reproduces it byte for byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pu_formats::bencode;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = bencode::parse(data) else {
        return;
    };
    assert_eq!(value.raw, data);
    let decoded: serde_bencode::value::Value = serde_bencode::from_bytes(data)
        .expect("serde_bencode reads what the strict parser accepts");
    let encoded = serde_bencode::to_bytes(&decoded).expect("re-encoding");
    assert_eq!(encoded, data, "accepted input is not canonical");
});
