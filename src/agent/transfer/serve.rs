//! The agent's network-facing half as a process of its own (`p2pu agent-serve`): the tracker on
//! loopback and the web seed server on the fleet address, answering from the membership the
//! root agent writes to its stdin, one [`PeersSnapshot`] JSON line per refresh. It runs as an
//! unprivileged user (see `supervise`) so that a bug in code that parses what strangers send
//! does not give root. It ends when its stdin does, so it never outlives the agent. After its
//! ready line, its stdout carries the announcements members push to it ([`super::push`]), one
//! [`super::push::Pushed`] JSON line each, for the agent to spool.

use super::http::connectable;
use super::seed_http::{SeedHandle, SeedServer};
use super::tracker::{Tracker, TrackerHandle};
use crate::agent::runtime::peers::{FleetPeers, PeersSnapshot};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// A snapshot line longer than this is refused (a fleet of thousands fits in well under 1 MiB).
const MAX_LINE: usize = 16 << 20;

/// Pushed announcements waiting for the agent to read them; a push beyond gets 503.
const PUSHES_QUEUED: usize = 64;

/// Where to serve what; the agent derives it from the site config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    /// The tracker's address: 127.0.0.1 and `agent.tracker_port`.
    pub tracker: SocketAddr,
    /// The web seed server's address: the advertise address and `agent.seed_port`.
    pub seed: SocketAddr,
    /// The download dir whose complete payloads are served.
    pub root: PathBuf,
    /// The children a member feeds a stripe (`[transfer] fan_out`): the seed server's size.
    pub fan_out: usize,
}

/// The one line `agent-serve` prints on stdout once both servers listen: the addresses
/// actually bound, so port 0 works in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ready {
    pub tracker: SocketAddr,
    pub seed: SocketAddr,
}

impl Ready {
    /// The URL to put in magnets' `tr=`.
    pub fn tracker_url(&self) -> String {
        format!("http://{}/announce", connectable(self.tracker))
    }

    /// The web seeds' base URL, ending in `/`.
    pub fn seed_url(&self) -> String {
        format!("http://{}/", connectable(self.seed))
    }
}

/// Both servers, answering from `peers`.
pub struct Serving {
    peers: Arc<FleetPeers>,
    tracker: TrackerHandle,
    seeder: SeedHandle,
    pushes: std::sync::mpsc::Receiver<super::push::Pushed>,
}

impl Serving {
    /// Binds and starts both servers with an empty membership (only loopback may use the seeds
    /// until the first snapshot arrives).
    pub fn start(options: &ServeOptions) -> Result<Serving> {
        // This process never refreshes from Serf, so it needs no node name.
        let peers = Arc::new(FleetPeers::new(""));
        let tracker = Tracker::start(options.tracker, peers.clone())?;
        let members = peers.clone();
        let allow = Arc::new(move |ip| members.is_member(ip));
        let sized = super::seed_http::SeedLimits::for_fan_out(options.fan_out);
        let (queue, pushes) = std::sync::mpsc::sync_channel(PUSHES_QUEUED);
        let sink: super::seed_http::PushSink =
            Arc::new(move |pushed| queue.try_send(pushed).is_ok());
        let seeder =
            SeedServer::start_taking_pushes(options.seed, &options.root, allow, sized, Some(sink))?;
        Ok(Serving {
            peers,
            tracker,
            seeder,
            pushes,
        })
    }

    pub fn ready(&self) -> Ready {
        Ready {
            tracker: self.tracker.addr(),
            seed: self.seeder.addr(),
        }
    }

    /// Applies each snapshot line of `input` until it ends, then stops both servers; meanwhile
    /// writes each pushed announcement to `output`, a line each. A line that is not a snapshot
    /// is logged and skipped; only a failing read is an error.
    pub fn run(self, mut input: impl BufRead, output: impl Write + Send + 'static) -> Result<()> {
        let pushes = self.pushes;
        // Detached: it ends with the process (or when the agent stops reading, at its first
        // failed write).
        let _ = std::thread::Builder::new()
            .name("serve-pushes".into())
            .spawn(move || hand_on(pushes, output));
        let outcome = loop {
            match next_line(&mut input, MAX_LINE) {
                Ok(None) => break Ok(()),
                Ok(Some(Line::TooLong(len))) => {
                    tracing::warn!(
                        len,
                        max = MAX_LINE,
                        "membership snapshot line too long; skipped"
                    );
                }
                Ok(Some(Line::Text(line))) if line.trim_ascii().is_empty() => {}
                Ok(Some(Line::Text(line))) => {
                    match serde_json::from_slice::<PeersSnapshot>(&line) {
                        Ok(snapshot) => self.peers.apply_snapshot(snapshot),
                        Err(e) => tracing::warn!(
                            len = line.len(),
                            "not a membership snapshot, skipped: {e}"
                        ),
                    }
                }
                Err(e) => break Err(Error::io("reading membership snapshots from", "stdin")(e)),
            }
        };
        tracing::info!("the agent closed stdin; stopping the tracker and the web seed server");
        self.tracker.shutdown();
        self.seeder.shutdown();
        outcome
    }
}

/// Writes each pushed announcement to `output` as a JSON line, until a write fails.
fn hand_on(pushes: std::sync::mpsc::Receiver<super::push::Pushed>, mut output: impl Write) {
    for pushed in pushes {
        let Ok(mut line) = serde_json::to_vec(&pushed) else {
            continue;
        };
        line.push(b'\n');
        if let Err(e) = output.write_all(&line).and_then(|()| output.flush()) {
            tracing::warn!("handing a pushed announcement to the agent: {e}; no more pushes");
            return;
        }
    }
}

