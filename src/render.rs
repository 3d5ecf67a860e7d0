//! Renders a node's engine configs, handler and units from the tera templates in `templates/`
//! (compiled in; an operator may point `--templates` at a copy to override any of them).

use crate::config::{Config, Role};
use crate::error::{Error, Result};
use crate::formats::serf_names::{QUERIES, TAG_PEER_PORT, TAG_ROLE, TAG_SEED_PORT};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Every template p2pu ships, by name, with its compiled-in text.
const BUILTIN: &[(&str, &str)] = &[
    (
        "transmission/settings.json",
        include_str!("../templates/transmission/settings.json"),
    ),
    (
        "serf/p2pu.json",
        include_str!("../templates/serf/p2pu.json"),
    ),
    (
        "serf/handler.sh",
        include_str!("../templates/serf/handler.sh"),
    ),
    (
        "systemd/p2pu-agent.service",
        include_str!("../templates/systemd/p2pu-agent.service"),
    ),
    (
        "systemd/p2pu-nat-client.service",
        include_str!("../templates/systemd/p2pu-nat-client.service"),
    ),
    (
        "systemd/p2pu-proxy.service",
        include_str!("../templates/systemd/p2pu-proxy.service"),
    ),
    (
        "systemd/p2pu-heartbeat.timer",
        include_str!("../templates/systemd/p2pu-heartbeat.timer"),
    ),
    (
        "systemd/p2pu-heartbeat.service",
        include_str!("../templates/systemd/p2pu-heartbeat.service"),
    ),
    (
        "systemd/p2pu-firstboot.service",
        include_str!("../templates/systemd/p2pu-firstboot.service"),
    ),
    (
        "systemd/serf-p2pu.conf",
        include_str!("../templates/systemd/serf-p2pu.conf"),
    ),
    (
        "systemd/transmission-p2pu.conf",
        include_str!("../templates/systemd/transmission-p2pu.conf"),
    ),
    (
        "timesyncd/p2pu.conf",
        include_str!("../templates/timesyncd/p2pu.conf"),
    ),
];

pub struct Templates {
    tera: tera::Tera,
}

impl Templates {
    /// The compiled-in templates, each replaced by `dir/<name>` where that file exists.
    pub fn load(dir: Option<&Path>) -> Result<Templates> {
        let mut tera = tera::Tera::default();
        tera.autoescape_on(Vec::new());
        for (name, builtin) in BUILTIN {
            let text = match dir.map(|d| d.join(name)).filter(|p| p.exists()) {
                Some(path) => {
                    std::fs::read_to_string(&path).map_err(Error::io("reading template", &path))?
                }
                None => (*builtin).to_string(),
            };
            tera.add_raw_template(name, &text)
                .map_err(|source| Error::TemplateRender {
                    template: name.to_string(),
                    source,
                })?;
        }
        Ok(Templates { tera })
    }

    fn render(&self, name: &str, context: &tera::Context) -> Result<Vec<u8>> {
        let text = self
            .tera
            .render(name, context)
            .map_err(|source| Error::TemplateRender {
                template: name.to_string(),
                source,
            })?;
        if name.ends_with(".json") {
            // A broken override must fail here, not in the daemon at its next start.
            serde_json::from_str::<Value>(&text).map_err(|e| Error::TemplateRender {
                template: name.to_string(),
                source: tera::Error::msg(format!("rendered text is not valid JSON: {e}")),
            })?;
        }
        Ok(text.into_bytes())
    }
}

/// Secrets the rendered files embed (read from, or generated into, their 0600 files).
#[derive(Debug, Clone)]
pub struct Secrets {
    pub transmission_rpc_password: String,
    pub serf_rpc_auth: String,
}

impl Secrets {
    pub fn all(&self) -> [&str; 2] {
        [&self.transmission_rpc_password, &self.serf_rpc_auth]
    }
}

/// Facts about this install that are not in site.toml.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Where the p2pu binary is on the target system.
    pub binary: PathBuf,
    /// Where site.toml is on the target system.
    pub installed_config: PathBuf,
}

/// How `init` decides whether a file on disk already says what it should.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    Bytes,
    /// Transmission rewrites settings.json on exit (its own layout, the password salted and
    /// hashed), so compare the keys p2pu sets, by value.
    TransmissionSettings,
}

