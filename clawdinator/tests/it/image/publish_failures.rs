//! `image publish` when things go wrong: failures injected through the
//! emulator shim's test-only switches, re-runs after them, cancellation in
//! every wait, cleanup that says what it did, and the image's identity
//! (format, digest, encryption).

use std::path::PathBuf;
use std::time::Duration;

use clawdinator::aws::{Aws, Settings};
use clawdinator::cancel::Cancel;
use clawdinator::image::ami::{self, PruneOptions};
use clawdinator::image::publish;
use clawdinator::image::snapshot::{delete_snapshot, discard_snapshot, BLOCK_SIZE};
use clawdinator::image::{PublishOptions, Via};
use clawdinator::output::Output;
use serde_json::json;
use testkit::env::{env, Env};
use testkit::fixtures::sample_image;
use testkit::proxy::{Fault, Proxy, ProxyConfig};

const OUT: Output = Output { json: true };
const MIB: u64 = 1 << 20;

/// 6 MiB with data in blocks 2-3 only.
fn sample(env: &Env, name: &str, seed: u64) -> (PathBuf, PathBuf) {
    sample_image(&env.path(name), &[(2 * BLOCK_SIZE, 2 * BLOCK_SIZE)], seed).unwrap()
}

fn opts(json: PathBuf) -> PublishOptions {
    let mut opts = PublishOptions::new(json);
    opts.poll = Duration::from_millis(50);
    opts.import_poll = Duration::from_millis(50);
    opts
}

async fn publish(env: &Env, opts: &PublishOptions) -> anyhow::Result<publish::PublishReport> {
    publish::publish(&env.aws, opts, &OUT, &Cancel::new()).await
}

/// Count CompleteSnapshot calls with a rule that never fires; resolves once
/// one was made (the publish is then in its snapshot wait), or panics after 60 s.
async fn until_completed(env: &Env) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while env.emulator.faults().unwrap().as_array().unwrap().iter().all(|r| r["seen"] == 0) {
        assert!(std::time::Instant::now() < deadline, "CompleteSnapshot was never called");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn snapshots(env: &Env) -> Vec<(String, String)> {
    let out = env.aws.ec2().describe_snapshots().owner_ids("self").send().await.unwrap();
    out.snapshots()
        .iter()
        .map(|s| (s.snapshot_id().unwrap().to_string(), s.state().map(|s| s.as_str().to_string()).unwrap_or_default()))
        .collect()
}

async fn images(env: &Env) -> Vec<String> {
    let out = env.aws.ec2().describe_images().owners("self").send().await.unwrap();
    out.images().iter().map(|i| i.image_id().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn ebs_direct_takes_raw_images_only() {
    let env = env().await;
    let (_, json) = sample(&env, "img", 1);
    let text = std::fs::read_to_string(&json).unwrap().replace("\"format\": \"raw\"", "\"format\": \"vhd\"");
    std::fs::write(&json, text).unwrap();
    env.emulator.start_recording().unwrap();
    let err = publish(&env, &opts(json)).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("vhd") && text.contains("--via s3-import"), "{text}");
    assert!(env.emulator.recorded_requests().unwrap().is_empty(), "AWS was called");
}

/// The file changed after image-build (same size): EBS direct refuses to
/// complete the snapshot and deletes it, whether image.json records a block
/// digest (checked without hashing holes) or only the file's SHA-256.
#[tokio::test(flavor = "multi_thread")]
async fn a_changed_image_is_not_completed_ebs_direct() {
    let env = env().await;
    for (n, with_block_digest) in [(2, true), (22, false)] {
        let (image, json) = sample(&env, &format!("img{n}"), n);
        let manifest = clawdinator::image::ImageManifest::load(&json).unwrap();
        let mut value: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        if !with_block_digest {
            value.as_object_mut().unwrap().remove("blockSha256");
            std::fs::write(&json, serde_json::to_vec(&value).unwrap()).unwrap();
        }
        use std::os::unix::fs::FileExt;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&image)
            .unwrap()
            .write_all_at(b"tampered", 2 * BLOCK_SIZE)
            .unwrap();
        let (want, got) = match with_block_digest {
            true => (manifest.block_sha256.unwrap(), clawdinator::image::snapshot::block_digest(&image).unwrap()),
            false => (manifest.sha256, clawdinator::digest::sha256_file(&image).unwrap().0),
        };
        let err = publish(&env, &opts(json)).await.unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains(&want) && text.contains(&got) && text.contains("rebuild"), "{text}");
        assert!(text.contains(if with_block_digest { "block digest" } else { "SHA-256" }), "{text}");
        assert!(text.contains("was deleted"), "{text}");
        assert!(snapshots(&env).await.is_empty());
        assert!(images(&env).await.is_empty());
    }
}

