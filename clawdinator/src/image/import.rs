//! `image publish --via s3-import`: the image to S3 (content-addressed,
//! resumable multipart upload), then VM Import's `import-snapshot`.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use aws_sdk_ec2::types::{ResourceType, SnapshotDiskContainer, TagSpecification, UserBucket};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use base64::Engine;
use futures::{StreamExt, TryFutureExt, TryStreamExt};
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use super::ami::{ec2_tags, fleet_tags, Identity};
use super::build::ImageManifest;
use super::options::PublishOptions;
use super::snapshot::client_token;
use crate::aws::{self, iam, s3, Aws};
use crate::cancel::{Cancel, Poll, Wait};
use crate::output::Output;

/// The vmimport role exists, trusts VM Import and may read the bucket.
pub async fn preflight_vmimport(aws: &Aws, bucket: &str) -> Result<()> {
    let fix = "infra/opentofu/aws creates it (apply it, or see `cargo xtask doctor`)";
    let role = aws.iam().get_role().role_name("vmimport").send().await.map_err(|e| {
        aws::error("IAM GetRole", "vmimport", e).context(format!("the vmimport service role is missing: {fix}"))
    })?;
    let trust = role.role.and_then(|r| r.assume_role_policy_document).unwrap_or_default();
    ensure!(
        iam::trusts_service(&trust, "vmie.amazonaws.com"),
        "the vmimport role does not trust vmie.amazonaws.com: {fix}"
    );
    let documents = iam::role_policy_documents(aws, "vmimport").await?;
    ensure!(
        documents.iter().any(|d| iam::allows_read(d, bucket)),
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

/// The content-addressed key of an image in the bucket.
pub fn object_key(image: &ImageManifest) -> String {
    format!("images/{}.{}", image.sha256, image.format)
}

/// Where an image goes in S3, content-addressed.
pub struct ImageObject<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub path: &'a Path,
    pub sha256: &'a str,
}

/// Parts already uploaded: number -> (ETag, SHA-256 checksum, size).
type DoneParts = BTreeMap<i32, (String, Option<String>, i64)>;

/// One multipart upload of an image object, and the parts it already holds.
struct Upload<'a> {
    s3c: &'a aws_sdk_s3::Client,
    object: &'a ImageObject<'a>,
    id: String,
    done: DoneParts,
}

