//! Issue 30, "Across NAT": a one-line manifest sent with `p2pu event sendfile` on node a
//! → `puppet apply` started on node b behind another NAT, over the punched path (two cone
//! NATs) and over the proxy's relay (two symmetric NATs), phase by phase (the command, the
//! announcement over the overlay to b's spool, b's intake, b's fetch and checks), beside the
//! figures main measured before b's agent could reach a's web seed server through its seed
//! end (Transmission's magnet path then; README's table, same rows).
//!
//! `cargo bench --bench nat_update [-- --rounds N]` (root; default 3 updates per path). The
//! fleet is tests/nat.rs's (tests/support/natfull.rs): whole nodes (Serf, Transmission, the
//! agent, the nat-client) behind NAT routers in network namespaces, the proxy on the lab's
//! "internet". Prints a table; asserts nothing about timings.

#[path = "support/mod.rs"]
mod bench;
#[path = "../tests/support/natfleet.rs"]
mod natfleet;
#[path = "../tests/support/natfull.rs"]
mod natfull;
#[path = "../tests/support/natlab.rs"]
mod natlab;
#[path = "../tests/support/mod.rs"]
mod support;

use bench::{machine, median, now_s, parse_stamp, Res};
use natfleet::Fleet;
use natfull::FullNode;
use natlab::Lan;
use std::time::Duration;
use support::wait_for;

/// The rows, in order.
const PHASES: [&str; 5] = [
    "`event sendfile` on a (torrent, seeding, signing, overlay send)",
    "sendfile started → announcement spooled on b",
    "spooled → accepted by b's agent",
    "accepted → `puppet apply` started (metainfo, payload, checks)",
    "sendfile started → `puppet apply` started on b",
];

/// Main before issue 30's seed ends, the same rows in seconds (punched, relayed): one
/// update each (the first of a fleet, so with its warm-up), `cargo bench --bench nat_update --
/// --rounds 1` with src/ at c52d0fb, 2026-12-06 on the 2-core build machine shared with other
/// builds (README, "Across NAT").
const BEFORE: [(f64, f64); 5] = [
    (0.62, 0.59),
    (0.62, 0.58),
    (0.30, 0.24),
    (28.92, 28.92),
    (29.84, 29.75),
];

/// One update's phases, in seconds, and where b's payload came from.
struct Sample {
    phases: [f64; 5],
    source: String,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("nat_update failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    let mut rounds = 3;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        // Anything else is cargo bench's (--bench).
        if arg == "--rounds" {
            rounds = args.next().ok_or("--rounds N")?.parse()?;
        }
    }
    if !nix::unistd::geteuid().is_root() {
        return Err("nat_update builds network namespaces: run it as root".into());
    }
    // The agent logs `apply started` at debug; the nodes' processes inherit this (set
    // before any thread starts).
    std::env::set_var("P2PU_LOG", "info,p2pu::agent::runtime::run=debug");
    let mut results = Vec::new();
    for (lan, path) in [(Lan::cone(1), "direct"), (Lan::symmetric(1), "relayed")] {
        eprintln!("NAT lab, {path} path: {rounds} updates...");
        results.push(measure(lan, path, rounds)?);
    }

    println!("\nnat_update: event sendfile on a → puppet apply started on b behind another NAT");
    println!("machine: {}", machine());
    println!("median of {rounds} updates per path; `before`: main at c52d0fb (Transmission's magnet path)\n");
    println!("| phase (s) | punched: before | punched: now | relay: before | relay: now |");
    println!("| --- | --- | --- | --- | --- |");
    for (i, name) in PHASES.iter().enumerate() {
        let now = |samples: &[Sample]| {
            let mut v: Vec<f64> = samples.iter().map(|s| s.phases[i]).collect();
            median(&mut v)
        };
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} |",
            BEFORE[i].0,
            now(&results[0]),
            BEFORE[i].1,
            now(&results[1])
        );
    }
    let total = |samples: &[Sample]| {
        let mut v: Vec<f64> = samples.iter().map(|s| s.phases[4]).collect();
        median(&mut v)
    };
    println!(
        "\nratio now/before, sendfile → apply started: punched {:.3}, relay {:.3}",
        total(&results[0]) / BEFORE[4].0,
        total(&results[1]) / BEFORE[4].1
    );
    for (samples, path) in results.iter().zip(["punched", "relay"]) {
        let sources: Vec<&str> = samples.iter().map(|s| s.source.as_str()).collect();
        println!("b's payload source, {path}: {sources:?}");
    }
    Ok(())
}

