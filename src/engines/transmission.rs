//! Client for the Transmission 3.00 daemon's JSON RPC (RPC version 16) over HTTP: the CSRF
//! session-id handshake, basic auth, bounded retry while the daemon is starting, and typed
//! results. Torrents are always named by their info-hash hex, never by the daemon's numeric id,
//! which is reassigned on every daemon start.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// The header Transmission uses against CSRF: a 409 answer carries the id to resend with.
const SESSION_HEADER: &str = "X-Transmission-Session-Id";

/// What p2pu asks of a BitTorrent engine. Every torrent is named by its lowercase 40-hex
/// info-hash.
pub trait TorrentEngine: Send + Sync {
    /// The daemon's version and default download directory.
    fn session_get(&self) -> Result<Session, TransmissionError>;
    /// Adds a magnet link; adding one that is already there is not an error (`duplicate`).
    fn add_magnet(
        &self,
        magnet: &str,
        download_dir: Option<&Path>,
        paused: bool,
    ) -> Result<Added, TransmissionError>;
    /// Adds a .torrent file's bytes; adding one that is already there is not an error.
    fn add_metainfo(
        &self,
        metainfo: &[u8],
        download_dir: Option<&Path>,
        paused: bool,
    ) -> Result<Added, TransmissionError>;
    /// The status of the named torrents that the daemon has (unknown hashes are left out).
    fn get(&self, hashes: &[String]) -> Result<Vec<TorrentStatus>, TransmissionError>;
    fn start(&self, hash: &str) -> Result<(), TransmissionError>;
    fn stop(&self, hash: &str) -> Result<(), TransmissionError>;
    /// Re-checks the local data against the piece hashes.
    fn verify(&self, hash: &str) -> Result<(), TransmissionError>;
    fn remove(&self, hash: &str, delete_local_data: bool) -> Result<(), TransmissionError>;
}

#[derive(Debug, thiserror::Error)]
pub enum TransmissionError {
    #[error("Transmission RPC at {url} is unreachable (after {attempts} attempt(s))")]
    Unreachable {
        url: String,
        attempts: u32,
        #[source]
        source: Box<ureq::Transport>,
    },
    // The password is deliberately not a field: nothing here may print it.
    #[error("Transmission RPC at {url} refused the credentials of user {user:?} (HTTP 401)")]
    Unauthorized { url: String, user: String },
    #[error("Transmission RPC at {url} requires credentials and none are configured (HTTP 401)")]
    CredentialsRequired { url: String },
    #[error("Transmission RPC at {url} answered `{method}` with HTTP {status}: {body}")]
    Http {
        url: String,
        method: &'static str,
        status: u16,
        body: String,
    },
    #[error("Transmission RPC `{method}` failed: {result}")]
    Rpc {
        method: &'static str,
        result: String,
    },
    #[error("Transmission RPC at {url} sent a malformed answer to `{method}`: {reason}")]
    Malformed {
        url: String,
        method: &'static str,
        reason: String,
    },
    #[error("{value:?} is not a BitTorrent v1 info-hash (want 40 hex digits)")]
    InvalidHash { value: String },
    #[error("download directory {} is not UTF-8, which the RPC cannot carry", path.display())]
    NonUtf8Path { path: PathBuf },
}

impl crate::error::LayerError for TransmissionError {}

/// User name and password for the RPC's basic auth. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How long to keep trying while the daemon refuses connections (it is starting or
/// restarting); other failures are never retried, 401 least of all: after 100 failed logins
/// Transmission 3.00 answers every request, right password included, with 403 "Too many
/// unsuccessful login attempts" until it is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Total attempts, at least 1.
    pub attempts: u32,
    /// Pause after the first refusal; doubles after each further one.
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Retry {
    /// One attempt: fail at the first refusal.
    pub fn none() -> Retry {
        Retry {
            attempts: 1,
            first_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
        }
    }
}

