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
    /// The ids `--owner` and `--group` stand for on this host.
    pub fn of(flags: &crate::flags::FileOwner) -> Result<Owner> {
        Owner::named(flags.owner.as_deref(), flags.group.as_deref())
    }

    /// The owner from a user and a group, each a name or an id.
    pub fn named(user: Option<&str>, group: Option<&str>) -> Result<Owner> {
        Ok(Owner {
            uid: user.map(|o| lookup_id(o, true)).transpose()?,
            gid: group.map(|g| lookup_id(g, false)).transpose()?,
        })
    }
}

/// A user's or a group's id from its name (an id is taken as it is).
/// Through getpwnam_r/getgrnam_r: this runs on tokio's worker threads,
/// where getpwnam's shared buffer could be overwritten under our feet.
fn lookup_id(name: &str, user: bool) -> Result<u32> {
    use nix::unistd::{Group, User};
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    let what = if user { "user" } else { "group" };
    let found = if user {
        User::from_name(name).map(|u| u.map(|u| u.uid.as_raw()))
    } else {
        Group::from_name(name).map(|g| g.map(|g| g.gid.as_raw()))
    };
    match found {
        Ok(Some(id)) => Ok(id),
        Ok(None) => bail!("no such {what} {name}"),
        Err(e) => bail!("cannot look up the {what} {name}: {e}"),
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
    let me = rustix::process::geteuid().as_raw();
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

/// A directory opened one level at a time, never through a link: a
/// directory an agent can write may have any of its entries swapped for a
/// link (to `/etc`, to a secret) between a check and a use, so what root or a
/// service acts on there is reached by handle, never by path again.
/// `create` makes a missing level with mode 0755, owned by this process.
pub fn open_dir_nofollow(path: &Path, create: bool) -> Result<std::os::fd::OwnedFd> {
    use rustix::fs::{openat, Mode, OFlags, CWD};
    use std::path::Component;
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir = openat(CWD, if path.is_absolute() { "/" } else { "." }, flags, Mode::empty())
        .with_context(|| format!("cannot open {}", path.display()))?;
    for component in path.components() {
        let name = match component {
            Component::Normal(name) => name,
            Component::RootDir | Component::CurDir => continue,
            _ => bail!("{}: a path with `..` is refused (name the directory itself)", path.display()),
        };
        if create {
            match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => bail!("cannot create {} in {}: {e}", name.to_string_lossy(), path.display()),
            }
        }
        dir = openat(&dir, name, flags, Mode::empty()).map_err(|e| refused_level(path, name, e))?;
    }
    Ok(dir)
}

/// Why a level of `path` did not open: a link (or a non-directory) is named as such.
fn refused_level(path: &Path, name: &std::ffi::OsStr, e: rustix::io::Errno) -> anyhow::Error {
    use rustix::io::Errno;
    match e {
        Errno::LOOP | Errno::NOTDIR => anyhow::anyhow!(
            "{}: {} is a link or not a directory, and a link is never followed here (name the real directory)",
            path.display(),
            name.to_string_lossy()
        ),
        e => anyhow::anyhow!("cannot open {} in {}: {e}", name.to_string_lossy(), path.display()),
    }
}

/// What [`open_regular_at`] found instead of a regular file.
#[derive(Debug)]
pub enum Refused {
    /// A link, a FIFO, a socket, a device or a directory: never read.
    NotRegular,
    /// Gone since it was listed.
    Gone,
}

/// `name` in `dir`, opened for reading without following a link and
/// without blocking (a FIFO swapped in would otherwise wait for a writer
/// forever), and kept only if the opened handle is a regular file: what is
/// checked is what is read.
pub fn open_regular_at(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::OsStr,
) -> Result<std::result::Result<std::fs::File, Refused>> {
    use rustix::fs::{openat, FileType, Mode, OFlags};
    use rustix::io::Errno;
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = match openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::LOOP | Errno::NXIO | Errno::NOTDIR) => return Ok(Err(Refused::NotRegular)),
        Err(Errno::NOENT) => return Ok(Err(Refused::Gone)),
        Err(e) => bail!("cannot open {}: {e}", name.to_string_lossy()),
    };
    let stat = rustix::fs::fstat(&fd).with_context(|| format!("cannot stat {}", name.to_string_lossy()))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Ok(Err(Refused::NotRegular));
    }
    Ok(Ok(std::fs::File::from(fd)))
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

    /// Names are looked up (root is 0 on every system), ids are taken as
    /// they are, and a name nobody has is refused by name.
    #[test]
    fn owners_by_name_or_id() {
        assert_eq!(Owner::named(Some("root"), Some("root")).unwrap(), Owner { uid: Some(0), gid: Some(0) });
        assert_eq!(Owner::named(Some("4242"), None).unwrap(), Owner { uid: Some(4242), gid: None });
        let err = Owner::named(Some("no-such-user-here"), None).unwrap_err();
        assert_eq!(err.to_string(), "no such user no-such-user-here");
        let err = Owner::named(None, Some("no-such-group-here")).unwrap_err();
        assert_eq!(err.to_string(), "no such group no-such-group-here");
    }
}
