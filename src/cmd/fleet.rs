//! `p2pu fleet status`: asks every member (a Serf query answered by each node's handler from
//! its state dir) which updates it applied, and shows who failed and who did not answer, with
//! each member's address, p2pu version and the age of its newest update. Exits
//! [`exit::FAILED`] or [`exit::INCOMPLETE`] so scripts need not parse the table. `--watch`
//! asks again every `--interval` and redraws a node x update table until the newest rollout
//! settles ([`is_settled`]), or prints a [`WatchFrame`] per refresh with `--json`.
//!
//! `p2pu fleet serve`: runs the fleet dashboard (`crate::dashboard`) until SIGTERM/SIGINT,
//! after deciding where its token comes from (`dashboard::token_source`) and, with
//! `--allow-actions`, checking this node holds its signing key.

use crate::agent::runtime::state::{RolloutOutcome, Status};
use crate::agent::runtime::status::{fleet_status, MemberReport, MAX_ASKED_NAMES};
pub use crate::agent::runtime::status::{is_settled, newest_rollout, RolloutId};
use crate::cmd::{exit, ConfigArg, Outcome};
use crate::config::{Config, MachineFacts};
use crate::dashboard::{self, Dashboard, Options};
use crate::engines::Gossip;
use crate::error::{Error, Result};
use crate::Env;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, clap::Subcommand)]
pub enum Fleet {
    /// Which members applied which update, which failed, which did not answer.
    Status(FleetStatus),
    /// Serve a live web page of the fleet (loopback by default; read-only unless
    /// --allow-actions).
    Serve(FleetServe),
}

impl Fleet {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        match self {
            Fleet::Status(c) => c.run(env),
            Fleet::Serve(c) => c.run(env),
        }
    }
}

/// The most bytes of names one status query carries (Serf's limit is 1024 with the query's
/// name and framing).
const MAX_NAMES_BYTES: usize = 900;

/// Which members applied which update, which failed, which did not answer.
///
/// Exits 0 when every member answered and nothing failed, 3 when some member's update failed,
/// 4 when none failed but some member did not answer. On a terminal, failures and silent
/// members are coloured, unless NO_COLOR is set (or --plain).
#[derive(Debug, clap::Args)]
pub struct FleetStatus {
    /// Only these update names: each member answers with these alone, so none is left out
    /// of a long answer.
    #[arg(value_name = "NAME")]
    names: Vec<String>,
    #[command(flatten)]
    config: ConfigArg,
    /// How long to wait for answers, in seconds.
    #[arg(long, default_value_t = 3.0)]
    timeout: f64,
    /// Print JSON instead of a table (with --watch: one WatchFrame per refresh, one per line).
    #[arg(long)]
    json: bool,
    /// Redraw a node x update table until the newest rollout (of NAME, when given) settles:
    /// every alive member applied, failed, reverted it, or holds it halted or not targeted.
    /// Ctrl-C stops it sooner.
    #[arg(long)]
    watch: bool,
    /// With --watch: seconds between refreshes.
    #[arg(long, default_value_t = 2.0, requires = "watch")]
    interval: f64,
    /// A table for scripts: no colour and no header line (colour is only ever on a terminal,
    /// and never with NO_COLOR set; p2pu does not page its output).
    #[arg(long, conflicts_with = "json")]
    plain: bool,
    /// Only members whose name matches one of these globs (`cam-*,door-?`; `*` any run, `?`
    /// one character; at most 16 globs of 128 characters). The exit status is theirs.
    #[arg(long, value_name = "GLOB,...")]
    node: Option<String>,
}

/// One refresh of `p2pu fleet status --watch --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchFrame {
    /// The rollout followed: the newest update (of NAME, when given) any member reports;
    /// `None` while there is none.
    pub rollout: Option<RolloutId>,
    /// Whether every alive member settled it; the last frame is the first settled one.
    pub settled: bool,
    pub members: Vec<MemberReport>,
}

impl FleetStatus {
    /// The members `--node` names (all without it).
    fn selected(&self, reports: Vec<MemberReport>) -> Vec<MemberReport> {
        let Some(globs) = self
            .node
            .as_deref()
            .and_then(|t| crate::formats::control::parse_nodes(t).ok())
        else {
            return reports;
        };
        reports
            .into_iter()
            .filter(|r| {
                globs
                    .iter()
                    .any(|g| crate::formats::plan::glob_match(g, &r.node))
            })
            .collect()
    }

    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let config = Config::load(&self.config.resolve(env), None)?;
        let gossip = env.engines.gossip(&config)?;
        let timeout = Duration::try_from_secs_f64(self.timeout).map_err(|_| {
            Error::Usage(format!(
                "--timeout {}: not a duration in seconds",
                self.timeout
            ))
        })?;
        // Refused before anything is asked; bounded, so matching costs little.
        if let Some(text) = &self.node {
            crate::formats::control::parse_nodes(text).map_err(|e| match e {
                crate::formats::control::ControlError::BadNodes { text, reason } => {
                    Error::BadArgument(format!(
                        "--node {text:?}: {reason}; give member-name globs such as cam-*,door-1"
                    ))
                }
                other => Error::BadArgument(format!("--node: {other}")),
            })?;
        }
        if self.watch {
            return self.watch(env, gossip.as_ref(), timeout);
        }
        for name in &self.names {
            crate::formats::announcement::validate_name(name)
                .map_err(|e| Error::BadArgument(format!("NAME {name:?}: {e}")))?;
        }
        // Serf refuses a query over 1024 bytes, its name included.
        let asked = self.names.iter().map(|n| n.len() + 1).sum::<usize>();
        if asked > MAX_NAMES_BYTES || self.names.len() > MAX_ASKED_NAMES {
            return Err(Error::BadArgument(format!(
                "{} names ({asked} bytes): a status query carries at most {MAX_ASKED_NAMES} \
                 names in {MAX_NAMES_BYTES} bytes; ask for fewer at a time",
                self.names.len()
            )));
        }
        let reports = self.selected(fleet_status(
            gossip.as_ref(),
            timeout,
            &self.names,
            env.unix_now(),
        )?);
        let (color, plain) = (env.color && !self.plain, self.plain);
        crate::cmd::emit(env, self.json, &reports, |r| {
            let text = table(r, color);
            match plain {
                // The header is the first line.
                true => text
                    .split_once('\n')
                    .map_or(text.clone(), |(_, rows)| rows.to_string()),
                false => text,
            }
        })?;
        Ok(match verdict(&reports) {
            exit::OK => Outcome::Success,
            code => Outcome::Status(code),
        })
    }
}

