//! TODO: owned by the formats work.

#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    #[error("not implemented")]
    Todo,
}
