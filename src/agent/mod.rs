//! `p2pu agent`: takes announcements from the spool, verifies them, downloads the payload
//! (over HTTP from the fleet, Transmission when that fails), checks it, applies it by kind,
//! and records the result; serves the node's tracker and web seeds beside its engines, from an
//! unprivileged child process.

pub mod apply;
pub mod catchup;
pub mod download_dir;
pub mod extract;
pub mod fetch;
mod http;
pub mod http_get;
pub mod intake;
pub mod kind;
pub mod pace;
pub mod peers;
pub mod relay;
pub mod run;
pub mod seed_http;
pub mod serve;
pub mod spool;
pub mod state;
pub mod status;
pub mod supervise;
pub mod tracker;
pub mod verified;
