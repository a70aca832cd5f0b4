//! AWS credentials in GitHub Actions without static keys: when a job has
//! `id-token: write` and `CLAWDINATOR_CI_ROLE_ARN` names the CI role (an
//! OpenTofu output), every command fetches a fresh GitHub OIDC token
//! (audience `sts.amazonaws.com`) and assumes the role with it
//! (`AssumeRoleWithWebIdentity`). A fresh token per command matters: the
//! image job runs for longer than one token lives.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};

/// The role to assume, and GitHub's token endpoint and its bearer.
pub struct Request {
    pub role_arn: String,
    pub url: String,
    pub bearer: String,
}

impl Request {
    /// From the environment of a GitHub Actions job, when the CI role is set.
    pub fn from_env() -> Result<Option<Request>> {
        let Ok(role_arn) = std::env::var("CLAWDINATOR_CI_ROLE_ARN") else { return Ok(None) };
        let need = |name: &str| {
            std::env::var(name).with_context(|| {
                format!(
                    "CLAWDINATOR_CI_ROLE_ARN is set but {name} is not: the job needs `permissions: id-token: write`"
                )
            })
        };
        Ok(Some(Request {
            role_arn,
            url: need("ACTIONS_ID_TOKEN_REQUEST_URL")?,
            bearer: need("ACTIONS_ID_TOKEN_REQUEST_TOKEN")?,
        }))
    }
}

/// The token file, removed with the last clone of the configuration.
#[derive(Debug, Clone)]
pub struct TokenFile {
    pub path: PathBuf,
    _dir: Arc<tempfile::TempDir>,
}

/// Fetch an OIDC token for STS and keep it in a private 0600 file.
pub async fn token_file(request: &Request) -> Result<TokenFile> {
    let join = if request.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{join}audience=sts.amazonaws.com", request.url);
    let (status, body) = crate::github::call(hyper::Method::GET, &url, &request.bearer).await?;
    anyhow::ensure!(
        status.is_success(),
        "GitHub's OIDC token endpoint answered {status}: {}",
        crate::github::message(&body)
    );
    let answer: serde_json::Value = serde_json::from_slice(&body).context("GitHub's OIDC answer is not JSON")?;
    let token =
        zeroize::Zeroizing::new(answer["value"].as_str().context("GitHub's OIDC answer holds no token")?.to_string());
    let dir = crate::atomic::private_workdir()?;
    let path = dir.path().join("github-oidc.jwt");
    crate::atomic::write(&path, token.as_bytes(), 0o600)?;
    Ok(TokenFile { path, _dir: Arc::new(dir) })
}

/// The credentials provider that assumes the role with the token.
pub fn provider(
    request: &Request,
    file: &TokenFile,
    region: Option<aws_config::Region>,
) -> aws_config::web_identity_token::WebIdentityTokenCredentialsProvider {
    let conf = aws_config::provider_config::ProviderConfig::default().with_region(region);
    aws_config::web_identity_token::WebIdentityTokenCredentialsProvider::builder()
        .static_configuration(aws_config::web_identity_token::StaticConfiguration {
            web_identity_token_file: file.path.clone(),
            role_arn: request.role_arn.clone(),
            session_name: format!("clawdinator-ci-{}", std::process::id()),
        })
        .configure(&conf)
        .build()
}
