//! What a test needs from the machine (root, a tool) and what happens when it is missing: a
//! developer's `cargo test` skips that part with a loud line, but `install/run-tests.sh` (and so
//! CI) sets `P2PU_TESTS_STRICT=1`, where a missing prerequisite fails the test instead of letting
//! it pass without testing anything.

/// True when the test may go on; false (after saying SKIPPED) when it must stop here. Panics
/// under `P2PU_TESTS_STRICT`, naming what is missing and what installs it.
pub fn have(present: bool, what: &str) -> bool {
    if present {
        return true;
    }
    if std::env::var_os("P2PU_TESTS_STRICT").is_some_and(|v| !v.is_empty() && v != "0") {
        panic!("missing prerequisite under P2PU_TESTS_STRICT: {what}");
    }
    eprintln!("\n*** SKIPPED: {what} ***\n");
    false
}

/// Root, which these tests need for `useradd --root`, chown and namespaces.
pub fn root(why: &str) -> bool {
    have(
        nix::unistd::geteuid().is_root(),
        &format!("needs root ({why})"),
    )
}
