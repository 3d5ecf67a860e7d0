//! Publishing an update: the payload packed if a directory, hashed into a torrent, copied
//! where Transmission seeds it (and marked complete in the download dir for the web seed
//! server), and its announcement signed ([`prepare_checked`]); then broadcast over Serf ([`broadcast`],
//! `submit`) or handed to the NAT client (`event sendfile`). Before any of it, [`check`] refuses
//! what every node would fail on: a manifest Puppet cannot parse, a module archive without
//! its metadata; [`noop`] shows what a manifest would change on this node.

use crate::agent::apply::kind;
use crate::agent::transfer::download_dir::DownloadDir;
use crate::agent::transfer::topology;
use crate::config::Config;
use crate::engines::{Applier, ApplyReport, Gossip, PuppetError, TorrentEngine};
use crate::error::{Error, Result};
use crate::formats::announcement::{validate_name, Announcement, Binding, Draft, Kind};
use crate::formats::blocks::{self, Layout, Leaves};
use crate::formats::serf_names::{TAG_RATE, UPDATE_EVENT};
use crate::formats::torrent::{self, CreateOptions};
use crate::provision::Owners;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why `submit` refused a payload before broadcasting it: what every node would fail on.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{}: refused, nothing was broadcast: `puppet parser validate` rejects it: {cause}",
        path.display())]
    ManifestInvalid { path: PathBuf, cause: String },
    #[error("{}: `puppet apply --noop` failed on this node, nothing was broadcast: {cause}",
        path.display())]
    NoopFailed { path: PathBuf, cause: String },
    #[error("{}: --noop needs a manifest (*.pp or --kind manifest), not a {kind} update",
        path.display())]
    NoopNotAManifest { path: PathBuf, kind: Kind },
}

impl crate::error::LayerError for CheckError {}

/// Puppet's own words for a failure: its first `Error:` line, else the whole error.
fn cause_of(error: &PuppetError) -> String {
    error.cause().unwrap_or_else(|| crate::error::chain(error))
}

/// The payload must exist before anything else is looked at: a mistyped path is the likeliest
/// mistake, and it is refused before any secret is read or engine touched.
pub fn check_source(source: &Path) -> Result<()> {
    match source.metadata() {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Usage(format!(
            "{}: no such file or directory; give the file or directory to send",
            source.display()
        ))),
        Err(e) => Err(Error::io("inspecting the payload", source)(e)),
    }
}

/// [`check`] where it applies, for `submit` and `event sendfile` alike: manifests (also at the
/// top of a `dir`) go through Puppet's parser, `applier` is asked for only then; a module
/// archive must name itself in its metadata; other kinds have nothing to check here.
pub fn check_kind(
    source: &Path,
    kind: Kind,
    applier: impl FnOnce() -> Result<std::sync::Arc<dyn Applier>>,
) -> Result<()> {
    match kind {
        Kind::Manifest | Kind::Dir => check(source, kind, applier()?.as_ref()),
        Kind::Module => Ok(kind::module_metadata(source).map(drop)?),
        Kind::Archive | Kind::Key | Kind::File => Ok(()),
    }
}

/// Refuses, before anything is seeded or broadcast, a payload every node would fail to apply:
/// a manifest `puppet parser validate` rejects (Puppet's first `Error:` line and its file:line
/// in the error), a module archive without a `<top>/metadata.json` naming it and its version;
/// in a `dir` update, each top-level manifest and module the same way.
pub fn check(source: &Path, kind: Kind, applier: &dyn Applier) -> Result<()> {
    match kind {
        Kind::Manifest => {
            applier
                .validate(source)
                .map_err(|e| CheckError::ManifestInvalid {
                    path: source.to_path_buf(),
                    cause: cause_of(&e),
                })?;
        }
        Kind::Module => {
            kind::module_metadata(source)?;
        }
        Kind::Dir => {
            let mut members: Vec<PathBuf> = std::fs::read_dir(source)
                .map_err(Error::io("listing", source))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            members.sort();
            for member in members {
                let member_kind = kind::detect(&member)?;
                if matches!(member_kind, Kind::Manifest | Kind::Module) {
                    check(&member, member_kind, applier)?;
                }
            }
        }
        Kind::Archive | Kind::Key | Kind::File => {}
    }
    Ok(())
}

/// What `puppet apply --noop` of a manifest would change on this node, changing nothing.
pub fn noop(source: &Path, kind: Kind, applier: &dyn Applier) -> Result<Noop> {
    if kind != Kind::Manifest {
        return Err(CheckError::NoopNotAManifest {
            path: source.to_path_buf(),
            kind,
        }
        .into());
    }
    let report: ApplyReport = applier.noop(source).map_err(|e| CheckError::NoopFailed {
        path: source.to_path_buf(),
        cause: cause_of(&e),
    })?;
    // Puppet marks each change it did not make with `(noop)`; the refresh events it would
    // have triggered say `Would have triggered`.
    let changes = report
        .output
        .lines()
        .map(str::trim)
        .filter(|l| l.ends_with("(noop)"))
        .map(|l| l.strip_prefix("Notice: ").unwrap_or(l).to_string())
        .collect();
    Ok(Noop {
        changes,
        output: report.output,
    })
}

/// What a dry run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Noop {
    /// One line per change Puppet would make, as Puppet words it.
    pub changes: Vec<String>,
    /// Puppet's whole output.
    pub output: String,
}

/// What `submit` made, for the caller and the overlay.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub name: String,
    pub seq: u64,
    pub info_hash: String,
    pub wire: String,
}