impl FleetStatus {
    /// `--watch`: asks the fleet every --interval until the newest rollout settles; exits as
    /// without --watch, on the last answers.
    fn watch(&self, env: &mut Env, gossip: &dyn Gossip, timeout: Duration) -> Result<Outcome> {
        let interval = Duration::try_from_secs_f64(self.interval).map_err(|_| {
            Error::Usage(format!(
                "--interval {}: not a duration in seconds",
                self.interval
            ))
        })?;
        loop {
            let reports =
                self.selected(fleet_status(gossip, timeout, &self.names, env.unix_now())?);
            let rollout = newest_rollout(&reports);
            let settled = rollout.as_ref().is_some_and(|r| is_settled(&reports, r));
            let text = if self.json {
                let frame = WatchFrame {
                    rollout: rollout.clone(),
                    settled,
                    members: reports.clone(),
                };
                crate::cmd::json::render_line("fleet status --watch", &frame)?
            } else {
                // On a terminal the table is redrawn in place; elsewhere each follows the last.
                let clear = if env.color { "\x1b[H\x1b[2J" } else { "\n" };
                let table = matrix(&reports, rollout.as_ref(), settled, env.color);
                format!("{clear}{table}")
            };
            env.stdout
                .write_all(text.as_bytes())
                .and_then(|()| env.stdout.flush())
                .map_err(Error::io("writing to", "standard output"))?;
            if settled {
                return Ok(match verdict(&reports) {
                    exit::OK => Outcome::Success,
                    code => Outcome::Status(code),
                });
            }
            std::thread::sleep(interval);
        }
    }
}

/// The `--watch` table: a row per member, a column per update name (the newest first), each
/// cell the member's status of its newest seq of that name; then the reasons of the members
/// where the followed rollout failed.
fn matrix(
    reports: &[MemberReport],
    rollout: Option<&RolloutId>,
    settled: bool,
    color: bool,
) -> String {
    const COLUMNS: usize = 5;
    let paint = |text: String, status: Status| {
        let code = match status.rollout_outcome() {
            RolloutOutcome::Applied => GREEN,
            RolloutOutcome::Failed | RolloutOutcome::Halted => RED,
            RolloutOutcome::NotTargeted => "",
            RolloutOutcome::Open => YELLOW,
        };
        if color && !code.is_empty() {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text
        }
    };
    let mut names: Vec<(u64, &str)> = Vec::new();
    for u in reports.iter().filter_map(|r| r.updates.as_ref()).flatten() {
        match names.iter_mut().find(|(_, n)| *n == u.name) {
            Some(entry) => entry.0 = entry.0.max(u.seq),
            None => names.push((u.seq, &u.name)),
        }
    }
    names.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    names.truncate(COLUMNS);
    let mut out = match rollout {
        None => "no update yet; watching (Ctrl-C to stop)\n".to_string(),
        Some(r) => {
            let (mut done, mut failed, mut waiting) = (0, 0, 0);
            for report in reports.iter().filter(|m| m.alive) {
                let status = report
                    .updates
                    .iter()
                    .flatten()
                    .find(|u| u.name == r.name && u.seq == r.seq)
                    .map(|u| u.status.rollout_outcome());
                match status {
                    Some(RolloutOutcome::Failed | RolloutOutcome::Halted) => failed += 1,
                    Some(RolloutOutcome::Open) | None => waiting += 1,
                    Some(_) => done += 1,
                }
            }
            let state = if settled {
                "settled"
            } else {
                "watching (Ctrl-C to stop)"
            };
            format!(
                "{} seq {}: {done} done, {failed} failed, {waiting} waiting; {state}\n",
                r.name, r.seq
            )
        }
    };
    let mut header = format!("{:<20}", "NODE");
    for (_, name) in &names {
        header.push_str(&format!(" {:<14}", truncate(name, 14)));
    }
    out.push_str(header.trim_end());
    out.push('\n');
    for report in reports {
        let mut row = format!("{:<20}", truncate(&report.node, 20));
        match &report.updates {
            None if !report.alive => row.push_str(" (not alive)"),
            None => row.push_str(" (no answer)"),
            Some(updates) => {
                for (_, name) in &names {
                    let cell = updates.iter().find(|u| u.name == *name);
                    row.push(' ');
                    match cell {
                        Some(u) => {
                            row.push_str(&paint(format!("{:<14}", u.status.as_str()), u.status))
                        }
                        None => row.push_str(&format!("{:<14}", "-")),
                    }
                }
            }
        }
        out.push_str(row.trim_end());
        out.push('\n');
    }
    if let Some(r) = rollout {
        for report in reports {
            let failed = report.updates.iter().flatten().find(|u| {
                u.name == r.name
                    && u.seq == r.seq
                    && u.status.rollout_outcome() == RolloutOutcome::Failed
            });
            if let Some(u) = failed {
                let reason = u.reason.as_deref().unwrap_or("(no reason given)");
                out.push_str(&format!("  {}: {reason}\n", report.node));
            }
        }
    }
    out
}

