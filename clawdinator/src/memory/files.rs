//! Memory files: resolved under the root, locked, replaced whole.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;

use crate::atomic::Owner;

/// The directories every host expects under the memory root: daily notes
/// (`daily/YYYY-MM-DD.md`) and Discord snapshots (`discord/YYYY-MM-DD.md`).
/// Parents before children. `pr-intent/v1` is what the PR-intent publisher
/// mirrors: there from the start, so it publishes an empty tree rather
/// than failing before the orchestrator's first run.
pub const DIRS: [&str; 4] = ["daily", "discord", "pr-intent", "pr-intent/v1"];

/// Group-shared and setgid: files made by any host's agent stay in the group.
const DIR_MODE: u32 = 0o2770;

/// The file `path` names inside `root`: relative to it or absolute under it,
/// never outside (no `..`, no absolute path elsewhere, no link out).
pub fn resolve(root: &Path, path: &Path) -> Result<PathBuf> {
    let rel = match path.strip_prefix(root) {
        Ok(rel) => rel,
        Err(_) if path.is_absolute() => bail!("{} is outside the memory root {}", path.display(), root.display()),
        Err(_) => path,
    };
    ensure!(
        rel.components().all(|c| matches!(c, Component::Normal(_))) && rel.file_name().is_some(),
        "{} is not a file under the memory root {}",
        path.display(),
        root.display()
    );
    let full = root.join(rel);
    let canonical_root =
        std::fs::canonicalize(root).with_context(|| format!("the memory root {} is missing", root.display()))?;
    let mut parent = full.parent().expect("joined to a root").to_path_buf();
    while !parent.exists() {
        parent = parent.parent().expect("the root exists").to_path_buf();
    }
    ensure!(
        std::fs::canonicalize(&parent)?.starts_with(&canonical_root),
        "{} leads outside the memory root",
        path.display()
    );
    ensure!(!full.is_symlink(), "{} is a link: refused", full.display());
    Ok(full)
}

/// A held lock on a memory file; released when dropped (the descriptor closes).
pub struct Lock {
    _sidecar: File,
}

