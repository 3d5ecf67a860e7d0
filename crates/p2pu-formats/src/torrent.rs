//! BitTorrent v1 metainfo (BEP 3): encoding a .torrent from files already hashed, and reading
//! and validating an existing one. Walking a directory and hashing its pieces on every core is
//! p2pu's (`p2pu::formats::torrent::create`); this half touches no file.

use crate::bencode::BencodeError;
use serde::Serialize;
use std::path::PathBuf;

mod parse;

pub use parse::{check_component, info_total_length};

/// Smallest piece size chosen or accepted (BitTorrent's block size).
pub const MIN_PIECE_LENGTH: u64 = 16 * 1024;
/// Largest piece size chosen automatically.
pub const MAX_AUTO_PIECE_LENGTH: u64 = 16 << 20;
/// Largest piece size accepted when given explicitly.
pub const MAX_PIECE_LENGTH: u64 = 64 << 20;
/// Automatic piece size keeps the piece count at or under this: the metadata a magnet link
/// fetches stays under 40 KiB while pieces stay small enough to spread early.
const MAX_AUTO_PIECES: u64 = 2048;
/// At most this many pieces (5 MiB of hashes): bounds memory and keeps the torrent loadable.
pub const MAX_PIECES: u64 = 1 << 18;

#[derive(Debug, thiserror::Error)]
pub enum TorrentError {
    #[error("the torrent has no info dictionary")]
    MissingInfo,
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is a symbolic link; a torrent holds regular files only", path.display())]
    Symlink { path: PathBuf },
    #[error("{} is a {kind}, not a regular file or directory", path.display())]
    SpecialFile { path: PathBuf, kind: &'static str },
    #[error("{} is an empty directory, which a BitTorrent v1 torrent cannot represent", path.display())]
    EmptyDirectory { path: PathBuf },
    #[error("{}: file name is not valid UTF-8", path.display())]
    NonUtf8Name { path: PathBuf },
    #[error("{} holds no data; a torrent of 0 bytes cannot be shared", path.display())]
    Empty { path: PathBuf },
    #[error("{} changed while hashing: it had {expected} bytes, now {found}", path.display())]
    Changed {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("piece size {0} is not a power of two from 16 KiB to 64 MiB")]
    PieceLength(u64),
    #[error("{pieces} pieces of {piece_length} bytes is more than {MAX_PIECES}; choose a larger piece size")]
    TooManyPieces { pieces: u64, piece_length: u64 },
    #[error("invalid torrent name {name:?}: {reason}")]
    Name { name: String, reason: &'static str },
    #[error("invalid torrent")]
    Bencode(#[from] BencodeError),
    #[error("invalid torrent: `{field}` {problem}")]
    Field { field: String, problem: String },
    #[error("encoding the metainfo")]
    Encode(#[source] serde_bencode::Error),
    #[error("{}", path.display())]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<TorrentError>,
    },
    #[error("internal error (a bug in p2pu): {0}")]
    Internal(String),
}

/// What to put in a new torrent besides the content. `Default` gives a public torrent with an
/// automatic piece size and no trackers, dates or comments (so the output is reproducible).
#[derive(Default)]
pub struct CreateOptions<'a> {
    /// Piece size in bytes (a power of two, 16 KiB..=64 MiB); automatic when `None`.
    pub piece_length: Option<u64>,
    /// `None` omits the `private` key (as mktorrent does); `Some(false)` writes `private: 0`
    /// (as transmission-create does), `Some(true)` makes a BEP 27 private torrent.
    pub private: Option<bool>,
    /// The first is `announce`; with more than one, each also gets its own `announce-list` tier.
    pub trackers: Vec<String>,
    /// BEP 19 web seeds (`url-list`).
    pub web_seeds: Vec<String>,
    /// Torrent name; defaults to the file or directory name.
    pub name: Option<String>,
    pub comment: Option<String>,
    pub created_by: Option<String>,
    /// Seconds since the Unix epoch.
    pub creation_date: Option<i64>,
    /// Called from the hashing threads with the number of bytes just hashed.
    pub progress: Option<&'a (dyn Fn(u64) + Sync)>,
}

/// One file of a torrent, its path relative to the torrent's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub path: Vec<String>,
    pub length: u64,
}

/// A parsed, validated torrent and its exact bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metainfo {
    /// The .torrent file.
    pub bytes: Vec<u8>,
    /// SHA-1 of the info dict exactly as it appears in `bytes`.
    pub info_hash: [u8; 20],
    pub name: String,
    pub total_length: u64,
    pub piece_length: u64,
    /// Single-file torrents have one entry whose path is `[name]`.
    pub files: Vec<FileEntry>,
    pub multi_file: bool,
    pub pieces: Vec<[u8; 20]>,
    pub private: Option<bool>,
    /// `announce` then the `announce-list` tiers, flattened, without duplicates.
    pub trackers: Vec<String>,
    pub web_seeds: Vec<String>,
    pub comment: Option<String>,
    pub created_by: Option<String>,
    pub creation_date: Option<i64>,
}

