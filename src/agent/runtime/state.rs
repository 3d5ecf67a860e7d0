//! The agent's durable memory, in the state dir: per update name, the announcements accepted
//! and what became of them; and a bounded log of rejected ones. Everything is keyed by name,
//! seq and info-hash, never by Transmission's torrent ids (they change across restarts).
//! Files are JSON written atomically, so a crash leaves the last complete state.
//!
//! The history of a name is bounded, so the highest seq ever accepted per name is also kept on
//! its own (`highest/<name>.json`): whatever fills the history (held announcements from the
//! far future, say) cannot make a replay of an evicted accepted seq look new. Signed
//! announcements and legacy payloads keep separate sequences ([`Lineage`]).
//!
//! A record is typed ([`RecordKind`], a SHA-256 of 32 bytes) but written as it always was:
//! `kind` the kind's name or `legacy`, `sha256` hex or empty, so state left by an older p2pu
//! still loads.
//!
//! The state is root's alone (files 0600, subdirectories 0700): records carry 4,000 characters
//! of Puppet output, which can hold anything a manifest prints. The state dir itself stays
//! traversable because the download dir lies under it by default; `p2pu status` needs root.

use super::{Result, RuntimeError};
use crate::formats::announcement::Kind;
use crate::fsutil::write_atomic;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::path::{Path, PathBuf};

/// Modes of the state's files and of the directories that hold them.
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;
/// `plans/`: the rollout plans this node verified, read back from here rather than from the
/// download dir, which another user writes.
const SUBDIRS: [&str; 4] = ["names", "highest", "controls", "plans"];

/// How many records of one name, and how many rejections, are kept.
const HISTORY: usize = 20;
const REJECTIONS: usize = 100;

/// The most of an update's output (Puppet's, a health check's) a record keeps: its end, where
/// the errors are.
pub const OUTPUT_IN_RECORD: usize = 4000;

/// The last `max` bytes of `text`, trimmed, on a character boundary: what a record keeps of
/// an output.
pub fn tail(text: &str, max: usize) -> String {
    let text = text.trim();
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Accepted; being downloaded.
    Pending,
    /// Downloaded and verified; being applied.
    Applying,
    Applied,
    Failed,
    /// Signed and valid but its seq lies too far in the future: kept aside, not applied.
    Held,
    /// An attempt failed; another is due at the record's `next_attempt_at`.
    Retrying,
    /// Outside its rollout plan's target: fetched and seeded for the others, never applied.
    NotTargeted,
    /// Fetched; its wave waits for the earlier waves (the reason says which).
    Waiting,
    /// Not applied and held: the rollout's failure threshold was crossed, or an operator
    /// aborted it (the reason says which); `p2pu rollout resume` lets it go on.
    Halted,
    /// Applied; the health check is running. Recorded before the check starts, so an agent
    /// restarted in the middle runs it again.
    Checking,
    /// The health check failed; the last good version of the name is being applied again.
    Reverting,
    /// The health check failed and the last good version (`restored_seq`) was applied again.
    /// A failure, for the rollout's threshold.
    Reverted,
}

/// What a node's status means for a rollout that follows it (`submit --wait`,
/// `fleet status --watch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutOutcome {
    Applied,
    /// Failed or reverted: counts toward the rollout's failure threshold.
    Failed,
    /// The rollout stopped itself on this node.
    Halted,
    /// The update is not for this node.
    NotTargeted,
    /// Still in progress.
    Open,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Applying => "applying",
            Status::Applied => "applied",
            Status::Failed => "failed",
            Status::Held => "held",
            Status::Retrying => "retrying",
            Status::Checking => "checking",
            Status::Reverting => "reverting",
            Status::Reverted => "reverted",
            Status::NotTargeted => "not-targeted",
            Status::Waiting => "waiting",
            Status::Halted => "halted",
        }
    }

    /// Where a rollout stands on a node in this status.
    pub fn rollout_outcome(self) -> RolloutOutcome {
        match self {
            Status::Applied => RolloutOutcome::Applied,
            Status::Failed | Status::Reverted => RolloutOutcome::Failed,
            Status::Halted => RolloutOutcome::Halted,
            Status::NotTargeted => RolloutOutcome::NotTargeted,
            Status::Pending
            | Status::Applying
            | Status::Held
            | Status::Retrying
            | Status::Waiting
            | Status::Checking
            | Status::Reverting => RolloutOutcome::Open,
        }
    }

    /// Whether the agent still has work to do on it.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            Status::Pending
                | Status::Applying
                | Status::Retrying
                | Status::Waiting
                | Status::Checking
                | Status::Reverting
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub name: String,
    pub seq: u64,
    pub kind: RecordKind,
    pub info_hash: String,
    pub len: u64,
    /// The signed SHA-256 of the payload; legacy payloads sign none.
    #[serde(with = "sha256_text")]
    pub sha256: Option<[u8; 32]>,
    /// The announcement as received, to re-serve it to nodes catching up (and for the intake
    /// to decode again when the agent resumes the record after a restart).
    pub wire: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Puppet's (or the applier's) output, trimmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    pub received_at: u64,
    pub updated_at: u64,
    /// Where the payload came from over HTTP: each source in turn, what it sent and why it
    /// was left (a bad piece names a lying member).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceUse>,
    /// A striped fetch's sources, per stripe: which member sent it, from which block, how
    /// many blocks, and why it was left (at most `MAX_STRIPE_SOURCES` a stripe).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stripes: Vec<StripeUse>,
    /// How many attempts to fetch and apply it have ended (a retried update counts each).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// While `retrying`: when the next attempt is due, in seconds since the epoch. Kept here so
    /// a restarted agent waits out the same backoff instead of retrying at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<u64>,
    /// When `reverted`: the seq of the good version that was applied again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_seq: Option<u64>,
    /// The rollout plan the announcement is bound to (canonical bencode, UTF-8 text), as
    /// verified with it: targeting and waves are read from it, and a resumed record verifies
    /// again with it. Absent in records of updates without a plan and from older p2pu.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
}

