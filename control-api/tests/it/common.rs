//! What the control API's tests share: a loopback GitHub, the registry and
//! operators, and function URL events.

#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use clawdinator_control_api::Config;
use serde_json::Value;

/// The installation token the loopback GitHub hands out.
pub const MINTED: &str = "ghs_minted_by_the_loopback_github";

/// What GitHub received: (path, authorization, JSON body) per request.
pub type Dispatches = Arc<Mutex<Vec<(String, String, Value)>>>;

/// GitHub: records each request (path, authorization, body); answers an
/// installation token request with [`MINTED`], anything else (a dispatch) 204.
pub fn github() -> (String, Dispatches) {
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
            } else {
                "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_string()
            };
            stream.write_all(answer.as_bytes()).unwrap();
        }
    });
    (url, seen)
}

pub fn config() -> Config {
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
