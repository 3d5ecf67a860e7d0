//! The tracker's peers: the alive Serf members' BitTorrent endpoints (member address plus its
//! `p2pu-bt-port` tag), refreshed in the background so announces are answered from a snapshot.
//! Across NAT, the overlay adds the local ends of its tunnels: to the session peers'
//! Transmission for the tracker, to their web seed servers for the fetcher. The root agent refreshes it from
//! Serf and hands a [`PeersSnapshot`] to the unprivileged process that serves the tracker and
//! the web seeds (`p2pu agent-serve`), which applies it to its own copy.

use crate::agent::transfer::tracker::PeerSource;
use crate::engines::{Gossip, MemberStatus};
use crate::formats::serf_names::{TAG_PEER_PORT, TAG_SEED_PORT};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::sync::RwLock;

/// Everything the tracker and the web seed server need from the membership, as one JSON line
/// on the serving process's stdin. Field names are [`FleetPeers`]'s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeersSnapshot {
    /// The BitTorrent endpoints the tracker answers with.
    pub members: Vec<SocketAddr>,
    /// The other alive members' web seed servers.
    pub seeds: Vec<SocketAddr>,
    /// Every alive member's address: who may use the web seed server.
    pub addresses: Vec<IpAddr>,
    /// The local ends of the NAT overlay's tunnels.
    pub tunnels: Vec<SocketAddr>,
}

#[derive(Default)]
pub struct FleetPeers {
    /// This node's name, left out of every answer.
    self_name: String,
    members: RwLock<Vec<SocketAddr>>,
    /// The alive members' web seed servers.
    seeds: RwLock<Vec<SocketAddr>>,
    /// Every alive member's address, this node's included: who may use its web seed server.
    addresses: RwLock<Vec<IpAddr>>,
    tunnels: RwLock<Vec<SocketAddr>>,
    /// The other alive members' Serf addresses, as last seen while there were any: a Serf
    /// that restarted knows nobody (the join target joins nobody itself), and the agent joins
    /// these when its Serf starts (`sync`, DESIGN section 8a).
    gossip: RwLock<Vec<SocketAddr>>,
    /// The NAT overlay's seed ends (to session peers' web seed servers): the root agent's
    /// alone, the serving process has no use for them.
    tunnel_seeds: RwLock<Vec<SocketAddr>>,
    /// The other alive members' web seed servers by member name: the striped transfer's
    /// roster names members (the root agent's alone).
    named_seeds: RwLock<Vec<(String, SocketAddr)>>,
    /// This member as Serf last listed it (alive): its tags say what it advertises
    /// (`rate::Advertiser` compares them with what it measured).
    own: RwLock<Option<crate::engines::Member>>,
}

impl FleetPeers {
    pub fn new(self_name: impl Into<String>) -> FleetPeers {
        FleetPeers {
            self_name: self_name.into(),
            ..FleetPeers::default()
        }
    }

