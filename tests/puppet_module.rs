//! The Puppet module puppet/p2pu against the real `puppet apply` (7.23): installed from a module
//! archive as the agent would install it, it writes site.toml and runs `p2pu init` only when the
//! file changed. Every path, Puppet's own dirs included, lives in a temp dir.

mod support;

use p2pu::engines::{Applier, ApplyStatus, Puppet, PuppetError};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_p2pu");

fn module_dir() -> PathBuf {
    Path::new(REPO).join("puppet/p2pu")
}

fn run(command: &mut Command) -> String {
    let out = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{command:?}: {}\n{text}", out.status);
    text
}

fn module_files(ext: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, ext, out);
            } else if path.extension().is_some_and(|e| e == ext) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&module_dir(), ext, &mut out);
    out.sort();
    out
}

#[test]
fn module_validates_and_lints_clean() {
    let manifests = module_files("pp");
    assert!(manifests.len() >= 4, "{manifests:?}");
    run(Command::new("puppet")
        .args(["parser", "validate", "--color=false"])
        .args(&manifests));
    run(Command::new("puppet")
        .args(["epp", "validate", "--color=false"])
        .args(module_files("epp")));
    let metadata = std::fs::read(module_dir().join("metadata.json")).unwrap();
    let metadata: serde_json::Value = serde_json::from_slice(&metadata).unwrap();
    assert_eq!(metadata["name"], "p2pu-p2pu");
    let lint = Command::new("puppet-lint")
        .arg("--version")
        .output()
        .is_ok();
    if !support::prereq::have(
        lint,
        "puppet-lint is not installed (Debian package puppet-lint; install/engines.sh --test installs it)",
    ) {
        return;
    }
    run(Command::new("puppet-lint")
        .arg("--fail-on-warnings")
        .arg(module_dir()));
}

/// A node whose every path is in `dir`: the class declaration for it, given the peer port.
struct Node {
    dir: tempfile::TempDir,
    ports: [u16; 4],
}

