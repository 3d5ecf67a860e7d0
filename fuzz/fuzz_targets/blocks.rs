//! Fuzzes what a member can send a striped transfer (`formats::blocks`): the info dict's `p2pu`
//! key (as a whole metainfo), a leaf layer and a proof, for a layout taken from the input's
//! first bytes. Nothing may panic; an accepted spec re-encodes to the bytes it was read from;
//! an accepted leaf layer hashes to the root it was checked against; a proof that verifies a
//! block holds only for that block's index and length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pu_formats::bencode;
use p2pu_formats::blocks::{Layout, Leaves, Proof, Spec, INFO_KEY};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(spec)) = Spec::from_metainfo(data) {
        let top = bencode::parse(data).expect("parsed once already");
        let raw = top.get("info").and_then(|i| i.get(INFO_KEY)).expect("there").raw;
        assert_eq!(spec.to_bencode(), raw);
    }
    if data.len() < 10 {
        return;
    }
    // A small layout (at most 64 blocks, so a run stays fast), a block index, then the body.
    let len = u64::from(u16::from_be_bytes([data[0], data[1]])) * 16 + 1;
    let Ok(layout) = Layout::new(len, 16384) else {
        return;
    };
    let index = u32::from(data[2]);
    let root: [u8; 32] = std::array::from_fn(|i| data[3 + i % 7]);
    let body = &data[10..];
    if let Ok(leaves) = Leaves::decode(layout, &root, body) {
        assert_eq!(leaves.root(), root);
        assert_eq!(leaves.encode(), body);
    }
    if let Ok(proof) = Proof::decode(layout, index, body) {
        assert_eq!(proof.encode(), body);
        let block = vec![data[3]; layout.block_len(index).expect("decode checked the index")];
        if proof.verify(layout, &root, &block).is_ok() {
            assert!(proof.verify(layout, &root, &block[1..]).is_err());
        }
    }
});
