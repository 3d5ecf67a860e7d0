//! `p2pu nat-client`: one UDP socket for everything a node behind NAT does. It keeps its
//! mapping alive with a STUN Binding request and a registration every keepalive, re-registers
//! when the proxy forgets it, punches holes to session peers (falling back to the proxy's
//! relay when no probe gets through), pings and expires session peers, and writes
//! announcements received from them into the agent's spool. Control requests from the local
//! socket arrive on a channel and are handled on the same thread, so the state has one owner.

use super::control::{ClientStatus, Incoming, PeerStatus, Request, Response};
use super::protocol::{self, Body, Message, Payload, ReplayGuard, Secret, MAX_DATAGRAM};
use super::proxy::PROXY_NAME;
use super::stun;
use super::tunnel::{self, Fingerprint, Tunnel, TunnelConfig};
use super::udp;
use crate::formats::announcement::{is_wire, WIRE_PREFIX, WIRE_PREFIX_V2};
use crate::spool::{self, Source};
use ed25519_dalek::SigningKey;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Probes go out this often while punching...
const PROBE_EVERY: Duration = Duration::from_millis(200);
/// ...and after this long without an answer the session goes through the relay.
const PUNCH_TIMEOUT: Duration = Duration::from_secs(4);
/// Unacknowledged announcements are sent again this often, this many times.
const RESEND_EVERY: Duration = Duration::from_millis(500);
const MAX_SENDS: u32 = 20;
/// Registration retries before the first answer (and after the proxy said "unknown").
const REGISTER_RETRY: Duration = Duration::from_secs(1);
/// How long `talkto` waits for the session to come up.
const TALKTO_TIMEOUT: Duration = Duration::from_secs(10);
const SEEN_CAPACITY: usize = 4096;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub name: String,
    pub bind: SocketAddr,
    pub proxy: SocketAddr,
    pub stun_server: SocketAddr,
    pub secret: Secret,
    /// This node's NAT identity key: it signs every registration, and the proxy binds the
    /// node's name to it.
    pub identity: SigningKey,
    pub keepalive: Duration,
    pub peer_expiry: Duration,
    pub spool_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathState {
    Punching { since: Instant, next_probe: Instant },
    Direct(SocketAddr),
    Relayed,
}

#[derive(Debug)]
struct Session {
    local: SocketAddr,
    /// The peer's tunnel certificate hash, from its registration.
    cert: Option<Fingerprint>,
    mapped: SocketAddr,
    path: PathState,
    last_heard: Instant,
    next_ping: Instant,
}

#[derive(Debug)]
struct Outbound {
    id: u64,
    wire: String,
    pending: HashSet<String>,
    delivered: Vec<String>,
    sends: u32,
    next: Instant,
    reply: Option<mpsc::Sender<Response>>,
}

#[derive(Debug)]
struct Waiter {
    target: String,
    reply: mpsc::Sender<Response>,
    deadline: Instant,
    next_retry: Instant,
}

/// What this client has seen of its own NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NatSeen {
    Unknown,
    None,
    EndpointIndependent,
    Symmetric,
}

impl NatSeen {
    fn as_str(self) -> &'static str {
        match self {
            NatSeen::Unknown => "unknown",
            NatSeen::None => "none",
            NatSeen::EndpointIndependent => "endpoint-independent",
            NatSeen::Symmetric => "address-dependent (symmetric)",
        }
    }
}

/// The one socket: plain, or shared with the QUIC tunnel (which then hands the client its
/// non-QUIC datagrams).
enum Transport {
    Plain(UdpSocket),
    Tunnel(Tunnel),
}

pub struct Client {
    config: ClientConfig,
    transport: Transport,
    local: SocketAddr,
    stun_txn: Option<stun_codec::TransactionId>,
    stun_mapped: Option<SocketAddr>,
    /// The proxy's STUN-only port and what it saw, for the NAT's mapping behaviour.
    alt_port: u16,
    alt_txn: Option<stun_codec::TransactionId>,
    alt_mapped: Option<SocketAddr>,
    proxy_sees: Option<SocketAddr>,
    last_registered: Option<Instant>,
    next_register: Instant,
    sessions: HashMap<String, Session>,
    outbox: Vec<Outbound>,
    seen: HashSet<(String, u64)>,
    seen_order: VecDeque<(String, u64)>,
    waiters: Vec<Waiter>,
    replay: ReplayGuard,
    nat: NatSeen,
    exiting: bool,
}

