//! `clawdinator fleet control status|deploy`: the host side of chat deploys.
//! The request to the control API's function URL is signed with SigV4 from
//! the instance role's credentials (the standard chain), so the API knows
//! which instance asks without any shared token. A self-deploy (or `all`)
//! is refused here before calling; the API refuses it again.

use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};

use crate::aws::{self, Aws};
use crate::exit::UsageError;

/// Where OpenTofu publishes the function URL.
pub const URL_PARAMETER: &str = "/clawdinator/control-api-url";

/// The request body for an action.
pub fn body(action: &str, target: Option<&str>, ami: Option<&str>) -> Value {
    match action {
        "deploy" => json!({"action": "deploy", "target": target, "ami": ami}),
        _ => json!({"action": "status"}),
    }
}

/// An instance never asks to replace itself, nor the whole fleet.
pub fn refuse_self(me: Option<&str>, target: &str) -> Result<()> {
    match me {
        Some(me) if target == me => {
            bail!(UsageError(format!("{me} may not deploy itself: another instance or a maintainer must ask")))
        }
        Some(me) if target == "all" => {
            bail!(UsageError(format!("{me} may not deploy all (it would replace itself): ask a maintainer")))
        }
        _ => Ok(()),
    }
}

/// The `host` header for `url`: its host, and its port when it names one.
fn host_of(url: &str) -> Result<String> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("the control API URL {url:?} is not a URL"))?;
    let authority = uri.authority().with_context(|| format!("the control API URL {url:?} has no host"))?;
    Ok(match authority.port() {
        Some(port) => format!("{}:{port}", authority.host()),
        None => authority.host().to_string(),
    })
}

/// A POST of `payload` to `url`, SigV4-signed for the `lambda` service.
pub fn signed_request(
    url: &str,
    payload: &[u8],
    credentials: aws_credential_types::Credentials,
    region: &str,
    time: SystemTime,
) -> Result<hyper::Request<Full<Bytes>>> {
    let host = host_of(url)?;
    let headers = [("host", host), ("content-type", "application/json".to_string())];
    let identity = credentials.into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("lambda")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .context("cannot set up SigV4")?
        .into();
    let signable =
        SignableRequest::new("POST", url, headers.iter().map(|(k, v)| (*k, v.as_str())), SignableBody::Bytes(payload))
            .context("cannot sign the request")?;
    let (instructions, _) = sign(signable, &params).context("cannot sign the request")?.into_parts();
    let mut request = hyper::Request::builder().method("POST").uri(url);
    for (k, v) in &headers {
        request = request.header(*k, v);
    }
    let mut request = request.body(Full::new(Bytes::copy_from_slice(payload)))?;
    instructions.apply_to_request_http1x(&mut request);
    Ok(request)
}

/// The function URL: given, or from SSM Parameter Store.
async fn url(aws: &Aws, given: Option<String>) -> Result<String> {
    if let Some(url) = given {
        return Ok(url);
    }
    let out = aws
        .ssm()
        .get_parameter()
        .name(URL_PARAMETER)
        .send()
        .await
        .map_err(|e| aws::error("SSM GetParameter", URL_PARAMETER, e))?;
    out.parameter().and_then(|p| p.value()).map(String::from).context("the control API URL parameter is empty")
}

/// Call the API; its JSON answer, or an error with its reason.
pub async fn call(aws: &Aws, given_url: Option<String>, payload: &Value) -> Result<Value> {
    let url = url(aws, given_url).await?;
    let provider = aws.config.credentials_provider().context("no AWS credentials to sign with")?;
    let credentials = provider.provide_credentials().await.context("cannot load the instance role's credentials")?;
    let region =
        aws.region().context("no region: the signature needs one (--region, or /etc/clawdinator/region)")?.to_string();
    let bytes = serde_json::to_vec(payload)?;
    let request = signed_request(&url, &bytes, credentials, &region, SystemTime::now())?;
    let (status, answer) = crate::github::send(request).await?;
    let answer: Value =
        serde_json::from_slice(&answer).unwrap_or_else(|_| json!({"error": String::from_utf8_lossy(&answer)}));
    if !status.is_success() {
        // The API's own refusals carry `error`; the function URL's IAM
        // check answers before the function runs, with only `Message`.
        let reason = match (answer["error"].as_str(), answer["Message"].as_str()) {
            (Some(reason), _) => reason.to_string(),
            (None, Some(message)) => format!(
                "{message} (the function URL's IAM check: the signer may lack lambda:InvokeFunctionUrl, or the signature does not match)"
            ),
            (None, None) => "no reason given".to_string(),
        };
        bail!("the control API refused ({status}): {reason}");
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::host_of;

    /// The signed `host` is the URL's host, with the port only when the URL
    /// names one; a URL without a host is refused before anything is signed.
    #[test]
    fn the_host_header_is_the_urls_authority() {
        assert_eq!(
            host_of("https://abc.lambda-url.eu-central-1.on.aws/").unwrap(),
            "abc.lambda-url.eu-central-1.on.aws"
        );
        assert_eq!(host_of("http://127.0.0.1:8080/deploy?x=1").unwrap(), "127.0.0.1:8080");
        assert_eq!(host_of("https://example.test").unwrap(), "example.test");
        let err = host_of("/no/host").unwrap_err().to_string();
        assert!(err.contains("has no host"), "{err}");
        assert!(host_of("https://exa mple.test/").is_err());
    }
}
