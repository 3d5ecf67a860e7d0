//! `p2pu logs`: what an update left on the fleet's nodes: each node's kept output of it
//! (Puppet's, cut to the last 4,000 characters when recorded), its status, attempts and reason,
//! fetched with the `p2pu-logs` Serf query, whose answer is bounded (see
//! `agent::runtime::status::node_logs`). `--node` asks one node; `--json` prints [`NodeLogs`]
//! rows.

use crate::agent::runtime::status::{fleet_logs, NodeLogs};
use crate::cmd::{exit, ConfigArg, Outcome};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::Env;
use std::io::Write;
use std::time::Duration;

/// Show what an update left on the fleet's nodes: Puppet's output, status and reason.
///
/// Asks every member (or only --node) with a Serf query; each answers from its own state dir
/// with its newest record of NAME, its output cut to fit one answer (about 7 KiB). Exits 4 when
/// no member answered with a record of NAME. Each node answers with its newest record only;
/// --since and --until keep the answers whose status changed within the bounds (members
/// running a p2pu from before they existed answer without a time and are left out, counted).
#[derive(Debug, clap::Args)]
pub struct Logs {
    /// The update's name.
    name: String,
    /// Only this node (its Serf member name).
    #[arg(long)]
    node: Option<String>,
    #[command(flatten)]
    config: ConfigArg,
    /// How long to wait for answers, in seconds.
    #[arg(long, default_value_t = 3.0)]
    timeout: f64,
    #[command(flatten)]
    bounds: crate::cmd::TimeBounds,
    /// Only the last N lines of each node's output.
    #[arg(short = 'n', long = "lines", value_name = "N")]
    lines: Option<usize>,
    /// Then keep asking (every 2 s) and print each node's entry again when it changed, until
    /// interrupted (with --json, one JSON object a line, the first ones included).
    #[arg(short = 'f', long)]
    follow: bool,
    /// Stop following after this many seconds (for tests).
    #[arg(long, hide = true, value_name = "SECS", requires = "follow")]
    follow_for: Option<f64>,
    /// Print JSON (a list of NodeLogs) instead of text.
    #[arg(long)]
    json: bool,
}

/// How often `--follow` asks again.
const FOLLOW_EVERY: Duration = Duration::from_secs(2);

impl Logs {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        crate::formats::announcement::validate_name(&self.name)
            .map_err(|e| Error::Usage(format!("NAME {:?}: {e}", self.name)))?;
        let timeout = Duration::try_from_secs_f64(self.timeout).map_err(|_| {
            Error::Usage(format!(
                "--timeout {}: not a duration in seconds",
                self.timeout
            ))
        })?;
        let (since, until) = self.bounds.resolve(env.unix_now())?;
        let with_time = self.bounds.given();
        let config = Config::load(&self.config.resolve(env), None)?;
        let gossip = env.engines.gossip(&config)?;
        let untimed = std::cell::Cell::new(0usize);
        let ask = |gossip: &dyn crate::engines::Gossip| -> Result<Vec<NodeLogs>> {
            let mut logs =
                fleet_logs(gossip, &self.name, self.node.as_deref(), with_time, timeout)?;
            if with_time {
                let before = logs.len();
                logs.retain(|l| l.at.is_some());
                untimed.set(before - logs.len());
                logs.retain(|l| {
                    l.at.is_some_and(|at| {
                        since.is_none_or(|t| at >= t) && until.is_none_or(|t| at <= t)
                    })
                });
            }
            if let Some(n) = self.lines {
                for l in &mut logs {
                    l.output = last_lines(&l.output, n);
                }
            }
            Ok(logs)
        };
        let logs = ask(gossip.as_ref())?;
        if self.follow {
            let until = self
                .follow_for
                .map(|secs| std::time::Instant::now() + Duration::from_secs_f64(secs));
            let mut shown: Vec<NodeLogs> = Vec::new();
            let mut current = logs;
            loop {
                for l in current.iter().filter(|l| !shown.contains(l)) {
                    let out = if self.json {
                        crate::cmd::json::render_line("logs --follow", l)?
                    } else {
                        text(std::slice::from_ref(l))
                    };
                    env.stdout
                        .write_all(out.as_bytes())
                        .and_then(|()| env.stdout.flush())
                        .map_err(Error::io("writing to", "standard output"))?;
                }
                shown.retain(|s| !current.iter().any(|c| c.node == s.node));
                shown.extend(current);
                if until.is_some_and(|t| std::time::Instant::now() + FOLLOW_EVERY > t) {
                    return Ok(Outcome::Success);
                }
                std::thread::sleep(FOLLOW_EVERY);
                current = ask(gossip.as_ref())?;
            }
        }
        crate::cmd::emit(env, self.json, &logs, |logs| text(logs))?;
        if untimed.get() > 0 {
            writeln!(
                env.stderr,
                "p2pu logs: {} member(s) answered without a time (a p2pu from before \
                 --since) and are left out",
                untimed.get()
            )
            .map_err(Error::io("writing to", "standard error"))?;
        }
        if logs.is_empty() {
            let whom = self
                .node
                .as_deref()
                .map_or("no member answered".to_string(), |n| {
                    format!("{n} did not answer")
                });
            writeln!(
                env.stderr,
                "p2pu logs: {whom} with a record of {}; is the name right? \
                 (`p2pu fleet status` lists what each member has)",
                self.name
            )
            .map_err(Error::io("writing to", "standard error"))?;
            return Ok(Outcome::Status(exit::INCOMPLETE));
        }
        Ok(Outcome::Success)
    }
}

