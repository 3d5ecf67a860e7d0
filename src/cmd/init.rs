//! `p2pu init`: renders a node's engine configs, handler and units from one site.toml, then
//! (re)starts exactly what changed. Replaces the prototype's initialsetup.sh.

use crate::cmd::{ConfigArg, Outcome};
use crate::config::{Config, MachineFacts};
use crate::engines::systemd::{NoBlock, Systemd};
use crate::error::{Error, Result};
use crate::provision::services::{self, Action, Mode};
use crate::provision::{self, ManagedDir, Owners, SecretStatus, Target};
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
    #[command(flatten)]
    config: ConfigArg,
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
        let config_path = self.config.resolve(env);
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
        let dirs = owned_node_dirs(env, &config, &owners)?;
        let dir_changes = provision::ensure_dirs(&dirs, &target, &owners, self.dry_run)?;
        let changes = provision::plan(files, &target, &owners)?;

        report_secrets_and_dirs(env, &secret_statuses, &dir_changes, self.dry_run)?;
        let changed = !changes.is_empty() || !dir_changes.is_empty() || !secret_statuses.is_empty();

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

        let (systemd, under_agent, mode) = self.systemd_mode(root.clone(), image);
        let units = units(&config, image);
        let systemd_dir = &config.site.paths.systemd_dir;
        let (before, after) = match mode {
            Some(mode) => services::plan(&changes, &units, systemd_dir, &systemd, mode),
            None => (Vec::new(), Vec::new()),
        };
        let mut after = after;
        if under_agent {
            // The engines' restarts first, awaited; p2pu's own queued last.
            after.sort_by_key(|action| {
                matches!(action, Action::Restart(u) | Action::Start(u) if u.starts_with("p2pu-"))
            });
        }
        run_actions(env, &systemd, &before)?;
        for change in &changes {
            provision::apply(change, &target, &owners)?;
            let path = change.file.path.display();
            writeln!(env.stdout, "{} {path}", change.change.verb()).map_err(stdout_error)?;
        }
        if self.first_boot {
            let marker = target.host(&render::first_boot_marker(&config));
            if marker.exists() {
                std::fs::remove_file(&marker).map_err(Error::io("removing", &marker))?;
            }
        }
        run_actions(env, &systemd, &after)?;
        if mode.is_none() && !self.no_systemd {
            say_restarts_left_to_the_operator(env, &changes)?;
        }
        if !changed {
            let path = config_path.display();
            writeln!(env.stdout, "nothing to change: {path} is already in place")
                .map_err(stdout_error)?;
        }
        Ok(self.outcome(changed))
    }

    /// How systemd is driven: not blocking on first boot, nor on p2pu's own units when a
    /// `puppet apply` of the agent's runs this init; and whether units are enabled in an
    /// image, (re)started live, or left to the operator (no systemd).
    fn systemd_mode(&self, root: Option<PathBuf>, image: bool) -> (Systemd, bool, Option<Mode>) {
        let mut systemd = Systemd {
            root,
            no_block: if self.first_boot {
                NoBlock::Always
            } else {
                NoBlock::Never
            },
        };
        // Run by a `puppet apply` of the agent's (the README's Puppet loop): a blocking restart
        // of the agent would wait for the agent's stop, which waits for that apply to end,
        // which waits for this init.
        let under_agent = !image
            && !self.first_boot
            && systemd
                .main_pid("p2pu-agent.service")
                .is_some_and(is_ancestor);
        if under_agent {
            systemd.no_block = NoBlock::OwnUnits;
        }
        let mode = if image {
            Some(Mode::Image)
        } else if !self.no_systemd && Systemd::is_running() {
            Some(Mode::Live {
                restart: !self.no_restart,
            })
        } else {
            None
        };
        (systemd, under_agent, mode)
    }

    fn outcome(&self, changed: bool) -> Outcome {
        match (self.detailed_exitcodes, changed) {
            (true, true) => Outcome::Status(2),
            _ => Outcome::Success,
        }
    }
}

