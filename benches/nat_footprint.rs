//! Issue 8, item 4 for the NAT side: the footprint (VmRSS, VmHWM) of two `p2pu nat-client`s
//! and the `p2pu proxy`, idle after registration and during and after N MiB streamed through
//! a nat-client tunnel, plus the transfer's throughput for context.
//!
//! `cargo bench --bench nat_footprint [-- --mib N]` (root; default 64 MiB). The fleet is the
//! NAT lab of tests/nat.rs (tests/support/natfleet.rs): one cone-NAT LAN per client, the
//! proxy on the lab's "internet". Client a's tunnel end for b takes a TCP connection inside
//! a's namespace; b's client delivers the stream to a sink on b's Transmission port, which
//! discards it and answers the byte count. Every process and namespace is the lab's and goes
//! with it, also on failure. Prints a table; asserts nothing about timings.

#[path = "support/mod.rs"]
mod bench;
#[path = "../tests/support/natfleet.rs"]
mod natfleet;
#[path = "../tests/support/natlab.rs"]
mod natlab;
#[path = "../tests/support/mod.rs"]
mod support;

use bench::{machine, rss_kib, Res};
use natfleet::{Fleet, NodeOpts, BIN};
use natlab::{Lab, Lan};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Transmission's default peer port: where b's client delivers incoming tunnel streams.
const PEER_PORT: u16 = 51413;
/// How long one write into, or the wait for the answer from, the tunnel may stall.
const STALL: Duration = Duration::from_secs(60);

/// Takes connections on `ns`'s peer port; reads each to its end and answers the byte count.
fn sink(lab: &Lab, ns: &str) -> Res<()> {
    let listener = lab.within(ns, || TcpListener::bind(("0.0.0.0", PEER_PORT)))?;
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                if let Ok(count) = std::io::copy(&mut stream, &mut std::io::sink()) {
                    let _ = stream.write_all(format!("{count}\n").as_bytes());
                }
            });
        }
    });
    Ok(())
}

/// Streams `mib` MiB into `end` from inside `ns`; returns the sink's count and the seconds
/// from connect to its answer.
fn transfer(lab: &Lab, ns: &str, end: SocketAddr, mib: usize) -> std::io::Result<(u64, f64)> {
    lab.within(ns, move || {
        // Not a BitTorrent handshake: the tunnel passes it through untouched.
        let chunk: Vec<u8> = (0..1 << 20).map(|i: usize| (i * 31 % 251) as u8).collect();
        let start = Instant::now();
        let mut stream = TcpStream::connect(end)?;
        stream.set_write_timeout(Some(STALL))?;
        stream.set_read_timeout(Some(STALL))?;
        for _ in 0..mib {
            stream.write_all(&chunk)?;
        }
        stream.shutdown(Shutdown::Write)?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        let count = answer.trim().parse().map_err(|_| {
            std::io::Error::other(format!("the sink answered {answer:?}, want a byte count"))
        })?;
        Ok((count, start.elapsed().as_secs_f64()))
    })
}

/// Samples each pid's VmRSS every 100 ms until stopped; the peaks in KiB.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<u64>>,
}

