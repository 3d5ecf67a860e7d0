//! systemd, as `init` uses it: enable units, reload or restart services, and nothing at all
//! where systemd is not running (containers, CI) or when rendering into an image (`--root`).

use super::{run_checked, CommandError};

type Result<T> = std::result::Result<T, CommandError>;
use std::path::{Path, PathBuf};

pub struct Systemd {
    /// `Some(dir)`: operate on the unit files of the root file system at `dir`, start nothing.
    pub root: Option<PathBuf>,
    /// Which start and restart jobs are queued without waiting for them.
    pub no_block: NoBlock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoBlock {
    /// Wait for every job (`init` run by hand or by install.sh).
    Never,
    /// The first-boot unit runs `init` while the engines' units wait for it
    /// (`After=p2pu-firstboot.service`): a blocking start from inside it would wait for itself
    /// until systemd's start timeout.
    Always,
    /// `init` run by a `puppet apply` of the agent's: the agent's restart waits for that apply
    /// to end, and so does every job ordered after it (the NAT client's): p2pu's own units are
    /// queued, the engines' restarts (which do not wait for the agent) still awaited.
    OwnUnits,
}

impl Systemd {
    /// Whether this machine was booted with systemd as init (sd_booted(3)).
    pub fn is_running() -> bool {
        Path::new("/run/systemd/system").is_dir()
    }

    /// Whether a unit file exists in the (target) system's unit search path.
    fn unit_exists(&self, unit: &str) -> bool {
        let root = self.root.as_deref().unwrap_or(Path::new("/"));
        [
            "etc/systemd/system",
            "lib/systemd/system",
            "usr/lib/systemd/system",
        ]
        .iter()
        .any(|dir| root.join(dir).join(unit).exists())
    }

    fn is_enabled(&self, unit: &str) -> bool {
        let mut args = self.base_args();
        args.extend(["is-enabled".to_string(), "--quiet".into(), unit.into()]);
        duct::cmd("systemctl", &args)
            .stdout_null()
            .stderr_null()
            .unchecked()
            .run()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// The main pid of `unit`, when it runs.
    pub fn main_pid(&self, unit: &str) -> Option<u32> {
        if self.root.is_some() {
            return None;
        }
        let out = duct::cmd!("systemctl", "show", "-p", "MainPID", "--value", unit)
            .stderr_null()
            .stdout_capture()
            .unchecked()
            .run()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .ok()
            .filter(|pid| *pid != 0)
    }

    fn is_active(&self, unit: &str) -> bool {
        self.root.is_none()
            && duct::cmd!("systemctl", "is-active", "--quiet", unit)
                .stdout_null()
                .stderr_null()
                .unchecked()
                .run()
                .map(|o| o.status.success())
                .unwrap_or(false)
    }

    pub fn enable(&self, unit: &str) -> Result<()> {
        self.systemctl(&["enable", unit])
    }

    pub fn disable(&self, unit: &str) -> Result<()> {
        self.systemctl(&["disable", unit])
    }

    pub fn daemon_reload(&self) -> Result<()> {
        self.systemctl(&["daemon-reload"])
    }

    pub fn stop(&self, unit: &str) -> Result<()> {
        self.systemctl(&["stop", unit])
    }

    pub fn restart(&self, unit: &str) -> Result<()> {
        self.job("restart", unit)
    }

    pub fn start(&self, unit: &str) -> Result<()> {
        self.job("start", unit)
    }

    fn job(&self, verb: &str, unit: &str) -> Result<()> {
        let queue = match self.no_block {
            NoBlock::Never => false,
            NoBlock::Always => true,
            NoBlock::OwnUnits => unit.starts_with("p2pu-"),
        };
        if queue {
            self.systemctl(&[verb, "--no-block", unit])
        } else {
            self.systemctl(&[verb, unit])
        }
    }

    fn base_args(&self) -> Vec<String> {
        match &self.root {
            Some(root) => vec![format!("--root={}", root.display())],
            None => Vec::new(),
        }
    }

    fn systemctl(&self, args: &[&str]) -> Result<()> {
        let mut all = self.base_args();
        all.extend(args.iter().map(|s| s.to_string()));
        run_checked("systemctl", &all)
    }
}

impl crate::provision::services::UnitState for Systemd {
    fn exists(&self, unit: &str) -> bool {
        self.unit_exists(unit)
    }
    fn enabled(&self, unit: &str) -> bool {
        self.is_enabled(unit)
    }
    fn active(&self, unit: &str) -> bool {
        self.is_active(unit)
    }
}
