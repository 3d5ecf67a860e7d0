//! A token bucket: `rate` tokens a second, holding at most `burst`. The one rate limiter of
//! the NAT proxy (per source, new names, relayed bytes) and of the seed server's pushes (per
//! source and in all); the caller keeps each bucket, and passes its rate and burst on each use.

use std::time::Instant;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Full: what a new source gets.
    pub fn new(now: Instant, burst: f64) -> Bucket {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    /// Empty as of `now`.
    pub fn empty(now: Instant) -> Bucket {
        Bucket::new(now, 0.0)
    }

    /// Whether it is back at `burst` by `now`: no different from a new one.
    pub fn refilled(&self, now: Instant, rate: f64, burst: f64) -> bool {
        self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * rate >= burst
    }

    /// How long since it was last used.
    pub fn idle_for(&self, now: Instant) -> std::time::Duration {
        now.saturating_duration_since(self.at)
    }

    /// Refills as of `now`; whether `cost` tokens are there (none taken).
    pub fn holds(&mut self, now: Instant, rate: f64, burst: f64, cost: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now.max(self.at);
        self.tokens >= cost
    }

    /// Takes `cost` tokens out; the caller checked with [`Bucket::holds`].
    pub fn spend(&mut self, cost: f64) {
        self.tokens -= cost;
    }

    /// Refills as of `now` and takes `cost` tokens if they are there.
    pub fn take(&mut self, now: Instant, rate: f64, burst: f64, cost: f64) -> bool {
        let there = self.holds(now, rate, burst, cost);
        if there {
            self.spend(cost);
        }
        there
    }
}