impl Sampler {
    fn start(pids: Vec<u32>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peaks = vec![0; pids.len()];
            loop {
                let last = flag.load(Ordering::SeqCst);
                for (peak, pid) in peaks.iter_mut().zip(&pids) {
                    if let Some((rss, _)) = rss_kib(*pid) {
                        *peak = (*peak).max(rss);
                    }
                }
                if last {
                    return peaks;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Sampler { stop, thread }
    }

    fn finish(self) -> Res<Vec<u64>> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .join()
            .map_err(|_| "the RSS sampler panicked".into())
    }
}

/// (VmRSS, VmHWM) in KiB of each process, failing when one is gone.
fn footprint(procs: &[(&str, u32)]) -> Res<Vec<(u64, u64)>> {
    procs
        .iter()
        .map(|(name, pid)| {
            rss_kib(*pid).ok_or_else(|| format!("{name} (pid {pid}) is gone or unreadable").into())
        })
        .collect()
}

/// The process behind a lab daemon's pid must be p2pu itself (`ip netns exec` execs it),
/// or the figures would be `ip`'s.
fn check_is_p2pu(name: &str, pid: u32) -> Res<()> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))?;
    if exe.file_name() != std::path::Path::new(BIN).file_name() {
        return Err(format!("{name} pid {pid} runs {}, want {BIN}", exe.display()).into());
    }
    Ok(())
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn main() {
    // Display, not Debug: the error carries the clients' logs. `run` has dropped the lab by
    // now (its processes killed, its namespaces deleted).
    if let Err(e) = run() {
        eprintln!("nat_footprint failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    let mut mib_count = 64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        // Anything else is cargo bench's (--bench).
        if arg == "--mib" {
            mib_count = args.next().ok_or("--mib N")?.parse()?;
        }
    }
    if !nix::unistd::geteuid().is_root() {
        return Err("nat_footprint builds network namespaces: run it as root".into());
    }

    eprintln!("building the NAT lab (two cone-NAT LANs)...");
    let fleet = Fleet::new(&[Lan::cone(1), Lan::cone(1)]);
    let (ns_a, ns_b) = (fleet.lab.node(1, 0), fleet.lab.node(2, 0));
    let mut proxy = fleet.start_proxy();
    let mut a = fleet.start_node(1, 0, "a", NodeOpts::default());
    let mut b = fleet.start_node(2, 0, "b", NodeOpts::default());
    let path = a.talkto("b");
    if path != "session with b: direct" {
        // The relay is rate-limited in this lab: N MiB through it would measure the limit.
        return Err(format!("want a punched direct path between cone NATs, got {path:?}").into());
    }
    let end = a.tunnel_end("b").ok_or("a has no tunnel end for b")?;
    sink(&fleet.lab, &ns_b)?;

    let procs = [
        ("nat-client a (sends)", a.daemon.pid()),
        ("nat-client b (receives)", b.daemon.pid()),
        ("proxy", proxy.pid()),
    ];
    for (name, pid) in procs {
        check_is_p2pu(name, pid)?;
    }
    // Past registration and the session's punching: keepalives only.
    std::thread::sleep(Duration::from_secs(3));
    let idle = footprint(&procs)?;

    eprintln!("streaming {mib_count} MiB through a's tunnel end {end} to b...");
    let sampler = Sampler::start(procs.iter().map(|(_, pid)| *pid).collect());
    let sent = transfer(&fleet.lab, &ns_a, end, mib_count);
    let peaks = sampler.finish()?;
    let want = (mib_count as u64) << 20;
    let (count, secs) = match sent {
        Ok((count, secs)) if count == want => (count, secs),
        Ok((count, _)) => {
            return Err(format!(
                "the sink got {count} bytes, want {want}\n{}\n{}",
                a.daemon.failed("sent"),
                b.daemon.failed("received")
            )
            .into())
        }
        Err(e) => {
            return Err(format!(
                "streaming through the tunnel: {e}\n{}\n{}",
                a.daemon.failed("sent"),
                b.daemon.failed("received")
            )
            .into())
        }
    };
    std::thread::sleep(Duration::from_secs(2));
    let after = footprint(&procs)?;
    if !(a.daemon.is_running() && b.daemon.is_running() && proxy.is_running()) {
        return Err("a lab process exited during the bench".into());
    }

    let size = std::fs::metadata(BIN)?.len();
    println!("\n{}", machine());
    println!(
        "p2pu binary {:.1} MiB ({BIN}); {mib_count} MiB through a nat-client tunnel \
         (direct path, cone NATs): {secs:.1} s, {:.1} MB/s\n",
        size as f64 / (1 << 20) as f64,
        count as f64 / 1e6 / secs
    );
    println!("| process | idle RSS | idle HWM | transfer peak RSS | after RSS | after HWM |");
    println!("|---|---|---|---|---|---|");
    for (i, (name, _)) in procs.iter().enumerate() {
        let (idle, peak, after) = (idle[i], peaks[i], after[i]);
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            mib(idle.0),
            mib(idle.1),
            mib(peak),
            mib(after.0),
            mib(after.1)
        );
    }
    println!("\nMiB; peak RSS sampled every 100 ms; HWM is the process's peak since start.");
    Ok(())
}
