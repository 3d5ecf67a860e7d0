//! The agent's runtime: one thread reacts to the spool (inotify, no polling) and decides;
//! worker threads download and apply; background threads refresh the fleet's peers and catch
//! up with the fleet. The tracker and the web seed server run in an unprivileged child process
//! (`supervise`) that the peers thread keeps fed. Every decision is logged as one line with its
//! reason.

use super::apply::{self, ApplyContext};
use super::extract::Limits;
use super::fetch::Fetcher;
use super::http_get::Client;
use super::intake::{self, Decision, Policy};
use super::peers::FleetPeers;
use super::serve::ServeOptions;
use super::spool;
use super::state::{Record, Rejection, StateStore, Status};
use super::supervise::{ServeChild, ServeSpec};
use crate::config::Config;
use crate::engines::{Gossip, TorrentEngine};
use crate::error::{chain, Error, Result};
use crate::formats::announcement::{Announcement, Kind};
use crate::formats::legacy;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
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
    pub node_name: String,
    pub store: StateStore,
    pub engine: Arc<dyn TorrentEngine>,
    pub gossip: Arc<dyn Gossip>,
    pub puppet: Box<dyn crate::engines::Applier>,
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
            .map_err(Error::io("creating", &site.agent.spool_dir))?;

        // A relay cut short by a crash would keep its readers waiting for bytes that never come.
        super::relay::clear_stale_markers(&site.transmission.download_dir);
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

        let (work_tx, work_rx) = mpsc::channel::<Record>();
        let work_rx = Arc::new(Mutex::new(work_rx));
        let apply_lock = Arc::new(Mutex::new(()));
        for n in 0..WORKERS {
            let (agent, work_rx, apply_lock) = (agent.clone(), work_rx.clone(), apply_lock.clone());
            let (served, peers) = (served.clone(), peers.clone());
            spawn_named(&format!("worker-{n}"), move || {
                worker(&agent, &work_rx, &apply_lock, &served, &peers)
            });
        }
        for record in agent.store.open_records()? {
            tracing::info!(name = %record.name, seq = record.seq, status = record.status.as_str(), "resuming");
            let _ = work_tx.send(record);
        }

        let wake = watch_spool(&site.agent.spool_dir)?;
        // Tracker and seed server up, workers waiting, spool watched: ready (Type=notify).
        crate::sdnotify::ready();
        let mut last_heard = now_ms();
        while !agent.stop.load(Ordering::Relaxed) {
            if agent.intake_spool(&work_tx)? {
                last_heard = now_ms();
            }
            match wake.recv_timeout(Duration::from_millis(500)) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::Internal("spool watcher stopped".into()))
                }
            }
            agent.warn_if_silent(&mut last_heard);
        }
        // An apply in hand finishes and is recorded before the agent exits, and none starts
        // after: cut short, it would leave half a change and run again on the next start (the
        // unit's KillMode=mixed leaves `puppet apply` to the agent).
        let _no_more_applies = apply_lock.lock().unwrap_or_else(|e| e.into_inner());
        tracing::info!("agent stopping");
        served.shutdown();
        Ok(())
    }

    /// Decides every spooled event in arrival order; returns whether there were any.
    fn intake_spool(&self, work: &Sender<Record>) -> Result<bool> {
        let site = &self.config.site;
        let policy = Policy {
            trusted_keys_dir: &site.agent.trusted_keys_dir,
            accept_legacy: site.agent.accept_legacy,
            max_future_ms: site.agent.max_future_secs.saturating_mul(1000),
            max_payload_bytes: site.agent.max_payload_bytes,
        };
        let paths = spool::list(&site.agent.spool_dir)?;
        for path in &paths {
            let Some(event) = spool::read(path)? else {
                continue;
            };
            let decision = intake::decide(&event, &self.store, &policy, now_ms())?;
            match decision {
                Decision::Accepted(record) => {
                    // The spool file's name carries its write time (ns): benches/ measure latency from it.
                    let spool = path
                        .file_name()
                        .map(|n| n.to_string_lossy())
                        .unwrap_or_default();
                    tracing::info!(name = %record.name, seq = record.seq, kind = %record.kind, source = event.source.as_str(), %spool, "accepted");
                    self.store.put(record.clone())?;
                    let _ = work.send(record);
                }
                Decision::Held(record) => {
                    tracing::warn!(name = %record.name, seq = record.seq, reason = record.reason.as_deref().unwrap_or(""), "held");
                    self.store.put(record)?;
                }
                Decision::Rejected(rejection) => self.reject(rejection)?,
            }
            // Only now is the event's fate durable: the spool file may go.
            spool::remove(path)?;
        }
        Ok(!paths.is_empty())
    }

    fn reject(&self, rejection: Rejection) -> Result<()> {
        tracing::warn!(name = rejection.name.as_deref().unwrap_or("-"), seq = ?rejection.seq, source = %rejection.source, reason = %rejection.reason, "rejected");
        self.store.reject(rejection)
    }

    fn warn_if_silent(&self, last_heard: &mut u64) {
        let now = now_ms();
        if let Some(silent_secs) = silence(
            now,
            *last_heard,
            self.config.site.agent.silence_warning_secs,
        ) {
            tracing::warn!(
                silent_secs,
                "no update heard of for longer than agent.silence_warning_secs"
            );
            // Once per period, not on every loop.
            *last_heard = now;
        }
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

    /// Downloads, verifies and applies one accepted update.
    fn process(
        &self,
        record: &Record,
        apply_lock: &Mutex<()>,
        tracker_url: &str,
        peers: &FleetPeers,
    ) {
        let site = &self.config.site;
        let legacy = record.kind == "legacy";
        let metainfo = if legacy {
            match legacy::decode_payload(record.wire.as_bytes()) {
                Ok(torrent) => Some(torrent.torrent),
                Err(e) => {
                    return self.set_status(record, Status::Failed, Some(e.to_string()), None)
                }
            }
        } else {
            None
        };
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
        };
        let fetched = match fetcher.fetch(record, metainfo.as_deref()) {
            Ok(fetched) => fetched,
            Err(super::fetch::FetchError::Stopping) => return,
            Err(e) => {
                tracing::warn!(name = %record.name, seq = record.seq, "download failed: {}", chain(&e));
                return self.set_status(record, Status::Failed, Some(chain(&e)), None);
            }
        };
        let _applying = apply_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.set_status(record, Status::Applying, None, None);
        let announcement = Announcement::decode(&record.wire).ok();
        let kind = if legacy {
            apply::legacy_kind(&record.name)
        } else {
            match record.kind.parse::<Kind>() {
                Ok(kind) => kind,
                Err(e) => {
                    return self.set_status(record, Status::Failed, Some(e.to_string()), None)
                }
            }
        };
        let context = ApplyContext {
            puppet: self.puppet.as_ref(),
            modulepath: site.puppet.modulepath.first().map(|p| p.as_path()),
            archive_dir: &site.agent.archive_dir,
            trusted_keys_dir: &site.agent.trusted_keys_dir,
            limits: Limits::default(),
        };
        tracing::debug!(name = %record.name, seq = record.seq, "apply started");
        let applied = context.apply(kind, &record.name, &fetched.path, announcement.as_ref());
        // Seeding waits for the apply: Transmission's check of the payload would compete
        // with it for the CPU.
        if let Some(torrent) = &fetched.to_seed {
            fetcher.seed(record, torrent);
        }
        match applied {
            Ok(applied) => {
                tracing::info!(name = %record.name, seq = record.seq, kind = kind.as_str(), "applied: {}", applied.summary);
                self.set_status(
                    record,
                    Status::Applied,
                    Some(applied.summary),
                    Some(applied.output),
                );
            }
            Err(e) => {
                tracing::warn!(name = %record.name, seq = record.seq, "apply failed: {}", chain(&e));
                let output = e.output().map(str::to_string);
                self.set_status(record, Status::Failed, Some(chain(&e)), output);
            }
        }
    }
}

fn worker(
    agent: &Agent,
    work: &Mutex<Receiver<Record>>,
    apply_lock: &Mutex<()>,
    served: &ServeChild,
    peers: &FleetPeers,
) {
    loop {
        let next = work.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(record) = next else {
            return;
        };
        // Asked per update: a restarted tracker may listen elsewhere (port 0 in tests).
        agent.process(&record, apply_lock, &served.tracker_url(), peers);
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
            &site.spool_dir,
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
    let mut inotify = Inotify::init().map_err(Error::io("starting inotify for", dir))?;
    inotify
        .watches()
        .add(dir, WatchMask::MOVED_TO | WatchMask::CLOSE_WRITE)
        .map_err(Error::io("watching", dir))?;
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
}
