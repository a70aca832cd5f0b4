//! The S3 operations the pipeline shares: content-addressed puts (an object
//! whose SHA-256 already matches is never sent again), server-side copies
//! and verified downloads.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{MetadataDirective, ServerSideEncryption};
use base64::Engine;
use tokio::io::AsyncWriteExt;

use crate::aws;

/// User metadata key holding the object's SHA-256 (hex).
pub const SHA256_META: &str = "sha256";

pub fn url(bucket: &str, key: &str) -> String {
    format!("s3://{bucket}/{key}")
}

fn b64_of_hex(hex_sha: &str) -> String {
    let raw = hex::decode(hex_sha).expect("our own hex digest");
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// The SHA-256 recorded on an object, `None` when there is no such object.
pub async fn head_sha256(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Option<String>> {
    match s3.head_object().bucket(bucket).key(key).send().await {
        Ok(head) => Ok(Some(head.metadata().and_then(|m| m.get(SHA256_META)).cloned().unwrap_or_default())),
        Err(err) if err.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(None),
        Err(err) => Err(aws::error("S3 HeadObject", &url(bucket, key), err)),
    }
}

/// What to write: bytes in memory or a file streamed from disk.
pub enum Body<'a> {
    Bytes(&'a [u8]),
    File(&'a Path),
}

/// PutObject with SSE, the SHA-256 in metadata and as the integrity checksum
/// S3 verifies on receipt.
pub async fn put(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: Body<'_>,
    sha256: &str,
    content_type: &str,
) -> Result<()> {
    let stream = match body {
        Body::Bytes(bytes) => ByteStream::from(bytes.to_vec()),
        Body::File(path) => {
            ByteStream::from_path(path).await.map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?
        }
    };
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(stream)
        .content_type(content_type)
        .server_side_encryption(ServerSideEncryption::Aes256)
        .checksum_sha256(b64_of_hex(sha256))
        .set_metadata(Some(HashMap::from([(SHA256_META.to_string(), sha256.to_string())])))
        .tagging("app=clawdinator")
        .send()
        .await
        .map_err(|e| aws::error("S3 PutObject", &url(bucket, key), e))?;
    Ok(())
}

/// Server-side copy within a bucket, keeping metadata (and so the SHA-256).
pub async fn copy(s3: &aws_sdk_s3::Client, bucket: &str, from: &str, to: &str) -> Result<()> {
    s3.copy_object()
        .bucket(bucket)
        .key(to)
        .copy_source(format!("{bucket}/{}", encode_key(from)))
        .metadata_directive(MetadataDirective::Copy)
        .server_side_encryption(ServerSideEncryption::Aes256)
        .send()
        .await
        .map_err(|e| aws::error("S3 CopyObject", &format!("{} -> {}", url(bucket, from), url(bucket, to)), e))?;
    Ok(())
}

fn encode_key(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whole small object into memory (manifests). `None` when absent.
pub async fn get_bytes(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Option<Vec<u8>>> {
    match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => {
            let bytes = out.body.collect().await.map_err(|e| anyhow::anyhow!("reading {}: {e}", url(bucket, key)))?;
            Ok(Some(bytes.into_bytes().to_vec()))
        }
        Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
        Err(err) => Err(aws::error("S3 GetObject", &url(bucket, key), err)),
    }
}

/// Stream an object into a new file, returning its SHA-256 and size.
pub async fn get_to_file(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, dest: &Path) -> Result<(String, u64)> {
    use sha2::{Digest, Sha256};
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| aws::error("S3 GetObject", &url(bucket, key), e))?;
    let mut body = out.body;
    let mut file = tokio::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(dest).await?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = body.try_next().await.map_err(|e| anyhow::anyhow!("reading {}: {e}", url(bucket, key)))? {
        hasher.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    file.sync_all().await?;
    Ok((hex::encode(hasher.finalize()), size))
}
