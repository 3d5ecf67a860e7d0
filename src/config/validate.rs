//! Checks a parsed `site.toml` and points at the line of the offending key. Every problem in
//! the file is collected, not just the first, so an operator fixes them all in one edit.

use super::{line_column, ConfigError, SiteToml};
use crate::formats::serf_names::RESERVED_TAG_PREFIX;
use std::cell::RefCell;

/// Serf's limit on a member's encoded tags (memberlist's `MetaMaxSize`), and what the
/// msgpack encoding adds: the map's header, and each key's and value's string header.
const SERF_TAGS_MAX: usize = 512;
const TAGS_HEADER: usize = 3;
const PER_TAG: usize = 6;
/// p2pu's own tags at their longest: `p2pu-role` (`proxy`), the two ports (5 digits each),
/// and `p2pu-rate` (13 digits, `formats::rate::MAX_RATE`).
const P2PU_TAGS_MAX: usize = (9 + 5 + PER_TAG) + 2 * (14 + 5 + PER_TAG) + (9 + 13 + PER_TAG);
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

pub(super) struct Checked {
    pub serf_bind: SocketAddr,
    pub serf_rpc: SocketAddr,
    pub advertise: Option<IpAddr>,
}

pub(super) struct Validator<'a> {
    path: &'a Path,
    text: &'a str,
    doc: Option<toml_edit::ImDocument<&'a str>>,
    errors: RefCell<Vec<ConfigError>>,
}