/// What `submit` and `event sendfile` print.
impl std::fmt::Display for Submitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "submitted {} seq {} info-hash {}",
            self.name, self.seq, self.info_hash
        )
    }
}

/// Everything before the broadcast: the payload seeded locally and the signed announcement,
/// and with `stripes` (the members' view, [`roster_view`], in `transfer.mode = "stripes"`) the
/// block tree and the roster bound into the info dict for a payload above `DIRECT_MAX`
/// ([`bind_blocks`]), with progress on stderr when `show_progress` (a terminal, not `--quiet`). The pre-broadcast
/// `check` (e.g. [`check_kind`]) runs beside the local work, hashing, copying and signing,
/// instead of before it: `puppet parser validate` and the torrent's making take their time
/// together. Nothing leaves this node's files until the check passed: the torrent `engine`
/// is asked for and handed the torrent, and the completion mark that lets the seed server
/// serve the payload is written, only then; on a refusal the seeding copy made meanwhile is
/// removed and the check's error returned (before any error of the local work: it is what
/// the operator must fix first).
#[allow(clippy::too_many_arguments)]
pub fn prepare_checked(
    config: &Config,
    source: &Path,
    kind: Option<Kind>,
    name: Option<String>,
    seq: u64,
    now_secs: u64,
    engine: impl FnOnce() -> Result<std::sync::Arc<dyn TorrentEngine>>,
    show_progress: bool,
    plan: &crate::formats::plan::Plan,
    stripes: Option<&[(String, Option<u64>)]>,
    check: impl FnOnce() -> Result<()> + Send,
) -> Result<Submitted> {
    std::thread::scope(|scope| {
        let checking = scope.spawn(check);
        let staged = stage(config, source, kind, name, show_progress, stripes);
        let checked = checking.join().unwrap_or_else(|_| {
            Err(Error::Internal(
                "the pre-broadcast check panicked".to_string(),
            ))
        });
        match (checked, staged) {
            (Err(refused), staged) => {
                if let Ok(staged) = staged {
                    staged.discard();
                }
                Err(refused)
            }
            (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok(staged)) => staged.publish(config, seq, now_secs, engine, plan),
        }
    })
}

/// The local half of [`prepare_checked`]: the payload hashed into a torrent and copied where
/// Transmission seeds it, not yet handed to anything that serves it.
struct Staged {
    progress: Progress,
    name: String,
    kind: Kind,
    torrent: torrent::Metainfo,
    info_hash: String,
    seed_dir: PathBuf,
    seeded: PathBuf,
    sha256: [u8; 32],
    len: u64,
    /// In stripes mode: the leaf layer and the roster, written beside the metainfo.
    stripes: Option<StripeDocs>,
    /// Whether this payload was already published here (its completion mark there): then
    /// its seeding copy is not this run's to remove.
    published_before: bool,
    /// The download dir, when this run made it.
    made_root: Option<PathBuf>,
}

fn stage(
    config: &Config,
    source: &Path,
    kind: Option<Kind>,
    name: Option<String>,
    show_progress: bool,
    stripes: Option<&[(String, Option<u64>)]>,
) -> Result<Staged> {
    let progress = Progress::new(show_progress);
    let site = &config.site;
    let is_dir = source.is_dir();
    let kind = match kind {
        Some(kind) => kind,
        None => kind::detect(source)?,
    };
    let default_name = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            Error::Usage(format!(
                "{}: has no file name; give --name",
                source.display()
            ))
        })?;
    let name = name.unwrap_or_else(|| {
        if is_dir {
            format!("{default_name}.tar.gz")
        } else {
            default_name
        }
    });
    validate_name(&name)?;
    let scratch = tempfile::tempdir().map_err(Error::io(
        "creating a temporary directory in",
        std::env::temp_dir(),
    ))?;
    let payload = if is_dir {
        let packed = scratch.path().join(&name);
        progress.step(&format!("packing {}", source.display()));
        kind::pack_dir(source, &packed)?;
        packed
    } else {
        source.to_path_buf()
    };
    let advance = |n: u64| progress.advance(n);
    let options = CreateOptions {
        name: Some(name.clone()),
        trackers: vec![config.tracker_url()],
        progress: progress
            .hashing(&payload)
            .then_some(&advance as &(dyn Fn(u64) + Sync)),
        ..CreateOptions::default()
    };
    let torrent = torrent::create(&payload, &options)?;
    // The operator's own file, not the copy in the download dir: Transmission's user may
    // swap that one before it is hashed, and submit would sign the swapped bytes. In stripes
    // mode the leaves come from the same read, and are bound into the info dict before the
    // info-hash is taken.
    let striped =
        stripes.filter(|_| torrent.total_length > crate::agent::transfer::relay::DIRECT_MAX);
    let origin = config.node_name.as_deref().unwrap_or_default();
    let (sha256, len, leaves) =
        hash_payload(&payload, striped.is_some()).map_err(Error::io("reading", &payload))?;
    let (torrent, stripes) = match (striped, leaves) {
        (Some(view), Some(leaves)) => {
            let (torrent, docs) = bind_blocks(&torrent, leaves, origin, view, site_params(config))?;
            (torrent, Some(docs))
        }
        _ => (torrent, None),
    };
    progress.step("copying for seeding");
    let info_hash = torrent.info_hash_hex();
    let download_dir = DownloadDir::new(&site.transmission.download_dir);
    let seed_dir = download_dir.payload_dir(&info_hash);
    let seeded = download_dir.payload(&info_hash, &name);
    let published_before = download_dir.completion_mark(&info_hash).exists();
    let root = &site.transmission.download_dir;
    let made_root = (!root.exists()).then(|| root.clone());
    copy_for_seeding(&payload, &seed_dir, &seeded, &site.transmission.user)?;
    Ok(Staged {
        progress,
        name,
        kind,
        torrent,
        info_hash,
        seed_dir,
        seeded,
        sha256,
        len,
        stripes,
        published_before,
        made_root,
    })
}

