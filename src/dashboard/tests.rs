//! The dashboard's endpoints and its checks, in-process against a fake fleet: requests built
//! by hand for the handler, and a few over a real socket for the server's bounds.

use super::*;
use crate::agent::runtime::state::Status;
use crate::agent::runtime::status::{NodeLogs, NodeStatus, UpdateStatus};
use crate::engines::fake::FakeGossip;
use crate::engines::MemberStatus;
use std::io::{Read, Write};
use std::net::TcpStream;

const TOKEN: &str = "s3cret-token-0123456789";

fn answer(node: &str, status: Status, reason: &str) -> (String, String) {
    let status = NodeStatus {
        node: node.into(),
        version: Some("0.1.0 (abc 2026-01-01)".into()),
        heartbeat: None,
        omitted: 0,
        now_ms: None,
        updates: vec![UpdateStatus {
            name: "site.pp".into(),
            seq: 7,
            status,
            reason: (!reason.is_empty()).then(|| reason.into()),
            at: 1000,
            bad_sources: Vec::new(),
            attempts: 0,
            sources: Vec::new(),
            stripes: Vec::new(),
        }],
    };
    (node.into(), serde_json::to_string(&status).unwrap())
}

fn fleet() -> Arc<FakeGossip> {
    Arc::new(FakeGossip {
        members: vec![
            FakeGossip::member("a", MemberStatus::Alive),
            FakeGossip::member("b", MemberStatus::Alive),
        ],
        answers: vec![
            answer("a", Status::Applied, ""),
            answer(
                "b",
                Status::Failed,
                "Error: <script>alert(1)</script><img src=x onerror=alert(2)>",
            ),
        ],
        ..FakeGossip::default()
    })
}

type Sent = Arc<Mutex<Vec<(Action, String, u64)>>>;

fn site(token: Option<&str>, actions: bool) -> (Site, Arc<FakeGossip>, Sent) {
    let gossip = fleet();
    let sent: Sent = Arc::default();
    let record = Arc::clone(&sent);
    let send: Arc<ActionFn> = Arc::new(move |action, name: &str, seq| {
        record.lock().unwrap().push((action, name.into(), seq));
        Ok(format!("sent {} of {name} seq {seq}", action.as_str()))
    });
    let options = Options {
        listen: "127.0.0.1:8080".parse().unwrap(),
        token: token.map(str::to_string),
        interval: Duration::from_secs(2),
        timeout: Duration::ZERO,
        actions: actions.then_some(send),
    };
    (Site::new(gossip.clone(), &options), gossip, sent)
}

fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> Request {
    Request {
        method: method.into(),
        target: target.into(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect(),
        peer: "127.0.0.1:50000".parse().unwrap(),
    }
}

fn get(site: &Site, target: &str, headers: &[(&str, &str)]) -> (u16, String, Response) {
    let mut all = vec![("Host", "127.0.0.1:8080")];
    all.extend_from_slice(headers);
    let response = site.handle(&request("GET", target, &all));
    let body = match &response.body {
        crate::agent::transfer::http::Body::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    };
    (response.status, body, response)
}

fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `/api/fleet` is the view of the fleet's status answers, asked once per refresh by the
/// poller (not once per viewer); members' strings travel as JSON strings, as they came.
#[test]
fn api_fleet_serves_the_view_of_the_status_query() {
    let (site, gossip, _) = site(None, false);
    site.refresh();
    let (code, body, response) = get(&site, "/api/fleet", &[]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(header(&response, "content-type"), Some("application/json"));
    let view: FleetView = serde_json::from_str(&body).unwrap();
    let nodes: Vec<&str> = view.members.iter().map(|m| m.node.as_str()).collect();
    assert_eq!(nodes, ["a", "b"]);
    assert_eq!(view.counts.get("failed"), Some(&1));
    assert!(!view.actions);
    let reason = view.members[1].updates.as_ref().unwrap()[0].reason.clone();
    assert_eq!(
        reason.as_deref(),
        Some("Error: <script>alert(1)</script><img src=x onerror=alert(2)>")
    );
    for _ in 0..3 {
        get(&site, "/api/fleet", &[]);
    }
    assert_eq!(
        gossip.queries(),
        ["p2pu-status"],
        "viewers do not ask the fleet"
    );
}

/// Every answer carries the strict CSP (no inline script, nothing from elsewhere) and the
/// page loads its script as a file; the script never parses a string as HTML.
#[test]
fn the_page_is_served_with_a_strict_csp_and_no_inline_script() {
    let (site, _, _) = site(None, false);
    let (code, html, response) = get(&site, "/", &[]);
    assert_eq!(code, 200);
    let csp = header(&response, "content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"));
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    assert_eq!(header(&response, "x-frame-options"), Some("DENY"));
    assert!(html.contains(r#"<script src="/app.js" defer></script>"#));
    assert_eq!(html.matches("<script").count(), 1, "one script, a file");
    assert!(!html.contains("style="), "no inline style");
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!APP_JS.contains(sink), "app.js uses {sink}");
    }
    for link in ["http://", "https://", "//cdn"] {
        let outside = html.replace("http://www.w3.org", "");
        assert!(!outside.contains(link), "the page links outside: {link}");
    }
    let (code, js, response) = get(&site, "/app.js", &[]);
    assert_eq!(code, 200);
    assert!(header(&response, "content-type")
        .unwrap()
        .starts_with("text/javascript"));
    assert!(js.contains("textContent"));
    assert_eq!(get(&site, "/nope", &[]).0, 404);
}

/// With a token, a request without it or with a wrong one is refused, in a header or a
/// cookie; `/?token=` sets the cookie (HttpOnly, SameSite=Strict) and redirects.
#[test]
fn a_wrong_or_missing_token_is_refused() {
    let (site, _, _) = site(Some(TOKEN), false);
    site.refresh();
    for headers in [
        vec![],
        vec![("Authorization", "Bearer wrong-token-0123456789")],
        vec![("Cookie", "p2pu_dashboard=wrong-token-0123456789")],
        vec![("Cookie", "other=s3cret-token-0123456789")],
        vec![("Authorization", "Bearer s3cret-token-012345678")],
    ] {
        for path in [
            "/",
            "/app.js",
            "/api/fleet",
            "/api/logs?node=a&name=site.pp",
        ] {
            let (code, body, _) = get(&site, path, &headers);
            assert_eq!(code, 401, "{path} {headers:?}: {body}");
            assert!(!body.contains("site.pp"), "{body}");
        }
    }
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(
        get(&site, "/api/fleet", &[("Authorization", &bearer)]).0,
        200
    );
    let cookie = format!("theme=dark; {COOKIE}={TOKEN}");
    assert_eq!(get(&site, "/api/fleet", &[("Cookie", &cookie)]).0, 200);
    assert_eq!(get(&site, "/?token=wrong-token-0123456789", &[]).0, 401);
    let (code, _, response) = get(&site, &format!("/?token={TOKEN}"), &[]);
    assert_eq!(code, 303);
    assert_eq!(header(&response, "location"), Some("/"));
    let set = header(&response, "set-cookie").unwrap();
    assert_eq!(
        set,
        format!("{COOKIE}={TOKEN}; Path=/; HttpOnly; SameSite=Strict")
    );
}

/// A rebinding attack reaches the port under another site's name: any Host but an IP
/// literal or localhost with this port is refused, token or not.
#[test]
fn a_host_that_is_not_this_dashboard_is_refused() {
    let (site, _, _) = site(None, false);
    site.refresh();
    for host in [
        "evil.example:8080",
        "127.0.0.1.nip.io:8080",
        "127.0.0.1:9999",
        "127.0.0.1",
        "",
    ] {
        let response = site.handle(&request("GET", "/api/fleet", &[("Host", host)]));
        assert_eq!(response.status, 403, "{host}");
    }
    let response = site.handle(&request("GET", "/api/fleet", &[]));
    assert_eq!(response.status, 403, "no Host");
    for host in [
        "127.0.0.1:8080",
        "localhost:8080",
        "[::1]:8080",
        "10.0.0.5:8080",
    ] {
        let response = site.handle(&request("GET", "/api/fleet", &[("Host", host)]));
        assert_eq!(response.status, 200, "{host}");
    }
}

/// Without --allow-actions the action endpoint refuses and nothing is sent; with it, only
/// a POST whose Origin is this dashboard (not another site's page) sends, after the token.
#[test]
fn actions_need_allow_actions_the_token_and_this_origin() {
    let (site, _, sent) = site(Some(TOKEN), false);
    let cookie = format!("{COOKIE}={TOKEN}");
    let good = [
        ("Host", "127.0.0.1:8080"),
        ("Origin", "http://127.0.0.1:8080"),
        ("Cookie", cookie.as_str()),
    ];
    let target = "/api/action?action=abort&name=site.pp&seq=7";
    let response = site.handle(&request("POST", target, &good));
    assert_eq!(response.status, 403);
    assert!(sent.lock().unwrap().is_empty());

    let (site, _, sent) = site_with_actions();
    let refused: [&[(&str, &str)]; 5] = [
        // Another site's page (CSRF), or a rebinding name.
        &[
            ("Host", "127.0.0.1:8080"),
            ("Origin", "http://evil.example"),
            ("Cookie", &cookie),
        ],
        &[
            ("Host", "evil.example:8080"),
            ("Origin", "http://evil.example:8080"),
            ("Cookie", &cookie),
        ],
        // No Origin at all.
        &[("Host", "127.0.0.1:8080"), ("Cookie", &cookie)],
        // No token.
        &[
            ("Host", "127.0.0.1:8080"),
            ("Origin", "http://127.0.0.1:8080"),
        ],
        // The token in the query, not as the page sends it.
        &[
            ("Host", "127.0.0.1:8080"),
            ("Origin", "http://127.0.0.1:8080"),
        ],
    ];
    for headers in refused {
        let response = site.handle(&request("POST", target, headers));
        assert!(
            [401, 403].contains(&response.status),
            "{headers:?}: {}",
            response.status
        );
    }
    let with_query_token = format!("{target}&token={TOKEN}");
    let response = site.handle(&request(
        "POST",
        &with_query_token,
        &[
            ("Host", "127.0.0.1:8080"),
            ("Origin", "http://127.0.0.1:8080"),
        ],
    ));
    assert_eq!(response.status, 401);
    // GET does not act.
    let response = site.handle(&request("GET", target, &good));
    assert_eq!(response.status, 405);
    for bad in [
        "/api/action?action=undo&name=site.pp&seq=7",
        "/api/action?action=abort&name=../x&seq=7",
        "/api/action?action=abort&name=site.pp&seq=x",
    ] {
        assert_eq!(
            site.handle(&request("POST", bad, &good)).status,
            400,
            "{bad}"
        );
    }
    assert!(sent.lock().unwrap().is_empty());
    let response = site.handle(&request("POST", target, &good));
    assert_eq!(response.status, 200);
    assert_eq!(
        *sent.lock().unwrap(),
        [(Action::Abort, "site.pp".to_string(), 7)]
    );
    // Revert is one more action, under the same checks: refused from another site's page.
    let revert = "/api/action?action=revert&name=site.pp&seq=7";
    let response = site.handle(&request("POST", revert, refused[0]));
    assert_eq!(response.status, 403);
    let response = site.handle(&request("POST", revert, &good));
    assert_eq!(response.status, 200);
    assert_eq!(
        sent.lock().unwrap()[1],
        (Action::Revert, "site.pp".to_string(), 7)
    );
}

fn site_with_actions() -> (Site, Arc<FakeGossip>, Sent) {
    site(Some(TOKEN), true)
}

/// `/api/logs` asks the one node named for its logs of the update (what `p2pu logs` gets,
/// filtered by that node as it shares them); a bad name is refused before any query.
#[test]
fn api_logs_asks_one_node_and_refuses_bad_names_before_asking() {
    let logs = NodeLogs {
        node: "b".into(),
        name: "site.pp".into(),
        seq: 7,
        status: Status::Failed,
        attempts: 0,
        reason: Some("Error: boom".into()),
        output: "Error: boom".into(),
        cut: false,
        at: None,
    };
    let gossip = Arc::new(FakeGossip {
        members: vec![FakeGossip::member("b", MemberStatus::Alive)],
        answers: vec![("b".into(), serde_json::to_string(&logs).unwrap())],
        ..FakeGossip::default()
    });
    let options = Options {
        listen: "127.0.0.1:8080".parse().unwrap(),
        token: None,
        interval: Duration::from_secs(2),
        timeout: Duration::ZERO,
        actions: None,
    };
    let site = Site::new(gossip.clone(), &options);
    for bad in [
        "/api/logs?node=b&name=../../etc/passwd",
        "/api/logs?node=b%0Aa&name=site.pp",
        "/api/logs?node=b",
    ] {
        assert_eq!(get(&site, bad, &[]).0, 400, "{bad}");
    }
    assert!(gossip.queries().is_empty());
    let (code, body, _) = get(&site, "/api/logs?node=b&name=site.pp", &[]);
    assert_eq!(code, 200, "{body}");
    let back: NodeLogs = serde_json::from_str(&body).unwrap();
    assert_eq!(back, logs);
    assert_eq!(gossip.queries(), ["p2pu-logs"]);
}

/// Beyond loopback without a token the dashboard does not start.
#[test]
fn a_non_loopback_listen_without_a_token_is_refused() {
    let options = Options {
        listen: "0.0.0.0:0".parse().unwrap(),
        token: None,
        interval: Duration::from_secs(60),
        timeout: Duration::ZERO,
        actions: None,
    };
    let err = Dashboard::start(fleet(), options).err().unwrap();
    assert!(
        crate::error::chain(&err).contains("is not loopback"),
        "{err}"
    );
}

/// A dashboard that sends actions needs a token even on loopback: another local user must
/// not sign with this node's key through it.
#[test]
fn actions_without_a_token_are_refused_even_on_loopback() {
    let send: Arc<ActionFn> = Arc::new(|_, _: &str, _| Ok(String::new()));
    let options = Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: None,
        interval: Duration::from_secs(60),
        timeout: Duration::ZERO,
        actions: Some(send),
    };
    let err = Dashboard::start(fleet(), options).err().unwrap();
    assert!(
        crate::error::chain(&err).contains("without a token"),
        "{err}"
    );
}

