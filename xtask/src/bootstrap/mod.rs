//! Per-instance bootstrap bundles: `bootstrap upload` (operator/CI side) and
//! `bootstrap fetch` (host side, run by the NixOS bootstrap service).
//!
//! Under `s3://BUCKET/<bootstrapPrefix>/` each instance gets:
//! - `secrets.tar.zst`: `clawdinator.agekey` and `secrets/*.age`, every
//!   common secret and only this instance's Discord token;
//! - `repo-seeds.tar.zst`: the seeds directory, built once for the fleet and
//!   placed under every prefix by server-side copy;
//! - `manifest.json`: what the archives hold and their SHA-256, written last.

pub mod archive;
pub mod seeds;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::aws::s3::{self, Body};
use crate::aws::Aws;
use crate::fleet::{self, Instance};
use crate::output::Output;
use crate::secrets::{self, Sources, AGE_KEY_NAME};
use crate::{flags, project, Ctx};
use archive::Writer;
use seeds::SeedRecord;

pub const SECRETS_ARCHIVE: &str = "secrets.tar.zst";
pub const SEEDS_ARCHIVE: &str = "repo-seeds.tar.zst";
pub const MANIFEST: &str = "manifest.json";
pub const SENTINEL: &str = ".bootstrap-ok";
pub const PREFIX_MARKER: &str = ".bootstrap-prefix";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveInfo {
    pub sha256: String,
    pub size: u64,
}

/// What a bundle holds. Never a secret value: names and digests only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub instance: String,
    pub prefix: String,
    pub archives: BTreeMap<String, ArchiveInfo>,
    /// File names inside `secrets/` of the secrets archive.
    pub secrets: Vec<String>,
    pub seeds: Vec<SeedRecord>,
    /// The git revision of this repository that produced the bundle.
    pub source_revision: Option<String>,
    /// When this content was first uploaded (RFC 3339).
    pub created: String,
}

impl Manifest {
    /// Same bundle, whenever and from whichever revision it was produced:
    /// an unchanged bundle keeps its manifest, so a re-run sends nothing.
    pub fn same_content(&self, other: &Manifest) -> bool {
        self.instance == other.instance
            && self.prefix == other.prefix
            && self.archives == other.archives
            && self.secrets == other.secrets
            && self.seeds == other.seeds
    }
}

fn key(prefix: &str, name: &str) -> String {
    format!("{prefix}/{name}")
}

// ---------------------------------------------------------------- upload

#[derive(Debug, Clone)]
pub struct UploadOptions {
    pub sources: Sources,
    pub seeds_dir: PathBuf,
    pub bucket: String,
    /// Instance names; empty means the whole fleet.
    pub instances: Vec<String>,
    pub dry_run: bool,
    pub concurrency: usize,
    pub source_revision: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Replace,
    Copy,
    Unchanged,
}

#[derive(Debug, Clone, Serialize)]
pub struct ObjectPlan {
    pub instance: String,
    pub key: String,
    pub action: Action,
    /// Bytes this action sends (0 for copies and unchanged objects).
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadReport {
    pub bucket: String,
    pub dry_run: bool,
    pub objects: Vec<ObjectPlan>,
    pub uploaded: usize,
    pub copied: usize,
    pub unchanged: usize,
    pub bytes_sent: u64,
    /// Links in the seeds that were not archived (the host refuses links).
    pub skipped_seed_links: Vec<String>,
}

impl fmt::Display for UploadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = |a: Action| match (a, self.dry_run) {
            (Action::Create, true) => "would create",
            (Action::Replace, true) => "would replace",
            (Action::Copy, true) => "would copy",
            (Action::Create, false) => "created",
            (Action::Replace, false) => "replaced",
            (Action::Copy, false) => "copied",
            (Action::Unchanged, _) => "unchanged",
        };
        for o in &self.objects {
            writeln!(f, "{:<16} {:<14} s3://{}/{}", o.instance, verb(o.action), self.bucket, o.key)?;
        }
        for link in &self.skipped_seed_links {
            writeln!(f, "warning: seeds link {link} left out (links are not shipped to hosts)")?;
        }
        let lead = if self.dry_run { "bootstrap upload (dry run, nothing written)" } else { "bootstrap upload" };
        writeln!(
            f,
            "{lead}: {} uploaded, {} copied, {} unchanged, {} sent",
            self.uploaded,
            self.copied,
            self.unchanged,
            indicatif::HumanBytes(self.bytes_sent)
        )
    }
}

/// One instance's bundle, built in memory (it holds the age identity).
struct SecretsBundle {
    instance: Instance,
    bytes: Zeroizing<Vec<u8>>,
    info: ArchiveInfo,
    secrets: Vec<String>,
}

