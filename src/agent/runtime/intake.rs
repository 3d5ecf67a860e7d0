//! Turns a spooled event into a decision: accepted (a record to work on), held (signed but
//! from the future, or by fewer keys than its threshold), or rejected with the reason an
//! operator reads in `p2pu status`. Order matters: structure and version, then signatures
//! against the trusted keys, then fleet and expiry, then the sequence; the threshold and the
//! clock hold what passed all of them. Only signers that count are counted: a delegated key
//! within its statement ([`crate::trust`]), and one outside it that leaves the update short
//! gets it rejected with the rule.
//! [`take_spool`] is the agent's pass over the spool: one decision per event, and no event,
//! however malformed or strange on disk, stops the pass.
//!
//! Nothing unverified reaches the state: an announcement bound to a rollout plan this node
//! does not hold (or holds only a copy that does not verify it) is checked for all that needs
//! no plan, then waits outside the records ([`super::pending`]) until a plan verifies it. The
//! plan is read from the state dir's verified copies, or from the download dir through
//! [`crate::untrusted`] and copied to the state dir once it verifies.
//!
//! The intake is where a wire text is decoded, once: an accepted update goes to the workers as
//! [`Accepted`], its record with the decoded announcement or legacy torrent beside it, and a
//! record resumed after a restart is decoded here too ([`resume`]).

use super::health::OPERATOR_REVERT;
use super::pending::{PlanWaits, Refused, Waiting, MAX_WAITING, MAX_WAITING_PER_SOURCE};
use super::spool::{self, Spooled};
use super::state::{
    ControlSeen, Lineage, Record, RecordKind, Rejection, SeqVerdict, StateStore, Status,
};
use crate::agent::apply::good::GoodStore;
use crate::config::AgentSection;
use crate::error::chain;
use crate::formats::announcement::{Announcement, FleetId, Kind};
use crate::formats::control::{Action, Control};
use crate::formats::legacy::{self, LegacyTorrent};
use crate::formats::root::{MAX_CHAIN_BYTES, ROOT_NAME};
use crate::trust::{Count, Trust};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accepted(Accepted),
    Held(Record),
    Rejected(Rejection),
    /// Bound to a rollout plan this node does not have yet (or holds only a copy that does not
    /// verify it): unverified, so it makes no record. Everything that can be checked without
    /// the plan passed (fleet, expiry, seq, payload cap, a trusted signer named); the event
    /// waits outside the records ([`super::pending`]) while the plan is fetched.
    NeedsPlan {
        name: String,
        seq: u64,
        info_hash: String,
    },
    /// A verified operator control statement (`p2pu rollout`): kept (when it is for this
    /// node), and the records it sends back to the workers.
    Control {
        name: String,
        seen: Option<ControlSeen>,
        requeue: Vec<Record>,
        /// A `revert`: the update's record, set `reverting` to the kept version it goes back
        /// to (the workers apply it), or why this node cannot (kept as a rejection).
        revert: Option<Result<Record, String>>,
    },
}

/// An accepted update as the workers take it: its record, and its wire text decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub record: Record,
    pub decoded: Decoded,
}

/// A record's wire text, decoded; which one matches the record's [`RecordKind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Verified when accepted. A key update is verified again, against the keys trusted when
    /// it is applied.
    Signed(Announcement),
    /// The torrent a prototype payload carries: the fetcher hands it to Transmission.
    Legacy(LegacyTorrent),
}

/// An open record read back from the state after a restart, ready for the workers again: its
/// wire text is decoded as the intake decoded it when accepting it (not verified again: it was
/// then, and a key update still is when applied).
pub fn resume(record: Record) -> crate::error::Result<Accepted> {
    let decoded = match record.kind {
        RecordKind::Signed(_) => {
            let mut announcement = Announcement::decode(&record.wire)?;
            if let Some(plan) = &record.plan {
                announcement.attach_plan(plan.as_bytes());
            }
            Decoded::Signed(announcement)
        }
        RecordKind::Legacy => Decoded::Legacy(legacy::decode_payload(record.wire.as_bytes())?),
    };
    Ok(Accepted { record, decoded })
}

/// Policy the intake applies, from the config.
#[derive(Debug, Clone)]
pub struct Policy<'a> {
    pub trusted_keys_dir: &'a Path,
    pub accept_legacy: bool,
    /// Version 1 announcements (no expiry, no fleet) are refused unless this is set: a
    /// migration switch, off once every submitter signs version 2.
    pub accept_v1: bool,
    /// This node's fleet: a v2 announcement for another fleet is refused.
    pub fleet: FleetId,
    /// How many distinct trusted keys must have signed an update.
    pub thresholds: Thresholds,
    /// Announcements whose seq (ms since the epoch) lies further ahead of the local clock are
    /// held: one bad announcement must not block every later update of its name.
    pub max_future_ms: u64,
    /// Signed payload lengths above this are refused before anything is downloaded: a trusted
    /// key must not be able to fill a node's disk by mistake (TUF's endless data).
    pub max_payload_bytes: u64,
    /// Where rollout plans lie (`<info-hash>.plan`, the seed root beside the metainfo).
    pub plans_dir: &'a Path,
    /// This node's name: a control statement may name the nodes it is for.
    pub node: &'a str,
}

/// How long a plan-bound announcement waits for its plan before it is refused, on the agent's
/// clock from when it first arrived: a forged flagged announcement must not stay (and be
/// fetched for) forever.
pub const PLAN_SEARCH_SECS: u64 = 600;

/// Where the state dir keeps the plans this node verified (root's, 0700).
pub const PLANS_SUBDIR: &str = "plans";

/// The plan of `info_hash` in `dir`, when there is a regular file of at most a plan's size
/// there. `dir` is the download dir (Transmission's user writes it), so it is read through
/// [`crate::untrusted`]: a FIFO, a link or a sparse file there is refused, never waited on.
pub fn read_plan(dir: &Path, info_hash: &str) -> Option<Vec<u8>> {
    let path = plan_path(dir, info_hash);
    match crate::untrusted::read(&path, crate::formats::plan::MAX_PLAN_BYTES as u64) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            if !e.is_missing() {
                tracing::warn!("rollout plan not read: {}", chain(&e));
            }
            None
        }
    }
}

/// `<dir>/<info-hash>.plan`: where `submit` writes a plan and every node keeps (and so
/// re-serves) the plan it verified.
pub fn plan_path(dir: &Path, info_hash: &str) -> PathBuf {
    dir.join(format!("{info_hash}.plan"))
}

/// `<state dir>/plans/<info-hash>.plan`: the copy of a plan this node verified, root's; the
/// intake reads this one, whatever happens to the download dir's since.
pub fn kept_plan_path(state_dir: &Path, info_hash: &str) -> PathBuf {
    state_dir
        .join(PLANS_SUBDIR)
        .join(format!("{info_hash}.plan"))
}

/// Keeps `plan` as the verified plan of `info_hash` in the state dir (root-only, 0600).
pub fn keep_plan(state_dir: &Path, info_hash: &str, plan: &[u8]) -> super::Result<()> {
    crate::fsutil::write_atomic(&kept_plan_path(state_dir, info_hash), plan, 0o600)?;
    Ok(())
}

/// The plan `announcement` verifies with: the copy kept in the state dir, else the download
/// dir's, which is then kept. `None` when neither verifies it: a missing or garbage plan is a
/// bad copy to fetch again from the members, never a reason to refuse the signed update (issue
/// 28: garbage written over `<info-hash>.plan` used to reject it for good).
fn verified_plan(
    store: &StateStore,
    policy: &Policy,
    announcement: &Announcement,
    info_hash: &str,
    trusted: &crate::keys::TrustedKeys,
) -> Option<Vec<u8>> {
    let verifies = |bytes: &[u8]| announcement.verify(trusted, Some(bytes)).is_ok();
    let cap = crate::formats::plan::MAX_PLAN_BYTES as u64;
    let kept = kept_plan_path(store.dir(), info_hash);
    if let Ok(Some(bytes)) = crate::untrusted::read_if_there(&kept, cap) {
        if verifies(&bytes) {
            return Some(bytes);
        }
    }
    let bytes = read_plan(policy.plans_dir, info_hash)?;
    if !verifies(&bytes) {
        tracing::warn!(name = announcement.name(), seq = announcement.seq(), plan = %info_hash, "the download dir's rollout plan does not verify the announcement: a bad copy, fetched again from the members");
        return None;
    }
    if let Err(e) = keep_plan(store.dir(), info_hash, &bytes) {
        tracing::warn!(plan = %info_hash, "keeping the verified rollout plan: {}", chain(&e));
    }
    Some(bytes)
}

/// Why the fleet binding refuses `announcement` on this node, if it does: another fleet's, or
/// expired.
/// An expiry says how far this node's clock is off the fleet's, where that was measured.
fn binding_refusal(
    announcement: &Announcement,
    policy: &Policy,
    now: u64,
    state_dir: &Path,
) -> Option<String> {
    let binding = announcement.binding()?;
    if binding.fleet != policy.fleet {
        return Some(format!(
            "announcement is for fleet {}, this node is in fleet {}",
            binding.fleet, policy.fleet
        ));
    }
    if binding.expires < now {
        return Some(format!(
            "expired: announcement expired at {} (unix seconds), {} s ago{}; sign it again",
            binding.expires,
            now - binding.expires,
            super::clock::expiry_note(state_dir, binding.expires, now)
        ));
    }
    None
}

/// Why the seq of `name` is refused, if it is: a replay, or older than the accepted one.
fn seq_refusal(store: &StateStore, name: &str, seq: u64) -> super::Result<Option<String>> {
    Ok(match store.check_seq(name, Lineage::Signed, seq)? {
        SeqVerdict::New => None,
        SeqVerdict::Replay => Some("replay: this seq was already accepted".into()),
        SeqVerdict::Older { newest } => Some(format!(
            "downgrade: seq {seq} is older than the accepted {newest}"
        )),
    })
}

/// Why `announcement` is refused on what it says, signed or not, if it is: fleet and expiry,
/// seq, payload cap. Checked after the signatures, and before waiting for a plan.
fn unsigned_refusal(
    announcement: &Announcement,
    store: &StateStore,
    policy: &Policy,
    now: u64,
) -> super::Result<Option<String>> {
    if let Some(why) = binding_refusal(announcement, policy, now, store.dir()) {
        return Ok(Some(why));
    }
    if let Some(why) = seq_refusal(store, announcement.name(), announcement.seq())? {
        return Ok(Some(why));
    }
    Ok(payload_refusal(announcement, policy))
}

/// Signed payload lengths above `agent.max_payload_bytes` are refused before any download.
fn payload_refusal(announcement: &Announcement, policy: &Policy) -> Option<String> {
    (announcement.payload_len() > policy.max_payload_bytes).then(|| {
        format!(
            "payload of {} bytes exceeds agent.max_payload_bytes = {}",
            announcement.payload_len(),
            policy.max_payload_bytes
        )
    })
}

impl Policy<'_> {
    /// What a heartbeat must satisfy on this node.
    pub fn heartbeat(&self) -> super::heartbeat::HeartbeatPolicy<'_> {
        super::heartbeat::HeartbeatPolicy {
            trusted_keys_dir: self.trusted_keys_dir,
            fleet: self.fleet,
            threshold: self.thresholds.default,
            max_future_secs: self.max_future_ms / 1000,
        }
    }
}

/// How many distinct trusted keys must sign an update (TUF's thresholds), from
/// `agent.threshold`, `agent.key_threshold` and `agent.thresholds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thresholds {
    /// For names no rule matches.
    pub default: usize,
    /// For every `key` update, whatever its name: one stolen key must neither add nor revoke.
    pub key: usize,
    /// `(name glob, k)`; the first that matches wins.
    pub rules: Vec<(String, usize)>,
}

impl Thresholds {
    /// One signature for everything: what p2pu did before thresholds.
    pub fn one() -> Thresholds {
        Thresholds {
            default: 1,
            key: 1,
            rules: Vec::new(),
        }
    }

    pub fn of(agent: &AgentSection) -> Thresholds {
        let k = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
        Thresholds {
            default: k(agent.threshold),
            key: k(agent.key_threshold),
            rules: agent
                .thresholds
                .iter()
                .map(|rule| (rule.names.clone(), k(rule.k)))
                .collect(),
        }
    }

    /// The k an update of `name` and `kind` needs, and the setting that says so.
    pub fn required(&self, name: &str, kind: Kind) -> (usize, String) {
        let (mut k, mut rule) = match self.rules.iter().find(|(glob, _)| glob_match(glob, name)) {
            Some((glob, k)) => (*k, format!("agent.thresholds {glob:?}")),
            None => (self.default, "agent.threshold".to_string()),
        };
        if kind == Kind::Key && self.key > k {
            (k, rule) = (self.key, "agent.key_threshold".to_string());
        }
        (k, rule)
    }
}