/// The same on the S3 path: the multipart upload is aborted, never completed.
#[tokio::test(flavor = "multi_thread")]
async fn a_changed_image_is_not_completed_s3() {
    let env = env().await;
    env.vmimport_role(&env.bucket).await;
    let (image, json) = sample(&env, "img", 3);
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new().write(true).open(&image).unwrap().write_all_at(b"tampered", 5 * MIB).unwrap();
    let mut o = opts(json);
    (o.via, o.bucket) = (Via::S3Import, Some(env.bucket.clone()));
    let err = publish(&env, &o).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("rebuild") && text.contains("the multipart upload was aborted"), "{text}");
    assert!(env.keys().await.is_empty());
    let uploads = env.aws.s3().list_multipart_uploads().bucket(&env.bucket).send().await.unwrap();
    assert!(uploads.uploads().is_empty());
}

/// A publish that fails midway (every attempt of CompleteSnapshot fails),
/// then a re-run: exactly one completed snapshot and one AMI.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_publish_then_a_rerun_leaves_one_snapshot_and_one_ami() {
    let env = env().await;
    let (_, json) = sample(&env, "img", 4);
    env.emulator.inject(json!({"operation": "CompleteSnapshot", "times": 3})).unwrap();
    let err = publish(&env, &opts(json.clone())).await.unwrap_err();
    assert!(format!("{err:#}").contains("was deleted"), "{err:#}");
    assert!(snapshots(&env).await.is_empty());

    let report = publish(&env, &opts(json)).await.unwrap();
    assert!(!report.already_published);
    let snaps = snapshots(&env).await;
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0].1, "completed");
    assert_eq!(images(&env).await, std::slice::from_ref(&report.ami_id));
}

#[tokio::test(flavor = "multi_thread")]
async fn cleanup_that_fails_is_reported_with_the_snapshot_id() {
    let env = env().await;
    let (_, json) = sample(&env, "img", 5);
    env.emulator
        .inject(json!([{"operation": "CompleteSnapshot", "times": 3}, {"operation": "DeleteSnapshot", "times": 3}]))
        .unwrap();
    let err = publish(&env, &opts(json)).await.unwrap_err();
    let text = format!("{err:#}");
    let left = snapshots(&env).await;
    assert_eq!(left.len(), 1);
    assert!(text.contains(&format!("{} could NOT be deleted", left[0].0)), "{text}");
    assert!(!text.contains("was deleted"), "{text}");
}

/// A delete whose response was lost: the next attempt answers
/// `InvalidSnapshot.NotFound`, which then means the snapshot is gone, so the
/// cleanup says it was deleted (and prune would not list it as a failure);
/// a snapshot that was never there is not reported deleted.
#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_delete_whose_response_was_lost_counts_as_deleted() {
    let env = env().await;
    let ec2 = env.aws.ec2();
    let volume = ec2.create_volume().availability_zone("us-east-1a").size(1).send().await.unwrap();
    let snap = ec2.create_snapshot().volume_id(volume.volume_id().unwrap()).send().await.unwrap();
    let id = snap.snapshot_id().unwrap().to_string();
    let config = ProxyConfig { faults: vec![(Fault::DropAfterForward, 1.0)], ..ProxyConfig::default() };
    let proxy = Proxy::start(&env.emulator.endpoint(), config).unwrap();
    let through = Aws::load(&Settings::local(&proxy.endpoint())).await.unwrap();
    let err = discard_snapshot(&through.ec2(), &id, anyhow::anyhow!("the upload failed")).await;
    let text = format!("{err:#}");
    assert!(text.contains(&format!("the incomplete snapshot {id} was deleted")), "{text}");
    assert!(proxy.faults()[&Fault::DropAfterForward] >= 1, "no response was lost");
    assert!(snapshots(&env).await.iter().all(|(s, _)| s != &id), "{id} is still there");
    // Not found with no answer lost is not "deleted": it is an error naming it.
    let absent = format!("{:#}", delete_snapshot(&env.aws.ec2(), "snap-0123456789abcdef0").await.unwrap_err());
    assert!(absent.contains("snap-0123456789abcdef0") && absent.contains("InvalidSnapshot.NotFound"), "{absent}");
}

/// One block's transient failures are retried by the SDK's retry layer for
/// that block alone: the upload goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_block_that_fails_twice_is_retried_alone() {
    let env = env().await;
    let (_, json) = sample(&env, "img", 6);
    env.emulator.inject(json!({"operation": "PutSnapshotBlock", "match": "/blocks/2", "times": 2})).unwrap();
    let report = publish(&env, &opts(json)).await.unwrap();
    assert_eq!(report.blocks_sent, 3);
    assert_eq!(env.emulator.faults().unwrap()[0]["fired"], 2);
}

