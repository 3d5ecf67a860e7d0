//! p2pu: provisions and runs a peer-to-peer update system for a fleet of small Linux machines.
//!
//! The binary is a thin wrapper around [`run`]; every command lives in `cmd/` and takes an
//! [`Env`] so it can run in-process in unit tests.

pub mod agent;
pub(crate) mod bucket;
pub mod civil;
pub mod cmd;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod engines;
pub mod env;
pub mod error;
pub mod formats;
pub mod fsutil;
pub mod inspect;
pub mod keys;
pub mod lab;
pub mod nat;
pub mod provision;
pub mod publish;
pub mod render;
pub mod sdnotify;
pub mod spool;
#[cfg(test)]
pub(crate) mod testing;
pub mod trust;
pub mod untrusted;
pub mod version;

pub use env::Env;

pub use error::{Error, Result};
pub use version::VERSION;

use std::ffi::OsString;

/// Runs p2pu with `args` (program name first) against the real process environment and returns
/// the exit status.
pub fn run(args: impl IntoIterator<Item = OsString>) -> i32 {
    let mut env = Env::process();
    cmd::main(args, &mut env)
}
