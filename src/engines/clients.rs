//! This node's engine clients, built from its config: Transmission's RPC, Serf's RPC and
//! Puppet, with the secrets `init` generated read from their 0600 files.

use super::{Credentials, Puppet, Serf, Transmission};
use crate::config::Config;
use crate::error::{Error, Result};
use std::path::Path;
use std::time::Duration;

fn read_secret(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(Error::io("reading secret", path))?;
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
