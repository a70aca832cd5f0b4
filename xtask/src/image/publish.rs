//! `cargo xtask image publish`: a built image to a registered, tagged fleet
//! AMI, through EBS direct (default) or S3 + VM Import. Idempotent by
//! content: an AMI tagged with the image's SHA-256 is returned as is.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use aws_sdk_ec2::types::{
    ArchitectureValues, BlockDeviceMapping, BootModeValues, EbsBlockDevice, ImdsSupportValues, ResourceType,
    TagSpecification, VolumeType,
};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::aws::{self, s3, Aws};
use crate::image::ami::{self, ec2_tags, fleet_tags};
use crate::image::snapshot::{SnapshotSpec, SnapshotUploader, SnapshotWaiter};
use crate::image::ImageManifest;
use crate::output::{self, Output};
use crate::{flags, Ctx};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// EBS direct APIs: blocks straight into a snapshot (fast, no bucket).
    EbsDirect,
    /// Upload to S3, then VM Import's import-snapshot (needs the vmimport role).
    S3Import,
}

#[derive(Debug, Clone)]
pub struct PublishOptions {
    pub image_json: PathBuf,
    pub via: Via,
    pub bucket: Option<String>,
    pub copy_to_regions: Vec<String>,
    pub kms_key: Option<String>,
    pub workers: usize,
    pub deprecate_after_days: Option<u64>,
    pub import_timeout: Duration,
    pub import_poll: Duration,
    pub keep_object: bool,
    /// Say what would be uploaded, registered and copied; write nothing.
    pub dry_run: bool,
}

