//! The handler in process, with function-URL events carrying IAM request
//! contexts, and a loopback server playing GitHub that checks each
//! dispatch: its workflow, ref and inputs, and the installation token.
//! Every request's records land in the emulator's S3, and the audit
//! trail's own check must accept them.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::common::{config, cooldown_table, cooldowns, event, github, Dispatches, TestClock};
use anyhow::Result;
use clawdinator_control_api::{handle, Audit, Config, Fleet, Lane, Workflow};
use serde_json::{json, Value};

const TOKEN: &str = "ghs_installation_token_for_test";

pub(crate) struct TestFleet {
    workflow: Workflow,
    /// GitHub cannot be reached: the dispatch fails.
    pub(crate) broken: AtomicBool,
}

impl Fleet for TestFleet {
    async fn status(&self) -> Result<Value> {
        Ok(json!({"drift": []}))
    }
    async fn dispatch(&self, target: &str, ami: Option<&str>, caller: &str, lane: Lane) -> Result<()> {
        if self.broken.load(Ordering::SeqCst) {
            // Nothing listens on port 1: the request fails as an unreachable GitHub does.
            let down = Workflow { api_url: "http://127.0.0.1:1".into(), ..self.workflow.clone() };
            return down.dispatch(TOKEN, target, ami, caller, lane).await;
        }
        self.workflow.dispatch(TOKEN, target, ami, caller, lane).await
    }
}

pub(crate) const BOT1: &str =
    "arn:aws:sts::123456789012:assumed-role/clawdinator-instance-clawdinator-1/i-0123456789abcdef0";

const AUDIT_BUCKET: &str = "clawdinator-audit";

/// One answer: its status, `Retry-After` header and JSON body.
pub(crate) struct Answer {
    pub status: u16,
    pub retry_after: Option<i64>,
    pub body: Value,
}

/// The handler with its audit trail in the emulator's S3, its cooldowns in
/// the emulator's DynamoDB on a clock the test moves, and GitHub on loopback.
pub(crate) struct Api {
    pub emulator: testkit::emulator::Emulator,
    pub aws: clawdinator::aws::Aws,
    pub audit: Audit,
    pub fleet: TestFleet,
    pub clock: TestClock,
    seen: Dispatches,
}

impl Api {
    pub async fn start() -> Api {
        let emulator = testkit::emulator::Emulator::start().unwrap();
        let aws = clawdinator::aws::Aws::load(&clawdinator::aws::Settings::local(&emulator.endpoint())).await.unwrap();
        aws.s3().create_bucket().bucket(AUDIT_BUCKET).send().await.unwrap();
        cooldown_table(&aws).await;
        let audit =
            Audit { aws: aws.clone(), chain: clawdinator::audit::BucketChain::new(AUDIT_BUCKET, "control-api") };
        let (url, seen) = github();
        let workflow = Workflow {
            api_url: url,
            repo: "openclaw/clawdinators".into(),
            workflow: "fleet-deploy.yml".into(),
            git_ref: "main".into(),
        };
        let fleet = TestFleet { workflow, broken: AtomicBool::new(false) };
        Api { emulator, aws, audit, fleet, clock: TestClock::new(), seen }
    }

    /// The configuration a container starts with; each request gets a new one.
    pub fn config(&self) -> Config {
        config(cooldowns(&self.aws, &self.clock))
    }

    /// One request under `config`, without taking what GitHub received.
    pub async fn request_with(&self, config: &Config, arn: Option<&str>, body: Value) -> Answer {
        let response = handle(config, &self.fleet, &self.audit, event(arn, body)).await;
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().parse().unwrap());
        let text = match response.body() {
            lambda_http::Body::Text(t) => t.clone(),
            other => String::from_utf8_lossy(other.as_ref()).into_owned(),
        };
        Answer { status, retry_after, body: serde_json::from_str(&text).unwrap() }
    }

    pub async fn request(&self, arn: Option<&str>, body: Value) -> Answer {
        self.request_with(&self.config(), arn, body).await
    }

    /// What GitHub received since the last look.
    pub fn dispatches(&self) -> Vec<(String, String, Value)> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    /// One request: the status, the answer and what GitHub received for it.
    pub async fn call(&self, arn: Option<&str>, body: Value) -> (u16, Value, Vec<(String, String, Value)>) {
        let answer = self.request(arn, body).await;
        (answer.status, answer.body, self.dispatches())
    }

    /// The audit records in S3, checked as the trail checks them.
    pub async fn records(&self) -> (Vec<Value>, clawdinator::audit::Chains) {
        crate::common::audit_records(&self.aws, AUDIT_BUCKET).await
    }
}

