//! An endpoint that behaves like AWS in front of the emulator: a loopback
//! HTTP/1.1 proxy that adds latency, limits bandwidth and injects the
//! faults AWS's services return, at a seeded rate.
//!
//! ```ignore
//! use testkit::proxy::{Fault, Proxy, ProxyConfig};
//! let emulator = Emulator::start()?;
//! // 30 ms per request (`cargo xtask bench … --latency-ms 30`):
//! let proxy = Proxy::start(&emulator.endpoint(), ProxyConfig::latency(Duration::from_millis(30)))?;
//! command.env("AWS_ENDPOINT_URL", proxy.endpoint());
//! // 5% of requests failing and 1% of connections dropped, seeded:
//! let proxy = Proxy::start(&emulator.endpoint(), ProxyConfig::chaos(7))?;
//! …
//! let survived: u64 = proxy.injected(); // or proxy.faults()[&Fault::Throttling]
//! ```
//!
//! - [`ProxyConfig::delay`] is added to every request; [`ProxyConfig::delays`]
//!   overrides it per operation class, keyed `"service"` or `"service METHOD"`
//!   (the service is the SigV4 signing name: `s3`, `ebs`, `ec2`, …; the most
//!   specific key wins), e.g. `("ebs PUT", 40 ms)`.
//! - [`ProxyConfig::bandwidth`] (bytes/s) is one link shared by every
//!   connection, both directions.
//! - [`ProxyConfig::faults`] gives each [`Fault`] its own rate. Whether a
//!   request is faulted is drawn from the seed, the request's content
//!   (method, path and query, `X-Amz-Target`, body) and how often that content was seen,
//!   not from arrival order, so concurrent runs fault the same requests.
//!   A request whose last attempt was faulted always goes through: a client
//!   that retries correctly always succeeds.
//! - [`Proxy::faults`] counts what was injected, per kind.
//!
//! Errors carry each service's own protocol (S3's XML, EC2's
//! `<Response><Errors>`, IAM/STS query XML, `__type` JSON, EBS direct's
//! restJson `x-amzn-ErrorType`), so the SDK classifies them as AWS's: each
//! code used is one the SDKs retry (throttling codes, HTTP 500/503; see
//! <https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html>).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy can do to a request instead of (or after) forwarding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// HTTP 500, the service's internal error code; not forwarded.
    InternalError,
    /// HTTP 503, the service's "unavailable" code (S3's `SlowDown`); not forwarded.
    Unavailable,
    /// The service's throttling error; not forwarded.
    Throttling,
    /// The connection closed once the request was read, before forwarding.
    DropBeforeForward,
    /// Forwarded (the emulator acted on it), then the connection closed:
    /// the response is lost.
    DropAfterForward,
    /// Forwarded, then no response for [`ProxyConfig::stall`], then closed:
    /// longer than the client's read timeout.
    Stall,
}

#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Added to every request before it is forwarded.
    pub delay: Duration,
    /// Per operation class: (`"service"` or `"service METHOD"`, delay).
    pub delays: Vec<(String, Duration)>,
    /// Bytes per second of the one link all connections share; None: unlimited.
    pub bandwidth: Option<u64>,
    pub seed: u64,
    /// Each kind's share of requests (0.0–1.0); their sum at most 1.
    pub faults: Vec<(Fault, f64)>,
    /// How long a [`Fault::Stall`] holds the response before closing.
    pub stall: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            delay: Duration::ZERO,
            delays: Vec::new(),
            bandwidth: None,
            seed: 1,
            faults: Vec::new(),
            stall: Duration::from_secs(10),
        }
    }
}

impl ProxyConfig {
    /// A fixed delay per request and nothing else (benchmarks).
    pub fn latency(delay: Duration) -> ProxyConfig {
        ProxyConfig { delay, ..ProxyConfig::default() }
    }

    /// 5% of requests failing (500, 503, throttling, a few stalled) and 1%
    /// of connections dropped (half before, half after forwarding).
    pub fn chaos(seed: u64) -> ProxyConfig {
        let faults = vec![
            (Fault::InternalError, 0.015),
            (Fault::Unavailable, 0.015),
            (Fault::Throttling, 0.015),
            (Fault::Stall, 0.005),
            (Fault::DropBeforeForward, 0.005),
            (Fault::DropAfterForward, 0.005),
        ];
        ProxyConfig { seed, faults, ..ProxyConfig::default() }
    }

    fn delay_for(&self, service: &str, method: &str) -> Duration {
        let exact = format!("{service} {method}");
        let find = |key: &str| self.delays.iter().find(|(k, _)| k == key).map(|(_, d)| *d);
        find(&exact).or_else(|| find(service)).unwrap_or(self.delay)
    }
}

