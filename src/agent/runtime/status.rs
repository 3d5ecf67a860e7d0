//! What a node says about its updates, and what the fleet said: the answer to the
//! `p2pu-status` query (built from the state dir by the event handler, decoded by
//! `fleet status`, `submit --wait` and catch-up), the answers to `p2pu-latest` and
//! `p2pu-logs` (a node's kept output, bounded; `p2pu logs`), and the
//! `p2pu status --json` report. One owner for the records both ends of the query share.

use super::heartbeat::Freshness;
use super::state::{Record, Rejection, RolloutOutcome, StateStore, Status, StripeUse};
use super::Result;
use crate::engines::{Gossip, MemberStatus};
use crate::formats::serf_names::{LOGS_QUERY, STATUS_QUERY};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A node's answer to the `p2pu-status` query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeStatus {
    pub node: String,
    pub updates: Vec<UpdateStatus>,
    /// The answering binary's `p2pu --version`; absent in answers from before it was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Whether it holds a fresh heartbeat; absent where heartbeats are not required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<Freshness>,
    /// Names left out to keep the answer within [`MAX_ANSWER`] (the oldest); absent when
    /// none were (and in answers from before it was added).
    #[serde(default, skip_serializing_if = "is_zero_usize")]
    pub omitted: usize,
    /// When the answer was written, on the answering node's clock (ms since the epoch): the
    /// asking node measures its own clock against the fleet's from these (`clock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now_ms: Option<u64>,
}

fn is_zero_usize(n: &usize) -> bool {
    *n == 0
}

/// The payload of a `p2pu-status` query that asks for every name and for the `omitted`
/// count: not a name (no name holds `/`), so a node from before names were asked for ignores
/// it like any payload, and a node now knows the asker reads `omitted`. An empty payload (the
/// wave gate's, and every older asker's) gets no `omitted`, which an older reader, denying
/// unknown fields, would take for no answer at all.
pub const ALL_NAMES: &str = "/";

/// A line of a `p2pu-status` query's payload asking for each update's `stripes` (added after
/// `sources`): not a name, so nodes from before it ignore it, and only askers that send it
/// get the field. Catch-up and the wave gate, and every asker from before it, deny unknown
/// fields and would take an answer carrying it for no answer at all.
pub const WITH_STRIPES: &str = "/stripes";

/// Whether a `p2pu-status` query's payload asks for the stripes' sources ([`WITH_STRIPES`]).
pub fn asks_stripes(payload: &[u8]) -> bool {
    String::from_utf8_lossy(payload)
        .lines()
        .any(|line| line.trim() == WITH_STRIPES)
}

/// The most names one `p2pu-status` query may ask for (`fleet status NAME...`).
pub const MAX_ASKED_NAMES: usize = 64;

