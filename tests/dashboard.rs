//! `p2pu fleet serve` in a real browser: headless Chromium driven over WebDriver (Debian's
//! `chromium` and `chromium-driver`, spoken to with ureq) against a lab of real agents. The
//! matrix shows every node; an update that fails on one node turns its cell red with Puppet's
//! error line, and that line, which carries a member-supplied `<b id="injected">`, shows as
//! text and never as markup; a rollout waiting for its second wave is aborted with the page's
//! button (after its confirmation), the waiting nodes hold and the page shows the halt; a
//! dashboard without --allow-actions has no button and its endpoint refuses; the matrix
//! filters by tag and by name. The browser, the dashboards and the fleet all run inside the
//! lab's namespace, on its loopback.
//!
//! Set `P2PU_DASHBOARD_SCREENSHOT=docs/dashboard.png` to keep the page's screenshot (README).

mod support;

use p2pu::agent::runtime::state::{StateStore, Status};
use p2pu::lab::{Daemon, Lab, LabOptions};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::testlab::{ok, wait, TestLab};

const NODES: usize = 3;
/// The node whose Puppet run fails (its vardir lacks `ok`).
const FAILING: usize = 3;
const TOKEN: &str = "dashboard-test-token-0123456789";

fn have_chromium() -> bool {
    let found = |tool: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
    };
    support::prereq::have(
        found("chromium") && found("chromedriver"),
        "chromium and chromedriver for the dashboard's browser test (install/engines.sh --test, or apt-get install chromium chromium-driver)",
    )
}

/// A WebDriver session on a chromedriver inside the lab's namespace; every call is made from
/// a thread in that namespace.
struct Browser<'a> {
    lab: &'a Lab,
    base: String,
    session: String,
}

