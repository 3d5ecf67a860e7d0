//! `p2pu torrent create|show`: make a BitTorrent v1 .torrent for a file or directory, and print
//! what one holds.

use crate::cmd::Outcome;
use crate::formats::torrent::{self, CreateOptions, Metainfo};
use crate::{Env, Error, Result};
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;
use std::time::UNIX_EPOCH;

/// Inputs smaller than this hash in well under a second: no progress bar.
const PROGRESS_THRESHOLD: u64 = 64 << 20;

/// Create or inspect BitTorrent v1 .torrent files.
#[derive(Debug, clap::Subcommand)]
pub enum Torrent {
    Create(Create),
    Show(Show),
}

impl Torrent {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        match self {
            Torrent::Create(c) => c.run(env),
            Torrent::Show(c) => c.run(env),
        }
    }
}

/// Create a .torrent for a file or a directory (pieces hashed on all cores).
#[derive(Debug, clap::Args)]
pub struct Create {
    /// File or directory to share; symlinks, special files and empty directories are refused.
    pub path: PathBuf,
    /// Where to write the .torrent [default: NAME.torrent in the current directory].
    // `--output`, its name before issue 29, still parses (scripts use it), unshown.
    #[arg(short = 'o', long = "out", alias = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Replace the output file if it exists.
    #[arg(short, long)]
    pub force: bool,
    /// Piece size: bytes, or with a K or M suffix (256K, 1M); a power of two from 16K to 64M
    /// [default: the smallest that keeps the torrent at 2048 pieces or fewer, up to 16M].
    #[arg(long, value_name = "N", value_parser = parse_size)]
    pub piece_size: Option<u64>,
    /// Mark the torrent private (BEP 27): clients find peers through its trackers only.
    #[arg(long)]
    pub private: bool,
    /// Tracker announce URL; repeat for more trackers (each one its own tier).
    #[arg(long = "tracker", value_name = "URL")]
    pub trackers: Vec<String>,
    /// Web seed URL (BEP 19 `url-list`); repeat for more.
    #[arg(long = "web-seed", value_name = "URL")]
    pub web_seeds: Vec<String>,
    /// Torrent name [default: the file or directory name].
    #[arg(long)]
    pub name: Option<String>,
    /// Free-text comment stored in the torrent.
    #[arg(long)]
    pub comment: Option<String>,
    /// Leave out the creation date and creator, so the same input gives the same bytes.
    #[arg(long)]
    pub reproducible: bool,
    /// Show no progress bar while hashing.
    #[arg(long, short)]
    pub quiet: bool,
}

impl Create {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let path = env.resolve(&self.path);
        let bar = if env.interactive && !self.quiet {
            let total = torrent::content_length(&path)?;
            (total > PROGRESS_THRESHOLD).then(|| progress_bar(total))
        } else {
            None
        };
        let advance = |n: u64| {
            if let Some(bar) = &bar {
                bar.inc(n);
            }
        };
        let creation_date = (env.clock)()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_secs()).ok());
        let opts = CreateOptions {
            piece_length: self.piece_size,
            private: self.private.then_some(true),
            trackers: self.trackers,
            web_seeds: self.web_seeds,
            name: self.name,
            comment: self.comment,
            created_by: (!self.reproducible).then(|| format!("p2pu/{}", env!("CARGO_PKG_VERSION"))),
            creation_date: creation_date.filter(|_| !self.reproducible),
            progress: bar.as_ref().map(|_| &advance as &(dyn Fn(u64) + Sync)),
        };
        let metainfo = torrent::create(&path, &opts);
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
        let metainfo = metainfo?;
        let output = match &self.output {
            Some(o) => env.resolve(o),
            None => env.cwd.join(format!("{}.torrent", metainfo.name)),
        };
        if !self.force && output.symlink_metadata().is_ok() {
            return Err(Error::Usage(format!(
                "{} already exists; pass --force to replace it",
                output.display()
            )));
        }
        crate::fsutil::write_atomic(&output, &metainfo.bytes, 0o644)?;
        let out = &mut env.stdout;
        summary(out, &metainfo).map_err(Error::io("writing to", "stdout"))?;
        writeln!(out, "torrent:    {}", output.display())
            .map_err(Error::io("writing to", "stdout"))?;
        Ok(Outcome::Success)
    }
}