impl<'a> Upload<'a> {
    /// Resume the multipart upload with the most parts for this key
    /// (aborting any other), or start a new one.
    async fn resume_or_create(s3c: &'a aws_sdk_s3::Client, object: &'a ImageObject<'a>) -> Result<Upload<'a>> {
        let mut candidates = uploads(s3c, object).await?;
        candidates.sort_by_key(|(_, done)| std::cmp::Reverse(done.len()));
        let mut candidates = candidates.into_iter();
        let resumed = candidates.next();
        for (id, _) in candidates {
            abort(s3c, object, &id).await?;
        }
        let (id, done) = match resumed {
            Some((id, done)) => {
                tracing::info!(parts = done.len(), "resuming the multipart upload of {}", object.key);
                (id, done)
            }
            None => (create(s3c, object).await?, BTreeMap::new()),
        };
        Ok(Upload { s3c, object, id, done })
    }

    fn url(&self) -> String {
        s3::url(self.object.bucket, self.object.key)
    }

    /// One part: reused when the earlier upload already holds it, sent
    /// otherwise. Returns the completed part and the bytes sent.
    async fn send_part(&self, number: i32, data: Vec<u8>) -> Result<(CompletedPart, u64)> {
        let len = data.len() as u64;
        let checksum = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&data));
        if let Some((etag, theirs, their_len)) = self.done.get(&number) {
            if *their_len as u64 == len && theirs.as_deref().is_none_or(|c| c == checksum) {
                let part = CompletedPart::builder().part_number(number).e_tag(etag).checksum_sha256(checksum).build();
                return Ok((part, 0));
            }
        }
        let sent = self
            .s3c
            .upload_part()
            .bucket(self.object.bucket)
            .key(self.object.key)
            .upload_id(&self.id)
            .part_number(number)
            .checksum_sha256(&checksum)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| aws::error("S3 UploadPart", &format!("{} part {number}", self.url()), e))?;
        let part = CompletedPart::builder().part_number(number).set_e_tag(sent.e_tag).checksum_sha256(checksum).build();
        Ok((part, len))
    }

    /// Every part of `file`, read (and hashed into `hasher`) in order and
    /// sent `concurrency` at a time (at most 8).
    async fn send_parts(
        &self,
        file: Arc<File>,
        concurrency: usize,
        hasher: &mut Sha256,
        bar: &ProgressBar,
    ) -> Result<Vec<(CompletedPart, u64)>> {
        let size = file.metadata()?.len();
        let part = part_size(size);
        futures::stream::iter(0..size.div_ceil(part))
            .map(|n| {
                let file = file.clone();
                async move {
                    let data =
                        tokio::task::spawn_blocking(move || read_part(&file, n * part, (size - n * part).min(part)));
                    anyhow::Ok(((n + 1) as i32, data.await??))
                }
            })
            .buffered(concurrency.clamp(1, 8))
            .map_ok(|(number, data)| {
                hasher.update(&data); // in part order: `buffered` keeps it
                let len = data.len() as u64;
                self.send_part(number, data).map_ok(move |r| {
                    bar.inc(len);
                    r
                })
            })
            .try_buffer_unordered(concurrency.clamp(1, 8))
            .try_collect()
            .await
    }

    /// What was read hashes to the image's SHA-256, or the upload is
    /// aborted and the error says the file changed.
    async fn check_digest(&self, digest: &str) -> Result<()> {
        if digest == self.object.sha256 {
            return Ok(());
        }
        let cleanup = match abort(self.s3c, self.object, &self.id).await {
            Ok(()) => "the multipart upload was aborted".to_string(),
            Err(err) => format!("the multipart upload {} could NOT be aborted: {err:#}", self.id),
        };
        bail!(
            "{} read back with SHA-256 {digest}, but image.json says {}: it changed after `image build`; rebuild it (`cargo xtask image build`); {cleanup}",
            self.object.path.display(),
            self.object.sha256
        );
    }

    /// Complete the upload from its parts, in order; returns the bytes sent.
    async fn complete(&self, mut completed: Vec<(CompletedPart, u64)>) -> Result<u64> {
        let sent: u64 = completed.iter().map(|(_, n)| n).sum();
        completed.sort_by_key(|(p, _)| p.part_number());
        let parts = completed.into_iter().map(|(p, _)| p).collect();
        self.s3c
            .complete_multipart_upload()
            .bucket(self.object.bucket)
            .key(self.object.key)
            .upload_id(&self.id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| aws::error("S3 CompleteMultipartUpload", &self.url(), e))?;
        Ok(sent)
    }
}

/// The unfinished multipart uploads of this key, each with its parts.
async fn uploads(s3c: &aws_sdk_s3::Client, object: &ImageObject<'_>) -> Result<Vec<(String, DoneParts)>> {
    let listed = s3c
        .list_multipart_uploads()
        .bucket(object.bucket)
        .prefix(object.key)
        .send()
        .await
        .map_err(|e| aws::error("S3 ListMultipartUploads", &s3::url(object.bucket, object.key), e))?;
    let mut found = Vec::new();
    for upload in listed.uploads().iter().filter(|u| u.key() == Some(object.key)) {
        let id = upload.upload_id().unwrap_or_default().to_string();
        let done = done_parts(s3c, object, &id).await?;
        found.push((id, done));
    }
    Ok(found)
}

/// The parts an unfinished upload holds.
async fn done_parts(s3c: &aws_sdk_s3::Client, object: &ImageObject<'_>, id: &str) -> Result<DoneParts> {
    let parts = s3c
        .list_parts()
        .bucket(object.bucket)
        .key(object.key)
        .upload_id(id)
        .send()
        .await
        .map_err(|e| aws::error("S3 ListParts", &s3::url(object.bucket, object.key), e))?;
    Ok(parts
        .parts()
        .iter()
        .filter_map(|p| {
            let entry = (p.e_tag()?.to_string(), p.checksum_sha256().map(str::to_string), p.size().unwrap_or(0));
            Some((p.part_number()?, entry))
        })
        .collect())
}

