//! The data formats: bencode, BitTorrent v1 metainfo, the signed announcement, the heartbeat
//! and its snapshot document, and the prototype's legacy payload.

pub mod announcement;
pub mod bencode;
pub mod heartbeat;
pub mod legacy;
pub mod serf_names;
pub mod torrent;
