//! `bootstrap upload` (operator/CI side): build every instance's bundle and
//! send only what S3 does not already hold.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use zeroize::Zeroizing;

use super::archive::{self, Writer};
use super::seeds::{self, SeedRecord};
use super::{key, ArchiveInfo, Manifest, MANIFEST, MANIFEST_LIMIT, SECRETS_ARCHIVE, SEEDS_ARCHIVE};
use crate::aws::s3::{self, Body};
use crate::aws::Aws;
use crate::fleet::Instance;
use crate::output::Output;
use crate::secrets::{self, Sources, AGE_KEY_NAME};

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
    let (bytes, summary) = writer.finish()?;
    Ok(SecretsBundle {
        instance: instance.clone(),
        bytes: Zeroizing::new(bytes),
        info: ArchiveInfo::from(summary),
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
    let (out, summary) = writer.finish()?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(Prepared { bundles, seeds_file, seeds_info: ArchiveInfo::from(summary), seed_records, skipped_links })
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
    let stall = aws.timeouts().read;
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
            let manifest = s3::get_bytes(&s3c, bucket, &key(prefix, MANIFEST), MANIFEST_LIMIT, stall).await?;
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
