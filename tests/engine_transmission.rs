//! The Transmission RPC client against a real `transmission-daemon` 3.00 on loopback.

mod support;

use anyhow::{bail, Context, Result};
use p2pu::engines::{
    Credentials, Retry, TorrentEngine, TorrentState, TorrentStatus, Transmission, TransmissionError,
};
use rand::RngCore;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{free_port, start_transmission, wait_for, TransmissionDaemon};

fn daemon(dir: &Path) -> Result<TransmissionDaemon> {
    start_transmission(dir, free_port(), free_port(), "p2pu", "correct horse")
}

/// Writes `len` random bytes to `download_dir/name` and makes a torrent of it with
/// `transmission-create`; returns the .torrent bytes and the info-hash `transmission-show`
/// reports.
fn make_torrent(
    dir: &Path,
    download_dir: &Path,
    name: &str,
    len: usize,
) -> Result<(Vec<u8>, String)> {
    let mut data = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut data);
    let payload = download_dir.join(name);
    std::fs::write(&payload, &data)?;
    let torrent = dir.join(format!("{name}.torrent"));
    let created = Command::new("transmission-create")
        .arg("-o")
        .arg(&torrent)
        .arg(&payload)
        .output()?;
    if !created.status.success() {
        bail!(
            "transmission-create: {}",
            String::from_utf8_lossy(&created.stderr)
        );
    }
    let shown = Command::new("transmission-show").arg(&torrent).output()?;
    let text = String::from_utf8_lossy(&shown.stdout);
    let hash = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("Hash: "))
        .context("transmission-show printed no hash")?
        .to_owned();
    Ok((std::fs::read(&torrent)?, hash))
}

fn status_of(client: &Transmission, hash: &str) -> Result<Option<TorrentStatus>> {
    Ok(client.get(&[hash.to_owned()])?.into_iter().next())
}

/// Waits until the torrent satisfies `want`; the error shows the last status seen.
fn wait_status(
    client: &Transmission,
    hash: &str,
    timeout: Duration,
    want: impl Fn(&TorrentStatus) -> bool,
) -> Result<TorrentStatus> {
    let mut last = None;
    let found = wait_for(timeout, || {
        last = status_of(client, hash).ok().flatten();
        last.clone().filter(|s| want(s))
    });
    found.with_context(|| format!("torrent {hash} never reached the wanted state; last: {last:?}"))
}

#[test]
fn wrong_password_is_refused_as_unauthorized_and_the_right_one_accepted() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = daemon(dir.path())?;
    let wrong = Transmission::new(
        node.url.clone(),
        Some(Credentials {
            user: "p2pu".into(),
            password: "wrong battery".into(),
        }),
    );
    match wrong.session_get() {
        Err(err @ TransmissionError::Unauthorized { .. }) => {
            let text = err.to_string();
            assert!(
                text.contains(&node.url) && text.contains("\"p2pu\""),
                "{text}"
            );
            assert!(!text.contains("battery"), "{text}");
        }
        other => bail!("want Unauthorized, got {other:?}"),
    }
    let anonymous = Transmission::new(node.url.clone(), None);
    assert!(matches!(
        anonymous.session_get(),
        Err(TransmissionError::CredentialsRequired { .. })
    ));
    let session = node.client().session_get()?;
    assert!(session.version.starts_with("3.00"), "{session:?}");
    assert_eq!(session.rpc_version, 16);
    assert_eq!(session.download_dir, node.download_dir);
    Ok(())
}

#[test]
fn metainfo_with_its_data_present_verifies_and_seeds() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = daemon(dir.path())?;
    let client = node.client();
    let (metainfo, hash) = make_torrent(dir.path(), &node.download_dir, "payload.bin", 1 << 20)?;

    let added = client.add_metainfo(&metainfo, Some(&node.download_dir), false)?;
    assert_eq!(added.hash_string, hash);
    assert_eq!(added.name, "payload.bin");
    assert!(!added.duplicate);

    let started = Instant::now();
    let seeding = wait_status(&client, &hash, Duration::from_secs(30), |s| {
        s.status == TorrentState::Seeding
    })?;
    eprintln!(
        "1 MiB torrent verified and seeding after {:?}",
        started.elapsed()
    );
    assert!(seeding.is_complete());
    assert_eq!(seeding.percent_done, 1.0);
    assert_eq!(seeding.left_until_done, 0);
    assert_eq!(seeding.total_size, 1 << 20);
    assert_eq!(seeding.size_when_done, 1 << 20);
    assert_eq!(seeding.metadata_percent_complete, 1.0);
    assert_eq!(seeding.error, 0, "{}", seeding.error_string);
    assert_eq!(seeding.download_dir, node.download_dir);

    // Adding it again is not an error, and names the same torrent.
    let again = client.add_metainfo(&metainfo, None, false)?;
    assert!(again.duplicate);
    assert_eq!(again.hash_string, hash);

    client.stop(&hash)?;
    wait_status(&client, &hash, Duration::from_secs(10), |s| {
        s.status == TorrentState::Stopped
    })?;
    client.verify(&hash)?;
    client.start(&hash)?;
    wait_status(&client, &hash, Duration::from_secs(30), |s| {
        s.status == TorrentState::Seeding && s.is_complete()
    })?;

    // Hashes are matched whatever their case.
    assert_eq!(client.get(&[hash.to_uppercase()])?.len(), 1);

    client.remove(&hash, false)?;
    assert!(
        support::wait_until(Duration::from_secs(10), || matches!(
            status_of(&client, &hash),
            Ok(None)
        )),
        "torrent still listed after remove"
    );
    assert!(
        node.download_dir.join("payload.bin").is_file(),
        "remove without delete kept the data"
    );

    client.add_metainfo(&metainfo, None, true)?;
    client.remove(&hash, true)?;
    let gone = support::wait_until(Duration::from_secs(10), || {
        !node.download_dir.join("payload.bin").exists()
    });
    assert!(gone, "remove with delete_local_data left the data");
    Ok(())
}

