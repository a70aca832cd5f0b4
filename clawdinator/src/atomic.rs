//! Files replaced whole: written to a temporary file beside the target with
//! the mode (and owner) set before any byte, synced, then renamed over it.
//! A reader sees the old file or the new one, never a part; plaintext never
//! sits in a file readable by others, even for a moment. And what root
//! acts on lies where only root (or the user running this) can change it.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Who owns a file written for someone else (a service user), by id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Owner {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl Owner {
    /// The owner from a user and a group, each a name or an id.
    pub fn named(user: Option<&str>, group: Option<&str>) -> Result<Owner> {
        Ok(Owner {
            uid: user.map(|o| lookup_id(o, true)).transpose()?,
            gid: group.map(|g| lookup_id(g, false)).transpose()?,
        })
    }
}

fn lookup_id(name: &str, user: bool) -> Result<u32> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    let c = std::ffi::CString::new(name)?;
    // SAFETY: getpwnam/getgrnam return a pointer to static storage or null;
    // the field is read at once.
    unsafe {
        if user {
            let pw = libc::getpwnam(c.as_ptr());
            if pw.is_null() {
                bail!("no such user {name}");
            }
            Ok((*pw).pw_uid)
        } else {
            let gr = libc::getgrnam(c.as_ptr());
            if gr.is_null() {
                bail!("no such group {name}");
            }
            Ok((*gr).gr_gid)
        }
    }
}

/// Replace `path` with `contents`, mode `mode`, owned as the process is.
pub fn write(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    write_owned(path, contents, mode, Owner::default())
}

/// Replace `path` with `contents`, mode `mode`, owned by `owner`.
pub fn write_owned(path: &Path, contents: &[u8], mode: u32, owner: Owner) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode))?;
    if owner != Owner::default() {
        std::os::unix::fs::fchown(tmp.as_file(), owner.uid, owner.gid)
            .with_context(|| format!("cannot chown {}", path.display()))?;
    }
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error).with_context(|| format!("cannot install {}", path.display()))?;
    Ok(())
}

/// A private (0700) working directory, removed on every exit path
/// (tempfile removes it on drop, including while unwinding).
pub fn private_workdir() -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix("clawdinator-").tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

/// `path` and every directory above it belong to root or to us and are
/// writable by no one else (sticky directories above `path` excepted).
/// A path that does not exist yet is judged by the directory it would be made in.
pub fn check_owned(path: &Path) -> Result<()> {
    let existing = path.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    let real = std::fs::canonicalize(existing).with_context(|| format!("cannot resolve {}", existing.display()))?;
    let me = unsafe { libc::geteuid() };
    for (depth, dir) in real.ancestors().enumerate() {
        let meta = std::fs::metadata(dir).with_context(|| format!("cannot stat {}", dir.display()))?;
        let mode = meta.permissions().mode();
        let sticky_above = depth > 0 && mode & 0o1000 != 0;
        if meta.uid() != 0 && meta.uid() != me {
            bail!(
                "{} belongs to uid {}: root only runs what root owns (refused {})",
                dir.display(),
                meta.uid(),
                path.display()
            );
        }
        if mode & 0o022 != 0 && !sticky_above {
            bail!(
                "{} is writable by others (mode {:o}): root only runs what root owns (refused {})",
                dir.display(),
                mode & 0o7777,
                path.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_with_the_mode_and_leaves_nothing_beside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b.txt");
        write(&path, b"one", 0o600).unwrap();
        write(&path, b"two", 0o400).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o400);
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }
}
