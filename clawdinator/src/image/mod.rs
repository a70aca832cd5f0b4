//! The image stage: build the NixOS image, publish it as a fleet AMI (EBS
//! direct or S3 + VM Import), and select or prune fleet AMIs.
//!
//! Modules: [`flags`] (the command line), [`build`] (the raw image and its
//! description, `image.json`), [`snapshot`] (EBS direct: an uploader and a
//! waiter, after coldsnap), `import` (S3 + VM Import), [`publish`]
//! (snapshot to tagged AMI, idempotent by content; `options` says
//! what it is asked) and [`ami`] (fleet AMIs:
//! tags, the latest, the list, pruning).

pub mod ami;
pub mod build;
pub mod flags;
mod import;
mod options;
pub mod publish;
pub mod snapshot;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::ctx::Ctx;
use crate::output;
use flags::{AmiCmd, BuildArgs, ImageCmd, PublishArgs};

pub use build::ImageManifest;
pub use flags::Via;
pub use options::PublishOptions;

/// Carry out one `image` command.
pub async fn run(ctx: &Ctx, cmd: ImageCmd) -> Result<()> {
    match cmd {
        // A nix build blocks for minutes: keep it off the async workers.
        ImageCmd::Build(args) => tokio::task::block_in_place(|| build(ctx, args)),
        ImageCmd::Publish(args) => publish(ctx, args).await,
        ImageCmd::Ami(cmd) => ami(ctx, cmd).await,
    }
}

/// `image build`.
fn build(ctx: &Ctx, args: BuildArgs) -> Result<()> {
    let host = args.host.unwrap_or_else(|| build::IMAGE_HOST.to_string());
    // Where KVM is exposed under another name (and for tests on machines
    // with or without it), CLAWDINATOR_KVM_DEVICE names the device.
    let opts = build::BuildOptions {
        host,
        flake: crate::project::resolve(&args.flake),
        out: crate::project::resolve(&args.out),
        kvm_device: build::kvm_device(),
    };
    let manifest = build::build(&opts)?;
    output::github_output("image_sha256", &manifest.sha256)?;
    ctx.out.emit(&manifest)
}

/// `image publish`.
async fn publish(ctx: &Ctx, args: PublishArgs) -> Result<()> {
    let opts = options::PublishOptions {
        image_json: args.image,
        via: args.via,
        bucket: args.bucket.or_else(|| ctx.default_bucket().map(str::to_string)),
        copy_to_regions: args.copy_to_regions,
        kms_key: args.kms_key,
        workers: args.workers.into(),
        deprecate_after_days: args.deprecate_after,
        import_timeout: Duration::from_secs(args.timeout * 60),
        keep_object: args.keep_object,
        dry_run: args.dry_run,
        snapshot_only: args.snapshot_only,
        ..options::PublishOptions::new(PathBuf::new())
    };
    let aws = ctx.aws().await?;
    let entry = crate::audit::Entry {
        command: "image publish",
        targets: vec![opts.image_json.display().to_string()],
        dry_run: opts.dry_run,
    };
    let report = crate::audit::around(
        ctx,
        &aws,
        entry,
        publish::publish(&aws, &opts, &ctx.out, &ctx.cancel),
        |r: &publish::PublishReport| {
            r.snapshot_id
                .iter()
                .chain(std::iter::once(&r.ami_id).filter(|a| !a.is_empty()))
                .chain(r.copies.values())
                .cloned()
                .collect()
        },
    )
    .await?;
    if !report.ami_id.is_empty() {
        output::github_output("ami_id", &report.ami_id)?;
    }
    ctx.out.emit(&report)
}

/// `image ami …`.
async fn ami(ctx: &Ctx, cmd: AmiCmd) -> Result<()> {
    let aws = ctx.aws().await?;
    let ec2 = aws.ec2();
    match cmd {
        AmiCmd::Latest(args) => {
            let image = ami::latest(&ec2, args.r#override.as_deref()).await?;
            let report = ami::LatestReport {
                image_id: image.image_id().unwrap_or_default().into(),
                name: image.name().unwrap_or_default().into(),
                creation_date: image.creation_date().unwrap_or_default().into(),
            };
            output::github_output("ami_id", &report.image_id)?;
            ctx.out.emit(&report)
        }
        AmiCmd::List => ctx.out.emit(&ami::list(&ec2).await?),
        AmiCmd::Prune(args) => {
            // No release list, no pruning: an AMI a release needs is never
            // removed for want of knowing it.
            let releases = crate::release::manifest::revisions(&aws.s3(), &args.bucket)
                .await
                .with_context(|| format!("nothing pruned: cannot list the releases in s3://{}/", args.bucket))?;
            let opts = ami::PruneOptions {
                keep: args.keep,
                older_than_days: args.older_than,
                orphans: args.orphans,
                dry_run: args.dry_run,
                releases: releases.into_iter().take(args.keep_releases).collect(),
            };
            let entry = crate::audit::Entry {
                command: "image ami prune",
                targets: vec![format!("keep {}", opts.keep)],
                dry_run: opts.dry_run,
            };
            let report = crate::audit::around(ctx, &aws, entry, ami::prune(&ec2, &opts), |r: &ami::PruneReport| {
                r.removed.iter().flat_map(|a| std::iter::once(a.image_id.clone()).chain(a.snapshots.clone())).collect()
            })
            .await?;
            ctx.out.emit(&report)?;
            if !report.failures.is_empty() {
                bail!(
                    "image ami prune could not remove {} resource(s) (listed above); the rest was removed",
                    report.failures.len()
                );
            }
            Ok(())
        }
    }
}
