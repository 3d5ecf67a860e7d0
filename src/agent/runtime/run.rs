//! The agent's runtime: one thread reacts to the spool (inotify, no polling) and decides;
//! worker threads download and apply; background threads refresh the fleet's peers and catch
//! up with the fleet. The tracker and the web seed server run in an unprivileged child process
//! (`supervise`) that the peers thread keeps fed. Every decision is logged as one line with its
//! reason.

use super::intake::{self, Accepted, Decoded, Policy};
use super::peers::FleetPeers;
use super::retry::{finish_attempt, Ended, Retries, RetryPolicy};
use super::state::{Record, RecordKind, StateStore, Status};
use super::supervise::{ServeChild, ServeSpec};
use super::{Result, RuntimeError};
use crate::agent::apply::extract::Limits;
use crate::agent::apply::{self, ApplyContext};
use crate::agent::transfer::fetch::Fetcher;
use crate::agent::transfer::http_get::Client;
use crate::agent::transfer::pace::{MinRate, Pace};
use crate::agent::transfer::serve::ServeOptions;
use crate::config::Config;
use crate::engines::{Gossip, TorrentEngine};
use crate::error::chain;
use crate::formats::announcement::FleetId;
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How many updates download at once.
const WORKERS: usize = 4;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The engines and paths the agent works with.
pub struct Agent {
    pub config: Config,
    /// This node's fleet (`Config::fleet_id`), read once at start.
    pub fleet: FleetId,
    pub node_name: String,
    pub store: StateStore,
    pub engine: Arc<dyn TorrentEngine>,
    pub gossip: Arc<dyn Gossip>,
    pub puppet: Arc<dyn crate::engines::Applier>,
    pub stop: Arc<AtomicBool>,
    /// The log filter, passed on to the tracker and web seed server process.
    pub log_filter: String,
}