#[test]
fn magnet_appears_with_its_hash_and_a_duplicate_add_is_fine() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = daemon(dir.path())?;
    let client = node.client();
    let mut ih = [0u8; 20];
    rand::thread_rng().fill_bytes(&mut ih);
    let hash = hex::encode(ih);
    // Upper-case hex in the link: the daemon reports it lower-case.
    let magnet = format!("magnet:?xt=urn:btih:{}&dn=site.pp", hash.to_uppercase());
    let elsewhere: PathBuf = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere)?;

    let added = client.add_magnet(&magnet, Some(&elsewhere), true)?;
    assert_eq!(added.hash_string, hash);
    assert_eq!(added.name, "site.pp");
    assert!(!added.duplicate);

    // A paused add passes through CheckWait for a moment before it settles as Stopped.
    let status = wait_status(&client, &hash, Duration::from_secs(10), |s| {
        s.status == TorrentState::Stopped
    })?;
    assert_eq!(status.name, "site.pp");
    assert_eq!(status.metadata_percent_complete, 0.0);
    assert!(!status.is_complete());
    assert_eq!(status.download_dir, elsewhere);

    let again = client.add_magnet(&magnet, None, true)?;
    assert!(again.duplicate);
    assert_eq!(again.id, added.id);

    // Unknown hashes are left out, not errors.
    let other = "0".repeat(40);
    assert_eq!(client.get(&[hash.clone(), other])?.len(), 1);

    client.remove(&hash, false)?;
    assert!(support::wait_until(Duration::from_secs(10), || matches!(
        status_of(&client, &hash),
        Ok(None)
    )));
    Ok(())
}

#[test]
fn corrupt_metainfo_is_an_rpc_error_naming_the_method() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = daemon(dir.path())?;
    match node.client().add_metainfo(b"not a torrent", None, true) {
        Err(TransmissionError::Rpc { method, result }) => {
            assert_eq!(method, "torrent-add");
            assert_eq!(result, "invalid or corrupt torrent file");
        }
        other => bail!("want Rpc, got {other:?}"),
    }
    Ok(())
}

#[test]
fn unreachable_port_is_a_typed_error_after_bounded_retries() -> Result<()> {
    let port = free_port();
    let url = Transmission::local_url(port);
    let client = Transmission::new(url.clone(), None).with_retry(Retry {
        attempts: 3,
        first_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(100),
    });
    let started = Instant::now();
    match client.session_get() {
        Err(err @ TransmissionError::Unreachable { attempts: 3, .. }) => {
            let text = p2pu::error::chain(&err);
            assert!(text.contains(&url), "{text}");
            assert!(text.to_lowercase().contains("refused"), "{text}");
        }
        other => bail!("want Unreachable after 3 attempts, got {other:?}"),
    }
    let elapsed = started.elapsed();
    // Two pauses: 50 ms + 100 ms. The attempt count above bounds the retries; no upper time
    // bound, which a loaded machine could miss.
    assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");

    let once = Transmission::new(url, None).with_retry(Retry::none());
    assert!(matches!(
        once.session_get(),
        Err(TransmissionError::Unreachable { attempts: 1, .. })
    ));
    Ok(())
}

#[test]
fn client_survives_a_daemon_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (rpc_port, peer_port) = (free_port(), free_port());
    let mut node = start_transmission(dir.path(), rpc_port, peer_port, "p2pu", "pw")?;
    let client = node.client();
    client.session_get()?;
    node.daemon.stop();
    drop(node);
    let node = start_transmission(dir.path(), rpc_port, peer_port, "p2pu", "pw")?;
    // Same client: its pooled keep-alive connection is dead and its session id stale; the next
    // call must still succeed (ureq drops pooled connections the server closed).
    let session = client.session_get()?;
    assert_eq!(session.download_dir, node.download_dir);
    Ok(())
}

#[test]
fn client_waits_for_a_daemon_that_is_still_starting() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let rpc_port = free_port();
    let peer_port = free_port();
    let client = Transmission::new(
        Transmission::local_url(rpc_port),
        Some(Credentials {
            user: "p2pu".into(),
            password: "pw".into(),
        }),
    )
    .with_retry(Retry {
        attempts: 40,
        first_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(250),
    });
    let path = dir.path().to_path_buf();
    let starter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        start_transmission(&path, rpc_port, peer_port, "p2pu", "pw")
    });
    let session = client.session_get();
    let node = starter
        .join()
        .map_err(|_| anyhow::anyhow!("starter thread panicked"))??;
    let session = session?;
    assert_eq!(session.download_dir, node.download_dir);
    Ok(())
}
