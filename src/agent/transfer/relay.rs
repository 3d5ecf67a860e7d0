//! Downloads a payload over HTTP from the fleet's seed servers, without BitTorrent's 10 s choke
//! cycle. A small payload comes straight from a node that has it. A large one comes down a
//! chain: the members, ordered by seed address and rotated to start at the node that has the
//! payload, each fetch from the one before them while their own seed server relays what
//! arrived to the one after (`?relay`), so every link carries the payload once and a rollout
//! takes about one copy's time whatever the fleet's size. A parent that is not there or
//! stalls is replaced by the node that has it, from the byte reached, and that node by other
//! members when it trickles: every source is held to a rate floor and all of them to the
//! fetch's deadline (`agent::pace`). The SHA-256 is computed as the bytes arrive and must be
//! the signed one before the payload is marked complete.
//!
//! Each block goes both to the download dir (for the own seed server to relay and serve) and
//! to the root-only verified copy ([`super::verified`]), which is hashed and is what the agent
//! applies: the download dir belongs to Transmission's user, who could change the file there
//! afterwards. The file there is created on a directory descriptor opened without following
//! links, with `O_CREAT | O_EXCL | O_NOFOLLOW`, so a link that user plants is never written
//! through.

use super::download_dir::{write_mark, DownloadDir};
use super::fetch::FetchError;
use super::http_get::{Client, GetError};
pub use super::pace::MinRate;
use super::pace::{Deadline, RateGuard};
use super::verified::{self, Staging, Verified};
use crate::agent::runtime::state::Record;
use crate::fsutil;
use nix::fcntl::OFlag;

use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Payloads up to this size come straight from a node that has them: a chain only adds hops.
pub const DIRECT_MAX: u64 = 4 << 20;
/// How long a chain parent may take to start relaying (its agent may hear of the update a
/// little later) before the node that has the payload is asked instead.
const PARENT_WAIT: Duration = Duration::from_secs(3);

/// 256 KiB per 10 s, for a chain parent: a slow parent (an overloaded node, or a member
/// trickling bytes on purpose) would slow every node after it, so it is left sooner than the
/// site's floor would (its window is a third as long) for the other sources.
pub const SLOW_PARENT: MinRate = MinRate {
    bytes: 256 << 10,
    per: Duration::from_secs(10),
};

/// One payload to fetch into `dir/name`, marked under `root` as the seed server expects.
pub struct Relay<'a> {
    pub client: Client,
    /// What a chain parent must deliver.
    pub slow_parent: MinRate,
    /// What every other source must deliver, and when the whole fetch must be over.
    pub floor: MinRate,
    pub deadline: Deadline,
    pub root: &'a Path,
    pub record: &'a Record,
    /// The file's name in the metainfo.
    pub name: &'a str,
    pub stop: &'a AtomicBool,
    /// Where the verified copy is made ([`verified::root_of`] the state dir).
    pub verified_root: &'a Path,
}

/// Who this node fetches from in a chain that starts at `origin`: the member before it, the
/// members ordered by seed address. Every node computes the same chain from the same
/// membership; one that is not in it (yet) fetches from the origin.
pub fn chain_parent(
    origin: SocketAddr,
    own: Option<SocketAddr>,
    others: &[SocketAddr],
) -> SocketAddr {
    let Some(own) = own else {
        return origin;
    };
    let mut ring: Vec<SocketAddr> = others.iter().copied().chain([own, origin]).collect();
    ring.sort_by_key(|a| (a.ip(), a.port()));
    ring.dedup();
    let Some(start) = ring.iter().position(|a| *a == origin) else {
        return origin;
    };
    ring.rotate_left(start);
    match ring.iter().position(|a| *a == own) {
        Some(at) if at > 0 => ring[at - 1],
        _ => origin,
    }
}