/// What `submit` in stripes mode writes beside the metainfo (docs/wire-blocks.md).
struct StripeDocs {
    leaves: Vec<u8>,
    roster: Vec<u8>,
    /// Every block held: the submitter's seed server sends any stripe (`?stripe=`).
    have: Vec<u8>,
}

/// The payload's SHA-256 and length, and with `blocks` its leaf layer, in one read.
fn hash_payload(path: &Path, blocks: bool) -> std::io::Result<([u8; 32], u64, Option<Leaves>)> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path)?;
    let changed = |e| std::io::Error::other(format!("the payload changed while read: {e}"));
    let mut hasher = match blocks {
        true => {
            let len = file.metadata()?.len();
            Some(blocks::Hasher::new(
                Layout::for_length(len).map_err(changed)?,
            ))
        }
        false => None,
    };
    let mut sha = sha2::Sha256::new();
    let len = crate::fsutil::read_chunks(&mut file, |bytes| {
        sha.update(bytes);
        if let Some(hasher) = &mut hasher {
            hasher.update(bytes).map_err(changed)?;
        }
        Ok(())
    })?;
    let leaves = hasher.map(|h| h.finish().map_err(changed)).transpose()?;
    Ok((sha.finalize().into(), len, leaves))
}

/// The members a striped transfer's roster is written over: the alive Serf members, each with
/// the rate it advertises (`p2pu-rate`, read strictly and clamped by `formats::rate`: absent
/// or not canonical digits, none; absurd, the clamp, so a liar moves the median one place
/// like any high rate). A member whose name a
/// roster cannot hold (`roster::valid_name`) is left out rather than failing the submit: any
/// keyring holder can join under such a name, and must not stop every striped submit; left
/// out, it fetches as a node that joined late (`Plan::late_source`), from nobody's uplink.
pub fn roster_view(gossip: &dyn Gossip) -> Result<Vec<(String, Option<u64>)>> {
    let mut view: Vec<(String, Option<u64>)> = gossip
        .members()?
        .into_iter()
        .filter(|m| m.status == crate::engines::MemberStatus::Alive)
        .filter(|m| crate::formats::roster::valid_name(&m.name))
        .map(|m| {
            let rate = m
                .tags
                .get(TAG_RATE)
                .and_then(|r| crate::formats::rate::decode(r));
            (m.name, rate)
        })
        .collect();
    view.sort();
    view.dedup_by(|a, b| a.0 == b.0);
    Ok(view)
}

/// The stripes' shape the site chose (`[transfer] stripes`, `fan_out`), with the plan's
/// repair neighbours.
pub fn site_params(config: &Config) -> topology::Params {
    topology::Params {
        stripes: config.site.transfer.stripes,
        fanout: config.site.transfer.fan_out,
        ..topology::Params::DEFAULT
    }
}

/// `torrent` with the `p2pu` key (the Merkle root over `leaves` and the digest of the roster
/// of `view` from `origin`, in the site's shape `params`) in its info dict, so the info-hash the
/// operator signs binds both; and the two documents every member fetches beside it. The
/// origin is in the roster even when its Serf view missed it: it holds the payload.
fn bind_blocks(
    torrent: &torrent::Metainfo,
    leaves: Leaves,
    origin: &str,
    view: &[(String, Option<u64>)],
    params: topology::Params,
) -> Result<(torrent::Metainfo, StripeDocs)> {
    let mut view = view.to_vec();
    if !view.iter().any(|(name, _)| name == origin) {
        view.push((origin.to_string(), None));
    }
    let roster = topology::roster(origin, &view, params)?;
    let spec = blocks::Spec {
        layout: leaves.layout(),
        root: leaves.root(),
        roster: Some(roster.digest()),
        prev: None,
    };
    let top = crate::formats::bencode::parse(&torrent.bytes)?;
    let crate::formats::bencode::Kind::Dict(entries) = &top.kind else {
        return Err(Error::Internal("a torrent made here is not a dict".into()));
    };
    let mut bytes = vec![b'd'];
    for (key, value) in entries {
        bytes.extend_from_slice(format!("{}:", key.len()).as_bytes());
        bytes.extend_from_slice(key);
        if *key == b"info" {
            let with = spec.insert_into(value.raw).map_err(|e| {
                Error::Internal(format!("binding the block tree into the info dict: {e}"))
            })?;
            bytes.extend_from_slice(&with);
        } else {
            bytes.extend_from_slice(value.raw);
        }
    }
    bytes.push(b'e');
    let torrent = torrent::Metainfo::from_bytes(&bytes)?;
    // The plan's stripes, which are fewer than the roster's `d` where fewer members forward:
    // the seed server deals blocks into stripes by what the mark says.
    let plan = topology::Plan::from_roster(&torrent.info_hash, &roster)
        .map_err(|e| Error::Internal(format!("the plan of the roster written here: {e}")))?;
    let mut have = crate::formats::have::Have::new(leaves.layout(), plan.stripes() as u32)?;
    (0..leaves.layout().count()).for_each(|i| have.set(i));
    let docs = StripeDocs {
        leaves: leaves.encode(),
        roster: roster.encode(),
        have: have.encode(),
    };
    Ok((torrent, docs))
}

