//! Serf's RPC (TCP to `rpc_addr`), one connection a request: handshake, `auth`, then
//! `members`, `event`, `join`, `tags` or a query. A query lists the alive members, then sends
//! `query`, whose answers stream in as Serf receives them; it ends as soon as every member
//! alive when it began answered, or at its timeout, by closing the connection. `serf query
//! -format=json` prints only at the timeout, and its text output cannot be read early
//! safely: a member chooses its answer, and newlines in it could forge another member's line.
//! The framing and the records are `formats::serf_rpc`'s; this module owns the socket, the
//! deadlines and the errors.
//!
//! Serf's RPC authenticates the client only: whatever listens on `rpc_addr` gets the key in
//! `auth`. Port 7373 is not privileged, so while Serf is down (a restart, a crash, boot) any
//! local user (`debian-transmission` among them) can listen there, take the key (which buys
//! Serf's `list-keys`, the fleet's gossip keyring) and answer queries as the whole fleet.
//! Before sending anything the client therefore checks, on the connection itself, that the
//! socket it reached belongs to root (Debian's serf.service) or to this process's own user.

use super::SerfError;
use crate::formats::serf_rpc::{
    self, collect_query, read_header, read_object, Collector, Object, RpcError,
};
use std::io::{self, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// How long past the query's timeout its `done` may take to arrive (Serf starts its clock
/// when it gets the request, a little after ours).
const DONE_GRACE: Duration = Duration::from_millis(300);

/// A deadline no query reaches (a century).
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How long the kernel may take to list the accepted end of a fresh loopback connection.
const LISTED_WITHIN: Duration = Duration::from_millis(200);

/// The sequence numbers of the two requests every connection starts with; the next ones
/// count up from [`SEQ_FIRST`].
const SEQ_HANDSHAKE: u64 = 0;
const SEQ_AUTH: u64 = 1;
const SEQ_FIRST: u64 = 2;

/// The agent at `addr`, authenticated with `auth`: `setup` bounds connecting and each step
/// (for a join, the whole join).
pub(super) struct Rpc<'a> {
    pub addr: &'a str,
    pub auth: Option<&'a str>,
    pub setup: Duration,
}

/// One connection past its handshake and `auth`: requests numbered from [`SEQ_FIRST`].
struct Session<'r> {
    rpc: &'r Rpc<'r>,
    stream: TcpStream,
    reader: BufReader<Deadline>,
    seq: u64,
}

impl<'r> Session<'r> {
    /// Sends `command` with `body` and reads its reply header within `within`; returns the
    /// request's sequence number.
    fn call<B: serde::Serialize>(
        &mut self,
        command: &'static str,
        body: Option<&B>,
        within: Duration,
        what: &'static str,
    ) -> Result<u64, SerfError> {
        let seq = self.seq;
        self.seq += 1;
        self.send(command, seq, body)?;
        self.reader.get_mut().at = deadline(within);
        read_header(&mut self.reader, seq, command)
            .map_err(|source| self.rpc.failed(what, source))?;
        Ok(seq)
    }

    fn send<B: serde::Serialize>(
        &self,
        command: &'static str,
        seq: u64,
        body: Option<&B>,
    ) -> Result<(), SerfError> {
        (&self.stream)
            .write_all(&serf_rpc::request(command, seq, body))
            .map_err(|source| SerfError::RpcIo {
                addr: self.rpc.addr.to_owned(),
                what: command,
                source,
            })
    }

    /// The reply's body, kept up to `limit` bytes.
    fn body(&mut self, limit: usize, what: &'static str) -> Result<Vec<u8>, SerfError> {
        match read_object(&mut self.reader, limit) {
            Ok(Object::Kept(bytes)) => Ok(bytes),
            Ok(Object::Skipped { .. }) => Err(RpcError::Oversize { what, limit }),
            Err(e) => Err(e),
        }
        .map_err(|source| self.rpc.failed(what, source))
    }

