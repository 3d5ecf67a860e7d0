//! What a unit test needs from the machine, and what happens when it is missing: the same rule
//! as the integration tests' `tests/support/prereq.rs`. A developer's unprivileged
//! `cargo test --lib` skips the part with a loud line; `install/run-tests.sh` (and so CI) sets
//! `P2PU_TESTS_STRICT=1`, where a missing prerequisite fails the test instead.

/// True when running as root; otherwise says SKIPPED (or panics under `P2PU_TESTS_STRICT`),
/// naming `why` the test needs it, and returns false.
pub fn root(why: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let what = format!("needs root ({why})");
    if std::env::var_os("P2PU_TESTS_STRICT").is_some_and(|v| !v.is_empty() && v != "0") {
        panic!("missing prerequisite under P2PU_TESTS_STRICT: {what}");
    }
    eprintln!("\n*** SKIPPED: {what} ***\n");
    false
}