impl Staged {
    /// The check refused the payload: the seeding copy made for it goes (unless an earlier
    /// publication of the same payload serves it).
    fn discard(self) {
        if !self.published_before {
            let name = self.seeded.file_name().and_then(|n| n.to_str());
            if let Some(name) = name {
                let _ = remove_seeding_copy(&self.seed_dir, name);
            }
        }
        // Only when empty: whatever else is there is not this run's.
        if let Some(root) = &self.made_root {
            let _ = std::fs::remove_dir(root);
        }
    }

    /// Hands the staged payload to Transmission and the seed server and signs its
    /// announcement.
    fn publish(
        self,
        config: &Config,
        seq: u64,
        now_secs: u64,
        engine: impl FnOnce() -> Result<std::sync::Arc<dyn TorrentEngine>>,
        plan: &crate::formats::plan::Plan,
    ) -> Result<Submitted> {
        let site = &config.site;
        let signer = crate::keys::read_secret(&site.agent.signing_key)
            .map_err(Error::from)
            .and_then(|key| Ok((key, binding(config, now_secs)?)));
        let (key, binding) = match signer {
            Ok(signer) => signer,
            Err(e) => {
                self.discard();
                return Err(e);
            }
        };
        let Staged {
            progress,
            name,
            kind,
            torrent,
            info_hash,
            seed_dir,
            sha256,
            len,
            stripes,
            ..
        } = self;
        progress.step("handing it to Transmission");
        engine()?.add_metainfo(&torrent.bytes, Some(&seed_dir), false)?;
        let download_dir = DownloadDir::new(&site.transmission.download_dir);
        // The striped transfer's documents before the completion mark, so a member that sees
        // the metainfo finds them; the signed info dict binds them, so a copy rewritten here
        // fails every reader's check. The agent's web seed server hands the metainfo to the
        // members, and serves the payload once it sees it.
        let (leaves, roster, have, metainfo) = (
            download_dir.leaves(&info_hash),
            download_dir.roster(&info_hash),
            download_dir.have_mark(&info_hash),
            download_dir.completion_mark(&info_hash),
        );
        let mut files: Vec<(&Path, &[u8], u32)> = Vec::new();
        if let Some(docs) = &stripes {
            files.push((&leaves, &docs.leaves, 0o644));
            files.push((&roster, &docs.roster, 0o644));
            files.push((&have, &docs.have, 0o644));
        }
        files.push((&metainfo, &torrent.bytes, 0o644));
        crate::fsutil::write_atomic_all(&files)?;
        let draft = Draft {
            seq,
            name: name.clone(),
            kind,
            info_hash: torrent.info_hash,
            len,
            sha256,
        };
        let announcement = if plan.is_empty() {
            Announcement::sign_v2(draft, binding, &key)?
        } else {
            // Beside the metainfo, where this node's seed server serves it to the members; the
            // signatures cover its SHA-256, so no member can serve another.
            let bytes = plan.to_bencode();
            let path = site
                .transmission
                .download_dir
                .join(format!("{info_hash}.plan"));
            crate::fsutil::write_atomic(&path, &bytes, 0o644)?;
            Announcement::sign_v2_with_plan(draft, binding, &bytes, &key)?
        };
        progress.done();
        Ok(Submitted::of(&announcement))
    }
}

/// What a v2 announcement signed now is bound to: this fleet, and an expiry
/// `agent.announcement_ttl_days` from `now_secs`.
pub fn binding(config: &Config, now_secs: u64) -> Result<Binding> {
    let ttl = u64::from(config.site.agent.announcement_ttl_days) * 86_400;
    Ok(Binding {
        expires: now_secs.saturating_add(ttl),
        fleet: config.fleet_id()?,
    })
}

impl Submitted {
    pub fn of(announcement: &Announcement) -> Submitted {
        Submitted {
            name: announcement.name().to_string(),
            seq: announcement.seq(),
            info_hash: hex::encode(announcement.info_hash()),
            wire: announcement.to_wire(),
        }
    }
}

/// Sends the signed announcement to the fleet as Serf's update event, not coalesced: all
/// updates share the one event name, and coalescing would deliver only the last of several
/// sent close together.
pub fn broadcast(gossip: &dyn Gossip, submitted: &Submitted) -> Result<()> {
    gossip.user_event(UPDATE_EVENT, submitted.wire.as_bytes(), false)?;
    Ok(())
}

/// Pushes the announcement to the alive members' web seed servers besides the broadcast
/// ([`crate::agent::transfer::push`]): each has it in one round trip instead of Serf's two or
/// three gossip ticks. Best effort: a member missed here hears the Serf event. `seed_port` is
/// the site's (`agent.seed_port`): the members' own tags do not choose where a push goes.
pub fn push(gossip: &dyn Gossip, own_name: Option<&str>, seed_port: u16, submitted: &Submitted) {
    match gossip.members() {
        Ok(members) => {
            let taken =
                crate::agent::transfer::push::push(&members, own_name, seed_port, &submitted.wire);
            tracing::debug!(taken, "announcement pushed to members");
        }
        Err(e) => tracing::debug!("no push: listing the members: {}", crate::error::chain(&e)),
    }
}

/// How many alive members the local Serf exchanges state with before a broadcast.
const CLOCK_PEERS: usize = 3;

