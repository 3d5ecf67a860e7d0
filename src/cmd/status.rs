//! `p2pu status`: this node's updates (applied, pending, failed, held, with reasons) and the
//! announcements it rejected, from the agent's state dir. Read-only: it creates nothing, and
//! exits [`exit::FAILED`] when the newest record of some name failed, so scripts and monitoring
//! can ask it like `systemctl is-failed`.

use crate::agent::runtime::heartbeat;
use crate::agent::runtime::state::{RolloutOutcome, StateStore, Status as UpdateState};
use crate::agent::runtime::status::{stripe_lines, StatusReport};
use crate::agent::runtime::RuntimeError;
use crate::cmd::denied_state;
use crate::cmd::{exit, ConfigArg, Outcome};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::Env;
use std::io::Write;

/// Show this node's updates, rejected announcements and heartbeat.
///
/// Also says whether the agent, Serf and Transmission answer on their local ports.
///
/// Exits 0 when no update's newest record failed, 3 when one did (failed, or reverted by the
/// health check), 1 when the state could not be read. With --check: one line, and exit 6 when
/// the agent is not running or its state dir does not exist, 5 when the heartbeat is stale or
/// was never received (agent.heartbeat_window_secs), else 3 or 0 as above.
#[derive(Debug, clap::Args)]
pub struct Status {
    #[command(flatten)]
    config: ConfigArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Show every kept record of each name, not just the newest.
    #[arg(long)]
    all: bool,
    /// For monitoring: print one line and exit 6 when the agent is down, 5 when no fresh
    /// heartbeat is held, 3 when an update failed, 0 when all is well.
    #[arg(long, conflicts_with_all = ["json", "all"])]
    check: bool,
}

impl Status {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let config = Config::load(&self.config.resolve(env), None)?;
        let store = StateStore::open_read_only(&config.site.agent.state_dir);
        let mut report = read(&store, self.all).map_err(|e| denied_state(e, "status"))?;
        let now = env.unix_now();
        report.heartbeat =
            heartbeat::freshness(store.dir(), config.site.agent.heartbeat_window_secs, now);
        report.services = env.engines.services(&config);
        report.state_dir_exists = config.site.agent.state_dir.is_dir();
        if self.check {
            return check(env, &report, now);
        }
        crate::cmd::emit(env, self.json, &report, |r| table(r, now))?;
        let failed = if self.all {
            store.latest().map_err(|e| denied_state(e, "status"))?
        } else {
            report.updates
        };
        // A revert is a failure of the update, though the node runs its last good version.
        if failed
            .iter()
            .any(|r| r.status.rollout_outcome() == RolloutOutcome::Failed)
        {
            return Ok(Outcome::Status(exit::FAILED));
        }
        Ok(Outcome::Success)
    }
}

/// `--check`: one line, the worst first.
fn check(env: &mut Env, report: &StatusReport, now: u64) -> Result<Outcome> {
    if let Some(line) = down(report) {
        writeln!(env.stdout, "{line}").map_err(Error::io("writing to", "standard output"))?;
        return Ok(Outcome::Status(exit::DOWN));
    }
    let failed: Vec<&str> = report
        .updates
        .iter()
        .filter(|r| r.status == UpdateState::Failed)
        .map(|r| r.name.as_str())
        .collect();
    let (line, outcome) = match &report.heartbeat {
        Some(h) if !h.is_fresh() => (h.line(now), Outcome::Status(exit::STALE)),
        _ if !failed.is_empty() => (
            format!("failed: {}", failed.join(", ")),
            Outcome::Status(exit::FAILED),
        ),
        Some(h) => (format!("ok: {}", h.line(now)), Outcome::Success),
        None => (
            "ok: no failed update (heartbeats not required)".to_string(),
            Outcome::Success,
        ),
    };
    writeln!(env.stdout, "{line}").map_err(Error::io("writing to", "standard output"))?;
    Ok(outcome)
}

fn read(store: &StateStore, all: bool) -> Result<StatusReport, RuntimeError> {
    let updates = if all {
        let mut all = Vec::new();
        for name in store.names()? {
            all.extend(store.records(&name)?);
        }
        all
    } else {
        store.latest()?
    };
    Ok(StatusReport {
        updates,
        rejected: store.rejections()?,
        heartbeat: None,
        services: Vec::new(),
        state_dir_exists: true,
        clock: crate::agent::runtime::clock::read(store.dir()),
    })
}

