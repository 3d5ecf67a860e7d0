//! `p2pu submit`: makes the torrent, seeds the payload in the local Transmission, signs the
//! announcement with the node's key and broadcasts it as a Serf user event with coalescing
//! off, and again a few times over 20 s (until every alive member has it, `--once` sends it once):
//! Serf drops events around a member's restart or rejoin. Besides the event, the announcement
//! is pushed to up to 64 alive members' web seed servers (`agent::transfer::push`; not with
//! `--no-push`), which have it in one round trip instead of Serf's gossip ticks. Before any of that it refuses what every node would fail on (a path that does not exist,
//! a manifest Puppet cannot parse, a module archive without metadata), and `--noop` only shows
//! what a manifest would change here. With `--wait`, follows the rollout until every alive
//! member applied it, printing each failed member's reason. On a terminal
//! (and without `--quiet` or NO_COLOR) the long steps, hashing and copying, show progress on
//! stderr; `--json` prints [`SubmitReport`] on stdout. `--sign-only` and `--with-sig` collect
//! the signatures of names that need k of them (thresholds) and announce them together.

use crate::agent::runtime::state::RolloutOutcome;
use crate::agent::runtime::status::{fleet_status, MemberReport};
use crate::cmd::{exit, ConfigArg, Outcome};
use crate::config::TransferMode;
use crate::config::{Config, MachineFacts};
use crate::engines::Gossip;
use crate::error::{Error, Result};
use crate::formats::announcement::{Announcement, Kind};
use crate::publish::{broadcast, prepare_checked, Submitted};
use crate::Env;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Sign an update and send it to every node of the fleet.
///
/// A directory is sent as one archive (kind `dir`). Prints the update's name, seq and
/// info-hash. Refused before anything is seeded or broadcast: a path that does not exist, a
/// manifest `puppet parser validate` rejects, a module archive without metadata.json. With
/// --noop, runs `puppet apply --noop` here and shows what would change, broadcasting nothing.
/// The announcement is sent again at 2, 5, 10 and 20 s while some alive member has not seen it
/// (Serf drops events around a restart; nodes take a copy they have as known); --once sends it
/// once. Besides Serf's event, the announcement is pushed once to up to 64 alive members
/// directly (their web seed servers; --no-push leaves it to Serf), so they have it in a
/// round trip rather than after Serf's gossip ticks (about 0.25 s for 8 nodes). With --wait, follows the rollout (re-sending meanwhile) and prints each failed member's
/// reason on stderr; exits 0
/// when every targeted member applied it, 1 when it failed somewhere (failed, or reverted by
/// the member's health check), 2 when some member had not settled it by --timeout, 3 when the
/// rollout halted (some member reports it `halted`). --json carries the same outcome.
///
/// Names that need k signatures (agent.thresholds): sign with --sign-only on the host that
/// will announce, have each co-signer sign that file with --sign-only --with-sig, then
/// announce the files together with --with-sig.
#[derive(Debug, clap::Args)]
pub struct Submit {
    /// The file or directory to send (not with --with-sig alone: the signed files name it).
    #[arg(required_unless_present = "with_sig")]
    path: Option<PathBuf>,
    /// Sign, write the signed announcement to FILE and send nothing: a signature to combine
    /// with others' (`--with-sig`). With PATH the payload is also seeded here; with
    /// --with-sig instead, this key co-signs the announcement in those files.
    #[arg(long, value_name = "FILE")]
    sign_only: Option<PathBuf>,
    /// Signature files (from --sign-only) of one announcement: combine their signatures and
    /// announce it (or, with --sign-only, co-sign it).
    #[arg(long, value_name = "FILE", num_args = 1.., conflicts_with = "path")]
    with_sig: Vec<PathBuf>,
    /// What the payload is, which decides what each node does with it; detected from the file
    /// when absent (a directory is `dir`, *.pp `manifest`, a module build `module`, other
    /// .tar.gz/.tgz/.zip `archive`, a p2pu *.pub `key`, anything else `file`).
    #[arg(long, value_enum)]
    kind: Option<Kind>,
    /// The update's name (one path component, at most 64 bytes); default: the file name.
    #[arg(long)]
    name: Option<String>,
    /// The update's sequence number; default: now, in milliseconds since the epoch.
    #[arg(long)]
    seq: Option<u64>,
    #[command(flatten)]
    config: ConfigArg,
    /// Follow the rollout until every alive member applied the update.
    #[arg(long)]
    wait: bool,
    /// Send the announcement once: no re-sends over the next 20 s to members that have not
    /// seen it (the nodes still ask the fleet for it when their Serf rejoins, and every
    /// agent.catch_up_secs).
    #[arg(long)]
    once: bool,
    /// Send only Serf's event: no push to the members' web seed servers (they hear it by
    /// gossip, a few hundred milliseconds later).
    #[arg(long)]
    no_push: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Print JSON (a SubmitReport: name, seq, info-hash, and with --wait the rollout).
    #[arg(long)]
    json: bool,
    /// Show no progress: no bars while hashing and copying, no rollout lines with --wait.
    #[arg(long, short)]
    quiet: bool,
    /// Do not send anything: run `puppet apply --noop` of the manifest on this node (with
    /// puppet.modulepath from the config) and show the changes it would make.
    #[arg(long, conflicts_with = "wait")]
    noop: bool,
    /// Only nodes whose Serf tag KEY matches GLOB apply it (`role=camera`, `site=north-*`);
    /// the others fetch and seed it and record `not-targeted`. Tags come from site.toml
    /// `[serf] tags`. Signed with the update.
    #[arg(long, value_name = "KEY=GLOB", group = "targeting")]
    target: Option<String>,
    /// Only nodes whose name matches GLOB apply it (`cam-*`).
    #[arg(long, value_name = "GLOB", group = "targeting")]
    target_name: Option<String>,
    /// Only these nodes apply it (`cam-1,cam-2`).
    #[arg(long, value_name = "NODE,...", group = "targeting")]
    target_nodes: Option<String>,
    /// Roll out in waves of these cumulative sizes, counts or percentages of the targeted
    /// members, the last 100% (`1,10%,50%,100%`): a wave applies once every earlier one
    /// settled within --max-failures.
    #[arg(long, value_name = "SIZES")]
    waves: Option<String>,
    /// Halt the rollout once more than N (or P% of the targeted) members failed: the nodes
    /// that have not applied hold as `halted` until `p2pu rollout resume`.
    #[arg(long, value_name = "N|P%")]
    max_failures: Option<String>,
    /// Wait this long after the earlier waves settled before a wave applies (`90`, `5m`, `1h`).
    #[arg(long, value_name = "DURATION")]
    wave_wait: Option<String>,
    /// Run this check after the update instead of the site's `agent.health_check`, signed
    /// with it: words split on spaces, no shell, the first an absolute path
    /// (`"/usr/local/bin/check --camera"`). A failure reverts the node to the last good version.
    #[arg(long, value_name = "COMMAND")]
    health_check: Option<String>,
    /// How long the --health-check may run before it is killed and has failed (seconds).
    #[arg(long, value_name = "SECS", requires = "health_check")]
    health_check_timeout: Option<u64>,
    /// Apply only inside this maintenance window, in each node's local time (`Mon-Fri
    /// 02:00-04:00`; repeat the flag for several), instead of the nodes' own
    /// agent.apply_window. Nodes download at once and wait. Signed with the update; a node
    /// whose p2pu predates windows refuses the update rather than apply it outside one.
    #[arg(long, value_name = "DAYS HH:MM-HH:MM")]
    window: Vec<String>,
    /// Apply even where an application holds updates (agent.update_lock, agent.veto_command).
    /// Signed with the update, so no member can add it; a node whose p2pu predates locks
    /// refuses the update.
    #[arg(long)]
    force_locks: bool,
}

