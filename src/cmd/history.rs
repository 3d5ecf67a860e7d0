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
use std::collections::BTreeMap;

/// List this node's past updates and what became of each, newest first.
///
/// Every kept record (the last 20 of each name): seq, kind, status, when its status last
/// changed (UTC), the attempts it took and the reason (Puppet's first `Error:` line for a
/// failed manifest). Needs root, like `p2pu status`. TIME is RFC 3339
/// (2026-11-30T03:04:05Z), a UTC date (2026-11-30) or an age (90s, 30m, 2h, 7d, 2w). The table
/// has no colour; NO_COLOR is honoured everywhere p2pu colours.
#[derive(Debug, clap::Args)]
pub struct History {
    /// Only this update name.
    name: Option<String>,
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    bounds: crate::cmd::TimeBounds,
    /// Only the newest N records (after --since and --until).
    #[arg(short = 'n', long = "lines", value_name = "N")]
    lines: Option<usize>,
    /// Then keep watching: print each record as its status changes, until interrupted (with
    /// --json, one JSON object a line, the first ones included).
    #[arg(short = 'f', long, conflicts_with = "until")]
    follow: bool,
    /// Stop following after this many seconds (for tests).
    #[arg(long, hide = true, value_name = "SECS", requires = "follow")]
    follow_for: Option<f64>,
    /// A table for scripts: no header line (the table has no colour; p2pu does not page).
    #[arg(long, conflicts_with = "json")]
    plain: bool,
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
        let now = env.unix_now();
        let (since, until) = self.bounds.resolve(now)?;
        let store = StateStore::open_read_only(&config.site.agent.state_dir);
        let mut records =
            read(&store, self.name.as_deref()).map_err(|e| denied_state(e, "history"))?;
        records.retain(|r| {
            since.is_none_or(|t| r.updated_at >= t) && until.is_none_or(|t| r.updated_at <= t)
        });
        // Seqs of different names (and legacy dates) do not compare: order by arrival.
        records
            .sort_by(|a, b| (b.received_at, b.seq, &b.name).cmp(&(a.received_at, a.seq, &a.name)));
        if let Some(n) = self.lines {
            records.truncate(n);
        }
        if self.follow && self.json {
            // JSON lines: one entry a line, oldest first, then each change.
            records.reverse();
            for record in &records {
                line(env, record)?;
            }
        } else {
            let table_rows: Vec<String> = records.iter().map(|r| r.shown_reason(now)).collect();
            let report = HistoryReport {
                updates: records.iter().map(HistoryEntry::of).collect(),
            };
            let plain = self.plain;
            crate::cmd::emit(env, self.json, &report, |r| {
                let text = table(r, &table_rows);
                match plain {
                    // The header is the first line.
                    true => text
                        .split_once('\n')
                        .map_or(text.clone(), |(_, rows)| rows.into()),
                    false => text,
                }
            })?;
        }
        if self.follow {
            self.follow(env, &store)?;
        }
        Ok(Outcome::Success)
    }

    /// Prints each record whose status changes from now on (a row, or a JSON line), polling
    /// the state once a second, until interrupted (or --follow-for).
    fn follow(&self, env: &mut Env, store: &StateStore) -> Result<()> {
        let records = || read(store, self.name.as_deref()).map_err(|e| denied_state(e, "history"));
        type Known = BTreeMap<(String, u64), (Status, u64)>;
        let remember = |known: &mut Known, records: &[Record]| {
            for r in records {
                known.insert((r.name.clone(), r.seq), (r.status, r.updated_at));
            }
        };
        let mut known = Known::new();
        remember(&mut known, &records()?);
        let until = self
            .follow_for
            .map(|secs| std::time::Instant::now() + std::time::Duration::from_secs_f64(secs));
        while until.is_none_or(|t| std::time::Instant::now() < t) {
            std::thread::sleep(std::time::Duration::from_millis(250));
            let mut changed: Vec<Record> = records()?
                .into_iter()
                .filter(|r| known.get(&(r.name.clone(), r.seq)) != Some(&(r.status, r.updated_at)))
                .collect();
            changed.sort_by_key(|r| (r.updated_at, r.received_at, r.seq));
            for record in &changed {
                if self.json {
                    line(env, record)?;
                } else {
                    let reason = record.shown_reason(env.unix_now());
                    let text = row(&HistoryEntry::of(record), &reason);
                    write(env, &text)?;
                }
            }
            remember(&mut known, &changed);
        }
        Ok(())
    }
}

/// One entry as a JSON line (`history --follow --json`, docs/json.md).
fn line(env: &mut Env, record: &Record) -> Result<()> {
    let text = crate::cmd::json::render_line("history --follow", &HistoryEntry::of(record))?;
    write(env, &text)
}

