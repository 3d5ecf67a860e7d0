//! Reading an existing .torrent: canonical bencode, a well-formed info dict whose pieces match
//! its length, and file names that are safe to create on disk.

use super::{FileEntry, Metainfo, TorrentError};
use crate::bencode::{self, Value};
use sha1::{Digest, Sha1};
use std::collections::BTreeSet;

impl Metainfo {
    /// Parses and validates a .torrent: canonical bencode, a well-formed info dict whose piece
    /// count matches its length, and file names that are safe to create on disk.
    pub fn from_bytes(bytes: &[u8]) -> Result<Metainfo, TorrentError> {
        let root = bencode::parse(bytes)?;
        if !root.is_dict() {
            return Err(field_error("(top level)", "is not a dict"));
        }
        let info_value = required(&root, "info", "")?;
        let info = Info::parse(info_value)?;
        let mut trackers: Vec<String> = Vec::new();
        if let Some(v) = root.get("announce") {
            trackers.push(text(v, "announce")?);
        }
        if let Some(tiers) = root.get("announce-list") {
            for (i, tier) in list(tiers, "announce-list")?.iter().enumerate() {
                for (j, url) in list(tier, &format!("announce-list[{i}]"))?
                    .iter()
                    .enumerate()
                {
                    let url = text(url, &format!("announce-list[{i}][{j}]"))?;
                    if !trackers.contains(&url) {
                        trackers.push(url);
                    }
                }
            }
        }
        let web_seeds = match root.get("url-list") {
            None => Vec::new(),
            Some(v) if v.as_bytes().is_some() => vec![text(v, "url-list")?],
            Some(v) => list(v, "url-list")?
                .iter()
                .enumerate()
                .map(|(i, u)| text(u, &format!("url-list[{i}]")))
                .collect::<Result<_, _>>()?,
        };
        let optional_text = |key: &str| root.get(key).map(|v| text(v, key)).transpose();
        Ok(Metainfo {
            bytes: bytes.to_vec(),
            info_hash: Sha1::digest(info_value.raw).into(),
            name: info.name,
            total_length: info.total_length,
            piece_length: info.piece_length,
            files: info.files,
            multi_file: info.multi_file,
            pieces: info.pieces,
            private: info.private,
            trackers,
            web_seeds,
            comment: optional_text("comment")?,
            created_by: optional_text("created by")?,
            creation_date: root
                .get("creation date")
                .map(|v| int(v, "creation date"))
                .transpose()?,
        })
    }
}

/// The total content length an info dict (its exact bencoding, e.g. fetched by magnet)
/// describes, after the same validation as [`Metainfo::from_bytes`].
pub fn info_total_length(info: &[u8]) -> Result<u64, TorrentError> {
    Ok(Info::parse(&bencode::parse(info)?)?.total_length)
}

struct Info {
    name: String,
    piece_length: u64,
    total_length: u64,
    files: Vec<FileEntry>,
    multi_file: bool,
    pieces: Vec<[u8; 20]>,
    private: Option<bool>,
}

