//! Who owns what `init` writes: root, or a system user such as `debian-transmission`, looked
//! up on the target system (the image's own /etc/passwd under `--root`).

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

pub struct Owners {
    root: Option<PathBuf>,
    /// Only root can give files away; as another user, ownership is left as it falls.
    privileged: bool,
}

impl Owners {
    pub fn new(root: Option<PathBuf>) -> Owners {
        Owners {
            root,
            privileged: nix::unistd::geteuid().is_root(),
        }
    }

    /// The uid and gid of `user` (root for `None`); `None` when it cannot be known.
    pub fn uid_gid(&self, user: Option<&str>) -> Result<Option<(u32, u32)>> {
        let Some(name) = user else {
            return Ok(Some((0, 0)));
        };
        match &self.root {
            Some(root) => Ok(passwd_entry(&root.join("etc/passwd"), name)),
            None => match nix::unistd::User::from_name(name) {
                Ok(Some(user)) => Ok(Some((user.uid.as_raw(), user.gid.as_raw()))),
                _ => Err(Error::Usage(format!(
                    "system user `{name}` does not exist; is its package installed \
                     (transmission-daemon makes transmission.user, p2pu's installer makes p2pu)?"
                ))),
            },
        }
    }

    /// The uid a file should have, when p2pu is able to set it.
    pub fn wanted_uid(&self, user: Option<&str>) -> Result<Option<u32>> {
        if !self.privileged {
            return Ok(None);
        }
        Ok(self.uid_gid(user)?.map(|(uid, _)| uid))
    }

    pub fn chown(&self, path: &Path, user: Option<&str>) -> Result<()> {
        if !self.privileged {
            return Ok(());
        }
        if let Some((uid, gid)) = self.uid_gid(user)? {
            nix::unistd::chown(
                path,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .map_err(|e| Error::io("changing the owner of", path)(e.into()))?;
        }
        Ok(())
    }
}

impl Owners {
    /// [`chown`](Self::chown) on an open file (`path` names it in errors): for a file in a
    /// directory another user writes, where a path could be swapped for a link.
    pub fn chown_fd(&self, file: &std::fs::File, path: &Path, user: Option<&str>) -> Result<()> {
        use std::os::fd::AsRawFd;
        if !self.privileged {
            return Ok(());
        }
        if let Some((uid, gid)) = self.uid_gid(user)? {
            nix::unistd::fchown(
                file.as_raw_fd(),
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .map_err(|e| Error::io("changing the owner of", path)(e.into()))?;
        }
        Ok(())
    }
}

/// Looks `name` up in a passwd(5) file; `None` when the file or the entry is missing.
fn passwd_entry(passwd: &Path, name: &str) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(passwd).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lookup_reads_uid_and_gid() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(&passwd, "root:x:0:0::/root:/bin/sh\ndebian-transmission:x:103:106::/var/lib:/usr/sbin/nologin\n").unwrap();
        assert_eq!(
            passwd_entry(&passwd, "debian-transmission"),
            Some((103, 106))
        );
        assert_eq!(passwd_entry(&passwd, "nobody"), None);
        assert_eq!(passwd_entry(&dir.path().join("missing"), "root"), None);
    }
}
