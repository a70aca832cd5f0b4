//! Where the repository is, and the default paths inside it.

use std::path::{Path, PathBuf};

/// The repository root. The xtask binary is always built from this checkout
/// (`cargo xtask` is `cargo run`), so the manifest directory is trustworthy.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the repository root")
        .to_path_buf()
}

/// Resolve a path given on the command line: absolute paths stay, relative
/// ones are taken from the current directory (as every CLI user expects).
pub fn resolve(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_path_buf())
    }
}

/// The checked-out revision of this repository, `-dirty` when the work tree
/// has uncommitted changes; None outside a git checkout.
pub fn git_revision() -> Option<String> {
    let sh = xshell::Shell::new().ok()?;
    sh.change_dir(root());
    let rev = xshell::cmd!(sh, "git rev-parse HEAD").quiet().ignore_stderr().read().ok()?;
    let dirty = !xshell::cmd!(sh, "git status --porcelain").quiet().ignore_stderr().read().ok()?.trim().is_empty();
    Some(if dirty { format!("{rev}-dirty") } else { rev })
}

/// A one-line fact the instance's user data wrote under /etc/clawdinator
/// (its name, bucket, prefix, region, EFS id): trimmed, None when the file
/// is missing or empty.
pub fn host_setting(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(text.trim().to_string()).filter(|s| !s.is_empty())
}

/// A fact the command line gives (`flag`), else what user data wrote in
/// `file`; neither is a usage error saying what is missing (`what`), how to
/// give it (`how`), and the file.
pub fn given_or_written(flag: Option<String>, file: &Path, what: &str, how: &str) -> anyhow::Result<String> {
    flag.or_else(|| host_setting(file))
        .ok_or_else(|| crate::output::UsageError(format!("no {what}: {how} or write it to {}", file.display())).into())
}

/// The instance a host-side command works for.
pub fn instance_name(flag: Option<String>, file: &Path) -> anyhow::Result<String> {
    given_or_written(flag, file, "instance name", "pass --instance")
}

/// A pinned PyPI package (`spec` = `name==version`) in the virtualenv at
/// `dir`, installed on first use; its python. Serialized with a lock file
/// beside the venv (parallel tests and checks all get here at once) and
/// recorded in a stamp only once pip has finished, so an interrupted
/// install is redone, never trusted.
pub fn python_venv(dir: &Path, spec: &str) -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    use std::os::fd::AsRawFd;
    let python = dir.join("bin/python");
    let stamp = dir.join(".installed");
    let done = || std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == spec);
    if done() {
        return Ok(python);
    }
    let parent = dir.parent().context("a virtualenv needs a parent directory")?;
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let lock_path = dir.with_extension("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    // SAFETY: flock on a descriptor we own; released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        anyhow::bail!("cannot lock {}: {}", lock_path.display(), std::io::Error::last_os_error());
    }
    if done() {
        return Ok(python);
    }
    eprintln!("tools: installing {spec} from PyPI into {} (once)", dir.display());
    let sh = xshell::Shell::new()?;
    if !python.exists() {
        let system_python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        xshell::cmd!(sh, "{system_python} -m venv {dir}")
            .quiet()
            .run()
            .with_context(|| format!("cannot create {} (on Debian: apt-get install python3-venv)", dir.display()))?;
    }
    xshell::cmd!(sh, "{python} -m pip install --quiet --disable-pip-version-check {spec}")
        .quiet()
        .run()
        .with_context(|| format!("cannot install {spec} into {} (pip needs to reach PyPI)", dir.display()))?;
    std::fs::write(&stamp, spec)?;
    Ok(python)
}
