//! A NAT lab in network namespaces: an "internet" namespace (100.64.0.0/24 on a bridge,
//! 100.64.0.1 for the proxy), and per LAN a router namespace (WAN 100.64.0.(1+k), LAN bridge
//! 192.168.k.1/24, iptables MASQUERADE, optionally `--random-fully` for a symmetric NAT, and
//! conntrack NEW dropped on the WAN side of INPUT and FORWARD like a real home router) with
//! node namespaces behind it (192.168.k.(10+j)). Traffic never leaves these namespaces.
//!
//! Dropping the lab kills what still runs inside its namespaces and deletes them, which also
//! removes their veths, bridges and iptables rules; a lab left behind by a killed test run is
//! removed by the next one (its owner pid is in the name).

#![allow(dead_code)]

use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

const PREFIX: &str = "p2pu-natlab-";
pub const PROXY_IP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);

/// One LAN behind its own router.
#[derive(Debug, Clone, Copy)]
pub struct Lan {
    pub nodes: usize,
    /// `MASQUERADE --random-fully`: a new random port per destination (symmetric NAT).
    pub symmetric: bool,
    /// `nf_conntrack_udp_timeout` and `_stream` in the router, seconds.
    pub udp_timeout: Option<u32>,
}

impl Lan {
    pub fn cone(nodes: usize) -> Lan {
        Lan {
            nodes,
            symmetric: false,
            udp_timeout: None,
        }
    }

    pub fn symmetric(nodes: usize) -> Lan {
        Lan {
            symmetric: true,
            ..Lan::cone(nodes)
        }
    }
}

pub struct Lab {
    id: String,
    namespaces: Vec<String>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Lab {
    /// Builds the internet namespace and `lans` (LAN k is numbered from 1).
    pub fn new(lans: &[Lan]) -> Lab {
        remove_stale_labs();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let mut lab = Lab {
            id: format!("{PREFIX}{}-{n}", std::process::id()),
            namespaces: Vec::new(),
        };
        let inet = lab.inet();
        lab.add_namespace(&inet);
        ip(&["-n", &inet, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &inet, "addr", "add", "100.64.0.1/24", "dev", "br0"]);
        ip(&["-n", &inet, "link", "set", "br0", "up"]);
        for (i, lan) in lans.iter().enumerate() {
            lab.add_lan(i + 1, lan);
        }
        lab
    }

    pub fn inet(&self) -> String {
        format!("{}-inet", self.id)
    }

    pub fn router(&self, lan: usize) -> String {
        format!("{}-r{lan}", self.id)
    }

    pub fn node(&self, lan: usize, index: usize) -> String {
        format!("{}-n{lan}x{index}", self.id)
    }

    pub fn router_wan_ip(lan: usize) -> Ipv4Addr {
        Ipv4Addr::new(100, 64, 0, 1 + lan as u8)
    }

    pub fn node_ip(lan: usize, index: usize) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, lan as u8, 10 + index as u8)
    }

    fn add_namespace(&mut self, name: &str) {
        run(Command::new("ip").args(["netns", "add", name]));
        self.namespaces.push(name.to_owned());
        ip(&["-n", name, "link", "set", "lo", "up"]);
    }

    fn add_lan(&mut self, k: usize, lan: &Lan) {
        let inet = self.inet();
        let router = self.router(k);
        self.add_namespace(&router);
        let wan_end = format!("r{k}");
        ip(&[
            "-n", &router, "link", "add", "wan", "type", "veth", "peer", "name", &wan_end, "netns",
            &inet,
        ]);
        ip(&["-n", &inet, "link", "set", &wan_end, "master", "br0", "up"]);
        let wan_ip = format!("{}/24", Lab::router_wan_ip(k));
        ip(&["-n", &router, "addr", "add", &wan_ip, "dev", "wan"]);
        ip(&["-n", &router, "link", "set", "wan", "up"]);
        ip(&["-n", &router, "link", "add", "br0", "type", "bridge"]);
        ip(&[
            "-n",
            &router,
            "addr",
            "add",
            &format!("192.168.{k}.1/24"),
            "dev",
            "br0",
        ]);
        ip(&["-n", &router, "link", "set", "br0", "up"]);
        self.exec_ok(&router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let mut masquerade = vec![
            "iptables",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            "wan",
            "-j",
            "MASQUERADE",
        ];
        if lan.symmetric {
            masquerade.push("--random-fully");
        }
        self.exec_ok(&router, &masquerade);
        for chain in ["INPUT", "FORWARD"] {
            self.exec_ok(
                &router,
                &[
                    "iptables",
                    "-A",
                    chain,
                    "-i",
                    "wan",
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "NEW",
                    "-j",
                    "DROP",
                ],
            );
        }
        if let Some(secs) = lan.udp_timeout {
            // Per network namespace on this kernel; conntrack is loaded by the rules above.
            for key in [
                "nf_conntrack_udp_timeout",
                "nf_conntrack_udp_timeout_stream",
            ] {
                self.exec_ok(
                    &router,
                    &["sysctl", "-qw", &format!("net.netfilter.{key}={secs}")],
                );
            }
        }
        for j in 0..lan.nodes {
            let node = self.node(k, j);
            self.add_namespace(&node);
            let end = format!("n{j}");
            ip(&[
                "-n", &node, "link", "add", "eth0", "type", "veth", "peer", "name", &end, "netns",
                &router,
            ]);
            ip(&["-n", &router, "link", "set", &end, "master", "br0", "up"]);
            let addr = format!("{}/24", Lab::node_ip(k, j));
            ip(&["-n", &node, "addr", "add", &addr, "dev", "eth0"]);
            ip(&["-n", &node, "link", "set", "eth0", "up"]);
            ip(&[
                "-n",
                &node,
                "route",
                "add",
                "default",
                "via",
                &format!("192.168.{k}.1"),
            ]);
        }
    }

    /// `program` to be run inside namespace `ns`.
    pub fn command(&self, ns: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns, program]);
        command
    }

    /// Runs `args` in `ns`; panics with its stderr when it fails.
    pub fn exec_ok(&self, ns: &str, args: &[&str]) -> Output {
        let (program, rest) = args.split_first().expect("a command");
        let mut command = self.command(ns, program);
        command.args(rest);
        run(&mut command)
    }

    /// Runs `f` on a thread inside network namespace `ns` and returns its result; sockets it
    /// creates stay in that namespace wherever they are used later.
    pub fn within<T: Send + 'static>(&self, ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("opening the namespace");
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("entering the namespace");
            f()
        })
        .join()
        .expect("namespace thread")
    }

    /// A UDP socket bound inside `ns`.
    pub fn udp_socket(&self, ns: &str, bind: &str) -> UdpSocket {
        let bind = bind.to_owned();
        self.within(ns, move || {
            UdpSocket::bind(&bind).expect("binding in the namespace")
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            delete_namespace(ns);
        }
    }
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    if !output.status.success() {
        panic!(
            "{command:?} {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    output
}

/// Kills what runs in `ns` (only processes the lab started live there) and deletes it.
fn delete_namespace(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
}

/// Removes labs whose owning test process is gone.
fn remove_stale_labs() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let owner = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = owner {
            if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                delete_namespace(name);
            }
        }
    }
}
