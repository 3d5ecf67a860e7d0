//! Rollout plans: which nodes an update is for (a [`Selector`]), the waves it reaches them in,
//! how many failures stop it, and the checks carried with it. A plan is a small canonical
//! bencoded dictionary (at most [`MAX_PLAN_BYTES`]) that travels beside the payload's metainfo
//! (`<info-hash>.plan` on the members' seed servers); the announcement is flagged and its
//! signatures cover the plan's SHA-256 (see `announcement`), so a plan is as signed as the
//! update it steers. Decoding is as strict as the announcement's: unknown keys, duplicate keys
//! and any non-canonical encoding are refused, naming what is wrong.
//!
//! Wave assignment ([`assign_waves`]) is a pure function of the info-hash and the member names,
//! so every node computes the same waves without asking anyone.

use crate::bencode::{self, Kind as Ben, Value};
use crate::window::{parse_all, Window};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;

/// The largest plan a node reads or `submit` writes.
pub const MAX_PLAN_BYTES: usize = 2048;
/// The most waves one plan holds.
pub const MAX_WAVES: usize = 16;
/// The longest wave wait: a week.
pub const MAX_WAIT_SECS: u64 = 7 * 86_400;
/// The longest per-update check timeout: an hour.
pub const MAX_CHECK_TIMEOUT_SECS: u64 = 3_600;
const KEYS: [&str; 9] = [
    "check",
    "check_timeout",
    "force_locks",
    "maxf",
    "target",
    "v",
    "wait",
    "waves",
    "window",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("rollout plan is {len} bytes, more than the {MAX_PLAN_BYTES} a plan may be")]
    TooLong { len: usize },
    #[error("rollout plan is not canonical bencode: {0}")]
    Bencode(#[from] bencode::BencodeError),
    #[error("rollout plan is not a dictionary")]
    NotADict,
    #[error("rollout plan has unknown field {key:?} (this p2pu knows {})", KEYS.join(", "))]
    UnknownKey { key: String },
    #[error("rollout plan lacks field `{key}`")]
    MissingKey { key: &'static str },
    #[error("rollout plan field `{key}` is not {want}")]
    WrongType {
        key: &'static str,
        want: &'static str,
    },
    #[error("rollout plan version is {got}, this p2pu reads version 1")]
    UnsupportedVersion { got: i64 },
    #[error("{flag} {value:?}: {reason}")]
    BadValue {
        flag: &'static str,
        value: String,
        reason: String,
    },
}

bencode::v1_keys_error!(PlanError);

use PlanError as E;

fn bad(flag: &'static str, value: &str, reason: impl Into<String>) -> PlanError {
    E::BadValue {
        flag,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Shell-style glob on whole names: `*` is any run of characters, `?` one character, and
/// everything else itself.
pub fn glob_match(glob: &str, name: &str) -> bool {
    let (glob, name): (Vec<char>, Vec<char>) = (glob.chars().collect(), name.chars().collect());
    let (mut g, mut n) = (0, 0);
    // Where the last `*` was, and the name position it has swallowed up to.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match glob.get(g) {
            Some('*') => {
                star = Some((g, n));
                g += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                g += 1;
                n += 1;
            }
            _ => match star {
                Some((sg, sn)) => {
                    g = sg + 1;
                    n = sn + 1;
                    star = Some((sg, sn + 1));
                }
                None => return false,
            },
        }
    }
    glob[g..].iter().all(|&c| c == '*')
}

/// Which nodes an update is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Members whose Serf tag `key` matches the glob `value`.
    Tag { key: String, glob: String },
    /// Members whose node name matches the glob.
    Name(String),
    /// These members, sorted, no name twice.
    Nodes(Vec<String>),
}

