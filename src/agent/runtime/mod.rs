//! The agent's own loop: the spool it is woken by, intake's decisions, the announcements
//! waiting for their plans, the state it records, the supervised serving child, catch-up and
//! what starts it early (`sync`), the heartbeat, retries, the membership it reads and the
//! status it reports, and an operator's verdict on an update (`mark`).
//! Owns [`RuntimeError`], which the command layer wraps like every layer's error.

pub mod catchup;
pub mod clock;
pub mod health;
pub mod heartbeat;
pub mod intake;
pub mod locks;
pub mod mark;
pub mod peers;
pub mod pending;
pub mod rate;
pub mod retry;
pub mod run;
/// The agent's inbox, which the event handler and the NAT client write (it lives below them all).
pub use crate::spool;
pub mod state;
pub mod status;
pub mod supervise;
pub mod sync;

use std::path::PathBuf;

/// A failure of the agent's loop, naming the spool or state file, or the update, it was about;
/// a layer the loop drives (durable writes, Serf, the trusted keys, the serving child) keeps
/// its own error, which already names its file or command.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A file or directory of the spool or the state dir.
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing state {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("internal error (a bug in p2pu): encoding state {}", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("internal error (a bug in p2pu): no record of {name} seq {seq}")]
    NoRecord { name: String, seq: u64 },
    #[error("internal error (a bug in p2pu): a change to the record of {name} seq {seq} touched what the intake verified ({field}); nothing stored")]
    VerifiedChanged {
        name: String,
        seq: u64,
        field: &'static str,
    },
    #[error("internal error (a bug in p2pu): the spool watcher of {} stopped", dir.display())]
    WatcherStopped { dir: PathBuf },
    #[error(transparent)]
    Write(#[from] crate::fsutil::FsError),
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolError),
    #[error(transparent)]
    Gossip(#[from] crate::engines::SerfError),
    #[error(transparent)]
    Keys(#[from] crate::keys::KeyError),
    #[error(transparent)]
    KeyFiles(#[from] crate::keys::KeyFileError),
    #[error(transparent)]
    Trust(#[from] crate::trust::TrustError),
    #[error(transparent)]
    Serve(#[from] supervise::ServeError),
}

impl crate::error::LayerError for RuntimeError {}

impl RuntimeError {
    /// Wraps an I/O error with what was being done and to which path.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> RuntimeError {
        let path = path.into();
        move |source| RuntimeError::Io {
            action,
            path,
            source,
        }
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
