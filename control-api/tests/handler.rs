//! The handler in process, with function-URL events carrying IAM request
//! contexts, and a loopback server playing GitHub that checks each
//! dispatch: its workflow, ref and inputs, and the installation token.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use clawdinator_control_api::{handle, Config, Fleet, Workflow};
use serde_json::{json, Value};

const TOKEN: &str = "ghs_installation_token_for_test";

/// What GitHub received: (path, authorization, JSON body) per request.
type Dispatches = Arc<Mutex<Vec<(String, String, Value)>>>;

/// GitHub: records each dispatch (path, authorization, body), answers 204.
fn github() -> (String, Dispatches) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut data = Vec::new();
            let mut buf = [0u8; 8192];
            loop {
                let n = stream.read(&mut buf).unwrap();
                data.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&data).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        let path = head.split_whitespace().nth(1).unwrap().to_string();
                        let auth = head
                            .lines()
                            .find_map(|l| {
                                l.strip_prefix("authorization: ").or_else(|| l.strip_prefix("Authorization: "))
                            })
                            .unwrap_or("")
                            .to_string();
                        log.lock().unwrap().push((path, auth, serde_json::from_str(body).unwrap_or(Value::Null)));
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            stream.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n").unwrap();
        }
    });
    (url, seen)
}

struct TestFleet {
    workflow: Workflow,
}

impl Fleet for TestFleet {
    async fn status(&self) -> Result<Value> {
        Ok(json!({"drift": []}))
    }
    async fn dispatch(&self, target: &str, ami: Option<&str>, caller: &str) -> Result<()> {
        self.workflow.dispatch(TOKEN, target, ami, caller).await
    }
}

fn config() -> Config {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("instances.json");
    xtask::dev::fixtures::write_registry(&path, 3).unwrap();
    Config {
        registry: xtask::fleet::Registry::load(&path).unwrap(),
        operators: vec![
            "arn:aws:iam::123456789012:user/alice".into(),
            "arn:aws:iam::123456789012:role/fleet-operators".into(),
        ],
    }
}

/// A function URL (payload 2.0) event, signed by `arn` when given.
fn event(arn: Option<&str>, body: Value) -> lambda_http::Request {
    let mut context = json!({
        "accountId": "123456789012", "apiId": "abc", "domainName": "abc.lambda-url.eu-central-1.on.aws",
        "domainPrefix": "abc", "http": {"method": "POST", "path": "/", "protocol": "HTTP/1.1", "sourceIp": "10.0.0.1", "userAgent": "test"},
        "requestId": "r", "routeKey": "$default", "stage": "$default", "time": "21/Nov/2026:22:00:00 +0000", "timeEpoch": 1795000000000u64
    });
    if let Some(arn) = arn {
        context["authorizer"] = json!({"iam": {"accessKey": "ASIA", "accountId": "123456789012", "callerId": "AROA:x", "userArn": arn, "userId": "AROA:x"}});
    }
    let raw = json!({
        "version": "2.0", "routeKey": "$default", "rawPath": "/", "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "abc.lambda-url.eu-central-1.on.aws"},
        "requestContext": context, "body": body.to_string(), "isBase64Encoded": false
    });
    let request: lambda_http::request::LambdaRequest = serde_json::from_value(raw).unwrap();
    request.into()
}

const BOT1: &str = "arn:aws:sts::123456789012:assumed-role/clawdinator-instance-clawdinator-1/i-0123456789abcdef0";

async fn call(arn: Option<&str>, body: Value) -> (u16, Value, Vec<(String, String, Value)>) {
    let (url, seen) = github();
    let fleet = TestFleet {
        workflow: Workflow {
            api_url: url,
            repo: "openclaw/clawdinators".into(),
            workflow: "fleet-deploy.yml".into(),
            git_ref: "main".into(),
        },
    };
    let response = handle(&config(), &fleet, event(arn, body)).await;
    let status = response.status().as_u16();
    let text = match response.body() {
        lambda_http::Body::Text(t) => t.clone(),
        other => String::from_utf8_lossy(other.as_ref()).into_owned(),
    };
    let seen = seen.lock().unwrap().clone();
    (status, serde_json::from_str(&text).unwrap(), seen)
}

#[tokio::test]
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
        &json!({"ref": "main", "inputs": {"target": "all", "ami_override": "", "caller": "arn:aws:iam::123456789012:user/alice"}})
    );
}

#[tokio::test]
async fn a_bot_deploys_another_instance_as_itself_whatever_the_body_claims() {
    let (status, body, seen) = call(
        Some(BOT1),
        json!({"action": "deploy", "target": "clawdinator-2", "ami": "ami-0123456789abcdef0", "caller": "alice"}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        seen[0].2["inputs"],
        json!({"target": "clawdinator-2", "ami_override": "ami-0123456789abcdef0", "caller": "clawdinator-1"})
    );
}

#[tokio::test]
async fn an_operator_role_session_may_deploy() {
    let arn = "arn:aws:sts::123456789012:assumed-role/fleet-operators/alice";
    let (status, _, seen) = call(Some(arn), json!({"action": "deploy", "target": "clawdinator-1"})).await;
    assert_eq!((status, seen.len()), (202, 1));
}

#[tokio::test]
async fn refusals_say_why_and_dispatch_nothing() {
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
        (Some(BOT1), json!({"action": "reboot"}), 400, "expected"),
    ] {
        let (status, body, seen) = call(arn, body).await;
        assert_eq!(status, want, "{arn:?}: {body}");
        assert!(body["error"].as_str().unwrap().contains(says), "{arn:?}: {body}");
        assert!(seen.is_empty(), "{arn:?}: dispatched anyway");
    }
}

#[tokio::test]
async fn a_bot_may_ask_for_status() {
    let (status, body, _) = call(Some(BOT1), json!({"action": "status"})).await;
    assert_eq!((status, body), (200, json!({"drift": []})));
}