impl Info {
    fn parse(info: &Value<'_>) -> Result<Info, TorrentError> {
        if !info.is_dict() {
            return Err(field_error("info", "is not a dict"));
        }
        let name = text(required(info, "name", "info.")?, "info.name")?;
        check_component(&name, "info.name")?;
        let piece_length = length(
            required(info, "piece length", "info.")?,
            "info.piece length",
        )?;
        if piece_length == 0 {
            return Err(field_error("info.piece length", "is 0"));
        }
        let raw_pieces = required(info, "pieces", "info.")?
            .as_bytes()
            .ok_or_else(|| field_error("info.pieces", "is not a byte string"))?;
        if raw_pieces.len() % 20 != 0 {
            return Err(field_error(
                "info.pieces",
                format!("has {} bytes, not a multiple of 20", raw_pieces.len()),
            ));
        }
        let pieces: Vec<[u8; 20]> = raw_pieces
            .chunks_exact(20)
            .map(|c| c.try_into().unwrap_or([0; 20]))
            .collect();
        let (files, multi_file) = match (info.get("length"), info.get("files")) {
            (Some(l), None) => {
                let length = length(l, "info.length")?;
                (
                    vec![FileEntry {
                        path: vec![name.clone()],
                        length,
                    }],
                    false,
                )
            }
            (None, Some(list_value)) => (parse_files(list_value)?, true),
            (Some(_), Some(_)) => return Err(field_error("info", "has both `length` and `files`")),
            (None, None) => return Err(field_error("info", "has neither `length` nor `files`")),
        };
        let total_length = files
            .iter()
            .try_fold(0u64, |sum, f| sum.checked_add(f.length))
            .ok_or_else(|| field_error("info.files", "lengths add up past 2^64"))?;
        let want = total_length.div_ceil(piece_length);
        if want != pieces.len() as u64 {
            return Err(field_error(
                "info.pieces",
                format!(
                    "has {} hashes; {total_length} bytes in pieces of {piece_length} need {want}",
                    pieces.len()
                ),
            ));
        }
        let private = match info.get("private") {
            None => None,
            Some(v) => match int(v, "info.private")? {
                0 => Some(false),
                1 => Some(true),
                other => {
                    return Err(field_error(
                        "info.private",
                        format!("is {other}, not 0 or 1"),
                    ))
                }
            },
        };
        Ok(Info {
            name,
            piece_length,
            total_length,
            files,
            multi_file,
            pieces,
            private,
        })
    }
}

fn parse_files(value: &Value<'_>) -> Result<Vec<FileEntry>, TorrentError> {
    let entries = list(value, "info.files")?;
    if entries.is_empty() {
        return Err(field_error("info.files", "is empty"));
    }
    let mut files = Vec::with_capacity(entries.len());
    let mut seen = BTreeSet::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("info.files[{i}]");
        let length = length(
            required(entry, "length", &format!("{at}."))?,
            &format!("{at}.length"),
        )?;
        let components = list(
            required(entry, "path", &format!("{at}."))?,
            &format!("{at}.path"),
        )?;
        if components.is_empty() {
            return Err(field_error(&format!("{at}.path"), "is empty"));
        }
        let mut path = Vec::with_capacity(components.len());
        for (j, c) in components.iter().enumerate() {
            let name = format!("{at}.path[{j}]");
            let component = text(c, &name)?;
            check_component(&component, &name)?;
            path.push(component);
        }
        if !seen.insert(path.clone()) {
            return Err(field_error(
                &format!("{at}.path"),
                "repeats an earlier file",
            ));
        }
        files.push(FileEntry { path, length });
    }
    // A file that is also another file's directory cannot be created on disk.
    for path in &seen {
        for depth in 1..path.len() {
            let dir = path.get(..depth).unwrap_or_default();
            if seen.contains(dir) {
                return Err(field_error(
                    "info.files",
                    format!("{:?} is both a file and a directory", dir.join("/")),
                ));
            }
        }
    }
    Ok(files)
}

/// A name that is safe as one path component on disk.
pub fn check_component(name: &str, field: &str) -> Result<(), TorrentError> {
    let problem = if name.is_empty() {
        "is empty"
    } else if name == "." || name == ".." {
        "is `.` or `..`"
    } else if name.contains('/') {
        "contains `/`"
    } else if name.contains('\0') {
        "contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(field_error(field, problem))
}

fn required<'v, 'a>(
    dict: &'v Value<'a>,
    key: &str,
    prefix: &str,
) -> Result<&'v Value<'a>, TorrentError> {
    if !dict.is_dict() {
        return Err(field_error(prefix.trim_end_matches('.'), "is not a dict"));
    }
    dict.get(key)
        .ok_or_else(|| field_error(&format!("{prefix}{key}"), "is missing"))
}

fn text(value: &Value<'_>, field: &str) -> Result<String, TorrentError> {
    let bytes = value
        .as_bytes()
        .ok_or_else(|| field_error(field, "is not a string"))?;
    String::from_utf8(bytes.to_vec()).map_err(|_| field_error(field, "is not valid UTF-8"))
}

fn int(value: &Value<'_>, field: &str) -> Result<i64, TorrentError> {
    value
        .as_int()
        .ok_or_else(|| field_error(field, "is not an integer"))
}

fn length(value: &Value<'_>, field: &str) -> Result<u64, TorrentError> {
    let n = int(value, field)?;
    u64::try_from(n).map_err(|_| field_error(field, format!("is negative ({n})")))
}

fn list<'v, 'a>(value: &'v Value<'a>, field: &str) -> Result<&'v [Value<'a>], TorrentError> {
    value
        .as_list()
        .ok_or_else(|| field_error(field, "is not a list"))
}

