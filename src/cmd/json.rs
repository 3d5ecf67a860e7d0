//! The JSON for scripts (`--json` of every command): one format, versioned, documented in
//! `docs/json.md`, which is also its schema. Each command's report is a serde struct (shared
//! with the wire where the status answer is); this module turns it into the documented form:
//! - a `format` field ([`FORMAT`]) at the top, a list wrapped as `{"format": 1, "<key>": [...]}`;
//! - every documented key present, `null` where the report leaves it out (an absent reason,
//!   an empty list, a zero count);
//! - beside each documented time (`time`: seconds since the epoch, `time-ms`: milliseconds),
//!   `<key>_rfc3339` in RFC 3339, UTC (`null` where the time is).
//!
//! [`decode`] undoes it, for readers of the report structs (tests, `--json` read back), so
//! those keep denying unknown fields.

use crate::error::{Error, Result};
use serde_json::{Map, Value};

/// The version of the JSON for scripts; raised when a key changes meaning or goes.
pub const FORMAT: u64 = 1;

/// The documentation, parsed for the schema: `## p2pu COMMAND --json` sections with a table of
/// `| `key.path` | type | meaning |` rows.
pub const DOC: &str = include_str!("../../docs/json.md");

/// One documented key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// `updates[].reason`: `[]` steps into each element of a list.
    pub path: String,
    /// `string`, `integer`, `boolean`, `time`, `time-ms`, `rfc3339`, `list`, `object`, `any`.
    pub kind: String,
}

/// The documented commands (`status`, `fleet status`, ...) and their keys, in order.
pub fn schema() -> Vec<(String, Vec<Key>)> {
    let mut out: Vec<(String, Vec<Key>)> = Vec::new();
    for line in DOC.lines() {
        if let Some(rest) = line.strip_prefix("## `p2pu ") {
            if let Some(command) = rest.strip_suffix(" --json`") {
                out.push((command.to_string(), Vec::new()));
            }
            continue;
        }
        let Some((_, keys)) = out.last_mut() else {
            continue;
        };
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || !cells[1].starts_with('`') {
            continue;
        }
        keys.push(Key {
            path: cells[1].trim_matches('`').to_string(),
            kind: cells[2].to_string(),
        });
    }
    out
}

/// The keys of `command`; none when it is not documented.
fn keys_of(command: &str) -> Option<Vec<Key>> {
    schema()
        .into_iter()
        .find(|(c, _)| c == command)
        .map(|(_, keys)| keys)
}

/// The key a list report is wrapped under (`fleet status`: `members`).
pub fn list_key(command: &str) -> &'static str {
    match command {
        "fleet status" => "members",
        "logs" => "nodes",
        _ => "items",
    }
}

/// `value` (the report of `command`) in the documented form, pretty.
pub fn render<T: serde::Serialize>(command: &str, value: &T) -> Result<String> {
    serde_json::to_string_pretty(&documented(command, value)?)
        .map(|t| t + "\n")
        .map_err(|e| Error::Internal(e.to_string()))
}

/// [`render`] on one line (`fleet status --watch --json`: one frame per line).
pub fn render_line<T: serde::Serialize>(command: &str, value: &T) -> Result<String> {
    serde_json::to_string(&documented(command, value)?)
        .map(|t| t + "\n")
        .map_err(|e| Error::Internal(e.to_string()))
}

/// `value` (the report of `command`) in the documented form.
pub fn documented<T: serde::Serialize>(command: &str, value: &T) -> Result<Value> {
    let raw = serde_json::to_value(value).map_err(|e| Error::Internal(e.to_string()))?;
    let mut top = Map::new();
    top.insert("format".into(), Value::from(FORMAT));
    match raw {
        Value::Object(fields) => top.extend(fields),
        other => {
            top.insert(list_key(command).into(), other);
        }
    }
    let mut value = Value::Object(top);
    for key in keys_of(command).unwrap_or_default() {
        let steps: Vec<&str> = key.path.split('.').collect();
        complete(&mut value, &steps, &key.kind);
    }
    Ok(value)
}

