//! `site.toml`: parse (syntax, unknown keys), validate (ports, addresses, paths, conflicts), then
//! resolve node-specific values from the machine. Nothing here has side effects, so every
//! conversion is tested on its own before `init` touches a file.

mod site;
mod validate;

pub use site::*;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// Where the Debian package installs the commented example config (Cargo.toml's deb assets).
pub const EXAMPLE_CONFIG: &str = "/usr/share/doc/p2pu/site.example.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {} does not exist: create it (an empty file is valid: every key has a default; \
        the commented example is {EXAMPLE_CONFIG}, install/site.example.toml in the source tree) \
        or name another file with --config or P2PU_CONFIG", path.display())]
    Missing { path: PathBuf },
    #[error("{}: permission denied: the site config is readable by root only; run as root (sudo p2pu ...)", path.display())]
    Denied { path: PathBuf },
    #[error("reading config {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}{}: {key}{}: {reason}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default(),
        value.as_ref().map(|v| format!(" = {v}")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        key: String,
        /// The value as the operator wrote it; `None` where it says nothing (a whole table).
        value: Option<String>,
        reason: String,
    },
    /// Every problem found in one file, one per line, so a single edit fixes them all.
    #[error("{}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several { errors: Vec<ConfigError> },
    #[error("fleet id file {}: {reason}; run `p2pu init` (which generates it) or set agent.fleet_id", path.display())]
    FleetId { path: PathBuf, reason: String },
    #[error("{}: cannot work out {key}: {reason}; set it in the config", path.display())]
    Unresolved {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },
}

impl crate::error::LayerError for ConfigError {}

/// A validated site config with node-specific values resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from (for messages and for the rendered units).
    pub source: PathBuf,
    pub site: SiteToml,
    /// `None` in an image build, where the device finds its own name at first boot.
    pub node_name: Option<String>,
    /// `None` when the machine has no default route (serf then picks an address itself).
    pub advertise: Option<IpAddr>,
    pub serf_bind: SocketAddr,
    pub serf_rpc: SocketAddr,
}

/// What the machine says about itself; injected so resolution is testable.
#[derive(Debug, Clone, Default)]
pub struct MachineFacts {
    pub hostname: Option<String>,
    pub default_route_addr: Option<IpAddr>,
}

impl MachineFacts {
    /// Reads the hostname and the IPv4 address of the default route's interface.
    pub fn probe() -> MachineFacts {
        MachineFacts {
            hostname: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .filter(|h| !h.is_empty()),
            default_route_addr: default_route_addr(),
        }
    }
}

fn default_route_addr() -> Option<IpAddr> {
    let routes = std::fs::read_to_string("/proc/net/route").ok()?;
    let iface = routes.lines().skip(1).find_map(|line| {
        let mut fields = line.split_whitespace();
        let iface = fields.next()?;
        (fields.next()? == "00000000").then(|| iface.to_string())
    })?;
    nix::ifaddrs::getifaddrs().ok()?.find_map(|ifa| {
        if ifa.interface_name != iface {
            return None;
        }
        let addr = ifa.address?;
        addr.as_sockaddr_in().map(|sin| IpAddr::V4(sin.ip()))
    })
}

impl Config {
    /// Reads, parses, validates and resolves `path`. `facts` is `None` in an image build:
    /// node-specific values are then left for the device's first boot.
    pub fn load(path: &Path, facts: Option<&MachineFacts>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ConfigError::Missing {
                    path: path.to_path_buf(),
                }
            } else if source.kind() == std::io::ErrorKind::PermissionDenied {
                ConfigError::Denied {
                    path: path.to_path_buf(),
                }
            } else {
                ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        Config::from_str(path, &text, facts)
    }

    pub fn from_str(
        path: &Path,
        text: &str,
        facts: Option<&MachineFacts>,
    ) -> Result<Config, ConfigError> {
        // Syntax first: a broken file leaves nothing to look at key by key.
        let table: toml::Table = toml::from_str(text).map_err(|e| parse_error(path, text, &e))?;
        let validator = validate::Validator::new(path, text);
        let site = validator.site(table);
        let checked = validator.check(&site);
        let node_name = match (&site.node.name, facts) {
            (Some(name), _) => Some(name.clone()),
            (None, None) => None,
            (None, Some(facts)) => facts.hostname.clone(),
        };
        if let Some(name) = &node_name {
            validator.node_name(name, site.node.name.is_none());
        }
        validator.finish()?;
        if node_name.is_none() && facts.is_some() {
            return Err(ConfigError::Unresolved {
                path: path.to_path_buf(),
                key: "node.name",
                reason: "the machine has no hostname".into(),
            });
        }
        let advertise = match checked.advertise {
            Some(addr) => Some(addr),
            None => facts.and_then(|f| f.default_route_addr),
        };
        Ok(Config {
            source: path.to_path_buf(),
            site,
            node_name,
            advertise,
            serf_bind: checked.serf_bind,
            serf_rpc: checked.serf_rpc,
        })
    }

    /// Transmission's RPC endpoint on this node.
    pub fn transmission_rpc_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/transmission/rpc",
            self.site.transmission.rpc_port
        )
    }

    /// This node's fleet: `agent.fleet_id`, or the contents of `agent.fleet_id_file`.
    pub fn fleet_id(&self) -> Result<crate::formats::announcement::FleetId, ConfigError> {
        let agent = &self.site.agent;
        if let Some(id) = &agent.fleet_id {
            // Validated when loaded.
            return id.parse().map_err(|e| ConfigError::FleetId {
                path: self.source.clone(),
                reason: format!("agent.fleet_id: {e}"),
            });
        }
        let path = self.site.fleet_id_file();
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::FleetId {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        text.trim().parse().map_err(|e| ConfigError::FleetId {
            path,
            reason: format!("{e}"),
        })
    }

    /// The announce URL of this node's own tracker (served by its agent on loopback).
    pub fn tracker_url(&self) -> String {
        format!("http://127.0.0.1:{}/announce", self.site.agent.tracker_port)
    }
}

fn parse_error(path: &Path, text: &str, error: &toml::de::Error) -> ConfigError {
    let (line, column) = error
        .span()
        .map(|span| line_column(text, span.start))
        .unwrap_or((1, 1));
    ConfigError::Parse {
        path: path.to_path_buf(),
        line,
        column,
        message: error.message().trim().to_string(),
    }
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    (line, before.len() - line_start + 1)
}

#[cfg(test)]
mod tests;
