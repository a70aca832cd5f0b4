//! GitHub's REST API, the one client: TLS with the system's roots, a
//! bounded exchange, and no credential over plain HTTP except to loopback
//! (a GitHub stand-in in tests, a local proxy).

use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// The app JWT and the token travel only over TLS, except to this machine
/// (a GitHub stand-in in tests, a local proxy).
pub fn check_transport(url: &str) -> Result<()> {
    let Some(rest) = url.strip_prefix("http://") else {
        anyhow::ensure!(url.starts_with("https://"), "the GitHub API URL {url} is neither https:// nor http://");
        return Ok(());
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    anyhow::ensure!(
        loopback,
        "refusing to send a GitHub credential over plain HTTP to {host}: use https:// (plain http:// is allowed only to loopback)"
    );
    Ok(())
}

/// One request with a bearer credential; the status and body, whatever the
/// status. An error names the URL, never the credential.
pub async fn call(method: hyper::Method, url: &str, bearer: &str) -> Result<(hyper::StatusCode, Bytes)> {
    call_with_body(method, url, bearer, None).await
}

/// The same, with a JSON body.
pub async fn call_with_body(
    method: hyper::Method,
    url: &str,
    bearer: &str,
    json: Option<&serde_json::Value>,
) -> Result<(hyper::StatusCode, Bytes)> {
    check_transport(url)?;
    let request = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("Authorization", format!("Bearer {bearer}"))
        .header("Accept", "application/vnd.github+json")
        .header("X-GitHub-Api-Version", "2022-11-28")
        .header("User-Agent", "clawdinators-xtask")
        .header("Content-Type", "application/json")
        .body(Full::new(json.map(|j| Bytes::from(j.to_string())).unwrap_or_default()))
        .with_context(|| format!("bad GitHub API URL {url}"))?;
    send(request).await
}

/// Send one HTTPS request (plain HTTP only to loopback), bounded to 30 s;
/// the status and body, whatever the status.
pub async fn send(request: hyper::Request<Full<Bytes>>) -> Result<(hyper::StatusCode, Bytes)> {
    let reply = exchange(request).await?;
    Ok((reply.status, reply.body))
}

/// An answer with its headers (a caller that reads the rate limit's).
pub struct Reply {
    pub status: hyper::StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

/// [`send`], keeping the answer's headers.
pub async fn exchange(request: hyper::Request<Full<Bytes>>) -> Result<Reply> {
    let url = request.uri().to_string();
    check_transport(&url)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .context("cannot load the system's CA certificates")?
        .https_or_http()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
    let work = async {
        let response = client.request(request).await.map_err(|e| anyhow::anyhow!("cannot reach {url}: {e}"))?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| anyhow::anyhow!("reading the answer of {url}: {e}"))?;
        anyhow::Ok(Reply { status: parts.status, headers: parts.headers, body: body.to_bytes() })
    };
    tokio::time::timeout(Duration::from_secs(30), work)
        .await
        .map_err(|_| anyhow::anyhow!("timeout: {url} did not answer within 30 s"))?
}

/// GitHub's `message` from an error body, or the body's start.
pub fn message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        for ok in ["https://api.github.com/x", "http://127.0.0.1:8080/x", "http://localhost/x", "http://[::1]:9/x"] {
            assert!(check_transport(ok).is_ok(), "{ok}");
        }
        for bad in ["http://api.github.com/x", "http://10.0.0.1/x", "http://127.0.0.1.evil.example/x", "ftp://x"] {
            assert!(check_transport(bad).is_err(), "{bad}");
        }
    }
}
