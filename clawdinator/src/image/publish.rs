//! `cargo xtask image publish`: a built image to a registered, tagged fleet
//! AMI, through EBS direct (default) or S3 + VM Import. Idempotent by
//! content: an AMI tagged with the image's SHA-256 is returned as is.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use aws_sdk_ec2::types::{
    ArchitectureValues, BlockDeviceMapping, BootModeValues, EbsBlockDevice, ImdsSupportValues, ResourceType,
    TagSpecification, VolumeType,
};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::ami::{self, ec2_tags, fleet_tags, Identity};
use super::build::ImageManifest;
use super::flags::{PublishArgs, Via};
use super::options::PublishOptions;
use super::snapshot::{self, client_token, SnapshotSpec, SnapshotUploader, SnapshotWaiter, BLOCK_SIZE};
use crate::audit::{Audited, Entry};
use crate::aws::{self, s3, Aws};
use crate::cancel::{Cancel, Poll, Wait};
use crate::ctx::Ctx;
use crate::output::{self, Output};

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
    /// The snapshot is encrypted (asked with --kms-key, or the account encrypts by default).
    pub encrypted: bool,
    pub dry_run: bool,
}

impl PublishReport {
    fn via_name(&self) -> &'static str {
        match self.via {
            Via::EbsDirect => "ebs-direct",
            Via::S3Import => "s3-import",
        }
    }

    /// What a dry run found: published already, or what it would send and register.
    fn fmt_dry_run(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.already_published {
            writeln!(f, "dry run: already published as {} ({}); nothing would be uploaded", self.ami_id, self.name)?;
        } else {
            writeln!(
                f,
                "dry run: would send {} ({} of {} blocks) via {}, then register and tag {} in {}",
                indicatif::HumanBytes(self.bytes_sent),
                self.blocks_sent,
                self.blocks_total,
                self.via_name(),
                self.name,
                self.region
            )?;
        }
        for region in self.copies.keys() {
            writeln!(f, "dry run: would copy to {region}")?;
        }
        Ok(())
    }

    /// What a publish did: the AMI (new or found), its copies, and its id alone on the last line.
    fn fmt_published(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

impl fmt::Display for PublishReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dry_run {
            return self.fmt_dry_run(f);
        }
        if self.ami_id.is_empty() {
            let snapshot = self.snapshot_id.as_deref().unwrap_or("-");
            let sent = indicatif::HumanBytes(self.bytes_sent);
            writeln!(f, "snapshot {snapshot} uploaded ({sent} sent); no AMI registered (--snapshot-only)")?;
            return writeln!(f, "{snapshot}");
        }
        self.fmt_published(f)
    }
}

impl PublishArgs {
    /// What these flags ask of a publish; the bucket defaults to the context's.
    fn options(self, ctx: &Ctx) -> PublishOptions {
        PublishOptions {
            image_json: self.image,
            via: self.via,
            bucket: self.bucket.or_else(|| ctx.default_bucket().map(str::to_string)),
            copy_to_regions: self.copy_to_regions,
            kms_key: self.kms_key,
            workers: self.workers.into(),
            deprecate_after_days: self.deprecate_after,
            import_timeout: Duration::from_secs(self.timeout * 60),
            keep_object: self.keep_object,
            dry_run: self.dry_run,
            snapshot_only: self.snapshot_only,
            ..PublishOptions::new(PathBuf::new())
        }
    }

    /// `image publish`, audited: the snapshot, the AMI and its copies.
    pub(super) async fn run(self, ctx: &Ctx) -> Result<()> {
        let opts = self.options(ctx);
        let aws = ctx.aws().await?;
        let entry = Entry {
            command: "image publish",
            targets: vec![opts.image_json.display().to_string()],
            dry_run: opts.dry_run,
        };
        let report = entry.record(ctx, &aws, publish(&aws, &opts, &ctx.out, &ctx.cancel)).await?;
        if !report.ami_id.is_empty() {
            output::github_output("ami_id", &report.ami_id)?;
        }
        ctx.out.emit(&report)
    }
}

/// What a publish made, as the audit trail lists it.
impl Audited for PublishReport {
    fn resources(&self) -> Vec<String> {
        self.snapshot_id
            .iter()
            .chain(std::iter::once(&self.ami_id).filter(|a| !a.is_empty()))
            .chain(self.copies.values())
            .cloned()
            .collect()
    }
}

/// Publish the image described by `opts.image_json`. `cancel` (Ctrl-C or
/// SIGTERM in the CLI) stops every step; what was started is cleaned up or
/// left resumable, and the error says which.
pub async fn publish(aws: &Aws, opts: &PublishOptions, out: &Output, cancel: &Cancel) -> Result<PublishReport> {
    // Everything about the input is checked before the first AWS call.
    let image = ImageManifest::load(&opts.image_json)?;
    publish_image(aws, &image, opts, out, cancel).await
}

