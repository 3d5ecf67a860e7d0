//! Announcements waiting for their rollout plan, kept outside the records. Such an
//! announcement is unverified (its signatures cover a plan this node does not hold yet), so it
//! must not change root's state, answer `p2pu status` or a member's catch-up query, or stand
//! in for a verified record. Issue 28: a member added the plan flag to a genuine applied
//! announcement and the record went from `applied` to `held` on every node; 21 forged seqs
//! evicted the genuine records.
//!
//! The set is in memory (the spool event is gone once it is here; a restart forgets it and
//! catch-up brings a genuine one back from the members that verified it), bounded overall and
//! per source, and full means the newcomer is refused: nothing waiting is ever evicted by a
//! newer arrival, and nothing here ever touches a record. How long an entry has waited is
//! measured on the agent's clock from when it came in, not from a spool file's mtime, which
//! the NAT client's user sets.

use super::spool::{Source, Spooled};

/// At most this many announcements wait for their plans at once.
pub const MAX_WAITING: usize = 64;
/// At most this many of them from one source (Serf, the NAT overlay, catch-up): one hostile
/// path cannot take every place.
pub const MAX_WAITING_PER_SOURCE: usize = 24;

/// One announcement waiting for its plan.
#[derive(Debug, Clone)]
pub struct Waiting {
    pub event: Spooled,
    pub name: String,
    pub seq: u64,
    pub info_hash: String,
    /// When it came in, on the agent's clock (ms since the epoch).
    pub since_ms: u64,
}

/// Why an announcement was not let in to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// This very event text is already waiting.
    Duplicate,
    /// [`MAX_WAITING`] or [`MAX_WAITING_PER_SOURCE`] reached.
    Full,
}

/// The announcements waiting for their plans.
#[derive(Debug, Default)]
pub struct PlanWaits {
    waiting: Vec<Waiting>,
}

impl PlanWaits {
    /// Lets `waiting` in, unless its text already waits or the set (or its source's part) is
    /// full.
    pub fn admit(&mut self, waiting: Waiting) -> Result<(), Refused> {
        if self
            .waiting
            .iter()
            .any(|w| w.event.payload == waiting.event.payload)
        {
            return Err(Refused::Duplicate);
        }
        let from_source = self
            .waiting
            .iter()
            .filter(|w| w.event.source == waiting.event.source)
            .count();
        if self.waiting.len() >= MAX_WAITING || from_source >= MAX_WAITING_PER_SOURCE {
            return Err(Refused::Full);
        }
        self.waiting.push(waiting);
        Ok(())
    }

    /// Takes every waiting announcement out, oldest first, to be decided again.
    pub fn take_all(&mut self) -> Vec<Waiting> {
        std::mem::take(&mut self.waiting)
    }

    /// Puts back one taken by [`take_all`](Self::take_all) that still waits (it keeps its
    /// place: the bounds were checked when it came in).
    pub fn put_back(&mut self, waiting: Waiting) {
        self.waiting.push(waiting);
    }

    /// The plans wanted: info-hash, and the announcement's wire text (a fetched plan is kept
    /// only if the announcement verifies with it).
    pub fn wanted(&self) -> Vec<(String, String)> {
        self.waiting
            .iter()
            .map(|w| {
                let wire = String::from_utf8_lossy(&w.event.payload).into_owned();
                (w.info_hash.clone(), wire)
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// How many wait from `source`.
    pub fn from_source(&self, source: Source) -> usize {
        self.waiting
            .iter()
            .filter(|w| w.event.source == source)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(source: Source, n: u64) -> Waiting {
        Waiting {
            event: Spooled {
                path: Default::default(),
                source,
                payload: format!("{} event {n}", source.as_str()).into_bytes(),
            },
            name: "site.pp".into(),
            seq: n,
            info_hash: "00".into(),
            since_ms: 0,
        }
    }

    /// One source filling its part leaves room for the others; the set as a whole is bounded;
    /// nothing admitted is ever pushed out by a newcomer, and the same text waits once.
    #[test]
    fn waiting_for_a_plan_is_bounded_per_source_and_overall_and_never_evicts() {
        let mut waits = PlanWaits::default();
        for n in 0..MAX_WAITING_PER_SOURCE as u64 {
            waits.admit(waiting(Source::Serf, n)).unwrap();
        }
        assert_eq!(
            waits.admit(waiting(Source::Serf, 1000)),
            Err(Refused::Full),
            "one source may not take more than its part"
        );
        assert_eq!(
            waits.admit(waiting(Source::Overlay, 0)),
            Ok(()),
            "another source still gets in"
        );
        assert_eq!(
            waits.admit(waiting(Source::Overlay, 0)),
            Err(Refused::Duplicate)
        );
        let mut n = 1;
        while waits.len() < MAX_WAITING {
            let source = if waits.from_source(Source::Overlay) < MAX_WAITING_PER_SOURCE {
                Source::Overlay
            } else {
                Source::CatchUp
            };
            waits.admit(waiting(source, 10_000 + n)).unwrap();
            n += 1;
        }
        assert_eq!(
            waits.admit(waiting(Source::CatchUp, 99_999)),
            Err(Refused::Full)
        );
        let first = waits.take_all();
        assert_eq!(first.len(), MAX_WAITING);
        assert_eq!(first[0].seq, 0, "the first to come is still there, first");
    }
}
