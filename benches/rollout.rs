//! Issue 8, item 1: rollout time of a large update on a shaped lab, beside the HTTP physical
//! limit (one copy), a central-server baseline and Transmission alone, measured in the same
//! run.
//!
//! `cargo bench --bench rollout [-- NODES... [--mib M] [--mbit R] [--p2pu-only]]` (root; default
//! 4 8 nodes, 128 MiB, 50 Mbit/s per node each way). Prints a table, and each node's timeline
//! on stderr; asserts nothing about timings.

#[path = "support/mod.rs"]
mod support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::*;

struct Row {
    nodes: usize,
    one_copy: f64,
    central: f64,
    p2pu: f64,
    /// Submit → the last node's payload downloaded and verified (its apply started).
    verified: f64,
    first: f64,
    swarm: f64,
    rss: Option<(u64, u64)>,
}

/// A python3 http.server on node 1 serving `dir`; killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn curl(lab: &p2pu::lab::Lab, from: usize, url: &str) -> Res<Child> {
    let url = url.to_owned();
    Ok(lab.in_netns(move || {
        Command::new("curl")
            .args(["-sfS", "-o", "/dev/null", "--interface"])
            .arg(format!("10.99.1.{from}"))
            .arg(&url)
            .spawn()
    })??)
}

