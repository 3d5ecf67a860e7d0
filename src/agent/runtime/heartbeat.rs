//! The heartbeat on a node: verifying one (from the spool, or a member's answer to the
//! `p2pu-heartbeat` query) and keeping the newest in the state dir; whether it is fresh
//! (`agent.heartbeat_window_secs`); this node's own snapshot of what it holds; and the
//! snapshot document a heartbeat names, fetched from members' seed servers by its hash and
//! re-served from this node's download dir.
//!
//! A heartbeat is refused unless it is this fleet's, signed by `agent.threshold` trusted keys,
//! not further ahead of the clock than `agent.max_future_secs`, and newer than the one kept:
//! replaying an old one must not make a frozen node look fresh.

use super::state::{Lineage, RecordKind, StateStore, Status};
use super::{Result, RuntimeError};
use crate::agent::transfer::http_get::Client;
use crate::formats::announcement::FleetId;
use crate::formats::heartbeat::{
    Entry, Heartbeat, Snapshot, MAX_SNAPSHOT_BYTES, MAX_WIRE_LEN, SNAPSHOT_SUFFIX,
};
use crate::keys::{TrustedKeys, TrustedKeysDir};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The kept heartbeat's wire text, in the state dir.
const KEPT: &str = "heartbeat";

fn kept_path(state_dir: &Path) -> PathBuf {
    state_dir.join(KEPT)
}

/// The newest verified heartbeat's wire text, as the `p2pu-heartbeat` query answers it.
pub fn kept_wire(state_dir: &Path) -> Option<String> {
    // Root's file, read through the one reader all the same: the handler answering the query
    // reads it too, and a heartbeat is never larger than this.
    let bytes = crate::untrusted::read(&kept_path(state_dir), MAX_WIRE_LEN as u64 + 1).ok()?;
    String::from_utf8(bytes)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// The newest verified heartbeat (it was verified when kept).
pub fn kept(state_dir: &Path) -> Option<Heartbeat> {
    kept_wire(state_dir).and_then(|wire| Heartbeat::decode(wire).ok())
}

/// What a node requires of a heartbeat, from the intake's policy (`agent.*`).
#[derive(Debug, Clone)]
pub struct HeartbeatPolicy<'a> {
    pub trusted_keys_dir: &'a Path,
    pub fleet: FleetId,
    /// `agent.threshold`: heartbeats need as many signers as an update no rule names.
    pub threshold: usize,
    pub max_future_secs: u64,
}

/// What [`take`] did with a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// Newer than the one kept: now kept.
    Kept(Heartbeat),
    /// The one already kept (every member answers the query with it).
    Same,
    /// Refused, with the reason.
    Refused(String),
}

/// Verifies `wire` and keeps it when it is newer than the kept heartbeat.
pub fn take(
    wire: &[u8],
    store: &StateStore,
    policy: &HeartbeatPolicy,
    now_secs: u64,
) -> Result<Taken> {
    let heartbeat = match Heartbeat::decode(wire) {
        Ok(heartbeat) => heartbeat,
        Err(e) => return Ok(Taken::Refused(e.to_string())),
    };
    if let Some(why) = refusal(&heartbeat, policy, now_secs)? {
        return Ok(Taken::Refused(why));
    }
    let kept = kept(store.dir());
    if kept.as_ref() == Some(&heartbeat) {
        return Ok(Taken::Same);
    }
    if let Some(kept) = kept.filter(|k| k.time() >= heartbeat.time()) {
        return Ok(Taken::Refused(format!(
            "heartbeat signed at {} is not newer than the kept one, signed at {}",
            heartbeat.time(),
            kept.time()
        )));
    }
    crate::fsutil::write_atomic(
        &kept_path(store.dir()),
        format!("{}\n", heartbeat.to_wire()).as_bytes(),
        0o644,
    )?;
    Ok(Taken::Kept(heartbeat))
}

