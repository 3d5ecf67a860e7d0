//! Shared by the lab benches: starting a lab, reading the agents' logs, per-node traffic
//! shaping on the namespace's `lo`, RSS of processes, a tiny table printer.
//! Benches measure; they assert nothing about timings (the machine is shared and noisy).

#![allow(dead_code)]

use p2pu::lab::{Lab, LabOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// A lab of `nodes` nodes with agents, logging `apply started` (debug) too.
pub fn start_lab(nodes: usize, base: &Path) -> Res<Lab> {
    // Inherited by the agents the lab spawns.
    std::env::set_var("P2PU_LOG", "info,p2pu=debug");
    let mut options = LabOptions::new(nodes, base.join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    options.start_agent = true;
    Ok(Lab::start(options)?)
}

/// A fresh directory under /tmp for one bench run, readable by the lab's daemons; removed on drop.
pub fn bench_dir() -> Res<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("p2pu-bench-")
        .tempdir_in("/tmp")?;
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    Ok(dir)
}

pub fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Seconds since the epoch of an RFC 3339 UTC stamp as tracing-subscriber writes it
/// (`2026-11-25T08:52:07.123456Z`).
pub fn parse_stamp(text: &str) -> Option<f64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, mi, s) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days as f64 * 86400.0 + h * 3600.0 + mi * 60.0 + s)
}

/// One agent log line: its time and text.
pub struct LogLine {
    pub at: f64,
    pub text: String,
}

pub fn agent_log(lab: &Lab, node: usize) -> Vec<LogLine> {
    let Ok(info) = lab.node(node) else {
        return Vec::new();
    };
    let text = std::fs::read_to_string(info.log("agent")).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (stamp, rest) = line.split_once(' ')?;
            Some(LogLine {
                at: parse_stamp(stamp)?,
                text: rest.to_owned(),
            })
        })
        .collect()
}

/// When `node`'s agent logged `what` (" accepted", "apply started", " applied: ") for
/// `name`/`seq`.
pub fn logged(lab: &Lab, node: usize, what: &str, name: &str, seq: u64) -> Option<LogLine> {
    let want_name = format!("name={name} ");
    let want_seq = format!("seq={seq}");
    agent_log(lab, node).into_iter().find(|l| {
        l.text.contains(what)
            && l.text.contains(&want_name)
            && l.text.split_whitespace().any(|w| w == want_seq)
    })
}

/// Waits until every node logged `applied` for name/seq; returns each node's applied time.
pub fn wait_applied(
    lab: &Lab,
    nodes: usize,
    name: &str,
    seq: u64,
    limit: Duration,
) -> Res<Vec<f64>> {
    let deadline = now_s() + limit.as_secs_f64();
    loop {
        let times: Vec<Option<f64>> = (1..=nodes)
            .map(|i| logged(lab, i, " applied: ", name, seq).map(|l| l.at))
            .collect();
        if times.iter().all(Option::is_some) {
            return Ok(times.into_iter().flatten().collect());
        }
        if now_s() > deadline {
            return Err(
                format!("{name} seq {seq} not applied everywhere in {limit:?}: {times:?}").into(),
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `p2pu submit` on node 1; returns (time just before, seq).
pub fn submit(lab: &Lab, path: &Path) -> Res<(f64, u64)> {
    submit_with(lab, path, &[])
}

/// `p2pu submit PATH EXTRA...` on node 1; returns (time just before, seq).
pub fn submit_with(lab: &Lab, path: &Path, extra: &[&str]) -> Res<(f64, u64)> {
    let start = now_s();
    let mut args = vec!["submit", path.to_str().ok_or("path")?];
    args.extend_from_slice(extra);
    let out = lab.p2pu(1, &args)?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "submit failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    // "submitted NAME seq SEQ info-hash H"
    let seq = text
        .split_whitespace()
        .skip_while(|w| *w != "seq")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no seq in {text:?}"))?;
    Ok((start, seq))
}

/// The pid of node `node`'s `p2pu agent` (found by its --config in /proc).
pub fn agent_pid(lab: &Lab, node: usize) -> Option<u32> {
    let config = lab.node(node).ok()?.config.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            (args.get(1).map(String::as_str) == Some("agent") && args.contains(&config))
                .then_some(pid)
        })
}

/// (VmRSS, VmHWM) of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Writes `mib` MiB of random bytes as `<dir>/<name>` (a stored, uncompressed .tar.gz with one
/// file: archive kind, no CPU spent compressing random data).
pub fn random_archive(dir: &Path, name: &str, mib: usize) -> Res<PathBuf> {
    use rand::RngCore;
    let path = dir.join(name);
    let file = std::fs::File::create(&path)?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::none());
    let mut tar = tar::Builder::new(gz);
    let mut data = vec![0u8; mib << 20];
    rand::thread_rng().fill_bytes(&mut data);
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, "payload/data.bin", data.as_slice())?;
    tar.into_inner()?.finish()?;
    Ok(path)
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{cpu}, {cores} cores, kernel {}, load avg {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}
