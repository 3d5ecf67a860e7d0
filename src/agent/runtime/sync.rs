//! What makes the agent ask the fleet before `agent.catch_up_secs` is up, and what a
//! `p2pu sync` gets back.
//!
//! Serf drops a user event older than the Lamport time at which a member (re)joined, and a node
//! whose Serf was down or cut off never hears what was broadcast meanwhile. So the agent runs
//! its catch-up round (the heartbeat query, then catch-up's queries) at once:
//! - when the fleet changed: Serf's event handler spools a [`Request::Fleet`] on every
//!   `member-join` (Serf sends one for this node itself when it starts, and one for each
//!   member it (re)joins), rate-limited by [`Backoff`] so a flapping member cannot make the
//!   fleet query-storm;
//! - when a newer heartbeat was kept (its snapshot may list what this node lacks);
//! - when an operator asks (`p2pu sync`, a [`Request::Asked`]): the round's [`Answer`] is
//!   written to `<state_dir>/sync/<id>.json` for the command to read.
//!
//! A request is a spool file of source `sync` in the spool itself (root's part): one from the
//! NAT client's `overlay/` part, or a user event whose payload looks like one (which any member
//! holding the gossip key can broadcast), is ignored by the intake.

use super::spool::{self, Source};
use super::{Result, RuntimeError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Every request starts with this.
const WIRE_PREFIX: &str = "p2pu-sync1:";
/// The state dir's subdirectory for the answers to `p2pu sync`.
const ANSWERS_SUBDIR: &str = "sync";
/// How many answers are kept: a `p2pu sync` reads its own within seconds.
const ANSWERS_KEPT: usize = 16;
/// The shortest wait between two rounds a fleet change started; it doubles while changes
/// keep coming, up to `agent.catch_up_secs`.
pub const FLEET_MIN_GAP: Duration = Duration::from_secs(5);

/// A request to ask the fleet now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A member joined (or this node's Serf started): rate-limited.
    Fleet,
    /// `p2pu sync`: answered at once, in `<state_dir>/sync/<id>.json`.
    Asked(String),
}

impl Request {
    pub fn to_wire(&self) -> String {
        match self {
            Request::Fleet => format!("{WIRE_PREFIX}fleet"),
            Request::Asked(id) => format!("{WIRE_PREFIX}ask:{id}"),
        }
    }

    /// `None` when `payload` is not a request; `Some(Err(..))` when it starts like one but is
    /// not (a bad id must never become a path).
    pub fn parse(payload: &[u8]) -> Option<std::result::Result<Request, String>> {
        let rest = payload.strip_prefix(WIRE_PREFIX.as_bytes())?;
        Some(match rest {
            b"fleet" => Ok(Request::Fleet),
            _ => match rest.strip_prefix(b"ask:") {
                Some(id) if is_id(id) => {
                    Ok(Request::Asked(String::from_utf8_lossy(id).into_owned()))
                }
                _ => Err(format!(
                    "not a sync request: {:?}",
                    String::from_utf8_lossy(&payload[..payload.len().min(80)])
                )),
            },
        })
    }
}

/// 32 lowercase hex digits, as [`new_id`] makes them.
fn is_id(id: &[u8]) -> bool {
    id.len() == 32 && id.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// A fresh request id.
pub fn new_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Spools `request` for the agent (the handler and `p2pu sync` do, as root).
pub fn put(spool_dir: &Path, request: &Request) -> Result<PathBuf> {
    Ok(spool::put(
        spool_dir,
        Source::Sync,
        request.to_wire().as_bytes(),
    )?)
}

/// What one round found, for the `p2pu sync` that asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    pub id: String,
    /// When the round started and ended (milliseconds since the epoch).
    pub started_ms: u64,
    pub finished_ms: u64,
    /// Other members Serf listed alive when the round started: with none, nobody was asked.
    pub members_alive: usize,
    /// Announcements this node lacked that the round found and spooled.
    pub spooled: usize,
    /// Why the round could not ask the fleet (Serf not answering, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn answers_dir(state_dir: &Path) -> PathBuf {
    state_dir.join(ANSWERS_SUBDIR)
}

/// Where the answer to request `id` lies; `None` for an id no request carries.
pub fn answer_path(state_dir: &Path, id: &str) -> Option<PathBuf> {
    is_id(id.as_bytes()).then(|| answers_dir(state_dir).join(format!("{id}.json")))
}

