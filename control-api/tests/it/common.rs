//! What the control API's tests share: a loopback GitHub, the registry and
//! operators, and function URL events.

#![allow(dead_code)]

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TimeToLiveSpecification,
};
use clawdinator_control_api::cooldown::{Clock, Cooldowns};
use clawdinator_control_api::Config;
use serde_json::Value;

/// The installation token the loopback GitHub hands out.
pub const MINTED: &str = "ghs_minted_by_the_loopback_github";

/// What GitHub received: (path, authorization, JSON body) per request.
pub type Dispatches = Arc<Mutex<Vec<(String, String, Value)>>>;

/// GitHub: records each request (path, authorization, body); answers an
/// installation token request with [`MINTED`], anything else (a dispatch) 204.
pub fn github() -> (String, Dispatches) {
    github_failing_when(Arc::default())
}

/// [`github`], answering a dispatch 500 while `failing` is set.
pub fn github_failing_when(failing: Arc<AtomicBool>) -> (String, Dispatches) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let request = testkit::loopback::read_http_request(&mut stream).unwrap();
            let body = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
            log.lock().unwrap().push((request.target().1.to_string(), request.header("authorization"), body));
            let minting = log.lock().unwrap().last().is_some_and(|(path, _, _)| path.ends_with("/access_tokens"));
            let answer = if minting {
                let body = format!(r#"{{"token":"{MINTED}","expires_at":"2099-01-01T00:00:00Z"}}"#);
                format!("HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
            } else if failing.load(Ordering::SeqCst) {
                let body = r#"{"message":"Server Error"}"#;
                format!("HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
            } else {
                "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_string()
            };
            stream.write_all(answer.as_bytes()).unwrap();
        }
    });
    (url, seen)
}

/// The cooldown table's name, as OpenTofu sets it (control_api.tf).
pub const COOLDOWN_TABLE: &str = "clawdinator-control-api-cooldown";

/// The cooldown table as OpenTofu creates it: hash key `key`, TTL on `expires`.
pub async fn cooldown_table(aws: &clawdinator::aws::Aws) {
    let attribute = |name: &str| {
        AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build().unwrap()
    };
    aws.dynamodb()
        .create_table()
        .table_name(COOLDOWN_TABLE)
        .attribute_definitions(attribute("key"))
        .key_schema(KeySchemaElement::builder().attribute_name("key").key_type(KeyType::Hash).build().unwrap())
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    let ttl = TimeToLiveSpecification::builder().attribute_name("expires").enabled(true).build().unwrap();
    aws.dynamodb()
        .update_time_to_live()
        .table_name(COOLDOWN_TABLE)
        .time_to_live_specification(ttl)
        .send()
        .await
        .unwrap();
}

/// A clock the test moves: time passes only when it says so.
#[derive(Clone)]
pub struct TestClock(Arc<AtomicI64>);

impl TestClock {
    /// Starts at the real time, so that the items look like real ones.
    pub fn new() -> TestClock {
        TestClock(Arc::new(AtomicI64::new(clawdinator::clock::unix_seconds() as i64)))
    }
    pub fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
    pub fn clock(&self) -> Clock {
        let now = self.0.clone();
        Arc::new(move || now.load(Ordering::SeqCst))
    }
}

/// The cooldowns in the emulator's table, at the default lengths, on `clock`.
pub fn cooldowns(aws: &clawdinator::aws::Aws, clock: &TestClock) -> Cooldowns {
    Cooldowns { clock: clock.clock(), ..Cooldowns::new(aws, COOLDOWN_TABLE) }
}

pub fn config(cooldowns: Cooldowns) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("instances.json");
    testkit::fixtures::write_registry(&path, 3).unwrap();
    Config {
        registry: clawdinator::registry::Registry::load(&path).unwrap(),
        operators: vec![
            "arn:aws:iam::123456789012:user/alice".into(),
            "arn:aws:iam::123456789012:role/fleet-operators".into(),
        ],
        account: "123456789012".into(),
        cooldowns,
    }
}

/// A function URL (payload 2.0) event, signed by `arn` when given.
pub fn event(arn: Option<&str>, body: Value) -> lambda_http::Request {
    let raw = testkit::loopback::function_url_event(arn, &body);
    let request: lambda_http::request::LambdaRequest = serde_json::from_value(raw).unwrap();
    request.into()
}

/// The audit records in `bucket`, checked as `audit verify` checks them, in time order.
pub async fn audit_records(aws: &clawdinator::aws::Aws, bucket: &str) -> (Vec<Value>, clawdinator::audit::Chains) {
    let lines = clawdinator::audit::bucket_lines(aws, bucket).await.unwrap();
    let chains = clawdinator::audit::verify_copies("test", &lines).unwrap();
    let mut records: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    records.sort_by(|a, b| a["time"].as_str().cmp(&b["time"].as_str()));
    (records, chains)
}