/// At most `max` characters of `text`.
fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// The exit status for these reports: failures first, then silence.
pub fn verdict(reports: &[MemberReport]) -> i32 {
    let failed = reports.iter().any(|r| {
        r.updates
            .iter()
            .flatten()
            .any(|u| u.status.rollout_outcome() == RolloutOutcome::Failed)
    });
    if failed {
        exit::FAILED
    } else if reports.iter().any(|r| r.updates.is_none()) {
        exit::INCOMPLETE
    } else {
        exit::OK
    }
}

fn table(reports: &[MemberReport], color: bool) -> String {
    let paint = |text: String, code: &str| {
        if color && !code.is_empty() {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text
        }
    };
    let mut out = format!(
        "{:<20} {:<21} {:<6} {:<12} {:>7} {:<24} {:>14} {:<8} {}\n",
        "NODE", "ADDRESS", "ALIVE", "VERSION", "NEWEST", "NAME", "SEQ", "STATUS", "REASON"
    );
    for r in reports {
        let alive = if r.alive {
            paint(format!("{:<6}", "yes"), "")
        } else {
            paint(format!("{:<6}", "no"), RED)
        };
        // The package version only: the commit and date make the column too wide.
        let version = r
            .version
            .as_deref()
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or("-");
        // How long ago this member's newest update changed: a frozen node shows here.
        let newest = r.newest_age_secs.map_or_else(|| "-".to_string(), age);
        let head = format!(
            "{:<20} {:<21} {alive} {:<12} {:>7}",
            r.node, r.addr, version, newest
        );
        if !r.tags.is_empty() {
            let tags: Vec<String> = r.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("{:<20} tags: {}\n", r.node, tags.join(" ")));
        }
        match &r.updates {
            None => out.push_str(&format!("{head} {}\n", paint("(no answer)".into(), YELLOW))),
            Some(updates) if updates.is_empty() => out.push_str(&format!("{head} (no updates)\n")),
            Some(updates) => {
                for u in updates {
                    let mut reason = u.reason.clone().unwrap_or_default();
                    if u.attempts > 1 {
                        reason = format!("[{} attempts] {reason}", u.attempts);
                    }
                    let code = match u.status {
                        Status::Applied => GREEN,
                        Status::Failed | Status::Halted | Status::Reverted => RED,
                        _ => YELLOW,
                    };
                    out.push_str(&format!(
                        "{head} {:<24} {:>14} {} {}\n",
                        u.name,
                        u.seq,
                        paint(format!("{:<8}", u.status.as_str()), code),
                        reason.trim_end()
                    ));
                    for line in crate::agent::runtime::status::stripe_lines(&u.stripes) {
                        out.push_str(&format!("{:<20}   {line}\n", r.node));
                    }
                    for bad in &u.bad_sources {
                        let warning = format!(
                            "  ! {bad} sent {} bad pieces of {}: a lying or compromised member",
                            r.node, u.name
                        );
                        out.push_str(&paint(warning, RED));
                        out.push('\n');
                    }
                }
            }
        }
        if r.omitted > 0 {
            out.push_str(&format!(
                "{:<20} ... and {} older update name(s) left out of its answer; ask for them \
                 by name: p2pu fleet status NAME...\n",
                r.node, r.omitted
            ));
        }
        if let Some(heartbeat) = r.heartbeat.as_ref().filter(|h| !h.is_fresh()) {
            let warning = format!("  ! {}: {}", r.node, heartbeat.short());
            out.push_str(&paint(warning, RED));
            out.push('\n');
        }
    }
    out.push_str(&halted_summary(reports));
    out
}

/// One line per rollout that halted somewhere: which update, on how many members, and why
/// (the first halted member's reason).
fn halted_summary(reports: &[MemberReport]) -> String {
    let mut halted: std::collections::BTreeMap<(String, u64), (usize, String)> = Default::default();
    for u in reports.iter().flat_map(|r| r.updates.iter().flatten()) {
        if u.status == Status::Halted {
            let entry = halted
                .entry((u.name.clone(), u.seq))
                .or_insert_with(|| (0, u.reason.clone().unwrap_or_default()));
            entry.0 += 1;
        }
    }
    halted
        .into_iter()
        .map(|((name, seq), (count, why))| {
            format!("rollout {name} seq {seq} HALTED on {count} member(s): {why}\n")
        })
        .collect()
}

/// SGR colours for the table on a terminal.
const RED: &str = "31";
const GREEN: &str = "32";
const YELLOW: &str = "33";

/// An age in the largest whole unit: `45s`, `12m`, `5h`, `3d`.
fn age(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        7200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// Serve a live web page of the fleet: the node x update matrix, the newest rollout, the
/// transfer, one node's history and logs.
///
/// Read-only unless --allow-actions. Listens on loopback unless told otherwise; any other
/// address requires a token (printed once, or read from --token-file).
#[derive(Debug, clap::Args)]
pub struct FleetServe {
    #[command(flatten)]
    config: ConfigArg,
    /// Address and port to listen on.
    #[arg(long, env = "P2PU_DASHBOARD_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Read the token from this file instead of making one (at least 16 characters).
    #[arg(long, env = "P2PU_DASHBOARD_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Show abort, resume, retry and revert buttons that send signed control statements with this
    /// node's signing key, like `p2pu rollout` (each asks for confirmation). Needs a token
    /// even on loopback: another local user must not sign with the operator's key.
    #[arg(long)]
    allow_actions: bool,
    /// Seconds between asking the fleet.
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
    /// How long each query waits for answers, in seconds.
    #[arg(long, default_value_t = 3.0)]
    timeout: f64,
    /// Log filter (tracing env-filter syntax; also P2PU_LOG).
    #[arg(long, env = "P2PU_LOG", default_value = crate::daemon::DEFAULT_LOG)]
    log: String,
}

fn seconds(flag: &str, value: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero() || flag == "--timeout")
        .ok_or_else(|| Error::Usage(format!("{flag} {value}: not a duration in seconds")))
}