/// Publish an image already loaded (the pipeline hands over what it built);
/// `opts.image_json` is where it was described.
pub async fn publish_image(
    aws: &Aws,
    image: &ImageManifest,
    opts: &PublishOptions,
    out: &Output,
    cancel: &Cancel,
) -> Result<PublishReport> {
    let image_path = image.image_path(&opts.image_json);
    check_inputs(opts, image)?;
    let identity = Identity { sha256: image.sha256.clone(), kms_key: opts.kms_key.clone() };
    let region = aws.region().unwrap_or("us-east-1").to_string();
    let mut report = PublishReport {
        ami_id: String::new(),
        name: image.ami_name_for(identity.kms_key.as_deref()),
        region,
        snapshot_id: None,
        already_published: false,
        via: opts.via,
        bytes_sent: 0,
        blocks_sent: 0,
        blocks_total: image.logical_bytes.div_ceil(BLOCK_SIZE),
        copies: BTreeMap::new(),
        encrypted: opts.kms_key.is_some(),
        dry_run: opts.dry_run,
    };
    if opts.dry_run {
        return dry_run(aws, opts, image, &image_path, &identity, report).await;
    }
    let job = Job { aws, image, image_path: &image_path, identity: &identity, waits: Waits { opts, cancel, out } };
    if opts.snapshot_only {
        report.snapshot_id = Some(job.snapshot(&mut report).await?);
        return Ok(report);
    }
    job.ami(&mut report).await?;
    if let Some(days) = opts.deprecate_after_days {
        deprecate(&aws.ec2(), &report.ami_id, days).await?;
    }
    report.copies = copy_everywhere(aws, image, &identity, &report.ami_id, &report.region, &job.waits).await?;
    Ok(report)
}

/// One publish's inputs, for its steps.
struct Job<'a> {
    aws: &'a Aws,
    image: &'a ImageManifest,
    image_path: &'a Path,
    identity: &'a Identity,
    waits: Waits<'a>,
}

impl Job<'_> {
    /// A completed snapshot of the image: one a stopped run left, or a new upload.
    async fn snapshot(&self, report: &mut PublishReport) -> Result<String> {
        match reusable_snapshot(&self.aws.ec2(), self.identity).await? {
            Some(id) => Ok(id),
            None => upload(self, report).await,
        }
    }

    /// The image's AMI in this region, available: found by its identity, or registered.
    async fn ami(&self, report: &mut PublishReport) -> Result<()> {
        let ec2 = self.aws.ec2();
        if let Some(existing) = ami::find(&ec2, self.identity).await? {
            report.ami_id = existing.image_id().unwrap_or_default().to_string();
            report.already_published = true;
            report.snapshot_id =
                existing.block_device_mappings().iter().find_map(|m| m.ebs()?.snapshot_id().map(str::to_string));
        } else {
            let snapshot_id = self.snapshot(report).await?;
            let tags = fleet_tags(self.image, self.identity);
            report.ami_id = register(&ec2, self.image, self.identity, &snapshot_id, &tags).await?;
            report.snapshot_id = Some(snapshot_id);
        }
        self.waits.available(&ec2, &report.ami_id, &report.region).await
    }
}

/// What publish refuses before any AWS call.
fn check_inputs(opts: &PublishOptions, image: &ImageManifest) -> Result<()> {
    if opts.via == Via::EbsDirect && image.format != "raw" {
        bail!(
            "{}: a {} image cannot be written block by block into a snapshot (EBS direct takes raw disks only): publish it with --via s3-import, or build a raw image",
            opts.image_json.display(),
            image.format
        );
    }
    if opts.via == Via::S3Import && opts.bucket.is_none() {
        bail!(crate::exit::UsageError("--via s3-import needs a bucket: pass --bucket or set S3_BUCKET".into()));
    }
    Ok(())
}

/// The waits of one publish: bounded, visible, cancellable.
struct Waits<'a> {
    opts: &'a PublishOptions,
    cancel: &'a Cancel,
    out: &'a Output,
}

impl Waits<'_> {
    /// Until the AMI is `available`; `failed` (or gone) is an error.
    async fn available(&self, ec2: &aws_sdk_ec2::Client, id: &str, region: &str) -> Result<()> {
        let wait = Wait {
            what: format!("AMI {id} in {region}"),
            every: self.opts.poll,
            limit: self.opts.wait_limit,
            raise: "EC2 is still preparing it; publish again later to pick it up",
            cancel: self.cancel,
            out: self.out,
        };
        wait.until(|| async {
            let found = ec2
                .describe_images()
                .image_ids(id)
                .send()
                .await
                .map_err(|e| aws::error("EC2 DescribeImages", id, e))?;
            let image = found.images().first().with_context(|| format!("AMI {id} disappeared in {region}"))?;
            match image.state().map(|s| s.as_str()) {
                Some("available") => Ok(Poll::Done(())),
                Some(state @ ("failed" | "error" | "invalid" | "deregistered")) => bail!(
                    "AMI {id} in {region} is {state}: {}",
                    image.state_reason().and_then(|r| r.message()).unwrap_or("no reason given")
                ),
                state => Ok(Poll::Pending(state.unwrap_or("unknown").to_string())),
            }
        })
        .await
    }
}

