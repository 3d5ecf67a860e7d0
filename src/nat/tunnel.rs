//! The bytes across NAT: Transmission peer connections between session peers, tunnelled over
//! QUIC on the client's one UDP socket (the punched path), or through the proxy's relay in
//! bulk frames where punching failed. Tokio and quinn live only here, on one thread.
//!
//! The socket is shared by demultiplexing on the first byte of each datagram (RFC 7983 /
//! RFC 9443): QUIC packets (fixed bit 0x40 set; bit greasing is off so it always is) go to
//! quinn; bulk frames from relayed peers are unwrapped and handed to quinn as if they came from
//! a placeholder address (240.0.0.0/4, never routed) standing for that peer; everything else
//! (STUN, overlay messages) goes to the client's thread.
//!
//! Each session peer gets a TCP listener on the node's own LAN address (its tunnel end, which
//! the agent's tracker lists as a peer; not 127.0.0.1, because Transmission 3.00 drops
//! tracker peers in 127/8 as martians), taking connections from this host only; a connection
//! to it becomes a QUIC stream to the peer, whose client connects it to its own Transmission
//! peer port on the same kind of address. TLS 1.3 with self-signed
//! certificates pinned by SHA-256: each node announces its certificate's hash in its
//! registration (fleet-secret authenticated and signed by its identity key, which the proxy
//! binds its name to), and accepts only its session peers' hashes.
//!
//! Each session peer also gets a seed end: a second listener whose connections ride their own
//! QUIC connection (ALPN `p2pu-seed/1`) to the peer's agent web seed server, so the agent
//! behind the other NAT fetches the metainfo and a small payload with one HTTP request each,
//! checked like every HTTP source, instead of waiting out Transmission's magnet path (its
//! metadata exchange, the restart after it, a 10 s reconnect backoff and a 10 s rechoke
//! before it declares interest). The ALPN, not the stream's bytes, picks the destination: the
//! far side delivers to one of two fixed ports of its own, never to one the peer names.

use super::protocol::{self, Secret, SeqWindow};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Endpoint, EndpointConfig, TokioRuntime, TransportConfig, UdpPoller};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

const ALPN: &[u8] = b"p2pu-tunnel/1";
/// The seed ends' connections: delivered to the web seed server, bytes unchanged.
const SEED_ALPN: &[u8] = b"p2pu-seed/1";
/// QUIC's minimum; with discovery off no packet is larger, so one fits a bulk frame.
const QUIC_MTU: u16 = 1200;
/// Datagrams waiting for the client thread.
const INBOX_CAPACITY: usize = 4096;

pub type Fingerprint = [u8; 32];
/// Each session peer's end of one kind, by peer name.
pub type Ends = Arc<Mutex<HashMap<String, SocketAddr>>>;

/// What the client thread tells the tunnel.
#[derive(Debug)]
pub enum Command {
    /// A session peer reachable at `direct`, or through the relay when `None`.
    PeerUp {
        name: String,
        direct: Option<SocketAddr>,
        cert: Fingerprint,
    },
    PeerDown {
        name: String,
    },
}

#[derive(Debug, Clone)]
pub struct TunnelConfig {
    pub name: String,
    pub secret: Secret,
    pub proxy: SocketAddr,
    /// This node's LAN address: tunnel ends listen on it, streams are delivered to it.
    pub host: IpAddr,
    /// Transmission's peer port, where incoming tunnel streams are delivered.
    pub transmission_port: u16,
    /// The agent's web seed server port, where incoming seed streams are delivered; `None`:
    /// seed connections are refused.
    pub seed_port: Option<u16>,
}

/// The running tunnel: the client thread's view of it.
pub struct Tunnel {
    commands: tokio::sync::mpsc::UnboundedSender<Command>,
    /// Non-QUIC datagrams for the client thread.
    pub inbox: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
    /// A handle on the same socket for the client thread's sends.
    pub send_socket: std::net::UdpSocket,
    /// Each session peer's tunnel end.
    pub ends: Arc<Mutex<HashMap<String, SocketAddr>>>,
    /// Each session peer's seed end (to its web seed server).
    pub seed_ends: Arc<Mutex<HashMap<String, SocketAddr>>>,
    pub fingerprint: Fingerprint,
}

