//! A lab that prints its nodes' logs when the test that holds it fails, and the check of a
//! command's output that lab tests share.

use p2pu::lab::Lab;
use std::process::Output;

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