/// Upload the image into a new completed snapshot, by the chosen path.
async fn upload(job: &Job<'_>, report: &mut PublishReport) -> Result<String> {
    match job.waits.opts.via {
        // Tagged at StartSnapshot.
        Via::EbsDirect => upload_ebs_direct(job, report).await,
        Via::S3Import => {
            let (aws, waits) = (job.aws, &job.waits);
            let bucket = waits.opts.bucket.as_deref().expect("checked before any AWS call");
            let (snapshot_id, sent) =
                super::import::s3_import(aws, job.image, job.image_path, bucket, waits.opts, waits.out, waits.cancel)
                    .await?;
            report.bytes_sent = sent;
            // Snapshots from VM Import come untagged.
            let tags = ec2_tags(&fleet_tags(job.image, job.identity));
            aws.ec2()
                .create_tags()
                .resources(&snapshot_id)
                .set_tags(Some(tags))
                .send()
                .await
                .map_err(|e| aws::error("EC2 CreateTags", &snapshot_id, e))?;
            Ok(snapshot_id)
        }
    }
}

/// Write the image block by block into a new snapshot, tagged from its
/// start; then (unless `--snapshot-only`) wait until EBS has completed it.
async fn upload_ebs_direct(job: &Job<'_>, report: &mut PublishReport) -> Result<String> {
    let (opts, waits, image) = (job.waits.opts, &job.waits, job.image);
    let bar = waits.out.block_progress(image.logical_bytes, "snapshot");
    let spec = SnapshotSpec {
        description: format!("{} (EBS direct upload)", report.name),
        tags: fleet_tags(image, job.identity),
        kms_key: opts.kms_key.clone(),
        sha256: image.sha256.clone(),
        block_sha256: image.block_sha256.clone(),
        logical_bytes: image.logical_bytes,
    };
    let uploader = SnapshotUploader::new(job.aws, opts.workers);
    let uploaded = uploader.upload(job.image_path, &spec, &bar, waits.cancel).await?;
    bar.finish_and_clear();
    (report.bytes_sent, report.blocks_sent, report.encrypted) =
        (uploaded.bytes_sent, uploaded.blocks_sent, uploaded.encrypted);
    if !opts.snapshot_only {
        let mut waiter = SnapshotWaiter::new(job.aws);
        (waiter.poll, waiter.timeout) = (opts.poll, opts.wait_limit);
        if let Err(err) = waiter.wait_completed(&uploaded.snapshot_id, waits.cancel, waits.out).await {
            return Err(uploader.discard(&uploaded.snapshot_id, err).await);
        }
    }
    Ok(uploaded.snapshot_id)
}

/// The AMI in every other region asked for, each found by its identity or copied.
async fn copy_everywhere(
    aws: &Aws,
    image: &ImageManifest,
    identity: &Identity,
    source: &str,
    region: &str,
    waits: &Waits<'_>,
) -> Result<BTreeMap<String, String>> {
    let targets = waits.opts.copy_to_regions.iter().filter(|r| r.as_str() != region);
    let copies = futures::stream::iter(targets.map(|target| async move {
        let id = copy_to_region(aws, target, region, source, image, identity, waits).await?;
        anyhow::Ok((target.clone(), id))
    }))
    .buffer_unordered(8)
    .try_collect::<Vec<_>>()
    .await?;
    Ok(copies.into_iter().collect())
}

