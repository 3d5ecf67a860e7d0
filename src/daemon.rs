//! What every long-running p2pu process (agent, agent-serve, nat-client, proxy) sets up the
//! same way: logging, and stopping on signals. One log setting (`--log`, or `P2PU_LOG`) for
//! all of them; SIGTERM or SIGINT ask for a clean stop, and a second one exits at once, so a
//! stuck shutdown never needs SIGKILL.
//!
//! Logs are `tracing` to stderr, one line per event, no colour unless stderr is a terminal.
//! Under systemd, where stderr is the journal's stream, each line starts with its syslog
//! priority (`<4>` for a warning, sd-daemon(3)) and carries no time or level of its own:
//! journald stamps it, files it under that priority (`journalctl -p warning`), and the line
//! holds one timestamp, not two. Owns [`DaemonError`], what that set-up fails with.

/// Setting up a daemon failed: its log filter, or its signal handlers.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("log filter `{filter}`")]
    LogFilter {
        filter: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("installing a handler for signal {signal}")]
    Signal {
        signal: i32,
        #[source]
        source: std::io::Error,
    },
}

impl crate::error::LayerError for DaemonError {}

type Result<T> = std::result::Result<T, DaemonError>;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;

/// The log filter every daemon takes, in tracing's env-filter syntax.
pub const DEFAULT_LOG: &str = "info";

/// Logging as the module header says; a second call is a no-op.
pub fn init_logging(filter: &str) -> Result<()> {
    init_logging_to(filter, logs_to_journal())
}

/// Whether this process's stderr is the journal's stream (see the module header).
pub fn logs_to_journal() -> bool {
    stderr_is_journal()
}

/// Logging in the journal's format when `journal`: for a child that inherited the journal
/// stream as its stderr but cannot see that for itself (the agent's serving child runs with an
/// empty environment under another uid), so its parent tells it.
pub fn init_logging_to(filter: &str, journal: bool) -> Result<()> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(filter).map_err(|source| {
        DaemonError::LogFilter {
            filter: filter.to_string(),
            source,
        }
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if journal {
        let format = tracing_subscriber::fmt::format()
            .with_target(false)
            .with_level(false)
            .without_time();
        let _ = builder.event_format(Journald(format)).try_init();
    } else {
        let _ = builder.with_target(false).try_init();
    }
    Ok(())
}

/// systemd names the journal stream it connected in `JOURNAL_STREAM` (`<dev>:<inode>`);
/// stderr is that stream unless it was redirected since (systemd.exec(5)).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream.to_string_lossy() == format!("{}:{}", stderr.dev(), stderr.ino())
}

/// Prefixes each event with its syslog priority for journald.
struct Journald<F>(F);

impl<S, N, F> FormatEvent<S, N> for Journald<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// syslog(3) priorities: err, warning, info, debug.
fn priority(level: &tracing::Level) -> u8 {
    match *level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    }
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
            .map_err(|source| DaemonError::Signal { signal, source })?;
    }
    Ok(STOP.get_or_init(|| stop).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(priority(&tracing::Level::ERROR), 3);
        assert_eq!(priority(&tracing::Level::WARN), 4);
        assert_eq!(priority(&tracing::Level::INFO), 6);
        assert_eq!(priority(&tracing::Level::DEBUG), 7);
        assert_eq!(priority(&tracing::Level::TRACE), 7);
    }

    #[test]
    fn stderr_is_not_the_journal_without_journal_stream() {
        // The test runner's stderr is no journal stream whatever JOURNAL_STREAM says.
        if std::env::var_os("JOURNAL_STREAM").is_none() {
            assert!(!stderr_is_journal());
        }
    }
}