/// `rounds` updates from a to b, each waited for until applied on b.
fn measure(lan: Lan, path: &str, rounds: usize) -> Res<Vec<Sample>> {
    let fleet = Fleet::new(&[lan, lan]);
    let _proxy = fleet.start_proxy();
    let mut configs = fleet.full_configs(&[(1, 0, "a"), (2, 0, "b")]).into_iter();
    let mut a = fleet.start_full(1, 0, configs.next().ok_or("a")?);
    let b = fleet.start_full(2, 0, configs.next().ok_or("b")?);
    let session = a.nat.talkto("b");
    if session != format!("session with b: {path}") {
        return Err(format!("want the {path} path, got {session:?}").into());
    }
    // As in tests/nat.rs: b's agent reads the tunnel ends every 2 s.
    let end = wait_for(Duration::from_secs(5), || {
        b.nat.status().peers.into_iter().find_map(|p| p.tunnel)
    })
    .ok_or("b has no tunnel end for a")?;
    wait_for(Duration::from_secs(5), || {
        b.tracker_peers(&fleet.lab).contains(&end).then_some(())
    })
    .ok_or("b's tracker does not list its tunnel end")?;

    let mut samples = Vec::new();
    for round in 0..rounds {
        let name = format!("motd{round}.pp");
        let manifest = fleet.dir.path().join(&name);
        std::fs::write(
            &manifest,
            format!(
                "file {{ \"${{settings::vardir}}/motd.out\": content => \"round {round}\\n\" }}\n"
            ),
        )?;
        let sent = now_s();
        let (code, out, err) = a.p2pu(
            &fleet.lab,
            &["event", "sendfile", manifest.to_str().ok_or("utf-8")?],
        );
        let command = now_s() - sent;
        if code != 0 {
            return Err(format!("sendfile: {out}{err}").into());
        }
        use p2pu::agent::runtime::state::Status;
        wait_for(Duration::from_secs(120), || {
            (b.update_status(&fleet.lab, &name) == Some(Status::Applied)).then_some(())
        })
        .ok_or_else(|| {
            format!(
                "{name} not applied on b ({:?})\n{}{}",
                b.update_status(&fleet.lab, &name),
                a.dump_logs(&fleet.lab),
                b.dump_logs(&fleet.lab)
            )
        })?;
        let sample = sample(&b, &name, sent, command)?;
        eprintln!("  {name}: {:.2} s to apply started", sample.phases[4]);
        samples.push(sample);
    }
    Ok(samples)
}

/// The phases of update `name` on b, from its agent's log (debug level in the lab).
fn sample(b: &FullNode, name: &str, sent: f64, command: f64) -> Res<Sample> {
    let log = std::fs::read_to_string(b.info.log("agent"))?;
    let want = format!("name={name} ");
    let at = |what: &str| {
        log.lines()
            .filter(|l| l.contains(what) && l.contains(&want))
            .find_map(|l| Some((parse_stamp(l.split_whitespace().next()?)?, l.to_owned())))
    };
    let (accepted, line) = at(" accepted ").ok_or("no accepted line")?;
    let (started, _) = at("apply started")
        .ok_or_else(|| format!("no apply started line in b's agent log:\n{log}"))?;
    let spooled = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("spool="))
        .and_then(|f| f.split('-').next())
        .and_then(|n| n.parse::<u128>().ok())
        .map(|n| n as f64 / 1e9)
        .ok_or("no spool= in the accepted line")?;
    let store =
        p2pu::agent::runtime::state::StateStore::open_read_only(&b.info.site.agent.state_dir);
    let sources: Vec<String> = store
        .records(name)?
        .iter()
        .flat_map(|r| r.sources.iter().map(|s| s.addr.clone()))
        .collect();
    Ok(Sample {
        phases: [
            command,
            spooled - sent,
            accepted - spooled,
            started - accepted,
            started - sent,
        ],
        source: if sources.is_empty() {
            "Transmission".into()
        } else {
            sources.join(",")
        },
    })
}
