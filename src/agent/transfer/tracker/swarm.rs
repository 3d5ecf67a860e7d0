//! What the tracker remembers of its own announcers, and how it picks the peers of one answer.
//!
//! The agent's tracker listens on loopback, so its announcers are mostly the node's own
//! Transmission at 127.0.0.1, an address useless to others. They are still counted in
//! `complete`/`incomplete`, but only non-loopback announcers are handed out as peers.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::Rng;

use super::announce::{Announce, Event};

/// Torrents remembered at once; announces for more are answered but not remembered.
const MAX_TORRENTS: usize = 1024;
/// Announcers remembered per torrent.
const MAX_PER_TORRENT: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Seen {
    left: u64,
    at: Instant,
}

/// Announcers per info-hash, forgotten after `ttl` without a re-announce or on `stopped`.
#[derive(Debug)]
pub(crate) struct Swarms {
    ttl: Duration,
    torrents: HashMap<[u8; 20], HashMap<SocketAddr, Seen>>,
}

/// One torrent's remembered state, as the answer needs it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub complete: u32,
    pub incomplete: u32,
    /// Non-loopback announcers other than the asking one.
    pub peers: Vec<SocketAddr>,
}

impl Swarms {
    pub fn new(ttl: Duration) -> Swarms {
        Swarms {
            ttl,
            torrents: HashMap::new(),
        }
    }

    /// Records `announce` from `ip` and returns the torrent's state as seen by that announcer.
    pub fn record(&mut self, announce: &Announce, ip: IpAddr, now: Instant) -> Counts {
        let me = SocketAddr::new(ip, announce.port);
        let ttl = self.ttl;
        if !self.torrents.contains_key(&announce.info_hash) && self.torrents.len() >= MAX_TORRENTS {
            self.torrents.retain(|_, peers| {
                peers.retain(|_, seen| now.duration_since(seen.at) < ttl);
                !peers.is_empty()
            });
        }
        let room = self.torrents.len() < MAX_TORRENTS;
        let peers = match self.torrents.get_mut(&announce.info_hash) {
            Some(peers) => peers,
            None if room && announce.event != Event::Stopped => {
                self.torrents.entry(announce.info_hash).or_default()
            }
            None => return Counts::default(),
        };
        peers.retain(|_, seen| now.duration_since(seen.at) < ttl);
        if announce.event == Event::Stopped {
            peers.remove(&me);
        } else if peers.contains_key(&me) || peers.len() < MAX_PER_TORRENT {
            peers.insert(
                me,
                Seen {
                    left: announce.left,
                    at: now,
                },
            );
        }
        let mut counts = Counts::default();
        for (addr, seen) in peers.iter() {
            if seen.left == 0 {
                counts.complete += 1;
            } else {
                counts.incomplete += 1;
            }
            if *addr != me && !addr.ip().is_loopback() {
                counts.peers.push(*addr);
            }
        }
        if peers.is_empty() {
            self.torrents.remove(&announce.info_hash);
        }
        counts
    }
}

