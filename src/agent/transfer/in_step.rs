//! Keeps a complete node's stripe answers in step (docs/DESIGN.md 5.1). The origin sends each
//! stripe's head its stripe over its own TCP stream; TCP shares the origin's uplink and each
//! head's downlink unevenly, so one head's stripe fell far behind the others, and since every
//! node's copy of a stripe follows its head's, that stripe was every node's last (the lab's
//! per-stripe progress). A node that holds the whole payload therefore lets no stripe's answer
//! run more than [`LEAD`] blocks ahead of the slowest stripe it sends, so the bandwidth left
//! over goes to the stripe every node will wait for.
//!
//! What one reader can do with this, each bounded: a stripe whose answers stall for
//! [`STALL`] (a hung head, a reader that stopped reading) holds no other; nor does one whose
//! rate over its last [`WINDOW`] is under [`SLOW_SHARE`] of its fair share of the fastest the
//! node has sent this payload (a slow link, or a member trickling on purpose); and while the
//! node sends the payload under [`KEPT_SHARE`] of its fastest, no stripe holds another, so a
//! reader trickling just above its share cannot idle the node's uplink either. A stripe's place is its furthest
//! answer's, so a second reader of a stripe (a stranger, a late child) cannot pull it back.
//! Repair reads and nodes still fetching are not paced: their answers wait on the blocks they
//! hold anyway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many blocks a stripe's answer may run ahead of the slowest stripe counted.
pub const LEAD: u32 = 8;
/// A stripe that has not advanced for this long holds no other stripe.
pub const STALL: Duration = Duration::from_millis(500);
/// Rates are measured over windows of this length.
pub const WINDOW: Duration = Duration::from_secs(1);
/// A stripe slower than this share of its fair share of the node's fastest holds none.
pub const SLOW_SHARE: (u32, u32) = (1, 3);
/// While the node sends the payload slower than this share of its fastest, no stripe holds
/// another: holding is meant to move the uplink to the stripe behind, never to idle it.
pub const KEPT_SHARE: (u32, u32) = (2, 3);

/// The stripes being sent of each payload (by info-hash), shared by a seed server's answers.
#[derive(Clone, Default)]
pub struct InStep(Arc<Mutex<HashMap<String, Payload>>>);

#[derive(Default)]
struct Payload {
    stripes: HashMap<u32, Stripe>,
    total: u64,
    /// Blocks sent of all stripes, measured as one rate whose best window is the node's
    /// fastest: what pacing cannot lower, since it is a maximum.
    sent: Rate,
    fastest: Option<f64>,
}

struct Stripe {
    /// The stripe's blocks sent by its furthest answer.
    next: u32,
    advanced: Instant,
    rate: Rate,
    answers: usize,
}

/// A count's rate over the last whole [`WINDOW`].
#[derive(Default)]
struct Rate {
    window: Option<(Instant, u64)>,
    last: Option<f64>,
}

impl Rate {
    fn update(&mut self, count: u64, now: Instant) {
        match self.window {
            None => self.window = Some((now, count)),
            Some((since, from)) => {
                let span = now.saturating_duration_since(since);
                if span >= WINDOW {
                    self.last = Some((count - from) as f64 / span.as_secs_f64());
                    self.window = Some((now, count));
                }
            }
        }
    }
}

/// One answer's place in its payload's step; leaves it when dropped.
pub struct Stepper {
    in_step: InStep,
    hash: String,
    stripe: u32,
}

impl InStep {
    /// Joins the answer sending `stripe` of payload `hash`.
    pub fn join(&self, hash: &str, stripe: u32, now: Instant) -> Stepper {
        let mut payloads = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let entry = payloads
            .entry(hash.to_string())
            .or_default()
            .stripes
            .entry(stripe)
            .or_insert(Stripe {
                next: 0,
                advanced: now,
                rate: Rate::default(),
                answers: 0,
            });
        entry.answers += 1;
        Stepper {
            in_step: self.clone(),
            hash: hash.to_string(),
            stripe,
        }
    }
}

