//! TODO: owned by the formats work.

#[derive(Debug, thiserror::Error)]
pub enum BencodeError {
    #[error("not implemented")]
    Todo,
}