/// A new multipart upload of the image object; returns its id.
async fn create(s3c: &aws_sdk_s3::Client, object: &ImageObject<'_>) -> Result<String> {
    let created = s3c
        .create_multipart_upload()
        .bucket(object.bucket)
        .key(object.key)
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .server_side_encryption(ServerSideEncryption::Aes256)
        .metadata(s3::SHA256_META, object.sha256)
        .tagging("app=clawdinator")
        .send()
        .await
        .map_err(|e| aws::error("S3 CreateMultipartUpload", &s3::url(object.bucket, object.key), e))?;
    created.upload_id.context("CreateMultipartUpload returned no upload id")
}

async fn abort(s3c: &aws_sdk_s3::Client, object: &ImageObject<'_>, upload_id: &str) -> Result<()> {
    s3c.abort_multipart_upload()
        .bucket(object.bucket)
        .key(object.key)
        .upload_id(upload_id)
        .send()
        .await
        .map_err(|e| aws::error("S3 AbortMultipartUpload", &s3::url(object.bucket, object.key), e))?;
    Ok(())
}

/// Put the image at its content-addressed key with a multipart upload that
/// resumes an interrupted one. Parts are read (and hashed) in order and sent
/// concurrently; the upload is completed only when what was read hashes to
/// the image's SHA-256, and aborted otherwise. Returns the bytes sent.
pub async fn upload_image_object(
    aws: &Aws,
    object: &ImageObject<'_>,
    concurrency: usize,
    bar: &ProgressBar,
    cancel: &Cancel,
) -> Result<u64> {
    let s3c = aws.s3();
    if s3::head_sha256(&s3c, object.bucket, object.key).await?.as_deref() == Some(object.sha256) {
        bar.inc(bar.length().unwrap_or(0));
        return Ok(0);
    }
    let path = object.path;
    let file = Arc::new(File::open(path).with_context(|| format!("cannot open the image {}", path.display()))?);
    let upload = Upload::resume_or_create(&s3c, object).await?;
    let mut hasher = Sha256::new();
    // Interrupted, the upload stays, so the next run resumes it.
    let sends = upload.send_parts(file, concurrency, &mut hasher, bar);
    let kept = || format!("the multipart upload of {} is kept and resumes on the next run", upload.url());
    let completed = cancel.guard("uploading the image", sends).await.with_context(kept)?;
    upload.check_digest(&hex::encode(hasher.finalize())).await?;
    upload.complete(completed).await
}

/// ImportSnapshot of the uploaded object; returns the task id.
async fn start_import(
    aws: &Aws,
    image: &ImageManifest,
    identity: &Identity,
    bucket: &str,
    key: &str,
) -> Result<String> {
    let name = image.ami_name_for(identity.kms_key.as_deref());
    let mut request = aws
        .ec2()
        .import_snapshot()
        .role_name("vmimport")
        .client_token(client_token())
        .description(&name)
        .disk_container(
            SnapshotDiskContainer::builder()
                .format(image.format.to_uppercase())
                .description(&name)
                .user_bucket(UserBucket::builder().s3_bucket(bucket).s3_key(key).build())
                .build(),
        )
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::ImportSnapshotTask)
                .set_tags(Some(ec2_tags(&fleet_tags(image, identity))))
                .build(),
        );
    if let Some(kms) = &identity.kms_key {
        request = request.encrypted(true).kms_key_id(kms);
    }
    let task = request.send().await.map_err(|e| aws::error("EC2 ImportSnapshot", &s3::url(bucket, key), e))?;
    task.import_task_id.context("ImportSnapshot returned no task id")
}

