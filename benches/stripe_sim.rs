//! A model of the planned transfer (issue 24): stripes over interior-disjoint trees, built by
//! the agent's own plan (`p2pu::agent::transfer::topology`), to choose its parameters and to
//! predict 1,000 / 10,000 / 100,000 nodes, beside the relay chain's model.
//!
//! The model steps time (20 ms) through flows: one per (parent, child, stripe) of the plan, and
//! the flows repair adds. A flow carries at most
//!
//! - what its sender has verified of that stripe a hop's delay ago (30 ms, between the two
//!   steps around it), in whole blocks (16 KiB checked blocks, or 256 KiB pieces to compare):
//!   a block is forwarded only once it arrived whole and checked, which is what costs a block
//!   time at every hop;
//! - its share of the sender's uplink, shared max-min fairly among the sender's planned
//!   children first, then the orphans it adopted, then repair pulls;
//! - its share of the receiver's downlink, split evenly among the stripes it is still taking.
//!
//! Steps of 20 ms are below a 16 KiB block's time at a stripe's rate (21 ms at 8 stripes of
//! 50 Mbit/s), so the model keeps the block granularity that decides the depth's cost, while
//! stepping bytes, not blocks, keeps 100,000 nodes (800,000 flows) to 1 to 5 CPU minutes a run.
//!
//! Faults: slow members (a tenth of the rate, advertised, so the plan makes them leaves);
//! members that crash or hang (in turn) once they hold half the payload: a crash is seen by
//! the children at once (connection reset, 0.1 s), a hang after 1.25 s of silence and an
//! unanswered probe (`relay.rs`'s figures); liars that, from half-way, send blocks that fail
//! their check: each child takes one whole block from it (its downlink share is spent on it),
//! refuses it and leaves. A node that saw its source fail marks it missing *in its own view*
//! and takes the stripe from `Plan::source` (which may name a member that failed too, unseen
//! yet: the disagreement costs another detection), after a connection's set-up (two hops),
//! and pulls the stripe's missing blocks from the failed member's parents in every stripe
//! (whose uplink the failure freed) and from its repair neighbours, who serve it from uplink
//! their children leave. A node fallen 32 blocks behind its source, or holding all stripes but
//! one or two with more than 2% of one missing, also asks its neighbours (the end game). A slow
//! member never asks: its own link is what holds it. Members that joined after the
//! announcement (not in the plan) take every stripe from `Plan::late_source`.
//!
//! `cargo bench --bench stripe_sim -- [--nodes 1000,10000,100000] [--mib 64] [--mbit 50]
//!   [--hop-ms 30] [--start-s 0.35] [--block-kib 16] [--stripes 8] [--fanout 8]
//!   [--step-ms 20] [--sweep N]`
//! Prints, per scenario: full-rate nodes' p50/p99/max time (submit → last block) over one
//! copy, the slow nodes' worst over their own one copy, the origin's upload over the payload,
//! refused blocks, and the chain's model beside it. `--sweep N` first compares parameter
//! choices at N nodes. Asserts nothing.

use p2pu::agent::transfer::topology::{Class, Member, Node, Params, Plan};
use rayon::prelude::*;

/// A crash is seen at once (the connection resets); a hang after a second of silence and a
/// probe left unanswered (`relay.rs`: `HUNG_AFTER` plus a probe).
const CRASH_SEEN: f64 = 0.1;
const HUNG_SEEN: f64 = 1.25;
/// A node that fell this many blocks behind its source (whose uplink has more children than
/// it can feed at the stripe's rate: an adopter, a parent of late members) asks its
/// neighbours for the stripe too.
const BEHIND_BLOCKS: f64 = 32.0;
/// A node holding all stripes but one or two asks its neighbours for what they lack beyond
/// this share of a stripe.
const ENDGAME_LAG: f64 = 0.02;
const PLANNED: u8 = 0;
const ADOPTED: u8 = 1;
const REPAIR: u8 = 2;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Fault {
    None,
    Slow,
    /// Crashes, hangs, or starts lying once it holds this share of the payload.
    Crash(f64),
    Hang(f64),
    Liar(f64),
}

#[derive(Clone, Copy)]
pub(crate) struct Config {
    nodes: usize,
    len: f64,
    rate: f64,
    pub(crate) slow_share: f64,
    pub(crate) hop: f64,
    start: f64,
    block: f64,
    dt: f64,
    params: Params,
}

