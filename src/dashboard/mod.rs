//! The fleet dashboard `p2pu fleet serve` runs: a read-only web page embedded in the binary
//! (assets/, no CDN, no build chain), the JSON it polls, and, with `--allow-actions`, the
//! operator's abort/resume/retry sent as signed control statements. Owns who may read the
//! page (the Host check, the token, loopback by default) and who may act (the token, the
//! Origin check), and [`DashboardError`].
//!
//! The page never makes the fleet work harder than `fleet status --watch` would: one status
//! query per `interval`, made by a poller thread whatever the number of viewers, and at most
//! one `p2pu-logs` query at a time. Requests ride on the agent's bounded HTTP server (a head of
//! at most 8 KiB read within 5 s, a few workers, a few connections per source, no body ever
//! read); an action's arguments travel in its query string.

pub mod view;

use crate::agent::runtime::status::{fleet_logs, fleet_status};
use crate::agent::transfer::http::{Limits, Request, Response, Server};
use crate::engines::Gossip;
use crate::formats::control::Action;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use view::FleetView;

/// What setting up the dashboard failed on.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("reading the dashboard token from {}", path.display())]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the dashboard token in {} is {len} characters; it needs at least {MIN_TOKEN} (e.g. `head -c 24 /dev/urandom | base64`)", path.display())]
    TokenShort { path: PathBuf, len: usize },
    #[error("--listen {addr} is not loopback: anyone who can reach it would see the fleet; give --token-file or let p2pu make a token (drop --no-token)")]
    OpenWithoutToken { addr: SocketAddr },
    #[error("--allow-actions without a token: any local user could sign with this node's key")]
    ActionsWithoutToken,
}

impl crate::error::LayerError for DashboardError {}

/// The shortest token accepted from a file.
pub const MIN_TOKEN: usize = 16;

/// The cookie the page's token travels in after the first visit (`/?token=...`).
pub const COOKIE: &str = "p2pu_dashboard";

/// The page and its files, embedded: nothing is fetched from anywhere else.
const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// No script but the page's own file, no inline script or style, nothing from elsewhere, no
/// framing: what a member's string could smuggle into the page has nothing to run as.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Sends an operator action for update `name` seq `seq`; returns what was sent, for the page.
pub type ActionFn = dyn Fn(Action, &str, u64) -> crate::error::Result<String> + Send + Sync;

/// How the dashboard runs.
pub struct Options {
    pub listen: SocketAddr,
    /// Required of every request when set (header `Authorization: Bearer`, or the cookie).
    pub token: Option<String>,
    /// How often the fleet is asked.
    pub interval: Duration,
    /// How long each query waits for answers.
    pub timeout: Duration,
    /// `--allow-actions`: how to send them.
    pub actions: Option<Arc<ActionFn>>,
}

/// A running dashboard; dropping it stops it.
pub struct Dashboard {
    server: Server,
    stop: Arc<AtomicBool>,
    poller: Option<JoinHandle<()>>,
    site: Arc<Site>,
}

