//! Retrying a failed fetch or apply before it counts as failed: how long to wait
//! ([`RetryPolicy`], from `[agent] retries`, `retry_backoff_secs`, `retry_backoff_max_secs`),
//! what an ended attempt leaves in its record ([`finish_attempt`]), and the retries waiting for
//! their time ([`Retries`]).
//!
//! The count of attempts and the next attempt's time live in the record, not in memory, so a
//! restarted agent waits out the same backoff and never gets more attempts than the policy
//! gives. A retry whose time comes is dropped when its record was settled meanwhile (applied,
//! failed) and recorded failed when a newer seq of its name was accepted since: retrying it
//! then would put older configuration over newer.

use super::intake::Accepted;
use super::state::{Lineage, Record, StateStore, Status};
use super::Result;
use crate::config::AgentSection;
use std::sync::Mutex;
use std::time::Duration;

/// How often, and after how long, a failed attempt is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first; 0 never retries.
    pub retries: u32,
    /// The wait after the first failure; doubled after each further one.
    pub backoff: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl RetryPolicy {
    pub fn from_config(agent: &AgentSection) -> RetryPolicy {
        RetryPolicy {
            retries: agent.retries,
            backoff: Duration::from_secs(agent.retry_backoff_secs),
            max: Duration::from_secs(agent.retry_backoff_max_secs),
        }
    }

    /// The wait after `failed` failed attempts (1: the first): the backoff doubled per further
    /// failure, never above the cap.
    pub fn delay(&self, failed: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(31);
        self.backoff.saturating_mul(1u32 << doublings).min(self.max)
    }
}

/// How one attempt at an update ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Applied {
        summary: String,
        output: String,
    },
    /// `reason` is the cause an operator reads first (Puppet's first `Error:` line, or why the
    /// fetch failed); `output` the engine's whole (trimmed) output, when there is one.
    /// `retry`: whether another attempt could end otherwise. A refusal of the verified bytes
    /// themselves (a hostile archive) would only be refused again.
    Failed {
        reason: String,
        output: Option<String>,
        retry: bool,
    },
    /// The disk was full (ENOSPC anywhere in the cause): not the update's fault, so it is
    /// tried again every [`SPACE_RECHECK`] until space is freed, without counting an attempt.
    /// Counted, the retries would be spent within minutes and an operator who freed space an
    /// hour later would find the update `failed` for good.
    NoSpace {
        reason: String,
    },
}

/// How often an update that failed for want of space is tried again: cheap, since each try
/// first asks the file systems ([`short_of_space`]) before it fetches anything.
pub const SPACE_RECHECK: Duration = Duration::from_secs(5);

/// Why a payload of `len` bytes cannot fit now in one of `dirs` (the download dir, the state
/// dir's verified copy), if it cannot: checked before each fetch, so an update waiting for
/// space costs a `statvfs` per [`SPACE_RECHECK`], not a download that fails at its end. A dir
/// that cannot be asked is left to the fetch.
pub fn short_of_space(dirs: &[&std::path::Path], len: u64) -> Option<String> {
    dirs.iter().find_map(|dir| {
        let stat = nix::sys::statvfs::statvfs(*dir).ok()?;
        let free = (stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64);
        (free < len).then(|| {
            format!(
                "No space left on device: {} has {free} bytes free, the payload needs {len}",
                dir.display()
            )
        })
    })
}

/// Whether `err` failed for want of space: an I/O error ENOSPC (or EDQUOT) anywhere in its
/// chain, or the text an engine reports it with (Transmission's `errorString`, Puppet's
/// output), "No space left on device" / "Disk quota exceeded".
pub fn out_of_space(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.raw_os_error(),
                Some(libc_enospc::ENOSPC | libc_enospc::EDQUOT)
            ) || io.kind() == std::io::ErrorKind::StorageFull
            {
                return true;
            }
        }
        cause = e.source();
    }
    text_says_out_of_space(&crate::error::chain(err))
}

