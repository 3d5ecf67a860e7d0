//! One node's side of the striped transfer (docs/DESIGN.md section 5.1), pure: which blocks it
//! holds (each checked against the signed leaf layer before it counts), where it takes each
//! stripe from ([`Plan::source`] over the members *this* node holds missing), whom it asks for
//! a stripe's missing blocks (repair), and whom it named and why. The I/O is the caller's
//! (stage 3: one HTTP stream per stripe from [`Receiver::source`], each block passed to
//! [`Receiver::accept`] and written to the verified copy only when it says so; its own seed
//! server serves only what [`Receiver::holds`]).
//!
//! Why a state machine of its own: the rules that keep a fleet safe and live are here, not in
//! the I/O. A block counts only once it matched its leaf, so a node never forwards a byte it
//! did not check; the member that sent a bad block is missing to this node for good (never
//! asked again), as is one that crashed, hung or refused; and sources come from the plan over
//! this node's own view, so nodes whose views differ never wait on each other in a cycle
//! (every source has a lower position in the stripe's tree, see `topology`).
//!
//! It also judges its parents by its own observation ([`Receiver::sample`]): a node takes
//! its `d` stripes from `d` parents at once, so a parent whose stripe gains under half what
//! the node's other stripes gain over [`PACE_WINDOW`], in two windows running, is slow *for
//! this node*, whatever rate it advertised ([`Receiver::slow_sources`]); but not while the
//! node takes in at its own capacity ([`Receiver::at_own_capacity`]): its stripes then share
//! its own link, unevenly as TCP does, and a lagging one is the link's, not the parent's. It
//! judges a stripe's silence against its own pace ([`Receiver::silence_blames`]) rather than
//! as a hang at once.

use super::topology::{Class, Node, Plan};
use crate::formats::blocks::{BlocksError, Leaves};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Why a member is missing to this node (it is never asked again during this transfer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Left {
    /// Its connection failed or ended early.
    Crashed,
    /// Silent and not answering a probe.
    Hung,
    /// It refused (503: its readers are full).
    Refused,
    /// It sent block `block`, which did not match its leaf.
    Lied { block: u32 },
    /// Its stripe gained under half what this node's other stripes gained, over each of two
    /// [`PACE_WINDOW`]s running, while the node had room to take more
    /// ([`Receiver::slow_sources`]).
    Slow,
}

/// As the record says it (`p2pu status`): `crashed`, `hung`, `refused`, `lied: block N
/// failed its check`, `slow`.
impl std::fmt::Display for Left {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Left::Crashed => f.write_str("crashed"),
            Left::Hung => f.write_str("hung"),
            Left::Refused => f.write_str("refused"),
            Left::Lied { block } => write!(f, "lied: block {block} failed its check"),
            Left::Slow => f.write_str("slow"),
        }
    }
}

/// How far a stripe may fall behind this node's furthest before it is repaired.
pub const REPAIR_LAG: usize = 32;

/// The window over which a node compares its stripes' progress: long enough that a second
/// of a parent's TCP backing off, or a block's wait on a busy uplink, does not make it slow.
pub const PACE_WINDOW: Duration = Duration::from_secs(3);

/// How many [`PACE_WINDOW`]s running a source must lag in before it is left as slow
/// ([`Receiver::slow_sources`]). One is not enough evidence: on a loaded machine a
/// healthy parent's stream stalls for seconds now and then (its agent not scheduled, its TCP
/// backing off), and one window caught a node leaving a healthy parent on equal links (the
/// bench's 8 nodes, 2 cores); a slow parent lags in every window, so a second one costs
/// its children one window more, which repair from neighbours (`REPAIR_LAG`) covers while
/// the node's other stripes keep its downlink busy. In the node's tail (all its other
/// stripes but one complete) one window is enough: its finish waits on the stripe, and no
/// later window has other stripes to compare it with.
pub const SLOW_WINDOWS: u32 = 2;

/// How far back [`Receiver::sample`] keeps samples: [`SLOW_WINDOWS`] windows and a second
/// more, room for the caller's samples to fall a second apart at the windows' edges.
const KEPT: Duration = Duration::from_secs(PACE_WINDOW.as_secs() * SLOW_WINDOWS as u64 + 1);

/// A stripe is slow only where the median of the node's other stripes gained at least this
/// many blocks over [`PACE_WINDOW`] (8 blocks a second: 1 Mbit/s a stripe): at the start,
/// and on a node whose stripes all creep (its own downlink is slow), no parent is blamed.
/// Not less: on a node at 5 Mbit/s with 8 stripes (about 5 blocks a second each) TCP
/// shares the link unevenly enough that one stripe runs at under half the median for a
/// while (the bench's slow nodes named healthy parents slow at 16). With few stripes left
/// the median is the link's pace shared by few, over this; [`Receiver::at_own_capacity`]
/// spares the parents there.
pub const SLOW_MIN_GAIN: u32 = 24;

/// A node takes in at its own capacity, and so blames no parent for a lag
/// ([`Receiver::at_own_capacity`]), where over the window it took in at least this share of
/// the most it took in over any [`PACE_WINDOW`] of the transfer ...
const CAPACITY_SHARE: f64 = 0.75;

/// ... and each stripe it lacked took in at least this many times its share of that most
/// when the node lacked the most stripes: its other stripes took up what finished ones
/// left, as stripes sharing its own link do and stripes paced by their parents do not (a
/// node at link rate `C` with `k0` stripes paced `C / k0` by their parents and one slow
/// parent takes in under `(k - 1) / (k * (k0 - 1))` of `C` a stripe with `k` lacking, under
/// this share of `C / k0` for every `k`; one whose link sets the pace, `C / k`).
const CAPACITY_RISE: f64 = 1.2;

/// A stripe's silence blames its source once it has lasted as long as this many of the
/// stripe's blocks take at the node's own pace ([`Receiver::silence_blames`]): at once (the
/// hang rule's second) on a node whose other stripes flow at a link's share, some seconds on
/// a node whose own downlink is slow and so makes every source look silent by turns.
pub const HANG_LAG: f64 = REPAIR_LAG as f64;

/// The shortest span of samples a node's pace is taken over for [`Receiver::silence_blames`]:
/// under the hang rule's second, so that a source silent from the start is judged against
/// the pace the node's other stripes began at (a slow parent whose probe answer queues
/// behind its link's data was left as hung at the first second before).
const PACE_MIN_SPAN: Duration = Duration::from_millis(500);

/// What [`Receiver::sample`] saw: each stripe's held blocks, the blocks its source sent
/// (new or not), and its source then.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    held: Vec<u32>,
    delivered: Vec<u32>,
    sources: Vec<Option<Node>>,
}

/// Why a stripe is repaired ([`Receiver::needs_repair`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// Its planned parent is missing to this node.
    Orphan,
    /// It is [`REPAIR_LAG`] blocks behind this node's furthest stripe.
    Lagging,
    /// Every other stripe but one is complete (or but two) and it lacks more than 2%.
    Tail,
}

/// As the log says it: `orphan`, `lagging`, `tail`.
impl std::fmt::Display for Repair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Repair::Orphan => "orphan",
            Repair::Lagging => "lagging",
            Repair::Tail => "tail",
        })
    }
}

