//! Which systemd actions a set of file changes calls for, decided apart from running them so
//! the decision is tested without systemd: stop what rewrites its own files before writing,
//! disable units of features turned off, reload systemd after unit changes, enable what the
//! node runs, restart what changed, start what is not running.

use super::{Change, PlannedChange};
use std::collections::BTreeSet;
use std::path::Path;

/// What systemd says about a unit.
pub trait UnitState {
    fn exists(&self, unit: &str) -> bool;
    fn enabled(&self, unit: &str) -> bool;
    fn active(&self, unit: &str) -> bool;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Stop(String),
    Disable(String),
    DaemonReload,
    Enable(String),
    Restart(String),
    Start(String),
    /// The unit should be enabled but is not installed (its package is missing).
    Missing(String),
}

/// How `init` may act on services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A booted system: enable, stop, restart, start.
    Live { restart: bool },
    /// An image root: enable and disable unit files only.
    Image,
}

/// Units that run once at boot and must never be started from `init` itself.
const BOOT_ONLY: &[&str] = &["p2pu-firstboot.service"];

/// Actions to run before the files are written, and after.
pub fn plan(
    changes: &[PlannedChange],
    units: &[(String, bool)],
    systemd_dir: &Path,
    state: &dyn UnitState,
    mode: Mode,
) -> (Vec<Action>, Vec<Action>) {
    let live = matches!(mode, Mode::Live { .. });
    let mut before = Vec::new();
    let mut stopped = BTreeSet::new();
    if live {
        for change in changes.iter().filter(|c| c.file.stop_before_write) {
            for unit in &change.file.restarts {
                if state.active(unit) && stopped.insert(unit.clone()) {
                    before.push(Action::Stop(unit.clone()));
                }
            }
        }
    }
    for (unit, _) in units.iter().filter(|(_, wanted)| !wanted) {
        if state.exists(unit) && state.enabled(unit) {
            if live && state.active(unit) {
                before.push(Action::Stop(unit.clone()));
            }
            before.push(Action::Disable(unit.clone()));
        }
    }

    let mut after = Vec::new();
    if live && changes.iter().any(|c| c.file.path.starts_with(systemd_dir)) {
        after.push(Action::DaemonReload);
    }
    let restarts: BTreeSet<&String> = changes
        .iter()
        .filter(|c| c.change != Change::Remove)
        .flat_map(|c| &c.file.restarts)
        .collect();
    let mut to_start = stopped;
    for (unit, _) in units.iter().filter(|(_, wanted)| *wanted) {
        // A unit file written by this very run exists once the files are in place.
        let written = changes
            .iter()
            .any(|c| c.file.path == systemd_dir.join(unit));
        if !written && !state.exists(unit) {
            after.push(Action::Missing(unit.clone()));
            continue;
        }
        if !state.enabled(unit) {
            after.push(Action::Enable(unit.clone()));
        }
        if live && !state.active(unit) && !BOOT_ONLY.contains(&unit.as_str()) {
            to_start.insert(unit.clone());
        }
    }
    if let Mode::Live { restart: true } = mode {
        for unit in restarts {
            if to_start.remove(unit) {
                after.push(Action::Start(unit.clone()));
            } else if state.active(unit) {
                after.push(Action::Restart(unit.clone()));
            }
        }
    }
    if live {
        after.extend(to_start.into_iter().map(Action::Start));
    }
    (before, after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{Compare, ManagedFile};
    use std::collections::HashSet;
    use std::path::PathBuf;

    #[derive(Default)]
    struct Fake {
        existing: HashSet<&'static str>,
        enabled: HashSet<&'static str>,
        active: HashSet<&'static str>,
    }

    impl UnitState for Fake {
        fn exists(&self, unit: &str) -> bool {
            self.existing.contains(unit)
        }
        fn enabled(&self, unit: &str) -> bool {
            self.enabled.contains(unit)
        }
        fn active(&self, unit: &str) -> bool {
            self.active.contains(unit)
        }
    }

    fn change(path: &str, restarts: &[&str], stop_before_write: bool) -> PlannedChange {
        PlannedChange {
            file: ManagedFile {
                path: PathBuf::from(path),
                contents: Some(Vec::new()),
                mode: 0o644,
                owner: None,
                compare: Compare::Bytes,
                restarts: restarts.iter().map(|s| s.to_string()).collect(),
                stop_before_write,
                template: "t",
            },
            change: Change::Update,
            old: None,
        }
    }

    fn units(list: &[(&str, bool)]) -> Vec<(String, bool)> {
        list.iter().map(|(u, w)| (u.to_string(), *w)).collect()
    }

    fn running(all: &[&'static str]) -> Fake {
        Fake {
            existing: all.iter().copied().collect(),
            enabled: all.iter().copied().collect(),
            active: all.iter().copied().collect(),
        }
    }

    const SD: &str = "/etc/systemd/system";

    #[test]
    fn unchanged_running_node_needs_nothing() {
        let state = running(&["serf.service", "transmission-daemon.service"]);
        let units = units(&[
            ("serf.service", true),
            ("transmission-daemon.service", true),
        ]);
        let (before, after) = plan(
            &[],
            &units,
            Path::new(SD),
            &state,
            Mode::Live { restart: true },
        );
        assert_eq!((before, after), (vec![], vec![]));
    }

    #[test]
    fn transmission_is_stopped_before_its_settings_are_written_then_started() {
        let state = running(&["serf.service", "transmission-daemon.service"]);
        let units = units(&[
            ("serf.service", true),
            ("transmission-daemon.service", true),
        ]);
        let changes = [change(
            "/etc/transmission-daemon/settings.json",
            &["transmission-daemon.service"],
            true,
        )];
        let (before, after) = plan(
            &changes,
            &units,
            Path::new(SD),
            &state,
            Mode::Live { restart: true },
        );
        assert_eq!(
            before,
            vec![Action::Stop("transmission-daemon.service".into())]
        );
        assert_eq!(
            after,
            vec![Action::Start("transmission-daemon.service".into())]
        );
    }

    #[test]
    fn only_the_changed_service_restarts_after_a_daemon_reload() {
        let state = running(&["serf.service", "transmission-daemon.service"]);
        let units = units(&[
            ("serf.service", true),
            ("transmission-daemon.service", true),
        ]);
        let changes = [change(
            "/etc/systemd/system/serf.service.d/p2pu.conf",
            &["serf.service"],
            false,
        )];
        let (before, after) = plan(
            &changes,
            &units,
            Path::new(SD),
            &state,
            Mode::Live { restart: true },
        );
        assert_eq!(before, vec![]);
        assert_eq!(
            after,
            vec![Action::DaemonReload, Action::Restart("serf.service".into())]
        );
    }

    #[test]
    fn new_units_are_enabled_and_started_and_switched_off_ones_disabled() {
        let mut state = running(&["serf.service", "p2pu-proxy.service"]);
        state.active.remove("serf.service");
        let units = units(&[
            ("serf.service", true),
            ("p2pu-agent.service", true),
            ("p2pu-proxy.service", false),
        ]);
        let changes = [change(
            "/etc/systemd/system/p2pu-agent.service",
            &["p2pu-agent.service"],
            false,
        )];
        let (before, after) = plan(
            &changes,
            &units,
            Path::new(SD),
            &state,
            Mode::Live { restart: true },
        );
        assert_eq!(
            before,
            vec![
                Action::Stop("p2pu-proxy.service".into()),
                Action::Disable("p2pu-proxy.service".into())
            ]
        );
        assert_eq!(
            after,
            vec![
                Action::DaemonReload,
                Action::Enable("p2pu-agent.service".into()),
                Action::Start("p2pu-agent.service".into()),
                Action::Start("serf.service".into()),
            ]
        );
    }

    #[test]
    fn images_only_enable_and_report_missing_packages() {
        let state = Fake::default();
        let units = units(&[
            ("serf.service", true),
            ("p2pu-agent.service", true),
            ("p2pu-firstboot.service", true),
        ]);
        let changes = [
            change(
                "/etc/systemd/system/p2pu-agent.service",
                &["p2pu-agent.service"],
                false,
            ),
            change("/etc/systemd/system/p2pu-firstboot.service", &[], false),
        ];
        let (before, after) = plan(&changes, &units, Path::new(SD), &state, Mode::Image);
        assert_eq!(before, vec![]);
        assert_eq!(
            after,
            vec![
                Action::Missing("serf.service".into()),
                Action::Enable("p2pu-agent.service".into()),
                Action::Enable("p2pu-firstboot.service".into()),
            ]
        );
    }

    #[test]
    fn no_restart_still_starts_what_is_stopped() {
        let state = running(&["transmission-daemon.service"]);
        let units = units(&[("transmission-daemon.service", true)]);
        let changes = [change(
            "/etc/transmission-daemon/settings.json",
            &["transmission-daemon.service"],
            true,
        )];
        let (_, after) = plan(
            &changes,
            &units,
            Path::new(SD),
            &state,
            Mode::Live { restart: false },
        );
        assert_eq!(
            after,
            vec![Action::Start("transmission-daemon.service".into())]
        );
    }
}
