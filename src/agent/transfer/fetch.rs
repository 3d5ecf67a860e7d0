//! Downloads one accepted update and checks it. A payload already complete on this node (the
//! submitter's) is only verified. Otherwise the metainfo comes from a member's web seed server
//! (its info dict must hash to the signed info-hash and say the signed length, before any
//! payload byte moves) and the payload over HTTP from the fleet (`relay`: straight for small
//! payloads, down a chain for large ones); this node then seeds it in Transmission too.
//! When HTTP fails, Transmission downloads it, pointed at this node's tracker and the
//! members' web seeds (BEP 19: not choked, so bytes flow at once); when no member serves the
//! metainfo, a magnet falls back to BitTorrent's own metadata exchange. Then length and
//! SHA-256 of the finished payload. Survives Transmission restarts (it re-adds by info-hash)
//! and a daemon that is down (it retries until the agent stops).
//!
//! Every member asked is held to the site's pace (`agent::pace`): a metainfo over its size
//! cap is refused on its announced length, a source under the rate floor is left for the next
//! (the origin, then a few other members, then Transmission), and the HTTP attempt and the
//! Transmission wait each end at a deadline derived from the signed length. A received
//! metainfo is kept as its info dict alone, which is all that is stored and re-served.

use super::fetch_error::FetchError;

use super::download_dir::{write_completion_mark, write_mark, DownloadDir};
use super::http_get::Client;
use super::pace::{Deadline, Pace, RateGuard};
use super::relay::{self, Relay};
use super::verified::{self, expected, Verified};
use crate::agent::runtime::rate::Sample;
use crate::agent::runtime::state::{Record, SourceUse, StripeUse};
use crate::engines::{TorrentEngine, TransmissionError};
use crate::formats::torrent::{self, Metainfo};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Where to download and how to reach peers.
pub struct Fetcher<'a> {
    pub engine: &'a dyn TorrentEngine,
    pub download_root: &'a Path,
    pub tracker_url: &'a str,
    pub poll: Duration,
    pub stop: &'a AtomicBool,
    /// The other members' web seed servers, asked for the metainfo and named as web seeds.
    pub seeds: &'a (dyn Fn() -> Vec<SocketAddr> + Sync),
    /// This node's own web seed server, its place in a relay chain.
    pub own_seed: Option<SocketAddr>,
    /// How to reach the seed servers (bound to the node's advertised address).
    pub client: Client,
    /// Where verified copies are made ([`verified::root_of`] the state dir): root's only.
    pub verified_root: &'a Path,
    /// The floor every source is held to and the deadline a fetch gets.
    pub pace: Pace,
    /// In `transfer.mode = "stripes"`: who this node is and where the members' seed servers
    /// are, by name. `None`: the chain, whatever the metainfo carries.
    pub stripes: Option<StripedPeers<'a>>,
}

/// What a striped fetch needs beyond the chain's: names, since the roster names members.
#[derive(Clone, Copy)]
pub struct StripedPeers<'a> {
    pub name: &'a str,
    /// The other alive members' web seed servers, by member name.
    pub members: &'a (dyn Fn() -> Vec<(String, SocketAddr)> + Sync),
}

/// A verified payload, and the torrent to seed it with when Transmission did not fetch it.
pub struct Fetched {
    /// The copy that was hashed, out of reach of the download dir's owner: the one to apply.
    pub payload: Verified,
    pub to_seed: Option<Vec<u8>>,
    /// The members it came from over HTTP, and how each served.
    pub sources: Vec<SourceUse>,
    /// By stripes: each stripe's sources (`state::StripeUse`).
    pub stripes: Vec<StripeUse>,
    /// Its bytes and the time they took to arrive, when it came over HTTP (chain, stripes,
    /// direct): what this node's advertised rate is measured from (`runtime::rate`).
    pub measured: Option<Sample>,
}

/// How many web seeds one torrent names, and how long to look for a member with the metainfo.
const MAX_WEB_SEEDS: usize = 8;
const METAINFO_SEARCH: Duration = Duration::from_secs(10);
/// How long the search goes on while members refuse this node as a stranger (403: their
/// membership does not list it alive yet). A node back from a partition hears the event
/// before the others see it alive again, which takes up to Serf's 10 s reconnect and their
/// 2 s peer refresh; giving up at [`METAINFO_SEARCH`] sent it to the magnet, whose metadata
/// exchange and reconnect waits took 40 s (`benches/converge`, partition healed).
const METAINFO_SEARCH_REFUSED: Duration = Duration::from_secs(30);
/// How many members are asked for the metainfo at once: every one of a small fleet, so no
/// 404 from a member that does not hold it yet and no stalling member costs the search a
/// round trip; a bounded few of a large one, shuffled, so its nodes spread over the members
/// that hold it instead of all asking one.
const METAINFO_ASKS: usize = 8;
/// How soon a member that had no right metainfo is asked again.
const METAINFO_AGAIN: Duration = Duration::from_millis(500);
/// An ask unanswered this long stops counting toward [`METAINFO_ASKS`] (it still runs to its
/// own timeouts), so members that stall cannot hold every place while the ones that hold the
/// metainfo go unasked; [`METAINFO_THREADS`] bounds the asks running at once all the same.
const METAINFO_PATIENCE: Duration = Duration::from_secs(1);
const METAINFO_THREADS: usize = 32;
/// An ask reads at most a metainfo's cap into a buffer on the heap: a small stack will do.
const ASK_STACK: usize = 256 * 1024;
/// How many other members are asked for a small payload when the one that served the
/// metainfo fails over HTTP, before Transmission takes over.
const MAX_FAILOVER: usize = 3;

/// The largest metainfo read for a payload of `len` bytes: the info dict's piece hashes (20
/// bytes each, pieces at least 16 KiB and at most `MAX_PIECES` of them) plus 1 MiB for
/// everything else. A member padding a matching info dict with junk keys up to 64 MiB is cut
/// off here, before the bytes are read into memory.
pub fn metainfo_cap(len: u64) -> (u64, u64) {
    let pieces = len
        .div_ceil(torrent::MIN_PIECE_LENGTH)
        .clamp(1, torrent::MAX_PIECES);
    ((1 << 20) + 20 * pieces, pieces)
}

