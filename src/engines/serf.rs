//! The local Serf agent (Debian's 0.9.4, which calls itself 0.8.2-dev): members, user events,
//! joins and tags through the `serf` CLI, and queries over its RPC directly ([`rpc`]), so that
//! one ends once every alive member answered. The CLI gets the RPC auth key in its
//! environment (`SERF_RPC_AUTH`, which it reads as its `-rpc-auth` default), never in argv,
//! where `ps` would show it.

mod rpc;

use serde::Deserialize;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::time::Duration;

use super::{one_line, Invocation, RunFailure};

/// What p2pu asks of the gossip layer.
pub trait Gossip: Send + Sync {
    /// Every member the local agent knows, in any state.
    fn members(&self) -> Result<Vec<Member>, SerfError>;
    /// Broadcasts a user event. `coalesce = false` delivers every event (p2pu always sends
    /// that); with coalescing Serf keeps only the last of a burst of same-named events.
    fn user_event(&self, name: &str, payload: &[u8], coalesce: bool) -> Result<(), SerfError>;
    /// Sends a query and collects answers until every member alive when it began answered, or
    /// until `timeout`. Returns `(node, response)` sorted by node, one per node (the first
    /// that came); a handler's output arrives as text, with any invalid UTF-8 replaced by
    /// U+FFFD.
    fn query(
        &self,
        name: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<(String, String)>, SerfError>;
    /// Joins the members at `addrs` (`ip:port`): a state exchange with each, which also brings
    /// the local agent's Lamport clocks up to theirs. Nothing by default (fakes).
    fn join(&self, addrs: &[String], events: JoinEvents) -> Result<(), SerfError> {
        let _ = (addrs, events);
        Ok(())
    }
    /// Sets one of this member's tags (`serf tags -set key=value`), which Serf gossips to the
    /// fleet. Nothing by default (fakes).
    fn set_tag(&self, key: &str, value: &str) -> Result<(), SerfError> {
        let _ = (key, value);
        Ok(())
    }
}

/// What a join does with the user events the members it exchanges state with still buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinEvents {
    /// `serf join` without `-replay`: the events older than the members' clocks are never
    /// delivered here, and Serf raises this agent's minimum event time to their clocks for
    /// good, so an event a member sends before it heard of those clocks is dropped too. For a
    /// Serf that restarted and is (re)joining: it asks the fleet for what it missed instead.
    IgnoreOld,
    /// `serf join -replay`: the minimum event time stays, and only the buffered events this
    /// agent has not delivered yet are (Serf keeps the recent ones it saw). For an agent that
    /// is already a member and joins only to bring its clock up: without it, a member's
    /// event sent within a gossip round of the join was lost here (the submitting node missed
    /// a hostile member's forgeries in tests/hostile_member.rs, 1 run in 9).
    Replay,
}

#[derive(Debug, thiserror::Error)]
pub enum SerfError {
    #[error("running `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` {status}: {output}")]
    Failed {
        command: String,
        status: String,
        /// Trimmed stderr (stdout when stderr is empty).
        output: String,
    },
    #[error("`{command}` did not finish within {after:?} and was killed")]
    TimedOut { command: String, after: Duration },
    #[error("`{command}` printed something other than the expected JSON: {reason}")]
    Malformed { command: String, reason: String },
    #[error("serf {what} contains a NUL byte, which a command-line argument cannot carry")]
    NulByte { what: &'static str },
    #[error("Serf's RPC at {addr} refuses connections: is serf.service running? (systemctl status serf)")]
    Refused { addr: String },
    #[error("Serf's RPC at {addr}: {what}")]
    RpcIo {
        addr: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("Serf's RPC at {addr}: {what}")]
    Rpc {
        addr: String,
        what: &'static str,
        #[source]
        source: crate::formats::serf_rpc::RpcError,
    },
    #[error("Serf's RPC at {addr} refuses this node's rpc_auth key (Invalid authentication token): serf.rpc_auth_file must hold serf's `rpc_auth`")]
    RpcAuth { addr: String },
    #[error("Serf's RPC at {addr} requires an rpc_auth key and none was given")]
    RpcAuthRequired { addr: String },
    #[error("{addr} is held by a socket of uid {}, not root's: not Serf (serf.service runs as root); the rpc_auth key was not sent", uid.map_or("unknown".to_owned(), |u| u.to_string()))]
    RpcNotSerf { addr: String, uid: Option<u32> },
}

impl crate::error::LayerError for SerfError {}

/// A member's state as Serf reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberStatus {
    Alive,
    Leaving,
    Left,
    Failed,
    Other(String),
}

