//! A fleet of `p2pu proxy` and `p2pu nat-client`s in a NAT lab (`natlab.rs`): their configs
//! under one temp dir with a shared fleet secret, starters that return once the proxy listens
//! and a client registered, a client's control socket (`p2pu event`), and a stand-in for
//! Transmission's peer port behind a tunnel. Used by tests/nat.rs and benches/nat_footprint.rs;
//! the including crate declares `natlab` and `support` (tests/support/mod.rs) beside it.

#![allow(dead_code)]

use crate::natlab::{Lab, Lan, PROXY_IP};
use crate::support::{wait_for, Daemon};
use p2pu::nat::control::ClientStatus;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_p2pu");
pub const PORT: u16 = 3478;
pub const SECRET: &str = "lab-fleet-secret-0123456789abcdefghijklmnop";

pub struct Fleet {
    pub lab: Lab,
    pub dir: tempfile::TempDir,
}

pub struct Node {
    pub name: String,
    pub socket: PathBuf,
    pub spool: PathBuf,
    pub daemon: Daemon,
}

pub struct NodeOpts {
    pub keepalive: u32,
    pub peer_expiry: u32,
    pub stun_server: Option<SocketAddr>,
}

impl Default for NodeOpts {
    fn default() -> Self {
        NodeOpts {
            keepalive: 5,
            peer_expiry: 20,
            stun_server: None,
        }
    }
}

impl Fleet {
    pub fn new(lans: &[Lan]) -> Fleet {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("fleet.secret"), format!("{SECRET}\n")).expect("secret");
        Fleet {
            lab: Lab::new(lans),
            dir,
        }
    }

    pub fn config(&self, name: &str, body: &str) -> PathBuf {
        self.config_in(name, name, body)
    }

    /// A config for node `name` kept in `dir` (another node's files, for an impostor).
    pub fn config_in(&self, dir: &str, name: &str, body: &str) -> PathBuf {
        let base = self.dir.path().join(dir);
        std::fs::create_dir_all(&base).expect("node dir");
        let text = format!(
            "[node]\nname = \"{name}\"\n{body}\n\
             [agent]\nspool_dir = \"{base}/spool\"\nstate_dir = \"{base}/state\"\n",
            base = base.display()
        );
        let path = base.join("site.toml");
        std::fs::write(&path, text).expect("config");
        path
    }

    pub fn start_proxy(&self) -> Daemon {
        let config = self.config(
            "proxy",
            &format!(
                "role = \"proxy\"\n[nat]\nport = {PORT}\nfleet_secret_file = \"{}\"\n\
                 relay_rate_kbps = 512\nproxy_state_dir = \"{}\"\n",
                self.dir.path().join("fleet.secret").display(),
                self.dir.path().join("proxy").display()
            ),
        );
        let mut command = self.lab.command(&self.lab.inet(), BIN);
        command.args(["proxy", "--config"]).arg(&config);
        let log = self.dir.path().join("proxy").join("log");
        let mut daemon = Daemon::spawn("p2pu proxy", command, &log).expect("proxy");
        let up = wait_for(Duration::from_secs(5), || {
            daemon.log().contains("proxy listening").then_some(())
        });
        if up.is_none() {
            panic!("{}", daemon.failed("did not listen"));
        }
        daemon
    }

    pub fn start_node(&self, lan: usize, index: usize, name: &str, opts: NodeOpts) -> Node {
        let (socket, daemon) = self.spawn_client(lan, index, name, name, &opts);
        let mut node = Node {
            name: name.to_owned(),
            spool: self.dir.path().join(name).join("spool"),
            socket,
            daemon,
        };
        let registered = wait_for(Duration::from_secs(10), || {
            node.try_status()
                .filter(|s| s.registered && s.mapped.is_some())
        });
        if registered.is_none() {
            panic!("{}", node.daemon.failed("did not register"));
        }
        node
    }

    /// A nat-client for node `name` with the fleet secret but its own identity key (its
    /// files in `dir`), not waiting for it to register.
    pub fn start_impostor(&self, lan: usize, index: usize, dir: &str, name: &str) -> Daemon {
        self.spawn_client(lan, index, dir, name, &NodeOpts::default())
            .1
    }

    /// Spawns `p2pu nat-client` for node `name` with its files (a fresh identity key the first
    /// time) in `dir`; returns its control socket and the daemon.
    fn spawn_client(
        &self,
        lan: usize,
        index: usize,
        dir: &str,
        name: &str,
        opts: &NodeOpts,
    ) -> (PathBuf, Daemon) {
        let stun = opts
            .stun_server
            .map(|s| format!("stun_server = \"{s}\"\n"))
            .unwrap_or_default();
        let base = self.dir.path().join(dir);
        let socket = base.join("control.sock");
        let key = base.join("nat-identity.key");
        std::fs::create_dir_all(&base).expect("node dir");
        if !key.exists() {
            let text = p2pu::keys::secret_to_text(&p2pu::keys::generate());
            std::fs::write(&key, text).expect("identity key");
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
                .expect("key mode");
        }
        let config = self.config_in(
            dir,
            name,
            &format!(
                "[nat]\nenabled = true\nproxy = \"{PROXY_IP}:{PORT}\"\nport = {PORT}\n\
                 keepalive_secs = {}\npeer_expiry_secs = {}\nfleet_secret_file = \"{}\"\n\
                 identity_key_file = \"{}\"\ncontrol_socket = \"{}\"\n{stun}",
                opts.keepalive,
                opts.peer_expiry.max(opts.keepalive * 2),
                self.dir.path().join("fleet.secret").display(),
                key.display(),
                socket.display()
            ),
        );
        let mut command = self.lab.command(&self.lab.node(lan, index), BIN);
        command.args(["nat-client", "--config"]).arg(&config);
        let log = base.join("log");
        let daemon = Daemon::spawn(format!("nat-client {name}"), command, &log).expect("client");
        (socket, daemon)
    }
}