impl Config {
    /// The defaults for `nodes` and a payload of `mib` MiB on links of `mbit` Mbit/s (also
    /// what `benches/rollout -- --stripes` models its lab with).
    pub(crate) fn lab(nodes: usize, mib: usize, mbit: u32) -> Config {
        Config {
            nodes,
            len: mib as f64 * 1048576.0,
            rate: f64::from(mbit) * 1e6 / 8.0,
            slow_share: 0.1,
            hop: 0.03,
            start: 0.35,
            block: 16384.0,
            dt: 0.02,
            params: Params::DEFAULT,
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    pub(crate) slow: f64,
    pub(crate) fail: f64,
    pub(crate) liars: f64,
    pub(crate) late: f64,
}

const SCENARIOS: [Scenario; 6] = [
    Scenario {
        name: "equal links",
        slow: 0.0,
        fail: 0.0,
        liars: 0.0,
        late: 0.0,
    },
    Scenario {
        name: "5% slow (1/10 rate)",
        slow: 0.05,
        fail: 0.0,
        liars: 0.0,
        late: 0.0,
    },
    Scenario {
        name: "1% crash or hang half-way",
        slow: 0.0,
        fail: 0.01,
        liars: 0.0,
        late: 0.0,
    },
    Scenario {
        name: "0.5% send corrupt blocks",
        slow: 0.0,
        fail: 0.0,
        liars: 0.005,
        late: 0.0,
    },
    Scenario {
        name: "1% not in the plan (joined late)",
        slow: 0.0,
        fail: 0.0,
        liars: 0.0,
        late: 0.01,
    },
    Scenario {
        name: "all of the above",
        slow: 0.05,
        fail: 0.01,
        liars: 0.005,
        late: 0.01,
    },
];

#[derive(Clone, Copy)]
struct Flow {
    from: u32,
    to: u32,
    stripe: u16,
    /// Who is served first at the sender: its planned children (and members not in the plan
    /// that chose it), then the orphans it adopted, then repair pulls.
    tier: u8,
    live: bool,
    /// A failure of its sender was noticed (a detection is pending).
    flagged: bool,
    starts: f64,
    /// Bytes of failed blocks taken from a lying sender.
    junk: f64,
}

pub(crate) struct Outcome {
    /// Full-rate nodes' times over one copy, sorted.
    pub(crate) full: Vec<f64>,
    /// Slow nodes' times over their own one copy, sorted.
    pub(crate) slow: Vec<f64>,
    pub(crate) origin_upload: f64,
    refused_blocks: u64,
    unfinished: usize,
    depth: u32,
    repairs: usize,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

pub(crate) fn simulate(config: Config, scenario: Scenario) -> Outcome {
    let n = config.nodes;
    let late = (n as f64 * scenario.late).round() as usize;
    let total = n + late;
    let name = |i: usize| format!("node-{i:06}");
    // Faults spread at random over the members but the origin (node 0 by name).
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ n as u64);
    let mut faults = vec![Fault::None; total];
    let mut assign =
        |share: f64, mut make: Box<dyn FnMut(usize) -> Fault>, faults: &mut Vec<Fault>| {
            let want = (n as f64 * share).round() as usize;
            let mut given = 0;
            while given < want {
                let i = 1 + rng.below(n - 1);
                if faults[i] == Fault::None {
                    faults[i] = make(given);
                    given += 1;
                }
            }
        };
    assign(scenario.slow, Box::new(|_| Fault::Slow), &mut faults);
    assign(
        scenario.fail,
        Box::new(|k| {
            if k % 2 == 0 {
                Fault::Crash(0.5)
            } else {
                Fault::Hang(0.5)
            }
        }),
        &mut faults,
    );
    assign(scenario.liars, Box::new(|_| Fault::Liar(0.5)), &mut faults);
    let members: Vec<Member> = (0..n)
        .map(|i| Member {
            name: name(i),
            class: if faults[i] == Fault::Slow {
                Class::Slow
            } else {
                Class::Full
            },
        })
        .collect();
    let plan = Plan::new(b"stripe_sim", &members, &name(0), config.params).expect("plan");
    // Names sort as their numbers: node i of the model is plan node i.
    debug_assert!(plan.name(5.min(n as u32 - 1)) == name(5.min(n - 1)));
    let origin = plan.origin() as usize;
    let d = plan.stripes();
    let blocks = (config.len / config.block).ceil() as usize;
    let stripe_len: Vec<f64> = (0..d)
        .map(|s| ((blocks + d - 1 - s) / d) as f64 * config.block)
        .collect();
    let payload: f64 = stripe_len.iter().sum();
    let link: Vec<f64> = faults
        .iter()
        .map(|f| match f {
            Fault::Slow => config.rate * config.slow_share,
            _ => config.rate,
        })
        .collect();

    let mut flows: Vec<Flow> = Vec::with_capacity(total * d + total);
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); total];
    let mut senders: Vec<u32> = Vec::new();
    let mut listed = vec![false; total];
    let add = |flows: &mut Vec<Flow>,
               out: &mut Vec<Vec<u32>>,
               senders: &mut Vec<u32>,
               listed: &mut Vec<bool>,
               from: usize,
               to: usize,
               stripe: usize,
               tier: u8,
               starts: f64| {
        if !listed[from] {
            listed[from] = true;
            senders.push(from as u32);
        }
        out[from].push(flows.len() as u32);
        flows.push(Flow {
            from: from as u32,
            to: to as u32,
            stripe: stripe as u16,
            tier,
            live: true,
            flagged: false,
            starts,
            junk: 0.0,
        });
    };
    for c in 0..total {
        if c == origin {
            continue;
        }
        for s in 0..d {
            let parent = if c < n {
                plan.parent(s, c as Node).expect("a parent") as usize
            } else {
                plan.late_source(s, &name(c), |_| false) as usize
            };
            add(
                &mut flows,
                &mut out,
                &mut senders,
                &mut listed,
                parent,
                c,
                s,
                PLANNED,
                0.0,
            );
        }
    }

