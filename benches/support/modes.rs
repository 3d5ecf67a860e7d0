//! `cargo bench --bench rollout -- --stripes` (issue 24, stage 4): the relay chain and the
//! striped transfer (`transfer.mode = "stripes"`, docs/DESIGN.md 5.1) on the same lab, one
//! after the other, per scenario, beside the stripe model (`benches/stripe_sim.rs`) run with
//! the same parameters. Every agent runs in stripes mode (a payload whose metainfo carries no
//! roster goes down the chain there); the chain's update is submitted with a copy of node 1's
//! site.toml saying `mode = "chain"`, the striped one with node 1's own.
//!
//! Per scenario and transfer: submit → the last healthy node verified, over one copy's wire
//! time (one HTTP copy measured on the same lab); each slow node's own time over its own one
//! copy; what node 1 (the origin) sent over TCP during the rollout over the payload (an
//! iptables counter in the lab's namespace: Serf's and the tracker's few KiB included); the
//! agents' peak RSS (VmHWM, max over nodes); the agents' CPU seconds (user + system, all
//! threads, the seed server's included) per node per GiB, from submit to the last verified;
//! the members the striped update's roster classed slow.
//!
//! `--warm-up` (`--warm-up-mib M`, default [`WARM_UP_MIB`]): before the measured updates, on
//! the links the scenario shapes, one striped update that every node applies, so that every
//! fetching node advertises a measured `p2pu-rate` (one fetch of at least 1 MiB is enough:
//! the figure is the median of the samples there are, `runtime::rate`), as in a fleet that
//! fetched updates before; the measured updates start once the origin's Serf shows every
//! node's rate. Without it (the default) the lab is cold: no rate is advertised, a slow
//! member is classed full-rate and its children must find it slow themselves. The table
//! says which rows had one, and what the rates after it classed slow.
//! Nothing asserted about timings.

use super::stripe_sim;
use super::support::*;
use super::{one_copy_to, wait_nodes, Scenario};

/// The two transfers compared.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Transfer {
    Chain,
    Stripes,
}

impl Transfer {
    fn name(self) -> &'static str {
        match self {
            Transfer::Chain => "chain",
            Transfer::Stripes => "stripes",
        }
    }
}

/// One transfer's figures in one scenario.
pub struct Measured {
    pub transfer: Transfer,
    /// Submit → last healthy node verified (its apply started), seconds.
    pub verified: f64,
    /// Each slow node: (node, its time to verified, its own one copy).
    pub slow: Vec<(usize, f64, f64)>,
    /// Bytes node 1 sent over TCP during the rollout.
    pub origin_sent: u64,
    /// Max over the agents of VmHWM, KiB.
    pub rss_peak: u64,
    /// Agents' CPU seconds per node per GiB of payload.
    pub cpu_per_gib: f64,
    /// Their seed servers' (the `agent-serve` child, which sends the blocks), the same way.
    pub serve_cpu_per_gib: f64,
    /// The nodes the striped update's roster classed slow (`None` for the chain, or where
    /// the roster could not be read).
    pub roster_slow: Option<Vec<usize>>,
}

/// The warm-up's size by default: above `DIRECT_MAX` (4 MiB), so it goes by stripes, as the
/// measured update does (a direct fetch shares the origin's uplink among every node at once:
/// at 8 nodes each gets a seventh of it, not twice a slow node's rate, so the figures would
/// not tell the slow ones apart); big enough that the seconds a healthy child spends finding
/// a slow parent (`stripes::PACE_WINDOW`) weigh little in its figure.
pub const WARM_UP_MIB: usize = 16;

/// What the warm-up left: its size, and the nodes the rates it made the nodes advertise
/// class slow (`topology::classify`; the rates themselves go to stderr).
pub struct WarmUp {
    pub mib: usize,
    pub slow: Vec<usize>,
}