impl<'a> Validator<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Self {
        Validator {
            path,
            text,
            doc: toml_edit::ImDocument::parse(text).ok(),
            errors: RefCell::new(Vec::new()),
        }
    }

    /// Every error found so far: `Ok` when there were none, the one error, or all of them.
    pub fn finish(&self) -> Result<(), ConfigError> {
        let mut errors = self.errors.take();
        // In file order, as an operator reads the file; errors without a line last.
        errors.sort_by_key(|e| match e {
            ConfigError::Invalid { line, .. } => line.unwrap_or(usize::MAX),
            _ => usize::MAX,
        });
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(ConfigError::Several { errors }),
        }
    }

    fn fail(&self, key: &str, value: impl ToString, reason: impl Into<String>) {
        let error = self.invalid(key, value, reason);
        self.errors.borrow_mut().push(error);
    }

    /// The typed config. Keys of unknown names or of the wrong type are recorded one by one
    /// (serde would stop at the first) and left out, so the rest can still be validated.
    pub fn site(&self, table: toml::Table) -> SiteToml {
        let whole = toml::Value::Table(table.clone());
        if let Ok(site) = whole.try_into::<SiteToml>() {
            return site;
        }
        let mut good = toml::Table::new();
        for (section, value) in table {
            // An unknown section is reported once, not once per key.
            if self.structure_error(&[&section], None, nest(&section, toml::Table::new().into())) {
                continue;
            }
            let toml::Value::Table(keys) = value else {
                self.structure_error(&[&section], Some(&value), nest(&section, value.clone()));
                continue;
            };
            let mut kept = toml::Table::new();
            for (key, value) in keys {
                let one = nest(&section, nest(&key, value.clone()).into());
                if !self.structure_error(&[&section, &key], Some(&value), one) {
                    kept.insert(key, value);
                }
            }
            good.insert(section, kept.into());
        }
        match toml::Value::Table(good).try_into() {
            Ok(site) => site,
            Err(e) => {
                // Keys that are fine one by one but not together: not known to happen.
                self.errors.borrow_mut().push(ConfigError::Invalid {
                    path: self.path.to_path_buf(),
                    line: None,
                    key: "(whole file)".into(),
                    value: None,
                    reason: e.message().trim().to_string(),
                });
                SiteToml::default()
            }
        }
    }

    /// Records why `table` (holding only `path`) does not deserialize; returns whether it did not.
    fn structure_error(
        &self,
        path: &[&str],
        value: Option<&toml::Value>,
        table: toml::Table,
    ) -> bool {
        let Err(e) = toml::Value::Table(table).try_into::<SiteToml>() else {
            return false;
        };
        let reason = plain(e.message().trim());
        let value = value.filter(|v| !v.is_table()).map(ToString::to_string);
        let error = ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: self.line_of(path),
            key: path.join("."),
            value,
            reason,
        };
        self.errors.borrow_mut().push(error);
        true
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

    /// Like `fail` for an entry of a table whose keys are the operator's (tags, extra).
    fn fail_entry(&self, table: &str, entry: &str, reason: impl Into<String>) {
        let mut path: Vec<&str> = table.split('.').collect();
        path.push(entry);
        let error = self.invalid_at(&path, table, quoted(entry), reason);
        self.errors.borrow_mut().push(error);
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
            value: Some(value.to_string()),
            reason: reason.into(),
        }
    }

    fn socket_addr(&self, key: &str, value: &str) -> Option<SocketAddr> {
        let Ok(addr) = value.parse::<SocketAddr>() else {
            self.fail(
                key,
                quoted(value),
                "expected an address:port such as 0.0.0.0:7946",
            );
            return None;
        };
        if addr.port() == 0 {
            self.fail(key, quoted(value), "port 0 is not a usable port");
            return None;
        }
        Some(addr)
    }

    /// A `host:port` (port required) or `host[:port]` entry: an IP address or a DNS name, and a
    /// port from 1 to 65535.
    fn host_port(&self, key: &str, value: &str, port_required: bool) {
        let example = if port_required {
            "host:port such as 10.0.0.1:3478 or proxy.example.org:3478"
        } else {
            "host or host:port such as 10.0.0.1 or node-1.example.org:7946"
        };
        if let Err(why) = host_port(value, port_required) {
            self.fail(key, quoted(value), format!("{why}; expected a {example}"));
        }
    }

    /// Validates every key; what later steps need comes back even when some keys are bad
    /// (with defaults in their place), since `finish` refuses the config then anyway.
    pub fn check(&self, site: &SiteToml) -> Checked {
        let defaults = SiteToml::default();
        let (serf_bind, serf_rpc, advertise) = self.check_serf(site);
        self.check_transmission(site);
        self.check_nat(site);
        self.check_time(site);
        self.check_transfer(site);
        self.check_agent_limits(site);
        self.check_health_check(site);
        self.check_apply_window(site);
        self.check_signing_policy(site);
        self.check_serve_user(site);
        self.check_paths(site);
        let bind_port = serf_bind.map_or(7946, |a| a.port());
        let rpc_port = serf_rpc.map_or(7373, |a| a.port());
        self.check_ports(site, bind_port, rpc_port);
        Checked {
            serf_bind: serf_bind.unwrap_or_else(|| default_addr(&defaults.serf.bind)),
            serf_rpc: serf_rpc.unwrap_or_else(|| default_addr(&defaults.serf.rpc_addr)),
            advertise,
        }
    }

    /// `[serf]`: its addresses (the bind and RPC ones come back for the port checks), peers,
    /// tags and event size.
    fn check_serf(
        &self,
        site: &SiteToml,
    ) -> (Option<SocketAddr>, Option<SocketAddr>, Option<IpAddr>) {
        let serf = &site.serf;
        let serf_bind = self.socket_addr("serf.bind", &serf.bind);
        let serf_rpc = self.socket_addr("serf.rpc_addr", &serf.rpc_addr);
        if serf_rpc.is_some_and(|rpc| !rpc.ip().is_loopback()) {
            self.fail(
                "serf.rpc_addr",
                quoted(&serf.rpc_addr),
                "must be a loopback address such as 127.0.0.1:7373: Serf's RPC is unencrypted",
            );
        }
        let advertise = match &serf.advertise {
            None => None,
            Some(text) => match text.parse::<IpAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    self.fail("serf.advertise", quoted(text), "expected an IP address");
                    None
                }
            },
        };
        for peer in &serf.join {
            self.host_port("serf.join", peer, false);
        }
        for tag in serf.tags.keys() {
            if tag.starts_with(RESERVED_TAG_PREFIX) {
                self.fail_entry(
                    "serf.tags",
                    tag,
                    format!("tags starting with `{RESERVED_TAG_PREFIX}` are set by p2pu itself"),
                );
            } else if tag.is_empty()
                || !tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                self.fail_entry(
                    "serf.tags",
                    tag,
                    "tag names use letters, digits, `-` and `_`",
                );
            }
        }
        // Serf refuses tags whose encoding passes 512 bytes (memberlist's meta limit), and
        // p2pu sets its own beside the operator's, the advertised rate after start
        // (`serf tags -set`): counted at their longest, so setting it never fails later.
        let tags_size = TAGS_HEADER
            + serf
                .tags
                .iter()
                .map(|(k, v)| k.len() + v.len() + PER_TAG)
                .sum::<usize>();
        if tags_size > SERF_TAGS_MAX - P2PU_TAGS_MAX {
            self.fail(
                "serf.tags",
                format!("{} tags", serf.tags.len()),
                format!(
                    "Serf holds {SERF_TAGS_MAX} bytes of tags and p2pu's own take up to {P2PU_TAGS_MAX}: these take about {tags_size}"
                ),
            );
        }
        if !(512..=9216).contains(&serf.user_event_size_limit) {
            self.fail(
                "serf.user_event_size_limit",
                serf.user_event_size_limit,
                "Serf accepts 512 to 9216",
            );
        }
        (serf_bind, serf_rpc, advertise)
    }

    /// `[transmission]`: the RPC user and password, the daemon's user, and `extra` keys that
    /// p2pu manages itself.
    fn check_transmission(&self, site: &SiteToml) {
        let tr = &site.transmission;
        if tr.rpc_user.is_empty() || tr.rpc_user.contains(':') {
            self.fail(
                "transmission.rpc_user",
                quoted(&tr.rpc_user),
                "must be non-empty and contain no `:`",
            );
        }
        if tr.rpc_password.as_deref() == Some("") {
            self.fail(
                "transmission.rpc_password",
                "\"\"",
                "must not be empty; leave it out to generate a secret",
            );
        }
        if tr.user.is_empty() {
            self.fail(
                "transmission.user",
                "\"\"",
                "must name the daemon's system user",
            );
        }
        for key in tr.extra.keys() {
            if let Some(owner) = managed_setting(key) {
                self.fail_entry(
                    "transmission.extra",
                    key,
                    format!("settings.json key `{key}` is managed by p2pu; set {owner} instead"),
                );
            }
        }
    }

    /// `[nat]`: the proxy it needs when enabled, and timers that keep UDP mappings alive.
    fn check_nat(&self, site: &SiteToml) {
        let nat = &site.nat;
        if nat.enabled && nat.proxy.is_none() {
            self.fail(
                "nat.enabled",
                "true",
                "needs nat.proxy (host:port of the rendezvous)",
            );
        }
        if let Some(proxy) = &nat.proxy {
            self.host_port("nat.proxy", proxy, true);
        }
        if let Some(server) = &nat.stun_server {
            self.host_port("nat.stun_server", server, true);
        }
        if nat.peer_expiry_secs < 2 * nat.keepalive_secs {
            self.fail(
                "nat.peer_expiry_secs",
                nat.peer_expiry_secs,
                "use at least twice nat.keepalive_secs: peers ping once per keepalive",
            );
        }
        if nat.relay_rate_kbps == 0 {
            self.fail(
                "nat.relay_rate_kbps",
                0,
                "must be positive: relayed sessions would carry no bytes",
            );
        }
        if !(5..30).contains(&nat.keepalive_secs) {
            self.fail(
                "nat.keepalive_secs",
                nat.keepalive_secs,
                "use 5 to 29: routers drop idle UDP mappings after 30 s",
            );
        }
    }

    /// `[time]`: NTP servers are host names or addresses.
    /// `[transfer]`: the stripes' shape.
    fn check_transfer(&self, site: &SiteToml) {
        use super::site::TransferSection as T;
        let transfer = &site.transfer;
        if !(1..=T::MAX_STRIPES).contains(&transfer.stripes) {
            self.fail(
                "transfer.stripes",
                transfer.stripes,
                format!("expected 1 to {}", T::MAX_STRIPES),
            );
        }
        if !(2..=T::MAX_FAN_OUT).contains(&transfer.fan_out) {
            self.fail(
                "transfer.fan_out",
                transfer.fan_out,
                format!(
                    "expected 2 to {} (each member's seed server holds that many streams of a stripe)",
                    T::MAX_FAN_OUT
                ),
            );
        }
    }

    fn check_time(&self, site: &SiteToml) {
        for (key, servers) in [
            ("time.ntp", &site.time.ntp),
            ("time.fallback_ntp", &site.time.fallback_ntp),
        ] {
            for server in servers {
                if host(server).is_err() {
                    self.fail(
                        key,
                        quoted(server),
                        "expected a host name or IP address such as ntp.example.org or 10.0.0.1",
                    );
                }
            }
        }
    }

    /// Puppet's timeout and the agent's limits: catch-up, heartbeat window, payload cap, fetch
    /// rate floor and windows, retries and their backoff.
    fn check_agent_limits(&self, site: &SiteToml) {
        if site.puppet.timeout_secs == 0 {
            self.fail(
                "puppet.timeout_secs",
                0,
                "must be at least 1: every `puppet apply` would be killed at once",
            );
        }
        if site.agent.catch_up_secs == 0 {
            self.fail("agent.catch_up_secs", 0, "must be at least 1");
        }
        let (window, interval) = (
            site.agent.heartbeat_window_secs,
            site.agent.heartbeat_interval_secs,
        );
        if window != 0 && interval != 0 && window <= interval {
            self.fail(
                "agent.heartbeat_window_secs",
                window,
                format!(
                    "use more than agent.heartbeat_interval_secs ({interval}), say 3 times it: \
                     every node would go stale between two heartbeats"
                ),
            );
        }
        if site.agent.max_payload_bytes == 0 {
            self.fail(
                "agent.max_payload_bytes",
                0,
                "must be positive: every update would be refused",
            );
        }
        if site.agent.fetch_min_rate_bytes_per_sec < 1024 {
            self.fail(
                "agent.fetch_min_rate_bytes_per_sec",
                site.agent.fetch_min_rate_bytes_per_sec,
                "use at least 1024: a slower floor lets a trickling member hold an update for days",
            );
        }
        if !(5..=600).contains(&site.agent.fetch_rate_window_secs) {
            self.fail(
                "agent.fetch_rate_window_secs",
                site.agent.fetch_rate_window_secs,
                "use 5 to 600: shorter windows punish a brief stall, longer ones let a trickle last",
            );
        }
        if !(60..=7 * 86_400).contains(&site.agent.fetch_slack_secs) {
            self.fail(
                "agent.fetch_slack_secs",
                site.agent.fetch_slack_secs,
                "use 60 to 604800: finding peers takes a minute or more",
            );
        }
        if site.agent.retries > 100 {
            self.fail(
                "agent.retries",
                site.agent.retries,
                "use 0 to 100: a failure that 100 retries did not cure needs the operator",
            );
        }
        if !(1..=86_400).contains(&site.agent.retry_backoff_secs) {
            self.fail(
                "agent.retry_backoff_secs",
                site.agent.retry_backoff_secs,
                "use 1 to 86400",
            );
        }
        if site.agent.retry_backoff_max_secs < site.agent.retry_backoff_secs
            || site.agent.retry_backoff_max_secs > 7 * 86_400
        {
            self.fail(
                "agent.retry_backoff_max_secs",
                site.agent.retry_backoff_max_secs,
                "use agent.retry_backoff_secs to 604800: the cap of the doubling wait",
            );
        }
    }

    /// `agent.serve_user`: the unprivileged user the network-facing servers run as.
    fn check_serve_user(&self, site: &SiteToml) {
        let user = site.agent.serve_user.as_str();
        if user == "root" {
            self.fail(
                "agent.serve_user",
                quoted(user),
                "must be an unprivileged user: the tracker and web seed server face the network",
            );
        } else if !is_user_name(user) {
            self.fail(
                "agent.serve_user",
                quoted(user),
                "expected a system user name: 1 to 32 of `a-z`, `0-9`, `_`, `-`, not starting with a digit or `-`",
            );
        }
    }

    /// The health check runs as root with no shell: its program must be named absolutely (a
    /// bare name would be looked up in whatever PATH the agent was started with).
    fn check_health_check(&self, site: &SiteToml) {
        let agent = &site.agent;
        if let Some(program) = agent.health_check.first() {
            if !Path::new(program).is_absolute() {
                self.fail(
                    "agent.health_check",
                    quoted(program),
                    "the first word must be the check program's absolute path, such as \
                     /usr/local/bin/check (it runs as root, without a shell)",
                );
            }
        }
        if let Some(arg) = agent.health_check.iter().find(|a| a.contains('\0')) {
            self.fail(
                "agent.health_check",
                quoted(arg),
                "an argument cannot contain a NUL character",
            );
        }
        if let Some(program) = agent.veto_command.first() {
            if !Path::new(program).is_absolute() {
                self.fail(
                    "agent.veto_command",
                    quoted(program),
                    "the first word must be the command's absolute path, such as \
                     /usr/local/bin/may-update (it runs as root, without a shell)",
                );
            }
        }
        if !(1..=3_600).contains(&agent.health_check_timeout_secs) {
            self.fail(
                "agent.health_check_timeout_secs",
                agent.health_check_timeout_secs,
                "use 1 to 3600: a longer check would hold every later update",
            );
        }
    }

    /// Maintenance windows: one that does not parse would hold every update for good.
    fn check_apply_window(&self, site: &SiteToml) {
        use crate::formats::window::{Window, WindowError, MAX_WINDOWS};
        let windows = &site.agent.apply_window;
        if windows.len() > MAX_WINDOWS {
            let count = windows.len();
            self.fail(
                "agent.apply_window",
                format!("[{count} windows]"),
                format!("at most {MAX_WINDOWS}"),
            );
        }
        for text in windows {
            if let Err(WindowError::Bad { why, .. }) = Window::parse(text) {
                self.fail(
                    "agent.apply_window",
                    quoted(text),
                    format!(
                        "{why}; write DAYS HH:MM-HH:MM in local time, such as \"Mon-Fri \
                         02:00-04:00\", \"Sat,Sun 00:00-06:00\" or \"daily 22:30-01:00\""
                    ),
                );
            }
        }
    }

    /// Fleet id, announcement lifetime and thresholds: a k no announcement can carry would
    /// hold every update of its names for good.
    fn check_signing_policy(&self, site: &SiteToml) {
        use crate::formats::announcement::{FleetId, MAX_SIGS};
        let agent = &site.agent;
        if let Some(id) = &agent.fleet_id {
            if id.parse::<FleetId>().is_err() {
                self.fail(
                    "agent.fleet_id",
                    quoted(id),
                    "expected 16 lowercase hexadecimal digits (leave it out and init generates agent.fleet_id_file)",
                );
            }
        }
        if !(1..=36_500).contains(&agent.announcement_ttl_days) {
            self.fail(
                "agent.announcement_ttl_days",
                agent.announcement_ttl_days,
                "use 1 to 36500",
            );
        }
        let most = u32::try_from(MAX_SIGS).unwrap_or(u32::MAX);
        let reason = format!("use 1 to {most}: an announcement carries at most {most} signatures");
        for (key, k) in [
            ("agent.threshold", agent.threshold),
            ("agent.key_threshold", agent.key_threshold),
        ] {
            if !(1..=most).contains(&k) {
                self.fail(key, k, reason.clone());
            }
        }
        for rule in &agent.thresholds {
            if !(1..=most).contains(&rule.k) {
                self.fail("agent.thresholds.k", rule.k, reason.clone());
            }
            if rule.names.is_empty() {
                self.fail("agent.thresholds.names", "\"\"", "must not be empty");
            }
        }
    }

    fn check_paths(&self, site: &SiteToml) {
        let paths: [(&str, &PathBuf); 20] = [
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
            ("agent.update_lock", &site.agent.update_lock),
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
            )
            .chain(
                site.agent
                    .fleet_id_file
                    .iter()
                    .map(|p| ("agent.fleet_id_file", p)),
            );
        for (key, path) in paths.into_iter().chain(modulepath) {
            if !path.is_absolute() {
                self.fail(
                    key,
                    quoted(&path.display().to_string()),
                    "must be an absolute path",
                );
            } else if path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                self.fail(
                    key,
                    quoted(&path.display().to_string()),
                    "must not contain `..`",
                );
            }
        }
    }

    /// Two services on one port: the error goes on the key the operator wrote (a default
    /// they never saw is not theirs to fix), and names the other key and its value.
    fn check_ports(&self, site: &SiteToml, bind: u16, rpc: u16) {
        let nat_used = site.nat.enabled || site.node.role == super::Role::Proxy;
        let ports = [
            ("serf.bind", bind, true),
            ("serf.rpc_addr", rpc, true),
            ("transmission.rpc_port", site.transmission.rpc_port, true),
            ("transmission.peer_port", site.transmission.peer_port, true),
            ("agent.tracker_port", site.agent.tracker_port, true),
            ("agent.seed_port", site.agent.seed_port, true),
            ("nat.port", site.nat.port, nat_used),
        ];
        let written = |key: &str| self.line_of(&key.split('.').collect::<Vec<_>>()).is_some();
        // serf.bind and rpc_addr take an address too: their value is shown as written.
        let shown = |key: &str, port: u16| match key {
            "serf.bind" => quoted(&site.serf.bind),
            "serf.rpc_addr" => quoted(&site.serf.rpc_addr),
            _ => port.to_string(),
        };
        for (i, &(key, port, used)) in ports.iter().enumerate() {
            if port == 0 {
                self.fail(
                    key,
                    shown(key, port),
                    "port 0 is not a usable port; use 1 to 65535",
                );
                continue;
            }
            if !used {
                continue;
            }
            let Some(&(other, _, _)) = ports[..i].iter().find(|&&(_, p, used)| used && p == port)
            else {
                continue;
            };
            // Blame the later key unless only the earlier one was written by the operator.
            let (blamed, kept) = if written(other) && !written(key) {
                (other, key)
            } else {
                (key, other)
            };
            let default = if written(kept) { "" } else { " (its default)" };
            self.fail(
                blamed,
                shown(blamed, port),
                format!(
                    "port {port} is already used by {kept}{default}; give one of them another port"
                ),
            );
        }
    }

    /// Checks a node name whether it came from the config or the hostname.
    pub fn node_name(&self, name: &str, from_hostname: bool) {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if ok {
            return;
        }
        let reason = if from_hostname {
            "the machine's hostname is not a usable node name: set node.name to 1 to 64 letters, digits, `-`, `_` or `.`"
        } else {
            "use 1 to 64 letters, digits, `-`, `_` or `.`"
        };
        self.fail("node.name", quoted(name), reason);
    }
}