/// Whether an engine's message says the disk was full.
pub fn text_says_out_of_space(text: &str) -> bool {
    text.contains("No space left on device") || text.contains("Disk quota exceeded")
}

/// The errno values, without a dependency for two numbers (Linux's, on every architecture
/// p2pu runs on).
mod libc_enospc {
    pub const ENOSPC: i32 = 28;
    pub const EDQUOT: i32 = 122;
}

/// Records an ended attempt of (`name`, `seq`): `applied`; `retrying` with the next attempt's
/// time while the policy has attempts left; else `failed`. Each ended attempt counts.
pub fn finish_attempt(
    store: &StateStore,
    policy: &RetryPolicy,
    name: &str,
    seq: u64,
    ended: Ended,
    now_secs: u64,
) -> Result<Record> {
    store.update(name, seq, |record| {
        if !matches!(ended, Ended::NoSpace { .. }) {
            record.attempts = record.attempts.saturating_add(1);
        }
        record.updated_at = now_secs;
        record.next_attempt_at = None;
        match ended {
            Ended::NoSpace { reason } => {
                record.reason = Some(format!(
                    "out of space, tried again every {} s until space is freed (not counted as an attempt): {reason}",
                    SPACE_RECHECK.as_secs()
                ));
                record.status = Status::Retrying;
                record.next_attempt_at = Some(now_secs.saturating_add(SPACE_RECHECK.as_secs()));
            }
            Ended::Applied { summary, output } => {
                record.status = Status::Applied;
                record.reason = Some(summary);
                record.output = Some(output);
            }
            Ended::Failed {
                reason,
                output,
                retry,
            } => {
                record.reason = Some(reason);
                record.output = output;
                if retry && record.attempts <= policy.retries {
                    let wait = policy.delay(record.attempts).as_secs();
                    record.status = Status::Retrying;
                    record.next_attempt_at = Some(now_secs.saturating_add(wait));
                } else {
                    record.status = Status::Failed;
                }
            }
        }
    })
}

/// The retries waiting for their time, in memory; their records say the same on disk.
#[derive(Default)]
pub struct Retries {
    waiting: Mutex<Vec<(u64, Accepted)>>,
}

impl Retries {
    /// Tries `update` again at `at_secs` (seconds since the epoch).
    pub fn schedule(&self, at_secs: u64, update: Accepted) {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((at_secs, update));
    }