impl Record {
    /// A pending record of an update received at `now` (unix seconds), with nothing yet
    /// about what it is beyond its name, seq and kind: callers fill in what was signed with
    /// `Record { info_hash, len, sha256, wire, ..Record::received(..) }`. Everything the
    /// workers add later starts empty here, the one place a record is made from scratch, so a
    /// new field is added once.
    pub fn received(name: String, seq: u64, kind: RecordKind, now: u64) -> Record {
        Record {
            name,
            seq,
            kind,
            info_hash: String::new(),
            len: 0,
            sha256: None,
            wire: String::new(),
            status: Status::Pending,
            reason: None,
            output: None,
            received_at: now,
            updated_at: now,
            sources: Vec::new(),
            stripes: Vec::new(),
            attempts: 0,
            next_attempt_at: None,
            restored_seq: None,
            plan: None,
        }
    }

    /// The reason as tables show it (`status`, `history`): a retry says when it is due.
    pub fn shown_reason(&self, now_secs: u64) -> String {
        let reason = self.reason.as_deref().unwrap_or("");
        match (self.status, self.next_attempt_at) {
            (Status::Retrying, Some(at)) => format!(
                "next attempt in {} s; {reason}",
                at.saturating_sub(now_secs)
            ),
            _ => reason.to_string(),
        }
    }
}

impl Record {
    /// Its status from `now` (unix seconds) on, with the reason and output that go with it.
    pub fn settle(
        &mut self,
        status: Status,
        reason: Option<String>,
        output: Option<String>,
        now: u64,
    ) {
        self.status = status;
        self.reason = reason;
        self.output = output;
        self.updated_at = now;
    }
}

/// One source of a payload fetched over HTTP, as `p2pu status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceUse {
    /// The member's seed server.
    pub addr: String,
    /// The byte it started from (a source that takes over resumes where the last stopped).
    pub from: u64,
    pub bytes: u64,
    /// How long it was streamed from, in milliseconds.
    pub millis: u64,
    /// Pieces it sent that did not match the signed torrent.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bad_pieces: u32,
    /// Why it was left, when it did not send the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How many sources of one stripe a record keeps: the first (its planned parent, or whom the
/// plan gave first) and the newest; those between are dropped, so a record stays within
/// `d` stripes times this whatever fails.
pub const MAX_STRIPE_SOURCES: usize = 4;

/// One source of one stripe of a striped fetch, as `p2pu status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeUse {
    pub stripe: u32,
    /// The member, by its name in the roster.
    pub member: String,
    /// The first block it was asked for.
    pub from: u32,
    /// The blocks it sent that this node checked and kept.
    pub blocks: u32,
    /// Why it was left (`crashed`, `hung`, `refused`, `lied: block N failed its check`,
    /// `slow`: its stripe lagged far behind the node's others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left: Option<String>,
    /// A repair read's source (a neighbour or a lost parent's parent), not the stripe's
    /// stream.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repair: bool,
}

/// One stripe's sources in turn, bounded by [`MAX_STRIPE_SOURCES`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StripeLog {
    stripe: u32,
    uses: Vec<StripeUse>,
}

impl StripeLog {
    pub fn new(stripe: u32) -> StripeLog {
        StripeLog {
            stripe,
            uses: Vec::new(),
        }
    }

    /// `member` is asked for the stripe from block `from`. Asking the one just asked again
    /// from the same block, with nothing sent between (an origin waited out, a parent not
    /// started yet), is the same use.
    pub fn asked(&mut self, member: &str, from: u32) {
        if let Some(last) = self.uses.last_mut() {
            if last.member == member && last.from == from && last.blocks == 0 {
                last.left = None;
                return;
            }
        }
        if self.uses.len() >= MAX_STRIPE_SOURCES {
            self.uses.remove(1);
        }
        self.uses.push(StripeUse {
            stripe: self.stripe,
            member: member.to_string(),
            from,
            blocks: 0,
            left: None,
            repair: false,
        });
    }

    /// A repair read from `member`, asked from block `from`, brought `blocks` this node kept;
    /// one use a member, however many reads (the newest `from` kept), bounded as the stream's.
    pub fn repaired(&mut self, member: &str, from: u32, blocks: u32) {
        if let Some(at) = self
            .uses
            .iter()
            .position(|u| u.repair && u.member == member)
        {
            // The newest last, so that `left` names it.
            let mut known = self.uses.remove(at);
            known.blocks = known.blocks.saturating_add(blocks);
            known.left = None;
            self.uses.push(known);
            return;
        }
        if self.uses.len() >= MAX_STRIPE_SOURCES {
            self.uses.remove(0);
        }
        self.uses.push(StripeUse {
            stripe: self.stripe,
            member: member.to_string(),
            from,
            blocks,
            left: None,
            repair: true,
        });
    }

