//! p2pu's data formats: bencode, BitTorrent v1 metainfo, the striped transfer's blocks and
//! roster, the signed announcement, the heartbeat and its snapshot document, key statements
//! (delegations), root documents, the rollout plan and its maintenance windows, the prototype's legacy payload, and the key
//! texts and signatures they carry; and the framing of Serf's RPC stream, which p2pu's queries read.
//!
//! Pure by design: nothing here opens a file or a socket, so the crate builds and tests in
//! seconds, fuzzes alone, and a parser cannot reach the machine. Walking a directory to hash a
//! torrent and the trusted-keys directory are p2pu's (`p2pu::formats::torrent`, `p2pu::keys`).
//! p2pu re-exports this crate as `p2pu::formats`.

pub mod announcement;
pub mod bencode;
pub mod blocks;
pub mod control;
pub mod delegation;
pub mod document;
pub mod have;
pub mod heartbeat;
pub mod keys;
pub mod legacy;
pub mod plan;
pub mod rate;
pub mod root;
pub mod roster;
pub mod serf_names;
pub mod serf_rpc;
pub mod torrent;
pub mod window;