/// Why `heartbeat` is refused on this node, if it is: fleet, signers, threshold, clock.
fn refusal(
    heartbeat: &Heartbeat,
    policy: &HeartbeatPolicy,
    now_secs: u64,
) -> Result<Option<String>> {
    if heartbeat.fleet() != policy.fleet {
        return Ok(Some(format!(
            "heartbeat is for fleet {}, this node is in fleet {}",
            heartbeat.fleet(),
            policy.fleet
        )));
    }
    let trusted = TrustedKeys::load(policy.trusted_keys_dir)?;
    let signers = match heartbeat.verify(&trusted) {
        Ok(signers) => signers,
        Err(e) => return Ok(Some(e.to_string())),
    };
    let k = policy.threshold;
    if signers.valid.len() < k {
        return Ok(Some(format!(
            "heartbeat signed by {} of the {k} trusted keys agent.threshold requires",
            signers.valid.len()
        )));
    }
    let ahead = heartbeat.time().saturating_sub(now_secs);
    if ahead > policy.max_future_secs {
        return Ok(Some(format!(
            "heartbeat signed {ahead} s ahead of this node's clock (agent.max_future_secs)"
        )));
    }
    Ok(None)
}

/// Whether this node holds a fresh heartbeat, as `p2pu status`, the status query and
/// `fleet status` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Freshness {
    /// `fresh`, `stale` or `never`.
    pub state: String,
    /// When the newest kept heartbeat was signed (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_at: Option<u64>,
    /// When it went stale: signed_at + window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_since: Option<u64>,
    pub window_secs: u64,
}

impl Freshness {
    pub fn is_fresh(&self) -> bool {
        self.state == "fresh"
    }

    /// What `fleet status` says of a member, without its clock.
    pub fn short(&self) -> String {
        match (self.state.as_str(), self.stale_since) {
            ("stale", Some(since)) => format!(
                "heartbeat stale since {since} (unix seconds; window {} s)",
                self.window_secs
            ),
            ("fresh", _) => "heartbeat fresh".to_string(),
            _ => "heartbeat never received".to_string(),
        }
    }

    /// One line for people and monitoring.
    pub fn line(&self, now_secs: u64) -> String {
        match (self.state.as_str(), self.signed_at, self.stale_since) {
            ("fresh", Some(at), _) => format!(
                "heartbeat: fresh (signed {} s ago, window {} s)",
                now_secs.saturating_sub(at),
                self.window_secs
            ),
            ("stale", Some(at), Some(since)) => format!(
                "heartbeat: STALE since {since} ({} s ago; newest signed at {at}, window {} s): updates may be withheld from this node",
                now_secs.saturating_sub(since),
                self.window_secs
            ),
            _ => format!(
                "heartbeat: NEVER received (agent.heartbeat_window_secs = {}): updates may be withheld from this node",
                self.window_secs
            ),
        }
    }
}

/// This node's heartbeat freshness; `None` when `window_secs` is 0 (not required).
pub fn freshness(state_dir: &Path, window_secs: u64, now_secs: u64) -> Option<Freshness> {
    if window_secs == 0 {
        return None;
    }
    let signed_at = kept(state_dir).map(|h| h.time());
    let stale_since = signed_at.map(|at| at.saturating_add(window_secs));
    let state = match stale_since {
        None => "never",
        Some(since) if now_secs > since => "stale",
        Some(_) => "fresh",
    };
    Some(Freshness {
        state: state.into(),
        signed_at,
        stale_since: stale_since.filter(|_| state == "stale"),
        window_secs,
    })
}

/// The snapshot of what this node holds: the newest accepted signed announcement of every
/// name (held ones are not held updates).
pub fn local_snapshot(store: &StateStore) -> Result<Snapshot> {
    let mut entries = Vec::new();
    for name in store.names()? {
        let newest = store
            .records(&name)?
            .into_iter()
            .filter(|r| r.status != Status::Held && matches!(r.kind, RecordKind::Signed(_)))
            .max_by_key(|r| r.seq);
        if let Some(record) = newest {
            entries.push(Entry::of(&record.name, record.seq, &record.wire));
        }
    }
    Ok(Snapshot::new(entries))
}