impl From<&str> for MemberStatus {
    fn from(text: &str) -> MemberStatus {
        match text {
            "alive" => MemberStatus::Alive,
            "leaving" => MemberStatus::Leaving,
            "left" => MemberStatus::Left,
            "failed" => MemberStatus::Failed,
            other => MemberStatus::Other(other.to_owned()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    /// The member's gossip address.
    pub addr: IpAddr,
    pub port: u16,
    pub status: MemberStatus,
    pub tags: BTreeMap<String, String>,
}

/// `serf members -format=json` output.
#[derive(Deserialize)]
struct RawMembers {
    members: Vec<RawMember>,
}

#[derive(Deserialize)]
struct RawMember {
    name: String,
    /// `ip:port`; IPv6 without brackets.
    addr: String,
    port: u16,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    status: String,
}

/// The `serf` CLI pointed at one agent's RPC address.
#[derive(Clone)]
pub struct Serf {
    binary: PathBuf,
    rpc_addr: String,
    rpc_auth: Option<String>,
    /// Limit for one CLI call, and for connecting and each step before a query's.
    timeout: Duration,
}

impl fmt::Debug for Serf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serf")
            .field("binary", &self.binary)
            .field("rpc_addr", &self.rpc_addr)
            .field("rpc_auth", &self.rpc_auth.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Serf {
    /// The `serf` on `PATH`, talking to the agent at `rpc_addr` (e.g. `127.0.0.1:7373`).
    pub fn new(rpc_addr: impl Into<String>) -> Serf {
        Serf {
            binary: PathBuf::from("serf"),
            rpc_addr: rpc_addr.into(),
            rpc_auth: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// The agent's `rpc_auth` key.
    pub fn with_auth(mut self, key: Option<String>) -> Serf {
        self.rpc_auth = key;
        self
    }

    pub fn with_binary(mut self, binary: impl Into<PathBuf>) -> Serf {
        self.binary = binary.into();
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Serf {
        self.timeout = timeout;
        self
    }

    /// Fails when the `serf` CLI cannot be found where it would be run from.
    pub fn check_installed(&self) -> Result<PathBuf, super::NotInstalled> {
        super::NotInstalled::check(
            &self.binary,
            "the agent asks the fleet for peers and missed updates with it",
            "serf",
        )
    }

    fn rpc(&self) -> rpc::Rpc<'_> {
        rpc::Rpc {
            addr: &self.rpc_addr,
            auth: self.rpc_auth.as_deref(),
            setup: self.timeout,
        }
    }

    pub fn rpc_addr(&self) -> &str {
        &self.rpc_addr
    }

    /// Asks the agent to join the cluster through `addrs` (`host:port` of other agents).
    pub fn join(&self, addrs: &[String], events: JoinEvents) -> Result<(), SerfError> {
        let mut invocation = self.invocation("join");
        if events == JoinEvents::Replay {
            invocation = invocation.arg("-replay");
        }
        invocation.args.extend(addrs.iter().map(OsString::from));
        self.run(&invocation, self.timeout).map(drop)
    }

    /// `serf <subcommand> -rpc-addr=<addr>` with the auth key, if any, in the environment.
    fn invocation(&self, subcommand: &str) -> Invocation {
        let mut invocation = Invocation::new(&self.binary)
            .arg(subcommand)
            .arg(format!("-rpc-addr={}", self.rpc_addr));
        match &self.rpc_auth {
            Some(key) => invocation.env.push(("SERF_RPC_AUTH".into(), key.into())),
            // An inherited key meant for another agent would only confuse the error.
            None => invocation.env_remove.push("SERF_RPC_AUTH".into()),
        }
        invocation
    }

    /// Runs the CLI and returns its stdout when it exits 0.
    fn run(&self, invocation: &Invocation, deadline: Duration) -> Result<Vec<u8>, SerfError> {
        // The CLI sends the key to whatever listens on `rpc_addr` (see `rpc`'s header).
        if self.rpc_auth.is_some() {
            self.rpc().probe()?;
        }
        let command = invocation.shown();
        let finished = invocation
            .run(Some(deadline))
            .map_err(|failure| match failure {
                RunFailure::Spawn(source) => SerfError::Spawn {
                    command: command.clone(),
                    source,
                },
                RunFailure::TimedOut(after) => SerfError::TimedOut {
                    command: command.clone(),
                    after,
                },
            })?;
        if !finished.status.success() {
            let stderr = String::from_utf8_lossy(&finished.stderr);
            let text = if stderr.trim().is_empty() {
                String::from_utf8_lossy(&finished.stdout)
            } else {
                stderr
            };
            // What the CLI says when no agent listens: a bare dial error names neither the
            // service nor what to do.
            if text.to_ascii_lowercase().contains("connection refused") {
                return Err(SerfError::Refused {
                    addr: self.rpc_addr.clone(),
                });
            }
            return Err(SerfError::Failed {
                command,
                status: finished.status.to_string(),
                output: one_line(&text, 10),
            });
        }
        Ok(finished.stdout)
    }

    /// Appends `-- name payload`: the `--` keeps a name or payload starting with `-` from being
    /// read as a flag (Go's flag package honours it).
    fn name_and_payload(
        mut invocation: Invocation,
        name: &str,
        payload: &[u8],
    ) -> Result<Invocation, SerfError> {
        if name.contains('\0') {
            return Err(SerfError::NulByte { what: "event name" });
        }
        if payload.contains(&0) {
            return Err(SerfError::NulByte { what: "payload" });
        }
        invocation = invocation
            .arg("--")
            .arg(name)
            .arg(OsString::from_vec(payload.to_vec()));
        Ok(invocation)
    }

    fn user_event_invocation(
        &self,
        name: &str,
        payload: &[u8],
        coalesce: bool,
    ) -> Result<Invocation, SerfError> {
        let invocation = self
            .invocation("event")
            .arg(format!("-coalesce={coalesce}"));
        Self::name_and_payload(invocation, name, payload)
    }
}

impl Gossip for Serf {
    fn join(&self, addrs: &[String], events: JoinEvents) -> Result<(), SerfError> {
        Serf::join(self, addrs, events)
    }

    fn set_tag(&self, key: &str, value: &str) -> Result<(), SerfError> {
        if key.contains('\0') || value.contains('\0') {
            return Err(SerfError::NulByte { what: "tag" });
        }
        let invocation = self
            .invocation("tags")
            .arg("-set")
            .arg(format!("{key}={value}"));
        self.run(&invocation, self.timeout).map(drop)
    }

    fn members(&self) -> Result<Vec<Member>, SerfError> {
        let invocation = self.invocation("members").arg("-format=json");
        let stdout = self.run(&invocation, self.timeout)?;
        parse_members(&stdout).map_err(|reason| SerfError::Malformed {
            command: invocation.shown(),
            reason,
        })
    }

    fn user_event(&self, name: &str, payload: &[u8], coalesce: bool) -> Result<(), SerfError> {
        let invocation = self.user_event_invocation(name, payload, coalesce)?;
        self.run(&invocation, self.timeout).map(drop)
    }

    fn query(
        &self,
        name: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<(String, String)>, SerfError> {
        self.rpc().query(name, payload, timeout)
    }
}

fn parse_members(stdout: &[u8]) -> Result<Vec<Member>, String> {
    let raw: RawMembers = serde_json::from_slice(stdout).map_err(|e| e.to_string())?;
    raw.members
        .into_iter()
        .map(|m| {
            let host = m
                .addr
                .rsplit_once(':')
                .map_or(m.addr.as_str(), |(host, _port)| host);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let addr = host
                .parse()
                .map_err(|_| format!("member {:?} has address {:?}", m.name, m.addr))?;
            Ok(Member {
                name: m.name,
                addr,
                port: m.port,
                status: MemberStatus::from(m.status.as_str()),
                tags: m.tags,
            })
        })
        .collect()
}

/// The decoders of a query's RPC stream and `serf members` output (remote members' answers
/// and names, relayed by the local agent), for the fuzz target `serf_answers`. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    use super::Member;
    use crate::formats::serf_rpc::{collect_query, Collector};

    /// The members alive when the fuzzed query began.
    pub const ALIVE: [&str; 3] = ["n1", "n2", "n3"];

    /// Reads `stream` as the records of query 3 (what follows its reply header), as
    /// [`super::Gossip::query`] does, among [`ALIVE`]; returns the answers whatever ended it.
    pub fn decode_query(mut stream: &[u8]) -> (Vec<(String, String)>, bool) {
        let mut collector = Collector::new(ALIVE.iter().map(|n| n.to_string()).collect());
        let ended = collect_query(&mut stream, 3, &mut collector).is_ok();
        (collector.into_answers(), ended)
    }

    pub fn parse_members(stdout: &[u8]) -> Result<Vec<Member>, String> {
        super::parse_members(stdout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    /// Captured from `serf members -format=json` (0.8.2-dev) with two agents on loopback.
    const MEMBERS_JSON: &str = r#"{
  "members": [
    {"name": "n2", "addr": "127.0.0.1:17947", "port": 17947, "tags": {"role": "b"},
     "status": "alive", "protocol": {"max": 5, "min": 2, "version": 5}},
    {"name": "n1", "addr": "127.0.0.1:17946", "port": 17946,
     "tags": {"peer": "10.0.0.1:51413", "role": "a"},
     "status": "failed", "protocol": {"max": 5, "min": 2, "version": 5}}
  ]
}"#;

    #[test]
    fn members_json_parses() {
        let members = match parse_members(MEMBERS_JSON.as_bytes()) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].name, "n2");
        assert_eq!(members[0].addr, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(members[0].port, 17947);
        assert_eq!(members[0].status, MemberStatus::Alive);
        assert_eq!(members[1].status, MemberStatus::Failed);
        assert_eq!(members[1].tags["peer"], "10.0.0.1:51413");
    }

    #[test]
    fn ipv6_member_address_parses_without_brackets() {
        let json = r#"{"members":[{"name":"a","addr":"fd00::1:7946","port":7946,"tags":{},"status":"alive"}]}"#;
        let members = match parse_members(json.as_bytes()) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(Some(members[0].addr), "fd00::1".parse::<IpAddr>().ok());
    }

    #[test]
    fn auth_key_goes_in_the_environment_not_argv() {
        let serf = Serf::new("127.0.0.1:7373").with_auth(Some("s3cret-key".into()));
        let invocation = match serf.user_event_invocation("p2pu-update", b"p2pu1:abc", false) {
            Ok(i) => i,
            Err(e) => panic!("{e}"),
        };
        let argv: Vec<&[u8]> = invocation.args.iter().map(|a| a.as_bytes()).collect();
        assert_eq!(
            argv,
            [
                &b"event"[..],
                b"-rpc-addr=127.0.0.1:7373",
                b"-coalesce=false",
                b"--",
                b"p2pu-update",
                b"p2pu1:abc"
            ]
        );
        assert!(!invocation.shown().contains("s3cret"));
        assert!(!format!("{serf:?}").contains("s3cret"));
        assert_eq!(
            invocation.env,
            [(
                OsString::from("SERF_RPC_AUTH"),
                OsString::from("s3cret-key")
            )]
        );
    }

    #[test]
    fn without_a_key_an_inherited_one_is_removed() {
        let invocation = Serf::new("127.0.0.1:7373").invocation("members");
        assert!(invocation.env.is_empty());
        assert_eq!(invocation.env_remove, [OsString::from("SERF_RPC_AUTH")]);
    }

    #[test]
    fn nul_bytes_are_refused() {
        let serf = Serf::new("127.0.0.1:7373");
        assert!(matches!(
            serf.user_event("x", b"a\0b", false),
            Err(SerfError::NulByte { what: "payload" })
        ));
    }

    #[test]
    fn failure_shows_command_status_and_stderr() {
        let serf = Serf::new("127.0.0.1:1");
        let invocation = Invocation::new("sh")
            .arg("-c")
            .arg("echo 'Error: Invalid authentication token' >&2; exit 1");
        match serf.run(&invocation, Duration::from_secs(10)) {
            Err(err @ SerfError::Failed { .. }) => {
                let text = err.to_string();
                assert!(text.starts_with("`sh -c "), "{text}");
                assert!(text.contains("exit status: 1: Error: Invalid"), "{text}");
            }
            other => panic!("want Failed, got {other:?}"),
        }
        // A stand-in binary that fails the way serf does when no agent listens: said as what
        // to check, naming the RPC address.
        let invocation = Invocation::new("sh").arg("-c").arg(
            "echo 'Error connecting to Serf agent: dial tcp 127.0.0.1:1: connect: connection refused' >&2; exit 1",
        );
        match serf.run(&invocation, Duration::from_secs(10)) {
            Err(err @ SerfError::Refused { .. }) => assert_eq!(
                err.to_string(),
                "Serf's RPC at 127.0.0.1:1 refuses connections: is serf.service running? (systemctl status serf)"
            ),
            other => panic!("want Refused, got {other:?}"),
        }
    }
}