impl Submit {
    /// `--health-check` as an argument vector: run without a shell, so its program must be an
    /// absolute path.
    fn check_argv(&self) -> Result<Vec<String>> {
        let Some(text) = &self.health_check else {
            return Ok(Vec::new());
        };
        let argv: Vec<String> = text.split_whitespace().map(str::to_string).collect();
        match argv.first() {
            Some(program) if program.starts_with('/') => Ok(argv),
            _ => Err(Error::BadArgument(format!(
                "--health-check {text:?}: give the check's absolute path first, then its \
                 arguments (it runs without a shell)"
            ))),
        }
    }

    /// The rollout plan the flags describe; a bad value is refused naming its flag, before any
    /// engine is touched.
    fn plan(&self) -> Result<crate::formats::plan::Plan> {
        use crate::formats::plan::{self, Plan, Selector};
        let target = match (&self.target, &self.target_name, &self.target_nodes) {
            (Some(t), _, _) => Some(Selector::tag(t)?),
            (_, Some(t), _) => Some(Selector::name(t)?),
            (_, _, Some(t)) => Some(Selector::nodes(t)?),
            _ => None,
        };
        let plan = Plan {
            target,
            waves: self
                .waves
                .as_deref()
                .map(plan::parse_waves)
                .transpose()?
                .unwrap_or_default(),
            max_failures: self
                .max_failures
                .as_deref()
                .map(plan::parse_max_failures)
                .transpose()?,
            wait_secs: self
                .wave_wait
                .as_deref()
                .map(plan::parse_wait)
                .transpose()?
                .unwrap_or(0),
            check: self.check_argv()?,
            check_timeout: self.health_check_timeout,
            window: plan::parse_windows(&self.window)?,
            force_locks: self.force_locks,
        };
        plan.validate()?;
        Ok(plan)
    }
}

/// `p2pu submit --noop --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoopReport {
    pub path: PathBuf,
    /// One line per change Puppet would make, as Puppet words it.
    pub changes: Vec<String>,
    /// Puppet's whole output.
    pub output: String,
}

/// `p2pu submit --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitReport {
    pub name: String,
    pub seq: u64,
    pub info_hash: String,
    /// The signed announcement as broadcast (`p2pu2:...`).
    pub wire: String,
    /// With `--wait`: where the rollout stood when it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

/// Where a rollout stands: alive members by what they did with the update.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    pub applied: Vec<String>,
    pub failed: Vec<String>,
    /// Alive members that had not applied or failed it (yet).
    pub waiting: Vec<String>,
    /// Members where the rollout halted itself (its failure threshold crossed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub halted: Vec<String>,
    /// Members the update is not for (its signed target selector leaves them out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_targeted: Vec<String>,
    /// How the wait ended: `applied`, `failed`, `timed-out` or `halted`, as the exit status
    /// (0, 1, 2, 3) says it; absent while it was not over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<WaitOutcome>,
    /// Why each failed member failed (Puppet's first `Error:` line, or the fetch's reason).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reasons: BTreeMap<String, String>,
}

/// How `submit --wait` ended, as `--json` says it; the exit status says the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaitOutcome {
    Applied,
    Failed,
    TimedOut,
    Halted,
}

impl WaitOutcome {
    pub fn exit_code(self) -> i32 {
        match self {
            WaitOutcome::Applied => exit::OK,
            WaitOutcome::Failed => exit::WAIT_FAILED,
            WaitOutcome::TimedOut => exit::WAIT_TIMED_OUT,
            WaitOutcome::Halted => exit::WAIT_HALTED,
        }
    }
}

