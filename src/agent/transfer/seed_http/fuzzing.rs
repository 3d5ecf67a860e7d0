//! Entry points for the fuzz target `seed_request` (`fuzz/fuzz_targets/seed_request.rs`): the
//! request head parser, the `Range` parser and the path resolution of the web seed server,
//! reached without a socket. Not an API: nothing else may depend on it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use super::{parse_range, resolve, serve, Range};
use crate::agent::transfer::http::{parse_head, Body};

/// What the `Range` parser made of a header against a file of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// Malformed, another unit or several ranges: the whole file is served.
    Whole,
    Unsatisfiable,
    /// Inclusive, clamped to the file.
    Bytes {
        start: u64,
        end: u64,
    },
}

pub fn range(header: &[u8], size: u64) -> RangeAnswer {
    match parse_range(header, size) {
        None => RangeAnswer::Whole,
        Some(Range::Unsatisfiable) => RangeAnswer::Unsatisfiable,
        Some(Range::Bytes { start, end }) => RangeAnswer::Bytes { start, end },
    }
}

/// The file a request path resolves to under `root` (canonical), with the signed length when it
/// is a relayed download.
pub fn resolve_path(root: &Path, path: &str, relay: bool) -> Option<(PathBuf, Option<u64>)> {
    resolve(root, path, relay).map(|(path, relayed)| (path, relayed.map(|r| r.len)))
}

/// What the web seed server answers one request head with.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    /// The `Content-Length` it sends.
    pub body_len: u64,
    /// The parsed request target and `Range` header, when the head parsed.
    pub target: Option<String>,
    pub range: Option<Vec<u8>>,
}

/// Parses `head` as the server does and serves it from `root` (canonical) to an admitted
/// client; `None` while the head is incomplete. Bodies are not read.
pub fn answer(root: &Path, head: &[u8]) -> Option<Answer> {
    let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 40_000));
    let request = match parse_head(head, peer)? {
        Ok(request) => request,
        Err(status) => {
            return Some(Answer {
                status,
                headers: Vec::new(),
                body_len: 0,
                target: None,
                range: None,
            })
        }
    };
    let response = serve(root, &Default::default(), &request);
    let body_len = match &response.body {
        Body::Bytes(bytes) => bytes.len() as u64,
        Body::File { len, .. }
        | Body::Empty { len }
        | Body::Growing { len, .. }
        | Body::Blocks { len, .. } => *len,
    };
    Some(Answer {
        status: response.status,
        headers: response.headers,
        body_len,
        target: Some(request.target.clone()),
        range: request.header("Range").map(<[u8]>::to_vec),
    })
}
