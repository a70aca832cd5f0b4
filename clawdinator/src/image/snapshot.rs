//! The EBS direct upload engine: an uploader that writes a raw disk image
//! into a new EBS snapshot block by block, and a waiter that follows the
//! snapshot to `completed`. Shaped after coldsnap's library: the CLI is a
//! thin layer over these two types.
//!
//! One reader thread walks the image in order, hashing every byte (holes as
//! zeros) so the image's identity is checked on what was actually read, and
//! hands the blocks that hold data to `workers` concurrent uploads. It starts
//! before StartSnapshot is sent, so the first blocks are read while that
//! round trip is in flight, and CompleteSnapshot follows the last block.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types::{ChecksumAggregationMethod, ChecksumAlgorithm, SseType, Tag};
use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::aws;
use crate::cancel::{Cancel, Poll, Wait, INTERRUPTED};
use crate::output::Output;

/// EBS snapshots are written in blocks of 512 KiB.
pub const BLOCK_SIZE: u64 = 524_288;
const GIB: u64 = 1 << 30;
static ZERO_BLOCK: [u8; BLOCK_SIZE as usize] = [0; BLOCK_SIZE as usize];

/// What the new snapshot should be.
#[derive(Debug, Clone)]
pub struct SnapshotSpec {
    pub description: String,
    pub tags: Vec<(String, String)>,
    /// Encrypt with this KMS key. Whether the snapshot is encrypted is what
    /// StartSnapshot answers (EBS encryption by default encrypts it anyway).
    pub kms_key: Option<String>,
    /// The image's SHA-256 as `image build` recorded it: the bytes read must
    /// hash to it, or the snapshot is not completed.
    pub sha256: String,
    /// The image's block digest ([`block_digest`]), when recorded: then it is
    /// checked instead, and holes are not hashed at all.
    pub block_sha256: Option<String>,
    /// The disk's size (`logicalBytes`); the volume is this, rounded up to GiB.
    pub logical_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub snapshot_id: String,
    pub blocks_total: u64,
    pub blocks_sent: u64,
    pub bytes_sent: u64,
    pub volume_size_gib: i64,
    /// StartSnapshot said the snapshot is encrypted: every block was sent.
    pub encrypted: bool,
}

pub struct SnapshotUploader {
    ebs: aws_sdk_ebs::Client,
    ec2: aws_sdk_ec2::Client,
    workers: usize,
}

/// A client token for one call: the SDK's retries of that call reuse it, a
/// later run never does (AWS would answer with the earlier, possibly deleted
/// or failed, result). Idempotency across runs comes from tags instead.
pub fn client_token() -> String {
    let mut bytes = [0u8; 16];
    // 16 bytes from the kernel's pool never block and are never cut short.
    let filled = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty())
        .unwrap_or_else(|e| panic!("getrandom failed: {e}"));
    assert_eq!(filled, 16, "getrandom gave {filled} of 16 bytes");
    hex::encode(bytes)
}

/// Byte ranges of `file` that hold data, by `SEEK_DATA`/`SEEK_HOLE`; the
/// whole file where the filesystem cannot tell.
pub fn data_ranges(file: &File, size: u64) -> Vec<(u64, u64)> {
    use rustix::fs::{seek, SeekFrom};
    let mut ranges = Vec::new();
    let mut offset = 0;
    while offset < size {
        let start = match seek(file, SeekFrom::Data(offset)) {
            Ok(start) => start,
            Err(rustix::io::Errno::NXIO) => break, // no data after offset
            Err(_) => return vec![(0, size)],
        };
        let end = seek(file, SeekFrom::Hole(start)).unwrap_or(size).min(size);
        ranges.push((start, end));
        offset = end;
    }
    ranges
}