/// Shell-style glob on whole names, shared with rollout plans and key statements.
pub use crate::formats::plan::glob_match;

/// What one pass over the spool did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    pub accepted: usize,
    pub held: usize,
    pub rejected: usize,
    /// Entries that were not plain events (moved to the quarantine).
    pub quarantined: usize,
    /// Events left in the spool for a later pass because deciding them failed.
    pub deferred: usize,
    /// Heartbeats newer than the kept one, now kept.
    pub heartbeats: usize,
    /// Announcements waiting for their plan after this pass (outside the records).
    pub waiting: usize,
    /// The plans they wait for: info-hash, and the announcement's wire text (a fetched plan is
    /// kept only if the announcement verifies with it).
    pub plans_wanted: Vec<(String, String)>,
    /// Copies of announcements already taken (`submit` re-sends each a few times): dropped
    /// quietly, neither decided again nor recorded as a replay.
    pub known: usize,
    /// Requests to ask the fleet now ([`super::sync`]), from the spool's own part.
    pub requests: Vec<super::sync::Request>,
}

/// The announcements waiting for their rollout plan, decided again: taken once their plan
/// verifies them, refused once the search for it ran out, otherwise waiting on.
fn retry_waiting(
    store: &StateStore,
    policy: &Policy,
    now_ms: u64,
    waits: &mut PlanWaits,
    pass: &mut Pass,
    accepted: &mut impl FnMut(Accepted),
) -> super::Result<()> {
    for waiting in waits.take_all() {
        let decision = match decide(&waiting.event, store, policy, now_ms) {
            Ok(decision) => decision,
            Err(e) => {
                tracing::error!(name = %waiting.name, seq = waiting.seq, "deciding an announcement waiting for its plan failed; it waits on: {}", chain(&e));
                waits.put_back(waiting);
                continue;
            }
        };
        match decision {
            Decision::NeedsPlan { .. } => {
                let waited = now_ms.saturating_sub(waiting.since_ms) / 1000;
                if waited <= PLAN_SEARCH_SECS {
                    waits.put_back(waiting);
                    continue;
                }
                let reason = format!(
                    "no rollout plan {}.plan that verifies it found on any member within {PLAN_SEARCH_SECS} s; submit it again",
                    waiting.info_hash
                );
                tracing::warn!(name = %waiting.name, seq = waiting.seq, "rejected: {reason}");
                store.reject(Rejection {
                    at: now_ms / 1000,
                    source: waiting.event.source.as_str().to_string(),
                    name: Some(waiting.name),
                    seq: Some(waiting.seq),
                    reason,
                })?;
                pass.rejected += 1;
            }
            decision => settle(decision, &waiting.event, store, now_ms, pass, accepted)?,
        }
    }
    Ok(())
}

/// A spooled heartbeat, kept or refused on its own; false when deciding it failed and it
/// stays for the next pass.
fn take_heartbeat(
    event: &Spooled,
    path: &Path,
    store: &StateStore,
    policy: &Policy,
    now_ms: u64,
    pass: &mut Pass,
) -> bool {
    let heartbeat_policy = policy.heartbeat();
    match super::heartbeat::take(&event.payload, store, &heartbeat_policy, now_ms / 1000) {
        Ok(super::heartbeat::Taken::Kept(heartbeat)) => {
            tracing::info!(
                signed_at = heartbeat.time(),
                names = heartbeat.count(),
                source = event.source.as_str(),
                "heartbeat kept"
            );
            pass.heartbeats += 1;
        }
        Ok(super::heartbeat::Taken::Same) => {}
        Ok(super::heartbeat::Taken::Refused(reason)) => {
            tracing::warn!(source = event.source.as_str(), %reason, "heartbeat refused")
        }
        Err(e) => {
            tracing::error!(entry = %path.display(), "deciding a spooled heartbeat failed; it stays for the next pass: {}", chain(&e));
            pass.deferred += 1;
            return false;
        }
    }
    true
}

/// An announcement that waits for its rollout plan, in memory and unrecorded; refused when
/// the set is full (never pushing out what waits), which asks the fleet at once.
fn admit_waiting(
    waiting: Waiting,
    source: spool::Source,
    store: &StateStore,
    now_ms: u64,
    waits: &mut PlanWaits,
    pass: &mut Pass,
) -> super::Result<()> {
    let (name, seq, info_hash) = (waiting.name.clone(), waiting.seq, waiting.info_hash.clone());
    match waits.admit(waiting) {
        Ok(()) => {
            tracing::info!(%name, seq, plan = %info_hash, source = source.as_str(), "waiting for its rollout plan (not verified yet, not recorded)");
        }
        Err(Refused::Duplicate) => {}
        Err(Refused::Full) => {
            // Refused, not queued: what waits is never pushed out by a newcomer. A
            // genuine one comes back through catch-up once a member verified it.
            let reason = format!(
                "too many announcements waiting for their rollout plan (at most {MAX_WAITING}, {MAX_WAITING_PER_SOURCE} from {}); not verified, dropped",
                source.as_str()
            );
            tracing::warn!(%name, seq, "rejected: {reason}");
            store.reject(Rejection {
                at: now_ms / 1000,
                source: source.as_str().to_string(),
                name: Some(name),
                seq: Some(seq),
                reason,
            })?;
            pass.rejected += 1;
            // A member filling the set with forgeries must not keep a genuine
            // update out until the next period: catch-up verifies a plan before
            // it spools, so ask the fleet now (the trigger's backoff bounds it).
            if !pass.requests.contains(&super::sync::Request::Fleet) {
                pass.requests.push(super::sync::Request::Fleet);
            }
        }
    }
    Ok(())
}

/// Decides every spooled event in arrival order, records each outcome, hands accepted records
/// to `accepted`, and deletes each event once its outcome is durable. An entry that is not a
/// plain event is quarantined; an event whose decision fails (a state file that cannot be
/// read, say) is left for the next pass. Either way the pass goes on: one bad entry must not
/// stop or crash-loop the agent. `stuck` remembers entries that could not even be
/// quarantined, so they are reported once and not on every pass. Errors are only those of
/// the spool directory itself or of recording an outcome.
///
/// An announcement bound to a plan this node does not hold yet waits in `waits`, outside the
/// records ([`super::pending`]); each pass decides the waiting ones again first, and refuses
/// those that waited longer than [`PLAN_SEARCH_SECS`].
pub fn take_spool(
    spool_dir: &Path,
    store: &StateStore,
    policy: &Policy,
    now_ms: u64,
    stuck: &mut BTreeSet<PathBuf>,
    waits: &mut PlanWaits,
    mut accepted: impl FnMut(Accepted),
) -> super::Result<Pass> {
    let mut pass = Pass::default();
    retry_waiting(store, policy, now_ms, waits, &mut pass, &mut accepted)?;
    for path in spool::list(spool_dir)? {
        if stuck.contains(&path) {
            continue;
        }
        let event = match spool::read(&path) {
            Ok(Some(event)) => event,
            Ok(None) => continue,
            Err(why) => {
                pass.quarantined += 1;
                match spool::quarantine(spool_dir, &path) {
                    Ok(to) => {
                        tracing::warn!(entry = %path.display(), to = %to.display(), "spool entry quarantined: {why}")
                    }
                    Err(e) => {
                        tracing::error!(entry = %path.display(), "spool entry refused ({why}) and left in place: {}", chain(&e));
                        stuck.insert(path);
                    }
                }
                continue;
            }
        };
        if let Some(request) = super::sync::Request::parse(&event.payload) {
            // Only root writes the spool itself and names a file's source: a user event that
            // looks like a request (any member can send one) or one in the NAT client's part
            // must not make this node query the fleet.
            let own = event.source == spool::Source::Sync && path.parent() == Some(spool_dir);
            match request {
                Ok(request) if own => pass.requests.push(request),
                Ok(_) => {
                    tracing::warn!(source = event.source.as_str(), entry = %path.display(), "a sync request from outside the spool's own part ignored")
                }
                Err(why) => tracing::warn!(source = event.source.as_str(), "{why}"),
            }
            spool::remove(&path)?;
            continue;
        }
        if let Some(request) = super::mark::Request::parse(&event.payload) {
            // Like a sync request: only root's `p2pu mark-good|mark-bad` writes the spool
            // itself with the source `operator`. A member's user event or the NAT client's
            // part carrying one must not revert or confirm anything here.
            let own = event.source == spool::Source::Operator && path.parent() == Some(spool_dir);
            match request {
                Ok(request) if own => take_mark(store, &request, now_ms, &mut accepted)?,
                Ok(_) => {
                    tracing::warn!(source = event.source.as_str(), entry = %path.display(), "a mark request from outside the spool's own part ignored")
                }
                Err(why) => tracing::warn!(source = event.source.as_str(), "{why}"),
            }
            spool::remove(&path)?;
            continue;
        }
        if let Some((name, seq)) = already_known(&event.payload, store) {
            tracing::debug!(%name, seq, source = event.source.as_str(), "already taken; a re-sent copy dropped");
            pass.known += 1;
            spool::remove(&path)?;
            continue;
        }
        if crate::formats::heartbeat::is_wire(&event.payload) {
            // Not an update: verified and kept (or refused) on its own, never recorded as one.
            if take_heartbeat(&event, &path, store, policy, now_ms, &mut pass) {
                spool::remove(&path)?;
            }
            continue;
        }
        let decision = match decide(&event, store, policy, now_ms) {
            Ok(decision) => decision,
            Err(e) => {
                tracing::error!(entry = %path.display(), "deciding a spooled event failed; it stays for the next pass: {}", chain(&e));
                pass.deferred += 1;
                continue;
            }
        };
        match decision {
            Decision::NeedsPlan {
                name,
                seq,
                info_hash,
            } => {
                let source = event.source;
                let waiting = Waiting {
                    event: Spooled {
                        path: PathBuf::new(),
                        ..event
                    },
                    name,
                    seq,
                    info_hash,
                    since_ms: now_ms,
                };
                admit_waiting(waiting, source, store, now_ms, waits, &mut pass)?;
            }
            decision => settle(decision, &event, store, now_ms, &mut pass, &mut accepted)?,
        }
        // Only now is the event's fate durable (or, waiting for its plan, in memory): the
        // spool file may go.
        spool::remove(&path)?;
    }
    pass.waiting = waits.len();
    pass.plans_wanted = waits.wanted();
    Ok(pass)
}

/// An operator's verdict (`p2pu mark-good|mark-bad`, [`super::mark`]): judged, acted on
/// (a revert goes to the workers like `rollout revert`'s), and answered.
fn take_mark(
    store: &StateStore,
    request: &super::mark::Request,
    now_ms: u64,
    accepted: &mut impl FnMut(Accepted),
) -> super::Result<()> {
    let answer = super::mark::take(store, request, now_ms / 1000, &mut |record| {
        let update = resume(record).map_err(|e| format!("cannot revert: {}", chain(&e)))?;
        accepted(update);
        Ok(())
    })?;
    let (name, verdict) = (&answer.name, answer.verdict.as_str());
    let seq = answer.seq.map_or("newest".to_string(), |s| s.to_string());
    if answer.accepted {
        tracing::warn!(%name, %seq, verdict, "operator's verdict: {}", answer.message);
    } else {
        tracing::warn!(%name, %seq, verdict, "operator's verdict refused: {}", answer.message);
    }
    Ok(())
}

/// A copy of an announcement this node already took: (name, seq) when its text is that of a
/// record accepted before (`submit` re-sends each announcement a few times, and Serf may
/// deliver one twice). It was verified when first taken and nothing is done with it now, so it
/// needs no decision; recorded as a replay, each re-send would fill `p2pu status` with
/// rejections of the operator's own update. A state that cannot be read says "not known": the
/// decision then meets the same error and defers the event.
fn already_known(payload: &[u8], store: &StateStore) -> Option<(String, u64)> {
    let announcement = Announcement::decode(payload).ok()?;
    let (name, seq) = (announcement.name(), announcement.seq());
    store
        .records(name)
        .ok()?
        .iter()
        .any(|r| r.seq == seq && r.status != Status::Held && r.wire.as_bytes() == payload)
        .then(|| (name.to_string(), seq))
}

