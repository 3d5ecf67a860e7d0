//! `p2pu sync`: asks this node's agent to check for updates now, the round it otherwise runs
//! every `agent.catch_up_secs` (the fleet's newest heartbeat, then each member's newest
//! announcement of every name), through a request in its spool (`agent::runtime::sync`); waits
//! for the round's answer and for what it brought to settle, and exits with the outcome.

use crate::agent::runtime::spool;
use crate::agent::runtime::state::{Record, RolloutOutcome, StateStore, Status};
use crate::agent::runtime::sync::{self, Answer, Request};
use crate::cmd::{denied_state, exit, ConfigArg, Outcome};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::Env;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long the agent gets to run the round and answer: two Serf queries of 2 s, one more
/// per name this node lacks.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// Check for updates now: ask the fleet what this node missed, and apply it.
///
/// Asks the local agent (through its spool; run as root) to ask the fleet at once, as it does
/// every agent.catch_up_secs and whenever a member joins: the newest heartbeat, then every
/// member's newest announcement of each name. Waits for that round, then until every update it
/// brought (and any in progress here) settled. For operators, and for scripts after a reboot
/// or an outage. Exits 0 when this node is up to date (nothing was missing, or all of it was
/// applied), 3 when an update failed here, 4 when one had not settled by --timeout (or no other
/// member was alive to ask), 1 when the agent did not answer or could not ask the fleet.
#[derive(Debug, clap::Args)]
pub struct Sync {
    #[command(flatten)]
    config: ConfigArg,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Print JSON (a SyncReport) instead of text.
    #[arg(long)]
    json: bool,
}

/// `p2pu sync --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncReport {
    pub outcome: SyncOutcome,
    /// Other members Serf listed alive when the agent asked: with none, nobody was asked.
    pub members_alive: usize,
    /// Announcements this node lacked that the round found.
    pub found: usize,
    /// The newest record of each name that changed since the request, or is still in progress.
    pub updates: Vec<SyncedUpdate>,
}

/// One update as `p2pu sync` left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncedUpdate {
    pub name: String,
    pub seq: u64,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How `p2pu sync` ended; the exit status says the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncOutcome {
    /// Nothing was missing.
    UpToDate,
    /// What was missing is applied (or not for this node).
    Applied,
    Failed,
    /// Not settled by --timeout, waiting for its wave, halted, or nobody to ask.
    Incomplete,
}

impl SyncOutcome {
    fn exit_code(self) -> i32 {
        match self {
            SyncOutcome::UpToDate | SyncOutcome::Applied => exit::OK,
            SyncOutcome::Failed => exit::FAILED,
            SyncOutcome::Incomplete => exit::INCOMPLETE,
        }
    }
}

impl Sync {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let config = Config::load(&self.config.resolve(env), None)?;
        let agent = &config.site.agent;
        let store = StateStore::open_read_only(&agent.state_dir);
        store.names().map_err(|e| denied_state(e, "sync"))?;
        let deadline = Instant::now() + Duration::from_secs(self.timeout);
        let asked_at = env.unix_now();
        let id = sync::new_id();
        let request = sync::put(&agent.spool_dir, &Request::Asked(id.clone()))
            .map_err(|e| denied_state(e, "sync"))?;
        let answer = wait_for_answer(
            &agent.state_dir,
            &id,
            deadline.min(Instant::now() + ANSWER_WITHIN),
        )
        .map_err(|e| denied_state(e, "sync"))?;
        let Some(answer) = answer else {
            // Not left for an agent started later to answer nobody.
            let _ = spool::remove(&request);
            return Err(Error::Usage(format!(
                "the agent did not answer within {} s: is it running? (`systemctl status \
                 p2pu-agent`; its spool is {})",
                ANSWER_WITHIN
                    .min(Duration::from_secs(self.timeout))
                    .as_secs(),
                agent.spool_dir.display()
            )));
        };
        if let Some(error) = &answer.error {
            return Err(Error::Usage(format!(
                "the agent could not ask the fleet: {error}"
            )));
        }
        let settled = wait_settled(&store, &agent.spool_dir, asked_at, deadline)
            .map_err(|e| denied_state(e, "sync"))?;
        let updates: Vec<SyncedUpdate> = changed(&store, asked_at)
            .map_err(|e| denied_state(e, "sync"))?
            .into_iter()
            .map(|r| SyncedUpdate {
                name: r.name,
                seq: r.seq,
                status: r.status,
                reason: r.reason,
            })
            .collect();
        let report = SyncReport {
            outcome: outcome(&answer, &updates, settled),
            members_alive: answer.members_alive,
            found: answer.spooled,
            updates,
        };
        crate::cmd::emit(env, self.json, &report, text)?;
        Ok(match report.outcome.exit_code() {
            exit::OK => Outcome::Success,
            code => Outcome::Status(code),
        })
    }
}

