//! Pinned npm packages under `target/tools/npm/` of the checkout, installed
//! on first use (the HCL parser, the IAM simulator).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

/// The directory of an npm package pinned at `version`, installed if
/// needed. Each package has a prefix of its own (`npm install` into a
/// shared prefix removes the packages it did not install), and installs
/// are serialized with a lock file (parallel tests all get here at once).
pub fn npm_package(root: &Path, name: &str, version: &str) -> Result<PathBuf> {
    use std::os::fd::AsRawFd;
    let prefix = root.join("target/tools/npm").join(name.replace('/', "+"));
    let dir = prefix.join("node_modules").join(name);
    let installed = |dir: &Path| -> Option<String> {
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("package.json")).ok()?).ok()?;
        manifest["version"].as_str().map(str::to_string)
    };
    if installed(&dir).as_deref() == Some(version) {
        return Ok(dir);
    }
    std::fs::create_dir_all(&prefix)?;
    let lock_path = prefix.join(".lock");
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path)?;
    // SAFETY: flock on a descriptor we own; released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!("cannot lock {}: {}", lock_path.display(), std::io::Error::last_os_error());
    }
    if installed(&dir).as_deref() == Some(version) {
        return Ok(dir);
    }
    eprintln!("tools: installing {name}@{version} from npm into {} (once)", prefix.display());
    let sh = Shell::new()?;
    let spec = format!("{name}@{version}");
    // npm prints its summary ("added 5 packages") on stdout: kept off it, so a
    // command whose first run installs a tool still prints only its --json.
    cmd!(sh, "npm install --prefix {prefix} --no-audit --no-fund --no-save --loglevel=error {spec}")
        .quiet()
        .read()
        .map(drop)
        .with_context(|| format!("cannot install {spec} (npm needs node and the npm registry)"))?;
    match installed(&dir) {
        Some(v) if v == version => Ok(dir),
        other => bail!("after installing, {} has version {other:?}, expected {version}", dir.display()),
    }
}
