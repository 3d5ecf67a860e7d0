//! Offline inspection of anything p2pu signs (`p2pu verify`): which format a text is, its
//! fields, who signed it, and whether a node holding these trusted keys would take it, with
//! the reason when not. Pure over bytes: the caller reads the file (through
//! [`crate::untrusted`], since it may be anyone's) and the trusted-keys dir.
//!
//! The rules are the ones the agent holds the same text to (signers trusted and unrevoked,
//! the name's threshold counted as [`Trust::count`] counts it, fleet and expiry), minus what
//! needs a node's state (the seq against what it accepted, the clock skew hold): verifying a
//! file says whether its signatures and bindings hold, not whether a given node would still
//! apply it.

use crate::agent::runtime::intake::Thresholds;
use crate::formats::announcement::{Announcement, FleetId, Kind};
use crate::formats::control::{Control, WIRE_PREFIX as CONTROL_PREFIX};
use crate::formats::delegation::{Delegation, PREFIX as DELEGATION_PREFIX};
use crate::formats::document::SignedDocument;
use crate::formats::heartbeat::{self, Heartbeat, Snapshot};
use crate::formats::plan::Plan;
use crate::formats::root::{RootDoc, PREFIX as ROOT_PREFIX, ROOT_NAME};
use crate::keys::{KeyId, KeyPayload, PUBLIC_PREFIX, REVOKE_PREFIX};
use crate::trust::Trust;
use serde::{Deserialize, Serialize};

/// The most `verify` reads of a file: the largest thing p2pu signs is a root chain
/// ([`crate::formats::root::MAX_CHAIN_BYTES`], about 512 KiB).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// What the node's config says a signed text is held to; without a config, only the
/// signatures and expiries are checked, against one signer.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `None`: no config was read, the fleet binding is shown but not checked.
    pub fleet: Option<FleetId>,
    pub thresholds: Thresholds,
    /// `agent.accept_v1`; `true` without a config.
    pub accept_v1: bool,
    /// Unix seconds.
    pub now: u64,
}

/// Whether the file would be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Well-formed, signed by enough trusted keys, for this fleet, unexpired.
    Valid,
    /// Malformed, or its signatures or bindings do not hold: `reason` says which.
    Invalid,
    /// Well-formed, but it carries no signature of its own (a plan, a snapshot, a public
    /// key): it is signed through another file, which `--with` can give.
    Unsigned,
}

/// One signature the file carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerReport {
    pub kid: String,
    /// `valid`, `bad signature`, `not trusted` or `revoked`.
    pub signature: String,
    /// For a valid one: `root key`, `delegated` (and whether its statement lets it count),
    /// `trusted key`.
    pub role: Option<String>,
}

/// `p2pu verify --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inspection {
    /// What the file is: `announcement`, `rollout plan`, `control statement`, `heartbeat`,
    /// `snapshot`, `key statement`, `root document`, `root chain`, `public key`,
    /// `revocation`, or `unknown`.
    pub format: String,
    /// Its fields, in the order shown.
    pub fields: Vec<(String, String)>,
    pub signers: Vec<SignerReport>,
    pub verdict: Verdict,
    /// Why it is invalid (or unsigned), or a note on a valid one.
    pub reason: Option<String>,
}

/// `p2pu verify --json`: the inspection with what it was checked against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyReport {
    pub file: String,
    /// The trusted-keys dir it was checked against.
    pub keys: String,
    /// Whether the config's fleet and thresholds were applied (else: any fleet, one signer).
    pub config: bool,
    pub inspection: Inspection,
}

impl Inspection {
    fn new(format: &str) -> Inspection {
        Inspection {
            format: format.to_string(),
            fields: Vec::new(),
            signers: Vec::new(),
            verdict: Verdict::Valid,
            reason: None,
        }
    }

    fn field(&mut self, name: &str, value: impl ToString) {
        self.fields.push((name.to_string(), value.to_string()));
    }

