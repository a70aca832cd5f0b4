//! The S3 operations the pipeline shares: content-addressed puts (an object
//! whose SHA-256 already matches is never sent again), server-side copies
//! and verified downloads.

use std::collections::HashMap;
use std::path::Path;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{MetadataDirective, ServerSideEncryption};
use base64::Engine;

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
    Ok(head(s3, bucket, key).await?.map(|stored| stored.sha256))
}

/// What HeadObject says of the current version of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub etag: String,
    /// The SHA-256 recorded in its metadata ("" when none).
    pub sha256: String,
}

/// The current version's ETag and recorded SHA-256, `None` when there is no such object.
pub async fn head(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Option<Stored>> {
    match s3.head_object().bucket(bucket).key(key).send().await {
        Ok(head) => Ok(Some(Stored {
            etag: head.e_tag().unwrap_or_default().to_string(),
            sha256: head.metadata().and_then(|m| m.get(SHA256_META)).cloned().unwrap_or_default(),
        })),
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
    put_request(s3, bucket, key, body, sha256, content_type)
        .await?
        .send()
        .await
        .map_err(|e| aws::error("S3 PutObject", &url(bucket, key), e))?;
    Ok(())
}

/// [`put`] that replaces exactly the version `current` that HeadObject
/// found (`None`: that there was no object) and stores one new version,
/// even when a response is lost and the SDK's retry layer sends the same
/// PUT again.
///
/// A conditional write, as "How to prevent object overwrites with
/// conditional writes" in the Amazon S3 User Guide documents it
/// (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html>):
/// `If-Match: <ETag read>` (or `If-None-Match: *` for a new key) makes S3
/// answer `412 Precondition Failed` to any write after the first, so a
/// retry can never add a second version. A `412` (or the `409
/// ConditionalRequestConflict` of a concurrent write) is then this write's
/// own first attempt when the current version carries our SHA-256: done.
/// Any other content there is someone else's write since `current` was
/// read, never overwritten: an error naming the object.
pub async fn put_replacing(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    current: Option<&Stored>,
    body: Body<'_>,
    sha256: &str,
    content_type: &str,
) -> Result<()> {
    let request = put_request(s3, bucket, key, body, sha256, content_type).await?;
    let request = match current {
        Some(stored) => request.if_match(&stored.etag),
        None => request.if_none_match("*"),
    };
    let err = match request.send().await {
        Ok(_) => return Ok(()),
        Err(err) => err,
    };
    let status = err.raw_response().map(|r| r.status().as_u16());
    if !matches!(status, Some(409 | 412)) {
        return Err(aws::error("S3 PutObject", &url(bucket, key), err));
    }
    let status = status.unwrap_or_default();
    match head(s3, bucket, key).await.with_context(|| {
        format!("{} answered HTTP {status} to a conditional PutObject; reading it back", url(bucket, key))
    })? {
        Some(now) if now.sha256 == sha256 => Ok(()),
        _ => bail!(
            "{} changed while it was being written (HTTP {status} to a PutObject conditional on the version \
             read just before): not overwritten; run the command again",
            url(bucket, key)
        ),
    }
}

/// What a write-once PutObject (`If-None-Match: *`) found at its key.
#[derive(Debug, PartialEq, Eq)]
pub enum Once {
    Created,
    /// Something is there already (perhaps this write's own earlier
    /// attempt, whose answer was lost): the caller reads it back.
    Exists,
}

/// Attempts of a write-once PutObject that meets `409 ConditionalRequestConflict`.
const CONFLICT_ATTEMPTS: u32 = 3;

/// Send the write-once PutObject `request` makes (a fresh one each time: a
/// body is consumed). S3 answers `412` when the key exists and `409
/// ConditionalRequestConflict` while another conditional write to it is in
/// flight, which its user guide ("How to prevent object overwrites with
/// conditional writes") says to send again: done here, a second apart, at
/// most [`CONFLICT_ATTEMPTS`] times.
pub async fn put_once<F>(url: &str, request: F) -> Result<Once>
where
    F: Fn() -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder,
{
    for attempt in 1..=CONFLICT_ATTEMPTS {
        let err = match request().if_none_match("*").send().await {
            Ok(_) => return Ok(Once::Created),
            Err(e) => e,
        };
        match err.raw_response().map(|r| r.status().as_u16()) {
            Some(412) => return Ok(Once::Exists),
            Some(409) if attempt < CONFLICT_ATTEMPTS => tokio::time::sleep(Duration::from_secs(1)).await,
            _ => return Err(aws::error("S3 PutObject", url, err)),
        }
    }
    unreachable!("the last attempt returns")
}

/// The PutObject request [`put`] and [`put_replacing`] send.
async fn put_request(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: Body<'_>,
    sha256: &str,
    content_type: &str,
) -> Result<aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder> {
    let stream = match body {
        Body::Bytes(bytes) => ByteStream::from(bytes.to_vec()),
        Body::File(path) => {
            ByteStream::from_path(path).await.map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?
        }
    };
    Ok(s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(stream)
        .content_type(content_type)
        .server_side_encryption(ServerSideEncryption::Aes256)
        .checksum_sha256(b64_of_hex(sha256))
        .set_metadata(Some(HashMap::from([(SHA256_META.to_string(), sha256.to_string())])))
        .tagging("app=clawdinator"))
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

/// Read a GetObject body through `sink`, at most `max` bytes (more is an
/// error: the object is not what its manifest says), failing when no bytes
/// arrive for `stall` (the SDK's read timeout covers only the first byte).
async fn read_body(
    mut body: aws_sdk_s3::primitives::ByteStream,
    max: u64,
    stall: Duration,
    url: &str,
    mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<u64> {
    let mut size = 0u64;
    loop {
        let chunk = tokio::time::timeout(stall, body.try_next())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "reading {url}: no data for {stall:?} (stalled; --read-timeout or CLAWDINATOR_READ_TIMEOUT sets the limit)"
                )
            })?
            .map_err(|e| anyhow::anyhow!("reading {url}: {e}"))?;
        let Some(chunk) = chunk else { return Ok(size) };
        size += chunk.len() as u64;
        if size > max {
            bail!("{url} is larger than the {max} bytes expected: refused");
        }
        sink(&chunk)?;
    }
}

/// GetObject of at most `max` bytes: the Range stops the transfer one byte
/// past the limit, so an oversized object is never downloaded whole.
async fn get_at_most(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    max: u64,
) -> Result<
    Option<aws_sdk_s3::operation::get_object::GetObjectOutput>,
    aws_sdk_s3::error::SdkError<aws_sdk_s3::operation::get_object::GetObjectError>,
> {
    match s3.get_object().bucket(bucket).key(key).range(format!("bytes=0-{max}")).send().await {
        Ok(out) => Ok(Some(out)),
        Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
        // An empty object answers a range with 416.
        Err(err) if err.raw_response().is_some_and(|r| r.status().as_u16() == 416) => {
            s3.get_object().bucket(bucket).key(key).send().await.map(Some)
        }
        Err(err) => Err(err),
    }
}

/// A small object (a manifest) into memory, at most `max` bytes. `None` when absent.
pub async fn get_bytes(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    max: u64,
    stall: Duration,
) -> Result<Option<Vec<u8>>> {
    Ok(get_bytes_recorded(s3, bucket, key, max, stall).await?.map(|(bytes, _)| bytes))
}

/// [`get_bytes`], with the SHA-256 recorded on the object ("" when none):
/// both from the one GET, so they describe the same version.
pub async fn get_bytes_recorded(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    max: u64,
    stall: Duration,
) -> Result<Option<(Vec<u8>, String)>> {
    let u = url(bucket, key);
    let Some(out) = get_at_most(s3, bucket, key, max).await.map_err(|e| aws::error("S3 GetObject", &u, e))? else {
        return Ok(None);
    };
    let recorded = out.metadata().and_then(|m| m.get(SHA256_META)).cloned().unwrap_or_default();
    let mut bytes = Vec::new();
    read_body(out.body, max, stall, &u, |chunk| {
        bytes.extend_from_slice(chunk);
        Ok(())
    })
    .await?;
    Ok(Some((bytes, recorded)))
}

/// Stream an object of at most `max` bytes into a new file (0600); returns
/// its SHA-256 and size.
pub async fn get_to_file(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    dest: &Path,
    max: u64,
    stall: Duration,
) -> Result<(String, u64)> {
    use sha2::{Digest, Sha256};
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let u = url(bucket, key);
    let out = get_at_most(s3, bucket, key, max)
        .await
        .map_err(|e| aws::error("S3 GetObject", &u, e))?
        .with_context(|| format!("{u} does not exist"))?;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(dest)?;
    let mut hasher = Sha256::new();
    let size = read_body(out.body, max, stall, &u, |chunk| {
        hasher.update(chunk);
        file.write_all(chunk)
    })
    .await?;
    file.sync_all()?;
    Ok((hex::encode(hasher.finalize()), size))
}
