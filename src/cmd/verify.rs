//! `p2pu verify FILE`: offline inspection of anything p2pu signs, against a trusted-keys dir
//! ([`crate::inspect`] decides; this reads the files and prints). The file may be anyone's (a
//! plan copied out of the download dir, a text pasted from a chat), so it is read through
//! [`crate::untrusted`]: no link followed, no FIFO waited on, at most
//! [`inspect::MAX_FILE_BYTES`] read.

use crate::agent::runtime::intake::Thresholds;
// Every field comes from a file anyone may have written: it must not move the operator's
// cursor or set the terminal's title.
use crate::agent::runtime::status::printable;
use crate::cmd::{exit, ConfigArg, Outcome};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::inspect::{self, Policy, Verdict, VerifyReport};
use crate::trust::Trust;
use crate::Env;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Say what a signed file is and whether it verifies, offline.
///
/// Reads an announcement (`p2pu2:...`, a `submit --sign-only` file), a rollout plan
/// (`<info-hash>.plan`), a control statement, a heartbeat, a snapshot, a key statement, a root
/// document or chain, a public key or a revocation; prints its fields, each signature (valid,
/// bad, not trusted, revoked; root or delegated key) and the verdict with its reason. The
/// signers are checked against --keys (default: the config's agent.trusted_keys_dir), and, when
/// the config can be read, its fleet and thresholds; a node's own state (which seq it accepted)
/// is not consulted. A plan or snapshot is signed through its announcement or heartbeat: give
/// that with --with.
///
/// Exits 0 when the file is valid, 3 when it is not (malformed, tampered, signed by keys not
/// trusted here, too few signers, another fleet's, expired), 4 when it is well-formed but
/// carries no signature of its own (a plan or snapshot without --with, a public key), 1 when
/// the file or the keys could not be read.
#[derive(Debug, clap::Args)]
pub struct Verify {
    /// The file to inspect (`-`: standard input).
    file: PathBuf,
    /// The file it is signed with or through: an announcement's plan, a plan's announcement, a
    /// heartbeat's snapshot or a snapshot's heartbeat.
    #[arg(long, value_name = "FILE")]
    with: Option<PathBuf>,
    /// The trusted-keys dir; default: agent.trusted_keys_dir of the config.
    #[arg(long, value_name = "DIR")]
    keys: Option<PathBuf>,
    #[command(flatten)]
    config: ConfigArg,
    /// Print JSON (an Inspection) instead of text.
    #[arg(long)]
    json: bool,
}

impl Verify {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let bytes = read(env, &self.file)?;
        let with = match &self.with {
            Some(path) => Some(read(env, path)?),
            None => None,
        };
        // The config is optional when --keys says where the keys are: an operator may verify
        // on a workstation that is no node.
        let config_path = self.config.resolve(env);
        let config = match Config::load(&config_path, None) {
            Ok(config) => Some(config),
            Err(e) if self.keys.is_some() => {
                tracing::debug!("verify without a config: {}", crate::error::chain(&e));
                None
            }
            Err(e) => {
                return Err(Error::Usage(format!(
                    "{}; give the trusted keys with --keys DIR to verify without it",
                    crate::error::chain(&e)
                )))
            }
        };
        let keys = match (&self.keys, &config) {
            (Some(dir), _) => env.resolve(dir),
            (None, Some(c)) => c.site.agent.trusted_keys_dir.clone(),
            (None, None) => return Err(Error::Internal("no keys dir and no config".into())),
        };
        if !keys.is_dir() {
            return Err(Error::Usage(format!(
                "{}: no trusted-keys dir there (give one with --keys DIR)",
                keys.display()
            )));
        }
        let trust = Trust::load(&keys)?;
        let policy = match &config {
            Some(c) => Policy {
                fleet: c.fleet_id().ok(),
                thresholds: Thresholds::of(&c.site.agent),
                accept_v1: c.site.agent.accept_v1,
                now: env.unix_now(),
            },
            None => Policy {
                fleet: None,
                thresholds: Thresholds::one(),
                accept_v1: true,
                now: env.unix_now(),
            },
        };
        let inspection = inspect::inspect(&bytes, with.as_deref(), &trust, &policy);
        let report = VerifyReport {
            file: self.file.display().to_string(),
            keys: keys.display().to_string(),
            config: config.is_some(),
            inspection,
        };
        crate::cmd::emit(env, self.json, &report, text)?;
        Ok(match report.inspection.verdict {
            Verdict::Valid => Outcome::Success,
            Verdict::Invalid => Outcome::Status(exit::INVALID),
            Verdict::Unsigned => Outcome::Status(exit::UNSIGNED),
        })
    }
}

/// `path`'s bytes, or standard input's for `-`, at most [`inspect::MAX_FILE_BYTES`].
fn read(env: &mut Env, path: &Path) -> Result<Vec<u8>> {
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        (&mut env.stdin)
            .take(inspect::MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(Error::io("reading", "standard input"))?;
        if bytes.len() as u64 > inspect::MAX_FILE_BYTES {
            return Err(Error::Usage(format!(
                "standard input is larger than the {} bytes anything p2pu signs may be",
                inspect::MAX_FILE_BYTES
            )));
        }
        return Ok(bytes);
    }
    let path = env.resolve(path);
    crate::untrusted::read(&path, inspect::MAX_FILE_BYTES).map_err(|e| {
        if e.is_missing() {
            return Error::Usage(format!("{}: no such file", path.display()));
        }
        Error::Usage(format!(
            "{}; `p2pu verify` reads a regular file of at most {} bytes",
            crate::error::chain(&e),
            inspect::MAX_FILE_BYTES
        ))
    })
}

fn text(r: &VerifyReport) -> String {
    let i = &r.inspection;
    let mut out = format!("{}: {}\n", r.file, i.format);
    let width = i.fields.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (name, value) in &i.fields {
        out.push_str(&format!(
            "  {:width$}  {}\n",
            printable(name),
            printable(value)
        ));
    }
    for s in &i.signers {
        let role = s
            .role
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        out.push_str(&format!("  signed by {}: {}{role}\n", s.kid, s.signature));
    }
    let verdict = match i.verdict {
        Verdict::Valid => "valid",
        Verdict::Invalid => "INVALID",
        Verdict::Unsigned => "not signed on its own",
    };
    let against = if r.config {
        format!("keys in {}, the config's fleet and thresholds", r.keys)
    } else {
        format!("keys in {}, any fleet, one signer", r.keys)
    };
    match &i.reason {
        Some(reason) => out.push_str(&format!(
            "{verdict}: {} (checked against {against})\n",
            printable(reason)
        )),
        None => out.push_str(&format!("{verdict} (checked against {against})\n")),
    }
    out
}