/// Keeps `answer` (root's, 0600, in a 0700 directory) and drops all but the newest few.
pub fn write_answer(state_dir: &Path, answer: &Answer) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = answers_dir(state_dir);
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(RuntimeError::io("creating", &dir)(e)),
    }
    let path = answer_path(state_dir, &answer.id).ok_or_else(|| RuntimeError::Io {
        action: "internal error (a bug in p2pu): answering a bad sync id in",
        path: dir.clone(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    keep_newest(&dir, &path, answer, ANSWERS_KEPT)
}

/// Writes `value` as JSON to `path` (root's, 0600) in `dir`, and drops all but the newest
/// `kept` files of `dir`: the answers to `p2pu sync` and `p2pu mark-good|mark-bad`.
pub(super) fn keep_newest<T: Serialize>(
    dir: &Path,
    path: &Path,
    value: &T,
    kept: usize,
) -> Result<()> {
    let bytes = serde_json::to_vec(value).map_err(|source| RuntimeError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    crate::fsutil::write_atomic(path, &bytes, 0o600)?;
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .map_err(RuntimeError::io("listing", dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    files.sort();
    let excess = files.len().saturating_sub(kept);
    for (_, old) in files.drain(..excess) {
        let _ = std::fs::remove_file(old);
    }
    Ok(())
}

/// The answer to request `id`, once the agent wrote it.
pub fn read_answer(state_dir: &Path, id: &str) -> Result<Option<Answer>> {
    let Some(path) = answer_path(state_dir, id) else {
        return Ok(None);
    };
    read_json(&path)
}

/// `path` decoded from JSON; none when it does not exist (yet).
pub(super) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| RuntimeError::Parse {
                    path: path.to_path_buf(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RuntimeError::io("reading", path)(e)),
    }
}

/// How often fleet changes may start a round: at once the first time, then no sooner than
/// `gap` after the last such round; `gap` doubles from [`FLEET_MIN_GAP`] up to `max` while
/// changes keep coming, and starts over once none came for `max` past that. A member that flaps for ever
/// costs each node a round per `max` (`agent.catch_up_secs`), twice the periodic load.
#[derive(Debug, Clone)]
pub struct Backoff {
    gap: Duration,
    last: Option<Instant>,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Backoff {
        Backoff {
            gap: FLEET_MIN_GAP,
            last: None,
            max: max.max(FLEET_MIN_GAP),
        }
    }

    /// When a fleet change may start a round (now or earlier: at once).
    pub fn next_allowed(&self) -> Option<Instant> {
        self.last.map(|last| last + self.gap)
    }

    pub fn allows(&self, now: Instant) -> bool {
        self.next_allowed().is_none_or(|at| now >= at)
    }

    /// A fleet change started a round at `now`.
    pub fn ran(&mut self, now: Instant) {
        self.gap = match self.last {
            // Changes kept coming: the round ran about when it was first allowed.
            Some(last) if now.saturating_duration_since(last) < self.gap + self.max => {
                (self.gap * 2).min(self.max)
            }
            _ => FLEET_MIN_GAP,
        };
        self.last = Some(now);
    }
}

/// Why a round runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    Period,
    Heartbeat,
    Fleet,
    Asked,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Period => "agent.catch_up_secs",
            Why::Heartbeat => "a newer heartbeat",
            Why::Fleet => "a member joined or Serf restarted",
            Why::Asked => "p2pu sync",
        }
    }
}

/// One round to run: why, and the `p2pu sync` requests it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    pub why: Why,
    pub asked: Vec<String>,
}

#[derive(Debug)]
struct Pending {
    heartbeat: bool,
    fleet: bool,
    asked: Vec<String>,
    backoff: Backoff,
}

/// Shared by the spool loop, which tells it what came in, and the catch-up loop, which waits
/// on it for its next round.
#[derive(Debug)]
pub struct Trigger {
    pending: Mutex<Pending>,
    wake: Condvar,
}