/// Text a selector part may hold: printable, no spaces, not the separators the text uses.
fn check_part(flag: &'static str, whole: &str, part: &str, what: &str) -> Result<(), E> {
    if part.is_empty() {
        return Err(bad(flag, whole, format!("empty {what}")));
    }
    if part.len() > 128 {
        return Err(bad(flag, whole, format!("{what} longer than 128 bytes")));
    }
    if part
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == ',')
    {
        return Err(bad(
            flag,
            whole,
            format!("{what} holds a space, a comma or a control character"),
        ));
    }
    Ok(())
}

impl Selector {
    /// `--target KEY=GLOB`: a Serf tag.
    pub fn tag(text: &str) -> Result<Selector, PlanError> {
        let flag = "--target";
        let Some((key, glob)) = text.split_once('=') else {
            return Err(bad(flag, text, "want KEY=GLOB, e.g. role=camera"));
        };
        check_part(flag, text, key, "tag name")?;
        if key.contains('=') || key.contains('*') || key.contains('?') {
            return Err(bad(flag, text, "a tag name has no `=`, `*` or `?`"));
        }
        check_part(flag, text, glob, "tag value")?;
        Ok(Selector::Tag {
            key: key.into(),
            glob: glob.into(),
        })
    }

    /// `--target-name GLOB`: node names.
    pub fn name(text: &str) -> Result<Selector, PlanError> {
        check_part("--target-name", text, text, "name glob")?;
        Ok(Selector::Name(text.into()))
    }

    /// `--target-nodes a,b,c`: a list of node names.
    pub fn nodes(text: &str) -> Result<Selector, PlanError> {
        let flag = "--target-nodes";
        let mut nodes: Vec<String> = Vec::new();
        for node in text.split(',') {
            check_part(flag, text, node, "node name")?;
            if node.contains('*') || node.contains('?') {
                return Err(bad(flag, text, "a node list takes names, not globs"));
            }
            nodes.push(node.into());
        }
        nodes.sort();
        nodes.dedup();
        if nodes.len() > 64 {
            return Err(bad(flag, text, "more than 64 nodes; use a tag or a glob"));
        }
        Ok(Selector::Nodes(nodes))
    }

    /// Parses the canonical text ([`Selector::to_text`]); refuses any other spelling.
    pub fn parse(text: &str) -> Result<Selector, PlanError> {
        let selector = if let Some(rest) = text.strip_prefix("tag:") {
            Selector::tag(rest)
        } else if let Some(rest) = text.strip_prefix("name:") {
            Selector::name(rest)
        } else if let Some(rest) = text.strip_prefix("nodes:") {
            Selector::nodes(rest)
        } else {
            Err(bad(
                "target",
                text,
                "want tag:KEY=GLOB, name:GLOB or nodes:a,b,c",
            ))
        }?;
        if selector.to_text() != text {
            return Err(bad("target", text, "not in canonical form"));
        }
        Ok(selector)
    }

    /// The one spelling of this selector, as signed in plans (and as key delegations name it).
    pub fn to_text(&self) -> String {
        match self {
            Selector::Tag { key, glob } => format!("tag:{key}={glob}"),
            Selector::Name(glob) => format!("name:{glob}"),
            Selector::Nodes(nodes) => format!("nodes:{}", nodes.join(",")),
        }
    }