/// The entries of `snapshot` this node lacks, or holds an older seq of.
pub fn missing(store: &StateStore, snapshot: &Snapshot) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for entry in snapshot.entries() {
        if store
            .highest(&entry.name, Lineage::Signed)?
            .is_none_or(|held| held < entry.seq)
        {
            out.push(entry.clone());
        }
    }
    Ok(out)
}

/// Root's copy of the snapshot document last verified against the kept heartbeat.
const KEPT_SNAPSHOT: &str = "heartbeat.snapshot";

fn kept_snapshot_path(state_dir: &Path) -> PathBuf {
    state_dir.join(KEPT_SNAPSHOT)
}

/// A snapshot document's file name: `<snap hex>.snapshot`.
pub fn file_name(snap: &[u8; 32]) -> String {
    format!("{}{SNAPSHOT_SUFFIX}", hex::encode(snap))
}

/// Writes `snapshot` into `dir` (the seed server's root) for members to fetch, and removes
/// the snapshot documents it replaces.
pub fn publish(dir: &Path, snapshot: &Snapshot) -> Result<PathBuf> {
    let name = file_name(&snapshot.digest());
    std::fs::create_dir_all(dir).map_err(RuntimeError::io("creating", dir))?;
    let path = dir.join(&name);
    crate::fsutil::write_atomic(&path, &snapshot.to_bencode(), 0o644)?;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for old in entries.filter_map(|e| e.ok()) {
            let file = old.file_name().to_string_lossy().into_owned();
            if file.ends_with(SNAPSHOT_SUFFIX) && file != name {
                let _ = std::fs::remove_file(old.path());
            }
        }
    }
    Ok(path)
}

