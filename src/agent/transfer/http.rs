//! The agent's minimal HTTP/1.1 server: one request per connection, a bounded request head, a
//! fixed pool of worker threads, and clean shutdown. The tracker and the web seed server sit on it.
//!
//! Why not tiny_http: it reads request lines and headers without any size limit (its issue #56)
//! and spawns a thread per connection, and the web seed server faces the fleet's network. Request
//! heads are parsed by `httparse`; this module only bounds, dispatches and writes responses.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Bounds that keep a misbehaving client from costing more than a little memory and one worker.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Request line plus headers; larger heads get 431.
    pub max_head: usize,
    /// Requests served at once; connections beyond `workers` queued ones get 503.
    pub workers: usize,
    /// Connections one source address may hold at once, queued or served; more get 503, so
    /// one client cannot take every worker.
    pub per_source: usize,
    /// How long a worker waits for a whole request head: a client dripping it a byte at a
    /// time holds the worker no longer.
    pub head_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 8 * 1024,
            workers: 2,
            per_source: usize::MAX,
            head_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// A parsed request head. Only what the handlers need; no body is ever read.
#[derive(Debug)]
pub(crate) struct Request {
    pub method: String,
    /// The raw request target, still percent-encoded (`/announce?info_hash=%12...`).
    pub target: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub peer: SocketAddr,
}

impl Request {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The target split at the first `?` into path and raw query.
    pub fn path_and_query(&self) -> (&str, &str) {
        match self.target.split_once('?') {
            Some((path, query)) => (path, query),
            None => (self.target.as_str(), ""),
        }
    }
}

pub(crate) enum Body {
    Bytes(Vec<u8>),
    /// `len` bytes of an open file from its current position.
    File {
        file: std::fs::File,
        len: u64,
    },
    /// Headers only (HEAD): `Content-Length` still says `len`.
    Empty {
        len: u64,
    },
    /// `len` bytes of a file another thread is still writing (a relayed download): reads
    /// that reach its end wait for it to grow while `growing()` holds.
    Growing {
        file: std::fs::File,
        len: u64,
        growing: Box<dyn Fn() -> bool + Send>,
    },
    /// A stripe's blocks (offset, length, index), each read from `file` at its offset once
    /// `held(index)` says the node holds it checked; `len` is their sum.
    Blocks {
        file: std::fs::File,
        len: u64,
        blocks: Vec<(u64, usize, u32)>,
        /// Whether the node holds block `index`; `None`: it gave the transfer up (its mark
        /// is gone), so the answer ends now rather than after a stall.
        held: Box<dyn FnMut(u32) -> Option<bool> + Send>,
        /// `held` also keeps this answer in step with others (`in_step`): the socket then
        /// keeps at most [`PACED_UNSENT`] bytes unsent, so what was written is close to what
        /// has left, and a stripe held back cannot run ahead in its send buffer.
        paced: bool,
    },
}

pub(crate) struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

impl Response {
    pub fn bytes(status: u16, content_type: &'static str, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body: Body::Bytes(body),
        }
    }

    pub fn status(status: u16) -> Response {
        Response::bytes(status, "text/plain", reason(status).as_bytes().to_vec())
    }

    fn write_to(self, stream: &mut impl Answer) -> io::Result<()> {
        let len = match &self.body {
            Body::Bytes(bytes) => bytes.len() as u64,
            Body::File { len, .. }
            | Body::Empty { len }
            | Body::Growing { len, .. }
            | Body::Blocks { len, .. } => *len,
        };
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {len}\r\nConnection: close\r\n\r\n"
        ));
        stream.write_all(head.as_bytes())?;
        match self.body {
            Body::Bytes(bytes) => stream.write_all(&bytes)?,
            Body::File { file, len } => {
                let copied = io::copy(&mut file.take(len), stream)?;
                if copied != len {
                    // The file shrank under us; the client must not take a short body as whole.
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("file ended after {copied} of {len} bytes"),
                    ));
                }
            }
            Body::Empty { .. } => {}
            Body::Growing { file, len, growing } => follow(file, len, &*growing, stream)?,
            Body::Blocks {
                file, blocks, held, ..
            } => send_blocks(&file, &blocks, held, stream)?,
        }
        stream.flush()
    }
}