/// Picks at most `want` distinct peers: a random subset of `priority` first, then a random
/// subset of `others`, never `exclude` nor an address no one can connect to.
pub(crate) fn select(
    priority: Vec<SocketAddr>,
    others: Vec<SocketAddr>,
    exclude: SocketAddr,
    want: usize,
    rng: &mut impl Rng,
) -> Vec<SocketAddr> {
    let mut seen = HashSet::from([exclude]);
    let mut chosen = Vec::with_capacity(want.min(priority.len() + others.len()));
    for mut group in [priority, others] {
        group.retain(|a| a.port() != 0 && !a.ip().is_unspecified() && seen.insert(*a));
        let room = want - chosen.len();
        let (picked, _) = group.partial_shuffle(rng, room);
        chosen.extend_from_slice(picked);
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn announce(port: u16, left: u64, event: Event) -> Announce {
        Announce {
            info_hash: [7; 20],
            peer_id: [1; 20],
            port,
            uploaded: 0,
            downloaded: 0,
            left,
            event,
            numwant: None,
        }
    }

    #[test]
    fn priority_peers_come_first_and_the_total_is_bounded() {
        let priority: Vec<_> = (1..=3).map(|n| addr(&format!("10.0.0.{n}:1"))).collect();
        let others: Vec<_> = (1..=200).map(|n| addr(&format!("10.1.{n}.1:1"))).collect();
        let mut rng = StdRng::seed_from_u64(1);
        let chosen = select(priority.clone(), others, addr("10.9.9.9:9"), 50, &mut rng);
        assert_eq!(chosen.len(), 50);
        let mut head = chosen[..3].to_vec();
        head.sort();
        assert_eq!(head, priority);
        assert_eq!(
            chosen.iter().collect::<HashSet<_>>().len(),
            50,
            "duplicates"
        );
    }

    #[test]
    fn priority_alone_is_also_bounded() {
        let priority: Vec<_> = (1..=100).map(|n| addr(&format!("10.0.0.{n}:1"))).collect();
        let mut rng = StdRng::seed_from_u64(2);
        assert_eq!(
            select(priority, vec![], addr("10.9.9.9:9"), 5, &mut rng).len(),
            5
        );
    }

    #[test]
    fn excludes_the_asker_duplicates_and_unusable_addresses() {
        let me = addr("10.0.0.1:51413");
        let others = vec![
            me,
            addr("10.0.0.2:1"),
            addr("10.0.0.2:1"),
            addr("0.0.0.0:5"),
            addr("10.0.0.3:0"),
        ];
        let mut rng = StdRng::seed_from_u64(3);
        let chosen = select(vec![addr("10.0.0.2:1")], others, me, 50, &mut rng);
        assert_eq!(chosen, vec![addr("10.0.0.2:1")]);
    }

    #[test]
    fn remembers_announcers_but_hands_out_only_non_loopback_ones() {
        let now = Instant::now();
        let mut swarms = Swarms::new(Duration::from_secs(60));
        let local = IpAddr::from([127, 0, 0, 1]);
        let remote = IpAddr::from([10, 99, 1, 2]);
        swarms.record(&announce(6881, 0, Event::Started), remote, now);
        let counts = swarms.record(&announce(51413, 100, Event::Started), local, now);
        assert_eq!(
            counts,
            Counts {
                complete: 1,
                incomplete: 1,
                peers: vec![addr("10.99.1.2:6881")],
            }
        );
        // The loopback announcer is counted but never handed to the remote one.
        let counts = swarms.record(&announce(6881, 0, Event::None), remote, now);
        assert_eq!(counts.peers, vec![]);
        assert_eq!((counts.complete, counts.incomplete), (1, 1));
    }

    #[test]
    fn stopped_and_expired_announcers_are_forgotten() {
        let now = Instant::now();
        let ttl = Duration::from_secs(60);
        let mut swarms = Swarms::new(ttl);
        let remote = IpAddr::from([10, 99, 1, 2]);
        let other = IpAddr::from([10, 99, 1, 3]);
        swarms.record(&announce(1, 0, Event::Started), remote, now);
        swarms.record(&announce(1, 0, Event::Stopped), remote, now);
        let counts = swarms.record(&announce(2, 5, Event::None), other, now);
        assert_eq!((counts.complete, counts.incomplete), (0, 1));
        swarms.record(&announce(1, 0, Event::Started), remote, now);
        let counts = swarms.record(&announce(2, 5, Event::None), other, now + ttl);
        assert_eq!(
            (counts.complete, counts.incomplete),
            (0, 1),
            "expired seeder counted"
        );
    }

    #[test]
    fn a_stopped_announce_for_an_unknown_torrent_remembers_nothing() {
        let mut swarms = Swarms::new(Duration::from_secs(60));
        let counts = swarms.record(
            &announce(1, 0, Event::Stopped),
            IpAddr::from([10, 0, 0, 1]),
            Instant::now(),
        );
        assert_eq!(counts, Counts::default());
        assert!(swarms.torrents.is_empty());
    }
}