/// The names a `p2pu-status` query's payload asks for, one per line; empty: every name. Any
/// member may send the query, so only valid names are taken, at most [`MAX_ASKED_NAMES`]:
/// the list only narrows the answer.
pub fn asked_names(payload: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(payload)
        .lines()
        .map(str::trim)
        .filter(|n| crate::formats::announcement::validate_name(n).is_ok())
        .take(MAX_ASKED_NAMES)
        .map(str::to_string)
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateStatus {
    pub name: String,
    pub seq: u64,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub at: u64,
    /// Members whose seed servers sent this node pieces that did not match the signed torrent:
    /// a lying (or compromised) member, named so the operator can act on it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bad_sources: Vec<String>,
    /// Attempts that ended (retries count); absent from nodes that do not retry.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// The seed servers this node fetched it from, in order (its newest updates only, at most
    /// [`STATUS_SOURCES`]): who served whom, for `fleet serve`'s picture of the transfer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceSeen>,
    /// A striped fetch's sources, per stripe (the newest update only, at most
    /// [`STATUS_STRIPES`], names and reasons cut); only to askers that ask for them
    /// ([`WITH_STRIPES`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stripes: Vec<StripeUse>,
}

/// `text` without what a terminal would act on: control characters (escape sequences,
/// carriage returns, newlines that would forge rows) and the bidirectional overrides that
/// reorder what is shown. For every string a member sends that reaches an operator's screen.
pub fn printable(text: &str) -> String {
    text.chars()
        .filter(|&c| {
            !c.is_control() && !matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
        })
        .collect()
}

impl MemberReport {
    /// This report with every string a member sent (its answer, its Serf name and tags)
    /// [`printable`]: any keyring holder can answer the status query for itself and pick its
    /// own name and tags.
    fn printable(mut self) -> MemberReport {
        let clean = |text: &mut String| *text = printable(text);
        clean(&mut self.node);
        if let Some(v) = self.version.as_mut() {
            clean(v);
        }
        self.tags = std::mem::take(&mut self.tags)
            .into_iter()
            .map(|(k, v)| (printable(&k), printable(&v)))
            .collect();
        for u in self.updates.iter_mut().flatten() {
            clean(&mut u.name);
            if let Some(r) = u.reason.as_mut() {
                clean(r);
            }
            u.bad_sources.iter_mut().for_each(clean);
            for source in &mut u.sources {
                clean(&mut source.addr);
                if let Some(l) = source.left.as_mut() {
                    clean(l);
                }
            }
            for stripe in &mut u.stripes {
                clean(&mut stripe.member);
                if let Some(l) = stripe.left.as_mut() {
                    clean(l);
                }
            }
        }
        self
    }
}

/// One line a stripe, as `status` and `fleet status` show them: `stripe 1: n5 from block 1,
/// 0 blocks, left: crashed; n1 from block 1, 40 blocks; n3 by repair from block 9, 4 blocks`. The names and reasons come from
/// members' answers (any keyring holder can answer for itself), so control characters are
/// dropped: an escape sequence must not reach the operator's terminal.
pub fn stripe_lines(uses: &[StripeUse]) -> Vec<String> {
    let clean = printable;
    let mut lines: Vec<(u32, String)> = Vec::new();
    for u in uses {
        let mut text = format!(
            "{}{} from block {}, {} blocks",
            clean(&u.member),
            if u.repair { " by repair" } else { "" },
            u.from,
            u.blocks
        );
        if let Some(left) = &u.left {
            text.push_str(&format!(", left: {}", clean(left)));
        }
        match lines.last_mut() {
            Some((stripe, line)) if *stripe == u.stripe => {
                line.push_str("; ");
                line.push_str(&text);
            }
            _ => lines.push((u.stripe, format!("stripe {}: {text}", u.stripe))),
        }
    }
    lines.into_iter().map(|(_, line)| line).collect()
}

/// How many stripe sources the answer carries (of the newest update), and how much of each
/// name and reason: 16 entries of at most about 130 bytes keep the answer under
/// [`MAX_ANSWER`] beside the sources, and hold 8 stripes with one change of source each.
pub const STATUS_STRIPES: usize = 16;
const STRIPE_MEMBER_CHARS: usize = 32;
const STRIPE_LEFT_CHARS: usize = 40;

/// One source as a node's status answer gives it: enough to draw the transfer, cut to fit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSeen {
    /// The member's seed server, `ip:port`.
    pub addr: String,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bad_pieces: u32,
    /// Why it was left (`slow: ...`, `failed: ...`), cut to [`SOURCE_LEFT_CHARS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left: Option<String>,
}

/// How many sources, of how many of a node's newest updates, its status answer carries, and
/// how much of each one's reason for leaving: the answer must stay under [`MAX_ANSWER`].
pub const STATUS_SOURCES: usize = 8;
const SOURCES_OF_UPDATES: usize = 2;
const SOURCE_LEFT_CHARS: usize = 60;

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Query answers travel over UDP; keep them well under the rendered response limit.
const MAX_ANSWER: usize = 7 * 1024;

/// `p2pu status --json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    pub updates: Vec<Record>,
    pub rejected: Vec<Rejection>,
    /// Absent where heartbeats are not required (`agent.heartbeat_window_secs = 0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<Freshness>,
    /// Whether the agent, Serf and Transmission answer on their local ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<crate::engines::clients::ServiceState>,
    /// Whether the agent's state dir exists (`false`: the agent never ran here).
    #[serde(default = "yes")]
    pub state_dir_exists: bool,
    /// How far this node's clock is off the fleet's, as the last catch-up round measured it;
    /// absent before one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<super::clock::Offset>,
}

fn yes() -> bool {
    true
}