/// Transmission alone: the same payload (under another name, so another info-hash) as a
/// .torrent with no web seeds, seeded by node 1's daemon and added over RPC to every other
/// node's, peers from each node's tracker; returns seconds until every node has it.
fn transmission_alone(lab: &p2pu::lab::Lab, nodes: usize, payload: &std::path::Path) -> Res<f64> {
    use p2pu::engines::TorrentEngine;
    use p2pu::formats::torrent;
    let dir = payload.parent().ok_or("payload dir")?;
    let name = format!(
        "alone-{}",
        payload.file_name().ok_or("name")?.to_string_lossy()
    );
    std::fs::hard_link(payload, dir.join(&name))?;
    let made = torrent::create(&dir.join(&name), &torrent::CreateOptions::default())?;
    let hash = made.info_hash_hex();
    let start = now_s();
    for node in 1..=nodes {
        let info = lab.node(node)?;
        let tracker = format!("http://127.0.0.1:{}/announce", info.site.agent.tracker_port);
        let metainfo = torrent::with_sources(&made.bytes, &tracker, &[])?;
        let target = if node == 1 {
            dir.to_path_buf()
        } else {
            info.site.transmission.download_dir.join("alone")
        };
        let transmission = lab.transmission(node)?;
        lab.in_netns(|| transmission.add_metainfo(&metainfo, Some(&target), false))??;
    }
    let deadline = start + 900.0;
    let mut done = vec![false; nodes + 1];
    while done[1..].iter().any(|d| !d) {
        for (node, finished) in done.iter_mut().enumerate().skip(1) {
            if *finished {
                continue;
            }
            let transmission = lab.transmission(node)?;
            let hashes = [hash.clone()];
            let status = lab.in_netns(|| transmission.get(&hashes))??;
            *finished = status.first().is_some_and(|t| t.is_complete());
        }
        if now_s() > deadline {
            return Err("Transmission alone did not finish in 900 s".into());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(now_s() - start)
}

/// One HTTP copy from node 1 to node 2, then node 1 serving every other node at once; both
/// on the same shaped links. Returns their seconds.
fn http_baselines(
    lab: &p2pu::lab::Lab,
    nodes: usize,
    payload_dir: &std::path::Path,
    name: &str,
) -> Res<(f64, f64)> {
    // HTTP baselines, from node 1, on the same shaped links.
    let port = lab
        .in_netns(|| TcpListener::bind("10.99.1.1:0").and_then(|l| l.local_addr()))??
        .port();
    let payload_dir2 = payload_dir.to_path_buf();
    let _server = Server(lab.in_netns(move || {
        Command::new("python3")
            .args(["-m", "http.server", "--bind", "10.99.1.1"])
            .arg(port.to_string())
            .current_dir(&payload_dir2)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    })??);
    let url = format!("http://10.99.1.1:{port}/{name}");
    let ready = now_s() + 10.0;
    while lab
        .in_netns(|| std::net::TcpStream::connect(("10.99.1.1", port)))?
        .is_err()
    {
        if now_s() > ready {
            return Err("http.server did not start".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("[{nodes} nodes] one copy over HTTP...");
    let start = now_s();
    let status = curl(lab, 2, &url)?.wait()?;
    let one_copy = now_s() - start;
    if !status.success() {
        return Err(format!("curl: {status}").into());
    }
    eprintln!(
        "[{nodes} nodes] one copy {one_copy:.1} s; central server to {} nodes...",
        nodes - 1
    );
    let start = now_s();
    let children: Vec<Child> = (2..=nodes)
        .map(|i| curl(lab, i, &url))
        .collect::<Res<_>>()?;
    for mut child in children {
        let status = child.wait()?;
        if !status.success() {
            return Err(format!("curl: {status}").into());
        }
    }
    let central = now_s() - start;
    drop(_server);
    Ok((one_copy, central))
}

fn bench(nodes: usize, mib: usize, mbit: u32, p2pu_only: bool) -> Res<Row> {
    let dir = bench_dir()?;
    eprintln!("[{nodes} nodes] starting the lab...");
    let lab = start_lab(nodes, dir.path())?;
    shape(&lab, nodes, mbit)?;
    let payload_dir = dir.path().join("payload");
    std::fs::create_dir_all(&payload_dir)?;
    let name = format!("big-{nodes}.tar.gz");
    let payload = random_archive(&payload_dir, &name, mib)?;

    let (one_copy, central) = if p2pu_only {
        (f64::NAN, f64::NAN)
    } else {
        http_baselines(&lab, nodes, &payload_dir, &name)?
    };

    eprintln!("[{nodes} nodes] central {central:.1} s; p2pu submit...");
    let (start, seq) = submit(&lab, &payload)?;
    let applied = wait_applied(&lab, nodes, &name, seq, Duration::from_secs(600))?;
    let last = applied.iter().cloned().fold(f64::MIN, f64::max);
    let first = applied.iter().skip(1).cloned().fold(f64::MAX, f64::min);
    let verified = (1..=nodes)
        .filter_map(|i| logged(&lab, i, "apply started", &name, seq).map(|l| l.at))
        .fold(f64::MIN, f64::max);
    let rss = agent_pid(&lab, 2).and_then(rss_kib);
    eprintln!("[{nodes} nodes] p2pu {:.1} s", last - start);
    timeline(&lab, nodes, &name, seq, start);
    let swarm = if p2pu_only {
        f64::NAN
    } else {
        eprintln!("[{nodes} nodes] Transmission alone...");
        transmission_alone(&lab, nodes, &payload)?
    };
    eprintln!("[{nodes} nodes] Transmission alone {swarm:.1} s");
    Ok(Row {
        nodes,
        one_copy,
        central,
        p2pu: last - start,
        verified: verified - start,
        first: first - start,
        swarm,
        rss,
    })
}

/// Where each node's time went, from the agents' logs (seconds after submit started).
fn timeline(lab: &p2pu::lab::Lab, nodes: usize, name: &str, seq: u64, start: f64) {
    eprintln!("node | accepted | received over HTTP | verified (apply started) | applied");
    for node in 1..=nodes {
        let at = |what: &str| {
            logged(lab, node, what, name, seq)
                .map_or("-".to_string(), |l| format!("{:.1}", l.at - start))
        };
        eprintln!(
            "{node} | {} | {} | {} | {}",
            at(" accepted"),
            at("received over HTTP"),
            at("apply started"),
            at(" applied: ")
        );
    }
}

fn main() -> Res<()> {
    let mut nodes = Vec::new();
    let mut mib = 128;
    let mut mbit = 50;
    let mut p2pu_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--mib" => mib = args.next().ok_or("--mib N")?.parse()?,
            "--mbit" => mbit = args.next().ok_or("--mbit N")?.parse()?,
            // For profiling p2pu alone: the table then has no baselines.
            "--p2pu-only" => p2pu_only = true,
            a if a.starts_with("--") => {} // cargo bench passes --bench
            a => nodes.push(a.parse()?),
        }
    }
    if nodes.is_empty() {
        nodes = vec![4, 8];
    }
    let mut rows = Vec::new();
    for &n in &nodes {
        rows.push(bench(n, mib, mbit, p2pu_only)?);
    }
    let limit = (mib as f64) * 8.0 * 1.048576 / f64::from(mbit);
    println!("rollout of a {mib} MiB archive, links {mbit} Mbit/s per node each way (tc htb on lo + ifb); wire limit for one copy {limit:.1} s");
    println!("machine: {}", machine());
    println!(
        "| nodes | one copy HTTP (s) | central HTTP (s) | Transmission alone (s) | p2pu submit→last verified (s) | p2pu submit→last applied (s) | p2pu first other node applied (s) | p2pu applied / one copy (goal ≤ 1.3x at 16) | p2pu verified / one copy | Transmission alone / one copy | central / one copy | agent RSS node 2 after (VmRSS / VmHWM MiB) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let rss = r.rss.map_or("-".into(), |(rss, hwm)| {
            format!("{:.1} / {:.1}", rss as f64 / 1024.0, hwm as f64 / 1024.0)
        });
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}x | {:.2}x | {:.2}x | {:.2}x | {} |",
            r.nodes,
            r.one_copy,
            r.central,
            r.swarm,
            r.verified,
            r.p2pu,
            r.first,
            r.p2pu / r.one_copy,
            r.verified / r.one_copy,
            r.swarm / r.one_copy,
            r.central / r.one_copy,
            rss
        );
    }
    Ok(())
}
