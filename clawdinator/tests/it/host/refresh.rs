//! Rotating a secret without replacing hosts: the new value is uploaded in
//! the bundles, `fleet refresh-secrets` sends each host the one fixed
//! command, and `host refresh-secrets` on the host runs its units again
//! (a stand-in `systemctl` runs each unit's command line as the module
//! writes it, with this test's paths) and restarts the readers.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use clawdinator::bootstrap::{self, UploadOptions};
use clawdinator::output::Output;
use serde_json::{json, Value};
use testkit::env::{env, Env};
use testkit::fixtures::{self, SampleFleet};

async fn upload(env: &Env, fleet: &SampleFleet) {
    let opts = UploadOptions {
        sources: fleet.sources.clone(),
        seeds_dir: fleet.seeds_dir.clone(),
        bucket: env.bucket.clone(),
        instances: vec![],
        dry_run: false,
        concurrency: 8,
        source_revision: None,
    };
    bootstrap::upload(&env.aws, &opts, &Output { json: true }).await.unwrap();
}

/// `systemctl` as systemd would act on the module's units for clawdinator-1:
/// `restart` runs the unit's ExecStart (bootstrap.nix's command lines, here
/// with the test's paths), `try-restart` is only recorded.
fn stand_in_systemctl(env: &Env) -> String {
    let host = env.path("host");
    let bin = env.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let clawdinator = env!("CARGO_BIN_EXE_clawdinator");
    let h = host.display();
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> {log}\n\
         if [ -n \"$FAIL_UNIT\" ] && [ \"$*\" = \"restart $FAIL_UNIT\" ]; then echo \"Job for $FAIL_UNIT failed\" >&2; exit 1; fi\n\
         case \"$*\" in\n\
         'show -p LoadState --value clawdinator-bootstrap.service') echo loaded ;;\n\
         'restart clawdinator-bootstrap.service') exec {clawdinator} --json bootstrap fetch --bucket {bucket} --prefix bootstrap/clawdinator-1 --secrets-dir {h}/nix-secrets --repo-seeds-dir {h}/repo-seeds --age-key-path {h}/agekey --state-dir {h}/state >/dev/null ;;\n\
         'restart clawdinator-secrets.service') exec {clawdinator} --json secrets install --from {h}/nix-secrets --identity {h}/agekey --dest {h}/agenix >/dev/null ;;\n\
         try-restart*) ;;\n*) echo \"unexpected systemctl $*\" >&2; exit 1 ;;\nesac\n",
        log = env.path("systemctl.log").display(),
        bucket = env.bucket,
    );
    std::fs::write(bin.join("systemctl"), script).unwrap();
    std::fs::set_permissions(bin.join("systemctl"), std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap())
}

fn host_refresh(env: &Env, path: &str) -> Value {
    let out = env
        .cli(env!("CARGO_BIN_EXE_clawdinator"))
        .args(["--json", "host", "refresh-secrets"])
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every file under `dir`, its content.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    found.sort();
    found
}

async fn running(env: &Env, name: &str) -> String {
    let tags =
        vec![Tag::builder().key("Name").value(name).build(), Tag::builder().key("app").value("clawdinator").build()];
    let spec = TagSpecification::builder().resource_type(ResourceType::Instance).set_tags(Some(tags)).build();
    let out = env.aws.ec2().run_instances().image_id("ami-12c6146b").min_count(1).max_count(1).tag_specifications(spec);
    out.send().await.unwrap().instances()[0].instance_id().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_secret_reaches_a_running_host_and_the_old_value_is_gone() {
    let env = env().await;
    let fleet = fixtures::sample_fleet(&env.path("src"), 2, |n| format!("old value of {n}")).unwrap();
    upload(&env, &fleet).await;
    let path = stand_in_systemctl(&env);
    host_refresh(&env, &path);
    let token = env.path("host/agenix/clawdinator-openai-api-key-peter-2");
    assert_eq!(std::fs::read_to_string(&token).unwrap(), "old value of clawdinator-openai-api-key-peter-2");

    // The operator rotates: a new value, encrypted; the bundles that carry it are uploaded.
    let dir = &fleet.sources.secrets_dir;
    fixtures::write_secret(dir, "clawdinator-openai-api-key-peter-2", b"new value", &fleet.recipient).unwrap();
    upload(&env, &fleet).await;

    // The fleet command: one fixed command per host, over SSM.
    let id = running(&env, "clawdinator-1").await;
    env.emulator.start_recording().unwrap();
    let out = env
        .cli(env!("CARGO_BIN_EXE_clawdinator"))
        .args(["--json", "fleet", "refresh-secrets", "clawdinator-1", "--instances"])
        .arg(&fleet.sources.registry)
        .env("CLAWDINATOR_POLL_SECONDS", "0.05")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["hosts"][0]["outcome"], "refreshed");
    let sent: Vec<Value> = env
        .emulator
        .recorded_requests()
        .unwrap()
        .iter()
        .filter_map(|r| serde_json::from_str::<Value>(r["body"].as_str()?).ok())
        .filter(|b| b["DocumentName"] == "clawdinator-refresh-secrets")
        .collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["InstanceIds"], serde_json::json!([id]));
    // The document takes no parameter: its one command is fixed (ssm/refresh-secrets.json).
    assert!(sent[0]["Parameters"].as_object().is_none_or(|p| p.is_empty()), "{}", sent[0]);

    // What that command does on the host.
    let report = host_refresh(&env, &path);
    assert_eq!(report["reran"], serde_json::json!(["clawdinator-bootstrap.service", "clawdinator-secrets.service"]));
    assert_eq!(std::fs::read_to_string(&token).unwrap(), "new value");
    let old = b"old value of clawdinator-openai-api-key-peter-2";
    for (name, bytes) in contents(&env.path("host/agenix")) {
        assert!(!bytes.windows(old.len()).any(|w| w == old), "{name} still holds the old value");
        let mode = std::fs::metadata(env.path("host/agenix").join(&name)).unwrap().permissions().mode() & 0o777;
        // The index of names written (no value) is the installer's own, 0600.
        let expected = if name.starts_with('.') { 0o600 } else { 0o400 };
        assert_eq!(mode, expected, "{name}");
    }
    let log = std::fs::read_to_string(env.path("systemctl.log")).unwrap();
    let last: Vec<&str> = log.lines().rev().take(2).collect();
    assert_eq!(last[0], "try-restart clawdinator.service clawdinator-github-app-token.service", "{log}");
}