/// Lock `file` (shared or exclusive) through its sidecar, waiting at most `wait`.
/// Tried without blocking, again every 20 ms until the deadline: flock(2)
/// has no timeout, and a thread blocked in it can be freed by nothing but
/// the holder (a writer that hangs would hang every reader past its limit).
pub fn lock(file: &Path, exclusive: bool, wait: Duration) -> Result<Lock> {
    use rustix::fs::FlockOperation::{NonBlockingLockExclusive, NonBlockingLockShared};
    let name = file.file_name().and_then(|n| n.to_str()).context("a memory file has a name")?;
    let sidecar = file.with_file_name(format!(".{name}.lock"));
    if let Some(dir) = sidecar.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let handle = OpenOptions::new().create(true).truncate(false).write(true).open(&sidecar)?;
    let operation = if exclusive { NonBlockingLockExclusive } else { NonBlockingLockShared };
    let deadline = Instant::now() + wait;
    loop {
        match rustix::fs::flock(&handle, operation) {
            Ok(()) => return Ok(Lock { _sidecar: handle }),
            Err(rustix::io::Errno::WOULDBLOCK) => {}
            Err(err) => bail!("cannot lock {}: {err}", sidecar.display()),
        }
        if Instant::now() >= deadline {
            bail!("lock timeout for {} after {wait:?}: another writer holds it", file.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The file's content, or empty when it does not exist yet.
fn current(file: &Path) -> Result<Vec<u8>> {
    match std::fs::read(file) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
    }
}

/// Replace the file whole, keeping its mode (0664 for a new file: the
/// agents of every host share it through their group).
fn replace(file: &Path, contents: &[u8]) -> Result<()> {
    let mode = std::fs::metadata(file).map(|m| m.permissions().mode() & 0o777).unwrap_or(0o664);
    crate::atomic::write(file, contents, mode)
}

pub fn read(file: &Path, wait: Duration) -> Result<Vec<u8>> {
    let _held = lock(file, false, wait)?;
    current(file)
}

pub fn write(file: &Path, contents: &[u8], wait: Duration) -> Result<()> {
    let _held = lock(file, true, wait)?;
    replace(file, contents)
}

/// Add `text` at the end (a newline first when the file does not end in one).
pub fn append(file: &Path, text: &[u8], wait: Duration) -> Result<()> {
    let _held = lock(file, true, wait)?;
    let mut contents = current(file)?;
    if !contents.is_empty() && !contents.ends_with(b"\n") {
        contents.push(b'\n');
    }
    contents.extend_from_slice(text);
    replace(file, &contents)
}

/// Replace the one occurrence of `old` with `new`; refused when `old` is
/// absent or appears more than once (say more of the text to pick one).
pub fn edit(file: &Path, old: &str, new: &str, wait: Duration) -> Result<()> {
    ensure!(!old.is_empty(), "the text to replace is empty");
    let _held = lock(file, true, wait)?;
    let bytes = current(file)?;
    let text = String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", file.display()))?;
    match text.matches(old).count() {
        1 => replace(file, text.replacen(old, new, 1).as_bytes()),
        0 => bail!("{}: the text to replace is not there; nothing changed", file.display()),
        n => bail!("{}: the text to replace appears {n} times; give more of it so it appears once", file.display()),
    }
}

/// What `memory init` did.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InitReport {
    pub root: String,
    pub created_dirs: Vec<String>,
    pub installed: Vec<String>,
    pub kept: Vec<String>,
}

impl std::fmt::Display for InitReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "memory root {}", self.root)?;
        for dir in &self.created_dirs {
            writeln!(f, "  created  {dir}/")?;
        }
        for name in &self.installed {
            writeln!(f, "  template {name}")?;
        }
        writeln!(f, "  {} file(s) already there, left as the agents wrote them", self.kept.len())
    }
}

/// Prepare the shared memory root: its directories (setgid, group-shared),
/// and each template it lacks. A file that exists is the agents' and is
/// never replaced; every host runs this at boot, so a template is added
/// under the same lock writers take, once.
pub fn init(root: &Path, templates: &Path, owner: Owner) -> Result<InitReport> {
    ensure!(
        root.is_dir(),
        "the memory root {} is missing: is its mount up (clawdinator-efs-stunnel.service, then the NFS mount)?",
        root.display()
    );
    let mut report =
        InitReport { root: root.display().to_string(), created_dirs: vec![], installed: vec![], kept: vec![] };
    for dir in std::iter::once(root.to_path_buf()).chain(DIRS.iter().map(|d| root.join(d))) {
        if !dir.exists() {
            std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            report.created_dirs.push(dir.strip_prefix(root).unwrap_or(&dir).display().to_string());
        }
        share(&dir, owner)?;
    }
    for name in template_names(templates)? {
        let file = root.join(&name);
        let _held = lock(&file, true, Duration::from_secs(30))?;
        if std::fs::symlink_metadata(&file).is_ok() {
            report.kept.push(name);
            continue;
        }
        let text = std::fs::read(templates.join(&name))
            .with_context(|| format!("cannot read the template {}", templates.join(&name).display()))?;
        crate::atomic::write_owned(&file, &text, 0o664, owner)?;
        report.installed.push(name);
    }
    Ok(report)
}

fn share(dir: &Path, owner: Owner) -> Result<()> {
    if owner != Owner::default() {
        std::os::unix::fs::chown(dir, owner.uid, owner.gid)
            .with_context(|| format!("cannot chown {}", dir.display()))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
        .with_context(|| format!("cannot set the mode of {}", dir.display()))
}

/// The `*.md` files of the templates directory, sorted.
fn template_names(templates: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(templates)
        .with_context(|| format!("cannot read the memory templates {}", templates.display()))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_file() && name.ends_with(".md") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}