impl FleetServe {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let interval = seconds("--interval", self.interval)?;
        let timeout = seconds("--timeout", self.timeout)?;
        crate::daemon::init_logging(&self.log)?;
        let config = Config::load(&self.config.resolve(env), Some(&MachineFacts::probe()))?;
        let gossip = env.engines.gossip(&config)?;
        let token =
            dashboard::token_source(self.listen, self.token_file.as_deref(), self.allow_actions)?;
        let actions: Option<Arc<dashboard::ActionFn>> = if self.allow_actions {
            // Refused now, not at the first click: without the key no action could be signed.
            crate::keys::read_secret(&config.site.agent.signing_key)?;
            config.fleet_id()?;
            let (config, gossip) = (config.clone(), gossip.clone());
            Some(Arc::new(move |action, name: &str, seq| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let control = crate::publish::send_control(
                    &config,
                    gossip.as_ref(),
                    action,
                    name,
                    seq,
                    now,
                    Vec::new(),
                    // A revert from the page goes back to the last good version before seq.
                    None,
                )?;
                Ok(format!(
                    "sent {} of {} seq {} to every node",
                    control.action.as_str(),
                    name,
                    seq
                ))
            }))
        } else {
            None
        };
        let stop = crate::daemon::stop_on_signals()?;
        let server = Dashboard::start(
            gossip,
            Options {
                listen: self.listen,
                token: token.token().map(str::to_string),
                interval,
                timeout,
                actions,
            },
        )?;
        let addr = server.addr();
        let mut said = String::new();
        if !addr.ip().is_loopback() {
            said.push_str(&format!(
                "p2pu: listening on {addr}, beyond loopback: every request needs the token\n"
            ));
        }
        if self.allow_actions {
            said.push_str(
                "p2pu: --allow-actions: abort, resume, retry and revert are signed with this node's key\n",
            );
        }
        let url = match &token {
            dashboard::TokenSource::Made(t) => format!(
                "http://{addr}/?token={t}\n(the token is shown only this once; give --token-file to choose one)\n"
            ),
            dashboard::TokenSource::File(_) => format!("http://{addr}/?token=<the token in the token file>\n"),
            dashboard::TokenSource::None => format!("http://{addr}/\n"),
        };
        env.stderr
            .write_all(said.as_bytes())
            .map_err(Error::io("writing to", "standard error"))?;
        env.stdout
            .write_all(url.as_bytes())
            .and_then(|()| env.stdout.flush())
            .map_err(Error::io("writing to", "standard output"))?;
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
        }
        drop(server);
        Ok(Outcome::Success)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::runtime::state::Status;
    use crate::agent::runtime::status::{NodeStatus, UpdateStatus};
    use crate::cmd::testing::Run;
    use crate::engines::clients::Engines;
    use crate::engines::fake::FakeGossip;
    use crate::engines::{Gossip, Member, MemberStatus, SerfError};

    struct Fake;

    impl Gossip for Fake {
        fn members(&self) -> std::result::Result<Vec<Member>, SerfError> {
            let member = |name: &str, status| Member {
                name: name.into(),
                addr: [10, 0, 0, 1].into(),
                port: 7946,
                status,
                tags: Default::default(),
            };
            Ok(vec![
                member("b-frozen", MemberStatus::Alive),
                member("a-fresh", MemberStatus::Alive),
                member("c-silent", MemberStatus::Failed),
            ])
        }
        fn user_event(&self, _: &str, _: &[u8], _: bool) -> std::result::Result<(), SerfError> {
            Ok(())
        }
        fn query(
            &self,
            _: &str,
            _: &[u8],
            _: Duration,
        ) -> std::result::Result<Vec<(String, String)>, SerfError> {
            let answer = |node: &str, ats: &[u64]| {
                let status = NodeStatus {
                    node: node.into(),
                    omitted: 0,
                    heartbeat: None,
                    now_ms: None,
                    version: (node == "a-fresh").then(|| "0.2.0 (abc 2026-01-01)".into()),
                    updates: ats
                        .iter()
                        .map(|&at| UpdateStatus {
                            name: format!("u{at}.pp"),
                            seq: at * 1000,
                            status: Status::Applied,
                            reason: None,
                            at,
                            bad_sources: Vec::new(),
                            sources: Vec::new(),
                            stripes: Vec::new(),
                            attempts: 0,
                        })
                        .collect(),
                };
                (node.to_string(), serde_json::to_string(&status).unwrap())
            };
            Ok(vec![
                answer("a-fresh", &[1_000, 9_990]),
                answer("b-frozen", &[1_000]),
            ])
        }
    }

    /// Hostile review: every string a member sends (its answer's names, reasons, bad sources
    /// and version; its own Serf name and tags) reaches the table without what a terminal
    /// acts on: no escape sequence, no newline forging a row, no bidirectional override.
    #[test]
    fn no_string_a_member_sends_puts_control_characters_on_the_operators_terminal() {
        let evil = "\x1b]0;x\x07\nn9  fake applied\u{202E}";
        let status = NodeStatus {
            node: "n\x1b[2J1".into(),
            omitted: 0,
            heartbeat: None,
            now_ms: None,
            version: Some("\x1b[2J0.1".into()),
            updates: vec![UpdateStatus {
                name: "a\x1b[2J".into(),
                seq: 5,
                status: Status::Halted,
                reason: Some(evil.into()),
                at: 1,
                bad_sources: vec!["\x1b[31m10.0.0.9".into()],
                sources: Vec::new(),
                stripes: Vec::new(),
                attempts: 1,
            }],
        };
        let mut member = FakeGossip::member("n\x1b[2J1", MemberStatus::Alive);
        member.tags.insert("role".into(), "\x1b[2J\rcam".into());
        let gossip = FakeGossip {
            members: vec![member],
            answers: vec![("n\x1b[2J1".into(), serde_json::to_string(&status).unwrap())],
            ..FakeGossip::default()
        };
        let reports = fleet_status(&gossip, Duration::ZERO, &[], 10).unwrap();
        let text = table(&reports, false);
        assert!(
            !text
                .chars()
                .any(|c| (c.is_control() && c != '\n') || c == '\u{202E}'),
            "{text:?}"
        );
        // The header, the tags line, the update, the bad source, the halted summary.
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(text.contains("n9  fake applied"), "{text}");
    }

    /// Hostile review of the per-stripe record members send (issue 24): `fleet status`
    /// shows each stripe's sources as the member answered, and a compromised member's answer
    /// cannot put an escape sequence on the operator's terminal through them.
    #[test]
    fn fleet_status_shows_each_stripes_sources_without_a_members_control_characters() {
        use crate::agent::runtime::state::StripeUse;
        let seen = |stripe, member: &str, from, blocks, left: Option<&str>| StripeUse {
            stripe,
            member: member.into(),
            from,
            blocks,
            left: left.map(str::to_string),
            repair: false,
        };
        let status = NodeStatus {
            node: "n1".into(),
            omitted: 0,
            heartbeat: None,
            now_ms: None,
            version: None,
            updates: vec![UpdateStatus {
                name: "big.tar.gz".into(),
                seq: 5,
                status: Status::Applied,
                reason: None,
                at: 1,
                bad_sources: Vec::new(),
                sources: Vec::new(),
                stripes: vec![
                    seen(0, "n3", 0, 40, None),
                    seen(1, "n5", 1, 0, Some("crashed")),
                    seen(1, "n2", 1, 40, None),
                    seen(2, "n4\x1b[2J\x1b]0;owned\x07", 2, 1, Some("\x1b[31mhung")),
                ],
                attempts: 1,
            }],
        };
        let gossip = FakeGossip {
            members: vec![FakeGossip::member("n1", MemberStatus::Alive)],
            answers: vec![("n1".into(), serde_json::to_string(&status).unwrap())],
            ..FakeGossip::default()
        };
        let reports = fleet_status(&gossip, Duration::ZERO, &[], 10).unwrap();
        let text = table(&reports, false);
        assert!(
            text.contains("stripe 0: n3 from block 0, 40 blocks\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "stripe 1: n5 from block 1, 0 blocks, left: crashed; n2 from block 1, 40 blocks\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("stripe 2: n4[2J]0;owned from block 2, 1 blocks, left: [31mhung"),
            "{text}"
        );
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        let json = serde_json::to_string(&reports).unwrap();
        let back: Vec<MemberReport> = serde_json::from_str(&json).unwrap();
        assert_eq!(back[0].updates.as_ref().unwrap()[0].stripes.len(), 4);
    }

    #[test]
    fn status_shows_how_old_each_members_newest_update_is() {
        let reports = fleet_status(&Fake, Duration::ZERO, &[], 10_000).unwrap();
        let ages: Vec<_> = reports
            .iter()
            .map(|r| (r.node.as_str(), r.newest_age_secs))
            .collect();
        assert_eq!(
            ages,
            [
                ("a-fresh", Some(10)),
                ("b-frozen", Some(9_000)),
                ("c-silent", None)
            ]
        );
        let text = table(&reports, false);
        assert!(text.lines().next().unwrap().contains("NEWEST"), "{text}");
        assert!(!text.contains('\x1b'), "no colour unless asked: {text}");
        let words = |start: &str| -> Vec<String> {
            let line = text.lines().find(|l| l.starts_with(start)).unwrap_or("");
            line.split_whitespace().map(str::to_string).collect()
        };
        assert_eq!(
            words("b-frozen")[..6],
            ["b-frozen", "10.0.0.1:7946", "yes", "-", "2h", "u1000.pp"]
        );
        assert_eq!(words("a-fresh")[3], "0.2.0");
        assert_eq!(
            words("c-silent"),
            [
                "c-silent",
                "10.0.0.1:7946",
                "no",
                "-",
                "-",
                "(no",
                "answer)"
            ]
        );
    }

    fn report(node: &str, status: Option<Status>) -> MemberReport {
        MemberReport {
            node: node.into(),
            omitted: 0,
            addr: "10.0.0.1:7946".into(),
            alive: true,
            heartbeat: None,
            version: None,
            updates: status.map(|status| {
                vec![UpdateStatus {
                    name: "site.pp".into(),
                    seq: 1,
                    status,
                    reason: None,
                    at: 1,
                    bad_sources: Vec::new(),
                    sources: Vec::new(),
                    stripes: Vec::new(),
                    attempts: 0,
                }]
            }),
            newest_age_secs: None,
            tags: Default::default(),
        }
    }

    #[test]
    fn exit_status_says_failed_before_silent_before_ok() {
        let ok = report("a", Some(Status::Applied));
        let pending = report("b", Some(Status::Pending));
        let failed = report("c", Some(Status::Failed));
        let silent = report("d", None);
        assert_eq!(verdict(&[ok.clone(), pending.clone()]), exit::OK);
        assert_eq!(verdict(&[ok.clone(), silent.clone()]), exit::INCOMPLETE);
        assert_eq!(verdict(&[failed.clone(), silent]), exit::FAILED);
        assert_eq!(verdict(&[ok, failed]), exit::FAILED);
        assert_eq!(
            (exit::FAILED, exit::INCOMPLETE),
            (3, 4),
            "documented in README"
        );
    }

    #[test]
    fn colour_marks_failures_and_silence_only_when_asked() {
        let reports = [
            report("a", Some(Status::Applied)),
            report("c", Some(Status::Failed)),
            report("d", None),
        ];
        let text = table(&reports, true);
        let line = |start: &str| text.lines().find(|l| l.starts_with(start)).unwrap();
        assert!(line("a ").contains("\x1b[32mapplied"), "{text}");
        assert!(line("c ").contains("\x1b[31mfailed"), "{text}");
        assert!(line("d ").contains("\x1b[33m(no answer)"), "{text}");
    }

    #[test]
    fn answers_from_nodes_that_do_not_say_their_version_still_decode() {
        let old = r#"{"node":"n1","updates":[]}"#;
        let status: NodeStatus = serde_json::from_str(old).unwrap();
        assert_eq!(status.version, None);
    }

    #[test]
    fn json_rows_decode_into_the_documented_struct_with_unknown_fields_denied() {
        let reports = fleet_status(&Fake, Duration::ZERO, &[], 10_000).unwrap();
        let json = serde_json::to_string(&reports).unwrap();
        let back: Vec<MemberReport> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, reports);
        assert_eq!(back[0].version.as_deref(), Some("0.2.0 (abc 2026-01-01)"));
        let extra = json.replacen("\"alive\"", "\"surprise\":1,\"alive\"", 1);
        assert!(serde_json::from_str::<Vec<MemberReport>>(&extra).is_err());
    }

    #[test]
    fn ages_use_the_largest_whole_unit() {
        let got: Vec<String> = [0, 119, 120, 7199, 7200, 172_799, 172_800]
            .into_iter()
            .map(age)
            .collect();
        assert_eq!(got, ["0s", "119s", "2m", "119m", "2h", "47h", "2d"]);
    }

    fn answer(node: &str, status: Status) -> (String, String) {
        let status = NodeStatus {
            node: node.into(),
            omitted: 0,
            heartbeat: None,
            now_ms: None,
            version: None,
            updates: vec![UpdateStatus {
                name: "site.pp".into(),
                seq: 7,
                status,
                reason: (status == Status::Failed).then(|| "puppet apply: exit 1".into()),
                at: 1,
                bad_sources: Vec::new(),
                sources: Vec::new(),
                stripes: Vec::new(),
                attempts: 0,
            }],
        };
        (node.to_string(), serde_json::to_string(&status).unwrap())
    }

    fn fleet_status_with(gossip: FakeGossip, args: &[&str]) -> (i32, String, String, Vec<String>) {
        let dir = crate::cmd::testing::site_dir("");
        let gossip = std::sync::Arc::new(gossip);
        let engines = Engines::fakes().gossip_engine(gossip.clone());
        let argv = ["fleet", "status", "--config", "site.toml", "--timeout", "0"];
        let argv: Vec<&str> = argv.iter().chain(args).copied().collect();
        let (code, out, err) = Run::new(dir.path()).engines(engines).run(&argv);
        (code, out, err, gossip.queries())
    }

    #[test]
    fn fleet_status_asks_the_status_query_and_exits_3_when_a_member_failed() {
        let gossip = FakeGossip {
            members: vec![
                FakeGossip::member("a", MemberStatus::Alive),
                FakeGossip::member("b", MemberStatus::Alive),
                FakeGossip::member("gone", MemberStatus::Left),
            ],
            answers: vec![answer("a", Status::Applied), answer("b", Status::Failed)],
            ..FakeGossip::default()
        };
        let (code, out, err, queries) = fleet_status_with(gossip, &[]);
        assert_eq!((code, err.as_str()), (exit::FAILED, ""));
        assert_eq!(queries, ["p2pu-status"]);
        let nodes: Vec<&str> = out
            .lines()
            .skip(1)
            .filter_map(|l| l.split(' ').next())
            .collect();
        assert_eq!(nodes, ["a", "b"], "a member that left is not listed: {out}");
        assert!(out.contains("failed   puppet apply: exit 1"), "{out}");
    }

    /// `--node GLOB,...` keeps the members whose name matches (the exit status is theirs);
    /// a bad glob list is a usage error naming it, before anything is asked.
    #[test]
    fn node_globs_select_the_members_shown() {
        let gossip = || FakeGossip {
            members: vec![
                FakeGossip::member("cam-1", MemberStatus::Alive),
                FakeGossip::member("cam-2", MemberStatus::Alive),
                FakeGossip::member("door", MemberStatus::Alive),
            ],
            answers: vec![
                answer("cam-1", Status::Applied),
                answer("cam-2", Status::Applied),
                answer("door", Status::Failed),
            ],
            ..FakeGossip::default()
        };
        let nodes = |out: &str| -> Vec<String> {
            crate::cmd::json::decode::<Vec<MemberReport>>(out.as_bytes())
                .unwrap()
                .into_iter()
                .map(|r| r.node)
                .collect()
        };
        let (code, out, err, _) = fleet_status_with(gossip(), &["--node", "cam-*", "--json"]);
        assert_eq!(
            (code, err.as_str()),
            (0, ""),
            "door's failure is not theirs"
        );
        assert_eq!(nodes(&out), ["cam-1", "cam-2"]);
        let (code, out, _, _) = fleet_status_with(gossip(), &["--node", "cam-?,d*r", "--json"]);
        assert_eq!(code, exit::FAILED);
        assert_eq!(nodes(&out), ["cam-1", "cam-2", "door"]);
        let (code, out, _, _) = fleet_status_with(gossip(), &["--node", "door", "--plain"]);
        assert_eq!(code, exit::FAILED);
        assert!(out.starts_with("door "), "no header: {out}");
        let (code, out, err, queries) = fleet_status_with(gossip(), &["--node", "a,,b"]);
        assert_eq!((code, out.as_str()), (exit::USAGE, ""));
        assert_eq!(
            err,
            "error: --node \"a,,b\": an empty glob, or one with a space or a control character; \
             give member-name globs such as cam-*,door-1\n"
        );
        assert!(queries.is_empty(), "nothing asked");
        let many = vec!["x"; 17].join(",");
        let (code, _, err, _) = fleet_status_with(gossip(), &["--node", &many]);
        assert_eq!(code, exit::USAGE);
        assert!(err.contains("more than 16 globs"), "{err}");
    }

    #[test]
    fn fleet_status_exits_4_when_a_member_is_silent_and_prints_json_rows() {
        let gossip = FakeGossip {
            members: vec![
                FakeGossip::member("a", MemberStatus::Alive),
                FakeGossip::member("quiet", MemberStatus::Alive),
            ],
            answers: vec![answer("a", Status::Applied)],
            ..FakeGossip::default()
        };
        let (code, out, _, _) = fleet_status_with(gossip, &["--json", "site.pp"]);
        assert_eq!(code, exit::INCOMPLETE);
        let rows: Vec<MemberReport> = crate::cmd::json::decode(out.as_bytes()).unwrap();
        let answered: Vec<_> = rows
            .iter()
            .map(|r| (r.node.as_str(), r.updates.is_some()))
            .collect();
        assert_eq!(answered, [("a", true), ("quiet", false)]);
    }

    /// `fleet serve --allow-actions` where this node holds no signing key stops before it
    /// listens: no page would offer buttons that can sign nothing.
    #[test]
    fn serve_with_actions_needs_the_signing_key_before_listening() {
        let dir = crate::cmd::testing::site_dir("");
        let key = dir.path().join("missing/signing.key");
        std::fs::write(
            dir.path().join("site.toml"),
            format!("[agent]\nsigning_key = \"{}\"\n", key.display()),
        )
        .unwrap();
        let gossip = std::sync::Arc::new(FakeGossip::default());
        let engines = Engines::fakes().gossip_engine(gossip.clone());
        let argv = [
            "fleet",
            "serve",
            "--config",
            "site.toml",
            "--listen",
            "127.0.0.1:0",
            "--allow-actions",
        ];
        let (code, out, err) = Run::new(dir.path()).engines(engines).run(&argv);
        assert_eq!((code, out.as_str()), (1, ""), "{err}");
        assert!(err.contains("signing.key"), "{err}");
        assert!(gossip.queries().is_empty());
        let (code, _, err) = Run::new(dir.path()).run(&["fleet", "serve", "--interval", "0"]);
        assert_eq!(code, 1);
        assert!(err.contains("--interval 0: not a duration"), "{err}");
    }

    #[test]
    fn a_bad_timeout_is_a_usage_error_and_nothing_is_asked() {
        let dir = crate::cmd::testing::site_dir("");
        let gossip = std::sync::Arc::new(FakeGossip::default());
        let engines = Engines::fakes().gossip_engine(gossip.clone());
        let argv = ["fleet", "status", "--config", "site.toml", "--timeout=-1"];
        let (code, _, err) = Run::new(dir.path()).engines(engines).run(&argv);
        assert_eq!(code, 1);
        assert!(
            err.contains("--timeout -1: not a duration in seconds"),
            "{err}"
        );
        assert!(gossip.queries().is_empty());
    }
}

