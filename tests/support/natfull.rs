//! Whole p2pu nodes behind NATs (`natlab.rs`, `natfleet.rs`): `p2pu init`, Serf, Transmission
//! as its own user, the agent and the nat-client per node, and what a test asks of one
//! (`p2pu` commands, its updates' status, its tracker's peers, its logs). Used by tests/nat.rs
//! and benches/nat_update.rs; the including crate declares `natfleet`, `natlab` and `support`.

#![allow(dead_code)]

use crate::natfleet::{Fleet, Node, BIN, PORT};
use crate::natlab::{Lab, PROXY_IP};
use crate::support::{wait_for, Daemon};
use std::io::Read;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

/// A whole p2pu node behind a NAT: its site.toml from the LAN lab's layout (every path under
/// its dir), `p2pu init`, Serf as a one-node fleet (no gossip crosses the NAT), Transmission
/// as its own user, the agent and the nat-client. Dropped in field order: the client first.
pub struct FullNode {
    pub info: p2pu::lab::NodeInfo,
    pub ns: String,
    pub nat: Node,
    _agent: Daemon,
    _transmission: Daemon,
    _serf: Daemon,
}

impl Fleet {
    /// Writes and inits the nodes `(lan, index, name)`; the first is the operator (holds the
    /// signing key), all trust it. Returns their configs, nothing started yet.
    pub fn full_configs(&self, specs: &[(usize, usize, &str)]) -> Vec<p2pu::lab::NodeInfo> {
        // Transmission runs as its own user and must reach the nodes' dirs.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("opening the lab dir");
        let nodes: Vec<_> = specs
            .iter()
            .map(|&(lan, index, name)| {
                let dir = self.dir.path().join(name);
                let overrides = format!(
                    "[nat]\nenabled = true\nproxy = \"{PROXY_IP}:{PORT}\"\nport = {PORT}\n\
                     keepalive_secs = 5\npeer_expiry_secs = 20\nfleet_secret_file = \"{}\"\n\
                     identity_key_file = \"{}\"\ncontrol_socket = \"{}\"\n\
                     # The tunnel ends are TCP only, and PEX would hand out LAN addresses\n\
                     # from across the NAT.\n[transmission]\nutp = false\npex = false\n",
                    self.dir.path().join("fleet.secret").display(),
                    dir.join("nat-identity.key").display(),
                    dir.join("control.sock").display()
                );
                let node = p2pu::lab::NodeInfo::standalone(
                    &dir,
                    name,
                    Lab::node_ip(lan, index),
                    Some(&overrides),
                )
                .expect("node config");
                p2pu::lab::init_node(std::path::Path::new(BIN), &node).expect("p2pu init");
                node
            })
            .collect();
        p2pu::lab::install_keys(&nodes[0], &nodes).expect("keys");
        nodes
    }

    /// Starts `info`'s processes inside LAN `lan`'s node `index`; returns once Transmission
    /// answers, the agent's tracker listens and the nat-client registered.
    pub fn start_full(&self, lan: usize, index: usize, info: p2pu::lab::NodeInfo) -> FullNode {
        let ns = self.lab.node(lan, index);
        let spawn = |what: &str, command: Command| {
            let (what, log) = (what.to_owned(), info.log(what));
            // Children inherit the spawning thread's namespace.
            self.lab
                .within(&ns, move || Daemon::spawn(&what, command, &log))
                .expect("spawn")
        };
        let serf = spawn("serf", p2pu::lab::serf_command(&info));
        let mut command = p2pu::lab::transmission_command(&info);
        let user = nix::unistd::User::from_name(&info.site.transmission.user)
            .expect("user lookup")
            .expect("the transmission user");
        {
            use std::os::unix::process::CommandExt;
            command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        let mut transmission = spawn("transmission", command);
        let client = p2pu::engines::Transmission::new(
            info.transmission_url(),
            Some(p2pu::engines::Credentials {
                user: info.site.transmission.rpc_user.clone(),
                password: info.transmission_password().expect("rpc password"),
            }),
        )
        .with_retry(p2pu::engines::Retry::none());
        let answered = self.lab.within(&ns, move || {
            use p2pu::engines::TorrentEngine;
            wait_for(Duration::from_secs(15), || client.session_get().ok())
        });
        if answered.is_none() {
            panic!("{}", transmission.failed("did not answer RPC"));
        }
        let mut agent = spawn("agent", p2pu::lab::agent_command(BIN.as_ref(), &info));
        let port = info.site.agent.tracker_port;
        let listening = self.lab.within(&ns, move || {
            wait_for(Duration::from_secs(15), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).ok()
            })
            .is_some()
        });
        if !listening {
            panic!("{}", agent.failed("did not open its tracker"));
        }
        let mut command = self.lab.command(&ns, BIN);
        command.args(["nat-client", "--config"]).arg(&info.config);
        let daemon = Daemon::spawn(
            format!("nat-client {}", info.name),
            command,
            &info.log("nat-client"),
        )
        .expect("nat-client");
        let mut nat = Node {
            name: info.name.clone(),
            socket: info.site.nat.control_socket.clone(),
            spool: info.site.agent.spool_dir.clone(),
            daemon,
        };
        let registered = wait_for(Duration::from_secs(10), || {
            nat.try_status()
                .filter(|s| s.registered && s.mapped.is_some())
        });
        if registered.is_none() {
            panic!("{}", nat.daemon.failed("did not register"));
        }
        FullNode {
            info,
            ns,
            nat,
            _agent: agent,
            _transmission: transmission,
            _serf: serf,
        }
    }
}

