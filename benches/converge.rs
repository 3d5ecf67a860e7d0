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
//!   Serf answering again to every node applied;
//! - partition healed: node 3 cut off (its packets dropped on receipt in the lab's namespace,
//!   as tests/chaos.rs does) until Serf saw it failed, the update sent once meanwhile; from the
//!   heal to node 3 applied (Serf's reconnect, then the member-join round);
//! - space freed: node 3's download dir a full 1 MiB tmpfs when a 300 KiB update goes out;
//!   from the space freed to node 3 applied (its out-of-space recheck);
//! - power cut: node 3's processes SIGKILLed, the update sent once; from its start to node 3
//!   applied.
//!
//! Each case is split on the node that applied last: from the cause clearing to its `accepted`
//! line (p2pu's delivery: the event, or the round that asked the fleet), and from there to its
//! `applied` line (the fetch and Puppet, which on the shared 2-core machine is most of it).
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

/// Cuts node 3 off from nodes 1 and 2 (`-I`) or heals the cut (`-D`): packets dropped on
/// receipt, and every TCP packet whose source is its destination (an unbound connection's,
/// which cannot be told apart in one namespace); see tests/chaos.rs `cut`.
fn cut(lab: &Lab, action: &str) -> Res<()> {
    let addr = |n: usize| -> Res<String> { Ok(lab.node(n)?.addr.to_string()) };
    let mut rules: Vec<Vec<String>> = Vec::new();
    for near in [1, 2] {
        for (from, to) in [(near, 3), (3, near)] {
            rules.push(vec!["-s".into(), addr(from)?, "-d".into(), addr(to)?]);
        }
    }
    for n in 1..=NODES {
        rules.push(vec![
            "-p".into(),
            "tcp".into(),
            "-s".into(),
            addr(n)?,
            "-d".into(),
            addr(n)?,
        ]);
    }
    for rule in rules {
        let mut args: Vec<String> = vec!["iptables".into(), action.into(), "INPUT".into()];
        args.extend(rule);
        args.extend(["-j".into(), "DROP".into()]);
        let out = lab.exec(1, &args)?;
        if !out.status.success() {
            return Err(format!("{args:?}: {out:?}").into());
        }
    }
    Ok(())
}

/// A full 1 MiB tmpfs over `dir` (its owner and mode kept), unmounted on drop.
struct FullDisk {
    dir: std::path::PathBuf,
    filler: std::path::PathBuf,
}

impl FullDisk {
    fn mount(dir: &Path) -> Res<FullDisk> {
        use std::io::Write;
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(dir)?;
        let options = format!(
            "size=1m,mode={:o},uid={},gid={}",
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid()
        );
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "p2pu-bench-full"])
            .arg(dir)
            .status()?;
        if !status.success() {
            return Err(format!("mount over {}: {status}", dir.display()).into());
        }
        let disk = FullDisk {
            dir: dir.to_path_buf(),
            filler: dir.join(".filler"),
        };
        let mut file = std::fs::File::create(&disk.filler)?;
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        while file.write_all(&block[..512]).is_ok() {}
        Ok(disk)
    }

    fn free(&self) -> Res<()> {
        Ok(std::fs::remove_file(&self.filler)?)
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.filler);
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

fn seq_of(json: &str) -> Res<u64> {
    let value: serde_json::Value = serde_json::from_str(json)?;
    value["seq"].as_u64().ok_or_else(|| "no seq".into())
}

/// Where one case's time went, on the node that applied last: from the cause clearing to its
/// `accepted` line (p2pu's delivery: the event, or the round that asked the fleet), then to
/// its `applied` line (the fetch and Puppet).
struct Split {
    node: usize,
    total: f64,
    accepted: f64,
}

/// Waits until every node applied `name` seq `seq`; the split from `cleared`.
fn split(lab: &Lab, name: &str, seq: u64, cleared: f64) -> Res<Split> {
    let applied = wait_applied(lab, NODES, name, seq, LIMIT)?;
    let (last, at) = applied
        .iter()
        .copied()
        .enumerate()
        .fold(
            (0, f64::MIN),
            |best, (i, t)| if t > best.1 { (i, t) } else { best },
        );
    let node = last + 1;
    let accepted =
        logged(lab, node, " accepted", name, seq).map_or(f64::NAN, |line| line.at - cleared);
    Ok(Split {
        node,
        total: at - cleared,
        accepted,
    })
}