/// What p2pu wants at one path on the target system.
#[derive(Debug, Clone)]
pub struct ManagedFile {
    pub path: PathBuf,
    /// `None`: the file must not exist (a unit of a feature that is switched off).
    pub contents: Option<Vec<u8>>,
    pub mode: u32,
    /// System user that owns it; `None` for root.
    pub owner: Option<String>,
    pub compare: Compare,
    /// Services to restart when it changes.
    pub restarts: Vec<String>,
    /// The service rewrites this file when it stops: stop it before writing.
    pub stop_before_write: bool,
    pub template: &'static str,
}

/// p2pu's own units, and whether this node runs each. The heartbeat timer runs on the host
/// that signs heartbeats: `agent.heartbeat_interval_secs` set, whatever the node's role (the
/// signer may be a plain node or the proxy).
pub fn own_units(config: &Config, first_boot: bool) -> Vec<(&'static str, bool)> {
    vec![
        ("p2pu-agent.service", true),
        ("p2pu-nat-client.service", config.site.nat.enabled),
        ("p2pu-proxy.service", config.site.node.role == Role::Proxy),
        (
            "p2pu-heartbeat.timer",
            config.site.agent.heartbeat_interval_secs > 0,
        ),
        ("p2pu-firstboot.service", first_boot),
    ]
}

/// Renders every file of the node. `first_boot` adds the first-boot unit (image builds).
pub fn render_node(
    config: &Config,
    secrets: &Secrets,
    options: &RenderOptions,
    templates: &Templates,
    first_boot: bool,
) -> Result<Vec<ManagedFile>> {
    let context = context(config, secrets, options)?;
    let site = &config.site;
    let file = |template: &'static str,
                path: PathBuf,
                mode: u32,
                restarts: &[&str]|
     -> Result<ManagedFile> {
        Ok(ManagedFile {
            path,
            contents: Some(templates.render(template, &context)?),
            mode,
            owner: None,
            compare: Compare::Bytes,
            restarts: restarts.iter().map(|s| s.to_string()).collect(),
            stop_before_write: false,
            template,
        })
    };
    let systemd = site.paths.systemd_dir.as_path();
    let mut files = vec![
        ManagedFile {
            owner: Some(site.transmission.user.clone()),
            compare: Compare::TransmissionSettings,
            stop_before_write: true,
            ..file(
                "transmission/settings.json",
                site.transmission.settings_file.clone(),
                0o600,
                &["transmission-daemon.service"],
            )?
        },
        file(
            "serf/p2pu.json",
            site.serf.config_file.clone(),
            0o600,
            &["serf.service"],
        )?,
        file(
            "serf/handler.sh",
            site.serf.event_handler.clone(),
            0o755,
            &[],
        )?,
        file(
            "systemd/serf-p2pu.conf",
            systemd.join("serf.service.d/p2pu.conf"),
            0o644,
            &["serf.service"],
        )?,
        file(
            "systemd/transmission-p2pu.conf",
            systemd.join("transmission-daemon.service.d/p2pu.conf"),
            0o644,
            &["transmission-daemon.service"],
        )?,
    ];
    for (unit, wanted) in own_units(config, first_boot) {
        let template = BUILTIN
            .iter()
            .map(|(name, _)| *name)
            .find(|name| name.strip_prefix("systemd/") == Some(unit))
            .ok_or_else(|| Error::Internal(format!("no template for {unit}")))?;
        // The first-boot unit runs once at boot; restarting it from init would recurse.
        let restarts: &[&str] = if unit == "p2pu-firstboot.service" {
            &[]
        } else {
            &[unit]
        };
        let mut managed = file(template, systemd.join(unit), 0o644, restarts)?;
        if !wanted {
            managed.contents = None;
        }
        files.push(managed);
    }
    // The timer's service: started by the timer only, never by init.
    let mut heartbeat = file(
        "systemd/p2pu-heartbeat.service",
        systemd.join("p2pu-heartbeat.service"),
        0o644,
        &[],
    )?;
    if site.agent.heartbeat_interval_secs == 0 {
        heartbeat.contents = None;
    }
    files.push(heartbeat);
    let mut timesyncd = file(
        "timesyncd/p2pu.conf",
        site.paths.timesyncd_dir.join("p2pu.conf"),
        0o644,
        &["systemd-timesyncd.service"],
    )?;
    if site.time.ntp.is_empty() {
        timesyncd.contents = None;
    }
    files.push(timesyncd);
    Ok(files)
}

