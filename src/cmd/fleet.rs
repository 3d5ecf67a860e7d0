//! `p2pu fleet status`: asks every member (a Serf query answered by each node's handler from
//! its state dir) which updates it applied, and shows who failed and who did not answer, with
//! each member's address, p2pu version and the age of its newest update. Exits
//! [`exit::FAILED`] or [`exit::INCOMPLETE`] so scripts need not parse the table.

use crate::agent::runtime::state::Status;
use crate::agent::runtime::status::{fleet_status, MemberReport};
use crate::cmd::{exit, ConfigArg, Outcome};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::Env;
use std::time::Duration;

#[derive(Debug, clap::Subcommand)]
pub enum Fleet {
    /// Which members applied which update, which failed, which did not answer.
    Status(FleetStatus),
}

impl Fleet {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        match self {
            Fleet::Status(c) => c.run(env),
        }
    }
}

/// Which members applied which update, which failed, which did not answer.
///
/// Exits 0 when every member answered and nothing failed, 3 when some member's update failed,
/// 4 when none failed but some member did not answer.
#[derive(Debug, clap::Args)]
pub struct FleetStatus {
    /// Only this update name.
    name: Option<String>,
    #[command(flatten)]
    config: ConfigArg,
    /// How long to wait for answers, in seconds.
    #[arg(long, default_value_t = 3.0)]
    timeout: f64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

impl FleetStatus {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let config = Config::load(&self.config.resolve(env), None)?;
        let gossip = env.engines.gossip(&config)?;
        let timeout = Duration::try_from_secs_f64(self.timeout).map_err(|_| {
            Error::Usage(format!(
                "--timeout {}: not a duration in seconds",
                self.timeout
            ))
        })?;
        let reports = fleet_status(
            gossip.as_ref(),
            timeout,
            self.name.as_deref(),
            env.unix_now(),
        )?;
        let color = env.color;
        crate::cmd::emit(env, self.json, &reports, |r| table(r, color))?;
        Ok(match verdict(&reports) {
            exit::OK => Outcome::Success,
            code => Outcome::Status(code),
        })
    }
}

/// The exit status for these reports: failures first, then silence.
pub fn verdict(reports: &[MemberReport]) -> i32 {
    let failed = reports.iter().any(|r| {
        r.updates
            .iter()
            .flatten()
            .any(|u| u.status == Status::Failed)
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

    #[test]
    fn status_shows_how_old_each_members_newest_update_is() {
        let reports = fleet_status(&Fake, Duration::ZERO, None, 10_000).unwrap();
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
            addr: "10.0.0.1:7946".into(),
            alive: true,
            version: None,
            updates: status.map(|status| {
                vec![UpdateStatus {
                    name: "site.pp".into(),
                    seq: 1,
                    status,
                    reason: None,
                    at: 1,
                    bad_sources: Vec::new(),
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
        let reports = fleet_status(&Fake, Duration::ZERO, None, 10_000).unwrap();
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
            version: None,
            updates: vec![UpdateStatus {
                name: "site.pp".into(),
                seq: 7,
                status,
                reason: (status == Status::Failed).then(|| "puppet apply: exit 1".into()),
                at: 1,
                bad_sources: Vec::new(),
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
        let rows: Vec<MemberReport> = serde_json::from_str(&out).unwrap();
        let answered: Vec<_> = rows
            .iter()
            .map(|r| (r.node.as_str(), r.updates.is_some()))
            .collect();
        assert_eq!(answered, [("a", true), ("quiet", false)]);
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