/// A `p2pu-logs` query at a time: while one runs, another viewer gets 503 and the fleet is
/// not asked again (a token holder cannot make every member answer in a loop).
#[test]
fn one_logs_query_at_a_time() {
    use std::sync::mpsc;
    /// Its first query waits until released; the later ones answer at once.
    struct Slow {
        inner: FakeGossip,
        entered: Mutex<Option<mpsc::Sender<()>>>,
        release: Mutex<mpsc::Receiver<()>>,
    }
    impl Gossip for Slow {
        fn members(
            &self,
        ) -> std::result::Result<Vec<crate::engines::Member>, crate::engines::SerfError> {
            self.inner.members()
        }
        fn user_event(
            &self,
            n: &str,
            p: &[u8],
            c: bool,
        ) -> std::result::Result<(), crate::engines::SerfError> {
            self.inner.user_event(n, p, c)
        }
        fn query(
            &self,
            name: &str,
            payload: &[u8],
            timeout: Duration,
        ) -> std::result::Result<Vec<(String, String)>, crate::engines::SerfError> {
            if let Some(entered) = self.entered.lock().unwrap().take() {
                entered.send(()).unwrap();
                let _ = self
                    .release
                    .lock()
                    .unwrap()
                    .recv_timeout(Duration::from_secs(30));
            }
            self.inner.query(name, payload, timeout)
        }
    }
    let (entered, on_entered) = mpsc::channel();
    let (release, on_release) = mpsc::channel();
    let gossip = Arc::new(Slow {
        inner: FakeGossip::default(),
        entered: Mutex::new(Some(entered)),
        release: Mutex::new(on_release),
    });
    let options = Options {
        listen: "127.0.0.1:8080".parse().unwrap(),
        token: None,
        interval: Duration::from_secs(2),
        timeout: Duration::ZERO,
        actions: None,
    };
    let site = Arc::new(Site::new(gossip.clone(), &options));
    let first = {
        let site = Arc::clone(&site);
        std::thread::spawn(move || get(&site, "/api/logs?node=b&name=site.pp", &[]).0)
    };
    on_entered.recv().unwrap();
    let (code, body, _) = get(&site, "/api/logs?node=c&name=site.pp", &[]);
    release.send(()).unwrap();
    assert_eq!(first.join().unwrap(), 404, "no node answered: not found");
    assert_eq!(code, 503, "{body}");
    assert_eq!(gossip.inner.queries(), ["p2pu-logs"]);
}

fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let _ = stream.write_all(request);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Over a real socket: a page is served, an oversized head gets 431 without being read to
/// its end, and a client dripping its head is cut off while others are still served.
#[test]
fn the_port_bounds_heads_and_slow_clients() {
    let options = Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: None,
        interval: Duration::from_secs(60),
        timeout: Duration::ZERO,
        actions: None,
    };
    let dashboard = Dashboard::start(fleet(), options).unwrap();
    let addr = dashboard.addr();
    let host = format!("Host: {addr}\r\n");
    let ok = exchange(
        addr,
        format!("GET /api/fleet HTTP/1.1\r\n{host}\r\n").as_bytes(),
    );
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let huge = format!(
        "GET / HTTP/1.1\r\n{host}X-Pad: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let answer = exchange(addr, huge.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // Slowloris: six connections that never finish their head.
    let mut slow = Vec::new();
    for _ in 0..6 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        slow.push(s);
    }
    // The workers drop them at the head deadline; then an honest request is served.
    let started = std::time::Instant::now();
    let ok = loop {
        let answer = exchange(
            addr,
            format!("GET /api/fleet HTTP/1.1\r\n{host}\r\n").as_bytes(),
        );
        if answer.starts_with("HTTP/1.1 200") {
            break answer;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never served: {answer}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(ok.contains("\"members\""));
    drop(slow);
}

/// Loopback alone needs no token; any other address, or actions, get one made here; a
/// token file is read and a short one refused.
#[test]
fn beyond_loopback_or_with_actions_a_token_is_required() {
    let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let lan: SocketAddr = "0.0.0.0:8080".parse().unwrap();
    assert_eq!(token_source(lo, None, false).unwrap(), TokenSource::None);
    for (addr, actions) in [(lan, false), (lo, true), (lan, true)] {
        let TokenSource::Made(token) = token_source(addr, None, actions).unwrap() else {
            panic!("{addr} {actions}: no token made");
        };
        assert!(token.len() >= MIN_TOKEN, "{token}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "short\n").unwrap();
    let err = token_source(lan, Some(&file), false).unwrap_err();
    assert!(err.to_string().contains("at least 16"), "{err}");
    std::fs::write(&file, "0123456789abcdefXYZ\n").unwrap();
    assert_eq!(
        token_source(lan, Some(&file), false).unwrap(),
        TokenSource::File("0123456789abcdefXYZ".into())
    );
}