fn wait_for_answer(
    state_dir: &Path,
    id: &str,
    until: Instant,
) -> std::result::Result<Option<Answer>, crate::agent::runtime::RuntimeError> {
    crate::cmd::poll_until(until, || sync::read_answer(state_dir, id))
}

/// Waits until the spool is empty (what the round spooled was taken) and nothing downloads,
/// applies or is checked here; false when `deadline` came first.
fn wait_settled(
    store: &StateStore,
    spool_dir: &Path,
    asked_at: u64,
    deadline: Instant,
) -> std::result::Result<bool, crate::agent::runtime::RuntimeError> {
    let settled = crate::cmd::poll_until(deadline, || {
        let busy = !spool::list(spool_dir)?.is_empty()
            || changed(store, asked_at)?.iter().any(|r| {
                matches!(
                    r.status,
                    Status::Pending | Status::Applying | Status::Checking | Status::Reverting
                )
            });
        Ok::<_, crate::agent::runtime::RuntimeError>((!busy).then_some(()))
    })?;
    Ok(settled.is_some())
}

/// The newest record of each name that changed since `since` (unix seconds) or is open.
fn changed(
    store: &StateStore,
    since: u64,
) -> std::result::Result<Vec<Record>, crate::agent::runtime::RuntimeError> {
    Ok(store
        .latest()?
        .into_iter()
        .filter(|r| r.updated_at >= since || r.received_at >= since || r.status.is_open())
        .collect())
}

fn outcome(answer: &Answer, updates: &[SyncedUpdate], settled: bool) -> SyncOutcome {
    let outcomes: Vec<RolloutOutcome> =
        updates.iter().map(|u| u.status.rollout_outcome()).collect();
    if outcomes.contains(&RolloutOutcome::Failed) {
        SyncOutcome::Failed
    } else if !settled
        || answer.members_alive == 0
        || outcomes
            .iter()
            .any(|o| matches!(o, RolloutOutcome::Open | RolloutOutcome::Halted))
    {
        SyncOutcome::Incomplete
    } else if updates.is_empty() && answer.spooled == 0 {
        SyncOutcome::UpToDate
    } else {
        SyncOutcome::Applied
    }
}

