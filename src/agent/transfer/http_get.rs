//! The agent's HTTP GET client for its fleet's web seed servers. Unlike ureq, it binds the
//! socket to the node's advertised address before connecting: the seed servers admit members
//! by source address, and on a multi-homed node (or the lab, where every node shares one
//! `lo`) the kernel would otherwise pick a source that is not the member's. Response heads are
//! parsed by `httparse`; the body is handed to the caller as a bounded reader.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Response heads larger than this are refused.
const MAX_HEAD: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("connecting to {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("talking to {addr}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("{addr} sent a malformed response head: {reason}")]
    Malformed { addr: SocketAddr, reason: String },
    #[error("{addr} answered {status} for {path}")]
    Status {
        addr: SocketAddr,
        path: String,
        status: u16,
    },
    #[error("{addr} did not finish its response head within {limit:?}")]
    SlowHead { addr: SocketAddr, limit: Duration },
    #[error("{addr} offers {path} as {got} bytes, the announcement signed {want}")]
    Length {
        addr: SocketAddr,
        path: String,
        got: u64,
        want: u64,
    },
}

/// An answered GET: its status and a reader over exactly `len` body bytes.
pub struct Response {
    pub status: u16,
    pub len: u64,
    pub body: io::Take<BufReader<TcpStream>>,
}

/// A body read straight from its socket ([`Response::unbuffered`]): what the head's read
/// took of it first, then the socket, each read woken once it can be answered whole.
pub struct Unbuffered {
    body: io::Take<io::Chain<io::Cursor<Vec<u8>>, TcpStream>>,
    /// The most a read waits for.
    at_least: usize,
    /// The socket's `SO_RCVLOWAT` now.
    set: usize,
}

impl Unbuffered {
    pub fn socket(&self) -> &TcpStream {
        self.body.get_ref().get_ref().1
    }
}

impl Read for Unbuffered {
    /// Waits for what it asks (up to `at_least`) or the socket's read timeout. The kernel
    /// wakes a reader only once `SO_RCVLOWAT` bytes are in, whatever it asked, so a read for
    /// less (the rest of a block a timeout cut, a short last block) sets the mark to what it
    /// asks first: it would otherwise wait on the next block's bytes (hostile review).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let limit = usize::try_from(self.body.limit()).unwrap_or(usize::MAX);
        let want = buf.len().min(self.at_least).min(limit).max(1);
        if want != self.set {
            set_rcvlowat(self.socket(), want)?;
            self.set = want;
        }
        self.body.read(buf)
    }
}