/// Where a payload fetched over HTTP came from, when more than one member served it, each
/// stripe's sources when it came by stripes, and any member that sent bad pieces (named: it
/// is lying or compromised).
fn sources(record: &crate::agent::runtime::state::Record) -> String {
    let mut out = String::new();
    if record.sources.len() > 1 {
        let used: Vec<String> = record
            .sources
            .iter()
            .map(|s| {
                let rate = s.bytes as f64 / (s.millis.max(1) as f64 / 1000.0) / 1048576.0;
                format!(
                    "{} ({:.1} MiB at {rate:.1} MiB/s)",
                    s.addr,
                    s.bytes as f64 / 1048576.0
                )
            })
            .collect();
        out.push_str(&format!("    from: {}\n", used.join(", ")));
    }
    for line in stripe_lines(&record.stripes) {
        out.push_str(&format!("    {line}\n"));
    }
    for s in record.sources.iter().filter(|s| s.bad_pieces > 0) {
        out.push_str(&format!(
            "    ! {} sent {} bad piece(s) and was dropped: a lying or compromised member\n",
            s.addr, s.bad_pieces
        ));
    }
    out
}

/// Why this node cannot apply anything now, if it cannot: the agent is not running, or its
/// state dir does not exist (it never ran). `status --check` fails on it (issue 29: it said
/// "ok" when the state dir did not exist).
fn down(report: &StatusReport) -> Option<String> {
    if let Some(agent) = report
        .services
        .iter()
        .find(|s| s.name == "agent" && !s.running)
    {
        return Some(format!(
            "down: the agent is not running (nothing answers at {}; systemctl status {})",
            agent.addr, agent.unit
        ));
    }
    (!report.state_dir_exists).then(|| {
        "down: the agent's state dir does not exist: it never ran here (p2pu init; systemctl \
         status p2pu-agent)"
            .to_string()
    })
}

/// `agent running, serf running, transmission NOT RUNNING (...)`, like `systemctl status`.
fn services_line(report: &StatusReport) -> Option<String> {
    if report.services.is_empty() {
        return None;
    }
    let parts: Vec<String> = report
        .services
        .iter()
        .map(|s| match s.running {
            true => format!("{} running", s.name),
            false => format!(
                "{} NOT RUNNING (nothing answers at {}; systemctl status {})",
                s.name, s.addr, s.unit
            ),
        })
        .collect();
    Some(format!("services: {}", parts.join(", ")))
}