impl PublishOptions {
    pub fn new(image_json: PathBuf) -> Self {
        PublishOptions {
            image_json,
            via: Via::EbsDirect,
            bucket: None,
            copy_to_regions: vec![],
            kms_key: None,
            workers: 64,
            deprecate_after_days: None,
            import_timeout: Duration::from_secs(120 * 60),
            import_poll: Duration::from_secs(15),
            keep_object: false,
            dry_run: false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishReport {
    pub ami_id: String,
    pub name: String,
    pub region: String,
    pub snapshot_id: Option<String>,
    /// The AMI already existed for this image: nothing was uploaded.
    pub already_published: bool,
    pub via: Via,
    pub bytes_sent: u64,
    pub blocks_sent: u64,
    pub blocks_total: u64,
    /// Region -> AMI id of the copies.
    pub copies: BTreeMap<String, String>,
    pub dry_run: bool,
}

impl fmt::Display for PublishReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dry_run {
            if self.already_published {
                writeln!(
                    f,
                    "dry run: already published as {} ({}); nothing would be uploaded",
                    self.ami_id, self.name
                )?;
            } else {
                writeln!(
                    f,
                    "dry run: would send {} ({} of {} blocks) via {}, then register and tag {} in {}",
                    indicatif::HumanBytes(self.bytes_sent),
                    self.blocks_sent,
                    self.blocks_total,
                    match self.via {
                        Via::EbsDirect => "ebs-direct",
                        Via::S3Import => "s3-import",
                    },
                    self.name,
                    self.region
                )?;
            }
            for region in self.copies.keys() {
                writeln!(f, "dry run: would copy to {region}")?;
            }
            return Ok(());
        }
        if self.already_published {
            writeln!(f, "image already published as {} ({}); nothing uploaded", self.ami_id, self.name)?;
        } else {
            writeln!(
                f,
                "published {} ({}) in {} from snapshot {}: {} sent",
                self.ami_id,
                self.name,
                self.region,
                self.snapshot_id.as_deref().unwrap_or("-"),
                indicatif::HumanBytes(self.bytes_sent)
            )?;
        }
        for (region, id) in &self.copies {
            writeln!(f, "copy in {region}: {id}")?;
        }
        writeln!(f, "{}", self.ami_id)
    }
}

pub(super) fn token(prefix: &str, sha: &str, suffix: &str) -> String {
    let mut t = format!("{prefix}-{}{suffix}", &sha[..40]);
    t.truncate(64);
    t
}

/// Publish the image described by `opts.image_json`. `cancel` (Ctrl-C in the
/// CLI) stops the upload; what was started is cleaned up or left resumable.
pub async fn publish(
    aws: &Aws,
    opts: &PublishOptions,
    out: &Output,
    cancel: impl Future<Output = ()>,
) -> Result<PublishReport> {
    // Everything about the input is checked before the first AWS call.
    let image = ImageManifest::load(&opts.image_json)?;
    let image_path = image.image_path(&opts.image_json);
    if opts.via == Via::S3Import && opts.bucket.is_none() {
        bail!("--via s3-import needs a bucket: pass --bucket or set S3_BUCKET");
    }
    let ec2 = aws.ec2();
    let region = aws.region().unwrap_or("us-east-1").to_string();
    let name = image.ami_name();
    let tags = fleet_tags(&image);

    let mut report = PublishReport {
        ami_id: String::new(),
        name: name.clone(),
        region: region.clone(),
        snapshot_id: None,
        already_published: false,
        via: opts.via,
        bytes_sent: 0,
        blocks_sent: 0,
        blocks_total: image.logical_bytes.div_ceil(crate::image::snapshot::BLOCK_SIZE),
        copies: BTreeMap::new(),
        dry_run: opts.dry_run,
    };
    if opts.dry_run {
        return dry_run(aws, opts, &image, &image_path, report).await;
    }
    if let Some(existing) = ami::find_by_sha256(&ec2, &image.sha256).await? {
        report.ami_id = existing.image_id().unwrap_or_default().to_string();
        report.already_published = true;
        report.snapshot_id =
            existing.block_device_mappings().iter().find_map(|m| m.ebs()?.snapshot_id().map(str::to_string));
    } else {
        let snapshot_id = match reusable_snapshot(&ec2, &image.sha256).await? {
            Some(id) => id,
            None => match opts.via {
                Via::EbsDirect => {
                    let bar = out.block_progress(image.logical_bytes, "snapshot");
                    let spec = SnapshotSpec {
                        description: format!("{name} (EBS direct upload)"),
                        tags: tags.clone(),
                        kms_key: opts.kms_key.clone(),
                        client_token: token(
                            "clawdinator",
                            &image.sha256,
                            if opts.kms_key.is_some() { "-kms" } else { "" },
                        ),
                    };
                    let uploaded =
                        SnapshotUploader::new(aws, opts.workers).upload(&image_path, &spec, &bar, cancel).await?;
                    bar.finish_and_clear();
                    report.bytes_sent = uploaded.bytes_sent;
                    report.blocks_sent = uploaded.blocks_sent;
                    if let Err(err) = SnapshotWaiter::new(aws).wait_completed(&uploaded.snapshot_id).await {
                        let _ = ec2.delete_snapshot().snapshot_id(&uploaded.snapshot_id).send().await;
                        return Err(err.context(format!("the snapshot {} was deleted", uploaded.snapshot_id)));
                    }
                    uploaded.snapshot_id
                }
                Via::S3Import => {
                    let bucket = opts.bucket.as_deref().expect("checked above");
                    let (snapshot_id, sent) =
                        super::import::s3_import(aws, &image, &image_path, bucket, opts, out, cancel).await?;
                    report.bytes_sent = sent;
                    snapshot_id
                }
            },
        };
        // Snapshots from VM Import come untagged; EBS direct ones are tagged
        // at start. Tagging again is harmless and covers both.
        ec2.create_tags()
            .resources(&snapshot_id)
            .set_tags(Some(ec2_tags(&tags)))
            .send()
            .await
            .map_err(|e| aws::error("EC2 CreateTags", &snapshot_id, e))?;
        report.ami_id = register(&ec2, &image, &snapshot_id, &tags).await?;
        report.snapshot_id = Some(snapshot_id);
    }
    if let Some(days) = opts.deprecate_after_days {
        deprecate(&ec2, &report.ami_id, days).await?;
    }
    let copies = futures::stream::iter(opts.copy_to_regions.iter().filter(|r| **r != region).map(|target| {
        let (aws, image, tags, source) = (aws.clone(), &image, &tags, report.ami_id.clone());
        let region = region.clone();
        async move {
            let id = copy_to_region(&aws, target, &region, &source, image, tags, opts.deprecate_after_days).await?;
            anyhow::Ok((target.clone(), id))
        }
    }))
    .buffer_unordered(8)
    .try_collect::<Vec<_>>()
    .await?;
    report.copies = copies.into_iter().collect();
    Ok(report)
}

/// What a publish would do, from reads only.
async fn dry_run(
    aws: &Aws,
    opts: &PublishOptions,
    image: &ImageManifest,
    image_path: &Path,
    mut report: PublishReport,
) -> Result<PublishReport> {
    let ec2 = aws.ec2();
    if let Some(existing) = ami::find_by_sha256(&ec2, &image.sha256).await? {
        report.ami_id = existing.image_id().unwrap_or_default().to_string();
        report.already_published = true;
    } else if reusable_snapshot(&ec2, &image.sha256).await?.is_none() {
        match opts.via {
            Via::EbsDirect => {
                let path = image_path.to_path_buf();
                let encrypted = opts.kms_key.is_some();
                let size = image.logical_bytes;
                let blocks = tokio::task::spawn_blocking(move || -> Result<u64> {
                    let file = File::open(&path)?;
                    let mut sent = 0;
                    for index in crate::image::snapshot::candidate_blocks(&file, size, encrypted) {
                        let block = crate::image::snapshot::read_block(&file, index, size)?;
                        if encrypted || block.iter().any(|&b| b != 0) {
                            sent += 1;
                        }
                    }
                    Ok(sent)
                })
                .await??;
                report.blocks_sent = blocks;
                report.bytes_sent = blocks * crate::image::snapshot::BLOCK_SIZE;
            }
            Via::S3Import => {
                let bucket = opts.bucket.as_deref().unwrap_or_default();
                let key = format!("images/{}.{}", image.sha256, image.format);
                let there = s3::head_sha256(&aws.s3(), bucket, &key).await?.as_deref() == Some(image.sha256.as_str());
                report.bytes_sent = if there { 0 } else { image.logical_bytes };
            }
        }
    }
    let region = report.region.clone();
    for target in opts.copy_to_regions.iter().filter(|r| **r != region) {
        report.copies.insert(target.clone(), String::new());
    }
    Ok(report)
}

/// A completed snapshot of this image that no AMI uses yet (a run that
/// stopped between upload and registration): use it instead of uploading.
async fn reusable_snapshot(ec2: &aws_sdk_ec2::Client, sha256: &str) -> Result<Option<String>> {
    let out = ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(aws_sdk_ec2::types::Filter::builder().name(format!("tag:{}", ami::TAG_SHA256)).values(sha256).build())
        .send()
        .await
        .map_err(|e| aws::error("EC2 DescribeSnapshots", &format!("tag {}={sha256}", ami::TAG_SHA256), e))?;
    Ok(out
        .snapshots()
        .iter()
        .find(|s| s.state().map(|s| s.as_str()) == Some("completed"))
        .and_then(|s| s.snapshot_id().map(str::to_string)))
}

async fn register(
    ec2: &aws_sdk_ec2::Client,
    image: &ImageManifest,
    snapshot_id: &str,
    tags: &[(String, String)],
) -> Result<String> {
    let name = image.ami_name();
    let result = ec2
        .register_image()
        .name(&name)
        .description(format!("clawdinator NixOS {} ({})", image.label, image.store_path))
        .architecture(ArchitectureValues::from(image.architecture.as_str()))
        .boot_mode(BootModeValues::from(image.boot_mode.as_str()))
        .virtualization_type("hvm")
        .ena_support(true)
        .sriov_net_support("simple")
        .imds_support(ImdsSupportValues::V20)
        .root_device_name("/dev/xvda")
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name("/dev/xvda")
                .ebs(
                    EbsBlockDevice::builder()
                        .snapshot_id(snapshot_id)
                        .volume_type(VolumeType::Gp3)
                        .delete_on_termination(true)
                        .build(),
                )
                .build(),
        )
        .tag_specifications(
            TagSpecification::builder().resource_type(ResourceType::Image).set_tags(Some(ec2_tags(tags))).build(),
        )
        .send()
        .await;
    match result {
        Ok(out) => out.image_id.context("RegisterImage returned no image id"),
        Err(err) if aws::error_code(&err) == Some("InvalidAMIName.Duplicate") => {
            // Registered by a run that stopped before tagging: adopt it when
            // it is this image's snapshot.
            let out = ec2
                .describe_images()
                .owners("self")
                .filters(aws_sdk_ec2::types::Filter::builder().name("name").values(&name).build())
                .send()
                .await
                .map_err(|e| aws::error("EC2 DescribeImages", &name, e))?;
            let existing = out
                .images()
                .first()
                .with_context(|| format!("AMI name {name} is taken, yet no such AMI is visible"))?;
            let uses_snapshot = existing
                .block_device_mappings()
                .iter()
                .any(|m| m.ebs().and_then(|e| e.snapshot_id()) == Some(snapshot_id));
            let id = existing.image_id().unwrap_or_default().to_string();
            ensure!(uses_snapshot, "AMI name {name} is already used by {id}, which is not built from this image");
            ec2.create_tags()
                .resources(&id)
                .set_tags(Some(ec2_tags(tags)))
                .send()
                .await
                .map_err(|e| aws::error("EC2 CreateTags", &id, e))?;
            Ok(id)
        }
        Err(err) => Err(aws::error("EC2 RegisterImage", &name, err)),
    }
}

