//! `<info-hash>.have`: which blocks of a striped transfer's payload a node holds checked, as
//! the root agent writes it beside the download dir's file and the unprivileged seed server
//! reads it before it sends a block (docs/wire-blocks.md). Not trusted by anyone but that
//! server: the download dir is Transmission's user's, who may rewrite it; what it claims only
//! decides what this node sends, and every receiver checks every block against the signed
//! leaf layer.
//!
//! Layout: the magic `p2pu-have1\n`, the payload's length (u64, big-endian), the block size
//! (u32), the stripes `d` (u32), then one bit a block, block `i` at bit `i % 8` of byte `i / 8`.
//! Exactly that long: at most [`MAX_HAVE_BYTES`].

use crate::blocks::{Layout, MAX_BLOCKS};
use crate::roster::MAX_STRIPES;

const MAGIC: &[u8] = b"p2pu-have1\n";
const HEADER: usize = MAGIC.len() + 8 + 4 + 4;
/// The longest `.have` there is: the header and a bit for each of [`MAX_BLOCKS`] blocks.
pub const MAX_HAVE_BYTES: usize = HEADER + MAX_BLOCKS as usize / 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HaveError {
    #[error("not a .have mark (magic)")]
    Magic,
    #[error("the .have mark's layout is invalid: {0}")]
    Layout(String),
    #[error("the .have mark says {got} stripes, want 1..={MAX_STRIPES}")]
    Stripes { got: u32 },
    #[error("the .have mark is {got} bytes, want {want}")]
    Length { got: usize, want: usize },
}

/// The blocks a node holds of one payload, and how they are dealt into stripes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Have {
    layout: Layout,
    stripes: u32,
    bits: Vec<u8>,
}

impl Have {
    /// Nothing held yet. `stripes` must be 1..=[`MAX_STRIPES`].
    pub fn new(layout: Layout, stripes: u32) -> Result<Have, HaveError> {
        if stripes == 0 || u64::from(stripes) > MAX_STRIPES {
            return Err(HaveError::Stripes { got: stripes });
        }
        Ok(Have {
            layout,
            stripes,
            bits: vec![0; (layout.count() as usize).div_ceil(8)],
        })
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn stripes(&self) -> u32 {
        self.stripes
    }

    pub fn holds(&self, index: u32) -> bool {
        index < self.layout.count() && self.bits[index as usize / 8] & (1 << (index % 8)) != 0
    }

    /// Whether every block of the payload is held (the origin's mark, or a node that finished).
    pub fn is_complete(&self) -> bool {
        (0..self.layout.count()).all(|index| self.holds(index))
    }

    /// Marks block `index` held; an index past the payload is ignored.
    pub fn set(&mut self, index: u32) {
        if index < self.layout.count() {
            self.bits[index as usize / 8] |= 1 << (index % 8);
        }
    }

    /// Where block `index`'s bit lies in [`Have::encode`]'s bytes, and that byte now: the
    /// writer marks a block by writing this one byte in place, which a reader of the whole
    /// mark sees before or after, never torn. `None` past the payload.
    pub fn encoded_byte(&self, index: u32) -> Option<(u64, u8)> {
        (index < self.layout.count()).then(|| {
            let at = index as usize / 8;
            ((HEADER + at) as u64, self.bits[at])
        })
    }

    /// Takes the byte at `encoded_byte(index)`'s offset as read from a mark of this layout:
    /// the blocks of that byte are held as it says (its bits past the payload ignored).
    pub fn take_encoded_byte(&mut self, index: u32, byte: u8) {
        if index >= self.layout.count() {
            return;
        }
        let at = index as usize / 8;
        let past = (at * 8 + 8).saturating_sub(self.layout.count() as usize);
        self.bits[at] = byte & (0xffu8 >> past);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.bits.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.layout.len().to_be_bytes());
        out.extend_from_slice(&self.layout.block_size().to_be_bytes());
        out.extend_from_slice(&self.stripes.to_be_bytes());
        out.extend_from_slice(&self.bits);
        out
    }

