//! How long an update takes to reach every live node once what kept it away clears (issue 25),
//! beside `agent.catch_up_secs` (an hour here, so the periodic round never helps) and beside
//! the plain event path (every member up), measured in the same run on the same lab.
//!
//! `cargo bench --bench converge` (root). Cases, on one lab of 3 nodes, one update each:
//! - every member up: `submit --once`, from the submit to the last node applied;
//! - Serf restarted: node 3's Serf is down while the update goes out once; from its Serf
//!   answering again to node 3 applied (its member-join round);
//! - joined late: node 3 is down altogether; from its start to node 3 applied (its first
//!   round, and the member-join round);
//! - sender's Serf restarted: the fleet's Lamport clock is moved on, node 3's Serf rejoins, then
//!   node 1's Serf restarts and the update goes out from it at once (re-sends on); from node 1's
//!   Serf answering again to every node applied.
//!
//! Prints a table; asserts nothing about timings (the machine is shared and noisy).

#[path = "support/mod.rs"]
mod support;

use p2pu::lab::{Lab, LabOptions};
use std::path::Path;
use std::time::Duration;
use support::*;

const NODES: usize = 3;
const CATCH_UP_SECS: u64 = 3600;
const LIMIT: Duration = Duration::from_secs(300);

fn manifest(dir: &Path, name: &str) -> Res<std::path::PathBuf> {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("file {{ \"${{settings::vardir}}/{name}.out\": content => \"{name}\\n\" }}\n"),
    )?;
    Ok(path)
}

fn run(lab: &Lab, node: usize, args: &[&str]) -> Res<String> {
    let out = lab.p2pu(node, args)?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("{args:?}: {text}{}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(text)
}

fn seq_of(json: &str) -> Res<u64> {
    let value: serde_json::Value = serde_json::from_str(json)?;
    value["seq"].as_u64().ok_or_else(|| "no seq".into())
}

fn latest(times: &[f64]) -> f64 {
    times.iter().copied().fold(f64::MIN, f64::max)
}

fn main() -> Res<()> {
    let dir = bench_dir()?;
    std::env::set_var("P2PU_LOG", "info");
    let mut options = LabOptions::new(NODES, dir.path().join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    options.start_agent = true;
    options.site_overrides = Some(format!("[agent]\ncatch_up_secs = {CATCH_UP_SECS}\n"));
    let mut lab = Lab::start(options)?;
    let mut rows: Vec<(&str, f64)> = Vec::new();

    let a = manifest(dir.path(), "up.pp")?;
    let start = now_s();
    let seq = seq_of(&run(
        &lab,
        1,
        &["submit", a.to_str().ok_or("path")?, "--once", "--json"],
    )?)?;
    rows.push((
        "every member up",
        latest(&wait_applied(&lab, NODES, "up.pp", seq, LIMIT)?) - start,
    ));

    lab.stop_serf(3)?;
    let b = manifest(dir.path(), "serf.pp")?;
    let seq = seq_of(&run(
        &lab,
        1,
        &["submit", b.to_str().ok_or("path")?, "--once", "--json"],
    )?)?;
    wait_applied(&lab, 2, "serf.pp", seq, LIMIT)?;
    lab.start_serf(3)?;
    let cleared = now_s();
    rows.push((
        "Serf restarted",
        latest(&wait_applied(&lab, NODES, "serf.pp", seq, LIMIT)?) - cleared,
    ));

    lab.stop_node(3)?;
    let c = manifest(dir.path(), "late.pp")?;
    let seq = seq_of(&run(
        &lab,
        1,
        &["submit", c.to_str().ok_or("path")?, "--once", "--json"],
    )?)?;
    wait_applied(&lab, 2, "late.pp", seq, LIMIT)?;
    let cleared = now_s();
    lab.start_node(3)?;
    rows.push((
        "node joined late",
        latest(&wait_applied(&lab, NODES, "late.pp", seq, LIMIT)?) - cleared,
    ));

    for _ in 0..40 {
        lab.serf_event(2, "p2pu-noise", b"x")?;
    }
    std::thread::sleep(Duration::from_secs(2));
    lab.stop_serf(3)?;
    lab.start_serf(3)?;
    lab.wait_members()?;
    let d = manifest(dir.path(), "sender.pp")?;
    let sig = dir.path().join("sender.sig");
    let (d, sig) = (d.to_str().ok_or("path")?, sig.to_str().ok_or("path")?);
    run(&lab, 1, &["submit", d, "--sign-only", sig])?;
    lab.stop_serf(1)?;
    lab.start_serf(1)?;
    let cleared = now_s();
    let seq = seq_of(&run(
        &lab,
        1,
        &["submit", "--with-sig", sig, "--json", "--quiet"],
    )?)?;
    rows.push((
        "sender's Serf restarted",
        latest(&wait_applied(&lab, NODES, "sender.pp", seq, LIMIT)?) - cleared,
    ));

    let base = rows[0].1;
    println!(
        "# converge: {NODES} nodes, agent.catch_up_secs = {CATCH_UP_SECS}; {}",
        machine()
    );
    println!("| case | s from the cause clearing to every live node applied | x every member up | catch_up_secs |");
    println!("|---|---|---|---|");
    for (case, secs) in &rows {
        println!(
            "| {case} | {secs:.1} | {:.1} | {CATCH_UP_SECS} |",
            secs / base
        );
    }
    lab.shutdown()?;
    Ok(())
}
