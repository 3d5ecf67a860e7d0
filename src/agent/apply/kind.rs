//! What kind of update a submitted path is (`p2pu submit PATH` without `--kind`), and how a
//! directory becomes the one file that travels for a `dir` update ([`pack_dir`]).
//!
//! Detection, first match wins: a directory is `dir`; `*.pp` is `manifest`; a `.tar.gz`/`.tgz`
//! holding `<top>/metadata.json` (what `puppet module build` makes) is `module`, any other one
//! `archive`; `*.zip` is `archive`; a `*.pub` file that starts with p2pu's public-key prefix
//! `p2pu-ed25519:` is `key`, and so is any file that starts with a revocation's
//! `p2pu-revoke:`, a key statement's `p2pu-delegation:` or a root chain's `p2pu-root1:`;
//! anything else is `file`. Extensions match in any case.
//!
//! `pack_dir` output is deterministic, so the same tree always gives the same SHA-256 and
//! info-hash: entries sorted by name bytes (depth first, a directory before its contents), no
//! entry for the root, uid/gid 0 with empty owner names, a fixed mtime ([`PACK_MTIME`]), the rwx
//! bits of each file kept and setuid/setgid/sticky dropped, gzip header without name or time.
//! Symlinks and special files are refused, never followed: [`crate::agent::apply::extract`] would refuse
//! them on the other end anyway.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// The prefix of a p2pu public key file's text.
const KEY_PREFIX: &str = crate::keys::PUBLIC_PREFIX;

/// The mtime of every entry `pack_dir` writes: 2000-01-01T00:00:00Z. Not 0, which some tar
/// versions warn about as implausibly old.
pub const PACK_MTIME: u64 = 946_684_800;

pub use crate::formats::announcement::Kind;

#[derive(Debug, thiserror::Error)]
pub enum KindError {
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading tar.gz {}", path.display())]
    ReadArchive {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error("{} is a symlink; a dir update may not contain links (copy the target in instead)", path.display())]
    Symlink { path: PathBuf },
    #[error("{} is a {kind}; a dir update holds only files and directories", path.display())]
    Special { path: PathBuf, kind: &'static str },
    #[error("{} changed size while it was being packed", path.display())]
    Changed { path: PathBuf },
    #[error("output {} is inside the directory being packed {}", out.display(), dir.display())]
    OutputInsideDir { out: PathBuf, dir: PathBuf },
    #[error("module archive {}: {reason}; build it with `puppet module build`", path.display())]
    ModuleMetadata { path: PathBuf, reason: String },
}

impl crate::error::LayerError for KindError {}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> KindError {
    let path = path.to_path_buf();
    move |source| KindError::Io {
        action,
        path,
        source,
    }
}

/// Detects the kind of `path` by the rules in the module header. A symlink is judged by what it
/// points to (the operator named it on purpose).
pub fn detect(path: &Path) -> Result<Kind, KindError> {
    let meta = fs::metadata(path).map_err(io_err("inspecting", path))?;
    if meta.is_dir() {
        return Ok(Kind::Dir);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.ends_with(".pp") {
        Ok(Kind::Manifest)
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        if is_module_build(path)? {
            Ok(Kind::Module)
        } else {
            Ok(Kind::Archive)
        }
    } else if name.ends_with(".zip") {
        Ok(Kind::Archive)
    } else if (name.ends_with(".pub") && starts_with(path, KEY_PREFIX)?)
        || starts_with(path, crate::formats::delegation::PREFIX)?
        || starts_with(path, crate::formats::root::PREFIX)?
        || starts_with(path, crate::keys::REVOKE_PREFIX)?
    {
        Ok(Kind::Key)
    } else {
        Ok(Kind::File)
    }
}

fn starts_with(path: &Path, prefix: &str) -> Result<bool, KindError> {
    let mut head = Vec::with_capacity(prefix.len());
    File::open(path)
        .and_then(|f| f.take(prefix.len() as u64).read_to_end(&mut head))
        .map_err(io_err("reading", path))?;
    Ok(head == prefix.as_bytes())
}

/// Whether a tar.gz holds a regular file at `<top>/metadata.json`, as a Puppet module build does.
fn is_module_build(path: &Path) -> Result<bool, KindError> {
    Ok(with_metadata(path, |_, _| Ok(()))?.is_some())
}

/// Walks a tar.gz to its first regular file at `<top>/metadata.json` (`top` not `..`) and hands
/// `top` and the entry to `f`; `None` when there is none.
fn with_metadata<T>(
    path: &Path,
    f: impl FnOnce(
        &[u8],
        tar::Entry<'_, flate2::read::MultiGzDecoder<io::BufReader<File>>>,
    ) -> Result<T, KindError>,
) -> Result<Option<T>, KindError> {
    let read_err = |source| KindError::ReadArchive {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_err("opening", path))?;
    let mut archive =
        tar::Archive::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(file)));
    for entry in archive.entries().map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let raw = entry.path_bytes().into_owned();
        let parts: Vec<&[u8]> = raw
            .split(|&b| b == b'/')
            .filter(|p| !p.is_empty() && *p != b".")
            .collect();
        if let [top, b"metadata.json"] = parts.as_slice() {
            if *top != b".." {
                return f(top, entry).map(Some);
            }
        }
    }
    Ok(None)
}