impl Tunnel {
    pub fn command(&self, command: Command) {
        if self.commands.send(command).is_err() {
            tracing::error!("the tunnel thread is gone");
        }
    }

    pub fn end(&self, peer: &str) -> Option<SocketAddr> {
        self.ends.lock().ok()?.get(peer).copied()
    }

    pub fn seed_end(&self, peer: &str) -> Option<SocketAddr> {
        self.seed_ends.lock().ok()?.get(peer).copied()
    }
}

/// Which relayed peer each placeholder address stands for, and the bulk frames seen from it
/// in this session (against replays).
#[derive(Debug, Default)]
struct RelayMap {
    by_name: HashMap<String, SocketAddr>,
    by_addr: HashMap<SocketAddr, String>,
    windows: HashMap<String, SeqWindow>,
    next: u32,
}

impl RelayMap {
    fn assign(&mut self, name: &str) -> SocketAddr {
        if let Some(addr) = self.by_name.get(name) {
            return *addr;
        }
        self.next = self.next.wrapping_add(1) & 0x0FFF_FFFF;
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0xF000_0000 | self.next)), 1);
        self.by_name.insert(name.to_owned(), addr);
        self.by_addr.insert(addr, name.to_owned());
        addr
    }

    fn remove(&mut self, name: &str) {
        if let Some(addr) = self.by_name.remove(name) {
            self.by_addr.remove(&addr);
        }
        self.windows.remove(name);
    }

    /// The placeholder address of relayed peer `name`, when its frame `seq` is new.
    fn accept(&mut self, name: &str, seq: u64) -> Option<SocketAddr> {
        let addr = *self.by_name.get(name)?;
        let window = self.windows.entry(name.to_owned()).or_default();
        window.check(seq).ok()?;
        Some(addr)
    }
}

/// The one UDP socket, as quinn sees it.
struct Mux {
    io: tokio::net::UdpSocket,
    overlay: mpsc::SyncSender<(SocketAddr, Vec<u8>)>,
    relay: Mutex<RelayMap>,
    config: TunnelConfig,
    /// The next bulk frame's sequence number.
    next_seq: AtomicU64,
}

impl fmt::Debug for Mux {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mux").field("io", &self.io).finish()
    }
}

#[derive(Debug)]
struct Poller(Arc<Mux>);

impl UdpPoller for Poller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        self.0.io.poll_send_ready(cx)
    }
}

