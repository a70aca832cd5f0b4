//! The handler under load: 200 requests at once, valid, malformed,
//! unauthorised and repeated, in three rounds (the cooldowns' clock moved
//! past their end between rounds, so that each round asks the same of a
//! free fleet). Every answer has the status its request deserves, nothing
//! panics, no target is deployed twice within its cooldown (counted where
//! the dispatches land: the loopback GitHub), the audit chain holds every
//! request, and memory stays bounded: the process's peak resident set, and
//! no growth from round to round.
//!
//! Resident memory is the whole process's, so the load runs in a process
//! of its own: the test runs itself again (the same test binary, this test
//! alone) and reads the figures it measured.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::handler::Api;
use clawdinator_control_api::cooldown::{Cooldowns, TARGET_SECONDS};
use clawdinator_control_api::{handle, Config};
use serde_json::{json, Value};

/// Set in the process that carries the load: the file its figures go to.
const CHILD_ENV: &str = "CLAWDINATOR_LOAD_FIGURES";
const TEST: &str = "load::two_hundred_concurrent_requests_each_get_their_answer_in_bounded_memory";
const INSTANCES: usize = 10;
const ROUNDS: usize = 3;
/// The process's peak resident set may not pass this (the emulator runs in
/// a process of its own): 200 requests carrying 6 MiB of bodies between
/// them, the runtime and the SDK clients fit well below it.
const PEAK_MIB: f64 = 96.0;
/// Resident memory may grow this much from the first round's end to the last's.
const GROWTH_MIB: f64 = 4.0;
/// A body as large as a function URL takes (6 MB payload quota) is refused
/// as malformed without being kept.
const BIG_BODY: usize = 1 << 20;

const ALICE: &str = "arn:aws:iam::123456789012:user/alice";
const OPERATOR_SESSION: &str = "arn:aws:sts::123456789012:assumed-role/fleet-operators/alice";

fn bot(n: usize) -> String {
    format!("arn:aws:sts::123456789012:assumed-role/clawdinator-instance-clawdinator-{n}/i-0{n:016x}")
}

fn deploy(target: &str) -> Value {
    json!({"action": "deploy", "target": target})
}