/// This node's newest update of each name (of `names`, when given), newest first, within
/// the answer limit; how many were left out is said.
pub fn node_status(store: &StateStore, node: String, names: &[String]) -> Result<NodeStatus> {
    let mut latest: Vec<Record> = store.latest()?;
    latest.retain(|r| names.is_empty() || names.contains(&r.name));
    latest.sort_by_key(|r| std::cmp::Reverse(r.updated_at));
    let total = latest.len();
    let mut status = NodeStatus {
        node,
        updates: Vec::new(),
        version: Some(crate::version::VERSION.to_string()),
        heartbeat: None,
        omitted: 0,
        now_ms: None,
    };
    // The node name, the version, the time (`now_ms`, set by the handler) and the JSON around
    // the updates.
    let mut size = 190;
    for (n, record) in latest.into_iter().enumerate() {
        let sources = if n < SOURCES_OF_UPDATES {
            record
                .sources
                .iter()
                .take(STATUS_SOURCES)
                .map(|s| SourceSeen {
                    addr: s.addr.chars().take(64).collect(),
                    bytes: s.bytes,
                    bad_pieces: s.bad_pieces,
                    left: s
                        .left
                        .as_ref()
                        .map(|l| l.chars().take(SOURCE_LEFT_CHARS).collect()),
                })
                .collect()
        } else {
            Vec::new()
        };
        let stripes = if n == 0 {
            record
                .stripes
                .iter()
                .take(STATUS_STRIPES)
                .map(|u| StripeUse {
                    member: u.member.chars().take(STRIPE_MEMBER_CHARS).collect(),
                    left: u
                        .left
                        .as_ref()
                        .map(|l| l.chars().take(STRIPE_LEFT_CHARS).collect()),
                    ..u.clone()
                })
                .collect()
        } else {
            Vec::new()
        };
        let bad_sources = record
            .sources
            .iter()
            .filter(|s| s.bad_pieces > 0)
            .map(|s| s.addr.clone())
            .collect();
        let update = UpdateStatus {
            bad_sources,
            name: record.name,
            seq: record.seq,
            status: record.status,
            reason: record
                .reason
                .map(|r| r.chars().take(STATUS_REASON_CHARS).collect()),
            at: record.updated_at,
            attempts: record.attempts,
            sources,
            stripes,
        };
        size += serde_json::to_string(&update).map_or(0, |s| s.len() + 1);
        if size > MAX_ANSWER {
            break;
        }
        status.updates.push(update);
    }
    status.omitted = total - status.updates.len();
    Ok(status)
}

/// The newest accepted announcement of `name`, as received, for a node catching up.
pub fn latest_wire(store: &StateStore, name: &str) -> Result<Option<String>> {
    if crate::formats::announcement::validate_name(name).is_err() {
        return Ok(None);
    }
    Ok(store
        .records(name)?
        .into_iter()
        .filter(|r| r.status != Status::Held)
        .max_by_key(|r| r.seq)
        .map(|r| r.wire))
}

/// One member's row of `p2pu fleet status --json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MemberReport {
    pub node: String,
    /// Its Serf address, `ip:port`.
    pub addr: String,
    pub alive: bool,
    /// Its `p2pu --version`; `None` when it did not answer or runs a p2pu that does not say.
    pub version: Option<String>,
    /// `None`: the member did not answer in time (or answered garbage).
    pub updates: Option<Vec<UpdateStatus>>,
    /// Seconds since its newest update changed, by this machine's clock.
    pub newest_age_secs: Option<u64>,
    /// Its heartbeat freshness, as it answered; absent where not required or not answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<Freshness>,
    /// The operator's Serf tags (site.toml `[serf] tags`, what `submit --target` selects by);
    /// p2pu's own `p2pu-*` tags left out.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tags: std::collections::BTreeMap<String, String>,
    /// Names its answer left out to stay within the query's size (the oldest); ask for them
    /// by name (`fleet status NAME...`).
    #[serde(default)]
    pub omitted: usize,
}

