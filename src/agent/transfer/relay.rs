//! Downloads a payload over HTTP from the fleet's seed servers, without BitTorrent's 10 s choke
//! cycle, piece by piece, each piece checked against the torrent's SHA-1 before it is kept.
//!
//! A small payload comes straight from a node that has it. A large one comes down a chain: the
//! members, ordered by seed address and rotated to start at the node that has the payload, each
//! fetch from the one before them while their own seed server relays what they verified to the
//! one after (`?relay`), so every link carries the payload once and a rollout takes about one
//! copy's time whatever the fleet's size. A node appends only checked pieces to the file its
//! server relays, so a chain never passes a bad byte on, and a source that sends one is caught
//! at that piece, named and dropped.
//!
//! Nobody holds the chain back ([`Route`], [`Watch`]): a node's sources are the members before
//! it, nearest first, then the rest. While it streams from one, it asks the next one ahead how
//! much it holds (a HEAD: `X-P2pu-Have`). It moves on to that one, resuming at the piece
//! reached, when its source stops sending and answering while the one ahead holds more (a hung
//! node), or when the one ahead, holding more, would send at least twice as fast: a short
//! trial read from it, made when it holds the whole payload or gains twice as fast, decides (a
//! slow node, or one whose own source is slow; the trial also measures this node's own link,
//! so a node that is slow itself stays put). A crashed source is left at once. The chain closes
//! over the failed node instead of sending everyone to the origin, and every seed server
//! relays one payload to at most `seed_http::MAX_RELAY_READERS` nodes, so no node is stampeded.
//!
//! Each piece goes both to the download dir (for the own seed server to relay and serve) and to
//! the root-only verified copy ([`super::verified`]), which is hashed again as a whole and is
//! what the agent applies: the download dir belongs to Transmission's user, who could change
//! the file there afterwards. The file there is created on a directory descriptor opened
//! without following links, with `O_CREAT | O_EXCL | O_NOFOLLOW`, so a link that user plants is
//! never written through. A fetch cut short (the agent restarted) resumes from the pieces of
//! the verified copy that check.

use super::download_dir::{write_completion_mark, write_mark, DownloadDir};
use super::fetch_error::FetchError;
use super::http_get::{Client, GetError, Response};
pub use super::pace::MinRate;
use super::pace::{Deadline, RateGuard};
use super::verified::{self, Staging, Verified};
use crate::agent::runtime::state::{Record, SourceUse};
use crate::fsutil;
use nix::fcntl::OFlag;
use sha1::{Digest, Sha1};

use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Payloads up to this size come straight from a node that has them: a chain only adds hops.
pub const DIRECT_MAX: u64 = 4 << 20;
/// How long a chain parent may take to start relaying (its agent may hear of the update a
/// little later) before the next source is asked instead.
const PARENT_WAIT: Duration = Duration::from_secs(3);
/// How often the source ahead is asked how far it is, and how long that answer may take.
const PROBE_EVERY: Duration = Duration::from_millis(250);
const PROBE_LIMIT: Duration = Duration::from_millis(800);
/// The span over which a source's pace is compared with the one ahead of it.
const COMPARE_OVER: Duration = Duration::from_millis(500);
/// A source that sent nothing for this long and does not answer a probe has hung.
pub(super) const HUNG_AFTER: Duration = Duration::from_secs(1);

/// The hang rule, one owner for the chain and the stripes (`stripes_fetch`): a source that
/// sent nothing for [`HUNG_AFTER`] and whose seed server does not answer a probe within
/// [`PROBE_LIMIT`] (`answers`, given that limit) has hung. One that answers is alive and has
/// nothing to send yet (its own source is behind), which is no reason to leave it.
pub(super) fn hung(silent: Duration, answers: impl FnOnce(Duration) -> bool) -> bool {
    silent >= HUNG_AFTER && !answers(PROBE_LIMIT)
}
/// How much a trial read of the source ahead takes, and how often one may be made: each is
/// bytes that source's uplink does not send its own child. One that holds the whole payload (the
/// origin, in a healthy chain) is tried half as often: nothing else says whether to try it.
const TRIAL: u64 = 64 << 10;
const TRIAL_EVERY: Duration = Duration::from_secs(1);
const TRIAL_WHOLE_EVERY: Duration = Duration::from_secs(2);

/// The pieces every byte is checked against: the torrent's, whose info dict hashes to the
/// signed info-hash.
#[derive(Clone, Copy)]
pub struct Pieces<'a> {
    pub length: u64,
    pub hashes: &'a [[u8; 20]],
}

impl Pieces<'_> {
    /// The length of piece `index` of a payload of `len` bytes (the last may be short).
    fn len_of(&self, index: u64, len: u64) -> u64 {
        self.length.min(len - index * self.length)
    }

    fn check(&self, index: u64, bytes: &[u8]) -> bool {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.hashes.get(i))
            .is_some_and(|want| Sha1::digest(bytes).as_slice() == want)
    }
}

/// Whom a node fetches from, in order: the members before it in the chain, nearest first (its
/// parent, then the parent's parent, ... the origin), then the members after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub sources: Vec<SocketAddr>,
    /// How many of `sources` are ahead of this node in the chain (the origin last of them).
    pub ahead: usize,
}

impl Route {
    /// The chain through the members' seed servers `others`, this node's `own` and the
    /// `origin`, ordered by address and rotated to start at the origin. Every node computes
    /// the same chain from the same membership; one that is not in it (yet) has the origin
    /// alone ahead of it.
    pub fn chain(origin: SocketAddr, own: Option<SocketAddr>, others: &[SocketAddr]) -> Route {
        let mut ring: Vec<SocketAddr> = others.iter().copied().chain([origin]).collect();
        ring.extend(own);
        ring.sort_by_key(|a| (a.ip(), a.port()));
        ring.dedup();
        let start = ring.iter().position(|a| *a == origin).unwrap_or(0);
        ring.rotate_left(start);
        let at = own.and_then(|own| ring.iter().position(|a| *a == own));
        match at {
            Some(at) if at > 0 => {
                let mut sources: Vec<SocketAddr> = ring[..at].iter().rev().copied().collect();
                sources.extend(ring[at + 1..].iter().rev());
                Route { sources, ahead: at }
            }
            _ => {
                let sources = ring.into_iter().filter(|a| Some(*a) != own).collect();
                Route { sources, ahead: 1 }
            }
        }
    }

    /// Straight from the origin, then `others` in their order.
    pub fn direct(origin: SocketAddr, others: &[SocketAddr]) -> Route {
        let sources = std::iter::once(origin)
            .chain(others.iter().copied().filter(|a| *a != origin))
            .collect();
        Route { sources, ahead: 1 }
    }

