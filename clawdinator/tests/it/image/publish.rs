//! The image pipeline against the emulator (with the shim's EBS direct,
//! RegisterImage and VM Import behaviour): publish by both paths, content
//! idempotence, cleanup, AMI selection and pruning.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clawdinator::cancel::Cancel;
use clawdinator::image::ami::{self, Identity, PruneOptions};
use clawdinator::image::publish;
use clawdinator::image::snapshot::BLOCK_SIZE;
use clawdinator::image::{PublishOptions, Via};
use clawdinator::output::Output;
use testkit::env::{env, Env};
use testkit::fixtures::{sample_image, sample_raw_image, write_image_json};

const OUT: Output = Output { json: true };
const MIB: u64 = 1 << 20;

/// 6 MiB: data in blocks 0 (MBR), 2-3, 7 (partial), an explicitly written
/// zero block 9 (data on disk, zero content), holes elsewhere.
fn sample(env: &Env, name: &str, seed: u64) -> (PathBuf, PathBuf) {
    let data = [(2 * BLOCK_SIZE, 2 * BLOCK_SIZE), (7 * BLOCK_SIZE + 1000, 5000)];
    let (image, json) = sample_image(&env.path(name), &data, seed).unwrap();
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap()
        .write_all_at(&vec![0u8; BLOCK_SIZE as usize], 9 * BLOCK_SIZE)
        .unwrap();
    (image, json)
}

fn never() -> Cancel {
    Cancel::new()
}

fn identity(manifest: &clawdinator::image::ImageManifest) -> Identity {
    Identity { sha256: manifest.sha256.clone(), kms_key: None }
}

async fn snapshot_blocks(env: &Env, snapshot_id: &str) -> BTreeSet<i32> {
    let out = env.aws.ebs().list_snapshot_blocks().snapshot_id(snapshot_id).send().await.unwrap();
    out.blocks().iter().filter_map(|b| b.block_index()).collect()
}