async fn call(arn: Option<&str>, body: Value) -> (u16, Value, Vec<(String, String, Value)>) {
    Api::start().await.call(arn, body).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_human_deploys_all() {
    let (status, body, seen) =
        call(Some("arn:aws:iam::123456789012:user/alice"), json!({"action": "deploy", "target": "all"})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(seen.len(), 1);
    let (path, auth, dispatch) = &seen[0];
    assert_eq!(path, "/repos/openclaw/clawdinators/actions/workflows/fleet-deploy.yml/dispatches");
    assert_eq!(auth, &format!("Bearer {TOKEN}"));
    assert_eq!(
        dispatch,
        &json!({"ref": "main", "inputs": {"target": "all", "ami_override": "", "caller": "arn:aws:iam::123456789012:user/alice", "lane": "operator"}})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bot_deploys_another_instance_as_itself_whatever_the_body_claims() {
    let (status, body, seen) = call(
        Some(BOT1),
        json!({"action": "deploy", "target": "clawdinator-2", "ami": "ami-0123456789abcdef0", "caller": "alice"}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        seen[0].2["inputs"],
        json!({"target": "clawdinator-2", "ami_override": "ami-0123456789abcdef0", "caller": "clawdinator-1", "lane": "bot"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_role_session_may_deploy() {
    let arn = "arn:aws:sts::123456789012:assumed-role/fleet-operators/alice";
    let (status, _, seen) = call(Some(arn), json!({"action": "deploy", "target": "clawdinator-1"})).await;
    assert_eq!((status, seen.len()), (202, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_say_why_and_dispatch_nothing() {
    let api = Api::start().await;
    for (arn, body, want, says) in [
        (Some(BOT1), json!({"action": "deploy", "target": "clawdinator-1"}), 403, "may not deploy itself"),
        (Some(BOT1), json!({"action": "deploy", "target": "all"}), 403, "may not deploy all"),
        (
            Some("arn:aws:iam::123456789012:user/alice"),
            json!({"action": "deploy", "target": "clawdinator-9"}),
            400,
            "unknown target",
        ),
        (None, json!({"action": "status"}), 401, "no IAM caller"),
        (Some("not-an-arn"), json!({"action": "status"}), 401, "not an IAM principal"),
        (
            Some("arn:aws:iam::123456789012:user/mallory"),
            json!({"action": "status"}),
            403,
            "neither a fleet instance nor an operator",
        ),
        (
            Some("arn:aws:sts::123456789012:assumed-role/clawdinator-instance-clawdinator-7/i-1"),
            json!({"action": "status"}),
            403,
            "not an instance",
        ),
        (
            // The same role name in another account: not one of this fleet's instances.
            Some("arn:aws:sts::999999999999:assumed-role/clawdinator-instance-clawdinator-1/i-1"),
            json!({"action": "deploy", "target": "clawdinator-2"}),
            403,
            "not of the fleet's",
        ),
        (Some(BOT1), json!({"action": "reboot"}), 400, "expected"),
    ] {
        let (status, body, seen) = api.call(arn, body).await;
        assert_eq!(status, want, "{arn:?}: {body}");
        assert!(body["error"].as_str().unwrap().contains(says), "{arn:?}: {body}");
        assert!(seen.is_empty(), "{arn:?}: dispatched anyway");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bot_may_ask_for_status() {
    let (status, body, _) = call(Some(BOT1), json!({"action": "status"})).await;
    assert_eq!((status, body), (200, json!({"drift": []})));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_and_decision_is_in_the_audit_trail() {
    let api = Api::start().await;
    let alice = "arn:aws:iam::123456789012:user/alice";
    assert_eq!(api.call(Some(alice), json!({"action": "deploy", "target": "all"})).await.0, 202);
    assert_eq!(api.call(Some(BOT1), json!({"action": "deploy", "target": "clawdinator-1"})).await.0, 403);
    assert_eq!(api.call(None, json!({"action": "status"})).await.0, 401);
    assert_eq!(api.call(Some(BOT1), json!({"nonsense": true})).await.0, 400);
    let (records, chains) = api.records().await;
    // One container: one chain, two records per request, in order.
    assert_eq!(chains, clawdinator::audit::Chains { records: 8, chains: 1 });
    let summary: Vec<(&str, &str, &str)> = records
        .iter()
        .map(|r| (r["caller"].as_str().unwrap(), r["phase"].as_str().unwrap(), r["result"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(summary[0], (alice, "started", ""));
    assert_eq!(summary[1], (alice, "finished", "202: ok"));
    assert_eq!(records[0]["args"], json!(["deploy", "all"]));
    assert_eq!(records[0]["targets"], json!(["all"]));
    assert_eq!(summary[3].0, BOT1);
    assert!(summary[3].2.starts_with("403: clawdinator-1 may not deploy itself"), "{:?}", summary[3]);
    assert_eq!(
        (summary[5].0, summary[5].2),
        ("(unsigned)", "401: no IAM caller in the request context: call the function URL signed (AWS_IAM)")
    );
    assert_eq!(records[6]["args"], json!(["(a body that is not an action)"]));
    assert!(records.iter().all(|r| r["command"] == "control-api"));
    // Under the one prefix the function's role may write to (OpenTofu's control_api.tf).
    let listed = api.aws.s3().list_objects_v2().bucket(AUDIT_BUCKET).send().await.unwrap();
    assert_eq!(listed.contents().len(), 8);
    assert!(listed.contents().iter().all(|o| o.key().unwrap().starts_with("audit/control-api/2")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_cannot_be_recorded_is_refused_nothing_is_dispatched_and_asking_again_works() {
    let api = Api::start().await;
    api.emulator
        .inject(json!([{"operation": "PutObject", "times": -1, "status": 503, "code": "SlowDown", "message": "Please reduce your request rate."}]))
        .unwrap();
    let (status, body, seen) =
        api.call(Some("arn:aws:iam::123456789012:user/alice"), json!({"action": "deploy", "target": "all"})).await;
    assert_eq!(status, 503, "{body}");
    let reason = body["error"].as_str().unwrap();
    assert!(reason.contains("nothing was done") && reason.contains(AUDIT_BUCKET), "{reason}");
    assert!(seen.is_empty(), "dispatched without a record");
    api.emulator.clear_faults().unwrap();
    assert_eq!(api.records().await.1.records, 0);

    // Asked again once S3 takes writes: done once, recorded once.
    let (status, body, seen) =
        api.call(Some("arn:aws:iam::123456789012:user/alice"), json!({"action": "deploy", "target": "all"})).await;
    assert_eq!((status, seen.len()), (202, 1), "{body}");
    assert_eq!(api.records().await.1, clawdinator::audit::Chains { records: 2, chains: 1 });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_answer_record_is_reported_and_the_next_request_starts_a_new_chain() {
    let api = Api::start().await;
    let alice = "arn:aws:iam::123456789012:user/alice";
    // The `started` record is written; the `finished` one fails (every retry).
    api.emulator
        .inject(json!([{"operation": "PutObject", "after": 1, "times": 3, "status": 500, "code": "InternalError", "message": "We encountered an internal error."}]))
        .unwrap();
    let (status, body, seen) = api.call(Some(alice), json!({"action": "deploy", "target": "clawdinator-2"})).await;
    assert_eq!((status, seen.len()), (202, 1), "{body}");
    assert!(body["auditWarning"].as_str().unwrap().contains("could not be recorded"), "{body}");
    // Had S3 stored the failed write after all, chaining on would fork the
    // chain: the container starts a new one instead.
    assert_eq!(api.call(Some(alice), json!({"action": "status"})).await.0, 200);
    let (records, chains) = api.records().await;
    assert_eq!(chains, clawdinator::audit::Chains { records: 3, chains: 2 });
    assert_eq!(records[1]["prev"], clawdinator::audit::GENESIS);
}
