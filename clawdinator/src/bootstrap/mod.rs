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
pub mod fetch;
pub mod seeds;
pub mod upload;

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::secrets::Sources;
use crate::{flags, project, Ctx};
use seeds::SeedRecord;

pub use fetch::{fetch, FetchOptions, FetchReport};
pub use upload::{private_workdir, upload, Action, ObjectPlan, UploadOptions, UploadReport};

pub const SECRETS_ARCHIVE: &str = "secrets.tar.zst";
pub const SEEDS_ARCHIVE: &str = "repo-seeds.tar.zst";
pub const MANIFEST: &str = "manifest.json";
pub const SENTINEL: &str = ".bootstrap-ok";
pub const PREFIX_MARKER: &str = ".bootstrap-prefix";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveInfo {
    pub sha256: String,
    pub size: u64,
    /// Entries in the archive: the host refuses one that holds more.
    pub entries: u64,
    /// Bytes of its files unpacked: the host refuses one that unpacks to more.
    pub unpacked_bytes: u64,
}

impl From<archive::Summary> for ArchiveInfo {
    fn from(s: archive::Summary) -> Self {
        ArchiveInfo { sha256: s.sha256, size: s.size, entries: s.entries, unpacked_bytes: s.content_bytes }
    }
}

/// A manifest is names and digests: anything larger than this is not one.
pub const MANIFEST_LIMIT: u64 = 1 << 20;

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
    /// What identifies the seeds archive without building it (names, sizes,
    /// modes, mtimes): an upload whose seeds have this fingerprint reuses the
    /// archive recorded here instead of compressing the tree again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seeds_fingerprint: Option<String>,
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
            && self.seeds_fingerprint == other.seeds_fingerprint
    }
}

pub(crate) fn key(prefix: &str, name: &str) -> String {
    format!("{prefix}/{name}")
}

/// A one-line setting file's content; None when absent or empty.
pub async fn run(ctx: &Ctx, cmd: flags::BootstrapCmd) -> Result<()> {
    match cmd {
        flags::BootstrapCmd::Upload(args) => {
            let bucket = args
                .bucket
                .clone()
                .or_else(|| ctx.default_bucket().map(str::to_string))
                .ok_or_else(|| crate::output::UsageError("no bucket: pass --bucket or set S3_BUCKET".into()))?;
            let opts = UploadOptions {
                sources: Sources::from_flags(&args.secrets),
                seeds_dir: args.repo_seeds.clone(),
                bucket,
                instances: args.select.names(),
                dry_run: args.dry_run,
                concurrency: args.concurrency.into(),
                source_revision: project::git_revision(),
            };
            let aws = ctx.aws().await?;
            let entry = crate::audit::Entry {
                command: "bootstrap upload",
                targets: crate::audit::targets(&opts.instances),
                dry_run: opts.dry_run,
            };
            let work = async {
                ctx.cancel
                    .guard("uploading bundles", upload(&aws, &opts, &ctx.out))
                    .await
                    .context("the temporary bundle directory was removed; re-run to finish (objects already sent are kept, nothing is sent twice)")
            };
            let report = crate::audit::around(ctx, &aws, entry, work, |r: &UploadReport| {
                r.objects
                    .iter()
                    .filter(|o| o.action != Action::Unchanged)
                    .map(|o| format!("s3://{}/{}", r.bucket, o.key))
                    .collect()
            })
            .await?;
            ctx.out.emit(&report)
        }
        flags::BootstrapCmd::Fetch(args) => {
            // A generic image learns who it is at boot: what the command line
            // does not say, the files user data wrote under /etc/clawdinator do.
            let usage = |what: String| crate::output::UsageError(what);
            let bucket = project::given_or_written(
                args.bucket.clone(),
                &args.bucket_file,
                "bucket",
                "pass --bucket, set S3_BUCKET,",
            )?;
            // A prefix on the command line is the configuration's word; the
            // file is what user data says when the configuration is silent.
            let (prefix, prefix_file) = match &args.prefix {
                Some(prefix) => (prefix.clone(), None),
                None => (
                    project::host_setting(&args.prefix_file).ok_or_else(|| {
                        usage(format!(
                            "no bootstrap prefix: pass --prefix or write it to {}",
                            args.prefix_file.display()
                        ))
                    })?,
                    Some(args.prefix_file.clone()),
                ),
            };
            let opts = FetchOptions {
                bucket,
                prefix,
                prefix_file,
                secrets_dir: args.secrets_dir.clone(),
                seeds_dir: args.repo_seeds_dir.clone(),
                age_key_path: args.age_key_path.clone(),
                state_dir: args.state_dir.clone(),
            };
            let aws = ctx.aws().await?;
            let report = fetch(&aws, &opts).await?;
            ctx.out.emit(&report)
        }
    }
}
