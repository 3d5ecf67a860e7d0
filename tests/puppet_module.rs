//! The Puppet module puppet/p2pu against the real `puppet apply` (7.23): installed from a module
//! archive as the agent would install it, it writes site.toml and runs `p2pu init` only when the
//! file changed. Every path, Puppet's own dirs included, lives in a temp dir. Its types are
//! compared key for key with p2pu's own `SiteToml`, and its Forge layout is checked.

mod support;

use p2pu::config::{
    AgentSection, NatSection, NodeSection, PathsSection, PuppetSection, SerfSection, SiteToml,
    TimeSection, TransferSection, TransmissionSection,
};
use p2pu::engines::{Applier, ApplyStatus, Puppet, PuppetError};
use std::collections::BTreeMap;
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
    // The examples are linted and validated with the rest.
    assert!(
        manifests.contains(&module_dir().join("examples/init.pp")),
        "{manifests:?}"
    );
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

#[test]
fn module_has_the_forge_layout() {
    let dir = module_dir();
    for file in [
        "README.md",
        "REFERENCE.md",
        "CHANGELOG.md",
        "LICENSE",
        "metadata.json",
        "examples/init.pp",
    ] {
        assert!(dir.join(file).is_file(), "puppet/p2pu/{file} is missing");
    }
    let metadata = std::fs::read(dir.join("metadata.json")).unwrap();
    let metadata: serde_json::Value = serde_json::from_slice(&metadata).unwrap();
    assert_eq!(metadata["name"], "p2pu-p2pu");
    assert_eq!(metadata["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(metadata["license"], env!("CARGO_PKG_LICENSE"));
    let license = std::fs::read_to_string(dir.join("LICENSE")).unwrap();
    assert!(license.starts_with("MIT License\n"), "{license}");
    for key in ["source", "project_page", "issues_url"] {
        let url = metadata[key].as_str().unwrap_or_default();
        assert!(
            url.starts_with("https://") && !url.contains(char::is_whitespace),
            "metadata.json {key} must be a URL, not {url:?}"
        );
    }
}

/// The key names serde knows for a struct: its derive hands them to `deserialize_struct`.
fn serde_keys<T: serde::de::DeserializeOwned>() -> Vec<String> {
    use serde::de::{Deserializer, Visitor};

    #[derive(Debug)]
    struct Fields(&'static [&'static str]);
    impl std::fmt::Display for Fields {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{:?}", self.0)
        }
    }
    impl std::error::Error for Fields {}
    impl serde::de::Error for Fields {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Fields(&[])
        }
    }
    struct Probe;
    impl<'de> Deserializer<'de> for Probe {
        type Error = Fields;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Fields> {
            Err(Fields(&[]))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Fields> {
            Err(Fields(fields))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    match T::deserialize(Probe) {
        Err(Fields(fields)) => fields.iter().map(|f| f.to_string()).collect(),
        Ok(_) => unreachable!("the probe deserializes nothing"),
    }
}

/// `'key' => Type` of a `Struct[{ ... }]` type alias, in declaration order.
fn puppet_struct_keys(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut keys = Vec::new();
    for line in text.lines().map(str::trim) {
        let line = line.strip_prefix("Optional[").unwrap_or(line);
        let Some(rest) = line.strip_prefix('\'') else {
            continue;
        };
        let (key, rest) = rest.split_once('\'').unwrap();
        let ty = rest
            .split_once("=>")
            .unwrap()
            .1
            .trim()
            .trim_end_matches(',');
        keys.push((key.to_string(), ty.to_string()));
    }
    keys
}

#[test]
fn module_types_match_site_toml_key_for_key() {
    let sections: BTreeMap<&str, Vec<String>> = BTreeMap::from([
        ("node", serde_keys::<NodeSection>()),
        ("serf", serde_keys::<SerfSection>()),
        ("transmission", serde_keys::<TransmissionSection>()),
        ("puppet", serde_keys::<PuppetSection>()),
        ("agent", serde_keys::<AgentSection>()),
        ("nat", serde_keys::<NatSection>()),
        ("time", serde_keys::<TimeSection>()),
        ("transfer", serde_keys::<TransferSection>()),
        ("paths", serde_keys::<PathsSection>()),
    ]);
    // A new section needs a line above, and then a type alias and a class parameter.
    let mut site_sections = serde_keys::<SiteToml>();
    site_sections.sort();
    assert_eq!(
        site_sections,
        sections.keys().map(|s| s.to_string()).collect::<Vec<_>>()
    );
    let defaults = toml::Value::try_from(SiteToml::default()).unwrap();
    let class = std::fs::read_to_string(module_dir().join("manifests/init.pp")).unwrap();
    let mut problems = Vec::new();
    for (section, site_keys) in &sections {
        let alias = format!("P2pu::{}{}", section[..1].to_uppercase(), &section[1..]);
        if !class.contains(&format!("  {alias} ${section} = {{}},")) {
            problems.push(format!("class p2pu has no parameter `{alias} ${section}`"));
        }
        let declared = puppet_struct_keys(&module_dir().join(format!("types/{section}.pp")));
        let names: Vec<&str> = declared.iter().map(|(k, _)| k.as_str()).collect();
        let missing: Vec<&str> = site_keys
            .iter()
            .map(String::as_str)
            .filter(|k| !names.contains(k))
            .collect();
        let extra: Vec<&str> = names
            .iter()
            .copied()
            .filter(|k| !site_keys.iter().any(|s| s == k))
            .collect();
        if !missing.is_empty() {
            problems.push(format!("{alias} lacks [{section}] keys {missing:?}"));
        }
        if !extra.is_empty() {
            problems.push(format!("{alias} has keys site.toml does not: {extra:?}"));
        }
        // The Puppet type must accept the kind of value the key's default is.
        for (key, ty) in &declared {
            let Some(default) = defaults.get(section).and_then(|s| s.get(key)) else {
                continue;
            };
            let heads: &[&str] = match default {
                toml::Value::Boolean(_) => &["Boolean"],
                toml::Value::Integer(_) => &["Integer", "P2pu::Port"],
                toml::Value::String(_) => {
                    &["String", "Enum", "Pattern", "P2pu::Path", "Variant[String"]
                }
                toml::Value::Array(_) => &["Array"],
                toml::Value::Table(_) => &["Hash"],
                other => panic!("no Puppet type for {other:?}"),
            };
            if !heads.iter().any(|h| ty.starts_with(h)) {
                problems.push(format!(
                    "{alias}['{key}'] is `{ty}`, but site.toml's default is {default}"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "puppet/p2pu/types drifted from SiteToml (src/config/site.rs):\n{}",
        problems.join("\n")
    );
}

#[test]
fn reference_documents_every_type_as_declared() {
    let reference = std::fs::read_to_string(module_dir().join("REFERENCE.md")).unwrap();
    for path in module_files("pp") {
        if !path.starts_with(module_dir().join("types")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let body = text.split_once(" = ").unwrap().1.trim_end();
        assert!(
            reference.contains(body),
            "REFERENCE.md is out of date for {} (regenerate it: `puppet strings generate --format markdown` in puppet/p2pu)",
            path.display()
        );
    }
}

#[test]
fn examples_compile_against_the_module() {
    let work = tempfile::tempdir().unwrap();
    let modules = work.path().join("modules");
    std::fs::create_dir(&modules).unwrap();
    std::os::unix::fs::symlink(module_dir(), modules.join("p2pu")).unwrap();
    let puppet = Puppet {
        vardir_root: Some(work.path().join("puppet")),
        modulepath: vec![modules],
        // Compiles against the types and writes nothing.
        extra_flags: vec!["--noop".into()],
        ..Puppet::default()
    };
    let examples = module_files("pp")
        .into_iter()
        .filter(|p| p.starts_with(module_dir().join("examples")))
        .collect::<Vec<_>>();
    assert!(!examples.is_empty());
    for example in examples {
        if let Err(e) = puppet.apply(&example) {
            panic!("{}: {e}", example.display());
        }
    }
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