async fn read_back_and_compare(env: &Env, snapshot_id: &str, image: &Path, expect_blocks: &BTreeSet<i32>) {
    let bytes = std::fs::read(image).unwrap();
    let blocks = snapshot_blocks(env, snapshot_id).await;
    assert_eq!(&blocks, expect_blocks);
    let total = (bytes.len() as u64).div_ceil(BLOCK_SIZE);
    for index in 0..total as i32 {
        let start = index as usize * BLOCK_SIZE as usize;
        let mut want = bytes[start..(start + BLOCK_SIZE as usize).min(bytes.len())].to_vec();
        want.resize(BLOCK_SIZE as usize, 0);
        if blocks.contains(&index) {
            let got = env
                .aws
                .ebs()
                .get_snapshot_block()
                .snapshot_id(snapshot_id)
                .block_index(index)
                .block_token("t")
                .send()
                .await
                .unwrap();
            let data = got.block_data.collect().await.unwrap().into_bytes();
            assert!(data.as_ref() == want.as_slice(), "block {index} differs");
        } else {
            assert!(want.iter().all(|&b| b == 0), "block {index} holds data but was not sent");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ebs_direct_sends_exactly_the_data_blocks_and_registers_the_ami() {
    let env = env().await;
    let (image, json) = sample(&env, "img", 1);
    env.emulator.start_recording().unwrap();
    let report = publish::publish(&env.aws, &PublishOptions::new(json.clone()), &OUT, &never()).await.unwrap();
    assert!(!report.already_published);
    assert_eq!(report.blocks_total, 12);
    assert_eq!(report.blocks_sent, 4, "{report:?}");
    assert_eq!(report.bytes_sent, 4 * BLOCK_SIZE);
    let snapshot_id = report.snapshot_id.clone().unwrap();
    read_back_and_compare(&env, &snapshot_id, &image, &BTreeSet::from([0, 2, 3, 7])).await;

    // Tags on the AMI and on its snapshot.
    let manifest = clawdinator::image::ImageManifest::load(&json).unwrap();
    let ec2 = env.aws.ec2();
    let images = ec2.describe_images().image_ids(&report.ami_id).send().await.unwrap();
    let ami_image = &images.images()[0];
    let name = manifest.ami_name_for(identity(&manifest).kms_key.as_deref());
    assert_eq!(ami_image.name(), Some(name.as_str()));
    assert!(name.starts_with("clawdinator-nixos-25.05.20250101.abcdef0-"));
    for (k, v) in ami::fleet_tags(&manifest, &identity(&manifest)) {
        assert_eq!(ami::tag(ami_image, &k), Some(v.as_str()), "AMI tag {k}");
    }
    let snaps = ec2.describe_snapshots().snapshot_ids(&snapshot_id).send().await.unwrap();
    let snap_tags: Vec<_> = snaps.snapshots()[0]
        .tags()
        .iter()
        .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
        .collect();
    assert!(snap_tags.contains(&(ami::TAG_SHA256.to_string(), manifest.sha256.clone())));
    assert!(snap_tags.contains(&("clawdinator".to_string(), "true".to_string())));

    // RegisterImage as sent on the wire.
    let requests = env.emulator.recorded_requests().unwrap();
    let register = requests
        .iter()
        .find(|r| r["body"].as_str().unwrap_or_default().contains("Action=RegisterImage"))
        .expect("a RegisterImage call");
    let body = register["body"].as_str().unwrap();
    for want in [
        "Architecture=x86_64",
        "BootMode=legacy-bios",
        "VirtualizationType=hvm",
        "EnaSupport=true",
        "ImdsSupport=v2.0",
        "SriovNetSupport=simple",
        "RootDeviceName=%2Fdev%2Fxvda",
        "BlockDeviceMapping.1.DeviceName=%2Fdev%2Fxvda",
        &format!("BlockDeviceMapping.1.Ebs.SnapshotId={snapshot_id}"),
        "BlockDeviceMapping.1.Ebs.VolumeType=gp3",
        "BlockDeviceMapping.1.Ebs.DeleteOnTermination=true",
        "TagSpecification.1.ResourceType=image",
    ] {
        assert!(body.contains(want), "{want} not in {body}");
    }
    // The snapshot upload was checksummed block by block and as a whole (the shim checks both).
    let puts = requests
        .iter()
        .filter(|r| r["method"] == "PUT" && r["url"].as_str().unwrap_or_default().contains("/blocks/"))
        .count();
    assert_eq!(puts, 4);

    // A second publish sends nothing and returns the same AMI.
    env.emulator.start_recording().unwrap();
    let again = publish::publish(&env.aws, &PublishOptions::new(json), &OUT, &never()).await.unwrap();
    assert!(again.already_published);
    assert_eq!((again.ami_id.as_str(), again.bytes_sent), (report.ami_id.as_str(), 0));
    let requests = env.emulator.recorded_requests().unwrap();
    assert!(requests.iter().all(|r| r["method"] != "PUT"), "the re-run wrote: {requests:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_encrypted_snapshot_gets_every_block() {
    let env = env().await;
    let (image, json) = sample(&env, "img", 2);
    let mut opts = PublishOptions::new(json);
    opts.kms_key = Some("arn:aws:kms:us-east-1:123456789012:key/test".into());
    let report = publish::publish(&env.aws, &opts, &OUT, &never()).await.unwrap();
    assert_eq!(report.blocks_sent, 12);
    read_back_and_compare(&env, report.snapshot_id.as_deref().unwrap(), &image, &(0..12).collect()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_ebs_upload_leaves_no_snapshot() {
    let env = env().await;
    let dir = env.path("big");
    std::fs::create_dir_all(&dir).unwrap();
    let image = dir.join("nixos.raw");
    sample_raw_image(&image, 256 * MIB, &[(0, 256 * MIB)], 3).unwrap();
    let json = write_image_json(&dir, &image, "big").unwrap();
    let mut opts = PublishOptions::new(json);
    opts.workers = 2;
    // Stop once a few blocks are in: the same path Ctrl-C takes.
    let (ebs, ec2) = (env.aws.ebs(), env.aws.ec2());
    let cancel = Cancel::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let snaps = ec2.describe_snapshots().owner_ids("self").send().await.unwrap();
            if let Some(id) = snaps.snapshots().iter().find_map(|s| s.snapshot_id()) {
                // Moto's EBS backend knows the snapshot as soon as it exists.
                let blocks =
                    ebs.list_snapshot_blocks().snapshot_id(id).send().await.map(|b| b.blocks().len()).unwrap_or(0);
                if blocks >= 3 {
                    return trigger.cancel();
                }
            }
        }
    });
    let err = publish::publish(&env.aws, &opts, &OUT, &cancel).await.unwrap_err();
    assert!(format!("{err:#}").contains("interrupted"), "{err:#}");
    assert!(format!("{err:#}").contains("was deleted"), "{err:#}");
    let ec2 = env.aws.ec2();
    let left = ec2.describe_snapshots().owner_ids("self").send().await.unwrap();
    assert!(left.snapshots().is_empty(), "left behind: {:?}", left.snapshots());
    assert!(ec2.describe_images().owners("self").send().await.unwrap().images().is_empty());
}

fn s3_opts(json: PathBuf, bucket: &str) -> PublishOptions {
    let mut opts = PublishOptions::new(json);
    opts.via = Via::S3Import;
    opts.bucket = Some(bucket.into());
    opts.import_poll = Duration::from_millis(50);
    opts
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_import_publishes_and_cleans_up() {
    let env = env().await;
    env.vmimport_role(&env.bucket).await;
    let (_, json) = sample(&env, "img", 4);
    let report = publish::publish(&env.aws, &s3_opts(json.clone(), &env.bucket), &OUT, &never()).await.unwrap();
    assert_eq!(report.bytes_sent, 6 * MIB);
    assert!(env.keys().await.is_empty(), "the uploaded object was not deleted");
    let snapshot_id = report.snapshot_id.clone().unwrap();
    let snaps = env.aws.ec2().describe_snapshots().snapshot_ids(&snapshot_id).send().await.unwrap();
    assert!(snaps.snapshots()[0].tags().iter().any(|t| t.key() == Some(ami::TAG_SHA256)));
    let again = publish::publish(&env.aws, &s3_opts(json, &env.bucket), &OUT, &never()).await.unwrap();
    assert!(again.already_published && again.ami_id == report.ami_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_import_preflight_refuses_before_uploading() {
    let env = env().await;
    let (_, json) = sample(&env, "img", 5);
    let err = publish::publish(&env.aws, &s3_opts(json.clone(), &env.bucket), &OUT, &never()).await.unwrap_err();
    assert!(format!("{err:#}").contains("vmimport service role is missing"), "{err:#}");
    env.vmimport_role("some-other-bucket").await;
    let err = publish::publish(&env.aws, &s3_opts(json, &env.bucket), &OUT, &never()).await.unwrap_err();
    assert!(format!("{err:#}").contains("may not read s3://clawdinator-test/"), "{err:#}");
    assert!(env.keys().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_s3_upload_resumes() {
    let env = env().await;
    env.vmimport_role(&env.bucket).await;
    let dir = env.path("img");
    std::fs::create_dir_all(&dir).unwrap();
    let image = dir.join("nixos.raw");
    sample_raw_image(&image, 96 * MIB, &[(0, 96 * MIB)], 6).unwrap();
    let json = write_image_json(&dir, &image, "resume").unwrap();
    let mut opts = s3_opts(json.clone(), &env.bucket);
    opts.workers = 1;
    let s3c = env.aws.s3();
    let bucket = env.bucket.clone();
    let cancel = Cancel::new();
    let trigger = cancel.clone();
    let watcher = s3c.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let uploads = watcher.list_multipart_uploads().bucket(&bucket).send().await.unwrap();
            if let Some(u) = uploads.uploads().first() {
                let parts = watcher
                    .list_parts()
                    .bucket(&bucket)
                    .key(u.key().unwrap())
                    .upload_id(u.upload_id().unwrap())
                    .send()
                    .await
                    .unwrap();
                if parts.parts().len() >= 2 {
                    return trigger.cancel();
                }
            }
        }
    });
    let err = publish::publish(&env.aws, &opts, &OUT, &cancel).await.unwrap_err();
    assert!(format!("{err:#}").contains("resumes on the next run"), "{err:#}");
    let uploads = s3c.list_multipart_uploads().bucket(&env.bucket).send().await.unwrap();
    assert_eq!(uploads.uploads().len(), 1);

    // The re-run sends only the missing parts.
    let report = publish::publish(&env.aws, &s3_opts(json, &env.bucket), &OUT, &never()).await.unwrap();
    assert!(report.bytes_sent > 0 && report.bytes_sent <= 96 * MIB - 16 * MIB, "sent {}", report.bytes_sent);
    let uploads = s3c.list_multipart_uploads().bucket(&env.bucket).send().await.unwrap();
    assert!(uploads.uploads().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_failure_surfaces_the_status_message() {
    let env = env().await;
    env.vmimport_role(&env.bucket).await;
    let dir = env.path("nombr");
    std::fs::create_dir_all(&dir).unwrap();
    let image = dir.join("disk.raw");
    std::fs::write(&image, vec![7u8; MIB as usize]).unwrap();
    let json = write_image_json(&dir, &image, "nombr").unwrap();
    let err = publish::publish(&env.aws, &s3_opts(json, &env.bucket), &OUT, &never()).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("failed (deleted): ClientError: Disk validation failed"), "{text}");
    assert!(env.aws.ec2().describe_images().owners("self").send().await.unwrap().images().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_fails_before_any_aws_call() {
    let env = env().await;
    let (image, json) = sample(&env, "img", 7);
    env.emulator.start_recording().unwrap();
    let check = |path: PathBuf, expect: &'static str| {
        let aws = env.aws.clone();
        async move {
            let err = publish::publish(&aws, &PublishOptions::new(path), &OUT, &never()).await.unwrap_err();
            assert!(format!("{err:#}").contains(expect), "{err:#}");
        }
    };
    let corrupt = env.path("corrupt.json");
    std::fs::write(&corrupt, "{ not json").unwrap();
    check(corrupt, "not a valid image description").await;
    let text = std::fs::read_to_string(&json).unwrap();
    let wrong_size = env.path("img/wrong-size.json");
    std::fs::write(&wrong_size, text.replace("\"logicalBytes\": 6291456", "\"logicalBytes\": 6291457")).unwrap();
    check(wrong_size, "but logicalBytes says").await;
    std::fs::remove_file(&image).unwrap();
    check(json, "is missing").await;
    assert!(env.emulator.recorded_requests().unwrap().is_empty(), "AWS was called");
}

async fn publish_sample(env: &Env, seed: u64) -> String {
    let (_, json) = sample(env, &format!("img{seed}"), seed);
    publish::publish(&env.aws, &PublishOptions::new(json), &OUT, &never()).await.unwrap().ami_id
}

#[tokio::test(flavor = "multi_thread")]
async fn latest_none_ties_and_overrides() {
    let env = env().await;
    let ec2 = env.aws.ec2();
    let err = ami::latest(&ec2, None).await.unwrap_err();
    assert!(format!("{err:#}").contains("no available fleet AMI"), "{err:#}");

    // Published within the same second: the tie is broken by id, every time.
    let a = publish_sample(&env, 10).await;
    let b = publish_sample(&env, 11).await;
    let images = ami::fleet_images(&ec2).await.unwrap();
    let newest = images[0].image_id().unwrap().to_string();
    if images[0].creation_date() == images[1].creation_date() {
        assert_eq!(newest, std::cmp::max(a.clone(), b.clone()));
    } else {
        assert_eq!(newest, b);
    }
    for _ in 0..3 {
        assert_eq!(ami::latest(&ec2, None).await.unwrap().image_id().unwrap(), newest);
    }
    assert_eq!(ami::latest(&ec2, Some(&a)).await.unwrap().image_id(), Some(a.as_str()));

    let err = ami::latest(&ec2, Some("ami-0123456789abcdef0")).await.unwrap_err();
    assert!(format!("{err:#}").contains("ami-0123456789abcdef0"), "{err:#}");
    // An AMI without the fleet tag is refused as an override.
    let snap = ec2.describe_snapshots().owner_ids("self").send().await.unwrap().snapshots()[0]
        .snapshot_id()
        .unwrap()
        .to_string();
    let stranger = env.register_ami("not-fleet", &snap, "/dev/xvdb").await;
    let err = ami::latest(&ec2, Some(&stranger)).await.unwrap_err();
    assert!(format!("{err:#}").contains("not a fleet AMI"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_never_removes_the_latest_or_one_in_use() {
    let env = env().await;
    let ec2 = env.aws.ec2();
    let oldest = publish_sample(&env, 20).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let middle = publish_sample(&env, 21).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let newest = publish_sample(&env, 22).await;
    ec2.run_instances().image_id(&oldest).min_count(1).max_count(1).send().await.unwrap();

    let plan = ami::prune(&ec2, &PruneOptions { keep: 1, dry_run: true, ..Default::default() }).await.unwrap();
    assert_eq!(plan.removed.iter().map(|r| r.image_id.as_str()).collect::<Vec<_>>(), [middle.as_str()]);
    assert_eq!(ami::fleet_images(&ec2).await.unwrap().len(), 3, "dry run removed something");

    let listed = ami::list(&ec2).await.unwrap();
    let used = listed.images.iter().find(|r| r.image_id == oldest).unwrap();
    assert_eq!(used.used_by.len(), 1);

    let middle_snapshots = plan.removed[0].snapshots.clone();
    let done = ami::prune(&ec2, &PruneOptions::default()).await.unwrap();
    assert_eq!(done.removed.len(), 1);
    let left: Vec<_> =
        ami::fleet_images(&ec2).await.unwrap().iter().map(|i| i.image_id().unwrap().to_string()).collect();
    assert_eq!(left, [newest.clone(), oldest.clone()]);
    let snaps = ec2.describe_snapshots().owner_ids("self").send().await.unwrap();
    assert!(snaps.snapshots().iter().all(|s| !middle_snapshots.contains(&s.snapshot_id().unwrap().to_string())));

    // --older-than keeps everything younger.
    let recent = ami::prune(&ec2, &PruneOptions { older_than_days: Some(1), dry_run: true, ..Default::default() })
        .await
        .unwrap();
    assert!(recent.removed.is_empty());
}

/// Publish a sample image as if built from `revision`.
async fn publish_for(env: &Env, seed: u64, revision: &str) -> String {
    let (_, json) = sample(env, &format!("img{seed}"), seed);
    let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let field = manifest.as_object().unwrap().keys().find(|k| k.to_lowercase().contains("revision")).unwrap().clone();
    manifest[field] = serde_json::Value::String(revision.into());
    std::fs::write(&json, manifest.to_string()).unwrap();
    publish::publish(&env.aws, &PublishOptions::new(json), &OUT, &never()).await.unwrap().ami_id
}

/// An operator rolls back to a release's image; prune, however many images
/// were built since, never takes it away: the release manifests in the
/// bucket name the revisions whose AMIs stay. Without the list, nothing goes.
#[tokio::test(flavor = "multi_thread")]
async fn prune_keeps_the_ami_of_every_kept_release_however_many_images_came_since() {
    let env = env().await;
    let ec2 = env.aws.ec2();
    let released = "1111111111111111111111111111111111111111";
    let kept = publish_for(&env, 40, released).await;
    let mut since = Vec::new();
    for seed in 41..45 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        since.push(publish_for(&env, seed, &format!("{seed:0>40}")).await);
    }
    let put = |rev: &str| {
        let body = format!("{{\"revision\":\"{rev}\"}}").into_bytes();
        env.aws.s3().put_object().bucket(&env.bucket).key(format!("releases/{rev}.json")).body(body.into()).send()
    };
    put(released).await.unwrap();
    let releases = clawdinator::release::manifest::revisions(&env.aws.s3(), &env.bucket).await.unwrap();
    assert_eq!(releases, [released]);

    let opts = PruneOptions { keep: 1, releases, ..Default::default() };
    let report = ami::prune(&ec2, &opts).await.unwrap();
    let removed: Vec<&str> = report.removed.iter().map(|r| r.image_id.as_str()).collect();
    assert_eq!(removed, [since[2].as_str(), since[1].as_str(), since[0].as_str()], "{report:?}");
    let why = report.kept.iter().find(|(id, _)| *id == kept).map(|(_, why)| why.as_str());
    assert_eq!(why, Some(format!("built for the kept release {released}").as_str()));
    let left: Vec<String> =
        ami::fleet_images(&ec2).await.unwrap().iter().map(|i| i.image_id().unwrap().to_string()).collect();
    assert_eq!(left, [since[3].clone(), kept.clone()]);

    // The command: with the bucket unreadable, nothing is pruned.
    let out = env
        .cli(env!("CARGO_BIN_EXE_clawdinator"))
        .args(["image", "ami", "prune", "--keep", "0", "--bucket", "no-such-fleet-bucket"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing pruned"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ami::fleet_images(&ec2).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn copies_and_deprecation() {
    let env = env().await;
    let (_, json) = sample(&env, "img", 30);
    let mut opts = PublishOptions::new(json);
    opts.copy_to_regions = vec!["eu-west-1".into(), "us-east-1".into()];
    opts.deprecate_after_days = Some(90);
    let report = publish::publish(&env.aws, &opts, &OUT, &never()).await.unwrap();
    assert_eq!(report.copies.len(), 1, "the source region is not copied to itself");
    let copy = report.copies["eu-west-1"].clone();
    let eu = env.aws.with_region("eu-west-1").ec2();
    let images = eu.describe_images().image_ids(&copy).send().await.unwrap();
    let image = &images.images()[0];
    assert!(ami::tag(image, ami::TAG_SHA256).is_some());
    assert!(image.deprecation_time().is_some());
    let source = env.aws.ec2().describe_images().image_ids(&report.ami_id).send().await.unwrap();
    assert!(source.images()[0].deprecation_time().unwrap() > "2026");

    let again = publish::publish(&env.aws, &opts, &OUT, &never()).await.unwrap();
    assert_eq!(again.copies["eu-west-1"], copy);
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_dry_run_writes_nothing() {
    let env = env().await;
    let (_, json) = sample(&env, "img", 40);
    let mut opts = PublishOptions::new(json.clone());
    opts.dry_run = true;
    opts.copy_to_regions = vec!["eu-west-1".into()];
    env.emulator.start_recording().unwrap();
    let plan = publish::publish(&env.aws, &opts, &OUT, &never()).await.unwrap();
    assert!(plan.dry_run && !plan.already_published);
    assert_eq!((plan.blocks_sent, plan.bytes_sent), (4, 4 * BLOCK_SIZE));
    assert!(plan.copies.contains_key("eu-west-1"));
    let requests = env.emulator.recorded_requests().unwrap();
    let writes: Vec<_> = requests
        .iter()
        .filter(|r| {
            let body = r["body"].as_str().unwrap_or_default();
            r["method"] == "PUT"
                || ["RegisterImage", "CreateTags", "CopyImage", "CreateSnapshot"]
                    .iter()
                    .any(|a| body.contains(&format!("Action={a}")))
        })
        .collect();
    assert!(writes.is_empty(), "{writes:#?}");
    assert!(env.aws.ec2().describe_snapshots().owner_ids("self").send().await.unwrap().snapshots().is_empty());

    let real = publish::publish(&env.aws, &PublishOptions::new(json), &OUT, &never()).await.unwrap();
    let again = publish::publish(&env.aws, &opts, &OUT, &never()).await.unwrap();
    assert!(again.already_published && again.ami_id == real.ami_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_available_amis_are_latest_and_the_newest_available_is_never_pruned() {
    let env = env().await;
    let ec2 = env.aws.ec2();
    let older = publish_sample(&env, 50).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let newer = publish_sample(&env, 51).await;
    env.emulator.set_image_state(&newer, "pending").unwrap();
    assert_eq!(ami::latest(&ec2, None).await.unwrap().image_id(), Some(older.as_str()));
    let err = ami::latest(&ec2, Some(&newer)).await.unwrap_err();
    assert!(format!("{err:#}").contains("is pending, not available"), "{err:#}");
    let plan = ami::prune(&ec2, &PruneOptions { keep: 1, dry_run: true, ..Default::default() }).await.unwrap();
    assert!(plan.removed.is_empty(), "{plan}");

    env.emulator.set_image_state(&newer, "failed").unwrap();
    assert_eq!(ami::latest(&ec2, None).await.unwrap().image_id(), Some(older.as_str()));
    let done = ami::prune(&ec2, &PruneOptions { keep: 1, ..Default::default() }).await.unwrap();
    assert_eq!(done.removed.iter().map(|r| r.image_id.as_str()).collect::<Vec<_>>(), [newer.as_str()]);
    assert_eq!(ami::latest(&ec2, None).await.unwrap().image_id(), Some(older.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_spares_stopped_instances_and_launch_templates_and_goes_on_past_a_failed_snapshot() {
    let env = env().await;
    let ec2 = env.aws.ec2();
    let mut ids = Vec::new();
    for seed in 60..65 {
        ids.push(publish_sample(&env, seed).await);
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let [stopped, templated, failing, plain, _newest] = ids.clone().try_into().unwrap();
    let run = ec2.run_instances().image_id(&stopped).min_count(1).max_count(1).send().await.unwrap();
    let instance = run.instances()[0].instance_id().unwrap().to_string();
    ec2.stop_instances().instance_ids(&instance).send().await.unwrap();
    ec2.create_launch_template()
        .launch_template_name("fleet")
        .launch_template_data(aws_sdk_ec2::types::RequestLaunchTemplateData::builder().image_id(&templated).build())
        .send()
        .await
        .unwrap();
    let listed = ami::list(&ec2).await.unwrap();
    let failing_snapshot = listed.images.iter().find(|r| r.image_id == failing).unwrap().snapshots[0].clone();
    env.emulator
        .inject(serde_json::json!({"operation": "DeleteSnapshot", "match": failing_snapshot, "times": 3}))
        .unwrap();

    let report = ami::prune(&ec2, &PruneOptions { keep: 1, ..Default::default() }).await.unwrap();
    let removed: BTreeSet<&str> = report.removed.iter().map(|r| r.image_id.as_str()).collect();
    assert_eq!(removed, BTreeSet::from([failing.as_str(), plain.as_str()]), "{report}");
    let kept: Vec<&str> = report.kept.iter().map(|(id, _)| id.as_str()).collect();
    assert!(kept.contains(&stopped.as_str()) && kept.contains(&templated.as_str()), "{report}");
    assert!(report.to_string().contains("launch template fleet"), "{report}");
    assert_eq!(report.failures.len(), 1, "{report}");
    assert!(report.failures[0].0 == failing_snapshot && report.failures[0].1.contains("DeleteSnapshot"), "{report}");
    let left = ami::fleet_images(&ec2).await.unwrap();
    assert!(left.iter().all(|i| i.image_id() != Some(plain.as_str()) && i.image_id() != Some(failing.as_str())));

    // The snapshot left behind is now an orphan: listed, deleted only with --orphans.
    let listed = ami::prune(&ec2, &PruneOptions { keep: 1, dry_run: true, ..Default::default() }).await.unwrap();
    assert_eq!(listed.orphans, std::slice::from_ref(&failing_snapshot));
    let cleaned = ami::prune(&ec2, &PruneOptions { keep: 1, orphans: true, ..Default::default() }).await.unwrap();
    assert!(cleaned.failures.is_empty(), "{cleaned}");
    let snaps = ec2.describe_snapshots().owner_ids("self").send().await.unwrap();
    assert!(snaps.snapshots().iter().all(|s| s.snapshot_id() != Some(failing_snapshot.as_str())));
}

/// --snapshot-only stops after CompleteSnapshot (like `coldsnap upload`);
/// the next publish registers that snapshot without sending anything.
#[tokio::test(flavor = "multi_thread")]
async fn snapshot_only_then_publish_registers_the_same_snapshot() {
    let env = env().await;
    let (_, json) = sample(&env, "img", 70);
    let mut opts = PublishOptions::new(json.clone());
    opts.snapshot_only = true;
    let first = publish::publish(&env.aws, &opts, &OUT, &never()).await.unwrap();
    assert!(first.ami_id.is_empty() && first.bytes_sent == 4 * BLOCK_SIZE, "{first:?}");
    assert!(env.aws.ec2().describe_images().owners("self").send().await.unwrap().images().is_empty());
    let full = publish::publish(&env.aws, &PublishOptions::new(json), &OUT, &never()).await.unwrap();
    assert_eq!((full.bytes_sent, &full.snapshot_id), (0, &first.snapshot_id));
    assert!(full.ami_id.starts_with("ami-"));
}
