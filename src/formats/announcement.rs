//! TODO: owned by the formats work.

#[derive(Debug, thiserror::Error)]
pub enum AnnouncementError {
    #[error("not implemented")]
    Todo,
}
