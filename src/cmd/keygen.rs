//! `p2pu keygen`: creates the operator's Ed25519 key pair that signs announcements.

use crate::cmd::Outcome;
use crate::error::Error;
use crate::fsutil::write_atomic;
use crate::keys::{self, KeyFileError, KeyId, PublicKey, PUBLIC_FILE, SECRET_FILE};
use crate::{Env, Result};
use std::io::Write;
use std::path::PathBuf;

/// Create an Ed25519 key pair for signing announcements.
///
/// Writes DIR/signing.key (mode 0600) and DIR/signing.pub and prints the key id. Install
/// signing.pub on every node with `p2pu key trust`.
#[derive(Debug, clap::Args)]
pub struct Keygen {
    /// Directory for signing.key and signing.pub (created if missing).
    #[arg(short = 'o', long, value_name = "DIR")]
    out: PathBuf,
    /// Overwrite an existing key pair.
    #[arg(long)]
    force: bool,
    /// Comment stored in signing.pub [default: p2pu@<hostname>].
    #[arg(long, value_name = "TEXT")]
    comment: Option<String>,
}

impl Keygen {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let dir = env.resolve(&self.out);
        let (secret_path, public_path) = (dir.join(SECRET_FILE), dir.join(PUBLIC_FILE));
        if !self.force {
            for path in [&secret_path, &public_path] {
                // symlink_metadata: a dangling symlink is in the way too.
                if path.symlink_metadata().is_ok() {
                    return Err(KeyFileError::Exists { path: path.clone() }.into());
                }
            }
        }
        let comment = self.comment.unwrap_or_else(default_comment);
        keys::validate_comment(&comment)?;
        let secret = keys::generate();
        let public = PublicKey {
            key: secret.verifying_key(),
            comment,
        };
        write_atomic(
            &secret_path,
            keys::secret_to_text(&secret).as_bytes(),
            0o600,
        )?;
        write_atomic(&public_path, public.to_text().as_bytes(), 0o644)?;
        writeln!(
            env.stderr,
            "wrote {} and {}",
            secret_path.display(),
            public_path.display()
        )
        .map_err(Error::io("writing to", "stderr"))?;
        writeln!(env.stdout, "{}", KeyId::of(&public.key))
            .map_err(Error::io("writing to", "stdout"))?;
        Ok(Outcome::Success)
    }
}

fn default_comment() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    format!("p2pu@{host}")
}

#[cfg(test)]
mod tests {
    use crate::cmd::testing::run;
    use crate::keys::{read_any_public, read_secret, KeyId, PublicKey};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_key_pair_and_prints_kid() {
        let dir = tempfile::tempdir().unwrap();
        let (code, out, err) = run(dir.path(), &["keygen", "--out", "k", "--comment", "ops"]);
        assert_eq!(code, 0, "{err}");
        let secret_path = dir.path().join("k/signing.key");
        let mode = std::fs::metadata(&secret_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let secret = read_secret(&secret_path).unwrap();
        let public_text = std::fs::read(dir.path().join("k/signing.pub")).unwrap();
        let public = PublicKey::parse(&public_text, "signing.pub").unwrap();
        assert_eq!(public.key, secret.verifying_key());
        assert_eq!(public.comment, "ops");
        assert_eq!(out, format!("{}\n", KeyId::of(&public.key)));
        assert!(err.contains("signing.key"));
    }

    #[test]
    fn refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(run(dir.path(), &["keygen", "--out", "."]).0, 0);
        let before = read_any_public(&dir.path().join("signing.pub")).unwrap();
        let (code, _, err) = run(dir.path(), &["keygen", "--out", "."]);
        assert_eq!(code, 1);
        assert!(err.contains("already exists (use --force"), "{err}");
        assert_eq!(
            read_any_public(&dir.path().join("signing.pub")).unwrap(),
            before
        );
        assert_eq!(run(dir.path(), &["keygen", "--out", ".", "--force"]).0, 0);
        assert_ne!(
            read_any_public(&dir.path().join("signing.pub")).unwrap(),
            before
        );
    }
}
