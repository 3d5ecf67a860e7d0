//! Fuzzes the announcement decoder: it must never panic, and whatever it accepts must be the
//! one canonical wire text of what it decoded (so no two texts carry the same announcement).
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pu_formats::announcement::Announcement;

fuzz_target!(|data: &[u8]| {
    if let Ok(announcement) = Announcement::decode(data) {
        let text = data.strip_suffix(b"\n").unwrap_or(data);
        assert_eq!(announcement.to_wire().as_bytes(), text);
    }
});
