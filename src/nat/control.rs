//! The NAT client's local control socket: a Unix stream socket (default
//! /run/p2pu/control.sock, mode 0660, group p2pu when that group exists) that `p2pu event`
//! talks to. One JSON request line in, one JSON response line out.

use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Longer request lines are refused (an announcement's wire text is under 500 bytes).
const MAX_LINE: u64 = 64 * 1024;
/// How long `p2pu event` waits for an answer: a talkto may take a punching timeout.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    TalkTo {
        node: String,
    },
    /// Send a signed announcement's wire text to every session peer.
    Announce {
        wire: String,
    },
    /// End the session with `node`, or with every peer.
    EndSession {
        node: Option<String>,
    },
    Exit,
    Status,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ClientStatus>,
}

impl Response {
    pub fn ok(message: impl Into<String>) -> Response {
        Response {
            ok: true,
            message: Some(message.into()),
            error: None,
            status: None,
        }
    }

    pub fn error(error: impl Into<String>) -> Response {
        Response {
            ok: false,
            message: None,
            error: Some(error.into()),
            status: None,
        }
    }
}

/// `p2pu event status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientStatus {
    pub node: String,
    pub proxy: SocketAddr,
    pub stun_server: SocketAddr,
    pub local: SocketAddr,
    /// The address the STUN server saw us at, once it answered.
    pub mapped: Option<SocketAddr>,
    /// The address the proxy sees our registrations come from.
    pub proxy_sees: Option<SocketAddr>,
    pub registered: bool,
    /// What this client saw of its NAT: `none`, `endpoint-independent`, `address-dependent
    /// (symmetric)` or `unknown`.
    pub nat: String,
    pub peers: Vec<PeerStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerStatus {
    pub node: String,
    /// `punching`, `direct` or `relayed`.
    pub path: String,
    /// The peer's address on a direct path.
    pub addr: Option<SocketAddr>,
    pub last_heard_secs: u64,
    /// This node's tunnel end for the peer (on its own LAN address): the agent's tracker lists
    /// it as a BitTorrent peer.
    pub tunnel: Option<SocketAddr>,
    /// This node's seed end for the peer: its connections reach the peer's web seed server,
    /// which the agent asks for a metainfo and a payload like any member's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<SocketAddr>,
}

/// A request from the socket, with where its answer goes.
pub struct Incoming {
    pub request: Request,
    pub reply: mpsc::Sender<Response>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no p2pu nat-client is running: nothing listens on {}", path.display())]
    NotRunning {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another p2pu nat-client already listens on {}", path.display())]
    InUse { path: PathBuf },
    #[error("control socket {}: {action}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("control socket {}: bad answer: {reason}", path.display())]
    BadAnswer { path: PathBuf, reason: String },
}

impl crate::error::LayerError for ControlError {}

/// The running control socket: lets the daemon wait for answers still being written before
/// it exits (the answer to `exit` itself, above all).
#[derive(Debug, Clone, Default)]
pub struct Server {
    in_flight: Arc<AtomicUsize>,
}

impl Server {
    /// Waits until no connection is being answered, at most `timeout`.
    pub fn drain(&self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while self.in_flight.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Binds the control socket at `path` (removing a stale one left by a crash) and serves it on
/// a thread, handing each request to `sink`.
pub fn serve(path: &Path, sink: mpsc::Sender<Incoming>) -> Result<Server, ControlError> {
    let io = |action| {
        let path = path.to_path_buf();
        move |source| ControlError::Io {
            action,
            path,
            source,
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating its directory"))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(ControlError::InUse {
                path: path.to_path_buf(),
            });
        }
        std::fs::remove_file(path).map_err(io("removing a stale socket"))?;
    }
    let listener = UnixListener::bind(path).map_err(io("binding"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(io("setting mode 0660"))?;
    // Members of the p2pu group may drive the client; without that group only root can.
    if let Ok(Some(group)) = nix::unistd::Group::from_name("p2pu") {
        if let Err(e) = nix::unistd::chown(path, None, Some(group.gid)) {
            tracing::warn!(path = %path.display(), error = %e, "cannot give the control socket to group p2pu");
        }
    }
    let server = Server::default();
    let in_flight = server.in_flight.clone();
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        in_flight.fetch_add(1, Ordering::SeqCst);
                        if let Err(e) = answer(stream, &sink) {
                            tracing::debug!(error = %e, "control connection failed");
                        }
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                    }
                    Err(e) => tracing::warn!(error = %e, "control socket accept failed"),
                }
            }
        })
        .map_err(io("starting its thread"))?;
    Ok(server)
}

fn answer(stream: UnixStream, sink: &mpsc::Sender<Incoming>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_LINE)).read_line(&mut line)?;
    let response = match serde_json::from_str::<Request>(line.trim()) {
        Err(e) => Response::error(format!("bad request: {e}")),
        Ok(request) => {
            let (reply, answer) = mpsc::channel();
            if sink.send(Incoming { request, reply }).is_err() {
                Response::error("the client is shutting down")
            } else {
                answer
                    .recv_timeout(ANSWER_TIMEOUT)
                    .unwrap_or_else(|_| Response::error("the client did not answer in time"))
            }
        }
    };
    let mut text = serde_json::to_string(&response).map_err(std::io::Error::other)?;
    text.push('\n');
    (&stream).write_all(text.as_bytes())
}

/// Sends `request` to the client listening on `path` and returns its answer.
pub fn request(path: &Path, request: &Request) -> Result<Response, ControlError> {
    let stream = UnixStream::connect(path).map_err(|source| ControlError::NotRunning {
        path: path.to_path_buf(),
        source,
    })?;
    let io = |action| {
        let path = path.to_path_buf();
        move |source| ControlError::Io {
            action,
            path,
            source,
        }
    };
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT + Duration::from_secs(5)))
        .map_err(io("setting a timeout"))?;
    let mut text = serde_json::to_string(request).map_err(|e| ControlError::BadAnswer {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    text.push('\n');
    (&stream)
        .write_all(text.as_bytes())
        .map_err(io("sending the request"))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_LINE))
        .read_line(&mut line)
        .map_err(io("reading the answer"))?;
    serde_json::from_str(line.trim()).map_err(|e| ControlError::BadAnswer {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_answer_over_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/control.sock");
        let (tx, rx) = mpsc::channel::<Incoming>();
        serve(&path, tx).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        std::thread::spawn(move || {
            for incoming in rx {
                let answer = match incoming.request {
                    Request::TalkTo { node } => Response::ok(format!("talking to {node}")),
                    _ => Response::error("no"),
                };
                let _ = incoming.reply.send(answer);
            }
        });
        let answer = request(&path, &Request::TalkTo { node: "b".into() }).unwrap();
        assert_eq!(answer, Response::ok("talking to b"));
        assert!(!request(&path, &Request::Exit).unwrap().ok);
        // A second server on the same path is refused while the first lives.
        let (tx2, _rx2) = mpsc::channel::<Incoming>();
        assert!(matches!(serve(&path, tx2), Err(ControlError::InUse { .. })));
    }

    #[test]
    fn no_client_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let error = request(&path, &Request::Status).unwrap_err();
        assert!(error
            .to_string()
            .starts_with("no p2pu nat-client is running"));
    }

    #[test]
    fn requests_are_one_json_line() {
        let text = serde_json::to_string(&Request::EndSession { node: None }).unwrap();
        assert_eq!(text, r#"{"cmd":"end_session","node":null}"#);
    }
}