/// Fills the key at `steps` under `value` with null where absent, and adds its RFC 3339
/// twin when it is a time.
fn complete(value: &mut Value, steps: &[&str], kind: &str) {
    let Some((step, rest)) = steps.split_first() else {
        return;
    };
    let Value::Object(fields) = value else {
        return;
    };
    let (name, each) = match step.strip_suffix("[]") {
        Some(name) => (name, true),
        None => (*step, false),
    };
    if rest.is_empty() {
        let entry = fields.entry(name.to_string()).or_insert(Value::Null);
        let twin = match (kind, entry.as_u64()) {
            ("time", Some(secs)) => Some(Value::from(crate::civil::rfc3339(secs))),
            ("time-ms", Some(ms)) => Some(Value::from(crate::civil::rfc3339_ms(ms))),
            ("time" | "time-ms", None) => Some(Value::Null),
            _ => None,
        };
        if let Some(twin) = twin {
            fields.insert(format!("{name}_rfc3339"), twin);
        }
        return;
    }
    match fields.get_mut(name) {
        Some(Value::Array(items)) if each => {
            for item in items {
                complete(item, rest, kind);
            }
        }
        Some(inner @ Value::Object(_)) if !each => complete(inner, rest, kind),
        _ => {}
    }
}

/// The report struct back from the documented form: `format`, the wrapping, the RFC 3339
/// twins and the nulls go, so a struct that denies unknown fields reads it.
pub fn decode<T: serde::de::DeserializeOwned>(text: &[u8]) -> serde_json::Result<T> {
    let value: Value = serde_json::from_slice(text)?;
    let value = match value {
        Value::Object(mut top) if top.contains_key("format") => {
            top.remove("format");
            let list = ["members", "nodes", "items"]
                .iter()
                .find(|k| top.len() == 1 && top.get(**k).is_some_and(Value::is_array));
            match list {
                Some(key) => top.remove(*key).unwrap_or(Value::Null),
                None => Value::Object(top),
            }
        }
        other => other,
    };
    serde_json::from_value(strip(value))
}