impl Agent {
    /// Runs until `stop` is set.
    pub fn run(self) -> Result<()> {
        let agent = Arc::new(self);
        let site = &agent.config.site;
        std::fs::create_dir_all(&site.agent.spool_dir)
            .map_err(RuntimeError::io("creating", &site.agent.spool_dir))?;

        // A relay cut short by a crash would keep its readers waiting for bytes that never come.
        crate::agent::transfer::relay::clear_stale_markers(&site.transmission.download_dir);
        let peers = Arc::new(FleetPeers::new(agent.node_name.clone()));
        let seed_ip = agent
            .config
            .advertise
            .unwrap_or(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let served = Arc::new(ServeChild::start(ServeSpec {
            options: ServeOptions {
                tracker: SocketAddr::from((Ipv4Addr::LOCALHOST, site.agent.tracker_port)),
                seed: SocketAddr::new(seed_ip, site.agent.seed_port),
                root: site.transmission.download_dir.clone(),
            },
            user: site.agent.serve_user.clone(),
            log_filter: agent.log_filter.clone(),
        })?);
        let ready = served.ready();
        tracing::info!(tracker = %ready.tracker_url(), seeds = %ready.seed_url(), "agent started");
        spawn_named("peers", {
            let (agent, peers, served) = (agent.clone(), peers.clone(), served.clone());
            move || refresh_peers(&agent, &peers, &served)
        });
        spawn_named("catch-up", {
            let agent = agent.clone();
            move || catch_up_loop(&agent)
        });

        let (work_tx, work_rx) = mpsc::channel::<Accepted>();
        let work_rx = Arc::new(Mutex::new(work_rx));
        let apply_lock = Arc::new(Mutex::new(()));
        let retries = Arc::new(Retries::default());
        for n in 0..WORKERS {
            let (agent, work_rx, apply_lock) = (agent.clone(), work_rx.clone(), apply_lock.clone());
            let (served, peers, retries) = (served.clone(), peers.clone(), retries.clone());
            spawn_named(&format!("worker-{n}"), move || {
                let shared = Shared {
                    apply_lock: &apply_lock,
                    served: &served,
                    peers: &peers,
                    retries: &retries,
                };
                worker(&agent, &work_rx, &shared)
            });
        }
        spawn_named("retry", {
            let (agent, retries, work_tx) = (agent.clone(), retries.clone(), work_tx.clone());
            move || retry_loop(&agent, &retries, &work_tx)
        });
        for record in agent.store.open_records()? {
            tracing::info!(name = %record.name, seq = record.seq, status = record.status.as_str(), "resuming");
            match intake::resume(record.clone()) {
                // Its backoff is in the record: a restart neither skips nor restarts the wait.
                Ok(update) if record.status == Status::Retrying => {
                    retries.schedule(record.next_attempt_at.unwrap_or(0), update);
                }
                Ok(update) => {
                    let _ = work_tx.send(update);
                }
                Err(e) => {
                    tracing::warn!(name = %record.name, seq = record.seq, "cannot resume: {}", chain(&e));
                    agent.set_status(&record, Status::Failed, Some(chain(&e)), None);
                }
            }
        }

        let wake = watch_spool(&site.agent.spool_dir)?;
        // Tracker and seed server up, workers waiting, spool watched: ready (Type=notify).
        crate::sdnotify::ready();
        let mut silence = Silence {
            last_accepted_ms: now_ms(),
        };
        let mut stuck = BTreeSet::new();
        while !agent.stop.load(Ordering::Relaxed) {
            let pass = agent.intake_spool(&work_tx, &mut stuck)?;
            silence.after(&pass, now_ms());
            match wake.recv_timeout(Duration::from_millis(500)) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(RuntimeError::WatcherStopped {
                        dir: site.agent.spool_dir.clone(),
                    })
                }
            }
            if let Some(silent_secs) = silence.check(now_ms(), site.agent.silence_warning_secs) {
                tracing::warn!(
                    silent_secs,
                    "no update accepted for longer than agent.silence_warning_secs"
                );
            }
        }
        // An apply in hand finishes and is recorded before the agent exits, and none starts
        // after: cut short, it would leave half a change and run again on the next start (the
        // unit's KillMode=mixed leaves `puppet apply` to the agent).
        let _no_more_applies = apply_lock.lock().unwrap_or_else(|e| e.into_inner());
        tracing::info!("agent stopping");
        served.shutdown();
        Ok(())
    }

    /// Takes every spooled event (see [`intake::take_spool`]).
    fn intake_spool(
        &self,
        work: &Sender<Accepted>,
        stuck: &mut BTreeSet<PathBuf>,
    ) -> Result<intake::Pass> {
        let site = &self.config.site;
        intake::take_spool(
            &site.agent.spool_dir,
            &self.store,
            &policy(&self.config, self.fleet),
            now_ms(),
            stuck,
            |update| {
                let _ = work.send(update);
            },
        )
    }

    fn set_status(
        &self,
        record: &Record,
        status: Status,
        reason: Option<String>,
        output: Option<String>,
    ) {
        let trimmed = output.map(|o| tail(&o, 4000));
        match self.store.set_status(
            &record.name,
            record.seq,
            status,
            reason,
            trimmed,
            now_ms() / 1000,
        ) {
            Ok(_) => {}
            Err(e) => {
                tracing::error!(name = %record.name, seq = record.seq, "recording the result failed: {}", chain(&e))
            }
        }
    }

    /// Records how an attempt at `update` ended; a failure the policy retries is scheduled.
    fn attempt_ended(&self, update: &Accepted, ended: Ended, retries: &Retries) {
        let record = &update.record;
        let ended = match ended {
            Ended::Failed {
                reason,
                output,
                retry,
            } => Ended::Failed {
                reason,
                output: output.map(|o| tail(&o, 4000)),
                retry,
            },
            Ended::Applied { summary, output } => Ended::Applied {
                summary,
                output: tail(&output, 4000),
            },
        };
        let policy = RetryPolicy::from_config(&self.config.site.agent);
        match finish_attempt(
            &self.store,
            &policy,
            &record.name,
            record.seq,
            ended,
            now_ms() / 1000,
        ) {
            Ok(stored) if stored.status == Status::Retrying => {
                let at = stored.next_attempt_at.unwrap_or(0);
                tracing::info!(name = %record.name, seq = record.seq, attempts = stored.attempts, next_attempt_at = at, "will retry");
                retries.schedule(at, update.clone());
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(name = %record.name, seq = record.seq, "recording the result failed: {}", chain(&e))
            }
        }
    }

    /// Downloads, verifies and applies one accepted update.
    fn process(&self, update: &Accepted, shared: &Shared<'_>, tracker_url: &str) {
        let (apply_lock, peers) = (shared.apply_lock, shared.peers);
        let site = &self.config.site;
        let record = &update.record;
        let (metainfo, announcement) = match &update.decoded {
            Decoded::Legacy(torrent) => (Some(torrent.torrent.as_slice()), None),
            Decoded::Signed(announcement) => (None, Some(announcement)),
        };
        let verified_root = crate::agent::transfer::verified::root_of(&site.agent.state_dir);
        let fetcher = Fetcher {
            engine: self.engine.as_ref(),
            download_root: &site.transmission.download_dir,
            tracker_url,
            poll: Duration::from_millis(250),
            stop: &self.stop,
            seeds: &|| peers.seed_servers(),
            own_seed: self
                .config
                .advertise
                .map(|ip| SocketAddr::new(ip, site.agent.seed_port)),
            client: Client {
                bind: self.config.advertise,
                connect_timeout: Duration::from_secs(3),
                read_timeout: Duration::from_secs(20),
            },
            verified_root: &verified_root,
            pace: Pace {
                floor: MinRate::per_second(
                    site.agent.fetch_min_rate_bytes_per_sec,
                    Duration::from_secs(site.agent.fetch_rate_window_secs),
                ),
                slack: Duration::from_secs(site.agent.fetch_slack_secs),
            },
        };
        let mut fetched = match fetcher.fetch(record, metainfo) {
            Ok(fetched) => fetched,
            Err(crate::agent::transfer::fetch::FetchError::Stopping) => return,
            Err(e) => {
                tracing::warn!(name = %record.name, seq = record.seq, "download failed: {}", chain(&e));
                let failed = Ended::Failed {
                    reason: chain(&e),
                    output: None,
                    retry: true,
                };
                return self.attempt_ended(update, failed, shared.retries);
            }
        };
        let _applying = apply_lock.lock().unwrap_or_else(|e| e.into_inner());
        // One write: the sources the payload came from, and that it is being applied.
        let sources = std::mem::take(&mut fetched.sources);
        let now = now_ms() / 1000;
        if let Err(e) = self.store.update(&record.name, record.seq, |stored| {
            if !sources.is_empty() {
                stored.sources = sources;
            }
            stored.settle(Status::Applying, None, None, now);
        }) {
            tracing::error!(name = %record.name, seq = record.seq, "recording the result failed: {}", chain(&e));
        }
        let kind = match record.kind {
            RecordKind::Signed(kind) => kind,
            RecordKind::Legacy => apply::legacy_kind(&record.name),
        };
        let context = ApplyContext {
            puppet: self.puppet.as_ref(),
            modulepath: site.puppet.modulepath.first().map(|p| p.as_path()),
            archive_dir: &site.agent.archive_dir,
            trusted_keys_dir: &site.agent.trusted_keys_dir,
            limits: Limits::default(),
        };
        tracing::debug!(name = %record.name, seq = record.seq, "apply started");
        // Only the copy that was hashed: the download dir's owner may have changed the file
        // there since.
        let applied = context.apply_verified(kind, &record.name, fetched.payload, announcement);
        // Seeding waits for the apply: Transmission's check of the payload would compete
        // with it for the CPU.
        if let Some(torrent) = &fetched.to_seed {
            fetcher.seed(record, torrent);
        }
        match applied {
            Ok(applied) => {
                tracing::info!(name = %record.name, seq = record.seq, kind = kind.as_str(), "applied: {}", applied.summary);
                let ended = Ended::Applied {
                    summary: applied.summary,
                    output: applied.output,
                };
                self.attempt_ended(update, ended, shared.retries);
            }
            Err(e) => {
                tracing::warn!(name = %record.name, seq = record.seq, "apply failed: {}", chain(&e));
                let failed = Ended::Failed {
                    reason: e.cause(),
                    output: e.output().map(str::to_string),
                    retry: e.may_pass_later(),
                };
                self.attempt_ended(update, failed, shared.retries);
            }
        }
    }
}

