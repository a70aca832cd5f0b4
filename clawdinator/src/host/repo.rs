//! The repository copy root builds the host's system from (the deploy
//! copy). Root runs git in it, so nothing in or around it may be anyone
//! else's to change, and git may take nothing from it that runs code:
//!
//! - the copy and every directory above it belong to root (to the user
//!   running this, in tests) and no one else can write them (a sticky
//!   directory like /tmp excepted above the copy);
//! - its `.git/config` holds only the keys a clone writes (no
//!   `core.fsmonitor`, `include.path`, `url.*.insteadOf`, filters, hooks);
//! - git reads no system or user configuration, runs no hooks or
//!   fsmonitor, and speaks only the configured URL's protocol (never
//!   `ext::`);
//! - it fetches the configured URL's branch, never a remote the copy names,
//!   and a revision is deployed only when it is reachable from that fetched
//!   branch: a commit made on the host is refused.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use xshell::{cmd, Shell};

/// Keys a clone's own `.git/config` may hold: none of them runs anything.
const SAFE_KEYS: &[&str] = &[
    "core.repositoryformatversion",
    "core.filemode",
    "core.bare",
    "core.logallrefupdates",
    "core.ignorecase",
    "core.precomposeunicode",
    "core.symlinks",
    "extensions.objectformat",
    "remote.origin.url",
    "remote.origin.fetch",
    "remote.origin.tagopt",
];

pub struct DeployCopy {
    pub dir: PathBuf,
    /// The only URL fetched (the module's `deploy.repoUrl`).
    pub url: String,
    pub branch: String,
}

impl DeployCopy {
    /// The copy at `dir`, once its place and its configuration are safe to run git in as root.
    pub fn open(dir: &Path, url: &str, branch: &str) -> Result<DeployCopy> {
        ensure!(
            !branch.is_empty() && !branch.starts_with('-') && !branch.contains(".."),
            "\"{branch}\" is not a branch name"
        );
        crate::atomic::check_owned(dir)?;
        check_config(&dir.join(".git/config"))?;
        Ok(DeployCopy { dir: dir.to_path_buf(), url: url.to_string(), branch: branch.to_string() })
    }

    /// The copy a switch builds from, once it and the place of the
    /// deployment record it will write are root's alone.
    pub fn open_for(dir: &Path, url: &str, branch: &str, record: &Path) -> Result<DeployCopy> {
        crate::atomic::check_owned(record)?;
        DeployCopy::open(dir, url, branch)
    }

    /// git in the copy with nothing configurable that could run code.
    fn git<'a>(&self, sh: &'a Shell, args: &[&str]) -> xshell::Cmd<'a> {
        let dir = &self.dir;
        let scheme = protocol(&self.url);
        cmd!(sh, "git -C {dir}")
            .args(["-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null", "-c", "protocol.allow=never"])
            .args(["-c", &format!("protocol.{scheme}.allow=always"), "-c", "credential.helper="])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env_remove("GIT_DIR")
            .env_remove("GIT_CONFIG_PARAMETERS")
            .env_remove("GIT_EXEC_PATH")
    }

    fn tracking_ref(&self) -> String {
        format!("refs/remotes/origin/{}", self.branch)
    }

    /// Fetch the configured URL's branch into `origin/<branch>`.
    pub fn fetch(&self, sh: &Shell) -> Result<()> {
        let refspec = format!("+refs/heads/{}:{}", self.branch, self.tracking_ref());
        let mut args = vec!["fetch", "--quiet", "--no-tags", "--", &self.url, &refspec];
        if self.dir.join(".git/shallow").exists() {
            args.insert(3, "--unshallow"); // reachability needs the whole history
        }
        crate::process::run_on_stderr(self.git(sh, &args))
            .with_context(|| format!("cannot fetch {} from {} into {}", self.branch, self.url, self.dir.display()))
    }

    /// The commit the copy has checked out (the seed's, on a first switch).
    pub fn head(&self, sh: &Shell) -> Result<String> {
        let head = self.git(sh, &["rev-parse", "--verify", "HEAD^{commit}"]).quiet().read();
        head.with_context(|| format!("{} is not a git clone: cannot tell which revision it is", self.dir.display()))
    }

    /// The fetched tip of the branch.
    pub fn published_tip(&self, sh: &Shell) -> Result<String> {
        let spec = format!("{}^{{commit}}", self.tracking_ref());
        let tip = self.git(sh, &["rev-parse", "--verify", "--quiet", &spec]).quiet().read();
        tip.with_context(|| format!("{} has no {}: fetch it first", self.dir.display(), self.tracking_ref()))
    }

    /// REV is a commit reachable from the fetched branch, not one made here.
    pub fn require_published(&self, sh: &Shell, rev: &str) -> Result<()> {
        let reachable =
            self.git(sh, &["merge-base", "--is-ancestor", rev, &self.tracking_ref()]).quiet().ignore_stderr().run();
        ensure!(
            reachable.is_ok(),
            "{rev} is not reachable from {}'s {} ({}): only published revisions are deployed",
            self.url,
            self.branch,
            self.dir.display()
        );
        Ok(())
    }

    /// A file's content at REV (the registry a switch checks against).
    pub fn read_at(&self, sh: &Shell, rev: &str, path: &str) -> Result<String> {
        let object = format!("{rev}:{path}");
        self.git(sh, &["show", &object]).quiet().read().with_context(|| format!("{rev} has no {path}"))
    }
}

/// The protocol git may speak for a URL: its scheme, `file` for a path.
fn protocol(url: &str) -> &str {
    match url.split_once("://") {
        Some((scheme, _)) => scheme,
        None => "file",
    }
}

/// Refuse a clone whose own configuration holds any key that is not a plain clone's.
fn check_config(config: &Path) -> Result<()> {
    let sh = Shell::new()?;
    // Reading a config file with --file runs nothing and follows no include.
    let listed = cmd!(sh, "git config --file {config} --no-includes --name-only --list")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .quiet()
        .read()
        .with_context(|| format!("cannot read {}: is the deploy copy a git clone?", config.display()))?;
    let branch_key =
        |k: &str| k.strip_prefix("branch.").is_some_and(|rest| rest.ends_with(".remote") || rest.ends_with(".merge"));
    let unsafe_keys: Vec<&str> =
        listed.lines().filter(|k| !SAFE_KEYS.contains(&k.to_ascii_lowercase().as_str()) && !branch_key(k)).collect();
    ensure!(
        unsafe_keys.is_empty(),
        "{} sets {}, which a plain clone does not: refused (root runs git here); re-seed the deploy copy",
        config.display(),
        unsafe_keys.join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_is_the_scheme_or_file() {
        assert_eq!(protocol("https://github.com/openclaw/clawdinators"), "https");
        assert_eq!(protocol("/srv/git/clawdinators"), "file");
        assert_eq!(protocol("file:///srv/git/clawdinators"), "file");
    }
}
