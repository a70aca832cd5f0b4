//! The test kit's own tests: the emulator harness (one fresh moto per
//! test, gone with its guard, even after a panic) and what the shim adds
//! where moto differs from AWS.

use std::path::Path;

use clawdinator::aws::{Aws, Settings};
use sha2::{Digest, Sha256};
use testkit::emulator::Emulator;

fn alive(pid: u32) -> bool {
    // After the child is reaped its /proc entry is gone; a zombie would
    // still show, and count as leaked.
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread")]
async fn emulator_serves_s3_and_sts_then_stops() {
    let emulator = tokio::task::spawn_blocking(Emulator::start).await.unwrap().unwrap();
    let pid = emulator.pid();
    assert!(alive(pid));
    let aws = Aws::load(&Settings::local(&emulator.endpoint())).await.unwrap();

    let arn = aws.caller_arn().await.unwrap();
    assert!(arn.starts_with("arn:aws:sts::123456789012:"), "{arn}");

    let s3 = aws.s3();
    s3.create_bucket().bucket("round-trip").send().await.unwrap();
    let body: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    s3.put_object().bucket("round-trip").key("a/b.bin").body(body.clone().into()).send().await.unwrap();
    let got = s3.get_object().bucket("round-trip").key("a/b.bin").send().await.unwrap();
    let got = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(Sha256::digest(&got), Sha256::digest(&body));

    drop(emulator);
    assert!(!alive(pid), "emulator process {pid} survived its guard");
}

#[test]
fn no_emulator_left_after_a_panicking_test() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let emulator = Emulator::start().unwrap();
        tx.send(emulator.pid()).unwrap();
        panic!("a test failing while it holds the emulator");
    })
    .join();
    assert!(result.is_err());
    let pid = rx.recv().unwrap();
    assert!(!alive(pid), "emulator process {pid} leaked by a panicking test");
}

#[test]
fn each_emulator_is_fresh() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let a = Emulator::start().unwrap();
    let b = Emulator::start().unwrap();
    assert_ne!(a.port(), b.port());
    rt.block_on(async {
        let aws_a = Aws::load(&Settings::local(&a.endpoint())).await.unwrap();
        let aws_b = Aws::load(&Settings::local(&b.endpoint())).await.unwrap();
        aws_a.s3().create_bucket().bucket("only-in-a").send().await.unwrap();
        let listed = aws_b.s3().list_buckets().send().await.unwrap();
        assert!(listed.buckets().is_empty(), "{listed:?}");
    });
}

