//! `p2pu mark-good|mark-bad NAME`: an operator's verdict on an update on this node, for when
//! the health check is a person. Checks the request against the records (to fail at once,
//! naming the update and what to do), spools it for the agent (`agent::runtime::mark`), reads
//! the agent's answer and waits until the record settled. The agent owns the state: this
//! command changes nothing itself.

use crate::agent::runtime::mark::{self, Answer, Request, Verdict};
use crate::agent::runtime::spool;
use crate::agent::runtime::state::{Record, StateStore, Status};
use crate::cmd::{denied_state, exit, ConfigArg, Outcome};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::Env;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long the agent gets to take the request and answer (it takes its spool at once).
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// Mark an update good on this node: end its health check as passed, or confirm it.
///
/// For sites where the health check is a person. When NAME's newest record (or --seq's) is
/// `checking`, its check ends now as passed and the update settles `applied`, so later waves
/// of its rollout go on. When it is already `applied`, the operator's confirmation is
/// recorded in its reason. Anything else is refused, saying why. Asks the local agent through
/// its spool (run as root) and waits until the record settled.
#[derive(Debug, clap::Args)]
pub struct MarkGood {
    #[command(flatten)]
    args: MarkArgs,
}

/// Mark an update bad on this node: apply the kept good version again.
///
/// For sites where the health check is a person. When NAME's newest record (or --seq's) is
/// `applied` or `checking`, the last good version before it, kept on this node, is applied
/// again (under the apply lock, as `rollout revert` does) and the update settles `reverted`,
/// "marked bad by operator to seq N": a failure for its rollout's --max-failures. Refused
/// when no earlier good version is kept. Asks the local agent through its spool (run as
/// root) and waits until the revert settled.
#[derive(Debug, clap::Args)]
pub struct MarkBad {
    #[command(flatten)]
    args: MarkArgs,
}

/// What both verdicts take.
#[derive(Debug, clap::Args)]
pub struct MarkArgs {
    /// The update's name.
    name: String,
    /// The update's seq; default: the newest of NAME on this node.
    #[arg(long)]
    seq: Option<u64>,
    #[command(flatten)]
    config: ConfigArg,
    /// Give up waiting for the record to settle after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Print JSON (a MarkReport) instead of text.
    #[arg(long)]
    json: bool,
}

/// `p2pu mark-good|mark-bad --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkReport {
    /// `good` or `bad`.
    pub verdict: Verdict,
    pub name: String,
    pub seq: u64,
    /// What the agent did.
    pub message: String,
    /// The record's status once settled (or as it stood at --timeout).
    pub status: Status,
    pub reason: Option<String>,
    /// `reverted`: the seq applied again.
    pub restored_seq: Option<u64>,
    /// Whether it settled by --timeout.
    pub settled: bool,
}

impl MarkGood {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        self.args.run(Verdict::Good, env)
    }
}

impl MarkBad {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        self.args.run(Verdict::Bad, env)
    }
}

impl MarkArgs {
    fn run(self, verdict: Verdict, env: &mut Env) -> Result<Outcome> {
        let command = verdict.command();
        // Refused before anything is read: the name goes into the request.
        crate::formats::announcement::validate_name(&self.name).map_err(|e| {
            Error::BadArgument(format!(
                "NAME: {e}; `p2pu status --all` lists the updates of this node"
            ))
        })?;
        let config = Config::load(&self.config.resolve(env), None)?;
        let agent = &config.site.agent;
        let store = StateStore::open_read_only(&agent.state_dir);
        store.names().map_err(|e| denied_state(e, command))?;
        // Judged here too, so a request the agent would refuse fails at once with its reason.
        let effect = mark::judge(&store, verdict, &self.name, self.seq, env.unix_now())
            .map_err(|e| denied_state(e, command))?
            .map_err(Error::Usage)?;
        let judged = effect.record().clone();
        let deadline = Instant::now() + Duration::from_secs(self.timeout);
        let request = Request {
            id: mark::new_id(),
            verdict,
            name: self.name.clone(),
            seq: Some(judged.seq),
        };
        let spooled =
            mark::put(&agent.spool_dir, &request).map_err(|e| denied_state(e, command))?;
        let within = ANSWER_WITHIN.min(Duration::from_secs(self.timeout));
        let answer = wait_for_answer(&agent.state_dir, &request.id, within)
            .map_err(|e| denied_state(e, command))?;
        let Some(answer) = answer else {
            // Not left for an agent started later to act on unasked.
            let _ = spool::remove(&spooled);
            return Err(Error::Usage(format!(
                "the agent did not answer within {} s: is it running? (`systemctl status \
                 p2pu-agent`; its spool is {})",
                within.as_secs(),
                agent.spool_dir.display()
            )));
        };
        if !answer.accepted {
            return Err(Error::Usage(format!(
                "the agent refused it: {}",
                answer.message
            )));
        }
        let (record, settled) =
            wait_settled(&store, &judged, deadline).map_err(|e| denied_state(e, command))?;
        let report = MarkReport {
            verdict,
            name: record.name.clone(),
            seq: record.seq,
            message: answer.message.clone(),
            status: record.status,
            reason: record.reason.clone(),
            restored_seq: record.restored_seq,
            settled,
        };
        crate::cmd::emit(env, self.json, &report, text)?;
        let wanted = match verdict {
            Verdict::Good => Status::Applied,
            Verdict::Bad => Status::Reverted,
        };
        Ok(match (settled, report.status == wanted) {
            (_, true) => Outcome::Success,
            (true, false) => Outcome::Status(exit::FAILED),
            (false, false) => Outcome::Status(exit::INCOMPLETE),
        })
    }
}