/// How long a relayed file may stand still before its reader gives up.
const RELAY_STALL: Duration = Duration::from_secs(20);
/// How often a reader at the end of a relayed file looks again: each hop of a relay chain adds
/// about this much delay.
const RELAY_POLL: Duration = Duration::from_millis(3);

/// How often an answer waiting for a block that is not held yet (a forwarder ahead of its own
/// parent, or an answer held in step) looks again. Each hop of a stripe's tree waits half of
/// this on average, against a block's time at a stripe's rate (21 ms at 50 Mbit/s and 8
/// stripes) and 3 to 6 hops; every look is a read of the mark and a sleep, and at 3 ms (the
/// relay's figure) the 120 answers of the 16-node lab looked about 40,000 times a second, their
/// sleeps alone 6% of `perf`'s samples on its two cores (issue 24).
const BLOCK_POLL: Duration = Duration::from_millis(10);

/// The most of a block [`Answer::send_from`] reads or sends at once: the block size comes
/// from the `.have` mark, which the download dir's owner may rewrite (up to 16 MiB blocks),
/// and each reader would otherwise hold a whole block in memory (hostile review).
const BLOCK_CHUNK: usize = 64 * 1024;

/// Sends each block once it is held, from its offset ([`Answer::send_from`]): a block not
/// held yet is waited for (at most [`RELAY_STALL`] each, and only while its reader is
/// there), never read from a hole; a file shorter than a held block ends the answer early,
/// which its reader takes as this node failing.
fn send_blocks(
    file: &std::fs::File,
    blocks: &[(u64, usize, u32)],
    mut held: Box<dyn FnMut(u32) -> Option<bool> + Send>,
    stream: &mut impl Answer,
) -> io::Result<()> {
    let mut buffer = Vec::new();
    for &(offset, len, index) in blocks {
        let waiting = Instant::now();
        loop {
            match held(index) {
                Some(true) => break,
                Some(false) => {}
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the transfer was given up before block {index}"),
                    ))
                }
            }
            if waiting.elapsed() > RELAY_STALL {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("block {index} not held after {RELAY_STALL:?}"),
                ));
            }
            if stream.reader_gone_within(BLOCK_POLL) {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    format!("the reader left while block {index} was awaited"),
                ));
            }
        }
        stream.send_from(file, offset, len, &mut buffer)?;
    }
    Ok(())
}

/// Where an answer is written. An answer waiting for a block waits on its reader too: a
/// stripe's reader that gave up (its stream cut to ask again from a later block) held its
/// place among the stripe's readers, counted against its member, until the next block came
/// to be written, and the member's next ask was turned away (issue 24's membership test, once
/// under CI's load).
pub(crate) trait Answer: Write {
    /// Waits up to `within`; `true` as soon as the reader closed (or reset) its end: nothing
    /// it asked can reach it now.
    fn reader_gone_within(&self, within: Duration) -> bool;

    /// Writes `len` bytes of `file` from `offset`, read in chunks of at most [`BLOCK_CHUNK`]
    /// through `buffer`: the block size comes from the `.have` mark, which the download
    /// dir's owner may rewrite (up to 16 MiB blocks), and no answer may hold a whole block in
    /// memory (hostile review). A file shorter than that is an error: the reader must not
    /// take a short block as whole.
    fn send_from(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        len: usize,
        buffer: &mut Vec<u8>,
    ) -> io::Result<()> {
        copy_range(self, file, offset, len, buffer)
    }
}

/// [`Answer::send_from`] by reads into `buffer` and writes.
fn copy_range(
    out: &mut (impl Write + ?Sized),
    file: &std::fs::File,
    offset: u64,
    len: usize,
    buffer: &mut Vec<u8>,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut sent = 0;
    while sent < len {
        let chunk = (len - sent).min(BLOCK_CHUNK);
        buffer.resize(chunk, 0);
        file.read_exact_at(buffer, offset + sent as u64)?;
        out.write_all(buffer)?;
        sent += chunk;
    }
    Ok(())
}