/// Whether process `pid` is an ancestor of this one.
fn is_ancestor(pid: u32) -> bool {
    let mut current = std::os::unix::process::parent_id();
    // Bounded: a parent chain longer than this is no chain of ours.
    for _ in 0..64 {
        if current == pid {
            return true;
        }
        if current <= 1 {
            return false;
        }
        match parent_of(current) {
            Some(parent) => current = parent,
            None => return false,
        }
    }
    false
}

/// The parent pid from /proc/PID/stat (the field after the parenthesized command name).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Every unit `init` manages, and whether this node wants it enabled.
fn units(config: &Config, image: bool) -> Vec<(String, bool)> {
    let engines = ["serf.service", "transmission-daemon.service"].map(|u| (u, true));
    engines
        .into_iter()
        .chain(render::own_units(config, image))
        .map(|(unit, wanted)| (unit.to_string(), wanted))
        .collect()
}

fn run_actions(env: &mut Env, systemd: &Systemd, actions: &[Action]) -> Result<()> {
    for action in actions {
        let done = match action {
            Action::Stop(unit) => systemd.stop(unit).map(|()| format!("stopped {unit}")),
            Action::Disable(unit) => systemd.disable(unit).map(|()| format!("disabled {unit}")),
            Action::DaemonReload => systemd.daemon_reload().map(|()| "reloaded systemd".into()),
            Action::Enable(unit) => systemd.enable(unit).map(|()| format!("enabled {unit}")),
            Action::Restart(unit) => systemd.restart(unit).map(|()| format!("restarted {unit}")),
            Action::Start(unit) => systemd.start(unit).map(|()| format!("started {unit}")),
            Action::Missing(unit) => {
                writeln!(
                    env.stderr,
                    "warning: {unit} is not installed; is its package missing?"
                )
                .map_err(stdout_error)?;
                continue;
            }
        }?;
        writeln!(env.stdout, "{done}").map_err(stdout_error)?;
    }
    Ok(())
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

/// The user the network-facing processes (NAT client, proxy) run as; created by the package.
pub const UNPRIVILEGED_USER: &str = "p2pu";

/// Directories the engines and the agent need, with owner and mode.
/// The node's directories, the NAT client's overlay spool owned by the unprivileged user the
/// package creates. Without that user (a bare test machine), it stays root's, and this says why.
fn owned_node_dirs(env: &mut Env, config: &Config, owners: &Owners) -> Result<Vec<ManagedDir>> {
    let mut dirs = node_dirs(config);
    for dir in dirs
        .iter_mut()
        .filter(|d| d.owner.as_deref() == Some(UNPRIVILEGED_USER))
    {
        if !matches!(owners.uid_gid(Some(UNPRIVILEGED_USER)), Ok(Some(_))) {
            writeln!(
                env.stderr,
                "warning: system user `{UNPRIVILEGED_USER}` does not exist, so {} stays root's: \
                 a nat-client running as `{UNPRIVILEGED_USER}` could not write it (install/install.sh creates the user)",
                dir.path.display()
            )
            .map_err(stdout_error)?;
            dir.owner = None;
        }
    }
    Ok(dirs)
}

/// Says which secrets were (or would be) generated and which directories changed.
fn report_secrets_and_dirs(
    env: &mut Env,
    secret_statuses: &[SecretStatus],
    dir_changes: &[provision::DirChange],
    dry_run: bool,
) -> Result<()> {
    for status in secret_statuses {
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
    for dir in dir_changes {
        writeln!(env.stdout, "{}", dir.describe(dry_run)).map_err(stdout_error)?;
    }
    Ok(())
}

/// Without systemd, the units whose files changed are the operator's to (re)start.
fn say_restarts_left_to_the_operator(
    env: &mut Env,
    changes: &[provision::PlannedChange],
) -> Result<()> {
    let restarts: BTreeSet<&str> = changes
        .iter()
        .flat_map(|c| c.file.restarts.iter().map(String::as_str))
        .collect();
    if !restarts.is_empty() {
        let list = restarts.into_iter().collect::<Vec<_>>().join(" ");
        writeln!(
            env.stdout,
            "systemd is not running here: start or restart these yourself: {list}"
        )
        .map_err(stdout_error)?;
    }
    Ok(())
}

fn node_dirs(config: &Config) -> Vec<ManagedDir> {
    let site = &config.site;
    let dir = |path: &Path, mode: u32, owner: Option<&str>| ManagedDir {
        path: path.to_path_buf(),
        mode,
        owner: owner.map(str::to_string),
        upgrade_from: &[],
    };
    let mut dirs = vec![
        dir(&site.paths.config_dir, 0o755, None),
        // Others may pass through (to the NAT client's overlay part) but not list or write.
        // Installs before the overlay part made it 0700, which keeps the NAT client out.
        ManagedDir {
            upgrade_from: &[0o700],
            ..dir(&site.agent.spool_dir, 0o711, None)
        },
        dir(&site.agent.state_dir, 0o755, None),
        // Serf's snapshot (members' names and addresses): root's alone.
        dir(
            render::serf_snapshot_file(config)
                .parent()
                .unwrap_or(&site.agent.state_dir),
            0o700,
            None,
        ),
        dir(&site.agent.trusted_keys_dir, 0o755, None),
        dir(&site.agent.archive_dir, 0o755, None),
        dir(
            &site.transmission.download_dir,
            0o755,
            Some(&site.transmission.user),
        ),
    ];
    if site.nat.enabled {
        let overlay = crate::agent::runtime::spool::overlay_dir(&site.agent.spool_dir);
        dirs.push(dir(&overlay, 0o700, Some(UNPRIVILEGED_USER)));
    }
    if site.node.role == crate::config::Role::Proxy {
        // The proxy's name bindings.
        dirs.push(dir(
            &site.nat.proxy_state_dir,
            0o700,
            Some(UNPRIVILEGED_USER),
        ));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_ancestor_finds_the_parent_and_not_a_stranger() {
        assert!(is_ancestor(std::os::unix::process::parent_id()));
        assert!(!is_ancestor(std::process::id()));
        assert!(!is_ancestor(u32::MAX));
    }

    const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/install/site.example.toml");

    // A real run starts services through systemd (tests/init_cli.rs and tests/systemd_fleet.rs);
    // in-process, a dry run into an image root shows what it would do and touches nothing.
    #[test]
    fn a_dry_run_into_an_image_root_shows_every_change_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("root")).unwrap();
        let args = [
            "init",
            "--config",
            EXAMPLE,
            "--root",
            "root",
            "--dry-run",
            "--detailed-exitcodes",
        ];
        let (code, out, err) = crate::cmd::testing::run(dir.path(), &args);
        assert_eq!(code, 2, "{err}");
        assert!(
            out.contains("would generate secret /etc/p2pu/serf.keyring"),
            "{out}"
        );
        assert!(
            out.contains("--- /dev/null\n+++ /etc/serf/p2pu.json"),
            "{out}"
        );
        let written = std::fs::read_dir(dir.path().join("root")).unwrap().count();
        assert_eq!(written, 0);
    }

    #[test]
    fn a_root_that_is_not_a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let args = [
            "init",
            "--config",
            EXAMPLE,
            "--root",
            "nothing",
            "--dry-run",
        ];
        let (code, out, err) = crate::cmd::testing::run(dir.path(), &args);
        assert_eq!((code, out.as_str()), (1, ""));
        let want = format!(
            "error: --root {}: not a directory\n",
            dir.path().join("nothing").display()
        );
        assert_eq!(err, want);
    }
}
