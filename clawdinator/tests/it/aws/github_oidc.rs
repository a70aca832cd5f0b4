//! CI without static keys: with CLAWDINATOR_CI_ROLE_ARN set in a GitHub
//! job, a command fetches GitHub's OIDC token (a loopback server plays the
//! token endpoint and checks the request) and assumes the role with it.

use std::io::{Read, Write};

/// GitHub's token endpoint: answers one request, returns the request line and headers.
fn token_endpoint() -> (String, std::thread::JoinHandle<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/token?api-version=2.0", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 8192];
        let n = stream.read(&mut buf).unwrap();
        let request = String::from_utf8_lossy(&buf[..n]).into_owned();
        let body = r#"{"value":"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXBvOm9wZW5jbGF3L2NsYXdkaW5hdG9yczpyZWY6cmVmcy9oZWFkcy9tYWluIiwiYXVkIjoic3RzLmFtYXpvbmF3cy5jb20ifQ.c2ln"}"#;
        write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
        request
    });
    (url, handle)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ci_job_assumes_the_ci_role_with_a_fresh_oidc_token() {
    let env = testkit::env::env().await;
    let (url, endpoint) = token_endpoint();
    // The emulator's endpoint, but no static keys: only the OIDC path can sign.
    let out = env
        .cli(env!("CARGO_BIN_EXE_clawdinator"))
        .args(["--json", "image", "ami", "list"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("CLAWDINATOR_CI_ROLE_ARN", "arn:aws:iam::123456789012:role/clawdinator-ci")
        .env("ACTIONS_ID_TOKEN_REQUEST_URL", &url)
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "runner-bearer")
        .output()
        .unwrap();
    let request = endpoint.join().unwrap();
    assert!(request.starts_with("GET /token?api-version=2.0&audience=sts.amazonaws.com "), "{request}");
    assert!(request.lines().any(|l| l.eq_ignore_ascii_case("authorization: Bearer runner-bearer")), "{request}");
    // The role was assumed through STS (the emulator's AssumeRoleWithWebIdentity) and EC2 answered.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("runner-bearer") && !stderr.contains("eyJhbGci"), "a token reached the output: {stderr}");
}

#[test]
fn without_id_token_permission_the_error_says_what_the_job_lacks() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clawdinator"))
        .args(["image", "ami", "list"])
        .env("CLAWDINATOR_CI_ROLE_ARN", "arn:aws:iam::123456789012:role/clawdinator-ci")
        .env_remove("ACTIONS_ID_TOKEN_REQUEST_URL")
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("id-token: write") && stderr.contains("ACTIONS_ID_TOKEN_REQUEST_URL"), "{stderr}");
}