/// What a publish would do, from reads only.
async fn dry_run(
    aws: &Aws,
    opts: &PublishOptions,
    image: &ImageManifest,
    image_path: &Path,
    identity: &Identity,
    mut report: PublishReport,
) -> Result<PublishReport> {
    let ec2 = aws.ec2();
    if let Some(existing) = ami::find(&ec2, identity).await? {
        report.ami_id = existing.image_id().unwrap_or_default().to_string();
        report.already_published = true;
    } else if reusable_snapshot(&ec2, identity).await?.is_none() {
        match opts.via {
            Via::EbsDirect => {
                // What StartSnapshot would answer: encrypted when asked, or
                // when the account encrypts new EBS data by default.
                let by_default = ec2
                    .get_ebs_encryption_by_default()
                    .send()
                    .await
                    .map_err(|e| aws::error("EC2 GetEbsEncryptionByDefault", "", e))?
                    .ebs_encryption_by_default
                    .unwrap_or(false);
                report.encrypted = opts.kms_key.is_some() || by_default;
                let (path, encrypted, size) = (image_path.to_path_buf(), report.encrypted, image.logical_bytes);
                let blocks =
                    tokio::task::spawn_blocking(move || snapshot::blocks_to_send(&File::open(&path)?, size, encrypted))
                        .await??;
                report.blocks_sent = blocks;
                report.bytes_sent = blocks * BLOCK_SIZE;
            }
            Via::S3Import => {
                let bucket = opts.bucket.as_deref().unwrap_or_default();
                let key = super::import::object_key(image);
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
async fn reusable_snapshot(ec2: &aws_sdk_ec2::Client, identity: &Identity) -> Result<Option<String>> {
    let out = ec2
        .describe_snapshots()
        .owner_ids("self")
        .set_filters(Some(identity.filters()))
        .send()
        .await
        .map_err(|e| aws::error("EC2 DescribeSnapshots", &identity.to_string(), e))?;
    Ok(out
        .snapshots()
        .iter()
        .find(|s| s.state().map(|s| s.as_str()) == Some("completed") && identity.matches(s.tags()))
        .and_then(|s| s.snapshot_id().map(str::to_string)))
}

/// The AMI's one disk: the snapshot, gp3, gone with the instance.
fn root_device(snapshot_id: &str) -> BlockDeviceMapping {
    let ebs = EbsBlockDevice::builder()
        .snapshot_id(snapshot_id)
        .volume_type(VolumeType::Gp3)
        .delete_on_termination(true)
        .build();
    BlockDeviceMapping::builder().device_name("/dev/xvda").ebs(ebs).build()
}

/// RegisterImage of the snapshot, tagged; a name already taken by this
/// image's snapshot (a run that stopped before tagging) is adopted.
async fn register(
    ec2: &aws_sdk_ec2::Client,
    image: &ImageManifest,
    identity: &Identity,
    snapshot_id: &str,
    tags: &[(String, String)],
) -> Result<String> {
    let name = image.ami_name_for(identity.kms_key.as_deref());
    let tagging = TagSpecification::builder().resource_type(ResourceType::Image).set_tags(Some(ec2_tags(tags)));
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
        .block_device_mappings(root_device(snapshot_id))
        .tag_specifications(tagging.build())
        .send()
        .await;
    match result {
        Ok(out) => out.image_id.context("RegisterImage returned no image id"),
        Err(err) if aws::error_code(&err) == Some("InvalidAMIName.Duplicate") => {
            adopt_registered(ec2, &name, snapshot_id, tags).await
        }
        Err(err) => Err(aws::error("EC2 RegisterImage", &name, err)),
    }
}

/// The AMI named `name` exists already: tag and adopt it when it is built
/// from `snapshot_id`, refuse otherwise.
async fn adopt_registered(
    ec2: &aws_sdk_ec2::Client,
    name: &str,
    snapshot_id: &str,
    tags: &[(String, String)],
) -> Result<String> {
    let out = ec2
        .describe_images()
        .owners("self")
        .filters(aws_sdk_ec2::types::Filter::builder().name("name").values(name).build())
        .send()
        .await
        .map_err(|e| aws::error("EC2 DescribeImages", name, e))?;
    let existing =
        out.images().first().with_context(|| format!("AMI name {name} is taken, yet no such AMI is visible"))?;
    let uses_snapshot =
        existing.block_device_mappings().iter().any(|m| m.ebs().and_then(|e| e.snapshot_id()) == Some(snapshot_id));
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
    identity: &Identity,
    waits: &Waits<'_>,
) -> Result<String> {
    let ec2 = aws.with_region(target).ec2();
    let id = match ami::find(&ec2, identity).await? {
        Some(existing) => existing.image_id().unwrap_or_default().to_string(),
        None => ec2
            .copy_image()
            .source_image_id(source_ami)
            .source_region(source_region)
            .name(image.ami_name_for(identity.kms_key.as_deref()))
            .client_token(client_token())
            .send()
            .await
            .map_err(|e| aws::error("EC2 CopyImage", &format!("{source_ami} -> {target}"), e))?
            .image_id
            .context("CopyImage returned no image id")?,
    };
    // Copies do not carry the source's tags.
    ec2.create_tags()
        .resources(&id)
        .set_tags(Some(ec2_tags(&fleet_tags(image, identity))))
        .send()
        .await
        .map_err(|e| aws::error("EC2 CreateTags", &id, e))?;
    waits.available(&ec2, &id, target).await?;
    if let Some(days) = waits.opts.deprecate_after_days {
        deprecate(&ec2, &id, days).await?;
    }
    Ok(id)
}
