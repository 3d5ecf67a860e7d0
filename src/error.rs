//! The library's error type: one variant per failure, each carrying the path, field, command or
//! value an operator needs to fix it. Printed once, at the edge, as a one-line cause chain.
//! It imports nothing from the crate: each layer's own error type joins it through
//! [`LayerError`], declared beside that type.

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
    #[error("binding the {service} on {addr}")]
    Bind {
        service: &'static str,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A failure a layer owns (config, formats, keys, engines, agent, lab, nat): each layer
    /// defines its error and marks it [`LayerError`], so this file imports none of them and
    /// nothing that imports it is imported back.
    #[error(transparent)]
    Layer(Box<dyn std::error::Error + Send + Sync + 'static>),
    #[error("{0}")]
    Usage(String),
    /// A flag's value is wrong (`--waves 1,50%`): a usage error like clap's own, exit 2.
    #[error("{0}")]
    BadArgument(String),
    #[error("internal error (a bug in p2pu): {0}")]
    Internal(String),
}

/// An error type owned by one layer that converts into [`Error`] with `?`. The layer says so
/// where it defines the type, so the conversion lives with it and not here.
pub trait LayerError: std::error::Error + Send + Sync + 'static {}

impl<E: LayerError> From<E> for Error {
    fn from(error: E) -> Error {
        Error::Layer(Box::new(error))
    }
}

impl Error {
    /// The layer's error this wraps, if it is of type `E`.
    pub fn layer<E: LayerError>(&self) -> Option<&E> {
        match self {
            Error::Layer(inner) => inner.downcast_ref::<E>(),
            _ => None,
        }
    }
}

/// `: stderr | lines` trimmed, or nothing when the command printed nothing.
pub fn stderr_suffix(stderr: &str) -> String {
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

/// A file operation that failed: what was being done, to which path, and why. The one shape of
/// a layer's `Io` failure, so a layer's error holds it (`#[error(transparent)] Io(#[from]
/// IoError)`) instead of writing the variant and its constructor out again.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}", path.display())]
pub struct IoError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl IoError {
    /// Wraps an I/O error with what was being done and to which path (for `map_err`).
    pub fn on(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> IoError {
        let path = path.into();
        move |source| IoError {
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