/// Which blocks may hold data: `true` at the index of each (every block when `all`).
pub fn candidate_blocks(file: &File, size: u64, all: bool) -> Vec<bool> {
    let count = size.div_ceil(BLOCK_SIZE) as usize;
    if all {
        return vec![true; count];
    }
    let mut candidates = vec![false; count];
    for (start, end) in data_ranges(file, size) {
        for index in start / BLOCK_SIZE..=(end - 1) / BLOCK_SIZE {
            candidates[index as usize] = true;
        }
    }
    candidates
}

/// Walk the image's blocks in order: `visit(index, Some(block))` for each
/// block an upload sends (one holding data, or every one when `all`),
/// `visit(index, None)` for the rest: holes (never read) and zero blocks.
/// The uploader, its dry run and the block digest all walk this way.
fn walk_blocks(
    file: &File,
    size: u64,
    all: bool,
    mut visit: impl FnMut(u64, Option<Vec<u8>>) -> Result<()>,
) -> Result<()> {
    for (index, candidate) in candidate_blocks(file, size, all).into_iter().enumerate() {
        let index = index as u64;
        let block = if candidate { Some(read_block(file, index, size)?) } else { None };
        visit(index, block.filter(|b| all || !is_zero(b)))?;
    }
    Ok(())
}

/// The blocks an upload sends: those holding data, every one when encrypted.
pub fn blocks_to_send(file: &File, size: u64, encrypted: bool) -> Result<u64> {
    let mut sent = 0;
    walk_blocks(file, size, encrypted, |_, block| {
        sent += u64::from(block.is_some());
        Ok(())
    })?;
    Ok(sent)
}

fn is_zero(block: &[u8]) -> bool {
    block == &ZERO_BLOCK[..block.len()]
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

/// The SHA-256 of an all-zero block: what a hole or a zero block contributes.
fn zero_block_digest() -> [u8; 32] {
    Sha256::digest(ZERO_BLOCK).into()
}

/// SHA-256 (hex) over the SHA-256 of each 512 KiB block of `path`, in
/// order, the last one zero-padded. Holes and zero blocks contribute the
/// constant digest of a zero block, unread and unhashed.
pub fn block_digest(path: &Path) -> Result<String> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata()?.len();
    let zero = zero_block_digest();
    let mut aggregate = Sha256::new();
    walk_blocks(&file, size, false, |_, block| {
        match block {
            Some(block) => aggregate.update(Sha256::digest(&block)),
            None => aggregate.update(zero),
        }
        Ok(())
    })?;
    Ok(hex::encode(aggregate.finalize()))
}

/// The block digest of an upload: each sent block's digest, the zero
/// block's for every block not sent (it held zeros).
fn aggregate_all(blocks_total: u64, sent: &[(u64, [u8; 32])]) -> String {
    let zero = zero_block_digest();
    let mut sent = sent.iter().peekable();
    let mut aggregate = Sha256::new();
    for index in 0..blocks_total {
        match sent.next_if(|(i, _)| *i == index) {
            Some((_, digest)) => aggregate.update(digest),
            None => aggregate.update(zero),
        }
    }
    hex::encode(aggregate.finalize())
}

/// Walk the image in order and send the blocks to upload. With `hash`, every
/// byte is hashed on the way (holes as zeros, never read) and the SHA-256
/// (hex) of what was read is returned.
fn read_blocks(
    file: &File,
    size: u64,
    encrypted: bool,
    hash: bool,
    to_upload: mpsc::Sender<(u64, Vec<u8>)>,
    bar: &ProgressBar,
) -> Result<Option<String>> {
    let mut hasher = hash.then(Sha256::new);
    walk_blocks(file, size, encrypted, |index, block| {
        let len = (size - index * BLOCK_SIZE).min(BLOCK_SIZE) as usize;
        let Some(block) = block else {
            // A hole or a zero block: its bytes are zeros.
            if let Some(h) = hasher.as_mut() {
                h.update(&ZERO_BLOCK[..len]);
            }
            bar.inc(BLOCK_SIZE);
            return Ok(());
        };
        if let Some(h) = hasher.as_mut() {
            h.update(&block[..len]);
        }
        if to_upload.blocking_send((index, block)).is_err() {
            bail!("the upload stopped"); // the uploads failed; their error is the one reported
        }
        Ok(())
    })?;
    Ok(hasher.map(|h| hex::encode(h.finalize())))
}

