//! Applies a downloaded, verified payload by its kind: a manifest with `puppet apply`, a module
//! with `puppet module install`, an archive by safe extraction, a key into the trusted-key
//! store, a directory member by member, a plain file kept where it is.

use super::extract::{self, ArchiveFormat, Limits};
use crate::engines::{Applier, ApplyStatus};
use crate::formats::announcement::{Announcement, Kind};
use crate::keys;
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
    Key(#[source] Box<crate::Error>),
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
        source: super::kind::KindError,
    },
    #[error("{0} updates cannot be applied here: {1}")]
    Unsupported(&'static str, String),
}

impl ApplyError {
    /// Puppet's output when Puppet failed, for the status record.
    pub fn output(&self) -> Option<&str> {
        match self {
            ApplyError::Puppet(e) => e.output(),
            _ => None,
        }
    }
}

/// What applying needs from the node.
pub struct ApplyContext<'a> {
    pub puppet: &'a dyn Applier,
    pub modulepath: Option<&'a Path>,
    pub archive_dir: &'a Path,
    pub trusted_keys_dir: &'a Path,
    pub limits: Limits,
}

/// What happened, for the record: a one-line summary and the engine's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub summary: String,
    pub output: String,
}

impl ApplyContext<'_> {
    /// Applies `payload` (named `name`) of `kind`; `announcement` is required for keys.
    pub fn apply(
        &self,
        kind: Kind,
        name: &str,
        payload: &Path,
        announcement: Option<&Announcement>,
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
                let target = self.archive_dir.join(archive_stem(name));
                let report = self.extract(payload, &target)?;
                Ok(Applied {
                    summary: format!("extracted into {} ({report:?})", target.display()),
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
                let change = keys::apply_key_update(self.trusted_keys_dir, announcement, &bytes)
                    .map_err(|e| ApplyError::Key(Box::new(e)))?;
                Ok(Applied {
                    summary: format!("trusted keys: {change:?}"),
                    output: String::new(),
                })
            }
            Kind::Dir => self.apply_dir(name, payload),
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
        std::fs::create_dir_all(self.archive_dir).map_err(|source| ApplyError::Read {
            path: self.archive_dir.to_path_buf(),
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
    fn apply_dir(&self, name: &str, payload: &Path) -> Result<Applied, ApplyError> {
        let target = self.archive_dir.join(archive_stem(name));
        self.extract(payload, &target)?;
        let mut members: Vec<PathBuf> = std::fs::read_dir(&target)
            .map_err(|source| ApplyError::Read {
                path: target.clone(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        members.sort();
        let mut summary = Vec::new();
        let mut output = String::new();
        for member in members.iter().filter(|m| m.is_file()) {
            let kind = super::kind::detect(member).map_err(|source| ApplyError::Kind {
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
            let applied = self.apply(kind, &member_name, member, None)?;
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

/// `site.tar.gz` → `site`: the directory an archive is unpacked into.
pub fn archive_stem(name: &str) -> &str {
    [".tar.gz", ".tgz", ".zip"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
        .filter(|stem| !stem.is_empty())
        .unwrap_or(name)
}

/// The kind of a legacy payload, which carries none: by its file name.
pub fn legacy_kind(name: &str) -> Kind {
    if name.ends_with(".pp") {
        Kind::Manifest
    } else {
        Kind::File
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::puppet::ModuleInstalled;
    use crate::engines::{ApplyReport, PuppetError};
    use std::sync::Mutex;

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
        crate::agent::kind::pack_dir(&source, &payload).unwrap();
        assert_eq!(
            crate::agent::kind::detect(&source.join("ops.pub")).unwrap(),
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
            limits: Limits::default(),
        };
        let applied = context
            .apply(Kind::Dir, "bundle.tar.gz", &payload, None)
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
}