impl Trigger {
    /// `period`: `agent.catch_up_secs`, also the longest fleet backoff.
    pub fn new(period: Duration) -> Trigger {
        Trigger {
            pending: Mutex::new(Pending {
                heartbeat: false,
                fleet: false,
                asked: Vec::new(),
                backoff: Backoff::new(period),
            }),
            wake: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A newer heartbeat was kept.
    pub fn heartbeat(&self) {
        self.lock().heartbeat = true;
        self.wake.notify_all();
    }

    pub fn request(&self, request: Request) {
        {
            let mut pending = self.lock();
            match request {
                Request::Fleet => pending.fleet = true,
                Request::Asked(id) => pending.asked.push(id),
            }
        }
        self.wake.notify_all();
    }

    /// Waits until a round is due: at `due` (the period), at once for a heartbeat or a
    /// `p2pu sync`, for a fleet change when the backoff allows. `None` once `stop` is set.
    /// Whatever was pending is taken by the round.
    pub fn wait(&self, due: Instant, stop: &AtomicBool) -> Option<Round> {
        let mut pending = self.lock();
        loop {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            let now = Instant::now();
            let why = if !pending.asked.is_empty() {
                Some(Why::Asked)
            } else if pending.heartbeat {
                Some(Why::Heartbeat)
            } else if pending.fleet && pending.backoff.allows(now) {
                Some(Why::Fleet)
            } else if now >= due {
                Some(Why::Period)
            } else {
                None
            };
            if let Some(why) = why {
                if why == Why::Fleet {
                    pending.backoff.ran(now);
                }
                // The round covers every change seen so far.
                pending.fleet = false;
                pending.heartbeat = false;
                return Some(Round {
                    why,
                    asked: std::mem::take(&mut pending.asked),
                });
            }
            let mut until = due;
            if pending.fleet {
                if let Some(at) = pending.backoff.next_allowed() {
                    until = until.min(at);
                }
            }
            // Woken by a request, or at the latest every 200 ms to see `stop`.
            let wait = until
                .saturating_duration_since(now)
                .min(Duration::from_millis(200));
            pending = self
                .wake
                .wait_timeout(pending, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ids_are_refused() {
        let id = new_id();
        for request in [Request::Fleet, Request::Asked(id)] {
            let wire = request.to_wire();
            assert_eq!(Request::parse(wire.as_bytes()), Some(Ok(request)));
        }
        assert_eq!(Request::parse(b"p2pu2:abc"), None);
        for bad in [
            &b"p2pu-sync1:ask:../../etc/passwd"[..],
            b"p2pu-sync1:ask:ABCDEF0123456789ABCDEF0123456789",
            b"p2pu-sync1:ask:",
            b"p2pu-sync1:fleet\n",
            b"p2pu-sync1:storm",
        ] {
            assert!(matches!(Request::parse(bad), Some(Err(_))), "{bad:?}");
        }
        assert_eq!(answer_path(Path::new("/s"), "../x"), None);
    }

    /// A flapping member: the first change starts a round at once, the next ones wait 5 s,
    /// 10 s, 20 s ... up to the period, and a quiet period starts over.
    #[test]
    fn fleet_changes_back_off_up_to_the_period_and_start_over_when_quiet() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut backoff = Backoff::new(s(60));
        assert!(backoff.allows(t0));
        backoff.ran(t0);
        assert!(!backoff.allows(t0 + s(4)));
        assert!(backoff.allows(t0 + s(5)));
        let mut at = t0 + s(5);
        let mut gaps = Vec::new();
        for _ in 0..6 {
            backoff.ran(at);
            let next = backoff.next_allowed().unwrap();
            gaps.push((next - at).as_secs());
            at = next;
        }
        assert_eq!(gaps, [10, 20, 40, 60, 60, 60]);
        // `at` is 60 s after the last round: a change a minute later still counts as flapping.
        let last = at + s(59);
        backoff.ran(last);
        assert_eq!(backoff.next_allowed(), Some(last + s(60)), "still flapping");
        // Quiet for the period past the allowed time: starts over.
        backoff.ran(last + s(121));
        assert_eq!(backoff.next_allowed(), Some(last + s(121) + FLEET_MIN_GAP));
    }

    #[test]
    fn an_operators_request_runs_at_once_and_a_fleet_change_waits_for_the_backoff() {
        let trigger = Trigger::new(Duration::from_secs(300));
        let stop = AtomicBool::new(false);
        let later = Instant::now() + Duration::from_secs(3600);
        trigger.request(Request::Fleet);
        assert_eq!(trigger.wait(later, &stop).map(|r| r.why), Some(Why::Fleet));
        trigger.request(Request::Fleet);
        trigger.request(Request::Asked("a".repeat(32)));
        let round = trigger.wait(later, &stop).unwrap();
        assert_eq!((round.why, round.asked.len()), (Why::Asked, 1));
        // The operator's round covered the change: nothing is pending now.
        trigger.request(Request::Fleet);
        let started = Instant::now();
        let round = trigger
            .wait(started + Duration::from_secs(1), &stop)
            .unwrap();
        assert_eq!(
            round.why,
            Why::Period,
            "backed off, so the period came first"
        );
        stop.store(true, Ordering::Relaxed);
        assert_eq!(trigger.wait(later, &stop), None);
    }
}