impl Submit {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let plan = self.plan()?;
        let mut caught_up = false;
        let submitted = match &self.path {
            Some(path) => {
                // Before anything that reads secrets: a mistyped path is the likeliest mistake.
                let source = env.resolve(path);
                crate::publish::check_source(&source)?;
                let config = Config::load(&self.config.resolve(env), Some(&MachineFacts::probe()))?;
                let kind = match self.kind {
                    Some(kind) => kind,
                    None => crate::agent::apply::kind::detect(&source)?,
                };
                if self.noop {
                    crate::publish::check_kind(&source, kind, || env.engines.applier(&config))?;
                    let applier = env.engines.applier(&config)?;
                    if kind == Kind::Module {
                        crate::publish::check(&source, kind, applier.as_ref())?;
                    }
                    return self.show_noop(env, &source, kind, applier.as_ref());
                }
                let now_ms = env.unix_now_ms();
                let seq = self.seq.unwrap_or(now_ms);
                let show_progress = env.interactive && !self.quiet;
                // Every node would fail on these: refused before Transmission or Serf hears of
                // the payload, the check running while it is hashed and copied.
                let engines = env.engines.clone();
                // In stripes mode the roster is the members this node sees now (DESIGN 5.1).
                let broadcasting = self.sign_only.is_none();
                let stripes = config.site.transfer.mode == TransferMode::Stripes;
                // Stripes mode needs the members' view now; otherwise a Serf that cannot be
                // reached (a secret missing) is said after the payload's own checks, which are
                // what the operator must fix first, as before the early catch-up.
                let gossip = match (stripes, broadcasting) {
                    (true, _) => Some(env.engines.gossip(&config)?),
                    (false, true) => env.engines.gossip(&config).ok(),
                    (false, false) => None,
                };
                let view = match (&gossip, stripes) {
                    (Some(gossip), true) => Some(crate::publish::roster_view(gossip.as_ref())?),
                    _ => None,
                };
                // The clock catch-up (a join) runs while the payload is checked and hashed,
                // not between them and the broadcast.
                std::thread::scope(|scope| {
                    let clock = gossip.as_ref().filter(|_| broadcasting).map(|gossip| {
                        scope.spawn(|| {
                            crate::publish::catch_up_clock(gossip.as_ref(), &config.site.serf.join)
                        })
                    });
                    let prepared = prepare_checked(
                        &config,
                        &source,
                        Some(kind),
                        self.name.clone(),
                        seq,
                        now_ms / 1000,
                        || engines.torrent(&config),
                        show_progress,
                        &plan,
                        view.as_deref(),
                        || crate::publish::check_kind(&source, kind, || engines.applier(&config)),
                    );
                    caught_up = clock.is_some_and(|clock| clock.join().is_ok());
                    prepared
                })?
            }
            None => {
                let combined = combine(env, &self.with_sig)?;
                match &self.sign_only {
                    Some(_) => {
                        let config = Config::load(&self.config.resolve(env), None)?;
                        let key = crate::keys::read_secret(&config.site.agent.signing_key)?;
                        let mut combined = combined;
                        if combined.has_plan() {
                            // A co-signer signs the plan's digest too: the one beside the
                            // seeded payload, written by `submit --sign-only PATH`.
                            let hash = hex::encode(combined.info_hash());
                            let dir = &config.site.transmission.download_dir;
                            if let Some(plan) = crate::agent::runtime::intake::read_plan(dir, &hash)
                            {
                                combined.attach_plan(&plan);
                            }
                        }
                        Submitted::of(&combined.cosigned_by(&key)?)
                    }
                    None => Submitted::of(&combined),
                }
            }
        };
        if let Some(file) = &self.sign_only {
            let path = env.resolve(file);
            crate::fsutil::write_atomic(&path, format!("{}\n", submitted.wire).as_bytes(), 0o644)?;
            writeln!(
                env.stdout,
                "signed {} seq {} into {}; announce with `p2pu submit --with-sig` and the other signers' files",
                submitted.name,
                submitted.seq,
                path.display()
            )
            .map_err(Error::io("writing to", "standard output"))?;
            return Ok(Outcome::Success);
        }
        let config = Config::load(&self.config.resolve(env), Some(&MachineFacts::probe()))?;
        let gossip = env.engines.gossip(&config)?;
        let join = &config.site.serf.join;
        if !caught_up {
            crate::publish::catch_up_clock(gossip.as_ref(), join);
        }
        broadcast(gossip.as_ref(), &submitted)?;
        if !self.no_push {
            crate::publish::push(
                gossip.as_ref(),
                config.node_name.as_deref(),
                config.site.agent.seed_port,
                &submitted,
            );
        }
        let mut report = SubmitReport {
            name: submitted.name.clone(),
            seq: submitted.seq,
            info_hash: submitted.info_hash.clone(),
            wire: submitted.wire.clone(),
            rollout: None,
        };
        if !self.json {
            writeln!(env.stdout, "{submitted}")
                .map_err(Error::io("writing to", "standard output"))?;
        }
        let schedule = if self.once {
            &RESEND_AT[..1]
        } else {
            &RESEND_AT[..]
        };
        if !self.wait {
            resend(env, gossip.as_ref(), join, &submitted, schedule, self.quiet)?;
            if self.json {
                crate::cmd::emit(env, true, &report, |_| String::new())?;
            }
            return Ok(Outcome::Success);
        }
        let timeout = Duration::from_secs(self.timeout);
        let (mut rollout, verdict) = wait_for_rollout(
            env,
            gossip.as_ref(),
            join,
            &submitted,
            timeout,
            self.quiet,
            schedule,
        )?;
        rollout.outcome = Some(verdict.0);
        report.rollout = Some(rollout);
        if self.json {
            crate::cmd::emit(env, true, &report, |_| String::new())?;
        }
        if let Some(problem) = &verdict.1 {
            writeln!(env.stderr, "error: {problem}")
                .map_err(Error::io("writing to", "standard error"))?;
        }
        Ok(match verdict.0 {
            WaitOutcome::Applied => Outcome::Success,
            outcome => Outcome::Status(outcome.exit_code()),
        })
    }

    /// `--noop`: what the manifest would change on this node; nothing is seeded or sent.
    fn show_noop(
        &self,
        env: &mut Env,
        source: &Path,
        kind: Kind,
        applier: &dyn crate::engines::Applier,
    ) -> Result<Outcome> {
        let noop = crate::publish::noop(source, kind, applier)?;
        let report = NoopReport {
            path: source.to_path_buf(),
            changes: noop.changes,
            output: noop.output,
        };
        // Another report than submit's: documented apart (docs/json.md).
        env.command = "submit --noop".into();
        crate::cmd::emit(env, self.json, &report, |r| {
            let mut text = match r.changes.len() {
                0 => format!(
                    "{}: puppet apply --noop: nothing would change",
                    r.path.display()
                ),
                n => format!(
                    "{}: puppet apply --noop: {n} change(s) would be made:\n",
                    r.path.display()
                ),
            };
            for change in &r.changes {
                text.push_str(&format!("  {change}\n"));
            }
            if r.changes.is_empty() {
                text.push('\n');
            }
            text.push_str("nothing was broadcast\n");
            text
        })?;
        Ok(Outcome::Success)
    }
}

/// The announcement in signature files `files`, with all their signatures.
fn combine(env: &Env, files: &[PathBuf]) -> Result<Announcement> {
    let mut combined: Option<Announcement> = None;
    for file in files {
        let path = env.resolve(file);
        let text = std::fs::read_to_string(&path).map_err(Error::io("reading", &path))?;
        let signed = Announcement::decode(text.trim_end()).map_err(|e| {
            Error::Usage(format!(
                "{}: not a signature file from `p2pu submit --sign-only`: {e}",
                path.display()
            ))
        })?;
        match &mut combined {
            None => combined = Some(signed),
            Some(all) => all
                .combine(&signed)
                .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?,
        }
    }
    combined.ok_or_else(|| Error::Usage("--with-sig needs at least one file".into()))
}

/// How a rollout ended, and when not applied everywhere, what went wrong and what to do.
type Verdict = (WaitOutcome, Option<String>);

