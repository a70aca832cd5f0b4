//! A fleet of 300 hosts in the emulator: `fleet status` and `fleet switch
//! --dry-run` report every host, within a bounded time, with a listing per
//! page of the fleet rather than a request per host (counted in the
//! emulator's call log), and the bytes each command moves (counted by a
//! relay in front of the emulator). docs/benchmarks.md ("A fleet of 300
//! hosts") takes its figures from here.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use futures::StreamExt;
use serde_json::Value;
use testkit::env::{env, Env};

const HOSTS: usize = 300;
/// The revision every host runs, and the one the dry run would switch them to.
const REV: &str = "0123456789abcdef0123456789abcdef01234567";
const NEXT: &str = "89abcdef0123456789abcdef0123456789abcdef";
/// Each command gets this long for 300 hosts (on loopback it takes a few seconds).
const LIMIT: Duration = Duration::from_secs(60);
/// SSM DescribeInstanceInformation takes at most 50 instance ids per filter.
const SSM_IDS_PER_CALL: usize = 50;

/// A loopback relay in front of the emulator counting the bytes each way.
struct Relay {
    endpoint: String,
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    open: Arc<AtomicU64>,
}

impl Relay {
    async fn start(upstream: &str) -> Relay {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let counters = [Arc::<AtomicU64>::default(), Arc::default(), Arc::default()];
        let [sent, received, open] = counters.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (sent, received, open, upstream) = (sent.clone(), received.clone(), open.clone(), upstream.clone());
                open.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                    if let Ok((up, down)) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
                        sent.fetch_add(up, Ordering::SeqCst);
                        received.fetch_add(down, Ordering::SeqCst);
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        let [sent, received, open] = counters;
        Relay { endpoint, sent, received, open }
    }

    /// Bytes (sent, received) since the last call, once every connection is closed.
    async fn take(&self) -> (u64, u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.open.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(self.open.load(Ordering::SeqCst), 0, "a connection to the emulator is still open");
        (self.sent.swap(0, Ordering::SeqCst), self.received.swap(0, Ordering::SeqCst))
    }
}

/// A fleet AMI (tag clawdinator=true).
pub(crate) async fn fleet_ami(env: &Env) -> String {
    let ec2 = env.aws.ec2();
    let volume = ec2.create_volume().availability_zone("us-east-1a").size(8).send().await.unwrap();
    let snap = ec2.create_snapshot().volume_id(volume.volume_id().unwrap()).send().await.unwrap();
    let image = env.register_ami("fleet-1", snap.snapshot_id().unwrap(), "/dev/xvda").await;
    let tag = Tag::builder().key("clawdinator").value("true").build();
    ec2.create_tags().resources(&image).tags(tag).send().await.unwrap();
    image
}

/// One running instance per entry of a registry of `count` (clawdinator-1…),
/// tagged with `revision`, as `fleet deploy` and `fleet switch` leave them.
pub(crate) async fn launch_fleet(env: &Env, ami: &str, count: usize, revision: &str) {
    let launch = |n: usize| async move {
        let tags = [("Name", format!("clawdinator-{n}")), ("app", "clawdinator".into()), (TAG_REV, revision.into())];
        let tags = tags.into_iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect();
        let spec = TagSpecification::builder().resource_type(ResourceType::Instance).set_tags(Some(tags)).build();
        let run = env.aws.ec2().run_instances().image_id(ami).instance_type("t3.large".into());
        run.min_count(1).max_count(1).tag_specifications(spec).send().await.unwrap();
    };
    futures::stream::iter(1..=count).map(launch).buffer_unordered(8).collect::<Vec<()>>().await;
}

const TAG_REV: &str = "clawdinator:deployed-revision";

/// The CLI against the emulator through `relay`; its JSON report, how long
/// it took, and the AWS calls it made, per operation.
async fn run(env: &Env, relay: &Relay, args: &[&str]) -> (Value, Duration, BTreeMap<String, usize>) {
    env.emulator.start_call_log().unwrap();
    let started = Instant::now();
    let mut cli = env.cli(env!("CARGO_BIN_EXE_clawdinator"));
    cli.args(args).env("AWS_ENDPOINT_URL", &relay.endpoint).stdin(std::process::Stdio::null());
    let out = tokio::task::spawn_blocking(move || cli.output().unwrap()).await.unwrap();
    let took = started.elapsed();
    let said = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{args:?} failed:\n{said}");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {said}"));
    let mut calls = BTreeMap::new();
    for call in env.emulator.calls().unwrap() {
        let name = format!("{} {}", call["service"].as_str().unwrap_or(""), call["operation"].as_str().unwrap_or(""));
        *calls.entry(name).or_insert(0) += 1;
    }
    (report, took, calls)
}

