//! `bootstrap fetch` (host side, run by the NixOS bootstrap service):
//! download, verify and install this host's bundle.
//!
//! Layout under `--state-dir` (default `/var/lib/clawd/bootstrap`):
//!
//! ```text
//! generations/<id>/secrets/*.age, .bootstrap-prefix, .bootstrap-ok   (0700, files 0400)
//! generations/<id>/repo-seeds/…
//! generations/<id>/clawdinator.agekey      (0400, from Secrets Manager)
//! generations/<id>/.bundle-fingerprint            (the archives' digests)
//! current -> generations/<id>
//! ```
//!
//! and `--secrets-dir`, `--repo-seeds-dir` and `--age-key-path` are links
//! to `current/secrets`, `current/repo-seeds` and `current/clawdinator.agekey`.
//! The bundle holds ciphertext only: the identity that opens it is read
//! from Secrets Manager (`clawdinator/<instance>/age-identity`, the version
//! the manifest names, with the instance role) and written beside it; an
//! archive that still carries an identity is refused.
//! A new bundle is downloaded, checked and unpacked into a staging directory
//! beside the generations; switching `current` is the one step that makes
//! it visible. A fetch killed before that leaves the previous state whole.
//! Every run reads the manifest: the same bundle is left as it is, a new
//! one (a rotated secret) becomes the next generation; a bootstrapped host
//! whose bucket is out of reach keeps the one in force.

use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;

use super::archive::{self, Limits};
use super::identity;
use super::manifest::{
    key, ArchiveInfo, Manifest, MANIFEST, MANIFEST_LIMIT, PREFIX_MARKER, SECRETS_ARCHIVE, SEEDS_ARCHIVE, SENTINEL,
};
use super::seeds;
use crate::aws::s3;
use crate::aws::Aws;
use crate::registry;
use crate::secrets::AGE_KEY_NAME;

const GENERATIONS: &str = "generations";
const CURRENT: &str = "current";
/// In each generation: the fingerprint of the bundle it was unpacked from.
const FINGERPRINT: &str = ".bundle-fingerprint";
const SECRETS: &str = "secrets";
const SEEDS: &str = "repo-seeds";

#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub bucket: String,
    pub prefix: String,
    /// When this file exists and is not empty, its content is the prefix.
    pub prefix_file: Option<PathBuf>,
    pub secrets_dir: PathBuf,
    pub seeds_dir: PathBuf,
    pub age_key_path: PathBuf,
    /// Where the bundle's generations live. `current` in it points at the one
    /// in force and is switched in one rename; the three paths above are
    /// links into it, so a fetch changes the host's state in one step.
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchReport {
    pub prefix: String,
    /// Already bootstrapped from this prefix: nothing was downloaded.
    pub already_done: bool,
    /// The prefix changed since the last bootstrap: state was replaced.
    pub reinitialised: bool,
    pub secrets: Vec<String>,
    pub seeds: Vec<String>,
    /// The Secrets Manager version of the identity installed (none when nothing was fetched).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_version: Option<String>,
}

impl fmt::Display for FetchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.already_done {
            return writeln!(f, "bootstrap fetch: already bootstrapped from {}; nothing to do", self.prefix);
        }
        let how = if self.reinitialised { " (prefix changed: re-initialised)" } else { "" };
        writeln!(
            f,
            "bootstrap fetch: {} secret(s) and {} seed repo(s) from {}{how}",
            self.secrets.len(),
            self.seeds.len(),
            self.prefix
        )?;
        writeln!(f, "secrets: {}", self.secrets.join(", "))
    }
}

/// The prefix in force: the override file's content when present.
fn effective_prefix(opts: &FetchOptions) -> Result<String> {
    if let Some(file) = &opts.prefix_file {
        if let Ok(text) = fs::read_to_string(file) {
            let text = text.trim();
            if !text.is_empty() {
                return Ok(text.to_string());
            }
        }
    }
    Ok(opts.prefix.trim().to_string())
}