impl Client {
    /// Binds the one socket and works out the LAN endpoint peers on the same LAN can use.
    /// With `transmission_port`, the socket also carries QUIC tunnels to session peers that end
    /// at that port on this node's LAN address, and (with `seed_port`) at its web seed server.
    pub fn bind(
        config: ClientConfig,
        transmission_port: Option<u16>,
        seed_port: Option<u16>,
    ) -> std::io::Result<Client> {
        let socket = UdpSocket::bind(config.bind)?;
        let bound = socket.local_addr()?;
        let ip = if bound.ip().is_unspecified() {
            route_source(config.proxy).unwrap_or(bound.ip())
        } else {
            bound.ip()
        };
        let now = Instant::now();
        let transport = match transmission_port {
            None => {
                socket.set_read_timeout(Some(Duration::from_millis(50)))?;
                Transport::Plain(socket)
            }
            Some(port) => Transport::Tunnel(tunnel::start(
                socket,
                TunnelConfig {
                    name: config.name.clone(),
                    secret: config.secret.clone(),
                    proxy: config.proxy,
                    host: ip,
                    transmission_port: port,
                    seed_port,
                },
            )?),
        };
        Ok(Client {
            local: SocketAddr::new(ip, bound.port()),
            config,
            transport,
            stun_txn: None,
            stun_mapped: None,
            alt_port: 0,
            alt_txn: None,
            alt_mapped: None,
            proxy_sees: None,
            last_registered: None,
            next_register: now,
            sessions: HashMap::new(),
            outbox: Vec::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            waiters: Vec::new(),
            replay: ReplayGuard::new(1 << 16),
            nat: NatSeen::Unknown,
            exiting: false,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Handles one datagram as if `run` had received it from `from`: the entry the fuzz target
    /// `nat_client` drives the client through without a peer. Not an API.
    #[doc(hidden)]
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.datagram(now, from, bytes);
    }

    /// Runs until `stop` is set or an `exit` request arrives.
    pub fn run(
        mut self,
        control: &mpsc::Receiver<Incoming>,
        stop: &AtomicBool,
    ) -> std::io::Result<()> {
        tracing::info!(node = %self.config.name, local = %self.local, proxy = %self.config.proxy, "nat-client running");
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        while !self.exiting {
            if stop.load(Ordering::Relaxed) {
                self.farewell();
                break;
            }
            while let Ok(incoming) = control.try_recv() {
                let answer = self.control(incoming.request, &incoming.reply);
                if let Some(answer) = answer {
                    let _ = incoming.reply.send(answer);
                }
            }
            self.timers(Instant::now());
            let received = match &self.transport {
                Transport::Plain(socket) => udp::receive(socket, &mut buf)?
                    .filter(|(_, d)| d.len() <= MAX_DATAGRAM)
                    .map(|(from, d)| (from, d.to_vec())),
                Transport::Tunnel(tunnel) => {
                    match tunnel.inbox.recv_timeout(Duration::from_millis(50)) {
                        Ok(got) => Some(got).filter(|(_, d)| d.len() <= MAX_DATAGRAM),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            return Err(std::io::Error::other("the tunnel thread died"))
                        }
                    }
                }
            };
            if let Some((from, datagram)) = received {
                self.datagram(Instant::now(), from, &datagram);
            }
        }
        tracing::info!("nat-client stopping");
        Ok(())
    }

    fn send_raw(&self, to: SocketAddr, bytes: &[u8]) {
        let socket = match &self.transport {
            Transport::Plain(socket) => socket,
            Transport::Tunnel(tunnel) => &tunnel.send_socket,
        };
        if let Err(e) = socket.send_to(bytes, to) {
            tracing::debug!(%to, error = %e, "send failed");
        }
    }

    fn send(&self, to: SocketAddr, body: Body) {
        self.send_stamped(to, protocol::unix_now(), rand::random(), body);
    }

    /// Sends `body` with this time and nonce (what a signed registration was signed for).
    fn send_stamped(&self, to: SocketAddr, time: u64, nonce: u64, body: Body) {
        let payload = Payload {
            from: self.config.name.clone(),
            body,
        };
        match protocol::encode(&self.config.secret, time, nonce, &payload) {
            Ok(bytes) => self.send_raw(to, &bytes),
            Err(e) => tracing::warn!(%to, kind = payload.body.kind(), error = %e, "cannot encode"),
        }
    }

    /// Sends to a session peer over its direct path, or through the proxy's relay.
    fn send_peer(&self, peer: &str, body: Body) {
        match self.sessions.get(peer).map(|s| s.path) {
            Some(PathState::Direct(addr)) => self.send(addr, body),
            Some(_) => self.send(
                self.config.proxy,
                Body::Relay {
                    to: peer.to_owned(),
                    inner: Box::new(body),
                },
            ),
            None => {}
        }
    }

    fn registered(&self, now: Instant) -> bool {
        self.last_registered
            .is_some_and(|t| now.duration_since(t) < self.config.keepalive * 3)
    }

    fn timers(&mut self, now: Instant) {
        if now >= self.next_register {
            self.keepalive(now);
        }
        self.punch(now);
        self.ping_and_expire(now);
        self.resend(now);
        self.talkto_waits(now);
    }

    /// A STUN Binding request (learns the mapped address, refreshes the mapping) and a
    /// registration (refreshes the proxy's entry; re-creates it after a proxy restart).
    fn keepalive(&mut self, now: Instant) {
        match stun::binding_request() {
            Ok((id, bytes)) => {
                self.stun_txn = Some(id);
                self.send_raw(self.config.stun_server, &bytes);
            }
            Err(e) => tracing::warn!(error = %e, "cannot build a STUN request"),
        }
        if self.alt_port != 0 {
            if let Ok((id, bytes)) = stun::binding_request() {
                self.alt_txn = Some(id);
                self.send_raw(
                    SocketAddr::new(self.config.proxy.ip(), self.alt_port),
                    &bytes,
                );
            }
        }
        let (time, nonce) = (protocol::unix_now(), rand::random());
        let register = protocol::sign_register(
            &self.config.identity,
            time,
            nonce,
            &self.config.name,
            self.local,
            u32::try_from(self.config.keepalive.as_secs()).unwrap_or(30),
            match &self.transport {
                Transport::Tunnel(tunnel) => hex::encode(tunnel.fingerprint),
                Transport::Plain(_) => String::new(),
            },
        );
        self.send_stamped(self.config.proxy, time, nonce, register);
        let answered_lately = self
            .last_registered
            .is_some_and(|t| now.duration_since(t) <= self.config.keepalive + REGISTER_RETRY);
        self.next_register = now
            + if answered_lately {
                self.config.keepalive
            } else {
                REGISTER_RETRY
            };
    }

    fn punch(&mut self, now: Instant) {
        let mut probes = Vec::new();
        let mut gave_up = Vec::new();
        for (name, session) in &mut self.sessions {
            if let PathState::Punching { since, next_probe } = session.path {
                if now.duration_since(since) > PUNCH_TIMEOUT {
                    session.path = PathState::Relayed;
                    gave_up.push(name.clone());
                } else if now >= next_probe {
                    probes.push(session.mapped);
                    if session.local != session.mapped {
                        probes.push(session.local);
                    }
                    session.path = PathState::Punching {
                        since,
                        next_probe: now + PROBE_EVERY,
                    };
                }
            }
        }
        for addr in probes {
            self.send(addr, Body::Probe);
        }
        for name in gave_up {
            tracing::info!(peer = %name, "hole punching failed; using the proxy's relay");
            self.session_up(&name);
        }
    }

    fn ping_and_expire(&mut self, now: Instant) {
        let expiry = self.config.peer_expiry;
        let expired: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| now.duration_since(s.last_heard) > expiry)
            .map(|(n, _)| n.clone())
            .collect();
        for name in expired {
            tracing::info!(peer = %name, "session peer expired (nothing heard)");
            self.end_session(&name);
        }
        let due: Vec<String> = self
            .sessions
            .iter_mut()
            .filter(|(_, s)| !matches!(s.path, PathState::Punching { .. }) && now >= s.next_ping)
            .map(|(n, s)| {
                s.next_ping = now + self.config.keepalive;
                n.clone()
            })
            .collect();
        for name in due {
            self.send_peer(&name, Body::Ping);
        }
    }

