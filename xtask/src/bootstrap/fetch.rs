//! `bootstrap fetch` (host side, run by the NixOS bootstrap service):
//! download, verify and install this host's bundle.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;
use zeroize::Zeroizing;

use super::{archive, key, seeds, Manifest, MANIFEST, PREFIX_MARKER, SECRETS_ARCHIVE, SEEDS_ARCHIVE, SENTINEL};
use crate::aws::s3;
use crate::aws::Aws;
use crate::fleet;
use crate::secrets::AGE_KEY_NAME;

#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub bucket: String,
    pub prefix: String,
    /// When this file exists and is not empty, its content is the prefix.
    pub prefix_file: Option<PathBuf>,
    pub secrets_dir: PathBuf,
    pub seeds_dir: PathBuf,
    pub age_key_path: PathBuf,
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

/// A staging directory beside `target`, so the final step is a rename on
/// one filesystem.
fn staging_beside(target: &Path) -> Result<tempfile::TempDir> {
    let parent = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let dir = tempfile::Builder::new().prefix(".bootstrap-staging-").tempdir_in(parent)?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

/// Put `new` at `target`: an atomic exchange when `target` exists (the old
/// tree ends up at `new` and goes with the staging directory), else a rename.
fn swap_into_place(new: &Path, target: &Path) -> Result<()> {
    if target.exists() {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let a = CString::new(new.as_os_str().as_bytes())?;
        let b = CString::new(target.as_os_str().as_bytes())?;
        // SAFETY: two valid NUL-terminated paths.
        let rc =
            unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE) };
        if rc != 0 {
            bail!("cannot swap {} into place: {}", target.display(), std::io::Error::last_os_error());
        }
    } else {
        fs::rename(new, target).with_context(|| format!("cannot move {} into place", target.display()))?;
    }
    Ok(())
}

