//! An operator's verdict on an update on this node (`p2pu mark-good|mark-bad`), for sites
//! where the health check is a person (Mender's commit, RAUC's mark-good/mark-bad). Owns the
//! request the command spools, what a verdict does to the records ([`judge`]), the verdict a
//! running check is ended by, and the answer the command reads back.
//!
//! What a verdict does, by the status of the judged record (the newest of the name, or the
//! seq given):
//! - `checking` (its health check is running): the check ends now, passed (`mark-good`: the
//!   record becomes `applied`, so later waves of its rollout go on) or failed (`mark-bad`:
//!   the kept good version is applied again, the record settles `reverted`, "marked bad by
//!   operator to seq N"). A site whose check is a person sets a check that waits, such as
//!   `health_check = ["/bin/sleep", "infinity"]` with `health_check_timeout_secs = 3600`:
//!   without a verdict by then the check failed and the update is reverted, as Mender does.
//! - `applied`: `mark-bad` reverts it through the same path as `rollout revert` (the record
//!   goes `reverting`, the workers apply the kept version under the apply lock); `mark-good`
//!   records the operator's confirmation in its reason.
//! - anything else is refused, saying why.
//!
//! The agent owns the state: the command only checks the request against the records (for
//! an error at once) and spools it; the agent judges it again, acts, and writes an answer to
//! `<state_dir>/marks/answers/<id>.json`. A request is honoured only from the spool itself
//! (root's part) with the source `operator`: a member's user event or the NAT client's
//! `overlay/` part that carries one is ignored, like a forged sync request.

use super::health::{kept_good, write_verdict, MARKED_BAD};
use super::spool::{self, Source};
use super::state::{Record, StateStore, Status};
use super::{Result, RuntimeError};
use crate::agent::apply::good::GoodStore;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Every request starts with this.
const WIRE_PREFIX: &str = "p2pu-mark1:";
/// The state dir's subdirectory for verdicts and answers (root's, 0700).
const MARKS_SUBDIR: &str = "marks";
/// How many answers are kept: the command reads its own within seconds.
const ANSWERS_KEPT: usize = 16;
/// What `mark-good` on an applied record adds to its reason.
pub const CONFIRMED: &str = "confirmed good by operator";

/// Which verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Good,
    Bad,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Good => "good",
            Verdict::Bad => "bad",
        }
    }

    /// The command that gives it, for messages.
    pub fn command(self) -> &'static str {
        match self {
            Verdict::Good => "mark-good",
            Verdict::Bad => "mark-bad",
        }
    }
}

/// `p2pu mark-good|mark-bad NAME [--seq SEQ]`, as spooled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// 32 lowercase hex digits: names the answer file.
    pub id: String,
    pub verdict: Verdict,
    pub name: String,
    /// None: the newest record of the name.
    pub seq: Option<u64>,
}

impl Request {
    /// `p2pu-mark1:<good|bad>:<id>:<seq or ->:<name>`; the name last, since it may hold `:`.
    pub fn to_wire(&self) -> String {
        let seq = self.seq.map_or("-".to_string(), |s| s.to_string());
        format!(
            "{WIRE_PREFIX}{}:{}:{seq}:{}",
            self.verdict.as_str(),
            self.id,
            self.name
        )
    }

    /// `None` when `payload` is not a request; `Some(Err(..))` when it starts like one but is
    /// not (a bad id must never become a path, nor a bad name a lookup).
    pub fn parse(payload: &[u8]) -> Option<std::result::Result<Request, String>> {
        let rest = payload.strip_prefix(WIRE_PREFIX.as_bytes())?;
        let bad = || {
            format!(
                "not a mark request: {:?}",
                String::from_utf8_lossy(&payload[..payload.len().min(80)])
            )
        };
        let parsed = (|| {
            let text = std::str::from_utf8(rest).ok()?;
            let mut parts = text.splitn(4, ':');
            let verdict = match parts.next()? {
                "good" => Verdict::Good,
                "bad" => Verdict::Bad,
                _ => return None,
            };
            let id = parts.next().filter(|id| is_id(id))?.to_string();
            let seq = match parts.next()? {
                "-" => None,
                digits if digits.bytes().all(|b| b.is_ascii_digit()) => Some(digits.parse().ok()?),
                _ => return None,
            };
            let name = parts.next()?;
            crate::formats::announcement::validate_name(name).ok()?;
            Some(Request {
                id,
                verdict,
                name: name.to_string(),
                seq,
            })
        })();
        Some(parsed.ok_or_else(bad))
    }
}

