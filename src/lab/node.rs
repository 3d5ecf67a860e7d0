//! One lab node's layout: its directory, the site.toml that keeps every path inside it, its
//! address and ports inside the lab's namespace, and the secrets `init` generated for it.

use super::{io, LabError, Result};
use crate::config::{Config, SiteToml};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// Every node's gossip, BitTorrent and RPC ports are the same fixed numbers plus its index:
/// the namespace is private to the lab, so nothing else can hold them.
const SERF_RPC_BASE: u16 = 7373;
const TRANSMISSION_RPC_BASE: u16 = 9091;
const TRACKER_BASE: u16 = 6969;

/// A lab node as tests and `p2pu lab` see it. Node `i` (1-based) is `node-i` at 10.99.1.i.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub index: usize,
    pub name: String,
    /// Its address inside the lab's namespace (gossip and BitTorrent peers).
    pub addr: Ipv4Addr,
    /// `<base>/node-i`: everything the node writes lives here.
    pub dir: PathBuf,
    /// Its site.toml.
    pub config: PathBuf,
    /// The parsed site.toml (paths, ports).
    pub site: SiteToml,
    /// Serf's RPC address (loopback inside the namespace).
    pub serf_rpc: SocketAddr,
    /// Serf's gossip address.
    pub serf_bind: SocketAddr,
}

impl NodeInfo {
    /// Writes `<base>/node-i/site.toml` (merged with `overrides`) and loads it back.
    pub(super) fn create(
        base: &Path,
        index: usize,
        accept_legacy: bool,
        overrides: Option<&str>,
    ) -> Result<NodeInfo> {
        let name = format!("node-{index}");
        let addr = node_addr(index)?;
        let join = if index == 1 {
            Vec::new()
        } else {
            vec![Ipv4Addr::new(10, 99, 1, 1)]
        };
        Self::write(
            &base.join(&name),
            index,
            &name,
            addr,
            &join,
            accept_legacy,
            overrides,
        )
    }

    /// A node outside a [`super::Lab`] (e.g. behind a NAT in another harness's namespace):
    /// `dir/site.toml` for a one-node Serf fleet named `name` at `addr`, every path under
    /// `dir`, merged with `overrides`. Its ports are a lab's node 1's.
    pub fn standalone(
        dir: &Path,
        name: &str,
        addr: Ipv4Addr,
        overrides: Option<&str>,
    ) -> Result<NodeInfo> {
        Self::write(dir, 1, name, addr, &[], false, overrides)
    }

    fn write(
        dir: &Path,
        index: usize,
        name: &str,
        addr: Ipv4Addr,
        join: &[Ipv4Addr],
        accept_legacy: bool,
        overrides: Option<&str>,
    ) -> Result<NodeInfo> {
        for sub in [dir.to_path_buf(), dir.join("logs")] {
            std::fs::create_dir_all(&sub).map_err(io("creating directory", &sub))?;
        }
        let text = base_toml(dir, index, name, addr, join)?;
        let mut table = parse(&dir.join("site.toml"), &text)?;
        table.insert("agent".into(), agent_table(&table, accept_legacy)?);
        if let Some(extra) = overrides {
            merge(&mut table, parse(Path::new("(site_overrides)"), extra)?);
        }
        let config = dir.join("site.toml");
        let text = toml::to_string(&table).map_err(|e| LabError::Internal(e.to_string()))?;
        crate::fsutil::write_atomic(&config, text.as_bytes(), 0o644)?;
        let loaded = Config::load(&config, None)?;
        Ok(NodeInfo {
            index,
            name: name.to_owned(),
            addr,
            dir: dir.to_path_buf(),
            config,
            serf_rpc: loaded.serf_rpc,
            serf_bind: loaded.serf_bind,
            site: loaded.site,
        })
    }

    /// Serf's RPC auth key, as `init` generated it.
    pub fn serf_rpc_auth(&self) -> Result<String> {
        read_secret(&self.site.serf.rpc_auth_file)
    }

    /// Transmission's RPC password: the fixed one from the config, or the generated one.
    pub fn transmission_password(&self) -> Result<String> {
        match &self.site.transmission.rpc_password {
            Some(password) => Ok(password.clone()),
            None => read_secret(&self.site.transmission.rpc_password_file),
        }
    }

    /// Transmission's RPC URL (loopback inside the namespace).
    pub fn transmission_url(&self) -> String {
        crate::engines::Transmission::local_url(self.site.transmission.rpc_port)
    }

    /// Where the node's process `what` logs.
    pub fn log(&self, what: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{what}.log"))
    }
}

/// 10.99.1.`index`.
fn node_addr(index: usize) -> Result<Ipv4Addr> {
    match u8::try_from(index) {
        Ok(last @ 1..=254) => Ok(Ipv4Addr::new(10, 99, 1, last)),
        _ => Err(LabError::TooManyNodes { nodes: index }),
    }
}

fn port(base: u16, index: usize) -> Result<u16> {
    u16::try_from(index)
        .ok()
        .and_then(|i| base.checked_add(i))
        .ok_or(LabError::TooManyNodes { nodes: index })
}

/// The fleet every lab node (and every [`NodeInfo::standalone`] node) is in, set in its
/// site.toml so that nodes inited apart still take each other's announcements.
pub const LAB_FLEET_ID: &str = "1ab0000000000001";