    /// How many are waiting.
    pub fn len(&self) -> usize {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The retries due at `now_secs` that are still worth an attempt, each record set back to
    /// `pending`; the others leave the list (see the module header).
    pub fn take_due(&self, store: &StateStore, now_secs: u64) -> Result<Vec<Accepted>> {
        let due: Vec<Accepted> = {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            let (due, later) = std::mem::take(&mut *waiting)
                .into_iter()
                .partition(|(at, _)| *at <= now_secs);
            *waiting = later;
            due.into_iter().map(|(_, update)| update).collect()
        };
        let mut out = Vec::new();
        for update in due {
            let (name, seq) = (update.record.name.clone(), update.record.seq);
            let records = store.records(&name)?;
            let lineage = Lineage::of(&update.record);
            let Some(current) = records
                .iter()
                .find(|r| r.seq == seq && Lineage::of(r) == lineage)
            else {
                continue;
            };
            if current.status != Status::Retrying {
                continue;
            }
            let newer = records
                .iter()
                .filter(|r| Lineage::of(r) == lineage && r.seq > seq && r.status != Status::Held)
                .map(|r| r.seq)
                .max();
            if let Some(newer) = newer {
                store.update(&name, seq, |r| {
                    r.status = Status::Failed;
                    r.next_attempt_at = None;
                    r.updated_at = now_secs;
                    let last = r.reason.take().unwrap_or_default();
                    r.reason = Some(format!(
                        "not retried: seq {newer} of {name} came since; last attempt: {last}"
                    ));
                })?;
                continue;
            }
            store.update(&name, seq, |r| {
                r.status = Status::Pending;
                r.next_attempt_at = None;
            })?;
            out.push(update);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::runtime::intake::Decoded;
    use crate::formats::announcement::{Announcement, Draft, Kind};

    const POLICY: RetryPolicy = RetryPolicy {
        retries: 2,
        backoff: Duration::from_secs(30),
        max: Duration::from_secs(600),
    };

    fn accepted(store: &StateStore, seq: u64) -> Accepted {
        let draft = Draft {
            seq,
            name: "site.pp".into(),
            kind: Kind::Manifest,
            info_hash: [1; 20],
            len: 10,
            sha256: [2; 32],
        };
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let announcement = Announcement::sign(draft, &key).unwrap();
        let mut record = Record::pending("site.pp", &"01".repeat(20), b"0123456789");
        (record.seq, record.kind) = (
            seq,
            crate::agent::runtime::state::RecordKind::Signed(Kind::Manifest),
        );
        record.wire = announcement.to_wire();
        store.put(record.clone()).unwrap();
        Accepted {
            record,
            decoded: Decoded::Signed(announcement),
        }
    }

    fn failed(cause: &str) -> Ended {
        Ended::Failed {
            reason: cause.into(),
            output: Some(format!("Notice: ...\n{cause}\n")),
            retry: true,
        }
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        let secs = |n| POLICY.delay(n).as_secs();
        assert_eq!(
            [secs(1), secs(2), secs(3), secs(5), secs(6)],
            [30, 60, 120, 480, 600]
        );
        assert_eq!(secs(u32::MAX), 600);
    }

    /// A full disk is not the update's fault: ENOSPC anywhere in the cause (or an engine's
    /// text for it) is told apart, and such an attempt is tried again every `SPACE_RECHECK`
    /// without counting, however often, so the update resumes whenever space is freed.
    #[test]
    fn a_full_disk_is_retried_until_space_is_freed_without_counting_attempts() {
        const T: u64 = 1_800_000_000;
        #[derive(Debug, thiserror::Error)]
        #[error("copying the payload")]
        struct Copy(#[source] std::io::Error);
        let full = Copy(std::io::Error::from_raw_os_error(28));
        assert!(out_of_space(&full));
        assert!(!out_of_space(&Copy(std::io::Error::from_raw_os_error(13))));
        assert!(text_says_out_of_space(
            "Transmission: local error: No space left on device (/var/lib/p2pu/downloads/x)"
        ));
        let dir = tempfile::tempdir().unwrap();
        let why = short_of_space(&[dir.path()], u64::MAX).unwrap();
        assert!(text_says_out_of_space(&why), "{why}");
        assert_eq!(short_of_space(&[dir.path()], 1), None);
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        accepted(&store, 5);
        for i in 0..(POLICY.retries as u64 + 3) {
            let now = T + i * SPACE_RECHECK.as_secs();
            let ended = Ended::NoSpace {
                reason: crate::error::chain(&full),
            };
            let record = finish_attempt(&store, &POLICY, "site.pp", 5, ended, now).unwrap();
            assert_eq!(
                (record.status, record.attempts, record.next_attempt_at),
                (Status::Retrying, 0, Some(now + SPACE_RECHECK.as_secs()))
            );
            assert!(record.reason.unwrap().starts_with("out of space"));
        }
    }

    /// `retries = 2`: three attempts, waits of 30 s then 60 s, then `failed` with the cause;
    /// the count and the next attempt's time survive the agent's restart (a reopened store),
    /// where the retry waits out the rest of its backoff instead of running at once.
    #[test]
    fn a_failure_is_retried_with_backoff_across_a_restart_then_recorded_failed() {
        const T: u64 = 1_800_000_000;
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let update = accepted(&store, 5);
        let cause = "Error: Could not find class ::nope (site.pp:1)";

        let first = finish_attempt(&store, &POLICY, "site.pp", 5, failed(cause), T).unwrap();
        assert_eq!(
            (first.status, first.attempts, first.next_attempt_at),
            (Status::Retrying, 1, Some(T + 30))
        );
        assert_eq!(first.reason.as_deref(), Some(cause));
        assert!(first.status.is_open(), "a restart resumes it");

        // The agent restarts: it finds the record open and schedules it at its saved time.
        let store = StateStore::open(dir.path()).unwrap();
        let open = store.open_records().unwrap();
        assert_eq!(open.len(), 1);
        let retries = Retries::default();
        retries.schedule(open[0].next_attempt_at.unwrap(), update.clone());
        assert!(
            retries.take_due(&store, T + 29).unwrap().is_empty(),
            "too early"
        );
        let due = retries.take_due(&store, T + 30).unwrap();
        assert_eq!(due, std::slice::from_ref(&update));
        assert_eq!(store.records("site.pp").unwrap()[0].status, Status::Pending);

        let second = finish_attempt(&store, &POLICY, "site.pp", 5, failed(cause), T + 40).unwrap();
        assert_eq!(
            (second.status, second.attempts, second.next_attempt_at),
            (Status::Retrying, 2, Some(T + 40 + 60))
        );
        retries.schedule(T + 100, update.clone());
        assert_eq!(retries.take_due(&store, T + 100).unwrap().len(), 1);
        let third = finish_attempt(&store, &POLICY, "site.pp", 5, failed(cause), T + 110).unwrap();
        assert_eq!(
            (third.status, third.attempts, third.next_attempt_at),
            (Status::Failed, 3, None)
        );
        assert_eq!(third.reason.as_deref(), Some(cause));
        assert!(
            third.output.unwrap().contains(cause),
            "the whole output is kept"
        );
        assert!(
            store.open_records().unwrap().is_empty(),
            "nothing left to retry"
        );
    }

    /// A retry is never run on a record that was applied meanwhile, nor over a newer seq.
    #[test]
    fn a_settled_or_superseded_update_is_not_retried() {
        const T: u64 = 1_800_000_000;
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let retries = Retries::default();

        let five = accepted(&store, 5);
        finish_attempt(&store, &POLICY, "site.pp", 5, failed("Error: x"), T).unwrap();
        let applied = Ended::Applied {
            summary: "puppet apply: changes made".into(),
            output: String::new(),
        };
        // Applied by an attempt that ran meanwhile (a retry scheduled twice, say).
        finish_attempt(&store, &POLICY, "site.pp", 5, applied, T + 1).unwrap();
        retries.schedule(T + 30, five);
        assert!(retries.take_due(&store, T + 30).unwrap().is_empty());
        assert!(retries.is_empty());
        assert_eq!(store.records("site.pp").unwrap()[0].attempts, 2);

        let six = accepted(&store, 6);
        finish_attempt(&store, &POLICY, "site.pp", 6, failed("Error: y"), T).unwrap();
        accepted(&store, 7);
        retries.schedule(T + 30, six);
        assert!(retries.take_due(&store, T + 30).unwrap().is_empty());
        let six = store.records("site.pp").unwrap()[1].clone();
        assert_eq!(six.seq, 6);
        assert_eq!(six.status, Status::Failed);
        assert_eq!(
            six.reason.as_deref(),
            Some("not retried: seq 7 of site.pp came since; last attempt: Error: y")
        );
    }

    #[test]
    fn a_refusal_of_the_verified_bytes_is_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        accepted(&store, 5);
        let refused = Ended::Failed {
            reason: "extracting evil.tar.gz: entry ../x escapes the target".into(),
            output: None,
            retry: false,
        };
        let record = finish_attempt(&store, &POLICY, "site.pp", 5, refused, 9).unwrap();
        assert_eq!((record.status, record.attempts), (Status::Failed, 1));
    }

    #[test]
    fn no_retries_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        accepted(&store, 5);
        let never = RetryPolicy {
            retries: 0,
            ..POLICY
        };
        let record = finish_attempt(&store, &never, "site.pp", 5, failed("Error: z"), 9).unwrap();
        assert_eq!((record.status, record.attempts), (Status::Failed, 1));
    }
}
