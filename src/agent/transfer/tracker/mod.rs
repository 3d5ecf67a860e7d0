//! The node's own BitTorrent tracker: every magnet the agent adds to the local Transmission names
//! it, and it answers with the fleet's BitTorrent endpoints taken from a [`PeerSource`] (the
//! alive Serf members' `p2pu-bt-port` tags, tunnel ends across NAT). See "Peer discovery" in
//! DESIGN.md. Serves `GET /announce` only (BEP 3 request, BEP 23 compact answer); read-only
//! apart from remembering who announced.

mod announce;
mod response;
mod swarm;

pub use announce::{parse_announce, Announce, Event, TrackerError, MAX_QUERY};
pub use response::{compact, encode_failure, AnnounceResponse};

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::http::{connectable, Handler, Limits, Request, Response, Server};
use crate::error::Result;
use swarm::Swarms;

/// Where the tracker's peers come from. Implementations should leave out the node itself, and
/// answer from a snapshot: they are asked on every announce, on the tracker's request threads.
pub trait PeerSource: Send + Sync {
    /// BitTorrent endpoints that may be in the swarm of `info_hash`.
    fn peers(&self, info_hash: &[u8; 20]) -> Vec<SocketAddr>;

    /// Endpoints known to hold the whole payload of `info_hash`; answered before the others so a
    /// new leecher reaches a seeder in its first round of connections.
    fn priority_peers(&self, _info_hash: &[u8; 20]) -> Vec<SocketAddr> {
        Vec::new()
    }

    /// Called for every valid announce, with the address it came from, before it is answered.
    fn announced(&self, _announce: &Announce, _from: SocketAddr) {}
}

#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// Re-announce interval told to clients; short, because fleet membership changes.
    pub interval: Duration,
    /// Shortest interval a client may use.
    pub min_interval: Duration,
    /// Most peers in one answer, whatever `numwant` asks, so big fleets stay cheap.
    pub max_peers: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            interval: Duration::from_secs(30),
            min_interval: Duration::from_secs(10),
            max_peers: 50,
        }
    }
}

/// The tracker's request handling, apart from HTTP.
pub struct Tracker {
    source: Arc<dyn PeerSource>,
    config: TrackerConfig,
    swarms: Mutex<Swarms>,
}

impl Tracker {
    pub fn new(source: Arc<dyn PeerSource>, config: TrackerConfig) -> Tracker {
        // An announcer that missed two intervals is gone.
        let ttl = config.interval * 2 + config.min_interval;
        Tracker {
            source,
            config,
            swarms: Mutex::new(Swarms::new(ttl)),
        }
    }

    /// Serves the tracker on `bind` (port 0 picks a free one) with the default configuration.
    pub fn start(bind: SocketAddr, source: Arc<dyn PeerSource>) -> Result<TrackerHandle> {
        Tracker::start_with(bind, source, TrackerConfig::default())
    }

    pub fn start_with(
        bind: SocketAddr,
        source: Arc<dyn PeerSource>,
        config: TrackerConfig,
    ) -> Result<TrackerHandle> {
        let tracker = Tracker::new(source, config);
        let handler: Arc<Handler> = Arc::new(move |request: &Request| tracker.handle(request));
        let limits = Limits {
            max_head: 4 * 1024,
            ..Limits::default()
        };
        let server = Server::start("tracker", bind, limits, handler)?;
        Ok(TrackerHandle { server })
    }

    fn handle(&self, request: &Request) -> Response {
        let (path, query) = request.path_and_query();
        match (request.method.as_str(), path) {
            ("GET", "/announce") => Response::bytes(
                200,
                "text/plain",
                self.announce(query.as_bytes(), request.peer),
            ),
            (_, "/announce") => Response::status(405),
            _ => Response::status(404),
        }
    }

