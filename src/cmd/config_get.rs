//! `p2pu config-get KEY`: prints one value of a site.toml with its defaults filled in, so
//! shell scripts (install/install.sh) find the paths a site chose without parsing TOML.

use crate::cmd::{ConfigArg, Outcome};
use crate::config::Config;
use crate::error::Error;
use crate::{Env, Result};
use std::io::Write;

/// Print the value of KEY (e.g. `agent.signing_key`) from the site config, defaults applied.
///
/// Strings and paths print bare, one line; arrays one element a line; tables as TOML.
#[derive(Debug, clap::Args)]
pub struct ConfigGet {
    /// Dotted key: section.key.
    #[arg(value_name = "KEY")]
    key: String,
    #[command(flatten)]
    config: ConfigArg,
}

impl ConfigGet {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let path = self.config.resolve(env);
        // No machine facts: the value asked for is the configured one, as in an image build.
        let config = Config::load(&path, None)?;
        let whole = toml::Value::try_from(&config.site)
            .map_err(|e| Error::Internal(format!("site.toml does not serialise: {e}")))?;
        let mut value = &whole;
        for part in self.key.split('.') {
            value = value.get(part).ok_or_else(|| {
                Error::Usage(format!(
                    "{}: no key `{}` in site.toml (or it has no value and no default)",
                    path.display(),
                    self.key
                ))
            })?;
        }
        let text = match value {
            toml::Value::String(s) => format!("{s}\n"),
            toml::Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => format!("{s}\n"),
                    other => format!("{other}\n"),
                })
                .collect(),
            toml::Value::Table(table) => toml::to_string(table)
                .map_err(|e| Error::Internal(format!("table does not serialise: {e}")))?,
            other => format!("{other}\n"),
        };
        env.stdout
            .write_all(text.as_bytes())
            .map_err(Error::io("writing to", "standard output"))?;
        Ok(Outcome::Success)
    }
}

#[cfg(test)]
mod tests {
    use crate::cmd::testing::{run, site_dir};

    /// `p2pu config-get KEY` of a config holding `site`.
    fn get(site: &str, key: &str) -> (i32, String, String) {
        let dir = site_dir(site);
        run(dir.path(), &["config-get", "--config", "site.toml", key])
    }

    #[test]
    fn prints_defaults_and_configured_values_bare() {
        let site = "[agent]\nsigning_key = \"/srv/keys/signing.key\"\n";
        assert_eq!(get(site, "agent.signing_key").1, "/srv/keys/signing.key\n");
        assert_eq!(
            get(site, "agent.trusted_keys_dir").1,
            "/etc/p2pu/trusted-keys\n"
        );
        assert_eq!(get(site, "transmission.peer_port").1, "51413\n");
        assert_eq!(
            get("[serf]\njoin = [\"a\", \"b\"]\n", "serf.join").1,
            "a\nb\n"
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let (code, out, err) = get("", "agent.nope");
        assert_eq!(code, 1);
        assert_eq!(out, "");
        assert!(err.contains("no key `agent.nope`"), "{err}");
    }
}