impl Answer for TcpStream {
    fn reader_gone_within(&self, within: Duration) -> bool {
        use nix::poll::{poll, PollFd, PollFlags};
        use std::os::fd::AsFd;
        // p2pu's readers send nothing after their request and never half-close, so an end
        // of stream here is a reader gone (a NAT tunnel passes a close on as one). Only the
        // end is asked for, never input: a member sending a stray byte must not make the
        // answer spin.
        let rdhup = PollFlags::from_bits_retain(nix::libc::POLLRDHUP);
        let mut fds = [PollFd::new(self.as_fd(), rdhup)];
        let ms = u16::try_from(within.as_millis()).unwrap_or(u16::MAX);
        match poll(&mut fds, ms) {
            // Whatever it reports is the end, an error or a hang-up: it was asked nothing else.
            Ok(ready) => ready > 0,
            Err(_) => false,
        }
    }

    /// By `sendfile`: the page cache's pages go to the socket without a copy through this
    /// process, nor any buffer. Reading blocks into a buffer and writing them out was a
    /// fifth of the seed servers' time in the 16-node lab, whose two cores were full. A
    /// file system that cannot (no `splice_read`: EINVAL) is read and written as before. A
    /// reader gone mid-send raises SIGPIPE, which Rust's runtime ignores (as for `write`):
    /// the call fails with EPIPE.
    fn send_from(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        len: usize,
        buffer: &mut Vec<u8>,
    ) -> io::Result<()> {
        use nix::errno::Errno;
        let mut at = i64::try_from(offset).map_err(io::Error::other)?;
        let end = offset + len as u64;
        while (at as u64) < end {
            let want = (end - at as u64).min(BLOCK_CHUNK as u64) as usize;
            match nix::sys::sendfile::sendfile64(&*self, file, Some(&mut at), want) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the file ended at {at}, before {end}"),
                    ))
                }
                Ok(_) | Err(Errno::EINTR) => {}
                Err(Errno::EINVAL | Errno::ENOSYS) if at as u64 == offset => {
                    return copy_range(self, file, offset, len, buffer)
                }
                // The socket's send timeout, as a write's.
                Err(Errno::EAGAIN) => return Err(io::ErrorKind::TimedOut.into()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// Copies `len` bytes of a file still being written, waiting at its end while it grows.
fn follow(
    mut file: std::fs::File,
    len: u64,
    growing: &dyn Fn() -> bool,
    stream: &mut impl Write,
) -> io::Result<()> {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    let mut last_growth = Instant::now();
    while sent < len {
        let want = buffer
            .len()
            .min(usize::try_from(len - sent).unwrap_or(usize::MAX));
        let n = file.read(&mut buffer[..want])?;
        if n > 0 {
            stream.write_all(&buffer[..n])?;
            sent += n as u64;
            last_growth = Instant::now();
            continue;
        }
        // At the end: the writer may have finished or given up between the read and now.
        let still = growing();
        if file.read(&mut buffer[..1])? == 1 {
            stream.write_all(&buffer[..1])?;
            sent += 1;
            continue;
        }
        if !still || last_growth.elapsed() > RELAY_STALL {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the relayed file stopped after {sent} of {len} bytes"),
            ));
        }
        std::thread::sleep(RELAY_POLL);
    }
    Ok(())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        206 => "Partial Content",
        303 => "See Other",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

pub(crate) type Handler = dyn Fn(&Request) -> Response + Send + Sync;

/// Who may connect at all, by source address; decided at accept, before a worker is spent.
pub(crate) type Admit = dyn Fn(IpAddr) -> bool + Send + Sync;

/// The connections each source address holds, counted at accept and released when served.
type Held = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One connection's place in its source's count; dropping it frees the place.
struct Slot {
    held: Held,
    ip: IpAddr,
}