/// A running proxy; dropping it stops it (open connections are cut).
pub struct Proxy {
    endpoint: String,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Listen on a free loopback port and forward to `upstream`
    /// (`http://host:port`), on a thread and runtime of its own, so that it
    /// can be started from synchronous and asynchronous code alike.
    pub fn start(upstream: &str, config: ProxyConfig) -> Result<Proxy> {
        let total: f64 = config.faults.iter().map(|(_, rate)| rate).sum();
        if !(0.0..=1.0).contains(&total) {
            bail!("the proxy's fault rates add up to {total}, not within 0–1");
        }
        let upstream = upstream.trim_end_matches('/').to_string();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("the proxy: no loopback port")?;
        listener.set_nonblocking(true)?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(State::new(upstream, config));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let serving = state.clone();
        let thread = std::thread::Builder::new().name("aws-proxy".into()).spawn(move || {
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("a loopback listener");
                tokio::select! {
                    _ = stopped => {}
                    _ = accept(listener, serving) => {}
                }
            });
            runtime.shutdown_timeout(Duration::from_millis(200));
        })?;
        Ok(Proxy { endpoint, state, stop: Some(stop), thread: Some(thread) })
    }

    /// The URL to give clients as `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// Faults injected so far, per kind (kinds never injected are absent).
    pub fn faults(&self) -> BTreeMap<Fault, u64> {
        self.state.counts.lock().expect("the proxy's counters").clone()
    }

    /// All faults injected so far.
    pub fn injected(&self) -> u64 {
        self.faults().values().sum()
    }

    /// Requests received (faulted or not).
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Requests that were held for a delay before being forwarded.
    pub fn delayed(&self) -> u64 {
        self.state.delayed.load(Ordering::Relaxed)
    }

    /// Turn fault injection off (or back on); latency and bandwidth stay.
    pub fn set_faults(&self, on: bool) {
        self.state.faults_on.store(on, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct State {
    upstream: String,
    config: ProxyConfig,
    client: Client<HttpConnector, Full<Bytes>>,
    counts: Mutex<BTreeMap<Fault, u64>>,
    /// Per request digest: how often it was seen.
    seen: Mutex<HashMap<[u8; 32], u64>>,
    /// Digests whose last attempt was faulted: the next one goes through.
    faulted: Mutex<HashSet<[u8; 32]>>,
    /// When the shared link is free again (bandwidth limit).
    link_free_at: tokio::sync::Mutex<Instant>,
    requests: AtomicU64,
    delayed: AtomicU64,
    faults_on: AtomicBool,
}

impl State {
    fn new(upstream: String, config: ProxyConfig) -> State {
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        State {
            upstream,
            config,
            client,
            counts: Mutex::default(),
            seen: Mutex::default(),
            faulted: Mutex::default(),
            link_free_at: tokio::sync::Mutex::new(Instant::now()),
            requests: AtomicU64::new(0),
            delayed: AtomicU64::new(0),
            faults_on: AtomicBool::new(true),
        }
    }

    /// The fault for this request, if any: never two in a row for the same
    /// content, else drawn from (seed, digest, times seen).
    fn draw(&self, digest: [u8; 32]) -> Option<Fault> {
        let times = {
            let mut seen = self.seen.lock().expect("the proxy's digests");
            let n = seen.entry(digest).or_insert(0);
            *n += 1;
            *n
        };
        let mut faulted = self.faulted.lock().expect("the proxy's digests");
        if faulted.remove(&digest) || !self.faults_on.load(Ordering::Relaxed) {
            return None;
        }
        let prefix = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
        let roll = (splitmix64(self.config.seed ^ splitmix64(prefix ^ times)) >> 11) as f64 / (1u64 << 53) as f64;
        let mut edge = 0.0;
        let fault = self.config.faults.iter().find(|(_, rate)| {
            edge += rate;
            roll < edge
        })?;
        faulted.insert(digest);
        *self.counts.lock().expect("the proxy's counters").entry(fault.0).or_insert(0) += 1;
        Some(fault.0)
    }

    /// Hold for `bytes` on the shared link, when its bandwidth is limited.
    async fn transfer(&self, bytes: usize) {
        let Some(rate) = self.config.bandwidth.filter(|r| *r > 0) else { return };
        let until = {
            let mut free_at = self.link_free_at.lock().await;
            let start = (*free_at).max(Instant::now());
            *free_at = start + Duration::from_secs_f64(bytes as f64 / rate as f64);
            *free_at
        };
        tokio::time::sleep_until(until.into()).await;
    }
}

/// SplitMix64: a small, well-mixed seeded generator step (no dependency).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

async fn accept(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(stream, state.clone()));
    }
}

