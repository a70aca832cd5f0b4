//! What the loopback stand-ins of the tests and the package's smoke run
//! share: reading one HTTP/1.1 request off a socket, and a Lambda function
//! URL event (payload format 2.0) as `AWS_IAM` auth hands it to a function.

use std::io::Read;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use serde_json::{json, Value};

/// One HTTP request: its request line, its header block and its body.
pub struct HttpRequest {
    pub line: String,
    pub head: String,
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// Method and path, e.g. `("POST", "/")`.
    pub fn target(&self) -> (&str, &str) {
        let mut parts = self.line.split_whitespace();
        (parts.next().unwrap_or_default(), parts.next().unwrap_or_default())
    }

    /// A header's value (names compare case-insensitively), or "".
    pub fn header(&self, name: &str) -> String {
        self.head
            .lines()
            .skip(1)
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case(name)))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    }
}

/// Read one request: up to the blank line, then `Content-Length` bytes.
pub fn read_http_request(stream: &mut impl Read) -> Result<HttpRequest> {
    let mut data = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk)?;
        data.extend_from_slice(&chunk[..n]);
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse()))
                .transpose()?
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                let line = head.lines().next().unwrap_or_default().to_string();
                return Ok(HttpRequest { line, head, body: data[end + 4..end + 4 + length].to_vec() });
            }
        }
        ensure!(n > 0, "the peer closed the connection mid-request");
    }
}

/// A function URL event with `body`, signed by `arn` when given (the
/// request context's `authorizer.iam`, which Lambda fills in for `AWS_IAM`).
pub fn function_url_event(arn: Option<&str>, body: &Value) -> Value {
    let mut context = json!({
        "accountId": "123456789012", "apiId": "abc", "domainName": "abc.lambda-url.us-east-1.on.aws",
        "domainPrefix": "abc", "requestId": "r", "routeKey": "$default", "stage": "$default",
        "time": "22/Nov/2026:00:00:00 +0000", "timeEpoch": 1795000000000u64,
        "http": {"method": "POST", "path": "/", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "test"}
    });
    if let Some(arn) = arn {
        context["authorizer"] = json!({"iam": {"accessKey": "ASIA", "accountId": "123456789012", "callerId": "AROA:x", "userArn": arn, "userId": "AROA:x"}});
    }
    json!({
        "version": "2.0", "routeKey": "$default", "rawPath": "/", "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "abc.lambda-url.us-east-1.on.aws"},
        "requestContext": context, "body": body.to_string(), "isBase64Encoded": false
    })
}

/// A stand-in service on loopback that answers every request with `status`
/// and the JSON `body` (GitHub's OIDC token endpoint, its access_tokens
/// endpoint), for the life of the test process; its base URL, and the
/// request lines it has seen.
pub fn answer_every_request(status: u16, body: Value) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("a bound listener"));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Ok(request) = read_http_request(&mut stream) else { continue };
            log.lock().expect("the log lock").push(request.line.clone());
            let text = body.to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 {status} Stand-in\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    (url, seen)
}

/// A server that accepts connections and never answers (bounded: it
/// stops accepting after 60 s), for timeout tests; its port and thread.
pub fn silent_server() -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let handle = std::thread::spawn(move || {
        let started = Instant::now();
        let mut held = Vec::new();
        // Bounded: the test needs it for seconds, not forever.
        while started.elapsed() < Duration::from_secs(60) {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nonblocking(true).ok();
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf);
                    held.push(stream);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    (port, handle)
}