async fn deprecate(ec2: &aws_sdk_ec2::Client, ami_id: &str, days: u64) -> Result<()> {
    let at = std::time::SystemTime::now() + Duration::from_secs(days * 86_400);
    ec2.enable_image_deprecation()
        .image_id(ami_id)
        .deprecate_at(aws_smithy_types::DateTime::from(at))
        .send()
        .await
        .map_err(|e| aws::error("EC2 EnableImageDeprecation", ami_id, e))?;
    Ok(())
}

async fn copy_to_region(
    aws: &Aws,
    target: &str,
    source_region: &str,
    source_ami: &str,
    image: &ImageManifest,
    tags: &[(String, String)],
    deprecate_after: Option<u64>,
) -> Result<String> {
    let ec2 = aws.with_region(target).ec2();
    let id = match ami::find_by_sha256(&ec2, &image.sha256).await? {
        Some(existing) => existing.image_id().unwrap_or_default().to_string(),
        None => ec2
            .copy_image()
            .source_image_id(source_ami)
            .source_region(source_region)
            .name(image.ami_name())
            .client_token(token("copy", &image.sha256, &format!("-{target}")))
            .send()
            .await
            .map_err(|e| aws::error("EC2 CopyImage", &format!("{source_ami} -> {target}"), e))?
            .image_id
            .context("CopyImage returned no image id")?,
    };
    // Copies do not carry the source's tags.
    ec2.create_tags()
        .resources(&id)
        .set_tags(Some(ec2_tags(tags)))
        .send()
        .await
        .map_err(|e| aws::error("EC2 CreateTags", &id, e))?;
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let out =
            ec2.describe_images().image_ids(&id).send().await.map_err(|e| aws::error("EC2 DescribeImages", &id, e))?;
        match out.images().first().and_then(|i| i.state()).map(|s| s.as_str()) {
            Some("available") => break,
            Some("failed") | Some("error") | Some("invalid") => bail!("the copy {id} in {target} failed"),
            _ if Instant::now() > deadline => bail!("the copy {id} in {target} is not available after an hour"),
            _ => tokio::time::sleep(Duration::from_secs(5)).await,
        }
    }
    if let Some(days) = deprecate_after {
        deprecate(&ec2, &id, days).await?;
    }
    Ok(id)
}

pub async fn run(ctx: &Ctx, args: flags::PublishArgs) -> Result<()> {
    let opts = PublishOptions {
        image_json: args.image,
        via: args.via,
        bucket: args.bucket.or_else(|| ctx.default_bucket().map(str::to_string)),
        copy_to_regions: args.copy_to_regions,
        kms_key: args.kms_key,
        workers: args.workers,
        deprecate_after_days: args.deprecate_after,
        import_timeout: Duration::from_secs(args.timeout * 60),
        import_poll: Duration::from_secs(15),
        keep_object: args.keep_object,
        dry_run: args.dry_run,
    };
    let aws = ctx.aws().await?;
    let cancel = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let report = publish(&aws, &opts, &ctx.out, cancel).await?;
    if !report.ami_id.is_empty() {
        output::github_output("ami_id", &report.ami_id)?;
    }
    ctx.out.emit(&report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_tokens_fit_aws_limits() {
        let sha = "a".repeat(64);
        assert!(token("copy", &sha, "-ap-southeast-2").len() <= 64);
        assert_ne!(token("clawdinator", &sha, ""), token("clawdinator", &sha, "-kms"));
    }
}
