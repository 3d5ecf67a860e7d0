//! Updates across NAT: the overlay message format, STUN, the rendezvous proxy, the NAT
//! client, its local control socket and the QUIC tunnel for the BitTorrent bytes. Plain
//! threads and blocking sockets like the rest of p2pu, one thread owning each daemon's state;
//! tokio and quinn are confined to `tunnel`, on a thread of their own. [`NatError`] is what
//! the helpers here (the fleet secret, the configured addresses, the overlay announce) fail with.

pub mod client;
pub mod control;
pub mod names;
pub mod protocol;
pub mod proxy;
pub mod stun;
pub mod tunnel;
mod udp;

use crate::config::Config;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

/// A NAT helper that failed, naming the file, config key or client it was about.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    #[error(transparent)]
    Control(#[from] control::ControlError),
    #[error("{reason}")]
    ClientRefused { reason: String },
    #[error("reading the fleet secret {}", path.display())]
    ReadSecret {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("fleet secret {}", path.display())]
    BadSecret {
        path: PathBuf,
        #[source]
        source: protocol::ProtocolError,
    },
    #[error("{key} = {text:?}: cannot resolve")]
    Resolve {
        key: &'static str,
        text: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{key} = {text:?}: resolves to no address")]
    NoAddress { key: &'static str, text: String },
}

impl crate::error::LayerError for NatError {}

type Result<T> = std::result::Result<T, NatError>;

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
    )?;
    if answer.ok {
        Ok(answer.message.unwrap_or_default())
    } else {
        Err(NatError::ClientRefused {
            reason: answer.error.unwrap_or_default(),
        })
    }
}

/// The NAT client's ends (on this node's LAN address) for its session peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TunnelEnds {
    /// To the peers' Transmission: the agent's tracker lists them as BitTorrent peers.
    pub peers: Vec<SocketAddr>,
    /// To the peers' web seed servers: the agent's fetcher asks them like members' ones.
    pub seeds: Vec<SocketAddr>,
}

/// The tunnel ends of the NAT client listening on `control_socket`; empty when no client
/// runs on this node.
///
/// Integration point for the agent's local tracker and its fetcher.
pub fn tunnel_ends(control_socket: &Path) -> TunnelEnds {
    match control::request(control_socket, &control::Request::Status) {
        Ok(control::Response {
            status: Some(status),
            ..
        }) => TunnelEnds {
            peers: status.peers.iter().filter_map(|p| p.tunnel).collect(),
            seeds: status.peers.iter().filter_map(|p| p.seed).collect(),
        },
        _ => TunnelEnds::default(),
    }
}

/// Reads and checks the fleet secret named by `nat.fleet_secret_file`.
pub fn fleet_secret(config: &Config) -> Result<protocol::Secret> {
    let path = &config.site.nat.fleet_secret_file;
    let bytes = std::fs::read(path).map_err(|source| NatError::ReadSecret {
        path: path.clone(),
        source,
    })?;
    protocol::Secret::new(&bytes).map_err(|source| NatError::BadSecret {
        path: path.clone(),
        source,
    })
}

/// Resolves a `host:port` from the config to one socket address.
pub fn resolve(key: &'static str, text: &str) -> Result<SocketAddr> {
    text.to_socket_addrs()
        .map_err(|source| NatError::Resolve {
            key,
            text: text.to_string(),
            source,
        })?
        .next()
        .ok_or_else(|| NatError::NoAddress {
            key,
            text: text.to_string(),
        })
}
