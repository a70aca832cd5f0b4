//! `clawdinator secrets github-token`: a GitHub App installation token, minted from
//! the app's private key (RS256 JWT) without openssl or curl.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::ctx::Ctx;
use crate::{aws, github};

/// The claims GitHub expects: issued a minute ago (clock drift), expiring
/// within GitHub's ten-minute limit.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iat: u64,
    pub exp: u64,
    pub iss: String,
}

/// Sign the app JWT with the app's PEM private key.
pub fn app_jwt(app_id: &str, pem: &[u8], now: u64) -> Result<Zeroizing<String>> {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem)
        .map_err(|_| anyhow::anyhow!("the GitHub App key is not an RSA private key in PEM form"))?;
    let claims = Claims { iat: now - 60, exp: now + 540, iss: app_id.to_string() };
    let jwt = jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256), &claims, &key)
        .map_err(|e| anyhow::anyhow!("cannot sign the app JWT: {e}"))?;
    Ok(Zeroizing::new(jwt))
}

#[derive(Deserialize)]
pub struct InstallationToken {
    pub token: String,
    pub expires_at: Option<String>,
}

/// Written by hand: the token never reaches a log or a panic.
impl std::fmt::Debug for InstallationToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallationToken")
            .field("token", &"** redacted **")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl Drop for InstallationToken {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.token);
    }
}

/// `POST {api}/app/installations/{id}/access_tokens`. An error carries
/// GitHub's status and message, never the JWT or the key.
pub async fn installation_token(api_url: &str, installation_id: &str, jwt: &str) -> Result<InstallationToken> {
    let url = format!("{}/app/installations/{installation_id}/access_tokens", api_url.trim_end_matches('/'));
    let (status, body) = github::call(hyper::Method::POST, &url, jwt).await?;
    if !status.is_success() {
        bail!("GitHub answered {status} for installation {installation_id}: {}", github::message(&body));
    }
    serde_json::from_slice(&body).context("GitHub's answer holds no token")
}

#[derive(Debug, Clone)]
pub struct TokenOptions {
    pub app_id: String,
    pub installation_id: String,
    pub pem: PemSource,
    pub api_url: String,
    pub env_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub enum PemSource {
    File(PathBuf),
    Secret(String),
}

async fn load_pem(ctx: &Ctx, source: &PemSource) -> Result<Zeroizing<Vec<u8>>> {
    match source {
        PemSource::File(path) => Ok(Zeroizing::new(
            std::fs::read(path).with_context(|| format!("cannot read the GitHub App key {}", path.display()))?,
        )),
        PemSource::Secret(name) => pem_from_secret(&ctx.aws().await?, name).await,
    }
}

/// The App key kept in Secrets Manager.
async fn pem_from_secret(aws: &aws::Aws, name: &str) -> Result<Zeroizing<Vec<u8>>> {
    let out = aws
        .secrets_manager()
        .get_secret_value()
        .secret_id(name)
        .send()
        .await
        .map_err(|e| aws::error("Secrets Manager GetSecretValue", name, e))?;
    crate::secrets::manager::value_of(&out).with_context(|| format!("secret {name} has no value"))
}

/// An installation token from the App key in Secrets Manager (the control API's way).
pub async fn mint(
    aws: &aws::Aws,
    app_id: &str,
    installation_id: &str,
    pem_secret: &str,
    api_url: &str,
) -> Result<Zeroizing<String>> {
    let key = pem_from_secret(aws, pem_secret).await?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let jwt = app_jwt(app_id, &key, now)?;
    let token = installation_token(api_url, installation_id, &jwt).await?;
    Ok(Zeroizing::new(token.token.clone()))
}

/// `GITHUB_TOKEN=…` and `GH_TOKEN=…`, mode 0600, replaced atomically.
pub fn write_env_file(path: &Path, token: &str) -> Result<()> {
    let content = Zeroizing::new(format!("GITHUB_TOKEN={token}\nGH_TOKEN={token}\n"));
    crate::atomic::write(path, content.as_bytes(), 0o600)
}

/// What `secrets github-token --json` prints: the token (it is the command's
/// output) or, with --env-file, where it went.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenReport<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    env_file: Option<String>,
    expires_at: Option<&'a str>,
}

impl std::fmt::Display for TokenReport<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.token, &self.env_file) {
            (Some(token), _) => writeln!(f, "{token}"),
            (None, Some(file)) => writeln!(
                f,
                "wrote GITHUB_TOKEN and GH_TOKEN to {file} (expires {})",
                self.expires_at.unwrap_or("in an hour")
            ),
            (None, None) => Ok(()),
        }
    }
}

/// Mint a token as `opts` say, and print it or write it to the env file.
pub async fn issue(ctx: &Ctx, opts: &TokenOptions) -> Result<()> {
    let key = load_pem(ctx, &opts.pem).await?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let jwt = app_jwt(&opts.app_id, &key, now)?;
    drop(key);
    let token = installation_token(&opts.api_url, &opts.installation_id, &jwt).await?;
    if let Some(path) = &opts.env_file {
        write_env_file(path, &token.token)?;
    }
    // Without --env-file the token itself is this command's output.
    let report = TokenReport {
        token: opts.env_file.is_none().then_some(token.token.as_str()),
        env_file: opts.env_file.as_ref().map(|p| p.display().to_string()),
        expires_at: token.expires_at.as_deref(),
    };
    if opts.env_file.is_some() && !ctx.out.json {
        ctx.out.note(report.to_string().trim_end());
        return Ok(());
    }
    ctx.out.emit(&report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let token = InstallationToken { token: "ghs_secret-value".into(), expires_at: None };
        assert!(!format!("{token:?}").contains("secret-value"));
        let settings = crate::aws::Settings {
            static_credentials: Some(("id".into(), "very-secret".into())),
            ..Default::default()
        };
        assert!(!format!("{settings:?}").contains("very-secret"));
    }

    #[tokio::test]
    async fn the_jwt_is_not_sent_over_plain_http_elsewhere() {
        let err = installation_token("http://github.example.com", "1", "jwt").await.unwrap_err();
        assert!(format!("{err:#}").contains("plain HTTP"), "{err:#}");
    }
}