fn read_marker(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// Put `new` at `target`: an atomic exchange when `target` exists (the old
/// one ends up at `new`, for the caller to remove), else a rename.
fn swap_into_place(new: &Path, target: &Path) -> Result<()> {
    if target.exists() {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        renameat_with(CWD, new, CWD, target, RenameFlags::EXCHANGE)
            .with_context(|| format!("cannot swap {} into place", target.display()))?;
    } else {
        fs::rename(new, target).with_context(|| format!("cannot move {} into place", target.display()))?;
    }
    Ok(())
}

/// Test-only (the `test-hooks` feature, which the shipped binary is built
/// without): `CLAWDINATOR_TEST_ABORT_AT=<step>` aborts the process right
/// after that step (downloaded, unpacked, staged, switched), as a kill
/// would; tests prove the previous state survives each.
#[cfg(feature = "test-hooks")]
fn step(name: &str) {
    if std::env::var("CLAWDINATOR_TEST_ABORT_AT").as_deref() == Ok(name) {
        eprintln!("CLAWDINATOR_TEST_ABORT_AT={name}: aborting");
        std::process::abort();
    }
}

/// Without the test hooks a step is only a point in the code.
#[cfg(not(feature = "test-hooks"))]
fn step(_name: &str) {}

/// The bundle's manifest, checked to be for this prefix.
async fn read_manifest(aws: &Aws, bucket: &str, prefix: &str) -> Result<Manifest> {
    let manifest_key = key(prefix, MANIFEST);
    let url = s3::url(bucket, &manifest_key);
    let bytes = s3::get_bytes(&aws.s3(), bucket, &manifest_key, MANIFEST_LIMIT, aws.timeouts().read)
        .await?
        .with_context(|| format!("{url} does not exist: was `cargo xtask bootstrap upload` run for this instance?"))?;
    let manifest: Manifest =
        serde_json::from_slice(&bytes).with_context(|| format!("{url} is not a valid manifest"))?;
    ensure!(manifest.prefix == prefix, "{url} is for prefix {:?}, not {prefix:?}", manifest.prefix);
    ensure!(
        manifest.identity_version.is_some() && manifest.identity_recipient.is_some(),
        "{url} is of the old format (its archive carries its own age identity): refused; \
         run `cargo xtask bootstrap upload --instance {}` to rebuild it with the identity in Secrets Manager",
        manifest.instance
    );
    Ok(manifest)
}

/// The identity the manifest names, from Secrets Manager (read before any
/// download: a host that may not read it learns so at once).
async fn read_identity(aws: &Aws, manifest: &Manifest) -> Result<zeroize::Zeroizing<String>> {
    let (version, recipient) = (
        manifest.identity_version.as_deref().unwrap_or_default(),
        manifest.identity_recipient.as_deref().unwrap_or_default(),
    );
    identity::read(aws, &manifest.instance, version, recipient).await
}

fn archive_info<'a>(manifest: &'a Manifest, name: &str) -> Result<&'a ArchiveInfo> {
    manifest.archives.get(name).with_context(|| format!("the manifest lists no {name}"))
}

/// Both archives into `dir`, each no larger than the manifest says and
/// with the SHA-256 it says.
async fn download(aws: &Aws, bucket: &str, prefix: &str, manifest: &Manifest, dir: &Path) -> Result<()> {
    let s3c = aws.s3();
    for name in [SECRETS_ARCHIVE, SEEDS_ARCHIVE] {
        let want = archive_info(manifest, name)?;
        let k = key(prefix, name);
        let (sha, size) = s3::get_to_file(&s3c, bucket, &k, &dir.join(name), want.size, aws.timeouts().read).await?;
        ensure!(
            sha == want.sha256 && size == want.size,
            "{} does not match its manifest (sha256 {sha}, {size} bytes; expected {}, {} bytes): refusing it, nothing changed",
            s3::url(bucket, &k),
            want.sha256,
            want.size
        );
    }
    Ok(())
}

fn limits(info: &ArchiveInfo) -> Limits {
    Limits { entries: info.entries, content_bytes: info.unpacked_bytes }
}

/// Unpack the secrets archive into `gen/secrets` (only `secrets/*.age` is
/// accepted: an archive carrying an identity is refused), write the identity
/// read from Secrets Manager to `gen/clawdinator.agekey` (0400), with the
/// prefix marker and the sentinel. Returns the secret file names.
fn stage_secrets(gen: &Path, info: &ArchiveInfo, prefix: &str, key: &[u8]) -> Result<Vec<String>> {
    let unpacked = gen.join(".unpacked");
    fs::create_dir(&unpacked)?;
    let entries = archive::unpack(fs::File::open(gen.join(SECRETS_ARCHIVE))?, &unpacked, limits(info))
        .context("the secrets archive is refused")?;
    let mut names = Vec::new();
    for e in &entries {
        match (e.path.to_string_lossy().as_ref(), e.is_dir) {
            ("secrets", true) => {}
            (AGE_KEY_NAME, _) => bail!(
                "the secrets archive holds an age identity ({AGE_KEY_NAME}): a bundle carries ciphertext only, \
                 and its identity lives in Secrets Manager; refused. Run `cargo xtask bootstrap upload` to rebuild it"
            ),
            (other, false)
                if other.strip_prefix("secrets/").is_some_and(|n| n.ends_with(".age") && !n.contains('/')) =>
            {
                names.push(other["secrets/".len()..].to_string())
            }
            (other, _) => bail!("the secrets archive holds an unexpected entry {other}: refused"),
        }
    }
    names.sort();
    let secrets = gen.join(SECRETS);
    fs::rename(unpacked.join("secrets"), &secrets)?;
    fs::set_permissions(&secrets, fs::Permissions::from_mode(0o700))?;
    for name in &names {
        fs::set_permissions(secrets.join(name), fs::Permissions::from_mode(0o400))?;
    }
    fs::remove_dir(&unpacked)?;
    write_key(&gen.join(AGE_KEY_NAME), key)?;
    crate::atomic::write(&secrets.join(PREFIX_MARKER), format!("{prefix}\n").as_bytes(), 0o600)?;
    crate::atomic::write(&secrets.join(SENTINEL), b"", 0o600)?;
    Ok(names)
}