fn context(config: &Config, secrets: &Secrets, options: &RenderOptions) -> Result<tera::Context> {
    let site = &config.site;
    let mut tags: serde_json::Map<String, Value> = site
        .serf
        .tags
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let role = match site.node.role {
        Role::Node => "node",
        Role::Proxy => "proxy",
    };
    tags.insert(TAG_ROLE.into(), json!(role));
    tags.insert(
        TAG_PEER_PORT.into(),
        json!(site.transmission.peer_port.to_string()),
    );
    tags.insert(
        TAG_SEED_PORT.into(),
        json!(site.agent.seed_port.to_string()),
    );
    // Every user event: the handler spools p2pu's own and the prototype's (for migration)
    // and ignores the rest. Every member-join: the agent asks the fleet for what this node
    // missed while its Serf was down or (re)joining (Serf drops older events then).
    let handler_spec = ["user", "member-join"]
        .into_iter()
        .map(str::to_string)
        .chain(QUERIES.iter().map(|q| format!("query:{q}")))
        .collect::<Vec<_>>()
        .join(",")
        + "="
        + &site.serf.event_handler.display().to_string();
    let mut value = serde_json::to_value(site).map_err(|e| Error::Internal(e.to_string()))?;
    let serf = value
        .get_mut("serf")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| Error::Internal("serf section missing from context".into()))?;
    // With no port Serf advertises 7946 whatever it binds, and answers to queries (sent to
    // the advertised address) would go astray.
    let advertise = config
        .advertise
        .map(|ip| std::net::SocketAddr::new(ip, config.serf_bind.port()).to_string());
    serf.insert("advertise_addr".into(), json!(advertise));
    serf.insert("rpc_auth".into(), json!(secrets.serf_rpc_auth));
    serf.insert("all_tags".into(), Value::Object(tags));
    serf.insert("handler_spec".into(), json!(handler_spec));
    let keyring_dir = site.serf.keyring_file.parent().unwrap_or(Path::new("/"));
    serf.insert("keyring_dir".into(), json!(keyring_dir));
    serf.insert("snapshot_path".into(), json!(serf_snapshot_file(config)));
    value["transmission"]["rpc_password"] = json!(secrets.transmission_rpc_password);
    value["transmission"]["encryption_setting"] = json!(site.transmission.encryption.setting());
    value["node"]["name"] = json!(config.node_name);
    value["source"] = json!(options.installed_config);
    value["binary"] = json!(options.binary);
    value["first_boot_marker"] = json!(first_boot_marker(config));
    value["config_digest"] = json!(digest(config));
    tera::Context::from_value(value).map_err(|source| Error::TemplateRender {
        template: "(context)".into(),
        source,
    })
}

/// Serf's snapshot: where it keeps its Lamport clocks and the members it last saw alive. A
/// restarted Serf without one starts its event clock over and knows nobody until a member
/// reconnects to it (up to `reconnect_interval`, or 30 s for the state exchange): every event
/// it sends meanwhile carries a Lamport time below the minimum of each member that (re)joined
/// since, which drops it for good, re-sends included (tests/converge.rs,
/// `an_update_sent_from_a_node_whose_serf_just_restarted_reaches_a_node_that_rejoined_before`).
/// With one it takes up its clock where it left off and rejoins a member it last saw at once.
/// Beneath the agent's state dir (root's), in a 0700 directory `p2pu init` makes: the file
/// lists the members' names and addresses.
pub fn serf_snapshot_file(config: &Config) -> PathBuf {
    config.site.agent.state_dir.join("serf").join("snapshot")
}

/// The file that arms the first-boot unit in an image.
pub fn first_boot_marker(config: &Config) -> PathBuf {
    config.site.paths.config_dir.join(".first-boot")
}

/// A short digest of everything the agent reads from the config.
fn digest(config: &Config) -> String {
    let mut hasher = Sha256::new();
    hasher.update(format!(
        "{:?}{:?}{:?}",
        config.site, config.node_name, config.advertise
    ));
    hex::encode(&hasher.finalize()[..8])
}
