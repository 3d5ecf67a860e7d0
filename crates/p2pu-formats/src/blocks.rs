//! The block format of the striped transfer (docs/DESIGN.md section 5.1, issue 24): a payload
//! cut into small fixed blocks, a SHA-256 Merkle tree over them, proofs of one block against
//! the tree's root, the leaf layer that travels beside the metainfo, and the `p2pu` key of the
//! torrent's info dict that binds the root (and the roster's digest) into what the operator
//! signs. Pure: no I/O, no clock.
//!
//! **Why the info dict.** The signed announcement already binds the info-hash (SHA-1 of the
//! info dict's exact bytes), and every p2pu since the first keeps the info dict as it is,
//! ignoring keys it does not know, as BitTorrent clients do (`tests/block_vectors.rs` checks
//! `transmission-show` against it). So a `p2pu` key there is signed without a new
//! announcement field, which nodes that refuse unknown announcement keys would refuse; nodes
//! that do not know it move the payload by the relay chain as before. The binding is as strong
//! as SHA-1's second-preimage resistance, as the torrent's own piece hashes are: only the
//! operator makes the info dict, so a collision the attacker prepared does not help. The
//! whole payload's SHA-256, signed in the announcement, is still checked at the end.
//!
//! **Why 16 KiB blocks** ([`BLOCK_SIZE`]). A block is forwarded only once it arrived whole and
//! checked, so each hop of a tree costs one block time at a stripe's rate: with 8 stripes on a
//! 50 Mbit/s link, 21 ms for 16 KiB, 84 ms for 64 KiB, 335 ms for a 256 KiB torrent piece.
//! At 10,000 nodes (depth 6) that is 0.13 s, 0.5 s or 2 s of a 10.7 s copy, and
//! `benches/stripe_sim` measured p50 1.088x one copy at 16 KiB against 1.248x at 256 KiB. A
//! liar is caught at its first block, so it wastes at most one block of each child's time.
//! Smaller blocks would not pay: the leaf layer costs 32 bytes a block (0.2% at 16 KiB, 128
//! KiB for 64 MiB), and 16 KiB is BEP 52's leaf. Payloads above 1 GiB take the smallest
//! power-of-two size that keeps the count within [`MAX_BLOCKS`], so the leaf layer a node holds
//! stays within 2 MiB (the agent's memory budget).
//!
//! **The tree.** Leaves are `SHA-256(0x00 || block)`, interior nodes `SHA-256(0x01 || left ||
//! right)` (RFC 6962's domain separation: a block can never pass for two child hashes, nor an
//! interior node for a block), over the leaves padded with zero hashes to a power of two
//! (BEP 52's padding; no block hashes to zero). The block count and each block's length
//! follow from the signed length and the block size, so the tree's shape is fixed before any
//! member sends anything, and a proof's length is exactly its depth.
//!
//! **Room for a delta update.** The `p2pu` dict may name `prev`, the info-hash of the previous
//! version of the same name: a node holding that version compares leaf hashes and keeps the
//! blocks that match. A content-defined chunking (blocks of varying length) would be `v` 2,
//! with each leaf's length in the leaf layer; this version refuses any `v` but 1, and a node
//! that meets one moves the payload by the chain.

use crate::bencode::{self, Kind as Ben, Value};
use sha2::{Digest, Sha256};
use std::ops::Range;

/// The block size for payloads up to [`MAX_BLOCKS`] blocks of it (1 GiB); see the module
/// header for why.
pub const BLOCK_SIZE: u32 = 16 * 1024;
/// The largest block size a `p2pu` dict may name.
pub const MAX_BLOCK_SIZE: u32 = 16 << 20;
/// The most blocks of one payload: a 2 MiB leaf layer.
pub const MAX_BLOCKS: u32 = 1 << 16;
/// The longest leaf layer document.
pub const MAX_LEAF_LAYER_BYTES: usize = MAX_BLOCKS as usize * 32;
/// The longest encoded proof: one hash a level.
pub const MAX_PROOF_BYTES: usize = 16 * 32;
/// The longest `p2pu` dict value `with_spec` writes or `Spec` reads (about 150 bytes).
pub const MAX_SPEC_BYTES: usize = 256;
/// The info dict's key that carries the [`Spec`].
pub const INFO_KEY: &str = "p2pu";

/// A SHA-256 digest: a leaf, an interior node or the root.
pub type Hash = [u8; 32];

