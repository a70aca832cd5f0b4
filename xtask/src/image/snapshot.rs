//! The EBS direct upload engine: an uploader that writes a raw disk image
//! into a new EBS snapshot block by block, and a waiter that follows the
//! snapshot to `completed`. Shaped after coldsnap's library: the CLI is a
//! thin layer over these two types.

use std::fs::File;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types::{ChecksumAggregationMethod, ChecksumAlgorithm, Tag};
use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use crate::aws;

/// EBS snapshots are written in blocks of 512 KiB.
pub const BLOCK_SIZE: u64 = 524_288;
const GIB: u64 = 1 << 30;

/// What the new snapshot should be.
#[derive(Debug, Clone)]
pub struct SnapshotSpec {
    pub description: String,
    pub tags: Vec<(String, String)>,
    /// Encrypt with this KMS key. Every block is then sent, zeros included:
    /// absent blocks of an encrypted snapshot do not read back as zeros.
    pub kms_key: Option<String>,
    /// Idempotency token for StartSnapshot (derived from the image digest).
    pub client_token: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub snapshot_id: String,
    pub blocks_total: u64,
    pub blocks_sent: u64,
    pub bytes_sent: u64,
    pub volume_size_gib: i64,
}

pub struct SnapshotUploader {
    ebs: aws_sdk_ebs::Client,
    ec2: aws_sdk_ec2::Client,
    workers: usize,
}

/// Byte ranges of `file` that hold data, by `SEEK_DATA`/`SEEK_HOLE`; the
/// whole file where the filesystem cannot tell.
pub fn data_ranges(file: &File, size: u64) -> Vec<(u64, u64)> {
    let fd = file.as_raw_fd();
    let mut ranges = Vec::new();
    let mut offset: i64 = 0;
    while (offset as u64) < size {
        // SAFETY: lseek on an fd we own; it only moves the file offset.
        let start = unsafe { libc::lseek(fd, offset, libc::SEEK_DATA) };
        if start < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENXIO) {
                break; // no data after offset
            }
            return vec![(0, size)];
        }
        let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
        let end = if end < 0 { size as i64 } else { end };
        ranges.push((start as u64, (end as u64).min(size)));
        offset = end;
    }
    ranges
}

/// Indices of the blocks that may hold data (every block when `all`).
pub fn candidate_blocks(file: &File, size: u64, all: bool) -> Vec<u64> {
    let count = size.div_ceil(BLOCK_SIZE);
    if all {
        return (0..count).collect();
    }
    let mut blocks = Vec::new();
    for (start, end) in data_ranges(file, size) {
        let first = start / BLOCK_SIZE;
        let last = (end - 1) / BLOCK_SIZE;
        for index in first..=last {
            if blocks.last() != Some(&index) {
                blocks.push(index);
            }
        }
    }
    blocks
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Read one block (zero-padded past the end of the file).
pub fn read_block(file: &File, index: u64, size: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; BLOCK_SIZE as usize];
    let offset = index * BLOCK_SIZE;
    let len = (size - offset).min(BLOCK_SIZE) as usize;
    file.read_exact_at(&mut buf[..len], offset)?;
    Ok(buf)
}

impl SnapshotUploader {
    pub fn new(aws: &aws::Aws, workers: usize) -> Self {
        SnapshotUploader { ebs: aws.ebs(), ec2: aws.ec2(), workers: workers.max(1) }
    }

    /// Upload `image` into a new snapshot. On any failure, or when `cancel`
    /// resolves (Ctrl-C), the incomplete snapshot is deleted before returning.
    pub async fn upload(
        &self,
        image: &Path,
        spec: &SnapshotSpec,
        bar: &ProgressBar,
        cancel: impl Future<Output = ()>,
    ) -> Result<Uploaded> {
        let file = Arc::new(File::open(image).with_context(|| format!("cannot open the image {}", image.display()))?);
        let size = file.metadata()?.len();
        anyhow::ensure!(size > 0, "the image {} is empty", image.display());
        let volume_size_gib = size.div_ceil(GIB) as i64;
        let encrypted = spec.kms_key.is_some();

        let mut start = self
            .ebs
            .start_snapshot()
            .volume_size(volume_size_gib)
            .description(&spec.description)
            .client_token(&spec.client_token)
            .timeout(60)
            .set_tags(Some(spec.tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()));
        if let Some(key) = &spec.kms_key {
            start = start.encrypted(true).kms_key_arn(key);
        }
        let started =
            start.send().await.map_err(|e| aws::error("EBS StartSnapshot", image.to_str().unwrap_or(""), e))?;
        let snapshot_id = started.snapshot_id.context("StartSnapshot returned no snapshot id")?;
        if let Some(block_size) = started.block_size {
            if block_size as u64 != BLOCK_SIZE {
                self.delete(&snapshot_id).await;
                bail!("EBS answered block size {block_size} for {snapshot_id}, expected {BLOCK_SIZE}");
            }
        }
        tracing::info!(%snapshot_id, volume_size_gib, "snapshot started");

        let work = self.send_blocks(&snapshot_id, file, size, encrypted, bar);
        let result = tokio::select! {
            r = work => r,
            _ = cancel => Err(anyhow::anyhow!("interrupted")),
        };
        match result {
            Ok((blocks_total, blocks_sent)) => Ok(Uploaded {
                snapshot_id,
                blocks_total,
                blocks_sent,
                bytes_sent: blocks_sent * BLOCK_SIZE,
                volume_size_gib,
            }),
            Err(err) => {
                self.delete(&snapshot_id).await;
                Err(err.context(format!("snapshot upload failed; the incomplete snapshot {snapshot_id} was deleted")))
            }
        }
    }