/// One request and what it must be answered; `Deploy` may be 202 or 429,
/// the counts of each are checked per group.
#[derive(Clone)]
struct Ask {
    arn: Option<String>,
    /// The raw body: malformed ones are not JSON at all.
    body: String,
    expect: Expect,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Expect {
    /// A bot's deploy: one per group goes through, the rest are held (429).
    Deploy(usize),
    Status(u16),
}

fn ask(arn: Option<&str>, body: impl Into<String>, expect: Expect) -> Ask {
    Ask { arn: arn.map(String::from), body: body.into(), expect }
}

/// The 200 requests of a round, and how many 202s each deploy group must get.
fn round() -> (Vec<Ask>, BTreeMap<usize, usize>) {
    let mut asks = Vec::new();
    // Bots 1..6 each ask ten times for their neighbour: one dispatch per bot.
    for n in 1..=6 {
        let target = format!("clawdinator-{}", n + 1);
        asks.extend((0..10).map(|_| ask(Some(&bot(n)), deploy(&target).to_string(), Expect::Deploy(n))));
    }
    // Bots 7 and 8 race for clawdinator-9, five times each: one dispatch in all.
    for n in [7, 8] {
        asks.extend((0..5).map(|_| ask(Some(&bot(n)), deploy("clawdinator-9").to_string(), Expect::Deploy(7))));
    }
    asks.push(ask(Some(ALICE), deploy("clawdinator-10").to_string(), Expect::Status(202)));
    let status = json!({"action": "status"}).to_string();
    asks.extend((0..20).map(|_| ask(Some(ALICE), status.clone(), Expect::Status(200))));
    asks.extend((0..10).map(|_| ask(Some(OPERATOR_SESSION), status.clone(), Expect::Status(200))));
    asks.extend((0..19).map(|i| ask(Some(&bot(1 + i % INSTANCES)), status.clone(), Expect::Status(200))));
    asks.extend(malformed());
    asks.extend(unauthorised());
    let groups = BTreeMap::from([(1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1), (7, 1)]);
    (asks, groups)
}

/// 40 bodies that are not an action, from signed callers: 400 each.
fn malformed() -> Vec<Ask> {
    let big = "x".repeat(BIG_BODY);
    let bodies = [
        "{\"action\": \"deploy\", \"target\":".to_string(),
        json!({"action": "deploy"}).to_string(),
        json!({"action": "reboot"}).to_string(),
        json!({"action": "deploy", "target": 7}).to_string(),
        "[]".to_string(),
        String::new(),
        "\u{0}\u{1}not json".to_string(),
        big,
    ];
    let callers = [bot(3), ALICE.to_string(), OPERATOR_SESSION.to_string(), bot(9), bot(10)];
    (0..40).map(|i| ask(Some(&callers[i % 5]), bodies[i % bodies.len()].clone(), Expect::Status(400))).collect()
}

/// 40 requests from strangers, unsigned ones and bots asking for what they may not.
fn unauthorised() -> Vec<Ask> {
    let status = json!({"action": "status"}).to_string();
    let cases: [(Option<String>, String, u16); 8] = [
        (None, status.clone(), 401),
        (Some("not-an-arn".into()), status.clone(), 401),
        (Some("arn:aws:iam::123456789012:user/mallory".into()), deploy("clawdinator-2").to_string(), 403),
        (
            Some("arn:aws:sts::999999999999:assumed-role/clawdinator-instance-clawdinator-1/i-1".into()),
            deploy("clawdinator-2").to_string(),
            403,
        ),
        (Some("arn:aws:sts::123456789012:assumed-role/clawdinator-instance-clawdinator-77/i-1".into()), status, 403),
        (Some(bot(10)), deploy("clawdinator-10").to_string(), 403),
        (Some(bot(9)), deploy("all").to_string(), 403),
        (Some(bot(9)), deploy("clawdinator-99").to_string(), 400),
    ];
    (0..40)
        .map(|i| {
            let (arn, body, status) = &cases[i % cases.len()];
            ask(arn.as_deref(), body.clone(), Expect::Status(*status))
        })
        .collect()
}

/// The function URL event of `ask`, its body as raw as it came.
fn event(ask: &Ask) -> lambda_http::Request {
    let mut raw = testkit::loopback::function_url_event(ask.arn.as_deref(), &Value::Null);
    raw["body"] = Value::String(ask.body.clone());
    let request: lambda_http::request::LambdaRequest = serde_json::from_value(raw).unwrap();
    request.into()
}

/// The registry of [`INSTANCES`], the operators and the cooldowns on the test's clock.
fn config(api: &Api) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("instances.json");
    testkit::fixtures::write_registry(&path, INSTANCES).unwrap();
    Config {
        registry: clawdinator::registry::Registry::load(&path).unwrap(),
        operators: vec![ALICE.into(), "arn:aws:iam::123456789012:role/fleet-operators".into()],
        account: "123456789012".into(),
        cooldowns: Cooldowns { clock: api.clock.clock(), ..Cooldowns::new(&api.aws, crate::common::COOLDOWN_TABLE) },
    }
}

/// One answer: the status, the Retry-After header and the JSON body.
type Answered = (u16, Option<String>, Value);

