//! Links the lab's nodes as a real fleet has them: each node's traffic shaped with htb, both
//! ways (its sending on the namespace's `lo`, its receiving on an ifb that `lo`'s ingress is
//! mirrored to), at a rate per node; and faults a node can suffer (a crash, a hang).

use super::fleet::Lab;
use super::{io, LabError, Result};
use nix::sys::signal::Signal;
use std::process::Command;

impl Lab {
    /// Shapes node `i`'s link to `mbit[i - 1]` Mbit/s each way (nodes past the list keep it
    /// unshaped). Once per lab.
    pub fn shape(&self, mbit: &[u32]) -> Result<()> {
        let ns = self.netns_name().to_owned();
        let run = |program: &str, args: &[&str], line: &str| -> Result<()> {
            let mut command = Command::new(program);
            command.args(args).args(line.split_whitespace());
            let out = command.output().map_err(io("running", program))?;
            if out.status.success() {
                return Ok(());
            }
            Err(LabError::Shape {
                command: format!("{program} {} {line}", args.join(" ")),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        };
        let tc = |line: &str| run("ip", &["netns", "exec", &ns, "tc"], line);
        let ip = |line: &str| run("ip", &["-n", &ns], line);
        ip("link set dev lo mtu 1500")?;
        ip("link add ifb0 type ifb")?;
        ip("link set dev ifb0 up")?;
        tc("qdisc add dev lo handle ffff: ingress")?;
        tc("filter add dev lo parent ffff: protocol ip prio 1 u32 match u32 0 0 action mirred egress redirect dev ifb0")?;
        for (dev, dir) in [("lo", "src"), ("ifb0", "dst")] {
            tc(&format!(
                "qdisc add dev {dev} root handle 1: htb default ff"
            ))?;
            tc(&format!(
                "class add dev {dev} parent 1: classid 1:ff htb rate 10gbit"
            ))?;
            for (i, rate) in mbit.iter().enumerate() {
                let node = i + 1;
                let addr = self.node(node)?.addr;
                tc(&format!(
                    "class add dev {dev} parent 1: classid 1:{node:x} htb rate {rate}mbit ceil {rate}mbit"
                ))?;
                tc(&format!(
                    "filter add dev {dev} parent 1: protocol ip prio 1 u32 match ip {dir} {addr}/32 flowid 1:{node:x}"
                ))?;
            }
        }
        Ok(())
    }

    /// Changes node `index`'s rate each way, on a lab [`Lab::shape`] shaped, while it runs
    /// (a member's link turning slow mid-transfer, after the plan was fixed).
    pub fn reshape(&self, index: usize, mbit: u32) -> Result<()> {
        self.node(index)?;
        let ns = self.netns_name().to_owned();
        for dev in ["lo", "ifb0"] {
            let line = format!(
                "class change dev {dev} parent 1: classid 1:{index:x} htb rate {mbit}mbit ceil {mbit}mbit"
            );
            let out = Command::new("ip")
                .args(["netns", "exec", &ns, "tc"])
                .args(line.split_whitespace())
                .output()
                .map_err(io("running", "ip"))?;
            if !out.status.success() {
                return Err(LabError::Shape {
                    command: format!("tc {line}"),
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
        }
        Ok(())
    }

    /// Sends `signal` to node `index`'s agent and its serving child (SIGSTOP: hung, alive to
    /// Serf; SIGCONT: resumed).
    pub fn signal_agent(&mut self, index: usize, signal: Signal) -> Result<()> {
        if let Some(agent) = self.procs_mut(index)?.agent.as_mut() {
            agent.signal(signal);
        }
        Ok(())
    }

    /// SIGKILLs every process of node `index` at once: a crash or a power cut, with no
    /// chance to say goodbye to anyone.
    pub fn crash_node(&mut self, index: usize) -> Result<()> {
        let procs = self.procs_mut(index)?;
        for guard in procs.all() {
            guard.signal(Signal::SIGKILL);
        }
        self.stop_node(index)
    }
}
