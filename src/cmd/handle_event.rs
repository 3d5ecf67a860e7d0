//! `p2pu handle-event`: what Serf's event handler runs. A user event is written to the agent's
//! spool and the handler returns at once (Serf runs handlers one at a time); a `member-join`
//! (this node's Serf started, or it (re)joined members) spools a request to ask the fleet for
//! missed updates now (`agent::runtime::sync`); a query
//! (`p2pu-status`, `p2pu-latest`, `p2pu-logs`, `p2pu-heartbeat`) is answered from the agent's
//! state dir.

use crate::agent::runtime::heartbeat::{freshness, kept_wire};
use crate::agent::runtime::spool::{self, Source};
use crate::agent::runtime::state::StateStore;
use crate::agent::runtime::status::{latest_wire, node_logs, node_status};
use crate::agent::runtime::sync;
use crate::cmd::{ConfigArg, Outcome};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::formats::heartbeat;
use crate::formats::serf_names::{
    CONTROL_EVENT, HEARTBEAT_EVENT, HEARTBEAT_QUERY, LATEST_QUERY, LOGS_QUERY, QUERIES,
    STATUS_QUERY, UPDATE_EVENT,
};
use crate::Env;
use std::io::{Read, Write};

/// Hand a Serf event to the agent (run by Serf's event handler, not by people).
///
/// Reads the event from the environment Serf sets (SERF_EVENT, SERF_USER_EVENT,
/// SERF_QUERY_NAME) and the payload from stdin.
#[derive(Debug, clap::Args)]
pub struct HandleEvent {
    #[command(flatten)]
    config: ConfigArg,
}

impl HandleEvent {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let config = Config::load(&self.config.resolve(env), None)?;
        let event = env.var("SERF_EVENT").unwrap_or_default().to_string();
        match event.as_str() {
            "user" => self.user_event(env, &config),
            "query" => self.query(env, &config),
            "member-join" => self.member_join(env, &config),
            _ => Ok(Outcome::Success),
        }
    }

    fn user_event(&self, env: &mut Env, config: &Config) -> Result<Outcome> {
        let name = env.var("SERF_USER_EVENT").unwrap_or_default().to_string();
        let payload = read_payload(env)?;
        let heartbeat = name == HEARTBEAT_EVENT && heartbeat::is_wire(&payload);
        // Control statements (`p2pu rollout`) take the announcements' way: the agent verifies.
        if name == UPDATE_EVENT || name == CONTROL_EVENT || heartbeat || looks_legacy(&payload) {
            let path = spool::put(&config.site.agent.spool_dir, Source::Serf, &payload)?;
            writeln!(
                env.stderr,
                "p2pu: spooled {name} event as {}",
                path.display()
            )
            .map_err(Error::io("writing to", "standard error"))?;
        }
        Ok(Outcome::Success)
    }

    /// Serf drops user events older than the moment a member (re)joined, and a node whose Serf
    /// was down heard nothing meanwhile: the agent asks the fleet (rate-limited there).
    fn member_join(&self, env: &mut Env, config: &Config) -> Result<Outcome> {
        // The joined members, one per line: not needed, but read to the end so Serf is not
        // left writing into a closed pipe (a fleet's worth of members passes 16 KiB).
        std::io::copy(&mut env.stdin, &mut std::io::sink())
            .map_err(Error::io("reading the members from", "standard input"))?;
        let path = sync::put(&config.site.agent.spool_dir, &sync::Request::Fleet)?;
        writeln!(
            env.stderr,
            "p2pu: member-join: asking the agent to catch up ({})",
            path.display()
        )
        .map_err(Error::io("writing to", "standard error"))?;
        Ok(Outcome::Success)
    }

    fn query(&self, env: &mut Env, config: &Config) -> Result<Outcome> {
        let name = env.var("SERF_QUERY_NAME").unwrap_or_default().to_string();
        let payload = read_payload(env)?;
        // Answering must not create the state dir (it may run before the agent ever did).
        let store = StateStore::open_read_only(&config.site.agent.state_dir);
        let answer = match name.as_str() {
            STATUS_QUERY => {
                let node = env.var("SERF_SELF_NAME").unwrap_or_default().to_string();
                let names = crate::agent::runtime::status::asked_names(&payload);
                let mut status = node_status(&store, node, &names)?;
                status.heartbeat = freshness(
                    store.dir(),
                    config.site.agent.heartbeat_window_secs,
                    env.unix_now(),
                );
                // Serf hands an empty payload over as a bare newline. An empty one comes from
                // an asker that may deny unknown fields (see `ALL_NAMES`): the fields added
                // since (`omitted`, `now_ms`, each update's `sources`) go only to askers that
                // send a payload; each update's `stripes` only to askers that ask for them
                // (`WITH_STRIPES`: catch-up and older `fleet status` send `/` and deny it).
                if !crate::agent::runtime::status::asks_stripes(&payload) {
                    for update in &mut status.updates {
                        update.stripes.clear();
                    }
                }
                if payload.trim_ascii().is_empty() {
                    status.omitted = 0;
                    for update in &mut status.updates {
                        update.sources.clear();
                    }
                } else {
                    status.now_ms = Some(env.unix_now_ms());
                }
                serde_json::to_string(&status).map_err(|e| Error::Internal(e.to_string()))?
            }
            LATEST_QUERY => {
                let wanted = String::from_utf8_lossy(&payload).trim().to_string();
                latest_wire(&store, &wanted)?.unwrap_or_default()
            }
            HEARTBEAT_QUERY => kept_wire(store.dir()).unwrap_or_default(),
            LOGS_QUERY => {
                let node = env.var("SERF_SELF_NAME").unwrap_or_default().to_string();
                let full = config.site.agent.share_full_logs;
                node_logs(&store, &node, &payload, full)?.unwrap_or_default()
            }
            _ => return Ok(Outcome::Success),
        };
        debug_assert!(QUERIES.contains(&name.as_str()));
        // Serf sends no response for a handler that printed nothing, and the asker's query
        // ends early only once every alive member answered: "nothing" is a bare newline
        // (askers trim answers and skip empty ones).
        let answer = if answer.is_empty() {
            "\n".to_owned()
        } else {
            answer
        };
        env.stdout
            .write_all(answer.as_bytes())
            .map_err(Error::io("writing to", "standard output"))?;
        Ok(Outcome::Success)
    }
}