/// Print a .torrent's name, info-hash, size, pieces, trackers and files.
#[derive(Debug, clap::Args)]
pub struct Show {
    /// The .torrent file to read.
    pub file: PathBuf,
    /// Print JSON (a TorrentReport) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `p2pu torrent show --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorrentReport {
    pub name: String,
    pub info_hash: String,
    /// Total payload bytes.
    pub length: u64,
    pub piece_length: u64,
    pub pieces: usize,
    /// `None`: no `private` key; `Some(false)`: `private: 0`.
    pub private: Option<bool>,
    pub created_by: Option<String>,
    pub comment: Option<String>,
    /// Seconds since the epoch.
    pub creation_date: Option<i64>,
    pub trackers: Vec<String>,
    pub web_seeds: Vec<String>,
    pub files: Vec<TorrentFileReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorrentFileReport {
    /// Path components below the torrent's name (a single-file torrent: `[name]`).
    pub path: Vec<String>,
    pub length: u64,
}

impl TorrentReport {
    fn of(m: &Metainfo) -> TorrentReport {
        TorrentReport {
            name: m.name.clone(),
            info_hash: m.info_hash_hex(),
            length: m.total_length,
            piece_length: m.piece_length,
            pieces: m.piece_count(),
            private: m.private,
            created_by: m.created_by.clone(),
            comment: m.comment.clone(),
            creation_date: m.creation_date,
            trackers: m.trackers.clone(),
            web_seeds: m.web_seeds.clone(),
            files: m
                .files
                .iter()
                .map(|f| TorrentFileReport {
                    path: f.path.clone(),
                    length: f.length,
                })
                .collect(),
        }
    }
}

impl Show {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let metainfo = torrent::read(&env.resolve(&self.file))?;
        if self.json {
            crate::cmd::emit(env, true, &TorrentReport::of(&metainfo), |_| String::new())?;
            return Ok(Outcome::Success);
        }
        show(&mut env.stdout, &metainfo).map_err(Error::io("writing to", "stdout"))?;
        Ok(Outcome::Success)
    }
}

fn summary(out: &mut dyn Write, m: &Metainfo) -> std::io::Result<()> {
    writeln!(out, "name:       {}", m.name)?;
    writeln!(out, "info-hash:  {}", m.info_hash_hex())?;
    writeln!(
        out,
        "size:       {} ({} bytes)",
        HumanBytes(m.total_length),
        m.total_length
    )?;
    writeln!(
        out,
        "pieces:     {} x {}",
        m.piece_count(),
        HumanBytes(m.piece_length)
    )
}

