//! Update locks: what an application on the node says to hold updates (balena's update
//! locks). Anything at `agent.update_lock` holds every update, downloaded but not applied,
//! until it is gone; `agent.veto_command`, run before an apply, holds it while it exits
//! non-zero. A rollout signed with `submit --force-locks` is not held.
//!
//! The lock's directory is the application's to write (that is its purpose), so the lock is
//! anyone's file there: its presence is all that counts, whatever it is (a link or a FIFO
//! holds too, and is never followed or opened), and its first line (the holder's name, shown
//! in `status`) is read through [`crate::untrusted`], at most [`HOLDER_BYTES`], without its
//! control characters.

use crate::agent::apply::check::run_bounded;
use crate::fsutil::FileKind;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The most of a lock file that is read for its holder's name.
pub const HOLDER_BYTES: u64 = 256;
/// How long the veto command may run before it is killed (and holds the update).
pub const VETO_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a veto that held an update is asked again.
pub const VETO_EVERY: Duration = Duration::from_secs(10);

/// A lock that holds updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The holder's first line, or what the lock is when it is not a file to read.
    pub holder: String,
    /// Unix seconds of its last change (its mtime), when known.
    pub since: Option<u64>,
}

/// Whether something at `path` holds updates, and who; `None`: nothing there.
pub fn held(path: &Path) -> Option<Held> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        // Unreadable (a directory above it without search permission for root is hardly
        // possible, but an I/O error is): it may well be there, so it holds.
        Err(e) => {
            return Some(Held {
                holder: format!("cannot tell ({e})"),
                since: None,
            })
        }
    };
    let since = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    let kind = FileKind::of(&meta.file_type());
    let holder = if kind == FileKind::Regular {
        match crate::untrusted::read(path, HOLDER_BYTES) {
            Ok(bytes) => first_line(&bytes),
            // Larger than a name, or a hard link: holds, unread.
            Err(_) => "unnamed".to_string(),
        }
    } else {
        format!("a {}, not read", kind.name())
    };
    Some(Held { holder, since })
}

/// The first line of `bytes`, printable, at most 80 characters; `unnamed` when empty.
fn first_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let line: String = text
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(80)
        .collect();
    let line = line.trim().to_string();
    if line.is_empty() {
        "unnamed".to_string()
    } else {
        line
    }
}

impl Held {
    /// `held by the update lock PATH (HOLDER, for 3 min)`: the reason a waiting record shows.
    /// The age is in whole minutes, so the record changes at most once a minute.
    pub fn reason(&self, path: &Path, now: u64) -> String {
        let age = match self.since {
            Some(since) => format!(
                ", for {} min since {} UTC",
                now.saturating_sub(since) / 60,
                crate::civil::utc(since)
            ),
            None => String::new(),
        };
        format!(
            "held by the update lock {} ({}{age}); `p2pu submit --force-locks` overrides it",
            path.display(),
            self.holder
        )
    }
}

/// Runs the veto command for an update; `Some(reason)` when it holds it.
pub fn vetoed(argv: &[String], env: &[(&str, String)]) -> Option<String> {
    if argv.is_empty() {
        return None;
    }
    let result = run_bounded("veto command", "30 s", argv, VETO_TIMEOUT, env);
    if result.passed {
        return None;
    }
    let said: String = result
        .output
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(160)
        .collect();
    let said = if said.is_empty() {
        String::new()
    } else {
        format!(": {}", said.trim())
    };
    Some(format!(
        "held by agent.veto_command: {}{said}; `p2pu submit --force-locks` overrides it",
        result.summary
    ))
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lock's directory is the application's: whatever is at the path holds, nothing
    /// there is followed or waited on, and its holder's name reaches `status` bounded and
    /// without terminal escapes.
    #[test]
    fn anything_at_the_lock_path_holds_and_only_a_files_first_line_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("update.lock");
        assert_eq!(held(&lock), None);
        std::fs::write(&lock, "backup-job pid 42\nmore\n").unwrap();
        let h = held(&lock).unwrap();
        assert_eq!(h.holder, "backup-job pid 42");
        assert!(h.since.is_some());
        std::fs::remove_file(&lock).unwrap();

        std::fs::write(&lock, b"\x1b]0;owned\x07evil\n").unwrap();
        assert_eq!(held(&lock).unwrap().holder, "]0;ownedevil");
        std::fs::remove_file(&lock).unwrap();

        std::os::unix::fs::symlink("/etc/shadow", &lock).unwrap();
        assert_eq!(held(&lock).unwrap().holder, "a symbolic link, not read");
        std::fs::remove_file(&lock).unwrap();

        nix::unistd::mkfifo(&lock, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(held(&lock).unwrap().holder, "a FIFO, not read");
        std::fs::remove_file(&lock).unwrap();

        let big = std::fs::File::create(&lock).unwrap();
        big.set_len(1 << 40).unwrap();
        assert_eq!(held(&lock).unwrap().holder, "unnamed");
        let reason = held(&lock).unwrap().reason(&lock, now_secs() + 180);
        assert!(reason.contains("(unnamed, for 3 min since "), "{reason}");
    }

    #[test]
    fn a_veto_holds_with_what_it_said_and_a_pass_does_not() {
        let sh = |script: &str| vec!["/bin/sh".to_string(), "-c".into(), script.into()];
        assert_eq!(vetoed(&sh("exit 0"), &[]), None);
        assert_eq!(vetoed(&[], &[]), None);
        let why = vetoed(
            &sh("echo \"busy with $P2PU_NAME\"; exit 3"),
            &[("P2PU_NAME", "site.pp".into())],
        )
        .unwrap();
        assert!(
            why.starts_with(
                "held by agent.veto_command: veto command `/bin/sh` exited 3: busy with site.pp"
            ),
            "{why}"
        );
    }
}