const LEAF: u8 = 0x00;
const NODE: u8 = 0x01;
/// What stands for the leaves past the last block.
const PAD: Hash = [0; 32];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlocksError {
    #[error("a payload of {len} bytes cannot be cut into blocks: {reason}")]
    Length { len: u64, reason: &'static str },
    #[error("block size {0} is not a power of two from 16 KiB to 16 MiB")]
    BlockSize(u64),
    #[error("{len} bytes in blocks of {block_size} make {count} blocks, more than {MAX_BLOCKS}")]
    TooManyBlocks {
        len: u64,
        block_size: u32,
        count: u64,
    },
    #[error("block {index} is past the last block ({count} blocks)")]
    NoSuchBlock { index: u64, count: u32 },
    #[error("block {index} has {got} bytes, want {want}")]
    BlockLength { index: u32, got: usize, want: usize },
    #[error("block {index} does not match its hash")]
    BadBlock { index: u32 },
    #[error("the proof of block {index} is {got} bytes, want {want}")]
    ProofLength { index: u32, got: usize, want: usize },
    #[error("the leaf layer is {got} bytes, want {want}")]
    LeafLayerLength { got: usize, want: usize },
    #[error("the leaf layer does not hash to the signed root")]
    LeafLayerRoot,
    #[error("the payload ended after {got} bytes, want {want}")]
    PayloadLength { got: u64, want: u64 },
    #[error("the info dict's `p2pu` key: {0}")]
    Spec(#[from] SpecError),
}

/// What is wrong with the info dict's `p2pu` dict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("the metainfo or its info dict is not canonical bencode: {0}")]
    Bencode(#[from] bencode::BencodeError),
    #[error("`{key}` is not {want}")]
    WrongType {
        key: &'static str,
        want: &'static str,
    },
    #[error("lacks `{key}`")]
    MissingKey { key: &'static str },
    #[error("has unknown field {key:?} (this p2pu knows block, prev, root, roster, v)")]
    UnknownKey { key: String },
    #[error("is version {got}; this p2pu reads version 1 (it moves the payload by the chain)")]
    UnsupportedVersion { got: i64 },
    #[error("is {len} bytes, more than {MAX_SPEC_BYTES}")]
    TooLong { len: usize },
    #[error("the info dict already has a `p2pu` key")]
    AlreadyThere,
    #[error("the info dict is not one file's (`length`), which is all p2pu sends")]
    NotOneFile,
    #[error(transparent)]
    Layout(Box<BlocksError>),
}

bencode::v1_keys_error!(SpecError);

/// A payload's cut into blocks: its length and block size, both checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    len: u64,
    block_size: u32,
    count: u32,
}

impl Layout {
    /// A payload of `len` bytes in blocks of `block_size`: a power of two from 16 KiB to
    /// 16 MiB, at most [`MAX_BLOCKS`] of them.
    pub fn new(len: u64, block_size: u64) -> Result<Layout, BlocksError> {
        if len == 0 {
            return Err(BlocksError::Length {
                len,
                reason: "it is empty",
            });
        }
        if !block_size.is_power_of_two()
            || !(u64::from(BLOCK_SIZE)..=u64::from(MAX_BLOCK_SIZE)).contains(&block_size)
        {
            return Err(BlocksError::BlockSize(block_size));
        }
        let count = len.div_ceil(block_size);
        if count > u64::from(MAX_BLOCKS) {
            return Err(BlocksError::TooManyBlocks {
                len,
                block_size: block_size as u32,
                count,
            });
        }
        Ok(Layout {
            len,
            block_size: block_size as u32,
            count: count as u32,
        })
    }

    /// The layout `submit` chooses: 16 KiB blocks, or the smallest larger power of two that
    /// keeps the count within [`MAX_BLOCKS`].
    pub fn for_length(len: u64) -> Result<Layout, BlocksError> {
        let mut size = u64::from(BLOCK_SIZE);
        while size < u64::from(MAX_BLOCK_SIZE) && len.div_ceil(size) > u64::from(MAX_BLOCKS) {
            size *= 2;
        }
        Layout::new(len, size)
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// Never true: a layout holds at least one byte (kept for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// How many blocks: the last may be shorter.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Levels between a leaf and the root: a proof holds this many hashes.
    pub fn depth(&self) -> u32 {
        self.count.next_power_of_two().trailing_zeros()
    }

    /// The bytes of the payload block `index` covers.
    pub fn range(&self, index: u32) -> Result<Range<u64>, BlocksError> {
        if index >= self.count {
            return Err(BlocksError::NoSuchBlock {
                index: u64::from(index),
                count: self.count,
            });
        }
        let start = u64::from(index) * u64::from(self.block_size);
        Ok(start..(start + u64::from(self.block_size)).min(self.len))
    }

    /// How many bytes block `index` holds.
    pub fn block_len(&self, index: u32) -> Result<usize, BlocksError> {
        self.range(index).map(|r| (r.end - r.start) as usize)
    }

    /// The block holding payload byte `offset`, if the payload has it.
    pub fn block_at(&self, offset: u64) -> Option<u32> {
        (offset < self.len).then(|| (offset / u64::from(self.block_size)) as u32)
    }

    fn check_block(&self, index: u32, block: &[u8]) -> Result<(), BlocksError> {
        let want = self.block_len(index)?;
        if block.len() != want {
            return Err(BlocksError::BlockLength {
                index,
                got: block.len(),
                want,
            });
        }
        Ok(())
    }
}

/// A block's leaf in the tree.
pub fn leaf_hash(block: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([LEAF]);
    h.update(block);
    h.finalize().into()
}

/// An interior node over its two children.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([NODE]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The layer above `layer` (whose length is even, or 1 at the root).
fn parent_layer(layer: &[Hash]) -> Vec<Hash> {
    layer
        .chunks_exact(2)
        .map(|pair| node_hash(&pair[0], &pair[1]))
        .collect()
}

/// The leaf layer: every block's leaf hash, in order. It travels beside the metainfo
/// (`<info-hash>.leaves`, [`Leaves::encode`]) and is checked against the signed root once
/// ([`Leaves::decode`]); each block is then checked alone, on arrival, against its leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaves {
    layout: Layout,
    hashes: Vec<Hash>,
}

impl Leaves {
    /// The leaves of a payload held whole (tests, small payloads); [`Hasher`] streams.
    pub fn of_payload(layout: Layout, payload: &[u8]) -> Result<Leaves, BlocksError> {
        if payload.len() as u64 != layout.len {
            return Err(BlocksError::PayloadLength {
                got: payload.len() as u64,
                want: layout.len,
            });
        }
        let hashes = payload
            .chunks(layout.block_size as usize)
            .map(leaf_hash)
            .collect();
        Ok(Leaves { layout, hashes })
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The tree's root: what the `p2pu` dict carries and the operator's signature binds.
    pub fn root(&self) -> Hash {
        let mut layer = self.padded();
        while layer.len() > 1 {
            layer = parent_layer(&layer);
        }
        layer[0]
    }

    fn padded(&self) -> Vec<Hash> {
        let mut layer = self.hashes.clone();
        layer.resize(self.layout.count.next_power_of_two() as usize, PAD);
        layer
    }

    /// The proof of block `index`: the sibling at every level, leaf first. It rebuilds the
    /// tree (`count` hashes); a server sending many proofs should keep the layers.
    pub fn proof(&self, index: u32) -> Result<Proof, BlocksError> {
        self.layout.range(index)?;
        let mut layer = self.padded();
        let mut at = index as usize;
        let mut siblings = Vec::with_capacity(self.layout.depth() as usize);
        while layer.len() > 1 {
            siblings.push(layer[at ^ 1]);
            layer = parent_layer(&layer);
            at /= 2;
        }
        Ok(Proof { index, siblings })
    }

    /// Checks one block against its leaf: its length first, then its hash.
    pub fn check(&self, index: u32, block: &[u8]) -> Result<(), BlocksError> {
        self.layout.check_block(index, block)?;
        if leaf_hash(block) != self.hashes[index as usize] {
            return Err(BlocksError::BadBlock { index });
        }
        Ok(())
    }

    /// The leaf of block `index` (a delta update compares these with the previous version's).
    pub fn leaf(&self, index: u32) -> Option<&Hash> {
        self.hashes.get(index as usize)
    }

    /// The document: the leaves back to back, 32 bytes each, nothing else (its length follows
    /// from the signed length and block size, and its content from the root).
    pub fn encode(&self) -> Vec<u8> {
        self.hashes.concat()
    }

    /// Reads a leaf layer a member served: exactly `32 * count` bytes whose tree has the
    /// signed `root`. The length is checked before anything is hashed.
    pub fn decode(layout: Layout, root: &Hash, bytes: &[u8]) -> Result<Leaves, BlocksError> {
        let want = layout.count as usize * 32;
        if bytes.len() != want {
            return Err(BlocksError::LeafLayerLength {
                got: bytes.len(),
                want,
            });
        }
        let hashes = bytes
            .chunks_exact(32)
            .map(|c| c.try_into().unwrap_or(PAD))
            .collect();
        let leaves = Leaves { layout, hashes };
        if leaves.root() != *root {
            return Err(BlocksError::LeafLayerRoot);
        }
        Ok(leaves)
    }
}

/// Leaves from a payload read in pieces of any size (the submit's pass over the file, or the
/// agent re-checking what it holds), holding at most one block.
#[derive(Debug, Clone)]
pub struct Hasher {
    layout: Layout,
    hashes: Vec<Hash>,
    block: Vec<u8>,
    seen: u64,
}

impl Hasher {
    pub fn new(layout: Layout) -> Hasher {
        Hasher {
            layout,
            hashes: Vec::with_capacity(layout.count as usize),
            block: Vec::with_capacity(layout.block_size as usize),
            seen: 0,
        }
    }

    /// Feeds the next bytes of the payload; more than its length is refused.
    pub fn update(&mut self, mut bytes: &[u8]) -> Result<(), BlocksError> {
        let seen = self.seen.saturating_add(bytes.len() as u64);
        if seen > self.layout.len {
            return Err(BlocksError::PayloadLength {
                got: seen,
                want: self.layout.len,
            });
        }
        self.seen = seen;
        let size = self.layout.block_size as usize;
        while !bytes.is_empty() {
            let take = (size - self.block.len()).min(bytes.len());
            self.block.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.block.len() == size {
                self.hashes.push(leaf_hash(&self.block));
                self.block.clear();
            }
        }
        Ok(())
    }

    /// The leaves, once exactly the payload's length was fed.
    pub fn finish(mut self) -> Result<Leaves, BlocksError> {
        if self.seen != self.layout.len {
            return Err(BlocksError::PayloadLength {
                got: self.seen,
                want: self.layout.len,
            });
        }
        if !self.block.is_empty() {
            self.hashes.push(leaf_hash(&self.block));
        }
        Ok(Leaves {
            layout: self.layout,
            hashes: self.hashes,
        })
    }
}

/// One block's path to the root: the sibling hash at every level, leaf first. A member may
/// send it with a block (a node that does not hold the leaf layer yet checks the block alone);
/// it is checked against the root the signature binds, never trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    index: u32,
    siblings: Vec<Hash>,
}

impl Proof {
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The siblings back to back, leaf first: exactly `32 * depth` bytes.
    pub fn encode(&self) -> Vec<u8> {
        self.siblings.concat()
    }

    /// Reads the proof of block `index` a member sent: exactly `32 * depth` bytes for the
    /// signed layout, for a block the payload has. The index is the asker's, never the
    /// sender's, so a proof cannot be moved to another block.
    pub fn decode(layout: Layout, index: u32, bytes: &[u8]) -> Result<Proof, BlocksError> {
        layout.range(index)?;
        let want = layout.depth() as usize * 32;
        if bytes.len() != want {
            return Err(BlocksError::ProofLength {
                index,
                got: bytes.len(),
                want,
            });
        }
        Ok(Proof {
            index,
            siblings: bytes
                .chunks_exact(32)
                .map(|c| c.try_into().unwrap_or(PAD))
                .collect(),
        })
    }

    /// Checks `block` as block `self.index` of the payload whose tree has `root`: its length
    /// for that index first, then the path.
    pub fn verify(&self, layout: Layout, root: &Hash, block: &[u8]) -> Result<(), BlocksError> {
        layout.check_block(self.index, block)?;
        if self.siblings.len() != layout.depth() as usize {
            return Err(BlocksError::ProofLength {
                index: self.index,
                got: self.siblings.len() * 32,
                want: layout.depth() as usize * 32,
            });
        }
        let mut at = self.index;
        let mut hash = leaf_hash(block);
        for sibling in &self.siblings {
            hash = if at & 1 == 0 {
                node_hash(&hash, sibling)
            } else {
                node_hash(sibling, &hash)
            };
            at /= 2;
        }
        if hash != *root {
            return Err(BlocksError::BadBlock { index: self.index });
        }
        Ok(())
    }
}

/// The info dict's `p2pu` dict: how the payload is cut, the root of its blocks' tree, and the
/// SHA-256 of the roster the trees are built from (`formats::roster`), all bound by the
/// info-hash the operator signs.
///
/// | key | type | meaning |
/// |---|---|---|
/// | `block` | int | block size: a power of two, 16 KiB to 16 MiB, at most 2^16 blocks |
/// | `prev` | 20 bytes, optional | info-hash of the previous version of the same name (delta update) |
/// | `root` | 32 bytes | the Merkle root over the blocks |
/// | `roster` | 32 bytes, optional | SHA-256 of the roster document (`<info-hash>.roster`) |
/// | `v` | int | 1 |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub layout: Layout,
    pub root: Hash,
    pub roster: Option<Hash>,
    pub prev: Option<[u8; 20]>,
}

const SPEC_KEYS: [&str; 5] = ["block", "prev", "root", "roster", "v"];

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
}

