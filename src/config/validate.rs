//! Checks a parsed `site.toml` and points at the line of the offending key.

use super::{line_column, ConfigError, SiteToml};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// Tags p2pu sets itself on every member; an operator's tag must not shadow them.
pub const RESERVED_TAG_PREFIX: &str = "p2pu";

pub(super) struct Checked {
    pub serf_bind: SocketAddr,
    pub serf_rpc: SocketAddr,
    pub advertise: Option<IpAddr>,
}

pub(super) struct Validator<'a> {
    path: &'a Path,
    text: &'a str,
    doc: Option<toml_edit::ImDocument<&'a str>>,
}

impl<'a> Validator<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Self {
        Validator {
            path,
            text,
            doc: toml_edit::ImDocument::parse(text).ok(),
        }
    }

    /// The line of a dotted key in the source, when the operator wrote it there.
    fn line_of(&self, path: &[&str]) -> Option<usize> {
        let (last, tables) = path.split_last()?;
        let mut table = self.doc.as_ref()?.as_table() as &dyn toml_edit::TableLike;
        for name in tables {
            table = table.get(name)?.as_table_like()?;
        }
        let (key, _) = table.get_key_value(last)?;
        Some(line_column(self.text, key.span()?.start).0)
    }

    fn invalid(&self, key: &str, value: impl ToString, reason: impl Into<String>) -> ConfigError {
        let path: Vec<&str> = key.split('.').collect();
        self.invalid_at(&path, key, value, reason)
    }

    /// Like `invalid` for an entry of a table whose keys are the operator's (tags, extra).
    fn invalid_entry(&self, table: &str, entry: &str, reason: impl Into<String>) -> ConfigError {
        let mut path: Vec<&str> = table.split('.').collect();
        path.push(entry);
        self.invalid_at(&path, table, quoted(entry), reason)
    }

    fn invalid_at(
        &self,
        path: &[&str],
        key: &str,
        value: impl ToString,
        reason: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: self.line_of(path),
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    fn socket_addr(&self, key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
        let addr: SocketAddr = value.parse().map_err(|_| {
            self.invalid(
                key,
                quoted(value),
                "expected an address:port such as 0.0.0.0:7946",
            )
        })?;
        if addr.port() == 0 {
            return Err(self.invalid(key, quoted(value), "port 0 is not a usable port"));
        }
        Ok(addr)
    }

    pub fn check(&self, site: &SiteToml) -> Result<Checked, ConfigError> {
        let serf = &site.serf;
        let serf_bind = self.socket_addr("serf.bind", &serf.bind)?;
        let serf_rpc = self.socket_addr("serf.rpc_addr", &serf.rpc_addr)?;
        if !serf_rpc.ip().is_loopback() {
            return Err(self.invalid(
                "serf.rpc_addr",
                quoted(&serf.rpc_addr),
                "must be a loopback address: Serf's RPC is unencrypted",
            ));
        }
        let advertise = match &serf.advertise {
            None => None,
            Some(text) => Some(text.parse::<IpAddr>().map_err(|_| {
                self.invalid("serf.advertise", quoted(text), "expected an IP address")
            })?),
        };
        for peer in &serf.join {
            if peer.is_empty() || peer.contains(char::is_whitespace) {
                return Err(self.invalid("serf.join", quoted(peer), "expected host or host:port"));
            }
        }
        for tag in serf.tags.keys() {
            if tag.starts_with(RESERVED_TAG_PREFIX) {
                return Err(self.invalid_entry(
                    "serf.tags",
                    tag,
                    format!("tags starting with `{RESERVED_TAG_PREFIX}` are set by p2pu itself"),
                ));
            }
            if tag.is_empty()
                || !tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(self.invalid(
                    "serf.tags",
                    quoted(tag),
                    "tag names use letters, digits, `-` and `_`",
                ));
            }
        }
        if !(512..=9216).contains(&serf.user_event_size_limit) {
            return Err(self.invalid(
                "serf.user_event_size_limit",
                serf.user_event_size_limit,
                "Serf accepts 512 to 9216",
            ));
        }
        let tr = &site.transmission;
        if tr.rpc_user.is_empty() || tr.rpc_user.contains(':') {
            return Err(self.invalid(
                "transmission.rpc_user",
                quoted(&tr.rpc_user),
                "must be non-empty and contain no `:`",
            ));
        }
        if tr.rpc_password.as_deref() == Some("") {
            return Err(self.invalid(
                "transmission.rpc_password",
                "\"\"",
                "must not be empty; leave it out to generate a secret",
            ));
        }
        if tr.user.is_empty() {
            return Err(self.invalid(
                "transmission.user",
                "\"\"",
                "must name the daemon's system user",
            ));
        }
        for key in tr.extra.keys() {
            if let Some(owner) = managed_setting(key) {
                return Err(self.invalid_entry(
                    "transmission.extra",
                    key,
                    format!("settings.json key `{key}` is managed by p2pu; set {owner} instead"),
                ));
            }
        }
        if site.nat.enabled && site.nat.proxy.is_none() {
            return Err(self.invalid(
                "nat.enabled",
                "true",
                "needs nat.proxy (host:port of the rendezvous)",
            ));
        }
        if let Some(proxy) = &site.nat.proxy {
            if proxy
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .filter(|p| *p != 0)
                .is_none()
            {
                return Err(self.invalid("nat.proxy", quoted(proxy), "expected host:port"));
            }
        }
        if let Some(server) = &site.nat.stun_server {
            if server
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .filter(|p| *p != 0)
                .is_none()
            {
                return Err(self.invalid("nat.stun_server", quoted(server), "expected host:port"));
            }
        }
        if site.nat.peer_expiry_secs < 2 * site.nat.keepalive_secs {
            return Err(self.invalid(
                "nat.peer_expiry_secs",
                site.nat.peer_expiry_secs,
                "use at least twice nat.keepalive_secs: peers ping once per keepalive",
            ));
        }
        if site.nat.relay_rate_kbps == 0 {
            return Err(self.invalid(
                "nat.relay_rate_kbps",
                0,
                "must be positive: relayed sessions would carry no bytes",
            ));
        }
        if !(5..30).contains(&site.nat.keepalive_secs) {
            return Err(self.invalid(
                "nat.keepalive_secs",
                site.nat.keepalive_secs,
                "use 5 to 29: routers drop idle UDP mappings after 30 s",
            ));
        }
        for server in site.time.ntp.iter().chain(&site.time.fallback_ntp) {
            if server.is_empty() || server.contains(char::is_whitespace) {
                return Err(self.invalid(
                    "time.ntp",
                    quoted(server),
                    "expected a host name or address",
                ));
            }
        }
        if site.agent.catch_up_secs == 0 {
            return Err(self.invalid("agent.catch_up_secs", 0, "must be at least 1"));
        }
        if site.agent.fetch_min_rate_bytes_per_sec < 1024 {
            return Err(self.invalid(
                "agent.fetch_min_rate_bytes_per_sec",
                site.agent.fetch_min_rate_bytes_per_sec,
                "use at least 1024: a slower floor lets a trickling member hold an update for days",
            ));
        }
        if !(5..=600).contains(&site.agent.fetch_rate_window_secs) {
            return Err(self.invalid(
                "agent.fetch_rate_window_secs",
                site.agent.fetch_rate_window_secs,
                "use 5 to 600: shorter windows punish a brief stall, longer ones let a trickle last",
            ));
        }
        if !(60..=7 * 86_400).contains(&site.agent.fetch_slack_secs) {
            return Err(self.invalid(
                "agent.fetch_slack_secs",
                site.agent.fetch_slack_secs,
                "use 60 to 604800: finding peers takes a minute or more",
            ));
        }
        let user = site.agent.serve_user.as_str();
        if user == "root" {
            return Err(self.invalid(
                "agent.serve_user",
                quoted(user),
                "must be an unprivileged user: the tracker and web seed server face the network",
            ));
        }
        if !is_user_name(user) {
            return Err(self.invalid(
                "agent.serve_user",
                quoted(user),
                "expected a system user name: 1 to 32 of `a-z`, `0-9`, `_`, `-`, not starting with a digit or `-`",
            ));
        }
        self.check_paths(site)?;
        self.check_ports(site, serf_bind, serf_rpc)?;
        Ok(Checked {
            serf_bind,
            serf_rpc,
            advertise,
        })
    }

    fn check_paths(&self, site: &SiteToml) -> Result<(), ConfigError> {
        let paths: [(&str, &PathBuf); 19] = [
            ("paths.config_dir", &site.paths.config_dir),
            ("paths.systemd_dir", &site.paths.systemd_dir),
            ("paths.timesyncd_dir", &site.paths.timesyncd_dir),
            ("serf.keyring_file", &site.serf.keyring_file),
            ("serf.rpc_auth_file", &site.serf.rpc_auth_file),
            ("serf.event_handler", &site.serf.event_handler),
            ("serf.config_file", &site.serf.config_file),
            (
                "transmission.rpc_password_file",
                &site.transmission.rpc_password_file,
            ),
            ("transmission.download_dir", &site.transmission.download_dir),
            (
                "transmission.settings_file",
                &site.transmission.settings_file,
            ),
            ("agent.spool_dir", &site.agent.spool_dir),
            ("agent.state_dir", &site.agent.state_dir),
            ("agent.trusted_keys_dir", &site.agent.trusted_keys_dir),
            ("agent.signing_key", &site.agent.signing_key),
            ("agent.archive_dir", &site.agent.archive_dir),
            ("nat.fleet_secret_file", &site.nat.fleet_secret_file),
            ("nat.control_socket", &site.nat.control_socket),
            ("nat.identity_key_file", &site.nat.identity_key_file),
            ("nat.proxy_state_dir", &site.nat.proxy_state_dir),
        ];
        let modulepath = site
            .puppet
            .modulepath
            .iter()
            .map(|p| ("puppet.modulepath", p))
            .chain(
                site.puppet
                    .state_root
                    .iter()
                    .map(|p| ("puppet.state_root", p)),
            );
        for (key, path) in paths.into_iter().chain(modulepath) {
            if !path.is_absolute() {
                return Err(self.invalid(
                    key,
                    quoted(&path.display().to_string()),
                    "must be an absolute path",
                ));
            }
            if path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(self.invalid(
                    key,
                    quoted(&path.display().to_string()),
                    "must not contain `..`",
                ));
            }
        }
        Ok(())
    }

    fn check_ports(
        &self,
        site: &SiteToml,
        bind: SocketAddr,
        rpc: SocketAddr,
    ) -> Result<(), ConfigError> {
        let mut ports = vec![
            ("serf.bind", bind.port()),
            ("serf.rpc_addr", rpc.port()),
            ("transmission.rpc_port", site.transmission.rpc_port),
            ("transmission.peer_port", site.transmission.peer_port),
            ("agent.tracker_port", site.agent.tracker_port),
            ("agent.seed_port", site.agent.seed_port),
        ];
        if site.nat.enabled || site.node.role == super::Role::Proxy {
            ports.push(("nat.port", site.nat.port));
        }
        for (i, (key, port)) in ports.iter().enumerate() {
            if *port == 0 {
                return Err(self.invalid(key, port, "port 0 is not a usable port"));
            }
            if let Some((other, _)) = ports[..i].iter().find(|(_, p)| p == port) {
                return Err(self.invalid(
                    key,
                    port,
                    format!("conflicts with {other}, which uses the same port"),
                ));
            }
        }
        Ok(())
    }
}

