//! `p2pu key id|trust|revoke|list|delegate|rotate-root`: inspects key files, manages a
//! node's trusted-keys directory (formats in [`crate::keys`]), and writes the signed key
//! statements and root documents that `submit` sends as `key` updates ([`crate::trust`]).

use crate::cmd::{ConfigArg, Outcome};
use crate::config::Config;
use crate::error::Error;
use crate::formats::announcement::{FleetId, Kind};
use crate::formats::delegation::{Delegation, Grant};
use crate::formats::document::SignedDocument;
use crate::formats::root::{RootDoc, ROOT_NAME};
use crate::keys::{self, KeyChange, KeyId, PublicKey, TrustedKeys, TrustedKeysDir};
use crate::{Env, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Inspect key files and manage the trusted keys.
#[derive(Debug, clap::Subcommand)]
pub enum Key {
    Id(Id),
    Trust(Trust),
    Revoke(Revoke),
    List(List),
    Delegate(Delegate),
    RotateRoot(RotateRoot),
}

/// Write a key statement: KEY may sign only updates of NAMES and KINDS, for TARGETS.
///
/// Signed by root keys (--sign, default agent.signing_key); agent.key_threshold of them must
/// sign before nodes take it. A co-signer adds their signature to the file with --with-sig
/// FILE --sign THEIR.key. Send it with `p2pu submit FILE`: it is a `key` update.
#[derive(Debug, clap::Args)]
pub struct Delegate {
    /// The delegated key's public key file.
    #[arg(long, value_name = "PUBFILE", required_unless_present = "with_sig")]
    key: Option<PathBuf>,
    /// Name globs the key may sign (`*` any run, `?` one character), comma-separated.
    #[arg(long, value_delimiter = ',', required_unless_present = "with_sig")]
    names: Vec<String>,
    /// Kinds the key may sign, comma-separated (never `key`).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        required_unless_present = "with_sig"
    )]
    kinds: Vec<Kind>,
    /// A target selector the key may sign for (`tag:KEY=GLOB`, `name:GLOB`, `nodes:a,b`);
    /// repeat for more. None: any target, the whole fleet included.
    #[arg(long = "target", value_name = "SELECTOR")]
    targets: Vec<String>,
    /// Days until the statement expires.
    #[arg(long, default_value_t = 365)]
    days: u64,
    /// Statements of the same grant (files this command wrote): their signatures are kept and
    /// --sign adds to them.
    #[arg(long, value_name = "FILE", num_args = 1.., conflicts_with = "key")]
    with_sig: Vec<PathBuf>,
    #[command(flatten)]
    signing: Signing,
}

/// Write the next root document: KEYS become the fleet's root keys, THRESHOLD of them needed.
///
/// Version n+1 of the chain kept in --dir; it counts only when signed by the threshold of
/// version n's keys (before the first document: agent.key_threshold of the trusted keys) and
/// by THRESHOLD of the new KEYS. Writes the whole chain to --out (default `p2pu-root`, the
/// name nodes take root chains under); send it with `p2pu submit p2pu-root`, then
/// `p2pu key rotate-root --with-sig p2pu-root --sign ...` for each further signer first.
#[derive(Debug, clap::Args)]
pub struct RotateRoot {
    /// The new root keys' public key files, comma-separated.
    #[arg(long, value_delimiter = ',', required_unless_present = "with_sig")]
    keys: Vec<PathBuf>,
    /// How many of the new root keys must sign the next version and key updates.
    #[arg(long, required_unless_present = "with_sig")]
    threshold: Option<u64>,
    /// Days until this root version expires (a node refuses a chain whose newest expired).
    #[arg(long, default_value_t = 365)]
    days: u64,
    /// The trusted-keys directory whose chain (`root.N`) the new version follows.
    #[arg(long, value_name = "TRUSTED_DIR", env = "P2PU_TRUSTED_KEYS")]
    dir: Option<PathBuf>,
    /// Chains this command wrote for the same new version: their signatures are kept and
    /// --sign adds to them.
    #[arg(long, value_name = "FILE", num_args = 1.., conflicts_with = "keys")]
    with_sig: Vec<PathBuf>,
    #[command(flatten)]
    signing: Signing,
}