impl Spec {
    /// The dict's canonical bencoding (keys sorted).
    pub fn to_bencode(&self) -> Vec<u8> {
        let mut out = vec![b'd'];
        put_bytes(&mut out, b"block");
        out.extend_from_slice(format!("i{}e", self.layout.block_size).as_bytes());
        if let Some(prev) = &self.prev {
            put_bytes(&mut out, b"prev");
            put_bytes(&mut out, prev);
        }
        put_bytes(&mut out, b"root");
        put_bytes(&mut out, &self.root);
        if let Some(roster) = &self.roster {
            put_bytes(&mut out, b"roster");
            put_bytes(&mut out, roster);
        }
        put_bytes(&mut out, b"v");
        out.extend_from_slice(b"i1e");
        out.push(b'e');
        out
    }

    /// The spec a metainfo's info dict carries: `None` without a `p2pu` key (a payload that
    /// travels by the chain). The length is the info dict's own `length`, which the node has
    /// already checked against the signed one.
    pub fn from_metainfo(metainfo: &[u8]) -> Result<Option<Spec>, SpecError> {
        let top = bencode::parse(metainfo)?;
        let info = top
            .get("info")
            .ok_or(SpecError::MissingKey { key: "info" })?;
        Spec::from_info(info)
    }

    /// As [`Spec::from_metainfo`], from the info dict.
    pub fn from_info(info: &Value<'_>) -> Result<Option<Spec>, SpecError> {
        let Some(value) = info.get(INFO_KEY) else {
            return Ok(None);
        };
        let len = info
            .get("length")
            .and_then(Value::as_int)
            .and_then(|n| u64::try_from(n).ok())
            .ok_or(SpecError::NotOneFile)?;
        Spec::decode(value, len).map(Some)
    }