#[cfg(test)]
mod watch_tests {
    use super::*;
    use crate::agent::runtime::status::{NodeStatus, UpdateStatus};
    use crate::cmd::testing::Run;
    use crate::engines::clients::Engines;
    use crate::engines::{Member, MemberStatus, SerfError};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn update(name: &str, seq: u64, status: Status) -> UpdateStatus {
        UpdateStatus {
            name: name.into(),
            seq,
            status,
            reason: matches!(status, Status::Failed | Status::Reverted)
                .then(|| "health check `/usr/local/bin/check` exited 1: camera down".into()),
            at: 1,
            bad_sources: Vec::new(),
            sources: Vec::new(),
            stripes: Vec::new(),
            attempts: 0,
        }
    }

    fn member(node: &str, alive: bool, updates: Option<Vec<UpdateStatus>>) -> MemberReport {
        MemberReport {
            node: node.into(),
            omitted: 0,
            addr: "10.0.0.1:7946".into(),
            alive,
            version: None,
            updates,
            newest_age_secs: None,
            heartbeat: None,
            tags: Default::default(),
        }
    }

    /// Issue 29: a member's answer cut at 7 KiB says how many names it left out, and how to
    /// ask for them.
    #[test]
    fn a_cut_answer_says_how_many_names_were_left_out() {
        let mut cut = member("a", true, Some(vec![update("site.pp", 7, Status::Applied)]));
        cut.omitted = 179;
        let text = table(&[cut], false);
        assert!(
            text.contains("a                    ... and 179 older update name(s) left out of its answer; ask for them by name: p2pu fleet status NAME..."),
            "{text}"
        );
        let whole = member("b", true, Some(vec![update("site.pp", 7, Status::Applied)]));
        assert!(!table(&[whole], false).contains("left out"));
    }

