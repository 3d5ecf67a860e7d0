//! The shape of `site.toml` as an operator writes it: every section, key and default.
//! Unknown keys are errors (`deny_unknown_fields`) so a typo never silently means "default".

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SiteToml {
    pub node: NodeSection,
    pub serf: SerfSection,
    pub transmission: TransmissionSection,
    pub puppet: PuppetSection,
    pub agent: AgentSection,
    pub nat: NatSection,
    pub time: TimeSection,
    pub paths: PathsSection,
    pub transfer: TransferSection,
}

/// How a large payload moves between members (docs/DESIGN.md sections 5 and 5.1).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TransferSection {
    pub mode: TransferMode,
    /// In stripes mode, how many stripes `submit` deals a payload's blocks into (`d`).
    pub stripes: usize,
    /// In stripes mode, how many children an interior member feeds (`k`); each node's seed
    /// server is sized for it.
    pub fan_out: usize,
}

impl TransferSection {
    /// `topology::Params::DEFAULT`'s (a test in `publish` holds them equal).
    pub const DEFAULT_STRIPES: usize = 8;
    pub const DEFAULT_FAN_OUT: usize = 8;
    /// The most stripes a roster holds (`formats::roster::MAX_STRIPES`).
    pub const MAX_STRIPES: usize = 64;
    /// The most children a member feeds: every member's seed server holds that many streams
    /// of a stripe (and workers for them) whatever the roster of a payload says.
    pub const MAX_FAN_OUT: usize = 32;
}