    /// Reads the `p2pu` dict of a payload of `len` bytes. Strict: a dict of known keys with
    /// their types and lengths, `v` checked first (a later version may have other keys).
    pub fn decode(value: &Value<'_>, len: u64) -> Result<Spec, SpecError> {
        if value.raw.len() > MAX_SPEC_BYTES {
            return Err(SpecError::TooLong {
                len: value.raw.len(),
            });
        }
        let Ben::Dict(_) = &value.kind else {
            return Err(SpecError::WrongType {
                key: "p2pu",
                want: "a dict",
            });
        };
        value.check_v1_keys(&SPEC_KEYS)?;
        let block = value
            .get("block")
            .ok_or(SpecError::MissingKey { key: "block" })?
            .as_int()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or(SpecError::WrongType {
                key: "block",
                want: "a positive integer",
            })?;
        let layout = Layout::new(len, block).map_err(|e| SpecError::Layout(Box::new(e)))?;
        let fixed = |key: &'static str, want: &'static str, n: usize| {
            value
                .get(key)
                .map(|v| {
                    v.as_bytes()
                        .filter(|b| b.len() == n)
                        .map(<[u8]>::to_vec)
                        .ok_or(SpecError::WrongType { key, want })
                })
                .transpose()
        };
        let hash32 = |v: Vec<u8>| -> Hash { v.try_into().unwrap_or(PAD) };
        let root = fixed("root", "32 bytes", 32)?
            .map(hash32)
            .ok_or(SpecError::MissingKey { key: "root" })?;
        let roster = fixed("roster", "32 bytes", 32)?.map(hash32);
        let prev = fixed("prev", "20 bytes", 20)?.map(|v| v.try_into().unwrap_or([0; 20]));
        Ok(Spec {
            layout,
            root,
            roster,
            prev,
        })
    }