/// Who signs a statement or root document, and where it goes.
#[derive(Debug, clap::Args)]
pub struct Signing {
    /// A secret key file to sign with; repeat for more. Default: agent.signing_key.
    #[arg(long = "sign", value_name = "KEYFILE")]
    sign: Vec<PathBuf>,
    /// The fleet it is for; default: the config's fleet id.
    #[arg(long)]
    fleet: Option<FleetId>,
    /// Where to write it (default: `<kid>.delegation`, or `p2pu-root`).
    #[arg(short = 'o', long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Print JSON (a SignedDocReport) instead of a line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    config: ConfigArg,
}

/// `p2pu key delegate --json` and `p2pu key rotate-root --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedDocReport {
    /// The file written.
    pub file: PathBuf,
    /// `delegation` or `root`.
    pub what: String,
    /// The delegated key's id, or the root version.
    pub subject: String,
    /// Key ids that have signed it so far.
    pub signers: Vec<String>,
    /// Unix seconds.
    pub expires: u64,
}

impl Signing {
    fn keys(&self, env: &Env) -> Result<Vec<ed25519_dalek::SigningKey>> {
        if self.sign.is_empty() {
            let config = Config::load(&self.config.resolve(env), None)?;
            return Ok(vec![keys::read_secret(&config.site.agent.signing_key)?]);
        }
        self.sign
            .iter()
            .map(|p| Ok(keys::read_secret(&env.resolve(p))?))
            .collect()
    }

    fn fleet(&self, env: &Env) -> Result<FleetId> {
        match self.fleet {
            Some(fleet) => Ok(fleet),
            None => Ok(Config::load(&self.config.resolve(env), None)?.fleet_id()?),
        }
    }

    fn finish(
        &self,
        env: &mut Env,
        default_out: &str,
        text: &str,
        report: SignedDocReport,
    ) -> Result<Outcome> {
        let path = env.resolve(self.out.as_deref().unwrap_or(Path::new(default_out)));
        crate::fsutil::write_atomic(&path, text.as_bytes(), 0o644)?;
        let report = SignedDocReport {
            file: path.clone(),
            ..report
        };
        crate::cmd::emit(env, self.json, &report, |r| {
            format!(
                "{} {} signed by {} into {}; send it with `p2pu submit {}`\n",
                r.what,
                r.subject,
                if r.signers.is_empty() {
                    "nobody".to_string()
                } else {
                    r.signers.join(", ")
                },
                r.file.display(),
                r.file.display()
            )
        })?;
        Ok(Outcome::Success)
    }
}