/// A line of a pipe between the agent and its serving child ([`next_line`]).
pub(crate) enum Line {
    /// One line without its newline.
    Text(Vec<u8>),
    /// A line over the limit (its length), already skipped.
    TooLong(usize),
}

/// The next `\n`-terminated line (or the rest before EOF); `None` at EOF. Never holds more
/// than `max` + 1 bytes of a line. Both ends of the pipe read it so: the child the agent's
/// snapshots, the agent the child's pushes.
pub(crate) fn next_line(input: &mut impl BufRead, max: usize) -> std::io::Result<Option<Line>> {
    let mut line = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let n = input.by_ref().take(limit).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        return Ok(Some(Line::Text(line)));
    }
    if line.len() <= max {
        // The last line, without a newline before EOF.
        return Ok(Some(Line::Text(line)));
    }
    // Over the limit: drop the rest of the line too.
    let mut skipped = line.len();
    loop {
        let buffer = input.fill_buf()?;
        if buffer.is_empty() {
            break;
        }
        match buffer.iter().position(|&b| b == b'\n') {
            Some(at) => {
                input.consume(at + 1);
                skipped += at;
                break;
            }
            None => {
                let len = buffer.len();
                input.consume(len);
                skipped += len;
            }
        }
    }
    Ok(Some(Line::TooLong(skipped)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{Ipv4Addr, TcpStream};
    use std::time::Duration;

    const QUERY: &str = "info_hash=%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01\
&peer_id=-TR3000-abcdefghijkl&port=51413&uploaded=0&downloaded=0&left=5";

    fn get(url: &str) -> (u16, Vec<u8>) {
        let response = match ureq::get(url).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{url}: {e}"),
        };
        let status = response.status();
        let mut body = Vec::new();
        response.into_reader().read_to_end(&mut body).unwrap();
        (status, body)
    }

    #[test]
    fn snapshots_on_stdin_feed_both_servers_and_eof_stops_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"payload").unwrap();
        let options = ServeOptions {
            tracker: (Ipv4Addr::LOCALHOST, 0).into(),
            seed: (Ipv4Addr::LOCALHOST, 0).into(),
            root: dir.path().to_path_buf(),
            fan_out: 8,
        };
        let serving = Serving::start(&options).unwrap();
        let ready = serving.ready();
        assert_eq!(ready.tracker.ip(), Ipv4Addr::LOCALHOST);
        assert_ne!(ready.tracker.port(), 0, "the bound port, not the asked one");
        let line = serde_json::to_string(&ready).unwrap();
        assert_eq!(serde_json::from_str::<Ready>(&line).unwrap(), ready);

        let (reader, mut writer) = std::io::pipe().unwrap();
        let (pushes, pushes_out) = std::io::pipe().unwrap();
        let (done_tx, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done_tx.send(serving.run(std::io::BufReader::new(reader), pushes_out));
        });
        let announce = format!("{}?{QUERY}", ready.tracker_url());
        let (_, body) = get(&announce);
        assert!(body.windows(8).any(|w| w == b"5:peers0"), "{body:?}");

        // Garbage is skipped, the snapshot after it applies.
        let snapshot = PeersSnapshot {
            members: vec!["10.0.0.2:51413".parse().unwrap()],
            ..PeersSnapshot::default()
        };
        writeln!(writer, "not json\n{{\"members\":1}}\n").unwrap();
        writeln!(writer, "{}", serde_json::to_string(&snapshot).unwrap()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (_, body) = get(&announce);
            if body.windows(9).any(|w| w == b"5:peers6:") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{body:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(get(&format!("{}f", ready.seed_url())).1, b"payload");

        // A member's push comes out on the other pipe, a JSON line; what is not an
        // announcement's text does not.
        let post = |text: &str| {
            let mut stream = TcpStream::connect(ready.seed).unwrap();
            write!(
                stream,
                "POST /push HTTP/1.1\r\nX-P2pu-Announcement: {text}\r\nContent-Length: 0\r\n\r\n"
            )
            .unwrap();
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            answer.lines().next().unwrap_or_default().to_string()
        };
        assert_eq!(post("p2pu-sync:now"), "HTTP/1.1 400 Bad Request");
        assert_eq!(post("p2pu2:abcDEF_-"), "HTTP/1.1 202 Accepted");
        let mut line = String::new();
        std::io::BufReader::new(pushes)
            .read_line(&mut line)
            .unwrap();
        let pushed: super::super::push::Pushed = serde_json::from_str(&line).unwrap();
        assert_eq!(pushed.push, "p2pu2:abcDEF_-");
        assert_eq!(pushed.from.ip(), Ipv4Addr::LOCALHOST);

        // The agent going away (its end of the pipe closing) ends the serving process.
        drop(writer);
        let outcome = done
            .recv_timeout(Duration::from_secs(10))
            .expect("EOF on stdin stops serving");
        assert!(outcome.is_ok(), "{outcome:?}");
        assert!(TcpStream::connect(ready.tracker).is_err(), "tracker closed");
        assert!(
            TcpStream::connect(ready.seed).is_err(),
            "seed server closed"
        );
    }

    #[test]
    fn overlong_lines_are_skipped_whole() {
        let text = format!("{}\nok\nlast", "x".repeat(100));
        let mut input = std::io::BufReader::with_capacity(8, text.as_bytes());
        let mut lines = Vec::new();
        while let Some(line) = next_line(&mut input, 10).unwrap() {
            lines.push(match line {
                Line::Text(t) => String::from_utf8(t).unwrap(),
                Line::TooLong(n) => format!("too long: {n}"),
            });
        }
        assert_eq!(lines, ["too long: 100", "ok", "last"]);
    }
}