impl Slot {
    fn take(held: &Held, ip: IpAddr, per_source: usize) -> Option<Slot> {
        let mut counts = held.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= per_source {
            return None;
        }
        *count += 1;
        Some(Slot {
            held: Arc::clone(held),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// A running server; dropping it stops it and joins its threads.
pub(crate) struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    pub fn start(
        service: &'static str,
        bind: SocketAddr,
        limits: Limits,
        handler: Arc<Handler>,
    ) -> Result<Server> {
        Server::start_admitting(service, bind, limits, Arc::new(|_| true), handler)
    }

    /// Like `start`, closing connections from addresses `admit` refuses as soon as they are
    /// accepted (with a 403), so strangers never wait in the queue or hold a worker.
    pub fn start_admitting(
        service: &'static str,
        bind: SocketAddr,
        limits: Limits,
        admit: Arc<Admit>,
        handler: Arc<Handler>,
    ) -> Result<Server> {
        let listener = TcpListener::bind(bind).map_err(|source| Error::Bind {
            service,
            addr: bind,
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            service,
            addr: bind,
            source,
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let workers = limits.workers.max(1);
        let (queue, jobs) = mpsc::sync_channel::<(TcpStream, Slot)>(workers);
        let jobs = Arc::new(Mutex::new(jobs));
        let mut threads = Vec::with_capacity(workers + 1);
        for n in 0..workers {
            let jobs = Arc::clone(&jobs);
            let handler = Arc::clone(&handler);
            let limits = limits.clone();
            let thread = std::thread::Builder::new()
                .name(format!("{service}-{n}"))
                .spawn(move || work(&jobs, &limits, handler.as_ref()))
                .map_err(|e| Error::Internal(format!("spawning {service} worker: {e}")))?;
            threads.push(thread);
        }
        let accept_stop = Arc::clone(&stop);
        let per_source = limits.per_source.max(1);
        let acceptor = std::thread::Builder::new()
            .name(format!("{service}-accept"))
            .spawn(move || accept(&listener, &queue, &accept_stop, &*admit, per_source))
            .map_err(|e| Error::Internal(format!("spawning {service} acceptor: {e}")))?;
        threads.push(acceptor);
        Ok(Server {
            addr,
            stop,
            threads,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shutdown(&mut self) {
        if self.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        // A blocked accept() only returns on a connection: make one, so the acceptor sees `stop`.
        let wake = connectable(self.addr);
        if let Err(e) = TcpStream::connect_timeout(&wake, Duration::from_secs(2)) {
            // Joining now would hang; the threads end at the next connection instead.
            tracing::warn!(addr = %wake, error = %e, "waking the HTTP acceptor failed");
            return;
        }
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("an HTTP server thread panicked");
            }
        }
    }
}

/// `addr` with a wildcard IP replaced by loopback, so a local client can connect to it.
pub(crate) fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept(
    listener: &TcpListener,
    queue: &SyncSender<(TcpStream, Slot)>,
    stop: &AtomicBool,
    admit: &Admit,
    per_source: usize,
) {
    let held: Held = Arc::default();
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                continue;
            }
        };
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        if !admit(peer.ip()) {
            refuse(stream, 403);
            continue;
        }
        let Some(slot) = Slot::take(&held, peer.ip(), per_source) else {
            tracing::debug!(%peer, per_source, "too many connections from one source");
            refuse(stream, 503);
            continue;
        };
        match queue.try_send((stream, slot)) {
            Ok(()) => {}
            // Answer at once rather than let a flood of connections queue without bound.
            Err(TrySendError::Full((stream, _slot))) => refuse(stream, 503),
            Err(TrySendError::Disconnected(_)) => break,
        }
    }
    // Dropping `queue` here lets the workers finish their current request and exit.
}

/// Answers `status` without reading the request, from the acceptor: the response fits in the
/// socket's buffer, and the write timeout bounds the rare case where it does not.
fn refuse(mut stream: TcpStream, status: u16) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = Response::status(status).write_to(&mut stream);
    let _ = stream.shutdown(Shutdown::Both);
}

fn work(jobs: &Mutex<Receiver<(TcpStream, Slot)>>, limits: &Limits, handler: &Handler) {
    loop {
        let next = match jobs.lock() {
            Ok(jobs) => jobs.recv(),
            Err(_) => return,
        };
        // The slot is held until the connection is served.
        let Ok((stream, _slot)) = next else { return };
        if let Err(e) = serve(stream, limits, handler) {
            tracing::debug!(error = %e, "HTTP connection ended with an error");
        }
    }
}

fn serve(mut stream: TcpStream, limits: &Limits, handler: &Handler) -> io::Result<()> {
    stream.set_write_timeout(Some(limits.write_timeout))?;
    let peer = stream.peer_addr()?;
    let response = match read_head(&mut stream, limits, peer)? {
        Ok(request) => handler(&request),
        Err(status) => Response::status(status),
    };
    if matches!(response.body, Body::Blocks { paced: true, .. }) {
        socket2::SockRef::from(&stream).set_tcp_notsent_lowat(PACED_UNSENT)?;
    }
    response.write_to(&mut stream)?;
    // Half-close, then drain what the client still sends (a refused oversized head): closing
    // with unread input makes the kernel send a reset, which can destroy the response in flight.
    stream.shutdown(Shutdown::Write)?;
    stream.set_read_timeout(Some(LINGER.min(limits.read_timeout)))?;
    io::copy(&mut (&stream).take(MAX_DRAIN), &mut io::sink())?;
    Ok(())
}

/// The unsent bytes a paced answer's socket may hold (`TCP_NOTSENT_LOWAT`): a few blocks; what
/// is in flight is the congestion window's, untouched.
const PACED_UNSENT: u32 = 64 * 1024;

/// How long and how much a finished connection is drained before it is closed.
const LINGER: Duration = Duration::from_secs(2);
const MAX_DRAIN: u64 = 64 * 1024;

/// Reads and parses one request head; `Err(status)` when it is malformed or too large.
fn read_head(
    stream: &mut TcpStream,
    limits: &Limits,
    peer: SocketAddr,
) -> io::Result<Result<Request, u16>> {
    // One deadline for the whole head, so a client dripping a byte at a time cannot hold a
    // worker for longer than `head_timeout`.
    let deadline = Instant::now() + limits.head_timeout;
    let mut buf = vec![0u8; limits.max_head];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            return Ok(Err(431));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head too slow",
            ));
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut buf[filled..])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the end of the request head",
            ));
        }
        filled += n;
        if let Some(parsed) = parse_head(&buf[..filled], peer) {
            return Ok(parsed);
        }
    }
}