    /// The members Serf lists (`members`, or `members-filtered` by status).
    fn members(&mut self, status: Option<&str>) -> Result<Vec<u8>, SerfError> {
        const WHAT: &str = "listing the members";
        match status {
            Some(status) => self.call(
                serf_rpc::MEMBERS_FILTERED,
                Some(&serf_rpc::MembersFiltered { status }),
                self.rpc.setup,
                WHAT,
            )?,
            None => self.call::<()>(serf_rpc::MEMBERS, None, self.rpc.setup, WHAT)?,
        };
        self.body(serf_rpc::MAX_MEMBERS_BYTES, WHAT)
    }
}

/// `within` from now; a duration past what `Instant` holds (`fleet status --timeout 1e19`)
/// waits for good.
fn deadline(within: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(within).unwrap_or_else(|| now + FOREVER)
}

impl Rpc<'_> {
    /// Connects, checks who listens, shakes hands and authenticates.
    fn open(&self) -> Result<Session<'_>, SerfError> {
        let stream = self.connect()?;
        self.check_listener(&stream)?;
        let reader = stream.try_clone().map_err(|source| SerfError::RpcIo {
            addr: self.addr.to_owned(),
            what: "connecting",
            source,
        })?;
        let mut session = Session {
            rpc: self,
            stream,
            reader: BufReader::new(Deadline {
                stream: reader,
                at: deadline(self.setup),
            }),
            seq: SEQ_HANDSHAKE,
        };
        session.call(
            serf_rpc::HANDSHAKE,
            Some(&serf_rpc::Handshake {
                version: serf_rpc::IPC_VERSION,
            }),
            self.setup,
            "the handshake",
        )?;
        if let Some(auth_key) = self.auth {
            session.seq = SEQ_AUTH;
            session.call(
                serf_rpc::AUTH,
                Some(&serf_rpc::Auth { auth_key }),
                self.setup,
                "authenticating",
            )?;
        }
        session.seq = SEQ_FIRST;
        Ok(session)
    }

    /// Every member the agent knows, in any state; the second value counts those left out
    /// for an unreadable address ([`serf_rpc::members`]).
    pub fn members(&self) -> Result<(Vec<serf_rpc::Member>, usize), SerfError> {
        let reply = self.open()?.members(None)?;
        serf_rpc::members(&reply).map_err(|source| self.failed("listing the members", source))
    }

    /// Broadcasts user event `name` (Serf refuses one past `user_event_size_limit`).
    pub fn event(&self, name: &str, payload: &[u8], coalesce: bool) -> Result<(), SerfError> {
        self.open()?.call(
            serf_rpc::EVENT,
            Some(&serf_rpc::EventRequest {
                name,
                payload,
                coalesce,
            }),
            self.setup,
            "sending the event",
        )?;
        Ok(())
    }

    /// Joins the agents at `addrs`; fails when none answered (Serf's own error).
    pub fn join(&self, addrs: &[String], replay: bool) -> Result<(), SerfError> {
        self.open()?.call(
            serf_rpc::JOIN,
            Some(&serf_rpc::JoinRequest {
                existing: addrs,
                replay,
            }),
            self.setup,
            "joining",
        )?;
        Ok(())
    }

    /// Sets tag `key` to `value`, keeping the others.
    pub fn set_tag(&self, key: &str, value: &str) -> Result<(), SerfError> {
        self.open()?.call(
            serf_rpc::TAGS,
            Some(&serf_rpc::TagsRequest {
                tags: [(key, value)].into(),
                delete_tags: &[],
            }),
            self.setup,
            "setting a tag",
        )?;
        Ok(())
    }

    /// Sends query `name` and returns `(node, answer)` sorted by node, once every member alive
    /// when it began answered or at `timeout`.
    pub fn query(
        &self,
        name: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<(String, String)>, SerfError> {
        let mut session = self.open()?;
        let alive = session.members(Some("alive"))?;
        let alive = serf_rpc::member_names(&alive)
            .map_err(|source| self.failed("listing the alive members", source))?;
        // Serf reads 0 as "its default"; Go's durations are nanoseconds.
        let nanos = i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX).max(1);
        let seq = session.call(
            serf_rpc::QUERY,
            Some(&serf_rpc::QueryRequest {
                request_ack: false,
                timeout: nanos,
                name,
                payload,
            }),
            timeout.saturating_add(DONE_GRACE),
            "sending the query",
        )?;
        let mut collector = Collector::new(alive);
        let ending = collect_query(&mut session.reader, seq, &mut collector);
        match ending {
            Ok(_) => {}
            // Serf's `done` did not come by the deadline: the query ran its time.
            Err(RpcError::Read(e)) if is_timeout(&e) => {}
            Err(source) => return Err(self.failed("reading the query's answers", source)),
        }
        if collector.dropped > 0 {
            tracing::debug!(
                query = name,
                dropped = collector.dropped,
                "query: answers dropped (duplicates, strangers past the cap, oversize)"
            );
        }
        // Dropping the session closes the connection: Serf stops streaming this query.
        drop(session);
        Ok(collector.into_answers())
    }

    fn connect(&self) -> Result<TcpStream, SerfError> {
        let io_failed = |what: &'static str| {
            move |source: io::Error| SerfError::RpcIo {
                addr: self.addr.to_owned(),
                what,
                source,
            }
        };
        let target = self
            .addr
            .to_socket_addrs()
            .map_err(io_failed("resolving its address"))?
            .next()
            .ok_or_else(|| {
                io_failed("resolving its address")(io::Error::new(
                    io::ErrorKind::NotFound,
                    "no address",
                ))
            })?;
        let stream = TcpStream::connect_timeout(&target, self.setup).map_err(|e| {
            if e.kind() == io::ErrorKind::ConnectionRefused {
                SerfError::Refused {
                    addr: self.addr.to_owned(),
                }
            } else {
                io_failed("connecting")(e)
            }
        })?;
        stream
            .set_write_timeout(Some(self.setup))
            .map_err(io_failed("connecting"))?;
        // Small requests, each waited on: no reason to let Nagle hold them.
        stream.set_nodelay(true).map_err(io_failed("connecting"))?;
        Ok(stream)
    }

    /// Refuses a listener owned by anyone but root or this process's user (see the header),
    /// before the key goes out.
    fn check_listener(&self, stream: &TcpStream) -> Result<(), SerfError> {
        let io_failed = |source: io::Error| SerfError::RpcIo {
            addr: self.addr.to_owned(),
            what: "checking who listens",
            source,
        };
        let (local, peer) = (
            stream.local_addr().map_err(io_failed)?,
            stream.peer_addr().map_err(io_failed)?,
        );
        // Asked in the calling thread's own namespace: a thread that entered a network
        // namespace (the lab's nodes) finds its connection there.
        let uid = super::sock_owner::far_owner(
            &super::sock_owner::established_owner,
            local,
            peer,
            LISTED_WITHIN,
        )
        .map_err(io_failed)?;
        let me = nix::unistd::geteuid().as_raw();
        match uid {
            Some(uid) if uid == 0 || uid == me => Ok(()),
            uid => Err(SerfError::RpcNotSerf {
                addr: self.addr.to_owned(),
                uid,
            }),
        }
    }

    /// Serf's own refusals of the key say what to fix; the rest name the step.
    fn failed(&self, what: &'static str, source: RpcError) -> SerfError {
        let addr = self.addr.to_owned();
        match &source {
            RpcError::Refused { error, .. } if error == serf_rpc::INVALID_AUTH_TOKEN => {
                SerfError::RpcAuth { addr }
            }
            RpcError::Refused { error, .. } if error == serf_rpc::AUTH_REQUIRED => {
                SerfError::RpcAuthRequired { addr }
            }
            _ => SerfError::Rpc { addr, what, source },
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// Reads from `stream` until `at`, then fails with `TimedOut`.
struct Deadline {
    stream: TcpStream,
    at: Instant,
}

impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the deadline passed",
            ));
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