/// One client connection, request after request (keep-alive), until the
/// client closes it or a fault drops it.
async fn serve(stream: TcpStream, state: Arc<State>) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    while let Ok(Some(request)) = read_request(&mut read, &mut write).await {
        let keep = handle(&state, request, &mut write).await.unwrap_or(false);
        if !keep {
            break;
        }
    }
    let _ = write.shutdown().await;
}

/// Answer one request; false when the connection must close (a dropped or
/// stalled one, or the client asked to close).
async fn handle(state: &State, request: Request, write: &mut (impl AsyncWriteExt + Unpin)) -> Result<bool> {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let service = request.service();
    let delay = state.config.delay_for(&service, &request.method);
    if !delay.is_zero() {
        state.delayed.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(delay).await;
    }
    state.transfer(request.body.len()).await;
    let fault = state.draw(request.digest());
    match fault {
        Some(Fault::DropBeforeForward) => return Ok(false),
        Some(kind @ (Fault::InternalError | Fault::Unavailable | Fault::Throttling)) => {
            write.write_all(&error_response(&service, kind)).await?;
            return Ok(!request.close);
        }
        _ => {}
    }
    let close = request.close;
    let response = forward(state, request).await?;
    match fault {
        Some(Fault::DropAfterForward) => return Ok(false),
        Some(Fault::Stall) => {
            tokio::time::sleep(state.config.stall).await;
            return Ok(false);
        }
        _ => {}
    }
    state.transfer(response.len()).await;
    write.write_all(&response).await?;
    Ok(!close)
}

/// One request as read off the client's connection, its body de-chunked.
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    close: bool,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The SigV4 signing name from `Authorization`'s credential scope
    /// (`Credential=AKID/date/region/SERVICE/aws4_request`), or "".
    fn service(&self) -> String {
        let scope = self.header("authorization").and_then(|a| a.split("Credential=").nth(1)).unwrap_or_default();
        scope.split(['/', ',']).nth(3).unwrap_or_default().to_string()
    }

    /// What makes two attempts "the same request": method, target, the
    /// awsJson operation (`X-Amz-Target`: their path is always `/`), body.
    fn digest(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(self.method.as_bytes());
        hash.update(b" ");
        hash.update(self.target.as_bytes());
        hash.update(b"\n");
        hash.update(self.header("x-amz-target").unwrap_or_default().as_bytes());
        hash.update(b"\n");
        hash.update(&self.body);
        hash.finalize().into()
    }
}

/// Read the next request; None when the client closed the connection
/// between requests.
async fn read_request(
    read: &mut (impl AsyncBufReadExt + Unpin),
    write: &mut (impl AsyncWriteExt + Unpin),
) -> Result<Option<Request>> {
    let mut line = String::new();
    if read.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default().to_string(), parts.next().unwrap_or_default().to_string());
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if read.read_line(&mut header).await? == 0 {
            bail!("the client closed the connection mid-header");
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    let mut request = Request { method, target, headers, body: Vec::new(), close: false };
    request.close = request.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
    if request.header("expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue")) {
        write.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    request.body = read_body(read, &request).await?;
    Ok(Some(request))
}

async fn read_body(read: &mut (impl AsyncBufReadExt + Unpin), request: &Request) -> Result<Vec<u8>> {
    if request.header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        return read_chunked(read).await;
    }
    let length: usize = request.header("content-length").map(str::parse).transpose()?.unwrap_or(0);
    let mut body = vec![0; length];
    read.read_exact(&mut body).await?;
    Ok(body)
}

/// A `Transfer-Encoding: chunked` body (RFC 9112 §7.1), trailers ignored.
async fn read_chunked(read: &mut (impl AsyncBufReadExt + Unpin)) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        read.read_line(&mut size).await?;
        let hex = size.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(hex, 16).with_context(|| format!("a chunk size `{hex}`"))?;
        if size == 0 {
            loop {
                let mut trailer = String::new();
                if read.read_line(&mut trailer).await? == 0 || trailer.trim_end().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        read.read_exact(&mut body[start..]).await?;
        let mut crlf = [0; 2];
        read.read_exact(&mut crlf).await?;
    }
}