    /// The member asked last sent a block this node kept.
    pub fn kept(&mut self) {
        if let Some(last) = self.uses.last_mut() {
            last.blocks = last.blocks.saturating_add(1);
        }
    }

    /// The member asked last was left, and why.
    pub fn left(&mut self, why: impl std::fmt::Display) {
        if let Some(last) = self.uses.last_mut() {
            last.left = Some(why.to_string());
        }
    }

    pub fn into_uses(self) -> Vec<StripeUse> {
        self.uses
    }
}

#[cfg(test)]
impl Record {
    /// A pending record of `content` as the download code sees one: signed length and SHA-256.
    pub fn pending(name: &str, info_hash: &str, content: &[u8]) -> Record {
        use sha2::{Digest, Sha256};
        Record {
            info_hash: info_hash.into(),
            len: content.len() as u64,
            sha256: Some(Sha256::digest(content).into()),
            ..Record::received(name.into(), 1, RecordKind::Signed(Kind::File), 0)
        }
    }
}

/// The newest operator control statement a node verified for one update (`p2pu rollout
/// abort|resume|retry|revert`): an older one for the same update is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSeen {
    pub seq: u64,
    /// `abort`, `resume`, `retry` or `revert`.
    pub action: String,
    /// When the operator signed it (unix seconds).
    pub issued: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rejection {
    pub at: u64,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    pub reason: String,
}

/// Which sequence a record's seq belongs to. Signed announcements count milliseconds and are
/// authenticated; legacy payloads count their torrent's creation date in seconds and are not.
/// The two never compare, so an unauthenticated legacy date can block no signed update, and
/// what legacy left behind blocks nothing once `accept_legacy` is turned off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lineage {
    Signed,
    Legacy,
}

impl Lineage {
    pub fn of(record: &Record) -> Lineage {
        match record.kind {
            RecordKind::Signed(_) => Lineage::Signed,
            RecordKind::Legacy => Lineage::Legacy,
        }
    }
}

/// What a record was accepted from: a signed announcement, whose kind decides how it is
/// applied, or a prototype payload, which names no kind (the apply guesses it from the name).
/// Written as the kind's name, or `legacy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Signed(Kind),
    Legacy,
}

impl RecordKind {
    /// What state files and `p2pu status` say for legacy payloads.
    const LEGACY: &'static str = "legacy";

    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Signed(kind) => kind.as_str(),
            RecordKind::Legacy => Self::LEGACY,
        }
    }
}

impl std::fmt::Display for RecordKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, not `write_str`: the status table aligns this column with a width.
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for RecordKind {
    type Err = crate::formats::announcement::AnnouncementError;
    fn from_str(text: &str) -> std::result::Result<RecordKind, Self::Err> {
        if text == Self::LEGACY {
            Ok(RecordKind::Legacy)
        } else {
            text.parse().map(RecordKind::Signed)
        }
    }
}

impl Serialize for RecordKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RecordKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `Record::sha256` as state files hold it: lowercase hex, or empty for a legacy payload.
mod sha256_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        sha256: &Option<[u8; 32]>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&sha256.map(hex::encode).unwrap_or_default())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<[u8; 32]>, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.is_empty() {
            return Ok(None);
        }
        let mut sha256 = [0; 32];
        hex::decode_to_slice(&text, &mut sha256).map_err(|e| {
            serde::de::Error::custom(format_args!("sha256 {text:?} is not 64 hex digits: {e}"))
        })?;
        Ok(Some(sha256))
    }
}

/// The highest seq accepted per lineage of one name, kept outside the bounded history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Highest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    legacy: Option<u64>,
}

impl Highest {
    fn slot(&mut self, lineage: Lineage) -> &mut Option<u64> {
        match lineage {
            Lineage::Signed => &mut self.signed,
            Lineage::Legacy => &mut self.legacy,
        }
    }
}

/// Why an announcement of a known name is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeqVerdict {
    New,
    /// The same (name, seq) was accepted before.
    Replay,
    /// An older seq than one accepted before: a downgrade.
    Older {
        newest: u64,
    },
}

pub struct StateStore {
    dir: PathBuf,
    /// Held across each read-modify-write of a file (a name's records, its highest mark, its
    /// controls, the rejections): the intake, the four download workers, the waves' threads
    /// and the retries write the same name's file at once. Without it a worker recording seq
    /// 2 superseded wrote back the list it had read before the intake added seq 3, and seq 3's
    /// record was gone (applied, then "no record of c.pp seq 3"; seen in
    /// tests/converge.rs `nodes_down_through_several_updates_apply_only_the_newest_of_each_name`).
    writing: std::sync::Mutex<()>,
}

