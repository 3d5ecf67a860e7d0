//! What follows a successful apply: the health check, and the revert when it fails. Owns the
//! record's way through `checking` (recorded before the check starts), then `applied`; or
//! `reverting` (recorded before the last good version is applied again), then `reverted`, or
//! `failed` when there is no good version to go back to or it cannot be applied. An agent that
//! stopped in the middle finds `checking` or `reverting` at start and [`HealthCheck::resume`]s:
//! a check runs again, a revert is done again.
//!
//! The last good version of a name is the newest earlier `applied` record of that name (same
//! lineage) whose payload is kept in [`GoodStore`]; its kept bytes are verified again against
//! the SHA-256 kept with them before they are applied. `key` and `file` updates are not
//! checked: a key update changes only the trusted keys (reverting it would undo a revocation),
//! and a `file` is kept under its own seq and replaces nothing.
//!
//! An operator's `p2pu rollout revert` takes the same way: the intake sets the applied record
//! `reverting` with [`OPERATOR_REVERT`] as its reason and the version to go back to, and the
//! workers [`HealthCheck::resume`] it. So that there is a version to go back to once the next
//! one passed its check, the previous good version is kept beside the newest.

use super::state::{tail, Lineage, Record, RecordKind, StateStore, Status, OUTPUT_IN_RECORD};
use super::Result;
use crate::agent::apply::check::{run_check_until, CheckResult};
use crate::agent::apply::good::GoodStore;
use crate::agent::apply::{Applied, ApplyContext};
use crate::agent::transfer::verified::{copy_verified, Expected};
use crate::error::chain;
use crate::formats::announcement::Kind;
use std::path::Path;
use std::time::Duration;

/// The most of a check's output that goes into the record (whose output keeps 4,000
/// characters): the rest of the record's room is for the apply's output before it.
const CHECK_OUTPUT_IN_RECORD: usize = 3000;

/// The reason an operator's revert (`p2pu rollout revert`) is recorded `reverting` with; the
/// record settles "reverted by operator to seq N".
pub const OPERATOR_REVERT: &str = "reverted by operator";

/// The reason `p2pu mark-bad` on this node records `reverting` with (see
/// [`super::mark`]); the record settles "marked bad by operator to seq N".
pub const MARKED_BAD: &str = "marked bad by operator";

/// Whether `reason` is an operator's (a revert or a mark), not a failed check's: the record
/// then settles "REASON to seq N".
fn by_operator(reason: &str) -> bool {
    reason == OPERATOR_REVERT || reason == MARKED_BAD
}

/// The version a revert of `record` goes back to: the newest earlier `applied` record of its
/// name (`to`: that seq only), of the same lineage, whose payload is still kept. One rule for
/// a failed check, `rollout revert` and `mark-bad`.
pub fn kept_good(
    store: &StateStore,
    good: &GoodStore,
    record: &Record,
    to: Option<u64>,
) -> Result<Option<Record>> {
    Ok(store
        .records(&record.name)?
        .into_iter()
        .filter(|r| {
            r.status == Status::Applied
                && r.seq < record.seq
                && to.is_none_or(|to| r.seq == to)
                && Lineage::of(r) == Lineage::of(record)
                && good.get(&r.name, r.seq).is_some()
        })
        .max_by_key(|r| r.seq))
}

/// What the check and revert need.
pub struct HealthCheck<'a> {
    pub store: &'a StateStore,
    pub good: GoodStore,
    pub apply: &'a ApplyContext<'a>,
    /// The staging root of verified copies: a revert's kept bytes are verified into it.
    pub verified_root: &'a Path,
    /// The site's check (`agent.health_check`); empty: none.
    pub site_check: &'a [String],
    pub timeout: Duration,
    /// Seconds since the epoch, for the records.
    pub now: &'a dyn Fn() -> u64,
}

/// Whether updates of `kind` are checked (and kept for a revert).
pub fn is_checked(kind: Kind) -> bool {
    !matches!(kind, Kind::Key | Kind::File)
}

