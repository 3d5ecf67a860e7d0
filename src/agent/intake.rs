//! Turns a spooled event into a decision: accepted (a record to work on), held (signed but
//! from the future), or rejected with the reason an operator reads in `p2pu status`.
//! Order matters: structure, then signature against the trusted keys, then the sequence.

use super::spool::Spooled;
use super::state::{Record, Rejection, SeqVerdict, StateStore, Status};
use crate::formats::announcement::Announcement;
use crate::formats::legacy;
use crate::keys::TrustedKeys;
use std::path::Path;

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accepted(Record),
    Held(Record),
    Rejected(Rejection),
}

/// Policy the intake applies, from the config.
#[derive(Debug, Clone)]
pub struct Policy<'a> {
    pub trusted_keys_dir: &'a Path,
    pub accept_legacy: bool,
    /// Announcements whose seq (ms since the epoch) lies further ahead of the local clock are
    /// held: one bad announcement must not block every later update of its name.
    pub max_future_ms: u64,
}

pub fn decide(
    event: &Spooled,
    store: &StateStore,
    policy: &Policy,
    now_ms: u64,
) -> crate::Result<Decision> {
    let now = now_ms / 1000;
    let source = event.source.as_str().to_string();
    let reject = |name: Option<String>, seq: Option<u64>, reason: String| {
        Decision::Rejected(Rejection {
            at: now,
            source: source.clone(),
            name,
            seq,
            reason,
        })
    };
    if event.payload.starts_with(b"p2pu") {
        let announcement = match Announcement::decode(&event.payload) {
            Ok(a) => a,
            Err(e) => return Ok(reject(None, None, e.to_string())),
        };
        let (name, seq) = (announcement.name().to_string(), announcement.seq());
        let trusted = TrustedKeys::load(policy.trusted_keys_dir)?;
        if let Err(e) = announcement.verify(&trusted) {
            return Ok(reject(Some(name), Some(seq), e.to_string()));
        }
        match store.check_seq(&name, seq)? {
            SeqVerdict::New => {}
            SeqVerdict::Replay => {
                return Ok(reject(
                    Some(name),
                    Some(seq),
                    "replay: this seq was already accepted".into(),
                ))
            }
            SeqVerdict::Older { newest } => {
                return Ok(reject(
                    Some(name),
                    Some(seq),
                    format!("downgrade: seq {seq} is older than the accepted {newest}"),
                ))
            }
        }
        let wire = String::from_utf8_lossy(&event.payload).into_owned();
        let mut record = record_of(&announcement, wire, now);
        if seq > now_ms.saturating_add(policy.max_future_ms) {
            record.status = Status::Held;
            record.reason = Some(format!(
                "held: seq {seq} is {} s ahead of this node's clock",
                (seq - now_ms) / 1000
            ));
            return Ok(Decision::Held(record));
        }
        return Ok(Decision::Accepted(record));
    }
    match legacy::decode_payload(&event.payload) {
        Err(e) => Ok(reject(
            None,
            None,
            format!("neither a p2pu announcement nor a legacy payload: {e}"),
        )),
        Ok(_) if !policy.accept_legacy => Ok(reject(
            None,
            None,
            "legacy payload refused: accept_legacy = false".into(),
        )),
        Ok(torrent) => {
            let name = torrent.name.clone();
            if let Err(e) = crate::formats::announcement::validate_name(&name) {
                return Ok(reject(None, None, format!("legacy payload: {e}")));
            }
            let Some(date) = torrent.creation_date.and_then(|d| u64::try_from(d).ok()) else {
                return Ok(reject(
                    Some(name),
                    None,
                    "legacy payload without a creation date".into(),
                ));
            };
            match store.check_seq(&name, date)? {
                SeqVerdict::New => {}
                _ => {
                    return Ok(reject(
                        Some(name),
                        Some(date),
                        "legacy payload is not newer than the last one of its name".into(),
                    ))
                }
            }
            Ok(Decision::Accepted(Record {
                name,
                seq: date,
                kind: "legacy".into(),
                info_hash: hex::encode(torrent.info_hash),
                len: torrent.length,
                sha256: String::new(),
                wire: String::from_utf8_lossy(&event.payload).into_owned(),
                status: Status::Pending,
                reason: None,
                output: None,
                received_at: now,
                updated_at: now,
            }))
        }
    }
}

fn record_of(a: &Announcement, wire: String, now: u64) -> Record {
    Record {
        name: a.name().to_string(),
        seq: a.seq(),
        kind: a.kind().as_str().to_string(),
        info_hash: hex::encode(a.info_hash()),
        len: a.payload_len(),
        sha256: hex::encode(a.sha256()),
        wire,
        status: Status::Pending,
        reason: None,
        output: None,
        received_at: now,
        updated_at: now,
    }
}