impl StateStore {
    /// Opens (creating) the state in `dir`, and makes what an older p2pu left world-readable
    /// root's alone. A reader that is not root cannot tighten anything and is not stopped by
    /// trying; it then fails where it lacks permission, with the path.
    pub fn open(dir: &Path) -> Result<StateStore> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        // The state dir itself keeps the usual mode: the download dir lies under it by default
        // and Transmission and the seed server must reach it.
        std::fs::create_dir_all(dir).map_err(RuntimeError::io("creating state directory", dir))?;
        for sub in SUBDIRS {
            let path = dir.join(sub);
            match std::fs::DirBuilder::new().mode(DIR_MODE).create(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(RuntimeError::io("creating state directory", &path)(e)),
            }
        }
        let mut paths: Vec<PathBuf> = SUBDIRS.iter().map(|sub| dir.join(sub)).collect();
        for sub in SUBDIRS {
            if let Ok(entries) = std::fs::read_dir(dir.join(sub)) {
                paths.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
            }
        }
        paths.push(dir.join("rejections.json"));
        for path in paths {
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let want = if meta.is_dir() { DIR_MODE } else { FILE_MODE };
            if meta.file_type().is_symlink() || meta.permissions().mode() & 0o077 == 0 {
                continue;
            }
            let tightened = std::fs::Permissions::from_mode(want);
            if let Err(e) = std::fs::set_permissions(&path, tightened) {
                tracing::debug!(path = %path.display(), "cannot tighten the state's mode: {e}");
            }
        }
        Ok(StateStore {
            dir: dir.to_path_buf(),
            writing: std::sync::Mutex::new(()),
        })
    }

    /// The store as a reader sees it (`p2pu status`, the status query): creates nothing, so a
    /// user without write access can look, and a state dir the agent has not made yet reads as
    /// empty.
    pub fn open_read_only(dir: &Path) -> StateStore {
        StateStore {
            dir: dir.to_path_buf(),
            writing: std::sync::Mutex::new(()),
        }
    }

    /// The state dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn name_file(&self, name: &str) -> PathBuf {
        self.dir.join("names").join(format!("{name}.json"))
    }

    /// Every record of `name`, oldest first.
    pub fn records(&self, name: &str) -> Result<Vec<Record>> {
        read_json(&self.name_file(name)).map(Option::unwrap_or_default)
    }

    fn control_file(&self, name: &str) -> PathBuf {
        self.dir.join("controls").join(format!("{name}.json"))
    }

    fn controls(&self, name: &str) -> Result<Vec<ControlSeen>> {
        read_json(&self.control_file(name)).map(Option::unwrap_or_default)
    }

    /// The newest verified `abort` or `resume` (`p2pu rollout`) of (`name`, `seq`): whether
    /// its rollout is held by the operator. A `retry` does not change that.
    pub fn control(&self, name: &str, seq: u64) -> Result<Option<ControlSeen>> {
        Ok(self
            .controls(name)?
            .into_iter()
            .find(|c| c.seq == seq && c.action != "retry"))
    }

    /// When the newest control statement of any action for (`name`, `seq`) was issued: an
    /// older one is a replay.
    pub fn control_issued(&self, name: &str, seq: u64) -> Result<Option<u64>> {
        Ok(self
            .controls(name)?
            .iter()
            .filter(|c| c.seq == seq)
            .map(|c| c.issued)
            .max())
    }

    /// Keeps `control` as the newest of its kind (abort/resume, or retry) for its (name, seq).
    pub fn put_control(&self, name: &str, control: ControlSeen) -> Result<()> {
        let _writing = self.lock();
        let path = self.control_file(name);
        let mut seen = self.controls(name)?;
        let retry = control.action == "retry";
        seen.retain(|c| c.seq != control.seq || (c.action == "retry") != retry);
        seen.push(control);
        seen.sort_by_key(|c| c.seq);
        let excess = seen.len().saturating_sub(2 * HISTORY);
        seen.drain(..excess);
        write_json(&path, &seen)
    }

    fn highest_file(&self, name: &str) -> PathBuf {
        self.dir.join("highest").join(format!("{name}.json"))
    }

    /// The highest seq of `lineage` ever accepted for `name` (held records were not accepted).
    /// State written before the mark existed is covered by the records themselves.
    pub fn highest(&self, name: &str, lineage: Lineage) -> Result<Option<u64>> {
        self.highest_in(name, lineage, &self.records(name)?)
    }

    /// [`Self::highest`] with the name's `records` already read.
    fn highest_in(&self, name: &str, lineage: Lineage, records: &[Record]) -> Result<Option<u64>> {
        let mut mark: Highest = read_json(&self.highest_file(name))?.unwrap_or_default();
        let recorded = records
            .iter()
            .filter(|r| r.status != Status::Held && Lineage::of(r) == lineage)
            .map(|r| r.seq)
            .max();
        Ok((*mark.slot(lineage)).max(recorded))
    }

    /// Decides whether `seq` is new for `name` in `lineage`: held announcements do not count,
    /// and neither does the other lineage.
    pub fn check_seq(&self, name: &str, lineage: Lineage, seq: u64) -> Result<SeqVerdict> {
        let records = self.records(name)?;
        let replayed = records
            .iter()
            .any(|r| r.seq == seq && r.status != Status::Held && Lineage::of(r) == lineage);
        match self.highest_in(name, lineage, &records)? {
            _ if replayed => Ok(SeqVerdict::Replay),
            Some(newest) if newest == seq => Ok(SeqVerdict::Replay),
            Some(newest) if newest > seq => Ok(SeqVerdict::Older { newest }),
            _ => Ok(SeqVerdict::New),
        }
    }

    /// Adds or replaces the record of (name, lineage, seq). An accepted one raises the name's
    /// highest mark first, so a crash in between refuses too much rather than too little.
    pub fn put(&self, record: Record) -> Result<()> {
        let _writing = self.lock();
        self.put_locked(record)
    }

    /// The writers' lock (a poisoned one is taken as it is: the files are replaced whole).
    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`StateStore::put`] with the writers' lock held.
    fn put_locked(&self, record: Record) -> Result<()> {
        let lineage = Lineage::of(&record);
        if record.status != Status::Held {
            let path = self.highest_file(&record.name);
            let mut mark: Highest = read_json(&path)?.unwrap_or_default();
            let slot = mark.slot(lineage);
            if slot.is_none_or(|s| s < record.seq) {
                *slot = Some(record.seq);
                write_json(&path, &mark)?;
            }
        }
        let mut records = self.records(&record.name)?;
        records.retain(|r| r.seq != record.seq || Lineage::of(r) != lineage);
        records.push(record.clone());
        records.sort_by_key(|r| r.seq);
        let excess = records.len().saturating_sub(HISTORY);
        records.drain(..excess);
        write_json(&self.name_file(&record.name), &records)
    }

    /// Sets the status (and reason/output) of an existing record.
    pub fn set_status(
        &self,
        name: &str,
        seq: u64,
        status: Status,
        reason: Option<String>,
        output: Option<String>,
        now: u64,
    ) -> Result<Record> {
        self.update(name, seq, |record| {
            record.settle(status, reason, output, now)
        })
    }

    /// Applies `change` to the record of (`name`, `seq`) and stores it: for the fields
    /// `set_status` does not cover (attempts, the next attempt's time). What the intake
    /// verified (name, seq, kind, payload hashes and length, wire text, plan) is not the
    /// change's to touch: a change that does is refused and nothing is stored, so no module
    /// but the intake makes or rewrites a verified record through here.
    pub fn update(&self, name: &str, seq: u64, change: impl FnOnce(&mut Record)) -> Result<Record> {
        let _writing = self.lock();
        let mut record = self
            .records(name)?
            .into_iter()
            .find(|r| r.seq == seq)
            .ok_or_else(|| RuntimeError::NoRecord {
                name: name.to_string(),
                seq,
            })?;
        let verified = record.clone();
        change(&mut record);
        if let Some(field) = verified_change(&verified, &record) {
            return Err(RuntimeError::VerifiedChanged {
                name: name.to_string(),
                seq,
                field,
            });
        }
        self.put_locked(record.clone())?;
        Ok(record)
    }

    /// Every name with a record, sorted.
    pub fn names(&self) -> Result<Vec<String>> {
        let dir = self.dir.join("names");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // Opened read-only before the agent ever ran.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(RuntimeError::io("listing", &dir)(e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".json")
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// The newest record of each name.
    pub fn latest(&self) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        for name in self.names()? {
            if let Some(record) = self
                .records(&name)?
                .into_iter()
                .filter(|r| r.status != Status::Held)
                .max_by_key(|r| r.seq)
            {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Records the agent must still finish (after a crash or restart).
    pub fn open_records(&self) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        for name in self.names()? {
            out.extend(
                self.records(&name)?
                    .into_iter()
                    .filter(|r| r.status.is_open()),
            );
        }
        Ok(out)
    }

    pub fn reject(&self, rejection: Rejection) -> Result<()> {
        let _writing = self.lock();
        let path = self.dir.join("rejections.json");
        let mut all: Vec<Rejection> = read_json(&path)?.unwrap_or_default();
        all.push(rejection);
        let excess = all.len().saturating_sub(REJECTIONS);
        all.drain(..excess);
        write_json(&path, &all)
    }

    pub fn rejections(&self) -> Result<Vec<Rejection>> {
        read_json(&self.dir.join("rejections.json")).map(Option::unwrap_or_default)
    }
}

/// The first field the intake verified that differs between `before` and `after`.
fn verified_change(before: &Record, after: &Record) -> Option<&'static str> {
    let fields = [
        ("name", before.name == after.name),
        ("seq", before.seq == after.seq),
        ("kind", before.kind == after.kind),
        ("info_hash", before.info_hash == after.info_hash),
        ("len", before.len == after.len),
        ("sha256", before.sha256 == after.sha256),
        ("wire", before.wire == after.wire),
        ("plan", before.plan == after.plan),
        ("received_at", before.received_at == after.received_at),
    ];
    fields
        .into_iter()
        .find(|(_, same)| !same)
        .map(|(field, _)| field)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RuntimeError::io("reading state", path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| RuntimeError::Parse {
            path: path.to_path_buf(),
            source: e,
        })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| RuntimeError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    Ok(write_atomic(path, &bytes, FILE_MODE)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, seq: u64, status: Status) -> Record {
        Record {
            info_hash: "00".repeat(20),
            len: 1,
            sha256: Some([0; 32]),
            wire: "p2pu1:x".into(),
            status,
            ..Record::received(name.into(), seq, RecordKind::Signed(Kind::Manifest), 1)
        }
    }

    /// `names/<name>.json` as p2pu wrote it while `kind` and `sha256` were plain strings: a
    /// signed manifest and a legacy payload (whose SHA-256 is empty).
    const OLDER_NAMES_FILE: &str = r#"[
  {
    "name": "site.pp",
    "seq": 1497349863,
    "kind": "legacy",
    "info_hash": "1111111111111111111111111111111111111111",
    "len": 5,
    "sha256": "",
    "wire": "d8:announce...e",
    "status": "applied",
    "reason": "puppet apply: nothing to change",
    "received_at": 1497349870,
    "updated_at": 1497349871
  },
  {
    "name": "site.pp",
    "seq": 1800000000000,
    "kind": "manifest",
    "info_hash": "0101010101010101010101010101010101010101",
    "len": 10,
    "sha256": "02020202020202020202020202020202020202020202020202020202020202ff",
    "wire": "p2pu1:x",
    "status": "failed",
    "reason": "puppet apply: exit 1",
    "output": "Error: boom",
    "received_at": 1800000000,
    "updated_at": 1800000001
  }
]
"#;

    /// State on disk outlives the binary: an upgraded agent must read what the older one
    /// wrote, typed, and write it back in the same form.
    #[test]
    fn a_names_file_written_before_records_were_typed_loads_and_keeps_its_form() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let path = dir.path().join("names/site.pp.json");
        std::fs::write(&path, OLDER_NAMES_FILE).unwrap();
        let records = store.records("site.pp").unwrap();
        let mut sha256 = [2; 32];
        sha256[31] = 0xff;
        assert_eq!(
            records
                .iter()
                .map(|r| (r.kind, r.sha256, Lineage::of(r)))
                .collect::<Vec<_>>(),
            [
                (RecordKind::Legacy, None, Lineage::Legacy),
                (
                    RecordKind::Signed(Kind::Manifest),
                    Some(sha256),
                    Lineage::Signed
                ),
            ]
        );
        assert_eq!(records[1].output.as_deref(), Some("Error: boom"));
        write_json(&path, &records).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), OLDER_NAMES_FILE);
    }

    #[test]
    fn typed_records_round_trip_through_their_file_as_strings() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let signed = record("site.pp", 7, Status::Pending);
        let mut legacy = record("site.pp", 5, Status::Applied);
        (legacy.kind, legacy.sha256) = (RecordKind::Legacy, None);
        for kind in Kind::ALL {
            let mut of_kind = signed.clone();
            of_kind.kind = RecordKind::Signed(kind);
            let text = serde_json::to_string(&of_kind).unwrap();
            assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), of_kind);
        }
        store.put(legacy.clone()).unwrap();
        store.put(signed.clone()).unwrap();
        let reopened = StateStore::open(dir.path()).unwrap();
        assert_eq!(reopened.records("site.pp").unwrap(), [legacy, signed]);
        let text = std::fs::read_to_string(dir.path().join("names/site.pp.json")).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (&json[0]["kind"], &json[0]["sha256"]),
            (&"legacy".into(), &"".into())
        );
        assert_eq!(
            (&json[1]["kind"], &json[1]["sha256"]),
            (&"manifest".into(), &"00".repeat(32).into())
        );
    }

    /// `p2pu status` lines its KIND column up with a width: the typed kind must honour it as
    /// the string did.
    #[test]
    fn a_record_kind_pads_in_the_status_table_like_the_string_it_replaced() {
        assert_eq!(format!("{:<9}|", RecordKind::Legacy), "legacy   |");
        let manifest = RecordKind::Signed(Kind::Manifest);
        assert_eq!(format!("{manifest:<9}|"), "manifest |");
    }

    /// A record that cannot be typed fails with what is wrong, not as a bare serde error.
    #[test]
    fn an_unknown_kind_or_a_bad_sha256_names_what_is_wrong() {
        let text = serde_json::to_string(&record("site.pp", 7, Status::Pending)).unwrap();
        let unknown = text.replace(r#""manifest""#, r#""firmware""#);
        let err = serde_json::from_str::<Record>(&unknown).unwrap_err();
        assert!(err.to_string().contains("\"firmware\""), "{err}");
        let short = text.replace(&"00".repeat(32), "abc");
        let err = serde_json::from_str::<Record>(&short).unwrap_err();
        assert!(err.to_string().contains("sha256 \"abc\""), "{err}");
    }

    #[test]
    fn seq_must_grow_per_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(
            store.check_seq("site.pp", Lineage::Signed, 5).unwrap(),
            SeqVerdict::New
        );
        store.put(record("site.pp", 5, Status::Applied)).unwrap();
        assert_eq!(
            store.check_seq("site.pp", Lineage::Signed, 5).unwrap(),
            SeqVerdict::Replay
        );
        assert_eq!(
            store.check_seq("site.pp", Lineage::Signed, 4).unwrap(),
            SeqVerdict::Older { newest: 5 }
        );
        assert_eq!(
            store.check_seq("site.pp", Lineage::Signed, 6).unwrap(),
            SeqVerdict::New
        );
        assert_eq!(
            store.check_seq("other.pp", Lineage::Signed, 1).unwrap(),
            SeqVerdict::New
        );
        // A held (future) announcement blocks nothing.
        store.put(record("site.pp", 99, Status::Held)).unwrap();
        assert_eq!(
            store.check_seq("site.pp", Lineage::Signed, 6).unwrap(),
            SeqVerdict::New
        );
    }

    /// Twenty held (far-future) records fill the history and evict the accepted ones; the
    /// accepted seqs must still not come back as new.
    #[test]
    fn held_records_filling_the_history_reopen_no_replay() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        store.put(record("site.pp", 5, Status::Applied)).unwrap();
        store.put(record("site.pp", 6, Status::Applied)).unwrap();
        for seq in 0..HISTORY as u64 {
            store
                .put(record("site.pp", 1_000 + seq, Status::Held))
                .unwrap();
        }
        let records = store.records("site.pp").unwrap();
        assert!(records.iter().all(|r| r.status == Status::Held));
        assert_eq!(
            store.check_seq("site.pp", Lineage::Signed, 6).unwrap(),
            SeqVerdict::Replay
        );
        assert_eq!(
            store.check_seq("site.pp", Lineage::Signed, 5).unwrap(),
            SeqVerdict::Older { newest: 6 }
        );
        assert_eq!(
            store.check_seq("site.pp", Lineage::Signed, 7).unwrap(),
            SeqVerdict::New
        );
        // The mark survives reopening, and a status change does not lower it.
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.highest("site.pp", Lineage::Signed).unwrap(), Some(6));
    }

    #[test]
    fn signed_and_legacy_sequences_never_compare() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let mut legacy = record("site.pp", 99_999_999_999_999, Status::Applied);
        legacy.kind = RecordKind::Legacy;
        store.put(legacy).unwrap();
        store.put(record("site.pp", 7, Status::Applied)).unwrap();
        assert_eq!(
            store.check_seq("site.pp", Lineage::Signed, 8).unwrap(),
            SeqVerdict::New
        );
        assert_eq!(
            store.check_seq("site.pp", Lineage::Legacy, 8).unwrap(),
            SeqVerdict::Older {
                newest: 99_999_999_999_999
            }
        );
        assert_eq!(
            store.check_seq("site.pp", Lineage::Signed, 7).unwrap(),
            SeqVerdict::Replay
        );
        assert_eq!(
            store.check_seq("site.pp", Lineage::Legacy, 7).unwrap(),
            SeqVerdict::Older {
                newest: 99_999_999_999_999
            }
        );
    }

    /// The intake, the workers and the waves' threads write one name's records at once: each
    /// write reads the list and writes it back whole, so without the writers' lock one thread
    /// wrote back a list read before another's record was added, and that record was gone.
    #[test]
    fn records_written_at_once_from_many_threads_are_all_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        for seq in 1..=8 {
            store.put(record("a.pp", seq, Status::Pending)).unwrap();
        }
        std::thread::scope(|scope| {
            for seq in 1..=8 {
                let store = &store;
                // One thread adds a record while another settles an existing one.
                scope.spawn(move || {
                    store
                        .put(record("a.pp", 100 + seq, Status::Pending))
                        .unwrap()
                });
                scope.spawn(move || {
                    for _ in 0..3 {
                        store
                            .set_status("a.pp", seq, Status::Failed, None, None, 1)
                            .unwrap();
                    }
                });
            }
        });
        let seqs: Vec<u64> = store
            .records("a.pp")
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs.len(), 16, "{seqs:?}");
    }

    /// Hostile review of issue 28: only the intake makes records, from verified decisions
    /// (`tests/structure.rs::records_are_written_only_by_the_intake`), but `update` handed any
    /// caller the whole record and stored whatever came back: a new seq, another wire text or
    /// plan, another payload hash, so a module outside the intake could make or rewrite a
    /// verified record through it. What the intake verified is refused and nothing is stored;
    /// the fields the workers keep (status, reason, output, attempts, sources) still change.
    #[test]
    fn update_changes_what_the_workers_keep_never_what_was_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        store.put(record("site.pp", 5, Status::Pending)).unwrap();
        type Change = fn(&mut Record);
        let forged: [(&str, Change); 7] = [
            ("seq", |r| r.seq = 6),
            ("name", |r| r.name = "other.pp".into()),
            ("wire", |r| r.wire = "p2pu1:forged".into()),
            ("plan", |r| r.plan = Some("d1:vi1ee".into())),
            ("info_hash", |r| r.info_hash = "11".repeat(20)),
            ("sha256", |r| r.sha256 = Some([1; 32])),
            ("kind", |r| r.kind = RecordKind::Legacy),
        ];
        for (field, change) in forged {
            let refused = store.update("site.pp", 5, change);
            assert!(
                matches!(refused, Err(RuntimeError::VerifiedChanged { .. })),
                "{field}: {refused:?}"
            );
        }
        assert_eq!(
            store.records("site.pp").unwrap(),
            [record("site.pp", 5, Status::Pending)]
        );
        assert!(store.records("other.pp").unwrap().is_empty());
        assert_eq!(store.highest("site.pp", Lineage::Signed).unwrap(), Some(5));
        let kept = store
            .update("site.pp", 5, |r| {
                r.status = Status::Failed;
                r.attempts = 2;
                r.reason = Some("why".into());
            })
            .unwrap();
        assert_eq!((kept.status, kept.attempts), (Status::Failed, 2));
        assert_eq!(store.records("site.pp").unwrap(), [kept]);
    }

    /// Records hold Puppet's output: state files used to be 0644, readable by every local user.
    #[test]
    fn state_is_root_only_and_an_older_readable_state_is_tightened() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let base = tempfile::tempdir().unwrap();
        let dir = &base.path().join("state");
        let store = StateStore::open(dir).unwrap();
        // Created here, the state dir itself keeps the usual mode: the download dir lies
        // under it by default.
        std::fs::create_dir(base.path().join("usual")).unwrap();
        assert_eq!(mode(dir), mode(&base.path().join("usual")));
        store.put(record("site.pp", 5, Status::Applied)).unwrap();
        store
            .reject(Rejection {
                at: 1,
                source: "serf".into(),
                name: None,
                seq: None,
                reason: "bad".into(),
            })
            .unwrap();
        let files = [
            dir.join("names/site.pp.json"),
            dir.join("highest/site.pp.json"),
            dir.join("rejections.json"),
        ];
        for file in &files {
            assert_eq!(mode(file), 0o600, "{}", file.display());
        }
        for sub in SUBDIRS {
            assert_eq!(mode(&dir.join(sub)), 0o700, "{sub}");
        }
        // What an older p2pu wrote (0755 directories, 0644 files) is tightened on opening.
        for sub in SUBDIRS {
            let open = std::fs::Permissions::from_mode(0o755);
            std::fs::set_permissions(dir.join(sub), open).unwrap();
        }
        for file in &files {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        StateStore::open(dir).unwrap();
        for file in &files {
            assert_eq!(mode(file), 0o600, "{}", file.display());
        }
        for sub in SUBDIRS {
            assert_eq!(mode(&dir.join(sub)), 0o700, "{sub}");
        }
    }

    #[test]
    fn status_changes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        store.put(record("a.pp", 1, Status::Pending)).unwrap();
        store.put(record("b.pp", 2, Status::Applied)).unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.open_records().unwrap().len(), 1);
        store
            .set_status(
                "a.pp",
                1,
                Status::Failed,
                Some("puppet failed".into()),
                None,
                9,
            )
            .unwrap();
        assert!(store.open_records().unwrap().is_empty());
        let latest = store.latest().unwrap();
        assert_eq!(
            latest
                .iter()
                .map(|r| (r.name.as_str(), r.status))
                .collect::<Vec<_>>(),
            vec![("a.pp", Status::Failed), ("b.pp", Status::Applied)]
        );
    }

    #[test]
    fn history_and_rejections_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        for seq in 0..30 {
            store.put(record("a.pp", seq, Status::Applied)).unwrap();
        }
        assert_eq!(store.records("a.pp").unwrap().len(), HISTORY);
        for at in 0..(REJECTIONS as u64 + 5) {
            store
                .reject(Rejection {
                    at,
                    source: "serf".into(),
                    name: None,
                    seq: None,
                    reason: "bad".into(),
                })
                .unwrap();
        }
        let rejections = store.rejections().unwrap();
        assert_eq!(rejections.len(), REJECTIONS);
        assert_eq!(rejections[0].at, 5);
    }

    #[test]
    fn a_damaged_state_file_and_a_missing_record_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        store.put(record("site.pp", 1, Status::Pending)).unwrap();
        let err = store
            .set_status("site.pp", 2, Status::Applied, None, None, 5)
            .unwrap_err();
        assert!(
            matches!(&err, RuntimeError::NoRecord { name, seq: 2 } if name == "site.pp"),
            "{err}"
        );
        let file = dir.path().join("names/site.pp.json");
        std::fs::write(&file, b"{not json").unwrap();
        let err = store.records("site.pp").unwrap_err();
        assert!(
            matches!(&err, RuntimeError::Parse { path, .. } if *path == file),
            "{err}"
        );
        let text = crate::error::chain(&err);
        assert!(
            text.starts_with(&format!("parsing state {}: ", file.display())),
            "{text}"
        );
    }

    /// Repair reads are one use a member however many reads it served, marked as repair,
    /// bounded like a stream's sources.
    #[test]
    fn repair_reads_are_one_use_a_member_and_bounded() {
        let mut log = StripeLog::new(2);
        log.repaired("n3", 2, 4);
        log.repaired("n4", 10, 1);
        log.repaired("n3", 18, 5);
        log.left("hung");
        let uses = log.clone().into_uses();
        assert_eq!(uses.len(), 2);
        assert_eq!(
            (uses[1].member.as_str(), uses[1].from, uses[1].blocks),
            ("n3", 2, 9)
        );
        assert_eq!(uses[1].left.as_deref(), Some("hung"));
        assert!(uses.iter().all(|u| u.repair));
        for i in 0..10 {
            log.repaired(&format!("m{i}"), i, 1);
        }
        assert_eq!(log.into_uses().len(), MAX_STRIPE_SOURCES);
    }

    /// The per-stripe record stays within `MAX_STRIPE_SOURCES` a stripe however many
    /// sources fail in turn (a member refusing, a liar, an origin waited out): the first
    /// (the planned parent) and the newest are kept, an origin asked again from the same
    /// block is one use, and the blocks count against the member that sent them.
    #[test]
    fn a_stripes_record_is_bounded_and_keeps_the_first_and_newest_sources() {
        let mut log = StripeLog::new(3);
        log.asked("parent", 3);
        log.left("crashed");
        for _ in 0..5 {
            log.asked("origin", 3);
            log.left("refused");
        }
        for i in 0..10 {
            log.asked(&format!("m{i}"), 3 + 8 * i);
            log.kept();
            log.left("hung");
        }
        log.asked("last", 83);
        log.kept();
        log.kept();
        let uses = log.into_uses();
        assert_eq!(uses.len(), MAX_STRIPE_SOURCES);
        assert_eq!(uses[0].member, "parent");
        assert_eq!(uses[0].left.as_deref(), Some("crashed"));
        let last = &uses[MAX_STRIPE_SOURCES - 1];
        assert_eq!(
            (
                last.member.as_str(),
                last.from,
                last.blocks,
                last.left.as_deref()
            ),
            ("last", 83, 2, None)
        );
        assert!(uses.iter().all(|u| u.stripe == 3));
        let mut origin = StripeLog::new(0);
        for _ in 0..100 {
            origin.asked("origin", 0);
            origin.left("refused");
        }
        assert_eq!(origin.into_uses().len(), 1);
    }
}