    /// Whether the node `name` with Serf tags `tags` is one this selector names.
    pub fn matches(&self, name: &str, tags: &BTreeMap<String, String>) -> bool {
        match self {
            Selector::Tag { key, glob } => tags.get(key).is_some_and(|v| glob_match(glob, v)),
            Selector::Name(glob) => glob_match(glob, name),
            Selector::Nodes(nodes) => nodes.iter().any(|n| n == name),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// A number of nodes: absolute, or a percentage of the targeted members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Count(u32),
    Percent(u8),
}

impl Size {
    /// `N` or `P%`; `min` is the least count allowed (0 for failures, 1 for waves).
    fn parse(flag: &'static str, whole: &str, text: &str, min: u32) -> Result<Size, PlanError> {
        let (digits, percent) = match text.strip_suffix('%') {
            Some(digits) => (digits, true),
            None => (text, false),
        };
        let canonical = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'));
        let value: Option<u32> = canonical.then(|| digits.parse().ok()).flatten();
        match (value, percent) {
            (Some(p), true) if p <= 100 && (p >= 1 || min == 0) => Ok(Size::Percent(p as u8)),
            (Some(n), false) if n >= min && n <= 100_000 => Ok(Size::Count(n)),
            _ => Err(bad(
                flag,
                whole,
                format!(
                    "{text:?} is not a count ({min} to 100000) or a percentage ({min}% to 100%)"
                ),
            )),
        }
    }

    pub fn to_text(self) -> String {
        match self {
            Size::Count(n) => n.to_string(),
            Size::Percent(p) => format!("{p}%"),
        }
    }

    /// Nodes out of `total`: a percentage rounds up (10% of 5 is 1, not 0), capped at `total`.
    fn of(self, total: usize) -> usize {
        match self {
            Size::Count(n) => (n as usize).min(total),
            Size::Percent(p) => (total * p as usize).div_ceil(100),
        }
    }

    /// Failures allowed out of `total`: a percentage rounds down, so 10% of 5 allows none.
    fn allowed(self, total: usize) -> usize {
        match self {
            Size::Count(n) => n as usize,
            Size::Percent(p) => total * p as usize / 100,
        }
    }
}

/// A rollout plan, as signed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// `None`: the whole fleet.
    pub target: Option<Selector>,
    /// Cumulative wave sizes, the last 100%; empty: one wave.
    pub waves: Vec<Size>,
    /// Failures (of targeted members in earlier waves) past which the rollout halts.
    pub max_failures: Option<Size>,
    /// Seconds to wait after the earlier waves settled.
    pub wait_secs: u64,
    /// Per-update health check argv, and its timeout in seconds.
    pub check: Vec<String>,
    pub check_timeout: Option<u64>,
    /// Maintenance windows this update applies in (`submit --window`), replacing the node's
    /// `agent.apply_window`; empty: the node's. A node that does not know the field refuses
    /// the plan, and so never applies the update outside the window.
    pub window: Vec<Window>,
    /// Apply past the nodes' update locks and veto commands (`submit --force-locks`): the
    /// signers' explicit word. Old nodes refuse a plan with it (they have no locks to force).
    pub force_locks: bool,
}

/// Parses `--waves 1,10%,50%,100%`.
pub fn parse_waves(text: &str) -> Result<Vec<Size>, PlanError> {
    let flag = "--waves";
    let waves = text
        .split(',')
        .map(|part| Size::parse(flag, text, part, 1))
        .collect::<Result<Vec<_>, _>>()?;
    check_waves(&waves).map_err(|reason| bad(flag, text, reason))?;
    Ok(waves)
}

fn check_waves(waves: &[Size]) -> Result<(), String> {
    if waves.len() > MAX_WAVES {
        return Err(format!("more than {MAX_WAVES} waves"));
    }
    if waves.last() != Some(&Size::Percent(100)) {
        return Err("the last wave must be 100% (every targeted node)".into());
    }
    // Cumulative: a later wave of the same kind must be larger.
    let mut last: [Option<u32>; 2] = [None, None];
    for size in waves {
        let (slot, n) = match size {
            Size::Count(n) => (0, *n),
            Size::Percent(p) => (1, u32::from(*p)),
        };
        if last[slot].is_some_and(|l| l >= n) {
            return Err(format!(
                "wave sizes are cumulative and must grow ({} after a larger or equal one)",
                size.to_text()
            ));
        }
        last[slot] = Some(n);
    }
    Ok(())
}

/// Parses `--max-failures N|P%`.
pub fn parse_max_failures(text: &str) -> Result<Size, PlanError> {
    Size::parse("--max-failures", text, text, 0)
}

/// Parses `--wave-wait DURATION`: seconds, or a number with `s`, `m` or `h`.
pub fn parse_wait(text: &str) -> Result<u64, PlanError> {
    let flag = "--wave-wait";
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        _ => return Err(bad(flag, text, "want seconds, or a number with s, m or h")),
    };
    let secs = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| bad(flag, text, "want seconds, or a number with s, m or h"))?;
    if secs > MAX_WAIT_SECS {
        return Err(bad(flag, text, "longer than a week"));
    }
    Ok(secs)
}

