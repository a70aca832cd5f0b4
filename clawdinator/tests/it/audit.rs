//! The audit trail: every AWS-changing command records `started` and
//! `finished`, chained by hash, locally and in S3 (never overwritten);
//! `audit verify` catches an edited, removed or reordered record; a record
//! that cannot be written stops the command before it changes anything.

use std::path::{Path, PathBuf};

use serde_json::Value;
use testkit::env::{canary_value, env, Env};
use testkit::fixtures::{self, SampleFleet};
use testkit::proxy::{Fault, Proxy, ProxyConfig};

fn audit_bucket() -> &'static str {
    "clawdinator-audit"
}

async fn setup() -> (Env, SampleFleet) {
    let env = env().await;
    env.aws.s3().create_bucket().bucket(audit_bucket()).send().await.unwrap();
    let fleet = fixtures::sample_fleet(&env.path("src"), 2, canary_value).unwrap();
    (env, fleet)
}

fn log(env: &Env) -> PathBuf {
    env.path("trail/audit.jsonl")
}

fn run(env: &Env, args: &[&str]) -> std::process::Output {
    run_with(env, args, &[])
}

/// `run` with other credentials (or any other variables).
fn run_with(env: &Env, args: &[&str], vars: &[(&str, String)]) -> std::process::Output {
    env.cli(env!("CARGO_BIN_EXE_clawdinator"))
        .args(args)
        .env("CLAWDINATOR_AUDIT_LOG", log(env))
        .env("CLAWDINATOR_AUDIT_BUCKET", audit_bucket())
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn upload_args(env: &Env, fleet: &SampleFleet) -> Vec<String> {
    let s = &fleet.sources;
    let p = |p: &Path| p.display().to_string();
    vec![
        "bootstrap".into(),
        "upload".into(),
        "--all".into(),
        "--bucket".into(),
        env.bucket.clone(),
        "--instances".into(),
        p(&s.registry),
        "--spec".into(),
        p(&s.spec),
        "--secrets-dir".into(),
        p(&s.secrets_dir),
        "--age-key".into(),
        p(&s.age_key),
        "--repo-seeds".into(),
        p(&fleet.seeds_dir),
    ]
}

fn records(env: &Env) -> Vec<Value> {
    std::fs::read_to_string(log(env)).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn lines(env: &Env) -> Vec<String> {
    std::fs::read_to_string(log(env)).unwrap().lines().map(String::from).collect()
}

fn write_lines(env: &Env, lines: &[String]) {
    std::fs::write(log(env), lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

async fn audit_keys(env: &Env) -> Vec<String> {
    let out = env.aws.s3().list_objects_v2().bucket(audit_bucket()).prefix("audit/").send().await.unwrap();
    out.contents().iter().filter_map(|o| o.key().map(String::from)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_mutating_command_is_recorded_twice_and_the_chain_verifies() {
    let (env, fleet) = setup().await;
    let upload: Vec<String> = upload_args(&env, &fleet);
    let s = &fleet.sources;
    let seed_args: Vec<String> = ["secrets", "seed", "--all", "--instances"]
        .iter()
        .map(|a| a.to_string())
        .chain([s.registry.display().to_string(), "--spec".into(), s.spec.display().to_string()])
        .chain([
            "--secrets-dir".into(),
            s.secrets_dir.display().to_string(),
            "--age-key".into(),
            s.age_key.display().to_string(),
        ])
        .collect();
    let image_dir = env.path("img");
    std::fs::create_dir_all(&image_dir).unwrap();
    let raw = image_dir.join("nixos.raw");
    fixtures::sample_raw_image(&raw, 2 << 20, &[(0, 4096)], 7).unwrap();
    let image_json = fixtures::write_image_json(&image_dir, &raw, "25.05").unwrap();
    let registry = s.registry.display().to_string();
    let commands: Vec<(Vec<String>, &str, bool)> = vec![
        (upload, "bootstrap upload", true),
        (seed_args, "secrets seed", true),
        (
            vec!["image".into(), "publish".into(), "--image".into(), image_json.display().to_string()],
            "image publish",
            true,
        ),
        (
            ["image", "ami", "prune", "--keep", "1", "--bucket", &env.bucket].map(String::from).to_vec(),
            "image ami prune",
            true,
        ),
        // No instance to switch or deploy: each fails, and that is recorded too.
        (
            vec![
                "fleet".into(),
                "switch".into(),
                "0123456789abcdef0123456789abcdef01234567".into(),
                "--instances".into(),
                registry.clone(),
                "--bucket".into(),
                env.bucket.clone(),
            ],
            "fleet switch",
            false,
        ),
        (
            vec![
                "fleet".into(),
                "deploy".into(),
                "clawdinator-1".into(),
                "--ami".into(),
                "ami-0123456789abcdef0".into(),
                "--instances".into(),
                registry,
                "--backend-bucket".into(),
                "b".into(),
            ],
            "fleet deploy",
            false,
        ),
    ];
    for (args, command, ok) in &commands {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&env, &args);
        assert_eq!(out.status.success(), *ok, "{command}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let records = records(&env);
    assert_eq!(records.len(), 2 * commands.len(), "{records:#?}");
    for (pair, (_, command, ok)) in records.chunks(2).zip(&commands) {
        assert_eq!((pair[0]["command"].as_str(), pair[0]["phase"].as_str()), (Some(*command), Some("started")));
        assert_eq!((pair[1]["command"].as_str(), pair[1]["phase"].as_str()), (Some(*command), Some("finished")));
        let result = pair[1]["result"].as_str().unwrap();
        assert_eq!(result == "ok", *ok, "{command}: {result}");
        assert!(pair[0]["caller"].as_str().unwrap().starts_with("arn:aws:"), "{}", pair[0]);
    }
    let text = std::fs::read_to_string(log(&env)).unwrap();
    assert!(!text.contains(testkit::env::CANARY), "a secret value reached the audit log");
    let published = &records[5];
    assert!(
        published["resources"].as_array().unwrap().iter().any(|r| r.as_str().unwrap().starts_with("ami-")),
        "{published}"
    );

    // Verify: local and S3 agree, and the S3 copies are write-once.
    let out = run(&env, &["--json", "audit", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["local"].as_u64(), report["bucket"].as_u64()), (Some(12), Some(12)));
    let keys = audit_keys(&env).await;
    assert_eq!(keys.len(), 12);
    let again = env
        .aws
        .s3()
        .put_object()
        .bucket(audit_bucket())
        .key(&keys[0])
        .if_none_match("*")
        .body(b"rewritten".to_vec().into())
        .send()
        .await;
    assert!(again.is_err(), "an audit record in S3 was overwritten");

    // The log prints, and filters by time.
    let all = run(&env, &["--json", "audit", "log"]);
    assert_eq!(serde_json::from_slice::<Value>(&all.stdout).unwrap().as_array().unwrap().len(), 12);
    let none = run(&env, &["--json", "audit", "log", "--since", "2999-01-01"]);
    assert_eq!(serde_json::from_slice::<Value>(&none.stdout).unwrap(), serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_names_the_first_broken_link_after_an_edit_a_removal_or_a_reordering() {
    let (env, fleet) = setup().await;
    let upload = upload_args(&env, &fleet);
    let upload: Vec<&str> = upload.iter().map(String::as_str).collect();
    for _ in 0..3 {
        assert!(run(&env, &upload).status.success());
    }
    let good = lines(&env);
    assert_eq!(good.len(), 6);
    let verify = |env: &Env| {
        let out = env
            .cli(env!("CARGO_BIN_EXE_clawdinator"))
            .args(["audit", "verify"])
            .env("CLAWDINATOR_AUDIT_LOG", log(env))
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert_eq!(verify(&env).0, Some(0));

    let mut edited = good.clone();
    edited[2] = edited[2].replace("bootstrap upload", "bootstrap uploaf");
    write_lines(&env, &edited);
    let (code, stderr) = verify(&env);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("breaks at record 4"), "{stderr}");

    let mut removed = good.clone();
    removed.remove(1);
    write_lines(&env, &removed);
    assert!(verify(&env).1.contains("breaks at record 2"));

    let mut reordered = good.clone();
    reordered.swap(3, 4);
    write_lines(&env, &reordered);
    assert!(verify(&env).1.contains("breaks at record 4"));

    // The last record has no successor to give it away, but its S3 copy does.
    let mut last = good.clone();
    last[5] = last[5].replace("\"ok\"", "\"ok, trust me\"");
    write_lines(&env, &last);
    assert_eq!(verify(&env).0, Some(0), "the local chain alone cannot see this");
    let out = run(&env, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("record 6 has no identical copy"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_that_cannot_be_written_stops_the_command_before_any_change() {
    let (env, fleet) = setup().await;
    let upload = upload_args(&env, &fleet);
    let upload: Vec<&str> = upload.iter().map(String::as_str).collect();
    // The log's directory is a file: no record can be written.
    std::fs::write(env.path("trail"), "not a directory").unwrap();
    let out = run(&env, &upload);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing was changed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(env.keys().await.is_empty(), "the upload went ahead");

    // The S3 copy cannot be written (no such bucket): the same.
    std::fs::remove_file(env.path("trail")).unwrap();
    let out = env
        .cli(env!("CARGO_BIN_EXE_clawdinator"))
        .args(&upload)
        .env("CLAWDINATOR_AUDIT_LOG", log(&env))
        .env("CLAWDINATOR_AUDIT_BUCKET", "no-such-audit-bucket")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-audit-bucket"));
    assert!(env.keys().await.is_empty(), "the upload went ahead");
}

#[tokio::test(flavor = "multi_thread")]
async fn runners_that_each_start_a_fresh_log_share_one_bucket_and_a_removed_copy_is_named() {
    let (env, fleet) = setup().await;
    let upload = upload_args(&env, &fleet);
    let upload: Vec<&str> = upload.iter().map(String::as_str).collect();
    // Two CI runners: each begins its own log, both write to one bucket.
    let on_runner = |runner: &str, args: &[&str]| {
        env.cli(env!("CARGO_BIN_EXE_clawdinator"))
            .args(args)
            .env("CLAWDINATOR_AUDIT_LOG", env.path(&format!("{runner}/audit.jsonl")))
            .env("CLAWDINATOR_AUDIT_BUCKET", audit_bucket())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    for runner in ["runner-a", "runner-b", "runner-a"] {
        assert!(on_runner(runner, &upload).status.success());
    }
    let out = on_runner("runner-b", &["--json", "audit", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["local"].as_u64(), report["bucket"].as_u64()), (Some(2), Some(6)));
    assert_eq!(report["chains"].as_u64(), Some(2));

    // Every writer's records, from the bucket, in time order.
    let out = on_runner("nowhere", &["--json", "audit", "log", "--bucket", audit_bucket()]);
    let printed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed.len(), 6);
    // Compared as instants, not as strings: a record's precision or offset
    // must not reorder the log.
    let instant = |v: &Value| {
        let text = v["time"].as_str().unwrap();
        aws_smithy_types::DateTime::from_str(text, aws_smithy_types::date_time::Format::DateTime)
            .unwrap_or_else(|e| panic!("time {text:?} is not RFC 3339: {e}"))
    };
    assert!(printed.windows(2).all(|w| instant(&w[0]) <= instant(&w[1])), "{printed:#?}");

    // A copy removed from the middle of runner a's chain: its successor names the gap.
    let keys = audit_keys(&env).await;
    env.aws.s3().delete_object().bucket(audit_bucket()).key(&keys[1]).send().await.unwrap();
    let out = on_runner("runner-b", &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the record before bootstrap upload started at"), "{stderr}");
    assert!(stderr.contains("is missing"), "{stderr}");
}

/// Credentials of a session of the CI role, as a CI run gets them.
async fn ci_session(env: &Env) -> [(&'static str, String); 3] {
    let role = "arn:aws:iam::123456789012:role/clawdinator-ci";
    let out = env.aws.sts().assume_role().role_arn(role).role_session_name("GitHubActions").send().await.unwrap();
    let c = out.credentials().unwrap();
    [
        ("AWS_ACCESS_KEY_ID", c.access_key_id().to_string()),
        ("AWS_SECRET_ACCESS_KEY", c.secret_access_key().to_string()),
        ("AWS_SESSION_TOKEN", c.session_token().to_string()),
    ]
}

/// Write a record to the bucket exactly as a writer would: well chained,
/// named by its hash, never overwriting.
async fn put_record(env: &Env, prefix: &str, record: &clawdinator::audit::Record) -> String {
    let line = serde_json::to_string(record).unwrap();
    let key = clawdinator::audit::s3_key(prefix, &record.time, &clawdinator::audit::hash(&line));
    env.aws.s3().put_object().bucket(audit_bucket()).key(&key).body(line.into_bytes().into()).send().await.unwrap();
    key
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_claiming_the_control_api_written_with_ci_credentials_fails_naming_its_key() {
    let (env, fleet) = setup().await;
    let upload = upload_args(&env, &fleet);
    let ci = ci_session(&env).await;
    let out = run_with(&env, &upload.iter().map(String::as_str).collect::<Vec<_>>(), &ci);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let keys = audit_keys(&env).await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("audit/ci/")), "the CI role writes under its own prefix: {keys:?}");
    assert!(run(&env, &["audit", "verify"]).status.success());

    // With the same credentials, a record that says the control API
    // deployed clawdinator-2 for a bot: chained to CI's last record, named
    // by its hash, in every place CI's policy ever let it write.
    let last: clawdinator::audit::Record = serde_json::from_str(lines(&env).last().unwrap()).unwrap();
    let forged = clawdinator::audit::Record {
        time: clawdinator::clock::now_precise(),
        caller: "arn:aws:sts::123456789012:assumed-role/clawdinator-instance-clawdinator-1/i-0abc".into(),
        command: "control-api".into(),
        args: vec!["deploy".into(), "clawdinator-2".into()],
        targets: vec!["clawdinator-2".into()],
        phase: "finished".into(),
        result: Some("ok".into()),
        resources: vec![],
        prev: clawdinator::audit::hash(&serde_json::to_string(&last).unwrap()),
    };
    for prefix in ["audit/ci/", "audit/operators/", "audit/"] {
        let key = put_record(&env, prefix, &forged).await;
        let out = run(&env, &["audit", "verify"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "a forged record under {prefix} verified: {stderr}");
        assert!(stderr.contains(&key), "the failure names the key {key}: {stderr}");
        assert!(stderr.contains("forged") || stderr.contains("only"), "{stderr}");
        env.aws.s3().delete_object().bucket(audit_bucket()).key(&key).send().await.unwrap();
    }
    // A record claiming to be CI's, written by someone else (an operator's
    // prefix), fails too; the untouched trail verifies again.
    let mut claims_ci = last.clone();
    claims_ci.time = clawdinator::clock::now_precise();
    claims_ci.prev = forged.prev.clone();
    let key = put_record(&env, "audit/operators/", &claims_ci).await;
    let out = run(&env, &["audit", "verify"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains(&key), "{}", String::from_utf8_lossy(&out.stderr));
    env.aws.s3().delete_object().bucket(audit_bucket()).key(&key).send().await.unwrap();
    assert!(run(&env, &["audit", "verify"]).status.success());
}

/// Every request carried out and its first response lost (a proxy in front
/// of the emulator): the SDK's retry of a copy meets its own first write
/// (`412` to `If-None-Match: *`); the command goes on, each record has one
/// copy and the trail verifies.
#[tokio::test(flavor = "multi_thread")]
async fn an_audit_copy_whose_response_was_lost_is_kept_and_the_command_goes_on() {
    let (env, fleet) = setup().await;
    let config = ProxyConfig { faults: vec![(Fault::DropAfterForward, 1.0)], ..ProxyConfig::default() };
    let proxy = Proxy::start(&env.emulator.endpoint(), config).unwrap();
    let upload = upload_args(&env, &fleet);
    let out = run_with(
        &env,
        &upload.iter().map(String::as_str).collect::<Vec<_>>(),
        &[("AWS_ENDPOINT_URL", proxy.endpoint())],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(proxy.faults()[&Fault::DropAfterForward] * 2 >= proxy.requests(), "not every response was lost once");
    assert_eq!(audit_keys(&env).await.len(), 2, "one copy per record");
    let verify = run(&env, &["audit", "verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
}

/// A key that already holds other bytes than the record's is never
/// overwritten, nor taken for the record: the append fails naming it.
#[tokio::test(flavor = "multi_thread")]
async fn an_audit_copy_whose_key_holds_other_content_fails_naming_it() {
    let env = env().await;
    env.aws.s3().create_bucket().bucket(audit_bucket()).send().await.unwrap();
    let record = clawdinator::audit::Record {
        time: "2026-11-22T01:00:00.000000000Z".into(),
        caller: "arn:aws:iam::123456789012:user/alice".into(),
        command: "bootstrap upload".into(),
        args: vec![],
        targets: vec!["all".into()],
        phase: "started".into(),
        result: None,
        resources: vec![],
        prev: clawdinator::audit::GENESIS.into(),
    };
    let line = serde_json::to_string(&record).unwrap();
    let key = clawdinator::audit::s3_key("audit/operators/", &record.time, &clawdinator::audit::hash(&line));
    let s3 = env.aws.s3();
    s3.put_object().bucket(audit_bucket()).key(&key).body(b"something else".to_vec().into()).send().await.unwrap();

    let chain = clawdinator::audit::BucketChain::new(audit_bucket(), "operators");
    let err = format!("{:#}", chain.append(&env.aws, record).await.unwrap_err());
    assert!(err.contains(&format!("s3://{}/{key}", audit_bucket())), "{err}");
    assert!(err.contains("exists with other content"), "{err}");
    let kept = s3.get_object().bucket(audit_bucket()).key(&key).send().await.unwrap();
    let kept = kept.body.collect().await.unwrap().into_bytes();
    assert_eq!(kept.as_ref(), b"something else", "the copy was overwritten");
}

/// S3's `409 ConditionalRequestConflict` (another conditional write to the
/// key in flight) is sent again, a bounded number of times: twice is
/// survived with one copy per record; every time fails naming the key.
#[tokio::test(flavor = "multi_thread")]
async fn an_audit_copy_meeting_a_conditional_write_conflict_is_sent_again() {
    let (env, fleet) = setup().await;
    let conflict = |times: i64| {
        serde_json::json!({"operation": "PutObject", "match": "audit/", "times": times, "status": 409,
            "code": "ConditionalRequestConflict", "message": "A conflicting operation occurred"})
    };
    env.emulator.inject(conflict(2)).unwrap();
    let upload = upload_args(&env, &fleet);
    let args: Vec<&str> = upload.iter().map(String::as_str).collect();
    let out = run(&env, &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(env.emulator.faults().unwrap()[0]["fired"], 2);
    assert_eq!(audit_keys(&env).await.len(), 2, "one copy per record");

    env.emulator.clear_faults().unwrap();
    env.emulator.inject(conflict(-1)).unwrap();
    let out = run(&env, &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("s3://clawdinator-audit/audit/") && stderr.contains("ConditionalRequestConflict"),
        "{stderr}"
    );
}