impl FullNode {
    /// `p2pu ARGS` with the node's site.toml (`P2PU_CONFIG`) inside its namespace: (exit
    /// code, stdout, stderr).
    pub fn p2pu(&self, lab: &Lab, args: &[&str]) -> (i32, String, String) {
        let out = lab
            .command(&self.ns, BIN)
            .args(args)
            .env("P2PU_CONFIG", &self.info.config)
            .output()
            .expect("running p2pu");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn update_status(
        &self,
        lab: &Lab,
        name: &str,
    ) -> Option<p2pu::agent::runtime::state::Status> {
        let (code, out, _) = self.p2pu(lab, &["status", "--json"]);
        let report: p2pu::agent::runtime::status::StatusReport =
            p2pu::cmd::json::decode(out.as_bytes())
                .ok()
                .filter(|_| code == 0 || code == 3)?;
        report
            .updates
            .into_iter()
            .find(|u| u.name == name)
            .map(|u| u.status)
    }

    /// The peers the agent's tracker hands an announce (compact, BEP 23).
    pub fn tracker_peers(&self, lab: &Lab) -> Vec<SocketAddr> {
        let port = self.info.site.agent.tracker_port;
        let body = lab.within(&self.ns, move || {
            let url = format!(
                "http://127.0.0.1:{port}/announce?info_hash=aaaaaaaaaaaaaaaaaaaa\
                 &peer_id=-TEST-0123456789abcd&port=1&uploaded=0&downloaded=0&left=0&compact=1"
            );
            let mut body = Vec::new();
            ureq::get(&url)
                .call()
                .expect("announce to the agent's tracker")
                .into_reader()
                .read_to_end(&mut body)
                .expect("tracker answer");
            body
        });
        let key = b"5:peers";
        let at = body
            .windows(key.len())
            .position(|w| w == key)
            .unwrap_or_else(|| panic!("no peers in {:?}", String::from_utf8_lossy(&body)))
            + key.len();
        let colon = at + body[at..].iter().position(|&b| b == b':').expect("length");
        let len: usize = std::str::from_utf8(&body[at..colon])
            .expect("length digits")
            .parse()
            .expect("length");
        body[colon + 1..colon + 1 + len]
            .chunks(6)
            .map(|c| {
                let ip = std::net::Ipv4Addr::new(c[0], c[1], c[2], c[3]);
                SocketAddr::from((ip, u16::from_be_bytes([c[4], c[5]])))
            })
            .collect()
    }

    pub fn dump_logs(&self, lab: &Lab) -> String {
        let auth = format!(
            "{}:{}",
            self.info.site.transmission.rpc_user,
            self.info.transmission_password().unwrap_or_default()
        );
        let url = format!("127.0.0.1:{}", self.info.site.transmission.rpc_port);
        let peers = lab
            .command(&self.ns, "transmission-remote")
            .args([&url, "-n", &auth, "-t", "all", "-i", "-pi"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let sockets = lab
            .command(&self.ns, "ss")
            .args(["-tanp"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let mut text = format!("--- {} torrents\n{peers}\n{sockets}", self.info.name);
        for what in ["nat-client", "agent", "transmission"] {
            let log = std::fs::read_to_string(self.info.log(what)).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(25).collect();
            text.push_str(&format!("--- {} {what}\n", self.info.name));
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}
