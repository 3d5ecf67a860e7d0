//! This node's engine clients, built from its config: Transmission's RPC, Serf's RPC and
//! Puppet, with the secrets `init` generated read from their 0600 files.

use super::{Applier, Credentials, Gossip, Puppet, Serf, TorrentEngine, Transmission};
use crate::config::Config;
use crate::error::{Error, Result};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn read_secret(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => Error::Usage(format!(
            "{}: the RPC secret is missing: run `p2pu init` (which generates it), as root",
            path.display()
        )),
        std::io::ErrorKind::PermissionDenied => Error::Usage(format!(
            "{}: permission denied: the RPC secret is root's; run as root",
            path.display()
        )),
        _ => Error::io("reading secret", path)(source),
    })?;
    Ok(text.trim().to_string())
}

/// The local Transmission's RPC, authenticated with the configured or generated password.
pub fn transmission(config: &Config) -> Result<Transmission> {
    let tr = &config.site.transmission;
    let password = match &tr.rpc_password {
        Some(password) => password.clone(),
        None => read_secret(&tr.rpc_password_file)?,
    };
    let credentials = Credentials {
        user: tr.rpc_user.clone(),
        password,
    };
    Ok(Transmission::new(
        config.transmission_rpc_url(),
        Some(credentials),
    ))
}

/// The local Serf agent's RPC.
pub fn serf(config: &Config) -> Result<Serf> {
    let auth = read_secret(&config.site.serf.rpc_auth_file)?;
    Ok(Serf::new(config.serf_rpc.to_string()).with_auth(Some(auth)))
}

/// `puppet apply` as the config says: modulepath, extra flags, state root, time limit.
pub fn puppet(config: &Config) -> Puppet {
    let site = &config.site.puppet;
    Puppet {
        modulepath: site.modulepath.clone(),
        extra_flags: site.apply_flags.clone(),
        vardir_root: site.state_root.clone(),
        timeout: Some(Duration::from_secs(u64::from(site.timeout_secs))),
        warm_dir: Some(config.site.agent.state_dir.join("puppet-validator")),
        ..Puppet::default()
    }
}

/// The engines the agent runs as programs, checked before it starts: without them every update
/// would fail later, one at a time. The agent refuses to start instead, and systemd's
/// `Restart=on-failure` starts it again until they are installed.
pub fn check_agent_engines(config: &Config) -> Result<()> {
    puppet(config).check_installed()?;
    Serf::new(config.serf_rpc.to_string()).check_installed()?;
    Ok(())
}

/// Whether one of the node's daemons answers where the config says it listens.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceState {
    /// `agent`, `serf` or `transmission`.
    pub name: String,
    /// Where it was asked (a TCP connect, nothing sent).
    pub addr: String,
    pub running: bool,
    /// The unit that runs it, for the operator's `systemctl status`.
    pub unit: String,
}

/// Asks each daemon's local port with a TCP connect (nothing is sent): the agent's tracker
/// (which its supervised server answers), Serf's RPC, Transmission's RPC.
fn probe_services(config: &Config) -> Vec<ServiceState> {
    let loopback = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let wanted = [
        (
            "agent",
            loopback(config.site.agent.tracker_port),
            "p2pu-agent",
        ),
        ("serf", config.serf_rpc, "serf"),
        (
            "transmission",
            loopback(config.site.transmission.rpc_port),
            "transmission-daemon",
        ),
    ];
    wanted
        .into_iter()
        .map(|(name, addr, unit)| ServiceState {
            name: name.into(),
            addr: addr.to_string(),
            running: std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                .is_ok(),
            unit: unit.into(),
        })
        .collect()
}

/// Where a command gets its engine clients. A real process builds them from the config the
/// command loaded, when it first asks ([`Engines::from_config`]); a test hands in fakes
/// ([`Engines::fakes`]) and gets an error, not a real daemon, for any engine it left out.
#[derive(Clone)]
pub struct Engines(Source);

#[derive(Clone)]
enum Source {
    Config,
    Fakes {
        torrent: Option<Arc<dyn TorrentEngine>>,
        gossip: Option<Arc<dyn Gossip>>,
        applier: Option<Arc<dyn Applier>>,
        services: Option<Vec<ServiceState>>,
    },
}

impl Engines {
    /// The real engines, each built from the config when a command first asks for it, so a
    /// command that needs none reads no secret.
    pub fn from_config() -> Engines {
        Engines(Source::Config)
    }

    /// No engine at all; add fakes with [`Engines::torrent_engine`] and the like.
    pub fn fakes() -> Engines {
        Engines(Source::Fakes {
            torrent: None,
            gossip: None,
            applier: None,
            services: None,
        })
    }

    /// Says these daemons run (or not) instead of asking their ports.
    pub fn services_running(mut self, states: Vec<ServiceState>) -> Engines {
        if let Source::Fakes { services, .. } = &mut self.0 {
            *services = Some(states);
        }
        self
    }

    /// Whether the agent, Serf and Transmission answer on this node (fakes: what the test
    /// said, else nothing known).
    pub fn services(&self, config: &Config) -> Vec<ServiceState> {
        match &self.0 {
            Source::Config => probe_services(config),
            Source::Fakes { services, .. } => services.clone().unwrap_or_default(),
        }
    }

    /// Hands out `engine` as the torrent engine instead of Transmission.
    pub fn torrent_engine(mut self, engine: Arc<dyn TorrentEngine>) -> Engines {
        if let Source::Fakes { torrent, .. } = &mut self.0 {
            *torrent = Some(engine);
        }
        self
    }

    /// Hands out `engine` as the gossip layer instead of Serf.
    pub fn gossip_engine(mut self, engine: Arc<dyn Gossip>) -> Engines {
        if let Source::Fakes { gossip, .. } = &mut self.0 {
            *gossip = Some(engine);
        }
        self
    }

    /// Hands out `engine` as the applier instead of Puppet.
    pub fn applier_engine(mut self, engine: Arc<dyn Applier>) -> Engines {
        if let Source::Fakes { applier, .. } = &mut self.0 {
            *applier = Some(engine);
        }
        self
    }

    /// The torrent engine: this node's Transmission.
    pub fn torrent(&self, config: &Config) -> Result<Arc<dyn TorrentEngine>> {
        match &self.0 {
            Source::Config => Ok(Arc::new(transmission(config)?)),
            Source::Fakes { torrent, .. } => torrent.clone().ok_or_else(|| not_given("torrent")),
        }
    }

    /// The gossip layer: this node's Serf agent.
    pub fn gossip(&self, config: &Config) -> Result<Arc<dyn Gossip>> {
        match &self.0 {
            Source::Config => Ok(Arc::new(serf(config)?)),
            Source::Fakes { gossip, .. } => gossip.clone().ok_or_else(|| not_given("gossip")),
        }
    }

    /// The applier: `puppet apply` as the config says.
    pub fn applier(&self, config: &Config) -> Result<Arc<dyn Applier>> {
        match &self.0 {
            Source::Config => Ok(Arc::new(puppet(config))),
            Source::Fakes { applier, .. } => applier.clone().ok_or_else(|| not_given("applier")),
        }
    }

    /// [`check_agent_engines`] for real engines; fakes are always there.
    pub fn check_agent_engines(&self, config: &Config) -> Result<()> {
        match &self.0 {
            Source::Config => check_agent_engines(config),
            Source::Fakes { .. } => Ok(()),
        }
    }
}

/// A test that asked for an engine it gave no fake of: a bug in the test, said as one.
fn not_given(engine: &str) -> Error {
    Error::Internal(format!(
        "no fake {engine} engine was given to this environment"
    ))
}
