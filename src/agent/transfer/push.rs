//! Pushing an announcement straight to the members, beside Serf's broadcast: `submit` sends the
//! signed wire text to each alive member's web seed server (`POST /push`, the text in the
//! [`HEADER`] header, no body), which hands it to its agent; the agent spools it like a Serf
//! event, and the intake verifies it like one. Serf's gossip reaches the last of 8 nodes about
//! 250 ms after the broadcast (a 200 ms gossip tick, 3 members a tick: two or three ticks); a
//! push reaches each in one round trip, and reaches a member whose Serf lost the event (a
//! fleet-wide Serf restart) at all. Serf stays the path every member is reached by: a push is
//! best effort and capped at [`MAX_TARGETS`] members.
//!
//! Who can push: the seed server answers members' addresses only (403 before the head is read
//! otherwise), so a pusher is a member or a process on a member's machine (not necessarily one
//! that holds the Serf keyring: `debian-transmission` there can connect too). What it can push
//! is what a keyring holder can send as an event: text the intake verifies (signature, trusted
//! key, fleet, expiry, sequence) before anything happens, and a pushed text the intake refuses
//! makes no record (`p2pu status` shows only what Serf or the overlay delivered). The seed
//! server forwards at most [`RATE_PER_SEC`] pushes a second (a burst of [`BURST`]), of them
//! [`SOURCE_RATE_PER_SEC`] (a burst of [`SOURCE_BURST`]) from one source address, each at
//! most [`MAX_WIRE_BYTES`] of printable ASCII starting as an announcement; the agent checks
//! both again on its side of the child's pipe, which it reads line by line, bounded.
//!
//! Where a push goes is not a member's to choose ([`targets`]): a keyring holder advertises
//! any address and tags, so `submit` pushes to members' own addresses at the site's seed port,
//! each once, and bounds each push's whole answer.

use crate::bucket::Bucket;
use crate::formats::announcement;
use crate::formats::serf_names::TAG_SEED_PORT;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The request header that carries the wire text.
pub const HEADER: &str = "X-P2pu-Announcement";
/// The path of a push.
pub const PATH: &str = "/push";
/// The longest wire text a push carries: Serf's event limit (`serf.user_event_size_limit` is
/// at most 1 KiB by default, 9 KiB by Serf) and then some; the seed server's request head is
/// bounded at 8 KiB anyway.
pub const MAX_WIRE_BYTES: usize = 6 * 1024;
/// Pushes one seed server forwards a second, on average, and at once.
pub const RATE_PER_SEC: f64 = 8.0;
pub const BURST: f64 = 32.0;
/// Members one submit pushes to; the others hear the event from Serf.
pub const MAX_TARGETS: usize = 64;
/// Pushes in flight at once from one submit.
const SENDERS: usize = 16;
/// A member that does not take the connection and answer within this is left to Serf.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
const ANSWER_TIMEOUT: Duration = Duration::from_millis(700);

/// Whether `text` may be pushed and forwarded: an announcement's prefix, printable ASCII, not
/// too long. The intake decides the rest.
pub fn acceptable(text: &[u8]) -> bool {
    text.len() <= MAX_WIRE_BYTES
        && announcement::is_wire(text)
        && text.iter().all(|b| b.is_ascii_graphic())
}

/// One pushed text as the seed server's child writes it to the agent, one JSON line each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pushed {
    pub push: String,
    /// Who pushed it (`ip:port`), for the agent's log.
    pub from: SocketAddr,
}

/// The seed server's pushes: at most [`RATE_PER_SEC`] a second on average, [`BURST`] at once,
/// and from one source address [`SOURCE_RATE_PER_SEC`] and [`SOURCE_BURST`], so that one
/// flooding source (a member, or any process on a member's machine) leaves most of the rate
/// to the others' pushes.
pub struct Rate {
    state: Mutex<(Bucket, HashMap<IpAddr, Bucket>)>,
}

/// One source's share of [`RATE_PER_SEC`] and [`BURST`].
pub const SOURCE_RATE_PER_SEC: f64 = 2.0;
pub const SOURCE_BURST: f64 = 8.0;
/// Sources whose buckets are kept; past it, those refilled full are forgotten (a full bucket
/// is what a new source gets), and if none is, all.
const SOURCES_KEPT: usize = 1024;

impl Default for Rate {
    fn default() -> Rate {
        Rate {
            state: Mutex::new((Bucket::new(Instant::now(), BURST), HashMap::new())),
        }
    }
}

impl Rate {
    /// Takes a token for a push from `source` if both its bucket and the server's have one.
    pub fn take(&self, source: IpAddr) -> bool {
        self.take_at(source, Instant::now())
    }

