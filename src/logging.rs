//! Logging for the long-running commands: `tracing` to stderr, one line per event, no colour
//! unless stderr is a terminal. Under systemd, where stderr is the journal's stream, each line
//! starts with its syslog priority (`<4>` for a warning, sd-daemon(3)) and carries no time or
//! level of its own: journald stamps it, files it under that priority (`journalctl -p warning`),
//! and the line holds one timestamp, not two.

use crate::error::{Error, Result};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;

pub fn init(filter: &str) -> Result<()> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| Error::Usage(format!("log filter `{filter}`: {e}")))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if stderr_is_journal() {
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
