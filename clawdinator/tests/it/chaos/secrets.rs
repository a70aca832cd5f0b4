//! `secrets push` and `secrets pull` through 5% failing requests and 1%
//! dropped connections: finished by retrying, or by one re-run after an
//! error that names what failed. Then the end state, in the emulator: each
//! age file stored once, byte for byte (the fleet bucket is versioned, so a
//! PUT that landed twice would show as a second version), and pulled back
//! the same.

use std::collections::BTreeMap;
use std::path::Path;

use testkit::env::{canary_value, Env};
use testkit::fixtures::{self, SampleFleet};

use super::{audit_verifies, chaos};

/// 5 common secrets and a token per instance: about a hundred requests in all.
const INSTANCES: usize = 24;

fn args(verb: &str, fleet: &SampleFleet, bucket: &str, secrets_dir: &Path) -> Vec<String> {
    let mut args: Vec<String> = ["--json", "secrets", verb, "--bucket", bucket].map(String::from).to_vec();
    let mut sources = fleet.sources.clone();
    sources.secrets_dir = secrets_dir.to_path_buf();
    args.extend(fixtures::source_args(&sources));
    args
}

/// Versions of each object under age-secrets/, as S3 lists them.
async fn versions(env: &Env) -> BTreeMap<String, usize> {
    let out = env.aws.s3().list_object_versions().bucket(&env.bucket).prefix("age-secrets/").send().await.unwrap();
    let mut versions = BTreeMap::new();
    for v in out.versions() {
        *versions.entry(v.key().unwrap().to_string()).or_insert(0) += 1;
    }
    versions
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_push_and_pull_survive_chaos_and_store_each_file_once() {
    let chaos = chaos(23).await;
    let env = &chaos.env;
    let versioning = aws_sdk_s3::types::VersioningConfiguration::builder()
        .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
        .build();
    env.aws.s3().put_bucket_versioning().bucket(&env.bucket).versioning_configuration(versioning).send().await.unwrap();
    let fleet = fixtures::sample_fleet(&env.path("src"), INSTANCES, canary_value).unwrap();
    let local = fleet.sources.secrets_dir.clone();
    let (_, pushes) = chaos.run_until_done(&args("push", &fleet, &env.bucket, &local), &[]);
    // Pushed again with nothing changed, through the same faults: nothing is sent.
    let (again, _) = chaos.run_until_done(&args("push", &fleet, &env.bucket, &local), &[]);
    let pulled = env.path("ci/age-secrets");
    let (_, pulls) = chaos.run_until_done(&args("pull", &fleet, &env.bucket, &pulled), &[]);
    chaos.report(&format!("secrets push ({pushes} run(s)), push again, pull ({pulls} run(s))"));

    let report: serde_json::Value = serde_json::from_str(&again).unwrap();
    let actions: Vec<&str> =
        report["files"].as_array().unwrap().iter().map(|f| f["action"].as_str().unwrap()).collect();
    assert!(actions.iter().all(|a| *a == "unchanged"), "the second push sent something: {actions:?}");
    let names: Vec<String> =
        report["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().into()).collect();
    assert_eq!(names.len(), 5 + INSTANCES);
    for name in &names {
        let want = std::fs::read(local.join(name)).unwrap();
        assert_eq!(env.get(&format!("age-secrets/{name}")).await, want, "{name} as stored");
        assert_eq!(std::fs::read(pulled.join(name)).unwrap(), want, "{name} as pulled");
    }
    let versions = versions(env).await;
    assert_eq!(versions.len(), names.len(), "{versions:?}");
    let twice: Vec<_> = versions.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "an age file stored twice: {twice:?}");
    audit_verifies(env, &[]);
}
