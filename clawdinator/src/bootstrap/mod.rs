//! Per-instance bootstrap bundles: `bootstrap upload` (operator/CI side),
//! `bootstrap fetch` (host side, run by the NixOS bootstrap service), and
//! `bootstrap seeds` (the repository seeds the bundles carry).
//!
//! Under `s3://BUCKET/<bootstrapPrefix>/` each instance gets:
//! - `secrets.tar.zst`: `secrets/*.age` only (ciphertext), every common
//!   secret and only this instance's Discord token, encrypted to the
//!   instance's own age identity, which lives in Secrets Manager as
//!   `clawdinator/<instance>/age-identity` (readable by that instance's
//!   role alone), never in the bucket;
//! - `repo-seeds.tar.zst`: the seeds directory, built once for the fleet and
//!   placed under every prefix by server-side copy;
//! - `manifest.json`: what the archives hold and their SHA-256, written last.
//!
//! Modules: [`flags`] (the command line), `manifest` (the wire format),
//! `archive` (reproducible tar + zstd, guarded unpacking), `identity` (each
//! instance's identity in Secrets Manager), `upload`, `fetch`, [`seeds`]
//! (shallow clones: prepare on CI, install on a host).

mod archive;
mod fetch;
pub mod flags;
mod identity;
mod manifest;
pub mod seeds;
mod upload;

use anyhow::{Context, Result};

use crate::ctx::Ctx;
use crate::exit::UsageError;
use crate::secrets::Sources;
use crate::settings::{given_or_written, host_setting};
use flags::{BootstrapCmd, SeedsCmd};

pub use fetch::{fetch, FetchOptions, FetchReport};
pub use identity::{version_for, IdentityAction, IdentityRow, TAG_RECIPIENT};
pub use manifest::{ArchiveInfo, Manifest, MANIFEST, SECRETS_ARCHIVE, SEEDS_ARCHIVE};
pub use upload::{upload, upload_rotating, Action, ObjectPlan, UploadOptions, UploadReport};

/// Carry out one `bootstrap` command.
pub async fn run(ctx: &Ctx, cmd: BootstrapCmd) -> Result<()> {
    match cmd {
        BootstrapCmd::Upload(args) => {
            let bucket = args
                .bucket
                .clone()
                .or_else(|| ctx.default_bucket().map(str::to_string))
                .ok_or_else(|| UsageError("no bucket: pass --bucket or set S3_BUCKET".into()))?;
            let opts = UploadOptions {
                sources: Sources::from_flags(&args.secrets),
                seeds_dir: args.repo_seeds.clone(),
                bucket,
                instances: args.select.names(),
                dry_run: args.dry_run,
                concurrency: args.concurrency.into(),
                source_revision: crate::project::git_revision(),
            };
            let aws = ctx.aws().await?;
            let entry = crate::audit::Entry::named("bootstrap upload", &opts.instances, opts.dry_run);
            let work = async {
                ctx.cancel
                    .guard("uploading bundles", upload_rotating(&aws, &opts, args.rotate_identity, &ctx.out))
                    .await
                    .context("the temporary bundle directory was removed; re-run to finish (objects already sent and identities already created are kept and used: nothing is sent or created twice)")
            };
            let report = entry.record(ctx, &aws, work).await?;
            ctx.out.emit(&report)
        }
        BootstrapCmd::Fetch(args) => {
            // A generic image learns who it is at boot: what the command line
            // does not say, the files user data wrote under /etc/clawdinator do.
            let usage = |what: String| UsageError(what);
            let bucket =
                given_or_written(args.bucket.clone(), &args.bucket_file, "bucket", "pass --bucket, set S3_BUCKET,")?;
            // A prefix on the command line is the configuration's word; the
            // file is what user data says when the configuration is silent.
            let (prefix, prefix_file) = match &args.prefix {
                Some(prefix) => (prefix.clone(), None),
                None => (
                    host_setting(&args.prefix_file).ok_or_else(|| {
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
        BootstrapCmd::Seeds(cmd) => seeds(ctx, cmd),
    }
}

/// `bootstrap seeds …`.
fn seeds(ctx: &Ctx, cmd: SeedsCmd) -> Result<()> {
    match cmd {
        SeedsCmd::Install(args) => {
            let owner = crate::atomic::Owner::named(args.owner.owner.as_deref(), args.owner.group.as_deref())?;
            ctx.out.emit(&seeds::install(&args.from, &args.dest, &args.only, owner)?)
        }
        SeedsCmd::Prepare(args) => {
            let opts = seeds::PrepareOptions {
                list: args.list,
                dest: args.dest,
                jobs: args.jobs.into(),
                allow_partial: args.allow_partial,
                github_token: std::env::var("GITHUB_TOKEN").ok(),
                git_timeout: seeds::git_timeout_from_env()?,
            };
            let report = seeds::prepare(&opts, &ctx.out)?;
            ctx.out.emit(&report)?;
            if !report.failed.is_empty() && !opts.allow_partial {
                let names: Vec<_> = report.failed.iter().map(|f| f.name.as_str()).collect();
                anyhow::bail!(
                    "{} repo(s) failed: {} (use --allow-partial to continue without them)",
                    names.len(),
                    names.join(", ")
                );
            }
            Ok(())
        }
    }
}

impl crate::audit::Audited for UploadReport {
    /// The identities created or rotated in Secrets Manager, and the objects sent or copied.
    fn resources(&self) -> Vec<String> {
        let identities = self.identities.iter().filter(|i| i.action != IdentityAction::Keep).map(|i| {
            let what = if i.action == IdentityAction::Create { "created" } else { "rotated" };
            format!("secretsmanager:{} ({what})", i.secret)
        });
        let objects = self.objects.iter().filter(|o| o.action != Action::Unchanged);
        identities.chain(objects.map(|o| format!("s3://{}/{}", self.bucket, o.key))).collect()
    }
}
