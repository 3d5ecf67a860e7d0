//! A NAT lab in network namespaces: an "internet" namespace (100.64.0.0/24 on a bridge,
//! 100.64.0.1 for the proxy), and per LAN a router namespace (WAN 100.64.0.(1+k), LAN bridge
//! 192.168.k.1/24, iptables MASQUERADE, optionally `--random-fully` for a symmetric NAT, and
//! conntrack NEW dropped on the WAN side of INPUT and FORWARD like a real home router) with
//! node namespaces behind it (192.168.k.(10+j)). Traffic never leaves these namespaces.
//!
//! Only the topology is here: the namespaces, veths, addresses and routes are
//! `p2pu::lab::Netns`, the lab's own. Dropping the lab deletes its namespaces (last made, first
//! gone), which kills what still runs inside and removes their veths, bridges and iptables
//! rules; a lab left behind by a killed test run is removed by the next one (its owner pid is
//! in the names).

#![allow(dead_code)]

use p2pu::lab::{veth_pair, LabError, Netns};
use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Command, Output};

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
    /// Role ("inet", "r1", "n1x0") and namespace, in the order they were made.
    namespaces: Vec<(String, Netns)>,
}

impl Lab {
    /// Builds the internet namespace and `lans` (LAN k is numbered from 1).
    pub fn new(lans: &[Lan]) -> Lab {
        let mut lab = Lab {
            namespaces: Vec::new(),
        };
        let inet = lab.add_namespace("inet");
        ok(inet.add_bridge("br0"));
        ok(inet.add_addr_on("br0", PROXY_IP, 24));
        for (i, lan) in lans.iter().enumerate() {
            lab.add_lan(i + 1, lan);
        }
        lab
    }

    pub fn inet(&self) -> String {
        self.name_of("inet")
    }

    pub fn router(&self, lan: usize) -> String {
        self.name_of(&format!("r{lan}"))
    }

    pub fn node(&self, lan: usize, index: usize) -> String {
        self.name_of(&format!("n{lan}x{index}"))
    }

    pub fn router_wan_ip(lan: usize) -> Ipv4Addr {
        Ipv4Addr::new(100, 64, 0, 1 + lan as u8)
    }

    pub fn node_ip(lan: usize, index: usize) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, lan as u8, 10 + index as u8)
    }

    /// The namespace named `name` (as [`Lab::inet`], [`Lab::router`] and [`Lab::node`] give).
    pub fn ns(&self, name: &str) -> &Netns {
        self.namespaces
            .iter()
            .map(|(_, ns)| ns)
            .find(|ns| ns.name() == name)
            .unwrap_or_else(|| panic!("no namespace {name} in this NAT lab"))
    }

    fn name_of(&self, role: &str) -> String {
        self.namespaces
            .iter()
            .find(|(r, _)| r == role)
            .map(|(_, ns)| ns.name().to_owned())
            .unwrap_or_else(|| panic!("the NAT lab has no {role}"))
    }

    fn add_namespace(&mut self, role: &str) -> &Netns {
        let ns = ok(Netns::fresh(PREFIX));
        self.namespaces.push((role.to_owned(), ns));
        &self.namespaces[self.namespaces.len() - 1].1
    }

    fn add_lan(&mut self, k: usize, lan: &Lan) {
        let lan_ip = Ipv4Addr::new(192, 168, k as u8, 1);
        self.add_namespace(&format!("r{k}"));
        let (inet, router) = (self.ns(&self.inet()), self.ns(&self.router(k)));
        let wan_end = format!("r{k}");
        ok(veth_pair(router, "wan", inet, &wan_end));
        ok(inet.attach(&wan_end, "br0"));
        ok(router.add_addr_on("wan", Lab::router_wan_ip(k), 24));
        ok(router.link_up("wan"));
        ok(router.add_bridge("br0"));
        ok(router.add_addr_on("br0", lan_ip, 24));
        exec_ok(router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
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
        exec_ok(router, &masquerade);
        for chain in ["INPUT", "FORWARD"] {
            exec_ok(
                router,
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
                exec_ok(
                    router,
                    &["sysctl", "-qw", &format!("net.netfilter.{key}={secs}")],
                );
            }
        }
        for j in 0..lan.nodes {
            self.add_namespace(&format!("n{k}x{j}"));
            let (router, node) = (self.ns(&self.router(k)), self.ns(&self.node(k, j)));
            let end = format!("n{j}");
            ok(veth_pair(node, "eth0", router, &end));
            ok(router.attach(&end, "br0"));
            ok(node.add_addr_on("eth0", Lab::node_ip(k, j), 24));
            ok(node.link_up("eth0"));
            ok(node.default_route(lan_ip));
        }
    }

    /// `program` to be run inside namespace `ns`, from the thread that keeps what it starts
    /// (the child dies with the thread that spawned it).
    pub fn command(&self, ns: &str, program: &str) -> Command {
        ok(self.ns(ns).command(program))
    }

    /// Runs `args` in `ns`; panics with its stderr when it fails.
    pub fn exec_ok(&self, ns: &str, args: &[&str]) -> Output {
        exec_ok(self.ns(ns), args)
    }

    /// Runs `f` on a thread inside network namespace `ns` and returns its result; sockets it
    /// creates stay in that namespace wherever they are used later.
    pub fn within<T: Send>(&self, ns: &str, f: impl FnOnce() -> T + Send) -> T {
        ok(self.ns(ns).run(f))
    }

    /// A UDP socket bound inside `ns`.
    pub fn udp_socket(&self, ns: &str, bind: &str) -> UdpSocket {
        self.within(ns, || {
            UdpSocket::bind(bind).expect("binding in the namespace")
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Nodes before their router, routers before the internet.
        while let Some((_, ns)) = self.namespaces.pop() {
            drop(ns);
        }
    }
}

fn exec_ok(ns: &Netns, args: &[&str]) -> Output {
    ok(ns.exec_ok(args))
}

/// The value, or a panic with the lab error's whole cause chain.
fn ok<T>(result: Result<T, LabError>) -> T {
    result.unwrap_or_else(|e| panic!("{}", p2pu::error::chain(&e)))
}