impl<'a> Browser<'a> {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let method = method.to_string();
        self.lab
            .in_netns(move || {
                let request = ureq::request(&method, &url).timeout(Duration::from_secs(60));
                let response = match body {
                    Some(body) => request.send_json(body),
                    None => request.call(),
                };
                match response {
                    Ok(r) => r.into_json::<Value>().unwrap_or(Value::Null),
                    Err(ureq::Error::Status(_, r)) => r.into_json::<Value>().unwrap_or(Value::Null),
                    Err(e) => panic!("webdriver {method} {url}: {e}"),
                }
            })
            .unwrap()
    }

    fn start(lab: &'a Lab, port: u16, profile: &Path) -> Browser<'a> {
        let base = format!("http://127.0.0.1:{port}");
        let probe = format!("{base}/status");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !lab.in_netns(|| ureq::get(&probe).call().is_ok()).unwrap() {
            assert!(Instant::now() < deadline, "chromedriver did not answer");
            std::thread::sleep(Duration::from_millis(200));
        }
        let mut browser = Browser {
            lab,
            base,
            session: String::new(),
        };
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1100",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let created = browser.call("POST", "/session", Some(caps));
        browser.session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_string();
        browser
    }

    fn session(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body)["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.session("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` in the page (a function body) and returns what it returns.
    fn eval(&self, script: &str) -> Value {
        self.session(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Waits until `script` returns true, showing `what` and the page's text if it never does.
    fn wait(&self, what: &str, timeout: Duration, script: &str) {
        let deadline = Instant::now() + timeout;
        while self.eval(script) != Value::Bool(true) {
            if Instant::now() > deadline {
                let text = self.eval("return document.body.innerText");
                panic!("timed out waiting for {what}; the page says:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn click(&self, css: &str) {
        let found = self.session(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        let id = found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string();
        self.session("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let data = self.session("GET", "/screenshot", None);
        base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .unwrap()
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let url = format!("{}{path}", self.base);
            let _ = self.lab.in_netns(move || ureq::delete(&url).call().is_ok());
        }
    }
}

/// A free port on the lab's loopback.
fn free_port(lab: &Lab) -> u16 {
    lab.in_netns(|| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    })
    .unwrap()
}

/// `p2pu fleet serve` for node 1 inside the namespace.
fn serve(lab: &Lab, port: u16, extra: &[&str], log: &Path) -> Daemon {
    let node = lab.node(1).unwrap();
    let mut command = lab.netns().command(env!("CARGO_BIN_EXE_p2pu")).unwrap();
    command
        .args(["fleet", "serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--interval", "1", "--timeout", "2"])
        .args(extra)
        .arg("--config")
        .arg(&node.config)
        .env("SERF_RPC_ADDR", node.serf_rpc.to_string())
        .env("SERF_RPC_AUTH", node.serf_rpc_auth().unwrap());
    Daemon::spawn(format!("fleet serve :{port}"), command, log).unwrap()
}

fn vardir(lab: &Lab, node: usize) -> PathBuf {
    lab.node(node).unwrap().dir.join("puppet/var")
}

fn status(lab: &Lab, node: usize, name: &str) -> Option<Status> {
    StateStore::open_read_only(&lab.node(node).unwrap().site.agent.state_dir)
        .records(name)
        .ok()?
        .into_iter()
        .last()
        .map(|r| r.status)
}

#[test]
fn the_dashboard_shows_the_fleet_and_aborts_a_rollout_in_a_real_browser() {
    if !support::prereq::root("the lab runs agents in a network namespace") || !have_chromium() {
        return;
    }
    let dir = support::testlab::lab_dir("p2pu-dashboard-");
    let mut options = LabOptions::new(NODES, dir.path().join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    options.start_agent = true;
    options.site_overrides = Some("[agent]\nretries = 0\n".into());
    options
        .node_overrides
        .insert(2, "[serf]\ntags = { role = \"camera\" }\n".into());
    let lab = TestLab(Lab::start(options).expect("lab starts"));
    for node in (1..=NODES).filter(|&n| n != FAILING) {
        std::fs::create_dir_all(vardir(&lab, node)).unwrap();
        std::fs::write(vardir(&lab, node).join("ok"), "").unwrap();
    }

    // An update that fails on one node, with markup in Puppet's error line: what a
    // compromised member could as well have put in its status answer.
    let manifest = dir.path().join("fail.pp");
    std::fs::write(
        &manifest,
        "if find_file(\"${settings::vardir}/ok\") == undef { fail('<b id=\"injected\">x</b> no ok here') }\n\
         notify { 'fine': }\n",
    )
    .unwrap();
    ok(lab
        .p2pu(1, &["submit", manifest.to_str().unwrap()])
        .unwrap());
    wait("fail.pp to settle", Duration::from_secs(120), || {
        (1..=NODES).all(|n| {
            let want = if n == FAILING {
                Status::Failed
            } else {
                Status::Applied
            };
            status(&lab, n, "fail.pp") == Some(want)
        })
    });

    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let acting = free_port(&lab);
    let _acting = serve(
        &lab,
        acting,
        &[
            "--allow-actions",
            "--token-file",
            token_file.to_str().unwrap(),
        ],
        &dir.path().join("serve-acting.log"),
    );
    let reading = free_port(&lab);
    let _reading = serve(&lab, reading, &[], &dir.path().join("serve-reading.log"));
    let driver_port = free_port(&lab);
    let mut command = lab.netns().command("chromedriver").unwrap();
    command.arg(format!("--port={driver_port}"));
    let _driver = Daemon::spawn(
        "chromedriver",
        command,
        &dir.path().join("chromedriver.log"),
    )
    .unwrap();
    let browser = Browser::start(&lab, driver_port, &dir.path().join("profile"));

    // 1. Every node in the matrix; the failed one red, with Puppet's error line as text.
    browser.goto(&format!("http://127.0.0.1:{acting}/?token={TOKEN}"));
    browser.wait(
        "a row per node",
        Duration::from_secs(60),
        &format!(
            "return document.querySelectorAll('#matrix tbody tr[data-node]').length === {NODES}"
        ),
    );
    let failing = lab.node(FAILING).unwrap().name.clone();
    let cell = format!(
        "document.querySelector('#matrix tr[data-node=\"{failing}\"] td.cell[data-update=\"fail.pp\"]')"
    );
    browser.wait(
        "the failed cell",
        Duration::from_secs(30),
        &format!("const c = {cell}; return !!c && c.dataset.status === 'failed'"),
    );
    let seen = browser.eval(&format!(
        "const c = {cell}; return [getComputedStyle(c).backgroundColor, c.title, \
         document.getElementById('injected') === null, document.querySelectorAll('b').length]"
    ));
    assert_eq!(seen[0], "rgb(255, 153, 153)", "not red: {seen}");
    let title = seen[1].as_str().unwrap();
    assert!(
        title.starts_with("Error:"),
        "not Puppet's error line: {title}"
    );
    assert!(title.contains("<b id=\"injected\">"), "{title}");
    assert_eq!(seen[2], true, "a member's string became markup: {seen}");
    assert_eq!(seen[3], 0, "a member's string became markup: {seen}");
    // Its detail: the history, and the logs it shares.
    browser.click(&format!("#matrix tr[data-node=\"{failing}\"] td.node"));
    browser.click("#history button.logs[data-update=\"fail.pp\"]");
    browser.wait(
        "the node's logs",
        Duration::from_secs(30),
        "return document.getElementById('logs').textContent.includes('Error:')",
    );
    assert_eq!(
        browser.eval("return document.getElementById('injected') === null"),
        true
    );

    // 2. A rollout whose second wave waits an hour: aborted from the page.
    let late = dir.path().join("late.pp");
    std::fs::write(&late, "notify { 'late': }\n").unwrap();
    ok(lab
        .p2pu(
            1,
            &[
                "submit",
                late.to_str().unwrap(),
                "--waves",
                "1,100%",
                "--wave-wait",
                "1h",
            ],
        )
        .unwrap());
    browser.wait(
        "the late rollout's waiting nodes",
        Duration::from_secs(90),
        "return document.getElementById('rollout').textContent.startsWith('late.pp') && \
         !!document.querySelector('#counts li[data-status=\"waiting\"]') && \
         document.querySelector('#counts li[data-status=\"waiting\"]').textContent === 'waiting: 2'",
    );
    let picture = browser.screenshot();
    assert!(picture.starts_with(b"\x89PNG"), "not a PNG");
    std::fs::write(dir.path().join("dashboard.png"), &picture).unwrap();
    if let Some(keep) = std::env::var_os("P2PU_DASHBOARD_SCREENSHOT") {
        std::fs::write(keep, &picture).unwrap();
    }
    let waiting: Vec<usize> = (1..=NODES)
        .filter(|&n| status(&lab, n, "late.pp") == Some(Status::Waiting))
        .collect();
    assert_eq!(waiting.len(), 2, "two nodes wait for wave 2");
    browser.click("#action-abort");
    // The confirmation, then the signed statement.
    let text = browser.session("GET", "/alert/text", None);
    assert!(
        text.as_str()
            .unwrap_or_default()
            .contains("abort of late.pp"),
        "{text}"
    );
    browser.session("POST", "/alert/accept", Some(json!({})));
    browser.wait(
        "the page to say it sent the abort",
        Duration::from_secs(30),
        "return document.getElementById('action-result').textContent.includes('sent abort of late.pp')",
    );
    for &node in &waiting {
        wait(
            &format!("node {node} to halt late.pp"),
            Duration::from_secs(60),
            || status(&lab, node, "late.pp") == Some(Status::Halted),
        );
    }
    browser.wait(
        "the halt on the page",
        Duration::from_secs(30),
        "const h = document.getElementById('halt'); return !h.hidden && \
         h.textContent.includes('HALTED on 2 member(s)') && h.textContent.includes('aborted by operator')",
    );
    // The revert button beside them asks first, naming what it does; dismissed, nothing goes.
    browser.click("#action-revert");
    let text = browser.session("GET", "/alert/text", None);
    let text = text.as_str().unwrap_or_default().to_string();
    assert!(
        text.contains("revert of late.pp") && text.contains("last good version"),
        "{text}"
    );
    browser.session("POST", "/alert/dismiss", Some(json!({})));
    assert_eq!(
        browser.eval(
            "return document.getElementById('action-result').textContent.includes('sent revert')"
        ),
        false
    );

    // 3. Without --allow-actions: no button, and the endpoint refuses.
    browser.goto(&format!("http://127.0.0.1:{reading}/"));
    browser.wait(
        "the read-only page",
        Duration::from_secs(30),
        &format!(
            "return document.querySelectorAll('#matrix tbody tr[data-node]').length === {NODES}"
        ),
    );
    assert_eq!(
        browser.eval("return document.querySelectorAll('#actions button').length"),
        0
    );
    // Filtered by tag, then by name.
    let rows = |script: &str| {
        browser.eval(&format!(
            "{script}; return Array.from(document.querySelectorAll('#matrix tbody tr[data-node]')).map(r => r.dataset.node)"
        ))
    };
    let camera = lab.node(2).unwrap().name.clone();
    let shown = rows(
        "const s = document.getElementById('filter-tag'); s.value = 'role=camera'; \
         s.dispatchEvent(new Event('change'))",
    );
    assert_eq!(shown, json!([camera]));
    let shown = rows(&format!(
        "const s = document.getElementById('filter-tag'); s.value = ''; \
         s.dispatchEvent(new Event('change')); const n = document.getElementById('filter-name'); \
         n.value = '{failing}'; n.dispatchEvent(new Event('input'))"
    ));
    assert_eq!(shown, json!([failing]));
    let url = format!("http://127.0.0.1:{reading}/api/action?action=resume&name=late.pp&seq=1");
    let origin = format!("http://127.0.0.1:{reading}");
    let code = lab
        .in_netns(
            move || match ureq::post(&url).set("Origin", &origin).call() {
                Ok(r) => r.status(),
                Err(ureq::Error::Status(code, _)) => code,
                Err(e) => panic!("{e}"),
            },
        )
        .unwrap();
    assert_eq!(code, 403);
    for &node in &waiting {
        assert_eq!(
            status(&lab, node, "late.pp"),
            Some(Status::Halted),
            "node {node}"
        );
    }
}