impl WarmUp {
    /// For the table: `16 MiB: slow by rate 4, 5` (or `none slow by rate`).
    pub fn label(&self) -> String {
        if self.slow.is_empty() {
            format!("{} MiB: none slow by rate", self.mib)
        } else {
            format!("{} MiB: slow by rate {}", self.mib, nodes_list(&self.slow))
        }
    }
}

fn nodes_list(nodes: &[usize]) -> String {
    nodes
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Each node's advertised `p2pu-rate` as node 1's Serf shows it (read strictly, as `submit`
/// reads it: `formats::rate::decode`).
fn advertised(lab: &p2pu::lab::Lab, nodes: usize) -> Res<Vec<(usize, Option<u64>)>> {
    let members = lab.members(1)?;
    (1..=nodes)
        .map(|n| {
            let name = &lab.node(n)?.name;
            let rate = members
                .iter()
                .find(|m| &m.name == name)
                .and_then(|m| m.tags.get(p2pu::formats::serf_names::TAG_RATE))
                .and_then(|r| p2pu::formats::rate::decode(r));
            Ok((n, rate))
        })
        .collect()
}

/// One striped update of `mib` MiB that every node applies, then a wait until node 1's Serf
/// shows a rate for every node but the origin (which fetches nothing).
fn warm_up(
    lab: &p2pu::lab::Lab,
    nodes: usize,
    payload_dir: &std::path::Path,
    mib: usize,
) -> Res<WarmUp> {
    let name = format!("warm-up-{nodes}.tar.gz");
    let payload = random_archive(payload_dir, &name, mib)?;
    eprintln!("[{nodes} nodes] warm-up: {mib} MiB by stripes...");
    let (start, seq) = submit(lab, &payload)?;
    let all: Vec<usize> = (1..=nodes).collect();
    let applied = wait_nodes(lab, &all, " applied: ", &name, seq, start)?;
    std::fs::remove_file(&payload)?;
    let deadline = now_s() + 120.0;
    let rates = loop {
        let rates = advertised(lab, nodes)?;
        if rates.iter().skip(1).all(|(_, r)| r.is_some()) {
            break rates;
        }
        if now_s() > deadline {
            return Err(
                format!("warm-up: not every node advertises a rate in 120 s: {rates:?}").into(),
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let classes = p2pu::agent::transfer::topology::classify(
        &rates.iter().map(|(_, r)| *r).collect::<Vec<_>>(),
    );
    let slow: Vec<usize> = rates
        .iter()
        .zip(&classes)
        .filter(|(_, c)| **c == p2pu::agent::transfer::topology::Class::Slow)
        .map(|((n, _), _)| *n)
        .collect();
    let last = applied.iter().cloned().fold(f64::MIN, f64::max);
    eprintln!(
        "[{nodes} nodes] warm-up applied everywhere in {last:.1} s; advertised rates (Mbit/s): {}; slow by rate: {slow:?}",
        rates
            .iter()
            .map(|(n, r)| match r {
                Some(r) => format!("{n}: {:.1}", *r as f64 * 8.0 / 1e6),
                None => format!("{n}: -"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(WarmUp { mib, slow })
}

/// The nodes the roster of node 1's striped update `name` classes slow.
fn roster_slow(lab: &p2pu::lab::Lab, nodes: usize, name: &str, seq: u64) -> Option<Vec<usize>> {
    let origin = lab.node(1).ok()?;
    let records =
        p2pu::agent::runtime::state::StateStore::open_read_only(&origin.site.agent.state_dir)
            .records(name)
            .ok()?;
    let hash = &records.iter().find(|r| r.seq == seq)?.info_hash;
    let path = origin
        .site
        .transmission
        .download_dir
        .join(format!("{hash}.roster"));
    let roster = p2pu::formats::roster::Roster::decode(&std::fs::read(path).ok()?).ok()?;
    Some(
        (1..=nodes)
            .filter(|&n| lab.node(n).is_ok_and(|i| roster.slow.contains(&i.name)))
            .collect(),
    )
}

/// The scenarios of `--stripes` with no fault named on the command line: equal links, the
/// issue's two adjacent slow members (neighbouring addresses, so neighbouring in the chain's
/// order), one slow, a crash, a hang and a liar.
pub fn default_scenarios(nodes: usize) -> Vec<(&'static str, Scenario)> {
    let at = |n: usize| n.min(nodes);
    vec![
        ("equal", Scenario::default()),
        (
            "adjacent",
            Scenario {
                slow: vec![(at(4), 5), (at(5), 5)],
                ..Scenario::default()
            },
        ),
        (
            "slow",
            Scenario {
                slow: vec![(at(4), 5)],
                ..Scenario::default()
            },
        ),
        (
            "crash",
            Scenario {
                crash: Some((at(6), 0.3)),
                ..Scenario::default()
            },
        ),
        (
            "hang",
            Scenario {
                hang: Some((at(6), 0.3)),
                ..Scenario::default()
            },
        ),
        (
            "liar",
            Scenario {
                liar: Some(at(3)),
                ..Scenario::default()
            },
        ),
    ]
}

/// Bytes node 1's address sent over TCP since the counter was last zeroed.
fn origin_counter(lab: &p2pu::lab::Lab, zero: bool) -> Res<u64> {
    let addr = lab.node(1)?.addr.to_string();
    let list = lab.exec(1, &["iptables", "-L", "INPUT", "-v", "-x", "-n"])?;
    let text = String::from_utf8_lossy(&list.stdout).into_owned();
    let has_rule = text.lines().any(|l| l.contains("p2pu-origin"));
    if !has_rule {
        let out = lab.exec(
            1,
            &[
                "iptables",
                "-I",
                "INPUT",
                "-s",
                &addr,
                "-p",
                "tcp",
                "-m",
                "comment",
                "--comment",
                "p2pu-origin",
            ],
        )?;
        if !out.status.success() {
            return Err(format!("iptables: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        return Ok(0);
    }
    if zero {
        lab.exec(1, &["iptables", "-Z", "INPUT"])?;
        return Ok(0);
    }
    // "pkts bytes target prot opt in out source destination ... /* p2pu-origin */"
    Ok(text
        .lines()
        .find(|l| l.contains("p2pu-origin"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|b| b.parse().ok())
        .unwrap_or(0))
}

/// utime + stime of a process (all its threads), seconds.
fn cpu_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command's closing parenthesis; utime and stime are the 14th and 15th.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    (ticks(11) + ticks(12)) / hz
}

/// The agent's seed server: its `agent-serve` child, which sends the blocks (any of the
/// agent's threads may have started it, and each thread lists its own children).
fn serve_pid(agent: u32) -> Option<u32> {
    std::fs::read_dir(format!("/proc/{agent}/task"))
        .ok()?
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|children| {
            children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .find(|child| {
            std::fs::read(format!("/proc/{child}/cmdline"))
                .is_ok_and(|line| line.split(|b| *b == 0).nth(1) == Some(b"agent-serve".as_slice()))
        })
}

/// node 1's site.toml with `mode = "chain"`, for the chain's submit.
fn chain_config(lab: &p2pu::lab::Lab, dir: &std::path::Path) -> Res<std::path::PathBuf> {
    let config = &lab.node(1)?.config;
    let text = std::fs::read_to_string(config)?;
    if !text.contains("mode = \"stripes\"") {
        return Err(format!("{} has no `mode = \"stripes\"`", config.display()).into());
    }
    let path = dir.join("chain-site.toml");
    std::fs::write(
        &path,
        text.replace("mode = \"stripes\"", "mode = \"chain\""),
    )?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    Ok(path)
}

fn submit_as(
    lab: &p2pu::lab::Lab,
    payload: &std::path::Path,
    config: &std::path::Path,
) -> Res<(f64, u64)> {
    let start = now_s();
    let binary = env!("CARGO_BIN_EXE_p2pu");
    let out = lab.exec(
        1,
        &[
            std::ffi::OsStr::new(binary),
            "submit".as_ref(),
            payload.as_os_str(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
    )?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("submit: {text}{}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let seq = text
        .split_whitespace()
        .skip_while(|w| *w != "seq")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no seq in {text:?}"))?;
    Ok((start, seq))
}

/// What [`run`] measured in one scenario: one copy's time, the warm-up's figures (where
/// there was one), and each transfer's.
pub struct Outcome {
    pub one_copy: f64,
    pub warm_up: Option<WarmUp>,
    pub measured: Vec<Measured>,
}

/// Both transfers in `scenario` on one lab of `nodes`, after a striped warm-up of
/// `warm_up_mib` MiB where it is given (on the scenario's shaped links).
pub fn run(
    nodes: usize,
    mib: usize,
    mbit: u32,
    scenario: &Scenario,
    warm_up_mib: Option<usize>,
) -> Res<Outcome> {
    let dir = bench_dir()?;
    eprintln!(
        "[{nodes} nodes, {}] starting the lab (stripes mode)...",
        scenario.name()
    );
    std::env::set_var("P2PU_LOG", "info,p2pu=debug");
    let mut options =
        p2pu::lab::LabOptions::new(nodes, dir.path().join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    options.start_agent = true;
    options.site_overrides = Some("[transfer]\nmode = \"stripes\"\n".into());
    let mut lab = p2pu::lab::Lab::start(options)?;
    let mut rates = vec![mbit; nodes];
    for &(n, slow) in &scenario.slow {
        if let Some(rate) = rates.get_mut(n - 1) {
            *rate = slow;
        }
    }
    lab.shape(&rates)?;
    let chain_site = chain_config(&lab, dir.path())?;
    let payload_dir = dir.path().join("payload");
    std::fs::create_dir_all(&payload_dir)?;
    // One copy, and each slow node's own, on the same shaped links.
    let probe = random_archive(&payload_dir, "probe.tar.gz", mib)?;
    let probe_name = "probe.tar.gz";
    let one_copy = one_copy_to(&lab, &payload_dir, probe_name, 2)?;
    let mut slow_copy = Vec::new();
    for &(n, _) in &scenario.slow {
        slow_copy.push((n, one_copy_to(&lab, &payload_dir, probe_name, n)?));
    }
    std::fs::remove_file(&probe)?;
    // After the shaping, so that a slow node measures itself slow.
    let warm = match warm_up_mib {
        Some(w) => Some(warm_up(&lab, nodes, &payload_dir, w)?),
        None => None,
    };
    origin_counter(&lab, false)?;

    let mut measured = Vec::new();
    for transfer in [Transfer::Chain, Transfer::Stripes] {
        let name = format!("big-{nodes}-{}.tar.gz", transfer.name());
        let payload = random_archive(&payload_dir, &name, mib)?;
        let len = std::fs::metadata(&payload)?.len();
        let liar = match scenario.liar {
            Some(n) => {
                lab.stop_agent(n)?;
                let addr = lab.node(n)?.addr;
                let port = lab.node(n)?.site.agent.seed_port;
                let listener =
                    lab.in_netns(move || std::net::TcpListener::bind((addr, port)))??;
                Some(super::liar::Liar::start(listener, len))
            }
            None => None,
        };
        let pids: Vec<Option<u32>> = (1..=nodes).map(|i| agent_pid(&lab, i)).collect();
        let serve_pids: Vec<Option<u32>> = pids.iter().map(|p| p.and_then(serve_pid)).collect();
        let cpu_before: Vec<f64> = pids.iter().map(|p| p.map_or(0.0, cpu_s)).collect();
        let serve_before: Vec<f64> = serve_pids.iter().map(|p| p.map_or(0.0, cpu_s)).collect();
        origin_counter(&lab, true)?;
        eprintln!(
            "[{nodes} nodes, {}] submit ({})...",
            scenario.name(),
            transfer.name()
        );
        // The disk quiet before each submit: the previous transfer left every node's copy
        // to write back, and the submit's fsync of its seeding copy waited behind it (the
        // striped half, submitted second, accepted 1.3-2.7 s after submit against 0.3 s).
        std::process::Command::new("sync").status()?;
        let (start, seq) = match transfer {
            Transfer::Chain => submit_as(&lab, &payload, &chain_site)?,
            Transfer::Stripes => submit(&lab, &payload)?,
        };
        super::strike_faults(
            &mut lab,
            scenario,
            &name,
            len,
            start,
            &format!("[{nodes} nodes, {}]", transfer.name()),
        )?;
        let unhealthy = scenario.unhealthy();
        let slow_nodes: Vec<usize> = scenario.slow.iter().map(|s| s.0).collect();
        let healthy: Vec<usize> = (1..=nodes)
            .filter(|n| !unhealthy.contains(n) && !slow_nodes.contains(n))
            .collect();
        let verified = wait_nodes(&lab, &healthy, "apply started", &name, seq, start)?;
        let last = verified.iter().cloned().fold(f64::MIN, f64::max);
        let origin_sent = origin_counter(&lab, false)?;
        let gib = len as f64 / (1u64 << 30) as f64;
        // CPU seconds per process since `before`, per process counted, per GiB.
        let per_gib = |pids: &[Option<u32>], before: &[f64]| {
            let spent: f64 = pids
                .iter()
                .zip(before)
                .filter_map(|(p, before)| p.map(|p| (cpu_s(p) - before).max(0.0)))
                .sum();
            spent / pids.iter().flatten().count().max(1) as f64 / gib
        };
        // Read now, at the last healthy node's verify, not after the slow nodes' own.
        let (cpu_per_gib, serve_cpu_per_gib) = (
            per_gib(&pids, &cpu_before),
            per_gib(&serve_pids, &serve_before),
        );
        let mut slow = Vec::new();
        for &(n, copy) in &slow_copy {
            let own = wait_nodes(&lab, &[n], "apply started", &name, seq, start)?[0];
            slow.push((n, own, copy));
        }
        let rss_peak = (1..=nodes)
            .filter_map(|i| agent_pid(&lab, i).and_then(rss_kib))
            .map(|r| r.1)
            .max()
            .unwrap_or(0);
        eprintln!(
            "[{nodes} nodes, {}] {}: last healthy verified {last:.1} s",
            scenario.name(),
            transfer.name()
        );
        super::timeline(&lab, nodes, &name, seq, start);
        let roster_slow = match transfer {
            Transfer::Chain => None,
            Transfer::Stripes => roster_slow(&lab, nodes, &name, seq),
        };
        measured.push(Measured {
            transfer,
            verified: last,
            slow,
            origin_sent,
            rss_peak,
            cpu_per_gib,
            serve_cpu_per_gib,
            roster_slow,
        });
        // Every apply done (a 64 MiB archive extracted on each node) before the next submit,
        // whose time would otherwise include their write-back on the lab's one disk.
        let applying: Vec<usize> = healthy.iter().chain(&slow_nodes).copied().collect();
        wait_nodes(&lab, &applying, " applied: ", &name, seq, start)?;
        // Mend the fault for the next transfer.
        if let Some((n, _)) = scenario.hang {
            lab.signal_agent(n, nix::sys::signal::Signal::SIGCONT)?;
        }
        if let Some((n, _)) = scenario.crash {
            lab.start_node(n)?;
            // The restarted agent asks the fleet for the update it missed and fetches it: done
            // before the next submit, which would otherwise share the links, the cores and
            // the members' join bursts with it (the striped half's crash rows accepted 2.8 to
            // 3.0 s after the submit, the other rows' 0.5 s).
            let caught_up = std::time::Instant::now();
            while logged(&lab, n, " applied: ", &name, seq).is_none() {
                if caught_up.elapsed() > std::time::Duration::from_secs(120) {
                    eprintln!("node {n} did not apply the update it missed within 120 s");
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        }
        if let Some(n) = scenario.liar {
            drop(liar);
            lab.start_agent(n)?;
        }
        std::fs::remove_file(&payload)?;
    }
    lab.shutdown()?;
    Ok(Outcome {
        one_copy,
        warm_up: warm,
        measured,
    })
}

/// The model's full-rate p50 / max, slowest slow node and origin upload for `scenario` at
/// `nodes`, with the lab's parameters (its faults as shares of the members, placed at random by the model).
pub fn model(nodes: usize, mib: usize, mbit: u32, scenario: &Scenario) -> String {
    let mut config = stripe_sim::Config::lab(nodes, mib, mbit);
    // The lab's hops are addresses on one loopback: no added delay, a millisecond of
    // scheduling at most (the model's 30 ms is a real network's).
    config.hop = 0.001;
    let share = |count: usize| count as f64 / nodes as f64;
    let faults = stripe_sim::Scenario {
        name: "lab",
        slow: share(scenario.slow.len()),
        fail: share(scenario.crash.iter().count() + scenario.hang.iter().count()),
        liars: share(scenario.liar.iter().count()),
        late: 0.0,
    };
    if let Some(&(_, slow)) = scenario.slow.first() {
        config.slow_share = f64::from(slow) / f64::from(mbit);
    }
    let o = stripe_sim::simulate(config, faults);
    let slow = o.slow.last().map_or("-".into(), |s| format!("{s:.2}x"));
    format!(
        "{:.2}x / {:.2}x, slow {slow}, origin {:.2}x",
        stripe_sim::quantile(&o.full, 0.5),
        o.full.last().copied().unwrap_or(f64::NAN),
        o.origin_upload
    )
}

/// Prints the table of `--stripes`.
pub fn print(mib: usize, mbit: u32, rows: &[(usize, String, Outcome, String)]) {
    let len = (mib as u64) << 20;
    println!("chain vs stripes: {mib} MiB archive, links {mbit} Mbit/s per node each way; same lab per scenario, (warm-up,) chain, stripes; the model (benches/stripe_sim.rs, same parameters) beside");
    println!("machine: {}", machine());
    println!("| nodes | scenario | warm-up | one copy (s) | transfer | last healthy verified (s) | / one copy | slow nodes: own (s) / their one copy (s) | origin sent / payload | roster's slow | agent RSS peak (VmHWM MiB) | agent CPU s per node per GiB | its seed server's | model (stripes, 1 ms hops): full-rate p50 / max over one copy |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (nodes, scenario, outcome, model) in rows {
        let one_copy = outcome.one_copy;
        let warm = outcome
            .warm_up
            .as_ref()
            .map_or("none (cold)".to_string(), WarmUp::label);
        for m in &outcome.measured {
            let slow = if m.slow.is_empty() {
                "-".to_string()
            } else {
                m.slow
                    .iter()
                    .map(|(n, own, copy)| format!("{n}: {own:.1} / {copy:.1} = {:.2}x", own / copy))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            let model = if m.transfer == Transfer::Stripes {
                model.as_str()
            } else {
                ""
            };
            let roster = match &m.roster_slow {
                None => "",
                Some(slow) if slow.is_empty() => "none",
                Some(slow) => &nodes_list(slow),
            };
            println!(
                "| {nodes} | {scenario} | {warm} | {one_copy:.1} | {} | {:.1} | {:.2}x | {slow} | {:.2}x | {roster} | {:.1} | {:.1} | {:.1} | {model} |",
                m.transfer.name(),
                m.verified,
                m.verified / one_copy,
                m.origin_sent as f64 / len as f64,
                m.rss_peak as f64 / 1024.0,
                m.cpu_per_gib,
                m.serve_cpu_per_gib,
            );
        }
    }
}
