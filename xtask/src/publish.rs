//! `cargo xtask image publish`: a built image to a registered, tagged fleet
//! AMI, through EBS direct (default) or S3 + VM Import. Idempotent by
//! content: an AMI tagged with the image's SHA-256 is returned as is.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use aws_sdk_ec2::types::{
    ArchitectureValues, BlockDeviceMapping, BootModeValues, EbsBlockDevice, ImdsSupportValues, ResourceType,
    SnapshotDiskContainer, TagSpecification, UserBucket, VolumeType,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use indicatif::ProgressBar;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::ami::{self, ec2_tags, fleet_tags};
use crate::aws::{self, Aws};
use crate::image::ImageManifest;
use crate::output::{self, Output};
use crate::snapshot::{SnapshotSpec, SnapshotUploader, SnapshotWaiter};
use crate::{doctor, flags, s3, Ctx};

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

fn token(prefix: &str, sha: &str, suffix: &str) -> String {
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
        blocks_total: image.logical_bytes.div_ceil(crate::snapshot::BLOCK_SIZE),
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
                    let (snapshot_id, sent) = s3_import(aws, &image, &image_path, bucket, opts, out, cancel).await?;
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
                    for index in crate::snapshot::candidate_blocks(&file, size, encrypted) {
                        let block = crate::snapshot::read_block(&file, index, size)?;
                        if encrypted || block.iter().any(|&b| b != 0) {
                            sent += 1;
                        }
                    }
                    Ok(sent)
                })
                .await??;
                report.blocks_sent = blocks;
                report.bytes_sent = blocks * crate::snapshot::BLOCK_SIZE;
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

// ------------------------------------------------------------ S3 + VM Import

