//! TODO: owned by the formats work.

#[derive(Debug, thiserror::Error)]
pub enum TorrentError {
    #[error("not implemented")]
    Todo,
}