/// What [`Receiver::accept`] made of a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Checked and new: write it at `offset` of the verified copy; it may now be forwarded.
    Store { offset: u64 },
    /// Checked before from someone else: nothing to write.
    Duplicate,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripesError {
    #[error("{from} sent block {index}, which failed its check; {from} is not asked again")]
    Lied {
        from: String,
        index: u32,
        #[source]
        source: BlocksError,
    },
    #[error("{from} sent block {index}, which the payload does not have")]
    NoSuchBlock { from: String, index: u32 },
    #[error("block {index} restored from the verified copy does not match its leaf")]
    Restore { index: u32 },
}

impl crate::error::LayerError for StripesError {}

/// Who this node is in the plan: a member, or one that joined after the roster was written.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Me {
    Member(Node),
    Late(String),
}

/// One node's transfer state for one payload.
#[derive(Debug, Clone)]
pub struct Receiver {
    plan: Plan,
    leaves: Leaves,
    me: Me,
    name: String,
    held: Vec<bool>,
    held_count: u32,
    /// Blocks counted from the verified copy after a restart, and blocks taken from members.
    restored: u32,
    received: u32,
    repaired: u32,
    /// The members this node holds missing, and why: its own view, never shared.
    missing: BTreeMap<Node, Left>,
    /// Held blocks per stripe, the checked blocks each stripe's source sent (repair from
    /// others does not count: it hides a slow parent, it does not make it fast), and
    /// [`Receiver::sample`]s over the last [`KEPT`].
    stripe_held: Vec<u32>,
    delivered: Vec<u32>,
    samples: VecDeque<Sample>,
    /// The most blocks a second this node took in (all stripes, repair included) over a
    /// [`PACE_WINDOW`] of this transfer, and the most stripes it lacked at a window's start:
    /// what it has shown its own link can take ([`Receiver::at_own_capacity`]).
    peak: f64,
    most_lacking: usize,
}

impl Receiver {
    /// A node called `name` (in the roster or not) receiving the payload whose checked leaf
    /// layer is `leaves`, by `plan`.
    pub fn new(plan: Plan, leaves: Leaves, name: &str) -> Receiver {
        let me = match plan.node(name) {
            Some(node) => Me::Member(node),
            None => Me::Late(name.to_string()),
        };
        let count = leaves.layout().count() as usize;
        let d = plan.stripes();
        let mut receiver = Receiver {
            plan,
            leaves,
            me,
            name: name.to_string(),
            held: vec![false; count],
            held_count: 0,
            restored: 0,
            received: 0,
            repaired: 0,
            missing: BTreeMap::new(),
            stripe_held: vec![0; d],
            delivered: vec![0; d],
            samples: VecDeque::new(),
            peak: 0.0,
            most_lacking: 0,
        };
        // The origin holds the payload: it sends, it never receives.
        if receiver.is_origin() {
            receiver.held.fill(true);
            receiver.held_count = count as u32;
            for s in 0..d {
                receiver.stripe_held[s] = receiver.stripe_total(s);
            }
        }
        receiver
    }