    #[test]
    fn a_rollout_settles_when_every_alive_member_is_done_with_it() {
        let id = RolloutId {
            name: "site.pp".into(),
            seq: 7,
        };
        let done = |status| member("a", true, Some(vec![update("site.pp", 7, status)]));
        for status in [Status::Applied, Status::Failed, Status::Reverted] {
            assert!(is_settled(&[done(status)], &id), "{status:?}");
        }
        for status in [
            Status::Pending,
            Status::Applying,
            Status::Retrying,
            Status::Checking,
            Status::Reverting,
            Status::Held,
        ] {
            assert!(!is_settled(&[done(status)], &id), "{status:?}");
        }
        let applied = done(Status::Applied);
        // Has not heard of it yet, or did not answer: not settled.
        let unaware = member("b", true, Some(vec![update("site.pp", 6, Status::Applied)]));
        assert!(!is_settled(&[applied.clone(), unaware], &id));
        let silent = member("c", true, None);
        assert!(!is_settled(&[applied.clone(), silent], &id));
        // A member that is not alive is not waited for; one already past it is done with it.
        let dead = member("d", false, None);
        let ahead = member("e", true, Some(vec![update("site.pp", 8, Status::Pending)]));
        assert!(is_settled(&[applied.clone(), dead, ahead], &id));
        // The newest rollout is the highest seq anyone reports.
        let older = member(
            "f",
            true,
            Some(vec![update("motd.tar.gz", 3, Status::Applied)]),
        );
        assert_eq!(newest_rollout(&[older, applied]), Some(id));
        assert_eq!(newest_rollout(&[member("g", true, None)]), None);
    }

