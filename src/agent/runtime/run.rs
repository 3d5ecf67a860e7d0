//! The agent's runtime: one thread reacts to the spool (inotify, no polling) and decides;
//! worker threads download and apply; background threads refresh the fleet's peers and catch
//! up with the fleet. The tracker and the web seed server run in an unprivileged child process
//! (`supervise`) that the peers thread keeps fed. Every decision is logged as one line with its
//! reason.

use super::health::{self, HealthCheck};
use super::heartbeat;
use super::intake::{self, Accepted, Decoded, Policy};
use super::locks;
use super::peers::FleetPeers;
use super::retry::{finish_attempt, Ended, Retries, RetryPolicy};
use super::state::{tail, Lineage, Record, StateStore, Status, OUTPUT_IN_RECORD};
use super::status::NodeStatus;
use super::supervise::{ServeChild, ServeSpec};
use super::sync::{self, Trigger, Why};
use super::{Result, RuntimeError};
use crate::agent::apply::extract::Limits;
use crate::agent::apply::good::GoodStore;
use crate::agent::apply::ApplyContext;
use crate::agent::transfer::fetch::Fetcher;
use crate::agent::transfer::http_get::Client;
use crate::agent::transfer::pace::{MinRate, Pace};
use crate::agent::transfer::serve::ServeOptions;
use crate::config::Config;
use crate::engines::{Gossip, TorrentEngine};
use crate::error::chain;
use crate::formats::announcement::FleetId;
use crate::formats::plan::Plan;
use crate::formats::serf_names::STATUS_QUERY;
use crate::formats::window::{parse_all as parse_windows, Window};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How many updates download at once.
const WORKERS: usize = 4;

/// The workers that fetch and apply accepted updates (one apply at a time, under the apply
/// lock) and the loop that hands them retries when their backoff is over; what feeds them.
fn start_workers(
    agent: &Arc<Agent>,
    served: &Arc<ServeChild>,
    peers: &Arc<FleetPeers>,
) -> (Sender<Accepted>, Arc<Mutex<()>>, Arc<Retries>) {
    let (work_tx, work_rx) = mpsc::channel::<Accepted>();
    let work_rx = Arc::new(Mutex::new(work_rx));
    let apply_lock = Arc::new(Mutex::new(()));
    let retries = Arc::new(Retries::default());
    for n in 0..WORKERS {
        let (agent, work_rx, apply_lock) = (agent.clone(), work_rx.clone(), apply_lock.clone());
        let (served, peers, retries) = (served.clone(), peers.clone(), retries.clone());
        spawn_named(&format!("worker-{n}"), move || {
            let shared = Shared {
                apply_lock,
                served,
                peers,
                retries,
            };
            worker(&agent, &work_rx, &shared)
        });
    }
    spawn_named("retry", {
        let (agent, retries, work_tx) = (agent.clone(), retries.clone(), work_tx.clone());
        move || retry_loop(&agent, &retries, &work_tx)
    });
    (work_tx, apply_lock, retries)
}