/// The smallest power-of-two piece size (16 KiB..=16 MiB) that keeps the piece count at or
/// under 2048.
pub fn auto_piece_length(total_length: u64) -> u64 {
    let mut piece = MIN_PIECE_LENGTH;
    while piece < MAX_AUTO_PIECE_LENGTH && total_length.div_ceil(piece) > MAX_AUTO_PIECES {
        piece *= 2;
    }
    piece
}

#[derive(Serialize)]
struct TorrentOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    announce: Option<&'a str>,
    #[serde(rename = "announce-list", skip_serializing_if = "Option::is_none")]
    announce_list: Option<Vec<[&'a str; 1]>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<&'a str>,
    #[serde(rename = "created by", skip_serializing_if = "Option::is_none")]
    created_by: Option<&'a str>,
    #[serde(rename = "creation date", skip_serializing_if = "Option::is_none")]
    creation_date: Option<i64>,
    info: InfoOut<'a>,
    #[serde(rename = "url-list", skip_serializing_if = "<[_]>::is_empty")]
    url_list: &'a [String],
}

#[derive(Serialize)]
struct InfoOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<Vec<FileOut<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    length: Option<u64>,
    name: &'a str,
    #[serde(rename = "piece length")]
    piece_length: u64,
    pieces: serde_bytes::ByteBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    private: Option<u8>,
}

#[derive(Serialize)]
struct FileOut<'a> {
    length: u64,
    path: &'a [String],
}

/// The .torrent for `files` (each path relative to the torrent, in order) and their piece
/// hashes; `multi_file` writes a `files` list, otherwise one `length`.
pub fn encode(
    opts: &CreateOptions<'_>,
    name: &str,
    files: &[FileEntry],
    multi_file: bool,
    piece_length: u64,
    pieces: &[[u8; 20]],
) -> Result<Vec<u8>, TorrentError> {
    let info = InfoOut {
        files: multi_file.then(|| {
            files
                .iter()
                .map(|f| FileOut {
                    length: f.length,
                    path: &f.path,
                })
                .collect()
        }),
        length: (!multi_file).then(|| files.iter().map(|f| f.length).sum()),
        name,
        piece_length,
        pieces: serde_bytes::ByteBuf::from(pieces.concat()),
        private: opts.private.map(u8::from),
    };
    let torrent = TorrentOut {
        announce: opts.trackers.first().map(String::as_str),
        announce_list: (opts.trackers.len() > 1)
            .then(|| opts.trackers.iter().map(|t| [t.as_str()]).collect()),
        comment: opts.comment.as_deref(),
        created_by: opts.created_by.as_deref(),
        creation_date: opts.creation_date,
        info,
        url_list: &opts.web_seeds,
    };
    // A writer, not a second reader: serde_bencode sorts the derived structs' keys, and
    // `Metainfo::from_bytes` (the strict `crate::bencode`) reads the result back.
    serde_bencode::to_bytes(&torrent).map_err(TorrentError::Encode)
}

impl Metainfo {
    pub fn info_hash_hex(&self) -> String {
        hex::encode(self.info_hash)
    }

    pub fn piece_count(&self) -> usize {
        self.pieces.len()
    }

    /// A magnet link naming this torrent, the given trackers (`tr`) and web seeds (`ws`).
    pub fn magnet(&self, trackers: &[String], web_seeds: &[String]) -> String {
        magnet_link(&self.info_hash_hex(), &self.name, trackers, web_seeds)
    }
}