/// Does any statement of an IAM policy document (URL-encoded or not) allow
/// s3:GetObject on objects of `bucket`?
pub fn policy_allows_read(document: &str, bucket: &str) -> bool {
    let decoded =
        if document.trim_start().starts_with('{') { document.to_string() } else { doctor::percent_decode(document) };
    let Ok(policy) = serde_json::from_str::<serde_json::Value>(&decoded) else { return false };
    let as_list = |v: &serde_json::Value| -> Vec<String> {
        match v {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
            _ => vec![],
        }
    };
    let statements = match &policy["Statement"] {
        serde_json::Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    statements.iter().any(|s| {
        s["Effect"] == "Allow"
            && as_list(&s["Action"]).iter().any(|a| matches!(a.as_str(), "s3:GetObject" | "s3:Get*" | "s3:*" | "*"))
            && as_list(&s["Resource"]).iter().any(|r| {
                r == "*"
                    || r == &format!("arn:aws:s3:::{bucket}/*")
                    || r == &format!("arn:aws:s3:::{bucket}*")
                    || r == "arn:aws:s3:::*"
            })
    })
}

/// The vmimport role exists, trusts VM Import and may read the bucket.
pub async fn preflight_vmimport(aws: &Aws, bucket: &str) -> Result<()> {
    let iam = aws.iam();
    let fix = "infra/opentofu/aws creates it (apply it, or see `cargo xtask doctor`)";
    let role = iam.get_role().role_name("vmimport").send().await.map_err(|e| {
        aws::error("IAM GetRole", "vmimport", e).context(format!("the vmimport service role is missing: {fix}"))
    })?;
    let trust = role.role.and_then(|r| r.assume_role_policy_document).unwrap_or_default();
    ensure!(doctor::trusts_vmie(&trust), "the vmimport role does not trust vmie.amazonaws.com: {fix}");
    let mut documents = Vec::new();
    let inline = iam
        .list_role_policies()
        .role_name("vmimport")
        .send()
        .await
        .map_err(|e| aws::error("IAM ListRolePolicies", "vmimport", e))?;
    for name in inline.policy_names() {
        let p = iam
            .get_role_policy()
            .role_name("vmimport")
            .policy_name(name)
            .send()
            .await
            .map_err(|e| aws::error("IAM GetRolePolicy", name, e))?;
        documents.push(p.policy_document);
    }
    let attached = iam
        .list_attached_role_policies()
        .role_name("vmimport")
        .send()
        .await
        .map_err(|e| aws::error("IAM ListAttachedRolePolicies", "vmimport", e))?;
    for policy in attached.attached_policies() {
        let arn = policy.policy_arn().unwrap_or_default();
        let p = iam.get_policy().policy_arn(arn).send().await.map_err(|e| aws::error("IAM GetPolicy", arn, e))?;
        let version = p.policy.and_then(|p| p.default_version_id).unwrap_or_default();
        let v = iam
            .get_policy_version()
            .policy_arn(arn)
            .version_id(&version)
            .send()
            .await
            .map_err(|e| aws::error("IAM GetPolicyVersion", arn, e))?;
        documents.extend(v.policy_version.and_then(|v| v.document));
    }
    ensure!(
        documents.iter().any(|d| policy_allows_read(d, bucket)),
        "the vmimport role may not read s3://{bucket}/ (no policy allows s3:GetObject on arn:aws:s3:::{bucket}/*): {fix}"
    );
    Ok(())
}

const MIB: u64 = 1 << 20;

/// Part size: at least 8 MiB, and few enough parts for S3's limit of 10,000.
pub fn part_size(size: u64) -> u64 {
    (size.div_ceil(9_000)).div_ceil(MIB).max(8) * MIB
}

fn read_part(file: &File, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

/// Put the image at its content-addressed key with a multipart upload that
/// resumes an interrupted one. Returns the bytes sent.
/// Where an image goes in S3, content-addressed.
pub struct ImageObject<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub path: &'a Path,
    pub sha256: &'a str,
}

pub async fn upload_image_object(
    aws: &Aws,
    object: &ImageObject<'_>,
    concurrency: usize,
    bar: &ProgressBar,
    cancel: impl Future<Output = ()>,
) -> Result<u64> {
    let ImageObject { bucket, key, path, sha256 } = *object;
    let s3c = aws.s3();
    if s3::head_sha256(&s3c, bucket, key).await?.as_deref() == Some(sha256) {
        bar.inc(bar.length().unwrap_or(0));
        return Ok(0);
    }
    let file = Arc::new(File::open(path).with_context(|| format!("cannot open the image {}", path.display()))?);
    let size = file.metadata()?.len();
    let part = part_size(size);
    let parts = size.div_ceil(part);

    // Resume the upload with the most parts for this key; abort any other.
    let listed = s3c
        .list_multipart_uploads()
        .bucket(bucket)
        .prefix(key)
        .send()
        .await
        .map_err(|e| aws::error("S3 ListMultipartUploads", &s3::url(bucket, key), e))?;
    let mut candidates = Vec::new();
    for upload in listed.uploads().iter().filter(|u| u.key() == Some(key)) {
        let id = upload.upload_id().unwrap_or_default().to_string();
        let parts = s3c
            .list_parts()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .send()
            .await
            .map_err(|e| aws::error("S3 ListParts", &s3::url(bucket, key), e))?;
        let done: BTreeMap<i32, (String, Option<String>, i64)> = parts
            .parts()
            .iter()
            .filter_map(|p| {
                Some((
                    p.part_number()?,
                    (p.e_tag()?.to_string(), p.checksum_sha256().map(str::to_string), p.size().unwrap_or(0)),
                ))
            })
            .collect();
        candidates.push((id, done));
    }
    candidates.sort_by_key(|(_, done)| std::cmp::Reverse(done.len()));
    let resumed = if candidates.is_empty() { None } else { Some(candidates.remove(0)) };
    for (id, _) in candidates {
        s3c.abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .send()
            .await
            .map_err(|e| aws::error("S3 AbortMultipartUpload", &s3::url(bucket, key), e))?;
    }
    let (upload_id, done) = match resumed {
        Some((id, done)) => {
            tracing::info!(parts = done.len(), "resuming the multipart upload of {key}");
            (id, done)
        }
        None => {
            let created = s3c
                .create_multipart_upload()
                .bucket(bucket)
                .key(key)
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .server_side_encryption(ServerSideEncryption::Aes256)
                .metadata(s3::SHA256_META, sha256)
                .tagging("app=clawdinator")
                .send()
                .await
                .map_err(|e| aws::error("S3 CreateMultipartUpload", &s3::url(bucket, key), e))?;
            (created.upload_id.context("CreateMultipartUpload returned no upload id")?, BTreeMap::new())
        }
    };

    let expected_len = |n: u64| (size - n * part).min(part);
    let send_all = futures::stream::iter(0..parts)
        .map(|n| {
            let (file, s3c, upload_id, done) = (file.clone(), s3c.clone(), upload_id.clone(), &done);
            async move {
                let number = (n + 1) as i32;
                let len = expected_len(n);
                let data = tokio::task::spawn_blocking({
                    let file = file.clone();
                    move || read_part(&file, n * part, len)
                })
                .await??;
                let checksum = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&data));
                if let Some((etag, their, their_len)) = done.get(&number) {
                    if *their_len as u64 == len && their.as_deref().is_none_or(|c| c == checksum) {
                        bar.inc(len);
                        return anyhow::Ok((
                            CompletedPart::builder().part_number(number).e_tag(etag).checksum_sha256(checksum).build(),
                            0,
                        ));
                    }
                }
                let sent = s3c
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .checksum_sha256(&checksum)
                    .body(ByteStream::from(data))
                    .send()
                    .await
                    .map_err(|e| aws::error("S3 UploadPart", &format!("{} part {number}", s3::url(bucket, key)), e))?;
                bar.inc(len);
                Ok((
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(sent.e_tag)
                        .checksum_sha256(checksum)
                        .build(),
                    len,
                ))
            }
        })
        .buffer_unordered(concurrency.clamp(1, 8))
        .try_collect::<Vec<_>>();
    let mut completed = tokio::select! {
        r = send_all => r?,
        // The upload stays, so the next run resumes it.
        _ = cancel => bail!("interrupted: the multipart upload of {} is kept and resumes on the next run", s3::url(bucket, key)),
    };
    let sent: u64 = completed.iter().map(|(_, n)| n).sum();
    completed.sort_by_key(|(p, _)| p.part_number());
    s3c.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed.into_iter().map(|(p, _)| p).collect()))
                .build(),
        )
        .send()
        .await
        .map_err(|e| aws::error("S3 CompleteMultipartUpload", &s3::url(bucket, key), e))?;
    Ok(sent)
}