/// Records the outcome of a decision other than [`Decision::NeedsPlan`].
fn settle(
    decision: Decision,
    event: &Spooled,
    store: &StateStore,
    now_ms: u64,
    pass: &mut Pass,
    accepted: &mut impl FnMut(Accepted),
) -> super::Result<()> {
    match decision {
        Decision::Accepted(update) => {
            let record = &update.record;
            // The spool file's name carries its write time (ns): benches/ measure latency from it.
            let spool = event
                .path
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            tracing::info!(name = %record.name, seq = record.seq, kind = %record.kind, source = event.source.as_str(), %spool, "accepted");
            store.put(record.clone())?;
            pass.accepted += 1;
            accepted(update);
        }
        Decision::Held(record) => {
            tracing::warn!(name = %record.name, seq = record.seq, reason = record.reason.as_deref().unwrap_or(""), "held");
            store.put(record)?;
            pass.held += 1;
        }
        // A push may come from any process on a member's machine, not only one holding the
        // keyring (`agent::transfer::push`): what it gets refused fills no record, and a
        // genuine announcement is decided again when Serf delivers it.
        Decision::Rejected(rejection) if event.source == spool::Source::Push => {
            tracing::debug!(name = rejection.name.as_deref().unwrap_or("-"), seq = rejection.seq, reason = %rejection.reason, "a pushed announcement refused; not recorded");
        }
        Decision::Rejected(rejection) => {
            tracing::warn!(name = rejection.name.as_deref().unwrap_or("-"), seq = rejection.seq, source = %rejection.source, reason = %rejection.reason, "rejected");
            store.reject(rejection)?;
            pass.rejected += 1;
        }
        Decision::Control {
            name,
            seen,
            requeue,
            revert,
        } => {
            let seq = seen.as_ref().map(|s| s.seq);
            if let Some(seen) = seen {
                tracing::info!(%name, seq = seen.seq, action = %seen.action, "rollout control statement");
                store.put_control(&name, seen)?;
            }
            match revert {
                Some(Ok(record)) => {
                    tracing::warn!(%name, seq = record.seq, to = record.restored_seq, "reverting: the operator's revert");
                    store.put(record.clone())?;
                    match resume(record) {
                        Ok(update) => accepted(update),
                        Err(e) => tracing::warn!(%name, "cannot revert: {}", chain(&e)),
                    }
                }
                Some(Err(reason)) => {
                    tracing::warn!(%name, seq, %reason, "revert refused");
                    store.reject(Rejection {
                        at: now_ms / 1000,
                        source: event.source.as_str().to_string(),
                        name: Some(name.clone()),
                        seq,
                        reason,
                    })?;
                    pass.rejected += 1;
                }
                None => {}
            }
            for mut record in requeue {
                let now = now_ms / 1000;
                record.settle(
                    Status::Pending,
                    Some("sent back by the operator (p2pu rollout)".into()),
                    None,
                    now,
                );
                record.attempts = 0;
                record.next_attempt_at = None;
                store.put(record.clone())?;
                match resume(record) {
                    Ok(update) => accepted(update),
                    Err(e) => tracing::warn!(%name, "cannot send back: {}", chain(&e)),
                }
            }
        }
        Decision::NeedsPlan { .. } => {
            // The callers handle it: it waits outside the records.
        }
    }
    Ok(())
}

pub fn decide(
    event: &Spooled,
    store: &StateStore,
    policy: &Policy,
    now_ms: u64,
) -> super::Result<Decision> {
    let now = now_ms / 1000;
    let source = event.source.as_str().to_string();
    let reject = |name: Option<String>, seq: Option<u64>, reason: String| {
        Decision::Rejected(Rejection {
            at: now,
            source: source.clone(),
            name,
            seq,
            reason,
        })
    };
    if event
        .payload
        .starts_with(crate::formats::control::WIRE_PREFIX.as_bytes())
    {
        return decide_control(event, store, policy, now);
    }
    if event.payload.starts_with(b"p2pu") {
        return decide_signed(event, store, policy, now_ms, &reject);
    }
    decide_legacy(event, store, policy, now_ms).map(|d| d.unwrap_or_else(|r| reject(r.0, r.1, r.2)))
}

/// The rejection `decide` makes, naming what it could read of the event.
type Reject<'a> = &'a dyn Fn(Option<String>, Option<u64>, String) -> Decision;

/// A signed announcement: decoded, its plan verified (or waited for), its signatures counted
/// against the threshold of its name, then held or accepted.
fn decide_signed(
    event: &Spooled,
    store: &StateStore,
    policy: &Policy,
    now_ms: u64,
    reject: Reject<'_>,
) -> super::Result<Decision> {
    let now = now_ms / 1000;
    let announcement = match Announcement::decode(&event.payload) {
        Ok(a) => a,
        Err(e) => return Ok(reject(None, None, e.to_string())),
    };
    let (name, seq) = (announcement.name().to_string(), announcement.seq());
    if announcement.binding().is_none() && !policy.accept_v1 {
        return Ok(reject(
            Some(name),
            Some(seq),
            "version 1 announcement refused: agent.accept_v1 = false (it carries no expiry \
             and no fleet; sign it again with this p2pu, or set accept_v1 while migrating)"
                .into(),
        ));
    }
    let info_hash = hex::encode(announcement.info_hash());
    let trust = Trust::load(policy.trusted_keys_dir)?;
    let plan_bytes = match plan_or_wait(
        &announcement,
        store,
        policy,
        &info_hash,
        &trust,
        now,
        reject,
    )? {
        Ok(bytes) => bytes,
        Err(decision) => return Ok(decision),
    };
    // A root chain names keys this node may not know yet (it was offline through a
    // rotation): its signatures are counted when it is applied, against the chain's
    // newest keys, and each document in it against the one before (trust::apply_key_update).
    let root_chain = announcement.kind() == Kind::Key && name == ROOT_NAME;
    let signers = if root_chain {
        Vec::new()
    } else {
        match announcement.verify(&trust.keys, plan_bytes.as_deref()) {
            Ok(signers) => signers.valid,
            Err(e) => return Ok(reject(Some(name), Some(seq), e.to_string())),
        }
    };
    // Signed, so what it says is the signers'; a plan this p2pu cannot read is refused
    // (an unknown field may be a rule it would not follow).
    let mut announcement = announcement;
    let mut target = None;
    let plan_text = match &plan_bytes {
        None => None,
        Some(bytes) => match crate::formats::plan::Plan::decode(bytes) {
            Ok(plan) => {
                target = plan.target.as_ref().map(|selector| selector.to_text());
                announcement.attach_plan(bytes);
                Some(String::from_utf8_lossy(bytes).into_owned())
            }
            Err(e) => {
                return Ok(reject(
                    Some(name),
                    Some(seq),
                    format!("rollout plan {info_hash}.plan refused: {e}"),
                ))
            }
        },
    };
    if let Some(why) = unsigned_refusal(&announcement, store, policy, now)? {
        return Ok(reject(Some(name), Some(seq), why));
    }
    let wire = String::from_utf8_lossy(&event.payload).into_owned();
    let mut record = record_of(&announcement, wire, now);
    record.plan = plan_text;
    let (k, rule) = policy.thresholds.required(&name, announcement.kind());
    // The update's target, as its signed plan names it (none: the whole fleet), which a
    // key restricted to targets must cover.
    let count = trust.count(
        &signers,
        &name,
        announcement.kind(),
        target.as_deref(),
        policy.fleet,
        now,
    );
    if !root_chain && count.counted.len() < k {
        return Ok(short_of_threshold(&count, (k, &rule), record, reject));
    }
    Ok(hold_or_accept(
        announcement,
        record,
        root_chain,
        now_ms,
        policy,
        reject,
    ))
}

/// The bytes of the announcement's rollout plan when it has one: verified with it, or, not
/// here yet, the decision to wait for it (or to refuse what could never be taken).
fn plan_or_wait(
    announcement: &Announcement,
    store: &StateStore,
    policy: &Policy,
    info_hash: &str,
    trust: &Trust,
    now: u64,
    reject: Reject<'_>,
) -> super::Result<Result<Option<Vec<u8>>, Decision>> {
    let (name, seq) = (announcement.name().to_string(), announcement.seq());
    Ok(Ok(match announcement.has_plan() {
        false => None,
        true => match verified_plan(store, policy, announcement, info_hash, &trust.keys) {
            Some(bytes) => Some(bytes),
            None => {
                // Unverified until its plan is here: checked now for all that does not
                // need the plan, so a copy that could never be taken does not wait, and
                // nothing of it is recorded.
                if let Some(why) = unsigned_refusal(announcement, store, policy, now)? {
                    return Ok(Err(reject(Some(name), Some(seq), why)));
                }
                let named = announcement.kids();
                if !named.iter().any(|kid| trust.keys.get(kid).is_some()) {
                    return Ok(Err(reject(
                        Some(name),
                        Some(seq),
                        "waiting for a rollout plan refused: no signer is a trusted key".into(),
                    )));
                }
                return Ok(Err(Decision::NeedsPlan {
                    name,
                    seq,
                    info_hash: info_hash.to_string(),
                }));
            }
        },
    }))
}

/// Fewer valid signers than the threshold of the name (`k` under `rule`): refused when a
/// delegated key signed outside its statement, otherwise held.
fn short_of_threshold(
    count: &Count,
    (k, rule): (usize, &str),
    mut record: Record,
    reject: Reject<'_>,
) -> Decision {
    let kids: Vec<String> = count.counted.iter().map(ToString::to_string).collect();
    let counted = format!(
        "signed by {} of the {k} trusted keys {rule} requires ({})",
        count.counted.len(),
        kids.join(", ")
    );
    if !count.refused.is_empty() {
        // A delegated key signed outside its statement: refused, naming the rule.
        return reject(
            Some(record.name),
            Some(record.seq),
            format!("not permitted: {}; {counted}", count.refused.join("; ")),
        );
    }
    // Held, not rejected: the same name and seq with more signatures is accepted
    // when it arrives (held records do not count as seen).
    record.status = Status::Held;
    record.reason = Some(format!("held: {counted}"));
    Decision::Held(record)
}

/// A counted announcement: held while its seq (or its root chain's) is ahead of this node's
/// clock, refused as a root chain over the cap, otherwise accepted.
fn hold_or_accept(
    announcement: Announcement,
    mut record: Record,
    root_chain: bool,
    now_ms: u64,
    policy: &Policy,
    reject: Reject<'_>,
) -> Decision {
    let (name, seq) = (announcement.name().to_string(), announcement.seq());
    if root_chain && announcement.payload_len() > MAX_CHAIN_BYTES {
        return reject(
            Some(name),
            Some(seq),
            format!(
                "root chain of {} bytes: a chain is at most {MAX_CHAIN_BYTES}",
                announcement.payload_len()
            ),
        );
    }
    if root_chain && seq > now_ms {
        // Unverified until applied: it may not claim a seq ahead of this node's clock,
        // so it cannot outrank the operator's next root announcement.
        record.status = Status::Held;
        record.reason = Some(format!(
            "held: root chain seq {seq} is ahead of this node's clock"
        ));
        return Decision::Held(record);
    }
    if seq > now_ms.saturating_add(policy.max_future_ms) {
        record.status = Status::Held;
        record.reason = Some(format!(
            "held: seq {seq} is {} s ahead of this node's clock",
            (seq - now_ms) / 1000
        ));
        return Decision::Held(record);
    }
    Decision::Accepted(Accepted {
        record,
        decoded: Decoded::Signed(announcement),
    })
}

/// The kind of the update the records are of, and its target as its plan names it (none: the
/// whole fleet).
fn kind_and_target(records: &[Record]) -> (Kind, Option<String>) {
    let kind = records
        .first()
        .and_then(|r| match r.kind {
            RecordKind::Signed(kind) => Some(kind),
            RecordKind::Legacy => None,
        })
        .unwrap_or(Kind::Manifest);
    let target = records
        .iter()
        .find_map(|r| r.plan.as_deref())
        .and_then(|text| crate::formats::plan::Plan::decode(text.as_bytes()).ok())
        .and_then(|plan| plan.target.map(|selector| selector.to_text()));
    (kind, target)
}

/// The records an action sends back to the workers: halted ones on resume, failed or
/// reverted ones on retry, none on abort.
fn requeued(records: Vec<Record>, action: Action) -> Vec<Record> {
    records
        .into_iter()
        .filter(|r| match action {
            Action::Abort => false,
            Action::Resume => r.status == Status::Halted,
            Action::Retry => matches!(r.status, Status::Failed | Status::Reverted),
            // Not sent back to the fetch: the record goes `reverting` (see `reverting`).
            Action::Revert => false,
        })
        .collect()
}