/// Parses the head read so far: `None` while it is incomplete, `Err(status)` when it is
/// malformed. Apart from `read_head` so the fuzz target reaches it without a socket.
pub(crate) fn parse_head(head: &[u8], peer: SocketAddr) -> Option<Result<Request, u16>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {
            let (Some(method), Some(target)) = (parsed.method, parsed.path) else {
                return Some(Err(400));
            };
            Some(Ok(Request {
                method: method.to_string(),
                target: target.to_string(),
                headers: parsed
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), h.value.to_vec()))
                    .collect(),
                peer,
            }))
        }
        Ok(httparse::Status::Partial) => None,
        Err(httparse::Error::TooManyHeaders) => Some(Err(431)),
        Err(_) => Some(Err(400)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block is read and written in chunks of at most `BLOCK_CHUNK`, however large the
    /// (untrusted) mark says blocks are, and arrives whole (hostile review).
    #[test]
    fn a_large_block_is_sent_whole_in_bounded_chunks() {
        struct Largest(Vec<u8>, usize);
        impl Write for Largest {
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                self.0.extend_from_slice(bytes);
                self.1 = self.1.max(bytes.len());
                Ok(bytes.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        impl Answer for Largest {
            fn reader_gone_within(&self, within: Duration) -> bool {
                std::thread::sleep(within);
                false
            }
        }
        let data: Vec<u8> = (0..200 * 1024).map(|i| (i % 251) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&data).unwrap();
        let blocks = [(0, 150 * 1024, 0), (150 * 1024, 50 * 1024, 1)];
        let mut out = Largest(Vec::new(), 0);
        send_blocks(&file, &blocks, Box::new(|_| Some(true)), &mut out).unwrap();
        assert!(out.0 == data, "sent {} bytes", out.0.len());
        assert!(out.1 <= BLOCK_CHUNK, "a write of {} bytes", out.1);
    }

    /// A socket sends a block's bytes from the file by `sendfile`, whole, and a file that
    /// ends inside the block is an error, never a short block taken as whole.
    #[test]
    fn a_socket_sends_a_block_from_the_file_and_a_short_file_fails() {
        let data: Vec<u8> = (0..200 * 1024).map(|i| (i % 251) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&data).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut sender = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut receiver, _) = listener.accept().unwrap();
        let reading = std::thread::spawn(move || {
            let mut got = Vec::new();
            receiver.read_to_end(&mut got).unwrap();
            got
        });
        sender
            .send_from(&file, 1000, 150 * 1024, &mut Vec::new())
            .unwrap();
        let short = sender.send_from(&file, 190 * 1024, 16 * 1024, &mut Vec::new());
        assert_eq!(
            short.map_err(|e| e.kind()),
            Err(io::ErrorKind::UnexpectedEof)
        );
        drop(sender);
        let got = reading.join().unwrap();
        assert_eq!(got[..150 * 1024], data[1000..1000 + 150 * 1024]);
        assert_eq!(got[150 * 1024..], data[190 * 1024..], "what the file held");
    }

    fn echo_server(limits: Limits) -> Server {
        let handler: Arc<Handler> = Arc::new(|req: &Request| {
            Response::bytes(200, "text/plain", req.target.clone().into_bytes())
        });
        Server::start("test-http", "127.0.0.1:0".parse().unwrap(), limits, handler).unwrap()
    }

    fn raw(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(request).unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_and_closes() {
        let server = echo_server(Limits::default());
        let out = raw(server.addr(), b"GET /x?y HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("Connection: close\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\n/x?y"), "{out}");
    }

    #[test]
    fn oversized_head_gets_431() {
        let server = echo_server(Limits {
            max_head: 256,
            ..Limits::default()
        });
        let mut request = b"GET /".to_vec();
        request.extend(std::iter::repeat_n(b'a', 1000));
        request.extend(b" HTTP/1.1\r\n\r\n");
        let out = raw(server.addr(), &request);
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
    }

    #[test]
    fn garbage_gets_400() {
        let server = echo_server(Limits::default());
        let out = raw(server.addr(), b"\x00\x01 nonsense\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    }

    #[test]
    fn busy_workers_get_503_instead_of_an_unbounded_queue() {
        let server = echo_server(Limits {
            workers: 1,
            ..Limits::default()
        });
        // One idle connection occupies the worker, one waits in the queue, the rest overflow.
        let idle: Vec<TcpStream> = (0..3)
            .map(|_| {
                let stream = TcpStream::connect(server.addr()).unwrap();
                // Let the worker take the first before the next arrives.
                std::thread::sleep(Duration::from_millis(100));
                stream
            })
            .collect();
        let out = raw(server.addr(), b"GET / HTTP/1.1\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 503 "), "{out}");
        drop(idle);
    }

    #[test]
    fn wildcard_binds_are_reached_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:7".parse().unwrap();
        assert_eq!(
            connectable(v4),
            "127.0.0.1:7".parse::<SocketAddr>().unwrap()
        );
        let v6: SocketAddr = "[::]:7".parse().unwrap();
        assert_eq!(connectable(v6), "[::1]:7".parse::<SocketAddr>().unwrap());
        let given: SocketAddr = "10.0.0.1:7".parse().unwrap();
        assert_eq!(connectable(given), given);
    }

    #[test]
    fn shutdown_joins_and_frees_the_port() {
        let mut server = echo_server(Limits::default());
        let addr = server.addr();
        server.shutdown();
        assert!(
            TcpListener::bind(addr).is_ok(),
            "port still held after shutdown"
        );
    }

    /// A connection from `ip` (any 127/8 address reaches a loopback server) that has sent
    /// the start of a request head.
    fn connect_from(ip: [u8; 4], addr: SocketAddr) -> TcpStream {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.bind(&SocketAddr::from((ip, 0)).into()).unwrap();
        socket.connect(&addr.into()).unwrap();
        let mut stream: TcpStream = socket.into();
        stream.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        stream
    }

    /// Writes one more header byte to each stream every 50 ms until `stop`: heads that never
    /// end, each byte well inside any per-read timeout.
    fn drip(streams: Vec<TcpStream>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
        std::thread::spawn(move || {
            let mut streams = streams;
            while !stop.load(Ordering::SeqCst) {
                for stream in &mut streams {
                    let _ = stream.write_all(b"X");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    }

    fn status_of(mut stream: TcpStream) -> String {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out);
        String::from_utf8_lossy(&out)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    }

    /// 24 strangers and one greedy member dripping request heads (the seed server's 8 + 8
    /// slots, scaled down to 4 + 4) leave a member's request served at once.
    #[test]
    fn strangers_and_a_greedy_member_cannot_starve_a_member() {
        let handler: Arc<Handler> =
            Arc::new(|_: &Request| Response::bytes(200, "text/plain", b"ok".to_vec()));
        let stranger = IpAddr::from([127, 0, 0, 2]);
        let admit: Arc<Admit> = Arc::new(move |ip| ip != stranger);
        let limits = Limits {
            workers: 4,
            per_source: 2,
            head_timeout: Duration::from_secs(5),
            ..Limits::default()
        };
        let server = Server::start_admitting(
            "test-http",
            "127.0.0.1:0".parse().unwrap(),
            limits,
            admit,
            handler,
        )
        .unwrap();
        let addr = server.addr();
        let strangers: Vec<TcpStream> = (0..24)
            .map(|_| connect_from([127, 0, 0, 2], addr))
            .collect();
        let greedy: Vec<TcpStream> = (0..10)
            .map(|_| connect_from([127, 0, 0, 3], addr))
            .collect();
        let probe_stranger = strangers[0].try_clone().unwrap();
        let probe_greedy = greedy[9].try_clone().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let dripping = drip(strangers.into_iter().chain(greedy).collect(), stop.clone());
        std::thread::sleep(Duration::from_millis(200));

        let started = Instant::now();
        let out = raw(addr, b"GET /member HTTP/1.1\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "served only after {:?}",
            started.elapsed()
        );
        assert_eq!(status_of(probe_stranger), "HTTP/1.1 403 Forbidden");
        assert_eq!(status_of(probe_greedy), "HTTP/1.1 503 Service Unavailable");
        stop.store(true, Ordering::SeqCst);
        dripping.join().unwrap();
    }

    struct StopOnDrop(Arc<AtomicBool>);

    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// One worker: a client dripping its head holds it until the head timeout, then gets the
    /// connection closed without an answer, and an honest client queued behind it is served.
    /// Without the deadline the honest client would wait for as long as the drip goes on; a
    /// server that dropped every connection would give the honest client nothing either.
    #[test]
    fn a_dripped_request_head_is_cut_off_at_the_head_timeout() {
        let server = echo_server(Limits {
            workers: 1,
            head_timeout: Duration::from_millis(300),
            read_timeout: Duration::from_secs(10),
            ..Limits::default()
        });
        let stream = connect_from([127, 0, 0, 1], server.addr());
        let probe = stream.try_clone().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let dripping = drip(vec![stream], stop.clone());
        // Dropped before the server: a failing assertion stops the drip, so the server's
        // worker is let go and the test fails instead of hanging.
        let _stop_on_drop = StopOnDrop(stop.clone());
        // Let the worker take the dripping connection before the honest one queues.
        std::thread::sleep(Duration::from_millis(100));
        let mut honest = TcpStream::connect(server.addr()).unwrap();
        honest.write_all(b"GET /honest HTTP/1.1\r\n\r\n").unwrap();
        honest
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = String::new();
        let _ = honest.read_to_string(&mut answer);
        // The dripping client is cut off without a response (no status line at all).
        assert_eq!(status_of(probe), "", "the dripping client got an answer");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:?}");
        assert!(answer.ends_with("\r\n\r\n/honest"), "{answer:?}");
        stop.store(true, Ordering::SeqCst);
        dripping.join().unwrap();
    }
}