/// 32 lowercase hex digits, as [`new_id`] makes them.
fn is_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// A fresh request id.
pub fn new_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Spools `request` for the agent (`p2pu mark-good|mark-bad`, as root).
pub fn put(spool_dir: &Path, request: &Request) -> Result<PathBuf> {
    Ok(spool::put(
        spool_dir,
        Source::Operator,
        request.to_wire().as_bytes(),
    )?)
}

/// What a verdict does to the judged record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Its check is running: the verdict ends it (`Record` as it was when judged).
    EndCheck(Record),
    /// Applied and marked bad: the record set `reverting` to the kept good version, for the
    /// workers to apply again.
    Revert(Record),
    /// Applied and marked good: the record with the confirmation in its reason.
    Confirm(Record),
}

impl Effect {
    pub fn record(&self) -> &Record {
        match self {
            Effect::EndCheck(r) | Effect::Revert(r) | Effect::Confirm(r) => r,
        }
    }

    /// One line for the operator.
    pub fn describe(&self, verdict: Verdict) -> String {
        let r = self.record();
        match (self, verdict) {
            (Effect::EndCheck(_), Verdict::Good) => format!(
                "{} seq {}: its health check ends now as passed; it settles `applied`",
                r.name, r.seq
            ),
            (Effect::EndCheck(_), Verdict::Bad) => format!(
                "{} seq {}: its health check ends now as failed; the kept good version is applied again",
                r.name, r.seq
            ),
            (Effect::Revert(_), _) => format!(
                "{} seq {}: reverting to seq {} (the kept good version)",
                r.name,
                r.seq,
                r.restored_seq.unwrap_or_default()
            ),
            (Effect::Confirm(_), _) => {
                format!("{} seq {}: applied, {CONFIRMED}", r.name, r.seq)
            }
        }
    }
}

/// What `verdict` on `name` (seq `seq`, else the newest) does on this node, or why it is
/// refused (the message names the update and what to do). The command runs it to fail at
/// once; the agent runs it again when it takes the request.
pub fn judge(
    store: &StateStore,
    verdict: Verdict,
    name: &str,
    seq: Option<u64>,
    now: u64,
) -> Result<std::result::Result<Effect, String>> {
    let records: Vec<Record> = store
        .records(name)?
        .into_iter()
        .filter(|r| r.status != Status::Held)
        .collect();
    let Some(newest) = records.iter().max_by_key(|r| r.seq) else {
        return Ok(Err(format!(
            "{name}: this node has no record of it; `p2pu status --all` lists the updates it has"
        )));
    };
    let record = match seq {
        None => newest,
        Some(seq) => match records.iter().find(|r| r.seq == seq) {
            Some(record) => record,
            None => {
                return Ok(Err(format!(
                    "{name} seq {seq}: this node has no record of it (its newest is seq {}); \
                     leave out --seq to judge the newest",
                    newest.seq
                )))
            }
        },
    };
    let (name, seq) = (&record.name, record.seq);
    let newer_applied = records
        .iter()
        .filter(|r| r.seq > seq && matches!(r.status, Status::Applied | Status::Checking))
        .map(|r| r.seq)
        .max();
    if let Some(newer) = newer_applied {
        return Ok(Err(format!(
            "{name} seq {seq}: seq {newer} was applied after it; judge the newest (`p2pu {} {name}`)",
            verdict.command()
        )));
    }
    // A revert of it would be skipped as superseded by any newer record (the worker applies
    // only the newest), leaving this one failed with nothing reverted.
    let newer = records.iter().map(|r| r.seq).filter(|&s| s > seq).max();
    if let (Some(newer), Verdict::Bad) = (newer, verdict) {
        return Ok(Err(format!(
            "{name} seq {seq}: seq {newer} came after it (not applied); to go back to an \
             earlier version use `p2pu rollout revert {name} --to SEQ`"
        )));
    }
    match (record.status, verdict) {
        (Status::Checking, _) => Ok(Ok(Effect::EndCheck(record.clone()))),
        (Status::Applied, Verdict::Good) => {
            let mut confirmed = record.clone();
            let reason = record.reason.clone().unwrap_or_default();
            if !reason.ends_with(CONFIRMED) {
                let reason = if reason.is_empty() {
                    CONFIRMED.to_string()
                } else {
                    format!("{reason}; {CONFIRMED}")
                };
                let output = confirmed.output.clone();
                confirmed.settle(Status::Applied, Some(reason), output, now);
            }
            Ok(Ok(Effect::Confirm(confirmed)))
        }
        (Status::Applied, Verdict::Bad) => {
            let good = GoodStore::of(store.dir());
            let Some(target) = kept_good(store, &good, record, None)? else {
                return Ok(Err(format!(
                    "{name} seq {seq}: no earlier good version is kept on this node, nothing \
                     to revert to (only a version applied before it is kept); `p2pu submit` \
                     a fixed version instead"
                )));
            };
            let mut reverting = record.clone();
            reverting.restored_seq = Some(target.seq);
            reverting.attempts = 0;
            reverting.next_attempt_at = None;
            let output = reverting.output.clone();
            reverting.settle(Status::Reverting, Some(MARKED_BAD.to_string()), output, now);
            Ok(Ok(Effect::Revert(reverting)))
        }
        (status, verdict) => {
            let hint = match status {
                Status::Failed | Status::Reverted => "; `p2pu rollout retry` makes it try again",
                Status::Pending | Status::Applying | Status::Retrying | Status::Waiting => {
                    "; wait until it is applied (`p2pu status`)"
                }
                Status::Reverting => "; the revert is under way",
                _ => "",
            };
            Ok(Err(format!(
                "{name} seq {seq} is {}: {} judges an update that is applied or whose health \
                 check is running{hint}",
                status.as_str(),
                verdict.command()
            )))
        }
    }
}