#[cfg(test)]
mod tests {
    //! Against a fake agent: a listener on port 0 that speaks the protocol from a script.
    use super::*;
    use serde::{Deserialize, Serialize};
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::thread;

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct RequestHeader {
        command: String,
        seq: u64,
    }

    /// The fake agent's side of one connection.
    struct Conn {
        reader: BufReader<TcpStream>,
        writer: TcpStream,
    }

    impl Conn {
        /// Reads the next request; returns its command, seq and body (every command p2pu
        /// sends has one).
        fn next(&mut self) -> Option<(String, u64, Vec<u8>)> {
            let Ok(Object::Kept(head)) = read_object(&mut self.reader, 4096) else {
                return None;
            };
            let head: RequestHeader = rmp_serde::from_slice(&head).ok()?;
            let Ok(Object::Kept(body)) = read_object(&mut self.reader, 1 << 20) else {
                return None;
            };
            Some((head.command, head.seq, body))
        }

        fn reply(&mut self, seq: u64, error: &str) {
            #[derive(Serialize)]
            #[serde(rename_all = "PascalCase")]
            struct H<'a> {
                seq: u64,
                error: &'a str,
            }
            let bytes = rmp_serde::to_vec_named(&H { seq, error }).unwrap_or_default();
            let _ = self.writer.write_all(&bytes);
        }

