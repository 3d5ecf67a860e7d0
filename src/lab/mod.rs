//! The local test fleet ("lab"): N p2pu nodes on this machine, each with its own Serf agent,
//! Transmission daemon and (optionally) `p2pu agent`, all inside one private network namespace
//! where node `i` is `node-i` at 10.99.1.i (Transmission 3.00 drops peers in 127.0.0.0/8).
//! Used by the integration tests of the LAN flow and by `p2pu lab`.
//!
//! Everything a lab writes lives under its base dir; every process it starts is killed (by
//! process group) and the namespace deleted when it shuts down, on drop too, and the kernel
//! SIGKILLs the processes if the thread that started them dies first (PR_SET_PDEATHSIG): keep
//! a `Lab` on the thread that created it.
//!
//! Its parts are the test harness too, so there is one of each: [`Daemon`] (a process in its
//! own group, logging to a file, stopped on drop) and [`Netns`] (a named network namespace with
//! its addresses, routes and veths, commands and threads inside it, deleted with whatever still
//! runs in it on drop). tests/support builds its NAT lab and fleets from these.

mod fleet;
mod netns;
mod node;
mod process;
mod shape;
mod startup;

pub use fleet::Lab;
pub use netns::{veth_pair, Netns};
pub use node::agent_command;
pub use node::{NodeInfo, LAB_FLEET_ID};
pub use process::Daemon;
pub use startup::{init_node, install_keys, serf_command, transmission_command};

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the lab must run as root (it creates a network namespace and runs Transmission as its own user); try sudo")]
    NotRoot,
    #[error("`{tool}` is not installed (not found on PATH); install the Debian package {package}")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error("system user {user:?} does not exist; install the Debian package transmission-daemon")]
    NoUser { user: String },
    #[error("{} (mode {mode:o}) is not searchable by other users, so {user} cannot reach the lab under it; choose a base dir under /tmp", path.display())]
    Untraversable {
        path: PathBuf,
        mode: u32,
        user: String,
    },
    #[error("a lab has 1 to 254 nodes, not {nodes}")]
    TooManyNodes { nodes: usize },
    #[error("there is no node {index}: the lab has nodes 1 to {count}")]
    NoSuchNode { index: usize, count: usize },
    #[error("{process} exited ({status}); the end of {}:\n{tail}", log.display())]
    Exited {
        process: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("timed out after {after:?} waiting for {what}; last seen: {last}")]
    Timeout {
        what: String,
        after: Duration,
        last: String,
    },
    #[error("shaping the lab's links: `{command}` failed: {stderr}")]
    Shape { command: String, stderr: String },
    #[error("{process} {what} ({state}); the end of {}:\n{tail}", log.display())]
    Failed {
        process: String,
        what: String,
        state: String,
        log: PathBuf,
        tail: String,
    },
    #[error("entering network namespace {name}")]
    EnterNetns {
        name: String,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("running `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` {status}{}", crate::error::stderr_suffix(stderr))]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    /// `ip` and other plumbing run through [`crate::engines::run_checked`].
    #[error(transparent)]
    Tool(#[from] crate::engines::CommandError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Fs(#[from] crate::fsutil::FsError),
    #[error(transparent)]
    Serf(#[from] crate::engines::SerfError),
    #[error(transparent)]
    Transmission(#[from] crate::engines::TransmissionError),
    #[error("trusting the lab operator's key in {}", dir.display())]
    Keys {
        dir: PathBuf,
        #[source]
        source: crate::keys::KeyFileError,
    },
    #[error("internal error (a bug in p2pu): {0}")]
    Internal(String),
}

impl crate::error::LayerError for LabError {}

type Result<T, E = LabError> = std::result::Result<T, E>;

/// Wraps an I/O error with what was being done and to which path.
fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LabError {
    let path = path.into();
    move |source| LabError::Io {
        action,
        path,
        source,
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Number of nodes, 1 to 254.
    pub nodes: usize,
    /// Everything the lab writes goes here (created if missing, made mode 0755).
    pub base_dir: PathBuf,
    /// The p2pu executable the nodes run (init, the Serf handler, the agent).
    pub binary: PathBuf,
    /// Run `p2pu agent` on every node.
    pub start_agent: bool,
    /// Sets `agent.accept_legacy` on every node.
    pub accept_legacy: bool,
    /// Extra TOML merged into each node's site.toml (tables merge key by key).
    pub site_overrides: Option<String>,
    /// Extra TOML for one node (by 1-based index), merged after `site_overrides`: its own
    /// Serf tags, say.
    pub node_overrides: std::collections::BTreeMap<usize, String>,
}

impl LabOptions {
    /// `nodes` nodes under `base_dir` running `binary`; no agent, no legacy, no overrides.
    pub fn new(nodes: usize, base_dir: impl Into<PathBuf>, binary: impl Into<PathBuf>) -> Self {
        LabOptions {
            nodes,
            base_dir: base_dir.into(),
            binary: binary.into(),
            start_agent: false,
            accept_legacy: false,
            site_overrides: None,
            node_overrides: Default::default(),
        }
    }
}

/// Checks what the lab needs before it touches anything.
pub fn preflight() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(LabError::NotRoot);
    }
    let tools = [
        ("ip", "iproute2"),
        ("serf", "serf"),
        ("transmission-daemon", "transmission-daemon"),
    ];
    for (tool, package) in tools {
        if find_on_path(tool).is_none() {
            return Err(LabError::MissingTool { tool, package });
        }
    }
    Ok(())
}

/// The first executable file named `program` on PATH.
fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Creates the base dir and opens it to other users (Transmission runs as its own user).
fn prepare_base(base: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(base).map_err(io("creating directory", base))?;
    let base = base.canonicalize().map_err(io("resolving", base))?;
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755))
        .map_err(io("making searchable", &base))?;
    Ok(base)
}

/// The lab writes nothing outside its base dir, so it cannot fix a closed parent: it says so.
fn check_traversable(base: &Path, user: &str) -> Result<()> {
    for dir in base.ancestors().skip(1) {
        let mode = dir
            .metadata()
            .map_err(io("reading", dir))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(LabError::Untraversable {
                path: dir.to_path_buf(),
                mode: mode & 0o7777,
                user: user.to_owned(),
            });
        }
    }
    Ok(())
}
