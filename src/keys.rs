//! TODO: Ed25519 signing keys, key ids and the trusted-keys directory.

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not implemented")]
    Todo,
}