impl AsyncUdpSocket for Mux {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Poller(self))
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let relayed = self
            .relay
            .lock()
            .ok()
            .and_then(|map| map.by_addr.get(&transmit.destination).cloned());
        match relayed {
            None => self
                .io
                .try_send_to(transmit.contents, transmit.destination)
                .map(|_| ()),
            Some(peer) => {
                let frame = protocol::encode_bulk(
                    &self.config.secret,
                    protocol::unix_now(),
                    self.next_seq.fetch_add(1, Ordering::Relaxed),
                    &self.config.name,
                    &peer,
                    transmit.contents,
                )
                .map_err(io::Error::other)?;
                self.io.try_send_to(&frame, self.config.proxy).map(|_| ())
            }
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let (Some(buf), Some(meta)) = (bufs.first_mut(), meta.first_mut()) else {
            return Poll::Ready(Ok(0));
        };
        loop {
            let mut read = tokio::io::ReadBuf::new(buf);
            let from = match self.io.poll_recv_from(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(from)) => from,
            };
            let len = read.filled().len();
            let Some(data) = buf.get(..len) else {
                continue;
            };
            let first = data.first().copied().unwrap_or(0);
            if first & 0x40 != 0 {
                *meta = recv_meta(from, len);
                return Poll::Ready(Ok(1));
            }
            if protocol::looks_like_bulk(data) {
                if let Some((peer_addr, start, packet_len)) = self.unwrap_bulk(from, data) {
                    buf.copy_within(start..start + packet_len, 0);
                    *meta = recv_meta(peer_addr, packet_len);
                    return Poll::Ready(Ok(1));
                }
                continue;
            }
            match self.overlay.try_send((from, data.to_vec())) {
                // A client thread this far behind is flooded: dropping keeps memory bounded.
                Ok(()) | Err(mpsc::TrySendError::Full(_)) => {}
                Err(mpsc::TrySendError::Disconnected(_)) => {
                    return Poll::Ready(Err(io::Error::other("the client thread is gone")))
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    fn may_fragment(&self) -> bool {
        // MTU discovery stays off: relayed packets must fit a bulk frame.
        true
    }
}

impl Mux {
    /// A relayed peer's packet: (its placeholder address, offset and length of the packet).
    fn unwrap_bulk(&self, from: SocketAddr, data: &[u8]) -> Option<(SocketAddr, usize, usize)> {
        if from != self.config.proxy {
            return None;
        }
        let bulk = protocol::decode_bulk(&self.config.secret, protocol::unix_now(), data).ok()?;
        if bulk.to != self.config.name {
            return None;
        }
        let addr = self.relay.lock().ok()?.accept(bulk.from, bulk.seq)?;
        let start = (bulk.packet.as_ptr() as usize).checked_sub(data.as_ptr() as usize)?;
        Some((addr, start, bulk.packet.len()))
    }
}

fn recv_meta(addr: SocketAddr, len: usize) -> RecvMeta {
    RecvMeta {
        addr,
        len,
        stride: len,
        ..RecvMeta::default()
    }
}

/// A fresh self-signed certificate for this run of the client.
struct Identity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    fingerprint: Fingerprint,
}

fn identity(name: &str) -> io::Result<Identity> {
    let certified = rcgen::generate_simple_self_signed(vec![format!("{name}.p2pu")])
        .map_err(io::Error::other)?;
    let cert = certified.cert.der().clone();
    let fingerprint = Sha256::digest(&cert).into();
    Ok(Identity {
        cert,
        key: PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()),
        fingerprint,
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn verify_tls13(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

fn pinned(cert: &CertificateDer<'_>, allowed: impl FnOnce(&Fingerprint) -> bool) -> bool {
    let fingerprint: Fingerprint = Sha256::digest(cert).into();
    allowed(&fingerprint)
}

/// Accepts exactly the one server certificate a session peer announced.
#[derive(Debug)]
struct PinnedServer {
    fingerprint: Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if pinned(end_entity, |f| *f == self.fingerprint) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "not the session peer's certificate".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Accepts the client certificates of current session peers only.
#[derive(Debug)]
struct SessionPeers {
    allowed: Arc<RwLock<HashSet<Fingerprint>>>,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for SessionPeers {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let allowed = self
            .allowed
            .read()
            .map_err(|_| rustls::Error::General("poisoned".into()))?;
        if pinned(end_entity, |f| allowed.contains(f)) {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "not a session peer's certificate".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn transport() -> Arc<TransportConfig> {
    let mut transport = TransportConfig::default();
    transport
        .initial_mtu(QUIC_MTU)
        .min_mtu(QUIC_MTU)
        .mtu_discovery_config(None)
        .keep_alive_interval(Some(Duration::from_secs(10)));
    if let Ok(idle) = Duration::from_secs(60).try_into() {
        transport.max_idle_timeout(Some(idle));
    }
    Arc::new(transport)
}

fn server_config(
    id: &Identity,
    allowed: Arc<RwLock<HashSet<Fingerprint>>>,
) -> io::Result<quinn::ServerConfig> {
    let provider = provider();
    let verifier = Arc::new(SessionPeers {
        allowed,
        provider: provider.clone(),
    });
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(io::Error::other)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![id.cert.clone()],
            PrivateKeyDer::Pkcs8(id.key.clone_key()),
        )
        .map_err(io::Error::other)?;
    tls.alpn_protocols = vec![ALPN.to_vec(), SEED_ALPN.to_vec()];
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(io::Error::other)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport());
    Ok(config)
}

fn client_config(id: &Identity, peer: Fingerprint, alpn: &[u8]) -> io::Result<quinn::ClientConfig> {
    let provider = provider();
    let verifier = Arc::new(PinnedServer {
        fingerprint: peer,
        provider: provider.clone(),
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(
            vec![id.cert.clone()],
            PrivateKeyDer::Pkcs8(id.key.clone_key()),
        )
        .map_err(io::Error::other)?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(io::Error::other)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport());
    Ok(config)
}

/// Starts the tunnel on `socket` (which it takes over) on its own thread.
pub fn start(socket: std::net::UdpSocket, config: TunnelConfig) -> io::Result<Tunnel> {
    let send_socket = socket.try_clone()?;
    socket.set_nonblocking(true)?;
    let id = identity(&config.name)?;
    let fingerprint = id.fingerprint;
    let (overlay_tx, inbox) = mpsc::sync_channel(INBOX_CAPACITY);
    let (commands, command_rx) = tokio::sync::mpsc::unbounded_channel();
    let ends = Arc::new(Mutex::new(HashMap::new()));
    let seed_ends = Arc::new(Mutex::new(HashMap::new()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let thread_ends = (ends.clone(), seed_ends.clone());
    std::thread::Builder::new()
        .name("tunnel".into())
        .spawn(move || {
            runtime.block_on(async move {
                let io = match tokio::net::UdpSocket::from_std(socket) {
                    Ok(io) => io,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let mux = Arc::new(Mux {
                    io,
                    overlay: overlay_tx,
                    relay: Mutex::new(RelayMap::default()),
                    config,
                    next_seq: AtomicU64::new(protocol::first_seq()),
                });
                let state = match State::new(mux, id, thread_ends) {
                    Ok(state) => state,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                state.run(command_rx).await;
            });
        })?;
    ready_rx
        .recv()
        .map_err(|_| io::Error::other("the tunnel thread died starting"))??;
    Ok(Tunnel {
        commands,
        inbox,
        send_socket,
        ends,
        seed_ends,
        fingerprint,
    })
}

struct State {
    mux: Arc<Mux>,
    endpoint: Endpoint,
    id: Arc<Identity>,
    allowed: Arc<RwLock<HashSet<Fingerprint>>>,
    /// Where session peers' packets come from; QUIC handshakes from anywhere else are ignored.
    peer_addrs: Arc<RwLock<HashSet<SocketAddr>>>,
    ends: Arc<Mutex<HashMap<String, SocketAddr>>>,
    seed_ends: Arc<Mutex<HashMap<String, SocketAddr>>>,
    /// Per session peer: its certificate, its address, the tasks of its two ends.
    listeners: HashMap<String, (Fingerprint, SocketAddr, Vec<tokio::task::JoinHandle<()>>)>,
}

/// What a tunnel end's connections reach on the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dest {
    /// Its Transmission peer port, the extension handshake's port stripped.
    Transmission,
    /// Its agent's web seed server, bytes unchanged.
    Seed,
}

impl Dest {
    /// Its name in log lines.
    fn as_str(self) -> &'static str {
        match self {
            Dest::Transmission => "transmission",
            Dest::Seed => "seed",
        }
    }
}

impl Dest {
    fn alpn(self) -> &'static [u8] {
        match self {
            Dest::Transmission => ALPN,
            Dest::Seed => SEED_ALPN,
        }
    }
}

impl State {
    fn new(mux: Arc<Mux>, id: Identity, (ends, seed_ends): (Ends, Ends)) -> io::Result<State> {
        let allowed = Arc::new(RwLock::new(HashSet::new()));
        let mut endpoint_config = EndpointConfig::default();
        // Every QUIC packet keeps its fixed bit, which is how the socket tells it from STUN.
        endpoint_config.grease_quic_bit(false);
        let endpoint = Endpoint::new_with_abstract_socket(
            endpoint_config,
            Some(server_config(&id, allowed.clone())?),
            mux.clone(),
            Arc::new(TokioRuntime),
        )?;
        Ok(State {
            mux,
            endpoint,
            id: Arc::new(id),
            allowed,
            peer_addrs: Arc::new(RwLock::new(HashSet::new())),
            ends,
            seed_ends,
            listeners: HashMap::new(),
        })
    }

    async fn run(mut self, mut commands: tokio::sync::mpsc::UnboundedReceiver<Command>) {
        let endpoint = self.endpoint.clone();
        let host = self.mux.config.host;
        let deliver = Deliver {
            transmission: SocketAddr::new(host, self.mux.config.transmission_port),
            seed: self
                .mux
                .config
                .seed_port
                .map(|port| SocketAddr::new(host, port)),
        };
        let peer_addrs = self.peer_addrs.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let known = peer_addrs
                    .read()
                    .is_ok_and(|addrs| addrs.contains(&incoming.remote_address()));
                if known {
                    tokio::spawn(serve_incoming(incoming, deliver));
                } else {
                    tracing::debug!(from = %incoming.remote_address(), "QUIC from a non-peer ignored");
                    incoming.ignore();
                }
            }
        });
        while let Some(command) = commands.recv().await {
            match command {
                Command::PeerUp { name, direct, cert } => {
                    if let Err(e) = self.peer_up(&name, direct, cert).await {
                        tracing::warn!(peer = %name, error = %e, "cannot open a tunnel end");
                    }
                }
                Command::PeerDown { name } => self.peer_down(&name),
            }
        }
    }

    async fn peer_up(
        &mut self,
        name: &str,
        direct: Option<SocketAddr>,
        cert: Fingerprint,
    ) -> io::Result<()> {
        self.peer_down(name);
        let addr = match direct {
            Some(addr) => addr,
            None => self
                .mux
                .relay
                .lock()
                .map_err(|_| io::Error::other("relay map poisoned"))?
                .assign(name),
        };
        if let Ok(mut allowed) = self.allowed.write() {
            allowed.insert(cert);
        }
        if let Ok(mut addrs) = self.peer_addrs.write() {
            addrs.insert(addr);
        }
        let (end, bt) = self.open_end(name, addr, cert, Dest::Transmission).await?;
        let (seed_end, seed) = self.open_end(name, addr, cert, Dest::Seed).await?;
        tracing::info!(peer = %name, %end, %seed_end, via = %addr, "tunnel end open");
        if let Ok(mut ends) = self.ends.lock() {
            ends.insert(name.to_owned(), end);
        }
        if let Ok(mut ends) = self.seed_ends.lock() {
            ends.insert(name.to_owned(), seed_end);
        }
        self.listeners
            .insert(name.to_owned(), (cert, addr, vec![bt, seed]));
        Ok(())
    }

    /// A listener on this node's LAN address whose connections (from this host only) become
    /// streams of one QUIC connection to the peer at `addr`, delivered to `dest` there.
    async fn open_end(
        &self,
        name: &str,
        addr: SocketAddr,
        cert: Fingerprint,
        dest: Dest,
    ) -> io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let host = self.mux.config.host;
        let listener = tokio::net::TcpListener::bind((host, 0)).await?;
        let end = listener.local_addr()?;
        let client = client_config(&self.id, cert, dest.alpn())?;
        let endpoint = self.endpoint.clone();
        let peer = name.to_owned();
        let task = tokio::spawn(async move {
            let mut connection: Option<quinn::Connection> = None;
            loop {
                let Ok((tcp, from)) = listener.accept().await else {
                    continue;
                };
                if from.ip() != host && !from.ip().is_loopback() {
                    tracing::warn!(%peer, %from, "tunnel end refuses a connection from another host");
                    continue;
                }
                if connection
                    .as_ref()
                    .is_none_or(|c| c.close_reason().is_some())
                {
                    connection = match dial(&endpoint, &client, addr).await {
                        Ok(c) => Some(c),
                        Err(e) => {
                            tracing::warn!(%peer, %addr, dest = dest.as_str(), error = %e, "tunnel connection failed");
                            continue;
                        }
                    };
                }
                if let Some(conn) = connection.clone() {
                    tokio::spawn(async move {
                        match conn.open_bi().await {
                            Ok((send, recv)) => match dest {
                                Dest::Transmission => pipe(tcp, send, recv).await,
                                Dest::Seed => pipe_plain(tcp, send, recv).await,
                            },
                            Err(e) => tracing::warn!(error = %e, "cannot open a tunnel stream"),
                        }
                    });
                }
            }
        });
        Ok((end, task))
    }

    fn peer_down(&mut self, name: &str) {
        if let Some((cert, addr, tasks)) = self.listeners.remove(name) {
            for task in tasks {
                task.abort();
            }
            if let Ok(mut allowed) = self.allowed.write() {
                allowed.remove(&cert);
            }
            if let Ok(mut addrs) = self.peer_addrs.write() {
                addrs.remove(&addr);
            }
            tracing::info!(peer = %name, "tunnel end closed");
        }
        if let Ok(mut relay) = self.mux.relay.lock() {
            relay.remove(name);
        }
        if let Ok(mut ends) = self.ends.lock() {
            ends.remove(name);
        }
        if let Ok(mut ends) = self.seed_ends.lock() {
            ends.remove(name);
        }
    }
}

async fn dial(
    endpoint: &Endpoint,
    client: &quinn::ClientConfig,
    addr: SocketAddr,
) -> io::Result<quinn::Connection> {
    endpoint
        .connect_with(client.clone(), addr, "p2pu")
        .map_err(io::Error::other)?
        .await
        .map_err(io::Error::other)
}

/// Where this node delivers its session peers' incoming streams: two fixed ports of its own.
#[derive(Debug, Clone, Copy)]
struct Deliver {
    transmission: SocketAddr,
    seed: Option<SocketAddr>,
}

impl Deliver {
    /// The destination a connection negotiated with `alpn`; `None` refuses it.
    fn of(self, alpn: Option<&[u8]>) -> Option<(Dest, SocketAddr)> {
        match alpn {
            Some(ALPN) => Some((Dest::Transmission, self.transmission)),
            Some(SEED_ALPN) => Some((Dest::Seed, self.seed?)),
            _ => None,
        }
    }
}

async fn serve_incoming(incoming: quinn::Incoming, deliver: Deliver) {
    let connection = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "incoming tunnel refused");
            return;
        }
    };
    let alpn = connection
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol);
    let Some((dest, to)) = deliver.of(alpn.as_deref()) else {
        tracing::warn!(from = %connection.remote_address(), "tunnel connection for nothing this node delivers to; closed");
        connection.close(0u32.into(), b"not delivered here");
        return;
    };
    while let Ok((send, recv)) = connection.accept_bi().await {
        tokio::spawn(async move {
            match tokio::net::TcpStream::connect(to).await {
                Ok(tcp) => match dest {
                    Dest::Transmission => pipe(tcp, send, recv).await,
                    Dest::Seed => pipe_plain(tcp, send, recv).await,
                },
                Err(e) => {
                    tracing::warn!(%to, dest = dest.as_str(), error = %e, "cannot reach the local end")
                }
            }
        });
    }
}

