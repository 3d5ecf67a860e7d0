//! Rollout time of a large update on a shaped lab, beside the HTTP physical limit (one copy), a
//! central-server baseline and Transmission alone, measured in the same run, on healthy links
//! and in the adverse conditions of a real fleet.
//!
//! `cargo bench --bench rollout [-- NODES... [--mib M] [--mbit R] [--p2pu-only]
//!   [--slow N:MBIT]... [--crash N@F] [--hang N@F] [--liar N]]` (root; default 4 8 nodes,
//! 128 MiB, 50 Mbit/s per node each way). `--slow` shapes node N's link to MBIT each way;
//! `--crash` SIGKILLs every process of node N once F (0..1) of the payload reached it;
//! `--hang` SIGSTOPs node N's agent and seed server at F (alive to Serf, silent on HTTP) and
//! resumes them after the rollout; `--liar` replaces node N's seed server with a fake member
//! that claims the payload and serves wrong bytes at full speed (benches/support/liar.rs).
//! `--stripes` runs the relay chain and the striped transfer on the same lab per scenario,
//! beside the stripe model (benches/support/modes.rs; with no fault named, six scenarios:
//! equal links, two adjacent slow members, one slow, a crash, a hang, a liar; `--only
//! equal,adjacent,slow,crash,hang,liar` picks some; `--p2pu-only` is implied;
//! `--warm-up [--warm-up-mib M]` sends one striped update before the measured ones, so that
//! every node advertises a measured rate, as in a fleet that fetched before; the default is
//! a cold lab).
//! Prints a table, and each node's timeline on stderr; asserts nothing about timings.

#[path = "support/liar.rs"]
mod liar;
#[path = "support/modes.rs"]
mod modes;
#[path = "stripe_sim.rs"]
#[allow(dead_code)] // its own `main` and scenarios: this bench runs its model only
mod stripe_sim;
#[path = "support/mod.rs"]
mod support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::*;

struct Row {
    nodes: usize,
    scenario: String,
    one_copy: f64,
    central: f64,
    /// Submit → the last healthy node applied / verified (its apply started).
    p2pu: f64,
    verified: f64,
    /// The slow node's own time to verified, and its one-copy time.
    slow_own: Option<(f64, f64)>,
    swarm: f64,
    rss: Option<(u64, u64)>,
    /// Sources named for bad pieces in the healthy nodes' records.
    named: String,
}

/// What goes wrong in a run.
#[derive(Default, Clone)]
struct Scenario {
    slow: Vec<(usize, u32)>,
    crash: Option<(usize, f64)>,
    hang: Option<(usize, f64)>,
    liar: Option<usize>,
}

impl Scenario {
    fn is_healthy(&self) -> bool {
        self.slow.is_empty() && self.crash.is_none() && self.hang.is_none() && self.liar.is_none()
    }

    fn name(&self) -> String {
        let mut parts = Vec::new();
        for (n, mbit) in &self.slow {
            parts.push(format!("node {n} at {mbit} Mbit/s"));
        }
        if let Some((n, f)) = self.crash {
            parts.push(format!("node {n} crashed at {:.0}%", f * 100.0));
        }
        if let Some((n, f)) = self.hang {
            parts.push(format!("node {n} hung at {:.0}%", f * 100.0));
        }
        if let Some(n) = self.liar {
            parts.push(format!("node {n} lies"));
        }
        if parts.is_empty() {
            "all links equal".into()
        } else {
            parts.join(", ")
        }
    }