    fn resend(&mut self, now: Instant) {
        let mut sends = Vec::new();
        for out in &mut self.outbox {
            if now >= out.next && out.sends < MAX_SENDS {
                out.sends += 1;
                out.next = now + RESEND_EVERY;
                for peer in &out.pending {
                    sends.push((peer.clone(), out.id, out.wire.clone()));
                }
            }
        }
        for (peer, id, wire) in sends {
            self.send_peer(&peer, Body::Announce { id, wire });
        }
        self.outbox.retain_mut(|out| {
            let done = out.pending.is_empty();
            let failed = out.sends >= MAX_SENDS && now >= out.next;
            if done || failed {
                if let Some(reply) = out.reply.take() {
                    let answer = if done {
                        Response::ok(format!("delivered to {}", out.delivered.join(", ")))
                    } else {
                        let mut missing: Vec<&str> =
                            out.pending.iter().map(String::as_str).collect();
                        missing.sort_unstable();
                        Response::error(format!(
                            "not acknowledged by {} after {MAX_SENDS} sends{}",
                            missing.join(", "),
                            if out.delivered.is_empty() {
                                String::new()
                            } else {
                                format!(" (delivered to {})", out.delivered.join(", "))
                            }
                        ))
                    };
                    let _ = reply.send(answer);
                }
                return false;
            }
            true
        });
    }

