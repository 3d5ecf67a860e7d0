//! Issue #13 item 1 on the real `puppet apply` (7.23): a payload already complete in the
//! download dir (the submitter's own copy) is verified; then Transmission's user, who owns the
//! download dir, renames the `<info-hash>` directory and plants another manifest in its place
//! before Puppet runs (here a process as `nobody`, started just before Puppet). Root must run
//! the signed manifest, never the planted one.

use p2pu::agent::apply::extract::Limits;
use p2pu::agent::apply::ApplyContext;
use p2pu::agent::runtime::state::{Record, RecordKind};
use p2pu::agent::transfer::fetch::Fetcher;
use p2pu::agent::transfer::http_get::Client;
use p2pu::agent::transfer::pace::{MinRate, Pace};
use p2pu::agent::transfer::verified;
use p2pu::engines::puppet::ModuleInstalled;
use p2pu::engines::transmission::{Added, Session, TorrentStatus};
use p2pu::engines::{Applier, ApplyReport, Puppet, PuppetError, TorrentEngine, TransmissionError};
use p2pu::formats::announcement::Kind;
use p2pu::formats::torrent::{create, CreateOptions};
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

const NOBODY: u32 = 65534;

/// The payload is already here: the fetcher must not need Transmission.
struct NoEngine;

impl TorrentEngine for NoEngine {
    fn session_get(&self) -> Result<Session, TransmissionError> {
        unreachable!("the payload is local")
    }
    fn add_magnet(&self, _: &str, _: Option<&Path>, _: bool) -> Result<Added, TransmissionError> {
        unreachable!("the payload is local")
    }
    fn add_metainfo(
        &self,
        _: &[u8],
        _: Option<&Path>,
        _: bool,
    ) -> Result<Added, TransmissionError> {
        unreachable!("the payload is local")
    }
    fn get(&self, _: &[String]) -> Result<Vec<TorrentStatus>, TransmissionError> {
        unreachable!("the payload is local")
    }
    fn start(&self, _: &str) -> Result<(), TransmissionError> {
        unreachable!("the payload is local")
    }
    fn stop(&self, _: &str) -> Result<(), TransmissionError> {
        unreachable!("the payload is local")
    }
    fn verify(&self, _: &str) -> Result<(), TransmissionError> {
        unreachable!("the payload is local")
    }
    fn remove(&self, _: &str, _: bool) -> Result<(), TransmissionError> {
        unreachable!("the payload is local")
    }
}

/// The download dir's owner swaps the payload, then the real Puppet applies what it is given.
struct SwapThenPuppet {
    downloads: PathBuf,
    hash: String,
    evil: PathBuf,
    puppet: Puppet,
}

impl Applier for SwapThenPuppet {
    fn apply(&self, manifest: &Path) -> Result<ApplyReport, PuppetError> {
        let hash = &self.hash;
        let swap = format!(
            "mv {hash} {hash}.old && mkdir {hash} && cp {} {hash}/site.pp",
            self.evil.display()
        );
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
            .expect("setpriv runs");
        assert!(
            status.success(),
            "the download dir's owner swaps the payload"
        );
        self.puppet.apply(manifest)
    }
    fn module_install(&self, _: &Path, _: &Path) -> Result<ModuleInstalled, PuppetError> {
        unreachable!("a manifest")
    }
}

fn manifest(out: &Path, word: &str) -> String {
    format!("file {{ '{}': content => \"{word}\\n\" }}\n", out.display())
}

#[test]
fn puppet_runs_the_signed_manifest_when_the_payload_is_swapped_after_the_check() {
    let tmp = tempfile::tempdir().unwrap();
    // `nobody` must reach the download dir, as Transmission's user does.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = tmp.path().join("out.txt");
    let evil = tmp.path().join("evil.pp");
    std::fs::write(&evil, manifest(&out, "evil")).unwrap();
    std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o644)).unwrap();

    // The submitter's copy, seeded from the download dir that Transmission's user owns.
    let source = tmp.path().join("site.pp");
    let good = manifest(&out, "good");
    std::fs::write(&source, &good).unwrap();
    let torrent = create(&source, &CreateOptions::default()).unwrap();
    let hash = torrent.info_hash_hex();
    let downloads = tmp.path().join("downloads");
    let payload_dir = downloads.join(&hash);
    std::fs::create_dir_all(&payload_dir).unwrap();
    std::fs::copy(&source, payload_dir.join("site.pp")).unwrap();
    std::fs::write(
        p2pu::agent::transfer::download_dir::DownloadDir::new(&downloads).completion_mark(&hash),
        &torrent.bytes,
    )
    .unwrap();
    let nobody = Some(nix::unistd::Uid::from_raw(NOBODY));
    for path in [&downloads, &payload_dir, &payload_dir.join("site.pp")] {
        nix::unistd::chown(path.as_path(), nobody, None).unwrap();
    }

    let record = Record {
        info_hash: hash.clone(),
        len: good.len() as u64,
        sha256: Some(Sha256::digest(good.as_bytes()).into()),
        ..Record::received("site.pp".into(), 1, RecordKind::Signed(Kind::Manifest), 0)
    };
    let stop = AtomicBool::new(false);
    let state = tmp.path().join("state");
    let verified_root = verified::root_of(&state);
    let fetcher = Fetcher {
        engine: &NoEngine,
        download_root: &downloads,
        tracker_url: "http://127.0.0.1:1/announce",
        poll: Duration::from_millis(10),
        stop: &stop,
        seeds: &Vec::new,
        own_seed: None,
        client: Client {
            bind: None,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
        },
        verified_root: &verified_root,
        pace: Pace {
            floor: MinRate::per_second(64 << 10, Duration::from_secs(30)),
            slack: Duration::from_secs(60),
        },
        stripes: None,
    };
    let fetched = fetcher
        .fetch(&record, None)
        .unwrap_or_else(|e| panic!("{}", p2pu::error::chain(&e)));

    let puppet = SwapThenPuppet {
        downloads: downloads.clone(),
        hash: hash.clone(),
        evil: evil.clone(),
        puppet: Puppet {
            vardir_root: Some(tmp.path().join("puppet-root")),
            ..Puppet::default()
        },
    };
    let context = ApplyContext {
        puppet: &puppet,
        modulepath: None,
        archive_dir: &tmp.path().join("archives"),
        trusted_keys_dir: &tmp.path().join("keys"),
        key_policy: p2pu::trust::KeyPolicy {
            key_threshold: 1,
            fleet: p2pu::formats::announcement::FleetId([0; 8]),
        },
        limits: Limits::default(),
    };
    let applied = context
        .apply_verified(Kind::Manifest, "site.pp", fetched.payload, None)
        .unwrap_or_else(|e| panic!("{}", p2pu::error::chain(&e)));
    assert!(
        applied.summary.contains("changes made"),
        "{}",
        applied.summary
    );
    assert_eq!(
        std::fs::read_to_string(payload_dir.join("site.pp")).unwrap(),
        manifest(&out, "evil"),
        "the swap happened before Puppet ran"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "good\n");
    assert_eq!(
        std::fs::read_dir(&verified_root).unwrap().count(),
        0,
        "the verified copy is gone once applied"
    );
}