/// VM Import fails a conversion; the re-run starts a new task (a reused
/// client token would hand back the failed one) and publishes.
#[tokio::test(flavor = "multi_thread")]
async fn a_vm_import_failure_then_a_rerun_publishes() {
    let env = env().await;
    env.vmimport_role(&env.bucket).await;
    let (_, json) = sample(&env, "img", 7);
    let mut o = opts(json);
    (o.via, o.bucket) = (Via::S3Import, Some(env.bucket.clone()));
    env.emulator.settings(json!({"import_failures": 1})).unwrap();
    let err = publish(&env, &o).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("injected VM Import failure") && text.contains("stays at s3://"), "{text}");
    let report = publish(&env, &o).await.unwrap();
    assert_eq!(report.bytes_sent, 0, "the content-addressed object was kept for the retry");
    assert_eq!(images(&env).await, std::slice::from_ref(&report.ami_id));
    assert!(env.keys().await.is_empty());
}

/// An AMI pruned away is published anew (and copied anew), not answered
/// with the deleted one.
#[tokio::test(flavor = "multi_thread")]
async fn republishing_an_image_whose_ami_was_pruned() {
    let env = env().await;
    let (_, old) = sample(&env, "old", 8);
    let (_, new) = sample(&env, "new", 9);
    let mut first = opts(old.clone());
    first.copy_to_regions = vec!["eu-west-1".into()];
    let pruned = publish(&env, &first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    publish(&env, &opts(new)).await.unwrap();
    let report = ami::prune(&env.aws.ec2(), &PruneOptions { keep: 1, ..Default::default() }).await.unwrap();
    assert_eq!(report.removed.len(), 1);
    let eu = env.aws.with_region("eu-west-1").ec2();
    eu.deregister_image().image_id(&pruned.copies["eu-west-1"]).send().await.unwrap();

    let again = publish(&env, &first).await.unwrap();
    assert!(!again.already_published);
    assert_ne!(again.ami_id, pruned.ami_id);
    assert_ne!(again.copies["eu-west-1"], pruned.copies["eu-west-1"]);
    let state = eu.describe_images().image_ids(&again.copies["eu-west-1"]).send().await.unwrap();
    assert_eq!(state.images()[0].state().unwrap().as_str(), "available");
}

/// Cancelled while EBS completes the snapshot: the wait stops, the snapshot
/// is deleted, and the error says so. (The wait's own limit is an hour: only
/// honouring the cancellation ends it within the test's bound.)
#[tokio::test(flavor = "multi_thread")]
async fn cancelling_during_the_snapshot_wait_cleans_up() {
    let env = env().await;
    let (_, json) = sample(&env, "img", 10);
    env.emulator.settings(json!({"snapshot_pending_polls": 1_000_000})).unwrap();
    env.emulator.inject(json!({"operation": "CompleteSnapshot", "after": 1_000_000})).unwrap();
    let cancel = Cancel::new();
    let o = opts(json);
    let run = publish::publish(&env.aws, &o, &OUT, &cancel);
    let watch = async {
        until_completed(&env).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        cancel.cancel();
    };
    let (_, run) = tokio::join!(watch, tokio::time::timeout(Duration::from_secs(60), run));
    let err = run.expect("the wait ignored the cancellation");
    let text = format!("{:#}", err.unwrap_err());
    assert!(text.contains("interrupted while waiting for snapshot") && text.contains("was deleted"), "{text}");
    assert!(snapshots(&env).await.is_empty());
}

/// Cancelled while VM Import converts: the task is cancelled and the error says so.
#[tokio::test(flavor = "multi_thread")]
async fn cancelling_during_vm_import_cancels_the_task() {
    let env = env().await;
    env.vmimport_role(&env.bucket).await;
    let (_, json) = sample(&env, "img", 11);
    let mut o = opts(json);
    (o.via, o.bucket, o.import_poll) = (Via::S3Import, Some(env.bucket.clone()), Duration::from_secs(3600));
    // A rule that never fires counts the ImportSnapshot calls without polling
    // the task (each DescribeImportSnapshotTasks advances it in the emulator).
    env.emulator.inject(json!({"operation": "ImportSnapshot", "after": 1_000_000})).unwrap();
    let cancel = Cancel::new();
    let trigger = cancel.clone();
    let run = publish::publish(&env.aws, &o, &OUT, &cancel);
    let watch = async {
        while env.emulator.faults().unwrap()[0]["seen"] == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        trigger.cancel();
    };
    let (_, run) = tokio::join!(watch, tokio::time::timeout(Duration::from_secs(60), run));
    let err = run.expect("the wait ignored the cancellation");
    let text = format!("{:#}", err.unwrap_err());
    assert!(text.contains("interrupted while waiting for VM Import task") && text.contains("was cancelled"), "{text}");
    let tasks = env.aws.ec2().describe_import_snapshot_tasks().send().await.unwrap();
    let status = tasks.import_snapshot_tasks()[0].snapshot_task_detail().unwrap().status().unwrap().to_string();
    assert_eq!(status, "deleted");
}

/// With EBS encryption by default on, the snapshot is encrypted although no
/// key was asked for: what StartSnapshot answered decides, so every block is
/// sent (absent blocks of an encrypted snapshot do not read back as zeros).
#[tokio::test(flavor = "multi_thread")]
async fn encryption_by_default_sends_every_block() {
    let env = env().await;
    env.aws.ec2().enable_ebs_encryption_by_default().send().await.unwrap();
    let (_, json) = sample(&env, "img", 12);
    let mut dry = opts(json.clone());
    dry.dry_run = true;
    let plan = publish(&env, &dry).await.unwrap();
    assert!(plan.encrypted && plan.blocks_sent == 12, "{plan:?}");
    let report = publish(&env, &opts(json)).await.unwrap();
    assert!(report.encrypted);
    assert_eq!(report.blocks_sent, 12);
    let blocks = env.aws.ebs().list_snapshot_blocks().snapshot_id(report.snapshot_id.unwrap()).send().await.unwrap();
    assert_eq!(blocks.blocks().len(), 12);
}

/// Encryption is part of an image's identity.
#[tokio::test(flavor = "multi_thread")]
async fn a_kms_publish_never_returns_the_unencrypted_ami_nor_the_reverse() {
    let env = env().await;
    let (_, json) = sample(&env, "img", 13);
    let plain = publish(&env, &opts(json.clone())).await.unwrap();
    let mut kms = opts(json.clone());
    kms.kms_key = Some("arn:aws:kms:us-east-1:123456789012:key/test".into());
    let encrypted = publish(&env, &kms).await.unwrap();
    assert!(!encrypted.already_published && encrypted.ami_id != plain.ami_id);
    assert!(encrypted.name.contains("-kms"), "{}", encrypted.name);
    assert_eq!(encrypted.blocks_sent, 12);
    let again = publish(&env, &opts(json)).await.unwrap();
    assert!(again.already_published && again.ami_id == plain.ami_id);
    let again = publish(&env, &kms).await.unwrap();
    assert!(again.already_published && again.ami_id == encrypted.ami_id);
}

/// SIGTERM reaches the CLI's one cancellation: the wait stops, the snapshot
/// is deleted, the process says so and exits 1.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_cli_and_cleans_up() {
    let env = env().await;
    let (_, json) = sample(&env, "img", 14);
    env.emulator.settings(json!({"snapshot_pending_polls": 1_000_000})).unwrap();
    env.emulator.inject(json!({"operation": "CompleteSnapshot", "after": 1_000_000})).unwrap();
    let child = env
        .cli(env!("CARGO_BIN_EXE_clawdinator"))
        .args(["--json", "image", "publish", "--image"])
        .arg(&json)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // CompleteSnapshot called: the CLI is in its wait.
    until_completed(&env).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out =
        tokio::time::timeout(Duration::from_secs(60), tokio::task::spawn_blocking(move || child.wait_with_output()))
            .await
            .expect("the CLI ignored SIGTERM")
            .unwrap()
            .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted") && stderr.contains("was deleted"), "{stderr}");
    assert!(snapshots(&env).await.is_empty());
}

/// An AMI published before the key tag existed (no `clawdinator:kms-key`)
/// is the default identity: republishing finds it instead of colliding
/// with its name; a `--kms-key` publish still makes its own.
#[tokio::test(flavor = "multi_thread")]
async fn an_ami_without_the_key_tag_is_the_default_identity() {
    let env = env().await;
    let (_, json) = sample(&env, "img", 15);
    let first = publish(&env, &opts(json.clone())).await.unwrap();
    let ec2 = env.aws.ec2();
    let tag = aws_sdk_ec2::types::Tag::builder().key(ami::TAG_KMS_KEY).build();
    let snapshot = first.snapshot_id.clone().unwrap();
    ec2.delete_tags().resources(&first.ami_id).resources(&snapshot).tags(tag).send().await.unwrap();
    let again = publish(&env, &opts(json.clone())).await.unwrap();
    assert!(again.already_published && again.ami_id == first.ami_id, "{again:?}");
    let mut kms = opts(json);
    kms.kms_key = Some("arn:aws:kms:us-east-1:123456789012:key/test".into());
    let encrypted = publish(&env, &kms).await.unwrap();
    assert!(!encrypted.already_published && encrypted.ami_id != first.ami_id);
}