/// Brings the local Serf's Lamport clock up to the fleet's before a broadcast, by joining a few
/// alive members (a state exchange). Serf ignores user events older than the clock at which a
/// member last (re)joined, and a Serf that just restarted starts its clock over and learns the
/// fleet's only at its next exchange (every 30 s): until then, every event it sends is dropped
/// by the members that rejoined meanwhile (seen in the lab, tests/converge.rs, and on booted
/// fleets). A Serf that just restarted may know no member yet: the site's `serf.join`
/// addresses (`join`) are asked too. Best effort: the event still goes out if this fails.
pub fn catch_up_clock(gossip: &dyn Gossip, join: &[String]) {
    use rand::seq::SliceRandom;
    let alive: Vec<String> = match gossip.members() {
        Ok(members) => members
            .iter()
            .filter(|m| m.status == crate::engines::MemberStatus::Alive)
            .map(|m| std::net::SocketAddr::new(m.addr, m.port).to_string())
            .collect(),
        Err(_) => return,
    };
    // The operator's join addresses first, then a random few of the alive members: the
    // addresses members advertise are theirs to choose, and a keyring holder that added fake
    // members at the head of the list would otherwise be all a restarted Serf joins.
    let mut addrs: Vec<String> = join.to_vec();
    addrs.extend(
        alive
            .choose_multiple(&mut rand::thread_rng(), CLOCK_PEERS)
            .cloned(),
    );
    if addrs.is_empty() {
        return;
    }
    // A live member joins only for the clock: with `IgnoreOld`, the events members sent
    // before they heard of the clocks exchanged would be dropped here for good.
    if let Err(e) = gossip.join(&addrs, crate::engines::JoinEvents::Replay) {
        tracing::debug!(
            "joining {} before a broadcast: {}",
            addrs.join(" "),
            crate::error::chain(&e)
        );
    }
}

/// Copies the operator's `payload` to `dest` in `dir` (a payload dir in the download dir) for
/// Transmission and the unprivileged seed server: 0755/0644 whatever the source's mode, owned
/// by `user`. `dir` lies in the download dir, which Transmission's user writes, so it may have
/// planted a link at `dir` or at any name in it: `dir` is opened without following a link, its
/// mode and owner are set on that descriptor, and the copy is created `O_EXCL|O_NOFOLLOW` under
/// a random name there, then renamed into place (a rename replaces a link, never follows it).
/// Before, `std::fs::copy` to a fixed temp name and a `chown` by path would have written and
/// given away whatever a link there pointed to, as root.
pub fn copy_for_seeding(payload: &Path, dir: &Path, dest: &Path, user: &str) -> Result<()> {
    use nix::fcntl::OFlag;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::PermissionsExt;
    let dir_fd = crate::fsutil::open_dir_nofollow(dir, 0o755).map_err(Error::io("opening", dir))?;
    let dir_file = std::fs::File::from(dir_fd.try_clone().map_err(Error::io("opening", dir))?);
    dir_file
        .set_permissions(std::fs::Permissions::from_mode(0o755))
        .map_err(Error::io("setting the mode of", dir))?;
    let name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|_| dest.parent() == Some(dir))
        .ok_or_else(|| {
            Error::Internal(format!(
                "{} is not a file in {}",
                dest.display(),
                dir.display()
            ))
        })?;
    let tmp = format!(".p2pu-copy-{:016x}", rand::random::<u64>());
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
    let mut out = std::fs::File::from(
        crate::fsutil::openat_nofollow(&dir_fd, &tmp, flags, 0o644)
            .map_err(Error::io("creating a copy in", dir))?,
    );
    let copied = std::fs::File::open(payload)
        .and_then(|mut source| std::io::copy(&mut source, &mut out))
        .and_then(|_| out.set_permissions(std::fs::Permissions::from_mode(0o644)))
        .and_then(|()| out.sync_all());
    let owners = Owners::new(None);
    let given = copied
        .map_err(Error::io("copying the payload to", dir))
        .and_then(|()| {
            owners.chown_fd(&dir_file, dir, Some(user))?;
            owners.chown_fd(&out, dest, Some(user))
        });
    let renamed = given.and_then(|()| {
        nix::fcntl::renameat(
            Some(dir_fd.as_raw_fd()),
            tmp.as_str(),
            Some(dir_fd.as_raw_fd()),
            name,
        )
        .map_err(|e| Error::io("renaming into place", dest)(e.into()))
    });
    if renamed.is_err() {
        let _ = nix::unistd::unlinkat(
            Some(dir_fd.as_raw_fd()),
            tmp.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
    renamed
}

/// Removes `name` and then `dir` (a payload dir in the download dir) when empty, without
/// following a link at `dir`: Transmission's user owns the download dir and may swap `dir`
/// for a link while the check runs, and a removal by path would then unlink, as root, a
/// file of that name wherever the link points (the hostile review found `site.pp` so).
fn remove_seeding_copy(dir: &Path, name: &str) -> std::io::Result<()> {
    use nix::fcntl::OFlag;
    use nix::unistd::{unlinkat, UnlinkatFlags};
    use std::os::fd::AsRawFd;
    let (Some(parent), Some(leaf)) = (dir.parent(), dir.file_name().and_then(|n| n.to_str()))
    else {
        return Ok(());
    };
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let parent_fd = nix::fcntl::open(parent, flags, nix::sys::stat::Mode::empty())?;
    // SAFETY: `open` just returned this descriptor and nothing else owns it.
    let parent_fd =
        unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(parent_fd) };
    let dir_fd =
        crate::fsutil::openat_nofollow(&parent_fd, leaf, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)?;
    unlinkat(Some(dir_fd.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir)?;
    unlinkat(Some(parent_fd.as_raw_fd()), leaf, UnlinkatFlags::RemoveDir)?;
    Ok(())
}

/// Progress on stderr for `submit`'s long steps (packing, hashing, copying); inert when not
/// shown, so logs and pipes never get bars.
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(show: bool) -> Progress {
        let bar = show.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        let progress = Progress { bar };
        progress.step("preparing");
        progress
    }

    /// A step of unknown length: a spinner and what is being done.
    fn step(&self, what: &str) {
        if let Some(bar) = &self.bar {
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
                bar.set_style(style);
            }
            bar.set_message(what.to_string());
        }
    }

    /// Switches to a byte bar for hashing `payload`; whether hashing should report to it.
    fn hashing(&self, payload: &Path) -> bool {
        let Some(bar) = &self.bar else {
            return false;
        };
        let Ok(total) = torrent::content_length(payload) else {
            return false;
        };
        if let Ok(style) = ProgressStyle::with_template(
            "hashing {wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {eta}",
        ) {
            bar.set_style(style);
        }
        bar.set_length(total);
        bar.set_position(0);
        true
    }

    fn advance(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    /// An error midway leaves no half-drawn bar above its message.
    fn drop(&mut self) {
        self.done();
    }
}