/// The kind a record is applied as.
pub fn kind_of(record: &Record) -> Kind {
    match record.kind {
        RecordKind::Signed(kind) => kind,
        RecordKind::Legacy => crate::agent::apply::legacy_kind(&record.name),
    }
}

impl HealthCheck<'_> {
    /// Keeps the verified payload of `record` for a later revert; a failure to keep it only
    /// means this version cannot be reverted to.
    pub fn keep(&self, record: &Record, payload: &Path) {
        if !is_checked(kind_of(record)) {
            return;
        }
        if let Err(e) = self
            .good
            .keep(&record.name, record.seq, payload, record.sha256)
        {
            tracing::warn!(name = %record.name, seq = record.seq, "keeping the payload for a revert: {}", chain(&e));
        }
    }

    /// `record` was just applied (`applied`): runs its health check, `check` when the update
    /// carries its own (signed in its rollout plan), else the site's, and records the outcome.
    pub fn after_apply(
        &self,
        record: &Record,
        applied: Applied,
        check: Option<&[String]>,
    ) -> Result<Record> {
        let now = (self.now)();
        let checking = self.store.update(&record.name, record.seq, |stored| {
            stored.next_attempt_at = None;
            stored.settle(
                Status::Checking,
                Some(applied.summary.clone()),
                Some(tail(&applied.output, OUTPUT_IN_RECORD)),
                now,
            );
        })?;
        self.check(&checking, check)
    }

    /// Finishes a record an agent left `checking` or `reverting` when it stopped.
    pub fn resume(&self, record: &Record, check: Option<&[String]>) -> Result<Record> {
        match record.status {
            Status::Checking => self.check(record, check),
            Status::Reverting => {
                let summary = record.reason.clone().unwrap_or_default();
                let output = record.output.clone().unwrap_or_default();
                self.revert(record, &summary, &output)
            }
            _ => Ok(record.clone()),
        }
    }

    /// Runs the check of a `checking` record (its reason the apply's summary, its output the
    /// apply's output) and settles it.
    fn check(&self, record: &Record, check: Option<&[String]>) -> Result<Record> {
        let argv = check.unwrap_or(self.site_check);
        // What was applied, for a check that looks at that update's own effects.
        let env = [
            ("P2PU_NAME", record.name.clone()),
            ("P2PU_SEQ", record.seq.to_string()),
            ("P2PU_KIND", kind_of(record).as_str().to_string()),
        ];
        // An operator's verdict (`p2pu mark-good|mark-bad`) ends the check at once.
        let verdict = || verdict_for(self.store.dir(), record);
        let result = if is_checked(kind_of(record)) {
            run_check_until(argv, self.timeout, &env, &verdict)
        } else {
            run_check_until(&[], self.timeout, &env, &verdict)
        };
        discard_verdict(self.store.dir(), record);
        let apply_summary = record.reason.clone().unwrap_or_default();
        let apply_output = record.output.clone().unwrap_or_default();
        if result.passed {
            let mut output = apply_output;
            if !argv.is_empty() {
                tracing::info!(name = %record.name, seq = record.seq, "{}", result.summary);
                output = format!(
                    "{}\n== {} ==\n{}",
                    output.trim_end(),
                    result.summary,
                    tail(&result.output, CHECK_OUTPUT_IN_RECORD)
                );
            }
            let now = (self.now)();
            let stored = self.store.update(&record.name, record.seq, |stored| {
                stored.attempts = stored.attempts.saturating_add(1);
                let output = tail(&output, OUTPUT_IN_RECORD);
                stored.settle(Status::Applied, Some(apply_summary), Some(output), now);
            })?;
            // Only now is it the last good version: the one before it stays for an operator's
            // revert, the older ones are not needed any more.
            let previous = self.last_good(record)?.map(|r| r.seq);
            let keep: Vec<u64> = std::iter::once(record.seq).chain(previous).collect();
            self.good.keep_only(&record.name, &keep);
            return Ok(stored);
        }
        tracing::warn!(name = %record.name, seq = record.seq, "{}", result.summary);
        // Marked bad: the operator's reason alone, so it settles "marked bad by operator to
        // seq N" like a revert of an applied update.
        let reason = if result.summary == MARKED_BAD {
            MARKED_BAD.to_string()
        } else {
            failure_reason(&result)
        };
        let output = format!(
            "== {} ==\n{}",
            result.summary,
            tail(&result.output, CHECK_OUTPUT_IN_RECORD)
        );
        self.revert(record, &reason, &output)
    }

    /// Applies the last good version of `record`'s name again and records `reverted` (or
    /// `failed`); `reason` and `output` say why (the failed check).
    fn revert(&self, record: &Record, reason: &str, output: &str) -> Result<Record> {
        let good = match record.restored_seq {
            Some(seq) => self
                .store
                .records(&record.name)?
                .into_iter()
                .find(|r| r.seq == seq && self.good.get(&r.name, r.seq).is_some()),
            None => self.last_good(record)?,
        };
        let by_operator = by_operator(reason);
        let Some(good) = good else {
            let why = if by_operator {
                format!("{reason}: no earlier good version is kept, nothing to revert to")
            } else {
                format!("health check failed; no earlier good version to revert to: {reason}")
            };
            let settled = self.settle(record, Status::Failed, why, output.to_string(), None);
            self.good.discard(&record.name, record.seq);
            return settled;
        };
        let now = (self.now)();
        let reverting = self.store.update(&record.name, record.seq, |stored| {
            stored.restored_seq = Some(good.seq);
            stored.settle(
                Status::Reverting,
                Some(reason.to_string()),
                Some(output.to_string()),
                now,
            );
        })?;
        tracing::warn!(name = %record.name, seq = record.seq, good = good.seq, "reverting to the last good version");
        let settled = match self.reapply(&good) {
            Ok(applied) => {
                tracing::info!(name = %record.name, seq = record.seq, good = good.seq, "reverted: {}", applied.summary);
                let output = format!(
                    "{}\n== reverted to seq {}: {} ==\n{}",
                    output.trim_end(),
                    good.seq,
                    applied.summary,
                    applied.output.trim_end()
                );
                let why = if by_operator {
                    format!("{reason} to seq {}", good.seq)
                } else {
                    format!("reverted to seq {}: {reason}", good.seq)
                };
                self.settle(&reverting, Status::Reverted, why, output, Some(good.seq))
            }
            Err(e) => {
                tracing::error!(name = %record.name, seq = record.seq, good = good.seq, "revert failed: {e}");
                self.settle(
                    &reverting,
                    Status::Failed,
                    format!("{reason}; reverting to seq {} failed: {e}", good.seq),
                    output.to_string(),
                    Some(good.seq),
                )
            }
        };
        self.good.discard(&record.name, record.seq);
        settled
    }

    /// The newest earlier `applied` record of the name, of the same lineage, whose payload is
    /// kept.
    fn last_good(&self, record: &Record) -> Result<Option<Record>> {
        kept_good(self.store, &self.good, record, None)
    }

    /// Verifies the kept payload of `good` again and applies it.
    fn reapply(&self, good: &Record) -> std::result::Result<Applied, String> {
        let kept = self
            .good
            .get(&good.name, good.seq)
            .ok_or_else(|| format!("the kept payload of seq {} is gone", good.seq))?;
        let expected = Expected::Sha256 {
            len: kept.len,
            sha256_hex: kept.sha256.clone(),
        };
        let verified = copy_verified(
            self.verified_root,
            &kept.path,
            &good.info_hash,
            good.seq,
            expected,
        )
        .map_err(|e| format!("verifying the kept payload: {}", chain(&e)))?;
        self.apply
            .apply_verified(kind_of(good), &good.name, verified, None)
            .map_err(|e| e.cause())
    }

    fn settle(
        &self,
        record: &Record,
        status: Status,
        reason: String,
        output: String,
        restored: Option<u64>,
    ) -> Result<Record> {
        let now = (self.now)();
        self.store.update(&record.name, record.seq, |stored| {
            stored.attempts = stored.attempts.saturating_add(1);
            stored.restored_seq = restored;
            stored.settle(
                status,
                Some(reason),
                Some(tail(&output, OUTPUT_IN_RECORD)),
                now,
            );
        })
    }
}

