//! `p2pu config check|show`: validate a site.toml as `init` would, and print it with every
//! default filled in. The hidden `config-get` (one value, for install/install.sh) stays as is.

use crate::cmd::{ConfigArg, Outcome};
use crate::config::{Config, MachineFacts};
use crate::error::Error;
use crate::{Env, Result};
use std::io::Write;

/// Validate a site.toml, or print it with every default filled in.
#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    Check(Check),
    Show(Show),
}

/// Where the config is and whose machine resolves it.
#[derive(Debug, clap::Args)]
pub struct Source {
    #[command(flatten)]
    config: ConfigArg,
    /// Resolve it as in an image build: leave node.name and serf.advertise to the device
    /// (default: take them from this machine, as `init` does).
    #[arg(long)]
    image: bool,
}

impl Source {
    fn load(&self, env: &Env) -> Result<Config> {
        let facts = (!self.image).then(MachineFacts::probe);
        Ok(Config::load(&self.config.resolve(env), facts.as_ref())?)
    }
}

/// Check a site.toml: syntax, unknown keys, addresses, paths and conflicting ports.
///
/// Prints `PATH: ok` and exits 0, or names the file, line, key and value that is wrong and
/// exits 1.
#[derive(Debug, clap::Args)]
pub struct Check {
    #[command(flatten)]
    source: Source,
}

/// Print a site.toml as p2pu reads it: every key, defaults filled in, as TOML.
#[derive(Debug, clap::Args)]
pub struct Show {
    #[command(flatten)]
    source: Source,
}

impl ConfigCommand {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let text = match self {
            ConfigCommand::Check(c) => {
                let config = c.source.load(env)?;
                format!("{}: ok\n", config.source.display())
            }
            ConfigCommand::Show(c) => resolved_toml(&c.source.load(env)?)?,
        };
        env.stdout
            .write_all(text.as_bytes())
            .map_err(Error::io("writing to", "standard output"))?;
        Ok(Outcome::Success)
    }
}

/// The site's settings as TOML, with the node-specific values this machine resolved.
fn resolved_toml(config: &Config) -> Result<String> {
    let mut whole = toml::Value::try_from(&config.site)
        .map_err(|e| Error::Internal(format!("site.toml does not serialise: {e}")))?;
    let resolved = [
        ("node", "name", config.node_name.clone()),
        ("serf", "advertise", config.advertise.map(|a| a.to_string())),
    ];
    for (section, key, value) in resolved {
        let table = whole.get_mut(section).and_then(toml::Value::as_table_mut);
        if let (Some(table), Some(value)) = (table, value) {
            table
                .entry(key)
                .or_insert_with(|| toml::Value::String(value));
        }
    }
    toml::to_string(&whole).map_err(|e| Error::Internal(format!("site.toml does not print: {e}")))
}

#[cfg(test)]
mod tests {
    use crate::cmd::testing::{run, site_dir};

    #[test]
    fn check_says_ok_or_names_the_file_line_and_key() {
        let dir = site_dir("[transmission]\npeer_port = 51413\n");
        let (code, out, err) = run(dir.path(), &["config", "check", "--config", "site.toml"]);
        assert_eq!((code, err.as_str()), (0, ""));
        assert!(out.ends_with("site.toml: ok\n"), "{out}");

        let dir = site_dir("[agent]\nstate_dir = \"relative\"\n");
        let (code, out, err) = run(dir.path(), &["config", "check", "--config", "site.toml"]);
        assert_eq!((code, out.as_str()), (1, ""));
        assert!(
            err.contains("site.toml:2") && err.contains("agent.state_dir"),
            "{err}"
        );
    }

    #[test]
    fn show_prints_every_default_and_reparses_to_the_same_config() {
        let site = "[serf]\njoin = [\"10.0.0.1\"]\n";
        let dir = site_dir(site);
        let args = ["config", "show", "--image", "--config", "site.toml"];
        let (code, out, err) = run(dir.path(), &args);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("state_dir = \"/var/lib/p2pu\""), "{out}");
        assert!(out.contains("peer_port = 51413"), "{out}");
        assert!(out.contains("\"10.0.0.1\""), "{out}");
        let path = std::path::Path::new("site.toml");
        let shown = crate::config::Config::from_str(path, &out, None).unwrap();
        let original = crate::config::Config::from_str(path, site, None).unwrap();
        assert_eq!(shown.site, original.site);
    }
}
