//! The long-running `p2pu agent`: the services a node runs beside its engines.

mod http;
pub mod seed_http;
pub mod tracker;