/// Follow an import task to its snapshot. Bounded by `--timeout`; on Ctrl-C
/// the task is cancelled (CancelImportTask) and the error says so.
async fn wait_import(
    aws: &Aws,
    task_id: &str,
    object: &str,
    opts: &PublishOptions,
    out: &Output,
    cancel: &Cancel,
) -> Result<String> {
    let ec2 = aws.ec2();
    let wait = Wait {
        what: format!("VM Import task {task_id}"),
        every: opts.import_poll,
        limit: opts.import_timeout,
        raise: "raise --timeout (minutes)",
        cancel,
        out,
    };
    match wait.until(|| import_progress(&ec2, task_id, object)).await {
        Err(err) if cancel.is_cancelled() => Err(cancel_import(&ec2, task_id, err).await),
        other => other,
    }
}

/// One look at an import task: its snapshot once completed, an error once
/// failed, else its status and progress. (VM Import's statuses are strings
/// in the SDK, not an enum.)
async fn import_progress(ec2: &aws_sdk_ec2::Client, task_id: &str, object: &str) -> Result<Poll<String>> {
    let found = ec2
        .describe_import_snapshot_tasks()
        .import_task_ids(task_id)
        .send()
        .await
        .map_err(|e| aws::error("EC2 DescribeImportSnapshotTasks", task_id, e))?;
    let detail = found.import_snapshot_tasks().first().and_then(|t| t.snapshot_task_detail()).cloned();
    let detail = detail.with_context(|| format!("import task {task_id} disappeared"))?;
    match detail.status().unwrap_or_default() {
        "completed" => {
            Ok(Poll::Done(detail.snapshot_id().map(str::to_string).context("the completed import names no snapshot")?))
        }
        status @ ("deleted" | "deleting" | "error") => bail!(
            "VM Import task {task_id} failed ({status}): {} (the image stays at {object} for a retry)",
            detail.status_message().unwrap_or("no status message")
        ),
        status => Ok(Poll::Pending(format!("{status} {}%", detail.progress().unwrap_or("0")))),
    }
}

/// Cancel an interrupted import task; `err` then says whether it was.
async fn cancel_import(ec2: &aws_sdk_ec2::Client, task_id: &str, err: anyhow::Error) -> anyhow::Error {
    match ec2.cancel_import_task().import_task_id(task_id).send().await {
        Ok(_) => err.context(format!("the import task {task_id} was cancelled")),
        Err(e) => err.context(format!(
            "the import task {task_id} could NOT be cancelled ({:#}); it may still create a snapshot, which the next publish reuses",
            aws::error("EC2 CancelImportTask", task_id, e)
        )),
    }
}

/// The S3 + VM Import path: returns the completed snapshot and the bytes sent.
pub(super) async fn s3_import(
    aws: &Aws,
    image: &ImageManifest,
    image_path: &Path,
    bucket: &str,
    opts: &PublishOptions,
    out: &Output,
    cancel: &Cancel,
) -> Result<(String, u64)> {
    preflight_vmimport(aws, bucket).await?;
    let identity = Identity { sha256: image.sha256.clone(), kms_key: opts.kms_key.clone() };
    let key = object_key(image);
    let bar = out.progress(image.logical_bytes, "s3 upload");
    let object = ImageObject { bucket, key: &key, path: image_path, sha256: &image.sha256 };
    let sent = upload_image_object(aws, &object, opts.workers, &bar, cancel).await?;
    bar.finish_and_clear();
    let task_id = cancel.guard("starting VM Import", start_import(aws, image, &identity, bucket, &key)).await?;
    let snapshot_id = wait_import(aws, &task_id, &s3::url(bucket, &key), opts, out, cancel).await?;
    if !opts.keep_object {
        if let Err(e) = aws.s3().delete_object().bucket(bucket).key(&key).send().await {
            out.note(format!(
                "warning: the imported image stays at {}: {:#}",
                s3::url(bucket, &key),
                aws::error("S3 DeleteObject", &s3::url(bucket, &key), e)
            ));
        }
    }
    Ok((snapshot_id, sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_respect_the_s3_limits() {
        assert_eq!(part_size(1), 8 * MIB);
        let big = 200 * 1024 * MIB; // 200 GiB
        assert!(big.div_ceil(part_size(big)) <= 10_000);
    }
}