    /// The info dict `info` (canonical bencode, one file) with this spec under the `p2pu`
    /// key, in its sorted place: what `submit` hashes into the info-hash. Refuses an info dict
    /// that has one already, or whose `length` is not the spec's.
    pub fn insert_into(&self, info: &[u8]) -> Result<Vec<u8>, SpecError> {
        let value = bencode::parse(info)?;
        let Ben::Dict(entries) = &value.kind else {
            return Err(SpecError::WrongType {
                key: "info",
                want: "a dict",
            });
        };
        let len = value
            .get("length")
            .and_then(Value::as_int)
            .and_then(|n| u64::try_from(n).ok())
            .ok_or(SpecError::NotOneFile)?;
        if len != self.layout.len {
            return Err(SpecError::Layout(Box::new(BlocksError::PayloadLength {
                got: len,
                want: self.layout.len,
            })));
        }
        let mut out = Vec::with_capacity(info.len() + MAX_SPEC_BYTES);
        out.push(b'd');
        let mut placed = false;
        for (key, v) in entries {
            if *key == INFO_KEY.as_bytes() {
                return Err(SpecError::AlreadyThere);
            }
            if !placed && *key > INFO_KEY.as_bytes() {
                put_bytes(&mut out, INFO_KEY.as_bytes());
                out.extend_from_slice(&self.to_bencode());
                placed = true;
            }
            put_bytes(&mut out, key);
            out.extend_from_slice(v.raw);
        }
        if !placed {
            put_bytes(&mut out, INFO_KEY.as_bytes());
            out.extend_from_slice(&self.to_bencode());
        }
        out.push(b'e');
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn layout_counts_blocks_and_refuses_what_it_cannot_cut() {
        let l = Layout::new(3 * 16384 + 1, 16384).unwrap();
        assert_eq!((l.count(), l.depth()), (4, 2));
        assert_eq!(l.range(3).unwrap(), 49152..49153);
        assert_eq!(l.block_at(49152), Some(3));
        assert_eq!(l.block_at(49153), None);
        assert!(matches!(l.range(4), Err(BlocksError::NoSuchBlock { .. })));
        assert!(Layout::new(0, 16384).is_err());
        assert!(Layout::new(1, 8192).is_err());
        assert!(Layout::new(1, 3 << 14).is_err());
        assert!(Layout::new(1, u64::from(MAX_BLOCK_SIZE) * 2).is_err());
        assert!(Layout::new(u64::from(MAX_BLOCKS) * 16384 + 1, 16384).is_err());
        assert_eq!(Layout::new(1, 16384).unwrap().depth(), 0);
    }

    #[test]
    fn for_length_keeps_16_kib_to_1_gib_and_the_count_within_the_cap() {
        assert_eq!(
            Layout::for_length(64 << 20).unwrap().block_size(),
            BLOCK_SIZE
        );
        assert_eq!(
            Layout::for_length(1 << 30).unwrap().block_size(),
            BLOCK_SIZE
        );
        let big = Layout::for_length((1 << 30) + 1).unwrap();
        assert_eq!((big.block_size(), big.count()), (2 * BLOCK_SIZE, 32769));
        assert!(Layout::for_length(1 << 40).unwrap().count() <= MAX_BLOCKS);
        assert!(Layout::for_length((1 << 40) + 1).is_err());
    }

    /// RFC 6962's prefixes: without them a 64-byte block would hash as the interior node over
    /// its two halves, and an interior node's children could be sent as a block.
    #[test]
    fn a_block_never_hashes_as_an_interior_node() {
        let (l, r) = ([1u8; 32], [2u8; 32]);
        assert_ne!(leaf_hash(&[l, r].concat()), node_hash(&l, &r));
    }

    #[test]
    fn streamed_leaves_equal_whole_ones_and_the_length_is_exact() {
        let data = payload(5 * 16384 + 77);
        let layout = Layout::new(data.len() as u64, 16384).unwrap();
        let mut h = Hasher::new(layout);
        for piece in data.chunks(1000) {
            h.update(piece).unwrap();
        }
        let whole = Leaves::of_payload(layout, &data).unwrap();
        assert_eq!(h.finish().unwrap(), whole);
        let mut short = Hasher::new(layout);
        short.update(&data[1..]).unwrap();
        assert!(short.finish().is_err());
        let mut long = Hasher::new(layout);
        long.update(&data).unwrap();
        assert!(long.update(&[0]).is_err());
    }

    #[test]
    fn a_leaf_layer_is_checked_against_the_root_and_its_length() {
        let data = payload(3 * 16384);
        let layout = Layout::new(data.len() as u64, 16384).unwrap();
        let leaves = Leaves::of_payload(layout, &data).unwrap();
        let root = leaves.root();
        let doc = leaves.encode();
        assert_eq!(Leaves::decode(layout, &root, &doc).unwrap(), leaves);
        // A member that serves one leaf changed (to make a block of its own pass) is caught.
        let mut lie = doc.clone();
        lie[40] ^= 1;
        assert_eq!(
            Leaves::decode(layout, &root, &lie),
            Err(BlocksError::LeafLayerRoot)
        );
        // The padding leaf is not the member's to fill: a fourth leaf makes the length wrong.
        let padded = [doc.as_slice(), &[0; 32]].concat();
        assert!(matches!(
            Leaves::decode(layout, &root, &padded),
            Err(BlocksError::LeafLayerLength { .. })
        ));
        assert!(leaves.check(1, &data[16384..32768]).is_ok());
        assert_eq!(
            leaves.check(1, &data[..16384]),
            Err(BlocksError::BadBlock { index: 1 })
        );
        assert!(matches!(
            leaves.check(1, &data[16384..32767]),
            Err(BlocksError::BlockLength { .. })
        ));
        assert!(leaves.check(3, &[]).is_err());
    }

    /// A genuine block with its genuine proof, presented as another block, fails: the index is
    /// the asker's, and every level's left/right order depends on it.
    #[test]
    fn a_proof_does_not_move_to_another_block() {
        let data = payload(4 * 16384);
        let layout = Layout::new(data.len() as u64, 16384).unwrap();
        let leaves = Leaves::of_payload(layout, &data).unwrap();
        let root = leaves.root();
        let proof = leaves.proof(0).unwrap();
        let moved = Proof::decode(layout, 1, &proof.encode()).unwrap();
        assert!(moved.verify(layout, &root, &data[..16384]).is_err());
        assert!(proof.verify(layout, &root, &data[..16384]).is_ok());
    }

    #[test]
    fn a_proof_of_the_wrong_length_or_for_no_block_is_refused() {
        let data = payload(3 * 16384 + 5);
        let layout = Layout::new(data.len() as u64, 16384).unwrap();
        let leaves = Leaves::of_payload(layout, &data).unwrap();
        let bytes = leaves.proof(3).unwrap().encode();
        assert_eq!(bytes.len(), 64);
        assert!(Proof::decode(layout, 3, &bytes[..32]).is_err());
        assert!(Proof::decode(layout, 3, &[bytes.as_slice(), &[0; 32]].concat()).is_err());
        // Block 4 would be the padding leaf: no block, no proof.
        assert!(matches!(
            Proof::decode(layout, 4, &bytes),
            Err(BlocksError::NoSuchBlock { .. })
        ));
        assert!(leaves.proof(4).is_err());
    }

    fn spec(len: u64) -> Spec {
        Spec {
            layout: Layout::for_length(len).unwrap(),
            root: [7; 32],
            roster: Some([9; 32]),
            prev: Some([3; 20]),
        }
    }

    #[test]
    fn a_spec_goes_into_the_info_dict_in_its_sorted_place_and_reads_back() {
        let info = b"d6:lengthi40000e4:name1:x12:piece lengthi16384e6:pieces60:\
aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaae";
        let s = spec(40000);
        let with = s.insert_into(info).unwrap();
        let torrent = [b"d4:info".as_slice(), &with, b"e"].concat();
        // Still a torrent every p2pu reads, with the key before `piece length`.
        let meta = crate::torrent::Metainfo::from_bytes(&torrent).unwrap();
        assert_eq!(meta.total_length, 40000);
        assert_eq!(Spec::from_metainfo(&torrent).unwrap(), Some(s.clone()));
        let text = String::from_utf8_lossy(&with);
        assert!(text.find("4:p2pu").unwrap() < text.find("12:piece length").unwrap());
        assert_eq!(s.insert_into(&with), Err(SpecError::AlreadyThere));
        assert!(spec(40001).insert_into(info).is_err());
        let plain = [b"d4:info".as_slice(), info, b"e"].concat();
        assert_eq!(Spec::from_metainfo(&plain).unwrap(), None);
    }

    fn read(spec: &[u8], len: u64) -> Result<Spec, SpecError> {
        Spec::decode(&bencode::parse(spec).unwrap(), len)
    }

    #[test]
    fn a_spec_is_read_strictly() {
        let r32 = format!("4:root32:{}", "r".repeat(32));
        assert!(read(format!("d5:blocki16384e{r32}1:vi1ee").as_bytes(), 5).is_ok());
        let cases: [(String, &str); 8] = [
            (format!("d5:blocki16384e{r32}1:vi2ee"), "version 2"),
            (format!("d5:blocki16384e{r32}e"), "lacks `v`"),
            (
                format!("d5:blocki16384e{r32}1:vi1e1:xi0ee"),
                "unknown field",
            ),
            (format!("d5:blocki16000e{r32}1:vi1ee"), "block size"),
            (format!("d5:blocki-1e{r32}1:vi1ee"), "`block`"),
            ("d5:blocki16384e4:root3:abc1:vi1ee".to_string(), "`root`"),
            (format!("d5:blocki16384e4:prev3:abc{r32}1:vi1ee"), "`prev`"),
            ("d5:blocki16384e1:vi1ee".to_string(), "lacks `root`"),
        ];
        for (text, want) in cases {
            let err = read(text.as_bytes(), 5).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
        assert!(read(format!("d5:blocki16384e{r32}1:vi1ee").as_bytes(), 0).is_err());
        let long = format!("d5:blocki16384e4:root{}:{}1:vi1ee", 300, "r".repeat(300));
        assert!(matches!(
            read(long.as_bytes(), 5),
            Err(SpecError::TooLong { .. })
        ));
    }

    fn payload_and_block() -> impl Strategy<Value = (Vec<u8>, u32)> {
        // Up to 9 blocks of 16 KiB: every tree shape from one leaf to a padded 16.
        (1usize..9 * 16384, any::<u32>()).prop_map(|(len, pick)| {
            let data: Vec<u8> = (0..len).map(|i| (i as u32 ^ pick) as u8).collect();
            let count = len.div_ceil(16384) as u32;
            (data, pick % count)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Any payload, any block: the block with its proof verifies against the root, and
        /// against its leaf in the leaf layer, and the proof survives its encoding.
        #[test]
        fn every_block_verifies_against_the_root((data, i) in payload_and_block()) {
            let layout = Layout::new(data.len() as u64, 16384).unwrap();
            let leaves = Leaves::of_payload(layout, &data).unwrap();
            let root = leaves.root();
            let block = &data[layout.range(i).unwrap().start as usize..layout.range(i).unwrap().end as usize];
            let proof = Proof::decode(layout, i, &leaves.proof(i).unwrap().encode()).unwrap();
            prop_assert!(proof.verify(layout, &root, block).is_ok());
            prop_assert!(leaves.check(i, block).is_ok());
            prop_assert_eq!(Leaves::decode(layout, &root, &leaves.encode()).unwrap(), leaves);
        }

        /// Any flipped bit, in the block, the proof or the root, fails the check.
        #[test]
        fn any_flipped_bit_fails((data, i) in payload_and_block(), bit in any::<u32>()) {
            let layout = Layout::new(data.len() as u64, 16384).unwrap();
            let leaves = Leaves::of_payload(layout, &data).unwrap();
            let root = leaves.root();
            let range = layout.range(i).unwrap();
            let block = data[range.start as usize..range.end as usize].to_vec();
            let proof = leaves.proof(i).unwrap().encode();

            let mut bad = block.clone();
            let at = bit as usize % (bad.len() * 8);
            bad[at / 8] ^= 1 << (at % 8);
            let p = Proof::decode(layout, i, &proof).unwrap();
            prop_assert!(p.verify(layout, &root, &bad).is_err());
            prop_assert!(leaves.check(i, &bad).is_err());

            if !proof.is_empty() {
                let mut bad = proof.clone();
                let at = bit as usize % (bad.len() * 8);
                bad[at / 8] ^= 1 << (at % 8);
                let p = Proof::decode(layout, i, &bad).unwrap();
                prop_assert!(p.verify(layout, &root, &block).is_err());
            }

            let mut bad_root = root;
            bad_root[(bit as usize / 8) % 32] ^= 1 << (bit % 8);
            prop_assert!(p.verify(layout, &bad_root, &block).is_err());
            prop_assert!(Leaves::decode(layout, &bad_root, &leaves.encode()).is_err());
        }

        /// Whatever a spec holds, it reads back as itself from its one encoding.
        #[test]
        fn a_spec_round_trips(len in 1u64..1 << 40, root in any::<[u8; 32]>(),
                              roster in any::<Option<[u8; 32]>>(), prev in any::<Option<[u8; 20]>>()) {
            let s = Spec { layout: Layout::for_length(len).unwrap(), root, roster, prev };
            let bytes = s.to_bencode();
            prop_assert!(bytes.len() <= MAX_SPEC_BYTES);
            prop_assert_eq!(read(&bytes, len).unwrap(), s);
        }
    }
}
