//! Pinned PyPI tools in virtualenvs of the checkout (the emulator's moto,
//! the check tools), installed on first use.

use std::path::{Path, PathBuf};

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