fn show(out: &mut dyn Write, m: &Metainfo) -> std::io::Result<()> {
    summary(out, m)?;
    let private = match m.private {
        Some(true) => "yes",
        Some(false) => "no (private: 0)",
        None => "no",
    };
    writeln!(out, "private:    {private}")?;
    for (label, value) in [("created by", &m.created_by), ("comment", &m.comment)] {
        if let Some(value) = value {
            writeln!(out, "{:<11} {value}", format!("{label}:"))?;
        }
    }
    if let Some(date) = m.creation_date {
        writeln!(out, "created:    {date} (seconds since the epoch)")?;
    }
    for tracker in &m.trackers {
        writeln!(out, "tracker:    {tracker}")?;
    }
    for seed in &m.web_seeds {
        writeln!(out, "web seed:   {seed}")?;
    }
    writeln!(out, "files:")?;
    for file in &m.files {
        writeln!(out, "  {:>14}  {}", file.length, file.path.join("/"))?;
    }
    Ok(())
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "hashing {wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Parses `16384`, `256K`/`256KiB`, `1M`/`1MiB` (binary units, any case) into bytes.
fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let (digits, unit) = [
        ("kib", 1u64 << 10),
        ("k", 1 << 10),
        ("mib", 1 << 20),
        ("m", 1 << 20),
    ]
    .iter()
    .find_map(|(suffix, unit)| lower.strip_suffix(suffix).map(|d| (d, *unit)))
    .unwrap_or((lower.as_str(), 1));
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("{text:?} is not a size like 262144, 256K or 1M"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::testing::run;
    use crate::cmd::Cli;
    use clap::Parser;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("16384"), Ok(16384));
        assert_eq!(parse_size("256K"), Ok(256 << 10));
        assert_eq!(parse_size("256kib"), Ok(256 << 10));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert!(parse_size("1G").is_err());
        assert!(parse_size("K").is_err());
        assert!(parse_size("99999999999999999M").is_err());
    }

    #[test]
    fn create_then_show() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("site.pp"), b"notice('hi')\n").unwrap();
        let (code, out, err) = run(
            dir.path(),
            &[
                "torrent",
                "create",
                "site.pp",
                "--piece-size",
                "16K",
                "--private",
                "--tracker",
                "http://127.0.0.1:9/announce",
            ],
        );
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("name:       site.pp"), "{out}");
        assert!(out.contains("pieces:     1 x 16.00 KiB"), "{out}");
        let m = torrent::read(&dir.path().join("site.pp.torrent")).unwrap();
        assert_eq!(m.private, Some(true));
        assert_eq!(
            m.created_by.as_deref(),
            Some(concat!("p2pu/", env!("CARGO_PKG_VERSION")))
        );
        assert!(out.contains(&m.info_hash_hex()));

        let (code, out, err) = run(dir.path(), &["torrent", "show", "site.pp.torrent"]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("tracker:    http://127.0.0.1:9/announce"),
            "{out}"
        );
        assert!(out.contains("              13  site.pp"), "{out}");

        let (code, out, err) = run(
            dir.path(),
            &["torrent", "show", "site.pp.torrent", "--json"],
        );
        assert_eq!(code, 0, "{err}");
        let report: TorrentReport = crate::cmd::json::decode(out.as_bytes()).unwrap();
        assert_eq!(report, TorrentReport::of(&m));
        assert_eq!((report.length, report.pieces), (13, 1));
        assert_eq!(report.trackers, ["http://127.0.0.1:9/announce"]);
        assert_eq!(report.files[0].path, ["site.pp"]);
    }

    #[test]
    fn create_refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"x").unwrap();
        std::fs::write(dir.path().join("a.torrent"), b"old").unwrap();
        let (code, _, err) = run(dir.path(), &["torrent", "create", "a", "--reproducible"]);
        assert_eq!(code, 1);
        assert!(err.contains("already exists; pass --force"), "{err}");
        let (code, _, err) = run(
            dir.path(),
            &["torrent", "create", "a", "--reproducible", "-f"],
        );
        assert_eq!(code, 0, "{err}");
        let m = torrent::read(&dir.path().join("a.torrent")).unwrap();
        assert_eq!((m.created_by, m.creation_date), (None, None));
    }

    #[test]
    fn show_names_the_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.torrent"), b"d4:infoi1ee").unwrap();
        let (code, _, err) = run(dir.path(), &["torrent", "show", "bad.torrent"]);
        assert_eq!(code, 1);
        assert!(
            err.contains("bad.torrent: invalid torrent: `info` is not a dict"),
            "{err}"
        );
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "p2pu",
            "torrent",
            "create",
            "x",
            "--tracker",
            "a",
            "--tracker",
            "b",
            "--web-seed",
            "w",
        ])
        .unwrap();
        let crate::cmd::Command::Torrent(Torrent::Create(c)) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(c.trackers, ["a", "b"]);
        assert_eq!(c.web_seeds, ["w"]);
    }
}