fn default_addr(text: &str) -> SocketAddr {
    text.parse()
        .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
}

/// `host[:port]`: an IPv4 address, an IPv6 address (bracketed with a port), or a DNS name.
fn host_port(value: &str, port_required: bool) -> Result<(), String> {
    if value.parse::<SocketAddr>().is_ok_and(|a| a.port() != 0) {
        return Ok(());
    }
    if !port_required && value.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let (name, port) = match value.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name, Some(port)),
        Some(_) => return Err("an IPv6 address with a port is written [address]:port".into()),
        None => (value, None),
    };
    match port {
        None if port_required => return Err("the port is missing".into()),
        None => {}
        Some(port) => match port.parse::<u16>() {
            Ok(p) if p != 0 => {}
            _ => return Err(format!("port `{port}` is not from 1 to 65535")),
        },
    }
    host(name)
}

/// A host name or IP address; digits and dots alone must form a real IPv4 address, so
/// `10.0.0.300` is an error, not a DNS name.
fn host(name: &str) -> Result<(), String> {
    if name.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "`{name}` is not an IPv4 address (four numbers from 0 to 255)"
        ));
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "`{name}` is neither an IP address nor a host name (letters, digits, `-` and `_`, dot-separated)"
        ));
    }
    Ok(())
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

/// `{ key = value }`.
fn nest(key: &str, value: toml::Value) -> toml::Table {
    toml::Table::from_iter([(key.to_string(), value)])
}