/// Build the secrets archive of one instance: every common secret and its own token.
fn build_secrets_bundle(
    instance: &Instance,
    spec: &secrets::Spec,
    sources: &Sources,
    age_key: &[u8],
) -> Result<SecretsBundle> {
    let files = spec.files_for(instance);
    let mut writer = Writer::new(Vec::new())?;
    writer.file(AGE_KEY_NAME, 0o400, age_key.len() as u64, age_key)?;
    writer.dir("secrets", 0o700)?;
    for file in &files {
        let path = sources.secrets_dir.join(file);
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        writer.file(&format!("secrets/{file}"), 0o400, bytes.len() as u64, bytes.as_slice())?;
    }
    let (bytes, sha256, size) = writer.finish()?;
    Ok(SecretsBundle {
        instance: instance.clone(),
        bytes: Zeroizing::new(bytes),
        info: ArchiveInfo { sha256, size },
        secrets: files,
    })
}

/// Read back what a built secrets archive holds and refuse unless its tokens
/// are exactly the instance's own (checked on the bytes about to be sent).
fn verify_isolation(bundle: &SecretsBundle, spec: &secrets::Spec) -> Result<()> {
    let mut tar = tar::Archive::new(zstd::Decoder::new(bundle.bytes.as_slice())?);
    let mut tokens = Vec::new();
    for entry in tar.entries()? {
        let entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        if let Some(name) = path.strip_prefix("secrets/") {
            if spec.is_token_file(name) {
                tokens.push(name.to_string());
            }
        }
    }
    let own = bundle.instance.token_file();
    ensure!(
        tokens == [own.clone()],
        "refusing to upload: the bundle of `{}` would hold tokens {tokens:?}, not exactly its own {own}",
        bundle.instance.host
    );
    Ok(())
}

/// Everything checked and built, nothing sent yet.
struct Prepared {
    bundles: Vec<SecretsBundle>,
    seeds_file: PathBuf,
    seeds_info: ArchiveInfo,
    seed_records: Vec<SeedRecord>,
    skipped_links: Vec<String>,
}

fn prepare(opts: &UploadOptions, workdir: &Path) -> Result<Prepared> {
    let (report, loaded) = secrets::check(&opts.sources, true);
    let Some((registry, spec)) = loaded else {
        let lines: Vec<String> =
            report.findings.iter().filter(|f| f.severity == secrets::Severity::Error).map(|f| f.to_string()).collect();
        bail!("nothing uploaded: the secrets are not ready:\n  {}", lines.join("\n  "));
    };
    let instances = registry.select(&opts.instances)?;
    let seed_records = seeds::load_records(&opts.seeds_dir)?;
    let age_key = Zeroizing::new(
        fs::read(&opts.sources.age_key).with_context(|| format!("cannot read {}", opts.sources.age_key.display()))?,
    );

    let bundles = instances
        .iter()
        .map(|instance| build_secrets_bundle(instance, &spec, &opts.sources, &age_key))
        .collect::<Result<Vec<_>>>()?;
    for bundle in &bundles {
        verify_isolation(bundle, &spec)?;
    }

    // The seeds are archived once, whatever the fleet size.
    let seeds_file = workdir.join(SEEDS_ARCHIVE);
    let file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&seeds_file)?;
    let mut writer = Writer::new(std::io::BufWriter::with_capacity(1 << 20, file))?;
    let skipped_links = archive::write_tree(&mut writer, &opts.seeds_dir, "repo-seeds")
        .with_context(|| format!("cannot archive the seeds in {}", opts.seeds_dir.display()))?;
    let (out, sha256, size) = writer.finish()?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(Prepared { bundles, seeds_file, seeds_info: ArchiveInfo { sha256, size }, seed_records, skipped_links })
}

fn now_rfc3339() -> String {
    aws_smithy_types::DateTime::from(std::time::SystemTime::now())
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}

/// A private (0700) working directory, removed on every exit path
/// (tempfile removes it on drop, including while unwinding).
pub fn private_workdir() -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix("clawdinator-").tempdir()?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

