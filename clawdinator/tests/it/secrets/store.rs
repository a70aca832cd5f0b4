//! `secrets push` and `secrets pull`: the age files' copy in
//! s3://BUCKET/age-secrets/ that CI reads.

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use clawdinator::cli::Command;
use clawdinator::ctx::{Ctx, LOCAL_BUCKET};
use clawdinator::secrets::flags::SecretsCmd;
use testkit::env::{canary_value, env, Env, CANARY};
use testkit::fixtures::{self, SampleFleet};

fn run(env: &Env, verb: &str, fleet: &SampleFleet, secrets_dir: &std::path::Path, extra: &[&str]) -> Output {
    run_args(env, verb, fleet, secrets_dir, extra, &[])
}

/// [`run`] with environment variables (`AWS_ENDPOINT_URL` of a proxy).
fn run_with(env: &Env, verb: &str, fleet: &SampleFleet, dir: &std::path::Path, vars: &[(&str, String)]) -> Output {
    run_args(env, verb, fleet, dir, &[], vars)
}

fn run_args(
    env: &Env,
    verb: &str,
    fleet: &SampleFleet,
    secrets_dir: &std::path::Path,
    extra: &[&str],
    vars: &[(&str, String)],
) -> Output {
    let s = fleet.sources.clone();
    let out = env
        .cli(env!("CARGO_BIN_EXE_clawdinator"))
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .args(["--json", "secrets", verb, "--bucket", &env.bucket, "--instances"])
        .arg(&s.registry)
        .arg("--spec")
        .arg(&s.spec)
        .arg("--age-key")
        .arg(&s.age_key)
        .arg("--secrets-dir")
        .arg(secrets_dir)
        .args(extra)
        .output()
        .unwrap();
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!all.contains(CANARY), "a secret value reached the output of secrets {verb}");
    out
}

fn actions(out: &Output) -> Vec<(String, String)> {
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let files = report["files"].as_array().unwrap();
    files.iter().map(|f| (f["name"].as_str().unwrap().into(), f["action"].as_str().unwrap().into())).collect()
}

