//! `release build`: the fleet's build work, done once per revision. One
//! `nix build` of every host's `config.system.build.toplevel` (shared
//! dependencies built once), one `nix copy` of their closures to the fleet's
//! binary cache, signed with the cache key as nix writes them (nix skips
//! every path the cache has), then the write-once manifest naming each
//! host's store path.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use serde::Serialize;
use xshell::{cmd, Shell};

use super::manifest::{self, Release, Written};
use crate::aws::Aws;
use crate::build_info::{BuildInfo, Input};

/// nix 2.x keeps flakes and the new CLI behind these.
const FEATURES: &str = "nix-command flakes";

pub struct BuildOptions {
    pub names: Vec<String>,
    pub revision: String,
    pub flake: PathBuf,
    /// The fleet bucket (the manifest).
    pub bucket: String,
    /// The cache as a nix store URL, without the key.
    pub cache: String,
    /// The signing key's file (None only for a dry run).
    pub key_file: Option<PathBuf>,
    pub run: String,
    pub dry_run: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildReport {
    pub revision: String,
    pub hosts: BTreeMap<String, String>,
    pub cache: String,
    pub manifest: String,
    pub written: Written,
}

/// What a release build wrote, as the audit trail lists it: its manifest.
impl crate::audit::Audited for BuildReport {
    fn resources(&self) -> Vec<String> {
        vec![self.manifest.clone()]
    }
}

impl std::fmt::Display for BuildReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (name, path) in &self.hosts {
            writeln!(f, "{name:<24} {path}")?;
        }
        let what = match self.written {
            Written::Created => "written",
            Written::Kept => "kept (an earlier run wrote the same systems)",
            Written::WouldCreate => "would be written; nothing was built or copied",
        };
        writeln!(f, "{} {what}; closures in {}", self.manifest, self.cache)
    }
}

/// The flake at exactly REV of the checkout (never its work tree).
fn flake_ref(flake: &Path, revision: &str) -> String {
    format!("git+file://{}?rev={revision}", flake.display())
}

fn toplevel(flake_ref: &str, name: &str) -> String {
    format!("{flake_ref}#nixosConfigurations.\"{name}\".config.system.build.toplevel")
}

/// Each host's system path without building anything (a dry run).
fn evaluate(sh: &Shell, flake_ref: &str, names: &[String]) -> Result<BTreeMap<String, String>> {
    let list = serde_json::to_string(names)?;
    let apply = format!(
        "cs: builtins.listToAttrs (map (n: {{ name = n; value = cs.${{n}}.config.system.build.toplevel.outPath; }}) \
         (builtins.fromJSON ''{list}''))"
    );
    let installable = format!("{flake_ref}#nixosConfigurations");
    let out = cmd!(
        sh,
        "nix --extra-experimental-features {FEATURES} eval --json --no-update-lock-file {installable} --apply {apply}"
    )
    .read()
    .with_context(|| format!("nix eval of {installable}"))?;
    serde_json::from_str(&out).context("nix eval did not print the systems as JSON")
}

/// Every host's system in one `nix build`; their store paths.
fn build_all(sh: &Shell, flake_ref: &str, names: &[String]) -> Result<BTreeMap<String, String>> {
    let installables: Vec<String> = names.iter().map(|n| toplevel(flake_ref, n)).collect();
    let out = cmd!(
        sh,
        "nix --extra-experimental-features {FEATURES} build --no-link --no-update-lock-file --json {installables...}"
    )
    .read()
    .context("nix build of the hosts' systems")?;
    let built: Vec<serde_json::Value> = serde_json::from_str(&out).context("nix build --json printed no list")?;
    ensure!(built.len() == names.len(), "nix build gave {} results for {} hosts", built.len(), names.len());
    let mut hosts = BTreeMap::new();
    for (name, result) in names.iter().zip(&built) {
        let path = result["outputs"]["out"].as_str().with_context(|| format!("nix build gave no output for {name}"))?;
        manifest::check_system_path(path).with_context(|| format!("{name}'s toplevel"))?;
        hosts.insert(name.clone(), path.to_string());
    }
    Ok(hosts)
}