/// Creates `dir/name` afresh for writing, where `dir` lies in the download dir that
/// Transmission's user owns: `dir` is opened without following a link, a file already there
/// is unlinked, and the new one is created `O_EXCL | O_NOFOLLOW` on that descriptor, so a link
/// (or a hard link to another file) planted by that user is never written through.
fn create_nofollow(dir: &Path, name: &str) -> Result<std::fs::File, FetchError> {
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

impl Relay<'_> {
    fn dir(&self) -> PathBuf {
        DownloadDir::new(self.root).payload_dir(&self.record.info_hash)
    }

    fn marker(&self) -> PathBuf {
        DownloadDir::new(self.root).relay_mark(&self.record.info_hash)
    }

    fn write_error(path: &Path) -> impl Fn(std::io::Error) -> FetchError + '_ {
        move |source| FetchError::Write {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Fetches the payload from the chain `parent` (waited for a moment: its agent may hear
    /// of the update a little later) and then `sources` in order, each resuming where the last
    /// stopped; checks its length and SHA-256, writes `metainfo` as the completion mark and
    /// returns the verified copy. `relay` lets the own seed server pass the bytes on as they
    /// arrive. Every source is held to its floor and all of them to the fetch's deadline.
    pub fn fetch(
        &self,
        parent: Option<SocketAddr>,
        sources: &[SocketAddr],
        metainfo: &[u8],
        relay: bool,
    ) -> Result<Verified, FetchError> {
        let dir = self.dir();
        let path = dir.join(self.name);
        let mut file = create_nofollow(&dir, self.name)?;
        let expected = verified::expected(self.record, None)?;
        let mut staging = verified::begin(
            self.verified_root,
            &self.record.info_hash,
            self.record.seq,
            self.name,
            expected,
        )?;
        let marker = self.marker();
        if relay {
            if let Err(e) = write_mark(&marker, format!("{}\n", self.record.len).as_bytes()) {
                staging.discard();
                return Err(e);
            }
        }
        let fetched = self.fetch_into(&mut file, &path, &mut staging, parent, sources);
        let result = match fetched {
            Ok(()) => staging.finish().and_then(|copy| {
                match write_mark(
                    &DownloadDir::new(self.root).completion_mark(&self.record.info_hash),
                    metainfo,
                ) {
                    Ok(()) => Ok(copy),
                    Err(e) => {
                        copy.remove();
                        Err(e)
                    }
                }
            }),
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
        parent: Option<SocketAddr>,
        sources: &[SocketAddr],
    ) -> Result<(), FetchError> {
        let record = self.record;
        let url_path = format!(
            "/{}/{}?relay",
            record.info_hash,
            crate::formats::torrent::percent_encode(self.name)
        );
        let mut offset = 0u64;
        // Why each source was left, for the record of a failed fetch.
        let mut failures: Vec<String> = Vec::new();
        let all = parent
            .iter()
            .map(|addr| (*addr, true))
            .chain(sources.iter().map(|addr| (*addr, false)));
        for (source, is_parent) in all {
            if self.deadline.passed() {
                failures.push(format!(
                    "the fetch's deadline of {:?} passed",
                    self.deadline.budget()
                ));
                break;
            }
            let wait_until = Instant::now() + PARENT_WAIT.min(self.deadline.left());
            let response = loop {
                match self.client.get(source, &url_path, offset) {
                    Ok(response) => break Some(response),
                    // Only the chain parent is waited for.
                    Err(e) if is_parent && Instant::now() < wait_until => {
                        tracing::trace!(%source, "waiting for the chain parent: {e}");
                        self.sleep(Duration::from_millis(50))?;
                    }
                    Err(e) => {
                        tracing::info!(name = %record.name, %source, offset, "HTTP source failed: {e}");
                        failures.push(crate::error::chain(&e));
                        break None;
                    }
                }
            };
            let Some(response) = response else {
                continue;
            };
            if offset + response.len != record.len {
                let e = GetError::Length {
                    addr: source,
                    path: url_path.clone(),
                    got: offset + response.len,
                    want: record.len,
                };
                failures.push(e.to_string());
                continue;
            }
            let from = offset;
            let floor = if is_parent {
                self.slow_parent
            } else {
                self.floor
            };
            let mut guard = RateGuard::new(
                source,
                floor,
                self.client.read_timeout,
                self.deadline,
                offset,
                record.len,
            );
            let copied = self.copy(response.body, file, path, staging, &mut offset, &mut guard);
            tracing::info!(name = %record.name, seq = record.seq, %source, bytes = offset - from, "received over HTTP");
            match copied {
                Ok(()) => break,
                Err(FetchError::Stopping) => return Err(FetchError::Stopping),
                Err(e) => {
                    tracing::info!(name = %record.name, %source, offset, "HTTP source stopped: {}", crate::error::chain(&e));
                    failures.push(crate::error::chain(&e));
                }
            }
        }
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
        // The length and SHA-256 are checked on the verified copy (`Staging::finish`).
        Ok(())
    }

    /// Appends the body to the file, unbuffered so the own relay sees each block at once.
    fn copy(
        &self,
        mut body: std::io::Take<std::io::BufReader<std::net::TcpStream>>,
        file: &mut std::fs::File,
        path: &Path,
        staging: &mut Staging,
        offset: &mut u64,
        guard: &mut RateGuard,
    ) -> Result<(), FetchError> {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = guard.read(&mut body, *offset, &mut buffer, self.stop)?;
            if n == 0 {
                return if *offset == self.record.len {
                    Ok(())
                } else {
                    Err(FetchError::Read {
                        path: path.to_path_buf(),
                        source: std::io::ErrorKind::UnexpectedEof.into(),
                    })
                };
            }
            file.write_all(&buffer[..n])
                .map_err(Self::write_error(path))?;
            staging.write(&buffer[..n])?;
            *offset += n as u64;
        }
    }

    fn sleep(&self, duration: Duration) -> Result<(), FetchError> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(FetchError::Stopping);
        }
        std::thread::sleep(duration);
        Ok(())
    }
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
        let parent_of = |own: u8, origin: u8| {
            let others: Vec<SocketAddr> = members
                .iter()
                .copied()
                .filter(|a| *a != addr(own))
                .collect();
            chain_parent(addr(origin), Some(addr(own)), &others)
        };
        // Origin 3: 3 → 4 → 5 → 1 → 2.
        assert_eq!(parent_of(4, 3), addr(3));
        assert_eq!(parent_of(5, 3), addr(4));
        assert_eq!(parent_of(1, 3), addr(5));
        assert_eq!(parent_of(2, 3), addr(1));
        // Each node is the parent of exactly one other: every uplink carries the payload once.
        let mut parents: Vec<SocketAddr> = [1, 2, 4, 5].iter().map(|&n| parent_of(n, 3)).collect();
        parents.sort();
        parents.dedup();
        assert_eq!(parents.len(), 4);
    }

    mod over_seed_servers {
        use super::super::*;
        use crate::agent::transfer::seed_http::{SeedHandle, SeedServer};
        use std::sync::atomic::AtomicUsize;
        use std::sync::Arc;

        const HASH: &str = "0123456789abcdef0123456789abcdef01234567";

        fn record(content: &[u8]) -> Record {
            Record::pending("big.tar", HASH, content)
        }

        /// A seed server on loopback over `root`, counting the membership checks it makes:
        /// two per request, at accept and again before serving (see `requests`).
        fn server(root: &Path) -> (SeedHandle, Arc<AtomicUsize>) {
            let count = Arc::new(AtomicUsize::new(0));
            let counter = count.clone();
            let allow = Arc::new(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
                true
            });
            let handle =
                SeedServer::start_for("127.0.0.1:0".parse().unwrap(), root, allow).unwrap();
            (handle, count)
        }

        fn requests(checks: &AtomicUsize) -> usize {
            checks.load(Ordering::SeqCst) / 2
        }

        fn client() -> Client {
            Client {
                bind: None,
                connect_timeout: Duration::from_secs(2),
                read_timeout: Duration::from_secs(5),
            }
        }

        /// Writes `content` into `root` as a relayed download, slowly, then marks it complete
        /// (or, with `abandon_at`, gives up there).
        fn trickle(root: &Path, content: &[u8], abandon_at: Option<usize>) {
            trickle_every(root, content, abandon_at, Duration::from_millis(10))
        }

        fn trickle_every(root: &Path, content: &[u8], abandon_at: Option<usize>, pause: Duration) {
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

        /// A floor far below loopback speeds, and a deadline no test reaches.
        fn generous() -> crate::agent::transfer::pace::Pace {
            crate::agent::transfer::pace::Pace {
                floor: MinRate::per_second(1, Duration::from_secs(60)),
                slack: Duration::from_secs(600),
            }
        }

        fn fetch(
            root: &Path,
            content: &[u8],
            parent: Option<SocketAddr>,
            sources: &[SocketAddr],
        ) -> Vec<u8> {
            let record = record(content);
            let stop = AtomicBool::new(false);
            let relay = Relay {
                client: client(),
                slow_parent: SLOW_PARENT,
                floor: generous().floor,
                deadline: generous().deadline(record.len),
                root,
                record: &record,
                name: "big.tar",
                stop: &stop,
                verified_root: &verified::root_of(root),
            };
            let copy = relay
                .fetch(parent, sources, b"metainfo", true)
                .unwrap_or_else(|e| panic!("{}", crate::error::chain(&e)));
            assert_eq!(
                std::fs::read(root.join(format!("{HASH}.torrent"))).unwrap(),
                b"metainfo"
            );
            assert!(!root.join(format!("{HASH}.relay")).exists());
            let seeded = std::fs::read(root.join(HASH).join("big.tar")).unwrap();
            let verified = std::fs::read(copy.path()).unwrap();
            assert!(
                seeded == verified,
                "the seeded file is the verified copy's bytes"
            );
            verified
        }

        fn random(len: usize) -> Vec<u8> {
            use rand::RngCore;
            let mut content = vec![0u8; len];
            rand::thread_rng().fill_bytes(&mut content);
            content
        }

        /// A → B → C while A is still receiving: C gets every byte from B, relayed as it
        /// arrives, and A serves B alone.
        #[test]
        fn a_chain_relays_bytes_as_they_arrive() {
            let content = random(1 << 20);
            let roots: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
            let (a, a_requests) = server(roots[0].path());
            let (b, b_requests) = server(roots[1].path());
            let writer = {
                let (root, content) = (roots[0].path().to_path_buf(), content.clone());
                std::thread::spawn(move || trickle(&root, &content, None))
            };
            // A is the origin of the chain: it must be relaying before B asks it.
            while !roots[0].path().join(format!("{HASH}.relay")).exists() {
                std::thread::sleep(Duration::from_millis(5));
            }
            let c = {
                let (root, content) = (roots[2].path().to_path_buf(), content.clone());
                let (b, a) = (b.addr(), a.addr());
                std::thread::spawn(move || fetch(&root, &content, Some(b), &[a]))
            };
            assert_eq!(fetch(roots[1].path(), &content, None, &[a.addr()]), content);
            assert_eq!(c.join().unwrap(), content);
            writer.join().unwrap();
            assert_eq!(requests(&a_requests), 1, "only B asked A");
            assert!(requests(&b_requests) >= 1);
        }

        /// A parent that gives up half-way is replaced by the origin, from the byte reached.
        /// The origin's copy is wrong in its first 256 KiB (the parent gives up after 512 KiB),
        /// so a fetch that started over from byte 0 instead of resuming would fail its
        /// SHA-256; and the origin is asked once.
        #[test]
        fn an_abandoned_relay_is_resumed_from_the_origin() {
            let content = random(1 << 20);
            let roots: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
            let mut origin_copy = content.clone();
            origin_copy[..256 << 10].fill(0);
            complete(roots[0].path(), &origin_copy);
            let (origin, origin_requests) = server(roots[0].path());
            let (parent, _) = server(roots[1].path());
            let writer = {
                let (root, content) = (roots[1].path().to_path_buf(), content.clone());
                std::thread::spawn(move || trickle(&root, &content, Some(8)))
            };
            let got = fetch(
                roots[2].path(),
                &content,
                Some(parent.addr()),
                &[origin.addr()],
            );
            writer.join().unwrap();
            assert_eq!(got, content);
            assert_eq!(requests(&origin_requests), 1);
        }

        /// A parent slower than the floor is left for the origin, from the byte reached.
        #[test]
        fn a_slow_parent_is_left_for_the_origin() {
            let content = random(1 << 20);
            let roots: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
            complete(roots[0].path(), &content);
            let (origin, origin_requests) = server(roots[0].path());
            let (parent, _) = server(roots[1].path());
            let writer = {
                let (root, content) = (roots[1].path().to_path_buf(), content.clone());
                // 64 KiB per 200 ms: 320 KiB/s, under the 1 MiB/s floor below.
                std::thread::spawn(move || {
                    trickle_every(&root, &content, None, Duration::from_millis(200))
                })
            };
            let record = record(&content);
            let stop = AtomicBool::new(false);
            let relay = Relay {
                client: client(),
                slow_parent: MinRate {
                    bytes: 100 << 10,
                    per: Duration::from_millis(100),
                },
                floor: generous().floor,
                deadline: generous().deadline(record.len),
                root: roots[2].path(),
                record: &record,
                name: "big.tar",
                stop: &stop,
                verified_root: &verified::root_of(roots[2].path()),
            };
            let copy = relay
                .fetch(Some(parent.addr()), &[origin.addr()], b"m", true)
                .unwrap_or_else(|e| panic!("{}", crate::error::chain(&e)));
            assert_eq!(std::fs::read(copy.path()).unwrap(), content);
            // Without the floor the parent would have delivered it all, and the origin never
            // been asked.
            assert_eq!(requests(&origin_requests), 1);
            writer.join().unwrap();
        }

        /// Transmission's user owns the download dir and can plant links where the root agent
        /// is about to write: a symlink or hard link at the payload's name must not be written
        /// through, and a symlinked `<info-hash>` directory must not be entered.
        #[test]
        fn links_planted_where_the_relay_writes_are_not_followed() {
            let content = random(64 << 10);
            let origin_root = tempfile::tempdir().unwrap();
            complete(origin_root.path(), &content);
            let (origin, _) = server(origin_root.path());
            let outside = tempfile::tempdir().unwrap();
            let victim = outside.path().join("shadow");
            let linked = outside.path().join("linked");
            std::fs::write(&victim, b"root's").unwrap();
            std::fs::write(&linked, b"root's too").unwrap();
            let relay_into = |root: &Path| {
                let record = record(&content);
                let stop = AtomicBool::new(false);
                let relay = Relay {
                    client: client(),
                    slow_parent: SLOW_PARENT,
                    root,
                    record: &record,
                    name: "big.tar",
                    stop: &stop,
                    verified_root: &verified::root_of(root),
                    floor: generous().floor,
                    deadline: generous().deadline(record.len),
                };
                relay
                    .fetch(None, &[origin.addr()], b"m", true)
                    .map(|copy| std::fs::read(copy.path()).unwrap())
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

        /// Bytes that do not hash to the signed SHA-256 are never marked complete.
        #[test]
        fn a_payload_with_another_sha256_is_not_marked_complete() {
            let roots: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
            complete(roots[0].path(), b"evil");
            let (origin, _) = server(roots[0].path());
            let record = record(b"good");
            let stop = AtomicBool::new(false);
            let relay = Relay {
                client: client(),
                slow_parent: SLOW_PARENT,
                floor: generous().floor,
                deadline: generous().deadline(record.len),
                root: roots[1].path(),
                record: &record,
                name: "big.tar",
                stop: &stop,
                verified_root: &verified::root_of(roots[1].path()),
            };
            let err = relay.fetch(None, &[origin.addr()], b"m", true).unwrap_err();
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

    #[test]
    fn a_node_outside_the_known_membership_fetches_from_the_origin() {
        assert_eq!(chain_parent(addr(1), None, &[addr(2)]), addr(1));
        assert_eq!(chain_parent(addr(1), Some(addr(1)), &[addr(2)]), addr(1));
        assert_eq!(chain_parent(addr(2), Some(addr(9)), &[]), addr(2));
    }
}
