//! Fuzzes the prototype's payload and overlay decoders and the torrent parser: garbage must
//! give an error, never a panic or a stack overflow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pu_formats::legacy::{decode_overlay, decode_payload, LegacyTorrent};

fuzz_target!(|data: &[u8]| {
    if let Ok(torrent) = decode_payload(data) {
        // Accepted only with a matching MD5.
        assert_eq!(data.get(..32), Some(torrent.md5_hex().as_bytes()));
    }
    let _ = decode_overlay(data);
    let _ = LegacyTorrent::parse(data.to_vec());
});
