//! The library's error type: one variant per failure, each carrying the path, field, command or
//! value an operator needs to fix it. Printed once, at the edge, as a one-line cause chain.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("rendering template {template}")]
    TemplateRender {
        template: String,
        #[source]
        source: tera::Error,
    },
    #[error("`{command}` {status}{}", stderr_suffix(stderr))]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("running `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Torrent(#[from] crate::formats::torrent::TorrentError),
    #[error(transparent)]
    Bencode(#[from] crate::formats::bencode::BencodeError),
    #[error(transparent)]
    Announcement(#[from] crate::formats::announcement::AnnouncementError),
    #[error(transparent)]
    Legacy(#[from] crate::formats::legacy::LegacyError),
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    #[error(transparent)]
    EngineTransmission(#[from] crate::engines::transmission::TransmissionError),
    #[error(transparent)]
    EngineSerf(#[from] crate::engines::serf::SerfError),
    #[error(transparent)]
    EnginePuppet(#[from] crate::engines::puppet::PuppetError),
    #[error(transparent)]
    NotInstalled(#[from] crate::engines::NotInstalled),
    #[error("binding the {service} on {addr}")]
    Bind {
        service: &'static str,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Extract(#[from] crate::agent::extract::ExtractError),
    #[error(transparent)]
    Kind(#[from] crate::agent::kind::KindError),
    #[error(transparent)]
    Lab(#[from] crate::lab::LabError),
    #[error(transparent)]
    Serve(#[from] crate::agent::supervise::ServeError),
    #[error(transparent)]
    Control(#[from] crate::nat::control::ControlError),
    #[error("{0}")]
    Usage(String),
    #[error("internal error (a bug in p2pu): {0}")]
    Internal(String),
}

fn stderr_suffix(stderr: &str) -> String {
    let trimmed = stderr.trim();
    if trimmed.is_empty() {
        String::new()
    } else {
        format!(": {}", trimmed.lines().collect::<Vec<_>>().join(" | "))
    }
}

impl Error {
    /// Wraps an I/O error with what was being done and to which path.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}

/// Formats an error and its sources as one line: `outer: inner: innermost`.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Transparent wrappers repeat their inner message; print each cause once.
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}
