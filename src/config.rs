//! TODO: site.toml

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("not implemented")]
    Todo,
}
