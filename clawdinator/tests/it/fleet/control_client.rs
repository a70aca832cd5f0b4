//! The control client signs with SigV4: a loopback server recomputes the
//! signature from what it received, with the same credentials and time,
//! and accepts only an exact match; a tampered body does not match.

use std::io::{Read, Write};

use aws_credential_types::Credentials;

pub(super) const KEY_ID: &str = "AKIDEXAMPLE";
pub(super) const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn creds() -> Credentials {
    Credentials::new(KEY_ID, SECRET, None, None, "test")
}

/// Recompute the Authorization header for what the server received.
fn expected_authorization(url: &str, body: &[u8], date: &str) -> String {
    testkit::fixtures::sigv4_authorization(url, body, date, creds(), "eu-central-1").unwrap()
}

/// Serves one request: 202 with {"ok": true} when its signature is exact, 403 otherwise.
pub(super) fn verifying_server() -> (String, std::thread::JoinHandle<(String, String)>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let base = url.clone();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let request = testkit::loopback::read_http_request(&mut stream).unwrap();
        let body = String::from_utf8(request.body.clone()).unwrap();
        let header = |name: &str| request.header(name);
        let expected = expected_authorization(&base, body.as_bytes(), &header("x-amz-date"));
        let ok = header("authorization") == expected;
        let (status, answer) = if ok {
            ("202 Accepted", r#"{"ok":true}"#)
        } else {
            ("403 Forbidden", r#"{"error":"signature mismatch"}"#)
        };
        write!(stream, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}", answer.len()).unwrap();
        (body, header("authorization"))
    });
    (url, handle)
}

fn client(url: &str, args: &[&str], instance: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_clawdinator"))
        .args(["--json", "--region", "eu-central-1", "fleet", "control"])
        .args(args)
        .args(["--url", url, "--instance-file"])
        .arg(instance)
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .unwrap()
}

#[test]
fn the_api_accepts_exactly_the_signature_it_recomputes() {
    let dir = tempfile::tempdir().unwrap();
    let instance = dir.path().join("instance-name");
    std::fs::write(&instance, "clawdinator-1\n").unwrap();
    let (url, server) = verifying_server();
    let out = client(&url, &["deploy", "clawdinator-2", "--ami", "ami-0123456789abcdef0"], &instance);
    let (body, authorization) = server.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        authorization.starts_with(&format!("AWS4-HMAC-SHA256 Credential={KEY_ID}/"))
            && authorization.contains("/eu-central-1/lambda/aws4_request"),
        "{authorization}"
    );
    let sent: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        sent,
        serde_json::json!({"action": "deploy", "target": "clawdinator-2", "ami": "ami-0123456789abcdef0"})
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(SECRET)
            && !String::from_utf8_lossy(&out.stderr).contains(SECRET)
    );
}

#[test]
fn a_tampered_body_does_not_match_and_the_refusal_reason_is_printed() {
    let url = "https://abc.lambda-url.eu-central-1.on.aws/";
    let signed = expected_authorization(url, br#"{"action":"status"}"#, "20261121T233500Z");
    let tampered = expected_authorization(url, br#"{"action":"deploy","target":"all"}"#, "20261121T233500Z");
    assert_ne!(signed, tampered);

    // The server answers 403 with its reason; the client says it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 8192];
        let _ = stream.read(&mut buf).unwrap();
        let answer = r#"{"error":"clawdinator-1 may not deploy all"}"#;
        write!(
            stream,
            "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
            answer.len()
        )
        .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let out = client(&url, &["status"], &dir.path().join("none"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("may not deploy all"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_self_deploy_is_refused_before_any_call() {
    let dir = tempfile::tempdir().unwrap();
    let instance = dir.path().join("instance-name");
    std::fs::write(&instance, "clawdinator-1").unwrap();
    for target in ["clawdinator-1", "all"] {
        let out = client("http://127.0.0.1:9/", &["deploy", target], &instance);
        assert_eq!(out.status.code(), Some(2), "{target}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("may not deploy"), "{target}");
    }
}
