//! `cargo xtask bootstrap seeds prepare`: shallow clones of the repositories the agents
//! work on (`clawdinator/repos.tsv`), shipped to hosts inside the bundle.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use anyhow::{bail, ensure, Context, Result};
use base64::Engine;
use indicatif::ProgressBar;
use rustix::fs::{
    openat, renameat_with, statat, unlinkat, AtFlags, Dir, FileType, Gid, Mode, OFlags, RenameFlags, Uid,
};
use serde::{Deserialize, Serialize};

pub const SEEDS_FILE: &str = "SEEDS.json";
pub const DEFAULT_LIST: &str = "clawdinator/repos.tsv";

/// One line of the seeds list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedRepo {
    pub name: String,
    pub url: String,
    pub branch: Option<String>,
    pub line: usize,
}

/// What `SEEDS.json` records for each prepared repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedRecord {
    pub name: String,
    pub url: String,
    pub branch: Option<String>,
    pub commit: String,
}

/// Parse `name<TAB>url[<TAB>branch]` lines; blank lines and `#` comments are
/// skipped. Every malformed line is reported, with its number.
pub fn parse_list(path: &Path, text: &str) -> Result<Vec<SeedRepo>> {
    let mut repos = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = raw.trim_end_matches('\r').split('\t').collect();
        if !(2..=3).contains(&fields.len()) || fields.iter().any(|f| f.trim().is_empty() || f.trim() != *f) {
            errors.push(format!("{}:{line}: expected `name<TAB>url[<TAB>branch]`, found {raw:?}", path.display()));
            continue;
        }
        let name = fields[0].to_string();
        if name.starts_with('.')
            || name == SEEDS_FILE
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            errors.push(format!(
                "{}:{line}: repository name {name:?} must be letters, digits, . _ - (not starting with .)",
                path.display()
            ));
            continue;
        }
        if let Some(first) = seen.insert(name.clone(), line) {
            errors.push(format!("{}:{line}: duplicate name {name:?} (first on line {first})", path.display()));
            continue;
        }
        repos.push(SeedRepo { name, url: fields[1].to_string(), branch: fields.get(2).map(|b| b.to_string()), line });
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(repos)
}

pub fn load_list(path: &Path) -> Result<Vec<SeedRepo>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the seeds list {}", path.display()))?;
    parse_list(path, &text)
}

/// Read `SEEDS.json` of a prepared seeds directory.
pub fn load_records(dir: &Path) -> Result<Vec<SeedRecord>> {
    let path = dir.join(SEEDS_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {} (run `cargo xtask bootstrap seeds prepare` first)", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
}

#[derive(Debug, Clone)]
pub struct PrepareOptions {
    pub list: PathBuf,
    pub dest: PathBuf,
    pub jobs: usize,
    pub allow_partial: bool,
    /// Sent only to https://github.com/ as an `x-access-token` basic header.
    pub github_token: Option<String>,
    /// Longest one git operation may take (a stalled server otherwise hangs
    /// the pipeline); `--git-timeout` (`CLAWDINATOR_GIT_TIMEOUT`) on the CLI.
    pub git_timeout: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub name: String,
    pub url: String,
    pub error: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PrepareReport {
    pub dest: String,
    pub repos: Vec<SeedRecord>,
    pub cloned: usize,
    pub updated: usize,
    pub removed: Vec<String>,
    pub failed: Vec<Failure>,
}

impl fmt::Display for PrepareReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.repos {
            writeln!(f, "{:<16} {} {}", r.name, &r.commit[..r.commit.len().min(12)], r.url)?;
        }
        for name in &self.removed {
            writeln!(f, "{name:<16} removed (no longer listed)")?;
        }
        for fail in &self.failed {
            writeln!(f, "{:<16} FAILED {}: {}", fail.name, fail.url, fail.error)?;
        }
        writeln!(
            f,
            "bootstrap seeds prepare: {} repo(s) in {} ({} cloned, {} updated, {} failed)",
            self.repos.len(),
            self.dest,
            self.cloned,
            self.updated,
            self.failed.len()
        )
    }
}