    /// This node's chain parent.
    pub fn parent(&self) -> Option<SocketAddr> {
        self.sources.first().copied()
    }
}

/// Creates `dir/name` afresh for writing, where `dir` lies in the download dir that
/// Transmission's user owns: `dir` is opened without following a link, a file already there
/// is unlinked, and the new one is created `O_EXCL | O_NOFOLLOW` on that descriptor, so a link
/// (or a hard link to another file) planted by that user is never written through.
pub(super) fn create_nofollow(dir: &Path, name: &str) -> Result<std::fs::File, FetchError> {
    let write_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FetchError::Write { path, source }
    };
    let dir_fd = fsutil::open_dir_nofollow(dir, 0o755).map_err(write_error(dir))?;
    let path = dir.join(name);
    match nix::unistd::unlinkat(
        Some(dir_fd.as_raw_fd()),
        name,
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    ) {
        Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(write_error(&path)(e.into())),
    }
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
    fsutil::openat_nofollow(&dir_fd, name, flags, 0o644)
        .map(std::fs::File::from)
        .map_err(write_error(&path))
}

/// Removes the relay marks left under `root` by an agent that stopped mid-download: at start
/// no relay is running.
pub fn clear_stale_markers(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if DownloadDir::is_relay_mark(&path) {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), "removing a stale relay mark: {e}");
            }
        }
    }
}

/// One payload to fetch into `dir/name`, marked under `root` as the seed server expects.
pub struct Relay<'a> {
    pub client: Client,
    /// What every source must deliver, and when the whole fetch must be over.
    pub floor: MinRate,
    pub deadline: Deadline,
    pub root: &'a Path,
    pub record: &'a Record,
    /// The file's name in the metainfo.
    pub name: &'a str,
    pub pieces: Pieces<'a>,
    pub stop: &'a AtomicBool,
    /// Where the verified copy is made ([`verified::root_of`] the state dir).
    pub verified_root: &'a Path,
}

/// A verified payload and the sources that served it.
pub struct Relayed {
    pub payload: Verified,
    pub sources: Vec<SourceUse>,
}

/// What the stream and its watcher share.
struct Shared {
    /// Bytes held verified, a whole number of pieces.
    offset: AtomicU64,
    /// The source being streamed from (its index in the route), and since when.
    current: Mutex<Option<(usize, Instant)>>,
    last_byte: Mutex<Instant>,
    /// Set by the watcher: the index of the source it judged, the index to move to, and why
    /// that source is left. A judgement about a source the stream has already left is stale.
    move_to: Mutex<Option<(usize, usize, String)>>,
    /// Raised with `move_to`, or when the agent stops: wakes the stream from a silent read.
    leave: AtomicBool,
    /// Sources not to ask again (bad pieces, failures, left as slow or hung).
    dropped: Mutex<Vec<bool>>,
    /// Sources the watcher caught sending bad pieces, for the record.
    liars: Mutex<Vec<SourceUse>>,
    /// Set when the stream is over; `wake` rouses the watcher from its wait between looks at
    /// once, so a fetch never ends a probe interval late.
    done: Mutex<bool>,
    wake: Condvar,
    /// Whether a watcher runs beside the stream ([`worth_watching`]): without one, the stream
    /// itself wakes for the agent's stop.
    watched: bool,
}

impl Shared {
    /// The watcher's move away from the source at `from`, if it asked for one; a move it asked
    /// about an earlier source (decided while the stream was changing over) is dropped.
    fn take_move(&self, from: usize) -> Option<(usize, String)> {
        match lock(&self.move_to).take() {
            Some((judged, to, why)) if judged == from => Some((to, why)),
            _ => None,
        }
    }

    fn finish(&self) {
        *lock(&self.done) = true;
        self.wake.notify_all();
    }