impl Stepper {
    /// Whether this answer may send its stripe's block at `position` (the block's place in
    /// its stripe) now; if so, the stripe counts it sent. Called again while it says no.
    pub fn may_advance(&mut self, position: u32, now: Instant) -> bool {
        let mut payloads = self.in_step.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(payload) = payloads.get_mut(&self.hash) else {
            return true;
        };
        if floor_beside(payload, self.stripe, now).is_some_and(|floor| position > floor + LEAD) {
            return false;
        }
        let Some(mine) = payload.stripes.get_mut(&self.stripe) else {
            return true;
        };
        if position + 1 > mine.next {
            let more = position + 1 - mine.next;
            mine.next = position + 1;
            mine.advanced = now;
            mine.rate.update(u64::from(mine.next), now);
            payload.total += u64::from(more);
            payload.sent.update(payload.total, now);
            if let Some(rate) = payload.sent.last {
                payload.fastest = Some(payload.fastest.map_or(rate, |best: f64| best.max(rate)));
            }
        }
        true
    }
}

/// The slowest other stripe that still counts (advanced within [`STALL`], and no slower than
/// [`SLOW_SHARE`] of its fair share of the node's fastest); `None` when none does, or while
/// the node sends under [`KEPT_SHARE`] of its fastest.
fn floor_beside(payload: &Payload, mine: u32, now: Instant) -> Option<u32> {
    if let (Some(rate), Some(fastest)) = (payload.sent.last, payload.fastest) {
        if rate * f64::from(KEPT_SHARE.1) < fastest * f64::from(KEPT_SHARE.0) {
            return None;
        }
    }
    let fair = payload
        .fastest
        .map(|fastest| fastest / payload.stripes.len() as f64);
    payload
        .stripes
        .iter()
        .filter(|(&stripe, _)| stripe != mine)
        .filter(|(_, s)| now.saturating_duration_since(s.advanced) < STALL)
        .filter(|(_, s)| match (s.rate.last, fair) {
            (Some(rate), Some(fair)) => {
                rate * f64::from(SLOW_SHARE.1) >= fair * f64::from(SLOW_SHARE.0)
            }
            _ => true,
        })
        .map(|(_, s)| s.next)
        .min()
}