/// When `submit` sends an announcement, from the first send: Serf drops a user event older than
/// the moment a member (re)joined, so one sent just after a fleet-wide Serf restart (which a
/// config change through Puppet makes) reaches only some members. A later send carries a newer
/// Lamport time. Bounded: the nodes also ask the fleet when their Serf rejoins.
pub const RESEND_AT: [Duration; 5] = [
    Duration::ZERO,
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(20),
];

/// The alive members whose answer does not show `update` (or a newer seq of its name), the
/// silent ones included.
fn unaware(reports: &[MemberReport], update: &Submitted) -> Vec<String> {
    reports
        .iter()
        .filter(|r| r.alive)
        .filter(|r| {
            !r.updates.as_ref().is_some_and(|updates| {
                updates
                    .iter()
                    .any(|u| u.name == update.name && u.seq >= update.seq)
            })
        })
        .map(|r| r.node.clone())
        .collect()
}

/// Sends `update` again to `unaware` members; says so on stderr unless `quiet`. A failed re-send is only a warning:
/// the announcement went out once.
fn send_again(
    env: &mut Env,
    gossip: &dyn Gossip,
    update: &Submitted,
    unaware: &[String],
    quiet: bool,
) -> Result<()> {
    let line = match broadcast(gossip, update) {
        Ok(()) => format!(
            "re-sent {} seq {}: not seen yet by {}",
            update.name,
            update.seq,
            unaware.join(", ")
        ),
        Err(e) => format!(
            "warning: re-sending {}: {}",
            update.name,
            crate::error::chain(&e)
        ),
    };
    if !quiet {
        writeln!(env.stderr, "{line}").map_err(Error::io("writing to", "standard error"))?;
    }
    Ok(())
}

/// Without `--wait`: the re-sends of `schedule`, each only while some alive member has not
/// seen the update (asked with one status query); done at once in a fleet of nobody.
fn resend(
    env: &mut Env,
    gossip: &dyn Gossip,
    join: &[String],
    update: &Submitted,
    schedule: &[Duration],
    quiet: bool,
) -> Result<()> {
    let started = Instant::now();
    for at in schedule.iter().skip(1) {
        let alive = gossip.members().map_or(1, |members| {
            let alive =
                |m: &&crate::engines::Member| m.status == crate::engines::MemberStatus::Alive;
            members.iter().filter(alive).count()
        });
        if alive == 0 {
            return Ok(());
        }
        std::thread::sleep((started + *at).saturating_duration_since(Instant::now()));
        // Before asking who has it: a Serf that just restarted knows nobody yet, and would
        // find everyone it knows (itself) has it.
        crate::publish::catch_up_clock(gossip, join);
        let unaware = match fleet_status(
            gossip,
            Duration::from_secs(2),
            std::slice::from_ref(&update.name),
            env.unix_now(),
        ) {
            Ok(reports) => unaware(&reports, update),
            Err(e) => vec![format!(
                "(the status query failed: {})",
                crate::error::chain(&e)
            )],
        };
        if unaware.is_empty() {
            return Ok(());
        }
        send_again(env, gossip, update, &unaware, quiet)?;
    }
    Ok(())
}