/// An operator's control statement: verified with the trusted keys and the threshold of the
/// update's name, for this fleet, unexpired, and newer than the last one seen for the update
/// (a replayed `retry` must not retry again).
fn decide_control(
    event: &Spooled,
    store: &StateStore,
    policy: &Policy,
    now: u64,
) -> super::Result<Decision> {
    let reject = |name: Option<String>, seq: Option<u64>, reason: String| {
        Ok(Decision::Rejected(Rejection {
            at: now,
            source: event.source.as_str().to_string(),
            name,
            seq,
            reason,
        }))
    };
    let control = match Control::decode(&event.payload) {
        Ok(control) => control,
        Err(e) => return reject(None, None, e.to_string()),
    };
    let (name, seq) = (control.name.clone(), control.seq);
    let trust = Trust::load(policy.trusted_keys_dir)?;
    let signers = match control.verify(&trust.keys) {
        Ok(signers) => signers,
        Err(e) => return reject(Some(name), Some(seq), e.to_string()),
    };
    if control.fleet != policy.fleet {
        return reject(
            Some(name),
            Some(seq),
            format!(
                "rollout {} is for fleet {}, this node is in fleet {}",
                control.action, control.fleet, policy.fleet
            ),
        );
    }
    if control.expires < now {
        return reject(
            Some(name),
            Some(seq),
            format!("rollout {} expired at {}", control.action, control.expires),
        );
    }
    let records: Vec<Record> = store
        .records(&name)?
        .into_iter()
        .filter(|r| r.seq == seq && r.status != Status::Held)
        .collect();
    // Held to what the update itself needs: its name's threshold, and delegated keys only
    // within their statements (for the update's target, as its plan names it).
    let (kind, target) = kind_and_target(&records);
    let count = trust.count(&signers, &name, kind, target.as_deref(), policy.fleet, now);
    let (k, rule) = policy.thresholds.required(&name, kind);
    if count.counted.len() < k {
        let refused = count.refused.join("; ");
        return reject(
            Some(name),
            Some(seq),
            format!(
                "rollout {} signed by {} of the {k} trusted keys {rule} requires{}{refused}",
                control.action,
                count.counted.len(),
                if refused.is_empty() { "" } else { "; " }
            ),
        );
    }
    if let Some(last) = store.control_issued(&name, seq)? {
        if control.issued <= last {
            return reject(
                Some(name),
                Some(seq),
                format!(
                    "replay: rollout {} issued at {} is not newer than the last one seen ({last})",
                    control.action, control.issued
                ),
            );
        }
    }
    if !control.is_for(policy.node) {
        return Ok(Decision::Control {
            name,
            seen: None,
            requeue: Vec::new(),
            revert: None,
        });
    }
    let revert = (control.action == Action::Revert)
        .then(|| reverting(store, &records, &control, now))
        .transpose()?;
    let requeue = requeued(records, control.action);
    Ok(Decision::Control {
        name,
        seen: Some(ControlSeen {
            seq,
            action: control.action.as_str().to_string(),
            issued: control.issued,
        }),
        requeue,
        revert,
    })
}

/// An operator's `revert` on this node: the update's record, applied here, set `reverting` to
/// the version the statement names (or the last good one before it), which must be an
/// `applied` record of the same lineage whose payload is still kept; otherwise why not.
fn reverting(
    store: &StateStore,
    records: &[Record],
    control: &Control,
    now: u64,
) -> super::Result<Result<Record, String>> {
    let (name, seq) = (&control.name, control.seq);
    let Some(record) = records.iter().find(|r| r.status == Status::Applied) else {
        let status = records.first().map_or("no record", |r| r.status.as_str());
        return Ok(Err(format!(
            "rollout revert of {name} seq {seq}: not applied on this node ({status}), nothing to revert"
        )));
    };
    let good = GoodStore::of(store.dir());
    let target = super::health::kept_good(store, &good, record, control.to())?;
    let Some(target) = target else {
        let which = control.to().map_or(
            "no earlier good version is kept on this node".to_string(),
            |to| format!("seq {to} is not kept on this node (only the last good version before the newest is)"),
        );
        return Ok(Err(format!(
            "rollout revert of {name} seq {seq}: {which}, nothing to revert to"
        )));
    };
    let mut record = record.clone();
    record.restored_seq = Some(target.seq);
    record.attempts = 0;
    record.next_attempt_at = None;
    let output = record.output.clone();
    record.settle(
        Status::Reverting,
        Some(OPERATOR_REVERT.to_string()),
        output,
        now,
    );
    Ok(Ok(record))
}

/// Why a legacy payload is refused: name, seq, reason.
type LegacyRefusal = (Option<String>, Option<u64>, String);

/// Legacy payloads: the prototype's Serf payload, or its overlay message
/// (`SendTorrentFile <ip> split <payload>`, which the NAT client spools as it arrives). Both are
/// unauthenticated: only the MD5 of the torrent is checked, so `accept_legacy` hands root to
/// anyone who can put a message in the spool. They are otherwise held to the signed rules: the
/// payload cap, a growing creation date per name (in their own [`Lineage`]), and the hold of
/// dates too far in the future.
fn decide_legacy(
    event: &Spooled,
    store: &StateStore,
    policy: &Policy,
    now_ms: u64,
) -> super::Result<Result<Decision, LegacyRefusal>> {
    let now = now_ms / 1000;
    let refuse =
        |name: Option<&str>, seq, reason: String| Ok(Err((name.map(str::to_string), seq, reason)));
    let payload = if legacy::is_overlay(&event.payload) {
        match legacy::split_overlay(&event.payload) {
            Ok((_sender, payload)) => payload,
            Err(e) => return refuse(None, None, e.to_string()),
        }
    } else {
        &event.payload[..]
    };
    let torrent = match legacy::decode_payload(payload) {
        Err(e) => {
            return refuse(
                None,
                None,
                format!("neither a p2pu announcement nor a legacy payload: {e}"),
            )
        }
        Ok(_) if !policy.accept_legacy => {
            return refuse(
                None,
                None,
                "legacy payload refused: accept_legacy = false".into(),
            )
        }
        Ok(torrent) => torrent,
    };
    let name = torrent.name.clone();
    if let Err(e) = crate::formats::announcement::validate_name(&name) {
        return refuse(None, None, format!("legacy payload: {e}"));
    }
    let Some(date) = torrent.creation_date.and_then(|d| u64::try_from(d).ok()) else {
        return refuse(
            Some(&name),
            None,
            "legacy payload without a creation date".into(),
        );
    };
    if torrent.length > policy.max_payload_bytes {
        return refuse(
            Some(&name),
            Some(date),
            format!(
                "payload of {} bytes exceeds agent.max_payload_bytes = {}",
                torrent.length, policy.max_payload_bytes
            ),
        );
    }
    if store.check_seq(&name, Lineage::Legacy, date)? != SeqVerdict::New {
        return refuse(
            Some(&name),
            Some(date),
            "legacy payload is not newer than the last one of its name".into(),
        );
    }
    let mut record = Record {
        info_hash: hex::encode(torrent.info_hash),
        len: torrent.length,
        // The payload alone (an overlay message's too): what a restart decodes again and what
        // catch-up serves to other nodes.
        wire: String::from_utf8_lossy(payload).into_owned(),
        ..Record::received(name, date, RecordKind::Legacy, now)
    };
    // The creation date counts seconds; the hold counts milliseconds like signed seqs.
    let date_ms = date.saturating_mul(1000);
    if date_ms > now_ms.saturating_add(policy.max_future_ms) {
        record.status = Status::Held;
        record.reason = Some(format!(
            "held: legacy creation date {date} is {} s ahead of this node's clock",
            (date_ms - now_ms) / 1000
        ));
        return Ok(Ok(Decision::Held(record)));
    }
    Ok(Ok(Decision::Accepted(Accepted {
        record,
        decoded: Decoded::Legacy(torrent),
    })))
}