/// Blocks read ahead of the uploads, waiting for a free worker (or for
/// StartSnapshot's answer): 32 MiB at most, whatever `--workers` is.
const QUEUE_BLOCKS: usize = 64;

/// The image being read (and hashed) on a thread of its own, in order, its
/// blocks to send waiting in a bounded queue. It starts before the snapshot
/// does, so reading overlaps StartSnapshot's round trip.
struct Reading {
    blocks: mpsc::Receiver<(u64, Vec<u8>)>,
    /// The SHA-256 of everything read, when the whole file is hashed.
    done: tokio::task::JoinHandle<Result<Option<String>>>,
    /// Every block is sent (encrypted snapshot), not just those holding data.
    all: bool,
}

impl Reading {
    fn start(file: Arc<File>, spec: &SnapshotSpec, all: bool, bar: &ProgressBar) -> Reading {
        let (tx, blocks) = mpsc::channel(QUEUE_BLOCKS);
        // The whole file is hashed only when there is no block digest to check.
        let (size, hash, bar) = (spec.logical_bytes, spec.block_sha256.is_none(), bar.clone());
        let started = std::time::Instant::now();
        let done = tokio::task::spawn_blocking(move || {
            let digest = read_blocks(&file, size, all, hash, tx, &bar);
            tracing::info!(secs = started.elapsed().as_secs_f64(), "image read");
            digest
        });
        Reading { blocks, done, all }
    }

    /// Read again from the start, sending every block or not as `all` says
    /// (StartSnapshot answered otherwise than the first reading assumed).
    async fn restart(self, file: Arc<File>, spec: &SnapshotSpec, all: bool, bar: &ProgressBar) -> Reading {
        drop(self.blocks); // the reader stops at its next block
        let _ = self.done.await;
        bar.set_position(0);
        Reading::start(file, spec, all, bar)
    }
}

/// The image, checked against what image.json says of it.
fn open_image(image: &Path, spec: &SnapshotSpec) -> Result<Arc<File>> {
    let file = File::open(image).with_context(|| format!("cannot open the image {}", image.display()))?;
    let (size, on_disk) = (spec.logical_bytes, file.metadata()?.len());
    ensure!(size > 0, "the image {} is empty", image.display());
    ensure!(on_disk == size, "the image {} is {on_disk} bytes, not logicalBytes {size}: rebuild it", image.display());
    Ok(Arc::new(file))
}

/// Compare what was read with what `image build` recorded.
fn check_digest(spec: &SnapshotSpec, sent: &[(u64, [u8; 32])], file_digest: Option<String>) -> Result<()> {
    let (what, got, want) = match (&spec.block_sha256, file_digest) {
        (Some(want), _) => ("block digest", aggregate_all(spec.logical_bytes.div_ceil(BLOCK_SIZE), sent), want),
        (None, Some(got)) => ("SHA-256", got, &spec.sha256),
        (None, None) => unreachable!("the file is hashed when there is no block digest"),
    };
    ensure!(
        got == *want,
        "the image read back with {what} {got}, but image.json says {want}: it changed after `image build`; rebuild it (`cargo xtask image build`)"
    );
    Ok(())
}

impl SnapshotUploader {
    pub fn new(aws: &aws::Aws, workers: usize) -> Self {
        SnapshotUploader { ebs: aws.ebs(), ec2: aws.ec2(), workers: workers.max(1) }
    }