    fn talkto_waits(&mut self, now: Instant) {
        let mut retry = Vec::new();
        self.waiters.retain_mut(|w| {
            if now >= w.deadline {
                let _ = w.reply.send(Response::error(format!(
                    "no session with {} after {} s: is the proxy reachable?",
                    w.target,
                    TALKTO_TIMEOUT.as_secs()
                )));
                return false;
            }
            if now >= w.next_retry {
                w.next_retry = now + Duration::from_secs(1);
                retry.push(w.target.clone());
            }
            true
        });
        for target in retry {
            if !self.sessions.contains_key(&target) {
                self.send(self.config.proxy, Body::TalkTo { target });
            }
        }
    }

    /// A session reached a usable path (direct or relayed): open its tunnel end, answer
    /// `talkto` and share peers.
    fn session_up(&mut self, name: &str) {
        let Some((path, cert)) = self.sessions.get(name).map(|s| (s.path, s.cert)) else {
            return;
        };
        if let (Transport::Tunnel(tunnel), Some(cert)) = (&self.transport, cert) {
            tunnel.command(tunnel::Command::PeerUp {
                name: name.to_owned(),
                direct: match path {
                    PathState::Direct(addr) => Some(addr),
                    _ => None,
                },
                cert,
            });
        }
        self.answer_talkto(name);
    }

    /// Answers `talkto` requests for `name` and tells it about our other session peers.
    fn answer_talkto(&mut self, name: &str) {
        let Some(path) = self.sessions.get(name).map(|s| s.path) else {
            return;
        };
        let text = path_name(path);
        let mut keep = Vec::new();
        for w in self.waiters.drain(..) {
            if w.target == name {
                let _ = w
                    .reply
                    .send(Response::ok(format!("session with {name}: {text}")));
            } else {
                keep.push(w);
            }
        }
        self.waiters = keep;
        let names: Vec<String> = self
            .sessions
            .keys()
            .filter(|n| n.as_str() != name)
            .cloned()
            .collect();
        if !names.is_empty() {
            self.send_peer(name, Body::Peers { names });
        }
    }

    /// Forgets session peer `name`, closing its tunnel end.
    fn end_session(&mut self, name: &str) {
        if self.sessions.remove(name).is_some() {
            if let Transport::Tunnel(tunnel) = &self.transport {
                tunnel.command(tunnel::Command::PeerDown {
                    name: name.to_owned(),
                });
            }
        }
    }