/// Send the request upstream and return the whole response, serialised
/// for the client (a Content-Length body; HEAD's headers as they were).
async fn forward(state: &State, request: Request) -> Result<Vec<u8>> {
    let uri = format!("{}{}", state.upstream, request.target);
    let mut builder = hyper::Request::builder().method(request.method.as_str()).uri(uri);
    for (name, value) in &request.headers {
        let hop = ["connection", "transfer-encoding", "expect", "keep-alive"];
        if !hop.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            builder = builder.header(name, value);
        }
    }
    if request.header("transfer-encoding").is_some() {
        builder = builder.header("content-length", request.body.len());
    }
    let upstream = builder.body(Full::new(Bytes::from(request.body)))?;
    let response = state.client.request(upstream).await.context("the proxy's upstream (the emulator)")?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.context("the upstream's response body")?.to_bytes();
    let head_only = request.method == "HEAD" || parts.status == 204 || parts.status == 304;
    let mut out = format!("HTTP/1.1 {} {}\r\n", parts.status.as_u16(), parts.status.canonical_reason().unwrap_or(""));
    for (name, value) in &parts.headers {
        let framing = name == "transfer-encoding" || name == "connection" || (!head_only && name == "content-length");
        if !framing {
            out.push_str(&format!("{name}: {}\r\n", String::from_utf8_lossy(value.as_bytes())));
        }
    }
    if !head_only {
        out.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    if !head_only {
        out.extend_from_slice(&body);
    }
    Ok(out)
}

/// The error `kind` as `service` returns it, a whole HTTP response.
fn error_response(service: &str, kind: Fault) -> Vec<u8> {
    let (status, content_type, extra, body) = error_parts(service, kind);
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    out.push_str(&format!("content-type: {content_type}\r\nx-amzn-requestid: proxy-fault\r\n{extra}"));
    out.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    out.into_bytes()
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    }
}

/// (status, content type, extra header lines, body) per service protocol.
fn error_parts(service: &str, kind: Fault) -> (u16, &'static str, String, String) {
    let (status, code) = status_and_code(service, kind);
    let message = format!("{code} (injected)");
    let (content_type, extra, body) = match service {
        "s3" => ("application/xml", String::new(), format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>proxy-fault</RequestId></Error>"
        )),
        "ec2" => ("text/xml", String::new(), format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>proxy-fault</RequestID></Response>"
        )),
        "iam" | "sts" => ("text/xml", String::new(), format!(
            "<ErrorResponse><Error><Type>Receiver</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>proxy-fault</RequestId></ErrorResponse>"
        )),
        "ebs" => (
            "application/json",
            format!("x-amzn-errortype: {code}\r\n"),
            format!(r#"{{"message":"{message}","Reason":"ACCOUNT_THROTTLED"}}"#),
        ),
        "dynamodb" => ("application/x-amz-json-1.0", String::new(), format!(r#"{{"__type":"{code}","message":"{message}"}}"#)),
        _ => ("application/x-amz-json-1.1", String::new(), format!(r#"{{"__type":"{code}","message":"{message}"}}"#)),
    };
    (status, content_type, extra, body)
}

/// The HTTP status and error code each service answers `kind` with.
fn status_and_code(service: &str, kind: Fault) -> (u16, &'static str) {
    match (service, kind) {
        // https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html
        // (503 SlowDown is S3's throttling response)
        ("s3", Fault::InternalError) => (500, "InternalError"),
        ("s3", _) => (503, "SlowDown"),
        // https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html and
        // https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html (RequestLimitExceeded, 503)
        ("ec2", Fault::InternalError) => (500, "InternalError"),
        ("ec2", Fault::Unavailable) => (503, "Unavailable"),
        ("ec2", _) => (503, "RequestLimitExceeded"),
        // https://docs.aws.amazon.com/IAM/latest/APIReference/CommonErrors.html
        // (the awsQuery protocol's <ErrorResponse>; STS answers the same way)
        ("iam" | "sts", Fault::Throttling) => (400, "Throttling"),
        // https://docs.aws.amazon.com/ebs/latest/APIReference/API_PutSnapshotBlock.html#API_PutSnapshotBlock_Errors
        // (restJson1: the code in x-amzn-ErrorType; RequestThrottledException is 400)
        ("ebs", Fault::InternalError) => (500, "InternalServerException"),
        ("ebs", Fault::Unavailable) => (503, "ServiceUnavailableException"),
        ("ebs", _) => (400, "RequestThrottledException"),
        // awsJson (Secrets Manager, SSM 1.1; DynamoDB 1.0), the code in `__type`, and awsQuery's others:
        // https://docs.aws.amazon.com/secretsmanager/latest/apireference/CommonErrors.html
        // https://docs.aws.amazon.com/systems-manager/latest/APIReference/CommonErrors.html
        // https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Programming.Errors.html
        (_, Fault::InternalError) => (500, "InternalFailure"),
        (_, Fault::Unavailable) => (503, "ServiceUnavailable"),
        (_, _) => (400, "ThrottlingException"),
    }
}