    /// Re-reads the membership; keeps the old snapshot when Serf does not answer.
    pub fn refresh(&self, gossip: &dyn Gossip) -> super::Result<usize> {
        let members = gossip.members()?;
        let alive: Vec<_> = members
            .iter()
            .filter(|m| m.status == MemberStatus::Alive)
            .collect();
        let others = || alive.iter().filter(|m| m.name != self.self_name);
        let endpoint = |tag: &str, m: &crate::engines::Member| {
            let port = m.tags.get(tag)?.parse::<u16>().ok()?;
            Some(SocketAddr::new(m.addr, port))
        };
        // Each pair of nodes connects one way only, from the lower address to the higher:
        // measured in the lab, two Transmission 3.00 daemons that connect to each other at
        // once end up each waiting on the other, choked, and nothing moves.
        let own = alive
            .iter()
            .find(|m| m.name == self.self_name)
            .map(|m| m.addr);
        let endpoints: Vec<SocketAddr> = others()
            .filter(|m| own.is_none_or(|own| m.addr > own))
            .filter_map(|m| endpoint(TAG_PEER_PORT, m))
            .collect();
        let seeds: Vec<SocketAddr> = others()
            .filter_map(|m| endpoint(TAG_SEED_PORT, m))
            .collect();
        let named_seeds: Vec<(String, SocketAddr)> = others()
            .filter_map(|m| Some((m.name.clone(), endpoint(TAG_SEED_PORT, m)?)))
            .collect();
        *self.named_seeds.write().unwrap_or_else(|e| e.into_inner()) = named_seeds;
        *self.own.write().unwrap_or_else(|e| e.into_inner()) = alive
            .iter()
            .find(|m| m.name == self.self_name)
            .map(|m| (*m).clone());
        let gossip: Vec<SocketAddr> = others().map(|m| SocketAddr::new(m.addr, m.port)).collect();
        if !gossip.is_empty() {
            *self.gossip.write().unwrap_or_else(|e| e.into_inner()) = gossip;
        }
        let count = endpoints.len();
        *self.members.write().unwrap_or_else(|e| e.into_inner()) = endpoints;
        *self.seeds.write().unwrap_or_else(|e| e.into_inner()) = seeds;
        *self.addresses.write().unwrap_or_else(|e| e.into_inner()) =
            alive.iter().map(|m| m.addr).collect();
        Ok(count)
    }

