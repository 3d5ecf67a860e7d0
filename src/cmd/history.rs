//! `p2pu history`: this node's past updates from the agent's state dir, every kept record (the
//! last 20 of each name) newest first, with its seq, kind, status, when it last changed, how
//! many attempts it took and why. Read-only, like `status`; `--json` prints [`HistoryReport`].

use crate::agent::runtime::state::{Record, StateStore, Status};
use crate::agent::runtime::RuntimeError;
use crate::civil::utc;
use crate::cmd::denied_state;
use crate::cmd::{ConfigArg, Outcome};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::Env;
use serde::{Deserialize, Serialize};

/// List this node's past updates and what became of each, newest first.
///
/// Every kept record (the last 20 of each name): seq, kind, status, when its status last
/// changed (UTC), the attempts it took and the reason (Puppet's first `Error:` line for a
/// failed manifest). Needs root, like `p2pu status`.
#[derive(Debug, clap::Args)]
pub struct History {
    /// Only this update name.
    name: Option<String>,
    #[command(flatten)]
    config: ConfigArg,
    /// Print JSON (a HistoryReport) instead of a table.
    #[arg(long)]
    json: bool,
}

/// `p2pu history --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryReport {
    /// Newest first.
    pub updates: Vec<HistoryEntry>,
}

/// One past update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryEntry {
    pub name: String,
    pub seq: u64,
    pub kind: String,
    pub status: Status,
    /// When the announcement was accepted (or held), seconds since the epoch.
    pub received_at: u64,
    /// When its status last changed, seconds since the epoch.
    pub at: u64,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// While retrying: when the next attempt is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<u64>,
}

impl HistoryEntry {
    fn of(record: &Record) -> HistoryEntry {
        HistoryEntry {
            name: record.name.clone(),
            seq: record.seq,
            kind: record.kind.to_string(),
            status: record.status,
            received_at: record.received_at,
            at: record.updated_at,
            attempts: record.attempts,
            reason: record.reason.clone(),
            next_attempt_at: record.next_attempt_at,
        }
    }
}

impl History {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let config = Config::load(&self.config.resolve(env), None)?;
        if let Some(name) = &self.name {
            // The name makes a path in the state dir.
            crate::formats::announcement::validate_name(name)
                .map_err(|e| Error::Usage(format!("NAME {name:?}: {e}")))?;
        }
        let store = StateStore::open_read_only(&config.site.agent.state_dir);
        let mut records =
            read(&store, self.name.as_deref()).map_err(|e| denied_state(e, "history"))?;
        // Seqs of different names (and legacy dates) do not compare: order by arrival.
        records
            .sort_by(|a, b| (b.received_at, b.seq, &b.name).cmp(&(a.received_at, a.seq, &a.name)));
        let now = env.unix_now();
        let table_rows: Vec<String> = records.iter().map(|r| r.shown_reason(now)).collect();
        let report = HistoryReport {
            updates: records.iter().map(HistoryEntry::of).collect(),
        };
        crate::cmd::emit(env, self.json, &report, |r| table(r, &table_rows))?;
        Ok(Outcome::Success)
    }
}

fn read(store: &StateStore, name: Option<&str>) -> Result<Vec<Record>, RuntimeError> {
    let names = match name {
        Some(name) => vec![name.to_string()],
        None => store.names()?,
    };
    let mut all = Vec::new();
    for name in names {
        all.extend(store.records(&name)?);
    }
    Ok(all)
}

/// `reasons`: each row's reason as shown (a retry says when it is due).
fn table(report: &HistoryReport, reasons: &[String]) -> String {
    if report.updates.is_empty() {
        return "no updates yet\n".into();
    }
    let mut out = format!(
        "{:<20} {:<24} {:>14} {:<9} {:<8} {:>8} {}\n",
        "WHEN (UTC)", "NAME", "SEQ", "KIND", "STATUS", "ATTEMPTS", "REASON"
    );
    for (u, reason) in report.updates.iter().zip(reasons) {
        out.push_str(&format!(
            "{:<20} {:<24} {:>14} {:<9} {:<8} {:>8} {}\n",
            utc(u.at),
            u.name,
            u.seq,
            u.kind,
            u.status.as_str(),
            u.attempts,
            reason
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::runtime::state::RecordKind;
    use crate::cmd::testing::{self, Run};
    use crate::formats::announcement::Kind;

    fn record(name: &str, seq: u64, status: Status, received_at: u64) -> Record {
        let mut record = Record::pending(name, &"00".repeat(20), b"x");
        record.seq = seq;
        record.kind = RecordKind::Signed(Kind::Manifest);
        record.status = status;
        record.received_at = received_at;
        record.updated_at = received_at + 5;
        record
    }

    fn history(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
        let argv: Vec<&str> = ["history", "--config", "site.toml"]
            .iter()
            .chain(args)
            .copied()
            .collect();
        Run::new(dir).run(&argv)
    }

    #[test]
    fn every_kept_record_newest_first_with_attempts_and_reason() {
        let dir = testing::site_dir("");
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("site.toml"),
            format!("[agent]\nstate_dir = \"{d}/state\"\n"),
        )
        .unwrap();
        let (code, out, _) = history(dir.path(), &[]);
        assert_eq!((code, out.as_str()), (0, "no updates yet\n"));
        assert!(!dir.path().join("state").exists(), "history created state");

        let store = StateStore::open(&dir.path().join("state")).unwrap();
        let mut failed = record("site.pp", 2, Status::Failed, 1_800_000_100);
        failed.attempts = 3;
        failed.reason = Some("Error: Could not find class ::nope (site.pp:1)".into());
        store
            .put(record("site.pp", 1, Status::Applied, 1_800_000_000))
            .unwrap();
        store.put(failed).unwrap();
        store
            .put(record("motd.tar.gz", 9, Status::Applied, 1_800_000_050))
            .unwrap();

        let (code, out, err) = history(dir.path(), &[]);
        assert_eq!((code, err.as_str()), (0, ""));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(lines[0].starts_with("WHEN (UTC)"), "{out}");
        assert!(
            lines[1].starts_with("2027-01-15 08:01:45  site.pp")
                && lines[1].contains(" failed  ")
                && lines[1].ends_with("       3 Error: Could not find class ::nope (site.pp:1)"),
            "{out}"
        );
        assert!(lines[2].contains("motd.tar.gz"), "{out}");
        assert!(
            lines[3].contains("site.pp") && lines[3].contains("applied"),
            "{out}"
        );

        let (code, out, _) = history(dir.path(), &["site.pp", "--json"]);
        assert_eq!(code, 0);
        let report: HistoryReport = crate::cmd::json::decode(out.as_bytes()).unwrap();
        let seqs: Vec<(u64, Status, u32)> = report
            .updates
            .iter()
            .map(|u| (u.seq, u.status, u.attempts))
            .collect();
        assert_eq!(seqs, [(2, Status::Failed, 3), (1, Status::Applied, 0)]);
        let extra = out.replacen("\"seq\"", "\"surprise\":1,\"seq\"", 1);
        assert!(serde_json::from_str::<HistoryReport>(&extra).is_err());
    }

    #[test]
    fn a_name_that_would_leave_the_state_dir_is_refused() {
        let dir = testing::site_dir("");
        let (code, _, err) = history(dir.path(), &["../../etc/passwd"]);
        assert_eq!(code, 1);
        assert!(err.contains("NAME \"../../etc/passwd\""), "{err}");
    }
}
