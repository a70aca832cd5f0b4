//! The pipeline's AWS stages, `bootstrap upload --all` and `image publish`
//! (both `--via` paths) through 5% failing requests and 1% dropped
//! connections: finished by retrying, or by one re-run after an error that
//! names what failed; then the end state, checked in the emulator.

use std::path::{Path, PathBuf};

use clawdinator::bootstrap::{self, FetchOptions};
use clawdinator::cancel::Cancel;
use clawdinator::image::publish::{self, PublishReport};
use clawdinator::image::snapshot::BLOCK_SIZE;
use clawdinator::image::{PublishOptions, Via};
use clawdinator::output::Output;
use testkit::env::{archive_entries, canary_value, Env};
use testkit::fixtures::{self, SampleFleet};

use testkit::proxy::{Fault, ProxyConfig};

use super::{audit_verifies, chaos, chaos_with, no_orphans, one_ami_per_digest, secret_versions, Chaos, STALL};

/// Enough bundles for about a hundred requests, so that a few of them fail.
const INSTANCES: usize = 24;
const AUDIT_BUCKET: &str = "clawdinator-audit";

fn upload_args(env: &Env, fleet: &SampleFleet) -> Vec<String> {
    let mut args: Vec<String> = ["bootstrap", "upload", "--all", "--bucket", &env.bucket].map(String::from).to_vec();
    args.extend(fixtures::source_args(&fleet.sources));
    args.extend(["--repo-seeds".to_string(), fleet.seeds_dir.display().to_string()]);
    args
}

fn bundle_keys(count: usize) -> Vec<String> {
    let files = ["manifest.json", "repo-seeds.tar.zst", "secrets.tar.zst"];
    (1..=count).flat_map(|n| files.map(|f| format!("bootstrap/clawdinator-{n}/{f}"))).collect()
}