    /// Upload `image` into a new snapshot. On any failure, or when `cancel`
    /// fires, the incomplete snapshot is deleted before returning, and the
    /// error says whether that deletion worked.
    pub async fn upload(
        &self,
        image: &Path,
        spec: &SnapshotSpec,
        bar: &ProgressBar,
        cancel: &Cancel,
    ) -> Result<Uploaded> {
        let file = open_image(image, spec)?;
        let volume_size_gib = spec.logical_bytes.div_ceil(GIB) as i64;
        // Reading starts now; an unencrypted snapshot is the likely answer
        // unless a key is asked for (and is checked against the answer).
        let reading = Reading::start(file.clone(), spec, spec.kms_key.is_some(), bar);
        // Not cut short by a cancellation (it is one call, bounded by the SDK's
        // timeouts): an interrupted StartSnapshot could leave a snapshot whose
        // id we never learn, so nobody would delete it.
        let (snapshot_id, encrypted) = self.start(image, spec, volume_size_gib).await?;
        if cancel.is_cancelled() {
            let err = anyhow::anyhow!("{INTERRUPTED} while starting the snapshot");
            return Err(self.discard(&snapshot_id, err).await);
        }
        tracing::info!(%snapshot_id, volume_size_gib, encrypted, "snapshot started");
        let reading = match reading.all == encrypted {
            true => reading,
            false => reading.restart(file, spec, encrypted, bar).await,
        };
        let work = self.send_blocks(&snapshot_id, reading, spec, bar);
        match cancel.guard("uploading the snapshot", work).await {
            Ok(blocks_sent) => Ok(Uploaded {
                snapshot_id,
                blocks_total: spec.logical_bytes.div_ceil(BLOCK_SIZE),
                blocks_sent,
                bytes_sent: blocks_sent * BLOCK_SIZE,
                volume_size_gib,
                encrypted,
            }),
            Err(err) => Err(self.discard(&snapshot_id, err).await),
        }
    }

    /// StartSnapshot; returns the id and whether AWS encrypts it.
    async fn start(&self, image: &Path, spec: &SnapshotSpec, volume_size_gib: i64) -> Result<(String, bool)> {
        let mut start = self
            .ebs
            .start_snapshot()
            .volume_size(volume_size_gib)
            .description(&spec.description)
            .client_token(client_token())
            .timeout(60)
            .set_tags(Some(spec.tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()));
        if let Some(key) = &spec.kms_key {
            start = start.encrypted(true).kms_key_arn(key);
        }
        let started =
            start.send().await.map_err(|e| aws::error("EBS StartSnapshot", &image.display().to_string(), e))?;
        let snapshot_id = started.snapshot_id.clone().context("StartSnapshot returned no snapshot id")?;
        if let Some(block_size) = started.block_size.filter(|b| *b as u64 != BLOCK_SIZE) {
            let err = anyhow::anyhow!("EBS answered block size {block_size} for {snapshot_id}, expected {BLOCK_SIZE}");
            return Err(self.discard(&snapshot_id, err).await);
        }
        // Absent blocks of an encrypted snapshot do not read back as zeros:
        // what AWS answered decides, not what was asked.
        let encrypted =
            started.kms_key_arn.is_some() || matches!(started.sse_type, Some(SseType::SseEbs) | Some(SseType::SseKms));
        Ok((snapshot_id, encrypted))
    }