fn text(report: &SyncReport) -> String {
    let mut out = format!(
        "asked {} other member(s); found {} update(s) this node lacked\n",
        report.members_alive, report.found
    );
    for update in &report.updates {
        let reason = update
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{} seq {}: {}{reason}\n",
            update.name,
            update.seq,
            update.status.as_str()
        ));
    }
    out.push_str(match report.outcome {
        SyncOutcome::UpToDate => "up to date\n",
        SyncOutcome::Applied => "up to date: applied what was missing\n",
        SyncOutcome::Failed => "an update failed on this node; `p2pu status` says why\n",
        SyncOutcome::Incomplete if report.members_alive == 0 => {
            "no other member is alive: nobody was asked\n"
        }
        SyncOutcome::Incomplete => {
            "not settled yet: some update is still in progress, waiting or halted here\n"
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::testing::Run;

    fn site(dir: &Path) {
        let d = dir.display();
        std::fs::write(
            dir.join("site.toml"),
            format!("[agent]\nspool_dir = \"{d}/spool\"\nstate_dir = \"{d}/state\"\n"),
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("spool")).unwrap();
    }

    /// Plays the agent: takes the first sync request from the spool, records `found` as applied
    /// and answers it.
    fn fake_agent(dir: &Path, found: Option<&str>, error: Option<&str>) {
        let spool_dir = dir.join("spool");
        let state_dir = dir.join("state");
        let started = Instant::now();
        let id = loop {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no request came"
            );
            let request = spool::list(&spool_dir).unwrap().into_iter().find_map(|p| {
                let event = spool::read(&p).unwrap()?;
                spool::remove(&p).unwrap();
                Request::parse(&event.payload)
            });
            match request {
                Some(Ok(Request::Asked(id))) => break id,
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let store = StateStore::open(&state_dir).unwrap();
        if let Some(name) = found {
            let mut record = Record::pending(name, "00", b"x");
            record.status = Status::Applied;
            record.updated_at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            store.put(record).unwrap();
        }
        let answer = Answer {
            id,
            started_ms: 1,
            finished_ms: 2,
            members_alive: 2,
            spooled: usize::from(found.is_some()),
            error: error.map(str::to_string),
        };
        sync::write_answer(&state_dir, &answer).unwrap();
    }

    fn run_beside_agent(
        found: Option<&'static str>,
        error: Option<&'static str>,
    ) -> (i32, String, String) {
        let dir = tempfile::tempdir().unwrap();
        site(dir.path());
        let path = dir.path().to_path_buf();
        let agent = std::thread::spawn(move || fake_agent(&path, found, error));
        let argv = ["sync", "--config", "site.toml", "--json", "--timeout", "20"];
        let result = Run::new(dir.path()).run(&argv);
        agent.join().unwrap();
        result
    }

    #[test]
    fn sync_reports_what_the_agents_round_found_and_applied() {
        let (code, out, err) = run_beside_agent(Some("site.pp"), None);
        assert_eq!(code, 0, "{err}");
        let departures = crate::cmd::json::departures("sync", &serde_json::from_str(&out).unwrap());
        assert!(departures.is_empty(), "docs/json.md: {departures:?}");
        let report: SyncReport = crate::cmd::json::decode(out.as_bytes()).unwrap();
        assert_eq!(
            (report.outcome, report.found, report.members_alive),
            (SyncOutcome::Applied, 1, 2)
        );
        assert_eq!(report.updates[0].name, "site.pp");
        assert_eq!(report.updates[0].status, Status::Applied);

        let (code, out, err) = run_beside_agent(None, None);
        assert_eq!(code, 0, "{err}");
        let departures = crate::cmd::json::departures("sync", &serde_json::from_str(&out).unwrap());
        assert!(departures.is_empty(), "docs/json.md: {departures:?}");
        let report: SyncReport = crate::cmd::json::decode(out.as_bytes()).unwrap();
        assert_eq!(report.outcome, SyncOutcome::UpToDate);
    }

    #[test]
    fn sync_fails_naming_why_the_agent_could_not_ask() {
        let (code, out, err) = run_beside_agent(None, Some("`serf query` exit status: 1"));
        assert_eq!((code, out.as_str()), (1, ""));
        assert_eq!(
            err,
            "error: the agent could not ask the fleet: `serf query` exit status: 1\n"
        );
    }

    /// No agent takes the request: a clear error within --timeout, and the request is not left
    /// for an agent started later.
    #[test]
    fn sync_without_an_agent_says_so_and_leaves_no_request() {
        let dir = tempfile::tempdir().unwrap();
        site(dir.path());
        let argv = ["sync", "--config", "site.toml", "--timeout", "1"];
        let (code, _, err) = Run::new(dir.path()).run(&argv);
        assert_eq!(code, 1);
        assert!(
            err.starts_with("error: the agent did not answer within 1 s: is it running?"),
            "{err}"
        );
        assert!(spool::list(&dir.path().join("spool")).unwrap().is_empty());
    }

    #[test]
    fn the_json_report_has_no_unknown_fields() {
        let report = SyncReport {
            outcome: SyncOutcome::Incomplete,
            members_alive: 0,
            found: 0,
            updates: Vec::new(),
        };
        let text = serde_json::to_string(&report).unwrap();
        assert!(text.contains("\"incomplete\""), "{text}");
        let extra = text.replace("{", "{\"extra\":1,");
        assert!(serde_json::from_str::<SyncReport>(&extra).is_err());
    }
}