    async fn send_blocks(
        &self,
        snapshot_id: &str,
        file: Arc<File>,
        size: u64,
        encrypted: bool,
        bar: &ProgressBar,
    ) -> Result<(u64, u64)> {
        let blocks_total = size.div_ceil(BLOCK_SIZE);
        let candidates = {
            let file = file.clone();
            tokio::task::spawn_blocking(move || candidate_blocks(&file, size, encrypted)).await?
        };
        // Holes are done before they start.
        bar.inc((blocks_total - candidates.len() as u64) * BLOCK_SIZE);
        let sent: Vec<(u64, [u8; 32])> = futures::stream::iter(candidates)
            .map(|index| {
                let file = file.clone();
                async move {
                    let block = tokio::task::spawn_blocking(move || read_block(&file, index, size)).await??;
                    if !encrypted && block.iter().all(|&b| b == 0) {
                        bar.inc(BLOCK_SIZE);
                        return anyhow::Ok(None);
                    }
                    let digest: [u8; 32] = Sha256::digest(&block).into();
                    self.ebs
                        .put_snapshot_block()
                        .snapshot_id(snapshot_id)
                        .block_index(index as i32)
                        .data_length(BLOCK_SIZE as i32)
                        .checksum(b64(&digest))
                        .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
                        .block_data(ByteStream::from(block))
                        .send()
                        .await
                        .map_err(|e| aws::error("EBS PutSnapshotBlock", &format!("{snapshot_id} block {index}"), e))?;
                    bar.inc(BLOCK_SIZE);
                    Ok(Some((index, digest)))
                }
            })
            .buffer_unordered(self.workers)
            .try_filter_map(|x| async move { Ok(x) })
            .try_collect()
            .await?;

        let mut sorted = sent;
        sorted.sort_by_key(|(index, _)| *index);
        let mut aggregate = Sha256::new();
        for (_, digest) in &sorted {
            aggregate.update(digest);
        }
        let blocks_sent = sorted.len() as u64;
        self.ebs
            .complete_snapshot()
            .snapshot_id(snapshot_id)
            .changed_blocks_count(blocks_sent as i32)
            .checksum(b64(&aggregate.finalize()))
            .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
            .checksum_aggregation_method(ChecksumAggregationMethod::ChecksumAggregationLinear)
            .send()
            .await
            .map_err(|e| aws::error("EBS CompleteSnapshot", snapshot_id, e))?;
        Ok((blocks_total, blocks_sent))
    }

    async fn delete(&self, snapshot_id: &str) {
        if let Err(err) = self.ec2.delete_snapshot().snapshot_id(snapshot_id).send().await {
            tracing::error!(
                "could not delete the incomplete snapshot {snapshot_id}: {}",
                aws::error("EC2 DeleteSnapshot", snapshot_id, err)
            );
        }
    }
}

/// Follows a snapshot until EC2 reports it `completed`.
pub struct SnapshotWaiter {
    ec2: aws_sdk_ec2::Client,
    pub poll: Duration,
    pub timeout: Duration,
}

impl SnapshotWaiter {
    pub fn new(aws: &aws::Aws) -> Self {
        SnapshotWaiter { ec2: aws.ec2(), poll: Duration::from_secs(2), timeout: Duration::from_secs(3600) }
    }

    pub async fn wait_completed(&self, snapshot_id: &str) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let out = self
                .ec2
                .describe_snapshots()
                .snapshot_ids(snapshot_id)
                .send()
                .await
                .map_err(|e| aws::error("EC2 DescribeSnapshots", snapshot_id, e))?;
            let snapshot = out.snapshots().first().with_context(|| format!("snapshot {snapshot_id} disappeared"))?;
            match snapshot.state().map(|s| s.as_str()) {
                Some("completed") => return Ok(()),
                Some("error") => bail!(
                    "snapshot {snapshot_id} failed: {}",
                    snapshot.state_message().unwrap_or("EBS rejected the snapshot (checksum or block count mismatch)")
                ),
                state => tracing::debug!(?state, progress = snapshot.progress(), "waiting for {snapshot_id}"),
            }
            if Instant::now() > deadline {
                bail!("snapshot {snapshot_id} not completed after {:?}", self.timeout);
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn holes_are_not_candidates_and_encryption_takes_every_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        let file = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).unwrap();
        file.set_len(16 * BLOCK_SIZE).unwrap();
        file.write_all_at(b"x", 5 * BLOCK_SIZE + 17).unwrap();
        let blocks = candidate_blocks(&file, 16 * BLOCK_SIZE, false);
        // Filesystems report data at their own granularity; block 5 is in,
        // and far fewer than all 16 blocks are.
        assert!(blocks.contains(&5) && blocks.len() < 16, "{blocks:?}");
        assert_eq!(candidate_blocks(&file, 16 * BLOCK_SIZE, true), (0..16).collect::<Vec<_>>());
    }

    #[test]
    fn the_last_block_is_zero_padded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::write(&path, vec![1u8; BLOCK_SIZE as usize + 10]).unwrap();
        let file = File::open(&path).unwrap();
        let block = read_block(&file, 1, BLOCK_SIZE + 10).unwrap();
        assert_eq!(block.len(), BLOCK_SIZE as usize);
        assert!(block[..10].iter().all(|&b| b == 1) && block[10..].iter().all(|&b| b == 0));
    }
}