        fn members(&mut self, seq: u64, names: &[&str]) {
            #[derive(Serialize)]
            #[serde(rename_all = "PascalCase")]
            struct M<'a> {
                name: &'a str,
                status: &'a str,
                #[serde(with = "serde_bytes")]
                addr: &'a [u8],
            }
            #[derive(Serialize)]
            #[serde(rename_all = "PascalCase")]
            struct Reply<'a> {
                members: Vec<M<'a>>,
            }
            self.reply(seq, "");
            let members = names
                .iter()
                .map(|name| M {
                    name,
                    status: "alive",
                    addr: &[127, 0, 0, 1],
                })
                .collect();
            let bytes = rmp_serde::to_vec_named(&Reply { members }).unwrap_or_default();
            let _ = self.writer.write_all(&bytes);
        }

        fn record(&mut self, seq: u64, kind: &str, from: &str, payload: &[u8]) {
            #[derive(Serialize)]
            #[serde(rename_all = "PascalCase")]
            struct R<'a> {
                #[serde(rename = "Type")]
                kind: &'a str,
                from: &'a str,
                #[serde(with = "serde_bytes")]
                payload: &'a [u8],
            }
            self.reply(seq, "");
            let bytes = rmp_serde::to_vec_named(&R {
                kind,
                from,
                payload,
            })
            .unwrap_or_default();
            let _ = self.writer.write_all(&bytes);
        }

        /// The handshake, auth with `key`, and the members list, as a healthy agent answers.
        fn setup(&mut self, key: &str, alive: &[&str]) -> Option<u64> {
            let (command, seq, _) = self.next()?;
            assert_eq!(command, "handshake");
            self.reply(seq, "");
            let (command, seq, body) = self.next()?;
            assert_eq!(command, "auth");
            assert!(String::from_utf8_lossy(&body).contains(key));
            self.reply(seq, "");
            let (command, seq, _) = self.next()?;
            assert_eq!(command, "members-filtered");
            self.members(seq, alive);
            let (command, seq, _) = self.next()?;
            assert_eq!(command, "query");
            self.reply(seq, "");
            Some(seq)
        }

        /// Whether the client closed the connection (a read sees the end).
        fn closed_by_client(&mut self) -> bool {
            let mut byte = [0u8; 1];
            self.writer
                .set_read_timeout(Some(Duration::from_secs(10)))
                .ok();
            matches!(self.reader.read(&mut byte), Ok(0))
        }
    }

    /// A fake agent running `script` on its first connection; its result comes back on the
    /// channel.
    fn fake<T: Send + 'static>(
        script: impl FnOnce(&mut Conn) -> T + Send + 'static,
    ) -> (String, mpsc::Receiver<T>) {
        let listener = match TcpListener::bind("127.0.0.1:0") {
            Ok(l) => l,
            Err(e) => panic!("binding the fake agent: {e}"),
        };
        fake_on(listener, None, script)
    }

    /// `fsuid`: the filesystem uid its thread accepts with, which the kernel then records as
    /// the owner of the accepted socket (before the accept, the listener's).
    fn fake_on<T: Send + 'static>(
        listener: TcpListener,
        fsuid: Option<u32>,
        script: impl FnOnce(&mut Conn) -> T + Send + 'static,
    ) -> (String, mpsc::Receiver<T>) {
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            if let Some(fsuid) = fsuid {
                // SAFETY: setfsuid changes this thread's filesystem uid only.
                unsafe { nix::libc::setfsuid(fsuid) };
            }
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let Ok(writer) = stream.try_clone() else {
                return;
            };
            let mut conn = Conn {
                reader: BufReader::new(stream),
                writer,
            };
            let _ = tx.send(script(&mut conn));
        });
        (addr, rx)
    }

    fn rpc<'a>(addr: &'a str, key: Option<&'static str>) -> Rpc<'a> {
        Rpc {
            addr,
            auth: key,
            setup: Duration::from_secs(10),
        }
    }

    #[test]
    fn a_query_returns_once_every_alive_member_answered_and_closes_the_connection() {
        let (addr, closed) = fake(|conn| {
            let seq = conn.setup("k3y", &["a", "b", "c"])?;
            conn.record(seq, "ack", "b", b"");
            conn.record(seq, "response", "c", b"from c");
            conn.record(seq, "response", "a", b"from a\nResponse from 'b': forged");
            conn.record(seq, "response", "b", b"from b");
            // No `done`: the client must end it.
            Some(conn.closed_by_client())
        });
        let started = Instant::now();
        let answers = rpc(&addr, Some("k3y")).query("ping", b"x", Duration::from_secs(20));
        assert!(started.elapsed() < Duration::from_secs(20));
        assert_eq!(
            answers.ok(),
            Some(vec![
                (
                    "a".to_owned(),
                    "from a\nResponse from 'b': forged".to_owned()
                ),
                ("b".to_owned(), "from b".to_owned()),
                ("c".to_owned(), "from c".to_owned()),
            ])
        );
        assert_eq!(closed.recv().ok().flatten(), Some(true));
    }

    #[test]
    fn a_silent_member_makes_the_query_run_to_its_timeout_with_the_answers_in() {
        let (addr, _done) = fake(|conn| {
            let seq = conn.setup("k3y", &["a", "silent"])?;
            conn.record(seq, "response", "a", b"from a");
            // Neither `silent`'s answer nor `done`: the client's deadline ends it.
            Some(conn.closed_by_client())
        });
        let started = Instant::now();
        let answers = rpc(&addr, Some("k3y")).query("ping", b"", Duration::from_millis(300));
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(
            answers.ok(),
            Some(vec![("a".to_owned(), "from a".to_owned())])
        );
    }

    #[test]
    fn serfs_done_ends_the_query_and_an_oversize_answer_is_dropped() {
        let (addr, _done) = fake(|conn| {
            let seq = conn.setup("k3y", &["a", "big", "c"])?;
            conn.record(
                seq,
                "response",
                "big",
                &vec![b'x'; serf_rpc::MAX_RECORD_BYTES],
            );
            conn.record(seq, "response", "a", b"from a");
            conn.record(seq, "done", "", b"");
            Some(conn.closed_by_client())
        });
        let answers = rpc(&addr, Some("k3y")).query("ping", b"", Duration::from_secs(20));
        assert_eq!(
            answers.ok(),
            Some(vec![("a".to_owned(), "from a".to_owned())])
        );
    }

    /// A local user's listener on the RPC port while Serf is down: the sockets are made by
    /// threads whose filesystem uid (what the kernel records as a socket's owner) is
    /// nobody's; everything else answers as a healthy agent would, with forged answers. What
    /// it heard comes back.
    fn squatter() -> (String, mpsc::Receiver<Vec<String>>) {
        let listener = thread::spawn(|| {
            // SAFETY: setfsuid changes this short-lived thread's filesystem uid only.
            unsafe { nix::libc::setfsuid(65534) };
            TcpListener::bind("127.0.0.1:0")
        })
        .join();
        let Ok(Ok(listener)) = listener else {
            panic!("binding the squatter");
        };
        fake_on(listener, Some(65534), |conn| {
            let mut heard = Vec::new();
            while let Some((command, seq, body)) = conn.next() {
                match command.as_str() {
                    "members-filtered" => conn.members(seq, &["a"]),
                    "query" => {
                        conn.reply(seq, "");
                        conn.record(seq, "response", "a", b"forged");
                    }
                    _ => conn.reply(seq, ""),
                }
                heard.push(String::from_utf8_lossy(&body).into_owned());
            }
            heard
        })
    }

    #[test]
    fn a_port_squatter_of_another_user_gets_no_key_and_answers_nothing() {
        let (addr, heard) = squatter();
        match rpc(&addr, Some("k3y")).query("ping", b"", Duration::from_secs(5)) {
            Err(
                err @ SerfError::RpcNotSerf {
                    uid: Some(65534), ..
                },
            ) => {
                assert!(!err.to_string().contains("k3y"), "{err}")
            }
            other => panic!("want RpcNotSerf, got {other:?}"),
        }
        let heard = heard.recv().unwrap_or_default();
        assert!(heard.is_empty(), "the squatter heard {heard:?}");
    }

    /// Every request opens its connection through the same check: none hands a squatter the
    /// key (the `serf` CLI these replaced sent it to whatever listened).
    #[test]
    fn no_request_hands_a_port_squatter_the_key() {
        use crate::engines::serf::{Gossip, JoinEvents, Serf};
        type Request = fn(&Serf) -> Result<(), SerfError>;
        let requests: [(&str, Request); 4] = [
            ("event", |s| s.user_event("p2pu-update", b"x", false)),
            ("members", |s| s.members().map(drop)),
            ("join", |s| {
                s.join(&["10.0.0.1:7946".into()], JoinEvents::Replay)
            }),
            ("tags", |s| s.set_tag("p2pu-rate", "1")),
        ];
        for (what, request) in requests {
            let (addr, heard) = squatter();
            let serf = Serf::new(addr).with_auth(Some("k3y".into()));
            match request(&serf) {
                Err(SerfError::RpcNotSerf {
                    uid: Some(65534), ..
                }) => {}
                other => panic!("{what}: want RpcNotSerf, got {other:?}"),
            }
            drop(serf);
            let heard = heard.recv().unwrap_or_default();
            assert!(heard.is_empty(), "{what}: the squatter heard {heard:?}");
        }
    }

    #[test]
    fn a_timeout_past_what_an_instant_holds_waits_instead_of_panicking() {
        let (addr, _done) = fake(|conn| {
            let seq = conn.setup("k3y", &["a"])?;
            conn.record(seq, "response", "a", b"from a");
            Some(conn.closed_by_client())
        });
        let answers = rpc(&addr, Some("k3y")).query("ping", b"", Duration::MAX);
        assert_eq!(
            answers.ok(),
            Some(vec![("a".to_owned(), "from a".to_owned())])
        );
    }

    /// A Serf (or whatever holds its port) that takes a join and never answers it: the join
    /// fails once its setup time is up, so neither `submit`'s clock catch-up nor the agent
    /// waits on it for good. (The check runs the join on a thread; 60 s is a hang, not a
    /// measured bound.)
    #[test]
    fn a_join_that_serf_never_answers_fails_instead_of_hanging() {
        let (addr, _done) = fake(|conn| {
            let (_, seq, _) = conn.next()?;
            conn.reply(seq, "");
            let (_, seq, _) = conn.next()?;
            conn.reply(seq, "");
            let (command, _, _) = conn.next()?;
            assert_eq!(command, "join");
            // Never answered: held open (past the hang check below) until the client gives up.
            conn.writer
                .set_read_timeout(Some(Duration::from_secs(120)))
                .ok();
            let mut byte = [0u8; 1];
            Some(matches!(conn.reader.read(&mut byte), Ok(0)))
        });
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let rpc = Rpc {
                addr: &addr,
                auth: Some("k3y"),
                setup: Duration::from_millis(300),
            };
            let _ = tx.send(rpc.join(&["10.0.0.1:7946".into()], true));
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Err(SerfError::Rpc { what, .. })) => assert_eq!(what, "joining"),
            other => panic!("want a failed join, got {other:?}"),
        }
    }

    #[test]
    fn a_wrong_key_says_so_without_echoing_it() {
        let (addr, _done) = fake(|conn| {
            let (_, seq, _) = conn.next()?;
            conn.reply(seq, "");
            let (_, seq, _) = conn.next()?;
            conn.reply(seq, serf_rpc::INVALID_AUTH_TOKEN);
            Some(())
        });
        match rpc(&addr, Some("guessed-key")).query("ping", b"", Duration::from_secs(20)) {
            Err(err @ SerfError::RpcAuth { .. }) => {
                let text = err.to_string();
                assert!(text.contains(&addr), "{text}");
                assert!(text.contains("rpc_auth"), "{text}");
                assert!(!text.contains("guessed-key"), "{text}");
            }
            other => panic!("want RpcAuth, got {other:?}"),
        }
    }

    #[test]
    fn no_key_where_one_is_required_says_so() {
        let (addr, _done) = fake(|conn| {
            let (_, seq, _) = conn.next()?;
            conn.reply(seq, "");
            let (_, seq, _) = conn.next()?;
            conn.reply(seq, serf_rpc::AUTH_REQUIRED);
            Some(())
        });
        assert!(matches!(
            rpc(&addr, None).query("ping", b"", Duration::from_secs(20)),
            Err(SerfError::RpcAuthRequired { .. })
        ));
    }

    #[test]
    fn a_failed_handshake_names_the_step() {
        let (addr, _done) = fake(|conn| {
            let (_, seq, _) = conn.next()?;
            conn.reply(seq, "Unsupported IPC version");
            Some(())
        });
        match rpc(&addr, None).query("ping", b"", Duration::from_secs(20)) {
            Err(err @ SerfError::Rpc { .. }) => {
                let text = crate::error::chain(&err);
                assert!(text.contains("the handshake"), "{text}");
                assert!(text.contains("Unsupported IPC version"), "{text}");
            }
            other => panic!("want Rpc, got {other:?}"),
        }
    }

    #[test]
    fn no_agent_says_serf_refuses_connections_and_what_to_check() {
        let addr = match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            Ok(a) => a.to_string(),
            Err(e) => panic!("{e}"),
        };
        match rpc(&addr, None).query("ping", b"", Duration::from_secs(1)) {
            Err(err @ SerfError::Refused { .. }) => assert_eq!(
                err.to_string(),
                format!("Serf's RPC at {addr} refuses connections: is serf.service running? (systemctl status serf)")
            ),
            other => panic!("want Refused, got {other:?}"),
        }
    }
}