/// Two running instances named a and b, and an SDK client for the emulator.
async fn two_instances(emulator: &Emulator) -> (Aws, Vec<String>) {
    let aws = Aws::load(&Settings::local(&emulator.endpoint())).await.unwrap();
    let mut ids = Vec::new();
    for name in ["a", "b"] {
        let tags = aws_sdk_ec2::types::TagSpecification::builder()
            .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
            .tags(aws_sdk_ec2::types::Tag::builder().key("Name").value(name).build())
            .build();
        let out = aws
            .ec2()
            .run_instances()
            .image_id("ami-12c6146b")
            .min_count(1)
            .max_count(1)
            .tag_specifications(tags)
            .send()
            .await
            .unwrap();
        ids.push(out.instances()[0].instance_id().unwrap().to_string());
    }
    (aws, ids)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shim_adds_ssm_list_command_invocations() {
    let emulator = tokio::task::spawn_blocking(Emulator::start).await.unwrap().unwrap();
    let (aws, ids) = two_instances(&emulator).await;
    let ssm = aws.ssm();
    let sent = ssm
        .send_command()
        .set_instance_ids(Some(ids.clone()))
        .document_name("AWS-RunShellScript")
        .parameters("commands", vec!["true".into()])
        .send()
        .await
        .unwrap();
    let id = sent.command().unwrap().command_id().unwrap().to_string();
    let all = ssm.list_command_invocations().command_id(&id).send().await.unwrap();
    let mut instances: Vec<&str> = all.command_invocations().iter().filter_map(|i| i.instance_id()).collect();
    instances.sort();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(instances, expected);
    let one = ssm.list_command_invocations().command_id(&id).instance_id(&ids[1]).details(true).send().await.unwrap();
    let invocations = one.command_invocations();
    assert_eq!(invocations.len(), 1);
    assert_eq!(invocations[0].status().map(|s| s.as_str()), Some("Success"));
    assert_eq!(invocations[0].command_plugins()[0].name(), Some("aws:runShellScript"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shim_models_ssm_agents_and_chosen_invocation_outcomes() {
    let emulator = tokio::task::spawn_blocking(Emulator::start).await.unwrap().unwrap();
    let (aws, ids) = two_instances(&emulator).await;
    let ssm = aws.ssm();
    let online = |ids: Vec<String>| {
        let ssm = ssm.clone();
        async move {
            let filter = aws_sdk_ssm::types::InstanceInformationStringFilter::builder()
                .key("InstanceIds")
                .set_values(Some(ids))
                .build()
                .unwrap();
            let out = ssm.describe_instance_information().filters(filter).send().await.unwrap();
            out.instance_information_list()
                .iter()
                .map(|i| (i.instance_id().unwrap().to_string(), i.ping_status().unwrap().as_str().to_string()))
                .collect::<Vec<_>>()
        }
    };
    assert!(online(ids.clone()).await.iter().all(|(_, p)| p == "Online"));
    emulator.switch("ssm-agent", serde_json::json!({"name": "b", "online": false})).unwrap();
    let pings = online(vec![ids[1].clone()]).await;
    assert_eq!(pings, [(ids[1].clone(), "ConnectionLost".to_string())]);
    // SendCommand refuses an instance whose agent is not connected, and one that does not exist.
    for target in [ids[1].as_str(), "i-0123456789abcdef0"] {
        let err = ssm
            .send_command()
            .instance_ids(target)
            .document_name("AWS-RunShellScript")
            .parameters("commands", vec!["true".into()])
            .send()
            .await
            .unwrap_err();
        assert_eq!(clawdinator::aws::error_code(&err), Some("InvalidInstanceId"), "{target}");
    }
    // A chosen outcome, InProgress for two polls first.
    emulator
        .switch(
            "ssm-invocation",
            serde_json::json!({"name": "a", "status": "Failed", "code": 1, "stderr": "boom", "pending_polls": 2}),
        )
        .unwrap();
    let sent = ssm
        .send_command()
        .instance_ids(&ids[0])
        .document_name("AWS-RunShellScript")
        .parameters("commands", vec!["true".into()])
        .send()
        .await
        .unwrap();
    let command = sent.command().unwrap().command_id().unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let inv = ssm.get_command_invocation().command_id(command).instance_id(&ids[0]).send().await.unwrap();
        seen.push(inv.status().unwrap().as_str().to_string());
        if seen.last().unwrap() == "Failed" {
            assert_eq!((inv.response_code(), inv.standard_error_content()), (1, Some("boom")));
        }
    }
    assert_eq!(seen, ["InProgress", "InProgress", "Failed"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shim_fails_status_checks_when_told() {
    let emulator = tokio::task::spawn_blocking(Emulator::start).await.unwrap().unwrap();
    let (aws, ids) = two_instances(&emulator).await;
    emulator.switch("instance-health", serde_json::json!({"name": "a", "status": "impaired"})).unwrap();
    let out = aws.ec2().describe_instance_status().set_instance_ids(Some(ids.clone())).send().await.unwrap();
    let status = |id: &str| {
        let s = out.instance_statuses().iter().find(|s| s.instance_id() == Some(id)).unwrap();
        s.instance_status().unwrap().status().unwrap().as_str().to_string()
    };
    assert_eq!((status(&ids[0]), status(&ids[1])), ("impaired".to_string(), "ok".to_string()));
}
