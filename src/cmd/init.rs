//! `p2pu init`: renders a node's engine configs, handler and units from one site.toml, then
//! (re)starts exactly what changed. Replaces the prototype's initialsetup.sh.

use crate::cmd::Outcome;
use crate::config::{Config, MachineFacts};
use crate::engines::systemd::Systemd;
use crate::error::{Error, Result};
use crate::provision::{self, Change, ManagedDir, Owners, PlannedChange, SecretStatus, Target};
use crate::render::{self, Compare, ManagedFile, RenderOptions, Templates};
use crate::Env;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Render and start every engine of this node from one site.toml.
///
/// Idempotent: a second run with the same config changes nothing and says so.
#[derive(Debug, clap::Args)]
pub struct Init {
    /// The site config.
    #[arg(long, env = "P2PU_CONFIG", default_value = "/etc/p2pu/site.toml")]
    config: PathBuf,
    /// Render into the root file system at DIR (an image build): enable units there with
    /// `systemctl --root`, start nothing, and leave node-specific values to the first boot.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Print a unified diff of every file that would change, and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Read templates from DIR where it has them (same names as p2pu's `templates/`).
    #[arg(long, env = "P2PU_TEMPLATES", value_name = "DIR")]
    templates: Option<PathBuf>,
    /// Path of the p2pu binary on the target system, as the units and handler run it.
    #[arg(long, env = "P2PU_BINARY", default_value = "/usr/bin/p2pu")]
    binary: PathBuf,
    /// Run by the first-boot unit: regenerate per-node secrets baked into the image.
    #[arg(long, conflicts_with = "root")]
    first_boot: bool,
    /// Write files and enable units, but restart no service.
    #[arg(long)]
    no_restart: bool,
    /// Write files only: enable, reload or restart nothing (a container, a test, or a
    /// system where something else manages the services).
    #[arg(long, conflicts_with = "root")]
    no_systemd: bool,
    /// Exit 0 when nothing changed, 2 when something changed (or would, with --dry-run).
    #[arg(long)]
    detailed_exitcodes: bool,
}

impl Init {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let config_path = env.resolve(&self.config);
        let root = self.root.as_ref().map(|r| env.resolve(r));
        if let Some(root) = &root {
            if !root.is_dir() {
                return Err(Error::Usage(format!(
                    "--root {}: not a directory",
                    root.display()
                )));
            }
        }
        let facts = root.is_none().then(MachineFacts::probe);
        let config = Config::load(&config_path, facts.as_ref())?;
        let target = Target { root: root.clone() };
        let owners = Owners::new(root.clone());
        let image = root.is_some();

        let (secrets, secret_statuses) =
            provision::ensure_secrets(&config, &target, self.dry_run, self.first_boot)?;
        let installed_config = if image {
            config.site.paths.config_dir.join("site.toml")
        } else {
            config_path.clone()
        };
        let options = RenderOptions {
            binary: self.binary.clone(),
            installed_config: installed_config.clone(),
        };
        let templates = Templates::load(self.templates.as_deref())?;
        let mut files = render::render_node(&config, &secrets, &options, &templates, image)?;
        if image {
            files.extend(image_files(&config, &config_path, &installed_config)?);
        }
        let dirs = node_dirs(&config);
        let created_dirs = provision::ensure_dirs(&dirs, &target, &owners, self.dry_run)?;
        let changes = provision::plan(files, &target, &owners)?;

        for status in &secret_statuses {
            match status {
                SecretStatus::Generated(p) => {
                    writeln!(env.stdout, "generated secret {}", p.display())
                }
                SecretStatus::WouldGenerate(p) => {
                    writeln!(env.stdout, "would generate secret {}", p.display())
                }
            }
            .map_err(stdout_error)?;
        }
        for dir in &created_dirs {
            let verb = if self.dry_run {
                "would create"
            } else {
                "created"
            };
            writeln!(env.stdout, "{verb} directory {}", dir.display()).map_err(stdout_error)?;
        }
        let changed =
            !changes.is_empty() || !created_dirs.is_empty() || !secret_statuses.is_empty();

        if self.dry_run {
            for change in &changes {
                let text = provision::diff(change, &secrets.all());
                write!(env.stdout, "{text}").map_err(stdout_error)?;
            }
            if !changed {
                writeln!(env.stdout, "nothing would change").map_err(stdout_error)?;
            }
            return Ok(self.outcome(changed));
        }

