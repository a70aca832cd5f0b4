//! What the control API's tests share: a loopback GitHub, the registry and
//! operators, and function URL events.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use clawdinator_control_api::Config;
use serde_json::{json, Value};

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
pub fn event(arn: Option<&str>, body: Value) -> lambda_http::Request {
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