    fn take_at(&self, source: IpAddr, now: Instant) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (all, sources) = &mut *state;
        if sources.len() >= SOURCES_KEPT && !sources.contains_key(&source) {
            sources.retain(|_, b| !b.refilled(now, SOURCE_RATE_PER_SEC, SOURCE_BURST));
            if sources.len() >= SOURCES_KEPT {
                sources.clear();
            }
        }
        let one = sources
            .entry(source)
            .or_insert_with(|| Bucket::new(now, SOURCE_BURST));
        // A token from both or from neither: a refused push spends no share.
        let taken = one.holds(now, SOURCE_RATE_PER_SEC, SOURCE_BURST, 1.0)
            && all.holds(now, RATE_PER_SEC, BURST, 1.0);
        if taken {
            one.spend(1.0);
            all.spend(1.0);
        }
        taken
    }
}

/// Where `submit` pushes: each alive member but `own_name` that advertises `seed_port` (the
/// site's, the same on every member), at its own Serf address, once per address. A member
/// chooses what it advertises (Serf passes on any address and tags a keyring holder sets), so
/// the port is never the member's to choose (a member advertising another is left to Serf),
/// an address that is no host's of the fleet (loopback, unspecified, multicast, broadcast) is
/// skipped, and fake members sharing one address get one push between them: a keyring holder
/// can point `submit` at no port but the seed port, and at each address once.
pub fn targets(
    members: &[crate::engines::Member],
    own_name: Option<&str>,
    seed_port: u16,
) -> Vec<SocketAddr> {
    let pushable = |ip: &IpAddr| {
        !(ip.is_loopback()
            || ip.is_unspecified()
            || ip.is_multicast()
            || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()))
    };
    let addrs: BTreeSet<IpAddr> = members
        .iter()
        .filter(|m| m.status == crate::engines::MemberStatus::Alive)
        .filter(|m| Some(m.name.as_str()) != own_name)
        .filter(|m| {
            m.tags
                .get(TAG_SEED_PORT)
                .is_some_and(|port| port.parse::<u16>() == Ok(seed_port))
        })
        .map(|m| m.addr)
        .filter(pushable)
        .collect();
    addrs
        .into_iter()
        .map(|ip| SocketAddr::new(ip, seed_port))
        .collect()
}

