//! `p2pu agent`: takes announcements from the spool, verifies them, downloads the payload
//! (over HTTP from the fleet, Transmission when that fails), checks it, applies it by kind,
//! and records the result; serves the node's tracker and web seeds beside its engines, from an
//! unprivileged child process.
//!
//! The folders follow one update: [`runtime`] takes it in (spool, intake) and keeps its state,
//! [`transfer`] brings the payload and checks it, [`apply`] applies the checked copy.

pub mod apply;
pub mod runtime;
pub mod transfer;
