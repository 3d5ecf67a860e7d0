//! A small model of p2pu's transfer (`src/agent/transfer/relay.rs`), fed with figures measured
//! on the lab, to check against the lab at the sizes it can run and then to predict fleets it
//! cannot: 1,000 nodes with slow and failing members.
//!
//! The model steps time (5 ms) through the relay chain: node i fetches from the member before
//! it, receiving at most its own link's rate, its share of its source's uplink (shared evenly
//! among that source's readers, a reader limited by its own link leaving the rest to the
//! others), and only what its source has verified (a piece behind it, plus the measured
//! per-hop delay). A node whose source is slow leaves it for the nearest member ahead that holds
//! more once the watcher has seen it ([`SLOW_AFTER`]); a crashed source is left at once, a hung
//! one after [`HUNG_AFTER`]. Each node finishes a fixed overhead (final check, apply) after its
//! last byte.
//!
//! `cargo bench --bench rollout_sim -- [--copy-s S] [--start-s S] [--hop-ms MS] [--finish-s S]
//!   [--mib M] [--measured N=SECS,...] [--predict N] [--slow-frac F] [--fail-frac F]`
//! Defaults are the figures measured on the lab (see README's benchmark section). Prints the
//! model's time to the last healthy node applied beside the measured ones, then predictions.
//! Asserts nothing.

use std::time::Duration;

/// The watcher's time to see a slow source (probe, comparison span, trial read), and a hung
/// one (no byte, no answer to a probe); the values in `relay.rs`.
const SLOW_AFTER: f64 = 0.75;
const COMPARE_OVER: f64 = 0.5;
const HUNG_AFTER: f64 = 1.25;
const STEP: f64 = 0.005;

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    /// Its link runs at this share of the others'.
    Slow(f64),
    /// Crashes once it holds this share of the payload (its readers see it at once).
    Crash(f64),
    /// Hangs there (its readers see it after [`HUNG_AFTER`]).
    Hang(f64),
}

/// What one run is fed.
#[derive(Clone, Copy)]
struct Figures {
    /// One HTTP copy at the healthy link rate (s), from which the rate follows.
    copy_s: f64,
    /// Submit → the first node asks for bytes (s).
    start_s: f64,
    /// Delay each hop adds (s), beyond a piece.
    hop_s: f64,
    /// Last byte → applied (s).
    finish_s: f64,
    /// Payload and piece size (bytes).
    len: f64,
    piece: f64,
}