/// What the agent answers a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    pub id: String,
    pub verdict: Verdict,
    pub name: String,
    /// The judged record's seq; none when refused before one was found.
    pub seq: Option<u64>,
    /// Whether the agent acted on it.
    pub accepted: bool,
    /// What it does, or why it was refused.
    pub message: String,
}

/// `state_dir/marks/`: the answers (the verdicts on running checks are
/// [`super::health`]'s, in `state_dir/verdicts/`).
fn marks_dir(state_dir: &Path) -> PathBuf {
    state_dir.join(MARKS_SUBDIR)
}

fn answers_dir(state_dir: &Path) -> PathBuf {
    marks_dir(state_dir).join("answers")
}

/// A directory of root's (0700), made with its parents.
fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir)
        .map_err(RuntimeError::io("creating", dir))
}

/// Takes a request from the spool: judges it, acts, and writes the answer. `revert` gets a
/// record set `reverting`, to store and hand to the workers.
pub fn take(
    store: &StateStore,
    request: &Request,
    now: u64,
    revert: &mut dyn FnMut(Record) -> std::result::Result<(), String>,
) -> Result<Answer> {
    let judged = judge(store, request.verdict, &request.name, request.seq, now)?;
    let (seq, accepted, message) = match judged {
        Err(why) => (request.seq, false, why),
        Ok(effect) => {
            let seq = Some(effect.record().seq);
            let message = effect.describe(request.verdict);
            let done = match &effect {
                Effect::EndCheck(record) => {
                    let good = request.verdict == Verdict::Good;
                    write_verdict(store.dir(), record, good, now).map(|()| Ok(()))?
                }
                Effect::Confirm(record) => {
                    let confirmed = record.clone();
                    store.update(&record.name, record.seq, |stored| {
                        if stored.status == Status::Applied {
                            stored.reason = confirmed.reason.clone();
                            stored.updated_at = confirmed.updated_at;
                        }
                    })?;
                    Ok(())
                }
                Effect::Revert(record) => {
                    // An update of the stored record (new records come from the intake's
                    // verified decisions only), if it is still as judged.
                    let (judged, mut still) = (record.clone(), false);
                    let stored = store.update(&record.name, record.seq, |stored| {
                        still = stored.status == Status::Applied;
                        if still {
                            stored.restored_seq = judged.restored_seq;
                            stored.attempts = 0;
                            stored.next_attempt_at = None;
                            let output = stored.output.clone();
                            stored.settle(Status::Reverting, judged.reason.clone(), output, now);
                        }
                    })?;
                    if still {
                        revert(stored)
                    } else {
                        Err(format!(
                            "{} seq {} changed to {} meanwhile; nothing done",
                            stored.name,
                            stored.seq,
                            stored.status.as_str()
                        ))
                    }
                }
            };
            match done {
                Ok(()) => (seq, true, message),
                Err(why) => (seq, false, why),
            }
        }
    };
    let answer = Answer {
        id: request.id.clone(),
        verdict: request.verdict,
        name: request.name.clone(),
        seq,
        accepted,
        message,
    };
    write_answer(store.dir(), &answer)?;
    Ok(answer)
}