/// The node's site.toml before overrides: every path under `dir`.
fn base_toml(
    dir: &Path,
    index: usize,
    name: &str,
    addr: Ipv4Addr,
    join: &[Ipv4Addr],
) -> Result<String> {
    let d = dir.display().to_string();
    let join = toml::Value::Array(
        join.iter()
            .map(|ip| toml::Value::String(ip.to_string()))
            .collect(),
    );
    let serf_rpc = port(SERF_RPC_BASE, index)?;
    let rpc_port = port(TRANSMISSION_RPC_BASE, index)?;
    let tracker = port(TRACKER_BASE, index)?;
    Ok(format!(
        r#"
[node]
name = "{name}"
[serf]
bind = "{addr}:7946"
advertise = "{addr}"
join = {join}
rpc_addr = "127.0.0.1:{serf_rpc}"
keyring_file = "{d}/p2pu/serf.keyring"
rpc_auth_file = "{d}/p2pu/serf-rpc.secret"
event_handler = "{d}/p2pu/serf-handler"
config_file = "{d}/serf/p2pu.json"
[transmission]
rpc_port = {rpc_port}
peer_port = 51413
rpc_password_file = "{d}/p2pu/transmission-rpc.secret"
download_dir = "{d}/downloads"
settings_file = "{d}/transmission/settings.json"
[transmission.extra]
"bind-address-ipv4" = "{addr}"
[puppet]
state_root = "{d}/puppet"
modulepath = ["{d}/puppet/modules"]
[agent]
spool_dir = "{d}/spool"
state_dir = "{d}/state"
trusted_keys_dir = "{d}/p2pu/trusted-keys"
signing_key = "{d}/p2pu/keys/signing.key"
archive_dir = "{d}/archives"
tracker_port = {tracker}
fleet_id = "{LAB_FLEET_ID}"
[paths]
config_dir = "{d}/p2pu"
systemd_dir = "{d}/systemd"
timesyncd_dir = "{d}/timesyncd"
"#
    ))
}

/// The `[agent]` table with `accept_legacy` set.
fn agent_table(table: &toml::Table, accept_legacy: bool) -> Result<toml::Value> {
    let mut agent = table
        .get("agent")
        .and_then(toml::Value::as_table)
        .cloned()
        .ok_or_else(|| LabError::Internal("lab site.toml has no [agent] table".into()))?;
    agent.insert("accept_legacy".into(), toml::Value::Boolean(accept_legacy));
    Ok(toml::Value::Table(agent))
}

fn parse(path: &Path, text: &str) -> Result<toml::Table> {
    text.parse::<toml::Table>().map_err(|e| {
        let span = e.span().map_or(0, |s| s.start);
        let line = text[..span.min(text.len())].lines().count().max(1);
        crate::config::ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            column: 0,
            message: e.message().to_owned(),
        }
        .into()
    })
}

/// Merges `extra` into `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Table, extra: toml::Table) {
    for (key, value) in extra {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(more)) => merge(inner, more),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn read_secret(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(io("reading secret", path))?;
    Ok(text.trim().to_owned())
}

/// `<binary> agent` for `node`.
pub fn agent_command(binary: &Path, node: &NodeInfo) -> std::process::Command {
    let mut command = std::process::Command::new(binary);
    command
        .arg("agent")
        .arg("--config")
        .arg(&node.config)
        .env("HOME", &node.dir);
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_stays_in_the_node_dir_and_overrides_merge() {
        let base = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(e) => panic!("{e}"),
        };
        let overrides =
            "[transmission.extra]\n\"cache-size-mb\" = 2\n[puppet]\ntimeout_secs = 60\n";
        let node = match NodeInfo::create(base.path(), 3, true, Some(overrides)) {
            Ok(node) => node,
            Err(e) => panic!("{}", crate::error::chain(&e)),
        };
        let site = &node.site;
        assert_eq!(node.name, "node-3");
        assert_eq!(node.addr, Ipv4Addr::new(10, 99, 1, 3));
        assert_eq!(site.serf.join, ["10.99.1.1"]);
        assert_eq!(node.serf_rpc.to_string(), "127.0.0.1:7376");
        assert_eq!(site.transmission.rpc_port, 9094);
        assert_eq!(site.agent.tracker_port, 6972);
        assert!(site.agent.accept_legacy);
        assert_eq!(site.puppet.timeout_secs, 60);
        let extra = &site.transmission.extra;
        assert_eq!(extra["bind-address-ipv4"].as_str(), Some("10.99.1.3"));
        assert_eq!(extra["cache-size-mb"].as_integer(), Some(2));
        let paths = [
            &site.serf.keyring_file,
            &site.serf.rpc_auth_file,
            &site.serf.event_handler,
            &site.serf.config_file,
            &site.transmission.rpc_password_file,
            &site.transmission.download_dir,
            &site.transmission.settings_file,
            &site.agent.spool_dir,
            &site.agent.state_dir,
            &site.agent.trusted_keys_dir,
            &site.agent.signing_key,
            &site.agent.archive_dir,
            &site.paths.config_dir,
            &site.paths.systemd_dir,
            &site.paths.timesyncd_dir,
        ];
        for path in paths {
            assert!(path.starts_with(&node.dir), "{}", path.display());
        }
        assert!(site
            .puppet
            .state_root
            .as_ref()
            .is_some_and(|p| p.starts_with(&node.dir)));
    }

    #[test]
    fn node_one_joins_nobody() {
        let Ok(base) = tempfile::tempdir() else {
            panic!("no temp dir")
        };
        let Ok(node) = NodeInfo::create(base.path(), 1, false, None) else {
            panic!("node 1 config")
        };
        assert!(node.site.serf.join.is_empty());
        assert!(!node.site.agent.accept_legacy);
    }

    #[test]
    fn index_past_254_is_refused() {
        assert!(node_addr(255).is_err());
        assert!(node_addr(0).is_err());
    }
}