fn wait_for_answer(
    state_dir: &Path,
    id: &str,
    within: Duration,
) -> std::result::Result<Option<Answer>, crate::agent::runtime::RuntimeError> {
    crate::cmd::poll_until(Instant::now() + within, || mark::read_answer(state_dir, id))
}

/// Waits until the judged record leaves `checking` and `reverting`; the record, and false
/// when `deadline` came first.
fn wait_settled(
    store: &StateStore,
    judged: &Record,
    deadline: Instant,
) -> std::result::Result<(Record, bool), crate::agent::runtime::RuntimeError> {
    let current = || -> std::result::Result<Record, crate::agent::runtime::RuntimeError> {
        Ok(store
            .records(&judged.name)?
            .into_iter()
            .find(|r| r.seq == judged.seq)
            .unwrap_or_else(|| judged.clone()))
    };
    let settled = crate::cmd::poll_until(deadline, || {
        let record = current()?;
        Ok::<_, crate::agent::runtime::RuntimeError>(
            (!matches!(record.status, Status::Checking | Status::Reverting)).then_some(record),
        )
    })?;
    Ok(match settled {
        Some(record) => (record, true),
        None => (current()?, false),
    })
}

fn text(r: &MarkReport) -> String {
    let mut out = format!(
        "{}\n{} seq {}: {}",
        r.message,
        r.name,
        r.seq,
        r.status.as_str()
    );
    if let Some(reason) = &r.reason {
        out.push_str(&format!(" ({reason})"));
    }
    if !r.settled {
        out.push_str(" - not settled by --timeout; see `p2pu status`");
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use crate::agent::runtime::state::{Record, RecordKind, StateStore, Status};
    use crate::cmd::testing::run;

    /// A site.toml naming a state dir and spool under `dir`, with records of site.pp.
    fn site(dir: &std::path::Path, records: &[(u64, Status)]) {
        let d = dir.display();
        std::fs::write(
            dir.join("site.toml"),
            format!("[agent]\nstate_dir = \"{d}/state\"\nspool_dir = \"{d}/spool\"\n"),
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("spool")).unwrap();
        let store = StateStore::open(&dir.join("state")).unwrap();
        for &(seq, status) in records {
            let mut record = Record::pending("site.pp", &format!("{seq:040x}"), b"x");
            record.seq = seq;
            record.kind = RecordKind::Signed(crate::formats::announcement::Kind::Manifest);
            record.status = status;
            store.put(record).unwrap();
        }
    }

    fn spooled(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir.join("spool")).unwrap().count()
    }

    /// Each refusal names the update (or the flag and value) and says what to do; nothing is
    /// spooled for the agent.
    #[test]
    fn a_verdict_that_cannot_apply_is_refused_before_anything_is_spooled() {
        let dir = tempfile::tempdir().unwrap();
        site(dir.path(), &[(1, Status::Applied)]);
        let cases: [(&[&str], &str); 4] = [
            (
                &["mark-bad", "nope.pp"],
                "error: nope.pp: this node has no record of it; `p2pu status --all` lists the updates it has\n",
            ),
            (
                &["mark-bad", "site.pp"],
                "error: site.pp seq 1: no earlier good version is kept on this node, nothing to \
                 revert to (only a version applied before it is kept); `p2pu submit` a fixed \
                 version instead\n",
            ),
            (
                &["mark-good", "site.pp", "--seq", "9"],
                "error: site.pp seq 9: this node has no record of it (its newest is seq 1); \
                 leave out --seq to judge the newest\n",
            ),
            (
                &["mark-good", "../etc/passwd"],
                "error: NAME: unsafe payload name \"../etc/passwd\": contains `/`; `p2pu status \
                 --all` lists the updates of this node\n",
            ),
        ];
        for (args, want) in cases {
            let mut args = args.to_vec();
            args.extend(["--config", "site.toml"]);
            let (code, out, err) = run(dir.path(), &args);
            let usage = args[1].starts_with("..");
            let want_code = if usage { 2 } else { 1 };
            assert_eq!(
                (code, out.as_str(), err.as_str()),
                (want_code, "", want),
                "{args:?}"
            );
        }
        assert_eq!(spooled(dir.path()), 0);
    }

    /// With no agent to answer, the command says so and takes its request back.
    #[test]
    fn without_an_agent_the_request_is_taken_back_and_the_error_says_so() {
        let dir = tempfile::tempdir().unwrap();
        site(dir.path(), &[(1, Status::Checking)]);
        let (tx, rx) = std::sync::mpsc::channel();
        let cwd = dir.path().to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(run(
                &cwd,
                &[
                    "mark-good",
                    "site.pp",
                    "--config",
                    "site.toml",
                    "--timeout",
                    "2",
                ],
            ));
        });
        // The request is spooled while the command waits for the answer.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while spooled(dir.path()) == 0 {
            assert!(std::time::Instant::now() < deadline, "nothing spooled");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let (code, _, err) = rx.recv().unwrap();
        assert_eq!(code, 1);
        assert!(
            err.starts_with("error: the agent did not answer within 2 s: is it running?"),
            "{err}"
        );
        assert_eq!(spooled(dir.path()), 0, "the request was taken back");
    }
}
