//! `fleet switch` and `fleet refresh-secrets` through 5% failing requests
//! and 1% dropped connections: finished by retrying, or by one re-run after
//! an error that names what failed. Then the end state, in the emulator:
//! every host tagged with the revision, and each host's command run exactly
//! once where a second run would matter (a switch: a host tagged with the
//! revision is never switched again), at least once otherwise.

use std::collections::BTreeMap;

use serde_json::json;
use testkit::env::Env;

use super::{audit_verifies, chaos, Chaos};
use crate::fleet::scale::{fleet_ami, launch_fleet};

/// Enough hosts for about a hundred requests, so that a few of them fail.
const HOSTS: usize = 12;
const OLD: &str = "89abcdef0123456789abcdef0123456789abcdef";
const REV: &str = "0123456789abcdef0123456789abcdef01234567";
const TAG_REV: &str = "clawdinator:deployed-revision";

/// A fleet of [`HOSTS`] at OLD behind the proxy, its registry, and every
/// host's SSM invocation set to succeed after two polls.
async fn fleet(seed: u64) -> (Chaos, String) {
    let chaos = chaos(seed).await;
    let env = &chaos.env;
    let registry = env.path("nix/instances.json");
    std::fs::create_dir_all(registry.parent().unwrap()).unwrap();
    testkit::fixtures::write_registry(&registry, HOSTS).unwrap();
    launch_fleet(env, &fleet_ami(env).await, HOSTS, OLD).await;
    for n in 1..=HOSTS {
        let outcome =
            json!({"name": format!("clawdinator-{n}"), "status": "Success", "pending_polls": 2, "stdout": "{}"});
        env.emulator.switch("ssm-invocation", outcome).unwrap();
    }
    (chaos, registry.to_str().unwrap().to_string())
}

/// How many times the emulator ran `document` on each instance (requests
/// the proxy dropped before forwarding never reach it).
fn commands_run(env: &Env, document: &str) -> BTreeMap<String, usize> {
    let mut runs = BTreeMap::new();
    let sends = env.emulator.calls().unwrap().into_iter().filter(|c| c["operation"] == "SendCommand");
    for call in sends.filter(|c| c["json"]["DocumentName"] == document) {
        for id in call["json"]["InstanceIds"].as_array().unwrap() {
            *runs.entry(id.as_str().unwrap().to_string()).or_insert(0) += 1;
        }
    }
    runs
}

/// Each running fleet instance's revision tag, by instance id.
async fn revisions(env: &Env) -> BTreeMap<String, Option<String>> {
    let out = env.aws.ec2().describe_instances().max_results(1000).send().await.unwrap();
    let instances = out.reservations().iter().flat_map(|r| r.instances());
    let tag = |i: &aws_sdk_ec2::types::Instance| {
        i.tags().iter().find(|t| t.key() == Some(TAG_REV)).and_then(|t| t.value()).map(String::from)
    };
    instances.map(|i| (i.instance_id().unwrap().to_string(), tag(i))).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_switch_survives_chaos_and_switches_each_host_once() {
    let (chaos, registry) = fleet(31).await;
    let env = &chaos.env;
    let hosts: Vec<(String, String)> = (1..=HOSTS)
        .map(|n| {
            (format!("clawdinator-{n}"), format!("/nix/store/{}-nixos-system-clawdinator-{n}-26.05", "b".repeat(32)))
        })
        .collect();
    let hosts: Vec<(&str, &str)> = hosts.iter().map(|(n, s)| (n.as_str(), s.as_str())).collect();
    crate::host::switch::put_release(env, REV, &hosts).await;
    env.emulator.start_call_log().unwrap();
    let args = ["--json", "fleet", "switch", REV, "--parallel", "4", "--instances", &registry, "--bucket", &env.bucket];
    let (_, runs) = chaos.run_until_done(&args.map(String::from), &[("CLAWDINATOR_POLL_SECONDS", "0.05")]);
    chaos.report(&format!("fleet switch of {HOSTS} hosts ({runs} run(s))"));
    let tagged = revisions(env).await;
    assert_eq!(tagged.len(), HOSTS);
    assert!(tagged.values().all(|r| r.as_deref() == Some(REV)), "a host not switched to {REV}: {tagged:?}");
    let switched = commands_run(env, "clawdinator-switch");
    let ids: Vec<&String> = tagged.keys().collect();
    assert_eq!(switched.keys().collect::<Vec<_>>(), ids, "every host got its switch");
    assert!(switched.values().all(|n| *n == 1), "a host switched more than once: {switched:?}");
    audit_verifies(env, &[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_refresh_secrets_survives_chaos_and_reaches_every_host() {
    let (chaos, registry) = fleet(41).await;
    let env = &chaos.env;
    env.emulator.start_call_log().unwrap();
    let args = ["--json", "fleet", "refresh-secrets", "--instances", &registry];
    let (_, runs) = chaos.run_until_done(&args.map(String::from), &[("CLAWDINATOR_POLL_SECONDS", "0.05")]);
    chaos.report(&format!("fleet refresh-secrets of {HOSTS} hosts ({runs} run(s))"));
    let refreshed = commands_run(env, "clawdinator-refresh-secrets");
    assert_eq!(refreshed.len(), HOSTS, "every host got its refresh: {refreshed:?}");
    // A refresh is safe to repeat (it installs the same bundle again), and a
    // re-run refreshes every host; a single run reaches each exactly once.
    if runs == 1 {
        assert!(refreshed.values().all(|n| *n == 1), "a host refreshed more than once: {refreshed:?}");
    }
    audit_verifies(env, &[]);
}