/// Parses `--window` values (the flag repeats: a window's days may hold commas).
pub fn parse_windows(texts: &[String]) -> Result<Vec<Window>, PlanError> {
    parse_all(texts).map_err(|e| bad("--window", &texts.join(" "), e.to_string()))
}

impl Plan {
    /// Whether a plan says anything (an update without one needs none).
    pub fn is_empty(&self) -> bool {
        *self == Plan::default()
    }

    /// The per-update health check and its timeout, for the agent's check step.
    pub fn health_check(&self) -> Option<(&[String], Option<u64>)> {
        (!self.check.is_empty()).then_some((self.check.as_slice(), self.check_timeout))
    }

    /// The canonical bencoding, keys in sorted order.
    pub fn to_bencode(&self) -> Vec<u8> {
        let mut out = vec![b'd'];
        if !self.check.is_empty() {
            put_key(&mut out, "check");
            out.push(b'l');
            for arg in &self.check {
                put_string(&mut out, arg.as_bytes());
            }
            out.push(b'e');
        }
        if let Some(t) = self.check_timeout {
            put_int(&mut out, "check_timeout", t);
        }
        if self.force_locks {
            put_int(&mut out, "force_locks", 1);
        }
        if let Some(maxf) = self.max_failures {
            put_key(&mut out, "maxf");
            put_string(&mut out, maxf.to_text().as_bytes());
        }
        if let Some(target) = &self.target {
            put_key(&mut out, "target");
            put_string(&mut out, target.to_text().as_bytes());
        }
        put_int(&mut out, "v", 1);
        if self.wait_secs > 0 {
            put_int(&mut out, "wait", self.wait_secs);
        }
        if !self.waves.is_empty() {
            put_key(&mut out, "waves");
            out.push(b'l');
            for size in &self.waves {
                put_string(&mut out, size.to_text().as_bytes());
            }
            out.push(b'e');
        }
        if !self.window.is_empty() {
            put_key(&mut out, "window");
            out.push(b'l');
            for window in &self.window {
                put_string(&mut out, window.to_text().as_bytes());
            }
            out.push(b'e');
        }
        out.push(b'e');
        out
    }

    /// Checks what [`Plan::decode`] would refuse, before `submit` signs it.
    pub fn validate(&self) -> Result<(), PlanError> {
        let bytes = self.to_bencode();
        Plan::decode(&bytes).map(|_| ())
    }

