//! Golden tests of every file `init` renders, for the example config and for a fleet config
//! with overrides. Regenerate with `P2PU_UPDATE_GOLDEN=1 cargo test --test golden_render`
//! and review the diff like code.

use p2pu::config::{Config, MachineFacts};
use p2pu::render::{render_node, RenderOptions, Secrets, Templates};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const FLEET: &str = r#"
[node]
name = "gw-01"
role = "proxy"

[serf]
bind = "0.0.0.0:17946"
advertise = "10.20.0.1"
join = ["10.20.0.2", "10.20.0.3:17946"]
rpc_addr = "127.0.0.1:17373"

[serf.tags]
site = "warehouse"

[transmission]
rpc_port = 19091
rpc_user = "fleet"
peer_port = 61413
download_dir = "/srv/p2pu/downloads"
dht = true
utp = false

[transmission.extra]
"cache-size-mb" = 16
"speed-limit-up" = 5000
"speed-limit-up-enabled" = true

[agent]
spool_dir = "/srv/p2pu/spool"
tracker_port = 16969
heartbeat_interval_secs = 300
heartbeat_window_secs = 900

[nat]
enabled = true
proxy = "rendezvous.example.net:3478"
keepalive_secs = 15

[time]
ntp = ["10.20.0.1", "ntp.example.net"]
fallback_ntp = ["0.debian.pool.ntp.org"]
"#;

fn check(case: &str, config_text: &str, first_boot: bool) {
    let facts = MachineFacts {
        hostname: Some("pi-01".into()),
        default_route_addr: Some("192.168.1.20".parse().unwrap()),
    };
    let config =
        Config::from_str(Path::new("/etc/p2pu/site.toml"), config_text, Some(&facts)).unwrap();
    let secrets = Secrets {
        transmission_rpc_password: "TRANSMISSION-SECRET".into(),
        serf_rpc_auth: "SERF-RPC-SECRET".into(),
    };
    let options = RenderOptions {
        binary: "/usr/bin/p2pu".into(),
        installed_config: "/etc/p2pu/site.toml".into(),
    };
    let templates = Templates::load(None).unwrap();
    let files = render_node(&config, &secrets, &options, &templates, first_boot).unwrap();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(case);
    let update = update_golden(std::env::var("P2PU_UPDATE_GOLDEN").ok().as_deref());
    let mut rendered = BTreeSet::new();
    for file in files {
        let golden = dir.join(file.path.strip_prefix("/").unwrap());
        if file.contents.is_some() {
            rendered.insert(golden.clone());
        }
        match (&file.contents, update) {
            (Some(contents), true) => {
                std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
                std::fs::write(&golden, contents).unwrap();
            }
            (None, true) => {
                let _ = std::fs::remove_file(&golden);
            }
            (Some(contents), false) => {
                let want = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
                    panic!("{}: {e} (set P2PU_UPDATE_GOLDEN=1)", golden.display())
                });
                pretty_assertions::assert_eq!(
                    want,
                    String::from_utf8_lossy(contents),
                    "{} differs from {}",
                    file.path.display(),
                    golden.display()
                );
            }
            (None, false) => assert!(
                !golden.exists(),
                "{} should not be rendered",
                file.path.display()
            ),
        }
    }
    // A golden file nothing renders any more would keep "checking" a file no node gets.
    let stale: Vec<PathBuf> = files_under(&dir)
        .into_iter()
        .filter(|path| !rendered.contains(path))
        .collect();
    if update {
        for path in &stale {
            std::fs::remove_file(path).unwrap();
        }
    } else {
        assert!(
            stale.is_empty(),
            "golden files that init no longer renders (set P2PU_UPDATE_GOLDEN=1): {stale:?}"
        );
    }
}

/// Whether `P2PU_UPDATE_GOLDEN` asks for the goldens to be rewritten: only a truthy value
/// does, so `=0` or `=false` checks them as an unset variable would.
fn update_golden(value: Option<&str>) -> bool {
    matches!(
        value.map(|v| v.trim().to_ascii_lowercase()).as_deref(),
        Some("1" | "true" | "yes" | "on")
    )
}

#[test]
fn only_a_truthy_update_golden_rewrites_the_goldens() {
    for off in [
        None,
        Some(""),
        Some("0"),
        Some("false"),
        Some("no"),
        Some("off"),
    ] {
        assert!(!update_golden(off), "{off:?}");
    }
    for on in ["1", "true", "TRUE", "yes", "on"] {
        assert!(update_golden(Some(on)), "{on}");
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn example_config_renders_golden_files() {
    check(
        "example",
        include_str!("../install/site.example.toml"),
        false,
    );
}

#[test]
fn fleet_config_with_overrides_renders_golden_files() {
    check("fleet", FLEET, true);
}