impl Default for TransferSection {
    fn default() -> TransferSection {
        TransferSection {
            mode: TransferMode::default(),
            stripes: TransferSection::DEFAULT_STRIPES,
            fan_out: TransferSection::DEFAULT_FAN_OUT,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TransferMode {
    /// The relay chain (section 5): what every node does today.
    #[default]
    Chain,
    /// Stripes over trees (section 5.1, stage 3, partly built): `submit` binds the block
    /// tree and the roster into the info dict; nodes fetch payloads above `DIRECT_MAX` by
    /// stripes, the chain taking over when that cannot finish.
    Stripes,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// An ordinary fleet member: serf, transmission, the agent.
    #[default]
    Node,
    /// A fleet member that also runs the NAT rendezvous (`p2pu proxy`).
    Proxy,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// Node name; default: the machine's hostname.
    pub name: Option<String>,
    pub role: Role,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SerfSection {
    pub bind: String,
    /// Address other members reach this node on; default: the address of the default route.
    pub advertise: Option<String>,
    pub join: Vec<String>,
    pub encrypt: bool,
    pub keyring_file: PathBuf,
    pub rpc_addr: String,
    pub rpc_auth_file: PathBuf,
    pub tags: BTreeMap<String, String>,
    pub event_handler: PathBuf,
    pub config_file: PathBuf,
    pub user_event_size_limit: u32,
}

impl Default for SerfSection {
    fn default() -> Self {
        SerfSection {
            bind: "0.0.0.0:7946".into(),
            advertise: None,
            join: Vec::new(),
            encrypt: true,
            keyring_file: "/etc/p2pu/serf.keyring".into(),
            rpc_addr: "127.0.0.1:7373".into(),
            rpc_auth_file: "/etc/p2pu/serf-rpc.secret".into(),
            tags: BTreeMap::new(),
            event_handler: "/etc/p2pu/serf-handler".into(),
            config_file: "/etc/serf/p2pu.json".into(),
            user_event_size_limit: 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TransmissionSection {
    pub rpc_port: u16,
    pub rpc_user: String,
    /// A fixed password; when absent a secret is generated into `rpc_password_file` (0600).
    pub rpc_password: Option<String>,
    pub rpc_password_file: PathBuf,
    pub peer_port: u16,
    pub download_dir: PathBuf,
    pub dht: bool,
    pub lpd: bool,
    pub pex: bool,
    pub utp: bool,
    /// Peer-wire encryption (BitTorrent's MSE/PE: obfuscation against a passive observer, not
    /// authentication; integrity comes from the signed hashes). Prefer-encrypted by default
    /// so a LAN observer does not read payloads off the wire. An earlier note said two 3.00
    /// daemons preferring encryption exchanged nothing; rechecked on 2026-11-29 with two
    /// Transmission 3.00 daemons in a network namespace (tracker peers, torrent file and
    /// magnet, both sides 1, both 2, and 0 against 1): every transfer completed. Forced to
    /// prefer-clear with `nat.enabled`: the NAT tunnel must read and edit the extension
    /// handshake (`nat::tunnel`), which it cannot in an encrypted stream
    /// (`tests/nat.rs::sendfile_across_cone_nats_is_applied_over_the_punched_path` fails).
    pub encryption: Encryption,
    pub settings_file: PathBuf,
    /// The system user the Debian daemon runs as; it owns settings.json and the download dir.
    pub user: String,
    /// Extra settings.json keys passed through as they are.
    pub extra: BTreeMap<String, toml::Value>,
}

impl Default for TransmissionSection {
    fn default() -> Self {
        TransmissionSection {
            rpc_port: 9091,
            rpc_user: "p2pu".into(),
            rpc_password: None,
            rpc_password_file: "/etc/p2pu/transmission-rpc.secret".into(),
            peer_port: 51413,
            download_dir: "/var/lib/p2pu/downloads".into(),
            dht: false,
            lpd: false,
            pex: true,
            utp: true,
            encryption: Encryption::PreferEncrypted,
            settings_file: "/etc/transmission-daemon/settings.json".into(),
            user: "debian-transmission".into(),
            extra: BTreeMap::new(),
        }
    }
}

/// Transmission's `encryption` setting.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Encryption {
    PreferClear,
    #[default]
    PreferEncrypted,
    Required,
}

impl Encryption {
    /// The number settings.json uses.
    pub fn setting(self) -> u8 {
        match self {
            Encryption::PreferClear => 0,
            Encryption::PreferEncrypted => 1,
            Encryption::Required => 2,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PuppetSection {
    pub modulepath: Vec<PathBuf>,
    pub apply_flags: Vec<String>,
    /// Keep Puppet's vardir, logdir, rundir, ssldir (and cache) under this directory instead
    /// of /var; for test fleets and read-only roots.
    pub state_root: Option<PathBuf>,
    /// A `puppet apply` running longer than this is killed and the update marked failed.
    pub timeout_secs: u32,
}

impl Default for PuppetSection {
    fn default() -> Self {
        PuppetSection {
            modulepath: vec!["/etc/puppet/code/modules".into()],
            apply_flags: Vec::new(),
            state_root: None,
            timeout_secs: 1800,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSection {
    pub spool_dir: PathBuf,
    pub state_dir: PathBuf,
    pub trusted_keys_dir: PathBuf,
    pub signing_key: PathBuf,
    pub archive_dir: PathBuf,
    pub accept_legacy: bool,
    /// Port of the agent's BitTorrent tracker on 127.0.0.1.
    pub tracker_port: u16,
    /// Port of the agent's web seed server on the node's fleet address (members only): it
    /// serves the payloads this node holds so downloads start at once (BEP 19).
    pub seed_port: u16,
    /// The user the tracker and the web seed server run as (a child process of the agent,
    /// which keeps root only to apply updates); `nobody` when this user does not exist.
    pub serve_user: String,
    /// Announcements of larger payloads are rejected before any download.
    pub max_payload_bytes: u64,
    /// Announcements whose seq lies further ahead of the local clock are held, not applied.
    pub max_future_secs: u64,
    /// How often the agent asks the fleet for announcements it missed.
    pub catch_up_secs: u64,
    /// The agent warns when it has heard of no update for this long (0: never).
    pub silence_warning_secs: u64,
    /// The least every download source (a member's seed server, a relay parent, the node that
    /// has the payload) must deliver, averaged over `fetch_rate_window_secs`; a slower one is
    /// left for the next. Also sets each fetch's deadline: the signed length at this rate,
    /// plus `fetch_slack_secs`, once over HTTP and once through Transmission.
    pub fetch_min_rate_bytes_per_sec: u64,
    pub fetch_rate_window_secs: u64,
    pub fetch_slack_secs: u64,
    /// A failed fetch or apply is tried this many more times before it counts as failed.
    pub retries: u32,
    /// The wait before the first retry; doubled before each further one ...
    pub retry_backoff_secs: u64,
    /// ... up to this.
    pub retry_backoff_max_secs: u64,
    /// This fleet's id (16 hex digits). Every v2 announcement names its fleet, and a node
    /// refuses another fleet's. When absent, it is read from `fleet_id_file`, which `init`
    /// generates once (a fleet-wide value: copy it to every node, as the gossip keyring).
    pub fleet_id: Option<String>,
    /// Default: `fleet.id` in `paths.config_dir`.
    pub fleet_id_file: Option<PathBuf>,
    /// How long an announcement `submit` signs stays valid; nodes refuse it afterwards.
    pub announcement_ttl_days: u32,
    /// Accept version 1 announcements (no expiry, no fleet): for the migration only.
    pub accept_v1: bool,
    /// How many distinct trusted keys must sign an update whose name no rule in
    /// `thresholds` matches.
    pub threshold: u32,
    /// How many must sign every `key` update (adding or revoking a key), whatever its name.
    pub key_threshold: u32,
    /// Per name glob (`*`, `?`): `[[agent.thresholds]]` with `names` and `k`; the first
    /// match wins.
    pub thresholds: Vec<ThresholdRule>,
    /// A node warns, and `p2pu status --check` fails, when it holds no verified heartbeat
    /// signed within this many seconds (0: heartbeats are not required). Set it on fleets
    /// whose submitting host runs the heartbeat timer, to a few times its interval.
    pub heartbeat_window_secs: u64,
    /// How often the heartbeat timer `init` renders runs `p2pu heartbeat` (0: no timer);
    /// set on the submitting host, which holds the signing key.
    pub heartbeat_interval_secs: u64,
    /// Run after every update is applied, as root, as this argument vector (no shell; the
    /// first word an absolute path), told the update in `P2PU_NAME`, `P2PU_SEQ` and
    /// `P2PU_KIND`; exit 0 passes. On failure the agent applies the name's last good version
    /// again and records `reverted`. Empty: no check.
    pub health_check: Vec<String>,
    /// A check running longer than this is killed (its whole process group) and has failed.
    pub health_check_timeout_secs: u64,
    /// Answer `p2pu logs` (any member may ask) with the whole kept output of an update, which
    /// can hold file diffs and secrets a manifest prints. Off: only the reason and the lines
    /// Puppet marks `Error:` or `Warning:` are shared.
    pub share_full_logs: bool,
    /// Maintenance windows, in the node's local time (`Mon-Fri 02:00-04:00`, several
    /// allowed): an update is downloaded at once and applied only inside one (`status` says
    /// `waiting for its window`). A rollout's own signed `submit --window` replaces these for
    /// that update. Empty: apply at once.
    pub apply_window: Vec<String>,
    /// An update lock: while anything is at this path, updates are downloaded but not
    /// applied (`status` shows the lock's holder, its first line, and its age). An application
    /// creates it before work that an update must not interrupt and removes it after. A
    /// rollout signed with `submit --force-locks` applies anyway.
    pub update_lock: PathBuf,
    /// Run as root (argument vector, no shell, the first word an absolute path) before each
    /// update is applied, told the update in `P2PU_NAME`, `P2PU_SEQ` and `P2PU_KIND`: a
    /// non-zero exit holds the update (asked again every 10 s), as the lock does. Empty: none.
    pub veto_command: Vec<String>,
}

/// One `[[agent.thresholds]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ThresholdRule {
    pub names: String,
    pub k: u32,
}

impl Default for AgentSection {
    fn default() -> Self {
        AgentSection {
            spool_dir: "/var/spool/p2pu".into(),
            state_dir: "/var/lib/p2pu".into(),
            trusted_keys_dir: "/etc/p2pu/trusted-keys".into(),
            signing_key: "/etc/p2pu/keys/signing.key".into(),
            archive_dir: "/var/lib/p2pu/archives".into(),
            accept_legacy: false,
            tracker_port: 6969,
            seed_port: 6880,
            serve_user: "p2pu".into(),
            max_payload_bytes: 8 << 30,
            max_future_secs: 86_400,
            catch_up_secs: 300,
            silence_warning_secs: 7 * 86_400,
            // 64 KiB/s over 30 s: a Raspberry Pi on a poor Wi-Fi link still passes, a member
            // trickling a byte every 15 s is left after one window; an 8 GiB payload gets
            // 36 h, a manifest the 15 min slack.
            fetch_min_rate_bytes_per_sec: 64 << 10,
            fetch_rate_window_secs: 30,
            fetch_slack_secs: 900,
            retries: 2,
            retry_backoff_secs: 30,
            retry_backoff_max_secs: 600,
            fleet_id: None,
            fleet_id_file: None,
            announcement_ttl_days: 30,
            accept_v1: false,
            threshold: 1,
            key_threshold: 1,
            thresholds: Vec::new(),
            heartbeat_window_secs: 0,
            heartbeat_interval_secs: 0,
            health_check: Vec::new(),
            health_check_timeout_secs: 60,
            apply_window: Vec::new(),
            update_lock: "/run/p2pu/update.lock".into(),
            veto_command: Vec::new(),
            share_full_logs: false,
        }
    }
}

impl SiteToml {
    /// Where the fleet id is kept when `agent.fleet_id` is not set.
    pub fn fleet_id_file(&self) -> PathBuf {
        self.agent
            .fleet_id_file
            .clone()
            .unwrap_or_else(|| self.paths.config_dir.join("fleet.id"))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NatSection {
    /// Run `p2pu nat-client` on this node.
    pub enabled: bool,
    /// The rendezvous proxy, `host:port`.
    pub proxy: Option<String>,
    /// UDP port `p2pu proxy` listens on, and `nat-client` binds.
    pub port: u16,
    pub keepalive_secs: u32,
    pub fleet_secret_file: PathBuf,
    /// This node's NAT identity key (Ed25519, generated by `p2pu init`): it signs the node's
    /// registrations, and the proxy binds the node's name to it.
    pub identity_key_file: PathBuf,
    /// Where `p2pu proxy` keeps which key each node name is bound to (`names.json`, which
    /// the operator may also write beforehand).
    pub proxy_state_dir: PathBuf,
    /// STUN server the client learns its mapped address from, `host:port`; default: the proxy.
    pub stun_server: Option<String>,
    /// The client's control socket for `p2pu event`.
    pub control_socket: PathBuf,
    /// A session peer not heard from for this long is dropped.
    pub peer_expiry_secs: u32,
    /// Cap on the bulk bytes the proxy relays for members whose NATs defeat hole punching.
    pub relay_rate_kbps: u32,
}

impl Default for NatSection {
    fn default() -> Self {
        NatSection {
            enabled: false,
            proxy: None,
            port: 3478,
            keepalive_secs: 20,
            fleet_secret_file: "/etc/p2pu/fleet.secret".into(),
            identity_key_file: "/etc/p2pu/nat-identity.key".into(),
            proxy_state_dir: "/var/lib/p2pu-proxy".into(),
            stun_server: None,
            control_socket: "/run/p2pu/control.sock".into(),
            peer_expiry_secs: 90,
            relay_rate_kbps: 2048,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TimeSection {
    /// NTP servers for systemd-timesyncd; empty leaves the system's choice alone.
    pub ntp: Vec<String>,
    pub fallback_ntp: Vec<String>,
}

/// Where p2pu's own and systemd's files go; change only for an unusual system layout.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PathsSection {
    pub config_dir: PathBuf,
    pub systemd_dir: PathBuf,
    pub timesyncd_dir: PathBuf,
}

impl Default for PathsSection {
    fn default() -> Self {
        PathsSection {
            config_dir: "/etc/p2pu".into(),
            systemd_dir: "/etc/systemd/system".into(),
            timesyncd_dir: "/etc/systemd/timesyncd.conf.d".into(),
        }
    }
}