/// The summary of a check ended by `p2pu mark-good`.
pub const MARKED_GOOD: &str = "marked good by operator";

/// An operator's verdict on one run of a check (`p2pu mark-good|mark-bad` while `checking`,
/// see [`super::mark`]): it holds only for the record as it was when judged (`attempts` and
/// `updated_at` change with every settle), so a verdict left over never ends a later check
/// of the same update (a retry).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct VerdictFile {
    name: String,
    seq: u64,
    attempts: u32,
    checking_since: u64,
    good: bool,
    at: u64,
}

/// One file per update under `state_dir/verdicts/` (root's, 0700): the name hashed, so no
/// name becomes a path.
fn verdict_path(state_dir: &Path, name: &str, seq: u64) -> std::path::PathBuf {
    use sha2::{Digest, Sha256};
    let hash = hex::encode(&Sha256::digest(name.as_bytes())[..16]);
    state_dir
        .join("verdicts")
        .join(format!("{hash}-{seq}.json"))
}

/// Keeps the verdict on the running check of `record` (root's, 0600), for [`verdict_for`].
pub fn write_verdict(state_dir: &Path, record: &Record, good: bool, now: u64) -> Result<()> {
    let path = verdict_path(state_dir, &record.name, record.seq);
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(e),
            })
            .map_err(super::RuntimeError::io("creating", dir))?;
    }
    let file = VerdictFile {
        name: record.name.clone(),
        seq: record.seq,
        attempts: record.attempts,
        checking_since: record.updated_at,
        good,
        at: now,
    };
    let bytes = serde_json::to_vec(&file).map_err(|source| super::RuntimeError::Encode {
        path: path.clone(),
        source,
    })?;
    Ok(crate::fsutil::write_atomic(&path, &bytes, 0o600)?)
}