    fn datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if stun::looks_like_stun(bytes) {
            if let Some(mapped) = self.alt_txn.and_then(|id| stun::mapped_address(bytes, id)) {
                self.alt_mapped = Some(mapped);
                self.learn_nat();
            }
            if let Some(id) = self.stun_txn {
                if let Some(mapped) = stun::mapped_address(bytes, id) {
                    if self.stun_mapped != Some(mapped) {
                        tracing::info!(%mapped, server = %from, "mapped address learnt over STUN");
                    }
                    self.stun_mapped = Some(mapped);
                    self.learn_nat();
                }
            }
            return;
        }
        if !protocol::looks_like_overlay(bytes) {
            return;
        }
        let wall = protocol::unix_now();
        let message: Message = match protocol::decode(&self.config.secret, wall, bytes)
            .and_then(|m| self.replay.check(wall, &m).map(|()| m))
        {
            Ok(message) => message,
            Err(e) => {
                tracing::debug!(%from, error = %e, "dropped datagram");
                return;
            }
        };
        let sender = message.payload.from;
        if from == self.config.proxy {
            match message.payload.body {
                Body::Relayed { inner } => self.peer_message(now, &sender, None, *inner),
                body if sender == PROXY_NAME => self.proxy_message(now, body),
                _ => {}
            }
        } else {
            self.peer_message(now, &sender, Some(from), message.payload.body);
        }
    }

    fn learn_nat(&mut self) {
        let seen = self.stun_mapped.or(self.proxy_sees);
        if seen == Some(self.local) {
            self.nat = NatSeen::None;
        } else if let (Some(a), Some(b)) = (self.proxy_sees, self.alt_mapped) {
            // The same host on two ports: one mapping for both, or one per destination.
            self.nat = if a == b {
                NatSeen::EndpointIndependent
            } else {
                NatSeen::Symmetric
            };
        } else if let (Some(a), Some(b)) = (self.stun_mapped, self.proxy_sees) {
            // Two servers on different addresses saw different ports: the mapping depends on
            // the destination.
            if self.config.stun_server != self.config.proxy && a.port() != b.port() {
                self.nat = NatSeen::Symmetric;
            }
        }
    }

    fn proxy_message(&mut self, now: Instant, body: Body) {
        match body {
            Body::Registered { mapped, alt_port } => {
                if alt_port != self.alt_port && alt_port != 0 {
                    self.alt_port = alt_port;
                    // Ask the alternate port right away rather than a keepalive later.
                    if let Ok((id, bytes)) = stun::binding_request() {
                        self.alt_txn = Some(id);
                        self.send_raw(SocketAddr::new(self.config.proxy.ip(), alt_port), &bytes);
                    }
                }
                if self.last_registered.is_none() || self.proxy_sees != Some(mapped) {
                    tracing::info!(%mapped, "registered with the proxy");
                }
                let was = self.registered(now);
                self.last_registered = Some(now);
                self.proxy_sees = Some(mapped);
                self.learn_nat();
                if !was {
                    self.next_register = now + self.config.keepalive;
                }
            }
            Body::Unknown => {
                if self.last_registered.is_some() {
                    tracing::info!(
                        "the proxy does not know this node (restarted?); registering again"
                    );
                }
                self.last_registered = None;
                self.next_register = now;
            }
            Body::Punch {
                peer,
                local,
                mapped,
                cert,
            } => {
                let cert = hex::decode(&cert)
                    .ok()
                    .and_then(|bytes| Fingerprint::try_from(bytes).ok());
                if peer == self.config.name {
                    return;
                }
                tracing::info!(%peer, %local, %mapped, "punching");
                let session = Session {
                    local,
                    cert,
                    mapped,
                    path: PathState::Punching {
                        since: now,
                        next_probe: now,
                    },
                    last_heard: now,
                    next_ping: now,
                };
                // A live direct path stays; a repeated talkto only refreshes the endpoints.
                match self.sessions.get_mut(&peer) {
                    Some(s) if matches!(s.path, PathState::Direct(_)) => {
                        s.local = local;
                        s.mapped = mapped;
                        self.answer_talkto(&peer);
                    }
                    _ => {
                        self.sessions.insert(peer, session);
                    }
                }
            }
            Body::Refused { target, reason } => {
                tracing::warn!(%target, %reason, "the proxy refused");
                let mut keep = Vec::new();
                for w in self.waiters.drain(..) {
                    if w.target == target {
                        let _ = w.reply.send(Response::error(format!("{target}: {reason}")));
                    } else {
                        keep.push(w);
                    }
                }
                self.waiters = keep;
            }
            other => tracing::debug!(kind = other.kind(), "ignored from the proxy"),
        }
    }

    /// A message from session peer `peer`, directly from `from` or (None) through the relay.
    fn peer_message(&mut self, now: Instant, peer: &str, from: Option<SocketAddr>, body: Body) {
        let Some(session) = self.sessions.get_mut(peer) else {
            if let (Body::Ping, None) = (&body, from) {
                // The peer still thinks we are in session; tell it we are not.
                self.send(
                    self.config.proxy,
                    Body::Relay {
                        to: peer.to_owned(),
                        inner: Box::new(Body::EndSession),
                    },
                );
            }
            tracing::debug!(%peer, kind = body.kind(), "not a session peer; ignored");
            return;
        };
        session.last_heard = now;
        let mut became_direct = false;
        if let (Some(addr), Body::Probe | Body::ProbeAck { .. }) = (from, &body) {
            if !matches!(session.path, PathState::Direct(_)) {
                session.path = PathState::Direct(addr);
                became_direct = true;
            }
        }
        if became_direct {
            tracing::info!(%peer, addr = %from.map_or_else(String::new, |a| a.to_string()), "direct path open");
            self.session_up(peer);
        }
        match body {
            Body::Probe => {
                if let Some(addr) = from {
                    self.send(addr, Body::ProbeAck { seen_as: addr });
                    if became_direct {
                        // Our own probes stop now; one more makes the peer tell us how it
                        // sees us, which is what the NAT behaviour in `status` rests on.
                        self.send(addr, Body::Probe);
                    }
                }
            }
            Body::ProbeAck { seen_as } => {
                // A peer on the other side of the internet saw us at our mapped address: the
                // mapping did not depend on the destination.
                let via_internet =
                    from.is_some_and(|a| self.sessions.get(peer).is_some_and(|s| a != s.local));
                if via_internet && seen_as != self.local {
                    if Some(seen_as) == self.stun_mapped || Some(seen_as) == self.proxy_sees {
                        if self.nat == NatSeen::Unknown {
                            self.nat = NatSeen::EndpointIndependent;
                        }
                    } else {
                        self.nat = NatSeen::Symmetric;
                    }
                }
            }
            Body::Ping => self.send_peer(peer, Body::Pong),
            Body::Pong => {}
            Body::Announce { id, wire } => self.received_announcement(peer, id, &wire),
            Body::AnnounceAck { id } => {
                for out in &mut self.outbox {
                    if out.id == id && out.pending.remove(peer) {
                        out.delivered.push(peer.to_owned());
                    }
                }
            }
            Body::Peers { names } => {
                for name in names.into_iter().take(64) {
                    if name != self.config.name && !self.sessions.contains_key(&name) {
                        tracing::info!(%name, via = %peer, "joining a shared session peer");
                        self.send(self.config.proxy, Body::TalkTo { target: name });
                    }
                }
            }
            Body::EndSession => {
                tracing::info!(%peer, "peer ended the session");
                self.end_session(peer);
            }
            other => tracing::debug!(%peer, kind = other.kind(), "ignored from a peer"),
        }
    }

    fn received_announcement(&mut self, peer: &str, id: u64, wire: &str) {
        let key = (peer.to_owned(), id);
        if !self.seen.contains(&key) {
            if !spoolable(wire) {
                tracing::warn!(%peer, len = wire.len(), "not an announcement; dropped");
                return;
            }
            if let Err(e) = spool::put(&self.config.spool_dir, Source::Overlay, wire.as_bytes()) {
                // No acknowledgement: the sender tries again.
                tracing::error!(%peer, error = %crate::error::chain(&e), "cannot spool an announcement");
                return;
            }
            tracing::info!(%peer, id, "announcement spooled for the agent");
            self.seen.insert(key.clone());
            self.seen_order.push_back(key);
            if self.seen_order.len() > SEEN_CAPACITY {
                if let Some(old) = self.seen_order.pop_front() {
                    self.seen.remove(&old);
                }
            }
        }
        self.send_peer(peer, Body::AnnounceAck { id });
    }

    /// Handles a control request; `None` when the answer comes later (talkto, announce).
    fn control(&mut self, request: Request, reply: &mpsc::Sender<Response>) -> Option<Response> {
        let now = Instant::now();
        match request {
            Request::Status => Some(Response {
                status: Some(self.status(now)),
                ..Response::ok("status")
            }),
            Request::TalkTo { node } => {
                if node == self.config.name {
                    return Some(Response::error("a node cannot talk to itself"));
                }
                if let Some(s) = self.sessions.get(&node) {
                    if !matches!(s.path, PathState::Punching { .. }) {
                        return Some(Response::ok(format!(
                            "session with {node}: {}",
                            path_name(s.path)
                        )));
                    }
                }
                self.send(
                    self.config.proxy,
                    Body::TalkTo {
                        target: node.clone(),
                    },
                );
                self.waiters.push(Waiter {
                    target: node,
                    reply: reply.clone(),
                    deadline: now + TALKTO_TIMEOUT,
                    next_retry: now + Duration::from_secs(1),
                });
                None
            }
            Request::Announce { wire } => {
                let wire = wire.trim().to_owned();
                if !spoolable(&wire) {
                    return Some(Response::error(format!(
                        "not an announcement: expected `{WIRE_PREFIX_V2}...` or `{WIRE_PREFIX}...` (or the prototype's `SendTorrentFile ...`) of at most {} bytes",
                        spool::MAX_EVENT_BYTES
                    )));
                }
                let peers: HashSet<String> = self.sessions.keys().cloned().collect();
                if peers.is_empty() {
                    return Some(Response::error(
                        "no session peers: start one with `p2pu event talkto NODE`",
                    ));
                }
                self.outbox.push(Outbound {
                    id: rand::random(),
                    wire,
                    pending: peers,
                    delivered: Vec::new(),
                    sends: 0,
                    next: now,
                    reply: Some(reply.clone()),
                });
                None
            }
            Request::EndSession { node } => {
                let names: Vec<String> = match node {
                    Some(node) if self.sessions.contains_key(&node) => vec![node],
                    Some(node) => return Some(Response::error(format!("no session with {node}"))),
                    None => self.sessions.keys().cloned().collect(),
                };
                for name in &names {
                    self.send_peer(name, Body::EndSession);
                    self.end_session(name);
                }
                Some(Response::ok(format!("ended {} session(s)", names.len())))
            }
            Request::Exit => {
                self.farewell();
                Some(Response::ok("nat-client exiting"))
            }
        }
    }

    /// Tells session peers and the proxy that this node leaves.
    fn farewell(&mut self) {
        let names: Vec<String> = self.sessions.keys().cloned().collect();
        for name in &names {
            self.send_peer(name, Body::EndSession);
        }
        self.sessions.clear();
        self.send(self.config.proxy, Body::Unregister);
        self.exiting = true;
    }

    fn status(&self, now: Instant) -> ClientStatus {
        let mut peers: Vec<PeerStatus> = self
            .sessions
            .iter()
            .map(|(name, s)| PeerStatus {
                node: name.clone(),
                path: path_name(s.path).to_owned(),
                addr: match s.path {
                    PathState::Direct(addr) => Some(addr),
                    _ => None,
                },
                last_heard_secs: now.duration_since(s.last_heard).as_secs(),
                tunnel: match &self.transport {
                    Transport::Tunnel(tunnel) => tunnel.end(name),
                    Transport::Plain(_) => None,
                },
                seed: match &self.transport {
                    Transport::Tunnel(tunnel) => tunnel.seed_end(name),
                    Transport::Plain(_) => None,
                },
            })
            .collect();
        peers.sort_by(|a, b| a.node.cmp(&b.node));
        ClientStatus {
            node: self.config.name.clone(),
            proxy: self.config.proxy,
            stun_server: self.config.stun_server,
            local: self.local,
            mapped: self.stun_mapped,
            proxy_sees: self.proxy_sees,
            registered: self.registered(now),
            nat: self.nat.as_str().to_owned(),
            peers,
        }
    }
}