/// How long a control statement stays valid: long enough for a node that was briefly away,
/// short enough that an old `retry` cannot be replayed on a fresh node months later.
pub const CONTROL_TTL_SECS: u64 = 86_400;

/// Signs a control statement (`formats::control`) for update `name` seq `seq` with this
/// node's signing key and broadcasts it as `p2pu-control`: what `p2pu rollout` and
/// `fleet serve --allow-actions` send, one way. `to` is a revert's target seq.
#[allow(clippy::too_many_arguments)]
pub fn send_control(
    config: &Config,
    gossip: &dyn Gossip,
    action: crate::formats::control::Action,
    name: &str,
    seq: u64,
    issued: u64,
    nodes: Vec<String>,
    to: Option<u64>,
) -> Result<crate::formats::control::Control> {
    let key = crate::keys::read_secret(&config.site.agent.signing_key)?;
    let mut control = crate::formats::control::Control::new(
        action,
        name,
        seq,
        issued,
        config.fleet_id()?,
        issued + CONTROL_TTL_SECS,
        nodes,
    )?;
    if let Some(to) = to {
        control = control.revert_to(to)?;
    }
    control.sign(&key)?;
    gossip.user_event(
        crate::formats::serf_names::CONTROL_EVENT,
        control.to_wire().as_bytes(),
        false,
    )?;
    Ok(control)
}

#[cfg(test)]
mod tests {
    /// A refused payload's seeding copy is removed on descriptors: Transmission's user may
    /// swap the payload dir for a link while the check runs (hostile review, issue 28).
    #[test]
    fn a_refused_payloads_copy_is_removed_without_following_a_swapped_link() {
        let tmp = tempfile::tempdir().unwrap();
        let download = tmp.path().join("download");
        let elsewhere = tmp.path().join("etc");
        std::fs::create_dir_all(&download).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("site.pp"), "precious").unwrap();
        let seed_dir = download.join("ab".repeat(20));
        std::os::unix::fs::symlink(&elsewhere, &seed_dir).unwrap();
        assert!(remove_seeding_copy(&seed_dir, "site.pp").is_err());
        assert_eq!(
            std::fs::read_to_string(elsewhere.join("site.pp")).unwrap(),
            "precious"
        );