/// What the workers share.
struct Shared<'a> {
    /// One apply at a time.
    apply_lock: &'a Mutex<()>,
    served: &'a ServeChild,
    peers: &'a FleetPeers,
    retries: &'a Retries,
}

fn worker(agent: &Agent, work: &Mutex<Receiver<Accepted>>, shared: &Shared<'_>) {
    loop {
        let next = work.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(update) = next else {
            return;
        };
        // Asked per update: a restarted tracker may listen elsewhere (port 0 in tests).
        agent.process(&update, shared, &shared.served.tracker_url());
    }
}

/// Hands each retry to the workers when its time comes (see `retry`).
fn retry_loop(agent: &Agent, retries: &Retries, work: &Sender<Accepted>) {
    while !agent.stop.load(Ordering::Relaxed) {
        if !retries.is_empty() {
            match retries.take_due(&agent.store, now_ms() / 1000) {
                Ok(due) => {
                    for update in due {
                        tracing::info!(name = %update.record.name, seq = update.record.seq, "retrying");
                        let _ = work.send(update);
                    }
                }
                Err(e) => tracing::warn!("retries: {}", chain(&e)),
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Keeps the agent's own membership (the fetcher asks it for seeds) and the serving process's
/// copy (the tracker and the seed server's admission) current; restarts that process if it died.
fn refresh_peers(agent: &Agent, peers: &FleetPeers, served: &ServeChild) {
    while !agent.stop.load(Ordering::Relaxed) {
        if let Err(e) = peers.refresh(agent.gossip.as_ref()) {
            tracing::warn!("refreshing fleet peers from Serf: {}", chain(&e));
        }
        let nat = &agent.config.site.nat;
        if nat.enabled {
            // Across NAT, session peers are reached through the nat-client's tunnel ends.
            peers.set_tunnels(crate::nat::tunnel_ends(&nat.control_socket));
        }
        served.send(&peers.snapshot());
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn catch_up_loop(agent: &Agent) {
    let site = &agent.config.site.agent;
    // A first round soon after start: the node may have missed updates while it was down.
    let mut wait = Duration::from_secs(3);
    loop {
        let mut slept = Duration::ZERO;
        while slept < wait {
            if agent.stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
            slept += Duration::from_millis(200);
        }
        match super::catchup::catch_up(
            agent.gossip.as_ref(),
            &agent.store,
            &policy(&agent.config, agent.fleet),
            &site.spool_dir,
            now_ms(),
            Duration::from_secs(2),
        ) {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "catch-up spooled missed announcements"),
            Err(e) => tracing::warn!("catch-up: {}", chain(&e)),
        }
        wait = Duration::from_secs(site.catch_up_secs);
    }
}

/// Wakes the main loop whenever a file is moved into or finished in the spool.
fn watch_spool(dir: &Path) -> Result<Receiver<()>> {
    use inotify::{Inotify, WatchMask};
    let mut inotify = Inotify::init().map_err(RuntimeError::io("starting inotify for", dir))?;
    inotify
        .watches()
        .add(dir, WatchMask::MOVED_TO | WatchMask::CLOSE_WRITE)
        .map_err(RuntimeError::io("watching", dir))?;
    let (tx, rx) = mpsc::channel();
    spawn_named("spool-watch", move || {
        let mut buffer = [0u8; 4096];
        loop {
            match inotify.read_events_blocking(&mut buffer) {
                Ok(_) => {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!("spool watch failed: {e}");
                    return;
                }
            }
        }
    });
    Ok(rx)
}

fn spawn_named(name: &str, f: impl FnOnce() + Send + 'static) {
    let spawned = std::thread::Builder::new().name(name.to_string()).spawn(f);
    if let Err(e) = spawned {
        tracing::error!("starting thread {name}: {e}");
    }
}

/// The last `max` bytes of `text`, on a character boundary.
fn tail(text: &str, max: usize) -> String {
    let text = text.trim();
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

/// The intake's policy, from the site config and the node's fleet.
pub fn policy(config: &Config, fleet: FleetId) -> Policy<'_> {
    let agent = &config.site.agent;
    Policy {
        trusted_keys_dir: &agent.trusted_keys_dir,
        accept_legacy: agent.accept_legacy,
        accept_v1: agent.accept_v1,
        fleet,
        thresholds: intake::Thresholds::of(agent),
        max_future_ms: agent.max_future_secs.saturating_mul(1000),
        max_payload_bytes: agent.max_payload_bytes,
        plans_dir: &config.site.transmission.download_dir,
    }
}

/// When the agent last accepted an update, for the silence warning (TUF's indefinite freeze).
struct Silence {
    last_accepted_ms: u64,
}

impl Silence {
    /// Only an accepted update restarts the clock. Rejections and held announcements are what
    /// an attacker who withholds the real updates can still deliver (a forged answer to
    /// catch-up, say): counting them would hide the freeze.
    fn after(&mut self, pass: &intake::Pass, now_ms: u64) {
        if pass.accepted > 0 {
            self.last_accepted_ms = now_ms;
        }
    }

    /// The silence in seconds when it is past `limit_secs`; once per period, not on every loop.
    fn check(&mut self, now_ms: u64, limit_secs: u64) -> Option<u64> {
        let silent = silence(now_ms, self.last_accepted_ms, limit_secs);
        if silent.is_some() {
            self.last_accepted_ms = now_ms;
        }
        silent
    }
}

/// How long (in seconds) nothing was heard, when that exceeds `limit_secs` (0: never warn):
/// TUF's indefinite freeze, where an attacker keeps a node from hearing of new updates.
fn silence(now_ms: u64, last_heard_ms: u64, limit_secs: u64) -> Option<u64> {
    let silent = now_ms.saturating_sub(last_heard_ms);
    (limit_secs != 0 && silent > limit_secs.saturating_mul(1000)).then_some(silent / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_past_the_limit_is_reported_and_zero_never_warns() {
        assert_eq!(silence(100_000, 0, 100), None);
        assert_eq!(silence(100_001, 0, 100), Some(100));
        assert_eq!(silence(900_000, 0, 0), None);
        // A clock that went backwards is not silence.
        assert_eq!(silence(0, 100_000, 1), None);
    }

    /// A member that answers catch-up with forgeries (or a stream of far-future ones) makes
    /// the node reject and hold; that must not pass for news and hide a freeze.
    #[test]
    fn only_accepted_updates_reset_the_silence_warning() {
        use crate::agent::runtime::spool::{self, Source};
        use crate::formats::announcement::{Announcement, Draft, Kind};
        use crate::keys::{PublicKey, TrustedKeys};
        use ed25519_dalek::SigningKey;
        const NOW_MS: u64 = 1_800_000_000_000;
        let dir = tempfile::tempdir().unwrap();
        let keys_dir = dir.path().join("trusted");
        let key = SigningKey::from_bytes(&[7; 32]);
        let public = PublicKey {
            key: key.verifying_key(),
            comment: "ops".into(),
        };
        TrustedKeys::add(&keys_dir, &public).unwrap();
        let store = StateStore::open(&dir.path().join("state")).unwrap();
        let spool_dir = dir.path().join("spool");
        let policy = Policy {
            trusted_keys_dir: &keys_dir,
            accept_legacy: false,
            accept_v1: true,
            fleet: FleetId([0; 8]),
            thresholds: intake::Thresholds::one(),
            max_future_ms: 86_400_000,
            max_payload_bytes: u64::MAX,
            plans_dir: dir.path(),
        };
        let wire = |key: &SigningKey, seq: u64| {
            let draft = Draft {
                seq,
                name: "site.pp".into(),
                kind: Kind::Manifest,
                info_hash: [1; 20],
                len: 10,
                sha256: [2; 32],
            };
            Announcement::sign(draft, key).unwrap().to_wire()
        };
        let pass = |payloads: &[String]| {
            for payload in payloads {
                spool::put(&spool_dir, Source::CatchUp, payload.as_bytes()).unwrap();
            }
            intake::take_spool(
                &spool_dir,
                &store,
                &policy,
                NOW_MS,
                &mut BTreeSet::new(),
                |_| {},
            )
            .unwrap()
        };
        let limit_secs = 100;
        let mut silence = Silence {
            last_accepted_ms: NOW_MS - 101_000,
        };

        let stranger = SigningKey::from_bytes(&[9; 32]);
        let forged = pass(&[
            wire(&stranger, NOW_MS + 5),
            wire(&key, NOW_MS + 9 * 86_400_000),
        ]);
        assert_eq!((forged.rejected, forged.held, forged.accepted), (1, 1, 0));
        silence.after(&forged, NOW_MS);
        assert_eq!(silence.check(NOW_MS, limit_secs), Some(101));

        let real = pass(&[wire(&key, NOW_MS)]);
        assert_eq!(real.accepted, 1);
        silence.after(&real, NOW_MS + 1_000);
        assert_eq!(silence.check(NOW_MS + 100_000, limit_secs), None);
        assert_eq!(silence.check(NOW_MS + 101_001, limit_secs), Some(100));
    }
}