fn path_name(path: PathState) -> &'static str {
    match path {
        PathState::Punching { .. } => "punching",
        PathState::Direct(_) => "direct",
        PathState::Relayed => "relayed",
    }
}

/// The source address the kernel would use towards `dest` (connecting a UDP socket sends
/// nothing).
fn route_source(dest: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = if dest.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let probe = UdpSocket::bind(any).ok()?;
    probe.connect(dest).ok()?;
    probe.local_addr().ok().map(|a| a.ip())
}

/// What the client spools for the agent: p2pu announcements, and the prototype's overlay
/// message (`SendTorrentFile <ip> split <payload>`), which the agent takes only under
/// `accept_legacy`. The agent decides; this only keeps other chatter out of the spool.
fn spoolable(wire: &str) -> bool {
    (is_wire(wire.as_bytes()) || crate::formats::legacy::is_overlay(wire.as_bytes()))
        && wire.len() <= spool::MAX_EVENT_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::proxy::{self, ProxyConfig};
    use std::sync::Arc;

    fn secret() -> Secret {
        Secret::new(b"fleet-secret-for-unit-tests-0123").unwrap()
    }

    struct Running {
        control: mpsc::Sender<Incoming>,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Running {
        fn ask(&self, request: Request) -> Response {
            let (reply, answer) = mpsc::channel();
            self.control.send(Incoming { request, reply }).unwrap();
            answer.recv_timeout(Duration::from_secs(15)).unwrap()
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn start_client(name: &str, proxy: SocketAddr, spool: &std::path::Path) -> Running {
        let config = ClientConfig {
            name: name.into(),
            bind: "127.0.0.1:0".parse().unwrap(),
            proxy,
            stun_server: proxy,
            secret: secret(),
            identity: crate::keys::generate(),
            keepalive: Duration::from_secs(5),
            peer_expiry: Duration::from_secs(30),
            spool_dir: spool.to_path_buf(),
        };
        let client = Client::bind(config, None, None).unwrap();
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            client.run(&rx, &flag).unwrap();
        });
        Running {
            control: tx,
            stop,
            thread: Some(thread),
        }
    }

    fn status(client: &Running) -> ClientStatus {
        client.ask(Request::Status).status.unwrap()
    }

    /// Proxy and two clients on loopback: registration, talkto, a direct path (no NAT), an
    /// announcement into the other spool, endsession.
    #[test]
    fn loopback_session_delivers_an_announcement() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let proxy_addr = socket.local_addr().unwrap();
        let proxy_stop = Arc::new(AtomicBool::new(false));
        let flag = proxy_stop.clone();
        let proxy_thread = std::thread::spawn(move || {
            let names = crate::nat::names::Bindings::in_memory(64);
            proxy::run(&socket, ProxyConfig::new(secret(), 64), names, &flag).unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        let (spool_a, spool_b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&spool_a).unwrap();
        std::fs::create_dir_all(&spool_b).unwrap();
        let a = start_client("a", proxy_addr, &spool_a);
        let b = start_client("b", proxy_addr, &spool_b);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(status(&a).registered && status(&b).registered) {
            assert!(Instant::now() < deadline, "not registered");
            std::thread::sleep(Duration::from_millis(50));
        }
        let st = status(&a);
        assert_eq!(st.mapped, Some(st.local));
        assert_eq!(st.nat, "none");

        let answer = a.ask(Request::TalkTo { node: "b".into() });
        assert!(answer.ok, "{answer:?}");
        assert_eq!(answer.message.as_deref(), Some("session with b: direct"));

        let refused = a.ask(Request::Announce {
            wire: "not an announcement".into(),
        });
        assert!(!refused.ok);
        let answer = a.ask(Request::Announce {
            wire: "p2pu1:dGVzdA".into(),
        });
        assert!(answer.ok, "{answer:?}");
        let events = spool::list(&spool_b).unwrap();
        assert_eq!(events.len(), 1);
        let event = spool::read(&events[0]).unwrap().unwrap();
        assert_eq!(event.source, Source::Overlay);
        assert_eq!(event.payload, b"p2pu1:dGVzdA");

        // The prototype's overlay message reaches the spool too (the agent decides on it).
        let legacy =
            include_str!("../../crates/p2pu-formats/tests/vectors/legacy/lizard.overlay-message");
        let answer = a.ask(Request::Announce {
            wire: legacy.into(),
        });
        assert!(answer.ok, "{answer:?}");
        let events = spool::list(&spool_b).unwrap();
        assert_eq!(events.len(), 2);
        let event = spool::read(&events[1]).unwrap().unwrap();
        assert_eq!(event.payload, legacy.trim().as_bytes());

        assert!(a.ask(Request::EndSession { node: None }).ok);
        std::thread::sleep(Duration::from_millis(300));
        assert!(status(&b).peers.is_empty());
        assert!(
            !a.ask(Request::TalkTo {
                node: "nobody".into()
            })
            .ok
        );
        drop(a);
        drop(b);
        proxy_stop.store(true, Ordering::Relaxed);
        proxy_thread.join().unwrap();
    }
}
