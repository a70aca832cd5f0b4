//! `image publish --via s3-import`: the image to S3 (content-addressed,
//! resumable multipart upload), then VM Import's `import-snapshot`.

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use aws_sdk_ec2::types::{ResourceType, SnapshotDiskContainer, TagSpecification, UserBucket};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use super::ami::{ec2_tags, fleet_tags};
use super::publish::{token, PublishOptions};
use super::ImageManifest;
use crate::aws::{self, s3, Aws};
use crate::dev::doctor;
use crate::output::Output;

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

pub(super) async fn s3_import(
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
}
