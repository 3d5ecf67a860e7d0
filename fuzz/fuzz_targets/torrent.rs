//! Metainfo::from_bytes never panics, and what it accepts is consistent: a piece hash for every
//! piece, safe file names, and a magnet link that can be formatted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pu_formats::torrent::Metainfo;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Metainfo::from_bytes(data) else {
        return;
    };
    assert_eq!(
        m.pieces.len() as u64,
        m.total_length.div_ceil(m.piece_length)
    );
    assert_eq!(
        m.files.iter().map(|f| f.length).sum::<u64>(),
        m.total_length
    );
    for file in &m.files {
        assert!(file
            .path
            .iter()
            .all(|c| !c.is_empty() && c != ".." && !c.contains('/')));
    }
    assert!(m
        .magnet(&m.trackers, &m.web_seeds)
        .starts_with("magnet:?xt=urn:btih:"));
});
