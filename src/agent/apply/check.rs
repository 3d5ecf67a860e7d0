//! The health check run after an update is applied: the site's argument vector
//! (`agent.health_check`, or a per-update one signed in its rollout plan), run without a shell
//! in a process group of its own, killed with that whole group when it outlives its timeout (a
//! hung check must not hold every later update, nor leave children behind), its stdout and
//! stderr kept together in order, bounded to their last [`MAX_OUTPUT`] bytes.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The most of a check's output that is kept: its end, where checks say what failed.
pub const MAX_OUTPUT: usize = 4096;

/// How a check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub passed: bool,
    /// One line: `health check `/usr/local/bin/check` exited 1`, killed after its timeout, or
    /// could not start.
    pub summary: String,
    /// The last [`MAX_OUTPUT`] bytes of what it printed (stdout and stderr together).
    pub output: String,
}

/// Runs `argv` (the first word the program) with `timeout` and `env` added to the agent's
/// environment; an empty `argv` passes.
pub fn run_check(argv: &[String], timeout: Duration, env: &[(&str, String)]) -> CheckResult {
    run_check_until(argv, timeout, env, &|| None)
}

/// An operator's verdict that ends a running check (`p2pu mark-good|mark-bad`): whether it
/// passed, and the summary to record instead of the check's own.
pub type Verdict = (bool, String);

/// [`run_check`], ended early by the first verdict `verdict` returns (it is asked every
/// 100 ms or so while the check runs): the check's group is killed and the verdict is its
/// result, with what the check printed so far. For a site where the health check is a
/// person, whose check waits (e.g. `/bin/sleep infinity`) until a verdict or its timeout.
pub fn run_check_until(
    argv: &[String],
    timeout: Duration,
    env: &[(&str, String)],
    verdict: &dyn Fn() -> Option<Verdict>,
) -> CheckResult {
    run_bounded_until(
        "health check",
        "agent.health_check_timeout_secs",
        argv,
        timeout,
        env,
        verdict,
    )
}

/// [`run_check`] for another command the agent runs as the site says (the veto command
/// before an update is applied): `what` names it in the summary, `limit` the setting or
/// constant its timeout comes from.
pub fn run_bounded(
    what: &str,
    limit: &str,
    argv: &[String],
    timeout: Duration,
    env: &[(&str, String)],
) -> CheckResult {
    run_bounded_until(what, limit, argv, timeout, env, &|| None)
}

fn run_bounded_until(
    what: &str,
    limit: &str,
    argv: &[String],
    timeout: Duration,
    env: &[(&str, String)],
    verdict: &dyn Fn() -> Option<Verdict>,
) -> CheckResult {
    let Some((program, args)) = argv.split_first() else {
        return CheckResult {
            passed: true,
            summary: "no health check".into(),
            output: String::new(),
        };
    };
    // The program alone: the summary becomes the reason `fleet status` shows, where the
    // arguments would crowd out what the check said.
    let shown = crate::engines::shown_command(std::slice::from_ref(program));
    let failed = |summary: String, output: String| CheckResult {
        passed: false,
        summary: format!("{what} `{shown}` {summary}"),
        output,
    };
    // Close-on-exec, so the check's own copies are only the ones given as stdout and stderr.
    let (reader, writer) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok((reader, writer)) => (std::fs::File::from(reader), writer),
        Err(e) => {
            return failed(
                format!("could not start: making a pipe: {e}"),
                String::new(),
            )
        }
    };
    let spawned = writer.try_clone().and_then(|stderr| {
        Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(stderr)
            // Its own group, so a timeout kills what it started too.
            .process_group(0)
            .spawn()
    });
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return failed(format!("could not start: {e}"), String::new()),
    };
    // The reader ends when every holder of the pipe's write end is gone: read on a thread so
    // the deadline is kept even when the check prints nothing.
    let collector = std::thread::Builder::new()
        .name("check-output".into())
        .spawn(move || collect_tail(reader));
    let started = Instant::now();
    let mut pause = Duration::from_millis(5);
    let mut given = None;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() >= timeout => break None,
            Ok(None) => {
                given = verdict();
                if given.is_some() {
                    break None;
                }
            }
            Err(e) => {
                tracing::warn!("waiting for the {what}: {e}");
                break None;
            }
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    };
    // Whatever it left running in its group goes too, also after it exited: a daemon a check
    // forked would otherwise keep the output pipe open for good.
    let group = Pid::from_raw(child.id() as i32);
    let _ = killpg(group, Signal::SIGKILL);
    let _ = child.wait();
    let output = match collector {
        Ok(handle) => handle.join().unwrap_or_default(),
        Err(_) => String::new(),
    };
    if let Some((passed, summary)) = given {
        return CheckResult {
            passed,
            summary,
            output,
        };
    }
    match status {
        Some(status) if status.success() => CheckResult {
            passed: true,
            summary: format!("{what} `{shown}` passed"),
            output,
        },
        Some(status) => match (status.code(), status.signal()) {
            (Some(code), _) => failed(format!("exited {code}"), output),
            (None, Some(signal)) => failed(format!("was killed by signal {signal}"), output),
            (None, None) => failed(format!("ended with {status}"), output),
        },
        None => failed(
            format!(
                "did not finish within {} s ({limit}) and was killed",
                timeout.as_secs()
            ),
            output,
        ),
    }
}