/// Pipes a seed end's stream and the web seed server's connection both ways, unchanged.
async fn pipe_plain(
    tcp: tokio::net::TcpStream,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    use tokio::io::AsyncWriteExt;
    let (mut tcp_read, mut tcp_write) = tcp.into_split();
    let outbound = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut tcp_read, &mut send).await;
        let _ = send.finish();
    });
    if let Err(e) = tokio::io::copy(&mut recv, &mut tcp_write).await {
        tracing::debug!(error = %e, "seed stream ended");
    }
    let _ = tcp_write.shutdown().await;
    let _ = outbound.await;
}

/// Pipes a tunnel stream and the local Transmission's connection both ways; the peer's
/// extension handshake (BEP 10) on its way in loses `p`, its listening port. Both ends of
/// every tunnel meet Transmission on this node's own address, and Transmission 3.00 keys
/// peers by address and takes their port from `p`: left in, the peer becomes this node's own
/// peer port, and after the first disconnect (a magnet download restarts the torrent once it
/// has the metadata) Transmission dials itself and gives the peer up for 30 minutes.
async fn pipe(
    tcp: tokio::net::TcpStream,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    use tokio::io::AsyncWriteExt;
    let (mut tcp_read, mut tcp_write) = tcp.into_split();
    let outbound = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut tcp_read, &mut send).await;
        let _ = send.finish();
    });
    let inbound = async move {
        // What the peer sent so far, until its extension handshake; `sent` bytes of it are
        // with Transmission already (each complete message before the handshake is passed
        // on at once: the two sides wait on each other's handshakes).
        let mut head = Vec::new();
        let mut sent = 0;
        let mut chunk = [0u8; 4096];
        loop {
            let n = match recv.read(&mut chunk).await {
                Ok(Some(n)) => n,
                _ => 0,
            };
            head.extend_from_slice(&chunk[..n]);
            let (out, done) = match strip_peer_port(&head) {
                Rewrite::NeedMore(ready) if n > 0 && head.len() < MAX_REWRITE_HEAD => {
                    (head.get(sent..ready).unwrap_or_default().to_vec(), false)
                }
                Rewrite::Done(out) => (out.get(sent..).unwrap_or_default().to_vec(), true),
                Rewrite::NeedMore(_) | Rewrite::PassThrough => {
                    (head.get(sent..).unwrap_or_default().to_vec(), true)
                }
            };
            sent += out.len();
            if tcp_write.write_all(&out).await.is_err() || n == 0 {
                let _ = tcp_write.shutdown().await;
                return;
            }
            if done {
                break;
            }
        }
        let mut recv = recv;
        if let Err(e) = tokio::io::copy(&mut recv, &mut tcp_write).await {
            tracing::debug!(error = %e, "tunnel stream ended");
        }
        let _ = tcp_write.shutdown().await;
    };
    inbound.await;
    let _ = outbound.await;
}