fn main() -> Res<()> {
    let dir = bench_dir()?;
    if std::env::var_os("P2PU_LOG").is_none() {
        std::env::set_var("P2PU_LOG", "info");
    }
    let mut options = LabOptions::new(NODES, dir.path().join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    options.start_agent = true;
    options.site_overrides = Some(format!("[agent]\ncatch_up_secs = {CATCH_UP_SECS}\n"));
    let mut lab = Lab::start(options)?;
    let mut rows: Vec<(&str, Split)> = Vec::new();

    let a = manifest(dir.path(), "up.pp")?;
    let start = now_s();
    let seq = seq_of(&run(
        &lab,
        1,
        &["submit", a.to_str().ok_or("path")?, "--once", "--json"],
    )?)?;
    rows.push(("every member up", split(&lab, "up.pp", seq, start)?));

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
    rows.push(("Serf restarted", split(&lab, "serf.pp", seq, cleared)?));

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
    rows.push(("node joined late", split(&lab, "late.pp", seq, cleared)?));

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
        split(&lab, "sender.pp", seq, cleared)?,
    ));

    cut(&lab, "-I")?;
    let e = manifest(dir.path(), "cut.pp")?;
    let seq = seq_of(&run(
        &lab,
        1,
        &["submit", e.to_str().ok_or("path")?, "--once", "--json"],
    )?)?;
    wait_applied(&lab, 2, "cut.pp", seq, LIMIT)?;
    // Until the others saw node 3 fail (suspicion takes a few seconds), and it them.
    std::thread::sleep(Duration::from_secs(10));
    cut(&lab, "-D")?;
    let cleared = now_s();
    rows.push(("partition healed", split(&lab, "cut.pp", seq, cleared)?));
    if std::env::var_os("P2PU_BENCH_TRACE").is_some() {
        let log = std::fs::read_to_string(lab.node(3)?.log("agent"))?;
        let from = log.find("cut.pp").unwrap_or(0);
        let from = log[..from].rfind('\n').map_or(0, |i| i + 1);
        eprintln!("node 3's agent log from its first line about cut.pp:");
        for line in log[from..].lines().take(60) {
            eprintln!("  {line}");
        }
    }

    let download = lab.node(3)?.site.transmission.download_dir.clone();
    let disk = FullDisk::mount(&download)?;
    let f = dir.path().join("space.pp");
    let mut text =
        String::from("file { \"${settings::vardir}/space.pp.out\": content => \"space\\n\" }\n");
    for _ in 0..3000 {
        text.push_str(&format!("# {}\n", "x".repeat(100)));
    }
    std::fs::write(&f, text)?;
    let seq = seq_of(&run(
        &lab,
        1,
        &["submit", f.to_str().ok_or("path")?, "--once", "--json"],
    )?)?;
    wait_applied(&lab, 2, "space.pp", seq, LIMIT)?;
    let limit = now_s() + LIMIT.as_secs_f64();
    while !run(&lab, 3, &["status", "--json"])?.contains("out of space") {
        if now_s() > limit {
            return Err("node 3 never said it was out of space".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    disk.free()?;
    let cleared = now_s();
    rows.push(("space freed", split(&lab, "space.pp", seq, cleared)?));
    drop(disk);

    lab.kill(3, "node")?;
    let g = manifest(dir.path(), "power.pp")?;
    let seq = seq_of(&run(
        &lab,
        1,
        &["submit", g.to_str().ok_or("path")?, "--once", "--json"],
    )?)?;
    wait_applied(&lab, 2, "power.pp", seq, LIMIT)?;
    let cleared = now_s();
    lab.start_node(3)?;
    rows.push((
        "power cut, node restarted",
        split(&lab, "power.pp", seq, cleared)?,
    ));

    let base = rows[0].1.total;
    println!(
        "# converge: {NODES} nodes, agent.catch_up_secs = {CATCH_UP_SECS}; {}",
        machine()
    );
    println!("| case | s from the cause clearing to every live node applied | x every member up | of which: to the last node's `accepted` (delivery) | then to its `applied` (fetch + Puppet) | catch_up_secs |");
    println!("|---|---|---|---|---|---|");
    for (case, split) in &rows {
        println!(
            "| {case} | {:.1} | {:.1} | {:.1} (node {}) | {:.1} | {CATCH_UP_SECS} |",
            split.total,
            split.total / base,
            split.accepted,
            split.node,
            split.total - split.accepted,
        );
    }
    lab.shutdown()?;
    Ok(())
}
