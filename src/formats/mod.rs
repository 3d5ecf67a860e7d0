//! The data formats: bencode, BitTorrent v1 metainfo, the striped transfer's blocks and
//! roster, the signed announcement, the heartbeat and its snapshot document, key statements
//! (delegations), root documents, and the prototype's legacy payload.

pub mod announcement;
pub mod bencode;
pub mod blocks;
pub mod control;
pub mod delegation;
pub mod document;
pub mod have;
pub mod heartbeat;
pub mod legacy;
pub mod plan;
pub mod root;
pub mod roster;
pub mod serf_names;
pub mod torrent;
