//! `p2pu proxy`: the rendezvous on a public address. One UDP socket answers STUN Binding
//! requests from anyone, keeps a registry of fleet members keyed by node name (local and
//! mapped endpoints, expiring after missed keepalives), tells both sides of a `talkto` each
//! other's endpoints at once, and relays what cannot go direct: announcements and session
//! control always, bulk data under a rate cap. Datagrams that are not authenticated with the
//! fleet secret are dropped without a reply. A registration must also be signed by the node's
//! identity key, and a name is bound to the first key that registers it ([`names`]). Every
//! source IP address (IPv6: /64) shares one rate limit, whatever its ports. Memory is bounded:
//! members, names, sources and nonces.
//!
//! [`ProxyState::handle`] is pure (datagram in, datagrams out; a new name binding is also
//! written to the bindings file) so the logic is unit-tested without sockets; [`run`] is the
//! socket loop around it.

use super::names::{Bindings, Verdict};
use super::protocol::{self, Body, Message, Payload, ReplayGuard, Secret, SeqWindow, MAX_DATAGRAM};
use super::stun;
use super::udp;
use crate::bucket::Bucket;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The name the proxy signs its own messages with.
pub const PROXY_NAME: &str = "proxy";

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub secret: Secret,
    /// Cap on relayed bulk bytes per second, all members together.
    pub relay_rate_bytes: u64,
    pub max_members: usize,
    /// Datagrams per second one source IP address may send from all its ports together
    /// (burst: twice that).
    pub per_source_rate: u32,
    pub max_sources: usize,
    /// The port of the STUN-only socket (0: none), told to members on registration.
    pub alt_port: u16,
}

impl ProxyConfig {
    pub fn new(secret: Secret, relay_rate_kbps: u32) -> ProxyConfig {
        ProxyConfig {
            secret,
            relay_rate_bytes: u64::from(relay_rate_kbps) * 1000 / 8,
            max_members: 4096,
            per_source_rate: 200,
            max_sources: 16384,
            alt_port: 0,
        }
    }
}

#[derive(Debug, Clone)]
struct Member {
    local: SocketAddr,
    cert: String,
    mapped: SocketAddr,
    last_seen: Instant,
    keepalive: Duration,
    /// The member's bulk frames seen, against replays; new with each tunnel certificate (a
    /// restarted client).
    bulk: SeqWindow,
}

impl Member {
    /// Three missed keepalives and a member is gone.
    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.last_seen) > self.keepalive * 3 + Duration::from_secs(2)
    }
}

/// New names one source address may bind at once (a site's nodes behind one NAT registering
/// for the first time together) ...
pub const NEW_NAMES_BURST: usize = 32;
/// ... and then one per this many seconds.
pub const NEW_NAME_SECS: u64 = 60;

/// Counters for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub stun_answered: u64,
    pub accepted: u64,
    pub dropped_unauthenticated: u64,
    pub dropped_rate: u64,
    pub dropped_other: u64,
    pub relayed: u64,
    pub relay_capped: u64,
    /// Registrations unsigned, or for a name bound to another key, or past the names' cap.
    pub refused_registration: u64,
    pub dropped_replay: u64,
}

/// In words for the log: `stun answered 3, accepted 2, ...` (issue 29: a struct dump there
/// read `counters=Counters { stun_answered: 3, ... }`).
impl std::fmt::Display for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stun answered {}, accepted {}, dropped unauthenticated {}, dropped over the rate {}, \
             dropped replayed {}, dropped other {}, relayed {}, relays over the cap {}, \
             registrations refused {}",
            self.stun_answered,
            self.accepted,
            self.dropped_unauthenticated,
            self.dropped_rate,
            self.dropped_replay,
            self.dropped_other,
            self.relayed,
            self.relay_capped,
            self.refused_registration
        )
    }
}

/// What one rate-limit bucket counts: an IPv4 address, or an IPv6 /64 (what one host gets),
/// never the port, which a sender picks freely.
fn source_key(from: SocketAddr) -> IpAddr {
    match from.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
        v4 => v4,
    }
}

/// Everything the proxy knows; bounded.
#[derive(Debug)]
pub struct ProxyState {
    config: ProxyConfig,
    members: HashMap<String, Member>,
    names: Bindings,
    sources: HashMap<IpAddr, Bucket>,
    /// New name bindings per source address: [`NEW_NAMES_BURST`] at once, then one per
    /// [`NEW_NAME_SECS`]. A holder of the fleet secret with fresh keys must not bind every free
    /// name (the bindings persist: no new node could register again).
    new_names: HashMap<IpAddr, Bucket>,
    replay: ReplayGuard,
    relay_bucket: Bucket,
    pub counters: Counters,
}

/// One datagram to send.
pub type Outgoing = (SocketAddr, Vec<u8>);