    /// Answers `pending` from node b for the first `pending_for` queries, then `reverted`.
    struct Rolling {
        queries: AtomicUsize,
        pending_for: usize,
    }

    impl Gossip for Rolling {
        fn members(&self) -> std::result::Result<Vec<Member>, SerfError> {
            let member = |name: &str| Member {
                name: name.into(),
                addr: [10, 0, 0, 1].into(),
                port: 7946,
                status: MemberStatus::Alive,
                tags: Default::default(),
            };
            Ok(vec![member("a"), member("b")])
        }
        fn user_event(&self, _: &str, _: &[u8], _: bool) -> std::result::Result<(), SerfError> {
            Ok(())
        }
        fn query(
            &self,
            _: &str,
            _: &[u8],
            _: Duration,
        ) -> std::result::Result<Vec<(String, String)>, SerfError> {
            let n = self.queries.fetch_add(1, Ordering::SeqCst);
            let b = if n < self.pending_for {
                Status::Pending
            } else {
                Status::Reverted
            };
            let answer = |node: &str, status| {
                let status = NodeStatus {
                    node: node.into(),
                    omitted: 0,
                    version: None,
                    heartbeat: None,
                    now_ms: None,
                    updates: vec![
                        update("site.pp", 7, status),
                        update("old.pp", 2, Status::Applied),
                    ],
                };
                (node.to_string(), serde_json::to_string(&status).unwrap())
            };
            Ok(vec![answer("a", Status::Applied), answer("b", b)])
        }
    }

