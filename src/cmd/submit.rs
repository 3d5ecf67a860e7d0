//! `p2pu submit`: makes the torrent, seeds the payload in the local Transmission, signs the
//! announcement with the node's key and broadcasts it as a Serf user event with coalescing
//! off. With `--wait`, follows the rollout until every alive member applied it.

use crate::agent::fetch::sha256_file;
use crate::agent::kind;
use crate::cmd::fleet::{fleet_status, MemberReport};
use crate::cmd::Outcome;
use crate::config::{Config, MachineFacts};
use crate::engines::{Gossip, TorrentEngine};
use crate::error::{Error, Result};
use crate::formats::announcement::{validate_name, Announcement, Draft, Kind, EVENT_NAME};
use crate::formats::torrent::{self, CreateOptions};
use crate::provision::Owners;
use crate::Env;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Sign an update and send it to every node of the fleet.
///
/// A directory is sent as one archive (kind `dir`). Prints the update's name, seq and
/// info-hash.
#[derive(Debug, clap::Args)]
pub struct Submit {
    /// The file or directory to send.
    path: PathBuf,
    /// What the payload is; detected from the file when absent.
    #[arg(long, value_enum)]
    kind: Option<Kind>,
    /// The update's name (one path component, at most 64 bytes); default: the file name.
    #[arg(long)]
    name: Option<String>,
    /// The update's sequence number; default: now, in milliseconds since the epoch.
    #[arg(long)]
    seq: Option<u64>,
    /// The site config.
    #[arg(long, env = "P2PU_CONFIG", default_value = "/etc/p2pu/site.toml")]
    config: PathBuf,
    /// Follow the rollout until every alive member applied the update.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

/// What `submit` made, for the caller and the overlay.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub name: String,
    pub seq: u64,
    pub info_hash: String,
    pub wire: String,
}

impl Submit {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let config = Config::load(&env.resolve(&self.config), Some(&MachineFacts::probe()))?;
        let source = env.resolve(&self.path);
        let seq = self.seq.unwrap_or_else(|| env.unix_now_ms());
        let engine = crate::node::transmission(&config)?;
        let submitted = prepare(&config, &source, self.kind, self.name.clone(), seq, &engine)?;
        let gossip = crate::node::serf(&config)?;
        gossip.user_event(EVENT_NAME, submitted.wire.as_bytes(), false)?;
        writeln!(env.stdout, "{submitted}").map_err(Error::io("writing to", "standard output"))?;
        if !self.wait {
            return Ok(Outcome::Success);
        }
        wait_for_rollout(env, &gossip, &submitted, Duration::from_secs(self.timeout))
    }
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

/// Everything before the broadcast: the payload seeded locally and the signed announcement.
pub fn prepare(
    config: &Config,
    source: &Path,
    kind: Option<Kind>,
    name: Option<String>,
    seq: u64,
    engine: &dyn TorrentEngine,
) -> Result<Submitted> {
    let site = &config.site;
    let key = crate::keys::read_secret(&site.agent.signing_key)?;
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
        kind::pack_dir(source, &packed)?;
        packed
    } else {
        source.to_path_buf()
    };
    let options = CreateOptions {
        name: Some(name.clone()),
        trackers: vec![crate::node::tracker_url(config)],
        ..CreateOptions::default()
    };
    let torrent = torrent::create(&payload, &options)?;
    let info_hash = torrent.info_hash_hex();
    let seed_dir = site.transmission.download_dir.join(&info_hash);
    let seeded = seed_dir.join(&name);
    copy_for_seeding(&payload, &seed_dir, &seeded, &site.transmission.user)?;
    let (sha256, len) = sha256_file(&seeded).map_err(Error::io("reading", &seeded))?;
    engine.add_metainfo(&torrent.bytes, Some(&seed_dir), false)?;
    // The agent's web seed server hands this to the members, and serves the payload once it
    // sees it.
    let metainfo =
        crate::agent::seed_http::completion_mark(&site.transmission.download_dir, &info_hash);
    crate::fsutil::write_atomic(&metainfo, &torrent.bytes, 0o644)?;
    let draft = Draft {
        seq,
        name: name.clone(),
        kind,
        info_hash: torrent.info_hash,
        len,
        sha256,
    };
    let announcement = Announcement::sign(draft, &key)?;
    Ok(Submitted {
        name,
        seq,
        info_hash,
        wire: announcement.to_wire(),
    })
}

/// Puts the payload where Transmission seeds it, owned by the daemon's user and readable by
/// the agent's unprivileged web seed server (`agent.serve_user`): 0755 and 0644 whatever the
/// submitter's umask or the source's mode, as Transmission (umask 022) writes it on every
/// other node.
fn copy_for_seeding(payload: &Path, dir: &Path, dest: &Path, user: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(Error::io("setting the mode of", dir))?;
    let tmp = dir.join(format!(".p2pu-copy-{}", std::process::id()));
    // `copy` keeps the source's mode, e.g. 0600.
    std::fs::copy(payload, &tmp).map_err(Error::io("copying the payload to", &tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
        .map_err(Error::io("setting the mode of", &tmp))?;
    std::fs::rename(&tmp, dest).map_err(Error::io("renaming into place", dest))?;
    let owners = Owners::new(None);
    owners.chown(dir, Some(user))?;
    owners.chown(dest, Some(user))
}

fn wait_for_rollout(
    env: &mut Env,
    gossip: &dyn Gossip,
    update: &Submitted,
    timeout: Duration,
) -> Result<Outcome> {
    let deadline = Instant::now() + timeout;
    let mut last_line = String::new();
    loop {
        let reports = fleet_status(
            gossip,
            Duration::from_secs(2),
            Some(&update.name),
            env.unix_now(),
        )?;
        let tally = Tally::of(&reports, update.seq);
        let line = format!(
            "{}/{} applied, {} failed, {} waiting",
            tally.applied,
            tally.alive,
            tally.failed.len(),
            tally.waiting.len()
        );
        if line != last_line {
            writeln!(env.stderr, "{line}").map_err(Error::io("writing to", "standard error"))?;
            last_line = line;
        }
        if tally.waiting.is_empty() {
            if tally.failed.is_empty() {
                return Ok(Outcome::Success);
            }
            return Err(Error::Usage(format!(
                "{} seq {} failed on: {}",
                update.name,
                update.seq,
                tally.failed.join(", ")
            )));
        }
        if Instant::now() >= deadline {
            return Err(Error::Usage(format!(
                "timed out after {} s; still waiting for: {}",
                timeout.as_secs(),
                tally.waiting.join(", ")
            )));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Where a rollout stands.
struct Tally {
    alive: usize,
    applied: usize,
    failed: Vec<String>,
    waiting: Vec<String>,
}

impl Tally {
    fn of(reports: &[MemberReport], seq: u64) -> Tally {
        let mut tally = Tally {
            alive: 0,
            applied: 0,
            failed: Vec::new(),
            waiting: Vec::new(),
        };
        for report in reports.iter().filter(|r| r.alive) {
            tally.alive += 1;
            let status = report
                .updates
                .as_ref()
                .and_then(|u| u.iter().find(|u| u.seq == seq))
                .map(|u| u.status);
            match status {
                Some(crate::agent::state::Status::Applied) => tally.applied += 1,
                Some(crate::agent::state::Status::Failed) => tally.failed.push(report.node.clone()),
                _ => tally.waiting.push(report.node.clone()),
            }
        }
        tally
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
}
