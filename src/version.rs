//! The build's version. Its own module so the layers that report it (a node's status answer)
//! name it here and not through `lib.rs`, which imports the commands.

/// `p2pu --version`: the package version, the commit (when built from git) and the build date
/// (SOURCE_DATE_EPOCH when set), e.g. `0.1.0 (2f16810abc 2026-11-29)`; stamped by build.rs.
/// Also what a node reports in its status answer.
pub const VERSION: &str = env!("P2PU_VERSION");