fn count(actions: &[(String, String)], action: &str) -> usize {
    actions.iter().filter(|(_, a)| a == action).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn push_uploads_only_what_changed_and_pull_brings_back_the_same_files() {
    let env = env().await;
    let fleet = fixtures::sample_fleet(&env.path("src"), 2, canary_value).unwrap();
    let dir = fleet.sources.secrets_dir.clone();

    let dry = run(&env, "push", &fleet, &dir, &["--dry-run"]);
    assert_eq!(count(&actions(&dry), "would-upload"), 7, "{}", String::from_utf8_lossy(&dry.stderr));
    assert!(env.keys().await.is_empty(), "--dry-run uploaded");

    let first = actions(&run(&env, "push", &fleet, &dir, &[]));
    assert_eq!(count(&first, "uploaded"), 7, "5 common secrets and 2 tokens: {first:?}");
    for key in env.keys().await {
        assert!(key.starts_with("age-secrets/") && key.ends_with(".age"), "{key}");
        assert!(env.get(&key).await.starts_with(b"age-encryption.org/v1"), "{key} is not ciphertext");
    }
    let again = actions(&run(&env, "push", &fleet, &dir, &[]));
    assert_eq!(count(&again, "unchanged"), 7, "a re-run uploads nothing: {again:?}");

    fixtures::write_secret(&dir, "clawdinator-openai-api-key-peter-2", b"rotated", &fleet.recipient).unwrap();
    let rotated = actions(&run(&env, "push", &fleet, &dir, &[]));
    assert_eq!(rotated.iter().filter(|(_, a)| a == "uploaded").collect::<Vec<_>>().len(), 1, "{rotated:?}");
    assert!(rotated.contains(&("clawdinator-openai-api-key-peter-2.age".into(), "uploaded".into())));

    let pulled_dir = env.path("ci/age-secrets");
    let pulled = actions(&run(&env, "pull", &fleet, &pulled_dir, &[]));
    assert_eq!(count(&pulled, "downloaded"), 7);
    for (name, _) in &pulled {
        assert_eq!(std::fs::read(pulled_dir.join(name)).unwrap(), std::fs::read(dir.join(name)).unwrap(), "{name}");
        let mode = std::fs::metadata(pulled_dir.join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn push_refuses_a_file_that_does_not_decrypt_and_uploads_nothing() {
    let env = env().await;
    let fleet = fixtures::sample_fleet(&env.path("src"), 1, canary_value).unwrap();
    let stranger = fixtures::write_identity(&env.path("stranger.key")).unwrap();
    fixtures::write_secret(&fleet.sources.secrets_dir, "clawdinator-anthropic-api-key", b"x", &stranger).unwrap();
    let out = run(&env, "push", &fleet, &fleet.sources.secrets_dir, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nothing uploaded") && stderr.contains("clawdinator-anthropic-api-key.age"), "{stderr}");
    assert!(env.keys().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_writes_nothing_when_a_file_is_tampered_with_or_missing_and_names_each() {
    let env = env().await;
    let fleet = fixtures::sample_fleet(&env.path("src"), 2, canary_value).unwrap();
    assert!(run(&env, "push", &fleet, &fleet.sources.secrets_dir, &[]).status.success());
    // Replaced outside `secrets push` (another valid age file, no recorded digest).
    let other = fixtures::write_identity(&env.path("other.key")).unwrap();
    let forged = clawdinator::secrets::encrypt(b"forged", &[other]).unwrap();
    env.put("age-secrets/clawdinator-openai-api-key-peter-2.age", forged).await;
    env.aws
        .s3()
        .delete_object()
        .bucket(&env.bucket)
        .key("age-secrets/clawdinator-discord-token-2.age")
        .send()
        .await
        .unwrap();

    let dest = env.path("ci/age-secrets");
    let out = run(&env, "pull", &fleet, &dest, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("2 file(s) failed"), "{stderr}");
    assert!(
        stderr.contains("age-secrets/clawdinator-openai-api-key-peter-2.age does not match the SHA-256"),
        "{stderr}"
    );
    assert!(stderr.contains("age-secrets/clawdinator-discord-token-2.age is missing"), "{stderr}");
    assert!(!dest.exists() || std::fs::read_dir(&dest).unwrap().next().is_none(), "pull wrote files");
}

/// S3 fails after three uploads: the push fails naming the file it was
/// on; the files already up stay (each is whole, with its digest), and the
/// re-run sends only the rest.
#[tokio::test(flavor = "multi_thread")]
async fn a_push_failing_midway_is_finished_by_a_rerun_without_sending_twice() {
    let env = env().await;
    let fleet = fixtures::sample_fleet(&env.path("src"), 2, canary_value).unwrap();
    let dir = fleet.sources.secrets_dir.clone();
    env.emulator
        .inject(serde_json::json!({"operation": "PutObject", "after": 3, "times": -1, "status": 500, "code": "InternalError"}))
        .unwrap();
    let failed = run(&env, "push", &fleet, &dir, &[]);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("PutObject") && stderr.contains("age-secrets/"), "{stderr}");
    assert_eq!(env.keys().await.len(), 3, "the uploads before the failure are not all there");
    env.emulator.clear_faults().unwrap();
    let rerun = actions(&run(&env, "push", &fleet, &dir, &[]));
    assert_eq!((count(&rerun, "unchanged"), count(&rerun, "uploaded")), (3, 4), "{rerun:?}");
    assert_eq!(env.keys().await.len(), 7);
}

/// The bucket versioned (as the fleet's is), and every request's first
/// response lost (a proxy in front of the emulator, PutObject's included:
/// carried out, the answer dropped, the SDK's retry sends it again): each
/// push stores each file it uploads as exactly one new version, a new file
/// and a changed one alike.
#[tokio::test(flavor = "multi_thread")]
async fn a_push_whose_responses_are_lost_stores_each_file_once() {
    use testkit::proxy::{Fault, Proxy, ProxyConfig};
    let env = env().await;
    let versioning = aws_sdk_s3::types::VersioningConfiguration::builder()
        .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
        .build();
    env.aws.s3().put_bucket_versioning().bucket(&env.bucket).versioning_configuration(versioning).send().await.unwrap();
    let fleet = fixtures::sample_fleet(&env.path("src"), 2, canary_value).unwrap();
    let dir = fleet.sources.secrets_dir.clone();
    let config = ProxyConfig { faults: vec![(Fault::DropAfterForward, 1.0)], ..ProxyConfig::default() };
    let proxy = Proxy::start(&env.emulator.endpoint(), config).unwrap();
    let push = || {
        let out = run_with(&env, "push", &fleet, &dir, &[("AWS_ENDPOINT_URL", proxy.endpoint())]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        actions(&out)
    };

    assert_eq!(count(&push(), "uploaded"), 7);
    assert!(proxy.faults()[&Fault::DropAfterForward] * 2 >= proxy.requests(), "not every response was lost once");
    let first = versions(&env).await;
    assert_eq!(first.len(), 7, "{first:?}");
    assert!(first.values().all(|n| *n == 1), "a file stored twice: {first:?}");

    let rotated = "clawdinator-openai-api-key-peter-2.age";
    fixtures::write_secret(&dir, "clawdinator-openai-api-key-peter-2", b"rotated", &fleet.recipient).unwrap();
    assert_eq!(push().iter().filter(|(_, a)| a == "uploaded").map(|(n, _)| n.as_str()).collect::<Vec<_>>(), [rotated]);
    let second = versions(&env).await;
    assert_eq!(second[rotated], 2, "the changed file stored as one new version: {second:?}");
    assert!(second.iter().all(|(name, n)| name == rotated || *n == 1), "{second:?}");
    assert_eq!(env.get(&format!("age-secrets/{rotated}")).await, std::fs::read(dir.join(rotated)).unwrap());
}

/// A key in S3 changed by someone else between the push's look and its
/// write is never overwritten: the push fails naming it.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_changed_by_another_writer_during_the_push_is_not_overwritten() {
    use clawdinator::aws::s3;
    let env = env().await;
    let s3c = env.aws.s3();
    let key = "age-secrets/x.age";
    env.put(key, b"first".to_vec()).await;
    let read = s3::head(&s3c, &env.bucket, key).await.unwrap();
    env.put(key, b"someone else's".to_vec()).await;
    let sha = clawdinator::digest::sha256_hex(b"ours");
    let body = s3::Body::Bytes(b"ours");
    let err = s3::put_replacing(&s3c, &env.bucket, key, read.as_ref(), body, &sha, "application/octet-stream")
        .await
        .unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains(&format!("s3://{}/{key}", env.bucket)) && err.contains("not overwritten"), "{err}");
    assert_eq!(env.get(key).await, b"someone else's");
    let absent = s3::put_replacing(&s3c, &env.bucket, key, None, s3::Body::Bytes(b"ours"), &sha, "x").await;
    assert!(
        format!("{:#}", absent.unwrap_err()).contains("not overwritten"),
        "a write meant for a new key replaced one"
    );
    assert_eq!(env.get(key).await, b"someone else's");
}

/// Versions of each object under age-secrets/, by file name.
async fn versions(env: &Env) -> std::collections::BTreeMap<String, usize> {
    let s3 = env.aws.s3();
    let out = s3.list_object_versions().bucket(&env.bucket).prefix("age-secrets/").send().await.unwrap();
    let mut versions = std::collections::BTreeMap::new();
    for v in out.versions() {
        let name = v.key().unwrap().trim_start_matches("age-secrets/").to_string();
        *versions.entry(name).or_insert(0) += 1;
    }
    versions
}

/// `secrets push|pull` as the command line gives it, without `--bucket`
/// (and whatever S3_BUCKET says: a local run has a bucket of its own).
fn without_bucket(fleet: &SampleFleet, verb: &str, secrets_dir: &std::path::Path) -> SecretsCmd {
    use clap::Parser;
    let s = &fleet.sources;
    let mut argv = vec!["clawdinator".to_string(), "secrets".into(), verb.into()];
    for (flag, path) in [
        ("--instances", &s.registry),
        ("--spec", &s.spec),
        ("--age-key", &s.age_key),
        ("--secrets-dir", &secrets_dir.to_path_buf()),
    ] {
        argv.extend([flag.to_string(), path.display().to_string()]);
    }
    match clawdinator::cli::Clawdinator::try_parse_from(argv).unwrap().command {
        Command::Secrets(SecretsCmd::Push(mut args)) => {
            args.bucket = None;
            SecretsCmd::Push(args)
        }
        Command::Secrets(SecretsCmd::Pull(mut args)) => {
            args.bucket = None;
            SecretsCmd::Pull(args)
        }
        other => panic!("not secrets push or pull: {other:?}"),
    }
}

/// Under `--local` (`cargo xtask --local secrets push`) a push and a pull
/// without `--bucket` use the throwaway emulator's bucket, as every other
/// command there does.
#[tokio::test(flavor = "multi_thread")]
async fn push_and_pull_under_local_use_the_local_bucket() {
    let env = env().await;
    let fleet = fixtures::sample_fleet(&env.path("src"), 1, canary_value).unwrap();
    let global = clawdinator::flags::Global { json: true, ..Default::default() };
    let ctx = Ctx::local(global, env.emulator.endpoint(), Box::new(())).await.unwrap();

    let push = without_bucket(&fleet, "push", &fleet.sources.secrets_dir);
    clawdinator::secrets::run(&ctx, push).await.expect("secrets push under --local without --bucket");
    let listed = env.aws.s3().list_objects_v2().bucket(LOCAL_BUCKET).prefix("age-secrets/").send().await.unwrap();
    assert_eq!(listed.contents().len(), 6, "5 common secrets and 1 token in {LOCAL_BUCKET}: {listed:?}");

    let pulled = env.path("ci/age-secrets");
    let pull = without_bucket(&fleet, "pull", &pulled);
    clawdinator::secrets::run(&ctx, pull).await.expect("secrets pull under --local without --bucket");
    assert_eq!(std::fs::read_dir(&pulled).unwrap().count(), 6, "the files pulled from {LOCAL_BUCKET}");
}