/// Seconds from submit to the last healthy node applied, and to the slow nodes' last.
fn simulate(figures: Figures, faults: &[Fault]) -> (f64, f64) {
    let n = faults.len();
    let rate = figures.len / figures.copy_s;
    let link: Vec<f64> = faults
        .iter()
        .map(|f| match f {
            Fault::Slow(share) => rate * share,
            _ => rate,
        })
        .collect();
    let mut have = vec![0.0f64; n];
    have[0] = figures.len;
    let mut parent: Vec<usize> = (0..n).map(|i| i.saturating_sub(1)).collect();
    let mut dead = vec![false; n];
    let mut done_at = vec![f64::NAN; n];
    done_at[0] = 0.0;
    // Each node's verified bytes over the comparison span, for its rate.
    let mut window: Vec<std::collections::VecDeque<f64>> =
        (0..n).map(|_| std::collections::VecDeque::new()).collect();
    // When each node's source started looking slow or stopped (for the watcher's delay).
    let mut suspect_since = vec![f64::NAN; n];
    // Each node's verified bytes a hop's delay ago: what its readers can have.
    let lag_steps = (figures.hop_s / STEP).round() as usize + 1;
    let mut history: Vec<std::collections::VecDeque<f64>> =
        (0..n).map(|_| std::collections::VecDeque::new()).collect();
    let mut t = 0.0;
    while t < 3600.0 {
        t += STEP;
        for (i, h) in history.iter_mut().enumerate() {
            h.push_back(have[i]);
            if h.len() > lag_steps {
                h.pop_front();
            }
        }
        if t < figures.start_s {
            continue;
        }
        // Readers of each source, and what each reader could take this step.
        let mut want = vec![0.0f64; n];
        for i in 1..n {
            if dead[i] || have[i] >= figures.len || dead[parent[i]] {
                continue;
            }
            let p = parent[i];
            let visible = if have[p] >= figures.len {
                figures.len
            } else {
                let past = history[p].front().copied().unwrap_or(0.0);
                (past / figures.piece).floor() * figures.piece
            };
            want[i] = (visible - have[i]).max(0.0).min(link[i] * STEP);
        }
        // Each source's uplink shared evenly, water-filled.
        let mut readers: Vec<Vec<usize>> = vec![Vec::new(); n];
        for i in 1..n {
            if want[i] > 0.0 {
                readers[parent[i]].push(i);
            }
        }
        let mut got = vec![0.0f64; n];
        for (p, list) in readers.iter_mut().enumerate() {
            if dead[p] || list.is_empty() {
                continue;
            }
            let mut budget = link[p] * STEP;
            list.sort_by(|a, b| want[*a].total_cmp(&want[*b]));
            let mut left = list.len();
            for &i in list.iter() {
                let take = want[i].min(budget / left as f64);
                got[i] = take;
                budget -= take;
                left -= 1;
            }
        }
        for i in 1..n {
            if dead[i] {
                continue;
            }
            have[i] = (have[i] + got[i]).min(figures.len);
            if have[i] >= figures.len && done_at[i].is_nan() {
                done_at[i] = t + figures.finish_s;
            }
            if let Fault::Crash(at) | Fault::Hang(at) = faults[i] {
                if have[i] >= at * figures.len {
                    dead[i] = true;
                }
            }
        }
        // The watchers: a dead source is left (at once for a crash, after a while for a hang); a
        // slow one once the member ahead would send at least twice as fast as this node got
        // over the comparison span (what the trial read measures).
        let window_steps = (COMPARE_OVER / STEP).round() as usize;
        for i in 1..n {
            if dead[i] || have[i] >= figures.len {
                continue;
            }
            let p = parent[i];
            // The watcher's gap: a few pieces, never under 512 KiB (relay.rs).
            let gap = (4.0 * figures.piece).max(524288.0);
            // The next member ahead that is alive (the watcher probes the next source); a
            // crashed source is left for it at once, whatever it holds (the stream goes to its
            // next source), a hung or slow one once it holds a gap more.
            let next = (0..p).rev().find(|&a| !dead[a]);
            let ahead = match (dead[p], faults[p]) {
                (true, Fault::Crash(_)) => next,
                _ => next.filter(|&a| have[a] > have[i] + gap),
            };
            let Some(ahead) = ahead else {
                suspect_since[i] = f64::NAN;
                continue;
            };
            let before = window[i].front().copied().unwrap_or(0.0);
            let ours = (have[i] - before) / (window[i].len().max(1) as f64 * STEP);
            let share = link[ahead] / (readers[ahead].len() + 1) as f64;
            let slow = window[i].len() >= window_steps && link[i].min(share) >= 2.0 * ours;
            if dead[p] || slow {
                if suspect_since[i].is_nan() {
                    suspect_since[i] = t;
                }
                let wait = match (dead[p], faults[p]) {
                    (true, Fault::Hang(_)) => HUNG_AFTER,
                    (true, _) => STEP,
                    (false, _) => SLOW_AFTER - COMPARE_OVER,
                };
                if t - suspect_since[i] >= wait {
                    parent[i] = ahead;
                    suspect_since[i] = f64::NAN;
                    window[i].clear();
                }
            } else {
                suspect_since[i] = f64::NAN;
            }
        }
        // The span starts at a node's first byte from its source, as the watcher's samples do.
        for (i, w) in window.iter_mut().enumerate() {
            if have[i] == 0.0 {
                continue;
            }
            w.push_back(have[i]);
            if w.len() > window_steps {
                w.pop_front();
            }
        }
        let finished = (0..n).all(|i| dead[i] || !done_at[i].is_nan());
        if finished {
            break;
        }
    }
    if std::env::var_os("SIM_DEBUG").is_some() {
        for i in 0..n {
            eprintln!(
                "node {i}: parent {} done {:.2} dead {}",
                parent[i], done_at[i], dead[i]
            );
        }
    }
    let healthy = (0..n)
        .filter(|&i| faults[i] == Fault::None)
        .map(|i| done_at[i])
        .fold(0.0, f64::max);
    let slow = (0..n)
        .filter(|&i| matches!(faults[i], Fault::Slow(_)))
        .map(|i| done_at[i])
        .fold(f64::NAN, f64::max);
    (healthy, slow)
}