/// Pushes `wire` to the web seed servers of up to [`MAX_TARGETS`] of `members`' [`targets`],
/// chosen at random, [`SENDERS`] at a time; returns how many took it (202). Never fails: a
/// member that does not take it hears the Serf event. Each push has [`CONNECT_TIMEOUT`] to
/// connect and [`ANSWER_TIMEOUT`] for the rest, so members that accept and never answer (or
/// drip their answer) cost at most a second per batch, 4 s in all.
pub fn push(
    members: &[crate::engines::Member],
    own_name: Option<&str>,
    seed_port: u16,
    wire: &str,
) -> usize {
    use rand::seq::SliceRandom;
    let mut targets = targets(members, own_name, seed_port);
    targets.shuffle(&mut rand::thread_rng());
    targets.truncate(MAX_TARGETS);
    let request = format!(
        "POST {PATH} HTTP/1.1\r\nHost: p2pu\r\n{HEADER}: {wire}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let taken = std::sync::atomic::AtomicUsize::new(0);
    for batch in targets.chunks(SENDERS) {
        std::thread::scope(|scope| {
            for &target in batch {
                let (request, taken) = (&request, &taken);
                scope.spawn(move || match send(target, request) {
                    Ok(202) => {
                        taken.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(status) => tracing::debug!(%target, status, "push not taken"),
                    Err(e) => tracing::debug!(%target, "push not sent: {e}"),
                });
            }
        });
    }
    taken.into_inner()
}

/// Sends one push and returns the answer's status code, all within [`ANSWER_TIMEOUT`] of the
/// connection: a member that drips its answer a byte at a time gets no more time than one
/// that never answers.
fn send(target: SocketAddr, request: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)?;
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let left = || {
        let left = deadline.saturating_duration_since(Instant::now());
        match left.is_zero() {
            true => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer in time",
            )),
            false => Ok(left),
        }
    };
    stream.set_write_timeout(Some(ANSWER_TIMEOUT))?;
    stream.set_nodelay(true)?;
    stream.write_all(request.as_bytes())?;
    let mut head = [0u8; 64];
    let mut got = 0;
    // "HTTP/1.1 202 ..." : the status is all that is read.
    while got < 12 {
        stream.set_read_timeout(Some(left()?))?;
        match stream.read(&mut head[got..])? {
            0 => break,
            n => got += n,
        }
    }
    std::str::from_utf8(&head[..got])
        .ok()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status in the answer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_printable_announcement_texts_of_bounded_length_are_acceptable() {
        assert!(acceptable(b"p2pu2:abc_-DEF"));
        assert!(acceptable(b"p2pu1:abc"));
        assert!(!acceptable(b"p2pu-sync:now"), "not an announcement");
        assert!(!acceptable(b"p2pu2:a b"), "a space");
        assert!(!acceptable(b"p2pu2:a\nb"), "a newline");
        assert!(!acceptable(b"p2pu2:\x1b[2J"), "an escape");
        let long = format!("p2pu2:{}", "a".repeat(MAX_WIRE_BYTES));
        assert!(!acceptable(long.as_bytes()));
    }

    fn member(name: &str, addr: &str, seed_port: &str) -> crate::engines::Member {
        crate::engines::Member {
            name: name.into(),
            addr: addr.parse().unwrap(),
            port: 7946,
            status: crate::engines::MemberStatus::Alive,
            tags: [(TAG_SEED_PORT.to_string(), seed_port.to_string())].into(),
        }
    }

    /// A keyring holder advertises what it likes (Serf passes on any address and tag): fake
    /// members pointing at another port of a member, at loopback, the unspecified, multicast
    /// or broadcast address, or 64 of them at one host. `submit` pushes only to the site's
    /// seed port, each address once, and to no address outside the fleet's hosts.
    #[test]
    fn pushes_go_to_members_own_addresses_at_the_sites_seed_port_once_each() {
        let mut members = vec![
            member("me", "10.0.0.1", "6880"),
            member("n2", "10.0.0.2", "6880"),
            member("ssh", "10.0.0.3", "22"),
            member("odd-port", "10.0.0.4", "6880x"),
            member("lo", "127.0.0.1", "6880"),
            member("any", "0.0.0.0", "6880"),
            member("mc", "224.0.0.1", "6880"),
            member("bc", "255.255.255.255", "6880"),
            member("lo6", "::1", "6880"),
            member("v6", "fd00::5", "6880"),
        ];
        let mut gone = member("gone", "10.0.0.6", "6880");
        gone.status = crate::engines::MemberStatus::Failed;
        members.push(gone);
        members.extend((0..64).map(|i| member(&format!("fake{i}"), "10.0.0.7", "6880")));
        let targets: Vec<String> = targets(&members, Some("me"), 6880)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            targets,
            ["10.0.0.2:6880", "10.0.0.7:6880", "[fd00::5]:6880"]
        );
    }

    /// A member that accepts the push and drips its answer a byte at a time is given up on
    /// as one that never answers: the answer's whole time, not each read's, is bounded.
    #[test]
    fn a_member_dripping_its_answer_is_given_up_on() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        let dripper = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut head = [0u8; 1024];
            let _ = stream.read(&mut head);
            for byte in b"HTTP/1.1 202 Accepted\r\n\r\n" {
                if stream.write_all(&[*byte]).is_err() {
                    return;
                }
                std::thread::sleep(ANSWER_TIMEOUT / 6);
            }
        });
        let answer = send(target, "POST /push HTTP/1.1\r\n\r\n");
        assert!(answer.is_err(), "{answer:?}");
        let _ = dripper.join();
    }

    /// Sources in turn, as many members pushing: the server's burst, then its pace.
    #[test]
    fn the_rate_lets_a_burst_through_then_refills_at_its_pace() {
        let rate = Rate::default();
        let source = |i: usize| IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]);
        let start = Instant::now();
        let burst = (0..100).filter(|&i| rate.take_at(source(i), start)).count();
        assert_eq!(burst, BURST as usize);
        assert!(!rate.take_at(source(200), start + Duration::from_millis(50)));
        let later = start + Duration::from_secs(1);
        let refilled = (300..400)
            .filter(|&i| rate.take_at(source(i), later))
            .count();
        assert_eq!(refilled, RATE_PER_SEC as usize);
    }

    /// One source flooding (a member, or `debian-transmission` on a member's machine) gets
    /// its own burst and pace, not the server's: another member's push is still taken.
    #[test]
    fn a_flooding_source_leaves_the_rate_to_the_others() {
        let rate = Rate::default();
        let (flooder, member) = (IpAddr::from([10, 0, 0, 3]), IpAddr::from([10, 0, 0, 1]));
        let start = Instant::now();
        let flooded = (0..100).filter(|_| rate.take_at(flooder, start)).count();
        assert_eq!(flooded, SOURCE_BURST as usize);
        let later = start + Duration::from_secs(2);
        let flooded = (0..100).filter(|_| rate.take_at(flooder, later)).count();
        assert_eq!(flooded, 2 * SOURCE_RATE_PER_SEC as usize);
        assert!(rate.take_at(member, later), "the member's push is taken");
    }

    /// Sources past what is kept: the full ones are forgotten first, and a new source still
    /// gets its burst.
    #[test]
    fn the_sources_kept_are_bounded() {
        let rate = Rate::default();
        let start = Instant::now();
        for i in 0..(3 * SOURCES_KEPT) {
            let source = IpAddr::from([10, 1, (i / 256) as u8, (i % 256) as u8]);
            let _ = rate.take_at(source, start + Duration::from_secs(i as u64));
            let kept = rate.state.lock().unwrap().1.len();
            assert!(kept <= SOURCES_KEPT, "{kept}");
        }
    }
}