/// The records a restart finds open, taken up again: those in their health check (or
/// revert) first, then the others queued (a retrying one after the backoff its record keeps).
fn resume_open_records(
    agent: &Arc<Agent>,
    apply_lock: &Arc<Mutex<()>>,
    retries: &Retries,
    work_tx: &Sender<Accepted>,
) -> Result<()> {
    let (in_check, open): (Vec<Record>, Vec<Record>) = agent
        .store
        .open_records()?
        .into_iter()
        .partition(|r| matches!(r.status, Status::Checking | Status::Reverting));
    if !in_check.is_empty() {
        // Applied already: only the check (or the revert) is left, not a new download. It
        // goes first: a newer update applied before it would be checked (or reverted) in
        // its place. Waiting only until it holds the apply lock keeps a long check from
        // holding up the agent's start.
        let (agent, apply_lock) = (agent.clone(), apply_lock.clone());
        let (locked_tx, locked) = mpsc::channel();
        spawn_named("resume-health", move || {
            agent.resume_health(in_check, &apply_lock, &locked_tx)
        });
        let _ = locked.recv();
    }
    for record in open {
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
    Ok(())
}

/// When each wanted plan was last asked for, and the wait before the next time.
type PlansAsked = std::collections::BTreeMap<(String, String), (Instant, Duration)>;

/// Asks the plans loop for each wanted plan whose wait is over (3 s, doubled up to a minute),
/// and forgets the ones no longer wanted.
fn ask_for_plans(
    plans_asked: &mut PlansAsked,
    wanted: &[(String, String)],
    plan_tx: &Sender<(String, String)>,
) {
    plans_asked.retain(|key, _| wanted.contains(key));
    for key in wanted {
        let wait = match plans_asked.get(key) {
            None => Duration::from_secs(3),
            Some((at, wait)) if at.elapsed() >= *wait => (*wait * 2).min(Duration::from_secs(60)),
            Some(_) => continue,
        };
        plans_asked.insert(key.clone(), (Instant::now(), wait));
        let _ = plan_tx.send(key.clone());
    }
}

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
        return_freed_memory();
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
                fan_out: site.transfer.fan_out,
            },
            user: site.agent.serve_user.clone(),
            log_filter: agent.log_filter.clone(),
            spool: Some(site.agent.spool_dir.clone()),
        })?);
        let ready = served.ready();
        tracing::info!(tracker = %ready.tracker_url(), seeds = %ready.seed_url(), "agent started");
        spawn_named("peers", {
            let (agent, peers, served) = (agent.clone(), peers.clone(), served.clone());
            move || refresh_peers(&agent, &peers, &served)
        });
        // Told of a newer heartbeat, a member's join and `p2pu sync`: catch-up runs then
        // instead of waiting for its period.
        let trigger = Arc::new(Trigger::new(Duration::from_secs(site.agent.catch_up_secs)));
        spawn_named("catch-up", {
            let (agent, peers, trigger) = (agent.clone(), peers.clone(), trigger.clone());
            move || catch_up_loop(&agent, &peers, &trigger)
        });

        let (work_tx, apply_lock, retries) = start_workers(&agent, &served, &peers);
        resume_open_records(&agent, &apply_lock, &retries, &work_tx)?;

        let (plan_tx, plan_rx) = mpsc::channel::<(String, String)>();
        spawn_named("plans", {
            let (agent, peers) = (agent.clone(), peers.clone());
            move || plans_loop(&agent, &peers, &plan_rx)
        });
        // When each wanted plan was last asked for, and the wait before the next time: 3 s,
        // doubled up to a minute, so a forged announcement waiting out its search does not have
        // every member's seed server asked every few seconds. Per announcement, not per plan: a
        // forgery naming the genuine one's info-hash must not take its turn.
        let mut plans_asked = PlansAsked::default();

        let wake = watch_spool(&site.agent.spool_dir)?;
        // Tracker and seed server up, workers waiting, spool watched: ready (Type=notify).
        crate::sdnotify::ready();
        crate::sdnotify::status("idle: waiting for updates");
        // Pinged once per turn of this loop, which takes the spool in: if it wedges, the pings
        // stop and systemd restarts the agent (WatchdogSec= in p2pu-agent.service).
        let mut watchdog = crate::sdnotify::Watchdog::from_env();
        let mut silence = Silence {
            last_accepted_ms: now_ms(),
        };
        let mut stuck = BTreeSet::new();
        let mut waits = super::pending::PlanWaits::default();
        let mut heartbeat_warned_ms = 0;
        while !agent.stop.load(Ordering::Relaxed) {
            if let Some(watchdog) = watchdog.as_mut() {
                watchdog.alive(std::time::Instant::now());
            }
            let pass = agent.intake_spool(&work_tx, &mut stuck, &mut waits)?;
            ask_for_plans(&mut plans_asked, &pass.plans_wanted, &plan_tx);
            silence.after(&pass, now_ms());
            if pass.heartbeats > 0 {
                trigger.heartbeat();
            }
            for request in pass.requests {
                trigger.request(request);
            }
            agent.warn_if_stale(&mut heartbeat_warned_ms);
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

    /// Warns when no fresh heartbeat is held: once per window, not on every loop.
    fn warn_if_stale(&self, warned_ms: &mut u64) {
        let window = self.config.site.agent.heartbeat_window_secs;
        let now = now_ms();
        if window == 0 || now.saturating_sub(*warned_ms) < window.saturating_mul(1000) {
            return;
        }
        if let Some(freshness) =
            heartbeat::freshness(&self.config.site.agent.state_dir, window, now / 1000)
                .filter(|f| !f.is_fresh())
        {
            tracing::warn!("{}", freshness.line(now / 1000));
            *warned_ms = now;
        }
    }

    /// Takes every spooled event (see [`intake::take_spool`]).
    fn intake_spool(
        &self,
        work: &Sender<Accepted>,
        stuck: &mut BTreeSet<PathBuf>,
        waits: &mut super::pending::PlanWaits,
    ) -> Result<intake::Pass> {
        let site = &self.config.site;
        intake::take_spool(
            &site.agent.spool_dir,
            &self.store,
            &policy(&self.config, self.fleet, &self.node_name),
            now_ms(),
            stuck,
            waits,
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
        let trimmed = output.map(|o| tail(&o, OUTPUT_IN_RECORD));
        // What `systemctl status p2pu-agent` shows: the latest change, with its reason.
        crate::sdnotify::status(&format!(
            "{} seq {}: {}{}",
            record.name,
            record.seq,
            status.as_str(),
            reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ));
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
                output: output.map(|o| tail(&o, OUTPUT_IN_RECORD)),
                retry,
            },
            Ended::Applied { summary, output } => Ended::Applied {
                summary,
                output: tail(&output, OUTPUT_IN_RECORD),
            },
            Ended::NoSpace { reason } => Ended::NoSpace { reason },
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

    /// Records `record` failed, and true, when a newer seq of its name was accepted since:
    /// only the newest of a name is applied. A node back after days offline (or whose spool
    /// held several seqs of one name) would otherwise apply each in turn, and an older one
    /// finishing its download last would be applied over the newer.
    fn skip_superseded(&self, record: &Record) -> bool {
        let newer = self
            .store
            .highest(&record.name, Lineage::of(record))
            .ok()
            .flatten()
            .filter(|&highest| highest > record.seq);
        let Some(newer) = newer else {
            return false;
        };
        let reason = format!(
            "superseded: seq {newer} of {} came since; only the newest is applied",
            record.name
        );
        tracing::info!(name = %record.name, seq = record.seq, newer, "not applied: superseded");
        self.set_status(record, Status::Failed, Some(reason), None);
        true
    }

    /// How updates are applied on this node.
    fn apply_context(&self) -> ApplyContext<'_> {
        let site = &self.config.site;
        ApplyContext {
            puppet: self.puppet.as_ref(),
            modulepath: site.puppet.modulepath.first().map(|p| p.as_path()),
            archive_dir: &site.agent.archive_dir,
            trusted_keys_dir: &site.agent.trusted_keys_dir,
            key_policy: crate::trust::KeyPolicy {
                key_threshold: usize::try_from(site.agent.key_threshold).unwrap_or(usize::MAX),
                fleet: self.fleet,
            },
            limits: Limits::default(),
        }
    }

    /// The health check after an apply, and the revert, with `context`.
    fn health<'a>(
        &'a self,
        context: &'a ApplyContext<'a>,
        verified_root: &'a Path,
    ) -> HealthCheck<'a> {
        let agent = &self.config.site.agent;
        HealthCheck {
            store: &self.store,
            good: GoodStore::of(&agent.state_dir),
            apply: context,
            verified_root,
            site_check: &agent.health_check,
            timeout: Duration::from_secs(agent.health_check_timeout_secs),
            now: &|| now_ms() / 1000,
        }
    }

    /// Finishes the checks and reverts an agent stopped in the middle of, one at a time like
    /// every apply; says on `locked` once it holds the apply lock.
    fn resume_health(&self, records: Vec<Record>, apply_lock: &Mutex<()>, locked: &Sender<()>) {
        let _applying = apply_lock.lock().unwrap_or_else(|e| e.into_inner());
        let _ = locked.send(());
        let verified_root =
            crate::agent::transfer::verified::root_of(&self.config.site.agent.state_dir);
        let context = self.apply_context();
        let health = self.health(&context, &verified_root);
        for record in records {
            tracing::info!(name = %record.name, seq = record.seq, status = record.status.as_str(), "resuming the health check");
            let plan = (record.plan.as_deref()).and_then(|text| Plan::decode(text.as_bytes()).ok());
            let check = plan.as_ref().and_then(|plan| plan.health_check());
            match health.resume(&record, check.map(|(argv, _)| argv)) {
                Ok(settled) => {
                    tracing::info!(name = %record.name, seq = record.seq, status = settled.status.as_str(), "health check resumed and settled")
                }
                Err(e) => {
                    tracing::error!(name = %record.name, seq = record.seq, "resuming the health check: {}", chain(&e))
                }
            }
        }
    }

    /// How this node fetches: its engine, dirs, seed servers and the site's pace.
    fn fetcher<'a>(
        &'a self,
        tracker_url: &'a str,
        seeds: &'a (dyn Fn() -> Vec<SocketAddr> + Sync),
        verified_root: &'a Path,
    ) -> Fetcher<'a> {
        let site = &self.config.site;
        Fetcher {
            engine: self.engine.as_ref(),
            download_root: &site.transmission.download_dir,
            tracker_url,
            poll: Duration::from_millis(250),
            stop: &self.stop,
            seeds,
            own_seed: self
                .config
                .advertise
                .map(|ip| SocketAddr::new(ip, site.agent.seed_port)),
            client: Client {
                bind: self.config.advertise,
                connect_timeout: Duration::from_secs(3),
                read_timeout: Duration::from_secs(20),
            },
            verified_root,
            pace: Pace {
                floor: MinRate::per_second(
                    site.agent.fetch_min_rate_bytes_per_sec,
                    Duration::from_secs(site.agent.fetch_rate_window_secs),
                ),
                slack: Duration::from_secs(site.agent.fetch_slack_secs),
            },
            stripes: None,
        }
    }

    /// What the rollout plan and the maintenance windows let this node do with a fetched
    /// update: its wave's turn first, then its window.
    fn plan_gate(&self, record: &Record) -> Gate {
        match self.wave_gate(record) {
            Gate::Apply => match self.window_gate(record) {
                Gate::Apply => self.lock_gate(record),
                other => other,
            },
            other => other,
        }
    }

    /// Whether the rollout's signed plan overrides the node's update locks.
    fn forces_locks(record: &Record) -> bool {
        (record.plan.as_deref())
            .and_then(|text| Plan::decode(text.as_bytes()).ok())
            .is_some_and(|plan| plan.force_locks)
    }

    /// Whether `record` may be held before it applies (a window, a lock there now, a veto
    /// command), so its fetch must not keep a download worker while it waits.
    fn may_hold(&self, record: &Record) -> bool {
        let agent = &self.config.site.agent;
        self.has_window(record)
            || (!Self::forces_locks(record)
                && (!agent.veto_command.is_empty() || locks::held(&agent.update_lock).is_some()))
    }

    /// Waits, recording `waiting` with the holder and age, while an application holds
    /// updates: anything at `agent.update_lock`, or `agent.veto_command` exiting non-zero
    /// (asked every 10 s); a rollout signed with `--force-locks` is not held. An abort
    /// meanwhile halts it.
    fn lock_gate(&self, record: &Record) -> Gate {
        let agent = &self.config.site.agent;
        if Self::forces_locks(record) {
            if let Some(lock) = locks::held(&agent.update_lock) {
                tracing::warn!(name = %record.name, seq = record.seq, "applying past the update lock {} ({}): the rollout was signed with --force-locks", agent.update_lock.display(), lock.holder);
            }
            return Gate::Apply;
        }
        let env = [
            ("P2PU_NAME", record.name.clone()),
            ("P2PU_SEQ", record.seq.to_string()),
            ("P2PU_KIND", health::kind_of(record).as_str().to_string()),
        ];
        let mut veto: Option<(Instant, String)> = None;
        self.hold_while(record, || {
            let now = locks::now_secs();
            match locks::held(&agent.update_lock) {
                Some(lock) => Some(lock.reason(&agent.update_lock, now)),
                None => {
                    let due = veto
                        .as_ref()
                        .is_none_or(|(at, _)| at.elapsed() >= locks::VETO_EVERY);
                    if due {
                        match locks::vetoed(&agent.veto_command, &env) {
                            Some(why) => {
                                veto = Some((Instant::now(), why.clone()));
                                Some(why)
                            }
                            None => None,
                        }
                    } else {
                        veto.as_ref().map(|(_, why)| why.clone())
                    }
                }
            }
        })
    }

    /// Holds `record` while `reason` gives why, a second at a time: recorded `waiting` with
    /// the reason (once per change), halted by an operator's abort meanwhile, applied once
    /// `reason` gives none.
    fn hold_while(&self, record: &Record, mut reason: impl FnMut() -> Option<String>) -> Gate {
        let mut shown: Option<String> = None;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Gate::Stopping;
            }
            let control = self.store.control(&record.name, record.seq).ok().flatten();
            if control.is_some_and(|c| c.action == "abort") {
                return Gate::Halted("halted: aborted by operator (p2pu rollout abort)".into());
            }
            let Some(reason) = reason() else {
                return Gate::Apply;
            };
            if shown.as_deref() != Some(reason.as_str()) {
                tracing::info!(name = %record.name, seq = record.seq, "{reason}");
                self.set_status(record, Status::Waiting, Some(reason.clone()), None);
                shown = Some(reason);
            }
            for _ in 0..5 {
                if self.stop.load(Ordering::Relaxed) {
                    return Gate::Stopping;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// The windows `record` applies in: its signed plan's (`submit --window`), else the
    /// site's `agent.apply_window`, with which of the two they are.
    fn windows_of(&self, record: &Record) -> (Vec<Window>, &'static str) {
        let plan = (record.plan.as_deref()).and_then(|text| Plan::decode(text.as_bytes()).ok());
        match plan {
            Some(plan) if !plan.window.is_empty() => (plan.window, "the rollout's --window"),
            // Validated when the config was loaded.
            _ => (
                parse_windows(&self.config.site.agent.apply_window).unwrap_or_default(),
                "agent.apply_window",
            ),
        }
    }

    /// Whether `record` may wait for a window, so its fetch must not hold a download worker.
    fn has_window(&self, record: &Record) -> bool {
        !self.windows_of(record).0.is_empty()
    }

    /// Waits, recording `waiting` with when it opens, until a window of `record` is open (in
    /// this node's local time); an operator's abort meanwhile halts it.
    fn window_gate(&self, record: &Record) -> Gate {
        let (windows, whose) = self.windows_of(record);
        self.hold_while(record, || {
            let wall = crate::civil::local_secs(now_ms() / 1000);
            let (weekday, minute) = crate::civil::weekday_minute(wall);
            let now = crate::formats::window::now(&windows, weekday, minute);
            let opens = now.opens()?;
            let texts: Vec<String> = windows.iter().map(Window::to_text).collect();
            Some(format!(
                "waiting for its window (opens {opens} local time; {whose}: {})",
                texts.join(", ")
            ))
        })
    }

    /// What the rollout plan lets this node do with a fetched update: apply it (now or once
    /// its wave's turn comes), or not (outside the target, halted, stopping). Records
    /// `not-targeted`, `waiting` and `halted` with their reasons as it goes.
    fn wave_gate(&self, record: &Record) -> Gate {
        let aborted = |store: &StateStore| {
            store
                .control(&record.name, record.seq)
                .ok()
                .flatten()
                .is_some_and(|c| c.action == "abort")
        };
        if aborted(&self.store) {
            return Gate::Halted("halted: aborted by operator (p2pu rollout abort)".into());
        }
        let Some(text) = &record.plan else {
            return Gate::Apply;
        };
        let plan = match Plan::decode(text.as_bytes()) {
            Ok(plan) => plan,
            Err(e) => return Gate::Refused(format!("rollout plan refused: {e}")),
        };
        let tags = &self.config.site.serf.tags;
        if !plan.targets(&self.node_name, tags) {
            let target = plan
                .target
                .as_ref()
                .map(|t| t.to_text())
                .unwrap_or_default();
            return Gate::NotTargeted(format!(
                "not targeted: the update is for {target}; seeded for the others, not applied"
            ));
        }
        if plan.waves.is_empty() && plan.max_failures.is_none() {
            return Gate::Apply;
        }
        let Ok(info_hash) =
            <[u8; 20]>::try_from(hex::decode(&record.info_hash).unwrap_or_default())
        else {
            return Gate::Refused(format!("record has a bad info-hash {:?}", record.info_hash));
        };
        let mut shown: Option<String> = None;
        let mut settled_since: Option<u64> = None;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Gate::Stopping;
            }
            let control = self.store.control(&record.name, record.seq).ok().flatten();
            if control.as_ref().is_some_and(|c| c.action == "abort") {
                return Gate::Halted("halted: aborted by operator (p2pu rollout abort)".into());
            }
            let resumed = control.as_ref().is_some_and(|c| c.action == "resume");
            let now = now_ms() / 1000;
            let step = match self.wave_turn(record, &plan, &info_hash) {
                Ok(turn) => turn.verdict(&plan, resumed, now, &mut settled_since),
                Err(e) => Err(format!("waiting: cannot ask the fleet: {e}")),
            };
            match step {
                Ok(()) => return Gate::Apply,
                Err(reason) if reason.starts_with("halted") => return Gate::Halted(reason),
                Err(reason) => {
                    if shown.as_deref() != Some(reason.as_str()) {
                        tracing::info!(name = %record.name, seq = record.seq, "{reason}");
                        self.set_status(record, Status::Waiting, Some(reason.clone()), None);
                        shown = Some(reason);
                    }
                }
            }
            for _ in 0..10 {
                if self.stop.load(Ordering::Relaxed) {
                    return Gate::Stopping;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// Where this node's wave stands: the targeted members (alive or failed, not left) in
    /// waves, and what the earlier waves' members answered to `p2pu-status`.
    fn wave_turn(
        &self,
        record: &Record,
        plan: &Plan,
        info_hash: &[u8; 20],
    ) -> std::result::Result<WaveTurn, String> {
        use crate::engines::MemberStatus;
        let members = self.gossip.members().map_err(|e| chain(&e))?;
        let targeted: Vec<String> = members
            .iter()
            .filter(|m| m.status != MemberStatus::Left && plan.targets(&m.name, &m.tags))
            .map(|m| m.name.clone())
            .collect();
        let waves = crate::formats::plan::assign_waves(info_hash, &targeted, &plan.waves);
        let Some(wave) = waves.iter().position(|w| w.contains(&self.node_name)) else {
            return Err(format!(
                "waiting: this node ({}) is not among the targeted members Serf lists yet",
                self.node_name
            ));
        };
        let earlier: Vec<String> = waves[..wave].concat();
        let mut turn = WaveTurn {
            wave,
            waves: waves.len(),
            targeted: targeted.len(),
            ..WaveTurn::default()
        };
        if earlier.is_empty() {
            return Ok(turn);
        }
        let answers = self
            .gossip
            .query(STATUS_QUERY, b"", Duration::from_secs(3))
            .map_err(|e| chain(&e))?;
        for member in earlier {
            let status = answers
                .iter()
                .find(|(node, _)| *node == member)
                .and_then(|(_, text)| serde_json::from_str::<NodeStatus>(text).ok())
                .and_then(|answer| {
                    answer
                        .updates
                        .into_iter()
                        .find(|u| u.name == record.name && u.seq == record.seq)
                        .map(|u| u.status)
                });
            match status {
                Some(Status::Applied | Status::NotTargeted) => {}
                Some(Status::Failed | Status::Reverted) => turn.failed.push(member),
                Some(_) => turn.unsettled.push(member),
                None => turn.silent.push(member),
            }
        }
        Ok(turn)
    }

    /// Downloads, verifies and applies one accepted update.
    /// Downloads and verifies one accepted update, and applies it unless it is bound to a
    /// rollout plan: that one is returned, seeded, for its own thread to wait its turn with.
    fn process(
        &self,
        update: &Accepted,
        shared: &Shared,
        tracker_url: &str,
    ) -> Option<crate::agent::transfer::verified::Verified> {
        let peers = &shared.peers;
        let site = &self.config.site;
        let record = &update.record;
        let metainfo = match &update.decoded {
            Decoded::Legacy(torrent) => Some(torrent.torrent.as_slice()),
            Decoded::Signed(_) => None,
        };
        let verified_root = crate::agent::transfer::verified::root_of(&site.agent.state_dir);
        let dirs = [
            site.transmission.download_dir.as_path(),
            site.agent.state_dir.as_path(),
        ];
        if let Some(reason) = super::retry::short_of_space(&dirs, record.len) {
            tracing::warn!(name = %record.name, seq = record.seq, "not fetched: {reason}");
            self.attempt_ended(update, Ended::NoSpace { reason }, &shared.retries);
            return None;
        }
        let seeds = || peers.seed_servers();
        let named = || peers.named_seed_servers();
        let mut fetcher = self.fetcher(tracker_url, &seeds, &verified_root);
        if site.transfer.mode == crate::config::TransferMode::Stripes {
            fetcher.stripes = Some(crate::agent::transfer::fetch::StripedPeers {
                name: &self.node_name,
                members: &named,
            });
        }
        let mut fetched = match fetcher.fetch(record, metainfo) {
            Ok(fetched) => fetched,
            Err(crate::agent::transfer::fetch_error::FetchError::Stopping) => return None,
            Err(e) => {
                tracing::warn!(name = %record.name, seq = record.seq, "download failed: {}", chain(&e));
                let failed = if super::retry::out_of_space(&e) {
                    Ended::NoSpace { reason: chain(&e) }
                } else {
                    Ended::Failed {
                        reason: chain(&e),
                        output: None,
                        retry: true,
                    }
                };
                self.attempt_ended(update, failed, &shared.retries);
                return None;
            }
        };
        self.note_fetch(record, &mut fetched);
        if record.plan.is_none() && !self.may_hold(record) {
            // Without a plan, a window or a lock only an operator's abort holds it (or a lock
            // taken since the look above, briefly on this worker).
            match self.plan_gate(record) {
                Gate::Halted(reason) => {
                    tracing::warn!(name = %record.name, seq = record.seq, "{reason}");
                    self.set_status(record, Status::Halted, Some(reason), None);
                    return None;
                }
                Gate::Stopping => return None,
                _ => {}
            }
        } else {
            // Seeded at once: the members of later waves, and those not targeted, still
            // serve it to the others while this node waits (or never applies it).
            if let Some(torrent) = fetched.to_seed.take() {
                fetcher.seed(record, &torrent);
            }
            if !fetched.sources.is_empty() {
                let sources = fetched.sources.clone();
                let _ = self
                    .store
                    .update(&record.name, record.seq, |stored| stored.sources = sources);
            }
            // Waiting for its wave must not keep a download worker.
            return Some(fetched.payload);
        }
        let sources = std::mem::take(&mut fetched.sources);
        let to_seed = fetched.to_seed.take();
        self.apply_fetched(update, shared, fetched.payload, sources, || {
            // Seeding waits for the apply: Transmission's check of the payload would
            // compete with it for the CPU.
            if let Some(torrent) = &to_seed {
                fetcher.seed(record, torrent);
            }
        });
        None
    }

    /// What a fetch teaches beside its payload: the measured rate goes to the state dir
    /// (`rate.json`, which the peers loop advertises), and a striped fetch's per-stripe
    /// record into the update's record.
    fn note_fetch(&self, record: &Record, fetched: &mut crate::agent::transfer::fetch::Fetched) {
        if let Some(sample) = fetched.measured {
            let state_dir = &self.config.site.agent.state_dir;
            if let Err(e) = super::rate::record(state_dir, sample.bytes, sample.millis) {
                tracing::warn!("recording the measured rate: {}", chain(&e));
            }
        }
        if !fetched.stripes.is_empty() {
            let stripes = std::mem::take(&mut fetched.stripes);
            if let Err(e) = self
                .store
                .update(&record.name, record.seq, |stored| stored.stripes = stripes)
            {
                tracing::warn!(name = %record.name, seq = record.seq, "recording the stripes' sources: {}", chain(&e));
            }
        }
    }

    /// A plan-bound update, fetched and seeded: waits for its turn (`plan_gate`), on its own
    /// thread, then applies it, or records why not.
    fn finish_planned(
        &self,
        update: &Accepted,
        shared: &Shared,
        payload: crate::agent::transfer::verified::Verified,
    ) {
        let record = &update.record;
        match self.plan_gate(record) {
            Gate::Apply => self.apply_fetched(update, shared, payload, Vec::new(), || {}),
            Gate::Stopping => {}
            Gate::NotTargeted(reason) => {
                tracing::info!(name = %record.name, seq = record.seq, "{reason}");
                self.set_status(record, Status::NotTargeted, Some(reason), None);
            }
            Gate::Halted(reason) => {
                tracing::warn!(name = %record.name, seq = record.seq, "{reason}");
                self.set_status(record, Status::Halted, Some(reason), None);
            }
            Gate::Refused(reason) => {
                tracing::warn!(name = %record.name, seq = record.seq, "{reason}");
                self.set_status(record, Status::Failed, Some(reason), None);
            }
        }
    }

    /// Applies a verified payload, one apply at a time, and records the outcome; `after`
    /// runs once the apply is done, before the outcome is recorded.
    fn apply_fetched(
        &self,
        update: &Accepted,
        shared: &Shared,
        payload: crate::agent::transfer::verified::Verified,
        sources: Vec<crate::agent::runtime::state::SourceUse>,
        after: impl FnOnce(),
    ) {
        let site = &self.config.site;
        let record = &update.record;
        let announcement = match &update.decoded {
            Decoded::Legacy(_) => None,
            Decoded::Signed(announcement) => Some(announcement),
        };
        let _applying = shared.apply_lock.lock().unwrap_or_else(|e| e.into_inner());
        // A newer one may have been accepted while this one downloaded or waited its turn.
        if self.skip_superseded(record) {
            payload.remove();
            return;
        }
        // One write: the sources the payload came from, and that it is being applied.
        let now = now_ms() / 1000;
        if let Err(e) = self.store.update(&record.name, record.seq, |stored| {
            if !sources.is_empty() {
                stored.sources = sources;
            }
            stored.settle(Status::Applying, None, None, now);
        }) {
            tracing::error!(name = %record.name, seq = record.seq, "recording the result failed: {}", chain(&e));
        }
        let kind = health::kind_of(record);
        let context = self.apply_context();
        let verified_root = crate::agent::transfer::verified::root_of(&site.agent.state_dir);
        let mut health = self.health(&context, &verified_root);
        // A per-update check the signed plan carries replaces the site's.
        let plan = (record.plan.as_deref()).and_then(|text| Plan::decode(text.as_bytes()).ok());
        let check = plan.as_ref().and_then(|plan| plan.health_check());
        if let Some((_, Some(secs))) = check {
            health.timeout = Duration::from_secs(secs);
        }
        // Kept before applying (which removes the verified copy), for a later revert to it.
        health.keep(record, payload.path());
        tracing::debug!(name = %record.name, seq = record.seq, "apply started");
        crate::sdnotify::status(&format!("applying {} seq {}", record.name, record.seq));
        // Only the copy that was hashed: the download dir's owner may have changed the file
        // there since.
        let applied = context.apply_verified(kind, &record.name, payload, announcement);
        after();
        match applied {
            Ok(applied) if health::is_checked(kind) => {
                // One `applied:` line per apply, whether or not a check follows: the journal
                // is what operators (and the booted-fleet tests) count applies by.
                let checked = check.is_some() || !site.agent.health_check.is_empty();
                let then = if checked { ", checking" } else { "" };
                tracing::info!(name = %record.name, seq = record.seq, kind = kind.as_str(), "applied: {}{then}", applied.summary);
                if let Err(e) = health.after_apply(record, applied, check.map(|(argv, _)| argv)) {
                    tracing::error!(name = %record.name, seq = record.seq, "recording the health check failed: {}", chain(&e));
                }
            }
            Ok(applied) => {
                tracing::info!(name = %record.name, seq = record.seq, kind = kind.as_str(), "applied: {}", applied.summary);
                let ended = Ended::Applied {
                    summary: applied.summary,
                    output: applied.output,
                };
                self.attempt_ended(update, ended, &shared.retries);
            }
            Err(e) => {
                tracing::warn!(name = %record.name, seq = record.seq, "apply failed: {}", chain(&e));
                health.good.discard(&record.name, record.seq);
                let no_space = super::retry::out_of_space(&e)
                    || e.output().is_some_and(super::retry::text_says_out_of_space);
                let failed = if no_space {
                    Ended::NoSpace { reason: e.cause() }
                } else {
                    Ended::Failed {
                        reason: e.cause(),
                        output: e.output().map(str::to_string),
                        retry: e.may_pass_later(),
                    }
                };
                self.attempt_ended(update, failed, &shared.retries);
            }
        }
        let ended = match self.store.records(&record.name) {
            Ok(records) => records
                .into_iter()
                .find(|r| r.seq == record.seq)
                .map_or("done", |r| r.status.as_str()),
            Err(_) => "done",
        };
        crate::sdnotify::status(&format!("idle: {} seq {} {ended}", record.name, record.seq));
    }
}

/// What a rollout plan lets a node do with an update it fetched.
enum Gate {
    Apply,
    NotTargeted(String),
    Halted(String),
    /// The plan cannot be read (a record written by hand, say): failed with the reason.
    Refused(String),
    Stopping,
}

/// This node's wave and what the earlier waves' members said.
#[derive(Debug, Default)]
struct WaveTurn {
    /// 0-based.
    wave: usize,
    waves: usize,
    targeted: usize,
    failed: Vec<String>,
    /// Answered, but neither applied nor failed yet.
    unsettled: Vec<String>,
    /// Did not answer: down, partitioned away, or not running p2pu.
    silent: Vec<String>,
}

impl WaveTurn {
    /// `Ok` when this wave may apply now; otherwise why not, starting `halted` when the
    /// failure threshold is crossed (unless resumed) and `waiting` otherwise. A member that
    /// does not answer keeps the wave waiting: a node never goes on on its own.
    fn verdict(
        &self,
        plan: &Plan,
        resumed: bool,
        now: u64,
        settled_since: &mut Option<u64>,
    ) -> std::result::Result<(), String> {
        let (k, n) = (self.wave + 1, self.waves);
        // The first wave has nobody to wait for.
        if self.wave == 0 {
            return Ok(());
        }
        if let Some(allowed) = plan.failures_allowed(self.targeted) {
            if self.failed.len() > allowed && !resumed {
                return Err(format!(
                    "halted: {} member(s) of the earlier waves failed ({}), more than the {allowed} --max-failures allows; `p2pu rollout resume` to go on",
                    self.failed.len(),
                    self.failed.join(", ")
                ));
            }
        }
        if !self.silent.is_empty() || !self.unsettled.is_empty() {
            *settled_since = None;
            let mut why = format!("waiting: wave {k} of {n}");
            if !self.unsettled.is_empty() {
                why.push_str(&format!("; not settled yet: {}", self.unsettled.join(", ")));
            }
            if !self.silent.is_empty() {
                why.push_str(&format!("; no answer from: {}", self.silent.join(", ")));
            }
            return Err(why);
        }
        let since = *settled_since.get_or_insert(now);
        let at = since + plan.wait_secs;
        if now < at {
            // Stable while it waits: the record is written when the reason changes.
            return Err(format!(
                "waiting: wave {k} of {n}; earlier waves settled, --wave-wait of {} s until {at} (unix seconds)",
                plan.wait_secs
            ));
        }
        Ok(())
    }
}

/// Fetches the rollout plans announcements wait for, keeping each one the announcement it came
/// with verifies with in the state dir (root's, where the intake reads it) and in the seed root
/// (where this node re-serves it, and where another user may replace it: only the state dir's
/// copy is read back).
fn plans_loop(agent: &Agent, peers: &FleetPeers, wanted: &Receiver<(String, String)>) {
    use crate::formats::announcement::Announcement;
    let site = &agent.config.site;
    let verified_root = crate::agent::transfer::verified::root_of(&site.agent.state_dir);
    let seeds = || peers.seed_servers();
    let fetcher = agent.fetcher("", &seeds, &verified_root);
    while !agent.stop.load(Ordering::Relaxed) {
        let Ok((hash, wire)) = wanted.recv_timeout(Duration::from_millis(500)) else {
            continue;
        };
        let Ok(announcement) = Announcement::decode(&wire) else {
            continue;
        };
        let trusted = match <crate::keys::TrustedKeys as crate::keys::TrustedKeysDir>::load(
            &site.agent.trusted_keys_dir,
        ) {
            Ok(trusted) => trusted,
            Err(e) => {
                tracing::warn!("plans: {}", chain(&e));
                continue;
            }
        };
        let accept = |bytes: &[u8]| announcement.verify(&trusted, Some(bytes)).is_ok();
        if let Some(plan) = fetcher.find_plan(&hash, &accept) {
            keep_fetched_plan(agent, &hash, &plan);
        }
    }
}

/// Fetches the plan the announcement `wire` is bound to, for catch-up to verify an answer with;
/// true once one that verifies it is kept.
fn fetch_plan_for(agent: &Agent, peers: &FleetPeers, hash: &str, wire: &str) -> bool {
    use crate::formats::announcement::Announcement;
    let site = &agent.config.site;
    let Ok(announcement) = Announcement::decode(wire) else {
        return false;
    };
    let trusted = match <crate::keys::TrustedKeys as crate::keys::TrustedKeysDir>::load(
        &site.agent.trusted_keys_dir,
    ) {
        Ok(trusted) => trusted,
        Err(e) => {
            tracing::warn!("catch-up: {}", chain(&e));
            return false;
        }
    };
    let accept = |bytes: &[u8]| announcement.verify(&trusted, Some(bytes)).is_ok();
    let verified_root = crate::agent::transfer::verified::root_of(&site.agent.state_dir);
    let seeds = || peers.seed_servers();
    let fetcher = agent.fetcher("", &seeds, &verified_root);
    match fetcher.find_plan(hash, &accept) {
        Some(plan) => {
            keep_fetched_plan(agent, hash, &plan);
            true
        }
        None => false,
    }
}

/// Keeps a plan fetched and verified: root's copy for the intake, the seed root's to re-serve.
fn keep_fetched_plan(agent: &Agent, hash: &str, plan: &[u8]) {
    let site = &agent.config.site;
    match intake::keep_plan(agent.store.dir(), hash, plan) {
        Ok(()) => tracing::info!(%hash, "rollout plan fetched"),
        Err(e) => tracing::warn!(%hash, "keeping the rollout plan: {}", chain(&e)),
    }
    let served = intake::plan_path(&site.transmission.download_dir, hash);
    if let Err(e) = crate::fsutil::write_atomic(&served, plan, 0o644) {
        tracing::warn!(%hash, "serving the rollout plan: {}", chain(&e));
    }
}

/// What the workers (and the threads of updates waiting for their wave) share.
#[derive(Clone)]
struct Shared {
    /// One apply at a time.
    apply_lock: Arc<Mutex<()>>,
    served: Arc<ServeChild>,
    peers: Arc<FleetPeers>,
    retries: Arc<Retries>,
}

fn worker(agent: &Arc<Agent>, work: &Mutex<Receiver<Accepted>>, shared: &Shared) {
    loop {
        let next = work.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(update) = next else {
            return;
        };
        if agent.skip_superseded(&update.record) {
            // Also an operator's revert of a version a newer one has replaced since.
            continue;
        }
        if update.record.status == Status::Reverting {
            // An operator's revert (the intake set it): the kept version is applied again,
            // under the apply lock, as a restart finishes a revert; nothing is fetched.
            let (locked, _) = mpsc::channel();
            agent.resume_health(vec![update.record], &shared.apply_lock, &locked);
            continue;
        }
        // Asked per update: a restarted tracker may listen elsewhere (port 0 in tests).
        let waiting = agent.process(&update, shared, &shared.served.tracker_url());
        if let Some(payload) = waiting {
            let (agent, shared) = (agent.clone(), shared.clone());
            let name = format!("wave-{}", update.record.name);
            spawn_named(&name, move || {
                agent.finish_planned(&update, &shared, payload)
            });
        }
    }
}

/// Fixes glibc's thresholds for handing freed memory back. By default the first 1 MiB buffer
/// freed (the payload's hashing and copying, `verified.rs`) raises the mmap threshold to 1 MiB,
/// so later ones come from a thread's arena, whose top glibc keeps (and `malloc_trim` does not
/// return): on the submitting node three worker arenas held about 1 MiB each after a few
/// updates (`benches/small_update`: RSS after the updates 15.0 MiB, 12.3 with these).
/// Two arenas at most: a striped fetch runs a thread a stripe, and each thread that allocates
/// would otherwise get an arena of its own (up to 8 a core), each keeping up to the trim
/// threshold (a 64 MiB striped rollout peaked at 15.2 MiB, over 14.0 in the chain).
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt sets three of glibc's tunables (thread-safe in glibc); called early in
    // the agent's start.
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 256 << 10);
        nix::libc::mallopt(nix::libc::M_TRIM_THRESHOLD, 128 << 10);
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2);
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
/// Keeps the `p2pu-rate` tag at what this node measured, too (`rate::Advertiser`).
fn refresh_peers(agent: &Agent, peers: &FleetPeers, served: &ServeChild) {
    let mut advertiser = super::rate::Advertiser::default();
    while !agent.stop.load(Ordering::Relaxed) {
        match peers.refresh(agent.gossip.as_ref()) {
            Ok(_) => advertiser.tick(
                &agent.config.site.agent.state_dir,
                peers.own_member().as_ref(),
                agent.gossip.as_ref(),
            ),
            Err(e) => tracing::warn!("refreshing fleet peers from Serf: {}", chain(&e)),
        }
        let nat = &agent.config.site.nat;
        if nat.enabled {
            // Across NAT, session peers are reached through the nat-client's tunnel ends.
            let ends = crate::nat::tunnel_ends(&nat.control_socket);
            peers.set_tunnels(ends.peers);
            peers.set_tunnel_seeds(ends.seeds);
        }
        served.send(&peers.snapshot());
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Asks the fleet (the heartbeat, then catch-up) every `agent.catch_up_secs`, and sooner when
/// `trigger` says so ([`sync`]); answers each `p2pu sync` the round was for.
fn catch_up_loop(agent: &Agent, peers: &FleetPeers, trigger: &Trigger) {
    let site = &agent.config.site.agent;
    // A first round soon after start: the node may have missed updates while it was down.
    let mut due = std::time::Instant::now() + Duration::from_secs(3);
    while let Some(round) = trigger.wait(due, &agent.stop) {
        if round.why != Why::Period {
            tracing::info!(
                why = round.why.as_str(),
                "asking the fleet for missed updates now"
            );
        }
        if round.why == Why::Fleet {
            rejoin(agent, peers);
        }
        let started_ms = now_ms();
        // For the operator: with nobody alive to ask, "nothing found" means nothing.
        let members_alive = match round.asked.is_empty() {
            true => Ok(0),
            false => agent.gossip.members().map(|members| {
                members
                    .iter()
                    .filter(|m| {
                        m.status == crate::engines::MemberStatus::Alive && m.name != agent.node_name
                    })
                    .count()
            }),
        };
        let policy = policy(&agent.config, agent.fleet, &agent.node_name);
        let snapshot = heartbeat_round(agent, peers, &policy);
        let fetch_plan = |hash: &str, wire: &str| fetch_plan_for(agent, peers, hash, wire);
        let caught = super::catchup::catch_up_with(
            agent.gossip.as_ref(),
            &agent.store,
            &policy,
            &site.spool_dir,
            now_ms(),
            Duration::from_secs(2),
            snapshot.as_ref(),
            &fetch_plan,
        );
        match &caught {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "catch-up spooled missed announcements"),
            Err(e) => tracing::warn!("catch-up: {}", chain(e)),
        }
        for id in round.asked {
            let error = match (&members_alive, &caught) {
                (Err(e), _) => Some(chain(e)),
                (_, Err(e)) => Some(chain(e)),
                _ => None,
            };
            let answer = sync::Answer {
                id,
                started_ms,
                finished_ms: now_ms(),
                members_alive: *members_alive.as_ref().unwrap_or(&0),
                spooled: *caught.as_ref().unwrap_or(&0),
                error,
            };
            if let Err(e) = sync::write_answer(&site.state_dir, &answer) {
                tracing::warn!("answering p2pu sync: {}", chain(&e));
            }
        }
        due = std::time::Instant::now() + Duration::from_secs(site.catch_up_secs);
    }
}

/// How many of the members last seen alive the agent joins when its Serf (re)started.
const REJOIN_PEERS: usize = 3;

/// Joins a few of the members last seen alive. A Serf that restarted knows nobody until a
/// member gossips or reconnects to it, and its Lamport clock starts over until its next state
/// exchange (every 30 s), so the members that rejoined meanwhile drop every event it sends
/// (measured by benches/converge: 89 s before this, 9 s after); a join's state exchange fixes
/// both at once. For the join target above all, whose own `serf.join` names only itself. Best
/// effort.
fn rejoin(agent: &Agent, peers: &FleetPeers) {
    use rand::seq::SliceRandom;
    // The site's join addresses first, then a random few of those last seen alive: which
    // addresses members advertise is theirs to choose (hostile review, issue 25).
    let mut addrs: Vec<String> = agent.config.site.serf.join.clone();
    addrs.extend(
        peers
            .last_gossip_peers()
            .choose_multiple(&mut rand::thread_rng(), REJOIN_PEERS)
            .map(ToString::to_string),
    );
    if addrs.is_empty() {
        return;
    }
    // The missed updates come through the fleet query that follows, verified; a replay of
    // the members' buffered events would bring back every old announcement at once.
    match agent
        .gossip
        .join(&addrs, crate::engines::JoinEvents::IgnoreOld)
    {
        Ok(()) => tracing::debug!(addrs = %addrs.join(" "), "joined the members last seen alive"),
        Err(e) => {
            tracing::warn!(addrs = %addrs.join(" "), "joining the members last seen alive: {}", chain(&e))
        }
    }
}

/// Asks the fleet for its newest heartbeat (a node that missed the event gets it so), and
/// returns the snapshot document of the kept one when it differs from what this node holds.
fn heartbeat_round(
    agent: &Agent,
    peers: &FleetPeers,
    policy: &Policy,
) -> Option<crate::formats::heartbeat::Snapshot> {
    use crate::formats::serf_names::HEARTBEAT_QUERY;
    match agent
        .gossip
        .query(HEARTBEAT_QUERY, b"", Duration::from_secs(2))
    {
        Ok(answers) => {
            let mut seen = BTreeSet::new();
            for (node, wire) in answers {
                let wire = wire.trim().to_string();
                if wire.is_empty() || !seen.insert(wire.clone()) {
                    continue;
                }
                let heartbeat_policy = policy.heartbeat();
                match heartbeat::take(
                    wire.as_bytes(),
                    &agent.store,
                    &heartbeat_policy,
                    now_ms() / 1000,
                ) {
                    Ok(heartbeat::Taken::Kept(h)) => {
                        tracing::info!(%node, signed_at = h.time(), "heartbeat kept from a member's answer")
                    }
                    Ok(heartbeat::Taken::Refused(reason)) if !reason.contains("not newer") => {
                        tracing::warn!(%node, %reason, "heartbeat answer refused")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("heartbeat: {}", chain(&e)),
                }
            }
        }
        Err(e) => tracing::warn!("heartbeat query: {}", chain(&e)),
    }
    let kept = heartbeat::kept(agent.store.dir())?;
    let local = match heartbeat::local_snapshot(&agent.store) {
        Ok(local) => local,
        Err(e) => {
            tracing::warn!("heartbeat: reading this node's state: {}", chain(&e));
            return None;
        }
    };
    let root = &agent.config.site.transmission.download_dir;
    if local.digest() == *kept.snap() {
        // Serve it too: a member that lacks the document may ask this node for it.
        if let Err(e) = heartbeat::publish(root, &local) {
            tracing::warn!("heartbeat: keeping the snapshot document: {}", chain(&e));
        }
        return None;
    }
    let client = Client {
        bind: agent.config.advertise,
        connect_timeout: Duration::from_secs(3),
        read_timeout: Duration::from_secs(10),
    };
    let state_dir = agent.store.dir();
    match heartbeat::snapshot_of(&kept, state_dir, root, &peers.seed_servers(), &client) {
        Ok(Some(snapshot)) => Some(snapshot),
        Ok(None) => {
            tracing::warn!(
                snap = %hex::encode(kept.snap()),
                "heartbeat: no member serves the snapshot document the kept heartbeat names"
            );
            None
        }
        Err(e) => {
            tracing::warn!("heartbeat: fetching the snapshot document: {}", chain(&e));
            None
        }
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

/// The intake's policy, from the site config and the node's fleet.
pub fn policy<'a>(config: &'a Config, fleet: FleetId, node: &'a str) -> Policy<'a> {
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
        node,
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

    /// The wave gate: a silent or unsettled earlier member keeps a wave waiting (a node never
    /// goes on on its own), failures past --max-failures halt it unless resumed, and the
    /// wave wait counts from when the earlier waves were first seen settled.
    #[test]
    fn a_wave_waits_for_the_earlier_ones_and_halts_past_max_failures() {
        let plan = Plan {
            waves: crate::formats::plan::parse_waves("1,50%,100%").unwrap(),
            max_failures: Some(crate::formats::plan::parse_max_failures("1").unwrap()),
            wait_secs: 10,
            ..Plan::default()
        };
        let turn = |failed: &[&str], unsettled: &[&str], silent: &[&str]| WaveTurn {
            wave: 2,
            waves: 3,
            targeted: 4,
            failed: failed.iter().map(|s| s.to_string()).collect(),
            unsettled: unsettled.iter().map(|s| s.to_string()).collect(),
            silent: silent.iter().map(|s| s.to_string()).collect(),
        };
        let mut since = None;
        let why = turn(&[], &[], &["b"])
            .verdict(&plan, false, 100, &mut since)
            .unwrap_err();
        assert!(
            why.starts_with("waiting: wave 3 of 3") && why.contains("no answer from: b"),
            "{why}"
        );
        let why = turn(&["a"], &["b"], &[])
            .verdict(&plan, false, 100, &mut since)
            .unwrap_err();
        assert!(why.contains("not settled yet: b"), "{why}");
        let why = turn(&["a", "b"], &[], &["c"])
            .verdict(&plan, false, 100, &mut since)
            .unwrap_err();
        assert!(
            why.starts_with("halted: 2 member(s)") && why.contains("a, b"),
            "{why}"
        );
        // Resumed by the operator: the threshold no longer holds it, the wave wait still does.
        let why = turn(&["a", "b"], &[], &[])
            .verdict(&plan, true, 100, &mut since)
            .unwrap_err();
        assert!(why.contains("--wave-wait of 10 s until 110"), "{why}");
        assert_eq!(since, Some(100));
        assert!(turn(&["a", "b"], &[], &[])
            .verdict(&plan, true, 110, &mut since)
            .is_ok());
        // Settled with one failure, which --max-failures 1 allows.
        let mut since = Some(0);
        assert!(turn(&["a"], &[], &[])
            .verdict(&plan, false, 100, &mut since)
            .is_ok());
        // The first wave neither waits nor halts.
        let first = WaveTurn {
            wave: 0,
            ..turn(&["a", "b"], &[], &["c"])
        };
        assert!(first.verdict(&plan, false, 100, &mut None).is_ok());
    }

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
        use crate::keys::{PublicKey, TrustedKeys, TrustedKeysDir};
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
            node: "node-1",
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
                &mut super::super::pending::PlanWaits::default(),
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