    /// The other members' Serf addresses, as last seen alive ([`FleetPeers::refresh`] keeps
    /// them while Serf lists nobody else).
    pub fn last_gossip_peers(&self) -> Vec<SocketAddr> {
        self.gossip
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The other alive members' web seed servers, and the seed ends of the NAT overlay.
    pub fn seed_servers(&self) -> Vec<SocketAddr> {
        let seeds = self.seeds.read().unwrap_or_else(|e| e.into_inner());
        let tunnel_seeds = self.tunnel_seeds.read().unwrap_or_else(|e| e.into_inner());
        seeds.iter().chain(tunnel_seeds.iter()).copied().collect()
    }

    /// This member as Serf last listed it alive; `None` before it was.
    pub fn own_member(&self) -> Option<crate::engines::Member> {
        self.own.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The other alive members' web seed servers, by member name.
    pub fn named_seed_servers(&self) -> Vec<(String, SocketAddr)> {
        self.named_seeds
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether `ip` belongs to an alive member (or is this machine's loopback).
    pub fn is_member(&self, ip: IpAddr) -> bool {
        ip.is_loopback()
            || self
                .addresses
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&ip)
    }

    /// Replaces the seed ends the NAT client offers.
    pub fn set_tunnel_seeds(&self, seeds: Vec<SocketAddr>) {
        *self.tunnel_seeds.write().unwrap_or_else(|e| e.into_inner()) = seeds;
    }

    /// Replaces the tunnel endpoints the NAT client offers.
    pub fn set_tunnels(&self, tunnels: Vec<SocketAddr>) {
        *self.tunnels.write().unwrap_or_else(|e| e.into_inner()) = tunnels;
    }

    /// The current membership, for the serving process.
    pub fn snapshot(&self) -> PeersSnapshot {
        let read =
            |lock: &RwLock<Vec<SocketAddr>>| lock.read().unwrap_or_else(|e| e.into_inner()).clone();
        PeersSnapshot {
            members: read(&self.members),
            seeds: read(&self.seeds),
            addresses: self
                .addresses
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            tunnels: read(&self.tunnels),
        }
    }

    /// Replaces everything with `snapshot` (the serving process's side of [`Self::snapshot`]).
    pub fn apply_snapshot(&self, snapshot: PeersSnapshot) {
        let PeersSnapshot {
            members,
            seeds,
            addresses,
            tunnels,
        } = snapshot;
        *self.members.write().unwrap_or_else(|e| e.into_inner()) = members;
        *self.seeds.write().unwrap_or_else(|e| e.into_inner()) = seeds;
        *self.addresses.write().unwrap_or_else(|e| e.into_inner()) = addresses;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::{Member, SerfError};
    use std::time::Duration;

    struct Fake;

    impl Gossip for Fake {
        fn members(&self) -> Result<Vec<Member>, SerfError> {
            let member = |name: &str, last: u8, status| Member {
                name: name.into(),
                addr: [10, 0, 0, last].into(),
                port: 7946,
                status,
                tags: [(TAG_PEER_PORT, "51413"), (TAG_SEED_PORT, "6880")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            };
            Ok(vec![
                member("me", 1, MemberStatus::Alive),
                member("peer", 2, MemberStatus::Alive),
                member("gone", 3, MemberStatus::Failed),
            ])
        }
        fn user_event(&self, _: &str, _: &[u8], _: bool) -> Result<(), SerfError> {
            Ok(())
        }
        fn query(
            &self,
            _: &str,
            _: &[u8],
            _: Duration,
        ) -> Result<Vec<(String, String)>, SerfError> {
            Ok(Vec::new())
        }
    }

    /// A Serf that just restarted lists only this node: the members last seen alive are kept
    /// for the agent to rejoin (the join target's own config names nobody else).
    #[test]
    fn the_members_last_seen_alive_outlive_a_serf_restart() {
        use crate::engines::fake::FakeGossip;
        let peers = FleetPeers::new("me");
        peers.refresh(&Fake).unwrap();
        let want: Vec<SocketAddr> = vec!["10.0.0.2:7946".parse().unwrap()];
        assert_eq!(peers.last_gossip_peers(), want);
        let restarted = FakeGossip {
            members: vec![FakeGossip::member("me", MemberStatus::Alive)],
            ..FakeGossip::default()
        };
        peers.refresh(&restarted).unwrap();
        assert_eq!(peers.last_gossip_peers(), want);
    }

    #[test]
    fn only_alive_members_and_loopback_may_use_the_seed_server() {
        let peers = FleetPeers::new("me");
        let ip = |last: u8| IpAddr::from([10, 0, 0, last]);
        assert!(
            !peers.is_member(ip(2)),
            "nothing is known before the first refresh"
        );
        peers.refresh(&Fake).unwrap();
        assert!(peers.is_member(ip(1)) && peers.is_member(ip(2)));
        assert!(peers.is_member(IpAddr::from([127, 0, 0, 1])));
        assert!(!peers.is_member(ip(3)), "a failed member");
        assert!(!peers.is_member(ip(9)), "a stranger");
    }

    #[test]
    fn a_snapshot_carries_the_whole_membership_through_json() {
        let peers = FleetPeers::new("me");
        peers.refresh(&Fake).unwrap();
        peers.set_tunnels(vec!["127.0.0.1:40000".parse().unwrap()]);
        let line = serde_json::to_string(&peers.snapshot()).unwrap();
        assert!(!line.contains('\n'), "one line: {line}");

        let served = FleetPeers::new("");
        served.apply_snapshot(serde_json::from_str(&line).unwrap());
        assert_eq!(served.snapshot(), peers.snapshot());
        let hash = [0u8; 20];
        assert_eq!(
            served.peers(&hash),
            [
                "10.0.0.2:51413".parse().unwrap(),
                "127.0.0.1:40000".parse().unwrap()
            ]
        );
        assert_eq!(served.seed_servers(), ["10.0.0.2:6880".parse().unwrap()]);
        let ip = |last: u8| IpAddr::from([10, 0, 0, last]);
        assert!(served.is_member(ip(1)) && served.is_member(ip(2)));
        assert!(!served.is_member(ip(3)), "a failed member");

        // A later snapshot replaces, it does not add: a member that left loses access.
        served.apply_snapshot(PeersSnapshot::default());
        assert!(!served.is_member(ip(2)));
        assert!(served.peers(&hash).is_empty());
        assert!(
            serde_json::from_str::<PeersSnapshot>(
                r#"{"members":[],"seeds":[],"addresses":[],"tunnels":[],"x":1}"#
            )
            .is_err(),
            "unknown fields are refused"
        );
    }
}
