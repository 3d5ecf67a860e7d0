//! The data formats: bencode, BitTorrent v1 metainfo, the signed announcement, the heartbeat
//! and its snapshot document, key statements (delegations), root documents, and the
//! prototype's legacy payload.

pub mod announcement;
pub mod bencode;
pub mod control;
pub mod delegation;
pub mod document;
pub mod heartbeat;
pub mod legacy;
pub mod plan;
pub mod root;
pub mod serf_names;
pub mod torrent;
pub mod window;