/// No operation is called once per host: each is a listing, a page of one
/// or a single read.
fn assert_no_call_per_host(command: &str, calls: &BTreeMap<String, usize>) {
    let per_host: Vec<_> = calls.iter().filter(|(_, n)| **n >= HOSTS / 10).collect();
    assert!(per_host.is_empty(), "{command} calls AWS per host where one listing would do: {calls:?}");
}

fn print_figures(command: &str, took: Duration, calls: &BTreeMap<String, usize>, (sent, received): (u64, u64)) {
    let requests: usize = calls.values().sum();
    println!(
        "{command} over {HOSTS} hosts: {:.2} s, {requests} requests {calls:?}, {sent} bytes sent and {received} received ({:.0} and {:.0} per host)",
        took.as_secs_f64(),
        sent as f64 / HOSTS as f64,
        received as f64 / HOSTS as f64
    );
}

/// The fleet: a registry of 300, a fleet AMI, one running instance per
/// entry at REV, and the relay the commands go through.
struct Fleet {
    env: Env,
    registry: String,
    names: Vec<String>,
    relay: Relay,
}

async fn fleet() -> Fleet {
    let env = env().await;
    let path = env.path("nix/instances.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let names = testkit::fixtures::write_registry(&path, HOSTS).unwrap();
    let ami = fleet_ami(&env).await;
    launch_fleet(&env, &ami, HOSTS, REV).await;
    let relay = Relay::start(&env.emulator.endpoint()).await;
    Fleet { registry: path.to_str().unwrap().to_string(), env, names, relay }
}

#[tokio::test(flavor = "multi_thread")]
async fn status_over_300_hosts_reports_every_host_with_a_listing_not_a_call_per_host() {
    let Fleet { env, registry, names, relay } = fleet().await;
    let (report, took, calls) = run(&env, &relay, &["--json", "fleet", "status", "--instances", &registry]).await;
    print_figures("fleet status", took, &calls, relay.take().await);
    let instances = report["instances"].as_array().unwrap();
    let reported: Vec<&str> = instances.iter().map(|i| i["name"].as_str().unwrap()).collect();
    let mut want: Vec<&str> = names.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(reported, want, "every host, once, in name order");
    assert!(instances.iter().all(|i| i["ssmOnline"] == true && i["revision"] == REV), "{report}");
    assert_eq!(report["drift"], serde_json::json!([]));
    assert!(took < LIMIT, "fleet status took {took:?} for {HOSTS} hosts");
    assert_eq!(calls.get("ssm DescribeInstanceInformation"), Some(&HOSTS.div_ceil(SSM_IDS_PER_CALL)), "{calls:?}");
    // Pages of 1,000, the most EC2 gives, each followed.
    assert_eq!(calls.get("ec2 DescribeInstances"), Some(&HOSTS.div_ceil(1000)), "{calls:?}");
    assert_no_call_per_host("fleet status", &calls);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_switch_dry_run_over_300_hosts_plans_every_host_from_one_listing() {
    let Fleet { env, registry, names, relay } = fleet().await;
    let systems: BTreeMap<String, String> =
        names.iter().map(|n| (n.clone(), format!("/nix/store/{}-nixos-system-{n}-26.05", "a".repeat(32)))).collect();
    let hosts: Vec<(&str, &str)> = systems.iter().map(|(n, s)| (n.as_str(), s.as_str())).collect();
    crate::host::switch::put_release(&env, NEXT, &hosts).await;
    let args = ["--json", "fleet", "switch", NEXT, "--dry-run", "--parallel", "10", "--instances", &registry];
    let (report, took, calls) = run(&env, &relay, &[&args[..], &["--bucket", &env.bucket]].concat()).await;
    print_figures("fleet switch --dry-run", took, &calls, relay.take().await);
    let waves: Vec<usize> = report["waves"].as_array().unwrap().iter().map(|w| w.as_array().unwrap().len()).collect();
    assert_eq!(waves.len(), 1 + (HOSTS - 1).div_ceil(10), "{waves:?}");
    assert!(waves[0] == 1 && waves[1..].iter().all(|w| *w <= 10), "the canary alone, then tens: {waves:?}");
    let planned = report["hosts"].as_array().unwrap();
    assert_eq!(planned.len(), HOSTS);
    for host in planned {
        let name = host["name"].as_str().unwrap();
        assert_eq!(host["outcome"], "would-switch", "{host}");
        assert_eq!(host["system"].as_str(), Some(systems[name].as_str()), "{host}");
        assert!(host["instanceId"].as_str().is_some_and(|id| id.starts_with("i-")), "{host}");
    }
    assert!(took < LIMIT, "fleet switch --dry-run took {took:?} for {HOSTS} hosts");
    assert_no_call_per_host("fleet switch --dry-run", &calls);
}
