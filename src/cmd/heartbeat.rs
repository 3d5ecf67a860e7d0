//! `p2pu heartbeat`: signs this host's snapshot of the fleet's latest announcements with the
//! time (TUF's timestamp and snapshot roles in one), serves the snapshot document from the seed
//! server's root, and broadcasts the heartbeat. Run every few minutes by the timer `init`
//! renders where `agent.heartbeat_interval_secs` is set; nodes that hear no fresh one say so.

use crate::agent::runtime::heartbeat::{local_snapshot, publish};
use crate::agent::runtime::state::StateStore;
use crate::cmd::{ConfigArg, Outcome};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::formats::heartbeat::Heartbeat;
use crate::formats::serf_names::HEARTBEAT_EVENT;
use crate::Env;
use serde::{Deserialize, Serialize};
use std::io::Write;

/// Sign and broadcast a heartbeat: the time and a digest of the latest seq of every name.
///
/// Reads this host's state (the agent's record of every announcement it accepted) and the
/// signing key (agent.signing_key), writes the snapshot document into the seed server's root
/// for members to fetch, and sends the heartbeat as the Serf event p2pu-heartbeat. Nodes with
/// agent.heartbeat_window_secs set warn when none newer than the window reached them.
#[derive(Debug, clap::Args)]
pub struct HeartbeatCommand {
    #[command(flatten)]
    config: ConfigArg,
    /// Print what was sent as JSON.
    #[arg(long)]
    json: bool,
}

/// `p2pu heartbeat --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatReport {
    /// Unix seconds it was signed at.
    pub time: u64,
    /// SHA-256 (hex) of the snapshot document.
    pub snap: String,
    /// How many names the snapshot lists.
    pub names: u64,
    /// The wire text broadcast (`p2pu-hb1:...`).
    pub wire: String,
}

impl HeartbeatCommand {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let config = Config::load(&self.config.resolve(env), None)?;
        let key = crate::keys::read_secret(&config.site.agent.signing_key)?;
        let fleet = config.fleet_id()?;
        let store = StateStore::open_read_only(&config.site.agent.state_dir);
        let snapshot = local_snapshot(&store)?;
        let time = env.unix_now();
        let heartbeat = Heartbeat::sign(fleet, time, &snapshot, &key)?;
        publish(&config.site.transmission.download_dir, &snapshot)?;
        let wire = heartbeat.to_wire();
        let gossip = env.engines.gossip(&config)?;
        // Not coalesced: Serf would otherwise hold it back to merge it with a later one.
        gossip.user_event(HEARTBEAT_EVENT, wire.as_bytes(), false)?;
        let report = HeartbeatReport {
            time,
            snap: hex::encode(heartbeat.snap()),
            names: heartbeat.count(),
            wire,
        };
        crate::cmd::emit(env, self.json, &report, |r| {
            format!(
                "heartbeat signed at {} for {} name(s), snapshot {}\n",
                r.time, r.names, r.snap
            )
        })?;
        env.stdout
            .flush()
            .map_err(Error::io("writing to", "standard output"))?;
        Ok(Outcome::Success)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::testing::Run;
    use crate::engines::clients::Engines;
    use crate::engines::fake::FakeGossip;

    #[test]
    fn heartbeat_signs_the_state_serves_the_snapshot_and_broadcasts_uncoalesced() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let key = crate::keys::generate();
        crate::fsutil::write_atomic(
            &d.join("signing.key"),
            crate::keys::secret_to_text(&key).as_bytes(),
            0o600,
        )
        .unwrap();
        std::fs::write(
            d.join("site.toml"),
            format!(
                "[agent]\nsigning_key = \"{0}/signing.key\"\nstate_dir = \"{0}/state\"\nfleet_id = \"0102030405060708\"\n[transmission]\ndownload_dir = \"{0}/downloads\"\n",
                d.display()
            ),
        )
        .unwrap();
        let gossip = std::sync::Arc::new(FakeGossip::default());
        let (code, out, err) = Run::new(d)
            .engines(Engines::fakes().gossip_engine(gossip.clone()))
            .run(&["heartbeat", "--config", "site.toml", "--json"]);
        assert_eq!(code, 0, "{err}");
        let report: HeartbeatReport = crate::cmd::json::decode(out.as_bytes()).unwrap();
        let sent = gossip.events();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, "p2pu-heartbeat");
        assert_eq!(sent[0].1, report.wire.as_bytes());
        assert!(!sent[0].2, "coalesced");
        let heartbeat = Heartbeat::decode(&report.wire).unwrap();
        assert_eq!(heartbeat.fleet().to_string(), "0102030405060708");
        let doc = std::fs::read(d.join(format!("downloads/{}.snapshot", report.snap))).unwrap();
        let snapshot = crate::formats::heartbeat::Snapshot::decode(&doc).unwrap();
        assert_eq!(snapshot.digest(), *heartbeat.snap());
    }
}
