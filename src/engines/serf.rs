//! The local Serf agent (Debian's 0.9.4, which calls itself 0.8.2-dev): members, user events,
//! joins, tags and queries, all over its RPC ([`rpc`]): a query ends once every alive member
//! answered, and nothing starts a `serf` process (the CLI cost a Go start a call, three before
//! every broadcast, and took the RPC key without checking who listened).

mod rpc;
mod sock_owner;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Sets one of this member's tags (keeping the others), which Serf gossips to the fleet. Nothing by default (fakes).
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

/// One Serf agent's RPC address and key (`binary` is only what `check_installed` looks for).
#[derive(Clone)]
pub struct Serf {
    binary: PathBuf,
    rpc_addr: String,
    rpc_auth: Option<String>,
    /// Limit for connecting and for each request but a query (which has its own).
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
        self.rpc().join(addrs, events == JoinEvents::Replay)
    }
}

impl Gossip for Serf {
    fn join(&self, addrs: &[String], events: JoinEvents) -> Result<(), SerfError> {
        Serf::join(self, addrs, events)
    }

    fn set_tag(&self, key: &str, value: &str) -> Result<(), SerfError> {
        self.rpc().set_tag(key, value)
    }

    fn members(&self) -> Result<Vec<Member>, SerfError> {
        let (members, unreadable) = self.rpc().members()?;
        if unreadable > 0 {
            tracing::debug!(
                unreadable,
                "serf members: left out members whose address is neither IPv4 nor IPv6"
            );
        }
        Ok(members
            .into_iter()
            .map(|m| Member {
                status: MemberStatus::from(m.status.as_str()),
                name: m.name,
                addr: m.addr,
                port: m.port,
                tags: m.tags,
            })
            .collect())
    }

    fn user_event(&self, name: &str, payload: &[u8], coalesce: bool) -> Result<(), SerfError> {
        self.rpc().event(name, payload, coalesce)
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

/// The decoders of a query's RPC stream and of a `members` reply (remote members' answers,
/// names, addresses and tags, relayed by the local agent), for the fuzz target
/// `serf_answers`. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    use crate::formats::serf_rpc::{collect_query, Collector, Member, RpcError};

    /// The members alive when the fuzzed query began.
    pub const ALIVE: [&str; 3] = ["n1", "n2", "n3"];

    /// Reads `stream` as the records of query 3 (what follows its reply header), as
    /// [`super::Gossip::query`] does, among [`ALIVE`]; returns the answers whatever ended it.
    pub fn decode_query(mut stream: &[u8]) -> (Vec<(String, String)>, bool) {
        let mut collector = Collector::new(ALIVE.iter().map(|n| n.to_string()).collect());
        let ended = collect_query(&mut stream, 3, &mut collector).is_ok();
        (collector.into_answers(), ended)
    }

    /// Decodes a `members` reply body.
    pub fn decode_members(reply: &[u8]) -> Result<(Vec<Member>, usize), RpcError> {
        crate::formats::serf_rpc::members(reply)
    }
}
