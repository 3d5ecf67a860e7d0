//! A lab that prints its nodes' logs when the test that holds it fails, and what lab tests
//! share: the check of a command's output, waiting for a condition, a node's newest record.

use p2pu::agent::runtime::state::{Record, StateStore, Status};
use p2pu::lab::Lab;
use std::process::Output;
use std::time::{Duration, Instant};

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