/// Asks the fleet; every member appears once, answered or not.
pub fn fleet_status(
    gossip: &dyn Gossip,
    timeout: Duration,
    names: &[String],
    now: u64,
) -> Result<Vec<MemberReport>> {
    let members = gossip.members()?;
    // Asked by name, each member answers with those alone, so a name the 7 KiB answer would
    // have left out is there (members from before this ignore the list and answer all).
    let payload = if names.is_empty() {
        ALL_NAMES.to_string()
    } else {
        names.join("\n")
    } + "\n"
        + WITH_STRIPES;
    let answers = gossip.query(STATUS_QUERY, payload.as_bytes(), timeout)?;
    let mut reports: Vec<MemberReport> = members
        .iter()
        .filter(|m| m.status != MemberStatus::Left)
        .map(|m| {
            let answer = answers
                .iter()
                .find(|(node, _)| node == &m.name)
                .and_then(|(_, text)| serde_json::from_str::<NodeStatus>(text).ok());
            let version = answer.as_ref().and_then(|a| a.version.clone());
            let omitted = answer.as_ref().map_or(0, |a| a.omitted);
            let heartbeat = answer.as_ref().and_then(|a| a.heartbeat.clone());
            let updates = answer.map(|status| {
                status
                    .updates
                    .into_iter()
                    .filter(|u| names.is_empty() || names.contains(&u.name))
                    .collect::<Vec<_>>()
            });
            let newest_age_secs = updates
                .as_ref()
                .and_then(|u| u.iter().map(|u| u.at).max())
                .map(|at| now.saturating_sub(at));
            MemberReport {
                node: m.name.clone(),
                addr: std::net::SocketAddr::new(m.addr, m.port).to_string(),
                alive: m.status == MemberStatus::Alive,
                version,
                updates,
                newest_age_secs,
                heartbeat,
                omitted,
                tags: m
                    .tags
                    .iter()
                    .filter(|(k, _)| {
                        !k.starts_with(crate::formats::serf_names::RESERVED_TAG_PREFIX)
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            }
            .printable()
        })
        .collect();
    reports.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(reports)
}

/// An update: its name and seq.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutId {
    pub name: String,
    pub seq: u64,
}

/// The newest update any member reports: the highest seq, by name on a tie.
pub fn newest_rollout(reports: &[MemberReport]) -> Option<RolloutId> {
    reports
        .iter()
        .filter_map(|r| r.updates.as_ref())
        .flatten()
        .max_by(|a, b| a.seq.cmp(&b.seq).then_with(|| b.name.cmp(&a.name)))
        .map(|u| RolloutId {
            name: u.name.clone(),
            seq: u.seq,
        })
}

/// Whether every alive member is done with `rollout`: applied, failed, reverted, halted or not
/// targeted, or already on a newer seq of its name. A member that did not answer, or has not
/// heard of it yet, is not done; a member that is not alive cannot be waited for.
pub fn is_settled(reports: &[MemberReport], rollout: &RolloutId) -> bool {
    reports.iter().filter(|r| r.alive).all(|r| {
        let Some(updates) = &r.updates else {
            return false;
        };
        updates.iter().any(|u| {
            u.name == rollout.name
                && (u.seq > rollout.seq
                    || (u.seq == rollout.seq && u.status.rollout_outcome() != RolloutOutcome::Open))
        })
    })
}

/// A node's answer to the `p2pu-logs` query: its newest record of one name (or the seq asked
/// for), with Puppet's output cut to fit the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeLogs {
    pub node: String,
    pub name: String,
    pub seq: u64,
    pub status: Status,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The kept output's last part: what fits the answer.
    pub output: String,
    /// Whether `output` lost its beginning to the answer's bound.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cut: bool,
    /// When the record's status last changed (seconds since the epoch); only to askers that
    /// ask for it ([`WITH_TIME`]: an older reader denies the field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<u64>,
}

/// The third line of a logs request that asks for the record's time (`p2pu logs --since`).
/// Older nodes read two lines and ignore it, answering without the time.
pub const WITH_TIME: &str = "/at";

/// What `p2pu logs` asks: a name, and optionally the one node that should answer (the others
/// answer nothing, so the fleet does not send N outputs to read one), and with `with_time`
/// the record's time ([`WITH_TIME`]). A name holds no newline.
pub fn logs_request(name: &str, node: Option<&str>, with_time: bool) -> Vec<u8> {
    match (node, with_time) {
        (node, true) => format!("{name}\n{}\n{WITH_TIME}", node.unwrap_or("")).into_bytes(),
        (Some(node), false) => format!("{name}\n{node}").into_bytes(),
        (None, false) => name.as_bytes().to_vec(),
    }
}

/// What a node shares of an update's output with a member that asks, unless
/// `agent.share_full_logs`: the lines Puppet marks as errors or warnings, at most this many
/// (the last ones), each cut to [`SHARED_LINE_CHARS`]. Puppet's full output can carry file
/// diffs and whatever a manifest prints, secrets included, and any member may ask for it.
pub const SHARED_LINES: usize = 40;
pub const SHARED_LINE_CHARS: usize = 300;

/// How much of a record's reason `p2pu-status` gives any member, and a filtered `p2pu-logs`
/// answer too: the reason is not filtered (it may end with the output's last lines, whatever
/// they are, when Puppet failed without an `Error:` line).
pub const STATUS_REASON_CHARS: usize = 200;
/// How much of it an answer under `agent.share_full_logs` gives.
const FULL_REASON_CHARS: usize = 500;