        let honest = download.join("cd".repeat(20));
        std::fs::create_dir_all(&honest).unwrap();
        std::fs::write(honest.join("site.pp"), "x").unwrap();
        remove_seeding_copy(&honest, "site.pp").unwrap();
        assert!(!honest.exists());
    }

    use super::*;
    use crate::engines::{Member, SerfError};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, Vec<u8>, bool)>>);

    impl Gossip for Recorder {
        fn members(&self) -> std::result::Result<Vec<Member>, SerfError> {
            Ok(Vec::new())
        }
        fn user_event(
            &self,
            name: &str,
            payload: &[u8],
            coalesce: bool,
        ) -> std::result::Result<(), SerfError> {
            let event = (name.to_string(), payload.to_vec(), coalesce);
            self.0.lock().unwrap().push(event);
            Ok(())
        }
        fn query(
            &self,
            _: &str,
            _: &[u8],
            _: Duration,
        ) -> std::result::Result<Vec<(String, String)>, SerfError> {
            Ok(Vec::new())
        }
    }

    #[test]
    fn broadcast_sends_the_wire_as_the_update_event_uncoalesced() {
        let gossip = Recorder::default();
        let submitted = Submitted {
            name: "site.pp".into(),
            seq: 7,
            info_hash: "ab".repeat(20),
            wire: "p2pu1:xyz".into(),
        };
        broadcast(&gossip, &submitted).unwrap();
        let sent = gossip.0.lock().unwrap().clone();
        assert_eq!(
            sent,
            [("p2pu-update".to_string(), b"p2pu1:xyz".to_vec(), false)]
        );
    }

    use std::os::unix::fs::PermissionsExt;

    /// A `dir` update's top-level manifests are checked like a manifest update: the one
    /// Puppet rejects stops the submit, naming its Error line.
    #[test]
    fn a_dir_update_has_its_manifests_validated() {
        use crate::engines::fake::FakeApplier;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("site.pp"), "notice('x')\n").unwrap();
        std::fs::write(dir.path().join("motd"), "hi\n").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let fine = FakeApplier::default();
        check(dir.path(), Kind::Dir, &fine).unwrap();
        let site = dir.path().join("site.pp");
        assert_eq!(fine.calls(), [("validate", site.clone())]);
        let rejecting = FakeApplier {
            fail_with: Some("Error: Syntax error at 'x' (file: /d/site.pp, line: 4)\n".into()),
            ..FakeApplier::default()
        };
        let err = crate::error::chain(&check(dir.path(), Kind::Dir, &rejecting).unwrap_err());
        assert!(
            err.ends_with(
                "site.pp: refused, nothing was broadcast: `puppet parser validate` \
                 rejects it: Error: Syntax error at 'x' (site.pp:4)"
            ),
            "{err}"
        );
        // Other kinds ask Puppet nothing.
        let untouched = FakeApplier::default();
        check(&dir.path().join("motd"), Kind::File, &untouched).unwrap();
        assert!(untouched.calls().is_empty());
    }

    #[test]
    fn progress_is_inert_when_not_shown() {
        let progress = Progress::new(false);
        assert!(progress.bar.is_none());
        assert!(!progress.hashing(Path::new("/")));
    }

    #[test]
    fn seeded_copies_are_readable_by_the_unprivileged_seed_server_whatever_the_source_mode() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("site.pp");
        std::fs::write(&source, "notice('x')\n").unwrap();
        std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o600)).unwrap();
        // As a root shell with umask 077 would have left it.
        let seed_dir = dir.path().join("0123456789abcdef0123456789abcdef01234567");
        std::fs::create_dir(&seed_dir).unwrap();
        std::fs::set_permissions(&seed_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let dest = seed_dir.join("site.pp");
        copy_for_seeding(&source, &seed_dir, &dest, "root").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&seed_dir), mode(&dest)), (0o755, 0o644));
        assert_eq!(std::fs::read(&dest).unwrap(), b"notice('x')\n");
    }

    /// The payload dir lies in the download dir, which Transmission's user writes: a link it
    /// planted at the payload dir, or at the payload's name, is neither followed nor given
    /// away (root used to copy through a fixed temp name and chown by path).
    #[test]
    fn links_planted_where_submit_seeds_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("site.pp");
        std::fs::write(&source, "notice('x')\n").unwrap();
        let victim = dir.path().join("etc");
        std::fs::create_dir(&victim).unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(victim.join("shadow"), "root's").unwrap();
        let downloads = dir.path().join("downloads");
        std::fs::create_dir(&downloads).unwrap();
        let seed_dir = downloads.join("0123456789abcdef0123456789abcdef01234567");
        std::os::unix::fs::symlink(&victim, &seed_dir).unwrap();
        let dest = seed_dir.join("site.pp");
        assert!(copy_for_seeding(&source, &seed_dir, &dest, "root").is_err());
        let mode = std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "the link's target was given another mode");
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 1);

        std::fs::remove_file(&seed_dir).unwrap();
        std::fs::create_dir(&seed_dir).unwrap();
        std::os::unix::fs::symlink(victim.join("shadow"), &dest).unwrap();
        copy_for_seeding(&source, &seed_dir, &dest, "root").unwrap();
        assert_eq!(std::fs::read(victim.join("shadow")).unwrap(), b"root's");
        assert!(std::fs::symlink_metadata(&dest).unwrap().is_file());
        assert_eq!(std::fs::read(&dest).unwrap(), b"notice('x')\n");
    }
}

#[cfg(test)]
mod stripes_tests {
    use super::*;
    use crate::agent::transfer::topology::Params;
    use crate::engines::fake::FakeGossip;
    use crate::engines::{Member, MemberStatus};
    use crate::formats::roster::Roster;

    fn member(name: &str, status: MemberStatus, rate: Option<&str>) -> Member {
        Member {
            name: name.to_string(),
            addr: std::net::Ipv4Addr::LOCALHOST.into(),
            port: 7946,
            status,
            tags: rate
                .map(|r| (TAG_RATE.to_string(), r.to_string()))
                .into_iter()
                .collect(),
        }
    }

    /// Any keyring holder can join under a name no roster holds (or advertise garbage for a
    /// rate): that must not stop every striped submit; it is left out of the roster instead.
    #[test]
    fn the_roster_view_leaves_out_names_a_roster_cannot_hold_and_members_not_alive() {
        let gossip = FakeGossip {
            members: vec![
                member("n2", MemberStatus::Alive, Some("garbage")),
                member("n1", MemberStatus::Alive, Some("1000")),
                member(&"x".repeat(200), MemberStatus::Alive, None),
                member("has space", MemberStatus::Alive, None),
                member("gone", MemberStatus::Failed, None),
            ],
            ..FakeGossip::default()
        };
        let view = roster_view(&gossip).unwrap();
        assert_eq!(
            view,
            vec![("n1".to_string(), Some(1000)), ("n2".to_string(), None)]
        );
        let leaves = Leaves::of_payload(Layout::for_length(3).unwrap(), b"abc").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.bin");
        std::fs::write(&file, b"abc").unwrap();
        let plain = torrent::create(&file, &CreateOptions::default()).unwrap();
        // The submitter is in the roster even where its own Serf view missed it.
        let (_, docs) = bind_blocks(&plain, leaves, "origin", &view, Params::DEFAULT).unwrap();
        let roster = Roster::decode(&docs.roster).unwrap();
        assert_eq!(roster.members, ["n1", "n2", "origin"]);
        assert_eq!(roster.origin, "origin");
    }