/// All of a round's requests at once, each in a task of its own: a panic
/// is a failed task, not a lost answer.
async fn fire(api: &Arc<Api>, config: &Arc<Config>, asks: &[Ask]) -> Vec<Answered> {
    let tasks: Vec<_> = asks
        .iter()
        .map(|a| {
            let (api, config, event) = (api.clone(), config.clone(), event(a));
            tokio::spawn(async move {
                let response = handle(&config, &api.fleet, &api.audit, event).await;
                let retry = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
                let body = serde_json::from_slice(response.body().as_ref()).unwrap();
                (response.status().as_u16(), retry, body)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for (n, task) in futures::future::join_all(tasks).await.into_iter().enumerate() {
        answers.push(task.unwrap_or_else(|e| panic!("request {n} ({:?}) panicked: {e}", asks[n].expect)));
    }
    answers
}

/// Every answer is the one its request deserves; a held deploy says which
/// cooldown holds it and for how long.
fn check_answers(asks: &[Ask], answers: &[Answered], groups: &BTreeMap<usize, usize>) {
    let mut granted: BTreeMap<usize, usize> = BTreeMap::new();
    for (ask, (status, retry, body)) in asks.iter().zip(answers) {
        let context = format!("{:?} from {:?}: {status} {body}", ask.expect, ask.arn);
        match ask.expect {
            Expect::Status(want) => assert_eq!(*status, want, "{context}"),
            Expect::Deploy(group) if *status == 202 => *granted.entry(group).or_default() += 1,
            Expect::Deploy(_) => {
                assert_eq!(*status, 429, "{context}");
                assert_eq!(body["cooldown"], "target", "{context}");
                assert_eq!(retry.as_deref(), Some(TARGET_SECONDS.to_string().as_str()), "{context}");
            }
        }
        if *status >= 400 {
            assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{context}: no reason given");
        }
    }
    assert_eq!(&granted, groups, "202s per group of deploys");
}

/// What the loopback GitHub received: each target at most once, in its caller's lane.
fn check_dispatches(api: &Api) {
    let mut per_target: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (_, _, dispatch) in api.dispatches() {
        per_target.entry(dispatch["inputs"]["target"].as_str().unwrap().to_string()).or_default().push(dispatch);
    }
    let twice: Vec<_> = per_target.iter().filter(|(_, d)| d.len() > 1).collect();
    assert!(twice.is_empty(), "deployed twice within the cooldown: {twice:?}");
    let targets: Vec<&str> = per_target.keys().map(String::as_str).collect();
    let mut want: Vec<String> = (2..=7).chain([9, 10]).map(|n| format!("clawdinator-{n}")).collect();
    want.sort();
    assert_eq!(targets, want);
    assert_eq!(per_target["clawdinator-10"][0]["inputs"]["lane"], "operator");
    assert_eq!(per_target["clawdinator-2"][0]["inputs"]["lane"], "bot");
}

/// The process's resident set now and at its peak, in MiB (`/proc/self/status`).
fn resident_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {status}"));
        line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The load itself, in the process of its own; the figures as JSON.
async fn carry_load() -> Value {
    let api = Arc::new(Api::start().await);
    let config = Arc::new(config(&api));
    let (asks, groups) = round();
    assert_eq!(asks.len(), 200);
    let mut after = Vec::new();
    let started = std::time::Instant::now();
    for _ in 0..ROUNDS {
        let answers = fire(&api, &config, &asks).await;
        check_answers(&asks, &answers, &groups);
        check_dispatches(&api);
        after.push(resident_mib().0);
        api.clock.advance(TARGET_SECONDS);
    }
    let seconds = started.elapsed().as_secs_f64();
    let (records, chains) = api.records().await;
    assert_eq!(chains, clawdinator::audit::Chains { records: 2 * 200 * ROUNDS, chains: 1 });
    let dispatched = records.iter().filter(|r| r["result"] == "202: ok").count();
    assert_eq!(dispatched, 8 * ROUNDS, "the audit trail's 202s");
    json!({"requests": 200 * ROUNDS, "seconds": seconds, "residentAfterRoundMib": after, "peakMib": resident_mib().1})
}

/// The test: the load in a process of its own, then its figures checked here.
#[test]
fn two_hundred_concurrent_requests_each_get_their_answer_in_bounded_memory() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        let figures = runtime.block_on(carry_load());
        std::fs::write(path, figures.to_string()).unwrap();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("figures.json");
    let run = std::process::Command::new(std::env::current_exe().unwrap())
        .args([TEST, "--exact", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "the load's process failed:\n{said}");
    let figures: Value = serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| {
        panic!("the load's process wrote no figures ({e}); it said:\n{said}");
    }))
    .unwrap();
    println!("control API under load: {figures}");
    let after: Vec<f64> =
        figures["residentAfterRoundMib"].as_array().unwrap().iter().filter_map(Value::as_f64).collect();
    let growth = after.last().unwrap() - after[0];
    assert!(growth <= GROWTH_MIB, "resident memory grew {growth:.1} MiB from round 1 to round {ROUNDS}: {figures}");
    let peak = figures["peakMib"].as_f64().unwrap();
    assert!(peak <= PEAK_MIB, "peak resident memory {peak:.1} MiB > {PEAK_MIB} MiB: {figures}");
}