impl Node {
    fn new() -> Node {
        use support::free_port;
        Node {
            dir: tempfile::tempdir().unwrap(),
            ports: [free_port(), free_port(), free_port(), free_port()],
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn manifest(&self, peer_port: u16, tags: &str) -> PathBuf {
        let d = self.dir.path().display();
        let [serf, serf_rpc, rpc, tracker] = self.ports;
        let text = format!(
            r#"class {{ 'p2pu':
  node         => {{ 'name' => 'lab-1' }},
  serf         => {{
    'bind'          => '127.0.0.1:{serf}',
    'advertise'     => '127.0.0.1',
    'rpc_addr'      => '127.0.0.1:{serf_rpc}',
    'keyring_file'  => '{d}/p2pu/serf.keyring',
    'rpc_auth_file' => '{d}/p2pu/serf-rpc.secret',
    'event_handler' => '{d}/p2pu/serf-handler',
    'config_file'   => '{d}/serf/p2pu.json',
    'tags'          => {tags},
  }},
  transmission => {{
    'rpc_port'          => {rpc},
    'peer_port'         => {peer_port},
    'rpc_password_file' => '{d}/p2pu/transmission-rpc.secret',
    'download_dir'      => '{d}/downloads',
    'settings_file'     => '{d}/transmission/settings.json',
    'extra'             => {{ 'cache-size-mb' => 8 }},
  }},
  agent        => {{
    'spool_dir'        => '{d}/spool',
    'state_dir'        => '{d}/state',
    'trusted_keys_dir' => '{d}/p2pu/trusted-keys',
    'signing_key'      => '{d}/p2pu/keys/signing.key',
    'archive_dir'      => '{d}/archives',
    'tracker_port'     => {tracker},
  }},
  paths        => {{
    'config_dir'    => '{d}/p2pu',
    'systemd_dir'   => '{d}/systemd',
    'timesyncd_dir' => '{d}/timesyncd',
  }},
  config_file     => '{d}/p2pu/site.toml',
  binary          => '{BIN}',
  init_flags      => ['--no-systemd'],
  manage_services => false,
}}
"#
        );
        let path = self.path("site.pp");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn mtime(&self, rel: &str) -> (i64, i64) {
        let meta = std::fs::metadata(self.path(rel)).unwrap();
        (meta.mtime(), meta.mtime_nsec())
    }
}

/// The module as a `puppet module install` archive, installed the way the agent installs one.
fn installed_module(puppet: &Puppet, work: &Path) -> PathBuf {
    let tarball = work.join("p2pu-p2pu-0.1.0.tar.gz");
    run(Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(Path::new(REPO).join("puppet"))
        .args(["--transform", "s,^p2pu,p2pu-p2pu-0.1.0,", "p2pu"]));
    let modules = work.join("modules");
    puppet.module_install(&tarball, &modules).unwrap();
    assert!(modules.join("p2pu/manifests/init.pp").is_file());
    modules
}

#[test]
fn apply_writes_site_toml_runs_init_once_and_rerenders_on_a_changed_port() {
    let node = Node::new();
    let work = tempfile::tempdir().unwrap();
    let mut puppet = Puppet {
        vardir_root: Some(work.path().join("puppet")),
        ..Puppet::default()
    };
    puppet.modulepath = vec![installed_module(&puppet, work.path())];
    let tags = r#"{ 'site' => "lab \"one\"\\two" }"#;

    let first = puppet.apply(&node.manifest(51501, tags)).unwrap();
    assert_eq!(first.status, ApplyStatus::Changed, "{}", first.output);
    assert!(
        first
            .output
            .contains("Exec[p2pu init]: Triggered 'refresh'"),
        "{}",
        first.output
    );
    let site = std::fs::read_to_string(node.path("p2pu/site.toml")).unwrap();
    assert!(site.contains("peer_port = 51501\n"), "{site}");
    // The escaped tag survives the round trip through TOML into Serf's config.
    let serf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(node.path("serf/p2pu.json")).unwrap()).unwrap();
    assert_eq!(serf["tags"]["site"], "lab \"one\"\\two", "{serf}");
    let settings = std::fs::read_to_string(node.path("transmission/settings.json")).unwrap();
    assert!(settings.contains("\"peer-port\": 51501"), "{settings}");
    assert!(settings.contains("\"cache-size-mb\": 8"), "{settings}");
    assert!(node.path("p2pu/serf-handler").is_file());
    assert!(node.path("systemd/p2pu-agent.service").is_file());

    let settings_mtime = node.mtime("transmission/settings.json");
    let site_mtime = node.mtime("p2pu/site.toml");
    let second = puppet.apply(&node.manifest(51501, tags)).unwrap();
    assert_eq!(second.status, ApplyStatus::Unchanged, "{}", second.output);
    assert!(!second.output.contains("p2pu init"), "{}", second.output);
    assert_eq!(node.mtime("transmission/settings.json"), settings_mtime);
    assert_eq!(node.mtime("p2pu/site.toml"), site_mtime);

    let handler_mtime = node.mtime("p2pu/serf-handler");
    let third = puppet.apply(&node.manifest(51999, tags)).unwrap();
    assert_eq!(third.status, ApplyStatus::Changed, "{}", third.output);
    assert!(
        third
            .output
            .contains("Exec[p2pu init]: Triggered 'refresh'"),
        "{}",
        third.output
    );
    let settings = std::fs::read_to_string(node.path("transmission/settings.json")).unwrap();
    assert!(settings.contains("\"peer-port\": 51999"), "{settings}");
    // Only what depends on the port was rewritten (Serf's config too: its tags carry the port).
    assert_eq!(node.mtime("p2pu/serf-handler"), handler_mtime);
    let serf = std::fs::read_to_string(node.path("serf/p2pu.json")).unwrap();
    assert!(serf.contains("51999"), "{serf}");

    // A value p2pu refuses fails the exec with p2pu's own message, not silently.
    let reserved = r#"{ 'p2pu-peer' => 'x' }"#;
    match puppet.apply(&node.manifest(51999, reserved)) {
        Err(e @ PuppetError::ResourceFailures { .. }) => {
            let output = e.output().unwrap_or_default();
            assert!(output.contains("set by p2pu itself"), "{output}");
        }
        other => panic!("expected a failing exec, got {other:?}"),
    }
}