fn table(report: &StatusReport, now: u64) -> String {
    let mut out = String::new();
    if let Some(line) = services_line(report) {
        out.push_str(&line);
        out.push('\n');
    }
    if !report.state_dir_exists {
        out.push_str("the agent's state dir does not exist: it never ran here\n");
    }
    if !out.is_empty() {
        out.push('\n');
    }
    if let Some(heartbeat) = &report.heartbeat {
        out.push_str(&heartbeat.line(now));
        out.push_str("\n\n");
    }
    if let Some(clock) = &report.clock {
        out.push_str(&format!("clock: {}\n\n", clock.describe()));
    }
    if report.updates.is_empty() {
        out.push_str("no updates yet\n");
    } else {
        out.push_str(&format!(
            "{:<24} {:>14} {:<9} {:<8} {:>8} {}\n",
            "NAME", "SEQ", "KIND", "STATUS", "ATTEMPTS", "REASON"
        ));
        for r in &report.updates {
            out.push_str(&format!(
                "{:<24} {:>14} {:<9} {:<8} {:>8} {}\n",
                r.name,
                r.seq,
                r.kind,
                r.status.as_str(),
                r.attempts,
                r.shown_reason(now)
            ));
            out.push_str(&sources(r));
        }
    }
    if !report.rejected.is_empty() {
        out.push_str(&format!(
            "\n{} rejected announcement(s), newest last:\n",
            report.rejected.len()
        ));
        for r in report.rejected.iter().rev().take(10).rev() {
            let what = match (&r.name, r.seq) {
                (Some(name), Some(seq)) => format!("{name} seq {seq}"),
                (Some(name), None) => name.clone(),
                _ => "(undecodable)".into(),
            };
            out.push_str(&format!("  {what} from {}: {}\n", r.source, r.reason));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::runtime::state::{Record, RecordKind, Status};
    use crate::formats::announcement::Kind;

    fn site(dir: &std::path::Path) -> std::path::PathBuf {
        let config = dir.join("site.toml");
        let state = dir.join("state");
        std::fs::write(
            &config,
            format!("[agent]\nstate_dir = \"{}\"\n", state.display()),
        )
        .unwrap();
        config
    }

    /// `p2pu status --config site.toml <args>` in `dir`.
    fn status(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
        let argv: Vec<&str> = ["status", "--config", "site.toml"]
            .iter()
            .chain(args)
            .copied()
            .collect();
        crate::cmd::testing::run(dir, &argv)
    }

    fn record(name: &str, seq: u64, status: Status) -> Record {
        Record {
            info_hash: "00".repeat(20),
            len: 1,
            sha256: Some([0; 32]),
            wire: "p2pu1:x".into(),
            status,
            reason: (status == Status::Failed).then(|| "puppet apply: exit 1".into()),
            ..Record::received(name.into(), seq, RecordKind::Signed(Kind::Manifest), 1)
        }
    }

    #[test]
    fn status_creates_no_state_and_reads_a_missing_state_dir_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        site(dir.path());
        let (code, out, err) = status(dir.path(), &[]);
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (
                0,
                "the agent's state dir does not exist: it never ran here\n\nno updates yet\n",
                ""
            )
        );
        assert!(!dir.path().join("state").exists(), "status created state");
    }

    /// Issue 29: `status --check` said "ok" where the state dir did not exist, and nothing
    /// said whether the agent ran. It fails (exit 6) when the agent does not answer or never
    /// ran, and `status` names each daemon that does not answer with its unit.
    #[test]
    fn check_fails_when_the_agent_is_down_or_never_ran() {
        use crate::engines::clients::{Engines, ServiceState};
        let dir = tempfile::tempdir().unwrap();
        site(dir.path());
        let (code, out, _) = status(dir.path(), &["--check"]);
        assert_eq!(code, exit::DOWN, "{out}");
        assert!(
            out.starts_with("down: the agent's state dir does not exist"),
            "{out}"
        );
        StateStore::open(&dir.path().join("state")).unwrap();
        let service = |name: &str, running: bool| ServiceState {
            name: name.into(),
            addr: "127.0.0.1:6969".into(),
            running,
            unit: format!("{name}.service"),
        };
        let run = |states: Vec<ServiceState>, args: &[&str]| {
            let mut argv = vec!["status", "--config", "site.toml"];
            argv.extend(args);
            crate::cmd::testing::Run::new(dir.path())
                .engines(Engines::fakes().services_running(states))
                .run(&argv)
        };
        let up = vec![service("agent", true), service("serf", true)];
        let (code, out, _) = run(up.clone(), &["--check"]);
        assert_eq!(code, 0, "{out}");
        let (code, out, _) = run(up, &[]);
        assert_eq!(code, 0);
        assert!(
            out.starts_with("services: agent running, serf running\n"),
            "{out}"
        );
        let agent_down = vec![service("agent", false), service("serf", true)];
        let (code, out, _) = run(agent_down.clone(), &["--check"]);
        assert_eq!(code, exit::DOWN, "{out}");
        assert_eq!(
            out,
            "down: the agent is not running (nothing answers at 127.0.0.1:6969; systemctl status agent.service)\n"
        );
        let (_, out, _) = run(agent_down, &[]);
        assert!(
            out.contains("agent NOT RUNNING (nothing answers at 127.0.0.1:6969"),
            "{out}"
        );
    }

    #[test]
    fn status_exits_3_while_the_newest_record_of_a_name_failed() {
        let dir = tempfile::tempdir().unwrap();
        site(dir.path());
        let store = StateStore::open(&dir.path().join("state")).unwrap();
        store.put(record("site.pp", 1, Status::Applied)).unwrap();
        assert_eq!(status(dir.path(), &[]).0, 0);
        store.put(record("site.pp", 2, Status::Failed)).unwrap();
        let (code, out, _) = status(dir.path(), &["--json"]);
        assert_eq!(code, exit::FAILED);
        let report: StatusReport = crate::cmd::json::decode(out.as_bytes()).unwrap();
        assert_eq!(report.updates[0].status, Status::Failed);
        // A newer record that applied clears it, also when every record is listed.
        store.put(record("site.pp", 3, Status::Applied)).unwrap();
        assert_eq!(status(dir.path(), &["--all"]).0, 0);
    }

    /// A retried update shows its attempts, and while retrying, when the next one is due.
    #[test]
    fn attempts_and_the_next_retry_are_shown() {
        let dir = tempfile::tempdir().unwrap();
        site(dir.path());
        let store = StateStore::open(&dir.path().join("state")).unwrap();
        let mut retrying = record("site.pp", 1, Status::Retrying);
        retrying.attempts = 1;
        retrying.next_attempt_at = Some(0);
        retrying.reason = Some("Error: Could not find class ::nope (site.pp:1)".into());
        store.put(retrying).unwrap();
        let mut failed = record("b.pp", 2, Status::Failed);
        failed.attempts = 3;
        store.put(failed).unwrap();
        let (code, out, _) = status(dir.path(), &[]);
        assert_eq!(code, exit::FAILED);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].ends_with("STATUS   ATTEMPTS REASON"), "{out}");
        assert!(
            lines[1].starts_with("b.pp")
                && lines[1].ends_with("failed          3 puppet apply: exit 1"),
            "{out}"
        );
        assert!(
            lines[2].ends_with(
                "retrying        1 next attempt in 0 s; Error: Could not find class ::nope (site.pp:1)"
            ),
            "{out}"
        );
        let (_, json, _) = status(dir.path(), &["--json"]);
        let report: StatusReport = crate::cmd::json::decode(json.as_bytes()).unwrap();
        let attempts: Vec<u32> = report.updates.iter().map(|r| r.attempts).collect();
        assert_eq!(attempts, [3, 1]);
    }

    #[test]
    fn unreadable_state_says_run_as_root() {
        let denied = RuntimeError::io("listing", "/var/lib/p2pu/names")(std::io::Error::from(
            std::io::ErrorKind::PermissionDenied,
        ));
        let text = denied_state(denied, "status").to_string();
        assert!(
            text.contains("/var/lib/p2pu/names") && text.contains("run as root"),
            "{text}"
        );
        let other =
            RuntimeError::io("listing", "/x")(std::io::Error::from(std::io::ErrorKind::Other));
        assert!(!denied_state(other, "status").to_string().contains("root"));
    }

    /// A member that sent bad pieces is named in the table and in the JSON; the sources of a
    /// payload that came from several members are listed.
    #[test]
    fn a_source_that_sent_bad_pieces_is_named() {
        use crate::agent::runtime::state::SourceUse;
        let dir = tempfile::tempdir().unwrap();
        site(dir.path());
        let store = StateStore::open(&dir.path().join("state")).unwrap();
        let mut applied = record("big.tar.gz", 1, Status::Applied);
        applied.sources = vec![
            SourceUse {
                addr: "10.99.1.5:6880".into(),
                from: 0,
                bytes: 1 << 20,
                millis: 1000,
                bad_pieces: 1,
                left: Some("sent a bad piece (piece 32)".into()),
            },
            SourceUse {
                addr: "10.99.1.4:6880".into(),
                from: 1 << 20,
                bytes: 3 << 20,
                millis: 1000,
                bad_pieces: 0,
                left: None,
            },
        ];
        store.put(applied).unwrap();
        let (code, out, _) = status(dir.path(), &[]);
        assert_eq!(code, 0);
        assert!(out.contains("from: 10.99.1.5:6880 (1.0 MiB at 1.0 MiB/s), 10.99.1.4:6880 (3.0 MiB at 3.0 MiB/s)"), "{out}");
        assert!(
            out.contains("! 10.99.1.5:6880 sent 1 bad piece(s) and was dropped"),
            "{out}"
        );
        let (_, json, _) = status(dir.path(), &["--json"]);
        let report: StatusReport = crate::cmd::json::decode(json.as_bytes()).unwrap();
        assert_eq!(report.updates[0].sources[0].bad_pieces, 1);
        let answer = crate::agent::runtime::status::node_status(&store, "n".into(), &[]).unwrap();
        assert_eq!(answer.updates[0].bad_sources, ["10.99.1.5:6880"]);
        // The status answer carries the sources too (for `fleet serve`'s transfer picture).
        let seen: Vec<(&str, u32, Option<&str>)> = answer.updates[0]
            .sources
            .iter()
            .map(|s| (s.addr.as_str(), s.bad_pieces, s.left.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                ("10.99.1.5:6880", 1, Some("sent a bad piece (piece 32)")),
                ("10.99.1.4:6880", 0, None)
            ]
        );
    }

    /// A payload that came by stripes shows each stripe's sources (which member, from which
    /// block, how many blocks, why left) in the table and in the JSON.
    #[test]
    fn a_striped_fetch_shows_each_stripes_sources() {
        use crate::agent::runtime::state::StripeUse;
        let dir = tempfile::tempdir().unwrap();
        site(dir.path());
        let store = StateStore::open(&dir.path().join("state")).unwrap();
        let mut applied = record("big.tar.gz", 1, Status::Applied);
        let using = |stripe, member: &str, from, blocks, left: Option<&str>| StripeUse {
            stripe,
            member: member.into(),
            from,
            blocks,
            left: left.map(str::to_string),
            repair: false,
        };
        applied.stripes = vec![
            using(0, "n3", 0, 160, None),
            using(1, "n5", 1, 12, Some("lied: block 97 failed its check")),
            using(1, "n1", 97, 148, None),
            StripeUse {
                repair: true,
                ..using(2, "n4", 2, 6, None)
            },
        ];
        store.put(applied).unwrap();
        let (code, out, _) = status(dir.path(), &[]);
        assert_eq!(code, 0);
        assert!(
            out.contains("    stripe 0: n3 from block 0, 160 blocks\n"),
            "{out}"
        );
        assert!(out.contains("    stripe 1: n5 from block 1, 12 blocks, left: lied: block 97 failed its check; n1 from block 97, 148 blocks\n"), "{out}");
        assert!(
            out.contains("    stripe 2: n4 by repair from block 2, 6 blocks\n"),
            "{out}"
        );
        let (_, json, _) = status(dir.path(), &["--json"]);
        let report: StatusReport = crate::cmd::json::decode(json.as_bytes()).unwrap();
        assert_eq!(report.updates[0].stripes.len(), 4);
        assert_eq!(report.updates[0].stripes[2].from, 97);
    }

    /// A node with many sources, a long reason for leaving each, and many updates still
    /// answers within the status query's bound.
    #[test]
    fn the_status_answer_with_sources_stays_within_its_bound() {
        use crate::agent::runtime::state::SourceUse;
        let dir = tempfile::tempdir().unwrap();
        site(dir.path());
        let store = StateStore::open(&dir.path().join("state")).unwrap();
        for n in 0..40 {
            let mut applied = record(&format!("u{n}.tar.gz"), 1, Status::Applied);
            applied.reason = Some("r".repeat(1000));
            applied.sources = (0..50)
                .map(|i| SourceUse {
                    addr: format!("10.99.1.{i}:6880"),
                    from: 0,
                    bytes: 1,
                    millis: 1,
                    bad_pieces: 0,
                    left: Some("slow: ".to_string() + &"x".repeat(500)),
                })
                .collect();
            // The most stripes a roster has, each with the most sources a record keeps,
            // each named and left at length.
            applied.stripes = (0..64 * 4)
                .map(|i| crate::agent::runtime::state::StripeUse {
                    stripe: i / 4,
                    member: "m".repeat(200),
                    from: u32::MAX,
                    blocks: u32::MAX,
                    left: Some("lied: ".to_string() + &"x".repeat(500)),
                    repair: false,
                })
                .collect();
            store.put(applied).unwrap();
        }
        let answer = crate::agent::runtime::status::node_status(&store, "n".into(), &[]).unwrap();
        let text = serde_json::to_string(&answer).unwrap();
        assert!(text.len() <= 7 * 1024, "{} bytes", text.len());
        assert_eq!(
            answer.updates[0].sources.len(),
            crate::agent::runtime::status::STATUS_SOURCES
        );
        assert_eq!(
            answer.updates[0].stripes.len(),
            crate::agent::runtime::status::STATUS_STRIPES
        );
        assert!(answer.updates.iter().skip(1).all(|u| u.stripes.is_empty()));
        assert!(
            answer.updates.len() >= 2,
            "the stripes crowd out the updates"
        );
        assert!(answer.updates.iter().skip(2).all(|u| u.sources.is_empty()));
    }

    /// Issue 29: with 200 names the 7 KiB answer held about 21 and said nothing of the rest.
    /// It says how many it left out, and a query naming some answers with those alone, so an
    /// old name is there; a hostile payload (bad names, too many) only narrows the answer.
    #[test]
    fn a_cut_answer_says_what_it_left_out_and_names_can_be_asked_for() {
        use crate::agent::runtime::status::{asked_names, node_status, MAX_ASKED_NAMES};
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(&dir.path().join("state")).unwrap();
        for i in 0..200u64 {
            let mut r = record(&format!("name-{i:03}.pp"), 1, Status::Applied);
            r.updated_at = 1_000 + i;
            store.put(r).unwrap();
        }
        let all = node_status(&store, "n".into(), &[]).unwrap();
        assert!(all.updates.len() < 200);
        assert_eq!(all.omitted, 200 - all.updates.len());
        assert!(
            !all.updates.iter().any(|u| u.name == "name-000.pp"),
            "the oldest is cut"
        );
        let asked = asked_names(b"name-000.pp\nname-199.pp\n../etc\n\na/b\n");
        assert_eq!(asked, ["name-000.pp", "name-199.pp"]);
        let some = node_status(&store, "n".into(), &asked).unwrap();
        let names: Vec<&str> = some.updates.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["name-199.pp", "name-000.pp"]);
        assert_eq!(some.omitted, 0);
        let many: String = (0..500).map(|i| format!("x{i}.pp\n")).collect();
        assert_eq!(asked_names(many.as_bytes()).len(), MAX_ASKED_NAMES);
    }
}
