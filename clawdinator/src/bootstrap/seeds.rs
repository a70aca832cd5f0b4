//! `cargo xtask bootstrap seeds prepare`: shallow clones of the repositories the agents
//! work on (`clawdinator/repos.tsv`), shipped to hosts inside the bundle.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine;
use serde::{Deserialize, Serialize};
use xshell::{cmd, Shell};

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
    /// the pipeline); `CLAWDINATOR_GIT_TIMEOUT` seconds on the CLI.
    pub git_timeout: Duration,
}

/// The git timeout the CLI uses: `CLAWDINATOR_GIT_TIMEOUT` seconds, default 600.
pub fn git_timeout_from_env() -> Result<Duration> {
    match std::env::var("CLAWDINATOR_GIT_TIMEOUT") {
        Err(_) => Ok(Duration::from_secs(600)),
        Ok(v) => v
            .parse::<f64>()
            .ok()
            .filter(|s| *s > 0.0)
            .map(Duration::from_secs_f64)
            .with_context(|| format!("CLAWDINATOR_GIT_TIMEOUT={v} is not a positive number of seconds")),
    }
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

/// One git command, killed when it outlives `limit` (xshell cannot time a
/// command out, so the Cmd it builds is run as a std Command).
fn git(sh: &Shell, env: &[(String, String)], args: &[&str], limit: Duration) -> Result<String> {
    let mut command = cmd!(sh, "git {args...}").quiet().ignore_status();
    for (k, v) in env {
        command = command.env(k, v);
    }
    let mut command = std::process::Command::from(command);
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().context("cannot run git")?;
    let output = wait_bounded(child, limit).with_context(|| {
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

/// Wait for `child`, reading its output on the side; kill it after `limit`.
fn wait_bounded(mut child: std::process::Child, limit: Duration) -> Result<std::process::Output> {
    use std::io::Read;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("killed after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Clone, or bring an existing clone to the tip of its branch. Returns
/// (commit, was it a fresh clone).
fn prepare_one(repo: &SeedRepo, dest: &Path, token: Option<&str>, limit: Duration) -> Result<(String, bool)> {
    let git = |sh: &Shell, env: &[(String, String)], args: &[&str]| git(sh, env, args, limit);
    let sh = Shell::new()?;
    let env = auth_env(&repo.url, token);
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
        git(&sh, &env, &args)?;
    } else {
        let origin = git(&sh, &env, &["-C", dir_s, "remote", "get-url", "origin"]).ok();
        match origin {
            Some(url) if url == repo.url => {}
            Some(_) => drop(git(&sh, &env, &["-C", dir_s, "remote", "set-url", "origin", &repo.url])?),
            None => drop(git(&sh, &env, &["-C", dir_s, "remote", "add", "origin", &repo.url])?),
        }
        let refspec = repo.branch.as_deref().unwrap_or("HEAD");
        git(&sh, &env, &["-C", dir_s, "fetch", "--quiet", "--depth", "1", "origin", refspec])?;
        git(&sh, &env, &["-C", dir_s, "reset", "--quiet", "--hard", "FETCH_HEAD"])?;
        git(&sh, &env, &["-C", dir_s, "clean", "--quiet", "-ffdx"])?;
    }
    let commit = git(&sh, &env, &["-C", dir_s, "rev-parse", "HEAD"])?;
    Ok((commit, fresh))
}

pub fn prepare(opts: &PrepareOptions, out: &crate::output::Output) -> Result<PrepareReport> {
    let repos = load_list(&opts.list)?;
    std::fs::create_dir_all(&opts.dest).with_context(|| format!("cannot create {}", opts.dest.display()))?;
    let bar = out.counter(repos.len() as u64, "cloning");
    let queue = Mutex::new(repos.iter());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..opts.jobs.max(1).min(repos.len().max(1)) {
            scope.spawn(|| loop {
                let Some(repo) = queue.lock().unwrap().next() else { break };
                let result = prepare_one(repo, &opts.dest, opts.github_token.as_deref(), opts.git_timeout);
                bar.inc(1);
                results.lock().unwrap().push((repo, result));
            });
        }
    });
    bar.finish_and_clear();
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(repo, _)| repo.line);

    let mut report = PrepareReport {
        dest: opts.dest.display().to_string(),
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
                report.repos.push(SeedRecord {
                    name: repo.name.clone(),
                    url: repo.url.clone(),
                    branch: repo.branch.clone(),
                    commit,
                });
            }
            Err(err) => report.failed.push(Failure {
                name: repo.name.clone(),
                url: repo.url.clone(),
                error: format!("{err:#}"),
            }),
        }
    }
    // Clones no longer listed would otherwise keep being shipped to hosts.
    let listed: BTreeSet<&str> = repos.iter().map(|r| r.name.as_str()).collect();
    for entry in std::fs::read_dir(&opts.dest)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !listed.contains(name.as_str()) && entry.path().join(".git").is_dir() {
            std::fs::remove_dir_all(entry.path())?;
            report.removed.push(name);
        }
    }
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

/// Copy a tree (directories and files, modes kept), owned by `owner`.
fn copy_tree(from: &Path, to: &Path, owner: crate::atomic::Owner) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(from)?;
    if meta.is_dir() {
        std::fs::create_dir(to).with_context(|| format!("cannot create {}", to.display()))?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()), owner)?;
        }
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.permissions().mode() & 0o777))?;
    } else if meta.is_file() {
        std::fs::copy(from, to).with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    } else {
        bail!("{} is neither a file nor a directory: refused", from.display());
    }
    if owner != crate::atomic::Owner::default() {
        std::os::unix::fs::lchown(to, owner.uid, owner.gid)
            .with_context(|| format!("cannot chown {}", to.display()))?;
    }
    Ok(())
}

/// Host side: every repository of the fetched seeds that `dest` lacks is
/// copied in (beside its target, then renamed into place); one that exists
/// is the agents' working clone and is never touched, nor is anything the
/// seeds no longer list. `only`, when not empty, names the seeds wanted
/// (root's deploy copy takes just the fleet's own repository).
pub fn install(from: &Path, dest: &Path, only: &[String], owner: crate::atomic::Owner) -> Result<InstallReport> {
    let mut records = load_records(from)?;
    if let Some(missing) = only.iter().find(|name| !records.iter().any(|r| &&r.name == name)) {
        bail!(
            "{} lists no seed {missing:?}: add it to clawdinator/repos.tsv and upload the bundles again",
            from.display()
        );
    }
    records.retain(|r| only.is_empty() || only.contains(&r.name));
    std::fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let mut report = InstallReport { dest: dest.display().to_string(), installed: vec![], kept: vec![] };
    for record in records {
        let target = dest.join(&record.name);
        if std::fs::symlink_metadata(&target).is_ok() {
            report.kept.push(record.name);
            continue;
        }
        let staging = dest.join(format!(".{}.seeding", record.name));
        if staging.exists() {
            std::fs::remove_dir_all(&staging)?; // left by an interrupted run
        }
        copy_tree(&from.join(&record.name), &staging, owner)?;
        std::fs::rename(&staging, &target).with_context(|| format!("cannot move {} into place", target.display()))?;
        report.installed.push(record.name);
    }
    Ok(report)
}
