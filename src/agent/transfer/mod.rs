//! Bringing a payload to this node and serving it to others: the HTTP fetch and relay chain,
//! the pace every source is held to, the root-only verified copy, the download dir's layout,
//! the web seed server and tracker that the unprivileged `agent-serve` child runs, and
//! Transmission as the fallback; and the stripes over trees that replace the chain for large
//! fleets behind `transfer.mode = "stripes"`: the plan (`topology`), one node's side of it
//! (`stripes`, pure), its fetch (`stripes_fetch`) and a complete node's stripe answers kept in step
//! (`in_step`).

pub mod download_dir;
pub mod fetch;
pub mod fetch_error;
pub(crate) mod http;
pub mod http_get;
pub mod in_step;
pub mod pace;
pub mod push;
pub mod relay;
pub mod seed_http;
pub mod serve;
pub mod stripes;
pub mod stripes_fetch;
pub mod topology;
pub mod tracker;
pub mod verified;
