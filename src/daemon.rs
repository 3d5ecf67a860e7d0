//! What every long-running p2pu process (agent, agent-serve, nat-client, proxy) sets up the
//! same way: logging, and stopping on signals. One log setting (`--log`, or `P2PU_LOG`) for
//! all of them; SIGTERM or SIGINT ask for a clean stop, and a second one exits at once, so a
//! stuck shutdown never needs SIGKILL.

use crate::error::{Error, Result};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

/// The log filter every daemon takes, in tracing's env-filter syntax.
pub const DEFAULT_LOG: &str = "info";

/// `tracing` to stderr, one line per event, no colour unless stderr is a terminal (journald
/// keeps the lines as they are). A second call is a no-op.
pub fn init_logging(filter: &str) -> Result<()> {
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

static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// The flag SIGTERM and SIGINT set, for the daemon's loops to end cleanly on; with the flag
/// already set, the signal exits the process at once (status 1). Installed once per process.
pub fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    if let Some(stop) = STOP.get() {
        return Ok(stop.clone());
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // Registered first, so it sees the flag as the earlier signal left it.
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())
            .and_then(|_| signal_hook::flag::register(signal, stop.clone()))
            .map_err(Error::io(
                "installing a handler for signal",
                format!("{signal}"),
            ))?;
    }
    Ok(STOP.get_or_init(|| stop).clone())
}