    /// Parses a plan; structure and values only.
    pub fn decode(bytes: &[u8]) -> Result<Plan, PlanError> {
        if bytes.len() > MAX_PLAN_BYTES {
            return Err(E::TooLong { len: bytes.len() });
        }
        let value = bencode::parse(bytes)?;
        let Ben::Dict(_) = &value.kind else {
            return Err(E::NotADict);
        };
        value.check_v1_keys(&KEYS)?;
        let text = |key: &'static str, v: &Value| -> Result<String, PlanError> {
            v.as_bytes()
                .and_then(|b| std::str::from_utf8(b).ok())
                .map(str::to_string)
                .ok_or(E::WrongType {
                    key,
                    want: "a UTF-8 string",
                })
        };
        let texts = |key: &'static str, v: &Value| -> Result<Vec<String>, PlanError> {
            v.as_list()
                .ok_or(E::WrongType {
                    key,
                    want: "a list",
                })?
                .iter()
                .map(|item| text(key, item))
                .collect()
        };
        let uint = |key: &'static str, v: &Value, max: u64| -> Result<u64, PlanError> {
            v.as_int()
                .and_then(|n| u64::try_from(n).ok())
                .filter(|n| (1..=max).contains(n))
                .ok_or(E::WrongType {
                    key,
                    want: "a positive integer in range",
                })
        };
        let mut plan = Plan::default();
        if let Some(v) = value.get("target") {
            plan.target = Some(Selector::parse(&text("target", v)?)?);
        }
        if let Some(v) = value.get("waves") {
            let waves = texts("waves", v)?;
            plan.waves = parse_waves(&waves.join(","))?;
        }
        if let Some(v) = value.get("maxf") {
            plan.max_failures = Some(parse_max_failures(&text("maxf", v)?)?);
        }
        if let Some(v) = value.get("wait") {
            plan.wait_secs = uint("wait", v, MAX_WAIT_SECS)?;
        }
        if let Some(v) = value.get("check") {
            plan.check = texts("check", v)?;
            if plan.check.is_empty() || plan.check[0].is_empty() {
                return Err(E::WrongType {
                    key: "check",
                    want: "a non-empty argv",
                });
            }
        }
        if let Some(v) = value.get("check_timeout") {
            plan.check_timeout = Some(uint("check_timeout", v, MAX_CHECK_TIMEOUT_SECS)?);
        }
        if let Some(v) = value.get("force_locks") {
            // Present means 1: a 0 would be a second spelling of its absence.
            uint("force_locks", v, 1)?;
            plan.force_locks = true;
        }
        if let Some(v) = value.get("window") {
            let texts = texts("window", v)?;
            if texts.is_empty() {
                return Err(E::WrongType {
                    key: "window",
                    want: "a non-empty list",
                });
            }
            plan.window = parse_all(&texts).map_err(|e| E::WrongType {
                key: "window",
                want: if matches!(e, crate::window::WindowError::TooMany { .. }) {
                    "a list of at most 8 windows"
                } else {
                    "a list of windows `DAYS HH:MM-HH:MM`"
                },
            })?;
        }
        if plan.to_bencode() != bytes {
            return Err(bad("plan", "", "not in canonical form"));
        }
        Ok(plan)
    }

    /// The plan's SHA-256: what an announcement's signatures cover besides its own bytes.
    pub fn digest(bytes: &[u8]) -> [u8; 32] {
        Sha256::digest(bytes).into()
    }

    /// Whether a node is targeted.
    pub fn targets(&self, name: &str, tags: &BTreeMap<String, String>) -> bool {
        self.target.as_ref().is_none_or(|s| s.matches(name, tags))
    }

    /// How many failures the rollout tolerates among `total` targeted members; `None`: any.
    pub fn failures_allowed(&self, total: usize) -> Option<usize> {
        self.max_failures.map(|m| m.allowed(total))
    }
}

/// Targeted members in waves: sorted by SHA-256(info-hash || name), cut at the cumulative
/// sizes. Every node computes the same waves from the signed info-hash and the member list.
pub fn assign_waves(info_hash: &[u8; 20], members: &[String], waves: &[Size]) -> Vec<Vec<String>> {
    let mut ordered: Vec<([u8; 32], &String)> = members
        .iter()
        .map(|m| {
            let mut h = Sha256::new();
            h.update(info_hash);
            h.update(m.as_bytes());
            (h.finalize().into(), m)
        })
        .collect();
    ordered.sort();
    ordered.dedup_by(|a, b| a.1 == b.1);
    let total = ordered.len();
    let sizes: Vec<Size> = if waves.is_empty() {
        vec![Size::Percent(100)]
    } else {
        waves.to_vec()
    };
    let mut out = Vec::new();
    let mut from = 0;
    for size in sizes {
        let to = size.of(total).max(from).min(total);
        out.push(
            ordered[from..to]
                .iter()
                .map(|(_, m)| (*m).clone())
                .collect(),
        );
        from = to;
    }
    out
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
}

fn put_key(out: &mut Vec<u8>, key: &str) {
    put_string(out, key.as_bytes());
}

