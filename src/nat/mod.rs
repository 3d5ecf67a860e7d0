//! Updates across NAT: the overlay message format, STUN, the rendezvous proxy, the NAT
//! client, its local control socket and the QUIC tunnel for the BitTorrent bytes. Plain
//! threads and blocking sockets like the rest of p2pu, one thread owning each daemon's state;
//! tokio and quinn are confined to `tunnel`, on a thread of their own.

pub mod client;
pub mod control;
pub mod protocol;
pub mod proxy;
pub mod stun;
pub mod tunnel;

use crate::config::Config;
use crate::error::{Error, Result};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Sends a signed announcement's wire text (`p2pu1:...`) to every session peer of the NAT
/// client listening on `control_socket`; returns once they acknowledged it.
///
/// Integration point: `p2pu event sendfile` and `p2pu submit` call this with the wire text
/// their pipeline produced (torrent made, seeding, announcement signed).
pub fn announce_over_overlay(control_socket: &Path, wire: &str) -> Result<String> {
    let answer = control::request(
        control_socket,
        &control::Request::Announce {
            wire: wire.to_owned(),
        },
    )
    .map_err(|e| Error::Usage(crate::error::chain(&e)))?;
    if answer.ok {
        Ok(answer.message.unwrap_or_default())
    } else {
        Err(Error::Usage(answer.error.unwrap_or_default()))
    }
}

/// The tunnel ends (on this node's LAN address) of the NAT client's session peers: the agent's tracker lists
/// them as BitTorrent peers. Empty when no client runs on this node.
///
/// Integration point for the agent's local tracker.
pub fn tunnel_ends(control_socket: &Path) -> Vec<SocketAddr> {
    match control::request(control_socket, &control::Request::Status) {
        Ok(control::Response {
            status: Some(status),
            ..
        }) => status.peers.iter().filter_map(|p| p.tunnel).collect(),
        _ => Vec::new(),
    }
}

/// Reads and checks the fleet secret named by `nat.fleet_secret_file`.
pub fn fleet_secret(config: &Config) -> Result<protocol::Secret> {
    let path = &config.site.nat.fleet_secret_file;
    let bytes = std::fs::read(path).map_err(Error::io("reading the fleet secret", path))?;
    protocol::Secret::new(&bytes)
        .map_err(|e| Error::Usage(format!("fleet secret {}: {e}", path.display())))
}

/// Resolves a `host:port` from the config to one socket address.
pub fn resolve(key: &str, text: &str) -> Result<SocketAddr> {
    text.to_socket_addrs()
        .map_err(|e| Error::Usage(format!("{key} = {text:?}: cannot resolve: {e}")))?
        .next()
        .ok_or_else(|| Error::Usage(format!("{key} = {text:?}: resolves to no address")))
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// A flag set by SIGTERM or SIGINT, for the daemons' loops to end cleanly on.
pub fn stop_on_signals() -> Result<&'static AtomicBool> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }
            .map_err(|e| Error::Internal(format!("installing a {signal} handler: {e}")))?;
    }
    Ok(&STOP)
}

/// Logs to stderr for the daemons (P2PU_LOG sets the level, as for the agent); a second call
/// is a no-op.
pub fn init_logging() {
    // One setting for every daemon: P2PU_LOG, as the agent's --log reads it.
    let filter = std::env::var("P2PU_LOG").unwrap_or_else(|_| "info".into());
    if crate::logging::init(&filter).is_err() {
        let _ = crate::logging::init("info");
    }
}