/// The signing key stays a file only its owner reads; nix reads it.
fn check_key_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| {
        format!("cannot read the cache key {} (CLAWDINATOR_CACHE_KEY written to a file)", path.display())
    })?;
    ensure!(
        meta.permissions().mode() & 0o077 == 0,
        "the cache key {} is readable by others (mode {:o}): chmod 600 it",
        path.display(),
        meta.permissions().mode() & 0o777
    );
    Ok(())
}

/// The store URL nix copies to: signing as it writes, zstd-compressed NARs.
fn signing_url(cache: &str, key_file: &Path) -> String {
    let sep = if cache.contains('?') { '&' } else { '?' };
    format!("{cache}{sep}secret-key={}&compression=zstd", key_file.display())
}

/// Copy the closures; nix asks the cache what it has and sends only the rest.
/// nix's S3 store gets this process's AWS credentials (in CI, the role it
/// assumed in process) in its environment, as tofu does.
fn push(sh: &Shell, cache: &str, key_file: &Path, paths: &[&String], credentials: &[(&str, String)]) -> Result<()> {
    let to = signing_url(cache, key_file);
    let copy = cmd!(sh, "nix --extra-experimental-features {FEATURES} copy --to {to} {paths...}");
    crate::process::run_on_stderr(copy.envs(credentials.iter().map(|(k, v)| (*k, v))))
        .with_context(|| format!("nix copy to {cache}"))
}

/// The gateway's pin at REV, for the manifest.
fn gateway_pin(sh: &Shell, flake: &Path, revision: &str) -> Result<Option<Input>> {
    let object = format!("{revision}:flake.lock");
    let lock = cmd!(sh, "git -C {flake} show {object}")
        .quiet()
        .read()
        .with_context(|| format!("{revision} has no flake.lock"))?;
    Ok(BuildInfo::from_lock(&lock, revision)?.inputs.remove("nix-openclaw"))
}

pub async fn build(aws: &Aws, opts: &BuildOptions) -> Result<BuildReport> {
    let sh = Shell::new()?;
    let flake_ref = flake_ref(&opts.flake, &opts.revision);
    let key = manifest::key(&opts.revision);
    let mut report = BuildReport {
        revision: opts.revision.clone(),
        hosts: BTreeMap::new(),
        cache: opts.cache.clone(),
        manifest: crate::aws::s3::url(&opts.bucket, &key),
        written: Written::WouldCreate,
    };
    if opts.dry_run {
        report.hosts = tokio::task::block_in_place(|| evaluate(&sh, &flake_ref, &opts.names))?;
        return Ok(report);
    }
    let key_file =
        opts.key_file.as_deref().context("no cache key: pass --cache-key-file (CLAWDINATOR_CACHE_KEY_FILE)")?;
    check_key_file(key_file)?;
    let credentials = aws.child_environment().await?;
    report.hosts = tokio::task::block_in_place(|| -> Result<_> {
        let hosts = build_all(&sh, &flake_ref, &opts.names)?;
        push(&sh, &opts.cache, key_file, &hosts.values().collect::<Vec<_>>(), &credentials)?;
        Ok(hosts)
    })?;
    let release = Release {
        revision: opts.revision.clone(),
        hosts: report.hosts.clone(),
        nix_openclaw: gateway_pin(&sh, &opts.flake, &opts.revision)?,
        cache: opts.cache.clone(),
        created_at: crate::clock::now_rfc3339(),
        run: opts.run.clone(),
    };
    report.written = manifest::write_once(&aws.s3(), &opts.bucket, &release).await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_goes_to_nix_as_a_file_name_beside_the_cache_url() {
        let key = Path::new("/run/key");
        assert_eq!(
            signing_url("s3://c?region=eu-west-1", key),
            "s3://c?region=eu-west-1&secret-key=/run/key&compression=zstd"
        );
        assert_eq!(
            signing_url("http://127.0.0.1:9/c", key),
            "http://127.0.0.1:9/c?secret-key=/run/key&compression=zstd"
        );
    }
}