async fn s3_import(
    aws: &Aws,
    image: &ImageManifest,
    image_path: &Path,
    bucket: &str,
    opts: &PublishOptions,
    out: &Output,
    cancel: impl Future<Output = ()>,
) -> Result<(String, u64)> {
    preflight_vmimport(aws, bucket).await?;
    let key = format!("images/{}.{}", image.sha256, image.format);
    let bar = out.progress(image.logical_bytes, "s3 upload");
    let object = ImageObject { bucket, key: &key, path: image_path, sha256: &image.sha256 };
    let sent = upload_image_object(aws, &object, opts.workers, &bar, cancel).await?;
    bar.finish_and_clear();

    let ec2 = aws.ec2();
    let mut request = ec2
        .import_snapshot()
        .role_name("vmimport")
        .client_token(token("import", &image.sha256, ""))
        .description(image.ami_name())
        .disk_container(
            SnapshotDiskContainer::builder()
                .format(image.format.to_uppercase())
                .description(image.ami_name())
                .user_bucket(UserBucket::builder().s3_bucket(bucket).s3_key(&key).build())
                .build(),
        )
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::ImportSnapshotTask)
                .set_tags(Some(ec2_tags(&fleet_tags(image))))
                .build(),
        );
    if let Some(kms) = &opts.kms_key {
        request = request.encrypted(true).kms_key_id(kms);
    }
    let task = request.send().await.map_err(|e| aws::error("EC2 ImportSnapshot", &s3::url(bucket, &key), e))?;
    let task_id = task.import_task_id.context("ImportSnapshot returned no task id")?;
    let bar = out.counter(100, "importing");
    let deadline = Instant::now() + opts.import_timeout;
    let snapshot_id = loop {
        let out = ec2
            .describe_import_snapshot_tasks()
            .import_task_ids(&task_id)
            .send()
            .await
            .map_err(|e| aws::error("EC2 DescribeImportSnapshotTasks", &task_id, e))?;
        let detail = out.import_snapshot_tasks().first().and_then(|t| t.snapshot_task_detail()).cloned();
        let detail = detail.with_context(|| format!("import task {task_id} disappeared"))?;
        let status = detail.status().unwrap_or_default();
        match status {
            "completed" => {
                break detail.snapshot_id().map(str::to_string).context("the completed import names no snapshot")?
            }
            "deleted" | "deleting" | "error" => bail!(
                "VM Import task {task_id} failed ({status}): {} (the image stays at {} for a retry)",
                detail.status_message().unwrap_or("no status message"),
                s3::url(bucket, &key)
            ),
            _ => {
                if let Some(p) = detail.progress().and_then(|p| p.parse::<u64>().ok()) {
                    bar.set_position(p);
                }
                if Instant::now() > deadline {
                    bail!("VM Import task {task_id} still {status} after {:?} (raise --timeout)", opts.import_timeout);
                }
                tokio::time::sleep(opts.import_poll).await;
            }
        }
    };
    bar.finish_and_clear();
    if !opts.keep_object {
        aws.s3()
            .delete_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| aws::error("S3 DeleteObject", &s3::url(bucket, &key), e))?;
    }
    Ok((snapshot_id, sent))
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
    fn read_access_is_recognised_in_the_forms_iam_returns() {
        let doc = r#"{"Statement":[{"Effect":"Allow","Action":["s3:GetObject","s3:ListBucket"],"Resource":["arn:aws:s3:::b","arn:aws:s3:::b/*"]}]}"#;
        assert!(policy_allows_read(doc, "b"));
        assert!(!policy_allows_read(doc, "other"));
        let encoded = doc.replace('{', "%7B").replace('}', "%7D").replace('"', "%22").replace(':', "%3A");
        assert!(policy_allows_read(&encoded, "b"));
        assert!(!policy_allows_read(&doc.replace("Allow", "Deny"), "b"));
        assert!(!policy_allows_read(&doc.replace("s3:GetObject", "s3:PutObject"), "b"));
    }

    #[test]
    fn parts_respect_the_s3_limits() {
        assert_eq!(part_size(1), 8 * MIB);
        let big = 200 * 1024 * MIB * 1024 / 1024; // 200 GiB
        assert!(big.div_ceil(part_size(big)) <= 10_000);
    }

    #[test]
    fn client_tokens_fit_aws_limits() {
        let sha = "a".repeat(64);
        assert!(token("copy", &sha, "-ap-southeast-2").len() <= 64);
        assert_ne!(token("clawdinator", &sha, ""), token("clawdinator", &sha, "-kms"));
    }
}
