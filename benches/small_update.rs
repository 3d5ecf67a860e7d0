//! Issue 8, items 2-4: a small (2 KiB) manifest to an 8-node lab, submit → last node's
//! `puppet apply` finished (median, max); the agent's latency from spool file written to
//! `puppet apply` started (median); the agent's footprint (RSS idle and after the updates,
//! binary size). Phases (the submit command, gossip, download, puppet) are printed to show
//! where the time goes, and beside every figure the one README.md last showed (the same row
//! of its table), so a regression shows in the next run.
//!
//! `cargo bench --bench small_update [-- [--nodes N] [--updates K] [--no-push]]` (root; default
//! 8 nodes, 10 updates: 80 latency samples; `--no-push` submits with `--no-push`, Serf's gossip
//! alone, as before the push). With `P2PU_BENCH_TRACE=1`, each update also prints node 2's
//! and the last node's agent log from `accepted` to `apply started`, timed, and at the end each
//! agent's threads, anonymous and file-backed RSS and the anonymous mappings of 128 KiB or more
//! (where an RSS regression shows which heap holds it).
//! Prints a table; asserts nothing about timings.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;
use support::*;

fn manifest(dir: &std::path::Path, round: usize) -> Res<std::path::PathBuf> {
    let path = dir.join("bench.pp");
    let mut text = format!(
        "file {{ \"${{settings::vardir}}/bench.out\": content => \"round {round}\\n\" }}\n"
    );
    while text.len() < 2048 {
        text.push_str("# padding to a 2 KiB manifest .........................................\n");
    }
    text.truncate(2047);
    text.push('\n');
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The spool file's write time, from the `spool=<ns>-...` field of an `accepted` line.
fn spool_time(line: &LogLine) -> Option<f64> {
    let field = line
        .text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("spool="))?;
    let nanos: u128 = field.split('-').next()?.parse().ok()?;
    Some(nanos as f64 / 1e9)
}

/// The table's rows; README's table of these figures uses the same words, which is how the
/// next run finds the last figures to print beside its own.
const SUBMIT_TO_APPLIED: &str = "submit → last node's puppet apply finished (s)";
const P2PU_PART: &str = "submit → last node's puppet apply started: p2pu's part (s)";
const AGENT_ALL: &str = "agent: spool file written → puppet apply started, all nodes (ms)";
const AGENT_LOCAL: &str = "… on the submitting node (payload local, SHA-256 checked) (ms)";
const AGENT_OTHER: &str = "… on the other nodes (metainfo + payload over HTTP, checked) (ms)";
const PHASE_SUBMIT: &str =
    "phase: the submit command (pre-broadcast check, torrent, seeding, signing, Serf event) (ms)";
const PHASE_GOSSIP: &str = "phase: submit → spool file written (ms)";
const PHASE_FIRST: &str = "phase: submit → the first other node's spool file (ms)";
const PHASE_LAST: &str =
    "phase: submit → the last node's spool file (the push, or Serf's gossip) (ms)";
const PHASE_FETCH: &str = "phase: accepted → puppet apply started (fetch + verify) (ms)";
const PHASE_PUPPET: &str = "phase: puppet apply itself, all nodes at once (ms)";
const RSS_IDLE: &str = "agent RSS idle, max over nodes (VmRSS MiB)";
const RSS_AFTER: &str = "agent RSS after the updates, max over nodes (VmRSS / VmHWM MiB)";

#[derive(Clone, Copy)]
enum Unit {
    S,
    Ms,
}

impl Unit {
    fn show(self, seconds: f64) -> String {
        match self {
            Unit::S => format!("{seconds:.2}"),
            Unit::Ms => format!("{:.0}", seconds * 1000.0),
        }
    }
}

/// The medians README.md's table of this bench shows, by row: the rows of the first table
/// after the line naming `cargo bench --bench small_update`, whose first column is one of
/// this bench's labels (bold and brackets dropped from the figure).
fn readme_figures() -> Vec<(String, String)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let Some(at) = text.find("cargo bench --bench small_update -- --nodes") else {
        return Vec::new();
    };
    text[at..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let (label, median) = (cells.get(1)?, cells.get(2)?);
            let median = median.replace("**", "");
            let median = median.split(" (").next().unwrap_or_default().trim();
            Some((label.to_string(), median.to_string()))
        })
        .collect()
}

