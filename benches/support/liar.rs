//! A lying member for the benches and tests: an HTTP server on a member's seed address that
//! claims to hold every payload whole (`X-P2pu-Have`) and answers every payload request with
//! wrong bytes at full speed. It is a separate fake started by the bench or test in the lab's
//! namespace, never a mode of the shipped agent.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// A running liar; dropping it stops it.
pub struct Liar {
    stop: Arc<AtomicBool>,
    /// Payload requests it answered.
    pub served: Arc<AtomicU64>,
}

impl Drop for Liar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Liar {
    /// Lies on `listener` about a payload of `len` bytes.
    pub fn start(listener: TcpListener, len: u64) -> Liar {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        listener.set_nonblocking(true).ok();
        let (flag, count) = (stop.clone(), served.clone());
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let count = count.clone();
                        std::thread::spawn(move || answer(stream, len, &count));
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        Liar { stop, served }
    }
}

fn answer(stream: TcpStream, len: u64, served: &AtomicU64) {
    let _ = stream.set_nonblocking(false);
    let mut reader = BufReader::new(&stream);
    let mut request = String::new();
    let mut start = 0u64;
    let mut line = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        if let Some(range) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
            start = range.trim().trim_end_matches('-').parse().unwrap_or(0);
        }
        line.clear();
    }
    let mut out = &stream;
    let path = request.split_whitespace().nth(1).unwrap_or("");
    if path.ends_with(".torrent") || !path.contains("?relay") {
        let _ = out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    let status = if start > 0 {
        "206 Partial Content"
    } else {
        "200 OK"
    };
    let body = len - start.min(len);
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {body}\r\nX-P2pu-Have: {len}\r\nConnection: close\r\n\r\n"
    );
    if out.write_all(head.as_bytes()).is_err() || request.starts_with("HEAD") {
        return;
    }
    served.fetch_add(1, Ordering::Relaxed);
    let junk = vec![0x5au8; 64 * 1024];
    let mut left = body;
    while left > 0 {
        let n = junk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if out.write_all(&junk[..n]).is_err() {
            return;
        }
        left -= n as u64;
    }
}