    /// Hostile review of the rate tag (issue 24): members holding the keyring advertise what
    /// they like. Signs, spaces, hex and floats are no rate (full-rate, as one advertising
    /// none), an absurd value is the clamp, and each liar moves the median one place: with
    /// fewer liars than honest members above the median, the slow member stays slow and no
    /// honest one becomes slow.
    #[test]
    fn members_advertising_absurd_or_malformed_rates_move_the_median_one_place_each() {
        const MB: u64 = 1_000_000;
        let mut members: Vec<Member> = (0..4)
            .map(|i| member(&format!("fast{i}"), MemberStatus::Alive, Some("10000000")))
            .collect();
        members.push(member("slow", MemberStatus::Alive, Some("4000000")));
        for (i, lie) in [
            "18446744073709551615",
            "99999999999999999999999",
            "+0",
            "1e99",
        ]
        .iter()
        .enumerate()
        {
            members.push(member(&format!("liar{i}"), MemberStatus::Alive, Some(lie)));
        }
        let gossip = FakeGossip {
            members,
            ..FakeGossip::default()
        };
        let view = roster_view(&gossip).unwrap();
        let rate = |name: &str| view.iter().find(|(n, _)| n == name).unwrap().1;
        assert_eq!(rate("liar0"), Some(crate::formats::rate::MAX_RATE));
        assert_eq!(rate("liar1"), None);
        assert_eq!(
            rate("liar2"),
            None,
            "`+0` would make a member slow by a sign"
        );
        assert_eq!(rate("liar3"), None);
        let rates: Vec<Option<u64>> = view.iter().map(|(_, r)| *r).collect();
        let classes = topology::classify(&rates);
        for ((name, _), class) in view.iter().zip(&classes) {
            let want = if name == "slow" {
                topology::Class::Slow
            } else {
                topology::Class::Full
            };
            assert_eq!(*class, want, "{name} among {view:?}");
        }
        assert_eq!(rate("fast0"), Some(10 * MB));
    }

    /// The site's `[transfer] stripes` and `fan_out` shape the roster submit writes, and
    /// their defaults are the plan's (`Params::DEFAULT`, chosen by `benches/stripe_sim`).
    #[test]
    fn the_roster_takes_the_sites_stripes_and_fan_out() {
        use crate::config::TransferSection;
        let mut config =
            Config::from_str(std::path::Path::new("/etc/p2pu/site.toml"), "", None).unwrap();
        assert_eq!(site_params(&config), Params::DEFAULT);
        assert_eq!(
            (
                TransferSection::DEFAULT_STRIPES,
                TransferSection::DEFAULT_FAN_OUT
            ),
            (Params::DEFAULT.stripes, Params::DEFAULT.fanout)
        );
        config.site.transfer.stripes = 4;
        config.site.transfer.fan_out = 3;
        let view: Vec<(String, Option<u64>)> = (0..6).map(|i| (format!("n{i}"), None)).collect();
        let leaves = Leaves::of_payload(Layout::for_length(3).unwrap(), b"abc").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.bin");
        std::fs::write(&file, b"abc").unwrap();
        let plain = torrent::create(&file, &CreateOptions::default()).unwrap();
        let (_, docs) = bind_blocks(&plain, leaves, "n0", &view, site_params(&config)).unwrap();
        let roster = Roster::decode(&docs.roster).unwrap();
        assert_eq!((roster.stripes, roster.fanout), (4, 3));
    }

    /// What a member reads back: the info dict gains the `p2pu` key and nothing else changes;
    /// the leaf layer matches the root and the roster the digest the info-hash binds.
    #[test]
    fn the_block_tree_and_the_roster_are_bound_into_the_info_hash() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.bin");
        let data: Vec<u8> = (0..(5 << 20) + 123).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&file, &data).unwrap();
        let plain = torrent::create(
            &file,
            &CreateOptions {
                trackers: vec!["http://127.0.0.1:1/announce".into()],
                ..CreateOptions::default()
            },
        )
        .unwrap();
        let (sha, len, leaves) = hash_payload(&file, true).unwrap();
        assert_eq!(
            (sha, len),
            crate::agent::transfer::fetch::sha256_file(&file).unwrap()
        );
        let leaves = leaves.unwrap();
        let view = vec![("a".to_string(), None), ("b".to_string(), Some(5))];
        let (bound, docs) =
            bind_blocks(&plain, leaves.clone(), "a", &view, Params::DEFAULT).unwrap();
        assert_ne!(bound.info_hash, plain.info_hash);
        assert_eq!(
            (
                &bound.pieces,
                bound.total_length,
                &bound.name,
                &bound.trackers
            ),
            (
                &plain.pieces,
                plain.total_length,
                &plain.name,
                &plain.trackers
            )
        );
        let spec = blocks::Spec::from_metainfo(&bound.bytes).unwrap().unwrap();
        assert_eq!(spec.root, leaves.root());
        let read = Leaves::decode(spec.layout, &spec.root, &docs.leaves).unwrap();
        assert!(read.check(3, &data[3 * 16384..4 * 16384]).is_ok());
        let roster = Roster::decode_signed(&docs.roster, &spec.roster.unwrap()).unwrap();
        let have = crate::formats::have::Have::decode(&docs.have).unwrap();
        let stripes = topology::Plan::from_roster(&bound.info_hash, &roster)
            .unwrap()
            .stripes();
        assert_eq!(have.stripes() as usize, stripes);
        assert!((0..spec.layout.count()).all(|i| have.holds(i)));
        assert_eq!(roster.members, ["a", "b"]);
        let plan = topology::Plan::from_roster(&bound.info_hash, &roster).unwrap();
        assert_eq!(plan.name(plan.origin()), "a");
        // Without blocks asked for, the same read gives no leaves (chain mode).
        assert!(hash_payload(&file, false).unwrap().2.is_none());
    }
}
