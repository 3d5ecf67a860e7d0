//! Logging for the long-running commands: `tracing` to stderr, one line per event, no colour
//! unless stderr is a terminal (journald keeps the lines as they are).

use crate::error::{Error, Result};

pub fn init(filter: &str) -> Result<()> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| Error::Usage(format!("log filter `{filter}`: {e}")))?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
    Ok(())
}