/// Checks a node name whether it came from the config or the hostname.
pub(super) fn node_name(path: &Path, text: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        return Ok(());
    }
    Err(Validator::new(path, text).invalid(
        "node.name",
        quoted(name),
        "use 1 to 64 letters, digits, `-`, `_` or `.`",
    ))
}

/// settings.json keys that p2pu renders from its own config; returns the key to use instead.
fn managed_setting(key: &str) -> Option<&'static str> {
    Some(match key {
        "rpc-port" => "transmission.rpc_port",
        "rpc-username" | "rpc-password" | "rpc-authentication-required" => {
            "transmission.rpc_user / rpc_password"
        }
        "rpc-bind-address" | "rpc-whitelist" | "rpc-whitelist-enabled" | "rpc-enabled" => {
            "nothing: RPC stays on loopback"
        }
        "peer-port" => "transmission.peer_port",
        "download-dir" | "incomplete-dir" | "incomplete-dir-enabled" => "transmission.download_dir",
        "dht-enabled" => "transmission.dht",
        "lpd-enabled" => "transmission.lpd",
        "pex-enabled" => "transmission.pex",
        "utp-enabled" => "transmission.utp",
        "encryption" => "transmission.encryption",
        _ => return None,
    })
}

fn is_user_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name.len() <= 32
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn quoted(value: &str) -> String {
    format!("{value:?}")
}
