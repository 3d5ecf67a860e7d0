//! A lab that prints its nodes' logs when the test that holds it fails, and what lab tests
//! share: the check of a command's output, waiting for a condition, a node's newest record.

use p2pu::agent::runtime::state::{Record, StateStore, Status};
use p2pu::agent::runtime::status::StatusReport;
use p2pu::lab::{Lab, LabOptions};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// A scratch dir under /tmp named `prefix...`, mode 0755, so that the lab's unprivileged users
/// (the nodes' `debian-transmission`, the seed servers' nobody) can traverse it.
pub fn lab_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    dir
}

/// A lab whose agent, Transmission and Serf logs (their last lines) are printed if the test
/// panics while holding it.
pub struct TestLab(pub Lab);

impl std::ops::Deref for TestLab {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.0
    }
}

impl std::ops::DerefMut for TestLab {
    fn deref_mut(&mut self) -> &mut Lab {
        &mut self.0
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for node in self.0.nodes() {
            for what in ["agent", "transmission", "serf"] {
                let Ok(text) = std::fs::read_to_string(node.log(what)) else {
                    continue;
                };
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("--- {} {what} (last lines)", node.name);
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// The command's stdout, after asserting it succeeded (its stdout and stderr shown if not).
pub fn ok(output: Output) -> String {
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

/// Polls `done` every 250 ms until it holds; fails naming `what` past `timeout`.
pub fn wait(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Node `node`'s newest record of `name`, read from its state dir.
pub fn record(lab: &Lab, node: usize, name: &str) -> Option<Record> {
    StateStore::open(&lab.node(node).unwrap().site.agent.state_dir)
        .unwrap()
        .records(name)
        .unwrap()
        .into_iter()
        .last()
}

/// The status of node `node`'s newest record of `name`.
pub fn status(lab: &Lab, node: usize, name: &str) -> Option<Status> {
    record(lab, node, name).map(|r| r.status)
}

/// A lab of `nodes` with agents whose periodic catch-up (an hour) never runs within a test, so
/// an update that arrives came by the way under test.
pub fn hourly_lab(dir: &Path, nodes: usize) -> TestLab {
    let mut options = LabOptions::new(nodes, dir.join("lab"), env!("CARGO_BIN_EXE_p2pu"));
    options.start_agent = true;
    options.site_overrides = Some("[agent]\ncatch_up_secs = 3600\n".into());
    TestLab(Lab::start(options).expect("lab starts"))
}

/// A manifest `name` that writes `content` and counts its runs in each node's Puppet vardir.
pub fn manifest(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    let text = format!(
        "file {{ \"${{settings::vardir}}/{name}.out\": content => \"{content}\\n\" }}\n\
         exec {{ 'count {name}': command => \"/bin/sh -c 'echo {content} >> ${{settings::vardir}}/{name}.count'\" }}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The contents each run of `name` on `node` left, in order.
pub fn runs(lab: &Lab, node: usize, name: &str) -> Vec<String> {
    let vardir = lab.node(node).unwrap().dir.join("puppet/var");
    std::fs::read_to_string(vardir.join(format!("{name}.count")))
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Submits `path` from node 1 with `extra`; returns the seq.
pub fn submit(lab: &Lab, path: &Path, extra: &[&str]) -> u64 {
    let mut args = vec!["submit", path.to_str().unwrap(), "--json", "--quiet"];
    args.extend_from_slice(extra);
    let out = ok(lab.p2pu(1, &args).unwrap());
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    report["seq"].as_u64().unwrap()
}

pub fn records(lab: &Lab, node: usize) -> Vec<Record> {
    let out = lab.p2pu(node, &["status", "--all", "--json"]).unwrap();
    assert!(matches!(out.status.code(), Some(0 | 3)), "{out:?}");
    p2pu::cmd::json::decode::<StatusReport>(&out.stdout)
        .unwrap()
        .updates
}

/// The spooled events in `spool` (root's part of a node's spool dir).
pub fn spooled(spool: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(spool)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "event"))
        .collect()
}