/// The first line of a filtered answer's output, saying what was left out and why.
pub const FILTERED_NOTE: &str =
    "(only the lines marked Error or Warning are shared; agent.share_full_logs shares all)";

/// `output` as this node shares it: whole when `full`, else its error and warning lines.
pub fn shared_output(output: &str, full: bool) -> String {
    if full || output.is_empty() {
        return output.to_string();
    }
    let marked = |line: &&str| {
        // Puppet colours its level words on a terminal (`ESC[1;31mError: ...`).
        let mut plain = line.trim_start();
        while let Some(rest) = plain.strip_prefix("\u{1b}[") {
            plain = rest.split_once('m').map_or("", |(_, after)| after);
        }
        ["Error:", "Warning:"]
            .iter()
            .any(|level| plain.starts_with(level))
    };
    let lines: Vec<&str> = output.lines().filter(marked).collect();
    let kept = &lines[lines.len().saturating_sub(SHARED_LINES)..];
    let mut out = String::from(FILTERED_NOTE);
    for line in kept {
        out.push('\n');
        out.extend(line.chars().take(SHARED_LINE_CHARS));
    }
    out
}

/// This node's answer to a `p2pu-logs` request, or `None` when the request is not for this
/// node, names an impossible update, or this node has no record of it. At most [`MAX_ANSWER`]
/// bytes of JSON: the output keeps its end, where Puppet reports last. Only its error and
/// warning lines unless `full_output` (`agent.share_full_logs`).
pub fn node_logs(
    store: &StateStore,
    node: &str,
    request: &[u8],
    full_output: bool,
) -> Result<Option<String>> {
    let request = String::from_utf8_lossy(request);
    let mut lines = request.lines();
    let name = lines.next().unwrap_or_default().trim();
    if let Some(wanted) = lines.next().map(str::trim) {
        if !wanted.is_empty() && wanted != node {
            return Ok(None);
        }
    }
    let with_time = lines.next().map(str::trim) == Some(WITH_TIME);
    if crate::formats::announcement::validate_name(name).is_err() {
        return Ok(None);
    }
    let Some(record) = store
        .records(name)?
        .into_iter()
        .filter(|r| r.status != Status::Held)
        .max_by_key(|r| r.seq)
    else {
        return Ok(None);
    };
    let mut answer = NodeLogs {
        node: node.to_string(),
        name: record.name,
        seq: record.seq,
        status: record.status,
        attempts: record.attempts,
        reason: record.reason.map(|r| {
            let cap = if full_output {
                FULL_REASON_CHARS
            } else {
                STATUS_REASON_CHARS
            };
            r.chars().take(cap).collect()
        }),
        output: shared_output(&record.output.unwrap_or_default(), full_output),
        cut: false,
        at: with_time.then_some(record.updated_at),
    };
    loop {
        let text = serde_json::to_string(&answer).unwrap_or_default();
        if text.len() <= MAX_ANSWER || answer.output.is_empty() {
            return Ok(Some(text));
        }
        // A byte of output takes 1 to 6 bytes of JSON (`\u0001`): dropping a sixth of the excess
        // never drops too much, and an eighth of what is left each round ends it soon.
        let over = text.len() - MAX_ANSWER;
        let drop = (over / 6).max(answer.output.len() / 8).max(1);
        let mut start = drop.min(answer.output.len());
        while !answer.output.is_char_boundary(start) {
            start += 1;
        }
        answer.output.drain(..start);
        answer.cut = true;
    }
}

/// Asks the fleet (or one `node`) for its kept output of `name`; answers that do not decode
/// are left out, each answering node once.
pub fn fleet_logs(
    gossip: &dyn Gossip,
    name: &str,
    node: Option<&str>,
    with_time: bool,
    timeout: Duration,
) -> Result<Vec<NodeLogs>> {
    let request = logs_request(name, node, with_time);
    let answers = gossip.query(LOGS_QUERY, &request, timeout)?;
    let mut logs: Vec<NodeLogs> = answers
        .iter()
        .filter(|(from, text)| !text.trim().is_empty() && node.is_none_or(|n| n == from))
        .filter_map(|(from, text)| {
            serde_json::from_str::<NodeLogs>(text)
                .ok()
                .filter(|logs| &logs.node == from && logs.name == name)
        })
        .collect();
    logs.sort_by(|a, b| a.node.cmp(&b.node));
    logs.dedup_by(|a, b| a.node == b.node);
    Ok(logs)
}
