//! The .deb's maintainer scripts stop, disable and purge every unit `p2pu init` renders. Issue
//! 29 found `apt remove` leaving `p2pu-heartbeat.timer` enabled and `purge` leaving the
//! heartbeat's service, timer and wants link behind, because the scripts listed units by hand.
//! Now one list: install/deb/scripts.sh fills the scripts in from templates/systemd, and these
//! tests hold that directory to what `init` renders and the filled-in scripts to the list.

use p2pu::config::{Config, MachineFacts};
use p2pu::render::{render_node, RenderOptions, Secrets, Templates};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Every feature that has a unit switched on: heartbeat, NAT, proxy, first boot.
const EVERYTHING: &str = "[node]\nrole = \"proxy\"\n[agent]\nheartbeat_interval_secs = 300\n\
                          [nat]\nenabled = true\nproxy = \"192.0.2.1:3478\"\n";

/// The unit files `init` renders (wanted or not: an unwanted one is removed by name).
fn units_init_renders() -> BTreeSet<String> {
    let facts = MachineFacts {
        hostname: Some("n1".into()),
        default_route_addr: Some("192.0.2.10".parse().unwrap()),
    };
    let config =
        Config::from_str(Path::new("/etc/p2pu/site.toml"), EVERYTHING, Some(&facts)).unwrap();
    let secrets = Secrets {
        transmission_rpc_password: "x".into(),
        serf_rpc_auth: "y".into(),
    };
    let options = RenderOptions {
        binary: "/usr/bin/p2pu".into(),
        installed_config: "/etc/p2pu/site.toml".into(),
    };
    let files = render_node(
        &config,
        &secrets,
        &options,
        &Templates::load(None).unwrap(),
        true,
    )
    .unwrap();
    files
        .iter()
        .filter(|f| f.path.parent() == Some(Path::new("/etc/systemd/system")))
        .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".service") || n.ends_with(".timer"))
        .collect()
}

fn unit_templates() -> BTreeSet<String> {
    std::fs::read_dir(Path::new(REPO).join("templates/systemd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".service") || n.ends_with(".timer"))
        .collect()
}

/// The scripts as the .deb carries them.
fn filled_in_scripts() -> (tempfile::TempDir, String, String) {
    let out = tempfile::tempdir().unwrap();
    let made = Command::new("bash")
        .arg(format!("{REPO}/install/deb/scripts.sh"))
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let read = |name: &str| std::fs::read_to_string(out.path().join(name)).unwrap();
    let (prerm, postrm) = (read("prerm"), read("postrm"));
    (out, prerm, postrm)
}

#[test]
fn every_unit_template_is_one_init_renders() {
    let rendered = units_init_renders();
    assert!(rendered.len() >= 6, "{rendered:?}");
    assert_eq!(unit_templates(), rendered);
}

#[test]
fn remove_and_purge_name_every_unit_init_renders() {
    let (_dir, prerm, postrm) = filled_in_scripts();
    let words = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(|l| l.split(|c: char| c.is_whitespace() || matches!(c, '"' | '\\' | ';')))
            .map(str::to_string)
            .collect()
    };
    let (prerm_words, postrm_words) = (words(&prerm), words(&postrm));
    for unit in units_init_renders() {
        assert!(
            prerm_words.contains(&unit),
            "prerm does not stop and disable {unit}:\n{prerm}"
        );
        assert!(
            postrm_words.contains(&unit),
            "postrm's purge does not remove {unit}:\n{postrm}"
        );
    }
    // Timers first: stopping a service while its timer is still active lets it start again.
    let position = |unit: &str| prerm.find(unit).unwrap();
    assert!(position("p2pu-heartbeat.timer") < position("p2pu-heartbeat.service"));
    assert!(!prerm.contains("@P2PU_UNITS@") && !postrm.contains("@P2PU_UNITS@"));
    assert!(
        postrm.contains("/var/lib/p2pu-proxy"),
        "purge leaves the proxy's state (nat.proxy_state_dir's default)"
    );
}

/// The scripts run as root: what scripts.sh made must still parse as sh.
#[test]
fn the_filled_in_scripts_are_valid_sh() {
    let (dir, _, _) = filled_in_scripts();
    for script in ["postinst", "prerm", "postrm"] {
        let path = dir.path().join(script);
        let out = Command::new("sh").arg("-n").arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
