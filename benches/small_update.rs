//! Issue 8, items 2-4: a small (2 KiB) manifest to an 8-node lab, submit → last node's
//! `puppet apply` finished (median, max); the agent's latency from spool file written to
//! `puppet apply` started (median); the agent's footprint (RSS idle and after the updates,
//! binary size). Phases (gossip, download, puppet) are printed to show where the time goes.
//!
//! `cargo bench --bench small_update [-- [--nodes N] [--updates K]]` (root; default 8 nodes,
//! 10 updates: 80 latency samples).
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

fn fmt_ms(v: f64) -> String {
    format!("{:.0}", v * 1000.0)
}

fn main() -> Res<()> {
    let mut nodes = 8;
    let mut updates = 10;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--nodes" => nodes = args.next().ok_or("--nodes N")?.parse()?,
            "--updates" => updates = args.next().ok_or("--updates K")?.parse()?,
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
    for round in 0..updates {
        let path = manifest(dir.path(), round)?;
        let (start, seq) = submit(&lab, &path)?;
        let applied = wait_applied(&lab, nodes, "bench.pp", seq, Duration::from_secs(120))?;
        let last = applied.iter().cloned().fold(f64::MIN, f64::max);
        rollout.push(last - start);
        let mut latest_start = f64::MIN;
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
            }
            latest_start = latest_start.max(started.at);
            download.push(started.at - accepted.at);
            puppet.push(done.at - started.at);
        }
        last_started.push(latest_start - start);
        eprintln!("update {}/{updates}: {:.2} s", round + 1, last - start);
    }
    let after: Vec<(u64, u64)> = (1..=nodes)
        .filter_map(|i| agent_pid(&lab, i).and_then(rss_kib))
        .collect();
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
    println!("small update: 2 KiB manifest, {nodes} nodes, {updates} updates one after another (unshaped lo)");
    println!("machine: {}", machine());
    println!("| measure | median | max | goal |");
    println!("|---|---|---|---|");
    let rollout_max = max_of(&rollout);
    println!(
        "| submit → last node applied (s) | {:.2} | {:.2} | < 4 s median |",
        median(&mut rollout),
        rollout_max
    );
    let m = max_of(&last_started);
    println!(
        "| submit → last node's puppet apply started: p2pu's part (s) | {:.2} | {:.2} | |",
        median(&mut last_started),
        m
    );
    let lat_max = max_of(&all_latency);
    println!("| agent: spool written → puppet apply started, all nodes (ms) | {} | {} | < 50 ms median |", fmt_ms(median(&mut all_latency)), fmt_ms(lat_max));
    let m = max_of(&latency_local);
    println!(
        "|   … on the submitting node (payload local) (ms) | {} | {} | |",
        fmt_ms(median(&mut latency_local)),
        fmt_ms(m)
    );
    let m = max_of(&latency_other);
    println!(
        "|   … on the other nodes (includes the download) (ms) | {} | {} | |",
        fmt_ms(median(&mut latency_other)),
        fmt_ms(m)
    );
    let m = max_of(&gossip);
    println!(
        "| phase: submit → spool file written (ms) | {} | {} | |",
        fmt_ms(median(&mut gossip)),
        fmt_ms(m)
    );
    let m = max_of(&download);
    println!(
        "| phase: accepted → apply started (fetch + verify) (ms) | {} | {} | |",
        fmt_ms(median(&mut download)),
        fmt_ms(m)
    );
    let m = max_of(&puppet);
    println!(
        "| phase: puppet apply (ms) | {} | {} | |",
        fmt_ms(median(&mut puppet)),
        fmt_ms(m)
    );
    println!(
        "| agent RSS idle, max over nodes (VmRSS MiB) | {:.1} | | < 15 MiB |",
        mib(max_rss(&idle))
    );
    println!("| agent RSS after the updates, max over nodes (VmRSS / VmHWM MiB) | {:.1} / {:.1} | | < 15 MiB |", mib(max_rss(&after)), mib(max_hwm(&after)));
    println!(
        "| p2pu binary (release, stripped) (MiB) | {:.1} | | |",
        binary as f64 / (1 << 20) as f64
    );
    Ok(())
}