impl Drop for Stepper {
    fn drop(&mut self) {
        let mut payloads = self.in_step.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(payload) = payloads.get_mut(&self.hash) else {
            return;
        };
        if let Some(stripe) = payload.stripes.get_mut(&self.stripe) {
            stripe.answers -= 1;
            if stripe.answers == 0 {
                payload.stripes.remove(&self.stripe);
            }
        }
        if payload.stripes.is_empty() {
            payloads.remove(&self.hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "aa";

    /// Sends `blocks` of a stepper's stripe from `from`, at `now`, all allowed.
    fn send(stepper: &mut Stepper, from: u32, blocks: u32, now: Instant) {
        for position in from..from + blocks {
            assert!(stepper.may_advance(position, now), "block {position} held");
        }
    }

    #[test]
    fn a_stripe_runs_at_most_lead_blocks_ahead_of_the_slowest() {
        let in_step = InStep::default();
        let t0 = Instant::now();
        let mut fast = in_step.join(HASH, 0, t0);
        let mut slow = in_step.join(HASH, 1, t0);
        send(&mut fast, 0, LEAD + 1, t0);
        assert!(!fast.may_advance(LEAD + 1, t0), "ran past the lead");
        send(&mut slow, 0, 1, t0);
        assert!(
            fast.may_advance(LEAD + 1, t0),
            "not let go once the slow one moved"
        );
        // The slow one is never held by the fast one.
        send(&mut slow, 1, 4, t0);
    }

    #[test]
    fn a_stalled_stripe_holds_no_other() {
        let in_step = InStep::default();
        let t0 = Instant::now();
        let mut fast = in_step.join(HASH, 0, t0);
        let mut stalled = in_step.join(HASH, 1, t0);
        send(&mut stalled, 0, 1, t0);
        send(&mut fast, 0, LEAD + 2, t0);
        assert!(!fast.may_advance(LEAD + 2, t0 + STALL / 2));
        assert!(
            fast.may_advance(LEAD + 2, t0 + STALL),
            "held by a stalled stripe"
        );
    }

    #[test]
    fn a_stripe_under_its_share_of_the_fastest_holds_no_other() {
        let in_step = InStep::default();
        let t0 = Instant::now();
        let mut fast = in_step.join(HASH, 0, t0);
        let mut trickle = in_step.join(HASH, 1, t0);
        let (mut fast_next, mut trickle_next) = (0, 0);
        let mut fast_at = |ms: u64| -> u32 {
            let now = t0 + Duration::from_millis(ms);
            // At most a block a millisecond, as if its link allowed that.
            for _ in 0..5 {
                if !fast.may_advance(fast_next, now) {
                    break;
                }
                fast_next += 1;
            }
            fast_next
        };
        // A second at 100 blocks/s each (the node's fastest: 200/s), then the second
        // stripe's reader sends one block every 50 ms: a fifth of its fair share.
        for ms in (0..=4000u64).step_by(5) {
            let now = t0 + Duration::from_millis(ms);
            let every = if ms < 1000 { 10 } else { 50 };
            if ms % every == 0 {
                assert!(trickle.may_advance(trickle_next, now));
                trickle_next += 1;
            }
            let fast_next = fast_at(ms);
            if ms == 1500 {
                assert!(
                    fast_next <= trickle_next + LEAD + 1,
                    "ran ahead while the trickle's rate was not yet measured"
                );
            }
        }
        assert!(
            fast_next > trickle_next + 100,
            "still held by a stripe at a fifth of its share: {fast_next} vs {trickle_next}"
        );
    }

    /// A reader trickling just above a third of its share holds the other stripe, and with it
    /// the node's rate, only until a window shows the node sending under two thirds of its
    /// fastest.
    #[test]
    fn holding_stops_while_the_node_sends_far_under_its_fastest() {
        let in_step = InStep::default();
        let t0 = Instant::now();
        let mut fast = in_step.join(HASH, 0, t0);
        let mut trickle = in_step.join(HASH, 1, t0);
        let (mut fast_next, mut trickle_next) = (0, 0);
        for ms in (0..=4000u64).step_by(5) {
            let now = t0 + Duration::from_millis(ms);
            let every = if ms < 1000 { 10 } else { 25 };
            if ms % every == 0 {
                assert!(trickle.may_advance(trickle_next, now));
                trickle_next += 1;
            }
            for _ in 0..5 {
                if !fast.may_advance(fast_next, now) {
                    break;
                }
                fast_next += 1;
            }
        }
        assert!(
            fast_next > trickle_next + 100,
            "held to a trickle at 40% of its share: {fast_next} vs {trickle_next}"
        );
    }

    #[test]
    fn a_second_reader_of_a_stripe_does_not_pull_it_back() {
        let in_step = InStep::default();
        let t0 = Instant::now();
        let mut a = in_step.join(HASH, 0, t0);
        let mut b = in_step.join(HASH, 1, t0);
        for position in 0..20 {
            send(&mut a, position, 1, t0);
            send(&mut b, position, 1, t0);
        }
        let mut stranger = in_step.join(HASH, 1, t0);
        send(&mut stranger, 0, 2, t0);
        send(&mut a, 20, LEAD, t0);
    }

    #[test]
    fn a_stripe_leaves_the_step_with_its_last_answer() {
        let in_step = InStep::default();
        let t0 = Instant::now();
        let mut fast = in_step.join(HASH, 0, t0);
        let slow = in_step.join(HASH, 1, t0);
        let again = in_step.join(HASH, 1, t0);
        send(&mut fast, 0, LEAD + 1, t0);
        drop(slow);
        assert!(
            !fast.may_advance(LEAD + 1, t0),
            "stripe 1 still has an answer"
        );
        drop(again);
        assert!(fast.may_advance(LEAD + 1, t0));
        drop(fast);
        assert!(in_step.0.lock().unwrap().is_empty(), "payload left behind");
    }
}