/// Prints node `node`'s agent log from its `accepted` line of `seq` to its `apply started`,
/// each line with the milliseconds since `accepted`: where one node's latency went.
fn trace(lab: &p2pu::lab::Lab, node: usize, seq: u64) {
    let log = agent_log(lab, node);
    let want = format!("seq={seq}");
    let Some(from) = log
        .iter()
        .position(|l| l.text.contains(" accepted") && l.text.split_whitespace().any(|w| w == want))
    else {
        return;
    };
    let t0 = log[from].at;
    for line in &log[from..] {
        eprintln!(
            "  node {node} +{:.1} ms {}",
            (line.at - t0) * 1000.0,
            line.text
        );
        if line.text.contains("apply started") {
            break;
        }
    }
}

fn main() -> Res<()> {
    let mut nodes = 8;
    let mut updates = 10;
    let mut extra: Vec<&str> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--nodes" => nodes = args.next().ok_or("--nodes N")?.parse()?,
            "--updates" => updates = args.next().ok_or("--updates K")?.parse()?,
            "--no-push" => extra.push("--no-push"),
            _ => {} // cargo bench passes --bench
        }
    }
    let dir = bench_dir()?;
    eprintln!("starting a {nodes}-node lab...");
    let lab = start_lab(nodes, dir.path())?;
    // Let the agents settle (peer refresh, Serf convergence) before measuring idle RSS.
    std::thread::sleep(Duration::from_secs(5));
    let idle: Vec<(u64, u64)> = (1..=nodes)
        .filter_map(|i| agent_pid(&lab, i).and_then(rss_kib))
        .collect();

    let mut rollout = Vec::new();
    let mut last_started = Vec::new();
    let (mut latency_local, mut latency_other) = (Vec::new(), Vec::new());
    let (mut gossip, mut download, mut puppet) = (Vec::new(), Vec::new(), Vec::new());
    let mut submit_cmd = Vec::new();
    let (mut first_spooled, mut last_spooled) = (Vec::new(), Vec::new());
    for round in 0..updates {
        let path = manifest(dir.path(), round)?;
        let (start, seq) = submit_with(&lab, &path, &extra)?;
        submit_cmd.push(now_s() - start);
        let applied = wait_applied(&lab, nodes, "bench.pp", seq, Duration::from_secs(120))?;
        let last = applied.iter().cloned().fold(f64::MIN, f64::max);
        rollout.push(last - start);
        let mut latest_start = f64::MIN;
        let (mut first_other, mut last_spool) = (f64::MAX, f64::MIN);
        for node in 1..=nodes {
            let accepted = logged(&lab, node, " accepted", "bench.pp", seq);
            let started = logged(&lab, node, "apply started", "bench.pp", seq);
            let done = logged(&lab, node, " applied: ", "bench.pp", seq);
            let (Some(accepted), Some(started), Some(done)) = (accepted, started, done) else {
                return Err(format!(
                    "node {node}: missing log lines for seq {seq} (is the debug line logged?)"
                )
                .into());
            };
            if let Some(spooled) = spool_time(&accepted) {
                let latency = started.at - spooled;
                if node == 1 {
                    &mut latency_local
                } else {
                    &mut latency_other
                }
                .push(latency);
                gossip.push(spooled - start);
                if node != 1 {
                    first_other = first_other.min(spooled);
                }
                last_spool = last_spool.max(spooled);
            }
            latest_start = latest_start.max(started.at);
            download.push(started.at - accepted.at);
            puppet.push(done.at - started.at);
        }
        last_started.push(latest_start - start);
        if last_spool > f64::MIN {
            first_spooled.push(first_other - start);
            last_spooled.push(last_spool - start);
        }
        eprintln!("update {}/{updates}: {:.2} s", round + 1, last - start);
        if std::env::var_os("P2PU_BENCH_TRACE").is_some() {
            for node in [2, nodes] {
                trace(&lab, node, seq);
            }
        }
    }
    let after: Vec<(u64, u64)> = (1..=nodes)
        .filter_map(|i| agent_pid(&lab, i).and_then(rss_kib))
        .collect();
    if std::env::var_os("P2PU_BENCH_TRACE").is_some() {
        for i in 1..=nodes {
            let Some(pid) = agent_pid(&lab, i) else {
                continue;
            };
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let fields: Vec<&str> = status
                .lines()
                .filter(|l| {
                    ["Threads:", "RssAnon:", "RssFile:", "VmHWM:"]
                        .iter()
                        .any(|f| l.starts_with(f))
                })
                .collect();
            eprintln!("node {i} agent after the updates: {}", fields.join(", "));
            let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
            let mut head = String::new();
            for line in smaps.lines() {
                if line.chars().next().is_some_and(|c| c.is_ascii_hexdigit())
                    && line.contains('-')
                    && !line.starts_with("Anon")
                {
                    head = line.to_string();
                } else if let Some(kb) = line.strip_prefix("Anonymous:") {
                    let kb: u64 = kb
                        .trim()
                        .trim_end_matches(" kB")
                        .trim()
                        .parse()
                        .unwrap_or(0);
                    if kb >= 128 {
                        eprintln!("  {kb:>6} kB anon  {head}");
                    }
                }
            }
        }
    }
    let binary = std::fs::metadata(env!("CARGO_BIN_EXE_p2pu"))?.len();

    let max_of = |v: &[f64]| v.iter().cloned().fold(f64::MIN, f64::max);
    let mib = |k: u64| k as f64 / 1024.0;
    let max_rss = |v: &[(u64, u64)]| v.iter().map(|r| r.0).max().unwrap_or(0);
    let max_hwm = |v: &[(u64, u64)]| v.iter().map(|r| r.1).max().unwrap_or(0);
    let mut all_latency: Vec<f64> = latency_local
        .iter()
        .chain(&latency_other)
        .cloned()
        .collect();
    let readme = readme_figures();
    let how = if extra.is_empty() {
        "push and Serf event"
    } else {
        "Serf event only (--no-push)"
    };
    println!("small update: 2 KiB manifest, {nodes} nodes, {updates} updates one after another (unshaped lo), {how}");
    println!("machine: {}", machine());
    println!("| measure | median | max | README's last median | goal |");
    println!("|---|---|---|---|---|");
    let row = |label: &str, values: &mut Vec<f64>, unit: Unit, goal: &str| {
        let max = max_of(values);
        let (median, max) = (unit.show(median(values)), unit.show(max));
        let last = readme
            .iter()
            .find(|(l, _)| l == label)
            .map_or("-", |(_, v)| v.as_str());
        println!("| {label} | {median} | {max} | {last} | {goal} |");
    };
    row(SUBMIT_TO_APPLIED, &mut rollout, Unit::S, "< 4 s median");
    row(P2PU_PART, &mut last_started, Unit::S, "< 0.3 s median");
    row(AGENT_ALL, &mut all_latency, Unit::Ms, "< 50 ms median");
    row(AGENT_LOCAL, &mut latency_local, Unit::Ms, "");
    row(AGENT_OTHER, &mut latency_other, Unit::Ms, "");
    row(PHASE_SUBMIT, &mut submit_cmd, Unit::Ms, "");
    row(PHASE_GOSSIP, &mut gossip, Unit::Ms, "");
    row(PHASE_FIRST, &mut first_spooled, Unit::Ms, "");
    row(PHASE_LAST, &mut last_spooled, Unit::Ms, "");
    row(PHASE_FETCH, &mut download, Unit::Ms, "");
    row(PHASE_PUPPET, &mut puppet, Unit::Ms, "");
    let rss_idle = format!("{:.1}", mib(max_rss(&idle)));
    let rss_after = format!("{:.1} / {:.1}", mib(max_rss(&after)), mib(max_hwm(&after)));
    for (label, value) in [(RSS_IDLE, rss_idle), (RSS_AFTER, rss_after)] {
        let last = readme
            .iter()
            .find(|(l, _)| l == label)
            .map_or("-", |(_, v)| v.as_str());
        println!("| {label} | {value} | | {last} | < 15 MiB |");
    }
    println!(
        "| p2pu binary (release, stripped) (MiB) | {:.1} | | | |",
        binary as f64 / (1 << 20) as f64
    );
    Ok(())
}