    /// Send the blocks as they are read, `workers` in flight; check the
    /// digest and complete the snapshot as soon as the last one is in.
    /// Returns how many blocks were sent.
    async fn send_blocks(
        &self,
        snapshot_id: &str,
        reading: Reading,
        spec: &SnapshotSpec,
        bar: &ProgressBar,
    ) -> Result<u64> {
        let started = std::time::Instant::now();
        let blocks = futures::stream::unfold(reading.blocks, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
        let uploads = blocks
            .map(|(index, block)| self.put_block(snapshot_id, index, block, bar))
            .buffer_unordered(self.workers)
            .try_collect::<Vec<(u64, [u8; 32])>>();
        let (sent, digest) = tokio::join!(uploads, reading.done);
        tracing::info!(secs = started.elapsed().as_secs_f64(), "blocks sent");
        let mut sent = sent?;
        let digest = digest??;
        sent.sort_by_key(|(index, _)| *index);
        check_digest(spec, &sent, digest)?;
        self.complete(snapshot_id, &sent).await?;
        Ok(sent.len() as u64)
    }

    /// One block. The SDK's retry layer retries this call alone (a transient
    /// failure costs one block, not the upload).
    async fn put_block(
        &self,
        snapshot_id: &str,
        index: u64,
        block: Vec<u8>,
        bar: &ProgressBar,
    ) -> Result<(u64, [u8; 32])> {
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
        Ok((index, digest))
    }

    /// CompleteSnapshot with the block count and the linear aggregate checksum.
    async fn complete(&self, snapshot_id: &str, sent: &[(u64, [u8; 32])]) -> Result<()> {
        let mut aggregate = Sha256::new();
        for (_, digest) in sent {
            aggregate.update(digest);
        }
        self.ebs
            .complete_snapshot()
            .snapshot_id(snapshot_id)
            .changed_blocks_count(sent.len() as i32)
            .checksum(b64(&aggregate.finalize()))
            .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
            .checksum_aggregation_method(ChecksumAggregationMethod::ChecksumAggregationLinear)
            .send()
            .await
            .map_err(|e| aws::error("EBS CompleteSnapshot", snapshot_id, e))?;
        Ok(())
    }

    /// Delete a snapshot this run started and will not finish; the returned
    /// error is `err` with what happened to the snapshot, as it happened.
    pub async fn discard(&self, snapshot_id: &str, err: anyhow::Error) -> anyhow::Error {
        discard_snapshot(&self.ec2, snapshot_id, err).await
    }
}

/// Delete `snapshot_id` after `err`; say truthfully whether that worked.
pub async fn discard_snapshot(ec2: &aws_sdk_ec2::Client, snapshot_id: &str, err: anyhow::Error) -> anyhow::Error {
    match delete_snapshot(ec2, snapshot_id).await {
        Ok(()) => err.context(format!("the incomplete snapshot {snapshot_id} was deleted")),
        Err(delete_err) => err.context(format!(
            "the incomplete snapshot {snapshot_id} could NOT be deleted ({delete_err:#}); delete it with `aws ec2 delete-snapshot --snapshot-id {snapshot_id}`"
        )),
    }
}

/// Attempts of [`delete_snapshot`], a second apart and doubling.
const DELETE_ATTEMPTS: u32 = 3;

/// Delete `snapshot_id`, one attempt at a time (not the SDK's retry), so
/// that `InvalidSnapshot.NotFound` can be read: after an attempt whose
/// answer was lost it is that attempt's delete, done; on the first, EC2
/// (eventually consistent) may not list a just-started snapshot yet, so it
/// is asked again, and still not found is an error naming it, never
/// "deleted".
pub async fn delete_snapshot(ec2: &aws_sdk_ec2::Client, snapshot_id: &str) -> Result<()> {
    let once =
        aws_sdk_ec2::config::Builder::default().retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled());
    let mut answer_lost = false;
    for attempt in 1..=DELETE_ATTEMPTS {
        let sent =
            ec2.delete_snapshot().snapshot_id(snapshot_id).customize().config_override(once.clone()).send().await;
        let err = match sent {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let not_found = aws::error_code(&err) == Some("InvalidSnapshot.NotFound");
        if not_found && answer_lost {
            return Ok(());
        }
        let lost = aws::may_have_been_carried_out(&err);
        if attempt == DELETE_ATTEMPTS || !(not_found || lost || aws::error_code(&err) == Some("RequestLimitExceeded")) {
            return Err(aws::error("EC2 DeleteSnapshot", snapshot_id, err));
        }
        answer_lost |= lost;
        tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
    }
    unreachable!("the last attempt returns")
}

/// Follows a snapshot until EC2 reports it `completed`.
pub struct SnapshotWaiter {
    ec2: aws_sdk_ec2::Client,
    /// Between two DescribeSnapshots calls.
    pub poll: Duration,
    /// The documented upper bound of the wait.
    pub timeout: Duration,
}

impl SnapshotWaiter {
    pub fn new(aws: &aws::Aws) -> Self {
        SnapshotWaiter { ec2: aws.ec2(), poll: Duration::from_millis(500), timeout: Duration::from_secs(3600) }
    }