/// The git configuration that adds the token header, passed through the
/// environment so it never appears on a command line or in a log.
fn auth_env(url: &str, token: Option<&str>) -> Vec<(String, String)> {
    let mut env = vec![("GIT_TERMINAL_PROMPT".to_string(), "0".to_string())];
    if let Some(token) = token.filter(|t| !t.is_empty()) {
        if url.starts_with("https://github.com/") {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
            env.push(("GIT_CONFIG_COUNT".into(), "1".into()));
            env.push(("GIT_CONFIG_KEY_0".into(), "http.https://github.com/.extraheader".into()));
            env.push(("GIT_CONFIG_VALUE_0".into(), format!("Authorization: Basic {basic}")));
        }
    }
    env
}

/// One git command, killed when it outlives `limit`.
async fn git(env: &[(String, String)], args: &[&str], limit: Duration) -> Result<String> {
    let mut command = tokio::process::Command::new("git");
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().context("cannot run git")?;
    let output = wait_bounded(child, limit).await.with_context(|| {
        format!(
            "git {} made no progress in {limit:?}: stalled (CLAWDINATOR_GIT_TIMEOUT sets the limit)",
            args.first().copied().unwrap_or_default()
        )
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!("git {} failed: {}", args.first().copied().unwrap_or_default(), stderr.trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Wait for `child` and its output; after `limit`, kill it and reap it.
async fn wait_bounded(mut child: tokio::process::Child, limit: Duration) -> Result<std::process::Output> {
    use tokio::io::AsyncReadExt;
    async fn drain(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf).await;
        }
        buf
    }
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let all = async { tokio::join!(child.wait(), drain(stdout), drain(stderr)) };
    let Ok((status, stdout, stderr)) = tokio::time::timeout(limit, all).await else {
        let _ = child.kill().await;
        bail!("killed after {limit:?}");
    };
    Ok(std::process::Output { status: status?, stdout, stderr })
}

/// Clone, or bring an existing clone to the tip of its branch. Returns
/// (commit, was it a fresh clone).
async fn prepare_one(repo: &SeedRepo, dest: &Path, token: Option<&str>, limit: Duration) -> Result<(String, bool)> {
    let env = auth_env(&repo.url, token);
    let env = env.as_slice();
    let dir = dest.join(&repo.name);
    let dir_s = dir.to_str().context("non-UTF-8 seeds directory")?;
    let fresh = !dir.join(".git").is_dir();
    if fresh {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot replace {} (not a git clone)", dir.display()))?;
        }
        let mut args = vec!["clone", "--quiet", "--depth", "1"];
        if let Some(branch) = &repo.branch {
            args.extend(["--branch", branch]);
        }
        args.extend([repo.url.as_str(), dir_s]);
        git(env, &args, limit).await?;
    } else {
        let origin = git(env, &["-C", dir_s, "remote", "get-url", "origin"], limit).await.ok();
        match origin {
            Some(url) if url == repo.url => {}
            Some(_) => drop(git(env, &["-C", dir_s, "remote", "set-url", "origin", &repo.url], limit).await?),
            None => drop(git(env, &["-C", dir_s, "remote", "add", "origin", &repo.url], limit).await?),
        }
        let refspec = repo.branch.as_deref().unwrap_or("HEAD");
        git(env, &["-C", dir_s, "fetch", "--quiet", "--depth", "1", "origin", refspec], limit).await?;
        git(env, &["-C", dir_s, "reset", "--quiet", "--hard", "FETCH_HEAD"], limit).await?;
        git(env, &["-C", dir_s, "clean", "--quiet", "-ffdx"], limit).await?;
    }
    let commit = git(env, &["-C", dir_s, "rev-parse", "HEAD"], limit).await?;
    Ok((commit, fresh))
}

/// Each repository's outcome, in the list's order, `jobs` at a time. On a
/// runtime of its own in a thread of its own: callers are plain threads and
/// async commands alike, and no runtime can be started inside another.
fn prepare_all<'r>(repos: &'r [SeedRepo], opts: &PrepareOptions, bar: &ProgressBar) -> Result<Outcomes<'r>> {
    use futures::stream::{self, StreamExt};
    let all = || -> Result<Outcomes<'r>> {
        // Made and dropped in this thread: a runtime dropped in an async
        // caller's would panic.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let work = stream::iter(repos).map(|repo| async move {
            let result = prepare_one(repo, &opts.dest, opts.github_token.as_deref(), opts.git_timeout).await;
            bar.inc(1);
            (repo, result)
        });
        Ok(runtime.block_on(work.buffered(opts.jobs.max(1)).collect()))
    };
    std::thread::scope(|scope| scope.spawn(all).join())
        .map_err(|_| anyhow::anyhow!("seeds prepare: the clones' thread panicked"))?
}