impl Default for Retry {
    /// Five attempts over about 1.5 s: covers a daemon that is a moment from listening.
    fn default() -> Retry {
        Retry {
            attempts: 5,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// e.g. `3.00 (bb6b5a062e)`.
    pub version: String,
    pub rpc_version: u32,
    pub download_dir: PathBuf,
}

/// The answer to an add: the torrent the daemon now has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// The daemon's id for it; valid only until the daemon restarts.
    pub id: i64,
    pub hash_string: String,
    pub name: String,
    /// The daemon already had this torrent.
    pub duplicate: bool,
}

/// Transmission's `tr_torrent_activity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorrentState {
    Stopped,
    CheckWait,
    Checking,
    DownloadWait,
    Downloading,
    SeedWait,
    Seeding,
    Unknown(i64),
}

impl From<i64> for TorrentState {
    fn from(code: i64) -> TorrentState {
        match code {
            0 => TorrentState::Stopped,
            1 => TorrentState::CheckWait,
            2 => TorrentState::Checking,
            3 => TorrentState::DownloadWait,
            4 => TorrentState::Downloading,
            5 => TorrentState::SeedWait,
            6 => TorrentState::Seeding,
            other => TorrentState::Unknown(other),
        }
    }
}

/// One torrent as `torrent-get` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct TorrentStatus {
    pub hash_string: String,
    pub name: String,
    pub status: TorrentState,
    /// 0.0 ..= 1.0 of the wanted data.
    pub percent_done: f64,
    pub left_until_done: u64,
    pub size_when_done: u64,
    pub total_size: u64,
    /// 0 none, 1 tracker warning, 2 tracker error, 3 local error (e.g. data missing).
    pub error: i64,
    pub error_string: String,
    pub download_dir: PathBuf,
    /// Seeding reached its ratio or idle limit; not "download complete" (see `left_until_done`).
    pub is_finished: bool,
    /// 0.0 ..= 1.0; below 1 a magnet is still fetching the info dictionary.
    pub metadata_percent_complete: f64,
    pub peers_connected: u64,
    /// Bytes per second.
    pub rate_download: u64,
}

impl TorrentStatus {
    /// All wanted data is present and checked.
    pub fn is_complete(&self) -> bool {
        self.metadata_percent_complete >= 1.0 && self.left_until_done == 0
    }
}