/// `magnet:?xt=urn:btih:<hex>&dn=<name>&tr=...&ws=...`, every value percent-encoded.
pub fn magnet_link(
    info_hash_hex: &str,
    name: &str,
    trackers: &[String],
    web_seeds: &[String],
) -> String {
    let mut link = format!(
        "magnet:?xt=urn:btih:{info_hash_hex}&dn={}",
        percent_encode(name)
    );
    for (key, values) in [("tr", trackers), ("ws", web_seeds)] {
        for value in values {
            link.push_str(&format!("&{key}={}", percent_encode(value)));
        }
    }
    link
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(text: &str) -> String {
    const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(text, RESERVED).to_string()
}

/// A metainfo with the same info dict (so the same info-hash) and only the given sources:
/// `announce` (one tracker) and BEP 19 `url-list`. Used to point a received torrent at this
/// node's tracker and the fleet's web seeds.
pub fn with_sources(
    metainfo: &[u8],
    tracker: &str,
    web_seeds: &[String],
) -> Result<Vec<u8>, TorrentError> {
    let parsed = Metainfo::from_bytes(metainfo)?;
    let root = crate::bencode::parse(&parsed.bytes)?;
    let info = root.get("info").ok_or(TorrentError::MissingInfo)?;
    let mut out = Vec::with_capacity(info.raw.len() + 128);
    let put_str = |out: &mut Vec<u8>, text: &str| {
        out.extend_from_slice(format!("{}:", text.len()).as_bytes());
        out.extend_from_slice(text.as_bytes());
    };
    // Keys in sorted order: announce < info < url-list.
    out.push(b'd');
    put_str(&mut out, "announce");
    put_str(&mut out, tracker);
    put_str(&mut out, "info");
    out.extend_from_slice(info.raw);
    if !web_seeds.is_empty() {
        put_str(&mut out, "url-list");
        out.push(b'l');
        for seed in web_seeds {
            put_str(&mut out, seed);
        }
        out.push(b'e');
    }
    out.push(b'e');
    Ok(out)
}

/// The metainfo reduced to its info dict, `d4:info<info>e`: the same info-hash and nothing
/// else. A received metainfo is kept and re-served in this form, so keys a sender added beside
/// the info dict (junk padding it to megabytes) go no further.
pub fn info_only(metainfo: &[u8]) -> Result<Vec<u8>, TorrentError> {
    let root = crate::bencode::parse(metainfo)?;
    let info = root.get("info").ok_or(TorrentError::MissingInfo)?;
    let mut out = Vec::with_capacity(info.raw.len() + 8);
    out.extend_from_slice(b"d4:info");
    out.extend_from_slice(info.raw);
    out.push(b'e');
    Ok(out)
}

#[cfg(test)]
mod sources_tests {
    use super::*;

    #[test]
    fn with_sources_keeps_the_info_hash_and_names_tracker_and_web_seeds() {
        let torrent = include_bytes!("../tests/vectors/legacy/lizard.torrent");
        let before = Metainfo::from_bytes(torrent).unwrap();
        let seeds = vec!["http://10.0.0.2:6880/x/".to_string()];
        let after = with_sources(torrent, "http://127.0.0.1:6969/announce", &seeds).unwrap();
        let after = Metainfo::from_bytes(&after).unwrap();
        assert_eq!(after.info_hash, before.info_hash);
        assert_eq!(
            after.trackers,
            vec!["http://127.0.0.1:6969/announce".to_string()]
        );
        assert_eq!(after.web_seeds, seeds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_piece_length_keeps_count_sane() {
        assert_eq!(auto_piece_length(1), 16 << 10);
        assert_eq!(auto_piece_length(32 << 20), 16 << 10);
        assert_eq!(auto_piece_length((32 << 20) + 1), 32 << 10);
        assert_eq!(auto_piece_length(1 << 30), 512 << 10);
        assert_eq!(auto_piece_length(1 << 40), 16 << 20);
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved_characters() {
        assert_eq!(percent_encode("a b/c?d=é"), "a%20b%2Fc%3Fd%3D%C3%A9");
    }

    #[test]
    fn magnet_encodes_name_and_urls() {
        let mut m = Metainfo::from_bytes(
            b"d4:infod6:lengthi3e4:name5:a b&c12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee",
        )
        .unwrap();
        m.info_hash = [0xab; 20];
        assert_eq!(
            m.magnet(&["http://127.0.0.1:6969/announce".into()], &["http://h/x y".into()]),
            format!(
                "magnet:?xt=urn:btih:{}&dn=a%20b%26c&tr=http%3A%2F%2F127.0.0.1%3A6969%2Fannounce&ws=http%3A%2F%2Fh%2Fx%20y",
                "ab".repeat(20)
            )
        );
    }
}