type Outcomes<'r> = Vec<(&'r SeedRepo, Result<(String, bool)>)>;

/// The report of the clones' outcomes (nothing removed yet).
fn report_of(dest: &Path, results: Outcomes<'_>) -> PrepareReport {
    let mut report = PrepareReport {
        dest: dest.display().to_string(),
        repos: vec![],
        cloned: 0,
        updated: 0,
        removed: vec![],
        failed: vec![],
    };
    for (repo, result) in results {
        match result {
            Ok((commit, fresh)) => {
                if fresh {
                    report.cloned += 1
                } else {
                    report.updated += 1
                }
                let (name, url, branch) = (repo.name.clone(), repo.url.clone(), repo.branch.clone());
                report.repos.push(SeedRecord { name, url, branch, commit });
            }
            Err(err) => report.failed.push(Failure {
                name: repo.name.clone(),
                url: repo.url.clone(),
                error: format!("{err:#}"),
            }),
        }
    }
    report
}

/// Clones no longer listed would otherwise keep being shipped to hosts.
fn remove_unlisted(dest: &Path, repos: &[SeedRepo]) -> Result<Vec<String>> {
    let listed: BTreeSet<&str> = repos.iter().map(|r| r.name.as_str()).collect();
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(dest)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !listed.contains(name.as_str()) && entry.path().join(".git").is_dir() {
            std::fs::remove_dir_all(entry.path())?;
            removed.push(name);
        }
    }
    Ok(removed)
}

pub fn prepare(opts: &PrepareOptions, out: &crate::output::Output) -> Result<PrepareReport> {
    let repos = load_list(&opts.list)?;
    std::fs::create_dir_all(&opts.dest).with_context(|| format!("cannot create {}", opts.dest.display()))?;
    let bar = out.counter(repos.len() as u64, "cloning");
    let results = prepare_all(&repos, opts, &bar)?;
    bar.finish_and_clear();
    let mut report = report_of(&opts.dest, results);
    report.removed = remove_unlisted(&opts.dest, &repos)?;
    if report.failed.is_empty() || opts.allow_partial {
        crate::atomic::write(&opts.dest.join(SEEDS_FILE), &serde_json::to_vec_pretty(&report.repos)?, 0o644)?;
    }
    Ok(report)
}

/// What `seeds install` did, repository by repository.
#[derive(Debug, Clone, Serialize)]
pub struct InstallReport {
    pub dest: String,
    /// Copied from the seeds: they were missing.
    pub installed: Vec<String>,
    /// Already there: the agents' working clones, left as they are.
    pub kept: Vec<String>,
}

impl fmt::Display for InstallReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for name in &self.installed {
            writeln!(f, "{name:<16} installed")?;
        }
        for name in &self.kept {
            writeln!(f, "{name:<16} kept (already there)")?;
        }
        writeln!(f, "seeds install: {} installed, {} kept in {}", self.installed.len(), self.kept.len(), self.dest)
    }
}

