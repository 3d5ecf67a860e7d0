//! How fetching an update fails, shared by everything that moves or checks its bytes
//! (`fetch`, `relay`, `verified`, the download dir's marks), so none of them imports another
//! for its error. Its own module, reached directly: reached through `fetch`'s re-export it tied
//! the four into one circle (issue 26).

use crate::agent::transfer::pace::PaceError;
use crate::engines::TransmissionError;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("the torrent's info dictionary says {got} bytes but the announcement signed {want}")]
    LengthMismatch { want: u64, got: u64 },
    #[error("payload {path} is {got} bytes, the announcement signed {want}")]
    PayloadLength { path: PathBuf, want: u64, got: u64 },
    #[error("payload {path} has SHA-256 {got}, the announcement signed {want}")]
    Sha256Mismatch {
        path: PathBuf,
        want: String,
        got: String,
    },
    #[error("reading payload {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The payload in the download dir is not one to read (a link, a FIFO, a hard link).
    #[error(transparent)]
    Untrusted(crate::untrusted::UntrustedError),
    #[error("Transmission reports a local error for {hash}: {message}")]
    Local { hash: String, message: String },
    #[error("Transmission")]
    Engine(#[from] TransmissionError),
    #[error("the agent is stopping")]
    Stopping,
    #[error("the metainfo of {hash} holds several files; p2pu sends one")]
    MultiFile { hash: String },
    #[error("{name}: {got} of {want} bytes came over HTTP ({failures})")]
    Http {
        name: String,
        got: u64,
        want: u64,
        /// Each source tried and why it was left.
        failures: String,
    },
    #[error(transparent)]
    Pace(PaceError),
    #[error("{addr} offers a metainfo of {got} bytes; at most {max} are read for {pieces} pieces")]
    MetainfoTooLarge {
        addr: SocketAddr,
        got: u64,
        max: u64,
        pieces: u64,
    },
    #[error("Transmission had not finished {hash} when the fetch's deadline of {budget:?} passed ({left} of {want} bytes missing, {peers} peer(s) connected){}", http.as_deref().map(|h| format!("; over HTTP before: {h}")).unwrap_or_default())]
    TorrentDeadline {
        hash: String,
        budget: Duration,
        left: u64,
        want: u64,
        peers: u64,
        /// Why the HTTP fetch before it failed, when there was one.
        http: Option<String>,
    },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the verified-copy directory {} is {problem}; it must be root's own, mode 0700", path.display())]
    UnsafeStaging { path: PathBuf, problem: String },
    #[error("payload {} differs from the signed torrent at piece {piece}", path.display())]
    PieceMismatch { path: PathBuf, piece: usize },
    #[error("piece {piece} of {} as received does not match the signed torrent", path.display())]
    BadPiece { path: PathBuf, piece: u64 },
    #[error(transparent)]
    Get(#[from] crate::agent::transfer::http_get::GetError),
    #[error("{name}: the announcement signs no SHA-256 and no torrent came with it; nothing to check the payload against")]
    Unverifiable { name: String },
}

impl From<PaceError> for FetchError {
    fn from(e: PaceError) -> FetchError {
        match e {
            PaceError::Stopping => FetchError::Stopping,
            e => FetchError::Pace(e),
        }
    }
}
