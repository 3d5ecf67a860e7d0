//! The agent's HTTP GET client for its fleet's web seed servers. Unlike ureq, it binds the
//! socket to the node's advertised address before connecting: the seed servers admit members
//! by source address, and on a multi-homed node (or the lab, where every node shares one
//! `lo`) the kernel would otherwise pick a source that is not the member's. Response heads are
//! parsed by `httparse`; the body is handed to the caller as a bounded reader.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

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

/// Where requests come from and how long a silent peer is waited for.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    /// The source address to bind (the node's advertised address); `None` lets the kernel pick.
    pub bind: Option<IpAddr>,
    pub connect_timeout: Duration,
    /// Per read: a relay that stops growing for this long ends the transfer.
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
        let (status, len) = read_head(&mut reader, addr)?;
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
fn read_head(reader: &mut BufReader<TcpStream>, addr: SocketAddr) -> Result<(u16, u64), GetError> {
    let malformed = |reason: &str| GetError::Malformed {
        addr,
        reason: reason.to_string(),
    };
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let before = head.len();
        reader
            .by_ref()
            .take((MAX_HEAD - head.len()) as u64)
            .read_until(b'\n', &mut head)
            .map_err(|source| GetError::Io { addr, source })?;
        if head.len() == before {
            return Err(malformed("the connection closed inside the head"));
        }
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
    let len = parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("Content-Length"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match len {
        Some(len) => Ok((status, len)),
        None if status != 200 && status != 206 => Ok((status, 0)),
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
}