/// Directories the copy makes are reached by handle, never by path.
const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);
const STAGE_PREFIX: &str = ".seeding-";

/// Copy `from` (root's seeds) to `name` in `dir` (inside the stage):
/// directories and files only, modes kept, owned by `owner`. Everything is
/// created relative to its parent's handle, exclusively, never through a link.
fn copy_into(from: &Path, dir: BorrowedFd<'_>, name: &OsStr, owner: crate::atomic::Owner) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(from).with_context(|| format!("cannot read {}", from.display()))?;
    let made = |e| anyhow::anyhow!("cannot create {} in the stage: {e}", from.display());
    let fd: OwnedFd = if meta.is_dir() {
        rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)).map_err(made)?;
        let sub = openat(dir, name, DIR_FLAGS, Mode::empty()).map_err(made)?;
        for entry in std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
            let entry = entry?;
            copy_into(&entry.path(), sub.as_fd(), &entry.file_name(), owner)?;
        }
        sub
    } else if meta.is_file() {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut out = std::fs::File::from(openat(dir, name, flags, Mode::from_raw_mode(0o600)).map_err(made)?);
        let mut input = std::fs::File::open(from).with_context(|| format!("cannot read {}", from.display()))?;
        std::io::copy(&mut input, &mut out).with_context(|| format!("cannot copy {}", from.display()))?;
        out.into()
    } else {
        bail!("{} is neither a file nor a directory: refused", from.display());
    };
    if owner != crate::atomic::Owner::default() {
        let (uid, gid) = (owner.uid.map(Uid::from_raw), owner.gid.map(Gid::from_raw));
        rustix::fs::fchown(&fd, uid, gid)
            .map_err(|e| anyhow::anyhow!("cannot chown the copy of {}: {e}", from.display()))?;
    }
    // After the chown, which would clear a set-id bit (none is copied anyway).
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(meta.permissions().mode() & 0o777))?;
    Ok(())
}

/// Everything inside `dir`, removed through handles (links are removed, never followed).
fn empty_at(dir: BorrowedFd<'_>) -> Result<()> {
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes()).to_os_string();
        if name == "." || name == ".." {
            continue;
        }
        let stat = statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW)?;
        if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
            empty_at(openat(dir, &name, DIR_FLAGS, Mode::empty())?.as_fd())?;
            unlinkat(dir, &name, AtFlags::REMOVEDIR)?;
        } else {
            unlinkat(dir, &name, AtFlags::empty())?;
        }
    }
    Ok(())
}

/// A root-private (0700) directory inside the agents' directory, where each
/// copy is made whole before it is moved into place: the agent cannot enter
/// it, and root reaches it by handle only, so a link the agent swaps in for
/// it (or for `dest`) is never followed. Removed when dropped, if it is
/// still where it was made.
struct Stage<'a> {
    dest: BorrowedFd<'a>,
    name: String,
    fd: OwnedFd,
}

impl<'a> Stage<'a> {
    fn new(dest: BorrowedFd<'a>, shown: &Path) -> Result<Stage<'a>> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
        let name = format!("{STAGE_PREFIX}{}-{nanos}", std::process::id());
        let fail = |e| anyhow::anyhow!("cannot make the stage {name} in {}: {e}", shown.display());
        rustix::fs::mkdirat(dest, &name, Mode::from_raw_mode(0o700)).map_err(fail)?;
        let fd = openat(dest, &name, DIR_FLAGS, Mode::empty()).map_err(fail)?;
        let stat = rustix::fs::fstat(&fd)?;
        let me = rustix::process::geteuid().as_raw();
        ensure!(
            stat.st_uid == me && stat.st_mode & 0o777 == 0o700,
            "the stage {name} in {} was swapped before it opened (uid {}, mode {:o}): nothing copied",
            shown.display(),
            stat.st_uid,
            stat.st_mode & 0o7777
        );
        Ok(Stage { dest, name, fd })
    }
}