pub async fn fetch(aws: &Aws, opts: &FetchOptions) -> Result<FetchReport> {
    let prefix = effective_prefix(opts)?;
    if let Some(why) = fleet::prefix_error(&prefix) {
        bail!("bootstrap prefix {prefix:?} {why}");
    }
    let marker = read_marker(&opts.secrets_dir.join(PREFIX_MARKER));
    let done = opts.secrets_dir.join(SENTINEL).exists();
    if done && marker.as_deref() == Some(prefix.as_str()) {
        return Ok(FetchReport { prefix, already_done: true, reinitialised: false, secrets: vec![], seeds: vec![] });
    }
    let reinitialised = marker.is_some_and(|m| m != prefix);
    let s3c = aws.s3();
    let bucket = &opts.bucket;

    let manifest_key = key(&prefix, MANIFEST);
    let manifest_bytes = s3::get_bytes(&s3c, bucket, &manifest_key).await?.with_context(|| {
        format!(
            "{} does not exist: was `cargo xtask bootstrap upload` run for this instance?",
            s3::url(bucket, &manifest_key)
        )
    })?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .with_context(|| format!("{} is not a valid manifest", s3::url(bucket, &manifest_key)))?;
    ensure!(
        manifest.prefix == prefix,
        "{} is for prefix {:?}, not {prefix:?}",
        s3::url(bucket, &manifest_key),
        manifest.prefix
    );

    let secrets_stage = staging_beside(&opts.secrets_dir)?;
    let seeds_stage = staging_beside(&opts.seeds_dir)?;
    let mut downloaded = BTreeMap::new();
    for (name, stage) in [(SECRETS_ARCHIVE, &secrets_stage), (SEEDS_ARCHIVE, &seeds_stage)] {
        let want = manifest.archives.get(name).with_context(|| format!("the manifest lists no {name}"))?;
        let path = stage.path().join(name);
        let k = key(&prefix, name);
        let (sha, size) = s3::get_to_file(&s3c, bucket, &k, &path).await?;
        ensure!(
            sha == want.sha256 && size == want.size,
            "{} does not match its manifest (sha256 {sha}, {size} bytes; expected {}, {} bytes): refusing it, nothing changed",
            s3::url(bucket, &k),
            want.sha256,
            want.size
        );
        downloaded.insert(name, path);
    }

    let opts2 = opts.clone();
    let prefix2 = prefix.clone();
    let (secrets, seeds) = tokio::task::spawn_blocking(move || -> Result<_> {
        // Unpack everything before touching anything in place.
        let unpacked = secrets_stage.path().join("unpacked");
        fs::create_dir(&unpacked)?;
        let entries = archive::unpack(fs::File::open(&downloaded[SECRETS_ARCHIVE])?, &unpacked)
            .context("the secrets archive is refused")?;
        let mut secret_files = Vec::new();
        for e in &entries {
            let p = e.path.to_string_lossy();
            match (p.as_ref(), e.is_dir) {
                (AGE_KEY_NAME, false) | ("secrets", true) => {}
                (other, false)
                    if other.starts_with("secrets/") && other.ends_with(".age") && !other[8..].contains('/') =>
                {
                    secret_files.push(other[8..].to_string())
                }
                (other, _) => bail!("the secrets archive holds an unexpected entry {other}: refused"),
            }
        }
        ensure!(unpacked.join(AGE_KEY_NAME).is_file(), "the secrets archive holds no {AGE_KEY_NAME}");
        secret_files.sort();

        let new_secrets = secrets_stage.path().join("new");
        fs::create_dir(&new_secrets)?;
        fs::set_permissions(&new_secrets, fs::Permissions::from_mode(0o700))?;
        for f in &secret_files {
            let to = new_secrets.join(f);
            fs::rename(unpacked.join("secrets").join(f), &to)?;
            fs::set_permissions(&to, fs::Permissions::from_mode(0o400))?;
        }
        for (name, content) in [(PREFIX_MARKER, prefix2.as_str()), (SENTINEL, "")] {
            let mut file =
                fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(new_secrets.join(name))?;
            file.write_all(content.as_bytes())?;
            if name == PREFIX_MARKER {
                file.write_all(b"\n")?;
            }
        }

        let seeds_unpacked = seeds_stage.path().join("unpacked");
        fs::create_dir(&seeds_unpacked)?;
        archive::unpack(fs::File::open(&downloaded[SEEDS_ARCHIVE])?, &seeds_unpacked)
            .context("the repo-seeds archive is refused")?;
        let new_seeds = seeds_unpacked.join("repo-seeds");
        ensure!(new_seeds.is_dir(), "the repo-seeds archive has no repo-seeds/ directory");
        let seed_names: Vec<String> =
            seeds::load_records(&new_seeds).map(|r| r.into_iter().map(|s| s.name).collect()).unwrap_or_default();

        // Commit: seeds, then the key, then the secrets directory, which
        // carries the sentinel, so a host never sees a sentinel early.
        swap_into_place(&new_seeds, &opts2.seeds_dir)?;
        let key_parent = opts2.age_key_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        fs::create_dir_all(key_parent)?;
        let key_bytes = Zeroizing::new(fs::read(unpacked.join(AGE_KEY_NAME))?);
        let mut staged_key = tempfile::Builder::new().prefix(".clawdinator.agekey.").tempfile_in(key_parent)?;
        staged_key.write_all(&key_bytes)?;
        staged_key.as_file().sync_all()?;
        fs::set_permissions(staged_key.path(), fs::Permissions::from_mode(0o400))?;
        staged_key
            .persist(&opts2.age_key_path)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot install {}", opts2.age_key_path.display()))?;
        swap_into_place(&new_secrets, &opts2.secrets_dir)?;
        drop(secrets_stage);
        drop(seeds_stage);
        Ok((secret_files, seed_names))
    })
    .await??;
    Ok(FetchReport { prefix, already_done: false, reinitialised, secrets, seeds })
}