fn put_int(out: &mut Vec<u8>, key: &str, value: u64) {
    put_key(out, key);
    out.extend_from_slice(format!("i{value}e").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn full() -> Plan {
        Plan {
            target: Some(Selector::tag("role=cam*").unwrap()),
            waves: parse_waves("1,10%,50%,100%").unwrap(),
            max_failures: Some(parse_max_failures("1").unwrap()),
            wait_secs: 30,
            check: vec!["/usr/local/bin/check".into(), "--quick".into()],
            check_timeout: Some(60),
            window: Vec::new(),
            force_locks: false,
        }
    }

    #[test]
    fn round_trip_and_vector() {
        let plan = full();
        let bytes = plan.to_bencode();
        assert_eq!(Plan::decode(&bytes).unwrap(), plan);
        let vector = include_bytes!("../tests/vectors/plan/full.plan");
        assert_eq!(&bytes[..], &vector[..]);
        let empty = Plan::default().to_bencode();
        assert_eq!(empty, b"d1:vi1ee");
        assert!(Plan::decode(&empty).unwrap().is_empty());
        assert_eq!(plan.health_check(), Some((&plan.check[..], Some(60))));
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let err = Plan::decode(b"d1:vi1e4:zzzzi1ee").unwrap_err();
        assert_eq!(err, E::UnknownKey { key: "zzzz".into() });
        assert!(err.to_string().contains("unknown field \"zzzz\""), "{err}");
        let vector = include_bytes!("../tests/vectors/plan/unknown-field.plan");
        assert_eq!(
            Plan::decode(vector).unwrap_err(),
            E::UnknownKey {
                key: "unknown".into()
            }
        );
    }

    #[test]
    fn duplicate_non_canonical_oversized_and_other_versions_are_refused() {
        for bytes in [
            &b"d1:vi1e1:vi1ee"[..],
            b"d1:vi01ee",
            b"d4:wait2:301:vi1ee",
            b"d1:vi1eex",
            b"li1ee",
            b"d1:vi2ee",
            b"d4:maxf2:011:vi1ee",
            b"d1:vi1e5:wavesl4:100%2:10ee",
            b"d6:target5:x:y=z1:vi1ee",
            b"d6:target12:nodes:b,a,a1:vi1ee",
        ] {
            assert!(
                Plan::decode(bytes).is_err(),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        let mut big = b"d5:checkl".to_vec();
        big.extend(std::iter::repeat_n(&b"1:a"[..], 700).flatten());
        big.extend(b"e1:vi1ee");
        assert!(matches!(Plan::decode(&big), Err(E::TooLong { .. })));
    }

    #[test]
    fn selectors_parse_canonically_and_match() {
        let camera = tags(&[("role", "camera")]);
        let s = Selector::tag("role=camera").unwrap();
        assert_eq!(s.to_text(), "tag:role=camera");
        assert!(s.matches("n1", &camera));
        assert!(!s.matches("n1", &tags(&[("role", "door")])));
        assert!(!s.matches("n1", &BTreeMap::new()));
        let s = Selector::name("cam-*").unwrap();
        assert!(s.matches("cam-7", &BTreeMap::new()));
        assert!(!s.matches("door-7", &camera));
        let s = Selector::nodes("b,a,b").unwrap();
        assert_eq!(s.to_text(), "nodes:a,b");
        assert!(s.matches("a", &BTreeMap::new()) && !s.matches("c", &BTreeMap::new()));
        for text in ["tag:role=camera", "name:cam-*", "nodes:a,b"] {
            assert_eq!(Selector::parse(text).unwrap().to_text(), text);
        }
        for text in [
            "nodes:b,a",
            "role=camera",
            "tag:role",
            "tag:=x",
            "name:",
            "nodes:a,,b",
            "tag:a b=c",
        ] {
            assert!(Selector::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn bad_flag_values_name_the_flag_and_value() {
        let err = Selector::tag("camera").unwrap_err().to_string();
        assert!(err.starts_with("--target \"camera\""), "{err}");
        for waves in [
            "",
            "0",
            "1,50%",
            "10%,5%",
            "50%,10%,100%",
            "abc",
            "1,101%",
            "01,100%",
        ] {
            let err = parse_waves(waves).unwrap_err().to_string();
            assert!(err.starts_with(&format!("--waves {waves:?}")), "{err}");
        }
        for maxf in ["-1", "x", "101%", "1.5"] {
            let err = parse_max_failures(maxf).unwrap_err().to_string();
            assert!(err.starts_with("--max-failures"), "{err}");
        }
        for wait in ["", "5d", "x", "-1", "9999999h"] {
            let err = parse_wait(wait).unwrap_err().to_string();
            assert!(err.starts_with("--wave-wait"), "{err}");
        }
        assert_eq!(parse_wait("90").unwrap(), 90);
        assert_eq!(parse_wait("2m").unwrap(), 120);
        assert_eq!(parse_max_failures("0").unwrap(), Size::Count(0));
        assert_eq!(parse_max_failures("20%").unwrap(), Size::Percent(20));
    }

    #[test]
    fn waves_are_deterministic_cumulative_and_cover_everyone() {
        let members: Vec<String> = (1..=8).map(|i| format!("node-{i}")).collect();
        let waves = parse_waves("1,25%,50%,100%").unwrap();
        let assigned = assign_waves(&[7; 20], &members, &waves);
        let sizes: Vec<usize> = assigned.iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, 1, 2, 4]);
        let mut all: Vec<String> = assigned.concat();
        all.sort();
        assert_eq!(all, {
            let mut m = members.clone();
            m.sort();
            m
        });
        // The same inputs in another order give the same waves; another update other ones.
        let mut shuffled = members.clone();
        shuffled.reverse();
        assert_eq!(assign_waves(&[7; 20], &shuffled, &waves), assigned);
        assert_ne!(assign_waves(&[8; 20], &members, &waves), assigned);
        // No waves: one wave of everyone; 10% of 3 is one node.
        assert_eq!(assign_waves(&[7; 20], &members, &[]).len(), 1);
        let small = assign_waves(&[7; 20], &members[..3], &parse_waves("10%,100%").unwrap());
        assert_eq!(small.iter().map(Vec::len).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn failures_allowed_round_down() {
        let plan = |m: &str| Plan {
            max_failures: Some(parse_max_failures(m).unwrap()),
            ..Plan::default()
        };
        assert_eq!(plan("1").failures_allowed(8), Some(1));
        assert_eq!(plan("10%").failures_allowed(5), Some(0));
        assert_eq!(plan("25%").failures_allowed(8), Some(2));
        assert_eq!(Plan::default().failures_allowed(8), None);
    }

    /// A signed window round-trips in its canonical text; a window spelled any other way, or
    /// one that does not parse, is refused (one plan, one encoding).
    #[test]
    fn a_window_round_trips_canonically_and_a_bad_one_is_refused() {
        let plan = Plan {
            window: parse_windows(&["sat,sun 0:00-6:00".to_string()]).unwrap(),
            ..Plan::default()
        };
        let bytes = plan.to_bencode();
        assert_eq!(bytes, b"d1:vi1e6:windowl19:Sat-Sun 00:00-06:00ee");
        assert_eq!(Plan::decode(&bytes).unwrap(), plan);
        for bad in [
            &b"d1:vi1e6:windowl19:sat-sun 00:00-06:00ee"[..],
            b"d1:vi1e6:windowl16:Sat 0:00-6:00:0ee",
            b"d1:vi1e6:windowlee",
        ] {
            assert!(
                Plan::decode(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let forced = Plan {
            force_locks: true,
            ..Plan::default()
        };
        assert_eq!(forced.to_bencode(), b"d11:force_locksi1e1:vi1ee");
        assert_eq!(Plan::decode(&forced.to_bencode()).unwrap(), forced);
        assert!(Plan::decode(b"d11:force_locksi0e1:vi1ee").is_err());
        let err = parse_windows(&["Funday 02:00-03:00".to_string()]).unwrap_err();
        assert!(err.to_string().starts_with("--window "), "{err}");
    }
}