/// Reads `reader` to its end, keeping only the last [`MAX_OUTPUT`] bytes.
fn collect_tail(mut reader: impl Read) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                kept.extend_from_slice(&buffer[..n]);
                if kept.len() > 2 * MAX_OUTPUT {
                    kept.drain(..kept.len() - MAX_OUTPUT);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let start = kept.len().saturating_sub(MAX_OUTPUT);
    String::from_utf8_lossy(&kept[start..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn exit_0_passes_and_another_exit_fails_with_its_code_and_output() {
        let env = [("P2PU_NAME", "site.pp".to_string())];
        let passed = run_check(&sh("echo fine $P2PU_NAME"), Duration::from_secs(30), &env);
        assert!(passed.passed, "{passed:?}");
        assert_eq!(passed.output, "fine site.pp\n");
        let failed = run_check(
            &sh("echo out; echo err >&2; exit 3"),
            Duration::from_secs(30),
            &[],
        );
        assert!(!failed.passed);
        assert!(failed.summary.ends_with("exited 3"), "{}", failed.summary);
        assert_eq!(failed.output, "out\nerr\n");
        assert!(run_check(&[], Duration::from_secs(1), &[]).passed);
    }

    /// An operator's verdict ends a check that would wait far longer (a person's check),
    /// with the verdict's summary and what the check printed so far.
    #[test]
    fn a_verdict_ends_a_waiting_check_with_the_verdict() {
        let asked = std::sync::atomic::AtomicU32::new(0);
        let verdict = || {
            let n = asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (n >= 3).then(|| (false, "marked bad by operator".to_string()))
        };
        let result = run_check_until(
            &sh("echo waiting for a person; exec sleep 600"),
            Duration::from_secs(600),
            &[],
            &verdict,
        );
        assert_eq!(
            (result.passed, result.summary.as_str()),
            (false, "marked bad by operator")
        );
        assert!(result.output.contains("waiting for a person"), "{result:?}");
    }

    #[test]
    fn a_program_that_cannot_start_fails_the_check() {
        let argv = vec!["/nonexistent/check".to_string()];
        let result = run_check(&argv, Duration::from_secs(5), &[]);
        assert!(!result.passed);
        assert!(
            result.summary.contains("could not start"),
            "{}",
            result.summary
        );
    }

    /// A check that hangs (and a child it started that would keep the output pipe open) is
    /// killed, group and all, and counts as failed.
    #[test]
    fn a_check_past_its_timeout_is_killed_with_its_children_and_fails() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("child.pid");
        // The child lets go of the output pipe, so only the group kill can end it.
        let script = format!(
            "sleep 300 >/dev/null 2>&1 & echo $! > {}; echo started; sleep 60",
            pid_file.display()
        );
        let result = run_check(&sh(&script), Duration::from_secs(1), &[]);
        assert!(!result.passed);
        assert!(
            result.summary.contains("did not finish within 1 s"),
            "{}",
            result.summary
        );
        assert_eq!(result.output, "started\n");
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SIGKILL takes effect asynchronously: wait for it to be gone (reaped by init, or a
        // zombie at most).
        let gone = || {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            state.is_empty() || state.split_whitespace().nth(2) == Some("Z")
        };
        let started = std::time::Instant::now();
        while !gone() && started.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(gone(), "the check's child survived");
    }

    #[test]
    fn only_the_end_of_a_long_output_is_kept() {
        let result = run_check(
            &sh("head -c 100000 /dev/zero | tr '\\0' a; echo; echo last line"),
            Duration::from_secs(30),
            &[],
        );
        assert!(result.passed);
        assert!(result.output.len() <= MAX_OUTPUT);
        assert!(
            result.output.ends_with("a\nlast line\n"),
            "{}",
            &result.output[4000..]
        );
    }
}