/// Where the answer to request `id` lies; `None` for an id no request carries.
fn answer_path(state_dir: &Path, id: &str) -> Option<PathBuf> {
    is_id(id).then(|| answers_dir(state_dir).join(format!("{id}.json")))
}

/// Keeps `answer` (root's, 0600, in a 0700 directory) and drops all but the newest few.
fn write_answer(state_dir: &Path, answer: &Answer) -> Result<()> {
    let dir = answers_dir(state_dir);
    private_dir(&dir)?;
    let path = answer_path(state_dir, &answer.id).ok_or_else(|| RuntimeError::Io {
        action: "internal error (a bug in p2pu): answering a bad mark id in",
        path: dir.clone(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    super::sync::keep_newest(&dir, &path, answer, ANSWERS_KEPT)
}

/// The answer to request `id`, once the agent wrote it.
pub fn read_answer(state_dir: &Path, id: &str) -> Result<Option<Answer>> {
    let Some(path) = answer_path(state_dir, id) else {
        return Ok(None);
    };
    super::sync::read_json(&path)
}

#[cfg(test)]
mod tests {
    use super::super::health::{discard_verdict, verdict_for, MARKED_GOOD};
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn a_request_round_trips_and_a_bad_one_never_becomes_a_path() {
        let request = Request {
            id: new_id(),
            verdict: Verdict::Bad,
            name: "a:b.pp".into(),
            seq: Some(7),
        };
        assert_eq!(
            Request::parse(request.to_wire().as_bytes()),
            Some(Ok(request.clone()))
        );
        let newest = Request {
            seq: None,
            ..request
        };
        assert_eq!(
            Request::parse(newest.to_wire().as_bytes()),
            Some(Ok(newest))
        );
        assert_eq!(Request::parse(b"p2pu-sync1:fleet"), None);
        let id = "0".repeat(32);
        for bad in [
            "p2pu-mark1:good:../../x:-:a.pp".to_string(),
            format!("p2pu-mark1:maybe:{id}:-:a.pp"),
            format!("p2pu-mark1:good:{id}:-7:a.pp"),
            format!("p2pu-mark1:good:{id}:-:../etc"),
            format!("p2pu-mark1:good:{id}:-:a/b"),
            format!("p2pu-mark1:good:{id}:-:"),
            format!("p2pu-mark1:good:{id}:99999999999999999999999:a.pp"),
            format!("p2pu-mark1:good:{id}"),
        ] {
            assert!(
                matches!(Request::parse(bad.as_bytes()), Some(Err(_))),
                "{bad}"
            );
        }
    }

    fn store() -> (tempfile::TempDir, StateStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(&dir.path().join("state")).unwrap();
        (dir, store)
    }

    fn put(store: &StateStore, seq: u64, status: Status) -> Record {
        let mut record = Record::pending("site.pp", &format!("{seq:040x}"), b"x");
        record.seq = seq;
        record.kind =
            super::super::state::RecordKind::Signed(crate::formats::announcement::Kind::Manifest);
        record.status = status;
        record.reason = Some("puppet applied".into());
        store.put(record.clone()).unwrap();
        record
    }

    fn refused(store: &StateStore, verdict: Verdict, seq: Option<u64>) -> String {
        match judge(store, verdict, "site.pp", seq, 9).unwrap() {
            Err(why) => why,
            Ok(effect) => panic!("not refused: {effect:?}"),
        }
    }

    /// Each refusal names the update and says what to do.
    #[test]
    fn a_verdict_that_cannot_apply_is_refused_saying_why() {
        let (_dir, store) = store();
        assert_eq!(
            refused(&store, Verdict::Bad, None),
            "site.pp: this node has no record of it; `p2pu status --all` lists the updates it has"
        );
        put(&store, 1, Status::Applied);
        assert_eq!(
            refused(&store, Verdict::Bad, None),
            "site.pp seq 1: no earlier good version is kept on this node, nothing to revert to \
             (only a version applied before it is kept); `p2pu submit` a fixed version instead"
        );
        assert!(refused(&store, Verdict::Good, Some(5))
            .starts_with("site.pp seq 5: this node has no record of it (its newest is seq 1)"));
        put(&store, 2, Status::Failed);
        assert_eq!(
            refused(&store, Verdict::Good, None),
            "site.pp seq 2 is failed: mark-good judges an update that is applied or whose health \
             check is running; `p2pu rollout retry` makes it try again"
        );
        put(&store, 3, Status::Applied);
        assert_eq!(
            refused(&store, Verdict::Bad, Some(1)),
            "site.pp seq 1: seq 3 was applied after it; judge the newest (`p2pu mark-bad site.pp`)"
        );
    }

    /// mark-bad of an applied update with a kept earlier version sets it `reverting` to that
    /// version with the operator's reason; mark-good confirms once.
    #[test]
    fn mark_bad_reverts_to_the_kept_version_and_mark_good_confirms() {
        let (dir, store) = store();
        put(&store, 1, Status::Applied);
        let payload = dir.path().join("payload");
        std::fs::write(&payload, b"x").unwrap();
        let good = GoodStore::of(store.dir());
        let sha: [u8; 32] = Sha256::digest(b"x").into();
        good.keep("site.pp", 1, &payload, Some(sha)).unwrap();
        put(&store, 2, Status::Applied);
        let Ok(Effect::Revert(record)) = judge(&store, Verdict::Bad, "site.pp", None, 9).unwrap()
        else {
            panic!("not a revert")
        };
        assert_eq!(
            (record.seq, record.status, record.restored_seq),
            (2, Status::Reverting, Some(1))
        );
        assert_eq!(record.reason.as_deref(), Some(MARKED_BAD));
        let Ok(Effect::Confirm(record)) = judge(&store, Verdict::Good, "site.pp", None, 9).unwrap()
        else {
            panic!("not a confirmation")
        };
        assert_eq!(
            record.reason.as_deref(),
            Some("puppet applied; confirmed good by operator")
        );
        store.put(record).unwrap();
        let Ok(Effect::Confirm(again)) = judge(&store, Verdict::Good, "site.pp", None, 9).unwrap()
        else {
            panic!("not a confirmation")
        };
        assert_eq!(
            again.reason.as_deref(),
            Some("puppet applied; confirmed good by operator")
        );
    }

    /// Hostile review: seq 4 kept, seq 5 applied, seq 6 failed. `mark-bad --seq 5` would set
    /// 5 reverting, which the worker then skips as superseded by 6, recording 5 failed with
    /// nothing reverted: it is refused, naming `rollout revert`.
    #[test]
    fn mark_bad_of_a_version_a_newer_record_follows_is_refused() {
        let (dir, store) = store();
        put(&store, 4, Status::Applied);
        let payload = dir.path().join("payload");
        std::fs::write(&payload, b"x").unwrap();
        let sha: [u8; 32] = Sha256::digest(b"x").into();
        GoodStore::of(store.dir())
            .keep("site.pp", 4, &payload, Some(sha))
            .unwrap();
        put(&store, 5, Status::Applied);
        put(&store, 6, Status::Failed);
        let Err(why) = judge(&store, Verdict::Bad, "site.pp", Some(5), 9).unwrap() else {
            panic!("a superseded version was accepted for a revert")
        };
        assert!(
            why.contains("seq 6 came after it") && why.contains("rollout revert"),
            "{why}"
        );
    }

    /// A verdict ends only the check it was given for: a retried check of the same update
    /// (another attempt) is not ended by it.
    #[test]
    fn a_verdict_holds_for_the_check_it_was_given_for_only() {
        let (_dir, store) = store();
        let checking = put(&store, 4, Status::Checking);
        let request = Request {
            id: new_id(),
            verdict: Verdict::Good,
            name: "site.pp".into(),
            seq: None,
        };
        let answer = take(&store, &request, 9, &mut |_| panic!("no revert")).unwrap();
        assert!(answer.accepted, "{answer:?}");
        assert_eq!(read_answer(store.dir(), &request.id).unwrap(), Some(answer));
        assert_eq!(
            verdict_for(store.dir(), &checking),
            Some((true, MARKED_GOOD.to_string()))
        );
        let mut retried = checking.clone();
        retried.attempts += 1;
        assert_eq!(verdict_for(store.dir(), &retried), None);
        discard_verdict(store.dir(), &checking);
        assert_eq!(verdict_for(store.dir(), &checking), None);
    }
}