        let systemd = Systemd { root: root.clone() };
        let live = !image && !self.no_systemd && Systemd::is_running();
        let mut to_start = BTreeSet::new();
        if live {
            for change in changes.iter().filter(|c| c.file.stop_before_write) {
                for unit in &change.file.restarts {
                    if systemd.is_active(unit) {
                        systemd.stop(unit)?;
                        to_start.insert(unit.clone());
                    }
                }
            }
        }
        let units = self.units(&config, image);
        for (unit, _) in units.iter().filter(|(_, wanted)| !wanted) {
            if (live || image) && systemd.unit_exists(unit) && systemd.is_enabled(unit) {
                systemd.disable(unit)?;
            }
        }
        for change in &changes {
            provision::apply(change, &target, &owners)?;
            writeln!(
                env.stdout,
                "{} {}",
                change.change.verb(),
                change.file.path.display()
            )
            .map_err(stdout_error)?;
        }
        if self.first_boot {
            let marker = target.host(&render::first_boot_marker(&config));
            if marker.exists() {
                std::fs::remove_file(&marker).map_err(Error::io("removing", &marker))?;
            }
        }
        self.services(
            env,
            &config,
            &systemd,
            (live, image),
            &units,
            &changes,
            to_start,
        )?;
        if !changed {
            writeln!(
                env.stdout,
                "nothing to change: {} is already in place",
                config_path.display()
            )
            .map_err(stdout_error)?;
        }
        Ok(self.outcome(changed))
    }

    fn outcome(&self, changed: bool) -> Outcome {
        match (self.detailed_exitcodes, changed) {
            (true, true) => Outcome::Status(2),
            _ => Outcome::Success,
        }
    }

    /// Every unit `init` manages, and whether this node wants it enabled.
    fn units(&self, config: &Config, image: bool) -> Vec<(String, bool)> {
        let mut units = vec![
            ("serf.service".to_string(), true),
            ("transmission-daemon.service".to_string(), true),
        ];
        units.extend(
            render::own_units(config, image)
                .into_iter()
                .map(|(unit, wanted)| (unit.to_string(), wanted)),
        );
        units
    }

    #[allow(clippy::too_many_arguments)]
    fn services(
        &self,
        env: &mut Env,
        config: &Config,
        systemd: &Systemd,
        (live, image): (bool, bool),
        units: &[(String, bool)],
        changes: &[PlannedChange],
        mut to_start: BTreeSet<String>,
    ) -> Result<()> {
        let restarts: BTreeSet<String> = changes
            .iter()
            .filter(|c| c.change != Change::Remove)
            .flat_map(|c| c.file.restarts.iter().cloned())
            .collect();
        if !live && !image {
            if !restarts.is_empty() && !self.no_systemd {
                writeln!(
                    env.stdout,
                    "systemd is not running here: start or restart these yourself: {}",
                    restarts.iter().cloned().collect::<Vec<_>>().join(" ")
                )
                .map_err(stdout_error)?;
            }
            return Ok(());
        }
        let unit_files_changed = changes
            .iter()
            .any(|c| c.file.path.starts_with(&config.site.paths.systemd_dir));
        if live && unit_files_changed {
            systemd.daemon_reload()?;
        }
        for (unit, _) in units.iter().filter(|(_, wanted)| *wanted) {
            if !systemd.unit_exists(unit) {
                writeln!(
                    env.stderr,
                    "warning: {unit} is not installed; is its package missing?"
                )
                .map_err(stdout_error)?;
                continue;
            }
            if !systemd.is_enabled(unit) {
                systemd.enable(unit)?;
                writeln!(env.stdout, "enabled {unit}").map_err(stdout_error)?;
            }
            if live && !systemd.is_active(unit) && unit != "p2pu-firstboot.service" {
                to_start.insert(unit.clone());
            }
        }
        if !live || self.no_restart {
            return Ok(());
        }
        for unit in &restarts {
            if to_start.remove(unit) {
                systemd.start(unit)?;
                writeln!(env.stdout, "started {unit}").map_err(stdout_error)?;
            } else if systemd.is_active(unit) {
                systemd.restart(unit)?;
                writeln!(env.stdout, "restarted {unit}").map_err(stdout_error)?;
            }
        }
        for unit in &to_start {
            systemd.start(unit)?;
            writeln!(env.stdout, "started {unit}").map_err(stdout_error)?;
        }
        Ok(())
    }
}

/// In an image: the config itself and the marker that arms the first-boot unit.
fn image_files(config: &Config, config_path: &Path, installed: &Path) -> Result<Vec<ManagedFile>> {
    let text = std::fs::read(config_path).map_err(Error::io("reading", config_path))?;
    let plain = |path: &Path, contents: Vec<u8>, mode: u32| ManagedFile {
        path: path.to_path_buf(),
        contents: Some(contents),
        mode,
        owner: None,
        compare: Compare::Bytes,
        restarts: Vec::new(),
        stop_before_write: false,
        template: "(none)",
    };
    Ok(vec![
        // The config may hold a fixed RPC password: root-only.
        plain(installed, text, 0o600),
        plain(
            &render::first_boot_marker(config),
            b"p2pu init --first-boot pending\n".to_vec(),
            0o644,
        ),
    ])
}

/// Directories the engines and the agent need, with owner and mode.
fn node_dirs(config: &Config) -> Vec<ManagedDir> {
    let site = &config.site;
    let dir = |path: &Path, mode: u32, owner: Option<&str>| ManagedDir {
        path: path.to_path_buf(),
        mode,
        owner: owner.map(str::to_string),
    };
    let mut dirs = vec![
        dir(&site.paths.config_dir, 0o755, None),
        dir(&site.agent.spool_dir, 0o700, None),
        dir(&site.agent.state_dir, 0o755, None),
        dir(&site.agent.trusted_keys_dir, 0o755, None),
        dir(&site.agent.archive_dir, 0o755, None),
        dir(
            &site.transmission.download_dir,
            0o755,
            Some(&site.transmission.user),
        ),
    ];
    if let Some(key_dir) = site.agent.signing_key.parent() {
        dirs.push(dir(key_dir, 0o700, None));
    }
    // The daemon keeps resume files and rewrites settings.json beside it (Debian's own
    // /etc/transmission-daemon already exists and is left as the package made it).
    if let Some(settings_dir) = site.transmission.settings_file.parent() {
        dirs.insert(0, dir(settings_dir, 0o755, Some(&site.transmission.user)));
    }
    dirs
}

fn stdout_error(source: std::io::Error) -> Error {
    Error::Io {
        action: "writing to",
        path: "standard output".into(),
        source,
    }
}