/// The last `n` lines of `output` (all of it when shorter).
fn last_lines(output: &str, n: usize) -> String {
    let lines: Vec<&str> = output.trim_end().lines().collect();
    let mut kept = lines[lines.len().saturating_sub(n)..].join("\n");
    if !kept.is_empty() {
        kept.push('\n');
    }
    kept
}

/// Every field comes from a member's answer (any keyring holder answers for itself), so
/// what a terminal would act on is dropped ([`printable`]), line by line in the output.
fn text(logs: &[NodeLogs]) -> String {
    use crate::agent::runtime::status::printable;
    let mut out = String::new();
    for l in logs {
        let (node, name) = (printable(&l.node), printable(&l.name));
        let attempts = match l.attempts {
            0 | 1 => String::new(),
            n => format!(" after {n} attempts"),
        };
        out.push_str(&format!(
            "== {node}: {name} seq {} {}{attempts}",
            l.seq,
            l.status.as_str()
        ));
        if let Some(reason) = &l.reason {
            out.push_str(&format!(": {}", printable(reason)));
        }
        out.push('\n');
        if l.cut {
            out.push_str("(the beginning of the output did not fit the answer)\n");
        }
        if !l.output.is_empty() {
            for line in l.output.trim_end().lines() {
                out.push_str(&printable(line));
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::runtime::state::{Record, StateStore, Status};
    use crate::agent::runtime::status::node_logs;
    use crate::cmd::testing::{site_dir, Run};
    use crate::engines::clients::Engines;
    use crate::engines::fake::FakeGossip;
    use std::sync::Arc;

    fn failed_record(output: &str) -> Record {
        let mut record = Record::pending("site.pp", &"00".repeat(20), b"x");
        record.seq = 7;
        record.status = Status::Failed;
        record.attempts = 3;
        record.reason = Some("Error: Could not find class ::nope (site.pp:1)".into());
        record.output = Some(output.into());
        record
    }

    /// `p2pu logs ARGS` with the site in `dir`, asking `gossip`.
    fn logs_with(
        dir: &tempfile::TempDir,
        gossip: &Arc<FakeGossip>,
        args: &[&str],
    ) -> (i32, String, String) {
        let argv: Vec<&str> = ["logs", "--config", "site.toml"]
            .iter()
            .chain(args)
            .copied()
            .collect();
        Run::new(dir.path())
            .engines(Engines::fakes().gossip_engine(gossip.clone()))
            .run(&argv)
    }

    /// What node `node` answers for `request`, from a state holding `record`.
    fn answer(node: &str, record: Record, request: &[u8]) -> Option<String> {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        store.put(record).unwrap();
        node_logs(&store, node, request, true).unwrap()
    }

    /// Puppet's output can carry file diffs and secrets a manifest prints, and any member may
    /// ask for it: by default a node shares the reason and the lines marked Error or Warning
    /// only (bounded), the whole output only under `agent.share_full_logs`.
    #[test]
    fn a_node_shares_only_error_and_warning_lines_unless_configured() {
        let output = "Notice: /Stage[main]/Main/File[/etc/app.conf]/content:\n\
                      --- /etc/app.conf\n+++ /tmp/puppet-file\n+password = hunter2\n\
                      Warning: Unknown variable: '::nope'\n\
                      \u{1b}[1;31mError: Could not apply: exit 1\u{1b}[0m\n";
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        store.put(failed_record(output)).unwrap();
        let shared = |full| {
            let text = node_logs(&store, "n2", b"site.pp", full).unwrap().unwrap();
            serde_json::from_str::<NodeLogs>(&text).unwrap()
        };
        let filtered = shared(false);
        assert!(!filtered.output.contains("hunter2"), "{}", filtered.output);
        let lines: Vec<&str> = filtered.output.lines().collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0], crate::agent::runtime::status::FILTERED_NOTE);
        assert!(lines[1].starts_with("Warning: Unknown variable"));
        assert!(lines[2].contains("Error: Could not apply"));
        assert_eq!(filtered.reason, failed_record("").reason);
        assert_eq!(shared(true).output, output);
        // Bounded: the last SHARED_LINES lines, each cut.
        let many = format!("Error: {}\n", "x".repeat(1000)).repeat(100);
        let cut = crate::agent::runtime::status::shared_output(&many, false);
        assert_eq!(
            cut.lines().count(),
            1 + crate::agent::runtime::status::SHARED_LINES
        );
        assert!(cut
            .lines()
            .all(|l| l.chars().count() <= crate::agent::runtime::status::SHARED_LINE_CHARS));
    }

    /// Hostile review of issue 28's filter: a record's reason is not filtered, and when Puppet
    /// failed without an `Error:` line (killed, crashed) it ends with the last lines of the
    /// output, whatever they are. A filtered answer shared 500 characters of it, more than the
    /// 200 `p2pu-status` already gives any member; now no more than that.
    #[test]
    fn a_filtered_answer_shares_no_more_of_the_reason_than_status_does() {
        let mut record = failed_record("Notice: x\n");
        let tail = "Notice: /Stage[main]/Main/Exec[fetch]/returns: token=SECRET";
        record.reason = Some(format!(
            "`puppet apply` signal: 9 (SIGKILL): ... | {} | {tail}",
            "Notice: x".repeat(30)
        ));
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        store.put(record).unwrap();
        let shared = |full| {
            let text = node_logs(&store, "n2", b"site.pp", full).unwrap().unwrap();
            serde_json::from_str::<NodeLogs>(&text)
                .unwrap()
                .reason
                .unwrap()
        };
        let filtered = shared(false);
        assert!(!filtered.contains("SECRET"), "{filtered}");
        assert_eq!(
            filtered.chars().count(),
            crate::agent::runtime::status::STATUS_REASON_CHARS
        );
        assert!(
            shared(true).contains("SECRET"),
            "shared whole when configured"
        );
    }

    #[test]
    fn a_node_answers_its_output_within_the_bound_keeping_the_end() {
        let short = "Notice: x\nError: Could not find class ::nope\n";
        let text = answer("n2", failed_record(short), b"site.pp").unwrap();
        let logs: NodeLogs = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (logs.output.as_str(), logs.cut, logs.attempts),
            (short, false, 3)
        );

        // 4,000 characters that JSON escapes to 6 bytes each: cut to the bound, end kept.
        let long = "\u{1}".repeat(3990) + "Error: last";
        let text = answer("n2", failed_record(&long), b"site.pp").unwrap();
        assert!(text.len() <= 7 * 1024, "{}", text.len());
        let logs: NodeLogs = serde_json::from_str(&text).unwrap();
        assert!(logs.cut && logs.output.ends_with("Error: last"), "{logs:?}");

        // Asked of another node, or of a name that could leave the state dir: no answer.
        assert_eq!(answer("n2", failed_record(short), b"site.pp\nn3"), None);
        assert!(answer("n2", failed_record(short), b"site.pp\nn2").is_some());
        assert_eq!(
            answer("n2", failed_record(short), b"../names/site.pp"),
            None
        );
        assert_eq!(answer("n2", failed_record(short), b"other.pp"), None);
    }

    /// `--since`/`--until` ask for each record's time (a third request line older nodes
    /// ignore) and keep the nodes whose status changed within the bounds; an answer without
    /// a time (an older node) is left out and counted.
    #[test]
    fn since_and_until_keep_the_nodes_whose_record_changed_within_them() {
        let timed = |node: &str, at: u64| {
            let mut record = failed_record("Error: x\n");
            record.updated_at = at;
            answer(node, record, b"site.pp\n\n/at").unwrap()
        };
        let asked_without = answer("n1", failed_record("Error: x\n"), b"site.pp").unwrap();
        assert!(!asked_without.contains("\"at\""), "{asked_without}");
        assert!(timed("n1", 5).contains("\"at\":5"));
        let gossip = Arc::new(FakeGossip {
            answers: vec![
                ("n1".into(), timed("n1", 500_000_000)),
                ("n2".into(), timed("n2", 1_500_000_000)),
                (
                    "n3".into(),
                    answer("n3", failed_record("Error: x\n"), b"site.pp").unwrap(),
                ),
            ],
            ..FakeGossip::default()
        });
        let dir = site_dir("");
        let run = |args: &[&str]| logs_with(&dir, &gossip, &[&["site.pp"], args].concat());
        let (code, out, err) = run(&["--since", "2001-09-09T01:46:40Z"]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.starts_with("== n2: ") && !out.contains("== n1") && !out.contains("== n3"),
            "{out}"
        );
        assert!(err.contains("1 member(s) answered without a time"), "{err}");
        let (_, out, _) = run(&["--until", "2001-09-09T01:46:40Z", "--json"]);
        let rows: Vec<NodeLogs> = crate::cmd::json::decode(out.as_bytes()).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.node.as_str()).collect::<Vec<_>>(),
            ["n1"]
        );
        let (code, _, err) = run(&["--since", "yesterday-ish"]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("--since"), "{err}");
    }

    /// Hostile review: a member's logs answer (its output, reason and name) cannot put an
    /// escape sequence, a carriage return or a bidirectional override on the operator's
    /// terminal; the output's own lines stay lines.
    #[test]
    fn a_members_logs_answer_reaches_the_terminal_without_control_characters() {
        let output = "Error: \x1b]0;owned\x07bad\r\u{202E}gnp.exe\nNotice: \x1b[2Jdone\n";
        let mut record = failed_record(output);
        record.reason = Some("\x1b[31mred".into());
        let n2 = answer("n2", record, b"site.pp").unwrap();
        let logs: Vec<NodeLogs> = vec![serde_json::from_str(&n2).unwrap()];
        let shown = text(&logs);
        assert!(
            !shown
                .chars()
                .any(|c| (c.is_control() && c != '\n') || c == '\u{202E}'),
            "{shown:?}"
        );
        assert!(shown.contains("Error: ]0;ownedbadgnp.exe\n"), "{shown}");
    }

    #[test]
    fn logs_shows_each_answering_nodes_output_and_exits_4_without_one() {
        let output = "Notice: Compiled catalog\nError: Could not find class ::nope\n";
        let n2 = answer("n2", failed_record(output), b"site.pp").unwrap();
        let gossip = Arc::new(FakeGossip {
            answers: vec![
                ("n1".into(), String::new()),
                ("n2".into(), n2.clone()),
                // Claims to be another node: left out.
                ("n3".into(), n2),
            ],
            ..FakeGossip::default()
        });
        let dir = site_dir("");
        let run = |args: &[&str]| logs_with(&dir, &gossip, args);
        let (code, out, err) = run(&["site.pp"]);
        assert_eq!((code, err.as_str()), (0, ""));
        assert_eq!(
            out,
            "== n2: site.pp seq 7 failed after 3 attempts: Error: Could not find class ::nope \
             (site.pp:1)\nNotice: Compiled catalog\nError: Could not find class ::nope\n"
        );
        assert_eq!(gossip.queries(), ["p2pu-logs"]);
        let (code, out, _) = run(&["site.pp", "--node", "n2", "--json"]);
        assert_eq!(code, 0);
        let rows: Vec<NodeLogs> = crate::cmd::json::decode(out.as_bytes()).unwrap();
        assert_eq!(rows.len(), 1);
        let (code, _, err) = run(&["site.pp", "--node", "n1"]);
        assert_eq!(code, exit::INCOMPLETE);
        assert!(
            err.contains("n1 did not answer with a record of site.pp"),
            "{err}"
        );
        let (code, _, err) = run(&["../x"]);
        assert_eq!(code, 1, "{err}");
        // -n keeps each node's last lines; --follow prints an unchanged entry once, as a JSON
        // line as docs/json.md says.
        let (code, out, _) = run(&["site.pp", "-n", "1"]);
        assert_eq!(code, 0);
        assert!(
            out.ends_with("(site.pp:1)\nError: Could not find class ::nope\n"),
            "{out}"
        );
        let (code, out, err) = run(&["site.pp", "--follow", "--follow-for", "2.5", "--json"]);
        assert_eq!(code, 0, "{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "{out}");
        let line: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        let departures = crate::cmd::json::departures("logs --follow", &line);
        assert!(departures.is_empty(), "{departures:?}");
        assert_eq!(gossip.queries().len(), 6, "asked again while following");
    }
}
