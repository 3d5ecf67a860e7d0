//! The tracker's peers: the alive Serf members' BitTorrent endpoints (member address plus its
//! `p2pu-bt-port` tag), refreshed in the background so announces are answered from a snapshot.
//! Across NAT, the overlay adds the local ends of its tunnels.

use super::tracker::PeerSource;
use crate::engines::{Gossip, MemberStatus};
use crate::render::TAG_PEER_PORT;
use std::net::SocketAddr;
use std::sync::RwLock;

#[derive(Default)]
pub struct FleetPeers {
    /// This node's name, left out of every answer.
    self_name: String,
    members: RwLock<Vec<SocketAddr>>,
    tunnels: RwLock<Vec<SocketAddr>>,
}

impl FleetPeers {
    pub fn new(self_name: impl Into<String>) -> FleetPeers {
        FleetPeers {
            self_name: self_name.into(),
            ..FleetPeers::default()
        }
    }

    /// Re-reads the membership; keeps the old snapshot when Serf does not answer.
    pub fn refresh(&self, gossip: &dyn Gossip) -> crate::Result<usize> {
        let members = gossip.members()?;
        let endpoints: Vec<SocketAddr> = members
            .iter()
            .filter(|m| m.status == MemberStatus::Alive && m.name != self.self_name)
            .filter_map(|m| {
                let port = m.tags.get(TAG_PEER_PORT)?.parse::<u16>().ok()?;
                Some(SocketAddr::new(m.addr, port))
            })
            .collect();
        let count = endpoints.len();
        *self.members.write().unwrap_or_else(|e| e.into_inner()) = endpoints;
        Ok(count)
    }

    /// Replaces the tunnel endpoints the NAT client offers.
    pub fn set_tunnels(&self, tunnels: Vec<SocketAddr>) {
        *self.tunnels.write().unwrap_or_else(|e| e.into_inner()) = tunnels;
    }
}

impl PeerSource for FleetPeers {
    fn peers(&self, _info_hash: &[u8; 20]) -> Vec<SocketAddr> {
        let members = self.members.read().unwrap_or_else(|e| e.into_inner());
        let tunnels = self.tunnels.read().unwrap_or_else(|e| e.into_inner());
        members.iter().chain(tunnels.iter()).copied().collect()
    }
}
