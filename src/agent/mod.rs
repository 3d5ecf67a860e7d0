//! `p2pu agent`: takes announcements from the spool, verifies them, downloads the payload
//! through Transmission, checks it, applies it by kind, and records the result.

pub mod fetch;
pub mod intake;
pub mod spool;
pub mod state;
pub mod apply;
pub mod catchup;
pub mod peers;
pub mod run;
