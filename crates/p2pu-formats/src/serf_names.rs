//! The names p2pu uses on Serf, owned here and nowhere else: the user event announcements
//! travel under, the queries each node's event handler answers, and the tags p2pu sets on every
//! member (all under a reserved prefix an operator's own tags may not use). The Serf config is
//! rendered from these, the handler dispatches on them, and peers, catch-up and `fleet status`
//! ask by them.

/// The Serf user event that carries announcements.
pub const UPDATE_EVENT: &str = "p2pu-update";
/// The Serf user event that carries heartbeats (`formats::heartbeat`).
pub const HEARTBEAT_EVENT: &str = "p2pu-heartbeat";
/// The query a node answers with the newest heartbeat it verified (same name as the event).
pub const HEARTBEAT_QUERY: &str = "p2pu-heartbeat";
/// The Serf user event that carries operator control statements (`p2pu rollout`).
pub const CONTROL_EVENT: &str = "p2pu-control";
/// The query a node answers with its updates (`agent::status::NodeStatus`).
pub const STATUS_QUERY: &str = "p2pu-status";
/// The query a node answers with its newest accepted announcement of the name asked for.
pub const LATEST_QUERY: &str = "p2pu-latest";
/// The query a node answers with its kept output of an update (`agent::status::NodeLogs`).
pub const LOGS_QUERY: &str = "p2pu-logs";
/// Every query p2pu answers; the rendered Serf config routes these to the handler.
pub const QUERIES: &[&str] = &[STATUS_QUERY, LATEST_QUERY, LOGS_QUERY, HEARTBEAT_QUERY];

/// Tags p2pu sets itself on every member start with this; an operator's tag must not.
pub const RESERVED_TAG_PREFIX: &str = "p2pu";
/// The member's role (`node`, `proxy`).
pub const TAG_ROLE: &str = "p2pu-role";
/// The member's BitTorrent peer port.
pub const TAG_PEER_PORT: &str = "p2pu-bt-port";
/// The port of the member's web seed server.
pub const TAG_SEED_PORT: &str = "p2pu-seed-port";
/// The rate the member advertises, bytes/s (the median of its last fetches, `rate`'s
/// format): `submit` in stripes mode classes members slow by it (`topology::classify`). The
/// agent sets it (`serf tags -set`) once it measured one; until then the member counts as
/// full-rate.
pub const TAG_RATE: &str = "p2pu-rate";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tag_p2pu_sets_is_under_the_reserved_prefix() {
        for tag in [TAG_ROLE, TAG_PEER_PORT, TAG_SEED_PORT, TAG_RATE] {
            assert!(tag.starts_with(RESERVED_TAG_PREFIX), "{tag}");
        }
    }
}