/// How much of a stream's start is held back looking for the extension handshake.
const MAX_REWRITE_HEAD: usize = 64 * 1024;

#[derive(Debug, PartialEq)]
enum Rewrite {
    /// The handshake is not complete yet; the first `.0` bytes (whole messages before it) may
    /// go on unchanged.
    NeedMore(usize),
    /// Not a plain BitTorrent stream, or no extension handshake among its first messages.
    PassThrough,
    /// The bytes so far without the handshake's `p`.
    Done(Vec<u8>),
}

/// Drops `p` from the first extension handshake (BEP 10) of a plain BitTorrent stream that
/// starts with `head`.
fn strip_peer_port(head: &[u8]) -> Rewrite {
    const PROTOCOL: &[u8] = b"\x13BitTorrent protocol";
    let Some(start) = head.get(..PROTOCOL.len().min(head.len())) else {
        return Rewrite::NeedMore(0);
    };
    if !PROTOCOL.starts_with(start) {
        return Rewrite::PassThrough;
    }
    if head.len() < 68 {
        return Rewrite::NeedMore(0);
    }
    let mut pos = 68;
    for _ in 0..8 {
        let Some(len) = head.get(pos..pos + 4) else {
            return Rewrite::NeedMore(pos);
        };
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len > MAX_REWRITE_HEAD {
            return Rewrite::PassThrough;
        }
        let Some(body) = head.get(pos + 4..pos + 4 + len) else {
            return Rewrite::NeedMore(pos);
        };
        if let [20, 0, dict @ ..] = body {
            let Ok(value) = crate::formats::bencode::parse(dict) else {
                return Rewrite::PassThrough;
            };
            let Some(old) = value.get("p") else {
                return Rewrite::PassThrough;
            };
            // The value follows its key's encoding, `1:p`.
            let at = old.raw.as_ptr() as usize - dict.as_ptr() as usize;
            let Some(key_at) = at.checked_sub(3) else {
                return Rewrite::PassThrough;
            };
            let mut new_dict = dict[..key_at].to_vec();
            new_dict.extend_from_slice(&dict[at + old.raw.len()..]);
            let Ok(new_len) = u32::try_from(new_dict.len() + 2) else {
                return Rewrite::PassThrough;
            };
            let mut out = head[..pos].to_vec();
            out.extend_from_slice(&new_len.to_be_bytes());
            out.extend_from_slice(&[20, 0]);
            out.extend_from_slice(&new_dict);
            out.extend_from_slice(&head[pos + 4 + len..]);
            return Rewrite::Done(out);
        }
        pos += 4 + len;
    }
    Rewrite::PassThrough
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(ltep: &[u8], tail: &[u8]) -> Vec<u8> {
        let mut s = b"\x13BitTorrent protocol".to_vec();
        s.extend_from_slice(&[0u8; 48]);
        s.extend_from_slice(&0u32.to_be_bytes()); // keep-alive
        s.extend_from_slice(&((ltep.len() + 2) as u32).to_be_bytes());
        s.extend_from_slice(&[20, 0]);
        s.extend_from_slice(ltep);
        s.extend_from_slice(tail);
        s
    }

    #[test]
    fn the_extension_handshake_loses_its_port() {
        let from = stream(b"d1:md6:ut_pexi1ee1:pi51413e1:v4:Tr 3e", b"\0\0\0\x01\x0e");
        let want = stream(b"d1:md6:ut_pexi1ee1:v4:Tr 3e", b"\0\0\0\x01\x0e");
        assert_eq!(strip_peer_port(&from), Rewrite::Done(want));
        // Cut before the extension handshake's end, it waits for more, passing on the
        // BitTorrent handshake and the keep-alive before it at once.
        for (cut, ready) in [(0, 0), (10, 0), (67, 0), (68, 68), (71, 68), (75, 72)] {
            assert_eq!(
                strip_peer_port(&from[..cut]),
                Rewrite::NeedMore(ready),
                "{cut}"
            );
        }
        let end = from.len() - 6;
        assert_eq!(strip_peer_port(&from[..end]), Rewrite::NeedMore(72));
        // No `p`, an encrypted stream, or bencode it cannot read: left alone.
        let no_port = stream(b"d1:v4:Tr 3e", b"");
        assert_eq!(strip_peer_port(&no_port), Rewrite::PassThrough);
        assert_eq!(strip_peer_port(&[0x8f; 100]), Rewrite::PassThrough);
        let broken = stream(b"d1:pi5e1:ai1ee", b"");
        assert_eq!(strip_peer_port(&broken), Rewrite::PassThrough);
    }

    /// A session peer picks a destination only among this node's two fixed ones, by ALPN: a
    /// connection that negotiated none (or another), or the seed one where no seed server is
    /// offered, reaches nothing; none is ever delivered to Transmission by default.
    #[test]
    fn a_peer_reaches_only_the_fixed_port_its_alpn_names() {
        let transmission: SocketAddr = "10.0.0.1:51413".parse().unwrap();
        let seed: SocketAddr = "10.0.0.1:6880".parse().unwrap();
        let both = Deliver {
            transmission,
            seed: Some(seed),
        };
        assert_eq!(
            both.of(Some(ALPN)),
            Some((Dest::Transmission, transmission))
        );
        assert_eq!(both.of(Some(SEED_ALPN)), Some((Dest::Seed, seed)));
        assert_eq!(both.of(None), None);
        assert_eq!(both.of(Some(b"p2pu-seed/2")), None);
        assert_eq!(both.of(Some(b"http/1.1")), None);
        let no_seed = Deliver {
            transmission,
            seed: None,
        };
        assert_eq!(no_seed.of(Some(SEED_ALPN)), None);
        assert_eq!(
            no_seed.of(Some(ALPN)),
            Some((Dest::Transmission, transmission))
        );
    }

    #[test]
    fn placeholder_addresses_are_unroutable_and_stable() {
        let mut map = RelayMap::default();
        let a = map.assign("a");
        assert_eq!(map.assign("a"), a);
        let b = map.assign("b");
        assert_ne!(a, b);
        assert!(matches!(a.ip(), IpAddr::V4(ip) if ip.octets()[0] >= 240));
        map.remove("a");
        assert!(!map.by_addr.contains_key(&a));
    }

    /// Regression (security issue #13, item 8): a bulk frame replayed to a member (its source
    /// spoofed as the proxy's) reached quinn again.
    #[test]
    fn a_relayed_peers_frame_is_taken_once() {
        let mut map = RelayMap::default();
        assert_eq!(map.accept("a", 1), None, "not a relayed peer");
        let a = map.assign("a");
        assert_eq!(map.accept("a", 1), Some(a));
        assert_eq!(map.accept("a", 1), None);
        assert_eq!(map.accept("a", 2), Some(a));
        // A new session with a starts a new window.
        map.remove("a");
        let a = map.assign("a");
        assert_eq!(map.accept("a", 1), Some(a));
    }
}