impl Drop for Stage<'_> {
    fn drop(&mut self) {
        let _ = empty_at(self.fd.as_fd());
        let ours = |s: rustix::fs::Stat| {
            rustix::fs::fstat(&self.fd).is_ok_and(|me| me.st_ino == s.st_ino && me.st_dev == s.st_dev)
        };
        if statat(self.dest, self.name.as_str(), AtFlags::SYMLINK_NOFOLLOW).is_ok_and(ours) {
            let _ = unlinkat(self.dest, self.name.as_str(), AtFlags::REMOVEDIR);
        }
    }
}

/// Stages left by an interrupted run (root's, named as ours) are removed.
fn clear_debris(dest: BorrowedFd<'_>) -> Result<()> {
    let me = rustix::process::geteuid().as_raw();
    for entry in Dir::read_from(dest)? {
        let entry = entry?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes()).to_os_string();
        if !name.as_bytes().starts_with(STAGE_PREFIX.as_bytes()) {
            continue;
        }
        let Ok(stat) = statat(dest, &name, AtFlags::SYMLINK_NOFOLLOW) else { continue };
        if FileType::from_raw_mode(stat.st_mode) == FileType::Directory && stat.st_uid == me {
            empty_at(openat(dest, &name, DIR_FLAGS, Mode::empty())?.as_fd())?;
            unlinkat(dest, &name, AtFlags::REMOVEDIR)?;
        }
    }
    Ok(())
}

/// Host side: every repository of the fetched seeds that `dest` lacks is
/// copied in (made whole in a root-private stage inside `dest`, then moved
/// into place, never over anything); one that exists is the agents'
/// working clone and is never touched, nor is anything the seeds no longer
/// list. `dest` is the agents' own directory, so it is opened one level at
/// a time without following a link, and everything after is done through
/// handles. `only`, when not empty, names the seeds wanted (root's deploy
/// copy takes just the fleet's own repository).
pub fn install(from: &Path, dest: &Path, only: &[String], owner: crate::atomic::Owner) -> Result<InstallReport> {
    let mut records = load_records(from)?;
    if let Some(missing) = only.iter().find(|name| !records.iter().any(|r| &&r.name == name)) {
        bail!(
            "{} lists no seed {missing:?}: add it to clawdinator/repos.tsv and upload the bundles again",
            from.display()
        );
    }
    records.retain(|r| only.is_empty() || only.contains(&r.name));
    let dest_fd = crate::atomic::open_dir_nofollow(dest, true)?;
    clear_debris(dest_fd.as_fd())
        .with_context(|| format!("cannot clear an interrupted run's stage in {}", dest.display()))?;
    let mut report = InstallReport { dest: dest.display().to_string(), installed: vec![], kept: vec![] };
    let mut stage = None;
    for record in records {
        if statat(&dest_fd, record.name.as_str(), AtFlags::SYMLINK_NOFOLLOW).is_ok() {
            report.kept.push(record.name);
            continue;
        }
        if stage.is_none() {
            stage = Some(Stage::new(dest_fd.as_fd(), dest)?);
        }
        let stage = stage.as_ref().expect("made above");
        let name = OsStr::new(&record.name);
        copy_into(&from.join(&record.name), stage.fd.as_fd(), name, owner)?;
        match renameat_with(&stage.fd, name, &dest_fd, name, RenameFlags::NOREPLACE) {
            Ok(()) => report.installed.push(record.name),
            // Made by the agent meanwhile: its clone, kept; the stage's copy goes with the stage.
            Err(rustix::io::Errno::EXIST) => report.kept.push(record.name),
            Err(e) => bail!("cannot move {} into place in {}: {e}", record.name, dest.display()),
        }
    }
    Ok(report)
}