    /// Nodes whose own time is not the rollout's: crashed, hung or lying.
    fn unhealthy(&self) -> Vec<usize> {
        self.crash
            .map(|c| c.0)
            .into_iter()
            .chain(self.hang.map(|h| h.0))
            .chain(self.liar)
            .collect()
    }
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
fn transmission_alone(
    lab: &p2pu::lab::Lab,
    nodes: usize,
    payload: &std::path::Path,
    absent: &[usize],
) -> Res<f64> {
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
    let present: Vec<usize> = (1..=nodes).filter(|n| !absent.contains(n)).collect();
    for &node in &present {
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
    let mut done = vec![true; nodes + 1];
    for &node in &present {
        done[node] = false;
    }
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

/// A python3 http.server on node 1 serving `dir`, answering; its port.
fn serve_dir(lab: &p2pu::lab::Lab, dir: &std::path::Path) -> Res<(Server, u16)> {
    let port = lab
        .in_netns(|| TcpListener::bind("10.99.1.1:0").and_then(|l| l.local_addr()))??
        .port();
    let dir = dir.to_path_buf();
    let server = Server(lab.in_netns(move || {
        Command::new("python3")
            .args(["-m", "http.server", "--bind", "10.99.1.1"])
            .arg(port.to_string())
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    })??);
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
    Ok((server, port))
}

/// One HTTP copy from node 1 to node 2, then node 1 serving every other node at once; both
/// on the same shaped links. Returns their seconds.
fn http_baselines(
    lab: &p2pu::lab::Lab,
    nodes: usize,
    payload_dir: &std::path::Path,
    name: &str,
    central: bool,
) -> Res<(f64, f64)> {
    // HTTP baselines, from node 1, on the same shaped links.
    let (server, port) = serve_dir(lab, payload_dir)?;
    let url = format!("http://10.99.1.1:{port}/{name}");
    eprintln!("[{nodes} nodes] one copy over HTTP...");
    let start = now_s();
    let status = curl(lab, 2, &url)?.wait()?;
    let one_copy = now_s() - start;
    if !status.success() {
        return Err(format!("curl: {status}").into());
    }
    if !central {
        return Ok((one_copy, f64::NAN));
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
    drop(server);
    Ok((one_copy, central))
}

/// Bytes of `name` node `node` holds in its download dir (any info-hash).
fn received(lab: &p2pu::lab::Lab, node: usize, name: &str) -> u64 {
    let Ok(info) = lab.node(node) else { return 0 };
    let Ok(dirs) = std::fs::read_dir(&info.site.transmission.download_dir) else {
        return 0;
    };
    dirs.flatten()
        .filter_map(|d| std::fs::metadata(d.path().join(name)).ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}

/// Seconds from `start` until each of `nodes` logged `what` for the update.
fn wait_nodes(
    lab: &p2pu::lab::Lab,
    nodes: &[usize],
    what: &str,
    name: &str,
    seq: u64,
    start: f64,
) -> Res<Vec<f64>> {
    let deadline = now_s() + 900.0;
    loop {
        let times: Vec<Option<f64>> = nodes
            .iter()
            .map(|&i| logged(lab, i, what, name, seq).map(|l| l.at - start))
            .collect();
        if times.iter().all(Option::is_some) {
            return Ok(times.into_iter().flatten().collect());
        }
        if now_s() > deadline {
            return Err(
                format!("{name} seq {seq} not {what:?} on {nodes:?} in 900 s: {times:?}").into(),
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Crashes (SIGKILL of every process) or hangs (SIGSTOP of the agent and seed server) each
/// node the scenario names once it received its share of `name`'s `len` bytes.
fn strike_faults(
    lab: &mut p2pu::lab::Lab,
    scenario: &Scenario,
    name: &str,
    len: u64,
    start: f64,
    label: &str,
) -> Res<()> {
    let mut faults: Vec<(usize, f64, bool)> = Vec::new();
    faults.extend(scenario.crash.map(|(n, f)| (n, f, true)));
    faults.extend(scenario.hang.map(|(n, f)| (n, f, false)));
    while !faults.is_empty() {
        if now_s() - start > 900.0 {
            return Err("a fault's node never got its share of the payload".into());
        }
        let mut left = Vec::new();
        for (n, f, crash) in faults {
            if (received(lab, n, name) as f64) < f * len as f64 {
                left.push((n, f, crash));
                continue;
            }
            let what = if crash { "crashing" } else { "hanging" };
            eprintln!("{label} {what} node {n} at {:.1} s", now_s() - start);
            let done = if crash {
                lab.crash_node(n)
            } else {
                lab.signal_agent(n, nix::sys::signal::Signal::SIGSTOP)
            };
            if let Err(e) = done {
                eprintln!("fault on node {n}: {e}");
            }
        }
        faults = left;
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn bench(nodes: usize, mib: usize, mbit: u32, p2pu_only: bool, scenario: &Scenario) -> Res<Row> {
    let dir = bench_dir()?;
    eprintln!("[{nodes} nodes] starting the lab...");
    let mut lab = start_lab(nodes, dir.path())?;
    let mut rates = vec![mbit; nodes];
    for &(n, slow) in &scenario.slow {
        if let Some(rate) = rates.get_mut(n - 1) {
            *rate = slow;
        }
    }
    lab.shape(&rates)?;
    let payload_dir = dir.path().join("payload");
    std::fs::create_dir_all(&payload_dir)?;
    let name = format!("big-{nodes}.tar.gz");
    let payload = random_archive(&payload_dir, &name, mib)?;
    let len = std::fs::metadata(&payload)?.len();

    let (one_copy, central) = if p2pu_only {
        (f64::NAN, f64::NAN)
    } else {
        // A central server to N nodes takes N copies' time: measured on healthy links, up to 16
        // nodes only.
        http_baselines(
            &lab,
            nodes,
            &payload_dir,
            &name,
            scenario.is_healthy() && nodes <= 16,
        )?
    };
    // The slow node's own one copy, from node 1.
    let slow_copy = match scenario.slow.first() {
        Some(&(n, _)) if !p2pu_only => Some(one_copy_to(&lab, &payload_dir, &name, n)?),
        _ => None,
    };

    let liar = match scenario.liar {
        Some(n) => {
            lab.stop_agent(n)?;
            let addr = lab.node(n)?.addr;
            let port = lab.node(n)?.site.agent.seed_port;
            let listener = lab.in_netns(move || TcpListener::bind((addr, port)))??;
            Some(liar::Liar::start(listener, len))
        }
        None => None,
    };

    eprintln!("[{nodes} nodes] p2pu submit ({})...", scenario.name());
    let (start, seq) = submit(&lab, &payload)?;
    // Faults strike when their share of the payload has reached the node.
    strike_faults(
        &mut lab,
        scenario,
        &name,
        len,
        start,
        &format!("[{nodes} nodes]"),
    )?;
    let unhealthy = scenario.unhealthy();
    let slow: Vec<usize> = scenario.slow.iter().map(|s| s.0).collect();
    let healthy: Vec<usize> = (1..=nodes)
        .filter(|n| !unhealthy.contains(n) && !slow.contains(n))
        .collect();
    let verified = wait_nodes(&lab, &healthy, "apply started", &name, seq, start)?;
    let applied = wait_nodes(&lab, &healthy, " applied: ", &name, seq, start)?;
    let slow_own = match slow.first() {
        Some(&n) => Some((
            wait_nodes(&lab, &[n], "apply started", &name, seq, start)?[0],
            slow_copy.unwrap_or(f64::NAN),
        )),
        None => None,
    };
    if let Some((n, _)) = scenario.hang {
        lab.signal_agent(n, nix::sys::signal::Signal::SIGCONT)?;
    }
    let rss = agent_pid(&lab, 2).and_then(rss_kib);
    let last = applied.iter().cloned().fold(f64::MIN, f64::max);
    eprintln!("[{nodes} nodes] p2pu {last:.1} s");
    timeline(&lab, nodes, &name, seq, start);
    let named = named_liars(&lab, &healthy, &name);
    if let Some(liar) = &liar {
        let served = liar.served.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!("[{nodes} nodes] the liar answered {served} payload requests");
    }
    let swarm = if p2pu_only {
        f64::NAN
    } else {
        eprintln!("[{nodes} nodes] Transmission alone (without nodes {unhealthy:?})...");
        transmission_alone(&lab, nodes, &payload, &unhealthy)?
    };
    eprintln!("[{nodes} nodes] Transmission alone {swarm:.1} s");
    Ok(Row {
        nodes,
        scenario: scenario.name(),
        one_copy,
        central,
        p2pu: last,
        verified: verified.iter().cloned().fold(f64::MIN, f64::max),
        slow_own,
        swarm,
        rss,
        named,
    })
}

/// One curl of the payload by node `to` from node 1's python server: that node's one copy.
fn one_copy_to(
    lab: &p2pu::lab::Lab,
    payload_dir: &std::path::Path,
    name: &str,
    to: usize,
) -> Res<f64> {
    let (_server, port) = serve_dir(lab, payload_dir)?;
    let start = now_s();
    let status = curl(lab, to, &format!("http://10.99.1.1:{port}/{name}"))?.wait()?;
    if !status.success() {
        return Err(format!("curl: {status}").into());
    }
    Ok(now_s() - start)
}

/// Node `node`'s sources for `name` from `p2pu status --json`: "2: 64.0" or with why it was left.
fn sources(lab: &p2pu::lab::Lab, node: usize, name: &str) -> String {
    let Ok(out) = lab.p2pu(node, &["status", "--json"]) else {
        return "-".into();
    };
    let Ok(report) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return "-".into();
    };
    let mut used = Vec::new();
    for update in report["updates"].as_array().into_iter().flatten() {
        if update["name"] != name {
            continue;
        }
        for source in update["sources"].as_array().into_iter().flatten() {
            let addr = source["addr"].as_str().unwrap_or("?");
            let who = addr
                .split(':')
                .next()
                .and_then(|ip| ip.rsplit('.').next())
                .unwrap_or(addr);
            let mib = source["bytes"].as_u64().unwrap_or(0) as f64 / 1048576.0;
            match source["left"].as_str() {
                Some(why) => used.push(format!(
                    "{who}: {mib:.1} ({})",
                    why.chars().take(60).collect::<String>()
                )),
                None => used.push(format!("{who}: {mib:.1}")),
            }
        }
    }
    if used.is_empty() {
        "-".into()
    } else {
        used.join("; ")
    }
}

/// The sources the healthy nodes' records name for bad pieces, from `p2pu status --json`.
fn named_liars(lab: &p2pu::lab::Lab, healthy: &[usize], name: &str) -> String {
    let mut named = std::collections::BTreeMap::new();
    for &n in healthy {
        let Ok(out) = lab.p2pu(n, &["status", "--json"]) else {
            continue;
        };
        let Ok(report) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
            continue;
        };
        for update in report["updates"].as_array().into_iter().flatten() {
            if update["name"] != name {
                continue;
            }
            for source in update["sources"].as_array().into_iter().flatten() {
                if source["bad_pieces"].as_u64().unwrap_or(0) > 0 {
                    let addr = source["addr"].as_str().unwrap_or("?").to_string();
                    *named.entry(addr).or_insert(0) += 1;
                }
            }
        }
    }
    if named.is_empty() {
        return "-".into();
    }
    named
        .iter()
        .map(|(addr, by)| format!("{addr} (by {by} nodes)"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where each node's time went, from the agents' logs (seconds after submit started).
fn timeline(lab: &p2pu::lab::Lab, nodes: usize, name: &str, seq: u64, start: f64) {
    eprintln!("node | accepted | received over HTTP | verified (apply started) | applied | sources (node: MiB, why left)");
    for node in 1..=nodes {
        let at = |what: &str| {
            logged(lab, node, what, name, seq)
                .map_or("-".to_string(), |l| format!("{:.1}", l.at - start))
        };
        eprintln!(
            "{node} | {} | {} | {} | {} | {}",
            at(" accepted"),
            at("received over HTTP"),
            at("apply started"),
            at(" applied: "),
            sources(lab, node, name)
        );
    }
}

fn main() -> Res<()> {
    let mut nodes = Vec::new();
    let mut mib = 128;
    let mut mbit = 50;
    let mut p2pu_only = false;
    let mut scenario = Scenario::default();
    let mut stripes = false;
    let mut only: Option<Vec<String>> = None;
    let mut warm_up: Option<usize> = None;
    let mut args = std::env::args().skip(1);
    let at = |text: String| -> Res<(usize, f64)> {
        let (n, f) = text.split_once('@').ok_or("N@F, e.g. 6@0.3")?;
        Ok((n.parse()?, f.parse()?))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--mib" => mib = args.next().ok_or("--mib N")?.parse()?,
            "--mbit" => mbit = args.next().ok_or("--mbit N")?.parse()?,
            // For profiling p2pu alone: the table then has no baselines.
            "--p2pu-only" => p2pu_only = true,
            "--slow" => {
                let spec = args.next().ok_or("--slow N:MBIT")?;
                let (n, rate) = spec.split_once(':').ok_or("--slow N:MBIT")?;
                scenario.slow.push((n.parse()?, rate.parse()?));
            }
            "--crash" => scenario.crash = Some(at(args.next().ok_or("--crash N@F")?)?),
            "--hang" => scenario.hang = Some(at(args.next().ok_or("--hang N@F")?)?),
            "--liar" => scenario.liar = Some(args.next().ok_or("--liar N")?.parse()?),
            "--stripes" => stripes = true,
            "--warm-up" => {
                warm_up.get_or_insert(modes::WARM_UP_MIB);
            }
            "--warm-up-mib" => {
                let m: usize = args.next().ok_or("--warm-up-mib M")?.parse()?;
                // At 4 MiB or less a payload is fetched directly from the origin, not by
                // stripes (`relay::DIRECT_MAX`); see `modes::WARM_UP_MIB`.
                if m <= 4 {
                    return Err(
                        "--warm-up-mib: above 4, so that the warm-up goes by stripes".into(),
                    );
                }
                warm_up = Some(m);
            }
            "--only" => {
                only = Some(
                    args.next()
                        .ok_or("--only equal,adjacent,...")?
                        .split(',')
                        .map(str::to_owned)
                        .collect(),
                )
            }
            a if a.starts_with("--") => {} // cargo bench passes --bench
            a => nodes.push(a.parse()?),
        }
    }
    if nodes.is_empty() {
        nodes = vec![4, 8];
    }
    if stripes {
        let mut rows = Vec::new();
        for &n in &nodes {
            let scenarios = if scenario.is_healthy() {
                modes::default_scenarios(n)
            } else {
                vec![("named", scenario.clone())]
            };
            for (label, s) in scenarios {
                if only.as_ref().is_some_and(|o| !o.iter().any(|x| x == label)) {
                    continue;
                }
                let outcome = modes::run(n, mib, mbit, &s, warm_up)?;
                let model = modes::model(n, mib, mbit, &s);
                rows.push((n, s.name(), outcome, model));
            }
        }
        modes::print(mib, mbit, &rows);
        return Ok(());
    }
    let mut rows = Vec::new();
    for &n in &nodes {
        rows.push(bench(n, mib, mbit, p2pu_only, &scenario)?);
    }
    let limit = (mib as f64) * 8.0 * 1.048576 / f64::from(mbit);
    println!("rollout of a {mib} MiB archive, links {mbit} Mbit/s per node each way (tc htb on lo + ifb); wire limit for one copy {limit:.1} s");
    println!("machine: {}", machine());
    println!(
        "| nodes | scenario | one copy HTTP (s) | central HTTP (s) | p2pu submit→last healthy verified (s) | → applied (s) | verified / one copy | applied / one copy | slow node's own: verified (s) / its one copy (s) = ratio | Transmission alone (s) = / one copy | named liars | agent RSS node 2 (VmRSS / VmHWM MiB) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let rss = r.rss.map_or("-".into(), |(rss, hwm)| {
            format!("{:.1} / {:.1}", rss as f64 / 1024.0, hwm as f64 / 1024.0)
        });
        let slow = r.slow_own.map_or("-".into(), |(own, copy)| {
            format!("{own:.1} / {copy:.1} = {:.2}x", own / copy)
        });
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}x | {:.2}x | {} | {:.1} = {:.2}x | {} | {} |",
            r.nodes,
            r.scenario,
            r.one_copy,
            r.central,
            r.verified,
            r.p2pu,
            r.verified / r.one_copy,
            r.p2pu / r.one_copy,
            slow,
            r.swarm,
            r.swarm / r.one_copy,
            r.named,
            rss
        );
    }
    Ok(())
}