    fn watch(args: &[&str]) -> (i32, String, usize) {
        let (code, out, err, queries) = watch_err(args);
        assert_eq!(err, "");
        (code, out, queries)
    }

    fn watch_err(args: &[&str]) -> (i32, String, String, usize) {
        let dir = crate::cmd::testing::site_dir("");
        let gossip = Arc::new(Rolling {
            queries: AtomicUsize::new(0),
            pending_for: 2,
        });
        let engines = Engines::fakes().gossip_engine(gossip.clone());
        let argv = ["fleet", "status", "--config", "site.toml", "--timeout", "0"];
        let argv: Vec<&str> = argv.iter().chain(args).copied().collect();
        let (code, out, err) = Run::new(dir.path()).engines(engines).run(&argv);
        (code, out, err, gossip.queries.load(Ordering::SeqCst))
    }

    #[test]
    fn watch_json_prints_one_frame_per_refresh_until_the_rollout_settles() {
        let (code, out, queries) = watch(&["--watch", "--interval", "0.01", "--json"]);
        assert_eq!(code, exit::FAILED, "b reverted: a failure");
        let frames: Vec<WatchFrame> = out
            .lines()
            .map(|line| crate::cmd::json::decode(line.as_bytes()).unwrap())
            .collect();
        assert_eq!(frames.len(), 3, "{out}");
        for line in out.lines() {
            let frame: serde_json::Value = serde_json::from_str(line).unwrap();
            let departures = crate::cmd::json::departures("fleet status --watch", &frame);
            assert!(departures.is_empty(), "docs/json.md: {departures:?}");
        }
        assert_eq!(queries, 3, "no refresh after it settled");
        assert_eq!(
            frames.iter().map(|f| f.settled).collect::<Vec<_>>(),
            [false, false, true]
        );
        let followed = RolloutId {
            name: "site.pp".into(),
            seq: 7,
        };
        assert!(frames.iter().all(|f| f.rollout.as_ref() == Some(&followed)));
        let extra =
            out.lines()
                .next()
                .unwrap()
                .replacen("\"settled\"", "\"surprise\":1,\"settled\"", 1);
        assert!(serde_json::from_str::<WatchFrame>(&extra).is_err());
    }

    #[test]
    fn watch_redraws_a_node_by_update_table_and_names_who_failed() {
        let (code, out, _) = watch(&["--watch", "--interval", "0.01"]);
        assert_eq!(code, exit::FAILED);
        let last = out.rsplit("\n\n").next().unwrap();
        assert_eq!(
            last,
            "site.pp seq 7: 1 done, 1 failed, 0 waiting; settled\n\
             NODE                 site.pp        old.pp\n\
             a                    applied        applied\n\
             b                    reverted       applied\n  \
             b: health check `/usr/local/bin/check` exited 1: camera down\n"
        );
        assert!(
            out.contains("0 failed, 1 waiting; watching (Ctrl-C to stop)"),
            "{out}"
        );
    }

    #[test]
    fn interval_needs_watch_and_a_duration() {
        let (code, _, err, queries) = watch_err(&["--interval", "1"]);
        assert_eq!((code, queries), (2, 0));
        assert!(err.contains("--watch"), "{err}");
        let (code, _, err, queries) = watch_err(&["--watch", "--interval=-1"]);
        assert_eq!((code, queries), (1, 0));
        assert!(
            err.contains("--interval -1: not a duration in seconds"),
            "{err}"
        );
    }
}
