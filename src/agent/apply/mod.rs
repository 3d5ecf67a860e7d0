//! Applies a downloaded, verified payload by its kind: a manifest with `puppet apply`, a module
//! with `puppet module install`, an archive by safe extraction, a key into the trusted-key
//! store, a directory member by member, a plain file kept where it is.
//!
//! Only a [`Verified`] copy is applied (the root-only copy that was hashed, see
//! [`crate::agent::transfer::verified`]), never a path into the download dir, which Transmission's user could
//! change after the check. The copy is removed after applying; a `file` keeps it and says where.
//!
//! Each update name unpacks into its own directory, `archive_dir/<name>` with the whole name
//! (`site.tar.gz`, `site.zip` and `site.tgz` are three names and three directories), so an
//! older update of one name never replaces what another name unpacked. An archive member of a
//! `dir` update unpacks inside that update's own tree, at `<member>.d` beside the member.

pub mod check;
pub mod extract;
pub mod good;
pub mod kind;

use self::extract::{ArchiveFormat, Limits};
use crate::agent::transfer::verified::Verified;
use crate::engines::{Applier, ApplyStatus};
use crate::formats::announcement::{Announcement, Kind};
use crate::trust::KeyPolicy;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("puppet")]
    Puppet(#[from] crate::engines::PuppetError),
    #[error("extracting {}", path.display())]
    Extract {
        path: PathBuf,
        #[source]
        source: extract::ExtractError,
    },
    #[error("{} is not an archive p2pu can extract (.tar.gz, .tgz or .zip)", path.display())]
    NotAnArchive { path: PathBuf },
    #[error("key update")]
    Key(#[source] Box<crate::error::Error>),
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("detecting the kind of {}", path.display())]
    Kind {
        path: PathBuf,
        #[source]
        source: self::kind::KindError,
    },
    #[error("{0} updates cannot be applied here: {1}")]
    Unsupported(&'static str, String),
    #[error("update name {name:?} is not one plain path component")]
    BadName { name: String },
    #[error("dir member {member} would unpack into {}, which the same update already holds", target.display())]
    MemberCollision { member: String, target: PathBuf },
}

impl ApplyError {
    /// Puppet's output when Puppet failed, for the status record.
    pub fn output(&self) -> Option<&str> {
        match self {
            ApplyError::Puppet(e) => e.output(),
            _ => None,
        }
    }

    /// Whether applying the same verified payload again could succeed: Puppet's world changes
    /// (a package mirror back, a module installed since), the disk may have room again. A
    /// refusal of the payload itself (a hostile archive, a bad name, a key update that does
    /// not verify) would be refused again, so it is not retried.
    pub fn may_pass_later(&self) -> bool {
        match self {
            ApplyError::Puppet(_) | ApplyError::Read { .. } => true,
            // Writing out (a full disk, say) may work later; what the archive holds will not
            // change.
            ApplyError::Extract { source, .. } => matches!(
                source,
                extract::ExtractError::Write { .. }
                    | extract::ExtractError::Target { .. }
                    | extract::ExtractError::OpenArchive { .. }
            ),
            ApplyError::NotAnArchive { .. }
            | ApplyError::Key(_)
            | ApplyError::Kind { .. }
            | ApplyError::Unsupported(..)
            | ApplyError::BadName { .. }
            | ApplyError::MemberCollision { .. } => false,
        }
    }

    /// The reason an operator reads first, in `status`, `fleet status` and `submit --wait`:
    /// Puppet's first `Error:` line with the manifest's file:line when Puppet said one (not the
    /// command line that ran it: the whole output stays in the record), else the whole chain.
    pub fn cause(&self) -> String {
        match self {
            ApplyError::Puppet(e) => e.cause().unwrap_or_else(|| crate::error::chain(self)),
            _ => crate::error::chain(self),
        }
    }
}

/// What applying needs from the node.
pub struct ApplyContext<'a> {
    pub puppet: &'a dyn Applier,
    pub modulepath: Option<&'a Path>,
    pub archive_dir: &'a Path,
    pub trusted_keys_dir: &'a Path,
    /// What a `key` update is held to when it is applied.
    pub key_policy: KeyPolicy,
    pub limits: Limits,
}

