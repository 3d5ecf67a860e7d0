//! Turning a file or directory into pieces: the scan that decides which files a torrent holds
//! (and refuses what it cannot hold), and SHA-1 of every piece on all cores in bounded memory.

use super::{read_error, TorrentError};
use sha1::{Digest, Sha1};
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Bytes per read, and all the buffer a hashing thread holds. Measured on a 512 MiB file in the
/// page cache (AMD EPYC, 32 KiB L1d): 16-64 KiB reads cost ~30% less CPU than 128 KiB-1 MiB.
const READ_CHUNK: u64 = 64 * 1024;

/// A file to hash: where it is on disk and where it goes in the torrent.
pub(super) struct Source {
    pub path: PathBuf,
    pub components: Vec<String>,
    pub length: u64,
}

/// The files under `root`, sorted by their `/`-joined relative path bytewise (mktorrent's order,
/// so info-hashes match). Refuses rather than skips anything a torrent cannot carry.
pub(super) fn scan(root: &Path) -> Result<(Vec<Source>, bool), TorrentError> {
    let meta = fs::symlink_metadata(root).map_err(|source| read_error(root, source))?;
    check_type(root, &meta)?;
    if meta.is_file() {
        let source = Source {
            path: root.to_path_buf(),
            components: Vec::new(),
            length: meta.len(),
        };
        return Ok((vec![source], false));
    }
    let mut files = Vec::new();
    walk(root, &mut Vec::new(), &mut files)?;
    files.sort_by_cached_key(|f| f.components.join("/"));
    Ok((files, true))
}

fn walk(dir: &Path, prefix: &mut Vec<String>, out: &mut Vec<Source>) -> Result<(), TorrentError> {
    let entries = fs::read_dir(dir).map_err(|source| read_error(dir, source))?;
    let mut empty = true;
    for entry in entries {
        empty = false;
        let entry = entry.map_err(|source| read_error(dir, source))?;
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| TorrentError::NonUtf8Name { path: path.clone() })?;
        let meta = fs::symlink_metadata(&path).map_err(|source| read_error(&path, source))?;
        check_type(&path, &meta)?;
        prefix.push(name);
        if meta.is_dir() {
            walk(&path, prefix, out)?;
        } else {
            out.push(Source {
                path,
                components: prefix.clone(),
                length: meta.len(),
            });
        }
        prefix.pop();
    }
    if empty {
        return Err(TorrentError::EmptyDirectory {
            path: dir.to_path_buf(),
        });
    }
    Ok(())
}

fn check_type(path: &Path, meta: &fs::Metadata) -> Result<(), TorrentError> {
    let t = meta.file_type();
    let kind = if t.is_file() || t.is_dir() {
        return Ok(());
    } else if t.is_symlink() {
        return Err(TorrentError::Symlink {
            path: path.to_path_buf(),
        });
    } else if t.is_fifo() {
        "named pipe"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_char_device() {
        "character device"
    } else {
        "special file"
    };
    Err(TorrentError::SpecialFile {
        path: path.to_path_buf(),
        kind,
    })
}

/// Hashes every piece on all of rayon's threads. Each thread claims the next piece number, so
/// the threads read the content front to back together; each holds one `READ_CHUNK` buffer, so
/// memory does not grow with the piece size or the input.
pub(super) fn hash_pieces(
    files: &[Source],
    total: u64,
    piece_length: u64,
    progress: Option<&(dyn Fn(u64) + Sync)>,
) -> Result<Vec<[u8; 20]>, TorrentError> {
    let starts: Vec<u64> = files
        .iter()
        .scan(0u64, |offset, f| {
            let start = *offset;
            *offset += f.length;
            Some(start)
        })
        .collect();
    let count = total.div_ceil(piece_length);
    let next = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let per_thread = rayon::broadcast(|_| {
        let mut reader = PieceReader {
            files,
            starts: &starts,
            buf: vec![0; READ_CHUNK.min(piece_length) as usize],
            open: None,
            progress,
        };
        let mut done = Vec::new();
        while !failed.load(Ordering::Relaxed) {
            let index = next.fetch_add(1, Ordering::Relaxed);
            if index >= count {
                break;
            }
            let start = index * piece_length;
            match reader.hash(start, piece_length.min(total - start)) {
                Ok(digest) => done.push((index, digest)),
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        Ok(done)
    });
    let mut pieces = vec![[0u8; 20]; count as usize];
    let mut filled = 0u64;
    for result in per_thread {
        for (index, digest) in result? {
            if let Some(slot) = pieces.get_mut(index as usize) {
                *slot = digest;
                filled += 1;
            }
        }
    }
    if filled != count {
        return Err(TorrentError::Internal(format!(
            "hashed {filled} of {count} pieces"
        )));
    }
    Ok(pieces)
}

struct PieceReader<'a> {
    files: &'a [Source],
    starts: &'a [u64],
    buf: Vec<u8>,
    /// The file last read, kept open: consecutive pieces usually come from the same file.
    open: Option<(usize, File)>,
    progress: Option<&'a (dyn Fn(u64) + Sync)>,
}

impl PieceReader<'_> {
    fn hash(&mut self, start: u64, length: u64) -> Result<[u8; 20], TorrentError> {
        let mut hasher = Sha1::new();
        // The last file starting at or before `start`; empty files before it hold no bytes.
        let mut index = self
            .starts
            .partition_point(|&s| s <= start)
            .saturating_sub(1);
        let mut pos = start;
        let end = start + length;
        while pos < end {
            let (file, file_start) = match (self.files.get(index), self.starts.get(index)) {
                (Some(f), Some(&s)) => (f, s),
                _ => return Err(TorrentError::Internal(format!("no file at offset {pos}"))),
            };
            let offset = pos - file_start;
            let take = (file.length - offset).min(end - pos);
            if take > 0 {
                self.open_file(index)?;
                let Some((_, handle)) = &self.open else {
                    return Err(TorrentError::Internal("file not open".into()));
                };
                let mut done = 0;
                while done < take {
                    let n = (take - done).min(self.buf.len() as u64) as usize;
                    let chunk = self.buf.get_mut(..n).unwrap_or_default();
                    handle
                        .read_exact_at(chunk, offset + done)
                        .map_err(|e| changed_or_read(file, e))?;
                    hasher.update(&*chunk);
                    done += n as u64;
                    if let Some(progress) = self.progress {
                        progress(n as u64);
                    }
                }
                pos += take;
            }
            index += 1;
        }
        Ok(hasher.finalize().into())
    }

    fn open_file(&mut self, index: usize) -> Result<(), TorrentError> {
        if self.open.as_ref().map(|(i, _)| *i) == Some(index) {
            return Ok(());
        }
        let path = self
            .files
            .get(index)
            .map(|f| &f.path)
            .ok_or_else(|| TorrentError::Internal(format!("no file {index}")))?;
        // A symlink swapped in after the scan must not be followed.
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
            .map_err(|source| read_error(path, source))?;
        // A larger readahead window helps when the content is not in the page cache; a
        // failure only costs speed.
        let _ = nix::fcntl::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL,
        );
        self.open = Some((index, file));
        Ok(())
    }
}

fn changed_or_read(file: &Source, error: std::io::Error) -> TorrentError {
    if error.kind() == std::io::ErrorKind::UnexpectedEof {
        let found = fs::symlink_metadata(&file.path).map_or(0, |m| m.len());
        TorrentError::Changed {
            path: file.path.clone(),
            expected: file.length,
            found,
        }
    } else {
        read_error(&file.path, error)
    }
}