    fn invalid(mut self, reason: impl ToString) -> Inspection {
        self.verdict = Verdict::Invalid;
        self.reason = Some(reason.to_string());
        self
    }

    fn unsigned(mut self, reason: impl ToString) -> Inspection {
        self.verdict = Verdict::Unsigned;
        self.reason = Some(reason.to_string());
        self
    }
}

/// Inspects `bytes`; `with` is the companion file some formats are signed through (an
/// announcement's plan, a heartbeat's snapshot, or the other way round).
pub fn inspect(bytes: &[u8], with: Option<&[u8]>, trust: &Trust, policy: &Policy) -> Inspection {
    let text = trim(bytes);
    match kind_of(text) {
        Format::Announcement => {
            let plan = with.filter(|w| kind_of(trim(w)) == Format::Plan).map(trim);
            announcement(text, plan, trust, policy)
        }
        Format::Control => control(text, trust, policy),
        Format::Heartbeat => {
            let snap = with.filter(|w| kind_of(w) == Format::Snapshot);
            heartbeat(text, snap, trust, policy)
        }
        Format::Delegation => delegation(text, trust, policy),
        Format::Root => root(text, trust, policy),
        Format::PublicKey => public_key(text, trust),
        Format::Revocation => revocation(text),
        Format::Plan => match with
            .map(trim)
            .filter(|w| kind_of(w) == Format::Announcement)
        {
            Some(wire) => through(plan(text), announcement(wire, Some(text), trust, policy)),
            None => plan(text),
        },
        Format::Snapshot => match with.map(trim).filter(|w| kind_of(w) == Format::Heartbeat) {
            Some(wire) => through(snapshot(bytes), heartbeat(wire, Some(bytes), trust, policy)),
            None => snapshot(bytes),
        },
        Format::Unknown => Inspection::new("unknown").invalid(format!(
            "not a file p2pu signs: it starts with {}",
            start_of(bytes)
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Announcement,
    Control,
    Heartbeat,
    Delegation,
    Root,
    PublicKey,
    Revocation,
    Plan,
    Snapshot,
    Unknown,
}

/// One trailing newline (a text file's, or Serf's) is no part of a text.
fn trim(bytes: &[u8]) -> &[u8] {
    bytes.strip_suffix(b"\n").unwrap_or(bytes)
}

/// Told apart by prefix; the two binary documents by their bencoded shape (a plan is a
/// dictionary, a snapshot a list).
fn kind_of(text: &[u8]) -> Format {
    let starts = |prefix: &str| text.starts_with(prefix.as_bytes());
    if starts(CONTROL_PREFIX) {
        Format::Control
    } else if starts(heartbeat::WIRE_PREFIX) {
        Format::Heartbeat
    } else if starts(DELEGATION_PREFIX) {
        Format::Delegation
    } else if starts(ROOT_PREFIX) {
        Format::Root
    } else if starts(PUBLIC_PREFIX) {
        Format::PublicKey
    } else if starts(REVOKE_PREFIX) {
        Format::Revocation
    } else if crate::formats::announcement::is_wire(text) {
        Format::Announcement
    } else if text.starts_with(b"d") {
        Format::Plan
    } else if text.starts_with(b"l") {
        Format::Snapshot
    } else {
        Format::Unknown
    }
}

/// The first bytes of an unknown file, printable: a binary or hostile file must not put
/// control characters on the operator's terminal.
fn start_of(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(24)];
    format!("{:?}", String::from_utf8_lossy(head))
        .chars()
        .filter(|c| !c.is_control())
        .collect()
}

/// Unix seconds, with the UTC date beside them.
fn when(secs: u64) -> String {
    format!("{secs} ({} UTC)", crate::civil::utc(secs))
}

/// Each of `kids` as found: valid (with its role) when in `valid`, else why not.
fn signers(kids: &[KeyId], valid: &[KeyId], trust: &Trust) -> Vec<SignerReport> {
    kids.iter()
        .map(|kid| {
            let ok = valid.contains(kid);
            let signature = if ok {
                "valid"
            } else if trust.keys.is_revoked(kid) {
                "revoked"
            } else if trust.keys.get(kid).is_none() {
                "not trusted"
            } else {
                "bad signature"
            };
            let role = ok.then(|| {
                if trust.is_root(kid) {
                    "root key".to_string()
                } else if trust.delegation(kid).is_some() {
                    "delegated key".to_string()
                } else {
                    "trusted key".to_string()
                }
            });
            SignerReport {
                kid: kid.to_string(),
                signature: signature.to_string(),
                role,
            }
        })
        .collect()
}

/// Why the fleet and expiry refuse a statement, if they do.
fn binding_refusal(fleet: FleetId, expires: u64, policy: &Policy) -> Option<String> {
    if let Some(mine) = policy.fleet {
        if fleet != mine {
            return Some(format!(
                "it is for fleet {fleet}, this node is in fleet {mine}"
            ));
        }
    }
    (expires < policy.now).then(|| {
        format!(
            "expired at {}, {} s ago; sign it again",
            when(expires),
            policy.now - expires
        )
    })
}

/// Why too few of `valid` count for `name`/`kind`, if they do.
#[allow(clippy::too_many_arguments)]
fn threshold_refusal(
    valid: &[KeyId],
    name: &str,
    kind: Kind,
    target: Option<&str>,
    fleet: FleetId,
    trust: &Trust,
    policy: &Policy,
    inspection: &mut Inspection,
) -> Option<String> {
    let count = trust.count(valid, name, kind, target, fleet, policy.now);
    for signer in &mut inspection.signers {
        if signer.role.as_deref() == Some("delegated key") {
            let counted = count.counted.iter().any(|k| k.to_string() == signer.kid);
            signer.role = Some(if counted {
                "delegated key, its statement permits this".into()
            } else {
                "delegated key, not counted: outside its statement".into()
            });
        }
    }
    let (k, rule) = policy.thresholds.required(name, kind);
    (count.counted.len() < k).then(|| {
        let mut why = format!(
            "signed by {} of the {k} trusted keys {rule} requires",
            count.counted.len()
        );
        if !count.refused.is_empty() {
            why.push_str(&format!("; {}", count.refused.join("; ")));
        }
        why
    })
}

fn announcement(text: &[u8], plan: Option<&[u8]>, trust: &Trust, policy: &Policy) -> Inspection {
    let mut out = Inspection::new("announcement");
    let a = match Announcement::decode(text) {
        Ok(a) => a,
        Err(e) => return out.invalid(e),
    };
    out.field("version", a.version());
    out.field("name", a.name());
    out.field("seq", a.seq());
    out.field("kind", a.kind());
    out.field("info-hash", hex::encode(a.info_hash()));
    out.field("length", a.payload_len());
    out.field("sha256", hex::encode(a.sha256()));
    if let Some(b) = a.binding() {
        out.field("fleet", b.fleet);
        out.field("expires", when(b.expires));
    }
    out.field("rollout plan", if a.has_plan() { "yes" } else { "no" });
    let mut target = None;
    if let Some(bytes) = plan.filter(|_| a.has_plan()) {
        out.field("plan sha256", hex::encode(Plan::digest(bytes)));
        match Plan::decode(bytes) {
            Ok(p) => {
                target = p.target.as_ref().map(|s| s.to_text());
                plan_fields(&mut out, &p);
            }
            Err(e) => return out.invalid(format!("rollout plan refused: {e}")),
        }
    }
    let kids = a.kids();
    let verified = a.verify(&trust.keys, plan.filter(|_| a.has_plan()));
    let valid = verified
        .as_ref()
        .map(|s| s.valid.clone())
        .unwrap_or_default();
    out.signers = signers(&kids, &valid, trust);
    if a.has_plan() && plan.is_none() {
        return out.invalid(format!(
            "bound to a rollout plan, whose SHA-256 its signatures cover: give the plan with \
             --with FILE ({}.plan in the download dir)",
            hex::encode(a.info_hash())
        ));
    }
    if let Err(e) = verified {
        return out.invalid(e);
    }
    if a.binding().is_none() && !policy.accept_v1 {
        return out.invalid("version 1 announcement, and agent.accept_v1 = false");
    }
    if let Some(b) = a.binding() {
        if let Some(why) = binding_refusal(b.fleet, b.expires, policy) {
            return out.invalid(why);
        }
    }
    if a.kind() == Kind::Key && a.name() == ROOT_NAME {
        // A root chain's announcement is counted against the chain's newest keys when it is
        // applied: verify the chain itself (`p2pu verify` of the payload).
        out.reason =
            Some("a root chain: its signers are counted against the chain it carries".into());
        return out;
    }
    let fleet = a.binding().map(|b| b.fleet).or(policy.fleet);
    let fleet = fleet.unwrap_or(FleetId([0; 8]));
    if let Some(why) = threshold_refusal(
        &valid,
        a.name(),
        a.kind(),
        target.as_deref(),
        fleet,
        trust,
        policy,
        &mut out,
    ) {
        return out.invalid(why);
    }
    out
}

fn plan_fields(out: &mut Inspection, p: &Plan) {
    let target = p.target.as_ref().map(|s| s.to_text());
    out.field("target", target.as_deref().unwrap_or("every node"));
    if !p.waves.is_empty() {
        let waves: Vec<String> = p.waves.iter().map(|w| w.to_text()).collect();
        out.field("waves", waves.join(","));
    }
    if let Some(m) = p.max_failures {
        out.field("max failures", m.to_text());
    }
    if p.wait_secs > 0 {
        out.field("wave wait", format!("{} s", p.wait_secs));
    }
    if !p.check.is_empty() {
        out.field("health check", p.check.join(" "));
    }
    if p.force_locks {
        out.field(
            "force locks",
            "yes: applies past the nodes' update locks and vetoes",
        );
    }
    if !p.window.is_empty() {
        let windows: Vec<String> = p.window.iter().map(|w| w.to_text()).collect();
        out.field("window", windows.join(", "));
    }
}

fn plan(bytes: &[u8]) -> Inspection {
    let mut out = Inspection::new("rollout plan");
    let p = match Plan::decode(bytes) {
        Ok(p) => p,
        Err(e) => return out.invalid(e),
    };
    out.field("sha256", hex::encode(Plan::digest(bytes)));
    plan_fields(&mut out, &p);
    out.unsigned(
        "a plan is signed through its announcement, whose signatures cover its SHA-256: give \
         the announcement with --with FILE",
    )
}

/// A document signed through `signed` (a plan through its announcement, a snapshot through
/// its heartbeat): `doc`'s fields, `signed`'s signers and verdict.
fn through(mut doc: Inspection, signed: Inspection) -> Inspection {
    if doc.verdict == Verdict::Invalid {
        return doc;
    }
    let what = signed.format.clone();
    for (name, value) in signed.fields {
        if !doc.fields.iter().any(|(n, _)| *n == name) {
            doc.fields.push((format!("{what} {name}"), value));
        }
    }
    doc.signers = signed.signers;
    doc.verdict = signed.verdict;
    doc.reason = signed.reason.map(|r| format!("its {what}: {r}"));
    doc
}

fn control(text: &[u8], trust: &Trust, policy: &Policy) -> Inspection {
    let mut out = Inspection::new("control statement");
    let c = match Control::decode(text) {
        Ok(c) => c,
        Err(e) => return out.invalid(e),
    };
    out.field("action", c.action.as_str());
    out.field("name", &c.name);
    out.field("seq", c.seq);
    out.field("issued", when(c.issued));
    out.field("fleet", c.fleet);
    out.field("expires", when(c.expires));
    let nodes = if c.nodes.is_empty() {
        "every node".to_string()
    } else {
        c.nodes.join(",")
    };
    out.field("nodes", nodes);
    if c.action == crate::formats::control::Action::Revert {
        let to = c.to().map_or("the last good version".to_string(), |to| {
            format!("seq {to}")
        });
        out.field("to", to);
    }
    let verified = c.verify(&trust.keys);
    let valid = verified.as_ref().cloned().unwrap_or_default();
    out.signers = signers(&c.kids(), &valid, trust);
    if let Err(e) = verified {
        return out.invalid(e);
    }
    if let Some(why) = binding_refusal(c.fleet, c.expires, policy) {
        return out.invalid(why);
    }
    // Offline, the update's kind and target are unknown: held to a manifest's threshold for
    // the whole fleet, as a node without a record of the update holds it.
    if let Some(why) = threshold_refusal(
        &valid,
        &c.name,
        Kind::Manifest,
        None,
        c.fleet,
        trust,
        policy,
        &mut out,
    ) {
        return out.invalid(why);
    }
    out
}

fn heartbeat(text: &[u8], snap: Option<&[u8]>, trust: &Trust, policy: &Policy) -> Inspection {
    let mut out = Inspection::new("heartbeat");
    let h = match Heartbeat::decode(text) {
        Ok(h) => h,
        Err(e) => return out.invalid(e),
    };
    out.field("fleet", h.fleet());
    out.field("signed at", when(h.time()));
    out.field("snapshot sha256", hex::encode(h.snap()));
    out.field("snapshot entries", h.count());
    let verified = h.verify(&trust.keys);
    let valid = verified
        .as_ref()
        .map(|s| s.valid.clone())
        .unwrap_or_default();
    out.signers = signers(&h.kids(), &valid, trust);
    if let Err(e) = verified {
        return out.invalid(e);
    }
    if let Some(why) = binding_refusal(h.fleet(), u64::MAX, policy) {
        return out.invalid(why);
    }
    let k = policy.thresholds.default;
    let roots = valid.iter().filter(|kid| trust.is_root(kid)).count();
    if valid.len() < k {
        return out.invalid(format!(
            "signed by {} of the {k} trusted keys agent.threshold requires ({roots} root)",
            valid.len()
        ));
    }
    if let Some(bytes) = snap {
        match Snapshot::decode(bytes) {
            Ok(s) if s.digest() != *h.snap() || s.entries().len() as u64 != h.count() => {
                return out.invalid(format!(
                    "the snapshot given (SHA-256 {}, {} entries) is not the one it signs",
                    hex::encode(s.digest()),
                    s.entries().len()
                ));
            }
            Ok(_) => {}
            Err(e) => return out.invalid(format!("snapshot: {e}")),
        }
    }
    out.reason = Some(format!(
        "signed {} s ago (agent.heartbeat_window_secs decides whether a node holds it fresh)",
        policy.now.saturating_sub(h.time())
    ));
    out
}

fn snapshot(bytes: &[u8]) -> Inspection {
    let mut out = Inspection::new("snapshot");
    let s = match Snapshot::decode(bytes) {
        Ok(s) => s,
        Err(e) => return out.invalid(e),
    };
    out.field("sha256", hex::encode(s.digest()));
    out.field("entries", s.entries().len());
    for e in s.entries().iter().take(64) {
        out.field(&e.name, format!("seq {}", e.seq));
    }
    if s.entries().len() > 64 {
        out.field("...", format!("{} more", s.entries().len() - 64));
    }
    out.unsigned(
        "a snapshot is signed through the heartbeat that names its SHA-256: give the \
         heartbeat with --with FILE",
    )
}

fn delegation(text: &[u8], trust: &Trust, policy: &Policy) -> Inspection {
    let mut out = Inspection::new("key statement");
    let d = match Delegation::decode(text) {
        Ok(d) => d,
        Err(e) => return out.invalid(e),
    };
    out.field("key", d.kid());
    out.field("names", d.names().join(","));
    let kinds: Vec<&str> = d.kinds().iter().map(|k| k.as_str()).collect();
    out.field("kinds", kinds.join(","));
    let targets = if d.targets().is_empty() {
        "any".to_string()
    } else {
        d.targets().join(",")
    };
    out.field("targets", targets);
    out.field("fleet", d.fleet());
    out.field("expires", when(d.expires()));
    let roots = d.signers(|kid| trust.root_key(kid));
    out.signers = signers(&d.kids(), &roots, trust);
    if let Some(why) = binding_refusal(d.fleet(), d.expires(), policy) {
        return out.invalid(why);
    }
    let k = policy.thresholds.key;
    if roots.len() < k {
        return out.invalid(format!(
            "signed by {} of the {k} root keys agent.key_threshold requires",
            roots.len()
        ));
    }
    out
}

fn root(text: &[u8], trust: &Trust, policy: &Policy) -> Inspection {
    let chain = match RootDoc::decode_chain(text) {
        Ok(chain) => chain,
        Err(e) => return Inspection::new("root document").invalid(e),
    };
    let mut out = Inspection::new(if chain.len() == 1 {
        "root document"
    } else {
        "root chain"
    });
    let (mut version, mut keys, mut threshold) = trust.anchors(policy.thresholds.key);
    out.field("trusted root version", version);
    let mut newest = None;
    for doc in &chain {
        let kids: Vec<String> = doc.kids().iter().map(ToString::to_string).collect();
        out.field(
            &format!("version {}", doc.version()),
            format!(
                "{} of keys {}, fleet {}, expires {}",
                doc.threshold(),
                kids.join(","),
                doc.fleet(),
                when(doc.expires())
            ),
        );
    }
    for doc in &chain {
        if doc.version() <= version {
            continue;
        }
        let fleet = policy.fleet.unwrap_or(doc.fleet());
        let signed_by = doc.signers(|kid| keys.iter().find(|k| KeyId::of(k) == *kid).copied());
        out.signers = signers(&doc.kids(), &signed_by, trust);
        if let Err(e) = doc.follows(version, &keys, threshold, fleet) {
            return out.invalid(e);
        }
        (version, keys, threshold) = (doc.version(), doc.keys().to_vec(), doc.threshold());
        newest = Some(doc);
    }
    let Some(newest) = newest else {
        return out.unsigned(format!(
            "nothing newer than the trusted root version {version}: it changes nothing"
        ));
    };
    if newest.expires() < policy.now {
        return out.invalid(format!(
            "root version {} expired at {}",
            newest.version(),
            when(newest.expires())
        ));
    }
    out
}

fn public_key(text: &[u8], trust: &Trust) -> Inspection {
    let mut out = Inspection::new("public key");
    let key = match crate::keys::PublicKey::parse(text, "the file") {
        Ok(key) => key,
        Err(e) => return out.invalid(e),
    };
    let kid = key.kid();
    out.field("kid", kid);
    if !key.comment.is_empty() {
        out.field("comment", &key.comment);
    }
    let state = if trust.keys.is_revoked(&kid) {
        "revoked"
    } else if trust.is_root(&kid) {
        "trusted (root key)"
    } else if trust.keys.get(&kid).is_some() {
        "trusted (delegated)"
    } else {
        "not trusted"
    };
    out.field("here", state);
    out.unsigned("a public key is trusted by the trusted-keys dir, not by a signature")
}

fn revocation(text: &[u8]) -> Inspection {
    let mut out = Inspection::new("revocation");
    match KeyPayload::parse(text, "the file") {
        Ok(KeyPayload::Revoke { kid, reason }) => {
            out.field("kid", kid);
            out.field("reason", reason);
            out.unsigned("a revocation is signed by the `key` announcement that carries it")
        }
        Ok(KeyPayload::Trust(_)) => out.invalid("not a revocation"),
        Err(e) => out.invalid(e),
    }
}