    // What a sender held a hop ago, between the two steps around it.
    let hop_steps = config.hop / config.dt;
    let (lo, hi) = (hop_steps.floor() as usize, hop_steps.ceil() as usize);
    let frac = hop_steps - lo as f64;
    let ring = hi + 1;
    let mut have = vec![0.0f64; total * d];
    let mut history: Vec<Vec<f64>> = vec![vec![0.0; total * d]; ring];
    // The (node, stripe)s still taking bytes (or done within a hop): only they need a history.
    let mut entries: Vec<u32> = (0..(total * d) as u32).collect();
    let mut done_step = vec![usize::MAX; total * d];
    let mut source_of = vec![u32::MAX; total * d];
    for (f, flow) in flows.iter().enumerate() {
        source_of[flow.to as usize * d + flow.stripe as usize] = f as u32;
    }
    let mut unfinished_nodes = total - 1;
    let mut received = vec![0.0f64; total];
    let mut sent = vec![0.0f64; total];
    let mut left = vec![d; total];
    left[origin] = 0;
    let mut done_at = vec![f64::NAN; total];
    done_at[origin] = 0.0;
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Up,
        Lying,
        Crashed,
        Hung,
    }
    let mut state = vec![State::Up; total];
    let mut failed_at = vec![f64::NAN; total];
    let mut missing: Vec<Vec<Node>> = vec![Vec::new(); total];
    let mut repairing = vec![false; total * d];
    let mut active = vec![d as u32; total];
    let mut active_next = vec![0u32; total];
    // (due, flow): a receiver leaves a failed source then.
    let mut pending: Vec<(f64, u32)> = Vec::new();
    let mut refused_blocks = 0u64;
    let mut repairs = 0usize;
    let mut wants: Vec<(f64, u32)> = Vec::new();
    // What each (receiver, stripe) took this step, valid where `counted` is this step.
    let mut used = vec![0.0f64; total * d];
    let mut counted = vec![0usize; total * d];

    let mut step = 0usize;
    let mut t = 0.0;
    let healthy = |c: usize, state: &[State]| state[c] == State::Up || state[c] == State::Lying;
    while t < 3600.0 {
        step += 1;
        t += config.dt;
        {
            let slot = &mut history[step % ring];
            for &at in &entries {
                slot[at as usize] = have[at as usize];
            }
        }
        let (then_lo, then_hi) = (
            &history[(step + ring - lo) % ring],
            &history[(step + ring - hi) % ring],
        );
        // Receivers leave failed sources whose failure they have now seen.
        let mut due: Vec<u32> = Vec::new();
        pending.retain(|&(when, f)| {
            if when <= t {
                due.push(f);
                false
            } else {
                true
            }
        });
        for f in due {
            let flow = flows[f as usize];
            flows[f as usize].live = false;
            let (c, s, bad) = (flow.to as usize, flow.stripe as usize, flow.from);
            if !healthy(c, &state) || have[c * d + s] >= stripe_len[s] {
                continue;
            }
            if !missing[c].contains(&bad) {
                missing[c].push(bad);
            }
            if flow.tier == REPAIR {
                continue;
            }
            let view = &missing[c];
            let source = if c < n {
                plan.source(s, c as Node, |m| view.contains(&m))
            } else {
                plan.late_source(s, &name(c), |m| view.contains(&m))
            } as usize;
            source_of[c * d + s] = flows.len() as u32;
            let tier = if c < n { ADOPTED } else { PLANNED };
            add(
                &mut flows,
                &mut out,
                &mut senders,
                &mut listed,
                source,
                c,
                s,
                tier,
                t + 2.0 * config.hop,
            );
            // The failed member's parents, in every stripe, each lost a child's worth of
            // uplink: its orphans pull from them; and from their own neighbours.
            let mut from: Vec<Node> = if (bad as usize) < n {
                (0..d).filter_map(|t| plan.parent(t, bad)).collect()
            } else {
                Vec::new()
            };
            if !repairing[c * d + s] {
                repairing[c * d + s] = true;
                repairs += 1;
                from.extend(plan.neighbours(&name(c)));
            }
            from.sort_unstable();
            from.dedup();
            for m in from {
                if m as usize != c && m != source as Node && !missing[c].contains(&m) {
                    add(
                        &mut flows,
                        &mut out,
                        &mut senders,
                        &mut listed,
                        m as usize,
                        c,
                        s,
                        REPAIR,
                        t + 2.0 * config.hop,
                    );
                }
            }
        }
        std::mem::swap(&mut active, &mut active_next);
        active_next.iter_mut().for_each(|a| *a = 0);
        if t < config.start {
            continue;
        }
        for &u in &senders {
            let u = u as usize;
            if out[u].is_empty() {
                continue;
            }
            if matches!(state[u], State::Crashed | State::Hung) {
                let seen = if state[u] == State::Crashed {
                    CRASH_SEEN
                } else {
                    HUNG_SEEN
                };
                for &f in &out[u] {
                    let flow = &mut flows[f as usize];
                    if flow.live && !flow.flagged {
                        flow.flagged = true;
                        pending.push(((failed_at[u] + seen).max(t), f));
                    }
                }
                out[u].clear();
                continue;
            }
            let lying = state[u] == State::Lying;
            let mut budget = link[u] * config.dt;
            for tier in [PLANNED, ADOPTED, REPAIR] {
                wants.clear();
                for &f in &out[u] {
                    let flow = &flows[f as usize];
                    if !flow.live || flow.tier != tier || flow.flagged || flow.starts > t {
                        continue;
                    }
                    let (c, s) = (flow.to as usize, flow.stripe as usize);
                    if !healthy(c, &state) {
                        continue;
                    }
                    let at = c * d + s;
                    // A liar sends junk as fast as it is taken; the origin holds it all.
                    let visible = if lying || u == origin {
                        stripe_len[s]
                    } else {
                        let from = u * d + s;
                        let v = if done_step[from] != usize::MAX && step - done_step[from] > hi {
                            stripe_len[s]
                        } else {
                            then_lo[from] * (1.0 - frac) + then_hi[from] * frac
                        };
                        if v >= stripe_len[s] {
                            stripe_len[s]
                        } else {
                            (v / config.block).floor() * config.block
                        }
                    };
                    let raw = visible - have[at];
                    if raw <= 0.0 {
                        continue;
                    }
                    if counted[at] != step {
                        counted[at] = step;
                        used[at] = 0.0;
                        active_next[c] += 1;
                    }
                    let room = link[c] * config.dt / active[c].max(1) as f64 - used[at];
                    let want = raw.min(room);
                    if want > 0.0 {
                        wants.push((want, f));
                    }
                }
                wants.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
                let mut others = wants.len();
                for &(want, f) in &wants {
                    let got = want.min(budget / others as f64);
                    others -= 1;
                    budget -= got;
                    sent[u] += got;
                    let flow = &mut flows[f as usize];
                    let (c, s) = (flow.to as usize, flow.stripe as usize);
                    let at = c * d + s;
                    used[at] += got;
                    if lying {
                        // The receiver checks the block once it arrived whole, refuses it and
                        // leaves the liar.
                        flow.junk += got;
                        if flow.junk >= config.block && !flow.flagged {
                            flow.flagged = true;
                            refused_blocks += 1;
                            pending.push((t, f));
                        }
                        continue;
                    }
                    let before = have[at];
                    have[at] = (have[at] + got).min(stripe_len[s]);
                    received[c] += have[at] - before;
                    if have[at] >= stripe_len[s] && before < stripe_len[s] {
                        flow.live = false;
                        done_step[at] = step;
                        left[c] -= 1;
                        if left[c] == 0 {
                            done_at[c] = t;
                            unfinished_nodes -= 1;
                        }
                    }
                    // A member fails once it holds its share of the payload.
                    if state[c] == State::Up {
                        match faults[c] {
                            Fault::Crash(at) if received[c] >= at * payload => {
                                state[c] = State::Crashed;
                                failed_at[c] = t;
                                unfinished_nodes -= usize::from(left[c] > 0);
                            }
                            Fault::Hang(at) if received[c] >= at * payload => {
                                state[c] = State::Hung;
                                failed_at[c] = t;
                                unfinished_nodes -= usize::from(left[c] > 0);
                            }
                            Fault::Liar(at) if received[c] >= at * payload => {
                                state[c] = State::Lying;
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        // A node fallen behind its source asks its neighbours too.
        if step % 10 == 0 {
            for &at in &entries {
                let at = at as usize;
                let (c, s) = (at / d, at % d);
                // A slow member lags because of its own link: asking others would not help.
                if repairing[at]
                    || have[at] >= stripe_len[s]
                    || !healthy(c, &state)
                    || faults[c] == Fault::Slow
                {
                    continue;
                }
                let Some(flow) = flows.get(source_of[at] as usize) else {
                    continue;
                };
                let u = flow.from as usize;
                let ahead = if u == origin {
                    stripe_len[s]
                } else {
                    have[u * d + s]
                };
                let behind = flow.live && ahead - have[at] >= BEHIND_BLOCKS * config.block;
                // The end game: all but a stripe or two held, the downlink is idle.
                let last = left[c] <= 2 && stripe_len[s] - have[at] >= ENDGAME_LAG * stripe_len[s];
                if !behind && !last {
                    continue;
                }
                repairing[at] = true;
                repairs += 1;
                for m in plan.neighbours(&name(c)) {
                    if !missing[c].contains(&m) {
                        add(
                            &mut flows,
                            &mut out,
                            &mut senders,
                            &mut listed,
                            m as usize,
                            c,
                            s,
                            REPAIR,
                            t + 2.0 * config.hop,
                        );
                    }
                }
            }
        }
        if step % 50 == 0 {
            for list in out.iter_mut() {
                list.retain(|&f| flows[f as usize].live);
            }
            senders.retain(|&u| {
                let keep = !out[u as usize].is_empty();
                listed[u as usize] = keep;
                keep
            });
            entries.retain(|&at| {
                let done = done_step[at as usize];
                done == usize::MAX || step - done <= hi + 1
            });
        }
        if std::env::var_os("SIM_DEBUG").is_some() && step % 100 == 0 {
            let heads: Vec<usize> = plan
                .children(0, origin as Node)
                .iter()
                .map(|&h| h as usize)
                .collect();
            eprintln!(
                "t {t:.2} origin sent {:.1} MiB head0 have {:?} node 500 {:?}",
                sent[origin] / 1048576.0,
                (0..d)
                    .map(|s| (have[heads[0] * d + s] / 1024.0) as u64)
                    .collect::<Vec<_>>(),
                (0..d)
                    .map(|s| (have[500 * d + s] / 1024.0) as u64)
                    .collect::<Vec<_>>()
            );
        }
        if unfinished_nodes == 0 {
            break;
        }
    }
    let copy = payload / config.rate;
    let mut full = Vec::new();
    let mut slow = Vec::new();
    let mut unfinished = 0;
    for c in 0..total {
        if c == origin || !matches!(faults[c], Fault::None | Fault::Slow) {
            continue;
        }
        if done_at[c].is_nan() {
            unfinished += 1;
            continue;
        }
        match faults[c] {
            Fault::Slow => slow.push(done_at[c] / (copy / config.slow_share)),
            _ => full.push(done_at[c] / copy),
        }
    }
    full.sort_by(f64::total_cmp);
    slow.sort_by(f64::total_cmp);
    Outcome {
        full,
        slow,
        origin_upload: sent[origin] / payload,
        refused_blocks,
        unfinished,
        depth: plan.max_depth(),
        repairs,
    }
}

pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// The relay chain's model (`benches/rollout_sim`) with equal links: each node a hop and a
/// piece behind the one before it, so start + one copy + (n - 1) × (hop + piece time); the
/// step model gives this to the 0.1 s at 1,000 nodes (51.6 s, README), where it is still
/// cheap to run. Faults only add to it.
fn chain(config: Config, nodes: usize) -> f64 {
    let copy = config.len / config.rate;
    let piece = (config.len / 2048.0).max(16384.0).log2().ceil().exp2();
    // rollout_sim steps 5 ms: a 30 ms hop is 7 steps there.
    let hop = ((config.hop / 0.005).round() + 1.0) * 0.005;
    (config.start + copy + (nodes as f64 - 1.0) * (hop + piece / config.rate)) / copy
}

fn row(config: Config, scenario: Scenario, o: &Outcome, secs: f64) -> String {
    let slow = if o.slow.is_empty() {
        "-".to_owned()
    } else {
        format!("{:.2}x", o.slow.last().copied().unwrap_or(f64::NAN))
    };
    format!(
        "| {} | {} | d={} k={} {} KiB | {} | {:.3}x | {:.3}x | {:.3}x | {} | {:.3}x | {} / {} | {} | {:.1}x | {:.0} s |",
        config.nodes,
        scenario.name,
        config.params.stripes,
        config.params.fanout,
        config.block / 1024.0,
        o.depth,
        quantile(&o.full, 0.5),
        quantile(&o.full, 0.99),
        o.full.last().copied().unwrap_or(f64::NAN),
        slow,
        o.origin_upload,
        o.refused_blocks,
        o.repairs,
        o.unfinished,
        chain(config, config.nodes),
        secs
    )
}

const HEADER: &str = "| nodes | scenario | plan | depth | full-rate p50 | p99 | max | slowest slow node / its own copy | origin upload / payload | refused blocks / repairs | unfinished | chain model (equal links) | run |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::lab(0, 64, 50);
    let mut nodes = vec![1000, 10_000, 100_000];
    let mut sweep: Option<usize> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--nodes" => {
                nodes = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--mib" => config.len = value()?.parse::<f64>()? * 1048576.0,
            "--mbit" => config.rate = value()?.parse::<f64>()? * 1e6 / 8.0,
            "--hop-ms" => config.hop = value()?.parse::<f64>()? / 1000.0,
            "--start-s" => config.start = value()?.parse()?,
            "--block-kib" => config.block = value()?.parse::<f64>()? * 1024.0,
            "--stripes" => config.params.stripes = value()?.parse()?,
            "--fanout" => config.params.fanout = value()?.parse()?,
            "--step-ms" => config.dt = value()?.parse::<f64>()? / 1000.0,
            "--sweep" => sweep = Some(value()?.parse()?),
            a if a.starts_with("--") => {} // cargo bench passes --bench
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    println!(
        "model: {:.0} MiB at {:.0} Mbit/s (one copy {:.2} s), slow members at 1/{:.0}, {:.0} ms a hop, {:.2} s from submit to the first request, {} ms steps",
        config.len / 1048576.0,
        config.rate * 8.0 / 1e6,
        config.len / config.rate,
        1.0 / config.slow_share,
        config.hop * 1000.0,
        config.start,
        config.dt * 1000.0
    );
    println!("times are submit → last block over one copy at the full rate; slow nodes over their own one copy");
    println!();
    println!("{HEADER}");
    if let Some(at) = sweep {
        let all = SCENARIOS[5];
        let mut choices: Vec<Config> = Vec::new();
        for (stripes, fanout, block) in [
            (4, 4, 16.0),
            (8, 8, 16.0),
            (16, 16, 16.0),
            (8, 16, 16.0),
            (8, 8, 256.0),
        ] {
            let mut c = config;
            c.nodes = at;
            c.params.stripes = stripes;
            c.params.fanout = fanout;
            c.block = block * 1024.0;
            choices.push(c);
        }
        let rows: Vec<String> = choices
            .par_iter()
            .map(|&c| {
                let started = std::time::Instant::now();
                let o = simulate(c, all);
                row(c, all, &o, started.elapsed().as_secs_f64())
            })
            .collect();
        for r in rows {
            println!("{r}");
        }
    }
    for &at in &nodes {
        let mut c = config;
        c.nodes = at;
        let rows: Vec<String> = SCENARIOS
            .par_iter()
            .map(|&s| {
                let started = std::time::Instant::now();
                let o = simulate(c, s);
                row(c, s, &o, started.elapsed().as_secs_f64())
            })
            .collect();
        for r in rows {
            println!("{r}");
        }
    }
    Ok(())
}