    fn is_origin(&self) -> bool {
        self.me == Me::Member(self.plan.origin())
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Where this node takes `stripe` from now: its planned parent, or what [`Plan::source`]
    /// (or [`Plan::late_source`]) gives past the members it holds missing. `None` at the
    /// origin, and when the only source left is an origin that sent a bad block (its seeding
    /// copy lies in the download dir, which the `debian-transmission` user can rewrite): no
    /// striped source can then give this node what the operator signed, and the caller gives
    /// the striped fetch up (after what repair still finds) and falls back, as after a failed
    /// chain, instead of asking the origin again for ever.
    pub fn source(&self, stripe: usize) -> Option<Node> {
        let missing = |n: Node| self.missing.contains_key(&n);
        let origin = self.plan.origin();
        let source = match &self.me {
            Me::Member(node) if *node == origin => return None,
            Me::Member(node) => {
                let source = self.plan.source(stripe, *node, missing);
                // The origin is the last resort, not the first: a node that lost every
                // interior member above it takes the stripe from a member before it in the
                // tree (one that lost them too takes it from the origin, or from one before
                // it), so the origin serves a failed parent's stripe about once more, not
                // once per orphan.
                if source == origin && self.plan.parent(stripe, *node) != Some(origin) {
                    let skip = |n: Node| missing(n) || self.plan.class(n) == Class::Slow;
                    self.plan.relief(stripe, *node, skip).unwrap_or(origin)
                } else {
                    source
                }
            }
            Me::Late(name) => self.plan.late_source(stripe, name, missing),
        };
        (source != origin || !missing(origin)).then_some(source)
    }

    /// Why this node holds `who` missing, if it does.
    pub fn why_left(&self, who: Node) -> Option<&Left> {
        self.missing.get(&who)
    }

    /// How many blocks `stripe` has.
    fn stripe_total(&self, stripe: usize) -> u32 {
        (stripe..self.held.len())
            .step_by(self.plan.stripes())
            .count() as u32
    }

    /// How many blocks of each stripe this node holds.
    pub fn stripe_held(&self) -> &[u32] {
        &self.stripe_held
    }

    /// Takes note, at `at`, of each stripe's held blocks and source, keeping what
    /// [`SLOW_WINDOWS`] of [`PACE_WINDOW`] need: the caller calls it a few times a second.
    pub fn sample(&mut self, at: Instant) {
        let sources = (0..self.plan.stripes()).map(|s| self.source(s)).collect();
        self.samples.push_back(Sample {
            at,
            held: self.stripe_held.clone(),
            delivered: self.delivered.clone(),
            sources,
        });
        while self.samples.len() > 2 && self.samples[1].at + KEPT <= at {
            self.samples.pop_front();
        }
        if let Some((first, last)) = self.window(PACE_WINDOW) {
            let (intake, lacking) = self.intake(first, last);
            self.peak = self.peak.max(intake);
            self.most_lacking = self.most_lacking.max(lacking);
        }
    }

    /// Blocks a second this node took in from sample `first` to sample `last` (every stripe,
    /// repair included: what its link carried that counted), and how many stripes it lacked
    /// at `first`.
    fn intake(&self, first: &Sample, last: &Sample) -> (f64, usize) {
        let gained: u32 = (0..self.plan.stripes())
            .map(|s| last.held[s] - first.held[s])
            .sum();
        let secs = last
            .at
            .duration_since(first.at)
            .as_secs_f64()
            .max(f64::EPSILON);
        let lacking = (0..self.plan.stripes())
            .filter(|&s| self.lacking(first, s))
            .count();
        (f64::from(gained) / secs, lacking)
    }

    /// Whether from sample `first` to sample `last` this node took in at its own capacity:
    /// at least [`CAPACITY_SHARE`] of its peak, and at least [`CAPACITY_RISE`] times the
    /// peak's share a stripe when it lacked the most stripes. Then its own link sets its
    /// stripes' pace, and a stripe lagging the others is TCP sharing that link unevenly (the
    /// bench's 5 Mbit/s nodes, at their end with few stripes left, named healthy parents),
    /// not its parent: the node blames none. A node whose parents set the pace takes in less
    /// as its stripes finish, so it still judges them; until a stripe of it finishes, the
    /// two look alike, and [`SLOW_MIN_GAIN`] spares a slow link there.
    fn at_own_capacity(&self, first: &Sample, last: &Sample) -> bool {
        let (intake, lacking) = self.intake(first, last);
        self.most_lacking > 0
            && lacking > 0
            && intake >= CAPACITY_SHARE * self.peak
            && intake / lacking as f64 >= CAPACITY_RISE * self.peak / self.most_lacking as f64
    }

    /// Where the [`PACE_WINDOW`] ending at sample `end` starts: the newest sample taken a
    /// window or more before it, or the oldest there is.
    fn window_start(&self, end: usize) -> usize {
        let Some(from) = self.samples[end].at.checked_sub(PACE_WINDOW) else {
            return 0;
        };
        self.samples
            .range(..=end)
            .rposition(|s| s.at <= from)
            .unwrap_or(0)
    }

    /// The samples at `start` and `end`, where they span at least `span`.
    fn span(&self, start: usize, end: usize, span: Duration) -> Option<(&Sample, &Sample)> {
        let (first, last) = (self.samples.get(start)?, self.samples.get(end)?);
        (last.at.saturating_duration_since(first.at) >= span).then_some((first, last))
    }

    /// The newest sample's [`PACE_WINDOW`], where it spans at least `span`.
    fn window(&self, span: Duration) -> Option<(&Sample, &Sample)> {
        let end = self.samples.len().checked_sub(1)?;
        self.span(self.window_start(end), end, span)
    }

    /// Whether `stripe` was still lacking blocks at `sample`.
    fn lacking(&self, sample: &Sample, stripe: usize) -> bool {
        sample.held[stripe] < self.stripe_total(stripe)
    }

    /// Blocks a second that each of this node's stripes but `stripe` gained over the
    /// samples (those complete at the first sample do not count): the node's own pace, what
    /// its downlink and its other parents give. `None` where there is no other stripe to
    /// compare with or the samples span under [`PACE_MIN_SPAN`].
    fn others_pace(&self, stripe: usize) -> Option<f64> {
        let (first, last) = self.window(PACE_MIN_SPAN)?;
        let others: Vec<usize> = (0..self.plan.stripes())
            .filter(|&s| s != stripe && self.lacking(first, s))
            .collect();
        if others.is_empty() {
            return None;
        }
        let gained: u32 = others.iter().map(|&s| last.held[s] - first.held[s]).sum();
        let secs = last.at.duration_since(first.at).as_secs_f64();
        Some(f64::from(gained) / others.len() as f64 / secs)
    }

    /// Whether `stripe`'s source, silent for `silent`, may be blamed for it (left as hung
    /// when it does not answer a probe either): where this node's other stripes flow, once
    /// the silence is as long as [`HANG_LAG`] of their blocks take (so at the hang rule's
    /// second on a node at a link's share); where they creep too, the node's own downlink
    /// is what is slow, and the source is waited for (the caller's read timeout bounds it).
    /// Where the node takes in at its own capacity ([`Receiver::at_own_capacity`]) the pace
    /// is no more than its peak's share a stripe when it lacked the most stripes: with few
    /// stripes left, the others' pace is its whole link's, and TCP sharing that link
    /// unevenly silences a healthy source by turns as long as it does with every stripe
    /// lacking. With nothing to compare (one stripe, the others complete, the first half
    /// second), it may.
    pub fn silence_blames(&self, stripe: usize, silent: Duration) -> bool {
        let Some(pace) = self.others_pace(stripe) else {
            return true;
        };
        let pace = match self.window(PACE_MIN_SPAN) {
            Some((first, last)) if self.at_own_capacity(first, last) => {
                pace.min(self.peak / self.most_lacking as f64)
            }
            _ => pace,
        };
        silent.as_secs_f64() * pace >= HANG_LAG
    }

    /// The stripes whose source is slow for this node, with that source: in each of the
    /// last [`SLOW_WINDOWS`] [`PACE_WINDOW`]s (the last one only in the node's tail: every
    /// other stripe but one complete), with the same source throughout, the source sent
    /// under half the median of what this node's other lacking stripes gained (by any
    /// means), and that median is at least [`SLOW_MIN_GAIN`] blocks ([`Receiver::lags`]); a
    /// source that sent none in a window is left to the not-started wait and the hang rule.
    /// A node whose downlink is slow sees every stripe creep alike and blames none, nor does
    /// one taking in at its own capacity ([`Receiver::at_own_capacity`]); one lying
    /// member can make only the stripe it sends slow (a member is a node's planned parent in
    /// one stripe; a lender in two only where no other leaf could take the place: `topology`); one window's stall of a healthy parent
    /// is not enough while the node has other stripes to take. Never the origin (it is
    /// waited out: the last resort).
    pub fn slow_sources(&self) -> Vec<(usize, Node)> {
        // The full windows' edges, newest first: each a window before the one after it.
        let Some(end) = self.samples.len().checked_sub(1) else {
            return Vec::new();
        };
        let mut edges = vec![end];
        while edges.len() <= SLOW_WINDOWS as usize {
            let later = edges[edges.len() - 1];
            let start = self.window_start(later);
            if self.span(start, later, PACE_WINDOW).is_none() {
                break;
            }
            edges.push(start);
        }
        if edges.len() < 2 {
            return Vec::new();
        }
        let last = &self.samples[end];
        let origin = self.plan.origin();
        (0..self.plan.stripes())
            .filter_map(|s| {
                let source = last.sources[s]?;
                if source == origin || !self.lacking(last, s) {
                    return None;
                }
                let tail = (0..self.plan.stripes())
                    .filter(|&o| o != s && self.lacking(last, o))
                    .count()
                    <= 1;
                let windows = if tail {
                    &edges[..2]
                } else if edges.len() > SLOW_WINDOWS as usize {
                    &edges[..]
                } else {
                    return None;
                };
                let first = windows[windows.len() - 1];
                let steady = self
                    .samples
                    .range(first..)
                    .all(|x| x.sources[s] == Some(source));
                (steady && windows.windows(2).all(|w| self.lags(s, w[1], w[0])))
                    .then_some((s, source))
            })
            .collect()
    }

    /// Whether `stripe`'s source sent, from sample `start` to sample `end`, under half the
    /// median of what this node's other stripes lacking at `start` gained, that median being
    /// at least [`SLOW_MIN_GAIN`] blocks, and more than nothing, while the node did not take
    /// in at its own capacity ([`Receiver::at_own_capacity`]).
    fn lags(&self, stripe: usize, start: usize, end: usize) -> bool {
        let (first, last) = (&self.samples[start], &self.samples[end]);
        let mut others: Vec<u32> = (0..self.plan.stripes())
            .filter(|&o| o != stripe && self.lacking(first, o))
            .map(|o| last.held[o] - first.held[o])
            .collect();
        if others.is_empty() {
            return false;
        }
        others.sort_unstable();
        let median = others[others.len() / 2];
        let gained = last.delivered[stripe] - first.delivered[stripe];
        // A source that sent nothing in the window is not judged here: it has not started
        // yet (404, waited for by the stream) or is silent (the hang rule).
        median >= SLOW_MIN_GAIN
            && gained > 0
            && gained * 2 < median
            && !self.at_own_capacity(first, last)
    }

    /// The members to ask for `stripe`'s missing blocks when its source failed or lags:
    /// this node's repair neighbours that it does not hold missing, then the parents (in every
    /// stripe) of each planned parent of this node it holds missing (each lost that child's
    /// worth of uplink), then its current source. Never the origin: it serves its stripes'
    /// heads and, as every chain's last resort, the streams [`Receiver::source`] sends it,
    /// bounded by its seed server's readers, so that many nodes failing over at once cannot
    /// all pull from it.
    pub fn repair_sources(&self, stripe: usize) -> Vec<Node> {
        let origin = self.plan.origin();
        let me = match &self.me {
            Me::Member(node) => Some(*node),
            Me::Late(_) => None,
        };
        let mut out: Vec<Node> = Vec::new();
        let mut add = |n: Node| {
            if n != origin && Some(n) != me && !self.missing.contains_key(&n) && !out.contains(&n) {
                out.push(n);
            }
        };
        self.plan
            .neighbours(&self.name)
            .into_iter()
            .for_each(&mut add);
        if let Some(me) = me {
            let d = self.plan.stripes();
            let lost = (0..d)
                .filter_map(|s| self.plan.parent(s, me))
                .filter(|p| self.missing.contains_key(p));
            for parent in lost {
                (0..d)
                    .filter_map(|s| self.plan.parent(s, parent))
                    .for_each(&mut add);
            }
        }
        if let Some(s) = self.source(stripe) {
            add(s);
        }
        out
    }

    /// Why `stripe` should pull its missing blocks from [`Receiver::repair_sources`] now, if
    /// it should: its planned parent is missing to this node (an orphan: the adopter
    /// [`Receiver::source`] gives may be busy with its own children), it lags
    /// [`REPAIR_LAG`] blocks behind this node's furthest stripe (its source is behind the
    /// others, whose pace shows what the fleet holds), or every stripe but one or two is
    /// complete and it lacks more than 2% of its blocks (this node's downlink is idle, its
    /// neighbours are finishing).
    pub fn needs_repair(&self, stripe: usize) -> Option<Repair> {
        let d = self.plan.stripes();
        let held = |s: usize| {
            (s..self.held.len())
                .step_by(d)
                .filter(|&i| self.held[i])
                .count()
        };
        let total = |s: usize| (s..self.held.len()).step_by(d).count();
        let lacks = total(stripe) - held(stripe);
        if lacks == 0 {
            return None;
        }
        if let Me::Member(me) = &self.me {
            if self
                .plan
                .parent(stripe, *me)
                .is_some_and(|p| self.missing.contains_key(&p))
            {
                return Some(Repair::Orphan);
            }
        }
        let best = (0..d).map(held).max().unwrap_or(0);
        if best - held(stripe) >= REPAIR_LAG {
            return Some(Repair::Lagging);
        }
        let complete = (0..d).filter(|&s| held(s) == total(s)).count();
        if complete > 0 && complete + 2 >= d && lacks * 50 > total(stripe) {
            return Some(Repair::Tail);
        }
        None
    }

    /// Marks `who` missing to this node, with why. The origin is the last resort of every
    /// chain of sources, so it is missing only once it lied: a crash, a hang or a 503 from it
    /// (its readers are full, as under a failover) is waited out and asked again.
    pub fn left(&mut self, who: Node, why: Left) {
        if who != self.plan.origin() || matches!(why, Left::Lied { .. }) {
            self.missing.entry(who).or_insert(why);
        }
    }

    /// Whom this node named, and why.
    pub fn named(&self) -> impl Iterator<Item = (&str, &Left)> {
        self.missing.iter().map(|(n, why)| (self.who(*n), why))
    }

    /// A member's name; a node the plan does not hold (a caller's bug) does not panic here.
    fn who(&self, node: Node) -> &str {
        self.plan
            .names()
            .get(node as usize)
            .map_or("(not in the plan)", String::as_str)
    }

    /// Whether this node holds block `index`, checked: only these are served to others.
    pub fn holds(&self, index: u32) -> bool {
        self.held.get(index as usize).copied().unwrap_or(false)
    }

    /// The first block of `stripe` not held yet.
    pub fn next_wanted(&self, stripe: usize) -> Option<u32> {
        let d = self.plan.stripes();
        (stripe..self.held.len())
            .step_by(d)
            .find(|&i| !self.held[i])
            .map(|i| i as u32)
    }

    /// Up to `max` blocks of `stripe` not held yet, in order (what a repair asks for).
    pub fn wanted(&self, stripe: usize, max: usize) -> Vec<u32> {
        let d = self.plan.stripes();
        (stripe..self.held.len())
            .step_by(d)
            .filter(|&i| !self.held[i])
            .take(max)
            .map(|i| i as u32)
            .collect()
    }

    pub fn complete(&self) -> bool {
        self.held_count as usize == self.held.len()
    }

    /// A block `from` sent as block `index`: checked against its leaf (length for that index,
    /// then hash) before it counts. `index` is the block the caller asked for at that point of
    /// the stream (blocks travel bare), never a number the sender names. A bad block makes `from` missing to this node for good
    /// (`Lied`), and the caller moves the stripe to [`Receiver::source`] again.
    pub fn accept(
        &mut self,
        from: Node,
        index: u32,
        block: &[u8],
    ) -> Result<Accepted, StripesError> {
        let Some(&held) = self.held.get(index as usize) else {
            // An index the asker never asked for: the sender is as wrong as a liar.
            self.left(from, Left::Lied { block: index });
            return Err(StripesError::NoSuchBlock {
                from: self.who(from).to_string(),
                index,
            });
        };
        if let Err(source) = self.leaves.check(index, block) {
            self.left(from, Left::Lied { block: index });
            return Err(StripesError::Lied {
                from: self.who(from).to_string(),
                index,
                source,
            });
        }
        let stripe = index as usize % self.plan.stripes();
        if self.source(stripe) == Some(from) {
            self.delivered[stripe] += 1;
        }
        if held {
            return Ok(Accepted::Duplicate);
        }
        self.held[index as usize] = true;
        self.held_count += 1;
        self.received += 1;
        self.stripe_held[index as usize % self.plan.stripes()] += 1;
        let offset = self.leaves.layout().range(index).map_or(0, |r| r.start);
        Ok(Accepted::Store { offset })
    }

    /// A block read back from the verified copy after a restart: counted only if it matches
    /// its leaf (the copy is root's, but a crash may have left a block half-written).
    pub fn restore(&mut self, index: u32, block: &[u8]) -> Result<(), StripesError> {
        if self.leaves.check(index, block).is_err() {
            return Err(StripesError::Restore { index });
        }
        if !self.held[index as usize] {
            self.held[index as usize] = true;
            self.held_count += 1;
            self.restored += 1;
            self.stripe_held[index as usize % self.plan.stripes()] += 1;
        }
        Ok(())
    }

    /// How many blocks [`Receiver::restore`] counted, and how many [`Receiver::accept`] stored
    /// (taken from members): what a resumed fetch reports.
    pub fn counts(&self) -> (u32, u32) {
        (self.restored, self.received)
    }

    /// Of the blocks taken from members, how many repair reads brought (the caller counts).
    pub fn repaired(&mut self, blocks: u32) {
        self.repaired += blocks;
    }

    pub fn repaired_count(&self) -> u32 {
        self.repaired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::transfer::topology::{Class, Member, Params};
    use crate::formats::blocks::Layout;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const BLOCK: usize = 16384;

    fn fleet(n: usize, slow: &[usize]) -> Vec<Member> {
        (0..n)
            .map(|i| Member {
                name: format!("n{i:02}"),
                class: if slow.contains(&i) {
                    Class::Slow
                } else {
                    Class::Full
                },
            })
            .collect()
    }

    fn setup(n: usize, blocks: usize, params: Params) -> (Plan, Leaves, Vec<u8>) {
        let data: Vec<u8> = (0..blocks * BLOCK - 7).map(|i| (i % 253) as u8).collect();
        let layout = Layout::new(data.len() as u64, BLOCK as u64).unwrap();
        let leaves = Leaves::of_payload(layout, &data).unwrap();
        let plan = Plan::new(b"ih", &fleet(n, &[]), "n00", params).unwrap();
        (plan, leaves, data)
    }

    fn block(data: &[u8], i: u32) -> &[u8] {
        let start = i as usize * BLOCK;
        &data[start..(start + BLOCK).min(data.len())]
    }

    #[test]
    fn a_liars_first_bad_block_is_refused_and_the_stripe_moves_away_from_it() {
        let (plan, leaves, data) = setup(30, 32, Params::DEFAULT);
        // A leaf whose parent in stripe 0 is an interior member (not the origin).
        let me = (0..30)
            .map(|i| format!("n{i:02}"))
            .find(|n| {
                let node = plan.node(n).unwrap();
                plan.parent(0, node).is_some_and(|p| p != plan.origin())
            })
            .unwrap();
        let mut r = Receiver::new(plan.clone(), leaves, &me);
        let parent = r.source(0).unwrap();
        let i = r.next_wanted(0).unwrap();
        let mut bad = block(&data, i).to_vec();
        bad[100] ^= 1;
        assert!(matches!(
            r.accept(parent, i, &bad),
            Err(StripesError::Lied { index, .. }) if index == i
        ));
        assert!(!r.holds(i));
        assert_ne!(r.source(0), Some(parent));
        assert_eq!(
            r.named().collect::<Vec<_>>(),
            vec![(plan.name(parent), &Left::Lied { block: i })]
        );
        // A good block from the new source counts once; the same again is a duplicate.
        let next = r.source(0).unwrap();
        assert_eq!(
            r.accept(next, i, block(&data, i)),
            Ok(Accepted::Store {
                offset: u64::from(i) * BLOCK as u64
            })
        );
        assert_eq!(r.accept(next, i, block(&data, i)), Ok(Accepted::Duplicate));
        // A block the payload does not have names the sender too.
        assert!(r.accept(next, 999, b"x").is_err());
        assert_ne!(r.source(0), Some(next));
    }

    /// A genuine block sent as another index is a lie: the index is the asker's.
    #[test]
    fn a_genuine_block_under_another_index_is_refused() {
        let (plan, leaves, data) = setup(10, 16, Params::DEFAULT);
        let mut r = Receiver::new(plan, leaves, "n03");
        let from = r.source(1).unwrap();
        assert!(r.accept(from, 1, block(&data, 9)).is_err());
        assert!(!r.holds(1));
    }

    #[test]
    fn the_origin_holds_everything_and_is_not_left_for_a_crash_or_a_hang() {
        let (plan, leaves, _) = setup(10, 16, Params::DEFAULT);
        let origin = plan.origin();
        let o = Receiver::new(plan.clone(), leaves.clone(), "n00");
        assert!(o.complete() && o.source(0).is_none());
        let mut r = Receiver::new(plan, leaves, "n05");
        r.left(origin, Left::Crashed);
        r.left(origin, Left::Hung);
        assert_eq!(r.named().count(), 0);
    }

    /// An origin whose seeding copy was rewritten (by the download dir's owner) is named at
    /// its first bad block, and a node whose only source it is gets none, to fall back,
    /// rather than asking it again for ever; a crash or a 503 from it does not count.
    #[test]
    fn a_lying_origin_is_named_and_not_asked_again() {
        let (plan, leaves, data) = setup(10, 16, Params::DEFAULT);
        let origin = plan.origin();
        // The head of stripe 0 takes it from the origin.
        let head = (0..10u32)
            .find(|&n| n != origin && plan.parent(0, n) == Some(origin))
            .unwrap();
        let mut r = Receiver::new(plan.clone(), leaves, plan.name(head));
        assert_eq!(r.source(0), Some(origin));
        r.left(origin, Left::Refused);
        r.left(origin, Left::Crashed);
        assert_eq!(r.source(0), Some(origin), "a 503 or a crash is waited out");
        let mut bad = block(&data, 0).to_vec();
        bad[7] ^= 4;
        assert!(r.accept(origin, 0, &bad).is_err());
        assert_eq!(r.source(0), None);
        assert_eq!(
            r.named().collect::<Vec<_>>(),
            vec![(plan.name(origin), &Left::Lied { block: 0 })]
        );
    }

    #[test]
    fn a_restored_block_counts_only_if_it_matches() {
        let (plan, leaves, data) = setup(10, 16, Params::DEFAULT);
        let mut r = Receiver::new(plan, leaves, "n04");
        r.restore(2, block(&data, 2)).unwrap();
        assert!(r.holds(2));
        assert!(r.restore(3, &vec![0; BLOCK]).is_err());
        assert!(!r.holds(3));
    }

    /// Repair never pulls from the origin (its uplink serves the heads and, as the last
    /// resort, the bounded streams), and asks the parents of a planned parent this node lost,
    /// besides its neighbours.
    #[test]
    fn repair_never_asks_the_origin_and_asks_a_lost_parents_parents() {
        let (plan, leaves, _) = setup(40, 64, Params::DEFAULT);
        let origin = plan.origin();
        // A node whose parent in stripe 0 is an interior member with a parent of its own.
        let (me, parent) = (0..40u32)
            .filter(|&n| n != origin)
            .find_map(|n| {
                let p = plan.parent(0, n)?;
                (p != origin && plan.parent(0, p).is_some_and(|g| g != origin)).then_some((n, p))
            })
            .unwrap();
        let mut r = Receiver::new(plan.clone(), leaves, plan.name(me));
        r.left(parent, Left::Crashed);
        for s in 0..plan.stripes() {
            let sources = r.repair_sources(s);
            assert!(!sources.contains(&origin), "stripe {s}: {sources:?}");
            assert!(!sources.contains(&parent) && !sources.contains(&me));
        }
        let grandparent = plan.parent(0, parent).unwrap();
        assert!(r.repair_sources(0).contains(&grandparent));
        assert_eq!(r.needs_repair(0), Some(Repair::Orphan));
        // A stripe's head takes it from the origin, but repairs it from others only.
        let head = (0..40u32)
            .find(|&n| n != origin && plan.parent(0, n) == Some(origin))
            .unwrap();
        let r = Receiver::new(plan.clone(), r.leaves.clone(), plan.name(head));
        assert_eq!(r.source(0), Some(origin));
        assert!(!r.repair_sources(0).contains(&origin));
    }

    /// A stripe is repaired when its parent is missing, when it lags `REPAIR_LAG` blocks
    /// behind the node's furthest stripe, or when it is one of the last two and lacks more
    /// than 2%; not otherwise, and never once it is complete.
    #[test]
    fn a_stripe_needs_repair_when_orphaned_lagging_or_last() {
        let params = Params {
            stripes: 4,
            fanout: 4,
            neighbours: 2,
        };
        let (plan, leaves, data) = setup(12, 4 * 200, params);
        let me = (0..12u32).find(|&n| n != plan.origin()).unwrap();
        let mut r = Receiver::new(plan.clone(), leaves, plan.name(me));
        assert_eq!(plan.stripes(), 4);
        let take = |r: &mut Receiver, s: u32, upto: u32| {
            for i in (s..upto * 4).step_by(4) {
                let from = r.source(s as usize).unwrap();
                r.accept(from, i, block(&data, i)).unwrap();
            }
        };
        // Stripes 0..3 at 40 blocks, stripe 3 at 9: 31 behind, not yet.
        for s in 0..3 {
            take(&mut r, s, 40);
        }
        take(&mut r, 3, 9);
        assert_eq!(r.needs_repair(3), None);
        take(&mut r, 0, 41);
        assert_eq!(r.needs_repair(3), Some(Repair::Lagging));
        assert_eq!(r.needs_repair(1), None);
        // Stripes 0 and 1 complete; 2 and 3 lack more than 2% of their 200 blocks.
        take(&mut r, 0, 200);
        take(&mut r, 1, 200);
        take(&mut r, 2, 195);
        take(&mut r, 3, 195);
        assert_eq!(r.needs_repair(2), Some(Repair::Tail));
        take(&mut r, 2, 196);
        assert_eq!(r.needs_repair(2), None, "2% or less: left to its stream");
        take(&mut r, 2, 200);
        take(&mut r, 3, 200);
        assert!((0..4).all(|s| r.needs_repair(s).is_none()));
    }

    /// Takes stripe `s`'s blocks from its source until it holds `upto` of them.
    fn take_upto(r: &mut Receiver, data: &[u8], s: usize, upto: u32) {
        while r.stripe_held[s] < upto {
            let i = r.next_wanted(s).unwrap();
            let from = r.source(s).unwrap();
            r.accept(from, i, block(data, i)).unwrap();
        }
    }

    /// A node and the plan of 12 members, 4 stripes, whose parent in stripe 3 is not the
    /// origin (so it can be left).
    fn judged() -> (Plan, Leaves, Vec<u8>, Node) {
        let params = Params {
            stripes: 4,
            fanout: 4,
            neighbours: 2,
        };
        let (plan, leaves, data) = setup(12, 4 * 200, params);
        let me = (0..12u32)
            .find(|&n| n != plan.origin() && plan.parent(3, n).is_some_and(|p| p != plan.origin()))
            .unwrap();
        (plan, leaves, data, me)
    }

    /// A child judges its parents against each other: a stripe that gained under half the
    /// median of its other stripes in each of two `PACE_WINDOW`s, from the same source
    /// throughout, names that source slow; not before both windows are full, not where all
    /// stripes creep alike (the node's own downlink is slow), not for a lag under half, and
    /// never the origin.
    #[test]
    fn a_parent_whose_stripe_lags_far_behind_the_others_is_slow_for_its_child() {
        let (plan, leaves, data, me) = judged();
        let t0 = Instant::now();
        let fresh = || Receiver::new(plan.clone(), leaves.clone(), plan.name(me));
        // `gains` blocks per stripe in each of two windows of `secs`.
        let run = |gains: [u32; 4], secs: u64| {
            let mut r = fresh();
            r.sample(t0);
            for window in 1..=2 {
                for (s, g) in gains.iter().enumerate() {
                    take_upto(&mut r, &data, s, *g * window);
                }
                r.sample(t0 + Duration::from_secs(secs * u64::from(window)));
            }
            r
        };
        let r = run([60, 60, 60, 20], 3);
        let parent = plan.parent(3, me).unwrap();
        assert_eq!(r.slow_sources(), vec![(3, parent)]);
        assert!(
            run([60, 60, 60, 20], 2).slow_sources().is_empty(),
            "window not full"
        );
        assert!(
            run([10, 10, 10, 2], 3).slow_sources().is_empty(),
            "all creep: own link"
        );
        assert!(
            run([60, 60, 60, 31], 3).slow_sources().is_empty(),
            "under half only"
        );
        // Repair from another member fills the stripe, but does not make its source fast.
        let mut r = fresh();
        r.sample(t0);
        let neighbour = r.repair_sources(3)[0];
        for window in 1..=2u32 {
            for _ in 0..30 {
                let i = r.next_wanted(3).unwrap();
                r.accept(neighbour, i, block(&data, i)).unwrap();
            }
            for (s, g) in [60, 60, 60, 40].iter().enumerate() {
                take_upto(&mut r, &data, s, g * window);
            }
            r.sample(t0 + Duration::from_secs(3 * u64::from(window)));
        }
        assert_eq!(
            r.slow_sources(),
            vec![(3, parent)],
            "repair hid a slow parent"
        );
        // A source that changed within the windows is not judged yet.
        let mut r = fresh();
        r.sample(t0);
        r.sample(t0 + Duration::from_secs(3));
        r.left(parent, Left::Crashed);
        for (s, g) in [60, 60, 60, 20].iter().enumerate() {
            take_upto(&mut r, &data, s, *g);
        }
        r.sample(t0 + Duration::from_secs(6));
        assert!(r.slow_sources().is_empty());
        // Left as slow, the stripe moves to another source, not the origin while one is left.
        let mut r = run([60, 60, 60, 20], 3);
        r.left(parent, Left::Slow);
        assert_ne!(r.source(3), Some(parent));
        assert_ne!(r.source(3), Some(plan.origin()));
        assert_eq!(r.needs_repair(3), Some(Repair::Orphan));
        assert_eq!(
            r.named().collect::<Vec<_>>(),
            vec![(plan.name(parent), &Left::Slow)]
        );
        // A stripe taken from the origin is never judged slow (the origin is waited out).
        let head = (0..12u32)
            .find(|&n| n != plan.origin() && plan.parent(3, n) == Some(plan.origin()))
            .unwrap();
        let mut r = Receiver::new(plan.clone(), leaves.clone(), plan.name(head));
        r.sample(t0);
        for window in 1..=2u32 {
            for (s, g) in [60, 60, 60, 20].iter().enumerate() {
                take_upto(&mut r, &data, s, g * window);
            }
            r.sample(t0 + Duration::from_secs(3 * u64::from(window)));
        }
        assert!(r.slow_sources().iter().all(|&(s, _)| s != 3));
    }

    /// One lagging window is not enough to leave a parent as slow (a healthy parent's
    /// stream stalls for a window now and then on a loaded machine); a lag in two windows
    /// running is: a window at the others' pace, then one lagging, blames no one; a second
    /// lagging window then does; and a lagging window then one at the others' pace does not.
    /// Except in the node's tail, where the one window is all the evidence there will be.
    #[test]
    fn one_lagging_window_is_not_enough_to_leave_a_parent_as_slow_two_are() {
        let (plan, leaves, data, me) = judged();
        let parent = plan.parent(3, me).unwrap();
        let t0 = Instant::now();
        // Each window: stripes 0..3 gain 40 blocks; stripe 3 gains what `lag` says.
        let windows = |lags: &[u32]| {
            let mut r = Receiver::new(plan.clone(), leaves.clone(), plan.name(me));
            r.sample(t0);
            let mut held = [0u32; 4];
            for (w, &gain) in lags.iter().enumerate() {
                for (s, h) in held.iter_mut().enumerate() {
                    *h += if s == 3 { gain } else { 40 };
                    take_upto(&mut r, &data, s, *h);
                }
                r.sample(t0 + PACE_WINDOW * (w as u32 + 1));
            }
            r
        };
        assert!(
            windows(&[40, 5]).slow_sources().is_empty(),
            "one lagging window"
        );
        assert_eq!(windows(&[40, 5, 5]).slow_sources(), vec![(3, parent)]);
        assert!(
            windows(&[5, 40]).slow_sources().is_empty(),
            "a lag that ended"
        );
        assert_eq!(windows(&[5, 5]).slow_sources(), vec![(3, parent)]);
        // In the node's tail (every other stripe but one complete) one window is enough:
        // its finish waits on the stripe, and no later window could compare it.
        let mut r = Receiver::new(plan.clone(), leaves.clone(), plan.name(me));
        r.sample(t0);
        for (s, g) in [200, 200, 5, 5].iter().enumerate() {
            take_upto(&mut r, &data, s, *g);
        }
        r.sample(t0 + PACE_WINDOW);
        assert!(r.slow_sources().contains(&(3, parent)), "in the tail");
        let mut r = Receiver::new(plan.clone(), leaves.clone(), plan.name(me));
        r.sample(t0);
        for (s, g) in [200, 60, 60, 5].iter().enumerate() {
            take_upto(&mut r, &data, s, *g);
        }
        r.sample(t0 + PACE_WINDOW);
        assert!(
            r.slow_sources().is_empty(),
            "two other stripes still to take: not the tail"
        );
    }

    /// A node taking in at its own capacity blames no parent for a stripe that lags its
    /// others (TCP sharing its link unevenly): its stripes took up what a finished one left,
    /// its intake held at its peak. The same unevenness on a node with spare capacity (its
    /// intake fell as its stripes finished: its parents set the pace) blames the parent.
    #[test]
    fn a_node_at_its_own_capacity_blames_no_parent_for_a_lagging_stripe() {
        let (plan, leaves, data, me) = judged();
        let parent = plan.parent(3, me).unwrap();
        let t0 = Instant::now();
        // A first window where every stripe gains `first` (stripe 0 completes in it), then
        // two windows where stripes 1 and 2 gain 68 and stripe 3 only 20.
        let run = |first: u32| {
            let mut r = Receiver::new(plan.clone(), leaves.clone(), plan.name(me));
            take_upto(&mut r, &data, 0, 200 - first);
            r.sample(t0);
            let mut held = [200 - first, 0, 0, 0];
            for (w, gains) in [[first; 4], [0, 68, 68, 20], [0, 68, 68, 20]]
                .iter()
                .enumerate()
            {
                for (s, h) in held.iter_mut().enumerate() {
                    *h += gains[s];
                    take_upto(&mut r, &data, s, *h);
                }
                r.sample(t0 + PACE_WINDOW * (w as u32 + 1));
            }
            r
        };
        // 160 blocks a window, then 156: the link's pace, shared by three stripes now.
        assert!(
            run(40).slow_sources().is_empty(),
            "at its own capacity, a lagging stripe is its link's unevenness"
        );
        // 240 blocks a window, then 156: the node had room the lagging parent did not fill.
        assert_eq!(run(60).slow_sources(), vec![(3, parent)]);
        // Its stripes running faster than at its peak is not enough: in its tail, a node
        // that took in 240 blocks a window and now 160 has room, and blames the parent.
        let mut r = Receiver::new(plan.clone(), leaves.clone(), plan.name(me));
        for s in 0..2 {
            take_upto(&mut r, &data, s, 140);
        }
        r.sample(t0);
        for (w, held) in [[200, 200, 60, 60], [200, 200, 200, 80]].iter().enumerate() {
            for (s, &h) in held.iter().enumerate() {
                take_upto(&mut r, &data, s, h);
            }
            r.sample(t0 + PACE_WINDOW * (w as u32 + 1));
        }
        assert_eq!(r.slow_sources(), vec![(3, parent)], "room left in its tail");
    }

    /// A node whose own downlink is slow makes every source look silent by turns: a
    /// silence blames the source only once it lasts `HANG_LAG` blocks of the node's own
    /// pace; at a link's share that is the hang rule's second, as before.
    #[test]
    fn a_silence_blames_its_source_only_against_the_nodes_own_pace() {
        let (plan, leaves, data, me) = judged();
        let t0 = Instant::now();
        let mut fast = Receiver::new(plan.clone(), leaves.clone(), plan.name(me));
        assert!(
            fast.silence_blames(3, Duration::from_secs(1)),
            "nothing to compare"
        );
        fast.sample(t0);
        for s in 0..3 {
            take_upto(&mut fast, &data, s, 96);
        }
        fast.sample(t0 + Duration::from_secs(2));
        assert!(fast.silence_blames(3, Duration::from_secs(1)));
        let mut slow = Receiver::new(plan.clone(), leaves.clone(), plan.name(me));
        slow.sample(t0);
        for s in 0..3 {
            take_upto(&mut slow, &data, s, 10);
        }
        slow.sample(t0 + Duration::from_secs(2));
        assert!(!slow.silence_blames(3, Duration::from_secs(1)));
        assert!(!slow.silence_blames(3, Duration::from_secs(6)));
        assert!(slow.silence_blames(3, Duration::from_secs(7)));
        // A node at its own capacity with few stripes left: its other stripes took up a
        // finished one's share, so their pace is its link's, not a stripe's; a silence is
        // judged at its peak's share a stripe. With room left, at the others' pace.
        let few_left = |first: u32| {
            let mut r = Receiver::new(plan.clone(), leaves.clone(), plan.name(me));
            take_upto(&mut r, &data, 0, 200 - first);
            r.sample(t0);
            for (w, held) in [
                [200, first, first, first],
                [200, first + 78, first + 78, first],
            ]
            .iter()
            .enumerate()
            {
                for (s, &h) in held.iter().enumerate() {
                    take_upto(&mut r, &data, s, h);
                }
                r.sample(t0 + PACE_WINDOW * (w as u32 + 1));
            }
            r
        };
        // 160 blocks a window, then 156 over three stripes: others' pace 26 a second, the
        // peak's share a stripe 13.3.
        let at_capacity = few_left(40);
        assert!(!at_capacity.silence_blames(3, Duration::from_secs(2)));
        assert!(at_capacity.silence_blames(3, Duration::from_millis(2500)));
        // 240 blocks a window, then 156: room left, the others' pace.
        assert!(few_left(60).silence_blames(3, Duration::from_secs(2)));
    }

    /// Bounding the origin on fail-over: when every interior member above them is missing,
    /// the orphans take the stripe from members before them in the tree, so exactly one of
    /// them takes it from the origin; the sources form no cycle and skip a member the roster
    /// classes slow.
    #[test]
    fn orphans_of_a_lost_head_take_the_stripe_from_each_other_and_the_origin_once() {
        let data: Vec<u8> = (0..64 * BLOCK).map(|i| (i % 251) as u8).collect();
        let layout = Layout::new(data.len() as u64, BLOCK as u64).unwrap();
        let leaves = Leaves::of_payload(layout, &data).unwrap();
        // Eight members and eight stripes (the bench's lab), one classed slow.
        let plan = Plan::new(b"ih", &fleet(8, &[6]), "n00", Params::DEFAULT).unwrap();
        let origin = plan.origin();
        let slow = plan.node("n06").unwrap();
        for s in 0..plan.stripes() {
            let Some(head) = (0..8u32).find(|&n| n != origin && plan.parent(s, n) == Some(origin))
            else {
                continue;
            };
            let sources: BTreeMap<Node, Node> = (0..8u32)
                .filter(|&n| n != origin && n != head && plan.parent(s, n) == Some(head))
                .map(|n| {
                    let mut r = Receiver::new(plan.clone(), leaves.clone(), plan.name(n));
                    r.left(head, Left::Slow);
                    (n, r.source(s).unwrap())
                })
                .collect();
            if sources.is_empty() {
                continue;
            }
            let from_origin = sources.values().filter(|&&x| x == origin).count();
            assert_eq!(from_origin, 1, "stripe {s}: {sources:?}");
            for (&n, &src) in &sources {
                assert!(src != head && src != slow, "stripe {s}: {n} from {src}");
                let mut at = src;
                for _ in 0..8 {
                    if at == origin {
                        break;
                    }
                    at = sources[&at];
                }
                assert_eq!(at, origin, "stripe {s}: a cycle from {n}");
            }
        }
    }

    /// Rounds of an in-process fleet: every node asks each stripe's source for its next
    /// wanted block; a dead source is noticed (`Crashed`), a liar sends a flipped block, a
    /// source that does not hold the block yet makes the node wait, and after a few idle
    /// rounds the node pulls the block from a repair neighbour that holds it. Returns the
    /// receivers, the copies they wrote and how many rounds it took.
    fn run(
        plan: &Plan,
        leaves: &Leaves,
        data: &[u8],
        dead: &BTreeSet<Node>,
        liars: &BTreeSet<Node>,
        joined_late: &[String],
    ) -> (Vec<Receiver>, Vec<Vec<u8>>, usize) {
        let mut nodes: Vec<Receiver> = plan
            .names()
            .iter()
            .chain(joined_late)
            .map(|n| Receiver::new(plan.clone(), leaves.clone(), n))
            .collect();
        let d = plan.stripes();
        // The verified copy each node writes: only what `accept` says to store, where it says.
        let mut copies = vec![vec![0u8; data.len()]; nodes.len()];
        copies[plan.origin() as usize] = data.to_vec();
        let mut idle = vec![vec![0usize; d]; nodes.len()];
        let limit = leaves.layout().count() as usize * 4 + 200;
        for round in 0..limit {
            let live = |i: usize| i >= plan.names().len() || !dead.contains(&(i as Node));
            if (0..nodes.len()).all(|i| !live(i) || nodes[i].complete()) {
                return (nodes, copies, round);
            }
            // What every member held at the start of the round: one hop a round.
            let held: Vec<Vec<bool>> = nodes.iter().map(|r| r.held.clone()).collect();
            for i in 0..nodes.len() {
                if !live(i) {
                    continue;
                }
                for (s, waited) in idle[i].iter_mut().enumerate() {
                    let Some(want) = nodes[i].next_wanted(s) else {
                        continue;
                    };
                    let src = nodes[i].source(s).unwrap();
                    if dead.contains(&src) {
                        nodes[i].left(src, Left::Crashed);
                        continue;
                    }
                    let from = if held[src as usize][want as usize] {
                        Some(src)
                    } else {
                        *waited += 1;
                        (*waited > 3)
                            .then(|| {
                                nodes[i].repair_sources(s).into_iter().find(|&n| {
                                    !dead.contains(&n) && held[n as usize][want as usize]
                                })
                            })
                            .flatten()
                    };
                    let Some(from) = from else { continue };
                    *waited = 0;
                    let mut bytes = block(data, want).to_vec();
                    if liars.contains(&from) {
                        bytes[0] ^= 0x80;
                    }
                    if let Ok(Accepted::Store { offset }) = nodes[i].accept(from, want, &bytes) {
                        let at = offset as usize;
                        copies[i][at..at + bytes.len()].copy_from_slice(&bytes);
                    }
                }
            }
        }
        (nodes, copies, limit)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// With dead members, liars and members that joined after the roster, every live
        /// node ends holding every block, only checked ones (the copy it would write equals
        /// the payload), and every liar it took a block from is named as one.
        #[test]
        fn every_live_node_completes_with_only_checked_blocks(
            n in 4usize..40, blocks in 1usize..24, d in 1usize..6, k in 2usize..5,
            picks in prop::collection::vec(any::<u16>(), 0..8), late in 0usize..3,
        ) {
            let (plan, leaves, data) = setup(n, blocks, Params { stripes: d, fanout: k, neighbours: 3 });
            let origin = plan.origin();
            let mut dead = BTreeSet::new();
            let mut liars = BTreeSet::new();
            for (j, p) in picks.iter().enumerate() {
                let node = (*p as usize % n) as Node;
                if node != origin {
                    if j % 2 == 0 { dead.insert(node); } else { liars.insert(node); }
                }
            }
            liars.retain(|l| !dead.contains(l));
            let late: Vec<String> = (0..late).map(|i| format!("late{i}")).collect();
            let (nodes, copies, rounds) = run(&plan, &leaves, &data, &dead, &liars, &late);
            prop_assert!(rounds < blocks * 4 + 200, "stalled");
            for (i, r) in nodes.iter().enumerate() {
                if i < n && dead.contains(&(i as Node)) {
                    continue;
                }
                prop_assert!(r.complete(), "{} incomplete", r.name);
                prop_assert!(copies[i] == data, "{} holds a byte it did not check", r.name);
                for (who, why) in r.named() {
                    let node = plan.node(who).unwrap();
                    match why {
                        Left::Lied { .. } => prop_assert!(liars.contains(&node)),
                        _ => prop_assert!(dead.contains(&node)),
                    }
                }
            }
        }
    }
}
