//! The .deb's maintainer scripts list the units `p2pu init` renders by hand; issue 29 found
//! `apt remove` leaving `p2pu-heartbeat.timer` enabled and `purge` leaving the heartbeat's
//! service, timer and wants link behind. Every unit in `templates/systemd` must be stopped
//! and disabled by prerm and removed by postrm's purge.

use std::path::Path;

fn units() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/systemd");
    let mut units: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".service") || n.ends_with(".timer"))
        .collect();
    units.sort();
    assert!(units.len() >= 6, "{units:?}");
    units
}

fn script(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("install/deb")
            .join(name),
    )
    .unwrap()
}

#[test]
fn remove_and_purge_name_every_unit_init_renders() {
    let prerm = script("prerm");
    let postrm = script("postrm");
    let words = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(|l| l.split(|c: char| c.is_whitespace() || matches!(c, '"' | '\\' | ';')))
            .map(str::to_string)
            .collect()
    };
    let (prerm_words, postrm_words) = (words(&prerm), words(&postrm));
    for unit in units() {
        assert!(
            prerm_words.contains(&unit),
            "prerm does not stop and disable {unit}"
        );
        assert!(
            postrm_words.contains(&unit),
            "postrm's purge does not remove {unit}"
        );
    }
    assert!(
        postrm.contains("/var/lib/p2pu-proxy"),
        "purge leaves the proxy's state (nat.proxy_state_dir's default)"
    );
}