    /// Reads a mark: the magic, a valid layout and stripe count, and exactly one bit a block
    /// (the bits past the last block zero, so each mark has one encoding).
    pub fn decode(bytes: &[u8]) -> Result<Have, HaveError> {
        if bytes.len() < HEADER || !bytes.starts_with(MAGIC) {
            return Err(HaveError::Magic);
        }
        let at = MAGIC.len();
        let word = |from: usize, n: usize| -> u64 {
            bytes[from..from + n]
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
        };
        let len = word(at, 8);
        let block = word(at + 8, 4);
        let stripes = word(at + 12, 4) as u32;
        let layout = Layout::new(len, block).map_err(|e| HaveError::Layout(e.to_string()))?;
        let mut have = Have::new(layout, stripes)?;
        let want = HEADER + have.bits.len();
        if bytes.len() != want {
            return Err(HaveError::Length {
                got: bytes.len(),
                want,
            });
        }
        have.bits.copy_from_slice(&bytes[HEADER..]);
        let extra = have.bits.len() * 8 - layout.count() as usize;
        if extra > 0 && have.bits.last().is_some_and(|b| b >> (8 - extra) != 0) {
            return Err(HaveError::Length {
                got: bytes.len(),
                want,
            });
        }
        Ok(have)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_reads_back_as_written_and_each_mark_has_one_encoding() {
        let layout = Layout::new(5 * 16384 + 3, 16384).unwrap();
        let mut have = Have::new(layout, 2).unwrap();
        have.set(0);
        have.set(5);
        have.set(99);
        let bytes = have.encode();
        let read = Have::decode(&bytes).unwrap();
        assert_eq!(read, have);
        assert!(read.holds(0) && read.holds(5) && !read.holds(1) && !read.holds(99));
        let mut padded = bytes.clone();
        *padded.last_mut().unwrap() |= 0x80;
        assert!(Have::decode(&padded).is_err(), "a bit past the last block");
        assert!(Have::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(Have::decode(&[bytes.as_slice(), &[0]].concat()).is_err());
        let mut zero_stripes = bytes.clone();
        zero_stripes[MAGIC.len() + 12..MAGIC.len() + 16].copy_from_slice(&[0; 4]);
        assert!(Have::decode(&zero_stripes).is_err());
    }

    #[test]
    fn a_block_marked_by_its_one_byte_reads_back_in_the_whole_mark() {
        let layout = Layout::new(10 * 16384, 16384).unwrap();
        let mut have = Have::new(layout, 2).unwrap();
        let mut bytes = have.encode();
        for index in [0, 7, 9] {
            have.set(index);
            let (at, byte) = have.encoded_byte(index).unwrap();
            bytes[at as usize] = byte;
        }
        assert_eq!(Have::decode(&bytes).unwrap(), have);
        assert_eq!(have.encoded_byte(10), None);
        // A reader takes the byte: the bits past block 9 are not taken as blocks.
        let mut reader = Have::new(layout, 2).unwrap();
        reader.take_encoded_byte(9, 0xff);
        assert!(reader.holds(8) && reader.holds(9) && !reader.holds(7));
        assert_eq!(
            reader.encode()[have.encoded_byte(9).unwrap().0 as usize],
            0b11
        );
        reader.take_encoded_byte(10, 0xff);
        assert!(!reader.holds(7));
    }

    #[test]
    fn a_mark_is_complete_once_every_block_is_held_and_never_by_bits_past_the_payload() {
        let layout = Layout::new(10 * 16384, 16384).unwrap();
        let mut have = Have::new(layout, 2).unwrap();
        have.take_encoded_byte(9, 0xff);
        assert!(!have.is_complete());
        for index in 0..9 {
            have.set(index);
        }
        assert!(have.is_complete());
    }
}
