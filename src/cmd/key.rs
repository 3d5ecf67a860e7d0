//! `p2pu key id|trust|revoke|list`: inspects key files and manages a node's trusted-keys
//! directory (formats in [`crate::keys`]).

use crate::cmd::Outcome;
use crate::error::Error;
use crate::keys::{self, KeyChange, KeyId, PublicKey, TrustedKeys};
use crate::{Env, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;

/// Inspect key files and manage the trusted keys.
#[derive(Debug, clap::Subcommand)]
pub enum Key {
    Id(Id),
    Trust(Trust),
    Revoke(Revoke),
    List(List),
}

/// Print the key id of a public or secret key file.
#[derive(Debug, clap::Args)]
pub struct Id {
    /// A signing.pub / *.pub or signing.key file.
    #[arg(value_name = "PATH")]
    path: PathBuf,
}

/// Trust a public key: install it in the trusted-keys directory.
#[derive(Debug, clap::Args)]
pub struct Trust {
    /// The public key file (as written by `p2pu keygen`).
    #[arg(value_name = "PUBFILE")]
    pubfile: PathBuf,
    /// The trusted-keys directory (created if missing).
    #[arg(long, value_name = "TRUSTED_DIR", env = "P2PU_TRUSTED_KEYS")]
    dir: PathBuf,
}

/// Revoke a key id: announcements it signs are refused from now on.
///
/// The last trusted key cannot be revoked; trust its successor first.
#[derive(Debug, clap::Args)]
pub struct Revoke {
    /// The key id, 16 hex characters (see `p2pu key id`).
    #[arg(value_name = "KID")]
    kid: KeyId,
    /// The trusted-keys directory.
    #[arg(long, value_name = "TRUSTED_DIR", env = "P2PU_TRUSTED_KEYS")]
    dir: PathBuf,
    /// Why, recorded in the revocation file.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
}

/// List trusted keys (`<kid> <comment>`) and revoked key ids (`<kid> revoked`).
#[derive(Debug, clap::Args)]
pub struct List {
    /// The trusted-keys directory.
    #[arg(long, value_name = "TRUSTED_DIR", env = "P2PU_TRUSTED_KEYS")]
    dir: PathBuf,
    /// Print JSON (a KeyListReport) instead of lines.
    #[arg(long)]
    json: bool,
}

/// `p2pu key list --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyListReport {
    pub trusted: Vec<TrustedKeyReport>,
    /// Revoked key ids, 16 hex characters each.
    pub revoked: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKeyReport {
    pub kid: String,
    pub comment: String,
}

impl Key {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let lines = match self {
            Key::Id(id) => {
                let key = keys::read_any_public(&env.resolve(&id.path))?;
                vec![KeyId::of(&key).to_string()]
            }
            Key::Trust(trust) => {
                let path = env.resolve(&trust.pubfile);
                let bytes = std::fs::read(&path).map_err(Error::io("reading", &path))?;
                let key = PublicKey::parse(&bytes, &path.display().to_string())?;
                let change = TrustedKeys::add(&env.resolve(&trust.dir), &key)?;
                vec![describe(change)]
            }
            Key::Revoke(revoke) => {
                let dir = env.resolve(&revoke.dir);
                vec![describe(TrustedKeys::revoke(
                    &dir,
                    revoke.kid,
                    revoke.reason.as_deref().unwrap_or_default(),
                )?)]
            }
            Key::List(list) => {
                let set = TrustedKeys::load(&env.resolve(&list.dir))?;
                let report = KeyListReport {
                    trusted: set
                        .iter()
                        .map(|(kid, k)| TrustedKeyReport {
                            kid: kid.to_string(),
                            comment: k.key.comment.clone(),
                        })
                        .collect(),
                    revoked: set.revoked().map(ToString::to_string).collect(),
                };
                if list.json {
                    crate::cmd::emit(env, true, &report, |_| String::new())?;
                    return Ok(Outcome::Success);
                }
                let trusted = report
                    .trusted
                    .iter()
                    .map(|k| format!("{} {}", k.kid, k.comment));
                let revoked = report.revoked.iter().map(|kid| format!("{kid} revoked"));
                trusted.chain(revoked).collect()
            }
        };
        for line in lines {
            writeln!(env.stdout, "{}", line.trim_end())
                .map_err(Error::io("writing to", "stdout"))?;
        }
        Ok(Outcome::Success)
    }
}

fn describe(change: KeyChange) -> String {
    match change {
        KeyChange::Trusted(kid) => format!("{kid} trusted"),
        KeyChange::AlreadyTrusted(kid) => format!("{kid} already trusted"),
        KeyChange::Revoked(kid) => format!("{kid} revoked"),
        KeyChange::AlreadyRevoked(kid) => format!("{kid} already revoked"),
        KeyChange::Delegated(kid) => format!("{kid} trusted within its key statement"),
        KeyChange::Root(version) => format!("root version {version}"),
        KeyChange::RootUnchanged(version) => format!("root version {version}, unchanged"),
    }
}

#[cfg(test)]
mod tests {
    use crate::cmd::testing::run;
    use std::path::Path;

    fn keygen(dir: &Path, out: &str) -> String {
        let (code, kid, err) = run(dir, &["keygen", "--out", out, "--comment", out]);
        assert_eq!(code, 0, "{err}");
        kid.trim().to_string()
    }

    #[test]
    fn id_of_public_and_secret_key_agree() {
        let dir = tempfile::tempdir().unwrap();
        let kid = keygen(dir.path(), "a");
        assert_eq!(
            run(dir.path(), &["key", "id", "a/signing.pub"]).1,
            format!("{kid}\n")
        );
        assert_eq!(
            run(dir.path(), &["key", "id", "a/signing.key"]).1,
            format!("{kid}\n")
        );
        let (code, _, err) = run(dir.path(), &["key", "id", "missing.pub"]);
        assert_eq!(code, 1);
        assert!(
            err.starts_with("error: reading ") && err.contains("missing.pub"),
            "{err}"
        );
    }

    #[test]
    fn trust_list_and_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (keygen(dir.path(), "a"), keygen(dir.path(), "b"));
        let trust = |who: &str| run(dir.path(), &["key", "trust", who, "--dir", "t"]);
        assert_eq!(trust("a/signing.pub").1, format!("{a} trusted\n"));
        assert_eq!(trust("a/signing.pub").1, format!("{a} already trusted\n"));

        let (code, _, err) = run(dir.path(), &["key", "revoke", &a, "--dir", "t"]);
        assert_eq!(code, 1);
        assert!(err.contains("last trusted key"), "{err}");

        assert_eq!(trust("b/signing.pub").0, 0);
        let revoke = run(
            dir.path(),
            &["key", "revoke", &a, "--dir", "t", "--reason", "lost"],
        );
        assert_eq!(revoke.1, format!("{a} revoked\n"));
        let list = run(dir.path(), &["key", "list", "--dir", "t"]).1;
        assert_eq!(list, format!("{b} b\n{a} revoked\n"));
        let json = run(dir.path(), &["key", "list", "--dir", "t", "--json"]).1;
        let report: super::KeyListReport = serde_json::from_str(&json).unwrap();
        assert_eq!(
            report,
            super::KeyListReport {
                trusted: vec![super::TrustedKeyReport {
                    kid: b.clone(),
                    comment: "b".into()
                }],
                revoked: vec![a.clone()],
            }
        );

        let (code, _, err) = run(dir.path(), &["key", "revoke", "xyz", "--dir", "t"]);
        assert_eq!(code, 2, "clap rejects a bad kid");
        assert!(err.contains("16 hex"), "{err}");
    }
}