/// `SO_RCVLOWAT`, which neither nix nor socket2 wraps.
fn set_rcvlowat(stream: &TcpStream, bytes: usize) -> io::Result<()> {
    use nix::libc::{c_int, c_void, setsockopt, socklen_t, SOL_SOCKET, SO_RCVLOWAT};
    use std::os::fd::AsRawFd;
    let value = c_int::try_from(bytes).unwrap_or(c_int::MAX).max(1);
    // SAFETY: the fd is `stream`'s, open for the whole call, and the option's value is a
    // c_int passed with its size, as socket(7) gives SO_RCVLOWAT.
    let rc = unsafe {
        setsockopt(
            stream.as_raw_fd(),
            SOL_SOCKET,
            SO_RCVLOWAT,
            (&value as *const c_int).cast::<c_void>(),
            std::mem::size_of::<c_int>() as socklen_t,
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

impl Response {
    /// The body without its 8 KiB buffer, each read waiting for what it asks, up to
    /// `at_least` bytes ([`Unbuffered`], `SO_RCVLOWAT`), rather than returning each packet
    /// as it lands; a read timeout still returns what came. A stripe's stream at an eighth
    /// of a 50 Mbit/s link brings a 16 KiB block in about 11 packets, each of which woke its
    /// thread for one `recv`: the 16-node lab's two cores were full (issue 24). Unbuffered,
    /// because a buffer's refill asks for its 8 KiB whatever the caller wants.
    pub fn unbuffered(self, at_least: usize) -> Unbuffered {
        let limit = self.body.limit();
        let reader = self.body.into_inner();
        let taken = reader.buffer().to_vec();
        let stream = reader.into_inner();
        Unbuffered {
            body: io::Read::take(io::Cursor::new(taken).chain(stream), limit),
            at_least: at_least.max(1),
            // The kernel's default.
            set: 1,
        }
    }
}

/// The header in which a seed server says how many bytes of a payload it holds verified (see
/// `seed_http`): a relaying node's progress, read by the nodes that may fetch from it.
pub const HAVE_HEADER: &str = "X-P2pu-Have";

/// What a response head says.
struct Head {
    status: u16,
    len: u64,
    have: Option<u64>,
}

/// Where requests come from and how long a silent peer is waited for.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    /// The source address to bind (the node's advertised address); `None` lets the kernel pick.
    pub bind: Option<IpAddr>,
    pub connect_timeout: Duration,
    /// Per read: a relay that stops growing for this long ends the transfer. Also the most
    /// a whole response head may take.
    pub read_timeout: Duration,
}

impl Client {
    /// GETs `path` from `addr`, from byte `offset` on (a `Range` request when not 0).
    /// Statuses other than 200 (206 for a range) are errors.
    pub fn get(&self, addr: SocketAddr, path: &str, offset: u64) -> Result<Response, GetError> {
        let io_error = |source| GetError::Io { addr, source };
        let stream = self.connect(addr)?;
        stream
            .set_read_timeout(Some(self.read_timeout))
            .map_err(io_error)?;
        stream
            .set_write_timeout(Some(self.read_timeout))
            .map_err(io_error)?;
        let range = if offset > 0 {
            format!("Range: bytes={offset}-\r\n")
        } else {
            String::new()
        };
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{range}Connection: close\r\nUser-Agent: p2pu\r\n\r\n"
        );
        (&stream).write_all(head.as_bytes()).map_err(io_error)?;
        let mut reader = BufReader::new(stream);
        let Head { status, len, .. } = read_head(&mut reader, addr, self.read_timeout)?;
        reader
            .get_ref()
            .set_read_timeout(Some(self.read_timeout))
            .map_err(io_error)?;
        let want = if offset > 0 { 206 } else { 200 };
        if status != want {
            return Err(GetError::Status {
                addr,
                path: path.to_string(),
                status,
            });
        }
        Ok(Response {
            status,
            len,
            body: reader.take(len),
        })
    }

    /// Asks `addr` with a HEAD of `path` how many bytes of the payload it holds verified,
    /// waiting at most `limit` in all: a probe of a node that may have hung.
    pub fn have(&self, addr: SocketAddr, path: &str, limit: Duration) -> Result<u64, GetError> {
        let head = self.head(addr, path, limit)?;
        if head.status != 200 {
            return Err(GetError::Status {
                addr,
                path: path.to_string(),
                status: head.status,
            });
        }
        head.have.ok_or_else(|| GetError::Malformed {
            addr,
            reason: format!("no {HAVE_HEADER} header"),
        })
    }

    /// Whether `addr`'s server answers a HEAD of `path` (whatever its status) within `limit`
    /// in all: the probe of a striped source gone silent (a hung process's kernel still
    /// accepts the connection, but nothing answers).
    pub fn answers(&self, addr: SocketAddr, path: &str, limit: Duration) -> bool {
        self.head(addr, path, limit).is_ok()
    }

    /// A HEAD of `path`, its head read within `limit` in all.
    fn head(&self, addr: SocketAddr, path: &str, limit: Duration) -> Result<Head, GetError> {
        let io_error = |source| GetError::Io { addr, source };
        let quick = Client {
            connect_timeout: self.connect_timeout.min(limit),
            ..*self
        };
        let stream = quick.connect(addr)?;
        stream.set_write_timeout(Some(limit)).map_err(io_error)?;
        let head = format!(
            "HEAD {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: p2pu\r\n\r\n"
        );
        (&stream).write_all(head.as_bytes()).map_err(io_error)?;
        let mut reader = BufReader::new(stream);
        read_head(&mut reader, addr, limit)
    }

    fn connect(&self, addr: SocketAddr) -> Result<TcpStream, GetError> {
        use socket2::{Domain, Socket, Type};
        let connect_error = |source| GetError::Connect { addr, source };
        let socket =
            Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(connect_error)?;
        if let Some(ip) = self.bind.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
            socket
                .bind(&SocketAddr::new(ip, 0).into())
                .map_err(connect_error)?;
        }
        socket
            .connect_timeout(&addr.into(), self.connect_timeout)
            .map_err(connect_error)?;
        Ok(socket.into())
    }
}