/// The identity file, created 0400 (never readable by others, not even for
/// a moment) in the root-private staging directory.
fn write_key(path: &Path, key: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(key)?;
    file.sync_all().with_context(|| format!("cannot write {}", path.display()))
}

/// Unpack the seeds archive into `gen/repo-seeds`; returns the seed names.
fn stage_seeds(gen: &Path, info: &ArchiveInfo) -> Result<Vec<String>> {
    archive::unpack(fs::File::open(gen.join(SEEDS_ARCHIVE))?, gen, limits(info))
        .context("the repo-seeds archive is refused")?;
    let seeds_dir = gen.join(SEEDS);
    ensure!(seeds_dir.is_dir(), "the repo-seeds archive has no repo-seeds/ directory");
    let names = seeds::load_records(&seeds_dir).map(|r| r.into_iter().map(|s| s.name).collect()).unwrap_or_default();
    Ok(names)
}

/// A link `path` -> `target`, made by renaming a new link over whatever is
/// there (exchanging it with a directory left by an older layout).
fn link(target: &Path, path: &Path) -> Result<()> {
    if fs::read_link(path).is_ok_and(|t| t == target) {
        return Ok(());
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("link");
    let tmp = dir.join(format!(".{name}.new-link"));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    let is_dir = fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
    if is_dir {
        swap_into_place(&tmp, path)?;
        fs::remove_dir_all(&tmp).with_context(|| format!("cannot remove the old {}", path.display()))?;
    } else {
        fs::rename(&tmp, path).with_context(|| format!("cannot link {}", path.display()))?;
    }
    Ok(())
}

/// Generations that are not `keep`, and staging left by a killed fetch.
fn remove_other_generations(generations: &Path, keep: Option<&str>) -> Result<()> {
    for entry in fs::read_dir(generations)? {
        let entry = entry?;
        if keep != Some(entry.file_name().to_string_lossy().as_ref()) {
            let path = entry.path();
            make_writable(&path);
            fs::remove_dir_all(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

/// Unpacked trees keep their modes (read-only directories included): give
/// the owner write access back so they can be removed.
fn make_writable(path: &Path) {
    if let Ok(meta) = fs::symlink_metadata(path) {
        if meta.is_dir() {
            let _ = fs::set_permissions(path, fs::Permissions::from_mode(meta.permissions().mode() | 0o700));
            for entry in fs::read_dir(path).into_iter().flatten().flatten() {
                make_writable(&entry.path());
            }
        }
    }
}

/// The generation `current` points at, if any.
fn current_generation(state: &Path) -> Option<String> {
    let target = fs::read_link(state.join(CURRENT)).ok()?;
    target.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// Download, check and unpack a bundle into a new generation (not yet in force).
async fn stage(
    aws: &Aws,
    opts: &FetchOptions,
    prefix: &str,
    manifest: &Manifest,
    key: zeroize::Zeroizing<String>,
) -> Result<(String, Vec<String>, Vec<String>)> {
    let generations = opts.state_dir.join(GENERATIONS);
    fs::create_dir_all(&generations).with_context(|| format!("cannot create {}", generations.display()))?;
    remove_other_generations(&generations, current_generation(&opts.state_dir).as_deref())?;
    let staging = tempfile::Builder::new().prefix(".staging-").tempdir_in(&generations)?;
    download(aws, &opts.bucket, prefix, manifest, staging.path()).await?;
    step("downloaded");
    let (secrets_info, seeds_info) =
        (archive_info(manifest, SECRETS_ARCHIVE)?.clone(), archive_info(manifest, SEEDS_ARCHIVE)?.clone());
    let gen = staging.path().to_path_buf();
    let prefix_owned = prefix.to_string();
    let fingerprint = fingerprint(manifest)?;
    let (secrets, seeds) = tokio::task::spawn_blocking(move || -> Result<_> {
        let secrets = stage_secrets(&gen, &secrets_info, &prefix_owned, key.as_bytes())?;
        let seeds = stage_seeds(&gen, &seeds_info)?;
        for archive in [SECRETS_ARCHIVE, SEEDS_ARCHIVE] {
            fs::remove_file(gen.join(archive))?;
        }
        fs::write(gen.join(FINGERPRINT), &fingerprint)?;
        fs::set_permissions(&gen, fs::Permissions::from_mode(0o755))?;
        Ok((secrets, seeds))
    })
    .await??;
    step("unpacked");
    let id = format!(
        "{}-{}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos(),
        std::process::id()
    );
    fs::rename(staging.keep(), generations.join(&id))?;
    step("staged");
    Ok((id, secrets, seeds))
}

/// Make generation `id` the one in force: one rename of `current`.
fn switch(opts: &FetchOptions, id: &str) -> Result<()> {
    let state = &opts.state_dir;
    link(&Path::new(GENERATIONS).join(id), &state.join(CURRENT))?;
    step("switched");
    let current = std::path::absolute(state.join(CURRENT))?;
    link(&current.join(SECRETS), &opts.secrets_dir)?;
    link(&current.join(SEEDS), &opts.seeds_dir)?;
    link(&current.join(AGE_KEY_NAME), &opts.age_key_path)?;
    remove_other_generations(&state.join(GENERATIONS), Some(id))
}

/// What identifies a bundle's content: the digests of its archives and the
/// identity version that opens them.
fn fingerprint(manifest: &Manifest) -> Result<String> {
    let what = (&manifest.archives, &manifest.identity_version);
    Ok(crate::digest::sha256_hex(&serde_json::to_vec(&what)?))
}

/// The fingerprint recorded in the generation in force (none before this was recorded).
fn in_force_fingerprint(opts: &FetchOptions) -> Option<String> {
    fs::read_to_string(opts.state_dir.join(CURRENT).join(FINGERPRINT)).ok().map(|s| s.trim().to_string())
}

fn already_done(opts: &FetchOptions, prefix: String) -> Result<FetchReport> {
    // A fetch killed after its switch may have left the old generation.
    let generations = opts.state_dir.join(GENERATIONS);
    if let Some(current) = current_generation(&opts.state_dir).filter(|_| generations.is_dir()) {
        remove_other_generations(&generations, Some(&current))?;
    }
    Ok(FetchReport {
        prefix,
        already_done: true,
        reinitialised: false,
        secrets: vec![],
        seeds: vec![],
        identity_version: None,
    })
}

pub async fn fetch(aws: &Aws, opts: &FetchOptions) -> Result<FetchReport> {
    // Root follows these links later: no one else may be able to swap them.
    for place in [&opts.state_dir, &opts.secrets_dir, &opts.seeds_dir, &opts.age_key_path] {
        crate::atomic::check_owned(place.parent().unwrap_or(place))?;
    }
    let prefix = effective_prefix(opts)?;
    if let Some(why) = registry::prefix_error(&prefix) {
        bail!("bootstrap prefix {prefix:?} {why}");
    }
    let marker = read_marker(&opts.secrets_dir.join(PREFIX_MARKER));
    let done = opts.secrets_dir.join(SENTINEL).exists() && marker.as_deref() == Some(prefix.as_str());
    let manifest = match read_manifest(aws, &opts.bucket, &prefix).await {
        Ok(manifest) => manifest,
        // Bootstrapped already: a host whose bucket is out of reach boots with what it has.
        Err(e) if done => {
            tracing::warn!("keeping the bundle in force: {e:#}");
            return already_done(opts, prefix);
        }
        Err(e) => return Err(e),
    };
    // The same bundle as the one in force: nothing to do. A new one (a
    // rotated secret, new seeds) becomes a new generation.
    if done && in_force_fingerprint(opts).as_deref() == Some(fingerprint(&manifest)?.as_str()) {
        return already_done(opts, prefix);
    }
    let reinitialised = marker.is_some_and(|m| m != prefix);
    let key = read_identity(aws, &manifest).await?;
    let (id, secrets, seeds) = stage(aws, opts, &prefix, &manifest, key).await?;
    switch(opts, &id)?;
    let identity_version = manifest.identity_version.clone();
    Ok(FetchReport { prefix, already_done: false, reinitialised, secrets, seeds, identity_version })
}