/// What happened, for the record: a one-line summary and the engine's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub summary: String,
    pub output: String,
}

impl ApplyContext<'_> {
    /// Applies the verified copy of update `name` of `kind`, then removes the copy (a `file`
    /// keeps it: that is where it is kept); `announcement` is required for keys.
    pub fn apply_verified(
        &self,
        kind: Kind,
        name: &str,
        payload: Verified,
        announcement: Option<&Announcement>,
    ) -> Result<Applied, ApplyError> {
        // Names are one plain component on the wire; checked again where it makes a path.
        let mut parts = Path::new(name).components();
        let one_name = matches!(
            (parts.next(), parts.next()),
            (Some(std::path::Component::Normal(_)), None)
        );
        let applied = if one_name {
            let target = self.archive_dir.join(name);
            self.apply(kind, payload.path(), announcement, &target)
        } else {
            Err(ApplyError::BadName {
                name: name.to_string(),
            })
        };
        if kind != Kind::File || applied.is_err() {
            payload.remove();
        }
        applied
    }

    /// Applies `payload` of `kind`; an archive or dir unpacks into `target`.
    fn apply(
        &self,
        kind: Kind,
        payload: &Path,
        announcement: Option<&Announcement>,
        target: &Path,
    ) -> Result<Applied, ApplyError> {
        match kind {
            Kind::Manifest => {
                let report = self.puppet.apply(payload)?;
                let summary = match report.status {
                    ApplyStatus::Changed => "puppet apply: changes made",
                    ApplyStatus::Unchanged => "puppet apply: nothing to change",
                };
                Ok(Applied {
                    summary: summary.into(),
                    output: report.output,
                })
            }
            Kind::Module => {
                let target = self.modulepath.ok_or_else(|| {
                    ApplyError::Unsupported("module", "puppet.modulepath is empty".into())
                })?;
                let installed = self.puppet.module_install(payload, target)?;
                Ok(Applied {
                    summary: format!("module installed into {}", target.display()),
                    output: installed.output,
                })
            }
            Kind::Archive => {
                let report = self.extract(payload, target)?;
                Ok(Applied {
                    summary: format!("extracted into {} ({report})", target.display()),
                    output: String::new(),
                })
            }
            Kind::Key => {
                let announcement = announcement.ok_or_else(|| {
                    ApplyError::Unsupported("key", "no signed announcement (legacy payload)".into())
                })?;
                let bytes = std::fs::read(payload).map_err(|source| ApplyError::Read {
                    path: payload.to_path_buf(),
                    source,
                })?;
                let change = apply_key_update(
                    self.trusted_keys_dir,
                    announcement,
                    &bytes,
                    &self.key_policy,
                )
                .map_err(|e| ApplyError::Key(Box::new(e)))?;
                Ok(Applied {
                    summary: format!("trusted keys: {change}"),
                    output: String::new(),
                })
            }
            Kind::Dir => self.apply_dir(payload, target),
            Kind::File => Ok(Applied {
                summary: format!("kept at {}", payload.display()),
                output: String::new(),
            }),
        }
    }

    fn extract(&self, archive: &Path, target: &Path) -> Result<extract::ExtractReport, ApplyError> {
        let format = ArchiveFormat::from_path(archive).ok_or_else(|| ApplyError::NotAnArchive {
            path: archive.to_path_buf(),
        })?;
        let parent = target.parent().unwrap_or(self.archive_dir);
        std::fs::create_dir_all(parent).map_err(|source| ApplyError::Read {
            path: parent.to_path_buf(),
            source,
        })?;
        extract::extract(archive, format, target, &self.limits).map_err(|source| {
            ApplyError::Extract {
                path: archive.to_path_buf(),
                source,
            }
        })
    }

    /// A directory travels as one archive: unpack it, then apply each top-level member by its
    /// own kind, in name order. Members that are directories are kept as they are.
    fn apply_dir(&self, payload: &Path, target: &Path) -> Result<Applied, ApplyError> {
        self.extract(payload, target)?;
        let mut members: Vec<PathBuf> = std::fs::read_dir(target)
            .map_err(|source| ApplyError::Read {
                path: target.to_path_buf(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        members.sort();
        let mut summary = Vec::new();
        let mut output = String::new();
        for member in members.iter().filter(|m| m.is_file()) {
            let kind = self::kind::detect(member).map_err(|source| ApplyError::Kind {
                path: member.clone(),
                source,
            })?;
            let kind: Kind = kind
                .as_str()
                .parse()
                .map_err(|_| ApplyError::Unsupported("dir", kind.as_str().into()))?;
            if kind == Kind::Key {
                // A key member carries no signature of its own; keys travel as `key` updates.
                summary.push(format!(
                    "{}: key skipped (send keys as key updates)",
                    file_name(member)
                ));
                continue;
            }
            let member_name = file_name(member);
            // Inside this update's own tree: no other name's archive can be replaced by it.
            let member_target = target.join(format!("{member_name}.d"));
            if kind == Kind::Archive && std::fs::symlink_metadata(&member_target).is_ok() {
                return Err(ApplyError::MemberCollision {
                    member: member_name,
                    target: member_target,
                });
            }
            let applied = self.apply(kind, member, None, &member_target)?;
            summary.push(format!("{member_name}: {}", applied.summary));
            output.push_str(&applied.output);
        }
        Ok(Applied {
            summary: summary.join("; "),
            output,
        })
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The kind of a legacy payload, which carries none: by its file name.
pub fn legacy_kind(name: &str) -> Kind {
    if name.ends_with(".pp") {
        Kind::Manifest
    } else {
        Kind::File
    }
}

/// Applying a `key` update is the trust layer's: keys, statements and root chains, each
/// checked again against the keys trusted when it is applied.
pub use crate::trust::apply_key_update;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::puppet::ModuleInstalled;
    use crate::engines::{ApplyReport, PuppetError};
    use crate::formats::announcement::Draft;
    use crate::keys;
    use crate::keys::{
        revocation_text, KeyChange, KeyError, KeyId, PublicKey, TrustedKeys, TrustedKeysDir,
    };
    use ed25519_dalek::SigningKey;
    use sha2::{Digest, Sha256};
    use std::sync::Mutex;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    /// One root signature for a key update, in fleet 0.
    const ONE: KeyPolicy = KeyPolicy {
        key_threshold: 1,
        fleet: crate::formats::announcement::FleetId([0; 8]),
    };

    fn public(n: u8, comment: &str) -> PublicKey {
        PublicKey {
            key: key(n).verifying_key(),
            comment: comment.to_string(),
        }
    }

    fn key_error(result: crate::error::Result<impl std::fmt::Debug>) -> KeyError {
        match result {
            Err(crate::error::Error::Layer(e)) if e.is::<KeyError>() => {
                match e.downcast::<KeyError>() {
                    Ok(e) => *e,
                    Err(e) => panic!("want a KeyError, got {e:?}"),
                }
            }
            other => panic!("want a KeyError, got {other:?}"),
        }
    }

    fn key_announcement(signer: &SigningKey, payload: &[u8], kind: Kind) -> Announcement {
        let draft = Draft {
            seq: 1,
            name: "key.pub".to_string(),
            kind,
            info_hash: [0; 20],
            len: payload.len() as u64,
            sha256: Sha256::digest(payload).into(),
        };
        Announcement::sign(draft, signer).unwrap()
    }

    #[test]
    fn rotation_needs_a_trusted_signer() {
        let dir = tempfile::tempdir().unwrap();
        TrustedKeys::add(dir.path(), &public(1, "old")).unwrap();
        let new = public(2, "new");
        let payload = new.to_text();

        // Signed by an untrusted key: nothing changes.
        let rogue = key_announcement(&key(9), payload.as_bytes(), Kind::Key);
        assert!(matches!(
            apply_key_update(dir.path(), &rogue, payload.as_bytes(), &ONE),
            Err(ref e) if e.layer::<crate::formats::announcement::AnnouncementError>().is_some()
        ));
        assert_eq!(TrustedKeys::load(dir.path()).unwrap().len(), 1);

        // Wrong kind, wrong payload.
        let manifest = key_announcement(&key(1), payload.as_bytes(), Kind::Manifest);
        let err = key_error(apply_key_update(
            dir.path(),
            &manifest,
            payload.as_bytes(),
            &ONE,
        ));
        assert!(matches!(err, KeyError::NotKeyKind { .. }), "{err}");
        let good = key_announcement(&key(1), payload.as_bytes(), Kind::Key);
        let err = key_error(apply_key_update(dir.path(), &good, b"other", &ONE));
        assert!(matches!(err, KeyError::PayloadMismatch { .. }), "{err}");

        // Signed by the trusted key: the new key is trusted.
        let change = apply_key_update(dir.path(), &good, payload.as_bytes(), &ONE).unwrap();
        assert_eq!(change, KeyChange::Trusted(new.kid()));

        // The new key revokes the old one.
        let old_kid = KeyId::of(&key(1).verifying_key());
        let revocation = revocation_text(old_kid, "rotated");
        let revoke = key_announcement(&key(2), revocation.as_bytes(), Kind::Key);
        let change = apply_key_update(dir.path(), &revoke, revocation.as_bytes(), &ONE).unwrap();
        assert_eq!(change, KeyChange::Revoked(old_kid));

        // The old key can no longer sign anything, and the last key cannot be revoked.
        let set = TrustedKeys::load(dir.path()).unwrap();
        assert!(good.verify(&set, None).is_err());
        let last = revocation_text(new.kid(), "");
        let suicide = key_announcement(&key(2), last.as_bytes(), Kind::Key);
        let err = key_error(apply_key_update(
            dir.path(),
            &suicide,
            last.as_bytes(),
            &ONE,
        ));
        assert!(matches!(err, KeyError::LastKey { .. }), "{err}");
    }

    /// Records the manifests it was asked to apply.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Applier for Recorder {
        fn apply(&self, manifest: &Path) -> Result<ApplyReport, PuppetError> {
            self.0.lock().unwrap().push(file_name(manifest));
            Ok(ApplyReport {
                status: ApplyStatus::Unchanged,
                exit_code: 0,
                output: String::new(),
                elapsed: std::time::Duration::ZERO,
            })
        }
        fn module_install(&self, _: &Path, _: &Path) -> Result<ModuleInstalled, PuppetError> {
            unreachable!("no module in this payload")
        }
    }

    #[test]
    fn a_dir_payload_skips_a_key_member_and_applies_the_others() {
        let tmp = tempfile::tempdir().unwrap();
        let source = tmp.path().join("bundle");
        std::fs::create_dir(&source).unwrap();
        std::fs::write(source.join("a.pp"), "notice('a')\n").unwrap();
        let smuggled = keys::PublicKey {
            key: keys::generate().verifying_key(),
            comment: "smuggled".into(),
        };
        std::fs::write(source.join("ops.pub"), smuggled.to_text()).unwrap();
        let payload = tmp.path().join("bundle.tar.gz");
        crate::agent::apply::kind::pack_dir(&source, &payload).unwrap();
        assert_eq!(
            crate::agent::apply::kind::detect(&source.join("ops.pub")).unwrap(),
            Kind::Key,
            "the member looks like a key to the detector"
        );

        let trusted = tmp.path().join("trusted-keys");
        std::fs::create_dir(&trusted).unwrap();
        let puppet = Recorder::default();
        let context = ApplyContext {
            puppet: &puppet,
            modulepath: None,
            archive_dir: &tmp.path().join("archives"),
            trusted_keys_dir: &trusted,
            key_policy: ONE,
            limits: Limits::default(),
        };
        let applied = context
            .apply(
                Kind::Dir,
                &payload,
                None,
                &tmp.path().join("archives/bundle.tar.gz"),
            )
            .unwrap_or_else(|e| panic!("{}", crate::error::chain(&e)));
        assert!(
            applied.summary.contains("ops.pub: key skipped"),
            "{}",
            applied.summary
        );
        assert_eq!(
            *puppet.0.lock().unwrap(),
            ["a.pp"],
            "the other members apply"
        );
        assert_eq!(
            std::fs::read_dir(&trusted).unwrap().count(),
            0,
            "a key only becomes trusted through a signed `key` update"
        );
    }

    /// A verified copy of `payload`, as the fetcher hands it over.
    fn verified_copy(state: &Path, payload: &Path, seq: u64) -> Verified {
        let bytes = std::fs::read(payload).unwrap();
        let sha = hex::encode(Sha256::digest(&bytes));
        let expected = crate::agent::transfer::verified::Expected::Sha256 {
            len: bytes.len() as u64,
            sha256_hex: sha,
        };
        let root = crate::agent::transfer::verified::root_of(state);
        crate::agent::transfer::verified::copy_verified(
            &root,
            payload,
            &"ab".repeat(20),
            seq,
            expected,
        )
        .unwrap()
    }

    fn zip_of(out: &Path, member: &str, text: &str) {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(std::fs::File::create(out).unwrap());
        zip.start_file(member, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(text.as_bytes()).unwrap();
        zip.finish().unwrap();
    }

    fn tar_gz_of(scratch: &Path, out: &Path, member: &str, text: &str) {
        let tree = scratch.join(format!("tree-{}", file_name(out)));
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::write(tree.join(member), text).unwrap();
        crate::agent::apply::kind::pack_dir(&tree, out).unwrap();
    }

    /// Issue #13 item 11: `site.zip`, `site.tar.gz` and a dir's member `site.tar.gz` used to
    /// unpack into the same `archive_dir/site`, so an older update of one name (applied after
    /// a newer one of another, as a node catching up does) replaced it. Each name has its own
    /// directory now.
    #[test]
    fn an_older_update_of_one_name_never_replaces_another_names_archive() {
        let tmp = tempfile::tempdir().unwrap();
        let (scratch, state) = (tmp.path().join("scratch"), tmp.path().join("state"));
        std::fs::create_dir_all(&scratch).unwrap();
        let archives = tmp.path().join("archives");
        let puppet = Recorder::default();
        let context = ApplyContext {
            puppet: &puppet,
            modulepath: None,
            archive_dir: &archives,
            trusted_keys_dir: &tmp.path().join("keys"),
            key_policy: ONE,
            limits: Limits::default(),
        };
        let apply = |kind: Kind, name: &str, payload: &Path, seq: u64| {
            let copy = verified_copy(&state, payload, seq);
            context
                .apply_verified(kind, name, copy, None)
                .unwrap_or_else(|e| panic!("{}", crate::error::chain(&e)));
        };

        // The newest update: site.zip.
        let zip = scratch.join("site.zip");
        zip_of(&zip, "index.html", "newest");
        apply(Kind::Archive, "site.zip", &zip, 3);
        // Older ones of other names arrive later.
        let tar = scratch.join("site.tar.gz");
        tar_gz_of(&scratch, &tar, "index.html", "older");
        apply(Kind::Archive, "site.tar.gz", &tar, 2);
        let member = scratch.join("member").join("site.tar.gz");
        std::fs::create_dir_all(member.parent().unwrap()).unwrap();
        tar_gz_of(&scratch, &member, "index.html", "oldest");
        let bundle = scratch.join("bundle.tar.gz");
        crate::agent::apply::kind::pack_dir(member.parent().unwrap(), &bundle).unwrap();
        apply(Kind::Dir, "bundle.tar.gz", &bundle, 1);

        fn unpacked(dir: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    unpacked(&path, out);
                } else if path.ends_with("index.html") {
                    out.push(std::fs::read_to_string(&path).unwrap());
                }
            }
        }
        let mut contents = Vec::new();
        unpacked(&archives, &mut contents);
        contents.sort();
        assert_eq!(
            contents,
            ["newest", "older", "oldest"],
            "no update replaced another name's"
        );
        let read = |path: &str| std::fs::read_to_string(archives.join(path)).unwrap();
        assert_eq!(read("site.zip/index.html"), "newest");
        assert_eq!(read("site.tar.gz/index.html"), "older");
        assert_eq!(read("bundle.tar.gz/site.tar.gz.d/index.html"), "oldest");
        assert!(!archives.join("site").exists());
        assert_eq!(
            std::fs::read_dir(crate::agent::transfer::verified::root_of(&state))
                .unwrap()
                .count(),
            0,
            "each verified copy is removed once applied"
        );
    }

    /// A `file` update is kept: its verified copy stays, and the summary says where.
    #[test]
    fn a_file_update_keeps_its_verified_copy() {
        let tmp = tempfile::tempdir().unwrap();
        let payload = tmp.path().join("notes.txt");
        std::fs::write(&payload, "kept").unwrap();
        let copy = verified_copy(&tmp.path().join("state"), &payload, 1);
        let kept = copy.path().to_path_buf();
        let puppet = Recorder::default();
        let context = ApplyContext {
            puppet: &puppet,
            modulepath: None,
            archive_dir: &tmp.path().join("archives"),
            trusted_keys_dir: &tmp.path().join("keys"),
            key_policy: ONE,
            limits: Limits::default(),
        };
        let applied = context
            .apply_verified(Kind::File, "notes.txt", copy, None)
            .unwrap();
        assert_eq!(applied.summary, format!("kept at {}", kept.display()));
        assert_eq!(std::fs::read_to_string(&kept).unwrap(), "kept");
    }

    /// The name becomes a path under `archive_dir`: one that is not a single plain component
    /// (wire validation refuses those; a legacy or future path might not) is refused.
    #[test]
    fn an_update_name_that_is_not_one_component_unpacks_nowhere() {
        let tmp = tempfile::tempdir().unwrap();
        let zip = tmp.path().join("escape.zip");
        zip_of(&zip, "index.html", "out");
        let puppet = Recorder::default();
        let archives = tmp.path().join("a/archives");
        let context = ApplyContext {
            puppet: &puppet,
            modulepath: None,
            archive_dir: &archives,
            trusted_keys_dir: &tmp.path().join("keys"),
            key_policy: ONE,
            limits: Limits::default(),
        };
        let absolute = tmp.path().join("absolute.zip");
        let absolute = absolute.to_str().unwrap();
        for name in ["../escape.zip", absolute, "x/escape.zip", ".."] {
            let copy = verified_copy(&tmp.path().join("state"), &zip, 1);
            let err = context
                .apply_verified(Kind::Archive, name, copy, None)
                .unwrap_err();
            assert!(matches!(err, ApplyError::BadName { .. }), "{name}: {err}");
        }
        assert!(!tmp.path().join("a/escape.zip").exists());
        assert!(!tmp.path().join("absolute.zip").exists());
        assert!(!archives.exists());
    }

    /// A dir member archive unpacks at `<member>.d` in its update's tree; a member of that
    /// name already there is the update's own content and is refused, not replaced.
    #[test]
    fn a_dir_member_archive_never_replaces_a_member_of_the_same_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("bundle");
        std::fs::create_dir_all(tree.join("web.tar.gz.d")).unwrap();
        std::fs::write(tree.join("web.tar.gz.d/keep.txt"), "mine").unwrap();
        tar_gz_of(tmp.path(), &tree.join("web.tar.gz"), "index.html", "web");
        let bundle = tmp.path().join("bundle.tar.gz");
        crate::agent::apply::kind::pack_dir(&tree, &bundle).unwrap();
        let puppet = Recorder::default();
        let archives = tmp.path().join("archives");
        let context = ApplyContext {
            puppet: &puppet,
            modulepath: None,
            archive_dir: &archives,
            trusted_keys_dir: &tmp.path().join("keys"),
            key_policy: ONE,
            limits: Limits::default(),
        };
        let copy = verified_copy(&tmp.path().join("state"), &bundle, 1);
        let err = context
            .apply_verified(Kind::Dir, "bundle.tar.gz", copy, None)
            .unwrap_err();
        assert!(matches!(err, ApplyError::MemberCollision { .. }), "{err}");
        let kept = archives.join("bundle.tar.gz/web.tar.gz.d/keep.txt");
        assert_eq!(std::fs::read_to_string(kept).unwrap(), "mine");
    }
}