/// The snapshot document `heartbeat` names: root's copy in `state_dir` when this node verified
/// it already, else the one in `dir` (the seed root) when it is there, else from the first of
/// `seeds` that serves one with the right hash (which is then kept in `dir` and served from
/// there). Whatever is taken is kept in `state_dir` too. `None` when no member has it.
///
/// `dir` is the download dir, which Transmission's user writes: it is read through
/// [`crate::untrusted`], capped at [`MAX_SNAPSHOT_BYTES`] (issue 28: a 1.5 GiB sparse file there
/// raised root's memory to 1.58 GB, and a FIFO there blocked the catch-up thread for good).
pub fn snapshot_of(
    heartbeat: &Heartbeat,
    state_dir: &Path,
    dir: &Path,
    seeds: &[SocketAddr],
    client: &Client,
) -> Result<Option<Snapshot>> {
    let name = file_name(heartbeat.snap());
    let check = |bytes: &[u8]| -> Option<Snapshot> {
        if <[u8; 32]>::from(Sha256::digest(bytes)) != *heartbeat.snap() {
            return None;
        }
        Snapshot::decode(bytes)
            .ok()
            .filter(|s| s.entries().len() as u64 == heartbeat.count())
    };
    let cap = MAX_SNAPSHOT_BYTES as u64;
    let kept = kept_snapshot_path(state_dir);
    if let Some(snapshot) = crate::untrusted::read(&kept, cap)
        .ok()
        .and_then(|b| check(&b))
    {
        return Ok(Some(snapshot));
    }
    let keep =
        |snapshot: &Snapshot| crate::fsutil::write_atomic(&kept, &snapshot.to_bencode(), 0o600);
    match crate::untrusted::read(&dir.join(&name), cap) {
        Ok(bytes) => {
            if let Some(snapshot) = check(&bytes) {
                keep(&snapshot)?;
                return Ok(Some(snapshot));
            }
        }
        Err(e) if e.is_missing() => {}
        Err(e) => tracing::warn!("heartbeat: snapshot document not read: {e}"),
    }
    for seed in seeds {
        let bytes = match client.get(*seed, &format!("/{name}"), 0) {
            Ok(response) if response.len <= MAX_SNAPSHOT_BYTES as u64 => {
                let mut bytes = Vec::new();
                let read = response
                    .body
                    .take(MAX_SNAPSHOT_BYTES as u64)
                    .read_to_end(&mut bytes);
                if let Err(e) = read {
                    tracing::debug!(%seed, "heartbeat: reading {name}: {e}");
                    continue;
                }
                bytes
            }
            Ok(response) => {
                tracing::warn!(%seed, len = response.len, "heartbeat: snapshot document too large, ignored");
                continue;
            }
            Err(e) => {
                tracing::debug!(%seed, "heartbeat: fetching {name}: {e}");
                continue;
            }
        };
        match check(&bytes) {
            Some(snapshot) => {
                keep(&snapshot)?;
                publish(dir, &snapshot)?;
                return Ok(Some(snapshot));
            }
            None => {
                tracing::warn!(%seed, "heartbeat: {name} from this member does not match the heartbeat, ignored")
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    const NOW: u64 = 1_800_000_000;

    struct Node {
        dir: tempfile::TempDir,
        key: SigningKey,
        store: StateStore,
    }

    fn node() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[7; 32]);
        let public = crate::keys::PublicKey {
            key: key.verifying_key(),
            comment: "ops".into(),
        };
        TrustedKeys::add(&dir.path().join("trusted"), &public).unwrap();
        let store = StateStore::open(&dir.path().join("state")).unwrap();
        Node { dir, key, store }
    }

    fn policy(keys_dir: &Path) -> HeartbeatPolicy<'_> {
        HeartbeatPolicy {
            trusted_keys_dir: keys_dir,
            fleet: FleetId([1; 8]),
            threshold: 1,
            max_future_secs: 60,
        }
    }

    fn signed(key: &SigningKey, fleet: u8, time: u64) -> Vec<u8> {
        Heartbeat::sign(FleetId([fleet; 8]), time, &Snapshot::default(), key)
            .unwrap()
            .to_wire()
            .into_bytes()
    }

    fn take_at(node: &Node, wire: &[u8]) -> Taken {
        let keys = node.dir.path().join("trusted");
        take(wire, &node.store, &policy(&keys), NOW).unwrap()
    }

    fn refused(taken: Taken, why: &str) {
        match taken {
            Taken::Refused(reason) => assert!(reason.contains(why), "{reason}"),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_newer_heartbeat_is_kept_and_an_older_one_or_a_replay_is_not() {
        let node = node();
        assert!(matches!(
            take_at(&node, &signed(&node.key, 1, NOW - 10)),
            Taken::Kept(_)
        ));
        assert_eq!(take_at(&node, &signed(&node.key, 1, NOW - 10)), Taken::Same);
        refused(take_at(&node, &signed(&node.key, 1, NOW - 20)), "not newer");
        assert_eq!(kept(node.store.dir()).unwrap().time(), NOW - 10);
        assert!(matches!(
            take_at(&node, &signed(&node.key, 1, NOW)),
            Taken::Kept(_)
        ));
        assert_eq!(kept(node.store.dir()).unwrap().time(), NOW);
    }

    #[test]
    fn a_future_heartbeat_is_refused() {
        let node = node();
        refused(
            take_at(&node, &signed(&node.key, 1, NOW + 61)),
            "ahead of this node's clock",
        );
        assert!(matches!(
            take_at(&node, &signed(&node.key, 1, NOW + 60)),
            Taken::Kept(_)
        ));
    }

    #[test]
    fn another_fleets_heartbeat_is_refused() {
        let node = node();
        refused(
            take_at(&node, &signed(&node.key, 2, NOW)),
            "is for fleet 0202020202020202",
        );
        assert!(kept(node.store.dir()).is_none());
    }

    #[test]
    fn an_untrusted_or_forged_heartbeat_is_refused() {
        let node = node();
        let stranger = SigningKey::from_bytes(&[9; 32]);
        refused(take_at(&node, &signed(&stranger, 1, NOW)), "unknown key");
        // A trusted key's signature over another heartbeat, carried by this one.
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        let bytes = |time| {
            URL_SAFE_NO_PAD
                .decode(&signed(&node.key, 1, time)[9..])
                .unwrap()
        };
        let (real, mut forged) = (bytes(NOW), bytes(NOW - 1));
        let at = forged.windows(9).position(|w| w == b"4:sigs72:").unwrap() + 9;
        forged[at..at + 72].copy_from_slice(&real[at..at + 72]);
        let wire = format!("p2pu-hb1:{}", URL_SAFE_NO_PAD.encode(forged));
        refused(take_at(&node, wire.as_bytes()), "bad signature");
        assert!(kept(node.store.dir()).is_none());
    }

    #[test]
    fn a_heartbeat_below_the_threshold_is_refused() {
        let node = node();
        let keys = node.dir.path().join("trusted");
        let mut policy = policy(&keys);
        policy.threshold = 2;
        let wire = signed(&node.key, 1, NOW);
        let taken = take(&wire, &node.store, &policy, NOW).unwrap();
        refused(taken, "signed by 1 of the 2");
    }

    #[test]
    fn freshness_is_fresh_within_the_window_then_stale_and_never_without_one() {
        let node = node();
        let dir = node.store.dir();
        assert_eq!(freshness(dir, 0, NOW), None);
        assert_eq!(freshness(dir, 100, NOW).unwrap().state, "never");
        take_at(&node, &signed(&node.key, 1, NOW - 50));
        assert!(freshness(dir, 100, NOW).unwrap().is_fresh());
        let stale = freshness(dir, 10, NOW).unwrap();
        assert_eq!(
            (stale.state.as_str(), stale.stale_since),
            ("stale", Some(NOW - 40))
        );
        assert!(stale.line(NOW).contains("STALE since"));
    }

    /// Issue 28, item 2: the snapshot document in the download dir (Transmission's user
    /// writes it) replaced by a FIFO, a sparse 1 TiB file or a link: reading it neither blocks
    /// nor reads past the cap, and the document is then taken from a member. The verified copy
    /// is kept in the state dir and read back from there, whatever the download dir holds.
    #[test]
    fn a_fifo_or_huge_snapshot_document_neither_blocks_nor_fills_memory() {
        let node = node();
        let root = node.dir.path().join("downloads");
        std::fs::create_dir_all(&root).unwrap();
        let snapshot = Snapshot::new(vec![Entry::of("site.pp", 7, "p2pu2:x")]);
        let heartbeat = Heartbeat::sign(FleetId([1; 8]), NOW, &snapshot, &node.key).unwrap();
        let at = root.join(file_name(heartbeat.snap()));
        // A member serving the genuine document.
        let served = tempfile::tempdir().unwrap();
        std::fs::write(
            served.path().join(file_name(heartbeat.snap())),
            snapshot.to_bencode(),
        )
        .unwrap();
        let seed = crate::agent::transfer::seed_http::SeedServer::start(
            "127.0.0.1:0".parse().unwrap(),
            served.path(),
        )
        .unwrap();
        let client = Client {
            bind: None,
            connect_timeout: std::time::Duration::from_secs(3),
            read_timeout: std::time::Duration::from_secs(3),
        };
        let state = node.store.dir().to_path_buf();
        let look = |seeds: Vec<SocketAddr>| {
            let (heartbeat, state, root, client) =
                (heartbeat.clone(), state.clone(), root.clone(), client);
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(snapshot_of(&heartbeat, &state, &root, &seeds, &client).unwrap());
            });
            rx.recv_timeout(std::time::Duration::from_secs(10))
                .expect("reading the snapshot document blocked")
        };
        nix::unistd::mkfifo(&at, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(look(Vec::new()), None, "a FIFO is not read");
        std::fs::remove_file(&at).unwrap();
        std::fs::File::create(&at)
            .unwrap()
            .set_len(1 << 40)
            .unwrap();
        assert_eq!(look(Vec::new()), None, "a sparse 1 TiB file is not read");
        std::fs::remove_file(&at).unwrap();
        nix::unistd::mkfifo(&at, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(
            look(vec![seed.addr()]),
            Some(snapshot.clone()),
            "fetched from a member"
        );
        // Kept root's: the download dir's copy turned into a FIFO again changes nothing.
        std::fs::remove_file(&at).unwrap();
        nix::unistd::mkfifo(&at, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(look(Vec::new()), Some(snapshot));
        seed.shutdown();
    }
}