/// A fleet of `n` with `slow` and `fail` shares of its members (other than the origin) slow at
/// a tenth of the rate, or failing half-way (crashing and hanging in turn), spread evenly along
/// the chain.
fn fleet(n: usize, slow: f64, fail: f64) -> Vec<Fault> {
    let mut faults = vec![Fault::None; n];
    let every = |share: f64| (share > 0.0).then(|| ((1.0 / share).round() as usize).max(2));
    if let Some(k) = every(slow) {
        for i in (k / 2..n).step_by(k) {
            faults[i] = Fault::Slow(0.1);
        }
    }
    if let Some(k) = every(fail) {
        for (nth, i) in (k / 3..n).step_by(k).enumerate() {
            if faults[i] == Fault::None && i > 0 {
                faults[i] = if nth % 2 == 0 {
                    Fault::Crash(0.5)
                } else {
                    Fault::Hang(0.5)
                };
            }
        }
    }
    faults
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Measured on the lab (README): 64 MiB at 50 Mbit/s.
    let mut figures = Figures {
        copy_s: 10.9,
        start_s: 0.3,
        hop_s: 0.02,
        finish_s: 0.4,
        len: 64.0 * 1048576.0,
        piece: 32768.0,
    };
    let mut measured: Vec<(usize, f64)> = Vec::new();
    let mut predict = 1000;
    let (mut slow, mut fail) = (0.05, 0.01);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--copy-s" => figures.copy_s = value()?.parse()?,
            "--start-s" => figures.start_s = value()?.parse()?,
            "--hop-ms" => figures.hop_s = value()?.parse::<f64>()? / 1000.0,
            "--finish-s" => figures.finish_s = value()?.parse()?,
            "--mib" => {
                let mib: f64 = value()?.parse()?;
                figures.len = mib * 1048576.0;
                figures.piece = (figures.len / 2048.0).max(16384.0).log2().ceil().exp2();
            }
            "--measured" => {
                for pair in value()?.split(',') {
                    let (n, secs) = pair.split_once('=').ok_or("--measured N=SECS,...")?;
                    measured.push((n.parse()?, secs.parse()?));
                }
            }
            "--predict" => predict = value()?.parse()?,
            "--slow-frac" => slow = value()?.parse()?,
            "--fail-frac" => fail = value()?.parse()?,
            a if a.starts_with("--") => {} // cargo bench passes --bench
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let started = std::time::Instant::now();
    println!(
        "model: one copy {:.1} s, start {:.2} s, {:.0} ms per hop, {:.2} s to apply, {:.0} MiB in {:.0} KiB pieces",
        figures.copy_s,
        figures.start_s,
        figures.hop_s * 1000.0,
        figures.finish_s,
        figures.len / 1048576.0,
        figures.piece / 1024.0
    );
    println!("| nodes | scenario | model (s) | model / one copy | lab (s) | model / lab |");
    println!("|---|---|---|---|---|---|");
    for &(n, lab) in &measured {
        let (model, _) = simulate(figures, &vec![Fault::None; n]);
        println!(
            "| {n} | all links equal | {model:.1} | {:.2}x | {lab:.1} | {:.2} |",
            model / figures.copy_s,
            model / lab
        );
    }
    let scenarios = [
        ("all links equal", 0.0, 0.0),
        ("5% slow (1/10 rate)", slow, 0.0),
        ("1% fail half-way", 0.0, fail),
        ("5% slow and 1% fail", slow, fail),
    ];
    for (name, s, f) in scenarios {
        let (model, slowest) = simulate(figures, &fleet(predict, s, f));
        let slowest = if slowest.is_nan() {
            String::new()
        } else {
            format!(" (slowest slow node {slowest:.1} s)")
        };
        println!(
            "| {predict} | {name}{slowest} | {model:.1} | {:.2}x | - | - |",
            model / figures.copy_s
        );
    }
    eprintln!(
        "simulated in {:?}",
        started.elapsed().min(Duration::from_secs(3600))
    );
    Ok(())
}