impl Fetcher<'_> {
    /// Each update gets its own directory, so two updates of one name never collide.
    pub fn dir_of(&self, record: &Record) -> PathBuf {
        DownloadDir::new(self.download_root).payload_dir(&record.info_hash)
    }

    pub fn magnet(&self, record: &Record) -> String {
        let trackers = [self.tracker_url.to_string()];
        torrent::magnet_link(&record.info_hash, &record.name, &trackers, &[])
    }

    /// Where a verified metainfo is kept: beside the download dir, which is also the mark the
    /// web seed server waits for before serving the payload.
    pub fn metainfo_path(&self, record: &Record) -> PathBuf {
        DownloadDir::new(self.download_root).completion_mark(&record.info_hash)
    }

    /// Asks the members' web seed servers for the metainfo until one answers with the signed
    /// one; returns it and who has the payload, `None` when none has it (the caller falls
    /// back to a magnet). Up to [`METAINFO_ASKS`] members are asked at once, in shuffled
    /// order: right after a submit only the origin holds it (the announcement does not say
    /// which member that is), and asking one member after the other paid a round trip for
    /// every member that answered 404 first, and a whole read timeout for one that stalls. The
    /// first right answer wins; a wrong one is refused as before, whoever sends it.
    fn find_metainfo(&self, record: &Record) -> Result<Option<(Metainfo, SocketAddr)>, FetchError> {
        use std::collections::HashMap;
        use std::sync::{mpsc, Arc};
        use std::time::Instant;
        let started = Instant::now();
        let mut deadline = started + METAINFO_SEARCH;
        let (answers, answered) = mpsc::channel();
        // The asks still running end once this search returns, whatever it returns (each also
        // ends at its own timeouts and the floor).
        let done = Arc::new(AtomicBool::new(false));
        let _end_asks = EndOnDrop(Arc::clone(&done));
        // Asks running, by member, with when each was sent.
        let mut in_flight: HashMap<SocketAddr, Instant> = HashMap::new();
        let mut last_answer: HashMap<SocketAddr, Instant> = HashMap::new();
        let mut refused = std::collections::HashSet::new();
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(FetchError::Stopping);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // An empty membership is asked again until the deadline: a node back from a
            // partition hears the event before its own Serf lists the others alive again (up
            // to its 10 s reconnect), and giving up after a second sent it to the magnet,
            // whose metadata exchange and reconnect waits took 40 s (`benches/converge`).
            let mut seeds = (self.seeds)();
            shuffle(&mut seeds);
            for seed in seeds {
                let waiting = in_flight
                    .values()
                    .filter(|sent| now.duration_since(**sent) < METAINFO_PATIENCE)
                    .count();
                if waiting >= METAINFO_ASKS || in_flight.len() >= METAINFO_THREADS {
                    break;
                }
                // A member that said no is asked again after a pause, as the rounds did.
                let rested = last_answer
                    .get(&seed)
                    .is_none_or(|at| now.duration_since(*at) >= METAINFO_AGAIN);
                if in_flight.contains_key(&seed) || !rested {
                    continue;
                }
                let ask = MetainfoAsk {
                    client: self.client,
                    pace: self.pace,
                    seed,
                    record: record.clone(),
                    done: Arc::clone(&done),
                };
                let answers = answers.clone();
                let spawned = std::thread::Builder::new()
                    .name("metainfo".into())
                    .stack_size(ASK_STACK)
                    .spawn(move || {
                        let _ = answers.send((seed, ask.run()));
                    });
                match spawned {
                    Ok(_) => {
                        in_flight.insert(seed, now);
                    }
                    Err(e) => {
                        tracing::warn!(%seed, hash = %record.info_hash, "metainfo not asked: {e}");
                        last_answer.insert(seed, now);
                    }
                }
            }
            // Woken by the first answer; the tick only checks `stop` and asks again.
            let Ok((seed, answer)) = answered.recv_timeout(Duration::from_millis(50)) else {
                continue;
            };
            in_flight.remove(&seed);
            last_answer.insert(seed, Instant::now());
            match answer {
                Ok(metainfo) => return Ok(Some((metainfo, seed))),
                // The signed length is unlike the signed info dict's: no member can mend that.
                Err(e @ FetchError::LengthMismatch { .. }) => return Err(e),
                Err(FetchError::Stopping) => {}
                // Not there yet: every member but the origin says so right after a submit.
                Err(FetchError::Get(crate::agent::transfer::http_get::GetError::Status {
                    status: 404,
                    ..
                })) => {
                    tracing::debug!(%seed, hash = %record.info_hash, "no metainfo there yet")
                }
                // Not admitted yet: the members will list this node again once their Serf does.
                Err(
                    e @ FetchError::Get(crate::agent::transfer::http_get::GetError::Status {
                        status: 403,
                        ..
                    }),
                ) => {
                    deadline = deadline.max(started + METAINFO_SEARCH_REFUSED);
                    if refused.insert(seed) {
                        tracing::warn!(%seed, hash = %record.info_hash, "metainfo refused, asking again while the members do not list this node yet: {}", crate::error::chain(&e))
                    }
                }
                Err(e) => {
                    tracing::warn!(%seed, hash = %record.info_hash, "metainfo refused: {}", crate::error::chain(&e))
                }
            }
        }
    }

    /// One round over the members' seed servers for the rollout plan `/<info-hash>.plan`: each
    /// read within a plan's size and at the floor rate, like a metainfo; the first that
    /// `accept` takes (it verifies the announcement with it) is returned. A member serving
    /// another plan is passed over, never believed.
    pub fn find_plan(&self, info_hash: &str, accept: &dyn Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
        let cap = crate::formats::plan::MAX_PLAN_BYTES as u64;
        let mut seeds = (self.seeds)();
        shuffle(&mut seeds);
        for seed in seeds {
            if self.stop.load(Ordering::Relaxed) {
                return None;
            }
            let url = format!("/{info_hash}.plan");
            let mut response = match self.client.get(seed, &url, 0) {
                Ok(response) => response,
                Err(e) => {
                    tracing::debug!(%seed, hash = %info_hash, "no plan: {}", crate::error::chain(&e));
                    continue;
                }
            };
            if response.len > cap {
                tracing::warn!(%seed, hash = %info_hash, len = response.len, "plan refused: longer than a plan may be");
                continue;
            }
            let mut guard = RateGuard::new(
                seed,
                self.pace.floor,
                self.client.read_timeout,
                self.pace.deadline(response.len),
                0,
                response.len,
            );
            match guard.read_to_end(&mut response.body, cap as usize, self.stop) {
                Ok(bytes) if accept(&bytes) => return Some(bytes),
                Ok(_) => {
                    tracing::warn!(%seed, hash = %info_hash, "plan refused: the announcement does not verify with it")
                }
                Err(e) => {
                    tracing::warn!(%seed, hash = %info_hash, "plan refused: {}", crate::error::chain(&e))
                }
            }
        }
        None
    }

    /// The torrent to add: this node's tracker and the members' web seeds as its sources.
    fn sourced(&self, record: &Record, metainfo: &Metainfo) -> Result<Vec<u8>, FetchError> {
        let mut seeds = (self.seeds)();
        shuffle(&mut seeds);
        let web_seeds: Vec<String> = seeds
            .iter()
            .take(MAX_WEB_SEEDS)
            .map(|seed| format!("http://{seed}/{}/", record.info_hash))
            .collect();
        torrent::with_sources(&metainfo.bytes, self.tracker_url, &web_seeds).map_err(|e| {
            FetchError::Local {
                hash: record.info_hash.clone(),
                message: e.to_string(),
            }
        })
    }

    /// Adds (or re-adds) the torrent; retries while Transmission is unreachable.
    fn add(&self, record: &Record, metainfo: Option<&[u8]>) -> Result<(), FetchError> {
        let dir = self.dir_of(record);
        let mut delay = Duration::from_millis(200);
        loop {
            let added = match metainfo {
                Some(bytes) => self.engine.add_metainfo(bytes, Some(&dir), false),
                None => self
                    .engine
                    .add_magnet(&self.magnet(record), Some(&dir), false),
            };
            match added {
                Ok(_) => return Ok(()),
                Err(e @ TransmissionError::Unreachable { .. }) => {
                    tracing::warn!(name = %record.name, seq = record.seq, "Transmission unreachable, retrying: {e}");
                }
                Err(e) => return Err(e.into()),
            }
            self.sleep(delay)?;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    fn sleep(&self, duration: Duration) -> Result<(), FetchError> {
        let step = Duration::from_millis(50);
        let mut slept = Duration::ZERO;
        while slept < duration {
            if self.stop.load(Ordering::Relaxed) {
                return Err(FetchError::Stopping);
            }
            std::thread::sleep(step);
            slept += step;
        }
        Ok(())
    }

    /// A payload this node already holds complete (its completion mark is there), verified;
    /// `None` when it holds none that checks.
    fn local(&self, record: &Record) -> Result<Option<Fetched>, FetchError> {
        // The completion mark lies in the download dir, which Transmission's user writes.
        let (cap, _) = metainfo_cap(record.len);
        let bytes = match crate::untrusted::read(&self.metainfo_path(record), cap) {
            Ok(bytes) => bytes,
            Err(e) => {
                if !e.is_missing() {
                    tracing::warn!(hash = %record.info_hash, "completion mark not read: {e}");
                }
                return Ok(None);
            }
        };
        // A mark or payload that does not check (planted, or torn by a power cut: the mark is
        // not synced) is no copy held: the payload comes from the fleet and the mark is made
        // again.
        let not_held = |e: FetchError| {
            tracing::warn!(hash = %record.info_hash, "the payload held here does not check, fetching it: {}", crate::error::chain(&e));
            let _ = std::fs::remove_file(self.metainfo_path(record));
            Ok(None)
        };
        let metainfo = match check_metainfo(&bytes, record) {
            Ok(metainfo) => metainfo,
            Err(e) => return not_held(e),
        };
        let path = self.dir_of(record).join(&metainfo.name);
        let payload = match self.copy_verified(record, &path, Some(&metainfo)) {
            Ok(payload) => payload,
            Err(
                e @ (FetchError::Sha256Mismatch { .. }
                | FetchError::PayloadLength { .. }
                | FetchError::Read { .. }
                | FetchError::Untrusted(_)),
            ) => return not_held(e),
            Err(e) => return Err(e),
        };
        Ok(Some(Fetched {
            payload,
            to_seed: Some(self.sourced(record, &metainfo)?),
            sources: Vec::new(),
            stripes: Vec::new(),
            measured: None,
        }))
    }

    /// Copies the payload at `path` into the root-only staging dir while checking it; the copy
    /// is what gets applied, whatever happens to `path` later.
    fn copy_verified(
        &self,
        record: &Record,
        path: &Path,
        metainfo: Option<&Metainfo>,
    ) -> Result<Verified, FetchError> {
        let expected = expected(record, metainfo)?;
        verified::copy_verified(
            self.verified_root,
            path,
            &record.info_hash,
            record.seq,
            expected,
        )
    }

    /// Fetches the payload over HTTP from `origin` (which has it), down the relay chain when
    /// it is large, then from a few other members should the origin fail, all before
    /// `deadline`.
    fn over_http(
        &self,
        record: &Record,
        metainfo: &Metainfo,
        origin: SocketAddr,
        deadline: Deadline,
    ) -> Result<Fetched, FetchError> {
        let chain = record.len > relay::DIRECT_MAX;
        if let (true, Some(peers)) = (chain, self.stripes) {
            match self.striped(record, metainfo, peers) {
                Ok(Some(fetched)) => return Ok(fetched),
                Ok(None) => {}
                Err(FetchError::Stopping) => return Err(FetchError::Stopping),
                Err(e) => {
                    tracing::warn!(name = %record.name, seq = record.seq, "striped transfer: {}; the chain takes over", crate::error::chain(&e));
                }
            }
        }
        let members: Vec<SocketAddr> = (self.seeds)()
            .into_iter()
            .filter(|m| Some(*m) != self.own_seed)
            .collect();
        let route = if chain {
            relay::Route::chain(origin, self.own_seed, &members)
        } else {
            let mut others = members;
            shuffle(&mut others);
            others.truncate(MAX_FAILOVER);
            relay::Route::direct(origin, &others)
        };
        let relay = Relay {
            client: self.client,
            floor: self.pace.floor,
            deadline,
            root: self.download_root,
            record,
            name: &metainfo.name,
            pieces: relay::Pieces {
                length: metainfo.piece_length,
                hashes: &metainfo.pieces,
            },
            stop: self.stop,
            verified_root: self.verified_root,
        };
        let relayed = relay.fetch(&route, &metainfo.bytes, chain)?;
        let millis = relayed.sources.iter().map(|s| s.millis).sum();
        Ok(Fetched {
            payload: relayed.payload,
            to_seed: Some(self.sourced(record, metainfo)?),
            sources: relayed.sources,
            stripes: Vec::new(),
            measured: Some(Sample {
                bytes: record.len,
                millis,
            }),
        })
    }

    /// The striped transfer (docs/DESIGN.md 5.1), for a metainfo whose signed info dict
    /// carries the `p2pu` key with a roster: the documents from shuffled members, the plan,
    /// then [`stripes_fetch::Striped`] into the verified copy and the download dir's file,
    /// then the whole SHA-256 as for the chain and the completion mark. `None` (the chain
    /// takes over) without the key, when no member serves the documents right, or when no
    /// striped source is left; whatever it wrote is then discarded and its `.have` mark
    /// removed, so this node's seed server sends nothing of it.
    fn striped(
        &self,
        record: &Record,
        metainfo: &Metainfo,
        peers: StripedPeers<'_>,
    ) -> Result<Option<Fetched>, FetchError> {
        use super::stripes::{Left, Receiver};
        use super::stripes_fetch::{documents, restore, Mark, Sinks, Striped, StripedError};
        use crate::agent::runtime::state::SourceUse;
        let hash = &record.info_hash;
        let local = |message: String| FetchError::Local {
            hash: hash.clone(),
            message,
        };
        let Ok(Some(spec)) = crate::formats::blocks::Spec::from_metainfo(&metainfo.bytes) else {
            return Ok(None);
        };
        if spec.roster.is_none() || spec.layout.len() != record.len {
            return Ok(None);
        }
        let mut members = (peers.members)();
        shuffle(&mut members);
        let Some(docs) = documents(&self.client, hash, &spec, &members) else {
            tracing::warn!(name = %record.name, seq = record.seq, "no member served the striped transfer's documents right");
            return Ok(None);
        };
        let info_hash = hex::decode(hash).map_err(|e| local(e.to_string()))?;
        let plan = super::topology::Plan::from_roster(&info_hash, &docs.roster)
            .map_err(|e| local(crate::error::chain(&e)))?;
        let layout = docs.leaves.layout();
        let dl = DownloadDir::new(self.download_root);
        // Checked: re-served to the members that ask this node.
        write_mark(&dl.leaves(hash), &docs.leaves.encode())?;
        write_mark(&dl.roster(hash), &docs.roster.encode())?;
        let mut have = crate::formats::have::Have::new(layout, plan.stripes() as u32)
            .map_err(|e| local(e.to_string()))?;
        let have_path = dl.have_mark(hash);
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FetchError::Write { path, source }
        };
        // A mark an earlier run left (killed mid-way) would have the seed server send from
        // the file recreated below before its blocks are back: it goes first, unread.
        match std::fs::remove_file(&have_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(write_err(&have_path)(e)),
        }
        let dir = self.dir_of(record);
        let seeding = relay::create_nofollow(&dir, &metainfo.name)?;
        seeding
            .set_len(record.len)
            .map_err(write_err(&dir.join(&metainfo.name)))?;
        let expected = expected(record, None)?;
        // The verified copy an earlier run of this fetch left is kept: its blocks are read
        // back and each counts only if it matches its leaf (no bitmap file is trusted).
        let (staging, resumed) = verified::resume_blocks(
            self.verified_root,
            hash,
            record.seq,
            &metainfo.name,
            expected,
        )?;
        if let Err(e) = staging.file().set_len(record.len) {
            let path = staging.path().to_path_buf();
            staging.discard();
            return Err(write_err(&path)(e));
        }
        let mut receiver = Receiver::new(plan, docs.leaves, peers.name);
        if resumed {
            match restore(&mut receiver, staging.file(), &seeding, &mut have) {
                Ok(restored) => {
                    tracing::info!(name = %record.name, seq = record.seq, restored, blocks = layout.count(), "resuming the striped fetch from the verified copy's checked blocks");
                }
                Err(e) => {
                    let path = staging.path().to_path_buf();
                    staging.discard();
                    return Err(write_err(&path)(e));
                }
            }
        }
        let mark = match Mark::create(&have_path, &have) {
            Ok(mark) => mark,
            Err(e) => {
                staging.discard();
                return Err(write_err(&have_path)(e));
            }
        };
        let addr_of = |name: &str| {
            (peers.members)()
                .into_iter()
                .find(|(n, _)| n == name)
                .map(|(_, addr)| addr)
        };
        let striped = Striped {
            client: self.client,
            addr_of: &addr_of,
            info_hash: hash,
            name: &metainfo.name,
            stop: self.stop,
        };
        let sinks = Sinks {
            copy: staging.file(),
            seeding: &seeding,
            have,
            mark: &mark,
        };
        let started = std::time::Instant::now();
        let ran = striped.run(receiver, sinks);
        let measured = Sample {
            bytes: record.len,
            millis: started.elapsed().as_millis() as u64,
        };
        let fail = |staging: verified::Staging| {
            staging.discard();
            let _ = std::fs::remove_file(&have_path);
        };
        let (receiver, stripes) = match ran {
            Ok(ran) => ran,
            Err(StripedError::Stopping) => {
                // The copy stays for the next run to restore from; the seed server stops.
                let _ = std::fs::remove_file(&have_path);
                return Err(FetchError::Stopping);
            }
            Err(e) => {
                tracing::warn!(name = %record.name, seq = record.seq, "striped transfer: {}; the chain takes over", crate::error::chain(&e));
                fail(staging);
                return Ok(None);
            }
        };
        let copy = match staging.finish_written() {
            Ok(copy) => copy,
            Err(e) => {
                let _ = std::fs::remove_file(&have_path);
                return Err(e);
            }
        };
        if let Err(e) = write_completion_mark(&self.metainfo_path(record), &metainfo.bytes) {
            copy.remove();
            return Err(e);
        }
        // The record names whom this node left, and why: the liar with its block.
        let left = |who: &str, why: String, bad: u32| SourceUse {
            addr: who.to_string(),
            from: 0,
            bytes: 0,
            millis: 0,
            bad_pieces: bad,
            left: Some(why),
        };
        let mut sources: Vec<SourceUse> = docs
            .named
            .iter()
            .map(|(who, why)| left(who, format!("served wrong striped documents: {why}"), 1))
            .collect();
        sources.extend(receiver.named().map(|(who, why)| {
            let bad = u32::from(matches!(why, Left::Lied { .. }));
            left(who, why.to_string(), bad)
        }));
        let (restored, received) = receiver.counts();
        let repaired = receiver.repaired_count();
        tracing::info!(name = %record.name, seq = record.seq, named = sources.len(), restored, received, repaired, blocks = layout.count(), "fetched by stripes");
        Ok(Some(Fetched {
            payload: copy,
            to_seed: Some(self.sourced(record, metainfo)?),
            sources,
            stripes,
            measured: Some(measured),
        }))
    }

    /// Hands a payload fetched over HTTP to Transmission, which checks it and seeds it for
    /// nodes that fetch by BitTorrent. Best effort: the update is already applied.
    pub fn seed(&self, record: &Record, torrent: &[u8]) {
        let dir = self.dir_of(record);
        if let Err(e) = self.engine.add_metainfo(torrent, Some(&dir), false) {
            tracing::warn!(name = %record.name, seq = record.seq, "seeding in Transmission: {e}");
        }
    }

    /// Downloads `record`'s payload and returns its verified path. `metainfo` is given for
    /// legacy payloads, which carry their torrent (with no tracker: it gets this node's).
    pub fn fetch(&self, record: &Record, metainfo: Option<&[u8]>) -> Result<Fetched, FetchError> {
        if metainfo.is_none() && record.sha256.is_some() {
            if let Some(fetched) = self.local(record)? {
                return Ok(fetched);
            }
        }
        // The HTTP attempt and the Transmission wait each get the whole deadline: one failing
        // late must still leave the other a fair chance.
        let http_deadline = self.pace.deadline(record.len);
        let mut http_failure = None;
        let found = match metainfo {
            Some(bytes) => Some(Metainfo::from_bytes(bytes).map_err(|e| FetchError::Local {
                hash: record.info_hash.clone(),
                message: e.to_string(),
            })?),
            None => match self.find_metainfo(record)? {
                Some((found, origin)) if record.sha256.is_some() => {
                    match self.over_http(record, &found, origin, http_deadline) {
                        Err(FetchError::Stopping) => return Err(FetchError::Stopping),
                        Err(e) => {
                            tracing::warn!(name = %record.name, seq = record.seq, "over HTTP: {}; Transmission takes over", crate::error::chain(&e));
                            http_failure = Some(crate::error::chain(&e));
                            // Whatever arrived is not trusted to be a prefix of the payload.
                            let _ = std::fs::remove_dir_all(self.dir_of(record));
                        }
                        fetched => return fetched,
                    }
                    Some(found)
                }
                found => found.map(|(found, _)| found),
            },
        };
        let sourced = match &found {
            Some(found) => Some(self.sourced(record, found)?),
            None => None,
        };
        let metainfo = sourced.as_deref();
        let name = found
            .as_ref()
            .map_or(record.name.as_str(), |m| m.name.as_str());
        self.add(record, metainfo)?;
        self.wait_for_torrent(record, metainfo, http_failure)?;
        let path = self.dir_of(record).join(name);
        let payload = self.copy_verified(record, &path, found.as_ref())?;
        if let Some(found) = &found {
            write_completion_mark(&self.metainfo_path(record), &found.bytes)?;
        }
        Ok(Fetched {
            payload,
            to_seed: None,
            sources: Vec::new(),
            stripes: Vec::new(),
            measured: None,
        })
    }

    /// Waits for Transmission to complete the torrent of `record` (added again should a
    /// restarted daemon have lost it): its length is checked against the signed one as soon as
    /// the metadata is in, and past the deadline the torrent goes and the error says why
    /// (`http_failure`: what the HTTP attempt said before Transmission took over).
    fn wait_for_torrent(
        &self,
        record: &Record,
        metainfo: Option<&[u8]>,
        http_failure: Option<String>,
    ) -> Result<(), FetchError> {
        let hashes = [record.info_hash.clone()];
        let mut length_checked = false;
        let deadline = self.pace.deadline(record.len);
        loop {
            let status = match self.engine.get(&hashes) {
                Ok(list) => list.into_iter().next(),
                Err(e @ TransmissionError::Unreachable { .. }) => {
                    tracing::warn!(name = %record.name, "Transmission unreachable while downloading: {e}");
                    self.sleep(Duration::from_secs(1))?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let Some(status) = status else {
                // A restarted daemon may have lost it; add it again, by info-hash.
                self.add(record, metainfo)?;
                self.sleep(self.poll)?;
                continue;
            };
            if status.metadata_percent_complete >= 1.0 && !length_checked {
                if status.total_size != record.len {
                    let _ = self.engine.remove(&record.info_hash, true);
                    return Err(FetchError::LengthMismatch {
                        want: record.len,
                        got: status.total_size,
                    });
                }
                length_checked = true;
            }
            if status.error == 3 {
                return Err(FetchError::Local {
                    hash: record.info_hash.clone(),
                    message: status.error_string,
                });
            }
            if length_checked && status.is_complete() {
                break;
            }
            // Nobody may keep the update pending forever by trickling pieces (or by having
            // none): past the deadline the torrent goes and the record says why.
            if deadline.passed() {
                if let Err(e) = self.engine.remove(&record.info_hash, true) {
                    tracing::warn!(name = %record.name, "removing the overdue torrent: {e}");
                }
                return Err(FetchError::TorrentDeadline {
                    hash: record.info_hash.clone(),
                    budget: deadline.budget(),
                    left: if length_checked {
                        status.left_until_done
                    } else {
                        record.len
                    },
                    want: record.len,
                    peers: status.peers_connected,
                    http: http_failure,
                });
            }
            // A daemon stopped while the torrent was being added brings it back paused.
            if status.status == crate::engines::TorrentState::Stopped {
                tracing::info!(name = %record.name, "torrent found stopped; starting it");
                if let Err(e) = self.engine.start(&record.info_hash) {
                    tracing::warn!(name = %record.name, "starting the torrent: {e}");
                }
            }
            self.sleep(self.poll)?;
        }
        Ok(())
    }
}

/// A metainfo fetched from a member: its info dict must be the signed one (same info-hash)
/// and say the signed length, so no byte of an unsigned or endless payload is downloaded.
/// What is returned holds the info dict alone: that is all that is stored and re-served.
pub fn check_metainfo(bytes: &[u8], record: &Record) -> Result<Metainfo, FetchError> {
    let local = |message: String| FetchError::Local {
        hash: record.info_hash.clone(),
        message,
    };
    let (cap, pieces) = metainfo_cap(record.len);
    if bytes.len() as u64 > cap {
        return Err(local(format!(
            "metainfo of {} bytes; at most {cap} are kept for {pieces} pieces",
            bytes.len()
        )));
    }
    // Only the signed part is kept (and later stored and re-served).
    let canonical = torrent::info_only(bytes).map_err(|e| local(e.to_string()))?;
    let metainfo = Metainfo::from_bytes(&canonical).map_err(|e| local(e.to_string()))?;
    if metainfo.info_hash_hex() != record.info_hash {
        return Err(local(format!(
            "metainfo has info-hash {}",
            metainfo.info_hash_hex()
        )));
    }
    if metainfo.multi_file {
        return Err(FetchError::MultiFile {
            hash: record.info_hash.clone(),
        });
    }
    if metainfo.total_length != record.len {
        return Err(FetchError::LengthMismatch {
            want: record.len,
            got: metainfo.total_length,
        });
    }
    Ok(metainfo)
}

/// One member asked for the signed metainfo, on its own thread: owns what it needs, since
/// the search returns at the first right answer while a stalling member's ask still runs.
struct MetainfoAsk {
    client: Client,
    pace: Pace,
    seed: SocketAddr,
    record: Record,
    /// Set when the search returned: the ask stops reading.
    done: std::sync::Arc<AtomicBool>,
}

impl MetainfoAsk {
    /// The signed metainfo from the member's seed server, read within its size cap and at
    /// the floor rate, reduced to its info dict.
    fn run(&self) -> Result<Metainfo, FetchError> {
        let (seed, record) = (self.seed, &self.record);
        let url = format!("/{}.torrent", record.info_hash);
        let mut response = self.client.get(seed, &url, 0)?;
        let (cap, pieces) = metainfo_cap(record.len);
        // Refused on its announced length, before a byte of it is read.
        if response.len > cap {
            return Err(FetchError::MetainfoTooLarge {
                addr: seed,
                got: response.len,
                max: cap,
                pieces,
            });
        }
        // Held to the floor like any payload source, so a trickling member costs one window,
        // not the whole search.
        let mut guard = RateGuard::new(
            seed,
            self.pace.floor,
            self.client.read_timeout,
            self.pace.deadline(response.len),
            0,
            response.len,
        );
        let bytes = guard.read_to_end(&mut response.body, cap as usize, &self.done)?;
        check_metainfo(&bytes, record)
    }
}

/// Sets its flag when dropped: the metainfo asks still running stop with the search.
struct EndOnDrop(std::sync::Arc<AtomicBool>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn shuffle<T>(items: &mut [T]) {
    use rand::seq::SliceRandom;
    items.shuffle(&mut rand::thread_rng());
}

/// The SHA-256 and length of a file, read once in large blocks.
pub fn sha256_file(path: &Path) -> std::io::Result<([u8; 32], u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let len = crate::fsutil::read_chunks(&mut file, |bytes| {
        hasher.update(bytes);
        Ok(())
    })?;
    Ok((hasher.finalize().into(), len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::{Added, Session, TorrentState, TorrentStatus};
    use crate::formats::announcement::Kind;
    use std::io::Read;
    use std::sync::Mutex;

    /// A Transmission that "downloads" by writing `content` on the second poll, and can be
    /// told to lose its torrents (a restart) or lie about the info length.
    struct FakeEngine {
        dir: PathBuf,
        content: Vec<u8>,
        info_len: u64,
        lose_after_first_get: bool,
        /// Downloads forever, as a swarm whose only seeders trickle.
        never_done: bool,
        log: Mutex<Vec<String>>,
    }

    impl FakeEngine {
        fn added(&self, dir: Option<&Path>) -> Result<Added, TransmissionError> {
            assert_eq!(dir, Some(self.dir.as_path()));
            self.log.lock().unwrap().push("add".into());
            Ok(Added {
                id: 1,
                hash_string: "x".into(),
                name: "n".into(),
                duplicate: false,
            })
        }

        fn calls(&self, what: &str) -> usize {
            self.log
                .lock()
                .unwrap()
                .iter()
                .filter(|c| c.as_str() == what)
                .count()
        }
    }

    impl TorrentEngine for FakeEngine {
        fn session_get(&self) -> Result<Session, TransmissionError> {
            unimplemented!()
        }
        fn add_magnet(
            &self,
            magnet: &str,
            dir: Option<&Path>,
            _paused: bool,
        ) -> Result<Added, TransmissionError> {
            assert!(
                magnet.starts_with("magnet:?xt=urn:btih:")
                    && magnet.contains("&tr=http%3A%2F%2F127.0.0.1"),
                "{magnet}"
            );
            self.added(dir)
        }
        fn add_metainfo(
            &self,
            _: &[u8],
            dir: Option<&Path>,
            _: bool,
        ) -> Result<Added, TransmissionError> {
            self.added(dir)
        }
        fn get(&self, hashes: &[String]) -> Result<Vec<TorrentStatus>, TransmissionError> {
            let gets = {
                let mut log = self.log.lock().unwrap();
                log.push("get".into());
                log.iter().filter(|c| c.as_str() == "get").count()
            };
            if self.lose_after_first_get && gets == 2 {
                return Ok(Vec::new());
            }
            let done = gets >= 3 && !self.never_done;
            if done {
                std::fs::create_dir_all(&self.dir).unwrap();
                std::fs::write(self.dir.join("site.pp"), &self.content).unwrap();
            }
            Ok(vec![TorrentStatus {
                hash_string: hashes[0].clone(),
                name: "site.pp".into(),
                status: if done {
                    TorrentState::Seeding
                } else {
                    TorrentState::Downloading
                },
                percent_done: if done { 1.0 } else { 0.5 },
                left_until_done: if done { 0 } else { 5 },
                size_when_done: self.info_len,
                total_size: self.info_len,
                error: 0,
                error_string: String::new(),
                download_dir: self.dir.clone(),
                is_finished: false,
                metadata_percent_complete: 1.0,
                peers_connected: 1,
                rate_download: 0,
            }])
        }
        fn start(&self, _: &str) -> Result<(), TransmissionError> {
            Ok(())
        }
        fn stop(&self, _: &str) -> Result<(), TransmissionError> {
            Ok(())
        }
        fn verify(&self, _: &str) -> Result<(), TransmissionError> {
            Ok(())
        }
        fn remove(&self, _: &str, _: bool) -> Result<(), TransmissionError> {
            self.log.lock().unwrap().push("remove".into());
            Ok(())
        }
    }

    fn record(content: &[u8]) -> Record {
        Record::pending("site.pp", &"ab".repeat(20), content)
    }

    fn fetch_with(
        engine: &FakeEngine,
        root: &Path,
        record: &Record,
    ) -> Result<PathBuf, FetchError> {
        fetch_seeded(engine, root, record, &Vec::new).map(|fetched| fetched.payload.path().into())
    }

    fn fetch_seeded(
        engine: &FakeEngine,
        root: &Path,
        record: &Record,
        seeds: &(dyn Fn() -> Vec<SocketAddr> + Sync),
    ) -> Result<Fetched, FetchError> {
        let generous = Pace {
            floor: crate::agent::transfer::pace::MinRate::per_second(1, Duration::from_secs(60)),
            slack: Duration::from_secs(600),
        };
        fetch_paced(engine, root, record, seeds, generous)
    }

    fn fetch_paced(
        engine: &FakeEngine,
        root: &Path,
        record: &Record,
        seeds: &(dyn Fn() -> Vec<SocketAddr> + Sync),
        pace: Pace,
    ) -> Result<Fetched, FetchError> {
        fetch_waiting(engine, root, record, seeds, pace, Duration::from_secs(1))
    }

    /// As [`fetch_paced`], with `read_timeout` for how long a silent member is waited for.
    fn fetch_waiting(
        engine: &FakeEngine,
        root: &Path,
        record: &Record,
        seeds: &(dyn Fn() -> Vec<SocketAddr> + Sync),
        pace: Pace,
        read_timeout: Duration,
    ) -> Result<Fetched, FetchError> {
        let stop = AtomicBool::new(false);
        let fetcher = Fetcher {
            engine,
            download_root: root,
            tracker_url: "http://127.0.0.1:6969/announce",
            poll: Duration::from_millis(1),
            stop: &stop,
            seeds,
            own_seed: None,
            client: Client {
                bind: None,
                connect_timeout: Duration::from_secs(1),
                read_timeout,
            },
            verified_root: &verified::root_of(&root.join("state")),
            pace,
            stripes: None,
        };
        fetcher.fetch(record, None)
    }

    /// A torrent of a file holding "good", and the record that signs it.
    fn signed_torrent(dir: &Path) -> (Metainfo, Record) {
        use crate::formats::torrent::{create, CreateOptions};
        let file = dir.join("site.pp");
        std::fs::write(&file, b"good").unwrap();
        let torrent = create(&file, &CreateOptions::default()).unwrap();
        let signed = Record::pending("site.pp", &torrent.info_hash_hex(), b"good");
        (torrent, signed)
    }

    fn engine(root: &Path, content: &[u8], info_len: u64, lose: bool) -> FakeEngine {
        FakeEngine {
            dir: root.join("ab".repeat(20)),
            content: content.to_vec(),
            info_len,
            lose_after_first_get: lose,
            never_done: false,
            log: Mutex::new(Vec::new()),
        }
    }

    #[test]
    fn downloads_into_a_dir_per_info_hash_and_verifies() {
        let root = tempfile::tempdir().unwrap();
        let content = b"file { '/tmp/x': }\n";
        let fake = engine(root.path(), content, content.len() as u64, false);
        let path = fetch_with(&fake, root.path(), &record(content)).unwrap();
        let hash = "ab".repeat(20);
        assert!(root.path().join(&hash).join("site.pp").exists());
        assert_eq!(
            path,
            root.path().join(format!("state/verified/{hash}-1/site.pp")),
            "the verified copy is what the agent applies"
        );
        assert_eq!(std::fs::read(&path).unwrap(), content);
        assert_eq!(fake.calls("add"), 1);
    }

    #[test]
    fn a_torrent_lost_by_a_restarted_daemon_is_added_again() {
        let root = tempfile::tempdir().unwrap();
        let content = b"x";
        let fake = engine(root.path(), content, 1, true);
        fetch_with(&fake, root.path(), &record(content)).unwrap();
        assert_eq!(fake.calls("add"), 2);
    }

    #[test]
    fn info_length_unlike_the_signed_length_stops_the_download() {
        let root = tempfile::tempdir().unwrap();
        let fake = engine(root.path(), b"x", 1 << 40, false);
        let err = fetch_with(&fake, root.path(), &record(b"x")).unwrap_err();
        assert!(
            matches!(err, FetchError::LengthMismatch { want: 1, got } if got == 1 << 40),
            "{err}"
        );
        assert_eq!(fake.calls("remove"), 1);
    }

    #[test]
    fn payload_with_another_sha256_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let fake = engine(root.path(), b"evil", 4, false);
        let err = fetch_with(&fake, root.path(), &record(b"good")).unwrap_err();
        assert!(matches!(err, FetchError::Sha256Mismatch { .. }), "{err}");
    }

    /// A member that serves other bytes than the signed ones over HTTP costs a retry through
    /// Transmission (which checks every piece), never a wrong payload.
    #[test]
    fn bad_bytes_over_http_hand_the_download_to_transmission() {
        use crate::agent::transfer::seed_http::SeedServer;
        let member = tempfile::tempdir().unwrap();
        let (torrent, signed) = signed_torrent(member.path());
        let hash = &signed.info_hash;
        std::fs::create_dir(member.path().join(hash)).unwrap();
        std::fs::write(member.path().join(hash).join("site.pp"), b"evil").unwrap();
        std::fs::write(
            member.path().join(format!("{hash}.torrent")),
            &torrent.bytes,
        )
        .unwrap();
        let server = SeedServer::start("127.0.0.1:0".parse().unwrap(), member.path()).unwrap();

        let root = tempfile::tempdir().unwrap();
        let mut fake = engine(root.path(), b"good", 4, false);
        fake.dir = root.path().join(hash);
        let seeds = move || vec![server.addr()];
        let fetched = fetch_seeded(&fake, root.path(), &signed, &seeds).unwrap();
        assert_eq!(std::fs::read(fetched.payload.path()).unwrap(), b"good");
        assert_eq!(fake.calls("add"), 1, "Transmission took over");
        assert!(fetched.to_seed.is_none(), "Transmission has it already");
    }

    /// A member's seed server holding `content` as the signed torrent's payload, and that
    /// torrent's record ("good").
    fn member_serving(content: &[u8]) -> (tempfile::TempDir, Record) {
        let member = tempfile::tempdir().unwrap();
        let (torrent, signed) = signed_torrent(member.path());
        let hash = &signed.info_hash;
        std::fs::create_dir(member.path().join(hash)).unwrap();
        std::fs::write(member.path().join(hash).join("site.pp"), content).unwrap();
        std::fs::write(
            member.path().join(format!("{hash}.torrent")),
            &torrent.bytes,
        )
        .unwrap();
        (member, signed)
    }

    /// Issue 25: a node back from a partition hears the event before its own Serf lists the
    /// others alive again. The search asks again while the membership is empty instead of
    /// handing Transmission a magnet after a second (40 s in `benches/converge`).
    #[test]
    fn an_empty_membership_is_asked_again_until_the_members_are_listed() {
        use crate::agent::transfer::seed_http::SeedServer;
        let (honest_dir, signed) = member_serving(b"good");
        let honest = SeedServer::start("127.0.0.1:0".parse().unwrap(), honest_dir.path()).unwrap();
        let addr = honest.addr();
        let root = tempfile::tempdir().unwrap();
        let fake = engine(root.path(), b"good", 4, false);
        let listed_at = std::time::Instant::now() + Duration::from_secs(3);
        let seeds = move || {
            if std::time::Instant::now() < listed_at {
                Vec::new()
            } else {
                vec![addr]
            }
        };
        let fetched = fetch_waiting(
            &fake,
            root.path(),
            &signed,
            &seeds,
            Pace {
                floor: crate::agent::transfer::pace::MinRate::per_second(
                    1,
                    Duration::from_secs(60),
                ),
                slack: Duration::from_secs(60),
            },
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(std::fs::read(fetched.payload.path()).unwrap(), b"good");
        assert!(
            fetched.to_seed.is_some(),
            "fetched over HTTP from the member"
        );
        assert_eq!(fake.calls("add"), 0, "Transmission was not needed");
    }

    /// Issue 25: members that refuse this node as a stranger (403: their Serf does not list it
    /// alive yet, after a partition) keep the search going past its usual 10 s, until one
    /// that admits it is listed: the magnet would have taken 40 s.
    #[test]
    fn members_refusing_a_node_they_do_not_list_yet_keep_the_search_going() {
        use crate::agent::transfer::seed_http::SeedServer;
        use std::io::{Read, Write};
        let (honest_dir, signed) = member_serving(b"good");
        let honest = SeedServer::start("127.0.0.1:0".parse().unwrap(), honest_dir.path()).unwrap();
        let refuser = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let refuser_addr = refuser.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut stream in refuser.incoming().flatten() {
                let mut head = [0u8; 1024];
                let _ = stream.read(&mut head);
                let _ = stream.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
            }
        });
        let (honest_addr, root) = (honest.addr(), tempfile::tempdir().unwrap());
        let fake = engine(root.path(), b"good", 4, false);
        let listed_at = std::time::Instant::now() + METAINFO_SEARCH + Duration::from_secs(1);
        let seeds = move || {
            let mut seeds = vec![refuser_addr];
            if std::time::Instant::now() >= listed_at {
                seeds.push(honest_addr);
            }
            seeds
        };
        let pace = Pace {
            floor: crate::agent::transfer::pace::MinRate::per_second(1, Duration::from_secs(60)),
            slack: Duration::from_secs(60),
        };
        let fetched = fetch_waiting(
            &fake,
            root.path(),
            &signed,
            &seeds,
            pace,
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(std::fs::read(fetched.payload.path()).unwrap(), b"good");
        assert_eq!(fake.calls("add"), 0, "Transmission was not needed");
    }

    /// Issue 30: the metainfo search asks several members at once. Members that stall (accept
    /// and never answer; more of them than are asked at once) and one that serves another
    /// torrent's metainfo under the signed info-hash (a compromised member claiming the
    /// payload) neither hold up the search nor get their metainfo used: the honest member's
    /// answer is taken, the payload comes over HTTP, while the stalled asks still wait out a
    /// read timeout of ten minutes.
    #[test]
    fn stalling_and_lying_members_do_not_hold_up_or_poison_the_metainfo_search() {
        use crate::agent::transfer::seed_http::SeedServer;
        use std::net::TcpListener;
        let (honest_dir, signed) = member_serving(b"good");
        let honest = SeedServer::start("127.0.0.1:0".parse().unwrap(), honest_dir.path()).unwrap();
        // The liar: a seed server whose `<info-hash>.torrent` is another payload's metainfo.
        let liar_dir = tempfile::tempdir().unwrap();
        std::fs::write(liar_dir.path().join("evil.pp"), b"evil").unwrap();
        let other = torrent::create(
            &liar_dir.path().join("evil.pp"),
            &torrent::CreateOptions::default(),
        )
        .unwrap();
        std::fs::write(
            liar_dir
                .path()
                .join(format!("{}.torrent", signed.info_hash)),
            &other.bytes,
        )
        .unwrap();
        let liar = SeedServer::start("127.0.0.1:0".parse().unwrap(), liar_dir.path()).unwrap();
        // Twelve stallers, more than are asked at once: each accepts and holds its
        // connections unanswered.
        let mut stallers = Vec::new();
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for _ in 0..12 {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            stallers.push(listener.local_addr().unwrap());
            let asked = std::sync::Arc::clone(&asked);
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for stream in listener.incoming().flatten() {
                    asked.fetch_add(1, Ordering::Relaxed);
                    held.push(stream);
                }
            });
        }
        let mut members = stallers.clone();
        members.push(liar.addr());
        members.push(honest.addr());

        let root = tempfile::tempdir().unwrap();
        let fake = engine(root.path(), b"good", 4, false);
        let (done, finished) = std::sync::mpsc::channel();
        let root_path = root.path().to_path_buf();
        std::thread::spawn(move || {
            let seeds = move || members.clone();
            let generous = Pace {
                floor: crate::agent::transfer::pace::MinRate::per_second(
                    1,
                    Duration::from_secs(600),
                ),
                slack: Duration::from_secs(600),
            };
            let fetched = fetch_waiting(
                &fake,
                &root_path,
                &signed,
                &seeds,
                generous,
                Duration::from_secs(600),
            );
            let fetched = fetched.map(|f| {
                (
                    std::fs::read(f.payload.path()).unwrap(),
                    f.to_seed.is_some(),
                )
            });
            let _ = done.send((fetched, fake.calls("add")));
        });
        // Far below the stalled asks' read timeout: asked one after the other, a staller
        // shuffled before the honest member holds the search for ten minutes.
        let (fetched, added) = finished
            .recv_timeout(Duration::from_secs(60))
            .expect("the search waited on a stalling member");
        let (payload, over_http) = fetched.unwrap();
        assert_eq!(payload, b"good");
        assert!(over_http, "fetched over HTTP from the honest member");
        assert_eq!(added, 0, "Transmission was not needed");
        assert!(asked.load(Ordering::Relaxed) > 0, "the stallers were asked");
    }

    /// The completion mark is not synced: a power cut may tear it, or the payload it marks.
    /// A node holding either (or a planted one) fetches the payload from the fleet, checked,
    /// instead of failing on its own copy at every retry.
    #[test]
    fn a_held_copy_that_does_not_check_is_fetched_again_from_the_fleet() {
        use crate::agent::transfer::seed_http::SeedServer;
        let (member, signed) = member_serving(b"good");
        let server = SeedServer::start("127.0.0.1:0".parse().unwrap(), member.path()).unwrap();
        let hash = signed.info_hash.clone();
        let torrent = std::fs::read(member.path().join(format!("{hash}.torrent"))).unwrap();
        let torn_mark = |root: &Path| {
            std::fs::write(root.join(format!("{hash}.torrent")), b"").unwrap();
        };
        let torn_payload = |root: &Path| {
            std::fs::write(root.join(format!("{hash}.torrent")), &torrent).unwrap();
            std::fs::create_dir(root.join(&hash)).unwrap();
            std::fs::write(root.join(&hash).join("site.pp"), b"go").unwrap();
        };
        for (case, tear) in [
            ("torn mark", &torn_mark as &dyn Fn(&Path)),
            ("torn payload", &torn_payload),
        ] {
            let root = tempfile::tempdir().unwrap();
            tear(root.path());
            let mut fake = engine(root.path(), b"good", 4, false);
            fake.dir = root.path().join(&hash);
            let addr = server.addr();
            let seeds = move || vec![addr];
            let fetched = fetch_seeded(&fake, root.path(), &signed, &seeds)
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(
                std::fs::read(fetched.payload.path()).unwrap(),
                b"good",
                "{case}"
            );
            assert_eq!(
                std::fs::read(root.path().join(format!("{hash}.torrent"))).unwrap(),
                crate::formats::torrent::info_only(&torrent).unwrap(),
                "{case}: the mark made again"
            );
        }
    }

    /// A metainfo from a member's web seed server is used only when it is the signed one, and
    /// its length is checked before Transmission is given anything.
    #[test]
    fn metainfo_is_checked_against_the_signed_hash_and_length() {
        let dir = tempfile::tempdir().unwrap();
        let (torrent, signed) = signed_torrent(dir.path());
        assert!(check_metainfo(&torrent.bytes, &signed).is_ok());

        let other = record(b"good");
        let err = check_metainfo(&torrent.bytes, &other).unwrap_err();
        assert!(err.to_string().contains("info-hash"), "{err}");
        let mut longer = signed.clone();
        longer.len = 5;
        assert!(matches!(
            check_metainfo(&torrent.bytes, &longer),
            Err(FetchError::LengthMismatch { want: 5, got: 4 })
        ));
        assert!(check_metainfo(b"d4:infoi1ee", &signed).is_err());
    }

    /// Issue #13: the download dir belongs to Transmission's user, who renames the
    /// `<info-hash>` directory and plants another manifest after the check and before
    /// `puppet apply`. Only the signed bytes may be applied: the agent applies the copy it
    /// hashed, in a directory only root can reach.
    #[test]
    fn a_payload_swapped_after_the_check_is_not_what_gets_applied() {
        if !crate::testing::root("chown to another uid") {
            return;
        }
        use crate::agent::apply::ApplyContext;
        use crate::engines::puppet::ModuleInstalled;
        use crate::engines::{Applier, ApplyReport, ApplyStatus, PuppetError};
        use std::os::unix::fs::PermissionsExt;

        const NOBODY: u32 = 65534;
        /// Plays Transmission's user between the check and `puppet apply`, then records what
        /// Puppet would read.
        struct SwapThenRecord {
            downloads: PathBuf,
            hash: String,
            read: Mutex<Vec<Vec<u8>>>,
        }
        impl Applier for SwapThenRecord {
            fn apply(&self, manifest: &Path) -> Result<ApplyReport, PuppetError> {
                let hash = &self.hash;
                let swap =
                    format!("mv {hash} {hash}.old && mkdir {hash} && printf evil > {hash}/site.pp");
                let status = std::process::Command::new("setpriv")
                    .args([
                        "--reuid=65534",
                        "--regid=65534",
                        "--clear-groups",
                        "sh",
                        "-c",
                    ])
                    .arg(&swap)
                    .current_dir(&self.downloads)
                    .status()
                    .unwrap();
                assert!(
                    status.success(),
                    "the download dir's owner swaps the payload"
                );
                self.read
                    .lock()
                    .unwrap()
                    .push(std::fs::read(manifest).unwrap());
                Ok(ApplyReport {
                    status: ApplyStatus::Changed,
                    exit_code: 2,
                    output: String::new(),
                    elapsed: Duration::ZERO,
                })
            }
            fn module_install(&self, _: &Path, _: &Path) -> Result<ModuleInstalled, PuppetError> {
                unreachable!("a manifest")
            }
        }

        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let downloads = tmp.path().join("downloads");
        std::fs::create_dir(&downloads).unwrap();
        nix::unistd::chown(&downloads, Some(nix::unistd::Uid::from_raw(NOBODY)), None).unwrap();
        let fake = engine(&downloads, b"good", 4, false);
        let fetched = fetch_seeded(&fake, &downloads, &record(b"good"), &Vec::new).unwrap();

        let hash = "ab".repeat(20);
        let puppet = SwapThenRecord {
            downloads: downloads.clone(),
            hash: hash.clone(),
            read: Mutex::new(Vec::new()),
        };
        let context = ApplyContext {
            puppet: &puppet,
            modulepath: None,
            archive_dir: &tmp.path().join("archives"),
            trusted_keys_dir: &tmp.path().join("keys"),
            key_policy: crate::trust::KeyPolicy {
                key_threshold: 1,
                fleet: crate::formats::announcement::FleetId([0; 8]),
            },
            limits: crate::agent::apply::extract::Limits::default(),
        };
        let copy = fetched.payload.path().to_path_buf();
        context
            .apply_verified(Kind::Manifest, "site.pp", fetched.payload, None)
            .unwrap();
        assert_eq!(
            std::fs::read(downloads.join(&hash).join("site.pp")).unwrap(),
            b"evil",
            "the swap happened"
        );
        assert_eq!(*puppet.read.lock().unwrap(), [b"good".to_vec()]);
        assert!(!copy.exists(), "the copy goes once applied");
    }

    /// Hostile members: slow retrieval (TUF), where members serve the right metainfo and then
    /// trickle the payload, or a swarm never finishes, costs a bounded time and a named
    /// reason; a matching info dict padded with junk costs neither memory nor disk.
    mod hostile_members {
        use super::*;
        use crate::agent::transfer::pace::MinRate;
        use std::io::Write;
        use std::net::{TcpListener, TcpStream};
        use std::sync::mpsc;

        /// How a fake member serves the payload.
        #[derive(Clone, Copy)]
        enum Payload {
            Fast,
            /// One byte per this long, after an honest head.
            Drip(Duration),
        }

        /// A member's seed server on loopback: the metainfo (or 404) and the payload as told.
        fn fake_member(
            metainfo: Option<Vec<u8>>,
            content: Vec<u8>,
            payload: Payload,
        ) -> SocketAddr {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { return };
                    let (metainfo, content) = (metainfo.clone(), content.clone());
                    std::thread::spawn(move || answer(stream, metainfo, &content, payload));
                }
            });
            addr
        }

        fn answer(
            mut stream: TcpStream,
            metainfo: Option<Vec<u8>>,
            content: &[u8],
            payload: Payload,
        ) {
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte) {
                    Ok(1) => request.push(byte[0]),
                    _ => return,
                }
            }
            let request = String::from_utf8_lossy(&request).to_string();
            let path = request.split(' ').nth(1).unwrap_or("").to_string();
            let offset: usize = request
                .split("Range: bytes=")
                .nth(1)
                .and_then(|r| r.split('-').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let not_found = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
            let (body, drip) = match (path.ends_with(".torrent"), &metainfo, payload) {
                (true, Some(metainfo), _) => (metainfo.as_slice(), None),
                (false, _, Payload::Fast) => (&content[offset..], None),
                (false, _, Payload::Drip(every)) => (&content[offset..], Some(every)),
                _ => {
                    let _ = stream.write_all(not_found);
                    return;
                }
            };
            let status = if offset > 0 {
                "206 Partial Content"
            } else {
                "200 OK"
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            if stream.write_all(head.as_bytes()).is_err() {
                return;
            }
            match drip {
                None => {
                    let _ = stream.write_all(body);
                }
                Some(every) => {
                    for byte in body {
                        if stream.write_all(std::slice::from_ref(byte)).is_err() {
                            return;
                        }
                        std::thread::sleep(every);
                    }
                }
            }
        }

        /// A 256 KiB payload's torrent under `dir` and the record that signs it.
        fn signed_payload(dir: &Path) -> (Metainfo, Record, Vec<u8>) {
            use crate::formats::torrent::{create, CreateOptions};
            let content: Vec<u8> = (0..256 * 1024).map(|i| (i * 7 % 251) as u8).collect();
            let file = dir.join("site.pp");
            std::fs::write(&file, &content).unwrap();
            let torrent = create(&file, &CreateOptions::default()).unwrap();
            let signed = Record::pending("site.pp", &torrent.info_hash_hex(), &content);
            (torrent, signed, content)
        }

        /// 64 KiB per 300 ms, and 1 s of slack: the site's defaults, scaled down.
        fn brisk() -> Pace {
            Pace {
                floor: MinRate {
                    bytes: 64 << 10,
                    per: Duration::from_millis(300),
                },
                slack: Duration::from_secs(1),
            }
        }

        /// Runs the fetch on a thread, so that a fetch without the defence fails the test
        /// instead of hanging it.
        fn fetch_within(
            limit: Duration,
            engine: FakeEngine,
            signed: &Record,
            seeds: Vec<SocketAddr>,
        ) -> (Result<Fetched, FetchError>, FakeEngine) {
            let (tx, rx) = mpsc::channel();
            let root = engine.dir.parent().unwrap().to_path_buf();
            let signed = signed.clone();
            std::thread::spawn(move || {
                let seeds = move || seeds.clone();
                let result = fetch_paced(&engine, &root, &signed, &seeds, brisk());
                let _ = tx.send((result, engine));
            });
            rx.recv_timeout(limit)
                .unwrap_or_else(|_| panic!("the fetch was still waiting after {limit:?}"))
        }

        fn never_finishing(root: &Path, hash: &str, content: &[u8]) -> FakeEngine {
            let mut fake = engine(root, content, content.len() as u64, false);
            fake.dir = root.join(hash);
            fake.never_done = true;
            fake
        }

        /// A member serving another plan than the signed one (or one too long) is passed
        /// over: the plan kept is the one the announcement verifies with.
        #[test]
        fn a_plan_is_taken_only_from_a_member_whose_plan_verifies() {
            let good = b"d6:target15:tag:role=camera1:vi1ee".to_vec();
            let liar = fake_member(None, b"d1:vi1ee".to_vec(), Payload::Fast);
            let bloated = fake_member(None, vec![b'x'; 4096], Payload::Fast);
            let honest = fake_member(None, good.clone(), Payload::Fast);
            let root = tempfile::tempdir().unwrap();
            let engine = engine(root.path(), b"", 0, false);
            let stop = AtomicBool::new(false);
            let seeds = move || vec![liar, bloated, honest];
            let fetcher = Fetcher {
                engine: &engine,
                download_root: root.path(),
                tracker_url: "",
                poll: Duration::from_millis(1),
                stop: &stop,
                seeds: &seeds,
                own_seed: None,
                client: Client {
                    bind: None,
                    connect_timeout: Duration::from_secs(1),
                    read_timeout: Duration::from_secs(1),
                },
                verified_root: &verified::root_of(&root.path().join("state")),
                pace: brisk(),
                stripes: None,
            };
            let hash = "ab".repeat(20);
            let signed = good.clone();
            let seen = std::sync::Mutex::new(Vec::new());
            let accept = |bytes: &[u8]| {
                seen.lock().unwrap().push(bytes.len());
                bytes == signed.as_slice()
            };
            assert_eq!(fetcher.find_plan(&hash, &accept), Some(good));
            // The bloated one was refused on its length, before a byte of it was read.
            assert!(!seen.lock().unwrap().contains(&4096));
            let refuse_all = |_: &[u8]| false;
            assert_eq!(fetcher.find_plan(&hash, &refuse_all), None);
        }

        #[test]
        fn an_origin_trickling_the_payload_fails_over_to_another_member() {
            let member = tempfile::tempdir().unwrap();
            let (torrent, signed, content) = signed_payload(member.path());
            // The only member that answers for the metainfo trickles the payload.
            let trickler = fake_member(
                Some(torrent.bytes.clone()),
                content.clone(),
                Payload::Drip(Duration::from_millis(50)),
            );
            let honest = fake_member(None, content.clone(), Payload::Fast);
            let root = tempfile::tempdir().unwrap();
            let fake = never_finishing(root.path(), &signed.info_hash, &content);
            let (fetched, fake) = fetch_within(
                Duration::from_secs(20),
                fake,
                &signed,
                vec![trickler, honest],
            );
            let fetched = fetched.unwrap_or_else(|e| panic!("{}", crate::error::chain(&e)));
            assert_eq!(std::fs::read(fetched.payload.path()).unwrap(), content);
            assert!(fetched.to_seed.is_some(), "it came over HTTP");
            assert_eq!(fake.calls("add"), 0, "Transmission was not needed");
        }

        #[test]
        fn a_trickling_origin_and_a_stuck_swarm_fail_within_the_deadline_saying_why() {
            let member = tempfile::tempdir().unwrap();
            let (torrent, signed, content) = signed_payload(member.path());
            let trickler = fake_member(
                Some(torrent.bytes.clone()),
                content.clone(),
                Payload::Drip(Duration::from_millis(50)),
            );
            let root = tempfile::tempdir().unwrap();
            let fake = never_finishing(root.path(), &signed.info_hash, &content);
            let started = std::time::Instant::now();
            let (fetched, fake) =
                fetch_within(Duration::from_secs(20), fake, &signed, vec![trickler]);
            let err = fetched.err().expect("nothing completes the download");
            let reason = crate::error::chain(&err);
            assert!(
                matches!(err, FetchError::TorrentDeadline { .. }),
                "{reason}"
            );
            // 256 KiB at 64 KiB per 300 ms is 1.2 s, plus 1 s of slack, for each attempt.
            assert!(
                started.elapsed() < Duration::from_secs(8),
                "{:?}",
                started.elapsed()
            );
            for said in [
                "Transmission had not finished",
                "deadline of 2.2s",
                &format!("{trickler} sent"),
                "under the floor of 65536 bytes per 300ms",
                "262144 bytes missing",
            ] {
                assert!(reason.contains(said), "{said:?} missing from: {reason}");
            }
            assert_eq!(fake.calls("remove"), 1, "the overdue torrent is removed");
        }

        #[test]
        fn the_transmission_wait_has_a_deadline() {
            let root = tempfile::tempdir().unwrap();
            let content = b"x".repeat(1000);
            let signed = record(&content);
            let fake = never_finishing(root.path(), &signed.info_hash, &content);
            let (fetched, fake) = fetch_within(Duration::from_secs(20), fake, &signed, Vec::new());
            let err = fetched.err().expect("nothing completes the download");
            assert!(
                matches!(
                    err,
                    FetchError::TorrentDeadline {
                        left: 5,
                        want: 1000,
                        peers: 1,
                        http: None,
                        ..
                    }
                ),
                "{err}"
            );
            assert_eq!(fake.calls("remove"), 1);
        }

        /// `metainfo` with a junk key of `junk` bytes after its info dict: the info-hash stays.
        fn padded(metainfo: &[u8], junk: usize) -> Vec<u8> {
            let mut out = metainfo[..metainfo.len() - 1].to_vec();
            out.extend_from_slice(format!("4:zzzz{junk}:").as_bytes());
            out.resize(out.len() + junk, b'j');
            out.push(b'e');
            out
        }

        fn fetcher<'a>(
            engine: &'a FakeEngine,
            root: &'a Path,
            verified_root: &'a Path,
            stop: &'a AtomicBool,
            seeds: &'a (dyn Fn() -> Vec<SocketAddr> + Sync),
        ) -> Fetcher<'a> {
            Fetcher {
                engine,
                download_root: root,
                tracker_url: "http://127.0.0.1:6969/announce",
                poll: Duration::from_millis(1),
                stop,
                seeds,
                own_seed: None,
                client: Client {
                    bind: None,
                    connect_timeout: Duration::from_secs(1),
                    read_timeout: Duration::from_secs(2),
                },
                pace: brisk(),
                stripes: None,
                verified_root,
            }
        }

        #[test]
        fn a_metainfo_over_the_cap_is_refused_before_it_is_read() {
            let member = tempfile::tempdir().unwrap();
            let (torrent, signed, content) = signed_payload(member.path());
            let huge = padded(&torrent.bytes, 64 << 20);
            // Counts what the member got into the socket before the agent hung up.
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let seed = listener.local_addr().unwrap();
            let (sent_tx, sent) = mpsc::channel();
            std::thread::spawn(move || {
                let (mut stream, _) = listener.accept().unwrap();
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request);
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", huge.len());
                let mut written = 0;
                if stream.write_all(head.as_bytes()).is_ok() {
                    for chunk in huge.chunks(64 << 10) {
                        if stream.write_all(chunk).is_err() {
                            break;
                        }
                        written += chunk.len();
                    }
                }
                let _ = sent_tx.send(written);
            });
            let root = tempfile::tempdir().unwrap();
            let fake = engine(root.path(), &content, content.len() as u64, false);
            let stop = AtomicBool::new(false);
            let seeds = Vec::new;
            let state = tempfile::tempdir().unwrap();
            let verified_root = verified::root_of(state.path());
            let fetcher = fetcher(&fake, root.path(), &verified_root, &stop, &seeds);
            let ask = MetainfoAsk {
                client: fetcher.client,
                pace: fetcher.pace,
                seed,
                record: signed.clone(),
                done: Default::default(),
            };
            let err = ask.run().unwrap_err();
            assert!(
                matches!(err, FetchError::MetainfoTooLarge { max, pieces: 16, .. } if max == (1 << 20) + 320),
                "{err}"
            );
            let written = sent.recv_timeout(Duration::from_secs(20)).unwrap();
            assert!(written < 16 << 20, "the agent took {written} bytes of it");
            // Padding under the announced-length check still meets the cap on what is kept.
            let over = padded(&torrent.bytes, 2 << 20);
            assert!(
                check_metainfo(&over, &signed).is_err(),
                "2 MiB for 16 pieces"
            );
        }

        #[test]
        fn a_padded_metainfo_is_kept_and_re_served_as_its_info_dict_alone() {
            let member = tempfile::tempdir().unwrap();
            let (torrent, signed, content) = signed_payload(member.path());
            let canonical = crate::formats::torrent::info_only(&torrent.bytes).unwrap();
            let seed = fake_member(
                Some(padded(&torrent.bytes, 512 << 10)),
                content.clone(),
                Payload::Fast,
            );
            let root = tempfile::tempdir().unwrap();
            let mut fake = engine(root.path(), &content, content.len() as u64, false);
            fake.dir = root.path().join(&signed.info_hash);
            let stop = AtomicBool::new(false);
            let seeds = move || vec![seed];
            let state = tempfile::tempdir().unwrap();
            let verified_root = verified::root_of(state.path());
            let fetcher = fetcher(&fake, root.path(), &verified_root, &stop, &seeds);
            let fetched = fetcher
                .fetch(&signed, None)
                .unwrap_or_else(|e| panic!("{}", crate::error::chain(&e)));
            assert_eq!(std::fs::read(fetched.payload.path()).unwrap(), content);
            // The completion mark is what this node's seed server re-serves.
            let mark = std::fs::read(fetcher.metainfo_path(&signed)).unwrap();
            assert_eq!(mark, canonical);
            assert!(mark.len() < 1024, "{} bytes kept", mark.len());
            let to_seed = Metainfo::from_bytes(&fetched.to_seed.unwrap()).unwrap();
            assert_eq!(to_seed.info_hash, torrent.info_hash);
        }
    }
}
