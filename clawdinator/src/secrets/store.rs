//! The one copy of the encrypted age files that CI reads:
//! `s3://BUCKET/age-secrets/NAME.age`, each with its SHA-256 in metadata.
//! `secrets push` (an operator) uploads the files that changed, after
//! checking that every one decrypts with the fleet identity; `secrets pull`
//! (CI) downloads every file the registry and the secrets list need,
//! verifies each, and writes them only when all are whole. Only ciphertext
//! ever leaves or reaches the machine.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{bail, Result};
use serde::Serialize;

use super::files::{self, check_header, decrypt, load_identities, Sources};
use super::flags::SecretsStoreArgs;
use crate::audit::Entry;
use crate::aws::s3::{self, Body};
use crate::aws::Aws;
use crate::ctx::Ctx;
use crate::exit::UsageError;
use crate::registry::Registry;

pub const PREFIX: &str = "age-secrets/";
/// An age file holds one secret; anything larger is not one of ours.
const MAX_FILE: u64 = 1 << 20;

#[derive(Debug, Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Uploaded,
    Unchanged,
    WouldUpload,
    Downloaded,
}

#[derive(Debug, Serialize)]
pub struct FileOutcome {
    pub name: String,
    pub action: Action,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreReport {
    pub bucket: String,
    pub dry_run: bool,
    pub files: Vec<FileOutcome>,
}

impl crate::audit::Audited for StoreReport {
    /// The age files uploaded.
    fn resources(&self) -> Vec<String> {
        self.files.iter().filter(|f| f.action == Action::Uploaded).map(|f| f.name.clone()).collect()
    }
}

impl std::fmt::Display for StoreReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for file in &self.files {
            writeln!(f, "{:?}: {}{}", file.action, s3::url(&self.bucket, PREFIX), file.name)?;
        }
        Ok(())
    }
}

/// Every age file the fleet needs: the common secrets and each instance's token.
fn needed(registry: &Registry, spec: &files::Spec) -> BTreeSet<String> {
    registry.instances.values().flat_map(|i| spec.files_for(i)).collect()
}

/// Upload the age files that differ from the stored copy (by SHA-256),
/// each as one new version even when a response is lost
/// ([`s3::put_replacing`]). Refused, before any upload, unless every file
/// is present and decrypts.
pub async fn push(aws: &Aws, sources: &Sources, bucket: &str, dry_run: bool) -> Result<StoreReport> {
    let (report, loaded) = files::check(sources, true);
    let Some((registry, spec)) = loaded.filter(|_| report.ok) else {
        let errors: Vec<String> = report.findings.iter().map(|f| f.to_string()).collect();
        bail!(
            "secrets push refused, nothing uploaded: the age files do not pass `secrets check`:\n{}",
            errors.join("\n")
        );
    };
    let s3 = aws.s3();
    let mut files = Vec::new();
    for name in needed(&registry, &spec) {
        let bytes = std::fs::read(sources.secrets_dir.join(&name))?;
        let sha = crate::digest::sha256_hex(&bytes);
        let key = format!("{PREFIX}{name}");
        let current = s3::head(&s3, bucket, &key).await?;
        let action = match &current {
            Some(stored) if stored.sha256 == sha => Action::Unchanged,
            _ if dry_run => Action::WouldUpload,
            _ => {
                // Conditional on the version just read: the bucket is
                // versioned, and a retried PUT must not store a second one.
                let body = Body::Bytes(&bytes);
                s3::put_replacing(&s3, bucket, &key, current.as_ref(), body, &sha, "application/octet-stream").await?;
                Action::Uploaded
            }
        };
        files.push(FileOutcome { name, action });
    }
    Ok(StoreReport { bucket: bucket.into(), dry_run, files })
}

/// Download every needed age file into the secrets directory. Each must
/// exist, match the SHA-256 it was pushed with, be an age file and (when
/// the identity is at hand) decrypt; otherwise nothing is written and the
/// error names every file that failed.
pub async fn pull(aws: &Aws, sources: &Sources, bucket: &str) -> Result<StoreReport> {
    let registry =
        Registry::load(&sources.registry).map_err(|p| anyhow::anyhow!("{}: {p}", sources.registry.display()))?;
    let spec = files::Spec::load(&sources.spec)?;
    let identities = load_identities(&sources.age_key).ok();
    let s3 = aws.s3();
    let (mut verified, mut problems) = (Vec::new(), Vec::new());
    for name in needed(&registry, &spec) {
        let key = format!("{PREFIX}{name}");
        let url = s3::url(bucket, &key);
        let got = s3::get_bytes_recorded(&s3, bucket, &key, MAX_FILE, Duration::from_secs(30)).await?;
        let Some((bytes, stored)) = got else {
            problems.push(format!("{url} is missing (run `cargo xtask secrets push` where the age files are)"));
            continue;
        };
        let sha = crate::digest::sha256_hex(&bytes);
        let file = sources.secrets_dir.join(&name);
        let check = if stored != sha {
            Err(anyhow::anyhow!("{url} does not match the SHA-256 it was pushed with (changed outside `secrets push`)"))
        } else if let Some(ids) = &identities {
            decrypt(&file, &bytes, ids, &sources.age_key).map(drop)
        } else {
            check_header(&bytes).map_err(|e| anyhow::anyhow!("{url}: {e}"))
        };
        match check {
            Ok(()) => verified.push((name, bytes)),
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    if !problems.is_empty() {
        bail!("secrets pull wrote nothing: {} file(s) failed:\n{}", problems.len(), problems.join("\n"));
    }
    std::fs::create_dir_all(&sources.secrets_dir)?;
    let mut files = Vec::new();
    for (name, bytes) in verified {
        crate::atomic::write(&sources.secrets_dir.join(&name), &bytes, 0o600)?;
        files.push(FileOutcome { name, action: Action::Downloaded });
    }
    Ok(StoreReport { bucket: bucket.into(), dry_run: false, files })
}

impl SecretsStoreArgs {
    /// `secrets push`: the local age files to the bucket, recorded in the audit trail.
    pub async fn push(self, ctx: &Ctx) -> anyhow::Result<()> {
        let bucket = ctx.bucket(self.bucket, NO_BUCKET)?;
        let aws = ctx.aws().await?;
        let sources = Sources::from_flags(&self.secrets);
        let entry = Entry { command: "secrets push", targets: vec!["age-secrets".into()], dry_run: self.dry_run };
        let report = entry.record(ctx, &aws, push(&aws, &sources, &bucket, self.dry_run)).await?;
        ctx.out.emit(&report)
    }

    /// `secrets pull`: the bucket's age files to the local directory.
    pub async fn pull(self, ctx: &Ctx) -> anyhow::Result<()> {
        if self.dry_run {
            return Err(UsageError("secrets pull writes only local files; --dry-run is for push".into()).into());
        }
        let bucket = ctx.bucket(self.bucket, NO_BUCKET)?;
        let aws = ctx.aws().await?;
        ctx.out.emit(&pull(&aws, &Sources::from_flags(&self.secrets), &bucket).await?)
    }
}

const NO_BUCKET: &str = "no bucket: pass --bucket or set S3_BUCKET";