fn read_text(env: &Env, path: &Path) -> Result<(PathBuf, Vec<u8>)> {
    let path = env.resolve(path);
    let bytes = std::fs::read(&path).map_err(Error::io("reading", &path))?;
    Ok((path, bytes))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Delegate {
    fn run(self, env: &mut Env) -> Result<Outcome> {
        let mut statement = match &self.key {
            Some(key) => Delegation::new(Grant {
                key: keys::read_any_public(&env.resolve(key))?,
                names: self.names.clone(),
                kinds: self.kinds.clone(),
                targets: self.targets.clone(),
                fleet: self.signing.fleet(env)?,
                expires: now_secs().saturating_add(self.days.saturating_mul(86_400)),
            })?,
            None => {
                let mut files = self.with_sig.iter();
                let Some(first) = files.next() else {
                    return Err(Error::Usage("give --key or --with-sig".into()));
                };
                let mut combined = Delegation::decode(&read_text(env, first)?.1)?;
                for file in files {
                    combined.combine(&Delegation::decode(&read_text(env, file)?.1)?)?;
                }
                combined
            }
        };
        if self.key.is_some() || !self.signing.sign.is_empty() {
            for signer in self.signing.keys(env)? {
                statement.sign(&signer)?;
            }
        }
        let report = SignedDocReport {
            file: PathBuf::new(),
            what: "key statement for".into(),
            subject: statement.kid().to_string(),
            signers: statement.kids().iter().map(ToString::to_string).collect(),
            expires: statement.expires(),
        };
        let out = format!("{}.delegation", statement.kid());
        self.signing.finish(env, &out, &statement.to_text(), report)
    }
}

impl RotateRoot {
    fn run(self, env: &mut Env) -> Result<Outcome> {
        let (mut chain, mut next) = match self.threshold {
            Some(threshold) if self.with_sig.is_empty() => {
                let chain = match &self.dir {
                    Some(dir) => kept_chain(&env.resolve(dir))?,
                    None => Vec::new(),
                };
                let version = chain.last().map_or(1, |d: &RootDoc| d.version() + 1);
                let keys = self
                    .keys
                    .iter()
                    .map(|p| Ok(keys::read_any_public(&env.resolve(p))?))
                    .collect::<Result<Vec<_>>>()?;
                let expires = now_secs().saturating_add(self.days.saturating_mul(86_400));
                let doc =
                    RootDoc::new(version, keys, threshold, self.signing.fleet(env)?, expires)?;
                (chain, doc)
            }
            _ => {
                let mut files = self.with_sig.iter();
                let Some(first) = files.next() else {
                    return Err(Error::Usage(
                        "give --keys and --threshold, or --with-sig".into(),
                    ));
                };
                let mut chain = RootDoc::decode_chain(&read_text(env, first)?.1)?;
                let Some(mut next) = chain.pop() else {
                    return Err(Error::Usage(format!(
                        "{} holds no root document",
                        first.display()
                    )));
                };
                for file in files {
                    let other = RootDoc::decode_chain(&read_text(env, file)?.1)?;
                    if let Some(last) = other.last() {
                        next.combine(last)?;
                    }
                }
                (chain, next)
            }
        };
        if self.with_sig.is_empty() || !self.signing.sign.is_empty() {
            for signer in self.signing.keys(env)? {
                next.sign(&signer)?;
            }
        }
        let report = SignedDocReport {
            file: PathBuf::new(),
            what: "root version".into(),
            subject: next.version().to_string(),
            signers: next.kids().iter().map(ToString::to_string).collect(),
            expires: next.expires(),
        };
        chain.push(next);
        let text: String = chain.iter().map(RootDoc::to_text).collect();
        self.signing.finish(env, ROOT_NAME, &text, report)
    }
}

/// The root chain kept in a trusted-keys directory (`root.1`, `root.2`, ...), oldest first.
fn kept_chain(dir: &Path) -> Result<Vec<RootDoc>> {
    let mut chain = Vec::new();
    for version in 1.. {
        let path = dir.join(format!("root.{version}"));
        match std::fs::read(&path) {
            Ok(bytes) => chain.push(RootDoc::decode(&bytes)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(Error::io("reading", &path)(e)),
        }
    }
    Ok(chain)
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

/// List the keys that count (`<kid> <comment>`, a delegated key with its limits) and revoked
/// key ids (`<kid> revoked`).
#[derive(Debug, clap::Args)]
pub struct List {
    /// The trusted-keys directory; default: agent.trusted_keys_dir of --config.
    #[arg(long, value_name = "TRUSTED_DIR", env = "P2PU_TRUSTED_KEYS")]
    dir: Option<PathBuf>,
    #[command(flatten)]
    config: crate::cmd::ConfigArg,
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
    /// The root document's version that decides the root keys; absent before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_version: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKeyReport {
    pub kid: String,
    pub comment: String,
    /// A delegated key's statement, in words; absent for a root key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<String>,
}

impl Key {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let lines = match self {
            Key::Delegate(delegate) => return delegate.run(env),
            Key::RotateRoot(rotate) => return rotate.run(env),
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
                let dir = match &list.dir {
                    Some(dir) => env.resolve(dir),
                    None => {
                        // Issue 29: the dir the agent trusts, as every other command finds it.
                        let path = list.config.resolve(env);
                        let config = crate::config::Config::load(&path, None).map_err(|e| {
                            Error::Usage(format!(
                                "no --dir given, and {} cannot tell agent.trusted_keys_dir: {}; \
                                 give --dir TRUSTED_DIR or --config SITE_TOML",
                                path.display(),
                                crate::error::chain(&e)
                            ))
                        })?;
                        config.site.agent.trusted_keys_dir.clone()
                    }
                };
                let trust = crate::trust::Trust::load(&dir)?;
                let set = &trust.keys;
                let report = KeyListReport {
                    trusted: set
                        .iter()
                        .map(|(kid, k)| TrustedKeyReport {
                            kid: kid.to_string(),
                            comment: k.key.comment.clone(),
                            limits: trust.delegation(kid).filter(|_| !trust.is_root(kid)).map(
                                |d| {
                                    let kinds: Vec<&str> =
                                        d.kinds().iter().map(|k| k.as_str()).collect();
                                    let targets = if d.targets().is_empty() {
                                        "any".to_string()
                                    } else {
                                        d.targets().join(" ")
                                    };
                                    format!(
                                        "names {} kinds {} targets {} until {}",
                                        d.names().join(","),
                                        kinds.join(","),
                                        targets,
                                        d.expires()
                                    )
                                },
                            ),
                        })
                        .collect(),
                    revoked: set.revoked().map(ToString::to_string).collect(),
                    root_version: trust.root().map(RootDoc::version),
                };
                if list.json {
                    crate::cmd::emit(env, true, &report, |_| String::new())?;
                    return Ok(Outcome::Success);
                }
                let trusted = report.trusted.iter().map(|k| match &k.limits {
                    Some(limits) => format!("{} {} [delegated: {limits}]", k.kid, k.comment),
                    None => format!("{} {}", k.kid, k.comment),
                });
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

    /// Issue 29: `key list` without --dir lists the dir the agent trusts
    /// (agent.trusted_keys_dir of --config); an unreadable config says what to give instead.
    #[test]
    fn key_list_falls_back_to_the_configs_trusted_keys_dir() {
        let dir = tempfile::tempdir().unwrap();
        let (code, _, err) = run(dir.path(), &["keygen", "--out", "k"]);
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = run(dir.path(), &["key", "trust", "k/signing.pub", "--dir", "t"]);
        assert_eq!(code, 0, "{err}");
        std::fs::write(
            dir.path().join("site.toml"),
            format!(
                "[agent]\ntrusted_keys_dir = \"{}/t\"\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let by_dir = run(dir.path(), &["key", "list", "--dir", "t"]);
        let by_config = run(dir.path(), &["key", "list", "--config", "site.toml"]);
        assert_eq!(by_config, by_dir);
        assert_eq!(by_config.0, 0);
        assert!(!by_config.1.is_empty());
        let (code, out, err) = run(dir.path(), &["key", "list", "--config", "nope.toml"]);
        assert_eq!((code, out.as_str()), (1, ""));
        assert!(
            err.starts_with(&format!(
                "error: no --dir given, and {}/nope.toml cannot tell agent.trusted_keys_dir: ",
                dir.path().display()
            )) && err.ends_with("; give --dir TRUSTED_DIR or --config SITE_TOML\n"),
            "{err}"
        );
    }

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
        let report: super::KeyListReport = crate::cmd::json::decode(json.as_bytes()).unwrap();
        assert_eq!(
            report,
            super::KeyListReport {
                trusted: vec![super::TrustedKeyReport {
                    kid: b.clone(),
                    comment: "b".into(),
                    limits: None,
                }],
                revoked: vec![a.clone()],
                root_version: None,
            }
        );

        let (code, _, err) = run(dir.path(), &["key", "revoke", "xyz", "--dir", "t"]);
        assert_eq!(code, 2, "clap rejects a bad kid");
        assert!(err.contains("16 hex"), "{err}");
    }

    const FLEET: &str = "0707070707070707";

    #[test]
    fn delegate_writes_a_statement_co_signers_add_to() {
        use crate::formats::delegation::Delegation;
        let dir = tempfile::tempdir().unwrap();
        let (r1, r2, cam) = (
            keygen(dir.path(), "r1"),
            keygen(dir.path(), "r2"),
            keygen(dir.path(), "cam"),
        );
        let (code, out, err) = run(
            dir.path(),
            &[
                "key",
                "delegate",
                "--key",
                "cam/signing.pub",
                "--names",
                "cam-*,cam.pp",
                "--kinds",
                "manifest,file",
                "--target",
                "tag:role=camera",
                "--fleet",
                FLEET,
                "--sign",
                "r1/signing.key",
            ],
        );
        assert_eq!(code, 0, "{err}");
        let file = dir.path().join(format!("{cam}.delegation"));
        assert_eq!(
            out,
            format!(
                "key statement for {cam} signed by {r1} into {f}; send it with `p2pu submit {f}`\n",
                f = file.display()
            )
        );
        let arg = file.to_str().unwrap();
        let (code, json, err) = run(
            dir.path(),
            &[
                "key",
                "delegate",
                "--with-sig",
                arg,
                "--sign",
                "r2/signing.key",
                "--out",
                arg,
                "--json",
            ],
        );
        assert_eq!(code, 0, "{err}");
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let departures = crate::cmd::json::departures("key delegate", &value);
        assert!(departures.is_empty(), "docs/json.md: {departures:?}");
        let report: super::SignedDocReport = crate::cmd::json::decode(json.as_bytes()).unwrap();
        let mut both = vec![r1.clone(), r2.clone()];
        both.sort();
        assert_eq!(report.signers, both);
        let d = Delegation::decode(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(d.names(), ["cam-*", "cam.pp"]);
        assert_eq!(d.targets(), ["tag:role=camera"]);
        assert_eq!(d.fleet().to_string(), FLEET);
        // Kept in a trusted dir, the key is listed with its limits.
        std::fs::create_dir(dir.path().join("t")).unwrap();
        std::fs::copy(&file, dir.path().join(format!("t/{cam}.delegation"))).unwrap();
        for who in ["r1", "cam"] {
            let pubfile = format!("{who}/signing.pub");
            assert_eq!(
                run(dir.path(), &["key", "trust", &pubfile, "--dir", "t"]).0,
                0
            );
        }
        let list = run(dir.path(), &["key", "list", "--dir", "t"]).1;
        let want = format!(
            "{cam} cam [delegated: names cam-*,cam.pp kinds file,manifest targets tag:role=camera until {}]",
            d.expires()
        );
        assert!(list.contains(&want), "{list}");
        assert!(list.contains(&format!("{r1} r1\n")), "{list}");

        // Never `key`; the flag and value are named.
        let (code, _, err) = run(
            dir.path(),
            &[
                "key",
                "delegate",
                "--key",
                "cam/signing.pub",
                "--names",
                "x",
                "--kinds",
                "key",
                "--fleet",
                FLEET,
                "--sign",
                "r1/signing.key",
            ],
        );
        assert_eq!(code, 1);
        assert!(err.contains("never signs key updates"), "{err}");
    }

    #[test]
    fn rotate_root_writes_the_next_version_after_the_kept_chain() {
        use crate::formats::document::SignedDocument;
        use crate::formats::root::RootDoc;
        let dir = tempfile::tempdir().unwrap();
        for who in ["old", "a", "b", "c"] {
            keygen(dir.path(), who);
        }
        let rotate = |keys: &str, signers: &[&str], out: &str| {
            let mut args = vec![
                "key",
                "rotate-root",
                "--keys",
                keys,
                "--threshold",
                "2",
                "--dir",
                "t",
                "--fleet",
                FLEET,
                "--out",
                out,
            ];
            for s in signers {
                args.extend(["--sign", s]);
            }
            run(dir.path(), &args)
        };
        let (code, out, err) = rotate(
            "a/signing.pub,b/signing.pub",
            &["old/signing.key", "a/signing.key", "b/signing.key"],
            "chain",
        );
        assert_eq!(code, 0, "{err}");
        assert!(out.starts_with("root version 1 signed by "), "{out}");
        let chain =
            RootDoc::decode_chain(&std::fs::read(dir.path().join("chain")).unwrap()).unwrap();
        assert_eq!(chain.len(), 1);
        let old = crate::keys::read_any_public(&dir.path().join("old/signing.pub")).unwrap();
        chain[0]
            .follows(0, &[old], 1, FLEET.parse().unwrap())
            .unwrap();

        // Kept as root.1, the next rotation is version 2 and carries the whole chain.
        std::fs::create_dir(dir.path().join("t")).unwrap();
        std::fs::write(dir.path().join("t/root.1"), chain[0].to_text()).unwrap();
        let (code, _, err) = rotate(
            "b/signing.pub,c/signing.pub",
            &["a/signing.key", "b/signing.key", "c/signing.key"],
            "chain2",
        );
        assert_eq!(code, 0, "{err}");
        let chain2 =
            RootDoc::decode_chain(&std::fs::read(dir.path().join("chain2")).unwrap()).unwrap();
        assert_eq!(chain2.len(), 2);
        chain2[1]
            .follows(
                1,
                chain2[0].keys(),
                chain2[0].threshold(),
                FLEET.parse().unwrap(),
            )
            .unwrap();

        let (code, _, err) = rotate("a/signing.pub", &["old/signing.key"], "bad");
        assert_eq!(code, 1);
        assert!(err.contains("threshold"), "{err}");
    }
}