/// A module build's `metadata.json` can be long (descriptions, requirements), not this long.
const MAX_METADATA_BYTES: u64 = 1 << 20;

/// What a module archive says it is, from its `<top>/metadata.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleMetadata {
    pub top: String,
    pub name: String,
    pub version: String,
}

/// Reads `<top>/metadata.json` of a module `.tar.gz` and wants its `name` and `version`: what
/// `puppet module install` needs on every node, checked once before the archive is broadcast.
pub fn module_metadata(path: &Path) -> Result<ModuleMetadata, KindError> {
    let refuse = |reason: String| KindError::ModuleMetadata {
        path: path.to_path_buf(),
        reason,
    };
    let read_err = |source| KindError::ReadArchive {
        path: path.to_path_buf(),
        source,
    };
    let found = with_metadata(path, |top, entry| {
        let top = String::from_utf8_lossy(top).into_owned();
        let mut text = Vec::new();
        entry
            .take(MAX_METADATA_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(read_err)?;
        if text.len() as u64 > MAX_METADATA_BYTES {
            return Err(refuse(format!(
                "{top}/metadata.json is over {MAX_METADATA_BYTES} bytes"
            )));
        }
        let json: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| refuse(format!("{top}/metadata.json is not JSON: {e}")))?;
        let field = |key: &str| {
            json.get(key)
                .and_then(|v| v.as_str())
                .filter(|v| !v.trim().is_empty())
                .map(str::to_string)
                .ok_or_else(|| {
                    refuse(format!(
                        "{top}/metadata.json has no `{key}` (a non-empty string)"
                    ))
                })
        };
        let (name, version) = (field("name")?, field("version")?);
        Ok(ModuleMetadata { top, name, version })
    })?;
    found.ok_or_else(|| refuse("it holds no <top>/metadata.json".into()))
}

/// What `pack_dir` put in the archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackReport {
    pub files: u64,
    pub dirs: u64,
    /// Bytes of file contents (before compression).
    pub bytes: u64,
}