pub async fn upload(aws: &Aws, opts: &UploadOptions, out: &Output) -> Result<UploadReport> {
    let workdir = private_workdir()?;
    let prepared = {
        let opts = opts.clone();
        let dir = workdir.path().to_path_buf();
        tokio::task::spawn_blocking(move || prepare(&opts, &dir)).await??
    };
    let s3c = aws.s3();
    let bucket = opts.bucket.as_str();
    let created = now_rfc3339();

    // Plan: what is already there, by SHA-256.
    let concurrency = opts.concurrency.max(1);
    let lookups = futures::stream::iter(prepared.bundles.iter().map(|bundle| {
        let s3c = s3c.clone();
        async move {
            let prefix = &bundle.instance.bootstrap_prefix;
            let secrets_sha = s3::head_sha256(&s3c, bucket, &key(prefix, SECRETS_ARCHIVE)).await?;
            let seeds_sha = s3::head_sha256(&s3c, bucket, &key(prefix, SEEDS_ARCHIVE)).await?;
            let manifest = s3::get_bytes(&s3c, bucket, &key(prefix, MANIFEST)).await?;
            anyhow::Ok((secrets_sha, seeds_sha, manifest))
        }
    }))
    .buffered(concurrency)
    .try_collect::<Vec<_>>()
    .await?;

    struct Planned<'a> {
        bundle: &'a SecretsBundle,
        secrets: Action,
        seeds: Action,
        manifest: Action,
        manifest_bytes: Vec<u8>,
    }
    let action_for = |existing: &Option<String>, want: &str| match existing {
        None => Action::Create,
        Some(sha) if sha == want => Action::Unchanged,
        Some(_) => Action::Replace,
    };
    let mut planned = Vec::new();
    for (bundle, (secrets_sha, seeds_sha, old_manifest)) in prepared.bundles.iter().zip(lookups) {
        let mut manifest = Manifest {
            instance: bundle.instance.host.clone(),
            prefix: bundle.instance.bootstrap_prefix.clone(),
            archives: BTreeMap::from([
                (SECRETS_ARCHIVE.to_string(), bundle.info.clone()),
                (SEEDS_ARCHIVE.to_string(), prepared.seeds_info.clone()),
            ]),
            secrets: bundle.secrets.clone(),
            seeds: prepared.seed_records.clone(),
            source_revision: opts.source_revision.clone(),
            created: created.clone(),
        };
        let old: Option<Manifest> = old_manifest.as_deref().and_then(|b| serde_json::from_slice(b).ok());
        let manifest_action = match &old {
            None if old_manifest.is_none() => Action::Create,
            Some(old) if old.same_content(&manifest) => {
                manifest = old.clone();
                Action::Unchanged
            }
            _ => Action::Replace,
        };
        planned.push(Planned {
            bundle,
            secrets: action_for(&secrets_sha, &bundle.info.sha256),
            seeds: action_for(&seeds_sha, &prepared.seeds_info.sha256),
            manifest: manifest_action,
            manifest_bytes: serde_json::to_vec_pretty(&manifest)?,
        });
    }

    // The seeds archive is sent at most once; every other prefix copies it
    // server-side from one that already holds the right bytes.
    let mut seeds_source = planned
        .iter()
        .find(|p| p.seeds == Action::Unchanged)
        .map(|p| key(&p.bundle.instance.bootstrap_prefix, SEEDS_ARCHIVE));
    let mut seeds_upload = None;
    if seeds_source.is_none() {
        if let Some(first) = planned.iter_mut().find(|p| p.seeds != Action::Unchanged) {
            let k = key(&first.bundle.instance.bootstrap_prefix, SEEDS_ARCHIVE);
            seeds_upload = Some(k.clone());
            seeds_source = Some(k);
        }
    }

    let mut objects = Vec::new();
    for p in &planned {
        let prefix = &p.bundle.instance.bootstrap_prefix;
        let name = &p.bundle.instance.host;
        let seeds_key = key(prefix, SEEDS_ARCHIVE);
        let seeds_action = match p.seeds {
            Action::Unchanged => Action::Unchanged,
            a if seeds_upload.as_deref() == Some(seeds_key.as_str()) => a,
            _ => Action::Copy,
        };
        let bytes = |a: Action, n: u64| if matches!(a, Action::Create | Action::Replace) { n } else { 0 };
        objects.push(ObjectPlan {
            instance: name.clone(),
            key: key(prefix, SECRETS_ARCHIVE),
            action: p.secrets,
            bytes: bytes(p.secrets, p.bundle.info.size),
        });
        objects.push(ObjectPlan {
            instance: name.clone(),
            key: seeds_key,
            action: seeds_action,
            bytes: bytes(seeds_action, prepared.seeds_info.size),
        });
        objects.push(ObjectPlan {
            instance: name.clone(),
            key: key(prefix, MANIFEST),
            action: p.manifest,
            bytes: bytes(p.manifest, p.manifest_bytes.len() as u64),
        });
    }
    let report = UploadReport {
        bucket: bucket.to_string(),
        dry_run: opts.dry_run,
        uploaded: objects.iter().filter(|o| matches!(o.action, Action::Create | Action::Replace)).count(),
        copied: objects.iter().filter(|o| o.action == Action::Copy).count(),
        unchanged: objects.iter().filter(|o| o.action == Action::Unchanged).count(),
        bytes_sent: objects.iter().map(|o| o.bytes).sum(),
        objects,
        skipped_seed_links: prepared.skipped_links.clone(),
    };
    if opts.dry_run {
        return Ok(report);
    }

    let bar = out.progress(report.bytes_sent, "uploading");
    // 1. The one seeds upload, then the secrets archives alongside the copies.
    if let Some(k) = &seeds_upload {
        s3::put(&s3c, bucket, k, Body::File(&prepared.seeds_file), &prepared.seeds_info.sha256, "application/zstd")
            .await?;
        bar.inc(prepared.seeds_info.size);
    }
    let mut archive_jobs: Vec<futures::future::BoxFuture<'_, Result<()>>> = Vec::new();
    for p in &planned {
        let prefix = &p.bundle.instance.bootstrap_prefix;
        if p.secrets != Action::Unchanged {
            let (s3c, bar) = (s3c.clone(), bar.clone());
            archive_jobs.push(Box::pin(async move {
                s3::put(
                    &s3c,
                    bucket,
                    &key(prefix, SECRETS_ARCHIVE),
                    Body::Bytes(&p.bundle.bytes),
                    &p.bundle.info.sha256,
                    "application/zstd",
                )
                .await?;
                bar.inc(p.bundle.info.size);
                Ok(())
            }));
        }
        let seeds_key = key(prefix, SEEDS_ARCHIVE);
        if p.seeds != Action::Unchanged && seeds_upload.as_deref() != Some(seeds_key.as_str()) {
            let (s3c, source) = (s3c.clone(), seeds_source.clone().expect("a source exists when a copy is planned"));
            archive_jobs.push(Box::pin(async move { s3::copy(&s3c, bucket, &source, &seeds_key).await }));
        }
    }
    futures::stream::iter(archive_jobs).buffer_unordered(concurrency).try_collect::<Vec<_>>().await?;
    // 2. Manifests last: a host that reads one finds its archives in place.
    futures::stream::iter(planned.iter().filter(|p| p.manifest != Action::Unchanged).map(|p| {
        let (s3c, bar) = (s3c.clone(), bar.clone());
        async move {
            let sha = archive::sha256_hex(&p.manifest_bytes);
            s3::put(
                &s3c,
                bucket,
                &key(&p.bundle.instance.bootstrap_prefix, MANIFEST),
                Body::Bytes(&p.manifest_bytes),
                &sha,
                "application/json",
            )
            .await?;
            bar.inc(p.manifest_bytes.len() as u64);
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(concurrency)
    .try_collect::<Vec<_>>()
    .await?;
    bar.finish_and_clear();
    drop(workdir);
    Ok(report)
}

// ---------------------------------------------------------------- fetch

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

pub async fn run(ctx: &Ctx, cmd: flags::BootstrapCmd) -> Result<()> {
    match cmd {
        flags::BootstrapCmd::Upload(args) => {
            let bucket = args
                .bucket
                .clone()
                .or_else(|| ctx.default_bucket().map(str::to_string))
                .context("no bucket: pass --bucket or set S3_BUCKET")?;
            let opts = UploadOptions {
                sources: Sources::from_flags(&args.secrets),
                seeds_dir: args.repo_seeds.clone(),
                bucket,
                instances: args.select.instance.clone(),
                dry_run: args.dry_run,
                concurrency: args.concurrency,
                source_revision: project::git_revision(),
            };
            let aws = ctx.aws().await?;
            let report = tokio::select! {
                report = upload(&aws, &opts, &ctx.out) => report?,
                _ = tokio::signal::ctrl_c() => bail!("interrupted: the temporary bundle directory was removed; re-run to finish (objects already sent are kept, nothing is sent twice)"),
            };
            ctx.out.emit(&report)
        }
        flags::BootstrapCmd::Fetch(args) => {
            let opts = FetchOptions {
                bucket: args.bucket.clone(),
                prefix: args.prefix.clone(),
                prefix_file: Some(args.prefix_file.clone()),
                secrets_dir: args.secrets_dir.clone(),
                seeds_dir: args.repo_seeds_dir.clone(),
                age_key_path: args.age_key_path.clone(),
            };
            let aws = ctx.aws().await?;
            let report = fetch(&aws, &opts).await?;
            ctx.out.emit(&report)
        }
    }
}
