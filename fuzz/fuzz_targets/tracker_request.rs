//! Fuzzes the tracker's announce parser: any query must parse or be refused with a typed error
//! whose bencoded failure answer is well formed, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pu::agent::transfer::tracker::{encode_failure, parse_announce, MAX_QUERY};

fuzz_target!(|query: &[u8]| {
    match parse_announce(query) {
        Ok(announce) => {
            assert!(query.len() <= MAX_QUERY);
            assert_ne!(announce.port, 0);
        }
        Err(e) => {
            let body = encode_failure(&e.to_string());
            assert!(body.starts_with(b"d14:failure reason") && body.ends_with(b"e"));
        }
    }
});