fn wait_for_rollout(
    env: &mut Env,
    gossip: &dyn Gossip,
    join: &[String],
    update: &Submitted,
    timeout: Duration,
    quiet: bool,
    schedule: &[Duration],
) -> Result<(Rollout, Verdict)> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut resends = schedule.iter().skip(1).peekable();
    let mut last_line = String::new();
    loop {
        let resend_due = resends.next_if(|at| started.elapsed() >= **at).is_some();
        if resend_due {
            crate::publish::catch_up_clock(gossip, join);
        }
        let reports = fleet_status(
            gossip,
            Duration::from_secs(2),
            std::slice::from_ref(&update.name),
            env.unix_now(),
        )?;
        if resend_due {
            let unaware = unaware(&reports, update);
            if !unaware.is_empty() {
                send_again(env, gossip, update, &unaware, quiet)?;
            }
        }
        let tally = tally(&reports, update.seq);
        let line = format!(
            "{}/{} applied, {} failed, {} waiting",
            tally.applied.len(),
            tally.applied.len() + tally.failed.len() + tally.waiting.len(),
            tally.failed.len(),
            tally.waiting.len()
        );
        if line != last_line && !quiet {
            writeln!(env.stderr, "{line}").map_err(Error::io("writing to", "standard error"))?;
        }
        last_line = line;
        let verdict = rollout_verdict(update, &tally, Instant::now() >= deadline, timeout);
        if let Some(verdict) = verdict {
            return Ok((tally, verdict));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `None` while the rollout should be followed further. A halt ends the wait at once (the
/// members that hold will not move until `rollout resume`); a known failure outranks a
/// time-out.
fn rollout_verdict(
    update: &Submitted,
    tally: &Rollout,
    past_deadline: bool,
    timeout: Duration,
) -> Option<Verdict> {
    let failed_on = || {
        if tally.failed.is_empty() {
            String::new()
        } else {
            format!("; failed on: {}", tally.failed.join(", "))
        }
    };
    if !tally.halted.is_empty() {
        return Some((
            WaitOutcome::Halted,
            Some(
                format!(
                    "{} seq {}: the rollout halted (on: {}){}; `p2pu fleet status {}` says why, \
                 `p2pu rollout resume {}` goes on",
                    update.name,
                    update.seq,
                    tally.halted.join(", "),
                    failed_on(),
                    update.name,
                    update.name,
                ) + &reasons(tally),
            ),
        ));
    }
    if tally.waiting.is_empty() {
        if tally.failed.is_empty() {
            return Some((WaitOutcome::Applied, None));
        }
        return Some((
            WaitOutcome::Failed,
            Some(format!(
                "{} seq {} failed on: {}; `p2pu fleet status {}` shows more{}",
                update.name,
                update.seq,
                tally.failed.join(", "),
                update.name,
                reasons(tally)
            )),
        ));
    }
    if !past_deadline {
        return None;
    }
    let outcome = if tally.failed.is_empty() {
        WaitOutcome::TimedOut
    } else {
        WaitOutcome::Failed
    };
    Some((
        outcome,
        Some(
            format!(
                "timed out after {} s; still waiting for: {}{}; follow it with \
             `p2pu fleet status {}` or give a longer --timeout",
                timeout.as_secs(),
                tally.waiting.join(", "),
                failed_on(),
                update.name
            ) + &reasons(tally),
        ),
    ))
}

/// Each failed member's reason, one indented line each, for the error `--wait` prints.
fn reasons(tally: &Rollout) -> String {
    tally
        .failed
        .iter()
        .map(|node| {
            let reason = tally
                .reasons
                .get(node)
                .map_or("(no reason given)", String::as_str);
            format!("\n  {node}: {reason}")
        })
        .collect()
}

/// Where a rollout stands among the alive members.
fn tally(reports: &[MemberReport], seq: u64) -> Rollout {
    let mut tally = Rollout::default();
    for report in reports.iter().filter(|r| r.alive) {
        let update = report
            .updates
            .as_ref()
            .and_then(|u| u.iter().find(|u| u.seq == seq));
        let node = report.node.clone();
        let outcome = update.map(|u| u.status.rollout_outcome());
        match outcome {
            Some(RolloutOutcome::Applied) => tally.applied.push(node),
            Some(RolloutOutcome::Failed) => {
                if let Some(reason) = update.and_then(|u| u.reason.clone()) {
                    tally.reasons.insert(node.clone(), reason);
                }
                tally.failed.push(node);
            }
            Some(RolloutOutcome::Halted) => tally.halted.push(node),
            Some(RolloutOutcome::NotTargeted) => tally.not_targeted.push(node),
            Some(RolloutOutcome::Open) | None => tally.waiting.push(node),
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::runtime::state::Status;
    use crate::agent::runtime::status::{NodeStatus, UpdateStatus};
    use crate::cmd::testing::Run;
    use crate::engines::clients::Engines;
    use crate::engines::fake::{FakeApplier, FakeGossip, FakeTorrent};
    use crate::engines::MemberStatus;
    use std::sync::Arc;

    fn site_without_secrets(dir: &Path) {
        let d = dir.display();
        std::fs::write(
            dir.join("site.toml"),
            format!(
                "[transmission]\nrpc_password_file = \"{d}/no-such.secret\"\n\
                 [serf]\nrpc_auth_file = \"{d}/no-such-serf.secret\"\n\
                 [agent]\nsigning_key = \"{d}/no-such.key\"\n"
            ),
        )
        .unwrap();
    }

    #[test]
    fn a_missing_path_is_named_before_any_secret_is_read() {
        let dir = tempfile::tempdir().unwrap();
        site_without_secrets(dir.path());
        let argv = ["submit", "--config", "site.toml", "sitee.pp"];
        let (code, out, err) = crate::cmd::testing::run(dir.path(), &argv);
        assert_eq!((code, out.as_str()), (1, ""));
        assert!(
            err.contains("sitee.pp: no such file or directory; give the file or directory"),
            "{err}"
        );
        assert!(!err.contains("secret"), "{err}");
    }

    fn submitted() -> Submitted {
        Submitted {
            name: "site.pp".into(),
            seq: 7,
            info_hash: "00".repeat(20),
            wire: "p2pu1:x".into(),
        }
    }

    fn rollout(applied: &[&str], failed: &[&str], waiting: &[&str]) -> Rollout {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect();
        Rollout {
            applied: names(applied),
            failed: names(failed),
            waiting: names(waiting),
            reasons: BTreeMap::new(),
            ..Rollout::default()
        }
    }

    #[test]
    fn wait_exits_0_all_applied_1_failed_2_timed_out_3_halted_and_says_what_to_do() {
        let t = Duration::from_secs(9);
        let verdict = |r: &Rollout, late| rollout_verdict(&submitted(), r, late, t);
        assert_eq!(
            verdict(&rollout(&["a", "b"], &[], &[]), false),
            Some((WaitOutcome::Applied, None))
        );
        assert_eq!(verdict(&rollout(&["a"], &[], &["b"]), false), None);
        let mut elsewhere = rollout(&["a"], &[], &[]);
        elsewhere.not_targeted = vec!["b".into()];
        assert_eq!(
            verdict(&elsewhere, false).map(|v| v.0),
            Some(WaitOutcome::Applied),
            "a member the update is not for is not waited for"
        );

        let (outcome, text) = verdict(&rollout(&["a"], &["b"], &[]), false).unwrap();
        let text = text.unwrap();
        assert_eq!(outcome.exit_code(), 1);
        assert!(text.contains("failed on: b") && text.contains("p2pu fleet status site.pp"));
        assert!(text.ends_with("\n  b: (no reason given)"), "{text}");

        let (outcome, text) = verdict(&rollout(&["a"], &[], &["c"]), true).unwrap();
        let text = text.unwrap();
        assert_eq!(outcome.exit_code(), 2);
        assert!(
            text.contains("timed out after 9 s; still waiting for: c"),
            "{text}"
        );
        assert!(text.contains("longer --timeout"), "{text}");

        let (outcome, _) = verdict(&rollout(&[], &["b"], &["c"]), true).unwrap();
        assert_eq!(outcome.exit_code(), 1, "a failure outranks a timeout");

        // A halt ends the wait at once, before the deadline, and outranks the failures that
        // caused it.
        let mut halted = rollout(&["a"], &["b"], &["c"]);
        halted.halted = vec!["c".into()];
        halted.waiting.clear();
        let (outcome, text) = verdict(&halted, false).unwrap();
        assert_eq!(outcome.exit_code(), 3);
        let text = text.unwrap();
        assert!(
            text.contains("the rollout halted (on: c); failed on: b"),
            "{text}"
        );
        assert!(text.ends_with("\n  b: (no reason given)"), "{text}");
    }

    #[test]
    fn json_report_decodes_into_the_documented_struct_with_unknown_fields_denied() {
        let report = SubmitReport {
            name: "site.pp".into(),
            seq: 7,
            info_hash: "00".repeat(20),
            wire: "p2pu1:x".into(),
            rollout: Some(rollout(&["a"], &["b"], &[])),
        };
        let json = serde_json::to_string_pretty(&report).unwrap();
        assert_eq!(serde_json::from_str::<SubmitReport>(&json).unwrap(), report);
        let without_wait = SubmitReport {
            rollout: None,
            ..report
        };
        let json = serde_json::to_string(&without_wait).unwrap();
        assert!(!json.contains("rollout"), "{json}");
        let extra = json.replacen("\"seq\"", "\"surprise\":0,\"seq\"", 1);
        assert!(serde_json::from_str::<SubmitReport>(&extra).is_err());
    }

    /// A node whose key `keygen` made, with its download dir in `dir`, and fake engines.
    struct Node {
        dir: tempfile::TempDir,
        torrent: Arc<FakeTorrent>,
        gossip: Arc<FakeGossip>,
        applier: Arc<FakeApplier>,
    }

    fn node(gossip: FakeGossip) -> Node {
        node_with(gossip, FakeApplier::default())
    }

    fn node_with(gossip: FakeGossip, applier: FakeApplier) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let (code, _, err) = crate::cmd::testing::run(dir.path(), &["keygen", "--out", "k"]);
        assert_eq!(code, 0, "{err}");
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("site.toml"),
            format!(
                "[transmission]\ndownload_dir = \"{d}/downloads\"\nuser = \"root\"\n\
                 [agent]\nsigning_key = \"{d}/k/signing.key\"\nfleet_id = \"{FLEET}\"\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("site.pp"), "notice('hi')\n").unwrap();
        Node {
            dir,
            torrent: Arc::new(FakeTorrent::default()),
            gossip: Arc::new(gossip),
            applier: Arc::new(applier),
        }
    }

    impl Node {
        fn submit(&self, args: &[&str]) -> (i32, String, String) {
            self.submit_path("site.pp", args)
        }

        fn submit_path(&self, path: &str, args: &[&str]) -> (i32, String, String) {
            let engines = Engines::fakes()
                .torrent_engine(self.torrent.clone())
                .gossip_engine(self.gossip.clone())
                .applier_engine(self.applier.clone());
            let argv = ["submit", "--config", "site.toml", "--seq", "7", "--json"];
            let argv: Vec<&str> = argv.iter().chain(args).copied().chain([path]).collect();
            Run::new(self.dir.path()).engines(engines).run(&argv)
        }

        /// Neither Transmission nor Serf was asked anything.
        fn untouched(&self) -> bool {
            self.torrent.added().is_empty()
                && self.gossip.events().is_empty()
                && self.gossip.queries().is_empty()
        }
    }

    /// Puppet 7.23's answer to `puppet parser validate` of a resource missing a value.
    const PARSER_ERROR: &str = "Error: Could not parse for environment production: Syntax \
        error at '}' (file: /home/op/site.pp, line: 2, column: 32)\n";

    #[test]
    fn a_manifest_puppet_rejects_is_refused_with_its_error_line_before_any_engine() {
        let applier = FakeApplier {
            fail_with: Some(PARSER_ERROR.into()),
            ..FakeApplier::default()
        };
        let node = node_with(FakeGossip::default(), applier);
        let (code, out, err) = node.submit(&[]);
        assert_eq!((code, out.as_str()), (1, ""));
        assert!(
            err.contains(
                "site.pp: refused, nothing was broadcast: `puppet parser validate` \
                 rejects it: Error: Could not parse for environment production: Syntax error \
                 at '}' (site.pp:2)"
            ),
            "{err}"
        );
        assert!(node.untouched());
        let site = node.dir.path().join("site.pp");
        assert_eq!(node.applier.calls(), [("validate", site)]);
        // The check ran while the payload was hashed and copied for seeding: that copy is
        // gone again, and no completion mark lets the seed server serve it.
        let left: Vec<_> = std::fs::read_dir(node.dir.path().join("downloads"))
            .map(|dir| dir.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left in the download dir: {left:?}");
    }

    /// A bad targeting, wave, failure, wait or window value names its flag and value, exits 2
    /// as a usage error (issue 29: it exited 1), and nothing is validated, seeded or sent.
    #[test]
    fn bad_plan_flags_are_refused_naming_flag_and_value_before_any_engine() {
        for (flag, value) in [
            ("--target", "camera"),
            ("--target-name", "a b"),
            ("--target-nodes", "a,,b"),
            ("--waves", "1,50%"),
            ("--waves", "50%,10%,100%"),
            ("--max-failures", "1.5"),
            ("--wave-wait", "5d"),
            ("--health-check", "check --camera"),
            ("--max-failures", "150%"),
            ("--wave-wait", "5x"),
            ("--window", "Mon-Fri 2-4"),
        ] {
            let node = node(FakeGossip::default());
            let (code, out, err) = node.submit(&[flag, value]);
            assert_eq!((code, out.as_str()), (2, ""), "{flag} {value}: {err}");
            assert!(err.contains(&format!("{flag} {value:?}")), "{err}");
            assert!(node.untouched(), "{flag} {value}");
            assert!(node.applier.calls().is_empty(), "{flag} {value}");
        }
    }

    /// With a plan, the plan is written beside the metainfo and the announcement flagged and
    /// verifiable with it alone.
    #[test]
    fn a_targeted_update_writes_its_plan_and_signs_it() {
        let node = node(FakeGossip::default());
        let (code, _, err) = node.submit(&[
            "--target",
            "role=camera",
            "--waves",
            "1,100%",
            "--health-check",
            "/usr/local/bin/check --camera",
            "--health-check-timeout",
            "30",
        ]);
        assert_eq!(code, 0, "{err}");
        let events = node.gossip.events();
        let (event, wire, _) = &events[0];
        assert_eq!(event, "p2pu-update");
        let a = Announcement::decode(wire).unwrap();
        assert!(a.has_plan());
        let download = node.dir.path().join("downloads");
        let plan =
            std::fs::read(download.join(format!("{}.plan", hex::encode(a.info_hash())))).unwrap();
        let plan = crate::formats::plan::Plan::decode(&plan).unwrap();
        assert_eq!(
            plan.health_check(),
            Some((
                &["/usr/local/bin/check".to_string(), "--camera".to_string()][..],
                Some(30)
            ))
        );
        assert_eq!(plan.target.unwrap().to_text(), "tag:role=camera");
    }

    #[test]
    fn a_valid_manifest_is_validated_then_sent() {
        let node = node(FakeGossip::default());
        let (code, _, err) = node.submit(&[]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(node.applier.calls().len(), 1);
        assert_eq!(node.gossip.events().len(), 1);
    }

    #[test]
    fn noop_shows_what_would_change_and_sends_nothing() {
        let applier = FakeApplier {
            output: "Notice: Compiled catalog for vm in environment production in 0.01 seconds\n\
                Notice: /Stage[main]/Main/File[/etc/motd]/content: current_value '{md5}1', \
                should be '{md5}2' (noop)\n\
                Notice: Class[Main]: Would have triggered 'refresh' from 1 event\n\
                Notice: Applied catalog in 0.02 seconds\n"
                .into(),
            ..FakeApplier::default()
        };
        let node = node_with(FakeGossip::default(), applier);
        let site = node.dir.path().join("site.pp");
        let engines = Engines::fakes().applier_engine(node.applier.clone());
        let argv = ["submit", "--config", "site.toml", "--noop", "site.pp"];
        let (code, out, err) = Run::new(node.dir.path()).engines(engines).run(&argv);
        assert_eq!((code, err.as_str()), (0, ""));
        assert_eq!(
            out,
            format!(
                "{}: puppet apply --noop: 1 change(s) would be made:\n  \
                 /Stage[main]/Main/File[/etc/motd]/content: current_value '{{md5}}1', should be \
                 '{{md5}}2' (noop)\nnothing was broadcast\n",
                site.display()
            )
        );
        assert_eq!(
            node.applier.calls(),
            [("validate", site.clone()), ("noop", site)]
        );
        assert!(node.untouched());
        let (code, out, _) = node.submit(&["--noop"]);
        assert_eq!(code, 0);
        let departures =
            crate::cmd::json::departures("submit --noop", &serde_json::from_str(&out).unwrap());
        assert!(departures.is_empty(), "docs/json.md: {departures:?}");
        let report: NoopReport = crate::cmd::json::decode(out.as_bytes()).unwrap();
        assert_eq!(report.changes.len(), 1);
        assert!(node.untouched());
    }

    #[test]
    fn noop_of_something_else_than_a_manifest_is_refused() {
        let node = node(FakeGossip::default());
        std::fs::write(node.dir.path().join("blob.bin"), b"x").unwrap();
        let (code, _, err) = node.submit_path("blob.bin", &["--noop"]);
        assert_eq!(code, 1);
        assert!(err.contains("--noop needs a manifest"), "{err}");
        assert!(node.untouched());
    }

    #[test]
    fn a_module_archive_without_a_name_and_version_is_refused_before_any_engine() {
        let node = node(FakeGossip::default());
        let path = node.dir.path().join("ntp.tar.gz");
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        let mut tar = tar::Builder::new(gz);
        let metadata = br#"{"name": "acme-ntp"}"#;
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(metadata.len() as u64);
        tar.append_data(&mut header, "acme-ntp-1.0.0/metadata.json", &metadata[..])
            .unwrap();
        tar.into_inner().unwrap().finish().unwrap();
        let (code, _, err) = node.submit_path("ntp.tar.gz", &[]);
        assert_eq!(code, 1);
        assert!(
            err.contains("ntp.tar.gz: acme-ntp-1.0.0/metadata.json has no `version`"),
            "{err}"
        );
        assert!(node.untouched());
        assert!(node.applier.calls().is_empty());
    }

    const FLEET: &str = "0123456789abcdef";

    /// 2-of-n: the announcing host signs with --sign-only (seeding the payload), a co-signer
    /// signs that file with its own key, and --with-sig announces both signatures at once.
    #[test]
    fn sign_only_and_with_sig_combine_signatures_and_broadcast_once() {
        let node = node(FakeGossip::default());
        let run = |args: &[&str]| {
            let engines = Engines::fakes()
                .torrent_engine(node.torrent.clone())
                .gossip_engine(node.gossip.clone())
                .applier_engine(node.applier.clone());
            Run::new(node.dir.path()).engines(engines).run(args)
        };
        let (code, out, err) = run(&[
            "submit",
            "--config",
            "site.toml",
            "--seq",
            "7",
            "site.pp",
            "--sign-only",
            "a.sig",
        ]);
        assert_eq!((code, err.as_str()), (0, ""), "{out}");
        assert!(out.contains("into"), "{out}");
        assert!(node.gossip.events().is_empty(), "--sign-only sends nothing");
        assert_eq!(node.torrent.added().len(), 1, "but seeds the payload");

        let (code, _, err) = crate::cmd::testing::run(node.dir.path(), &["keygen", "--out", "k2"]);
        assert_eq!(code, 0, "{err}");
        let d = node.dir.path().display();
        std::fs::write(
            node.dir.path().join("cosigner.toml"),
            format!("[agent]\nsigning_key = \"{d}/k2/signing.key\"\nfleet_id = \"{FLEET}\"\n"),
        )
        .unwrap();
        let (code, out, err) = run(&[
            "submit",
            "--config",
            "cosigner.toml",
            "--sign-only",
            "b.sig",
            "--with-sig",
            "a.sig",
        ]);
        assert_eq!((code, err.as_str()), (0, ""), "{out}");
        let a = std::fs::read_to_string(node.dir.path().join("a.sig")).unwrap();
        let b = std::fs::read_to_string(node.dir.path().join("b.sig")).unwrap();
        let (a, b) = (
            Announcement::decode(a.trim_end()).unwrap(),
            Announcement::decode(b.trim_end()).unwrap(),
        );
        assert_eq!(a.signed_bytes(), b.signed_bytes());
        assert_ne!(
            a.kids(),
            b.kids(),
            "b.sig carries the co-signer's key alone"
        );

        let (code, out, err) = run(&[
            "submit",
            "--config",
            "site.toml",
            "--json",
            "--with-sig",
            "a.sig",
            "b.sig",
        ]);
        assert_eq!((code, err.as_str()), (0, ""), "{out}");
        let report: SubmitReport = crate::cmd::json::decode(out.as_bytes()).unwrap();
        let sent = Announcement::decode(&report.wire).unwrap();
        assert_eq!(sent.kids().len(), 2);
        let wire = report.wire.into_bytes();
        assert_eq!(node.gossip.events(), [("p2pu-update".into(), wire, false)]);

        // Another announcement's signature does not combine with these.
        let (code, _, err) = run(&[
            "submit",
            "--config",
            "site.toml",
            "--seq",
            "8",
            "site.pp",
            "--sign-only",
            "c.sig",
        ]);
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = run(&[
            "submit",
            "--config",
            "site.toml",
            "--with-sig",
            "a.sig",
            "c.sig",
        ]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("cannot be combined"), "{err}");
    }

    #[test]
    fn submit_seeds_the_copy_and_broadcasts_the_signed_wire_uncoalesced() {
        let node = node(FakeGossip::default());
        let (code, out, err) = node.submit(&[]);
        assert_eq!((code, err.as_str()), (0, ""));
        let report: SubmitReport = crate::cmd::json::decode(out.as_bytes()).unwrap();
        assert_eq!((report.name.as_str(), report.seq), ("site.pp", 7));
        assert!(report.wire.starts_with("p2pu2:"), "{}", report.wire);
        let signed = Announcement::decode(&report.wire).unwrap();
        let binding = signed.binding().unwrap();
        assert_eq!(binding.fleet.to_string(), FLEET);
        // 30 days (the default agent.announcement_ttl_days) from now.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let ttl = 30 * 86_400;
        assert!((now - 60 + ttl..=now + ttl).contains(&binding.expires));
        let seed_dir = node.dir.path().join("downloads").join(&report.info_hash);
        let added = node.torrent.added();
        assert_eq!(added.len(), 1);
        assert_eq!(added[0].download_dir, Some(seed_dir.clone()));
        assert!(!added[0].paused, "seeding starts at once");
        let mark = node
            .dir
            .path()
            .join(format!("downloads/{}.torrent", report.info_hash));
        assert_eq!(
            std::fs::read(mark).unwrap(),
            added[0].metainfo,
            "the completion mark"
        );
        assert_eq!(
            std::fs::read(seed_dir.join("site.pp")).unwrap(),
            b"notice('hi')\n"
        );
        let wire = report.wire.into_bytes();
        assert_eq!(node.gossip.events(), [("p2pu-update".into(), wire, false)]);
        assert!(
            node.gossip.queries().is_empty(),
            "no --wait, no rollout asked"
        );
    }

    fn knows(node: &str, seq: u64) -> (String, String) {
        let status = NodeStatus {
            node: node.into(),
            omitted: 0,
            heartbeat: None,
            now_ms: None,
            version: None,
            updates: vec![UpdateStatus {
                name: "site.pp".into(),
                seq,
                status: Status::Pending,
                reason: None,
                at: 1,
                bad_sources: Vec::new(),
                sources: Vec::new(),
                stripes: Vec::new(),
                attempts: 0,
            }],
        };
        (node.to_string(), serde_json::to_string(&status).unwrap())
    }

    fn fleet_of_two(answers: Vec<(String, String)>) -> FakeGossip {
        FakeGossip {
            members: vec![
                FakeGossip::member("a", MemberStatus::Alive),
                FakeGossip::member("b", MemberStatus::Alive),
                FakeGossip::member("gone", MemberStatus::Failed),
            ],
            answers,
            ..FakeGossip::default()
        }
    }

    /// Serf drops events around a restart: the announcement goes out again while an alive
    /// member has not seen it (b, silent here, or one that holds an older seq), and no more
    /// once every alive one has it (a failed member is not waited for).
    #[test]
    fn the_announcement_is_re_sent_while_an_alive_member_has_not_seen_it() {
        let dir = tempfile::tempdir().unwrap();
        let ms = Duration::from_millis;
        let schedule = [Duration::ZERO, ms(1), ms(2), ms(3)];
        let gossip = fleet_of_two(vec![knows("a", 7), knows("b", 6)]);
        let (mut env, _, err) = Env::capture(dir.path(), b"");
        resend(&mut env, &gossip, &[], &submitted(), &schedule, false).unwrap();
        assert_eq!(gossip.events().len(), 3, "one per re-send");
        // Each send first joins the alive members: a Serf that just restarted would send
        // with a clock the members that rejoined meanwhile ignore.
        let joins = gossip.joins.lock().unwrap().clone();
        assert_eq!(joins, vec![vec!["10.0.0.1:7946".to_string(); 2]; 3]);
        // A member joining for the clock must not raise its minimum event time: the events
        // members sent before they heard of it would be lost here (JoinEvents::IgnoreOld).
        let modes = gossip.join_events.lock().unwrap().clone();
        assert_eq!(modes, vec![crate::engines::JoinEvents::Replay; 3]);
        assert_eq!(gossip.queries().len(), 3);
        assert!(
            err.text()
                .contains("re-sent site.pp seq 7: not seen yet by b\n"),
            "{}",
            err.text()
        );
        let gossip = fleet_of_two(vec![knows("a", 7), knows("b", 8)]);
        let (mut env, _, _) = Env::capture(dir.path(), b"");
        resend(&mut env, &gossip, &[], &submitted(), &schedule, false).unwrap();
        assert!(gossip.events().is_empty(), "everyone has it (or newer)");
        assert_eq!(gossip.queries().len(), 1);
    }

    /// `--once`: one send, nobody asked, whoever has not seen it.
    #[test]
    fn submit_once_sends_the_announcement_once() {
        let node = node(fleet_of_two(Vec::new()));
        let (code, _, err) = node.submit(&["--once"]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(node.gossip.events().len(), 1);
        assert!(node.gossip.queries().is_empty());
    }

    #[test]
    fn submit_wait_follows_the_rollout_and_exits_1_naming_who_failed_or_reverted() {
        let answer = |node: &str, status: Status| {
            let updates = vec![UpdateStatus {
                name: "site.pp".into(),
                seq: 7,
                status,
                reason: match status {
                    Status::Failed => Some("Error: Could not find class ::nope (site.pp:1)".into()),
                    Status::Reverted => Some(
                        "reverted to seq 6: health check `/usr/local/bin/check` exited 1: \
                         camera down"
                            .into(),
                    ),
                    _ => None,
                },
                at: 1,
                bad_sources: Vec::new(),
                sources: Vec::new(),
                stripes: Vec::new(),
                attempts: 3,
            }];
            let status = NodeStatus {
                node: node.into(),
                omitted: 0,
                heartbeat: None,
                now_ms: None,
                version: None,
                updates,
            };
            (node.to_string(), serde_json::to_string(&status).unwrap())
        };
        let node = node(FakeGossip {
            members: vec![
                FakeGossip::member("a", MemberStatus::Alive),
                FakeGossip::member("b", MemberStatus::Alive),
                FakeGossip::member("c", MemberStatus::Alive),
            ],
            answers: vec![
                answer("a", Status::Applied),
                answer("b", Status::Failed),
                answer("c", Status::Reverted),
            ],
            ..FakeGossip::default()
        });
        // A short timeout: a member whose revert was not counted would be waited for.
        let (code, out, err) = node.submit(&["--wait", "--quiet", "--timeout", "2"]);
        assert_eq!(code, 1, "{err}");
        let departures =
            crate::cmd::json::departures("submit", &serde_json::from_str(&out).unwrap());
        assert!(departures.is_empty(), "docs/json.md: {departures:?}");
        let report: SubmitReport = crate::cmd::json::decode(out.as_bytes()).unwrap();
        let cause = "Error: Could not find class ::nope (site.pp:1)";
        let reverted =
            "reverted to seq 6: health check `/usr/local/bin/check` exited 1: camera down";
        let mut want = rollout(&["a"], &["b", "c"], &[]);
        want.reasons.insert("b".into(), cause.into());
        want.reasons.insert("c".into(), reverted.into());
        want.outcome = Some(WaitOutcome::Failed);
        assert_eq!(report.rollout, Some(want));
        assert_eq!(
            err,
            format!(
                "error: site.pp seq 7 failed on: b, c; `p2pu fleet status site.pp` shows more\n  \
                 b: {cause}\n  c: {reverted}\n"
            )
        );
        assert_eq!(node.gossip.queries(), ["p2pu-status"]);
    }
}
