//! Harness for tests that drive the real engines: free loopback ports, polling helpers, and
//! starters for a Transmission daemon and a Serf agent that return once their RPC answers.
//! The process guard is the lab's ([`Daemon`]: its whole process group dies on drop, also when
//! a test panics); a test that wants them inside a network namespace calls the starters on a
//! thread in it (`p2pu::lab::Netns::run`).
//!
//! Everything a daemon writes goes under the directory the test passes in (a temp dir).

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

pub mod prereq;
pub mod testlab;

pub use p2pu::lab::Daemon;

use anyhow::{bail, Context, Result};
use p2pu::engines::{Credentials, Gossip, Retry, Serf, TorrentEngine, Transmission};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a daemon gets to answer its RPC after start.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A port on 127.0.0.1 that is free for both TCP and UDP right now (Serf and Transmission use
/// both on the same number).
pub fn free_port() -> u16 {
    free_port_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// A port on `ip` that is free for both TCP and UDP right now.
pub fn free_port_on(ip: IpAddr) -> u16 {
    for _ in 0..100 {
        let tcp = match TcpListener::bind((ip, 0)) {
            Ok(listener) => listener,
            Err(e) => panic!("binding a TCP port on {ip}: {e}"),
        };
        let port = match tcp.local_addr() {
            Ok(addr) => addr.port(),
            Err(e) => panic!("reading the bound address: {e}"),
        };
        if UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no port on {ip} free for both TCP and UDP after 100 tries");
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    wait_for(timeout, || cond().then_some(())).is_some()
}

/// Polls `probe` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Merges `extra` over `base`.
fn merged(mut base: Value, extra: &Map<String, Value>) -> Value {
    if let Value::Object(map) = &mut base {
        for (key, value) in extra {
            map.insert(key.clone(), value.clone());
        }
    }
    base
}

pub struct TransmissionOpts {
    /// Where the RPC listens; also the only address on its whitelist.
    pub rpc_bind: IpAddr,
    pub rpc_port: u16,
    pub peer_port: u16,
    pub user: String,
    pub password: String,
    /// settings.json keys that override the harness's defaults (e.g. `bind-address-ipv4`).
    pub extra: Map<String, Value>,
}

impl TransmissionOpts {
    pub fn new(rpc_port: u16, peer_port: u16, user: &str, password: &str) -> TransmissionOpts {
        TransmissionOpts {
            rpc_bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            rpc_port,
            peer_port,
            user: user.to_owned(),
            password: password.to_owned(),
            extra: Map::new(),
        }
    }
}

/// A `transmission-daemon -f` with its config in `config_dir` and data in `download_dir`.
pub struct TransmissionDaemon {
    pub daemon: Daemon,
    pub config_dir: PathBuf,
    pub download_dir: PathBuf,
    pub url: String,
    pub credentials: Credentials,
}

impl TransmissionDaemon {
    /// A client with the daemon's credentials.
    pub fn client(&self) -> Transmission {
        Transmission::new(self.url.clone(), Some(self.credentials.clone()))
    }
}

/// Starts Transmission with RPC on 127.0.0.1:`rpc_port` (auth required) and peers on
/// `peer_port`, config and downloads under `dir`; returns once the RPC answers.
pub fn start_transmission(
    dir: &Path,
    rpc_port: u16,
    peer_port: u16,
    user: &str,
    password: &str,
) -> Result<TransmissionDaemon> {
    start_transmission_with(
        dir,
        TransmissionOpts::new(rpc_port, peer_port, user, password),
    )
}

pub fn start_transmission_with(dir: &Path, opts: TransmissionOpts) -> Result<TransmissionDaemon> {
    let config_dir = dir.join("transmission");
    let download_dir = dir.join("downloads");
    for d in [&config_dir, &download_dir] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let settings = json!({
        "rpc-enabled": true,
        "rpc-bind-address": opts.rpc_bind.to_string(),
        "rpc-port": opts.rpc_port,
        "rpc-authentication-required": true,
        "rpc-username": opts.user,
        // Plain text here; the daemon salts and hashes it when it rewrites the file.
        "rpc-password": opts.password,
        "rpc-whitelist-enabled": true,
        "rpc-whitelist": opts.rpc_bind.to_string(),
        "peer-port": opts.peer_port,
        "peer-port-random-on-start": false,
        "port-forwarding-enabled": false,
        "dht-enabled": false,
        "lpd-enabled": false,
        "download-dir": download_dir,
        "incomplete-dir-enabled": false,
        "watch-dir-enabled": false,
        "blocklist-enabled": false,
        "message-level": 2,
    });
    let settings = merged(settings, &opts.extra);
    let path = config_dir.join("settings.json");
    fs::write(&path, serde_json::to_vec_pretty(&settings)?)
        .with_context(|| format!("writing {}", path.display()))?;

    let mut command = Command::new("transmission-daemon");
    command.arg("-f").arg("-g").arg(&config_dir);
    let mut daemon = Daemon::spawn(
        "transmission-daemon",
        command,
        &dir.join("transmission.log"),
    )?;
    let url = format!(
        "http://{}/transmission/rpc",
        SocketAddr::new(opts.rpc_bind, opts.rpc_port)
    );
    let credentials = Credentials {
        user: opts.user,
        password: opts.password,
    };
    let probe = Transmission::new(url.clone(), Some(credentials.clone())).with_retry(Retry::none());
    let answered = wait_until(START_TIMEOUT, || {
        probe.session_get().is_ok() || !daemon.is_running()
    });
    if !answered || !daemon.is_running() {
        return Err(daemon
            .failed(&format!("did not answer RPC at {url}"))
            .into());
    }
    Ok(TransmissionDaemon {
        daemon,
        config_dir,
        download_dir,
        url,
        credentials,
    })
}

pub struct SerfOpts {
    pub name: String,
    pub bind: SocketAddr,
    pub rpc: SocketAddr,
    pub rpc_auth: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// `event_handlers` entries (`[filter=]script`); Serf runs each through `/bin/sh -c`.
    pub event_handlers: Vec<String>,
    /// Agents to join at start (`start_join`).
    pub join: Vec<SocketAddr>,
    /// Config keys that override the harness's (e.g. `profile`, `user_event_size_limit`).
    pub extra: Map<String, Value>,
}

impl SerfOpts {
    pub fn new(name: &str, bind: SocketAddr, rpc: SocketAddr) -> SerfOpts {
        SerfOpts {
            name: name.to_owned(),
            bind,
            rpc,
            rpc_auth: None,
            tags: BTreeMap::new(),
            event_handlers: Vec::new(),
            join: Vec::new(),
            extra: Map::new(),
        }
    }
}

/// A `serf agent` with its JSON config dir under the test's directory.
pub struct SerfAgent {
    pub daemon: Daemon,
    pub name: String,
    pub bind: SocketAddr,
    pub rpc: SocketAddr,
    pub rpc_auth: Option<String>,
    pub config_dir: PathBuf,
}

impl SerfAgent {
    /// A client for this agent's RPC.
    pub fn client(&self) -> Serf {
        Serf::new(self.rpc.to_string()).with_auth(self.rpc_auth.clone())
    }
}

/// Starts a Serf agent named `name` gossiping on `bind` with RPC on `rpc`; returns once its
/// RPC lists the agent itself.
pub fn start_serf(dir: &Path, name: &str, bind: SocketAddr, rpc: SocketAddr) -> Result<SerfAgent> {
    start_serf_with(dir, SerfOpts::new(name, bind, rpc))
}

pub fn start_serf_with(dir: &Path, opts: SerfOpts) -> Result<SerfAgent> {
    let config_dir = dir.join(format!("serf-{}", opts.name));
    fs::create_dir_all(&config_dir)
        .with_context(|| format!("creating {}", config_dir.display()))?;
    let mut config = json!({
        "node_name": opts.name,
        "bind": opts.bind.to_string(),
        "rpc_addr": opts.rpc.to_string(),
        "tags": opts.tags,
        "event_handlers": opts.event_handlers,
        "start_join": opts.join.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "log_level": "debug",
    });
    if let (Some(key), Value::Object(map)) = (&opts.rpc_auth, &mut config) {
        map.insert("rpc_auth".into(), Value::String(key.clone()));
    }
    let config = merged(config, &opts.extra);
    let path = config_dir.join("agent.json");
    fs::write(&path, serde_json::to_vec_pretty(&config)?)
        .with_context(|| format!("writing {}", path.display()))?;

    let mut command = Command::new("serf");
    command
        .arg("agent")
        .arg(format!("-config-dir={}", config_dir.display()));
    let log = dir.join(format!("serf-{}.log", opts.name));
    let mut daemon = Daemon::spawn(format!("serf agent {}", opts.name), command, &log)?;
    let client = Serf::new(opts.rpc.to_string()).with_auth(opts.rpc_auth.clone());
    let answered = wait_until(START_TIMEOUT, || {
        let listed = client
            .members()
            .map(|members| members.iter().any(|m| m.name == opts.name))
            .unwrap_or(false);
        listed || !daemon.is_running()
    });
    if !answered || !daemon.is_running() {
        return Err(daemon
            .failed(&format!("did not answer RPC at {}", opts.rpc))
            .into());
    }
    Ok(SerfAgent {
        daemon,
        name: opts.name,
        bind: opts.bind,
        rpc: opts.rpc,
        rpc_auth: opts.rpc_auth,
        config_dir,
    })
}

/// Fails unless `agent` sees exactly `names` as alive members within `timeout`.
pub fn wait_for_members(agent: &SerfAgent, names: &[&str], timeout: Duration) -> Result<()> {
    let client = agent.client();
    let mut last = Vec::new();
    let converged = wait_until(timeout, || {
        last = client
            .members()
            .map(|members| {
                let mut alive: Vec<String> = members
                    .into_iter()
                    .filter(|m| m.status == p2pu::engines::MemberStatus::Alive)
                    .map(|m| m.name)
                    .collect();
                alive.sort();
                alive
            })
            .unwrap_or_default();
        let mut want: Vec<&str> = names.to_vec();
        want.sort_unstable();
        last == want
    });
    if !converged {
        bail!("{} sees alive members {last:?}, want {names:?}", agent.name);
    }
    Ok(())
}