fn write(env: &mut Env, text: &str) -> Result<()> {
    use std::io::Write;
    env.stdout
        .write_all(text.as_bytes())
        .and_then(|()| env.stdout.flush())
        .map_err(Error::io("writing to", "standard output"))
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

/// One table row.
fn row(u: &HistoryEntry, reason: &str) -> String {
    format!(
        "{:<20} {:<24} {:>14} {:<9} {:<8} {:>8} {}\n",
        utc(u.at),
        u.name,
        u.seq,
        u.kind,
        u.status.as_str(),
        u.attempts,
        reason
    )
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
        out.push_str(&row(u, reason));
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

    /// A site.toml whose state dir is `state/` beside it (not made yet).
    fn state_site() -> tempfile::TempDir {
        let dir = testing::site_dir("");
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("site.toml"),
            format!("[agent]\nstate_dir = \"{d}/state\"\n"),
        )
        .unwrap();
        dir
    }

    #[test]
    fn every_kept_record_newest_first_with_attempts_and_reason() {
        let dir = state_site();
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
        let (_, plain, _) = history(dir.path(), &["--plain"]);
        assert_eq!(plain.lines().collect::<Vec<_>>(), lines[1..], "{plain}");
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

    /// A state with site.pp 1 (changed at ..005), motd 9 (..055) and site.pp 2 (..105).
    fn three_records() -> tempfile::TempDir {
        let dir = state_site();
        let store = StateStore::open(&dir.path().join("state")).unwrap();
        for (name, seq, at) in [
            ("site.pp", 1, 1_800_000_000),
            ("motd.tar.gz", 9, 1_800_000_050),
            ("site.pp", 2, 1_800_000_100),
        ] {
            store.put(record(name, seq, Status::Applied, at)).unwrap();
        }
        dir
    }

    fn seqs(out: &str) -> Vec<u64> {
        crate::cmd::json::decode::<HistoryReport>(out.as_bytes())
            .unwrap()
            .updates
            .iter()
            .map(|u| u.seq)
            .collect()
    }

    /// --since and --until bound when a record's status changed (RFC 3339 or an age), -n
    /// keeps the newest; a time that is neither is a usage error naming the flag.
    #[test]
    fn since_until_and_n_select_the_records() {
        let dir = three_records();
        let json = |args: &[&str]| {
            let mut all = args.to_vec();
            all.push("--json");
            let (code, out, err) = history(dir.path(), &all);
            assert_eq!(code, 0, "{err}");
            seqs(&out)
        };
        assert_eq!(json(&[]), [2, 9, 1]);
        assert_eq!(json(&["--since", "2027-01-15T08:00:55Z"]), [2, 9]);
        assert_eq!(json(&["--until", "2027-01-15T10:00:55+02:00"]), [9, 1]);
        assert_eq!(
            json(&[
                "--since",
                "2027-01-15T08:00:06Z",
                "--until",
                "2027-01-15T08:01:00Z"
            ]),
            [9]
        );
        assert_eq!(json(&["-n", "2"]), [2, 9]);
        assert_eq!(json(&["site.pp", "--lines", "1"]), [2]);
        // An age counts back from now (so far back: every record).
        assert_eq!(json(&["--since", "99999w"]).len(), 3);
        let (code, out, err) = history(dir.path(), &["--since", "yesterday"]);
        assert_eq!((code, out.as_str()), (2, ""));
        assert_eq!(
            err,
            "error: --since \"yesterday\" is not a time: give RFC 3339 (2026-11-30T03:04:05Z), \
             a UTC date (2026-11-30) or an age such as 90s, 30m, 2h, 7d, 2w\n"
        );
        let (code, _, err) = history(dir.path(), &["--follow", "--until", "1h"]);
        assert_eq!(code, 2, "{err}");
    }

    /// --follow prints what changes after it started (a JSON line each, after the ones
    /// that were there), and nothing twice.
    #[test]
    fn follow_prints_each_change_as_it_comes() {
        let dir = three_records();
        let state = dir.path().join("state");
        let writer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(700));
            let store = StateStore::open(&state).unwrap();
            store
                .update("site.pp", 2, |r| {
                    r.settle(
                        Status::Reverted,
                        Some("marked bad".into()),
                        None,
                        1_800_000_200,
                    )
                })
                .unwrap();
        });
        let (code, out, err) = history(
            dir.path(),
            &["site.pp", "--follow", "--follow-for", "2", "--json"],
        );
        writer.join().unwrap();
        assert_eq!(code, 0, "{err}");
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let got: Vec<(u64, &str)> = lines
            .iter()
            .map(|l| (l["seq"].as_u64().unwrap(), l["status"].as_str().unwrap()))
            .collect();
        assert_eq!(
            got,
            [(1, "applied"), (2, "applied"), (2, "reverted")],
            "{out}"
        );
        for line in &lines {
            let departures = crate::cmd::json::departures("history --follow", line);
            assert!(departures.is_empty(), "{departures:?}");
        }
    }

    #[test]
    fn a_name_that_would_leave_the_state_dir_is_refused() {
        let dir = testing::site_dir("");
        let (code, _, err) = history(dir.path(), &["../../etc/passwd"]);
        assert_eq!(code, 1);
        assert!(err.contains("NAME \"../../etc/passwd\""), "{err}");
    }
}