/// Every bundle holds exactly its own files (its own token, the common
/// secrets) and fetches whole with its own identity, of which Secrets
/// Manager holds exactly one version.
async fn bundles_are_whole(env: &Env, count: usize) {
    for n in 1..=count {
        let entries = archive_entries(&env.get(&format!("bootstrap/clawdinator-{n}/secrets.tar.zst")).await);
        let tokens: Vec<_> = entries.iter().filter(|e| e.contains("discord-token")).cloned().collect();
        assert_eq!(tokens, [format!("secrets/clawdinator-discord-token-{n}.age")]);
        assert!(entries.iter().all(|e| e.starts_with("secrets/")), "{entries:?}");
        assert_eq!(entries.len(), 1 + 5 + 1, "{entries:?}");
        let host = env.path(&format!("host-{n}"));
        let opts = FetchOptions {
            bucket: env.bucket.clone(),
            prefix: format!("bootstrap/clawdinator-{n}"),
            prefix_file: None,
            secrets_dir: host.join("secrets"),
            seeds_dir: host.join("seeds"),
            age_key_path: host.join("agekey"),
            state_dir: host.join("state"),
        };
        bootstrap::fetch(&env.aws, &opts).await.unwrap_or_else(|e| panic!("bundle {n}: {e:#}"));
    }
    let versions = secret_versions(env).await;
    assert_eq!(versions.len(), count, "{versions:?}");
    assert!(versions.values().all(|v| *v == 1), "a secret version created twice: {versions:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_upload_all_survives_chaos() {
    let chaos = chaos(11).await;
    let env = &chaos.env;
    let fleet = fixtures::sample_fleet(&env.path("src"), INSTANCES, canary_value).unwrap();
    chaos.run_until_done(&upload_args(env, &fleet), &[]);
    // A re-run with nothing changed, through the same faults, changes nothing.
    chaos.run_until_done(&upload_args(env, &fleet), &[]);
    chaos.report("bootstrap upload --all, then again");
    bundles_are_whole(env, INSTANCES).await;
    no_orphans(env, &env.bucket, &bundle_keys(INSTANCES)).await;
    audit_verifies(env, &[]);
}

/// A raw image of 48 MiB with data in 80 of its 96 blocks.
fn image(env: &Env, seed: u64) -> (PathBuf, PathBuf) {
    let dir = env.path("img");
    std::fs::create_dir_all(&dir).unwrap();
    let raw = dir.join("nixos.raw");
    let data: Vec<(u64, u64)> = (0..16).map(|i| (i * 6 * BLOCK_SIZE, 5 * BLOCK_SIZE)).collect();
    fixtures::sample_raw_image(&raw, 48 << 20, &data, seed).unwrap();
    let json = fixtures::write_image_json(&dir, &raw, "25.05.20250101.abcdef0").unwrap();
    (raw, json)
}

/// Publish through the proxy; a failure must name what failed, and one
/// re-run must finish.
async fn publish_until_done(chaos: &Chaos, opts: &PublishOptions) -> PublishReport {
    let aws = chaos.aws().await;
    let out = Output { json: true };
    match publish::publish(&aws, opts, &out, &Cancel::new()).await {
        Ok(report) => report,
        Err(err) => {
            let message = format!("{err:#}");
            assert!(message.contains(" failed"), "the publish failed without naming what: {message}");
            eprintln!("chaos: image publish failed once, naming: {message}");
            publish::publish(&aws, opts, &out, &Cancel::new()).await.expect("the re-run")
        }
    }
}

/// The AMI is the only one, for this image's digest, and its root is the
/// snapshot published.
async fn image_is_published_once(env: &Env, ami_id: &str, snapshot: Option<&str>) {
    let amis = one_ami_per_digest(env).await;
    assert_eq!(amis.values().collect::<Vec<_>>(), [ami_id]);
    let images = env.aws.ec2().describe_images().image_ids(ami_id).send().await.unwrap();
    let root = images.images()[0].block_device_mappings()[0].ebs().and_then(|e| e.snapshot_id());
    assert_eq!(root, Some(snapshot.expect("a snapshot id")));
}

/// A snapshot written by EBS direct holds the image's bytes, block for
/// block (the emulator keeps no blocks of a VM Import).
async fn snapshot_holds(env: &Env, snapshot: &str, raw: &Path) {
    let bytes = std::fs::read(raw).unwrap();
    let ebs = env.aws.ebs();
    let blocks = ebs.list_snapshot_blocks().snapshot_id(snapshot).max_results(10_000).send().await.unwrap();
    let mut nonzero = 0;
    for (index, chunk) in bytes.chunks(BLOCK_SIZE as usize).enumerate() {
        let listed = blocks.blocks().iter().any(|b| b.block_index() == Some(index as i32));
        if !listed {
            assert!(chunk.iter().all(|b| *b == 0), "block {index} holds data but is not in {snapshot}");
            continue;
        }
        nonzero += 1;
        let got = ebs.get_snapshot_block().snapshot_id(snapshot).block_index(index as i32).block_token("t");
        let data = got.send().await.unwrap().block_data.collect().await.unwrap().into_bytes();
        assert!(data.as_ref() == chunk, "block {index} of {snapshot} differs from the image");
    }
    assert!(nonzero > 0, "{snapshot} holds no block");
}

#[tokio::test(flavor = "multi_thread")]
async fn image_publish_ebs_direct_survives_chaos() {
    let chaos = chaos(21).await;
    let (raw, json) = image(&chaos.env, 21);
    let report = publish_until_done(&chaos, &PublishOptions::new(json)).await;
    chaos.report("image publish --via ebs-direct");
    image_is_published_once(&chaos.env, &report.ami_id, report.snapshot_id.as_deref()).await;
    snapshot_holds(&chaos.env, report.snapshot_id.as_deref().unwrap(), &raw).await;
    no_orphans(&chaos.env, &chaos.env.bucket, &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn image_publish_s3_import_survives_chaos() {
    let chaos = chaos(31).await;
    let env = &chaos.env;
    env.vmimport_role(&env.bucket).await;
    let (raw, json) = image(env, 31);
    let mut opts = PublishOptions::new(json);
    opts.via = Via::S3Import;
    opts.bucket = Some(env.bucket.clone());
    opts.import_poll = std::time::Duration::from_millis(50);
    let report = publish_until_done(&chaos, &opts).await;
    chaos.report("image publish --via s3-import");
    image_is_published_once(env, &report.ami_id, report.snapshot_id.as_deref()).await;
    assert_eq!(report.bytes_sent, std::fs::metadata(&raw).unwrap().len(), "the object VM Import read");
    no_orphans(env, &env.bucket, &[]).await;
}

/// The pipeline's stages as its CI runs them, each through the proxy with
/// the audit trail also written to S3: secrets check, bootstrap upload,
/// image publish, image ami latest (`cargo xtask pipeline` is another
/// crate's binary; these are its steps).
#[tokio::test(flavor = "multi_thread")]
async fn pipeline_survives_chaos() {
    let chaos = chaos(41).await;
    let env = &chaos.env;
    env.aws.s3().create_bucket().bucket(AUDIT_BUCKET).send().await.unwrap();
    let fleet = fixtures::sample_fleet(&env.path("src"), INSTANCES, canary_value).unwrap();
    let (raw, json) = image(env, 41);
    let audit = [("CLAWDINATOR_AUDIT_BUCKET", AUDIT_BUCKET)];
    let mut check: Vec<String> = vec!["secrets".into(), "check".into()];
    check.extend(fixtures::source_args(&fleet.sources));
    chaos.run_until_done(&check, &audit);
    chaos.run_until_done(&upload_args(env, &fleet), &audit);
    let publish = ["--json", "image", "publish", "--bucket", &env.bucket, "--image", json.to_str().unwrap()];
    let (out, _) = chaos.run_until_done(&publish.map(String::from), &audit);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let (latest, _) = chaos.run_until_done(&["image", "ami", "latest"].map(String::from), &audit);
    chaos.report("pipeline");

    assert_eq!(latest.trim(), report["amiId"].as_str().unwrap());
    bundles_are_whole(env, INSTANCES).await;
    no_orphans(env, &env.bucket, &bundle_keys(INSTANCES)).await;
    let snapshot = report["snapshotId"].as_str();
    image_is_published_once(env, report["amiId"].as_str().unwrap(), snapshot).await;
    snapshot_holds(env, snapshot.unwrap(), &raw).await;
    audit_verifies(env, &audit);
    let s3 = env.aws.s3();
    let uploads = s3.list_multipart_uploads().bucket(AUDIT_BUCKET).send().await.unwrap();
    assert!(uploads.uploads().is_empty());
}

/// The worst case of a lost response, deterministically: every request is
/// carried out and its first response lost, so every call is retried after
/// it took effect. Upload and publish still finish in one run each and
/// leave one of everything.
#[tokio::test(flavor = "multi_thread")]
async fn every_response_lost_once_changes_nothing_twice() {
    let config = ProxyConfig { faults: vec![(Fault::DropAfterForward, 1.0)], stall: STALL, ..ProxyConfig::default() };
    let chaos = chaos_with(config).await;
    let env = &chaos.env;
    let fleet = fixtures::sample_fleet(&env.path("src"), 2, canary_value).unwrap();
    // 6 MiB, 6 data blocks: with every first attempt failing, a larger
    // image runs out the SDK's retry quota (as it would on AWS).
    let (raw, json) = fixtures::sample_image(&env.path("img"), &[(0, 3 << 20)], 51).unwrap();
    let (_, runs) = chaos.run_until_done(&upload_args(env, &fleet), &[]);
    assert_eq!(runs, 1, "bootstrap upload needed a re-run");
    let publish = ["--json", "image", "publish", "--image", json.to_str().unwrap()].map(String::from);
    let (out, runs) = chaos.run_until_done(&publish, &[]);
    assert_eq!(runs, 1, "image publish needed a re-run");
    let faults = chaos.report("every response lost once");
    assert!(faults * 2 >= chaos.proxy.requests(), "not every request lost its first response");

    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let snapshot = report["snapshotId"].as_str();
    image_is_published_once(env, report["amiId"].as_str().unwrap(), snapshot).await;
    snapshot_holds(env, snapshot.unwrap(), &raw).await;
    bundles_are_whole(env, 2).await;
    no_orphans(env, &env.bucket, &bundle_keys(2)).await;
    audit_verifies(env, &[]);
}