    /// Waits `period`, or less when the stream ends meanwhile; whether it has ended.
    fn wait_done(&self, period: Duration) -> bool {
        let done = lock(&self.done);
        let (done, _) = self
            .wake
            .wait_timeout_while(done, period, |done| !*done)
            .unwrap_or_else(|e| e.into_inner());
        *done
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Relay<'_> {
    fn dir(&self) -> PathBuf {
        DownloadDir::new(self.root).payload_dir(&self.record.info_hash)
    }

    fn marker(&self) -> PathBuf {
        DownloadDir::new(self.root).relay_mark(&self.record.info_hash)
    }

    fn url_path(&self) -> String {
        format!(
            "/{}/{}?relay",
            self.record.info_hash,
            crate::formats::torrent::percent_encode(self.name)
        )
    }

    /// Fetches the payload along `route`, each source resuming where the last stopped,
    /// checking every piece; checks the whole against what was signed, writes `metainfo` as
    /// the completion mark and returns the verified copy. `relay` lets the own seed server
    /// pass the pieces on as they are checked. Every source is held to the floor and all of
    /// them to the fetch's deadline. The sources' use is in `Relayed`, and on failure in the
    /// error's text.
    pub fn fetch(
        &self,
        route: &Route,
        metainfo: &[u8],
        relay: bool,
    ) -> Result<Relayed, FetchError> {
        let dir = self.dir();
        let path = dir.join(self.name);
        let mut file = create_nofollow(&dir, self.name)?;
        let expected = verified::expected(self.record, None)?;
        let pieces = (self.pieces.length, self.pieces.hashes);
        let mut staging = verified::resume(
            self.verified_root,
            &self.record.info_hash,
            self.record.seq,
            self.name,
            expected,
            pieces,
            &mut |bytes| file.write_all(bytes),
        )?;
        if staging.written() > 0 {
            tracing::info!(name = %self.record.name, seq = self.record.seq, from = staging.written(), len = self.record.len, "resuming from the verified pieces");
        }
        let marker = self.marker();
        if relay {
            if let Err(e) = write_mark(&marker, format!("{}\n", self.record.len).as_bytes()) {
                staging.discard();
                return Err(e);
            }
        }
        let mut used = Vec::new();
        let fetched = self.fetch_into(&mut file, &path, &mut staging, route, &mut used);
        let result = match fetched {
            Ok(()) => staging.finish().and_then(|copy| {
                match write_completion_mark(
                    &DownloadDir::new(self.root).completion_mark(&self.record.info_hash),
                    metainfo,
                ) {
                    Ok(()) => Ok(Relayed {
                        payload: copy,
                        sources: used,
                    }),
                    Err(e) => {
                        copy.remove();
                        Err(e)
                    }
                }
            }),
            // Kept: the pieces it holds are checked, and a fetch that starts again resumes.
            Err(FetchError::Stopping) => Err(FetchError::Stopping),
            Err(e) => {
                staging.discard();
                Err(e)
            }
        };
        // Readers of the relay finish from the completion mark, or stop when both are gone.
        if relay {
            let _ = std::fs::remove_file(&marker);
        }
        result
    }

    fn fetch_into(
        &self,
        file: &mut std::fs::File,
        path: &Path,
        staging: &mut Staging,
        route: &Route,
        used: &mut Vec<SourceUse>,
    ) -> Result<(), FetchError> {
        let record = self.record;
        let shared = Shared {
            offset: AtomicU64::new(staging.written()),
            current: Mutex::new(None),
            last_byte: Mutex::new(Instant::now()),
            move_to: Mutex::new(None),
            leave: AtomicBool::new(false),
            dropped: Mutex::new(vec![false; route.sources.len()]),
            liars: Mutex::new(Vec::new()),
            done: Mutex::new(false),
            wake: Condvar::new(),
            watched: worth_watching(route, self.pieces.length, record.len),
        };
        let watch = Watch {
            client: self.client,
            path: self.url_path(),
            route,
            shared: &shared,
            pieces: self.pieces,
            len: record.len,
            stop: self.stop,
        };
        // Why each source was left, for the record of a failed fetch.
        let mut failures: Vec<String> = Vec::new();
        let outcome = std::thread::scope(|scope| {
            // A payload that comes straight from one source, or is too small for any source
            // ahead to lead by a move's worth, has nothing to watch: one GET, no prober.
            let watcher = shared.watched.then(|| scope.spawn(|| watch.run()));
            let outcome = self.stream(file, path, staging, route, &shared, used, &mut failures);
            shared.finish();
            if let Some(watcher) = watcher {
                let _ = watcher.join();
            }
            outcome
        });
        used.append(&mut lock(&shared.liars));
        outcome?;
        let offset = shared.offset.load(Ordering::Relaxed);
        if offset != record.len {
            return Err(FetchError::Http {
                name: record.name.clone(),
                got: offset,
                want: record.len,
                failures: if failures.is_empty() {
                    "no source".to_string()
                } else {
                    failures.join("; ")
                },
            });
        }
        // The length and SHA-256 are checked again on the verified copy (`Staging::finish`).
        Ok(())
    }

    /// Streams from the route's sources in turn until the payload is whole or none is left.
    #[allow(clippy::too_many_arguments)]
    fn stream(
        &self,
        file: &mut std::fs::File,
        path: &Path,
        staging: &mut Staging,
        route: &Route,
        shared: &Shared,
        used: &mut Vec<SourceUse>,
        failures: &mut Vec<String>,
    ) -> Result<(), FetchError> {
        let record = self.record;
        let url_path = self.url_path();
        let mut index = 0;
        while index < route.sources.len() && shared.offset.load(Ordering::Relaxed) < record.len {
            if lock(&shared.dropped)[index] {
                index += 1;
                continue;
            }
            if self.deadline.passed() {
                failures.push(format!(
                    "the fetch's deadline of {:?} passed",
                    self.deadline.budget()
                ));
                break;
            }
            let source = route.sources[index];
            let offset = shared.offset.load(Ordering::Relaxed);
            // The chain parent is waited for (its agent may hear of the update later), and so is
            // a member ahead that is not relaying yet (404): skipping it would give the one before
            // it two readers.
            let wait = if index == 0 && route.ahead > 1 {
                Wait::Any
            } else if index < route.ahead {
                Wait::NotYet
            } else {
                Wait::No
            };
            let response = match self.connect(source, &url_path, offset, wait) {
                Ok(response) => response,
                Err(FetchError::Stopping) => return Err(FetchError::Stopping),
                Err(e) => {
                    tracing::info!(name = %record.name, %source, offset, "HTTP source failed: {}", crate::error::chain(&e));
                    failures.push(crate::error::chain(&e));
                    lock(&shared.dropped)[index] = true;
                    index += 1;
                    continue;
                }
            };
            let started = Instant::now();
            *lock(&shared.last_byte) = started;
            *lock(&shared.move_to) = None;
            shared.leave.store(false, Ordering::Relaxed);
            *lock(&shared.current) = Some((index, started));
            let mut guard = RateGuard::new(
                source,
                self.floor,
                self.client.read_timeout,
                self.deadline,
                offset,
                record.len,
            );
            let copied = self.copy(response, index, file, path, staging, shared, &mut guard);
            *lock(&shared.current) = None;
            let now = shared.offset.load(Ordering::Relaxed);
            let mut report = SourceUse {
                addr: source.to_string(),
                from: offset,
                bytes: now - offset,
                millis: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                bad_pieces: 0,
                left: None,
            };
            let next = match copied {
                Ok(Copied::Whole) => None,
                Ok(Copied::Moved { to, why }) => {
                    report.left = Some(why);
                    Some(to)
                }
                Err(FetchError::Stopping) => return Err(FetchError::Stopping),
                Err(FetchError::BadPiece { piece, .. }) => {
                    let why = format!(
                        "sent a bad piece (piece {piece}, which does not match the torrent)"
                    );
                    tracing::warn!(name = %record.name, seq = record.seq, %source, piece, "source sent a bad piece; dropped");
                    report.bad_pieces = 1;
                    report.left = Some(why.clone());
                    failures.push(format!("{source} {why}"));
                    None
                }
                Err(e) => {
                    let why = crate::error::chain(&e);
                    tracing::info!(name = %record.name, %source, offset = now, "HTTP source stopped: {why}");
                    report.left = Some(why.clone());
                    failures.push(why);
                    None
                }
            };
            tracing::info!(name = %record.name, seq = record.seq, %source, from = offset, bytes = report.bytes, "received over HTTP");
            let whole = report.left.is_none();
            used.push(report);
            if whole {
                break;
            }
            lock(&shared.dropped)[index] = true;
            index = next.unwrap_or(index + 1);
        }
        Ok(())
    }

    /// GETs the payload from `offset` on; a parent (`wait`) is asked again for a moment.
    fn connect(
        &self,
        source: SocketAddr,
        url_path: &str,
        offset: u64,
        wait: Wait,
    ) -> Result<Response, FetchError> {
        let record = self.record;
        let wait_until = Instant::now() + PARENT_WAIT.min(self.deadline.left());
        loop {
            match self.client.get(source, url_path, offset) {
                Ok(response) if offset + response.len != record.len => {
                    return Err(GetError::Length {
                        addr: source,
                        path: url_path.to_string(),
                        got: offset + response.len,
                        want: record.len,
                    }
                    .into())
                }
                Ok(response) => return Ok(response),
                Err(e) if wait.for_error(&e) && Instant::now() < wait_until => {
                    tracing::trace!(%source, "waiting for a source to start relaying: {e}");
                    self.sleep(Duration::from_millis(50))?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads pieces from `response`, keeping each one that checks (appended to the download
    /// dir's file, unbuffered so the own relay sees it at once, and to the verified copy).
    #[allow(clippy::too_many_arguments)]
    fn copy(
        &self,
        mut response: Response,
        source_at: usize,
        file: &mut std::fs::File,
        path: &Path,
        staging: &mut Staging,
        shared: &Shared,
        guard: &mut RateGuard,
    ) -> Result<Copied, FetchError> {
        let len = self.record.len;
        let mut offset = shared.offset.load(Ordering::Relaxed);
        let mut piece = Vec::with_capacity(self.pieces.length.min(len) as usize);
        let mut buffer = vec![0u8; 64 * 1024];
        while offset < len {
            let index = offset / self.pieces.length;
            let want = self.pieces.len_of(index, len) as usize;
            while piece.len() < want {
                if let Some((to, why)) = shared.take_move(source_at) {
                    return Ok(Copied::Moved { to, why });
                }
                let room = buffer.len().min(want - piece.len());
                // The watcher raises `leave` for a move or the agent's stop; unwatched, the stop
                // itself wakes the read.
                let wake = if shared.watched {
                    &shared.leave
                } else {
                    self.stop
                };
                let read = guard.read(
                    &mut response.body,
                    offset + piece.len() as u64,
                    &mut buffer[..room],
                    wake,
                );
                let n = match read {
                    Ok(n) => n,
                    Err(super::pace::PaceError::Stopping) => {
                        if let Some((to, why)) = shared.take_move(source_at) {
                            return Ok(Copied::Moved { to, why });
                        }
                        if self.stop.load(Ordering::Relaxed) {
                            return Err(FetchError::Stopping);
                        }
                        // Raised for a source already left: read on.
                        shared.leave.store(false, Ordering::Relaxed);
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                if n == 0 {
                    return Err(FetchError::Read {
                        path: path.to_path_buf(),
                        source: std::io::ErrorKind::UnexpectedEof.into(),
                    });
                }
                *lock(&shared.last_byte) = Instant::now();
                piece.extend_from_slice(&buffer[..n]);
            }
            if !self.pieces.check(index, &piece) {
                return Err(FetchError::BadPiece {
                    piece: index,
                    path: path.to_path_buf(),
                });
            }
            file.write_all(&piece).map_err(|source| FetchError::Write {
                path: path.to_path_buf(),
                source,
            })?;
            staging.write(&piece)?;
            offset += piece.len() as u64;
            shared.offset.store(offset, Ordering::Relaxed);
            piece.clear();
        }
        Ok(Copied::Whole)
    }

    fn sleep(&self, duration: Duration) -> Result<(), FetchError> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(FetchError::Stopping);
        }
        std::thread::sleep(duration);
        Ok(())
    }
}

/// Which failures to connect are waited out (for [`PARENT_WAIT`]) rather than moved past.
#[derive(Clone, Copy)]
enum Wait {
    No,
    /// Any: the chain parent, which may hear of the update later than this node.
    Any,
    /// A 404: a member that is not relaying the payload yet.
    NotYet,
}

impl Wait {
    fn for_error(self, e: &GetError) -> bool {
        match self {
            Wait::No => false,
            Wait::Any => true,
            Wait::NotYet => matches!(e, GetError::Status { status: 404, .. }),
        }
    }
}

/// How one source's stream ended without an error.
enum Copied {
    Whole,
    /// The watcher found a better source: the route index to go on from, and why.
    Moved {
        to: usize,
        why: String,
    },
}

/// Enough of a lead to be worth moving for: a few pieces, and never under 512 KiB (what socket
/// buffers hold in flight on a healthy link).
fn gap(piece_length: u64) -> u64 {
    (4 * piece_length).max(512 << 10)
}

/// Whether a watcher could ever move the stream: only to a source ahead of the first in the
/// route, and only for a lead of [`gap`], which a payload shorter than that never has.
fn worth_watching(route: &Route, piece_length: u64, len: u64) -> bool {
    route.ahead > 1 && len >= gap(piece_length)
}

/// Watches the source being streamed from against the next one ahead of it in the chain, and
/// asks the stream to move on when that one would serve better (see the module's header).
struct Watch<'a> {
    client: Client,
    path: String,
    route: &'a Route,
    shared: &'a Shared,
    pieces: Pieces<'a>,
    /// The signed length.
    len: u64,
    stop: &'a AtomicBool,
}

/// One look at the source ahead: when, how much it held and how much this node held.
#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    ahead: usize,
    ahead_have: u64,
    mine: u64,
}

impl Watch<'_> {
    fn gap(&self) -> u64 {
        gap(self.pieces.length)
    }

    fn run(&self) {
        let mut samples: Vec<Sample> = Vec::new();
        // Sources ahead that did not answer a probe: the next look tries the one after.
        let mut quiet: Vec<usize> = Vec::new();
        let mut last_trial: Option<Instant> = None;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                self.shared.leave.store(true, Ordering::Relaxed);
                return;
            }
            if self.shared.wait_done(PROBE_EVERY) {
                return;
            }
            let Some((current, since)) = *lock(&self.shared.current) else {
                samples.clear();
                continue;
            };
            let dropped = lock(&self.shared.dropped).clone();
            let next = (current + 1..self.route.ahead).find(|i| !dropped[*i]);
            let Some(ahead) =
                (current + 1..self.route.ahead).find(|i| !dropped[*i] && !quiet.contains(i))
            else {
                quiet.clear();
                continue;
            };
            let ahead_addr = self.route.sources[ahead];
            let ahead_have = match self.client.have(ahead_addr, &self.path, PROBE_LIMIT) {
                Ok(have) => have,
                Err(e) => {
                    tracing::debug!(source = %ahead_addr, "probe unanswered: {e}");
                    quiet.push(ahead);
                    continue;
                }
            };
            let source = self.route.sources[current];
            let mine = self.shared.offset.load(Ordering::Relaxed);
            let now = Instant::now();
            samples.retain(|s| s.ahead == ahead && now.duration_since(s.at) <= COMPARE_OVER * 2);
            samples.push(Sample {
                at: now,
                ahead,
                ahead_have,
                mine,
            });
            let lead = ahead_have.saturating_sub(mine);
            if lead < self.gap() {
                continue;
            }
            let silent = lock(&self.shared.last_byte).elapsed();
            // The source is asked only once it went silent: one whose uplink is full (a slow
            // node) may take longer to answer than the watcher should wait between looks.
            let hung = since.elapsed() >= HUNG_AFTER
                && hung(silent, |limit| {
                    self.client.have(source, &self.path, limit).is_ok()
                });
            let why = if hung {
                Some(format!(
                    "hung: nothing for {:.1} s and no answer to a probe, while {ahead_addr} held {} KiB more",
                    silent.as_secs_f64(),
                    lead >> 10
                ))
            } else if silent < PROBE_EVERY && Some(ahead) == next {
                // Still sending (a silent one is judged by the rule above instead), and judged
                // against the member right before it only: when that one does not answer, the
                // source's own trouble is upstream, and it is the source's to mend, not this
                // node's to route around (two nodes moving for one failure stampede a third).
                match self.faster(&samples, since, ahead_addr, &mut last_trial) {
                    Some(Ok((theirs, ours))) => Some(format!(
                        "slow: it sent {} KiB/s while {ahead_addr} sent a trial read at {} KiB/s",
                        ours >> 10,
                        theirs >> 10
                    )),
                    Some(Err(piece)) => {
                        self.liar(ahead, piece);
                        samples.clear();
                        None
                    }
                    None => None,
                }
            } else {
                None
            };
            if let Some(why) = why {
                tracing::info!(%source, to = %ahead_addr, "leaving a source: {why}");
                *lock(&self.shared.move_to) = Some((current, ahead, why));
                self.shared.leave.store(true, Ordering::Relaxed);
                samples.clear();
                quiet.clear();
            }
        }
    }

    /// Drops the source at `index`, which sent piece `piece` wrong in a trial read, and names it.
    fn liar(&self, index: usize, piece: u64) {
        let addr = self.route.sources[index];
        tracing::warn!(source = %addr, piece, "source sent a bad piece in a trial read; dropped");
        lock(&self.shared.dropped)[index] = true;
        lock(&self.shared.liars).push(SourceUse {
            addr: addr.to_string(),
            from: piece * self.pieces.length,
            bytes: 0,
            millis: 0,
            bad_pieces: 1,
            left: Some(format!(
                "sent a bad piece in a trial read (piece {piece}, which does not match the torrent)"
            )),
        });
    }

    /// When the source ahead would serve this node at least twice as fast as its source does
    /// over the comparison span: its rate and this node's (bytes/s); or the piece it sent that
    /// did not match, when it lied in the trial. It is tried with a short
    /// read (which measures this node's own link too: a node that is slow itself stays put),
    /// but only when it may be worth it, at most every [`TRIAL_EVERY`]: when the one ahead
    /// holds the whole payload (it gains nothing to compare), or gained at least twice as fast.
    fn faster(
        &self,
        samples: &[Sample],
        since: Instant,
        ahead: SocketAddr,
        last_trial: &mut Option<Instant>,
    ) -> Option<Result<(u64, u64), u64>> {
        let last = samples.last()?;
        let first = samples
            .iter()
            .find(|s| last.at.duration_since(s.at) >= COMPARE_OVER && s.at >= since)?;
        let secs = last.at.duration_since(first.at).as_secs_f64();
        let ours = last.mine.saturating_sub(first.mine);
        let gained = last.ahead_have.saturating_sub(first.ahead_have);
        let whole = last.ahead_have >= self.len;
        let worth = whole || (gained >= self.gap() && gained >= 2 * ours);
        let every = if whole {
            TRIAL_WHOLE_EVERY
        } else {
            TRIAL_EVERY
        };
        if !worth || last_trial.is_some_and(|at| at.elapsed() < every) {
            return None;
        }
        *last_trial = Some(Instant::now());
        let ours = (ours as f64 / secs) as u64;
        match self.trial(ahead, last.ahead_have)? {
            Trial::Rate(theirs) => (theirs >= 2 * ours).then_some(Ok((theirs, ours))),
            Trial::BadPiece(piece) => Some(Err(piece)),
        }
    }

    /// Reads the last whole pieces that `source` holds (it holds `have`), up to [`TRIAL`]
    /// bytes, within the probe limit, checking each: the rate they came at, or the first piece
    /// that did not match (a member that lies to be chosen is caught here).
    fn trial(&self, source: SocketAddr, have: u64) -> Option<Trial> {
        use std::io::Read;
        let length = self.pieces.length;
        let count = self.len.div_ceil(length);
        let held = if have >= self.len {
            count
        } else {
            have / length
        };
        let first = held.saturating_sub((TRIAL / length).max(1));
        if first >= held {
            return None;
        }
        let start = first * length;
        let started = Instant::now();
        let mut response = self.client.get(source, &self.path, start).ok()?;
        response
            .body
            .get_ref()
            .get_ref()
            .set_read_timeout(Some(PROBE_LIMIT))
            .ok()?;
        let mut got = 0u64;
        let mut piece = Vec::with_capacity(usize::try_from(length).ok()?);
        for index in first..held {
            let want = self.pieces.len_of(index, self.len);
            piece.clear();
            let read = (&mut response.body).take(want).read_to_end(&mut piece);
            if read.is_err() || piece.len() as u64 != want || started.elapsed() > PROBE_LIMIT {
                break;
            }
            if !self.pieces.check(index, &piece) {
                return Some(Trial::BadPiece(index));
            }
            got += want;
        }
        let secs = started.elapsed().as_secs_f64().max(0.001);
        Some(Trial::Rate((got as f64 / secs) as u64))
    }
}

/// What a trial read of a source found.
enum Trial {
    /// Bytes per second, of pieces that checked.
    Rate(u64),
    /// The first piece that did not match the torrent.
    BadPiece(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 7000))
    }

    #[test]
    fn the_chain_starts_at_the_origin_and_visits_every_member_once() {
        let members: Vec<SocketAddr> = (1..=5).map(addr).collect();
        let route_of = |own: u8, origin: u8| {
            let others: Vec<SocketAddr> = members
                .iter()
                .copied()
                .filter(|a| *a != addr(own))
                .collect();
            Route::chain(addr(origin), Some(addr(own)), &others)
        };
        // Origin 3: 3 → 4 → 5 → 1 → 2.
        assert_eq!(route_of(4, 3).parent(), Some(addr(3)));
        assert_eq!(route_of(5, 3).parent(), Some(addr(4)));
        assert_eq!(route_of(1, 3).parent(), Some(addr(5)));
        assert_eq!(route_of(2, 3).parent(), Some(addr(1)));
        // Each node is the parent of exactly one other: every uplink carries the payload once.
        let mut parents: Vec<_> = [1, 2, 4, 5]
            .iter()
            .map(|&n| route_of(n, 3).parent())
            .collect();
        parents.sort();
        parents.dedup();
        assert_eq!(parents.len(), 4);
        // Node 1's sources: those before it back to the origin, nearest first, then the rest.
        let route = route_of(1, 3);
        assert_eq!(route.sources, [addr(5), addr(4), addr(3), addr(2)]);
        assert_eq!(route.ahead, 3);
    }

    #[test]
    fn a_node_outside_the_known_membership_fetches_from_the_origin_first() {
        let route = Route::chain(addr(1), None, &[addr(2)]);
        assert_eq!((route.parent(), route.ahead), (Some(addr(1)), 1));
        assert_eq!(
            Route::chain(addr(2), Some(addr(9)), &[]).parent(),
            Some(addr(2))
        );
    }

    #[test]
    fn stale_relay_marks_are_cleared_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        for name in ["a.relay", "a.torrent", "relay"] {
            std::fs::write(root.path().join(name), b"1").unwrap();
        }
        clear_stale_markers(root.path());
        let mut left: Vec<String> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["a.torrent", "relay"]);
    }

    mod over_seed_servers {
        use super::super::*;
        use crate::agent::transfer::seed_http::{SeedHandle, SeedServer};
        use std::net::TcpListener;
        use std::sync::Arc;

        const HASH: &str = "0123456789abcdef0123456789abcdef01234567";
        const PIECE: u64 = 16 << 10;

        fn record(content: &[u8]) -> Record {
            Record::pending("big.tar", HASH, content)
        }

        fn server(root: &Path) -> SeedHandle {
            SeedServer::start_for("127.0.0.1:0".parse().unwrap(), root, Arc::new(|_| true)).unwrap()
        }

        fn client() -> Client {
            Client {
                bind: None,
                connect_timeout: Duration::from_secs(2),
                read_timeout: Duration::from_secs(5),
            }
        }

        fn hashes(content: &[u8]) -> Vec<[u8; 20]> {
            content
                .chunks(PIECE as usize)
                .map(|piece| Sha1::digest(piece).into())
                .collect()
        }

        /// Writes `content` into `root` as a relayed download, slowly, then marks it complete
        /// (or, with `abandon_at`, gives up there).
        fn trickle(root: &Path, content: &[u8], abandon_at: Option<usize>, pause: Duration) {
            std::fs::create_dir_all(root.join(HASH)).unwrap();
            let mut file = std::fs::File::create(root.join(HASH).join("big.tar")).unwrap();
            std::fs::write(
                root.join(format!("{HASH}.relay")),
                format!("{}", content.len()),
            )
            .unwrap();
            for (n, chunk) in content.chunks(64 * 1024).enumerate() {
                if abandon_at == Some(n) {
                    std::fs::remove_file(root.join(format!("{HASH}.relay"))).unwrap();
                    return;
                }
                file.write_all(chunk).unwrap();
                std::thread::sleep(pause);
            }
            std::fs::write(root.join(format!("{HASH}.torrent")), b"d").unwrap();
            std::fs::remove_file(root.join(format!("{HASH}.relay"))).unwrap();
        }

        /// `root` holds `content` complete, as the node that has the payload.
        fn complete(root: &Path, content: &[u8]) {
            std::fs::create_dir_all(root.join(HASH)).unwrap();
            std::fs::write(root.join(HASH).join("big.tar"), content).unwrap();
            std::fs::write(root.join(format!("{HASH}.torrent")), b"d").unwrap();
        }

        /// Fetches `content` (its record and pieces) into `root` along `route`.
        fn relay_along(
            root: &Path,
            content: &[u8],
            route: &Route,
            stop: &AtomicBool,
        ) -> Result<Relayed, FetchError> {
            let record = record(content);
            let hashes = hashes(content);
            let pace = crate::agent::transfer::pace::Pace {
                floor: MinRate::per_second(1, Duration::from_secs(60)),
                slack: Duration::from_secs(600),
            };
            Relay {
                client: client(),
                floor: pace.floor,
                deadline: pace.deadline(record.len),
                root,
                record: &record,
                name: "big.tar",
                pieces: Pieces {
                    length: PIECE,
                    hashes: &hashes,
                },
                stop,
                verified_root: &verified::root_of(root),
            }
            .fetch(route, b"metainfo", true)
        }

        /// Like `relay_along`, which must succeed; checks the marks and that the seeded file
        /// is the verified copy's bytes, and returns them with the sources' use.
        fn fetch(root: &Path, content: &[u8], route: &Route) -> (Vec<u8>, Vec<SourceUse>) {
            let relayed = relay_along(root, content, route, &AtomicBool::new(false))
                .unwrap_or_else(|e| panic!("{}", crate::error::chain(&e)));
            assert_eq!(
                std::fs::read(root.join(format!("{HASH}.torrent"))).unwrap(),
                b"metainfo"
            );
            assert!(!root.join(format!("{HASH}.relay")).exists());
            let seeded = std::fs::read(root.join(HASH).join("big.tar")).unwrap();
            let verified = std::fs::read(relayed.payload.path()).unwrap();
            assert!(
                seeded == verified,
                "the seeded file is the verified copy's bytes"
            );
            (verified, relayed.sources)
        }

        fn random(len: usize) -> Vec<u8> {
            use rand::RngCore;
            let mut content = vec![0u8; len];
            rand::thread_rng().fill_bytes(&mut content);
            content
        }

        fn route(sources: &[SocketAddr]) -> Route {
            Route {
                sources: sources.to_vec(),
                ahead: sources.len(),
            }
        }

        /// A → B → C while A is still receiving: C gets every byte from B, relayed as it
        /// arrives and is checked.
        #[test]
        fn a_chain_relays_checked_pieces_as_they_arrive() {
            let content = random(1 << 20);
            let roots: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
            let a = server(roots[0].path());
            let b = server(roots[1].path());
            let writer = {
                let (root, content) = (roots[0].path().to_path_buf(), content.clone());
                std::thread::spawn(move || {
                    trickle(&root, &content, None, Duration::from_millis(10))
                })
            };
            while !roots[0].path().join(format!("{HASH}.relay")).exists() {
                std::thread::sleep(Duration::from_millis(5));
            }
            let c = {
                let (root, content) = (roots[2].path().to_path_buf(), content.clone());
                let route = route(&[b.addr(), a.addr()]);
                std::thread::spawn(move || fetch(&root, &content, &route))
            };
            let (got, _) = fetch(roots[1].path(), &content, &route(&[a.addr()]));
            assert_eq!(got, content);
            let (got, used) = c.join().unwrap();
            assert_eq!(got, content);
            assert_eq!(used.len(), 1, "{used:?}");
            assert_eq!(used[0].addr, b.addr().to_string());
            assert_eq!(used[0].bytes, content.len() as u64);
            writer.join().unwrap();
        }

        /// A server that counts the requests it gets and answers each with `body` (200), after
        /// `pause`.
        fn counting(
            body: Vec<u8>,
            pause: Duration,
        ) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
            use std::io::Read;
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let counted = count.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { return };
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                        head.push(byte[0]);
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.write_all(
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                            .as_bytes(),
                    );
                    std::thread::sleep(pause);
                    let _ = stream.write_all(&body);
                }
            });
            (addr, count)
        }

        /// A payload of one piece is one GET from its source and nothing else, even in a chain
        /// with members ahead: no watcher probes them (it could never move the stream, and its
        /// wait between looks once held every small fetch back by a probe interval). The source
        /// here takes longer than a probe interval to send, so a watcher would have asked the
        /// member ahead.
        #[test]
        fn a_one_piece_payload_is_one_get_and_no_probe() {
            let content = random(2048);
            let root = tempfile::tempdir().unwrap();
            let (source, asked) = counting(content.clone(), PROBE_EVERY * 2);
            let (ahead, probed) = counting(Vec::new(), Duration::ZERO);
            let route = Route {
                sources: vec![source, ahead],
                ahead: 2,
            };
            let (got, used) = fetch(root.path(), &content, &route);
            assert_eq!(got, content);
            assert_eq!(used.len(), 1, "{used:?}");
            assert_eq!(asked.load(Ordering::SeqCst), 1, "one GET from the source");
            assert_eq!(
                probed.load(Ordering::SeqCst),
                0,
                "no probe of the member ahead"
            );
        }

        /// A parent that gives up half-way is replaced by the next source, from the piece
        /// reached. That source's copy is wrong in its first 256 KiB (the parent gives up
        /// after 512 KiB), so a fetch that started over from byte 0 would find it lying.
        #[test]
        fn an_abandoned_relay_is_resumed_from_the_next_source() {
            let content = random(1 << 20);
            let roots: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
            let mut origin_copy = content.clone();
            origin_copy[..256 << 10].fill(0);
            complete(roots[0].path(), &origin_copy);
            let origin = server(roots[0].path());
            let parent = server(roots[1].path());
            let writer = {
                let (root, content) = (roots[1].path().to_path_buf(), content.clone());
                std::thread::spawn(move || {
                    trickle(&root, &content, Some(8), Duration::from_millis(10))
                })
            };
            let (got, used) = fetch(
                roots[2].path(),
                &content,
                &route(&[parent.addr(), origin.addr()]),
            );
            writer.join().unwrap();
            assert_eq!(got, content);
            assert_eq!(used.len(), 2, "{used:?}");
            assert_eq!(used[1].addr, origin.addr().to_string());
            assert!(
                used[1].from >= 256 << 10 && used[1].from % PIECE == 0,
                "{used:?}"
            );
            assert_eq!(used[1].bad_pieces, 0);
        }

        /// A source that sends wrong bytes is caught at the first bad piece, named in the
        /// record with what it sent, and the next source resumes at that piece.
        #[test]
        fn a_lying_source_is_caught_at_its_first_bad_piece_and_named() {
            let content = random(1 << 20);
            let roots: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
            let mut lie = content.clone();
            lie[(128 << 10) + 7] ^= 1;
            complete(roots[0].path(), &lie);
            complete(roots[1].path(), &content);
            let liar = server(roots[0].path());
            let honest = server(roots[1].path());
            let (got, used) = fetch(
                roots[2].path(),
                &content,
                &route(&[liar.addr(), honest.addr()]),
            );
            assert_eq!(got, content);
            assert_eq!(used[0].addr, liar.addr().to_string());
            assert_eq!(used[0].bad_pieces, 1);
            assert!(
                used[0]
                    .left
                    .as_deref()
                    .unwrap_or("")
                    .contains("bad piece (piece 8"),
                "{used:?}"
            );
            assert_eq!(
                used[0].bytes,
                128 << 10,
                "the pieces before the lie are kept"
            );
            assert_eq!(used[1].from, 128 << 10);
        }

        /// A parent that has nothing more to give while the source ahead of it would send
        /// twice as fast is left for it (here: 320 KiB/s against loopback speed), though it
        /// is well above the floor.
        #[test]
        fn a_parent_slower_than_the_source_ahead_is_left_for_it() {
            let content = random(4 << 20);
            let roots: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
            complete(roots[0].path(), &content);
            let origin = server(roots[0].path());
            let parent = server(roots[1].path());
            let writer = {
                let (root, content) = (roots[1].path().to_path_buf(), content.clone());
                std::thread::spawn(move || {
                    trickle(&root, &content, None, Duration::from_millis(200))
                })
            };
            let (got, used) = fetch(
                roots[2].path(),
                &content,
                &route(&[parent.addr(), origin.addr()]),
            );
            assert_eq!(got, content);
            assert!(
                used[0].left.as_deref().unwrap_or("").starts_with("slow:"),
                "{used:?}"
            );
            assert_eq!(used[1].addr, origin.addr().to_string());
            assert!(used[1].bytes > 0);
            writer.join().unwrap();
        }

        /// A member ahead that lies to be chosen (it claims the whole payload and would send it
        /// fast) is caught by the trial read's piece check, named and never streamed from; the
        /// slow parent is left for the honest one before it.
        #[test]
        fn a_liar_ahead_is_caught_by_the_trial_and_never_chosen() {
            let content = random(4 << 20);
            let roots: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
            complete(roots[0].path(), &content);
            let mut lie = content.clone();
            lie.iter_mut().for_each(|b| *b ^= 0x5a);
            complete(roots[1].path(), &lie);
            let origin = server(roots[0].path());
            let liar = server(roots[1].path());
            let parent = server(roots[2].path());
            let writer = {
                let (root, content) = (roots[2].path().to_path_buf(), content.clone());
                std::thread::spawn(move || {
                    trickle(&root, &content, None, Duration::from_millis(200))
                })
            };
            let (got, used) = fetch(
                roots[3].path(),
                &content,
                &route(&[parent.addr(), liar.addr(), origin.addr()]),
            );
            assert_eq!(got, content);
            let named: Vec<_> = used
                .iter()
                .filter(|s| s.addr == liar.addr().to_string())
                .collect();
            assert_eq!(named.len(), 1, "{used:?}");
            assert_eq!((named[0].bad_pieces, named[0].bytes), (1, 0), "{used:?}");
            assert!(named[0]
                .left
                .as_deref()
                .unwrap_or("")
                .contains("trial read"));
            assert!(used
                .iter()
                .any(|s| s.addr == origin.addr().to_string() && s.bytes > 0));
            writer.join().unwrap();
        }

        /// A parent that stops sending and answering (SIGSTOP: the kernel still holds its
        /// connections) is left for the source ahead within seconds, long before the read
        /// timeout.
        #[test]
        fn a_hung_parent_is_left_for_the_source_ahead() {
            let content = random(2 << 20);
            let origin_root = tempfile::tempdir().unwrap();
            complete(origin_root.path(), &content);
            let origin = server(origin_root.path());
            // Sends the head and 256 KiB, then nothing; accepts probes and never answers.
            let hung = TcpListener::bind("127.0.0.1:0").unwrap();
            let hung_addr = hung.local_addr().unwrap();
            let first = content[..256 << 10].to_vec();
            let len = content.len();
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for (n, stream) in hung.incoming().enumerate() {
                    let Ok(mut stream) = stream else { return };
                    if n == 0 {
                        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
                        let _ = stream.write_all(head.as_bytes());
                        let _ = stream.write_all(&first);
                    }
                    held.push(stream);
                }
            });
            let root = tempfile::tempdir().unwrap();
            let started = Instant::now();
            let (got, used) = fetch(root.path(), &content, &route(&[hung_addr, origin.addr()]));
            assert_eq!(got, content);
            assert!(
                used[0].left.as_deref().unwrap_or("").starts_with("hung:"),
                "{used:?}"
            );
            assert_eq!(used[1].from, 256 << 10);
            // The read timeout (5 s) was not what ended it.
            assert!(started.elapsed() < Duration::from_secs(5));
        }

        /// An agent stopped mid-fetch keeps the verified copy; the next fetch resumes from its
        /// pieces that still check (one is spoilt here: the copy is cut there).
        #[test]
        fn an_interrupted_fetch_resumes_from_its_verified_pieces() {
            let content = random(1 << 20);
            let roots: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
            let slow = server(roots[0].path());
            let writer = {
                let (root, content) = (roots[0].path().to_path_buf(), content.clone());
                std::thread::spawn(move || {
                    trickle(&root, &content, None, Duration::from_millis(100))
                })
            };
            while !roots[0].path().join(format!("{HASH}.relay")).exists() {
                std::thread::sleep(Duration::from_millis(5));
            }
            let stop = AtomicBool::new(false);
            let copy = verified::root_of(roots[2].path())
                .join(format!("{HASH}-1"))
                .join("big.tar");
            let stopped = std::thread::scope(|scope| {
                scope.spawn(|| {
                    while std::fs::metadata(&copy).map_or(0, |m| m.len()) < 320 << 10 {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    stop.store(true, Ordering::Relaxed);
                });
                relay_along(roots[2].path(), &content, &route(&[slow.addr()]), &stop)
            });
            assert!(matches!(stopped, Err(FetchError::Stopping)));
            writer.join().unwrap();
            // Spoil piece 3 of the kept copy: the resumed fetch keeps pieces 0..3 only.
            let mut kept = std::fs::read(&copy).unwrap();
            assert!(kept.len() >= 320 << 10);
            kept[3 * PIECE as usize] ^= 1;
            std::fs::write(&copy, &kept).unwrap();
            complete(roots[1].path(), &content);
            let origin = server(roots[1].path());
            let (got, used) = fetch(roots[2].path(), &content, &route(&[origin.addr()]));
            assert_eq!(got, content);
            assert_eq!(used[0].from, 3 * PIECE, "{used:?}");
        }

        /// Transmission's user owns the download dir and can plant links where the root agent
        /// is about to write: a symlink or hard link at the payload's name must not be written
        /// through, and a symlinked `<info-hash>` directory must not be entered.
        #[test]
        fn links_planted_where_the_relay_writes_are_not_followed() {
            let content = random(64 << 10);
            let origin_root = tempfile::tempdir().unwrap();
            complete(origin_root.path(), &content);
            let origin = server(origin_root.path());
            let outside = tempfile::tempdir().unwrap();
            let victim = outside.path().join("shadow");
            let linked = outside.path().join("linked");
            std::fs::write(&victim, b"root's").unwrap();
            std::fs::write(&linked, b"root's too").unwrap();
            let relay_into = |root: &Path| {
                relay_along(
                    root,
                    &content,
                    &route(&[origin.addr()]),
                    &AtomicBool::new(false),
                )
                .map(|relayed| std::fs::read(relayed.payload.path()).unwrap())
            };

            let root = tempfile::tempdir().unwrap();
            std::fs::create_dir(root.path().join(HASH)).unwrap();
            std::os::unix::fs::symlink(&victim, root.path().join(HASH).join("big.tar")).unwrap();
            assert!(relay_into(root.path()).unwrap() == content);
            assert!(
                std::fs::read(&victim).unwrap() == b"root's",
                "the symlink's target was written through"
            );
            assert!(!root.path().join(HASH).join("big.tar").is_symlink());

            let root = tempfile::tempdir().unwrap();
            std::fs::create_dir(root.path().join(HASH)).unwrap();
            std::fs::hard_link(&linked, root.path().join(HASH).join("big.tar")).unwrap();
            assert!(relay_into(root.path()).unwrap() == content);
            assert!(
                std::fs::read(&linked).unwrap() == b"root's too",
                "the hard link's file was written through"
            );

            let root = tempfile::tempdir().unwrap();
            std::os::unix::fs::symlink(outside.path(), root.path().join(HASH)).unwrap();
            let err = relay_into(root.path()).unwrap_err();
            assert!(matches!(err, FetchError::Write { .. }), "{err}");
            let mut left: Vec<_> = std::fs::read_dir(outside.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            left.sort();
            assert_eq!(
                left,
                ["linked", "shadow"],
                "nothing written through the link"
            );
        }

        /// Bytes whose pieces match the torrent but not the signed SHA-256 are never marked
        /// complete, and leave no verified copy.
        #[test]
        fn a_payload_with_another_sha256_is_not_marked_complete() {
            let roots: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
            complete(roots[0].path(), b"evil");
            let origin = server(roots[0].path());
            let record = record(b"good");
            let hashes = hashes(b"evil");
            let stop = AtomicBool::new(false);
            let relay = Relay {
                client: client(),
                floor: MinRate::per_second(1, Duration::from_secs(60)),
                deadline: crate::agent::transfer::pace::Pace {
                    floor: MinRate::per_second(1, Duration::from_secs(60)),
                    slack: Duration::from_secs(600),
                }
                .deadline(4),
                root: roots[1].path(),
                record: &record,
                name: "big.tar",
                pieces: Pieces {
                    length: PIECE,
                    hashes: &hashes,
                },
                stop: &stop,
                verified_root: &verified::root_of(roots[1].path()),
            };
            let err = relay
                .fetch(&route(&[origin.addr()]), b"m", true)
                .err()
                .unwrap();
            assert!(matches!(err, FetchError::Sha256Mismatch { .. }), "{err}");
            assert!(!roots[1].path().join(format!("{HASH}.torrent")).exists());
            assert!(!roots[1].path().join(format!("{HASH}.relay")).exists());
            let verified_root = verified::root_of(roots[1].path());
            assert_eq!(
                std::fs::read_dir(verified_root).unwrap().count(),
                0,
                "no verified copy is left of bytes that failed the check"
            );
        }
    }
}