impl Dashboard {
    pub fn start(gossip: Arc<dyn Gossip>, options: Options) -> crate::error::Result<Dashboard> {
        if options.token.is_none() && !options.listen.ip().is_loopback() {
            return Err(DashboardError::OpenWithoutToken {
                addr: options.listen,
            }
            .into());
        }
        if options.token.is_none() && options.actions.is_some() {
            return Err(DashboardError::ActionsWithoutToken.into());
        }
        let site = Arc::new(Site::new(gossip, &options));
        let handler = {
            let site = Arc::clone(&site);
            Arc::new(move |request: &Request| site.handle(request))
        };
        let server = Server::start("dashboard", options.listen, limits(), handler)?;
        site.set_port(server.addr().port());
        let stop = Arc::new(AtomicBool::new(false));
        let poller = {
            let (site, stop) = (Arc::clone(&site), Arc::clone(&stop));
            let interval = options.interval;
            std::thread::Builder::new()
                .name("dashboard-poll".into())
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        site.refresh();
                        // Sleep in small steps so a stop is not kept waiting an interval.
                        let mut left = interval;
                        while !left.is_zero() && !stop.load(Ordering::SeqCst) {
                            let step = left.min(Duration::from_millis(100));
                            std::thread::sleep(step);
                            left -= step;
                        }
                    }
                })
                .map_err(|e| {
                    crate::error::Error::Internal(format!("spawning the dashboard poller: {e}"))
                })?
        };
        Ok(Dashboard {
            server,
            stop,
            poller: Some(poller),
            site,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Asks the fleet now, outside the poller's rhythm.
    pub fn refresh(&self) {
        self.site.refresh();
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.shutdown();
        if let Some(poller) = self.poller.take() {
            let _ = poller.join();
        }
    }
}

/// The bounds of the dashboard's port: a browser opens up to six connections to one site, the
/// page polls one JSON every few seconds; a head is a request line, cookies and a few headers.
fn limits() -> Limits {
    Limits {
        max_head: 8 * 1024,
        workers: 4,
        per_source: 6,
        head_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(15),
    }
}

/// A token of 24 random bytes, base64url: for `--listen` beyond loopback and for actions.
pub fn new_token() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The token in `path`, trimmed; refused when short.
pub fn read_token(path: &std::path::Path) -> Result<String, DashboardError> {
    let text = std::fs::read_to_string(path).map_err(|source| DashboardError::TokenFile {
        path: path.to_path_buf(),
        source,
    })?;
    let token = text.trim().to_string();
    if token.len() < MIN_TOKEN {
        return Err(DashboardError::TokenShort {
            path: path.to_path_buf(),
            len: token.len(),
        });
    }
    Ok(token)
}

/// Where the dashboard's token comes from, decided before anything is bound.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// Loopback, read-only: none.
    None,
    /// Read from `--token-file`.
    File(String),
    /// Made now: printed once in the URL.
    Made(String),
}

impl TokenSource {
    pub fn token(&self) -> Option<&str> {
        match self {
            TokenSource::None => None,
            TokenSource::File(t) | TokenSource::Made(t) => Some(t),
        }
    }
}

/// The token this listen address and these flags require.
pub fn token_source(
    listen: SocketAddr,
    token_file: Option<&std::path::Path>,
    allow_actions: bool,
) -> Result<TokenSource, DashboardError> {
    if let Some(path) = token_file {
        return Ok(TokenSource::File(read_token(path)?));
    }
    if allow_actions || !listen.ip().is_loopback() {
        return Ok(TokenSource::Made(new_token()));
    }
    Ok(TokenSource::None)
}

/// The state the request handlers share.
pub(crate) struct Site {
    gossip: Arc<dyn Gossip>,
    port: Mutex<u16>,
    token: Option<String>,
    timeout: Duration,
    actions: Option<Arc<ActionFn>>,
    /// The newest view, encoded once per refresh and handed to every viewer.
    view: Mutex<Arc<Vec<u8>>>,
    /// Held while a `p2pu-logs` query runs: one at a time, the others get 503.
    logs: Mutex<()>,
}

impl Site {
    pub(crate) fn new(gossip: Arc<dyn Gossip>, options: &Options) -> Site {
        let empty = FleetView::of(Vec::new(), 0, options.actions.is_some());
        Site {
            gossip,
            port: Mutex::new(options.listen.port()),
            token: options.token.clone(),
            timeout: options.timeout,
            actions: options.actions.clone(),
            view: Mutex::new(Arc::new(serde_json::to_vec(&empty).unwrap_or_default())),
            logs: Mutex::new(()),
        }
    }

    fn set_port(&self, port: u16) {
        *self.port.lock().unwrap_or_else(|e| e.into_inner()) = port;
    }