fn read_payload(env: &mut Env) -> Result<Vec<u8>> {
    let mut payload = Vec::new();
    (&mut env.stdin)
        .take(spool::MAX_EVENT_BYTES as u64 + 1)
        .read_to_end(&mut payload)
        .map_err(Error::io(
            "reading the event payload from",
            "standard input",
        ))?;
    // Serf appends a newline to every payload.
    if payload.last() == Some(&b'\n') {
        payload.pop();
    }
    Ok(payload)
}

/// The prototype's payload: 32 hex digits of MD5, then a bencoded torrent; or its overlay
/// message wrapping one.
fn looks_legacy(payload: &[u8]) -> bool {
    (payload.len() > 33 && payload[..32].iter().all(u8::is_ascii_hexdigit) && payload[32] == b'd')
        || crate::formats::legacy::is_overlay(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::runtime::state::{Record, RecordKind, Status};
    use crate::agent::runtime::status::NodeStatus;
    use crate::cmd::testing::Run;
    use crate::formats::announcement::Kind;
    use std::path::PathBuf;

    struct Node {
        dir: tempfile::TempDir,
        config: PathBuf,
    }

    fn node() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let config = dir.path().join("site.toml");
        std::fs::write(
            &config,
            format!("[agent]\nspool_dir = \"{d}/spool\"\nstate_dir = \"{d}/state\"\n"),
        )
        .unwrap();
        Node { dir, config }
    }

    /// `p2pu handle-event` as Serf runs it: event details in `vars`, the payload on stdin.
    fn run(node: &Node, vars: &[(&str, &str)], stdin: &[u8]) -> (i32, String) {
        let args = ["handle-event", "--config", node.config.to_str().unwrap()];
        let (code, out, err) = Run::new(node.dir.path()).vars(vars).stdin(stdin).run(&args);
        assert!(code == 0, "{err}");
        (code, out)
    }

    fn spooled(node: &Node) -> Vec<Vec<u8>> {
        let dir = node.dir.path().join("spool");
        spool::list(&dir).map_or_else(
            |_| Vec::new(),
            |paths| paths.iter().map(|p| std::fs::read(p).unwrap()).collect(),
        )
    }

    #[test]
    fn update_events_are_spooled_without_serfs_newline() {
        let node = node();
        run(
            &node,
            &[("SERF_EVENT", "user"), ("SERF_USER_EVENT", "p2pu-update")],
            b"p2pu1:abc\n",
        );
        assert_eq!(spooled(&node), vec![b"p2pu1:abc".to_vec()]);
    }

    /// `p2pu rollout` statements reach the agent the announcements' way.
    #[test]
    fn control_events_are_spooled() {
        let node = node();
        run(
            &node,
            &[("SERF_EVENT", "user"), ("SERF_USER_EVENT", "p2pu-control")],
            b"p2pu-ctl1:abc\n",
        );
        assert_eq!(spooled(&node), vec![b"p2pu-ctl1:abc".to_vec()]);
    }

    #[test]
    fn other_user_events_are_ignored_but_legacy_payloads_are_spooled() {
        let node = node();
        run(
            &node,
            &[("SERF_EVENT", "user"), ("SERF_USER_EVENT", "deploy")],
            b"whatever\n",
        );
        run(
            &node,
            &[("SERF_EVENT", "member-leave")],
            b"node-2 10.0.0.2\n",
        );
        assert!(spooled(&node).is_empty());
        let legacy =
            include_bytes!("../../crates/p2pu-formats/tests/vectors/legacy/lizard.serf-payload");
        run(
            &node,
            &[("SERF_EVENT", "user"), ("SERF_USER_EVENT", "torrent")],
            legacy,
        );
        assert_eq!(spooled(&node).len(), 1);
        let overlay =
            include_bytes!("../../crates/p2pu-formats/tests/vectors/legacy/lizard.overlay-message");
        run(
            &node,
            &[("SERF_EVENT", "user"), ("SERF_USER_EVENT", "torrent")],
            overlay,
        );
        assert_eq!(spooled(&node).len(), 2);
    }

    /// Serf sends `member-join` for this node when it starts and for each member it (re)joins:
    /// the agent is asked to catch up at once, which is how an update broadcast while this
    /// node's Serf was down (or dropped by Serf right after the restart) still arrives.
    #[test]
    fn a_member_join_asks_the_agent_to_catch_up() {
        let node = node();
        run(
            &node,
            &[("SERF_EVENT", "member-join")],
            b"node-2\t10.0.0.2\t\trole=node\n",
        );
        assert_eq!(
            spooled(&node),
            vec![sync::Request::Fleet.to_wire().into_bytes()]
        );
        let paths = spool::list(&node.dir.path().join("spool")).unwrap();
        let event = spool::read(&paths[0]).unwrap().unwrap();
        assert_eq!(event.source, Source::Sync);
    }

    #[test]
    fn status_query_before_the_agent_ever_ran_answers_empty_and_creates_nothing() {
        let node = node();
        let (_, out) = run(
            &node,
            &[
                ("SERF_EVENT", "query"),
                ("SERF_QUERY_NAME", "p2pu-status"),
                ("SERF_SELF_NAME", "n1"),
            ],
            b"\n",
        );
        let status: NodeStatus = serde_json::from_str(&out).unwrap();
        assert!(status.updates.is_empty());
        assert!(!node.dir.path().join("state").exists());
    }

    /// A node of the last release reads status answers denying unknown fields: the wave gate's
    /// and every older asker's empty query must get the fields that release knew and no
    /// other, or the answering node looks silent and a later wave stalls in a mixed fleet.
    #[test]
    fn an_empty_status_query_gets_the_answer_older_nodes_read() {
        let node = node();
        let vars = [
            ("SERF_EVENT", "query"),
            ("SERF_QUERY_NAME", "p2pu-status"),
            ("SERF_SELF_NAME", "n1"),
        ];
        let store = StateStore::open(&node.dir.path().join("state")).unwrap();
        let source = crate::agent::runtime::state::SourceUse {
            addr: "10.0.0.2:6880".into(),
            from: 0,
            bytes: 1,
            millis: 1,
            bad_pieces: 0,
            left: None,
        };
        store
            .put(Record {
                len: 1,
                wire: "p2pu1:WIRE".into(),
                status: Status::Applied,
                sources: vec![source],
                stripes: vec![crate::agent::runtime::state::StripeUse {
                    stripe: 0,
                    member: "n2".into(),
                    from: 0,
                    blocks: 3,
                    left: None,
                    repair: false,
                }],
                ..Record::received("site.pp".into(), 7, RecordKind::Signed(Kind::Manifest), 1)
            })
            .unwrap();
        let (_, old) = run(&node, &vars, b"\n");
        let old: serde_json::Value = serde_json::from_str(&old).unwrap();
        let keys: Vec<&str> = old
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["node", "updates", "version"], "{old}");
        let update = old["updates"][0].as_object().unwrap();
        let keys: Vec<&str> = update.keys().map(String::as_str).collect();
        assert_eq!(keys, ["at", "name", "seq", "status"], "{old}");
        let all = format!("{}\n", crate::agent::runtime::status::ALL_NAMES);
        let (_, new) = run(&node, &vars, all.as_bytes());
        let new: NodeStatus = serde_json::from_str(&new).unwrap();
        assert!(new.now_ms.is_some(), "{new:?}");
        assert_eq!(new.updates[0].sources.len(), 1, "{new:?}");
        // The stripes' sources only to an asker that asks for them (`fleet status` now);
        // catch-up and an older `fleet status` send `/` and deny unknown fields.
        assert!(new.updates[0].stripes.is_empty(), "{new:?}");
        let with = format!(
            "{}\n{}\n",
            crate::agent::runtime::status::ALL_NAMES,
            crate::agent::runtime::status::WITH_STRIPES
        );
        let (_, newest) = run(&node, &vars, with.as_bytes());
        let newest: NodeStatus = serde_json::from_str(&newest).unwrap();
        assert_eq!(newest.updates[0].stripes.len(), 1, "{newest:?}");
        assert!(newest.omitted == 0 && newest.now_ms.is_some(), "{newest:?}");
    }

    #[test]
    fn status_query_answers_from_the_state_dir() {
        let node = node();
        let store = StateStore::open(&node.dir.path().join("state")).unwrap();
        store
            .put(Record {
                len: 1,
                wire: "p2pu1:WIRE".into(),
                status: Status::Applied,
                updated_at: 2,
                ..Record::received("site.pp".into(), 7, RecordKind::Signed(Kind::Manifest), 1)
            })
            .unwrap();
        let (_, out) = run(
            &node,
            &[
                ("SERF_EVENT", "query"),
                ("SERF_QUERY_NAME", "p2pu-status"),
                ("SERF_SELF_NAME", "n1"),
            ],
            b"\n",
        );
        let status: NodeStatus = serde_json::from_str(&out).unwrap();
        assert_eq!(status.node, "n1");
        assert_eq!(status.version.as_deref(), Some(crate::cmd::VERSION));
        assert_eq!(
            (status.updates[0].seq, status.updates[0].status),
            (7, Status::Applied)
        );
        let (_, wire) = run(
            &node,
            &[("SERF_EVENT", "query"), ("SERF_QUERY_NAME", "p2pu-latest")],
            b"site.pp\n",
        );
        assert_eq!(wire, "p2pu1:WIRE");
        // A name that would leave the state dir is never looked up.
        let (_, none) = run(
            &node,
            &[("SERF_EVENT", "query"), ("SERF_QUERY_NAME", "p2pu-latest")],
            b"../../etc/passwd\n",
        );
        assert_eq!(none, "\n");
    }

    /// Serf sends no response for a handler that printed nothing, so the asker's query (which
    /// ends once every alive member answered) would run to its timeout whenever a member
    /// lacks the name asked for: the catch-up of a node missing an update did, on itself.
    #[test]
    fn a_query_with_nothing_to_answer_still_prints_so_serf_responds() {
        let node = node();
        for (query, payload) in [
            ("p2pu-latest", &b"site.pp\n"[..]),
            ("p2pu-heartbeat", b""),
            ("p2pu-logs", b"site.pp\n"),
        ] {
            let (_, out) = run(
                &node,
                &[
                    ("SERF_EVENT", "query"),
                    ("SERF_QUERY_NAME", query),
                    ("SERF_SELF_NAME", "n1"),
                ],
                payload,
            );
            assert_eq!(out, "\n", "{query}");
        }
    }

    #[test]
    fn heartbeat_events_are_spooled_and_the_query_answers_the_kept_one() {
        let node = node();
        run(
            &node,
            &[
                ("SERF_EVENT", "user"),
                ("SERF_USER_EVENT", "p2pu-heartbeat"),
            ],
            b"p2pu-hb1:abc\n",
        );
        // Not a heartbeat: another user event's payload under the heartbeat's name.
        run(
            &node,
            &[
                ("SERF_EVENT", "user"),
                ("SERF_USER_EVENT", "p2pu-heartbeat"),
            ],
            b"hello\n",
        );
        assert_eq!(spooled(&node), vec![b"p2pu-hb1:abc".to_vec()]);
        let query = [
            ("SERF_EVENT", "query"),
            ("SERF_QUERY_NAME", "p2pu-heartbeat"),
        ];
        assert_eq!(run(&node, &query, b"").1, "\n");
        std::fs::create_dir_all(node.dir.path().join("state")).unwrap();
        std::fs::write(node.dir.path().join("state/heartbeat"), "p2pu-hb1:kept\n").unwrap();
        assert_eq!(run(&node, &query, b"").1, "p2pu-hb1:kept");
    }
}