    pub async fn wait_completed(&self, snapshot_id: &str, cancel: &Cancel, out: &Output) -> Result<()> {
        let wait = Wait {
            what: format!("snapshot {snapshot_id}"),
            every: self.poll,
            limit: self.timeout,
            raise: "EBS is still completing it; publish again later to register it",
            cancel,
            out,
        };
        wait.until(|| async {
            let out = self
                .ec2
                .describe_snapshots()
                .snapshot_ids(snapshot_id)
                .send()
                .await
                .map_err(|e| aws::error("EC2 DescribeSnapshots", snapshot_id, e))?;
            let snapshot = out.snapshots().first().with_context(|| format!("snapshot {snapshot_id} disappeared"))?;
            match snapshot.state().map(|s| s.as_str()) {
                Some("completed") => Ok(Poll::Done(())),
                Some("error") => bail!(
                    "snapshot {snapshot_id} failed: {}",
                    snapshot.state_message().unwrap_or("EBS rejected the snapshot (checksum or block count mismatch)")
                ),
                state => {
                    Ok(Poll::Pending(format!("{} {}", state.unwrap_or("unknown"), snapshot.progress().unwrap_or(""))))
                }
            }
        })
        .await
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
        assert!(blocks[5] && blocks.iter().filter(|b| **b).count() < 16, "{blocks:?}");
        assert!(candidate_blocks(&file, 16 * BLOCK_SIZE, true).iter().all(|b| *b));
        assert_eq!(blocks_to_send(&file, 16 * BLOCK_SIZE, false).unwrap(), 1);
        assert_eq!(blocks_to_send(&file, 16 * BLOCK_SIZE, true).unwrap(), 16);
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

    #[test]
    fn reading_hashes_holes_as_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        let file = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).unwrap();
        let size = 3 * BLOCK_SIZE + 100;
        file.set_len(size).unwrap();
        file.write_all_at(b"data", 2 * BLOCK_SIZE).unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let digest = read_blocks(&file, size, false, true, tx, &ProgressBar::hidden()).unwrap();
        assert_eq!(digest.unwrap(), crate::digest::sha256_file(&path).unwrap().0);
        assert_eq!(rx.try_recv().unwrap().0, 2);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn client_tokens_differ_per_call() {
        let (a, b) = (client_token(), client_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
    }
}

#[cfg(test)]
mod block_digest_tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// Holes, written zeros and a partial last block: the digest is the
    /// same as hashing every zero-padded block, and equals what an upload
    /// of the same file aggregates.
    #[test]
    fn the_block_digest_skips_holes_and_matches_the_upload_aggregate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        let file = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).unwrap();
        let size = 5 * BLOCK_SIZE + 1000;
        file.set_len(size).unwrap();
        file.write_all_at(b"data", BLOCK_SIZE + 3).unwrap();
        file.write_all_at(&vec![0u8; BLOCK_SIZE as usize], 3 * BLOCK_SIZE).unwrap();
        file.write_all_at(b"tail", 5 * BLOCK_SIZE + 10).unwrap();
        let mut slow = Sha256::new();
        for index in 0..6 {
            slow.update(Sha256::digest(read_block(&file, index, size).unwrap()));
        }
        assert_eq!(block_digest(&path).unwrap(), hex::encode(slow.finalize()));
        let sent: Vec<(u64, [u8; 32])> =
            [1, 5].iter().map(|&i| (i, Sha256::digest(read_block(&file, i, size).unwrap()).into())).collect();
        assert_eq!(aggregate_all(6, &sent), block_digest(&path).unwrap());
    }
}