fn record_of(a: &Announcement, wire: String, now: u64) -> Record {
    let kind = RecordKind::Signed(a.kind());
    Record {
        info_hash: hex::encode(a.info_hash()),
        len: a.payload_len(),
        sha256: Some(*a.sha256()),
        wire,
        ..Record::received(a.name().to_string(), a.seq(), kind, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::runtime::spool::Source;
    use crate::formats::announcement::{Binding, Draft, Kind};
    use crate::keys::{PublicKey, TrustedKeys, TrustedKeysDir};
    use ed25519_dalek::SigningKey;

    const NOW_MS: u64 = 1_800_000_000_000;
    const LEGACY: &[u8] =
        include_bytes!("../../../crates/p2pu-formats/tests/vectors/legacy/lizard.serf-payload");

    struct Fixture {
        _dir: tempfile::TempDir,
        store: StateStore,
        keys_dir: std::path::PathBuf,
        key: SigningKey,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let keys_dir = dir.path().join("trusted");
        let key = SigningKey::from_bytes(&[7; 32]);
        let public = PublicKey {
            key: key.verifying_key(),
            comment: "ops".into(),
        };
        TrustedKeys::add(&keys_dir, &public).unwrap();
        let store = StateStore::open(&dir.path().join("state")).unwrap();
        Fixture {
            _dir: dir,
            store,
            keys_dir,
            key,
        }
    }

    fn wire(key: &SigningKey, name: &str, seq: u64) -> Vec<u8> {
        signed(key, name, seq, Kind::Manifest, 10, [2; 32])
    }

    fn signed(
        key: &SigningKey,
        name: &str,
        seq: u64,
        kind: Kind,
        len: u64,
        sha256: [u8; 32],
    ) -> Vec<u8> {
        let draft = Draft {
            seq,
            name: name.into(),
            kind,
            info_hash: [1; 20],
            len,
            sha256,
        };
        let mut text = Announcement::sign_v2(draft, binding(), key)
            .unwrap()
            .to_wire()
            .into_bytes();
        text.push(b'\n');
        text
    }

    const FLEET: FleetId = FleetId([0x42; 8]);

    /// Key updates under one root signature, in FLEET.
    const ONE_KEY: crate::trust::KeyPolicy = crate::trust::KeyPolicy {
        key_threshold: 1,
        fleet: FLEET,
    };

    /// Valid for a day after NOW_MS, for FLEET.
    fn binding() -> Binding {
        Binding {
            expires: NOW_MS / 1000 + 86_400,
            fleet: FLEET,
        }
    }

    fn decide_on(f: &Fixture, payload: &[u8], accept_legacy: bool) -> Decision {
        decide_capped(f, payload, accept_legacy, u64::MAX)
    }

    fn decide_capped(f: &Fixture, payload: &[u8], accept_legacy: bool, cap: u64) -> Decision {
        let event = Spooled {
            path: "x.event".into(),
            source: Source::Serf,
            payload: payload.to_vec(),
        };
        let policy = Policy {
            max_payload_bytes: cap,
            ..policy(f, accept_legacy)
        };
        decide(&event, &f.store, &policy, NOW_MS).unwrap()
    }

    fn reason(decision: Decision) -> String {
        match decision {
            Decision::Rejected(r) => r.reason,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    fn policy(f: &Fixture, accept_legacy: bool) -> Policy<'_> {
        Policy {
            trusted_keys_dir: &f.keys_dir,
            accept_legacy,
            accept_v1: false,
            fleet: FLEET,
            thresholds: Thresholds::one(),
            max_future_ms: 86_400_000,
            max_payload_bytes: u64::MAX,
            plans_dir: &f.keys_dir,
            node: "node-1",
        }
    }

    fn decide_with(f: &Fixture, payload: &[u8], policy: &Policy) -> Decision {
        let event = Spooled {
            path: "x.event".into(),
            source: Source::Serf,
            payload: payload.to_vec(),
        };
        decide(&event, &f.store, policy, NOW_MS).unwrap()
    }

    fn draft(name: &str, seq: u64, kind: Kind) -> Draft {
        Draft {
            seq,
            name: name.into(),
            kind,
            info_hash: [1; 20],
            len: 10,
            sha256: [2; 32],
        }
    }

    fn trust(f: &Fixture, key: &SigningKey) {
        let public = PublicKey {
            key: key.verifying_key(),
            comment: "co-signer".into(),
        };
        TrustedKeys::add(&f.keys_dir, &public).unwrap();
    }

    /// An announcement valid forever on any fleet let a staging fleet's update (same key)
    /// run in production, and a captured one run on a node years later.
    #[test]
    fn expired_and_other_fleets_announcements_are_rejected_with_their_reason() {
        let f = fixture();
        let expired = Binding {
            expires: NOW_MS / 1000 - 1,
            fleet: FLEET,
        };
        let text = Announcement::sign_v2(draft("site.pp", NOW_MS, Kind::Manifest), expired, &f.key)
            .unwrap()
            .to_wire();
        let why = reason(decide_on(&f, text.as_bytes(), false));
        assert!(why.starts_with("expired: "), "{why}");
        let staging = Binding {
            expires: NOW_MS / 1000 + 60,
            fleet: FleetId([0x99; 8]),
        };
        let text = Announcement::sign_v2(draft("site.pp", NOW_MS, Kind::Manifest), staging, &f.key)
            .unwrap()
            .to_wire();
        let why = reason(decide_on(&f, text.as_bytes(), false));
        assert_eq!(
            why,
            "announcement is for fleet 9999999999999999, this node is in fleet 4242424242424242"
        );
        // Expiring this very second is still valid.
        let last = Binding {
            expires: NOW_MS / 1000,
            fleet: FLEET,
        };
        let text = Announcement::sign_v2(draft("site.pp", NOW_MS, Kind::Manifest), last, &f.key)
            .unwrap()
            .to_wire();
        assert!(matches!(
            decide_on(&f, text.as_bytes(), false),
            Decision::Accepted(_)
        ));
    }

    #[test]
    fn version_1_is_refused_unless_accept_v1() {
        let f = fixture();
        let v1 = Announcement::sign(draft("site.pp", NOW_MS, Kind::Manifest), &f.key)
            .unwrap()
            .to_wire();
        let why = reason(decide_on(&f, v1.as_bytes(), false));
        assert!(why.contains("agent.accept_v1 = false"), "{why}");
        let migrating = Policy {
            accept_v1: true,
            ..policy(&f, false)
        };
        assert!(matches!(
            decide_with(&f, v1.as_bytes(), &migrating),
            Decision::Accepted(_)
        ));
    }

    /// A plan-bound announcement is never accepted without its plan: it waits in the spool
    /// (held, with the reason) until the plan is here, then verifies with it; a plan this p2pu
    /// cannot read (an unknown field) is refused with the reason, and another plan than the
    /// signed one fails the signature.
    #[test]
    fn plan_bound_announcements_wait_for_their_plan_and_verify_with_it() {
        let f = fixture();
        let plans = tempfile::tempdir().unwrap();
        let policy = Policy {
            plans_dir: plans.path(),
            ..policy(&f, false)
        };
        let sign = |name: &str, plan: &[u8]| {
            let draft = draft(name, NOW_MS, Kind::Manifest);
            Announcement::sign_v2_with_plan(draft, binding(), plan, &f.key)
                .unwrap()
                .to_wire()
        };
        let good = b"d6:target15:tag:role=camera1:vi1ee";
        let text = sign("cams.pp", good);
        let hash = hex::encode([1u8; 20]);
        match decide_with(&f, text.as_bytes(), &policy) {
            Decision::NeedsPlan {
                name,
                seq,
                info_hash,
            } => {
                assert_eq!(
                    (name.as_str(), seq, info_hash),
                    ("cams.pp", NOW_MS, hash.clone())
                );
            }
            other => panic!("expected to wait for the plan, got {other:?}"),
        }
        // Another plan under the same name: the signature does not cover it, so it is a bad
        // copy and the announcement waits on for a good one.
        std::fs::write(plan_path(plans.path(), &hash), b"d1:vi1ee").unwrap();
        assert!(matches!(
            decide_with(&f, text.as_bytes(), &policy),
            Decision::NeedsPlan { .. }
        ));
        std::fs::write(plan_path(plans.path(), &hash), good).unwrap();
        let Decision::Accepted(accepted) = decide_with(&f, text.as_bytes(), &policy) else {
            panic!("expected accepted");
        };
        assert_eq!(
            accepted.record.plan.as_deref(),
            Some(std::str::from_utf8(good).unwrap())
        );
        // Resumed after a restart, it verifies again with the kept plan.
        let resumed = resume(accepted.record.clone()).unwrap();
        let Decoded::Signed(a) = resumed.decoded else {
            panic!("signed");
        };
        let trusted = TrustedKeys::load(&f.keys_dir).unwrap();
        a.verify(&trusted, a.attached_plan()).unwrap();

        let unknown =
            include_bytes!("../../../crates/p2pu-formats/tests/vectors/plan/unknown-field.plan");
        let text = sign("later.pp", unknown);
        std::fs::write(plan_path(plans.path(), &hash), unknown).unwrap();
        let why = reason(decide_with(&f, text.as_bytes(), &policy));
        assert!(
            why.contains("rollout plan") && why.contains("unknown field \"unknown\""),
            "{why}"
        );
    }

    /// `p2pu rollout` statements are verified like announcements: a stranger's, another
    /// fleet's, an expired one, one below the name's threshold and a replay are refused; one
    /// for other nodes changes nothing here; a retry sends the failed record back, a resume
    /// the halted one.
    #[test]
    fn control_statements_are_verified_and_act_on_this_nodes_records() {
        use crate::formats::control::{parse_nodes, Action, Control};
        let f = fixture();
        let mut failed = record_of(
            &Announcement::decode(wire(&f.key, "site.pp", NOW_MS)).unwrap(),
            String::from_utf8(wire(&f.key, "site.pp", NOW_MS)).unwrap(),
            NOW_MS / 1000,
        );
        failed.status = Status::Failed;
        f.store.put(failed).unwrap();
        let now = NOW_MS / 1000;
        let statement = |action, key: &SigningKey, fleet, exp: u64, issued: u64, nodes: &str| {
            let nodes = if nodes.is_empty() {
                Vec::new()
            } else {
                parse_nodes(nodes).unwrap()
            };
            let mut c = Control::new(action, "site.pp", NOW_MS, issued, fleet, exp, nodes).unwrap();
            c.sign(key).unwrap();
            c.to_wire()
        };
        let stranger = SigningKey::from_bytes(&[9; 32]);
        let cases = [
            (
                statement(Action::Retry, &stranger, FLEET, now + 60, now, ""),
                "signed by no trusted key",
            ),
            (
                statement(Action::Retry, &f.key, FleetId([9; 8]), now + 60, now, ""),
                "is for fleet 0909090909090909",
            ),
            (
                statement(Action::Retry, &f.key, FLEET, now - 1, now - 100, ""),
                "expired",
            ),
        ];
        for (text, want) in cases {
            let why = reason(decide_on(&f, text.as_bytes(), false));
            assert!(why.contains(want), "{why}");
        }
        let two = Policy {
            thresholds: Thresholds {
                default: 2,
                key: 2,
                rules: Vec::new(),
            },
            ..policy(&f, false)
        };
        let retry = statement(Action::Retry, &f.key, FLEET, now + 60, now, "");
        let why = reason(decide_with(&f, retry.as_bytes(), &two));
        assert!(why.contains("signed by 1 of the 2"), "{why}");
        // For other nodes: nothing kept, nothing sent back.
        let elsewhere = statement(Action::Retry, &f.key, FLEET, now + 60, now, "cam-*");
        assert!(matches!(
            decide_on(&f, elsewhere.as_bytes(), false),
            Decision::Control { seen: None, ref requeue, .. } if requeue.is_empty()
        ));
        let Decision::Control {
            seen: Some(seen),
            requeue,
            ..
        } = decide_on(&f, retry.as_bytes(), false)
        else {
            panic!("expected a control decision");
        };
        assert_eq!((seen.action.as_str(), requeue.len()), ("retry", 1));
        f.store.put_control("site.pp", seen).unwrap();
        let why = reason(decide_on(&f, retry.as_bytes(), false));
        assert!(why.starts_with("replay:"), "{why}");
        // A resume sends back only halted records; an abort is kept and sends none back.
        let resume = statement(Action::Resume, &f.key, FLEET, now + 60, now + 1, "");
        assert!(matches!(
            decide_on(&f, resume.as_bytes(), false),
            Decision::Control { seen: Some(_), ref requeue, .. } if requeue.is_empty()
        ));
        f.store
            .set_status("site.pp", NOW_MS, Status::Halted, None, None, now)
            .unwrap();
        assert!(matches!(
            decide_on(&f, resume.as_bytes(), false),
            Decision::Control { seen: Some(_), ref requeue, .. } if requeue.len() == 1
        ));
        let abort = statement(Action::Abort, &f.key, FLEET, now + 60, now + 2, "");
        let Decision::Control {
            seen: Some(seen),
            requeue,
            ..
        } = decide_on(&f, abort.as_bytes(), false)
        else {
            panic!("expected a control decision");
        };
        assert!(requeue.is_empty());
        f.store.put_control("site.pp", seen).unwrap();
        assert_eq!(
            f.store.control("site.pp", NOW_MS).unwrap().unwrap().action,
            "abort"
        );
    }

    /// An operator's revert, verified like every control statement (a key outside the trusted
    /// ones, a replay refused), sets this node's applied record `reverting` to the kept version
    /// it names or the last good one before it; without a kept version, or on a node where the
    /// update is not applied, it is refused with the reason.
    #[test]
    fn an_operators_revert_goes_back_to_a_kept_version_or_says_why_not() {
        use crate::agent::apply::good::GoodStore;
        use crate::formats::control::{Action, Control};
        let f = fixture();
        let (u1, u2) = (NOW_MS - 60_000, NOW_MS);
        for seq in [u1, u2] {
            let text = wire(&f.key, "site.pp", seq);
            let mut record = record_of(
                &Announcement::decode(&text).unwrap(),
                String::from_utf8(text).unwrap(),
                NOW_MS / 1000,
            );
            record.status = Status::Applied;
            f.store.put(record).unwrap();
        }
        let now = NOW_MS / 1000;
        let statement = |key: &SigningKey, to: Option<u64>, issued: u64| {
            let mut c = Control::new(
                Action::Revert,
                "site.pp",
                u2,
                issued,
                FLEET,
                now + 60,
                Vec::new(),
            )
            .unwrap();
            if let Some(to) = to {
                c = c.revert_to(to).unwrap();
            }
            c.sign(key).unwrap();
            c.to_wire()
        };
        let revert_of = |decision| match decision {
            Decision::Control {
                seen: Some(_),
                requeue,
                revert: Some(revert),
                ..
            } if requeue.is_empty() => revert,
            other => panic!("expected a revert, got {other:?}"),
        };
        // Nothing kept yet: refused, saying so.
        let plain = statement(&f.key, None, now);
        let why = revert_of(decide_on(&f, plain.as_bytes(), false)).unwrap_err();
        assert!(why.contains("no earlier good version is kept"), "{why}");
        let payload = f._dir.path().join("v1");
        std::fs::write(&payload, "notice('v1')\n").unwrap();
        GoodStore::of(f.store.dir())
            .keep("site.pp", u1, &payload, None)
            .unwrap();
        let record = revert_of(decide_on(&f, plain.as_bytes(), false)).unwrap();
        assert_eq!(
            (record.seq, record.status, record.restored_seq),
            (u2, Status::Reverting, Some(u1))
        );
        assert_eq!(record.reason.as_deref(), Some(OPERATOR_REVERT));
        let to = statement(&f.key, Some(u1), now);
        assert!(revert_of(decide_on(&f, to.as_bytes(), false)).is_ok());
        let elsewhere = statement(&f.key, Some(u1 - 1), now);
        let why = revert_of(decide_on(&f, elsewhere.as_bytes(), false)).unwrap_err();
        assert!(
            why.contains(&format!("seq {} is not kept", u1 - 1)),
            "{why}"
        );
        // A member without the signing key cannot make one.
        let stranger = SigningKey::from_bytes(&[9; 32]);
        let why = reason(decide_on(
            &f,
            statement(&stranger, None, now).as_bytes(),
            false,
        ));
        assert!(why.contains("signed by no trusted key"), "{why}");
        // Once seen, the same statement is a replay.
        let Decision::Control {
            seen: Some(seen), ..
        } = decide_on(&f, plain.as_bytes(), false)
        else {
            panic!("expected a control decision");
        };
        f.store.put_control("site.pp", seen).unwrap();
        let why = reason(decide_on(&f, plain.as_bytes(), false));
        assert!(why.starts_with("replay:"), "{why}");
        // Where the update is not applied there is nothing to revert.
        f.store
            .set_status("site.pp", u2, Status::Failed, None, None, now)
            .unwrap();
        let later = statement(&f.key, None, now + 1);
        let why = revert_of(decide_on(&f, later.as_bytes(), false)).unwrap_err();
        assert!(why.contains("not applied on this node (failed)"), "{why}");
    }

    /// A plan-bound event stays in the spool while its plan is fetched, and is refused once
    /// it waited longer than a plan search may take.
    #[test]
    fn a_spooled_event_waits_for_its_plan_then_gives_up() {
        let f = fixture();
        let plans = tempfile::tempdir().unwrap();
        let spool_dir = f._dir.path().join("spool");
        let policy = Policy {
            plans_dir: plans.path(),
            ..policy(&f, false)
        };
        let draft = draft("cams.pp", NOW_MS, Kind::Manifest);
        let text = Announcement::sign_v2_with_plan(draft, binding(), b"d1:vi1ee", &f.key)
            .unwrap()
            .to_wire();
        let path = spool::put(&spool_dir, Source::Serf, text.as_bytes()).unwrap();
        // The writer of the spool file sets its times: an old mtime must not cut the wait.
        let epoch = std::fs::FileTimes::new().set_modified(std::time::UNIX_EPOCH);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_times(epoch)
            .unwrap();
        let mut waits = PlanWaits::default();
        let mut run = |now_ms: u64| {
            take_spool(
                &spool_dir,
                &f.store,
                &policy,
                now_ms,
                &mut BTreeSet::new(),
                &mut waits,
                |_| {},
            )
            .unwrap()
        };
        let pass = run(NOW_MS);
        assert_eq!((pass.waiting, pass.plans_wanted.len()), (1, 1));
        assert_eq!(pass.plans_wanted[0].1, text);
        assert!(
            spool::list(&spool_dir).unwrap().is_empty(),
            "out of the spool, waiting in memory"
        );
        assert!(
            f.store.records("cams.pp").unwrap().is_empty(),
            "nothing recorded"
        );
        let pass = run(NOW_MS + PLAN_SEARCH_SECS * 1000);
        assert_eq!(
            (pass.waiting, pass.rejected),
            (1, 0),
            "still within the search"
        );
        let pass = run(NOW_MS + (PLAN_SEARCH_SECS + 5) * 1000);
        assert_eq!((pass.waiting, pass.rejected), (0, 1));
        let rejected = f.store.rejections().unwrap();
        assert!(
            rejected[0].reason.contains("no rollout plan"),
            "{rejected:?}"
        );
    }

    /// `text` (a v2 wire) with the plan flag added, as a member without a signing key can: the
    /// signatures stay the genuine ones, and no plan can make them verify.
    fn with_plan_flag(text: &[u8]) -> Vec<u8> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let prefix = crate::formats::announcement::WIRE_PREFIX_V2.as_bytes();
        let text = text.trim_ascii_end();
        let mut bencode = b64.decode(&text[prefix.len()..]).unwrap();
        let at = bencode.windows(5).position(|w| w == b"3:seq").unwrap();
        bencode.splice(at..at, b"4:plani1e".iter().copied());
        let mut out = prefix.to_vec();
        out.extend_from_slice(b64.encode(bencode).as_bytes());
        out
    }

    /// Issue 28, item 3: a member added the plan flag to a genuine applied announcement (and to
    /// copies with higher seqs) and sent them with `serf event`; the record went from `applied`
    /// to `held` on every node, and 21 forged seqs evicted the genuine records. Now the copy of
    /// the applied seq is a replay, the others wait outside the records (bounded), and the
    /// genuine record, its status answer and its catch-up answer stay as they were.
    #[test]
    fn a_forged_plan_flag_changes_no_record_and_answers_no_query() {
        let f = fixture();
        let plans = tempfile::tempdir().unwrap();
        let spool_dir = f._dir.path().join("spool");
        let policy = Policy {
            plans_dir: plans.path(),
            ..policy(&f, false)
        };
        let genuine = wire(&f.key, "site.pp", NOW_MS);
        let forged = with_plan_flag(&genuine);
        assert!(Announcement::decode(&forged).unwrap().has_plan());
        let mut waits = PlanWaits::default();
        let mut run = || {
            take_spool(
                &spool_dir,
                &f.store,
                &policy,
                NOW_MS,
                &mut BTreeSet::new(),
                &mut waits,
                |_| {},
            )
            .unwrap()
        };
        spool::put(&spool_dir, Source::Serf, &genuine).unwrap();
        assert_eq!(run().accepted, 1);
        f.store
            .set_status(
                "site.pp",
                NOW_MS,
                Status::Applied,
                None,
                None,
                NOW_MS / 1000,
            )
            .unwrap();
        let before = f.store.records("site.pp").unwrap();
        let latest = crate::agent::runtime::status::latest_wire(&f.store, "site.pp").unwrap();

        spool::put(&spool_dir, Source::Serf, &forged).unwrap();
        for n in 1..=40 {
            let newer = with_plan_flag(&wire(&f.key, "site.pp", NOW_MS + n));
            spool::put(&spool_dir, Source::Serf, &newer).unwrap();
        }
        let pass = run();
        assert_eq!(pass.accepted, 0);
        assert_eq!(pass.waiting, MAX_WAITING_PER_SOURCE, "bounded per source");
        assert!(
            pass.requests
                .contains(&crate::agent::runtime::sync::Request::Fleet),
            "a full set asks the fleet now, so a genuine plan-bound update comes through catch-up"
        );
        assert_eq!(
            f.store.records("site.pp").unwrap(),
            before,
            "the record is untouched"
        );
        assert_eq!(
            crate::agent::runtime::status::latest_wire(&f.store, "site.pp").unwrap(),
            latest,
            "catch-up is still answered with the genuine announcement"
        );
        let reasons: Vec<String> = f
            .store
            .rejections()
            .unwrap()
            .into_iter()
            .map(|r| r.reason)
            .collect();
        assert!(reasons[0].starts_with("replay"), "{reasons:?}");
        assert!(
            reasons[1..]
                .iter()
                .all(|r| r.starts_with("too many announcements waiting")),
            "{reasons:?}"
        );
        // A forgery signed by no trusted key does not even wait.
        let stranger = SigningKey::from_bytes(&[9; 32]);
        let theirs = with_plan_flag(&wire(&stranger, "other.pp", NOW_MS));
        let why = reason(decide_with(&f, &theirs, &policy));
        assert!(why.contains("no signer is a trusted key"), "{why}");
    }

    /// Issue 28, item 1: `<info-hash>.plan` in the download dir (Transmission's user writes it)
    /// replaced by a FIFO, a link to a good plan, or garbage: the pass over the spool neither
    /// blocks nor refuses the signed update; it waits, and is accepted once a good plan is
    /// there. The verified copy is kept root's, and read back from there whatever becomes of
    /// the download dir's.
    #[test]
    fn a_fifo_link_or_garbage_plan_neither_blocks_nor_refuses_the_signed_update() {
        let f = fixture();
        let plans = tempfile::tempdir().unwrap();
        let spool_dir = f._dir.path().join("spool");
        let good = b"d6:target15:tag:role=camera1:vi1ee".to_vec();
        let sign = |name: &str, seq: u64| {
            let draft = draft(name, seq, Kind::Manifest);
            Announcement::sign_v2_with_plan(draft, binding(), &good, &f.key)
                .unwrap()
                .to_wire()
        };
        let hash = hex::encode([1u8; 20]);
        let at = plan_path(plans.path(), &hash);
        let elsewhere = f._dir.path().join("good.plan");
        std::fs::write(&elsewhere, &good).unwrap();
        let plans_dir = plans.path().to_path_buf();
        let (store_dir, keys_dir) = (f.store.dir().to_path_buf(), f.keys_dir.clone());
        let spool = spool_dir.clone();
        // Each pass on a thread of its own: a FIFO used to block it for good.
        let pass_within_10s = move |waits: PlanWaits| {
            let (plans_dir, store_dir, keys_dir, spool) = (
                plans_dir.clone(),
                store_dir.clone(),
                keys_dir.clone(),
                spool.clone(),
            );
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let store = StateStore::open(&store_dir).unwrap();
                let policy = Policy {
                    trusted_keys_dir: &keys_dir,
                    plans_dir: &plans_dir,
                    accept_legacy: false,
                    accept_v1: false,
                    fleet: FLEET,
                    thresholds: Thresholds::one(),
                    max_future_ms: 86_400_000,
                    max_payload_bytes: u64::MAX,
                    node: "node-1",
                };
                let mut waits = waits;
                let mut taken = Vec::new();
                let pass = take_spool(
                    &spool,
                    &store,
                    &policy,
                    NOW_MS,
                    &mut BTreeSet::new(),
                    &mut waits,
                    |a| taken.push(a.record),
                )
                .unwrap();
                let _ = tx.send((pass, waits, taken));
            });
            rx.recv_timeout(std::time::Duration::from_secs(10))
                .expect("the pass over the spool blocked on the plan")
        };
        spool::put(&spool_dir, Source::Serf, sign("cams.pp", NOW_MS).as_bytes()).unwrap();
        nix::unistd::mkfifo(&at, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let (pass, waits, _) = pass_within_10s(PlanWaits::default());
        assert_eq!((pass.waiting, pass.rejected), (1, 0), "a FIFO: waits");
        std::fs::remove_file(&at).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &at).unwrap();
        let (pass, waits, _) = pass_within_10s(waits);
        assert_eq!(
            (pass.waiting, pass.rejected),
            (1, 0),
            "a link is not followed"
        );
        std::fs::remove_file(&at).unwrap();
        std::fs::write(&at, b"d1:vi1ee").unwrap();
        let (pass, waits, _) = pass_within_10s(waits);
        assert_eq!(
            (pass.waiting, pass.rejected),
            (1, 0),
            "garbage: a bad copy, waits"
        );
        std::fs::write(&at, &good).unwrap();
        let (pass, waits, taken) = pass_within_10s(waits);
        assert_eq!(
            (pass.accepted, pass.waiting),
            (1, 0),
            "a good plan: accepted"
        );
        assert_eq!(taken[0].plan.as_deref(), std::str::from_utf8(&good).ok());
        let kept = kept_plan_path(f.store.dir(), &hash);
        assert_eq!(std::fs::read(&kept).unwrap(), good);
        // The download dir's copy turned into a FIFO again: a later update bound to the same
        // plan is taken from root's copy.
        std::fs::remove_file(&at).unwrap();
        nix::unistd::mkfifo(&at, nix::sys::stat::Mode::S_IRWXU).unwrap();
        spool::put(
            &spool_dir,
            Source::Serf,
            sign("cams.pp", NOW_MS + 1).as_bytes(),
        )
        .unwrap();
        let (pass, _, _) = pass_within_10s(waits);
        assert_eq!(pass.accepted, 1, "verified from root's copy");
    }

    /// TUF's key compromise below threshold: one key's signature on a 2-of-n name is held,
    /// never applied; the same name and seq with a second signature is accepted when it comes.
    #[test]
    fn below_threshold_is_held_and_the_same_seq_with_enough_signatures_is_accepted() {
        let f = fixture();
        let second = SigningKey::from_bytes(&[8; 32]);
        let stranger = SigningKey::from_bytes(&[9; 32]);
        trust(&f, &second);
        let policy = Policy {
            thresholds: Thresholds {
                default: 1,
                key: 1,
                rules: vec![("base*".into(), 2)],
            },
            ..policy(&f, false)
        };
        let one =
            Announcement::sign_v2(draft("base.pp", NOW_MS, Kind::Manifest), binding(), &f.key)
                .unwrap();
        let Decision::Held(held) = decide_with(&f, one.to_wire().as_bytes(), &policy) else {
            panic!("one signature of two was not held");
        };
        let why = held.reason.clone().unwrap();
        assert!(
            why.starts_with("held: signed by 1 of the 2 trusted keys agent.thresholds \"base*\""),
            "{why}"
        );
        f.store.put(held).unwrap();
        // An untrusted co-signer does not count.
        let mut with_stranger = one.clone();
        with_stranger.add_signature(&stranger).unwrap();
        assert!(matches!(
            decide_with(&f, with_stranger.to_wire().as_bytes(), &policy),
            Decision::Held(_)
        ));
        // Other names keep the default of one.
        assert!(matches!(
            decide_with(&f, &wire(&f.key, "site.pp", NOW_MS), &policy),
            Decision::Accepted(_)
        ));
        let mut both = one;
        both.add_signature(&second).unwrap();
        let Decision::Accepted(Accepted { record, .. }) =
            decide_with(&f, both.to_wire().as_bytes(), &policy)
        else {
            panic!("two signatures of two were not accepted");
        };
        f.store.put(record).unwrap();
        let records = f.store.records("base.pp").unwrap();
        assert_eq!(records.len(), 1, "the held record is replaced: {records:?}");
        assert_eq!(records[0].status, Status::Pending);
        // And once accepted, the same seq again is a replay.
        let why = reason(decide_with(&f, both.to_wire().as_bytes(), &policy));
        assert!(why.starts_with("replay"), "{why}");
    }

    /// A key update needs agent.key_threshold whatever its name: a stolen key cannot add or
    /// revoke keys under a name no threshold rule covers.
    #[test]
    fn key_updates_need_the_key_threshold_whatever_their_name() {
        let f = fixture();
        let policy = Policy {
            thresholds: Thresholds {
                default: 1,
                key: 2,
                rules: vec![("*".into(), 1)],
            },
            ..policy(&f, false)
        };
        let text = signed(&f.key, "innocent.txt", NOW_MS, Kind::Key, 10, [2; 32]);
        let Decision::Held(held) = decide_with(&f, &text, &policy) else {
            panic!("a key update with one signature was not held");
        };
        assert!(
            held.reason.unwrap().contains("agent.key_threshold"),
            "held for the wrong reason"
        );
        let file = signed(&f.key, "innocent.txt", NOW_MS, Kind::File, 10, [2; 32]);
        assert!(matches!(
            decide_with(&f, &file, &policy),
            Decision::Accepted(_)
        ));
    }

    #[test]
    fn glob_cases() {
        for (glob, name, want) in [
            ("base*", "base.pp", true),
            ("base*", "base", true),
            ("base*", "xbase.pp", false),
            ("*.pp", "site.pp", true),
            ("*.pp", "site.ppx", false),
            ("s?te.pp", "site.pp", true),
            ("*", "", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("ünï*", "ünïcode", true),
            ("site.pp", "site.pp", true),
            ("site.pp", "site.p", false),
        ] {
            assert_eq!(glob_match(glob, name), want, "{glob} ~ {name}");
        }
    }

    /// Runs one pass of the agent over `spool`, on a thread: a pass that blocks fails the test.
    fn pass_over(f: &Fixture, spool: &Path) -> (Pass, Vec<Record>) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut taken = Vec::new();
                let pass = take_spool(
                    spool,
                    &f.store,
                    &policy(f, false),
                    NOW_MS,
                    &mut BTreeSet::new(),
                    &mut PlanWaits::default(),
                    |a: Accepted| taken.push(a.record),
                );
                let _ = tx.send((pass.map_err(|e| chain(&e)), taken));
            });
            let (pass, taken) = rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("the pass over the spool blocked");
            (pass.expect("the pass over the spool failed"), taken)
        })
    }

    /// A directory, a link and a FIFO named like events (in the NAT client's part, which a
    /// compromised client controls) used to stop the agent on every start, or block its main
    /// loop for good. Now they are quarantined and the events around them are still taken.
    #[test]
    fn bad_spool_entries_are_quarantined_and_the_pass_goes_on() {
        let f = fixture();
        let spool_dir = f._dir.path().join("spool");
        let overlay = spool::overlay_dir(&spool_dir);
        std::fs::create_dir_all(&overlay).unwrap();
        spool::put(&spool_dir, Source::Serf, &wire(&f.key, "a.pp", NOW_MS)).unwrap();
        std::fs::create_dir(overlay.join("00000000000000000001-overlay-1.event")).unwrap();
        std::os::unix::fs::symlink(
            f._dir.path().join("state"),
            overlay.join("00000000000000000002-overlay-2.event"),
        )
        .unwrap();
        nix::unistd::mkfifo(
            &overlay.join("00000000000000000003-overlay-3.event"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        spool::put(&overlay, Source::Overlay, &wire(&f.key, "b.pp", NOW_MS)).unwrap();

        let (pass, taken) = pass_over(&f, &spool_dir);
        assert_eq!((pass.accepted, pass.quarantined), (2, 3), "{pass:?}");
        assert_eq!(
            taken.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["a.pp", "b.pp"]
        );
        assert!(spool::list(&spool_dir).unwrap().is_empty());
        let quarantined = std::fs::read_dir(spool_dir.join(spool::QUARANTINE_SUBDIR))
            .unwrap()
            .count();
        assert_eq!(quarantined, 3);
        // The next pass has nothing left to trip over.
        assert_eq!(pass_over(&f, &spool_dir).0, Pass::default());
    }

    /// `submit` re-sends each announcement a few times (Serf drops events around a restart):
    /// the copies of one already taken are dropped as known, not recorded as replays that
    /// would fill `p2pu status`; a different announcement under the same seq still is one.
    #[test]
    fn a_re_sent_announcement_is_known_not_a_rejected_replay() {
        let f = fixture();
        let spool_dir = f._dir.path().join("spool");
        std::fs::create_dir_all(&spool_dir).unwrap();
        let sent = wire(&f.key, "site.pp", NOW_MS);
        spool::put(&spool_dir, Source::Serf, &sent).unwrap();
        assert_eq!(pass_over(&f, &spool_dir).0.accepted, 1);
        for _ in 0..3 {
            spool::put(&spool_dir, Source::Serf, &sent).unwrap();
        }
        let (pass, taken) = pass_over(&f, &spool_dir);
        assert_eq!(
            (pass.known, pass.rejected, taken.len()),
            (3, 0, 0),
            "{pass:?}"
        );
        assert!(f.store.rejections().unwrap().is_empty());
        let other = signed(&f.key, "site.pp", NOW_MS, Kind::Manifest, 11, [2; 32]);
        spool::put(&spool_dir, Source::Serf, &other).unwrap();
        let (pass, _) = pass_over(&f, &spool_dir);
        assert_eq!((pass.known, pass.rejected), (0, 1), "{pass:?}");
        assert!(spool::list(&spool_dir).unwrap().is_empty());
    }

    /// A push may come from any process on a member's machine (`agent::transfer::push`): a
    /// pushed text the intake refuses is dropped without a record, where the same text from
    /// Serf is recorded; a pushed genuine announcement is taken like Serf's.
    #[test]
    fn a_refused_push_makes_no_record_and_a_genuine_one_is_taken() {
        let f = fixture();
        let spool_dir = f._dir.path().join("spool");
        std::fs::create_dir_all(&spool_dir).unwrap();
        let stranger = SigningKey::from_bytes(&[9; 32]);
        let forged = wire(&stranger, "site.pp", NOW_MS);
        spool::put(&spool_dir, Source::Push, &forged).unwrap();
        let (pass, taken) = pass_over(&f, &spool_dir);
        assert_eq!((pass.rejected, taken.len()), (0, 0), "{pass:?}");
        assert!(
            f.store.rejections().unwrap().is_empty(),
            "no record of a refused push"
        );
        assert!(
            spool::list(&spool_dir).unwrap().is_empty(),
            "and it is gone"
        );
        spool::put(&spool_dir, Source::Serf, &forged).unwrap();
        assert_eq!(
            pass_over(&f, &spool_dir).0.rejected,
            1,
            "from Serf it is recorded"
        );
        assert_eq!(f.store.rejections().unwrap().len(), 1);
        let genuine = wire(&f.key, "site.pp", NOW_MS);
        spool::put(&spool_dir, Source::Push, &genuine).unwrap();
        let (pass, taken) = pass_over(&f, &spool_dir);
        assert_eq!((pass.accepted, taken.len()), (1, 1), "{pass:?}");
    }

    /// Any member with the gossip key can broadcast a user event that looks like a sync
    /// request, and the NAT client's user writes the overlay part: neither may make this node
    /// query the fleet. Only root's own requests (the handler's, `p2pu sync`'s) count.
    #[test]
    fn sync_requests_count_only_from_the_spools_own_part() {
        use crate::agent::runtime::sync::{self, Request};
        let f = fixture();
        let spool_dir = f._dir.path().join("spool");
        let overlay = spool::overlay_dir(&spool_dir);
        std::fs::create_dir_all(&overlay).unwrap();
        let fleet = Request::Fleet.to_wire();
        spool::put(&spool_dir, Source::Serf, fleet.as_bytes()).unwrap();
        spool::put(&overlay, Source::Sync, fleet.as_bytes()).unwrap();
        spool::put(&spool_dir, Source::Sync, b"p2pu-sync1:ask:../../x").unwrap();
        let (pass, _) = pass_over(&f, &spool_dir);
        assert!(pass.requests.is_empty(), "{pass:?}");
        let asked = Request::Asked(sync::new_id());
        sync::put(&spool_dir, &asked).unwrap();
        sync::put(&spool_dir, &Request::Fleet).unwrap();
        let (pass, _) = pass_over(&f, &spool_dir);
        assert_eq!(pass.requests, [asked, Request::Fleet]);
        assert_eq!((pass.accepted, pass.rejected), (0, 0));
        assert!(spool::list(&spool_dir).unwrap().is_empty());
    }

    /// Any member with the gossip key can broadcast a user event that reads like `p2pu
    /// mark-good|mark-bad`, and the NAT client's user writes the overlay part: neither may end
    /// a running check or revert an update. Only root's own requests (source `operator` in the
    /// spool itself) count.
    #[test]
    fn mark_requests_count_only_from_the_spools_own_part() {
        use crate::agent::runtime::health::{verdict_for, MARKED_BAD};
        use crate::agent::runtime::mark::{self, Request, Verdict};
        let f = fixture();
        let spool_dir = f._dir.path().join("spool");
        let overlay = spool::overlay_dir(&spool_dir);
        std::fs::create_dir_all(&overlay).unwrap();
        let mut checking = Record::pending("site.pp", &"01".repeat(20), b"x");
        checking.seq = 5;
        checking.status = Status::Checking;
        f.store.put(checking.clone()).unwrap();
        let forged = |id: &str| Request {
            id: id.to_string(),
            verdict: Verdict::Bad,
            name: "site.pp".into(),
            seq: None,
        };
        let (serf, overlaid) = (mark::new_id(), mark::new_id());
        spool::put(&spool_dir, Source::Serf, forged(&serf).to_wire().as_bytes()).unwrap();
        spool::put(
            &overlay,
            Source::Operator,
            forged(&overlaid).to_wire().as_bytes(),
        )
        .unwrap();
        let (pass, taken) = pass_over(&f, &spool_dir);
        assert_eq!((pass.accepted, pass.rejected, taken.len()), (0, 0, 0));
        assert!(spool::list(&spool_dir).unwrap().is_empty());
        assert_eq!(verdict_for(f.store.dir(), &checking), None);
        for id in [&serf, &overlaid] {
            assert_eq!(mark::read_answer(f.store.dir(), id).unwrap(), None);
        }
        let own = forged(&mark::new_id());
        mark::put(&spool_dir, &own).unwrap();
        pass_over(&f, &spool_dir);
        assert_eq!(
            verdict_for(f.store.dir(), &checking),
            Some((false, MARKED_BAD.to_string()))
        );
        assert!(
            mark::read_answer(f.store.dir(), &own.id)
                .unwrap()
                .unwrap()
                .accepted
        );
    }

    #[test]
    fn signed_new_announcement_is_accepted() {
        let f = fixture();
        let Decision::Accepted(Accepted { record, .. }) =
            decide_on(&f, &wire(&f.key, "site.pp", NOW_MS), false)
        else {
            panic!("not accepted");
        };
        assert_eq!(
            (record.name.as_str(), record.seq, record.status),
            ("site.pp", NOW_MS, Status::Pending)
        );
        assert_eq!(record.info_hash, "01".repeat(20));
    }

    /// The worker used to decode each accepted wire text a second time; now the intake hands
    /// over what it decoded, and a record resumed after a restart decodes to the same.
    #[test]
    fn accepted_updates_carry_their_decoded_wire_and_resume_decodes_the_same() {
        let f = fixture();
        let text = signed(&f.key, "site.pp", NOW_MS, Kind::Module, 10, [3; 32]);
        let Decision::Accepted(signed) = decide_on(&f, &text, false) else {
            panic!("not accepted");
        };
        assert_eq!(
            (signed.record.kind, signed.record.sha256),
            (RecordKind::Signed(Kind::Module), Some([3; 32]))
        );
        assert_eq!(
            signed.decoded,
            Decoded::Signed(Announcement::decode(&text).unwrap())
        );
        let Decision::Accepted(from_legacy) = decide_on(&f, LEGACY, true) else {
            panic!("not accepted");
        };
        assert_eq!(
            from_legacy.decoded,
            Decoded::Legacy(legacy::decode_payload(LEGACY).unwrap())
        );
        for accepted in [signed, from_legacy] {
            f.store.put(accepted.record.clone()).unwrap();
            let stored = f.store.open_records().unwrap();
            let stored = stored.iter().find(|r| r.kind == accepted.record.kind);
            assert_eq!(resume(stored.unwrap().clone()).unwrap(), accepted);
        }
        // A wire text that no longer decodes is an error the agent records, not a panic.
        let mut broken = record_of(&Announcement::decode(&text).unwrap(), "p2pu1:!".into(), 0);
        assert!(resume(broken.clone()).is_err());
        broken.kind = RecordKind::Legacy;
        assert!(resume(broken).is_err());
    }

    #[test]
    fn replay_and_downgrade_are_rejected_with_their_reason() {
        let f = fixture();
        let Decision::Accepted(Accepted { record, .. }) =
            decide_on(&f, &wire(&f.key, "site.pp", NOW_MS), false)
        else {
            panic!("not accepted");
        };
        f.store.put(record).unwrap();
        assert_eq!(
            reason(decide_on(&f, &wire(&f.key, "site.pp", NOW_MS), false)),
            "replay: this seq was already accepted"
        );
        let older = reason(decide_on(&f, &wire(&f.key, "site.pp", NOW_MS - 1), false));
        assert!(older.starts_with("downgrade: seq"), "{older}");
    }

    #[test]
    fn tampered_and_unknown_signers_are_rejected() {
        let f = fixture();
        let stranger = SigningKey::from_bytes(&[9; 32]);
        let unknown = reason(decide_on(&f, &wire(&stranger, "site.pp", NOW_MS), false));
        assert!(
            unknown.contains("unknown") || unknown.contains("not trusted"),
            "{unknown}"
        );
        // A signature from another announcement: decodes fine, fails verification.
        let signed = Announcement::decode(wire(&f.key, "site.pp", NOW_MS)).unwrap();
        let other = Announcement::decode(wire(&f.key, "other.pp", NOW_MS)).unwrap();
        let mut bytes = signed.to_bencode();
        let at = bytes.windows(64).position(|w| w == signed.sig()).unwrap();
        bytes[at..at + 64].copy_from_slice(other.sig());
        use base64::Engine;
        let text = format!(
            "p2pu2:{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        let bad = reason(decide_on(&f, text.as_bytes(), false));
        assert!(bad.contains("signature"), "{bad}");
        let garbage = reason(decide_on(&f, b"p2pu1:!!!", false));
        assert!(garbage.contains("base64"), "{garbage}");
    }

    #[test]
    fn far_future_seq_is_held_and_blocks_nothing() {
        let f = fixture();
        let future = NOW_MS + 2 * 86_400_000;
        let Decision::Held(record) = decide_on(&f, &wire(&f.key, "site.pp", future), false) else {
            panic!("not held");
        };
        assert!(record.reason.clone().unwrap().starts_with("held: seq"));
        // The agent records held announcements; a recorded one must still block nothing.
        f.store.put(record).unwrap();
        assert!(matches!(
            decide_on(&f, &wire(&f.key, "site.pp", NOW_MS), false),
            Decision::Accepted(_)
        ));
    }

    #[test]
    fn legacy_is_refused_by_default_and_accepted_when_configured() {
        let f = fixture();
        assert_eq!(
            reason(decide_on(&f, LEGACY, false)),
            "legacy payload refused: accept_legacy = false"
        );
        let Decision::Accepted(Accepted { record, .. }) = decide_on(&f, LEGACY, true) else {
            panic!("not accepted");
        };
        assert_eq!(
            (record.name.as_str(), record.kind, record.seq, record.sha256),
            ("lizard.jpg", RecordKind::Legacy, 1_497_349_863, None)
        );
        f.store.put(record).unwrap();
        let again = reason(decide_on(&f, LEGACY, true));
        assert_eq!(
            again,
            "legacy payload is not newer than the last one of its name"
        );
        let mut wrong_md5 = LEGACY.to_vec();
        wrong_md5[0] = if wrong_md5[0] == b'0' { b'1' } else { b'0' };
        let bad = reason(decide_on(&f, &wrong_md5, true));
        assert!(bad.contains("MD5") || bad.contains("md5"), "{bad}");
    }

    /// The lizard vector with another creation date (outside the info dict: same info-hash).
    fn legacy_dated(date: u64) -> Vec<u8> {
        let torrent =
            include_bytes!("../../../crates/p2pu-formats/tests/vectors/legacy/lizard.torrent");
        let from = b"13:creation datei1497349863e";
        let at = torrent.windows(from.len()).position(|w| w == from).unwrap();
        let dated = [
            &torrent[..at],
            format!("13:creation datei{date}e").as_bytes(),
            &torrent[at + from.len()..],
        ]
        .concat();
        legacy::encode_payload(&dated).unwrap()
    }

    /// A prototype payload dated 99999999999999 used to be accepted, after which every signed
    /// update of its name was a "downgrade", even with legacy turned off again.
    #[test]
    fn far_future_legacy_is_held_and_signed_updates_of_its_name_go_on() {
        let f = fixture();
        let Decision::Held(held) = decide_on(&f, &legacy_dated(99_999_999_999_999), true) else {
            panic!("not held");
        };
        assert!(
            held.reason.as_deref().unwrap().starts_with("held: legacy"),
            "{held:?}"
        );
        f.store.put(held).unwrap();
        for (seq, accept_legacy) in [(NOW_MS, true), (NOW_MS + 1, false)] {
            let Decision::Accepted(Accepted { record: signed, .. }) =
                decide_on(&f, &wire(&f.key, "lizard.jpg", seq), accept_legacy)
            else {
                panic!("signed update blocked");
            };
            f.store.put(signed).unwrap();
        }
        // A present date is still accepted.
        assert!(matches!(
            decide_on(&f, &legacy_dated(NOW_MS / 1000), true),
            Decision::Accepted(_)
        ));
    }

    /// Legacy creation dates (seconds, unauthenticated) and signed seqs (ms) are separate
    /// sequences: neither makes the other look old.
    #[test]
    fn legacy_dates_and_signed_seqs_are_separate_sequences() {
        let f = fixture();
        let Decision::Accepted(Accepted { record: signed, .. }) =
            decide_on(&f, &wire(&f.key, "lizard.jpg", NOW_MS), true)
        else {
            panic!("not accepted");
        };
        f.store.put(signed).unwrap();
        let Decision::Accepted(Accepted { record: legacy, .. }) = decide_on(&f, LEGACY, true)
        else {
            panic!("a legacy date was compared with a signed seq");
        };
        assert_eq!(legacy.seq, 1_497_349_863);
        f.store.put(legacy).unwrap();
        assert!(matches!(
            decide_on(&f, &wire(&f.key, "lizard.jpg", NOW_MS + 1), true),
            Decision::Accepted(_)
        ));
        assert_eq!(
            reason(decide_on(&f, LEGACY, true)),
            "legacy payload is not newer than the last one of its name"
        );
    }

    /// The prototype's overlay message (`SendTorrentFile <ip> split <payload>`) is a legacy
    /// payload like the Serf one: accepted under `accept_legacy`, refused without it, and
    /// recorded as the bare payload a restart decodes again.
    #[test]
    fn legacy_overlay_message_is_accepted_only_under_accept_legacy() {
        const OVERLAY: &[u8] = include_bytes!(
            "../../../crates/p2pu-formats/tests/vectors/legacy/lizard.overlay-message"
        );
        let f = fixture();
        assert_eq!(
            reason(decide_on(&f, OVERLAY, false)),
            "legacy payload refused: accept_legacy = false"
        );
        let Decision::Accepted(Accepted { record, .. }) = decide_on(&f, OVERLAY, true) else {
            panic!("not accepted");
        };
        let Decision::Accepted(Accepted {
            record: from_serf, ..
        }) = decide_on(&f, LEGACY, true)
        else {
            panic!("not accepted");
        };
        assert_eq!(
            (record.name.as_str(), record.seq, &record.info_hash),
            ("lizard.jpg", 1_497_349_863, &from_serf.info_hash)
        );
        assert!(legacy::decode_payload(record.wire.as_bytes()).is_ok());
        let mut bad_sender = b"SendTorrentFile nowhere split ".to_vec();
        bad_sender.extend_from_slice(LEGACY);
        let why = reason(decide_on(&f, &bad_sender, true));
        assert!(why.contains("not an IP address"), "{why}");
    }

    #[test]
    fn payload_over_the_cap_is_refused_before_download() {
        let f = fixture();
        let at_cap = signed(&f.key, "big.pp", NOW_MS, Kind::Manifest, 1000, [2; 32]);
        assert!(matches!(
            decide_capped(&f, &at_cap, false, 1000),
            Decision::Accepted(_)
        ));
        let over = signed(&f.key, "big.pp", NOW_MS + 1, Kind::Manifest, 1001, [2; 32]);
        let why = reason(decide_capped(&f, &over, false, 1000));
        assert!(
            why.contains("exceeds agent.max_payload_bytes = 1000"),
            "{why}"
        );
        // Legacy payloads carry their length in the torrent: the same cap holds (the vector's
        // file is larger than the fixture's 1000-byte cap).
        let legacy = reason(decide_capped(&f, LEGACY, true, 1000));
        assert!(
            legacy.contains("exceeds agent.max_payload_bytes"),
            "{legacy}"
        );
    }

    /// TUF's key compromise: the attacker holds the fleet's only signing key. The operator trusts
    /// a new key with a `key` update signed by the old one, revokes the old one with a `key`
    /// update signed by the new one; from then on the fleet takes the new key's updates and
    /// refuses the old key's, and what the attacker published in between changes nothing.
    #[test]
    fn compromised_key_is_replaced_by_signed_key_updates() {
        use crate::agent::apply::apply_key_update;
        use crate::keys::{revocation_text, KeyChange, KeyId};
        use sha2::{Digest, Sha256};
        let f = fixture();
        let old = f.key.clone();
        let new = SigningKey::from_bytes(&[8; 32]);
        let take_key_update = |signer: &SigningKey, seq: u64, payload: &[u8]| -> KeyChange {
            let sha: [u8; 32] = Sha256::digest(payload).into();
            let text = signed(
                signer,
                "fleet.key",
                seq,
                Kind::Key,
                payload.len() as u64,
                sha,
            );
            let Decision::Accepted(Accepted { record, .. }) = decide_on(&f, &text, false) else {
                panic!("key update not accepted");
            };
            f.store.put(record).unwrap();
            let announcement = Announcement::decode(&text).unwrap();
            apply_key_update(&f.keys_dir, &announcement, payload, &ONE_KEY).unwrap()
        };

        // The attacker's far-future update with the stolen key is held, not applied.
        let attack = wire(&old, "site.pp", NOW_MS + 30 * 86_400_000);
        let Decision::Held(held) = decide_on(&f, &attack, false) else {
            panic!("not held");
        };
        f.store.put(held).unwrap();

        let new_public = PublicKey {
            key: new.verifying_key(),
            comment: "ops-2".into(),
        };
        let trusted = take_key_update(&old, NOW_MS + 1, new_public.to_text().as_bytes());
        assert_eq!(trusted, KeyChange::Trusted(new_public.kid()));
        let old_kid = KeyId::of(&old.verifying_key());
        let revocation = revocation_text(old_kid, "compromised");
        let revoked = take_key_update(&new, NOW_MS + 2, revocation.as_bytes());
        assert_eq!(revoked, KeyChange::Revoked(old_kid));

        let by_old = reason(decide_on(&f, &wire(&old, "site.pp", NOW_MS + 3), false));
        assert!(by_old.contains("revoked"), "{by_old}");
        assert!(matches!(
            decide_on(&f, &wire(&new, "site.pp", NOW_MS + 3), false),
            Decision::Accepted(_)
        ));
        // A key update from the revoked key cannot bring it back.
        let sneak = revocation_text(new_public.kid(), "attacker");
        let sha: [u8; 32] = Sha256::digest(sneak.as_bytes()).into();
        let text = signed(
            &old,
            "fleet.key",
            NOW_MS + 4,
            Kind::Key,
            sneak.len() as u64,
            sha,
        );
        let why = reason(decide_on(&f, &text, false));
        assert!(why.contains("revoked"), "{why}");
        let announcement = Announcement::decode(&text).unwrap();
        assert!(apply_key_update(&f.keys_dir, &announcement, sneak.as_bytes(), &ONE_KEY).is_err());
    }

    /// A delegated key counts only within its statement: outside its names the update is
    /// refused with the rule that refuses it, inside them it is accepted.
    #[test]
    fn a_delegated_key_signing_outside_its_names_is_refused() {
        use crate::formats::delegation::{Delegation, Grant};
        use crate::formats::document::SignedDocument;
        use sha2::{Digest, Sha256};
        let f = fixture();
        let camera = SigningKey::from_bytes(&[9; 32]);
        let mut statement = Delegation::new(Grant {
            key: camera.verifying_key(),
            names: vec!["cam-*".into()],
            kinds: vec![Kind::Manifest],
            targets: vec![],
            fleet: FLEET,
            expires: 4_000_000_000,
        })
        .unwrap();
        statement.sign(&f.key).unwrap();
        let text = statement.to_text();
        let sha: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        let update = signed(&f.key, "cam", NOW_MS, Kind::Key, text.len() as u64, sha);
        let announcement = Announcement::decode(&update).unwrap();
        crate::trust::apply_key_update(&f.keys_dir, &announcement, text.as_bytes(), &ONE_KEY)
            .unwrap();

        let why = reason(decide_on(&f, &wire(&camera, "base.pp", NOW_MS), false));
        assert!(
            why.starts_with("not permitted: key ")
                && why.contains("may sign names cam-* only, not \"base.pp\""),
            "{why}"
        );
        assert!(matches!(
            decide_on(&f, &wire(&camera, "cam-front.pp", NOW_MS), false),
            Decision::Accepted(_)
        ));
        // Nor may it sign a key update, even under its names.
        let key_update = signed(&camera, "cam-key", NOW_MS, Kind::Key, 10, [2; 32]);
        let why = reason(decide_on(&f, &key_update, false));
        assert!(
            why.contains("may sign kinds manifest only, not key"),
            "{why}"
        );
    }

    /// A root chain names keys the node may not know yet: it is taken to be checked when
    /// applied, but never with a seq ahead of the node's clock.
    #[test]
    fn a_root_chain_by_unknown_keys_is_taken_for_the_apply_to_check() {
        use crate::formats::root::ROOT_NAME;
        let f = fixture();
        let stranger = SigningKey::from_bytes(&[9; 32]);
        let chain = signed(&stranger, ROOT_NAME, NOW_MS, Kind::Key, 10, [2; 32]);
        assert!(matches!(
            decide_on(&f, &chain, false),
            Decision::Accepted(_)
        ));
        let ahead = signed(&stranger, ROOT_NAME, NOW_MS + 1, Kind::Key, 10, [2; 32]);
        let Decision::Held(held) = decide_on(&f, &ahead, false) else {
            panic!("not held");
        };
        assert!(held.reason.unwrap().contains("ahead of this node's clock"));
        // Nor may it make the node fetch more than a chain can be.
        let big = signed(
            &stranger,
            ROOT_NAME,
            NOW_MS - 1,
            Kind::Key,
            1 << 30,
            [2; 32],
        );
        assert!(reason(decide_on(&f, &big, false)).contains("a chain is at most"));
        // Under any other name, the same signer is unknown.
        let other = signed(&stranger, "root", NOW_MS, Kind::Key, 10, [2; 32]);
        assert!(reason(decide_on(&f, &other, false)).contains("unknown key"));
    }
}
