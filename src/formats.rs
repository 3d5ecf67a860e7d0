//! The data formats: the pure `p2pu-formats` crate (crates/p2pu-formats), re-exported so every
//! `crate::formats::...` path reads as before, plus the one format that touches the disk:
//! [`torrent`] adds creating a .torrent from files and reading one from a path.

pub use p2pu_formats::{
    announcement, bencode, blocks, control, delegation, document, have, heartbeat, legacy, plan,
    rate, root, roster, serf_names, serf_rpc, window,
};

pub mod torrent;

use crate::error::LayerError;

// Each format's error joins the library's error here: the crate knows nothing of p2pu's
// `Error`, and the conversion lives with p2pu (the orphan rule lets it, the trait being ours).
impl LayerError for announcement::AnnouncementError {}
impl LayerError for bencode::BencodeError {}
impl LayerError for blocks::BlocksError {}
impl LayerError for have::HaveError {}
impl LayerError for control::ControlError {}
impl LayerError for delegation::DelegationError {}
impl LayerError for heartbeat::HeartbeatError {}
impl LayerError for legacy::LegacyError {}
impl LayerError for plan::PlanError {}
impl LayerError for root::RootError {}
impl LayerError for roster::RosterError {}
impl LayerError for torrent::TorrentError {}
impl LayerError for window::WindowError {}