fn field_error(field: &str, problem: impl Into<String>) -> TorrentError {
    TorrentError::Field {
        field: field.to_string(),
        problem: problem.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece_hashes(content: &[u8], piece: usize) -> Vec<[u8; 20]> {
        content
            .chunks(piece)
            .map(|c| Sha1::digest(c).into())
            .collect()
    }

    fn torrent(info: &str) -> Vec<u8> {
        format!("d4:info{info}e").into_bytes()
    }

    fn rejects(info: &str, want: &str) {
        let err = Metainfo::from_bytes(&torrent(info)).unwrap_err();
        assert!(err.to_string().contains(want), "{err} lacks {want}");
    }

    #[test]
    fn from_bytes_validates_the_info_dict() {
        let ok = "d6:lengthi3e4:name1:x12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
        assert_eq!(Metainfo::from_bytes(&torrent(ok)).unwrap().total_length, 3);
        rejects(
            "d6:lengthi3e4:name1:x12:piece lengthi16384e6:pieces0:e",
            "need 1",
        );
        rejects(
            "d6:lengthi3e4:name2:..12:piece lengthi16384e6:pieces0:e",
            "`info.name` is `.`",
        );
        rejects(
            "d6:lengthi-3e4:name1:x12:piece lengthi1e6:pieces0:e",
            "negative",
        );
        rejects("d6:lengthi0e4:name1:x12:piece lengthi0e6:pieces0:e", "is 0");
        rejects("d4:name1:x12:piece lengthi1e6:pieces0:e", "neither");
        rejects(
            "d5:filesld6:lengthi1e4:pathl2:..eee4:name1:x12:piece lengthi1e6:pieces20:aaaaaaaaaaaaaaaaaaaae",
            "info.files[0].path[0]",
        );
        rejects(
            "d5:filesld6:lengthi0e4:pathl1:aeed6:lengthi0e4:pathl1:a1:beee4:name1:x12:piece lengthi1e6:pieces0:e",
            "both a file and a directory",
        );
        rejects(
            "d6:lengthi0e4:name1:x12:piece lengthi1e6:pieces0:7:privatei2ee",
            "not 0 or 1",
        );
        let err = Metainfo::from_bytes(b"d4:infod4:name1:x6:lengthi0eee").unwrap_err();
        assert!(matches!(err, TorrentError::Bencode(_)), "{err}");
    }

    /// The prototype's torrent, made by Transmission 2.84, must read with the same info-hash
    /// transmission-show prints and piece hashes of its content.
    #[test]
    fn reads_the_legacy_vector() {
        let bytes = include_bytes!("../../tests/vectors/legacy/lizard.torrent");
        let content = include_bytes!("../../tests/vectors/legacy/lizard.jpg");
        let m = Metainfo::from_bytes(bytes).unwrap();
        assert_eq!(
            m.info_hash_hex(),
            "216c31a26f6fcbcd8feabd9bc4d869a9233eac60"
        );
        assert_eq!(m.private, Some(false));
        assert_eq!(m.pieces, piece_hashes(content, 32768));
    }
}
