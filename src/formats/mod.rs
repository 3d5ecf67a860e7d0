//! The data formats: bencode, BitTorrent v1 metainfo, the signed announcement, and the
//! prototype's legacy payload.

pub mod announcement;
pub mod bencode;
pub mod control;
pub mod legacy;
pub mod plan;
pub mod serf_names;
pub mod torrent;