/// The fields `get` asks for, in the names the RPC uses.
const STATUS_FIELDS: [&str; 14] = [
    "hashString",
    "name",
    "status",
    "percentDone",
    "leftUntilDone",
    "sizeWhenDone",
    "totalSize",
    "error",
    "errorString",
    "downloadDir",
    "isFinished",
    "metadataPercentComplete",
    "peersConnected",
    "rateDownload",
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStatus {
    hash_string: String,
    name: String,
    status: i64,
    percent_done: f64,
    left_until_done: u64,
    size_when_done: u64,
    total_size: u64,
    error: i64,
    error_string: String,
    download_dir: PathBuf,
    is_finished: bool,
    metadata_percent_complete: f64,
    peers_connected: u64,
    rate_download: u64,
}

impl From<RawStatus> for TorrentStatus {
    fn from(raw: RawStatus) -> TorrentStatus {
        TorrentStatus {
            hash_string: raw.hash_string,
            name: raw.name,
            status: raw.status.into(),
            percent_done: raw.percent_done,
            left_until_done: raw.left_until_done,
            size_when_done: raw.size_when_done,
            total_size: raw.total_size,
            error: raw.error,
            error_string: raw.error_string,
            download_dir: raw.download_dir,
            is_finished: raw.is_finished,
            metadata_percent_complete: raw.metadata_percent_complete,
            peers_connected: raw.peers_connected,
            rate_download: raw.rate_download,
        }
    }
}

#[derive(Deserialize)]
struct RawAdded {
    id: i64,
    name: String,
    #[serde(rename = "hashString")]
    hash_string: String,
}

#[derive(Deserialize)]
struct RawSession {
    version: String,
    #[serde(rename = "rpc-version")]
    rpc_version: u32,
    #[serde(rename = "download-dir")]
    download_dir: PathBuf,
}

#[derive(Deserialize)]
struct RawReply {
    result: String,
    #[serde(default)]
    arguments: Map<String, Value>,
}

/// A Transmission daemon reached over HTTP.
pub struct Transmission {
    url: String,
    credentials: Option<Credentials>,
    retry: Retry,
    agent: ureq::Agent,
    /// The last CSRF id the daemon handed out; shared by all calls on this client.
    session_id: Mutex<Option<String>>,
}

impl fmt::Debug for Transmission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transmission")
            .field("url", &self.url)
            .field("credentials", &self.credentials)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl Transmission {
    /// A client for the RPC endpoint `url` (e.g. `http://127.0.0.1:9091/transmission/rpc`),
    /// with the default retry and a 30 s limit per request.
    pub fn new(url: impl Into<String>, credentials: Option<Credentials>) -> Transmission {
        Transmission {
            url: url.into(),
            credentials,
            retry: Retry::default(),
            agent: Self::agent(Duration::from_secs(30)),
            session_id: Mutex::new(None),
        }
    }

    /// The RPC endpoint of a daemon listening on `127.0.0.1:port` at the default path.
    pub fn local_url(port: u16) -> String {
        format!("http://127.0.0.1:{port}/transmission/rpc")
    }

    pub fn with_retry(mut self, retry: Retry) -> Transmission {
        self.retry = Retry {
            attempts: retry.attempts.max(1),
            ..retry
        };
        self
    }

    /// Limit for one HTTP request (connect, send and read).
    pub fn with_timeout(mut self, timeout: Duration) -> Transmission {
        self.agent = Self::agent(timeout);
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn agent(timeout: Duration) -> ureq::Agent {
        ureq::AgentBuilder::new()
            .timeout_connect(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .build()
    }

    /// Sends one RPC and returns its reply whatever its `result` says.
    fn call_raw(
        &self,
        method: &'static str,
        arguments: Value,
    ) -> Result<RawReply, TransmissionError> {
        let body = json!({ "method": method, "arguments": arguments }).to_string();
        let authorization = self.credentials.as_ref().map(|c| {
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", c.user, c.password));
            format!("Basic {token}")
        });
        let mut attempt = 0;
        let mut delay = self.retry.first_delay;
        let mut conflicts = 0;
        loop {
            attempt += 1;
            let mut request = self
                .agent
                .post(&self.url)
                .set("Content-Type", "application/json");
            if let Some(value) = &authorization {
                request = request.set("Authorization", value);
            }
            let session_id = self.current_session_id();
            if let Some(id) = &session_id {
                request = request.set(SESSION_HEADER, id);
            }
            match request.send_string(&body) {
                Ok(response) => return self.parse_reply(method, response),
                Err(ureq::Error::Status(409, response)) => {
                    conflicts += 1;
                    let Some(id) = response.header(SESSION_HEADER).map(str::to_owned) else {
                        return Err(self.malformed(method, "HTTP 409 without a session id"));
                    };
                    // A second 409 with a fresh id is normal (the id expired between calls); a
                    // third means the daemon will never accept us.
                    if conflicts > 2 || session_id.as_deref() == Some(id.as_str()) {
                        return Err(
                            self.malformed(method, "HTTP 409 although the session id was sent")
                        );
                    }
                    self.set_session_id(id);
                    attempt -= 1;
                }
                Err(ureq::Error::Status(401, _)) => {
                    return Err(match &self.credentials {
                        Some(c) => TransmissionError::Unauthorized {
                            url: self.url.clone(),
                            user: c.user.clone(),
                        },
                        None => TransmissionError::CredentialsRequired {
                            url: self.url.clone(),
                        },
                    })
                }
                Err(ureq::Error::Status(status, response)) => {
                    let text = response.into_string().unwrap_or_default();
                    return Err(TransmissionError::Http {
                        url: self.url.clone(),
                        method,
                        status,
                        body: html_to_line(&text),
                    });
                }
                Err(ureq::Error::Transport(transport)) => {
                    let refused = transport.kind() == ureq::ErrorKind::ConnectionFailed;
                    if !refused || attempt >= self.retry.attempts {
                        return Err(TransmissionError::Unreachable {
                            url: self.url.clone(),
                            attempts: attempt,
                            source: Box::new(transport),
                        });
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(self.retry.max_delay);
                }
            }
        }
    }

    /// Sends one RPC and fails unless its `result` is `success`.
    fn call(
        &self,
        method: &'static str,
        arguments: Value,
    ) -> Result<Map<String, Value>, TransmissionError> {
        let reply = self.call_raw(method, arguments)?;
        if reply.result != "success" {
            return Err(TransmissionError::Rpc {
                method,
                result: reply.result,
            });
        }
        Ok(reply.arguments)
    }

    fn parse_reply(
        &self,
        method: &'static str,
        response: ureq::Response,
    ) -> Result<RawReply, TransmissionError> {
        let text = response
            .into_string()
            .map_err(|e| self.malformed(method, format!("reading the body: {e}")))?;
        serde_json::from_str(&text)
            .map_err(|e| self.malformed(method, format!("{e} in {}", excerpt(&text))))
    }

    fn malformed(&self, method: &'static str, reason: impl Into<String>) -> TransmissionError {
        TransmissionError::Malformed {
            url: self.url.clone(),
            method,
            reason: reason.into(),
        }
    }

    fn current_session_id(&self) -> Option<String> {
        self.session_id
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set_session_id(&self, id: String) {
        *self
            .session_id
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(id);
    }

    fn add(
        &self,
        source: (&'static str, String),
        download_dir: Option<&Path>,
        paused: bool,
    ) -> Result<Added, TransmissionError> {
        const METHOD: &str = "torrent-add";
        let mut arguments = Map::new();
        arguments.insert(source.0.into(), Value::String(source.1));
        arguments.insert("paused".into(), Value::Bool(paused));
        if let Some(dir) = download_dir {
            let text = dir.to_str().ok_or_else(|| TransmissionError::NonUtf8Path {
                path: dir.to_path_buf(),
            })?;
            arguments.insert("download-dir".into(), Value::String(text.into()));
        }
        let reply = self.call_raw(METHOD, Value::Object(arguments))?;
        // Debian's 3.00 answers a duplicate with "success"; upstream 3.00 with
        // "duplicate torrent". Both carry `torrent-duplicate`.
        let (key, duplicate) = if reply.arguments.contains_key("torrent-duplicate") {
            ("torrent-duplicate", true)
        } else if reply.result == "success" {
            ("torrent-added", false)
        } else {
            return Err(TransmissionError::Rpc {
                method: METHOD,
                result: reply.result,
            });
        };
        let raw: RawAdded = take(&reply.arguments, key)
            .ok_or_else(|| self.malformed(METHOD, format!("no `{key}` object")))?
            .map_err(|e| self.malformed(METHOD, format!("`{key}`: {e}")))?;
        Ok(Added {
            id: raw.id,
            hash_string: raw.hash_string.to_ascii_lowercase(),
            name: raw.name,
            duplicate,
        })
    }

    fn act(
        &self,
        method: &'static str,
        hash: &str,
        extra: Option<(&str, Value)>,
    ) -> Result<(), TransmissionError> {
        let mut arguments = Map::new();
        arguments.insert("ids".into(), json!([normalize_hash(hash)?]));
        if let Some((key, value)) = extra {
            arguments.insert(key.into(), value);
        }
        self.call(method, Value::Object(arguments)).map(drop)
    }
}

impl TorrentEngine for Transmission {
    fn session_get(&self) -> Result<Session, TransmissionError> {
        const METHOD: &str = "session-get";
        let arguments = self.call(
            METHOD,
            json!({ "fields": ["version", "rpc-version", "download-dir"] }),
        )?;
        let raw: RawSession = serde_json::from_value(Value::Object(arguments))
            .map_err(|e| self.malformed(METHOD, e.to_string()))?;
        Ok(Session {
            version: raw.version,
            rpc_version: raw.rpc_version,
            download_dir: raw.download_dir,
        })
    }

    fn add_magnet(
        &self,
        magnet: &str,
        download_dir: Option<&Path>,
        paused: bool,
    ) -> Result<Added, TransmissionError> {
        self.add(("filename", magnet.to_owned()), download_dir, paused)
    }

    fn add_metainfo(
        &self,
        metainfo: &[u8],
        download_dir: Option<&Path>,
        paused: bool,
    ) -> Result<Added, TransmissionError> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(metainfo);
        self.add(("metainfo", encoded), download_dir, paused)
    }

    fn get(&self, hashes: &[String]) -> Result<Vec<TorrentStatus>, TransmissionError> {
        const METHOD: &str = "torrent-get";
        // The spec reads an empty `ids` as "all torrents"; asking for none means none.
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let ids = hashes
            .iter()
            .map(|h| normalize_hash(h))
            .collect::<Result<Vec<_>, _>>()?;
        let arguments = self.call(METHOD, json!({ "ids": ids, "fields": STATUS_FIELDS }))?;
        let raw: Vec<RawStatus> = take(&arguments, "torrents")
            .ok_or_else(|| self.malformed(METHOD, "no `torrents` list"))?
            .map_err(|e| self.malformed(METHOD, format!("`torrents`: {e}")))?;
        Ok(raw
            .into_iter()
            .map(|r| {
                let mut status = TorrentStatus::from(r);
                status.hash_string.make_ascii_lowercase();
                status
            })
            .collect())
    }

    fn start(&self, hash: &str) -> Result<(), TransmissionError> {
        self.act("torrent-start", hash, None)
    }

    fn stop(&self, hash: &str) -> Result<(), TransmissionError> {
        self.act("torrent-stop", hash, None)
    }

    fn verify(&self, hash: &str) -> Result<(), TransmissionError> {
        self.act("torrent-verify", hash, None)
    }

    fn remove(&self, hash: &str, delete_local_data: bool) -> Result<(), TransmissionError> {
        self.act(
            "torrent-remove",
            hash,
            Some(("delete-local-data", Value::Bool(delete_local_data))),
        )
    }
}

/// Deserializes `arguments[key]`, or `None` when the key is absent.
fn take<T: serde::de::DeserializeOwned>(
    arguments: &Map<String, Value>,
    key: &str,
) -> Option<Result<T, serde_json::Error>> {
    arguments.get(key).map(T::deserialize)
}

/// Checks an info-hash and lowercases it. Transmission silently ignores ids it cannot parse,
/// so a typo would otherwise look like "no such torrent".
pub fn normalize_hash(hash: &str) -> Result<String, TransmissionError> {
    if hash.len() == 40 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hash.to_ascii_lowercase())
    } else {
        Err(TransmissionError::InvalidHash {
            value: hash.to_owned(),
        })
    }
}

/// The text of a small HTML error page on one line (Transmission's 403/404/500 bodies).
fn html_to_line(html: &str) -> String {
    let mut text = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => {
                in_tag = true;
                text.push(' ');
            }
            '>' => in_tag = false,
            _ if !in_tag => text.push(c),
            _ => {}
        }
    }
    excerpt(&text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The start of a response body, enough to recognise it in an error message.
fn excerpt(text: &str) -> String {
    const MAX: usize = 200;
    let trimmed = text.trim();
    match trimmed.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}...", &trimmed[..cut]),
        None => format!("{trimmed:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex as StdMutex};

    /// One request as the fake daemon saw it.
    #[derive(Debug, Clone)]
    struct Seen {
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// A canned answer: HTTP status, extra headers, body.
    type Canned = (u16, Vec<(&'static str, &'static str)>, String);

    /// A fake RPC endpoint on port 0 that answers each connection with the next canned
    /// response (status, extra headers, body) and records what it was sent.
    fn fake_daemon(responses: Vec<Canned>) -> (String, Arc<StdMutex<Vec<Seen>>>) {
        let listener = match TcpListener::bind("127.0.0.1:0") {
            Ok(l) => l,
            Err(e) => panic!("binding the fake daemon: {e}"),
        };
        let url = match listener.local_addr() {
            Ok(addr) => format!("http://{addr}/transmission/rpc"),
            Err(e) => panic!("fake daemon address: {e}"),
        };
        let seen = Arc::new(StdMutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        std::thread::spawn(move || {
            for (status, headers, body) in responses {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let mut reader = BufReader::new(stream);
                let mut request_headers = Vec::new();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.trim_end().split_once(": ") {
                        if name.eq_ignore_ascii_case("content-length") {
                            length = value.parse().unwrap_or(0);
                        }
                        request_headers.push((name.to_owned(), value.to_owned()));
                    }
                }
                let mut request_body = vec![0; length];
                let _ = reader.read_exact(&mut request_body);
                record.lock().unwrap_or_else(|e| e.into_inner()).push(Seen {
                    headers: request_headers,
                    body: String::from_utf8_lossy(&request_body).into_owned(),
                });
                let mut reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (name, value) in headers {
                    reply.push_str(&format!("{name}: {value}\r\n"));
                }
                reply.push_str("\r\n");
                reply.push_str(&body);
                let mut stream = reader.into_inner();
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        (url, seen)
    }

    fn creds() -> Option<Credentials> {
        Some(Credentials {
            user: "p2pu".into(),
            password: "hunter2".into(),
        })
    }

    fn seen(record: &Arc<StdMutex<Vec<Seen>>>) -> Vec<Seen> {
        record.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    #[test]
    fn session_id_handshake_resends_with_the_id_from_the_409() {
        let (url, record) = fake_daemon(vec![
            (409, vec![(SESSION_HEADER, "abc")], String::new()),
            (
                200,
                vec![],
                r#"{"result":"success","arguments":{"version":"3.00 (bb6b5a062e)","rpc-version":16,"download-dir":"/srv/dl"}}"#.into(),
            ),
        ]);
        let client = Transmission::new(url, creds());
        let session = client.session_get();
        let Ok(session) = session else {
            panic!("{session:?}")
        };
        assert_eq!(session.version, "3.00 (bb6b5a062e)");
        assert_eq!(session.download_dir, PathBuf::from("/srv/dl"));
        let requests = seen(&record);
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].header(SESSION_HEADER), None);
        assert_eq!(requests[1].header(SESSION_HEADER), Some("abc"));
        // base64("p2pu:hunter2")
        assert_eq!(
            requests[1].header("Authorization"),
            Some("Basic cDJwdTpodW50ZXIy")
        );
    }

    #[test]
    fn unauthorized_names_the_user_but_never_the_password() {
        let (url, record) = fake_daemon(vec![(401, vec![], "<h1>401: Unauthorized</h1>".into())]);
        let client = Transmission::new(url, creds());
        let err = match client.session_get() {
            Err(e @ TransmissionError::Unauthorized { .. }) => e,
            other => panic!("want Unauthorized, got {other:?}"),
        };
        let text = format!("{err} {err:?} {client:?}");
        assert!(text.contains("p2pu"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        // No retry on 401: a retry loop would walk into Transmission's lock-out.
        assert_eq!(seen(&record).len(), 1);
    }

    #[test]
    fn rpc_failure_reports_method_and_result() {
        let (url, _) = fake_daemon(vec![(
            200,
            vec![],
            r#"{"result":"invalid or corrupt torrent file","arguments":{}}"#.into(),
        )]);
        let client = Transmission::new(url, None);
        match client.add_metainfo(b"not a torrent", None, true) {
            Err(TransmissionError::Rpc { method, result }) => {
                assert_eq!(method, "torrent-add");
                assert_eq!(result, "invalid or corrupt torrent file");
            }
            other => panic!("want Rpc, got {other:?}"),
        }
    }

    #[test]
    fn upstream_duplicate_result_counts_as_added() {
        let (url, record) = fake_daemon(vec![(
            200,
            vec![],
            r#"{"result":"duplicate torrent","arguments":{"torrent-duplicate":{"hashString":"6D54EF28756FC6BB30A354318C9652FDE1FA8195","id":1,"name":"payload.bin"}}}"#.into(),
        )]);
        let client = Transmission::new(url, None);
        let added = client.add_magnet("magnet:?xt=urn:btih:6d54", Some(Path::new("/srv/dl")), true);
        let Ok(added) = added else {
            panic!("{added:?}")
        };
        assert!(added.duplicate);
        assert_eq!(
            added.hash_string,
            "6d54ef28756fc6bb30a354318c9652fde1fa8195"
        );
        let body: Value = match serde_json::from_str(&seen(&record)[0].body) {
            Ok(v) => v,
            Err(e) => panic!("request body: {e}"),
        };
        assert_eq!(body["arguments"]["download-dir"], "/srv/dl");
        assert_eq!(body["arguments"]["paused"], true);
        assert_eq!(body["arguments"]["filename"], "magnet:?xt=urn:btih:6d54");
    }

    #[test]
    fn malformed_json_is_a_typed_error() {
        let (url, _) = fake_daemon(vec![(200, vec![], "<html>proxy</html>".into())]);
        let client = Transmission::new(url, None);
        match client.session_get() {
            Err(TransmissionError::Malformed { method, reason, .. }) => {
                assert_eq!(method, "session-get");
                assert!(reason.contains("proxy"), "{reason}");
            }
            other => panic!("want Malformed, got {other:?}"),
        }
    }

    #[test]
    fn forbidden_shows_the_page_text() {
        let (url, _) = fake_daemon(vec![(
            403,
            vec![],
            "<h1>403: Forbidden</h1><p>Unauthorized IP Address.</p>".into(),
        )]);
        let client = Transmission::new(url, None);
        match client.start("6d54ef28756fc6bb30a354318c9652fde1fa8195") {
            Err(TransmissionError::Http { status, body, .. }) => {
                assert_eq!(status, 403);
                assert_eq!(body, "\"403: Forbidden Unauthorized IP Address.\"");
            }
            other => panic!("want Http, got {other:?}"),
        }
    }

    #[test]
    fn invalid_hash_is_refused_before_sending() {
        let client = Transmission::new("http://127.0.0.1:1/transmission/rpc", None);
        assert!(matches!(
            client.get(&["nothex".into()]),
            Err(TransmissionError::InvalidHash { .. })
        ));
        assert!(matches!(
            client.remove("abc", true),
            Err(TransmissionError::InvalidHash { .. })
        ));
        // Asking for no torrents sends nothing (and so cannot fail on the dead port).
        assert!(matches!(client.get(&[]), Ok(v) if v.is_empty()));
    }

    #[test]
    fn status_codes_map_to_states() {
        assert_eq!(TorrentState::from(6), TorrentState::Seeding);
        assert_eq!(TorrentState::from(2), TorrentState::Checking);
        assert_eq!(TorrentState::from(9), TorrentState::Unknown(9));
    }
}