fn strip(value: Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .filter(|(k, v)| !v.is_null() && !k.ends_with("_rfc3339"))
                .map(|(k, v)| (k, strip(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(strip).collect()),
        other => other,
    }
}

/// Every key path in `value` (`updates[].reason`), for the test against the documentation.
pub fn paths(value: &Value) -> std::collections::BTreeSet<String> {
    fn walk(value: &Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
        match value {
            Value::Object(fields) => {
                for (k, v) in fields {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    out.insert(path.clone());
                    walk(v, &path, out);
                }
            }
            Value::Array(items) => {
                for item in items {
                    if item.is_object() {
                        walk(item, &format!("{prefix}[]"), out);
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = std::collections::BTreeSet::new();
    walk(value, "", &mut out);
    out
}

/// How the JSON `value` of `command` departs from its documentation: keys it has that are
/// not documented, and documented keys it lacks (where their parent is there); empty when it
/// matches. For the tests that run the commands.
pub fn departures(command: &str, value: &Value) -> Vec<String> {
    let Some(keys) = keys_of(command) else {
        return vec![format!("`p2pu {command} --json` is not in docs/json.md")];
    };
    let maps: Vec<&str> = keys
        .iter()
        .filter(|k| k.kind == "map")
        .map(|k| k.path.as_str())
        .collect();
    let documented: std::collections::BTreeSet<&str> =
        keys.iter().map(|k| k.path.as_str()).collect();
    let mut out: Vec<String> = paths(value)
        .into_iter()
        .filter(|p| !maps.iter().any(|m| p.starts_with(&format!("{m}."))))
        .filter(|p| !documented.contains(p.as_str()))
        .map(|p| format!("undocumented key `{p}`"))
        .collect();
    for key in &keys {
        let steps: Vec<&str> = key.path.split('.').collect();
        if !present(value, &steps) {
            out.push(format!("documented key `{}` missing", key.path));
        }
    }
    out
}

/// Whether the key at `steps` is in `value` wherever its parent is an object.
fn present(value: &Value, steps: &[&str]) -> bool {
    let Some((step, rest)) = steps.split_first() else {
        return true;
    };
    let Value::Object(fields) = value else {
        // A null (or absent) parent: nothing to hold the key.
        return true;
    };
    let (name, each) = match step.strip_suffix("[]") {
        Some(name) => (name, true),
        None => (*step, false),
    };
    match fields.get(name) {
        None => false,
        Some(_) if rest.is_empty() => true,
        Some(Value::Array(items)) if each => items.iter().all(|i| present(i, rest)),
        Some(inner) => each || present(inner, rest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::testing::Run;
    use crate::engines::clients::Engines;
    use crate::engines::fake::FakeGossip;

    /// `p2pu ARGS` in `dir`: its stdout as JSON, after asserting it succeeded (or exited
    /// with `code`).
    fn json_of(run: Run, args: &[&str], code: i32) -> Value {
        let (got, out, err) = run.run(args);
        assert_eq!(got, code, "{args:?}: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    /// A node's state with an applied record that came from two HTTP sources, a retrying
    /// one, and a rejection; a signing key and a fleet.
    fn node() -> tempfile::TempDir {
        use crate::agent::runtime::state::{Record, Rejection, SourceUse, StateStore, Status};
        let dir = crate::cmd::testing::keyed_site();
        let store = StateStore::open(&dir.path().join("state")).unwrap();
        let mut applied = Record::pending("site.pp", &"ab".repeat(20), b"x");
        applied.status = Status::Applied;
        applied.reason = Some("puppet applied".into());
        applied.sources = vec![SourceUse {
            addr: "10.0.0.2:6880".into(),
            from: 0,
            bytes: 1,
            millis: 3,
            bad_pieces: 1,
            left: Some("bad piece".into()),
        }];
        store.put(applied).unwrap();
        let mut retrying = Record::pending("motd.txt", &"cd".repeat(20), b"y");
        retrying.status = Status::Retrying;
        retrying.next_attempt_at = Some(1_800_000_000);
        retrying.attempts = 1;
        store.put(retrying).unwrap();
        store
            .reject(Rejection {
                at: 1_800_000_000,
                source: "serf".into(),
                name: None,
                seq: None,
                reason: "not an announcement".into(),
            })
            .unwrap();
        dir
    }

    fn assert_documented(command: &str, value: &Value) {
        let departures = departures(command, value);
        assert!(
            departures.is_empty(),
            "`p2pu {command} --json` departs from docs/json.md: {departures:#?}\n{value:#}"
        );
        assert_eq!(value["format"], FORMAT, "{command}");
    }

    /// The real commands, in-process, against docs/json.md: every documented key present
    /// (null where there is nothing), no undocumented key, a `format`, and RFC 3339 beside
    /// each time.
    #[test]
    fn every_json_output_matches_its_documentation() {
        let dir = node();
        let p = dir.path();
        let config = ["--config", "site.toml", "--json"];
        let with = |args: &[&'static str]| -> Vec<&'static str> {
            args.iter().chain(config.iter()).copied().collect()
        };
        // status exits 0 or 3 (a rejection kept does not fail it).
        let (code, out, err) = Run::new(p).run(&with(&["status", "--all"]));
        assert!(matches!(code, 0 | 3), "{err}");
        let status: Value = serde_json::from_str(&out).unwrap();
        assert_documented("status", &status);
        let at = &status["rejected"][0];
        assert_eq!(
            (at["at"].as_u64(), at["at_rfc3339"].as_str()),
            (Some(1_800_000_000), Some("2027-01-15T08:00:00Z"))
        );
        assert!(status["updates"][0]["restored_seq"].is_null());
        assert_documented("history", &json_of(Run::new(p), &with(&["history"]), 0));
        assert_documented(
            "key list",
            &json_of(Run::new(p), &with(&["key", "list"]), 0),
        );
        let gossip = std::sync::Arc::new(FakeGossip::default());
        let engines = || Engines::fakes().gossip_engine(gossip.clone());
        let rollout = with(&["rollout", "abort", "site.pp", "--seq", "5"]);
        assert_documented(
            "rollout abort",
            &json_of(Run::new(p).engines(engines()), &rollout, 0),
        );
        let heartbeat = json_of(Run::new(p).engines(engines()), &with(&["heartbeat"]), 0);
        assert_documented("heartbeat", &heartbeat);
        let answer = crate::agent::runtime::status::node_status(
            &crate::agent::runtime::state::StateStore::open_read_only(&p.join("state")),
            "a".into(),
            &[],
        )
        .unwrap();
        let fleet = FakeGossip {
            members: vec![
                FakeGossip::member("a", crate::engines::MemberStatus::Alive),
                FakeGossip::member("quiet", crate::engines::MemberStatus::Alive),
            ],
            answers: vec![("a".into(), serde_json::to_string(&answer).unwrap())],
            ..FakeGossip::default()
        };
        let engines = Engines::fakes().gossip_engine(std::sync::Arc::new(fleet));
        let args = with(&["fleet", "status", "--timeout", "0"]);
        let members = json_of(
            Run::new(p).engines(engines),
            &args,
            crate::cmd::exit::INCOMPLETE,
        );
        assert_documented("fleet status", &members);
        assert_eq!(members["members"][1]["updates"], Value::Null);
        let store = crate::agent::runtime::state::StateStore::open_read_only(&p.join("state"));
        let logs = crate::agent::runtime::status::node_logs(&store, "a", b"site.pp", true)
            .unwrap()
            .unwrap();
        let gossip = FakeGossip {
            answers: vec![("a".into(), logs)],
            ..FakeGossip::default()
        };
        let engines = Engines::fakes().gossip_engine(std::sync::Arc::new(gossip));
        let args = with(&["logs", "site.pp", "--timeout", "0"]);
        let logs = json_of(Run::new(p).engines(engines), &args, 0);
        assert_documented("logs", &logs);
        assert_eq!(logs["nodes"][0]["cut"], Value::Null);
        std::fs::write(p.join("payload"), b"hello").unwrap();
        let create = ["torrent", "create", "payload", "--reproducible"];
        let (code, _, err) = Run::new(p).run(&create);
        assert_eq!(code, 0, "{err}");
        let show = ["torrent", "show", "payload.torrent", "--json"];
        assert_documented("torrent show", &json_of(Run::new(p), &show, 0));
        std::fs::write(p.join("hb"), heartbeat["wire"].as_str().unwrap()).unwrap();
        let verify = ["verify", "hb", "--keys", "k", "--json"];
        assert_documented("verify", &json_of(Run::new(p), &verify, 0));
    }

    /// The report structs read their documented form back (unknown fields still denied).
    #[test]
    fn decode_reads_the_documented_form_back() {
        /// `rollout`'s report, as its struct is (a command's file is not imported here).
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct ControlReport {
            action: String,
            name: String,
            seq: u64,
            to: Option<u64>,
            issued: u64,
            nodes: Vec<String>,
            wire: String,
        }
        let report = ControlReport {
            action: "revert".into(),
            name: "site.pp".into(),
            seq: 5,
            to: None,
            issued: 1_800_000_000,
            nodes: Vec::new(),
            wire: "p2pu-ctl1:x".into(),
        };
        let text = render("rollout revert", &report).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["to"], Value::Null);
        assert_eq!(value["issued_rfc3339"], "2027-01-15T08:00:00Z");
        assert_eq!(decode::<ControlReport>(text.as_bytes()).unwrap(), report);
        let extra = text.replacen("\"seq\"", "\"surprise\": 0, \"seq\"", 1);
        assert!(decode::<ControlReport>(extra.as_bytes()).is_err());
        let list = render("fleet status", &Vec::<u8>::new()).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&list).unwrap(),
            serde_json::json!({"format": 1, "members": []})
        );
    }
}