/// serde's words for a key it could not take (`invalid type: integer `5`, expected struct
/// NodeSection`, `unknown field `rpc_prot`, expected one of ...`) in an operator's words: what
/// was expected, what was found, and for an unknown key the known one it is closest to.
pub(super) fn plain(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let Some((key, known)) = rest.split_once('`') else {
            return message.to_string();
        };
        let known: Vec<&str> = known
            .trim_start_matches(", expected one of ")
            .trim_start_matches(", expected ")
            .split(", ")
            .map(|k| k.trim_matches('`'))
            .filter(|k| !k.is_empty() && !k.starts_with("there are no"))
            .collect();
        let hint = closest(key, &known)
            .map(|k| format!("; did you mean `{k}`?"))
            .unwrap_or_default();
        let list = if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        };
        return format!("unknown key `{key}`{hint} (known here: {list})");
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            if let Some((found, expected)) = rest.split_once(", expected ") {
                return format!(
                    "expected {}, found {}",
                    expected_words(expected),
                    found_words(found)
                );
            }
        }
    }
    message.to_string()
}

fn expected_words(expected: &str) -> String {
    match expected {
        // Every u16 in site.toml is a port.
        "u16" => "a port number from 1 to 65535".into(),
        "u8" => "a whole number from 0 to 255".into(),
        "u32" => "a whole number from 0 to 4294967295".into(),
        "u64" | "usize" => "a whole number, 0 or more".into(),
        "i64" | "i32" => "a whole number".into(),
        "a sequence" => "a list, such as [\"a\", \"b\"]".into(),
        "a boolean" => "true or false".into(),
        "a string" => "a quoted string".into(),
        "a map" => "a table of keys".into(),
        other if other.starts_with("struct ") => "a table of keys (a [section])".into(),
        other => other.to_string(),
    }
}

fn found_words(found: &str) -> String {
    let value = |prefix: &str| {
        found
            .strip_prefix(prefix)
            .map(|v| v.trim_matches('`').to_string())
    };
    if let Some(v) = value("integer ").or_else(|| value("floating point ")) {
        return format!("the number {v}");
    }
    if let Some(v) = value("string ") {
        return format!("the string {v}");
    }
    if let Some(v) = value("boolean ") {
        return v;
    }
    match found {
        "sequence" => "a list".into(),
        "map" => "a table".into(),
        other => other.to_string(),
    }
}

/// The entry of `known` within a few edits of `key` (a typo), the closest first.
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let limit = (key.chars().count() / 3).clamp(1, 3);
    known
        .iter()
        .map(|k| (edits(key, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, with a swap of two neighbours counted as one edit.
fn edits(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

fn quoted(value: &str) -> String {
    format!("{value:?}")
}