impl Node {
    /// `p2pu event ARGS` against this node's client: (exit code, stdout, stderr).
    pub fn event(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(BIN)
            .arg("event")
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("running p2pu event");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn try_status(&self) -> Option<ClientStatus> {
        if !self.socket.exists() {
            return None;
        }
        let (code, out, _) = self.event(&["status", "--json"]);
        (code == 0)
            .then(|| p2pu::cmd::json::decode(out.as_bytes()).ok())
            .flatten()
    }

    pub fn status(&self) -> ClientStatus {
        let (code, out, err) = self.event(&["status", "--json"]);
        assert_eq!(code, 0, "status of {}: {err}", self.name);
        p2pu::cmd::json::decode(out.as_bytes()).expect("status JSON")
    }

    pub fn talkto(&mut self, peer: &str) -> String {
        let (code, out, err) = self.event(&["talkto", peer]);
        if code != 0 {
            panic!("{}", self.daemon.failed(&format!("talkto {peer}: {err}")));
        }
        out.trim().to_owned()
    }

    /// Sends `wire` to the session peers; the answer once they acknowledged it.
    pub fn announce(&mut self, wire: &str) -> String {
        let file = self.spool.with_file_name("announcement");
        std::fs::write(&file, wire).expect("announcement file");
        let (code, out, err) = self.event(&["announce", file.to_str().expect("utf-8 path")]);
        if code != 0 {
            panic!("{}", self.daemon.failed(&format!("announce: {err}")));
        }
        out.trim().to_owned()
    }

    pub fn spooled(&self) -> Vec<Vec<u8>> {
        p2pu::agent::runtime::spool::list(&self.spool)
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p2pu::agent::runtime::spool::read(p).ok().flatten())
            .map(|e| e.payload)
            .collect()
    }

    pub fn peer_path(&self, peer: &str) -> Option<String> {
        self.status()
            .peers
            .into_iter()
            .find(|p| p.node == peer)
            .map(|p| p.path)
    }

    /// Where this node's tunnel to `peer` takes connections (inside the node's namespace).
    pub fn tunnel_end(&self, peer: &str) -> Option<SocketAddr> {
        self.status()
            .peers
            .into_iter()
            .find(|p| p.node == peer)
            .and_then(|p| p.tunnel)
    }
}

/// Stands in for Transmission on `ns`'s port 51413 (the default peer port): reads a
/// connection to its end and answers with `tag` and what it read.
pub fn fake_transmission(lab: &Lab, ns: &str, tag: &'static str) {
    let listener = lab.within(ns, || {
        std::net::TcpListener::bind(("0.0.0.0", 51413)).expect("fake transmission port")
    });
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut got = Vec::new();
                if stream.read_to_end(&mut got).is_ok() {
                    let _ = stream.write_all(tag.as_bytes());
                    let _ = stream.write_all(&got);
                }
            });
        }
    });
}

/// Sends `payload` through `node`'s tunnel end for `peer` (from inside `ns`) and returns the
/// answer of the peer's (fake) Transmission.
pub fn through_tunnel(lab: &Lab, ns: &str, node: &Node, peer: &str, payload: Vec<u8>) -> Vec<u8> {
    let end = node
        .tunnel_end(peer)
        .unwrap_or_else(|| panic!("{} has no tunnel end for {peer}", node.name));
    lab.within(ns, move || {
        let mut stream = std::net::TcpStream::connect(end).expect("connecting the tunnel end");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        stream.write_all(&payload).expect("writing into the tunnel");
        stream
            .shutdown(std::net::Shutdown::Write)
            .expect("half-close");
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .expect("reading from the tunnel");
        answer
    })
}