    fn port(&self) -> u16 {
        *self.port.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the fleet and keeps the answer as the view every viewer gets.
    pub(crate) fn refresh(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let view = match fleet_status(self.gossip.as_ref(), self.timeout, &[], now) {
            Ok(members) => FleetView::of(members, now, self.actions.is_some()),
            Err(e) => {
                let mut view = FleetView::of(Vec::new(), now, self.actions.is_some());
                view.error = Some(crate::error::chain(&crate::error::Error::from(e)));
                view
            }
        };
        match serde_json::to_vec(&view) {
            Ok(bytes) => *self.view.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(bytes),
            Err(e) => tracing::error!(error = %e, "encoding the dashboard view"),
        }
    }

    pub(crate) fn handle(&self, request: &Request) -> Response {
        let mut response = self.route(request);
        secure(&mut response);
        response
    }

    fn route(&self, request: &Request) -> Response {
        // A name that resolves to this machine (DNS rebinding) is refused before anything
        // else: a page from another site would otherwise read the fleet through its own name.
        if !self.host_allowed(request) {
            return text(
                403,
                "refused: the Host header must be this dashboard's address or localhost\n",
            );
        }
        let (path, query) = request.path_and_query();
        let method = request.method.as_str();
        if method == "GET" && path == "/" {
            if let Some(given) = param(query, "token") {
                return self.login(&given);
            }
        }
        if !self.token_ok(request) {
            return text(
                401,
                "refused: this dashboard needs its token; open the URL `p2pu fleet serve` printed\n",
            );
        }
        match (method, path) {
            ("GET", "/") => asset("text/html; charset=utf-8", INDEX_HTML),
            ("GET", "/app.js") => asset("text/javascript; charset=utf-8", APP_JS),
            ("GET", "/app.css") => asset("text/css; charset=utf-8", APP_CSS),
            ("GET", "/api/fleet") => {
                let view = self.view.lock().unwrap_or_else(|e| e.into_inner()).clone();
                Response::bytes(200, "application/json", view.to_vec())
            }
            ("GET", "/api/logs") => self.logs(query),
            ("POST", "/api/action") => self.action(request, query),
            (_, "/" | "/app.js" | "/app.css" | "/api/fleet" | "/api/logs" | "/api/action") => {
                text(405, "method not allowed\n")
            }
            _ => text(404, "not found\n"),
        }
    }

    /// `/?token=T`: the token checked, then kept in a cookie the browser sends only to this
    /// site (SameSite=Strict) and scripts cannot read (HttpOnly); the redirect drops it from
    /// the address bar and the history.
    fn login(&self, given: &str) -> Response {
        match &self.token {
            Some(token) if same(token, given) => {
                let mut response = Response::bytes(303, "text/plain", b"see /\n".to_vec());
                response.headers.push(("Location", "/".into()));
                response.headers.push((
                    "Set-Cookie",
                    format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"),
                ));
                response
            }
            Some(_) => text(401, "refused: wrong token\n"),
            None => {
                let mut response = Response::bytes(303, "text/plain", b"see /\n".to_vec());
                response.headers.push(("Location", "/".into()));
                response
            }
        }
    }

    /// Whether the request names this dashboard: an IP literal (any: a listener on 0.0.0.0
    /// answers on each of the machine's addresses) or `localhost`, with this port. A DNS
    /// name is what a rebinding attack must use, so no name but localhost passes.
    fn host_allowed(&self, request: &Request) -> bool {
        let Some(host) = request
            .header("host")
            .and_then(|h| std::str::from_utf8(h).ok())
        else {
            return false;
        };
        let Some((name, port)) = host.rsplit_once(':') else {
            return false;
        };
        if port.parse::<u16>().ok() != Some(self.port()) {
            return false;
        }
        let name = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok()
    }

    fn token_ok(&self, request: &Request) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let bearer = request
            .header("authorization")
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| h.strip_prefix("Bearer "));
        if bearer.is_some_and(|b| same(token, b.trim())) {
            return true;
        }
        request
            .headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("cookie"))
            .filter_map(|(_, value)| std::str::from_utf8(value).ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(name, value)| name == COOKIE && same(token, value))
    }

    /// `GET /api/logs?node=N&name=X`: that node's answer to `p2pu logs X`, as it shares it.
    fn logs(&self, query: &str) -> Response {
        let (Some(node), Some(name)) = (param(query, "node"), param(query, "name")) else {
            return text(400, "give node and name\n");
        };
        if crate::formats::announcement::validate_name(&name).is_err()
            || node.is_empty()
            || node.len() > 128
            || node.chars().any(char::is_control)
        {
            return text(400, "not an update name or node name\n");
        }
        let Ok(_one) = self.logs.try_lock() else {
            return text(503, "another logs request is running; try again\n");
        };
        match fleet_logs(
            self.gossip.as_ref(),
            &name,
            Some(&node),
            false,
            self.timeout,
        ) {
            Ok(logs) => match logs.into_iter().next() {
                Some(answer) => json(200, &answer),
                None => text(404, "that node did not answer with logs of that update\n"),
            },
            Err(e) => text(
                502,
                &format!("{}\n", crate::error::chain(&crate::error::Error::from(e))),
            ),
        }
    }

    /// `POST /api/action?action=abort&name=X&seq=N`: only with `--allow-actions`, only from
    /// this dashboard's own page (Origin is this Host: another site's page cannot send it,
    /// whatever cookie the browser holds).
    fn action(&self, request: &Request, query: &str) -> Response {
        let Some(send) = &self.actions else {
            return text(
                403,
                "refused: this dashboard was started without --allow-actions\n",
            );
        };
        let host = request.header("host").unwrap_or_default();
        let origin = request.header("origin").unwrap_or_default();
        if origin != [b"http://".as_slice(), host].concat().as_slice() {
            return text(
                403,
                "refused: an action must come from this dashboard's page (Origin)\n",
            );
        }
        let action = match param(query, "action").as_deref() {
            Some("abort") => Action::Abort,
            Some("resume") => Action::Resume,
            Some("retry") => Action::Retry,
            Some("revert") => Action::Revert,
            _ => return text(400, "action is abort, resume, retry or revert\n"),
        };
        let (Some(name), Some(seq)) = (
            param(query, "name"),
            param(query, "seq").and_then(|s| s.parse::<u64>().ok()),
        ) else {
            return text(400, "give name and seq\n");
        };
        if crate::formats::announcement::validate_name(&name).is_err() {
            return text(400, "not an update name\n");
        }
        match send(action, &name, seq) {
            Ok(sent) => {
                tracing::info!(action = action.as_str(), %name, seq, "dashboard sent an action");
                text(200, &format!("{sent}\n"))
            }
            Err(e) => text(500, &format!("{}\n", crate::error::chain(&e))),
        }
    }
}

/// Headers every answer carries: the CSP, and no sniffing, framing, referrer or caching.
fn secure(response: &mut Response) {
    response
        .headers
        .push(("Content-Security-Policy", CSP.to_string()));
    response
        .headers
        .push(("X-Content-Type-Options", "nosniff".into()));
    response.headers.push(("X-Frame-Options", "DENY".into()));
    response
        .headers
        .push(("Referrer-Policy", "no-referrer".into()));
    response.headers.push(("Cache-Control", "no-store".into()));
}

fn asset(content_type: &'static str, body: &str) -> Response {
    Response::bytes(200, content_type, body.as_bytes().to_vec())
}

fn text(status: u16, body: &str) -> Response {
    Response::bytes(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

fn json<T: serde::Serialize>(status: u16, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => Response::bytes(status, "application/json", bytes),
        Err(e) => text(500, &format!("encoding: {e}\n")),
    }
}

/// The first `key=value` of a query string, percent-decoded (`+` is a space).
fn param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
}

/// Token equality in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests;