/// The operator's verdict on the running check of `record` (`checking`): whether it passed,
/// and the summary to record. Unreadable or stale verdicts are none.
pub fn verdict_for(state_dir: &Path, record: &Record) -> Option<(bool, String)> {
    let path = verdict_path(state_dir, &record.name, record.seq);
    let file: VerdictFile = super::sync::read_json(&path).ok()??;
    let current = file.name == record.name
        && file.seq == record.seq
        && file.attempts == record.attempts
        && file.checking_since == record.updated_at;
    current.then(|| match file.good {
        true => (true, MARKED_GOOD.to_string()),
        false => (false, MARKED_BAD.to_string()),
    })
}

/// Drops the verdict on `record`'s check once the check ended.
pub fn discard_verdict(state_dir: &Path, record: &Record) {
    let _ = std::fs::remove_file(verdict_path(state_dir, &record.name, record.seq));
}

/// The check's summary and the last line it printed: the cause an operator reads first.
fn failure_reason(result: &CheckResult) -> String {
    let last = result
        .output
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(|l| l.chars().take(200).collect::<String>());
    match last {
        Some(line) => format!("{}: {line}", result.summary),
        None => result.summary.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::apply::extract::Limits;
    use crate::agent::transfer::verified::root_of;
    use crate::engines::fake::FakeApplier;
    use std::io::Write;

    /// A node's state, archives and verified staging, with a check that fails when the
    /// unpacked `site.zip/state` says B.
    struct Node {
        tmp: tempfile::TempDir,
        store: StateStore,
        applier: FakeApplier,
        check: Vec<String>,
        archives: std::path::PathBuf,
        keys: std::path::PathBuf,
    }

    fn node() -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::open(&tmp.path().join("state")).unwrap();
        let state_file = tmp.path().join("archives/site.zip/state");
        let script = format!(
            "echo checking $P2PU_NAME seq $P2PU_SEQ; if grep -q B {f}; then echo 'state is B: broken'; exit 1; fi",
            f = state_file.display()
        );
        Node {
            archives: tmp.path().join("archives"),
            keys: tmp.path().join("keys"),
            tmp,
            store,
            applier: FakeApplier::default(),
            check: vec!["/bin/sh".into(), "-c".into(), script],
        }
    }

    impl Node {
        fn path(&self, rel: &str) -> std::path::PathBuf {
            self.tmp.path().join(rel)
        }

        fn context(&self) -> ApplyContext<'_> {
            ApplyContext {
                puppet: &self.applier,
                modulepath: None,
                archive_dir: &self.archives,
                trusted_keys_dir: &self.keys,
                key_policy: crate::trust::KeyPolicy {
                    key_threshold: 1,
                    fleet: crate::formats::announcement::FleetId([0; 8]),
                },
                limits: Limits::default(),
            }
        }

        fn with_health<T>(&self, f: impl FnOnce(&HealthCheck<'_>, &ApplyContext<'_>) -> T) -> T {
            let context = self.context();
            let verified_root = root_of(&self.path("state"));
            let health = HealthCheck {
                store: &self.store,
                good: GoodStore::of(&self.path("state")),
                apply: &context,
                verified_root: &verified_root,
                site_check: &self.check,
                timeout: Duration::from_secs(30),
                now: &|| 1_800_000_000,
            };
            f(&health, &context)
        }

        /// Update `seq` of `site.zip` whose `state` says `content`, applied and checked as
        /// the agent does it.
        fn update(&self, seq: u64, content: &str) -> Record {
            let zip = self.path(&format!("payload-{seq}/site.zip"));
            std::fs::create_dir_all(zip.parent().unwrap()).unwrap();
            let mut writer = zip::ZipWriter::new(std::fs::File::create(&zip).unwrap());
            writer
                .start_file("state", zip::write::SimpleFileOptions::default())
                .unwrap();
            writer.write_all(content.as_bytes()).unwrap();
            writer.finish().unwrap();
            let bytes = std::fs::read(&zip).unwrap();
            let info_hash = format!("{seq:040x}");
            let mut record = Record::pending("site.zip", &info_hash, &bytes);
            record.seq = seq;
            record.kind = RecordKind::Signed(Kind::Archive);
            record.status = Status::Applying;
            self.store.put(record.clone()).unwrap();
            let expected = Expected::Sha256 {
                len: bytes.len() as u64,
                sha256_hex: hex::encode(record.sha256.unwrap()),
            };
            let root = root_of(&self.path("state"));
            let verified = copy_verified(&root, &zip, &info_hash, seq, expected).unwrap();
            self.with_health(|health, context| {
                health.keep(&record, verified.path());
                let applied = context
                    .apply_verified(Kind::Archive, "site.zip", verified, None)
                    .unwrap();
                health.after_apply(&record, applied, None).unwrap()
            })
        }

        fn state(&self) -> String {
            std::fs::read_to_string(self.path("archives/site.zip/state")).unwrap()
        }
    }

    #[test]
    fn a_failed_check_reverts_to_the_last_good_version_with_the_checks_output() {
        let node = node();
        let one = node.update(1, "A");
        assert_eq!(one.status, Status::Applied, "{one:?}");
        assert!(one.output.unwrap().contains("passed"));
        let two = node.update(2, "B");
        assert_eq!(node.state(), "A", "the last good version is applied again");
        assert_eq!(
            (two.status, two.restored_seq),
            (Status::Reverted, Some(1)),
            "{two:?}"
        );
        let reason = two.reason.unwrap();
        assert!(
            reason == "reverted to seq 1: health check `/bin/sh` exited 1: state is B: broken",
            "{reason}"
        );
        let output = two.output.unwrap();
        assert!(output.contains("state is B: broken"), "{output}");
        assert!(
            output.contains("checking site.zip seq 2"),
            "the check is told which update it follows: {output}"
        );
        // The failed version is not kept; the good one is, for the next failure.
        node.with_health(|health, _| {
            assert!(health.good.get("site.zip", 2).is_none());
            assert!(health.good.get("site.zip", 1).is_some());
        });
        let three = node.update(3, "B");
        assert_eq!(
            (three.status, three.restored_seq),
            (Status::Reverted, Some(1))
        );
        assert_eq!(node.state(), "A");
    }

    /// After the next version passed its check, the one before stays kept (and older ones
    /// go); an operator's revert (`reverting` with [`OPERATOR_REVERT`], as the intake sets it)
    /// applies it again and records "reverted by operator to seq N".
    #[test]
    fn an_operators_revert_applies_the_previous_kept_version_again() {
        let node = node();
        node.update(1, "A");
        node.update(2, "C");
        let three = node.update(3, "D");
        assert_eq!(three.status, Status::Applied);
        node.with_health(|health, _| {
            assert!(health.good.get("site.zip", 1).is_none(), "older ones go");
            assert!(
                health.good.get("site.zip", 2).is_some(),
                "the previous one stays"
            );
        });
        let mut reverting = three.clone();
        reverting.restored_seq = Some(2);
        reverting.settle(
            Status::Reverting,
            Some(OPERATOR_REVERT.into()),
            three.output.clone(),
            1_800_000_000,
        );
        node.store.put(reverting.clone()).unwrap();
        let settled = node.with_health(|health, _| health.resume(&reverting, None).unwrap());
        assert_eq!(node.state(), "C");
        assert_eq!(
            (settled.status, settled.restored_seq),
            (Status::Reverted, Some(2))
        );
        assert_eq!(
            settled.reason.as_deref(),
            Some("reverted by operator to seq 2")
        );
    }

    #[test]
    fn a_failed_check_with_nothing_to_revert_to_fails_and_says_so() {
        let node = node();
        let one = node.update(1, "B");
        assert_eq!(one.status, Status::Failed);
        let reason = one.reason.unwrap();
        assert!(
            reason.starts_with("health check failed; no earlier good version to revert to: "),
            "{reason}"
        );
        assert_eq!(node.state(), "B", "nothing else was applied");
    }

    /// A kept payload changed on disk since (a bad disk, a hand edit) is not applied.
    #[test]
    fn a_kept_version_that_no_longer_matches_its_hash_is_not_applied() {
        let node = node();
        node.update(1, "A");
        node.with_health(|health, _| {
            let kept = health.good.get("site.zip", 1).unwrap();
            let mut bytes = std::fs::read(&kept.path).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            std::fs::remove_file(&kept.path).unwrap();
            std::fs::write(&kept.path, bytes).unwrap();
        });
        let two = node.update(2, "B");
        assert_eq!(two.status, Status::Failed, "{two:?}");
        assert!(two.reason.unwrap().contains("reverting to seq 1 failed"));
        assert_eq!(node.state(), "B");
    }

    /// An agent stopped while `checking` runs the check again at start; one stopped while
    /// `reverting` applies the good version again.
    #[test]
    fn a_check_or_revert_cut_short_is_finished_on_resume() {
        let node = node();
        node.update(1, "A");
        let two = node.update(2, "A");
        assert_eq!(two.status, Status::Applied);
        // Seq 3 (B) applied, then the agent stopped during its check.
        let three = node.update(3, "B");
        assert_eq!(three.status, Status::Reverted);
        std::fs::write(node.path("archives/site.zip/state"), "B").unwrap();
        let checking = node
            .store
            .update("site.zip", 3, |r| {
                r.restored_seq = None;
                r.settle(Status::Checking, Some("extracted".into()), None, 1)
            })
            .unwrap();
        let resumed = node.with_health(|health, _| health.resume(&checking, None).unwrap());
        assert_eq!(
            (resumed.status, resumed.restored_seq),
            (Status::Reverted, Some(2))
        );
        assert_eq!(node.state(), "A");
        // Stopped while reverting: the revert is done again, to the seq it had chosen.
        std::fs::write(node.path("archives/site.zip/state"), "B").unwrap();
        let reverting = node
            .store
            .update("site.zip", 3, |r| {
                r.settle(Status::Reverting, Some("check failed".into()), None, 1)
            })
            .unwrap();
        let resumed = node.with_health(|health, _| health.resume(&reverting, None).unwrap());
        assert_eq!(
            (resumed.status, resumed.restored_seq),
            (Status::Reverted, Some(2))
        );
        assert_eq!(node.state(), "A");
    }
}