/// A host whose refresh fails stops the command: the hosts after it are
/// not touched and say so; once the host is fixed, a re-run refreshes all.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_host_stops_the_refresh_and_a_rerun_finishes_it() {
    let env = env().await;
    let fleet = fixtures::sample_fleet(&env.path("src"), 3, |n| format!("value of {n}")).unwrap();
    let ids = [
        running(&env, "clawdinator-1").await,
        running(&env, "clawdinator-2").await,
        running(&env, "clawdinator-3").await,
    ];
    env.emulator
        .switch("ssm-invocation", json!({"name": "clawdinator-2", "status": "Failed", "code": 1, "stderr": "clawdinator-secrets.service failed"}))
        .unwrap();
    env.emulator.start_recording().unwrap();
    let refresh = || {
        env.cli(env!("CARGO_BIN_EXE_clawdinator"))
            .args(["--json", "fleet", "refresh-secrets", "--instances"])
            .arg(&fleet.sources.registry)
            .env("CLAWDINATOR_POLL_SECONDS", "0.05")
            .output()
            .unwrap()
    };
    let sent = |env: &Env| -> Vec<String> {
        env.emulator
            .recorded_requests()
            .unwrap()
            .iter()
            .filter_map(|r| serde_json::from_str::<Value>(r["body"].as_str()?).ok())
            .filter(|b| b["DocumentName"] == "clawdinator-refresh-secrets")
            .map(|b| b["InstanceIds"][0].as_str().unwrap().to_string())
            .collect()
    };
    let out = refresh();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("stopped") && stderr.contains("clawdinator-secrets.service failed"), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let outcomes: Vec<&str> =
        report["hosts"].as_array().unwrap().iter().map(|h| h["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["refreshed", "failed", "not-started"]);
    assert_eq!(sent(&env), [ids[0].clone(), ids[1].clone()], "a host after the failure was touched");

    // Fixed: the re-run goes through every host.
    env.emulator.switch("ssm-invocation", json!({"name": "clawdinator-2", "status": "Success"})).unwrap();
    let out = refresh();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sent(&env)[2..], ids[..]);
}

/// The secrets unit fails on the host: the command fails naming it, and the
/// readers are not restarted (they keep the secrets they run with).
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_secrets_unit_fails_the_refresh_and_restarts_no_reader() {
    let env = env().await;
    let fleet = fixtures::sample_fleet(&env.path("src"), 1, |n| format!("value of {n}")).unwrap();
    upload(&env, &fleet).await;
    let path = stand_in_systemctl(&env);
    let out = env
        .cli(env!("CARGO_BIN_EXE_clawdinator"))
        .args(["--json", "host", "refresh-secrets"])
        .env("PATH", &path)
        .env("FAIL_UNIT", "clawdinator-secrets.service")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("clawdinator-secrets.service"), "{stderr}");
    let log = std::fs::read_to_string(env.path("systemctl.log")).unwrap();
    assert!(!log.contains("try-restart"), "a reader was restarted after the failure: {log}");
}