impl ProxyState {
    pub fn new(config: ProxyConfig, now: Instant) -> ProxyState {
        let burst = config.relay_rate_bytes as f64;
        ProxyState {
            names: Bindings::in_memory(config.max_members),
            config,
            members: HashMap::new(),
            sources: HashMap::new(),
            new_names: HashMap::new(),
            replay: ReplayGuard::new(1 << 16),
            relay_bucket: Bucket::new(now, burst),
            counters: Counters::default(),
        }
    }

    /// Takes name bindings read from the state directory.
    pub fn with_names(mut self, names: Bindings) -> ProxyState {
        self.names = names;
        self
    }

    /// The registered local endpoint and certificate hash of `name`.
    pub fn endpoint(&self, name: &str) -> Option<(SocketAddr, &str)> {
        self.members.get(name).map(|m| (m.local, m.cert.as_str()))
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// The registered mapped endpoint of `name`.
    pub fn mapped(&self, name: &str) -> Option<SocketAddr> {
        self.members.get(name).map(|m| m.mapped)
    }

    /// Drops expired members and idle rate-limit entries.
    pub fn sweep(&mut self, now: Instant) {
        self.members.retain(|name, m| {
            let keep = !m.expired(now);
            if !keep {
                tracing::info!(member = %name, "member expired (missed keepalives)");
            }
            keep
        });
        self.sources
            .retain(|_, b| b.idle_for(now) < Duration::from_secs(10));
    }

    fn allow_source(&mut self, now: Instant, from: SocketAddr) -> bool {
        let rate = f64::from(self.config.per_source_rate);
        let from = source_key(from);
        if !self.sources.contains_key(&from) && self.sources.len() >= self.config.max_sources {
            self.sweep(now);
            if self.sources.len() >= self.config.max_sources {
                return false;
            }
        }
        self.sources
            .entry(from)
            .or_insert_with(|| Bucket::new(now, rate * 2.0))
            .take(now, rate, rate * 2.0, 1.0)
    }

    /// Handles one datagram from `from`; returns what to send.
    pub fn handle(
        &mut self,
        now: Instant,
        wall: u64,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Vec<Outgoing> {
        if bytes.len() > MAX_DATAGRAM || !self.allow_source(now, from) {
            self.counters.dropped_rate += u64::from(bytes.len() <= MAX_DATAGRAM);
            self.counters.dropped_other += u64::from(bytes.len() > MAX_DATAGRAM);
            return Vec::new();
        }
        if stun::looks_like_stun(bytes) {
            return match stun::answer_binding(bytes, from) {
                Some(answer) => {
                    self.counters.stun_answered += 1;
                    vec![(from, answer)]
                }
                None => {
                    self.counters.dropped_other += 1;
                    Vec::new()
                }
            };
        }
        if protocol::looks_like_bulk(bytes) {
            return self.bulk(now, wall, from, bytes);
        }
        if !protocol::looks_like_overlay(bytes) {
            self.counters.dropped_other += 1;
            return Vec::new();
        }
        let message = match protocol::decode(&self.config.secret, wall, bytes)
            .and_then(|m| self.replay.check(wall, &m).map(|()| m))
        {
            Ok(message) => message,
            Err(e) => {
                self.counters.dropped_unauthenticated += 1;
                tracing::debug!(%from, error = %e, "dropped datagram");
                return Vec::new();
            }
        };
        self.counters.accepted += 1;
        self.dispatch(now, wall, from, message)
    }

    /// A tunnel packet between members whose NATs defeat punching: forwarded as it is (the
    /// fleet secret authenticates it end to end) under the relay's rate cap.
    fn bulk(&mut self, now: Instant, wall: u64, from: SocketAddr, bytes: &[u8]) -> Vec<Outgoing> {
        let bulk = match protocol::decode_bulk(&self.config.secret, wall, bytes) {
            Ok(bulk) => bulk,
            Err(e) => {
                self.counters.dropped_unauthenticated += 1;
                tracing::debug!(%from, error = %e, "dropped bulk frame");
                return Vec::new();
            }
        };
        let Some(sender) = self.members.get_mut(bulk.from).filter(|m| m.mapped == from) else {
            self.counters.dropped_other += 1;
            return Vec::new();
        };
        // Before the cap: a replayed frame must not spend what the members' own frames need.
        if let Err(e) = sender.bulk.check(bulk.seq) {
            self.counters.dropped_replay += 1;
            tracing::debug!(%from, error = %e, "dropped bulk frame");
            return Vec::new();
        }
        sender.last_seen = now;
        let Some(target) = self.members.get(bulk.to).map(|m| m.mapped) else {
            self.counters.dropped_other += 1;
            return Vec::new();
        };
        let rate = self.config.relay_rate_bytes as f64;
        if !self
            .relay_bucket
            .take(now, rate, rate, bulk.packet.len() as f64)
        {
            self.counters.relay_capped += 1;
            return Vec::new();
        }
        self.counters.relayed += 1;
        vec![(target, bytes.to_vec())]
    }

    fn reply(&self, wall: u64, to: SocketAddr, from: &str, body: Body) -> Vec<Outgoing> {
        let payload = Payload {
            from: from.to_owned(),
            body,
        };
        match protocol::encode(&self.config.secret, wall, rand::random(), &payload) {
            Ok(bytes) => vec![(to, bytes)],
            Err(e) => {
                tracing::warn!(%to, error = %e, "cannot encode a reply");
                Vec::new()
            }
        }
    }

    fn dispatch(
        &mut self,
        now: Instant,
        wall: u64,
        from: SocketAddr,
        message: Message,
    ) -> Vec<Outgoing> {
        if matches!(message.payload.body, Body::Register { .. }) {
            if let Err(reason) = self.check_identity(now, source_key(from), &message) {
                self.counters.refused_registration += 1;
                let name = message.payload.from;
                tracing::warn!(member = %name, mapped = %from, %reason, "registration refused");
                return self.reply(
                    wall,
                    from,
                    PROXY_NAME,
                    Body::Refused {
                        target: name,
                        reason,
                    },
                );
            }
        }
        let name = message.payload.from;
        match message.payload.body {
            Body::Register {
                local,
                keepalive_secs,
                cert,
                ..
            } => {
                if !self.members.contains_key(&name)
                    && self.members.len() >= self.config.max_members
                {
                    self.sweep(now);
                    if self.members.len() >= self.config.max_members {
                        tracing::warn!(member = %name, "registry full; registration refused");
                        return Vec::new();
                    }
                }
                let cert: String = cert.chars().take(128).collect();
                let old = self.members.remove(&name);
                let bulk = old
                    .as_ref()
                    .filter(|old| old.cert == cert)
                    .map(|old| old.bulk.clone())
                    .unwrap_or_default();
                let fresh = old.is_none_or(|old| old.mapped != from || old.local != local);
                self.members.insert(
                    name.clone(),
                    Member {
                        local,
                        cert,
                        mapped: from,
                        last_seen: now,
                        keepalive: Duration::from_secs(u64::from(keepalive_secs.clamp(1, 60))),
                        bulk,
                    },
                );
                if fresh {
                    tracing::info!(member = %name, %local, mapped = %from, "registered");
                }
                let alt_port = self.config.alt_port;
                self.reply(
                    wall,
                    from,
                    PROXY_NAME,
                    Body::Registered {
                        mapped: from,
                        alt_port,
                    },
                )
            }
            Body::Unregister => {
                if self.members.get(&name).is_some_and(|m| m.mapped == from) {
                    self.members.remove(&name);
                    tracing::info!(member = %name, "unregistered");
                }
                Vec::new()
            }
            body => {
                let Some(member) = self.members.get_mut(&name).filter(|m| m.mapped == from) else {
                    // Unknown here (a restart, an expiry, or a new mapping): ask to register.
                    return self.reply(wall, from, PROXY_NAME, Body::Unknown);
                };
                member.last_seen = now;
                self.member_message(wall, &name, from, body)
            }
        }
    }

    /// A registration's signature, and its key against the name's binding; the reason for
    /// the member (and the log) when refused.
    fn check_identity(
        &mut self,
        now: Instant,
        source: IpAddr,
        message: &Message,
    ) -> Result<(), String> {
        let name = &message.payload.from;
        let key = protocol::verify_register(message).map_err(|e| e.to_string())?;
        let burst = NEW_NAMES_BURST as f64;
        let rate = 1.0 / NEW_NAME_SECS as f64;
        if !self.new_names.contains_key(&source) && self.new_names.len() >= self.config.max_sources
        {
            // Bounded like `sources`, but only a bucket that refilled is forgotten: it is as
            // good as new. Forgetting the others gave each of a holder's many addresses a
            // fresh burst once it had filled the table.
            self.new_names
                .retain(|_, bucket| !bucket.refilled(now, rate, burst));
        }
        // While the table is still full, a new source binds no new name (names it has are
        // still known): an empty bucket, not kept.
        let mut none_left = Bucket::empty(now);
        let bucket = if !self.new_names.contains_key(&source)
            && self.new_names.len() >= self.config.max_sources
        {
            &mut none_left
        } else {
            self.new_names
                .entry(source)
                .or_insert_with(|| Bucket::new(now, burst))
        };
        match self
            .names
            .check_new(name, &key, || bucket.take(now, rate, burst, 1.0))
        {
            Verdict::Known => Ok(()),
            Verdict::Bound => {
                tracing::info!(member = %name, key = %crate::keys::key_text(key.as_bytes()), "name bound to its first key");
                Ok(())
            }
            Verdict::Conflict => Err(format!(
                "the name {name} is bound to another identity key (key {})",
                crate::keys::key_text(key.as_bytes())
            )),
            Verdict::Full => Err("the proxy binds no more names".into()),
            Verdict::KeyTaken => Err(format!(
                "the identity key {} is bound to another name already (one name per key)",
                crate::keys::key_text(key.as_bytes())
            )),
            Verdict::TooMany => Err(format!(
                "too many new names from {source}: {NEW_NAMES_BURST} at once, then one per {NEW_NAME_SECS} s"
            )),
        }
    }

    fn member_message(
        &mut self,
        wall: u64,
        name: &str,
        from: SocketAddr,
        body: Body,
    ) -> Vec<Outgoing> {
        match body {
            Body::TalkTo { target } => {
                let refuse = |reason: &str| Body::Refused {
                    target: target.clone(),
                    reason: reason.to_owned(),
                };
                if target == name {
                    return self.reply(
                        wall,
                        from,
                        PROXY_NAME,
                        refuse("a node cannot talk to itself"),
                    );
                }
                let (Some(a), Some(b)) = (self.members.get(name), self.members.get(&target)) else {
                    return self.reply(
                        wall,
                        from,
                        PROXY_NAME,
                        refuse("not registered with the proxy"),
                    );
                };
                let (a, b) = (a.clone(), b.clone());
                tracing::info!(from = %name, to = %target, "coordinating hole punching");
                let mut out = self.reply(
                    wall,
                    a.mapped,
                    PROXY_NAME,
                    Body::Punch {
                        peer: target.clone(),
                        local: b.local,
                        mapped: b.mapped,
                        cert: b.cert,
                    },
                );
                out.extend(self.reply(
                    wall,
                    b.mapped,
                    PROXY_NAME,
                    Body::Punch {
                        peer: name.to_owned(),
                        local: a.local,
                        mapped: a.mapped,
                        cert: a.cert,
                    },
                ));
                out
            }
            Body::Relay { to, inner } => {
                let Some(target) = self.members.get(&to).map(|m| m.mapped) else {
                    return self.reply(
                        wall,
                        from,
                        PROXY_NAME,
                        Body::Refused {
                            target: to,
                            reason: "not registered with the proxy".into(),
                        },
                    );
                };
                // Session control and announcements are small and always relayed; bulk bytes
                // come as bulk frames, under the cap.
                match inner.as_ref() {
                    Body::Announce { .. }
                    | Body::AnnounceAck { .. }
                    | Body::Ping
                    | Body::Pong
                    | Body::Peers { .. }
                    | Body::EndSession => {}
                    other => {
                        tracing::debug!(from = %name, kind = other.kind(), "not relayed");
                        self.counters.dropped_other += 1;
                        return Vec::new();
                    }
                }
                self.counters.relayed += 1;
                self.reply(wall, target, name, Body::Relayed { inner })
            }
            other => {
                tracing::debug!(from = %name, kind = other.kind(), "ignored");
                self.counters.dropped_other += 1;
                Vec::new()
            }
        }
    }
}

/// Serves on `socket` until `stop` is set.
pub fn run(
    socket: &UdpSocket,
    config: ProxyConfig,
    names: Bindings,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let state = ProxyState::new(config, Instant::now()).with_names(names);
    tracing::info!(addr = %socket.local_addr()?, "proxy listening");
    let state = serve(socket, state, stop, |_| true)?;
    tracing::info!(counters = %state.counters, "proxy stopping");
    Ok(())
}

/// Answers STUN Binding requests only (the alternate port), until `stop` is set.
pub fn run_stun_only(
    socket: &UdpSocket,
    config: ProxyConfig,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let state = ProxyState::new(config, Instant::now());
    serve(socket, state, stop, stun::looks_like_stun).map(drop)
}

/// The proxy's loop: hands each datagram `admit` lets through to `state` and sends what it
/// answers, sweeping expired state once a second; returns the state when `stop` is set.
fn serve(
    socket: &UdpSocket,
    mut state: ProxyState,
    stop: &AtomicBool,
    admit: impl Fn(&[u8]) -> bool,
) -> std::io::Result<ProxyState> {
    socket.set_read_timeout(Some(Duration::from_millis(500)))?;
    // One byte more than the limit, so an oversized datagram is seen as oversized.
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut last_sweep = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now.duration_since(last_sweep) > Duration::from_secs(1) {
            state.sweep(now);
            last_sweep = now;
        }
        let Some((from, datagram)) = udp::receive(socket, &mut buf)? else {
            continue;
        };
        if !admit(datagram) {
            continue;
        }
        for (to, bytes) in state.handle(now, protocol::unix_now(), from, datagram) {
            if let Err(e) = socket.send_to(&bytes, to) {
                tracing::debug!(%to, error = %e, "send failed");
            }
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use sha2::{Digest, Sha256};

    fn secret() -> Secret {
        Secret::new(b"fleet-secret-for-unit-tests-0123").unwrap()
    }

    fn msg(from: &str, body: Body) -> Vec<u8> {
        let payload = Payload {
            from: from.into(),
            body,
        };
        protocol::encode(&secret(), 1000, rand::random(), &payload).unwrap()
    }

    fn open(bytes: &[u8]) -> Payload {
        protocol::decode(&secret(), 1000, bytes).unwrap().payload
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    /// Each name's own identity key in these tests.
    fn identity(name: &str) -> SigningKey {
        SigningKey::from_bytes(&Sha256::digest(name.as_bytes()).into())
    }

    /// A registration of `name` signed by `key`.
    fn signed_register(name: &str, key: &SigningKey, local: &str, cert: &str) -> Vec<u8> {
        let nonce = rand::random();
        let body = protocol::sign_register(key, 1000, nonce, name, addr(local), 5, cert.into());
        let payload = Payload {
            from: name.into(),
            body,
        };
        protocol::encode(&secret(), 1000, nonce, &payload).unwrap()
    }

    fn register(state: &mut ProxyState, now: Instant, name: &str, local: &str, mapped: &str) {
        let out = state.handle(
            now,
            1000,
            addr(mapped),
            &signed_register(name, &identity(name), local, &format!("cert-of-{name}")),
        );
        assert_eq!(out.len(), 1);
        assert_eq!(
            open(&out[0].1).body,
            Body::Registered {
                mapped: addr(mapped),
                alt_port: 0,
            }
        );
    }

    #[test]
    fn two_members_behind_one_nat_do_not_collide() {
        let now = Instant::now();
        let mut state = ProxyState::new(ProxyConfig::new(secret(), 100), now);
        register(
            &mut state,
            now,
            "a1",
            "192.168.1.10:3478",
            "100.64.0.2:3478",
        );
        register(
            &mut state,
            now,
            "a2",
            "192.168.1.11:3478",
            "100.64.0.2:1024",
        );
        assert_eq!(state.member_count(), 2);
        assert_eq!(state.mapped("a1"), Some(addr("100.64.0.2:3478")));
        assert_eq!(state.mapped("a2"), Some(addr("100.64.0.2:1024")));
    }

    #[test]
    fn talkto_sends_punch_to_both_sides() {
        let now = Instant::now();
        let mut state = ProxyState::new(ProxyConfig::new(secret(), 100), now);
        register(&mut state, now, "a", "192.168.1.10:3478", "100.64.0.2:3478");
        register(&mut state, now, "b", "192.168.2.10:3478", "100.64.0.3:3478");
        let out = state.handle(
            now,
            1000,
            addr("100.64.0.2:3478"),
            &msg("a", Body::TalkTo { target: "b".into() }),
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0, addr("100.64.0.2:3478"));
        assert_eq!(
            open(&out[0].1).body,
            Body::Punch {
                peer: "b".into(),
                local: addr("192.168.2.10:3478"),
                mapped: addr("100.64.0.3:3478"),
                cert: "cert-of-b".into(),
            }
        );
        assert_eq!(out[1].0, addr("100.64.0.3:3478"));
        assert_eq!(open(&out[1].1).from, "proxy");
    }

    #[test]
    fn talkto_an_unknown_node_is_refused() {
        let now = Instant::now();
        let mut state = ProxyState::new(ProxyConfig::new(secret(), 100), now);
        register(&mut state, now, "a", "192.168.1.10:3478", "100.64.0.2:3478");
        let out = state.handle(
            now,
            1000,
            addr("100.64.0.2:3478"),
            &msg(
                "a",
                Body::TalkTo {
                    target: "zz".into(),
                },
            ),
        );
        assert!(matches!(open(&out[0].1).body, Body::Refused { .. }));
    }

    #[test]
    fn unregistered_senders_are_told_to_register() {
        let now = Instant::now();
        let mut state = ProxyState::new(ProxyConfig::new(secret(), 100), now);
        let out = state.handle(
            now,
            1000,
            addr("100.64.0.2:3478"),
            &msg("a", Body::TalkTo { target: "b".into() }),
        );
        assert_eq!(open(&out[0].1).body, Body::Unknown);
    }

    #[test]
    fn members_expire_after_missed_keepalives() {
        let now = Instant::now();
        let mut state = ProxyState::new(ProxyConfig::new(secret(), 100), now);
        register(&mut state, now, "a", "192.168.1.10:3478", "100.64.0.2:3478");
        state.sweep(now + Duration::from_secs(10));
        assert_eq!(state.member_count(), 1);
        state.sweep(now + Duration::from_secs(18));
        assert_eq!(state.member_count(), 0);
    }

    #[test]
    fn strangers_get_no_reply() {
        let now = Instant::now();
        let mut state = ProxyState::new(ProxyConfig::new(secret(), 100), now);
        let other = Secret::new(b"not-the-fleet-secret-at-all!!").unwrap();
        let forged = protocol::encode(
            &other,
            1000,
            1,
            &Payload {
                from: "a".into(),
                body: Body::Register {
                    local: addr("1.2.3.4:5"),
                    keepalive_secs: 5,
                    cert: String::new(),
                    key: String::new(),
                    sig: String::new(),
                },
            },
        )
        .unwrap();
        let from = addr("100.64.0.9:4000");
        assert!(state.handle(now, 1000, from, &forged).is_empty());
        assert!(state.handle(now, 1000, from, b"\x2fP2P garbage").is_empty());
        assert!(state.handle(now, 1000, from, &[0u8; 3000]).is_empty());
        assert_eq!(state.member_count(), 0);
        assert_eq!(state.counters.dropped_unauthenticated, 2);
    }

    #[test]
    fn a_replayed_register_is_dropped() {
        let now = Instant::now();
        let mut state = ProxyState::new(ProxyConfig::new(secret(), 100), now);
        let bytes = signed_register("a", &identity("a"), "192.168.1.10:1", "");
        let from = addr("100.64.0.2:1");
        assert_eq!(state.handle(now, 1000, from, &bytes).len(), 1);
        assert!(state.handle(now, 1000, from, &bytes).is_empty());
    }

    #[test]
    fn one_source_is_rate_limited() {
        let now = Instant::now();
        let mut state = ProxyState::new(ProxyConfig::new(secret(), 100), now);
        let (_, request) = stun::binding_request().unwrap();
        let from = addr("100.64.0.9:4000");
        let answered = (0..1000)
            .filter(|_| !state.handle(now, 1000, from, &request).is_empty())
            .count();
        assert_eq!(answered, 400);
        // Another source is not affected.
        assert_eq!(
            state
                .handle(now, 1000, addr("100.64.0.8:4000"), &request)
                .len(),
            1
        );
    }

    /// Regression (security issue #13, item 8): the limit was per ip:port, and 20 source
    /// ports of one host got 4,732 answers in one burst.
    #[test]
    fn all_ports_of_one_address_share_one_rate_limit() {
        let now = Instant::now();
        let mut state = ProxyState::new(ProxyConfig::new(secret(), 100), now);
        let (_, request) = stun::binding_request().unwrap();
        let answered = (0..64u16)
            .flat_map(|port| (0..50).map(move |_| port))
            .filter(|&port| {
                let from = SocketAddr::new("100.64.0.9".parse().unwrap(), 4000 + port);
                !state.handle(now, 1000, from, &request).is_empty()
            })
            .count();
        assert_eq!(answered, 400);
        // One IPv6 host's /64 counts as one address too.
        let answered = (0..1000u16)
            .filter(|&i| {
                let from: SocketAddr = format!("[2001:db8:0:1:{i:x}::1]:{}", 4000 + i)
                    .parse()
                    .unwrap();
                !state.handle(now, 1000, from, &request).is_empty()
            })
            .count();
        assert_eq!(answered, 400);
    }

    /// Issue 28's untried attack: a holder of the fleet secret registering name after name
    /// with fresh keys bound every free name for good (the bindings persist), and no later node
    /// could register. One source binds NEW_NAMES_BURST at once, then one per NEW_NAME_SECS;
    /// another source still binds its name.
    #[test]
    fn one_source_cannot_bind_every_free_name() {
        let now = Instant::now();
        let mut config = ProxyConfig::new(secret(), 100);
        config.max_members = 4 * NEW_NAMES_BURST;
        let mut state = ProxyState::new(config, now);
        let from = addr("100.64.0.9:4000");
        for n in 0..(2 * NEW_NAMES_BURST) {
            let name = format!("squat-{n}");
            let bytes = signed_register(&name, &identity(&name), "10.0.0.9:1", "");
            state.handle(now, 1000, from, &bytes);
        }
        assert_eq!(state.names.len(), NEW_NAMES_BURST);
        let honest = signed_register("cam-1", &identity("cam-1"), "10.0.0.7:1", "");
        let answer = state.handle(now, 1000, addr("100.64.0.7:4000"), &honest);
        assert!(matches!(open(&answer[0].1).body, Body::Registered { .. }));
        // The same source binds again once its rate allows it.
        let later = now + Duration::from_secs(NEW_NAME_SECS);
        let bytes = signed_register("squat-late", &identity("squat-late"), "10.0.0.9:1", "");
        state.handle(later, 1000, from, &bytes);
        assert_eq!(state.names.len(), NEW_NAMES_BURST + 2);
    }

    /// Hostile review of issue 28's name limits: the table of sources binding new names is
    /// bounded, and when it was full a new source emptied it, so every source that had spent
    /// its burst got a fresh one. A holder of the fleet secret with more addresses than the
    /// table holds (an IPv6 prefix counts one per /64) binds 32 names per address per round and
    /// fills the proxy's names for good. Now only buckets that refilled (as good as new) are
    /// forgotten; while none has, a new source binds no new name until one has.
    #[test]
    fn a_full_table_of_sources_gives_nobody_a_fresh_burst() {
        let t0 = Instant::now();
        let mut config = ProxyConfig::new(secret(), 100);
        config.max_sources = 4;
        config.max_members = 16 * NEW_NAMES_BURST;
        let mut state = ProxyState::new(config, t0);
        let bind = |state: &mut ProxyState, at: Instant, source: usize, name: &str| {
            let bytes = signed_register(name, &identity(name), "10.0.0.9:1", "");
            let from = addr(&format!("100.64.0.{source}:4000"));
            let before = state.names.len();
            state.handle(at, 1000, from, &bytes);
            state.names.len() > before
        };
        for source in 1..=4 {
            for n in 0..NEW_NAMES_BURST {
                assert!(bind(&mut state, t0, source, &format!("squat-{source}-{n}")));
            }
        }
        // Past the per-packet sources' 10 s, a fifth address comes: the table of new-name
        // sources is full of spent buckets.
        let t1 = t0 + Duration::from_secs(11);
        assert!(
            !bind(&mut state, t1, 5, "squat-5-0"),
            "a new source while the table is full"
        );
        assert!(
            !bind(&mut state, t1, 1, "squat-1-again"),
            "a source that spent its burst got a fresh one"
        );
        // Once the buckets refilled, they are as good as new and give way.
        let refilled = t0 + Duration::from_secs(NEW_NAME_SECS * NEW_NAMES_BURST as u64 + 1);
        assert!(bind(&mut state, refilled, 5, "cam-5"));
    }

    /// Regression (security issue #13, item 8): any holder of the fleet secret could register
    /// under a member's name and replace its mapped address and pinned certificate hash.
    #[test]
    fn another_key_cannot_take_over_a_registered_name() {
        let now = Instant::now();
        let mut state = ProxyState::new(ProxyConfig::new(secret(), 100), now);
        register(&mut state, now, "a", "192.168.1.10:3478", "100.64.0.2:3478");
        let intruder = SigningKey::from_bytes(&[0x66; 32]);
        let taken_over = signed_register("a", &intruder, "10.9.9.9:1", "cert-of-intruder");
        let out = state.handle(now, 1000, addr("100.64.0.66:4000"), &taken_over);
        assert!(
            matches!(&open(&out[0].1).body, Body::Refused { target, .. } if target == "a"),
            "{out:?}"
        );
        assert_eq!(state.mapped("a"), Some(addr("100.64.0.2:3478")));
        assert_eq!(
            state.endpoint("a"),
            Some((addr("192.168.1.10:3478"), "cert-of-a"))
        );
        assert_eq!(state.counters.refused_registration, 1);
        // Still refused after a's entry expired: the name stays bound to a's key.
        state.sweep(now + Duration::from_secs(60));
        assert_eq!(state.member_count(), 0);
        let later = signed_register("a", &intruder, "10.9.9.9:1", "cert-of-intruder");
        state.handle(now, 1000, addr("100.64.0.66:4000"), &later);
        assert_eq!(state.member_count(), 0);
        // Unsigned registrations are refused as well.
        let unsigned = msg(
            "b",
            Body::Register {
                local: addr("10.9.9.9:1"),
                keepalive_secs: 5,
                cert: String::new(),
                key: String::new(),
                sig: String::new(),
            },
        );
        state.handle(now, 1000, addr("100.64.0.66:4000"), &unsigned);
        assert_eq!(state.mapped("b"), None);
        // The owner moves (a new mapping) and keeps its name.
        register(&mut state, now, "a", "192.168.1.10:3478", "100.64.0.2:5000");
        assert_eq!(state.mapped("a"), Some(addr("100.64.0.2:5000")));
    }

    #[test]
    fn name_bindings_survive_a_proxy_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::nat::names::BINDINGS_FILE);
        let now = Instant::now();
        let fresh = || {
            ProxyState::new(ProxyConfig::new(secret(), 100), now)
                .with_names(Bindings::load(&path, 16).unwrap())
        };
        let mut state = fresh();
        register(&mut state, now, "a", "192.168.1.10:3478", "100.64.0.2:3478");
        drop(state);
        let mut state = fresh();
        let intruder = SigningKey::from_bytes(&[0x66; 32]);
        let taken_over = signed_register("a", &intruder, "10.9.9.9:1", "cert-of-intruder");
        state.handle(now, 1000, addr("100.64.0.66:4000"), &taken_over);
        assert_eq!(state.mapped("a"), None);
        register(&mut state, now, "a", "192.168.1.10:3478", "100.64.0.2:3478");
        assert_eq!(state.mapped("a"), Some(addr("100.64.0.2:3478")));
    }

    /// Regression (security issue #13, item 8): a captured bulk frame sent again was relayed
    /// again, spending the relay's cap.
    #[test]
    fn a_replayed_bulk_frame_is_dropped() {
        let now = Instant::now();
        let mut state = ProxyState::new(ProxyConfig::new(secret(), 800), now);
        register(&mut state, now, "a", "192.168.1.10:3478", "100.64.0.2:3478");
        register(&mut state, now, "b", "192.168.2.10:3478", "100.64.0.3:3478");
        let from = addr("100.64.0.2:3478");
        let frame = protocol::encode_bulk(&secret(), 1000, 7, "a", "b", &[0x40; 100]).unwrap();
        assert_eq!(state.handle(now, 1000, from, &frame).len(), 1);
        assert!(state.handle(now, 1000, from, &frame).is_empty());
        assert_eq!(state.counters.dropped_replay, 1);
        let next = protocol::encode_bulk(&secret(), 1000, 8, "a", "b", &[0x40; 100]).unwrap();
        assert_eq!(state.handle(now, 1000, from, &next).len(), 1);
        // A keepalive (the same certificate) keeps the window.
        register(&mut state, now, "a", "192.168.1.10:3478", "100.64.0.2:3478");
        assert!(state.handle(now, 1000, from, &next).is_empty());
    }

    #[test]
    fn bulk_frames_are_forwarded_between_members_under_the_cap() {
        let now = Instant::now();
        let mut state = ProxyState::new(ProxyConfig::new(secret(), 80), now);
        register(&mut state, now, "a", "192.168.1.10:3478", "100.64.0.2:3478");
        register(&mut state, now, "b", "192.168.2.10:3478", "100.64.0.3:3478");
        let frame =
            |seq| protocol::encode_bulk(&secret(), 1000, seq, "a", "b", &[0x40; 1200]).unwrap();
        let out = state.handle(now, 1000, addr("100.64.0.2:3478"), &frame(1));
        assert_eq!(out, vec![(addr("100.64.0.3:3478"), frame(1))]);
        // Not from a's registered address: dropped.
        assert!(state
            .handle(now, 1000, addr("100.64.0.9:1"), &frame(2))
            .is_empty());
        // 80 kbit/s = 10000 bytes/s: eight packets pass, then the cap bites.
        let passed = (2..22)
            .filter(|&seq| {
                !state
                    .handle(now, 1000, addr("100.64.0.2:3478"), &frame(seq))
                    .is_empty()
            })
            .count();
        assert_eq!(passed, 7);
    }

    #[test]
    fn announcements_are_relayed_even_when_the_bulk_cap_is_spent() {
        let now = Instant::now();
        // 8 kbit/s: 1000 bytes per second.
        let mut state = ProxyState::new(ProxyConfig::new(secret(), 8), now);
        register(&mut state, now, "a", "192.168.1.10:3478", "100.64.0.2:3478");
        register(&mut state, now, "b", "192.168.2.10:3478", "100.64.0.3:3478");
        let from = addr("100.64.0.2:3478");
        let announce = Body::Announce {
            id: 1,
            wire: "p2pu1:abc".into(),
        };
        let out = state.handle(
            now,
            1000,
            from,
            &msg(
                "a",
                Body::Relay {
                    to: "b".into(),
                    inner: Box::new(announce.clone()),
                },
            ),
        );
        assert_eq!(out[0].0, addr("100.64.0.3:3478"));
        let relayed = open(&out[0].1);
        assert_eq!(relayed.from, "a");
        assert_eq!(
            relayed.body,
            Body::Relayed {
                inner: Box::new(announce)
            }
        );
        let passed = (0..10)
            .filter(|&seq| {
                let frame =
                    protocol::encode_bulk(&secret(), 1000, seq, "a", "b", &[0x40; 400]).unwrap();
                !state.handle(now, 1000, from, &frame).is_empty()
            })
            .count();
        assert_eq!(passed, 2);
        assert_eq!(state.counters.relay_capped, 8);
        // Other kinds are not relayed at all.
        let out = state.handle(
            now,
            1000,
            from,
            &msg(
                "a",
                Body::Relay {
                    to: "b".into(),
                    inner: Box::new(Body::TalkTo { target: "c".into() }),
                },
            ),
        );
        assert!(out.is_empty());
        // Announcements are never capped.
        let out = state.handle(
            now,
            1000,
            from,
            &msg(
                "a",
                Body::Relay {
                    to: "b".into(),
                    inner: Box::new(Body::Announce {
                        id: 2,
                        wire: "p2pu1:def".into(),
                    }),
                },
            ),
        );
        assert_eq!(out.len(), 1);
    }
}