/// Reads the status line and headers; returns the status and `Content-Length` (required: the
/// agent's servers always send it, and a body without one could not be told from a cut one).
/// The whole head must arrive within `limit`: a server dripping it a byte at a time would
/// otherwise reset the per-read timeout with every byte and hold the fetch for hours.
fn read_head(
    reader: &mut BufReader<TcpStream>,
    addr: SocketAddr,
    limit: Duration,
) -> Result<Head, GetError> {
    let malformed = |reason: &str| GetError::Malformed {
        addr,
        reason: reason.to_string(),
    };
    let io_error = |source| GetError::Io { addr, source };
    let deadline = Instant::now() + limit;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(GetError::SlowHead { addr, limit });
        }
        reader
            .get_ref()
            .set_read_timeout(Some(left))
            .map_err(io_error)?;
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(GetError::SlowHead { addr, limit })
            }
            Err(e) => return Err(io_error(e)),
        };
        if available.is_empty() {
            return Err(malformed("the connection closed inside the head"));
        }
        // Up to the end of a line, so the blank line ending the head is seen as it arrives.
        let line_end = available
            .iter()
            .position(|&b| b == b'\n')
            .map_or(available.len(), |at| at + 1);
        let take = line_end.min(MAX_HEAD - head.len());
        head.extend_from_slice(&available[..take]);
        reader.consume(take);
        if head.len() >= MAX_HEAD {
            return Err(malformed("the head is over 8 KiB"));
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut headers);
    match parsed.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(malformed("incomplete head")),
        Err(e) => return Err(malformed(&e.to_string())),
    }
    let status = parsed.code.ok_or_else(|| malformed("no status"))?;
    let number = |name: &str| {
        parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let have = number(HAVE_HEADER);
    match number("Content-Length") {
        Some(len) => Ok(Head { status, len, have }),
        None if status != 200 && status != 206 => Ok(Head {
            status,
            len: 0,
            have,
        }),
        None => Err(malformed("no Content-Length")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serves one canned response and returns the request it read.
    fn serve_once(response: &'static [u8]) -> (SocketAddr, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            stream.write_all(response).unwrap();
            String::from_utf8(request).unwrap()
        });
        (addr, handle)
    }

    fn client() -> Client {
        Client {
            bind: Some("127.0.0.1".parse().unwrap()),
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(2),
        }
    }

    /// What a stripe's stream relies on from `unbuffered`: a read waits for its count
    /// rather than return each packet, a read for less than that waits only for what it
    /// asked, and a read timeout still returns what came (the hang rule looks at a source
    /// once a second of silence, however little it sent). The sender's segments are cut to
    /// a LAN's size: over loopback's 64 KiB ones the kernel wakes a reader at any count.
    #[test]
    fn an_unbuffered_read_waits_for_its_count_and_a_timeout_returns_what_came() {
        use socket2::{Domain, Socket, Type};
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        listener.set_tcp_mss(1400).unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        listener.bind(&any.into()).unwrap();
        listener.listen(1).unwrap();
        let listener: TcpListener = listener.into();
        let addr = listener.local_addr().unwrap();
        let (go, went) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request).unwrap();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 24576\r\n\r\n")
                .unwrap();
            // The body only once the client read the head, so none of it is read with it.
            went.recv().unwrap();
            let pause = || std::thread::sleep(Duration::from_millis(200));
            for (byte, len) in [(1, 4096), (2, 12288), (3, 4096), (4, 2048)] {
                stream.write_all(&vec![byte; len]).unwrap();
                pause();
            }
            std::thread::sleep(Duration::from_secs(3));
        });
        let response = client().get(addr, "/f", 0).unwrap();
        let mut body = response.unbuffered(16384);
        body.socket()
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        go.send(()).unwrap();
        let mut block = vec![0; 16384];
        assert_eq!(body.read(&mut block).unwrap(), 16384, "one read, one block");
        // Less than a block asked: answered as soon as it came, not at the timeout.
        let asked = std::time::Instant::now();
        assert_eq!(body.read(&mut block[..4096]).unwrap(), 4096);
        assert!(
            asked.elapsed() < Duration::from_millis(700),
            "{:?}",
            asked.elapsed()
        );
        // Past the timeout: what came of the 4096 asked.
        let asked = std::time::Instant::now();
        assert_eq!(
            body.read(&mut block[..4096]).unwrap(),
            2048,
            "what came, at the timeout"
        );
        assert!(
            asked.elapsed() >= Duration::from_millis(900),
            "{:?}",
            asked.elapsed()
        );
        drop(body);
        server.join().unwrap();
    }

    #[test]
    fn reads_exactly_the_announced_body_and_sends_the_range() {
        let (addr, server) =
            serve_once(b"HTTP/1.1 206 Partial Content\r\nContent-Length: 3\r\n\r\nabcTRAILING");
        let mut response = client().get(addr, "/x/y", 7).unwrap();
        let mut body = Vec::new();
        response.body.read_to_end(&mut body).unwrap();
        assert_eq!((response.status, body.as_slice()), (206, &b"abc"[..]));
        let request = server.join().unwrap();
        assert!(request.starts_with("GET /x/y HTTP/1.1\r\n"), "{request}");
        assert!(request.contains("Range: bytes=7-\r\n"), "{request}");
    }

    #[test]
    fn refuses_wrong_statuses_and_heads_without_a_length() {
        let (addr, _server) = serve_once(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        let err = client().get(addr, "/missing", 0).err().unwrap();
        assert!(matches!(err, GetError::Status { status: 404, .. }), "{err}");
        let (addr, _server) = serve_once(b"HTTP/1.1 200 OK\r\n\r\nbody");
        let err = client().get(addr, "/f", 0).err().unwrap();
        assert!(err.to_string().contains("no Content-Length"), "{err}");
        let (addr, _server) = serve_once(b"garbage\r\n\r\n");
        let err = client().get(addr, "/f", 0).err().unwrap();
        assert!(matches!(err, GetError::Malformed { .. }), "{err}");
        let (addr, _server) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx");
        let err = client().get(addr, "/f", 5).err().unwrap();
        assert!(
            matches!(err, GetError::Status { status: 200, .. }),
            "a server ignoring the range must not be taken as resuming: {err}"
        );
    }

    /// A head dripped a byte at a time, each well inside the read timeout, still ends once
    /// the whole head has taken the read timeout.
    #[test]
    fn a_dripped_response_head_is_given_up_within_the_read_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
            head.extend(std::iter::repeat_n(b'a', 100));
            for byte in head {
                if stream.write_all(&[byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(30));
            }
        });
        let client = Client {
            read_timeout: Duration::from_millis(500),
            ..client()
        };
        let started = Instant::now();
        let err = client.get(addr, "/f", 0).err().unwrap();
        assert!(matches!(err, GetError::SlowHead { .. }), "{err}");
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
        server.join().unwrap();
    }
}