/// Packs the tree under `dir` into a deterministic .tar.gz at `out` (written atomically, mode
/// 0644), under the rules in the module header. `out` must not be inside `dir`.
pub fn pack_dir(dir: &Path, out: &Path) -> Result<PackReport, KindError> {
    // The top directory may be reached through a symlink (the operator named it); nothing
    // below it may.
    let meta = fs::metadata(dir).map_err(io_err("inspecting", dir))?;
    if !meta.is_dir() {
        return Err(KindError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let out_dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir_real = fs::canonicalize(dir).map_err(io_err("resolving", dir))?;
    let out_dir_real = fs::canonicalize(&out_dir).map_err(io_err("resolving", &out_dir))?;
    if out_dir_real.starts_with(&dir_real) {
        return Err(KindError::OutputInsideDir {
            out: out.to_path_buf(),
            dir: dir.to_path_buf(),
        });
    }

    let mut entries = Vec::new();
    walk(dir, &PathBuf::new(), &mut entries)?;

    let tmp = tempfile::Builder::new()
        .prefix(".p2pu-pack-")
        .tempfile_in(&out_dir)
        .map_err(io_err("creating a temporary file in", &out_dir))?;
    let gz = flate2::GzBuilder::new().mtime(0).write(
        io::BufWriter::new(tmp.as_file()),
        flate2::Compression::default(),
    );
    let mut builder = tar::Builder::new(gz);
    let mut report = PackReport::default();
    let write_err = io_err("writing", tmp.path());
    let mut write_failure: Option<io::Error> = None;
    for (rel, is_dir) in &entries {
        let abs = dir.join(rel);
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(PACK_MTIME);
        if *is_dir {
            let mode = fs::symlink_metadata(&abs)
                .map_err(io_err("inspecting", &abs))?
                .mode();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(mode & 0o777);
            header.set_size(0);
            if let Err(e) = builder.append_data(&mut header, rel, io::empty()) {
                write_failure = Some(e);
                break;
            }
            report.dirs += 1;
        } else {
            // O_NOFOLLOW: a file swapped for a symlink since the walk fails instead of
            // packing what the link points to.
            let (mut file, meta) =
                crate::untrusted::open_any(&abs).map_err(io_err("opening", &abs))?;
            if !meta.is_file() {
                return Err(KindError::Changed { path: abs });
            }
            let size = meta.len();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(meta.permissions().mode() & 0o777);
            header.set_size(size);
            let mut counted = Counted {
                inner: (&mut file).take(size),
                n: 0,
            };
            let appended = builder.append_data(&mut header, rel, &mut counted);
            if counted.n != size {
                return Err(KindError::Changed { path: abs });
            }
            if let Err(e) = appended {
                write_failure = Some(e);
                break;
            }
            let mut probe = [0u8; 1];
            if file.read(&mut probe).map_err(io_err("reading", &abs))? != 0 {
                return Err(KindError::Changed { path: abs });
            }
            report.files += 1;
            report.bytes += size;
        }
    }
    if let Some(e) = write_failure {
        return Err(write_err(e));
    }
    let gz = builder
        .into_inner()
        .map_err(io_err("writing", tmp.path()))?;
    let buffered = gz
        .finish()
        .map_err(io_err("compressing into", tmp.path()))?;
    buffered
        .into_inner()
        .map_err(|e| io_err("writing", tmp.path())(e.into_error()))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(io_err("setting the mode of", tmp.path()))?;
    tmp.as_file()
        .sync_all()
        .map_err(io_err("syncing", tmp.path()))?;
    tmp.persist(out)
        .map_err(|e| io_err("renaming into place", out)(e.error))?;
    Ok(report)
}

/// Counts the bytes a reader gave, to notice a file that shrank while being packed.
struct Counted<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Lists `base/rel` depth first, children sorted by name bytes, as (relative path, is_dir).
fn walk(base: &Path, rel: &Path, out: &mut Vec<(PathBuf, bool)>) -> Result<(), KindError> {
    let here = base.join(rel);
    let mut names: Vec<OsString> = fs::read_dir(&here)
        .map_err(io_err("listing", &here))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_err("listing", &here))?;
    // OsString orders by bytes on Unix, which is what makes the archive reproducible.
    names.sort();
    for name in names {
        let child_rel = rel.join(&name);
        debug_assert!(child_rel
            .components()
            .all(|c| matches!(c, Component::Normal(_))));
        let child = base.join(&child_rel);
        let ft = fs::symlink_metadata(&child)
            .map_err(io_err("inspecting", &child))?
            .file_type();
        if ft.is_dir() {
            out.push((child_rel.clone(), true));
            walk(base, &child_rel, out)?;
        } else if ft.is_file() {
            out.push((child_rel, false));
        } else if ft.is_symlink() {
            return Err(KindError::Symlink { path: child });
        } else {
            let kind = crate::fsutil::FileKind::of(&ft).short_name();
            return Err(KindError::Special { path: child, kind });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip_and_are_the_wire_names() {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            ["manifest", "module", "archive", "key", "dir", "file"]
        );
        for kind in Kind::ALL {
            assert_eq!(kind.as_str().parse::<Kind>().unwrap(), kind);
            assert_eq!(kind.to_string(), kind.as_str());
        }
        assert!("Manifest".parse::<Kind>().is_err());
        assert!("".parse::<Kind>().is_err());
    }

    fn tar_gz(path: &Path, members: &[(&str, &[u8])]) {
        let gz =
            flate2::write::GzEncoder::new(File::create(path).unwrap(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
    }

    /// `submit` refuses a module archive that `puppet module install` could not take on the
    /// nodes: no metadata, metadata that is not JSON, no name or version.
    #[test]
    fn module_metadata_wants_a_name_and_a_version() {
        let d = tempfile::tempdir().unwrap();
        let p = |n: &str| d.path().join(n);
        let good = br#"{"name": "acme-ntp", "version": "1.0.0", "summary": "x"}"#;
        tar_gz(&p("good.tar.gz"), &[("acme-ntp-1.0.0/metadata.json", good)]);
        assert_eq!(
            module_metadata(&p("good.tar.gz")).unwrap(),
            ModuleMetadata {
                top: "acme-ntp-1.0.0".into(),
                name: "acme-ntp".into(),
                version: "1.0.0".into()
            }
        );
        let cases: [(&str, &[u8], &str); 4] = [
            ("none.tar.gz", b"", "holds no <top>/metadata.json"),
            (
                "garbage.tar.gz",
                b"{not json",
                "m/metadata.json is not JSON",
            ),
            ("noname.tar.gz", br#"{"version": "1"}"#, "has no `name`"),
            (
                "noversion.tar.gz",
                br#"{"name": "a-b", "version": ""}"#,
                "has no `version`",
            ),
        ];
        for (name, metadata, want) in cases {
            let members: Vec<(&str, &[u8])> = if metadata.is_empty() {
                vec![("m/README", b"x")]
            } else {
                vec![("m/metadata.json", metadata)]
            };
            tar_gz(&p(name), &members);
            let err = module_metadata(&p(name)).unwrap_err().to_string();
            assert!(err.contains(want) && err.contains(name), "{name}: {err}");
        }
    }

    #[test]
    fn detect_by_extension_and_content() {
        let d = tempfile::tempdir().unwrap();
        let p = |n: &str| d.path().join(n);
        fs::write(p("site.pp"), "node default {}").unwrap();
        fs::write(p("SITE.PP"), "node default {}").unwrap();
        fs::write(p("a.zip"), b"PK").unwrap();
        fs::write(p("ops.pub"), format!("{KEY_PREFIX}AAAA ops\n")).unwrap();
        fs::write(p("ssh.pub"), "ssh-ed25519 AAAA x\n").unwrap();
        fs::write(p("short.pub"), "p2pu").unwrap();
        fs::write(p("notes.txt"), "hi").unwrap();
        fs::write(p("old.revoke"), "p2pu-revoke:0123456789abcdef\n").unwrap();
        fs::write(p("cams"), "p2pu-delegation:ZGU\n").unwrap();
        fs::write(p("p2pu-root"), "p2pu-root1:ZGU\n").unwrap();
        fs::create_dir(p("tree")).unwrap();
        tar_gz(
            &p("acme-ntp-1.0.0.tar.gz"),
            &[
                ("acme-ntp-1.0.0/metadata.json", b"{}"),
                ("acme-ntp-1.0.0/manifests/init.pp", b"class ntp {}"),
            ],
        );
        tar_gz(&p("dotted.tgz"), &[("./m/metadata.json", b"{}")]);
        tar_gz(&p("flat.tar.gz"), &[("metadata.json", b"{}")]);
        tar_gz(&p("deep.tar.gz"), &[("a/b/metadata.json", b"{}")]);
        let cases = [
            ("site.pp", Kind::Manifest),
            ("SITE.PP", Kind::Manifest),
            ("a.zip", Kind::Archive),
            ("ops.pub", Kind::Key),
            ("ssh.pub", Kind::File),
            ("short.pub", Kind::File),
            ("notes.txt", Kind::File),
            ("old.revoke", Kind::Key),
            ("cams", Kind::Key),
            ("p2pu-root", Kind::Key),
            ("tree", Kind::Dir),
            ("acme-ntp-1.0.0.tar.gz", Kind::Module),
            ("dotted.tgz", Kind::Module),
            ("flat.tar.gz", Kind::Archive),
            ("deep.tar.gz", Kind::Archive),
        ];
        for (name, want) in cases {
            assert_eq!(detect(&p(name)).unwrap(), want, "{name}");
        }
    }

    #[test]
    fn detect_reports_a_corrupt_tar_gz() {
        let d = tempfile::tempdir().unwrap();
        let bad = d.path().join("bad.tar.gz");
        fs::write(&bad, b"not gzip at all").unwrap();
        assert!(matches!(detect(&bad), Err(KindError::ReadArchive { .. })));
        assert!(matches!(
            detect(&d.path().join("missing")),
            Err(KindError::Io { .. })
        ));
    }

    #[test]
    fn pack_dir_refuses_symlinks_and_output_inside() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        fs::create_dir(&tree).unwrap();
        fs::write(tree.join("a"), "a").unwrap();
        let err = pack_dir(&tree, &tree.join("out.tar.gz")).unwrap_err();
        assert!(matches!(err, KindError::OutputInsideDir { .. }), "{err:?}");
        std::os::unix::fs::symlink("/etc/passwd", tree.join("link")).unwrap();
        let out = d.path().join("out.tar.gz");
        let err = pack_dir(&tree, &out).unwrap_err();
        assert!(matches!(err, KindError::Symlink { .. }), "{err:?}");
        assert!(!out.exists());
        let leftovers: Vec<_> = fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temp file left behind: {leftovers:?}");
    }

    #[test]
    fn pack_dir_refuses_a_fifo() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        fs::create_dir(&tree).unwrap();
        nix::unistd::mkfifo(&tree.join("pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = pack_dir(&tree, &d.path().join("out.tar.gz")).unwrap_err();
        assert!(
            matches!(err, KindError::Special { kind: "fifo", .. }),
            "{err:?}"
        );
    }
}