    /// Answers one announce query from `from`: the bencoded body, an answer or a failure.
    pub fn announce(&self, query: &[u8], from: SocketAddr) -> Vec<u8> {
        let announce = match parse_announce(query) {
            Ok(announce) => announce,
            Err(e) => {
                tracing::debug!(%from, error = %e, "refused an announce");
                return encode_failure(&e.to_string());
            }
        };
        self.source.announced(&announce, from);
        let counts = self
            .swarms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .record(&announce, from.ip(), Instant::now());
        let want = match (announce.event, announce.numwant) {
            (Event::Stopped, _) => 0,
            (_, Some(n)) => (n as usize).min(self.config.max_peers),
            (_, None) => self.config.max_peers,
        };
        let (priority, mut others) = if want == 0 {
            (Vec::new(), Vec::new())
        } else {
            let priority = self.source.priority_peers(&announce.info_hash);
            (priority, self.source.peers(&announce.info_hash))
        };
        others.extend(counts.peers);
        let peers = swarm::select(
            priority.clone(),
            others,
            SocketAddr::new(from.ip(), announce.port),
            want,
            &mut rand::thread_rng(),
        );
        // Peers not known to hold the payload count as leechers: Transmission 3.00 takes every
        // peer of an answer with `incomplete == 0` for a seed, and a seeder never connects to
        // seeds, so a seeding node would wait for leechers that never call it.
        let unknown = peers.len().saturating_sub(priority.len());
        AnnounceResponse {
            interval: self.config.interval,
            min_interval: self.config.min_interval,
            complete: counts.complete + u32::try_from(priority.len()).unwrap_or(u32::MAX),
            incomplete: counts.incomplete + u32::try_from(unknown).unwrap_or(u32::MAX),
            peers,
        }
        .encode()
    }
}

/// A running tracker; dropping it stops it.
pub struct TrackerHandle {
    server: Server,
}

impl TrackerHandle {
    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The URL to put in magnets' `tr=`.
    pub fn announce_url(&self) -> String {
        format!("http://{}/announce", connectable(self.addr()))
    }

    /// Stops serving and waits for the in-flight requests.
    pub fn shutdown(mut self) {
        self.server.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fleet(Vec<SocketAddr>, Vec<SocketAddr>);

    impl PeerSource for Fleet {
        fn peers(&self, _: &[u8; 20]) -> Vec<SocketAddr> {
            self.0.clone()
        }
        fn priority_peers(&self, _: &[u8; 20]) -> Vec<SocketAddr> {
            self.1.clone()
        }
    }

    const QUERY: &str = "info_hash=%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01\
&peer_id=-TR3000-abcdefghijkl&port=51413&uploaded=0&downloaded=0&left=5";

    fn tracker(fleet: Fleet) -> Tracker {
        Tracker::new(Arc::new(fleet), TrackerConfig::default())
    }

    fn local() -> SocketAddr {
        "127.0.0.1:40000".parse().unwrap()
    }

    #[test]
    fn answers_fleet_peers_compactly_with_priority_first() {
        let t = tracker(Fleet(
            vec!["10.0.0.2:6881".parse().unwrap()],
            vec!["10.0.0.3:6882".parse().unwrap()],
        ));
        let body = t.announce(QUERY.as_bytes(), local());
        let want = b"d8:completei1e10:incompletei2e8:intervali30e12:min intervali10e\
5:peers12:\x0a\x00\x00\x03\x1a\xe2\x0a\x00\x00\x02\x1a\xe1e";
        assert_eq!(body, want.to_vec(), "{}", String::from_utf8_lossy(&body));
    }

    #[test]
    fn numwant_and_the_cap_bound_the_answer() {
        let many = (0..200u16)
            .map(|n| SocketAddr::from(([10, 0, 0, 9], 1000 + n)))
            .collect();
        let t = tracker(Fleet(many, vec![]));
        let body = t.announce(format!("{QUERY}&numwant=3").as_bytes(), local());
        assert!(body.windows(9).any(|w| w == b"5:peers18"), "{body:?}");
        let body = t.announce(format!("{QUERY}&numwant=1000").as_bytes(), local());
        assert!(body.windows(10).any(|w| w == b"5:peers300"), "{body:?}");
    }

    #[test]
    fn stopped_gets_no_peers() {
        let t = tracker(Fleet(vec!["10.0.0.2:6881".parse().unwrap()], vec![]));
        let body = t.announce(format!("{QUERY}&event=stopped").as_bytes(), local());
        assert!(body.windows(8).any(|w| w == b"5:peers0"), "{body:?}");
    }

    #[test]
    fn malformed_query_gets_a_failure_reason() {
        let t = tracker(Fleet(vec![], vec![]));
        let body = t.announce(b"info_hash=abc", local());
        assert!(body.starts_with(b"d14:failure reason"), "{body:?}");
    }
}
