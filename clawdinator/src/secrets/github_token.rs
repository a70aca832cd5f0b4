//! `clawdinator secrets github-token`: a GitHub App installation token, minted from
//! the app's private key (RS256 JWT) without openssl or curl.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::flags::GithubTokenArgs;
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

/// What a token may do: GitHub narrows the installation's grant to these
/// repositories and permissions in the token request itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Repository names of the installation; empty: all of them.
    pub repositories: Vec<String>,
    pub permissions: BTreeMap<String, String>,
}

/// The only permissions a host or CI token may ask for, each with the
/// highest level it may have: what the agents do (read and push branches,
/// merge, comment on and close pull requests and issues, read the checks of
/// a pull request, the hourly snapshot of issues and pull requests) and what
/// CI's clones need. Everything else is refused, named: a permission GitHub
/// adds later stays out until it is listed here. `administration`,
/// `environments`, `variables`, `secrets`, `repository_hooks` or any
/// `organization_*` would let a token loosen the protected environment or
/// change the fleet's settings; `actions` and `workflows` run or change
/// workflows, which is deploying. (The control API's dispatch token is not
/// minted through here.) One file holds the list, read here and by the
/// NixOS module's assertion (nix/modules/clawdinator/github.nix).
const ALLOWED_JSON: &str = include_str!("../../github-permissions.json");

/// Where the allow-list lives, for the error that refuses a permission.
const ALLOWED_AT: &str = "clawdinator/github-permissions.json";

/// The allow-list: each permission with the highest level it may have.
pub fn allowed() -> &'static BTreeMap<String, Level> {
    static ALLOWED: std::sync::LazyLock<BTreeMap<String, Level>> = std::sync::LazyLock::new(|| {
        let listed: BTreeMap<String, String> = serde_json::from_str(ALLOWED_JSON).expect("the allow-list is JSON");
        listed.into_iter().map(|(n, l)| (n, Level::parse(&l).expect("each level is read or write"))).collect()
    });
    &ALLOWED
}

/// A permission's level; write includes read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Read,
    Write,
}

impl Level {
    fn parse(level: &str) -> Option<Level> {
        match level {
            "read" => Some(Level::Read),
            "write" => Some(Level::Write),
            _ => None,
        }
    }
}

/// One `NAME=LEVEL`, checked against the allow-list; the name as GitHub
/// spells it (lower case).
fn allowed_permission(p: &str) -> Result<(String, Level)> {
    let (name, level) = p.split_once('=').with_context(|| format!("--permission {p}: expected NAME=LEVEL"))?;
    let level = Level::parse(level).with_context(|| format!("--permission {p}: the level is read or write"))?;
    let name = name.trim().to_ascii_lowercase();
    let listed = allowed().iter().map(|(n, l)| format!("{n}={l:?}").to_lowercase()).collect::<Vec<_>>().join(", ");
    let Some(most) = allowed().get(&name) else {
        bail!(
            "--permission {p}: {name} is not on the allow-list of a bot or CI token ({listed}; kept in {ALLOWED_AT})"
        );
    };
    ensure!(
        level <= *most,
        "--permission {p}: {name} is on the allow-list only up to {} ({listed}; kept in {ALLOWED_AT})",
        format!("{most:?}").to_lowercase()
    );
    Ok((name, level))
}

/// A repository's name as GitHub compares it: without its owner, in lower
/// case (`OpenClaw/Clawdinators` is `clawdinators`).
fn repository_key(name: &str) -> String {
    name.trim().trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_ascii_lowercase()
}

impl Scope {
    /// Parse `NAME=LEVEL` permissions and check the scope a host or CI may ask for.
    pub fn parse(repositories: &[String], permissions: &[String], fleet_repository: &str) -> Result<Scope> {
        let mut scope = Scope { repositories: repositories.to_vec(), permissions: BTreeMap::new() };
        for p in permissions {
            let (name, level) = allowed_permission(p)?;
            // Named twice: the last one holds, as it always has.
            scope.permissions.insert(name, if level == Level::Write { "write" } else { "read" }.to_string());
        }
        ensure!(!scope.permissions.is_empty(), "name the permissions the token needs (--permission contents=read …)");
        let writes_contents = scope.permissions.get("contents").is_some_and(|l| l == "write");
        let fleet = repository_key(fleet_repository);
        ensure!(
            !writes_contents || (!scope.repositories.is_empty() && !scope.repositories.iter().any(|r| repository_key(r) == fleet)),
            "contents=write on {fleet_repository} (this fleet's own repository) is never granted: list the --repository names the token may write, without it"
        );
        Ok(scope)
    }

    /// The token request's body.
    pub fn body(&self) -> serde_json::Value {
        let mut body = serde_json::json!({"permissions": self.permissions});
        if !self.repositories.is_empty() {
            body["repositories"] = serde_json::json!(self.repositories);
        }
        body
    }
}

/// `POST {api}/app/installations/{id}/access_tokens` with the scope as its
/// body. An error carries GitHub's status and message, never the JWT or the key.
pub async fn installation_token(
    api_url: &str,
    installation_id: &str,
    jwt: &str,
    scope: &Scope,
) -> Result<InstallationToken> {
    let url = format!("{}/app/installations/{installation_id}/access_tokens", api_url.trim_end_matches('/'));
    let (status, body) = github::call_with_body(hyper::Method::POST, &url, jwt, Some(&scope.body())).await?;
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
    /// gh's configuration directory (hosts.yml) and the bare token beside it.
    pub gh_config_dir: Option<PathBuf>,
    pub scope: Scope,
    /// Who gets the env file (the agents' user, when root mints).
    pub owner: crate::atomic::Owner,
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
    scope: &Scope,
) -> Result<Zeroizing<String>> {
    let key = pem_from_secret(aws, pem_secret).await?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let jwt = app_jwt(app_id, &key, now)?;
    let token = installation_token(api_url, installation_id, &jwt, scope).await?;
    Ok(Zeroizing::new(token.token.clone()))
}

/// `GITHUB_TOKEN=…` and `GH_TOKEN=…`, mode 0600 for `owner`, replaced atomically.
pub fn write_env_file(path: &Path, token: &str, owner: crate::atomic::Owner) -> Result<()> {
    let content = Zeroizing::new(format!("GITHUB_TOKEN={token}\nGH_TOKEN={token}\n"));
    crate::atomic::write_owned(path, content.as_bytes(), 0o600, owner)
}

/// The token where gh (GH_CONFIG_DIR/hosts.yml) and a git credential
/// helper (DIR/token) read it on every call: a running gateway's tools see
/// each refresh, which an environment variable fixed at its start would not.
pub fn write_gh_config(dir: &Path, token: &str, owner: crate::atomic::Owner) -> Result<()> {
    let hosts = Zeroizing::new(format!(
        "github.com:\n    oauth_token: {token}\n    user: x-access-token\n    git_protocol: https\n"
    ));
    crate::atomic::write_owned(&dir.join("hosts.yml"), hosts.as_bytes(), 0o600, owner)?;
    let bare = Zeroizing::new(format!("{token}\n"));
    crate::atomic::write_owned(&dir.join("token"), bare.as_bytes(), 0o600, owner)
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
    let token = installation_token(&opts.api_url, &opts.installation_id, &jwt, &opts.scope).await?;
    if let Some(path) = &opts.env_file {
        write_env_file(path, &token.token, opts.owner)?;
    }
    if let Some(dir) = &opts.gh_config_dir {
        write_gh_config(dir, &token.token, opts.owner)?;
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

impl GithubTokenArgs {
    /// `secrets github-token`: the options the flags say, then [`issue`].
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        let pem = match (self.pem, self.pem_secret) {
            (_, Some(secret)) => PemSource::Secret(secret),
            (Some(file), None) => PemSource::File(file),
            (None, None) => {
                bail!(usage("no GitHub App key: pass --pem FILE (or GITHUB_APP_PEM_FILE) or --pem-secret NAME"))
            }
        };
        let opts = TokenOptions {
            app_id: self.app_id.ok_or_else(|| usage("no app id: pass --app-id or set GITHUB_APP_ID"))?,
            installation_id: self
                .installation_id
                .ok_or_else(|| usage("no installation id: pass --installation-id or set GITHUB_APP_INSTALLATION_ID"))?,
            pem,
            api_url: self.api_url,
            env_file: self.env_file,
            gh_config_dir: self.gh_config_dir,
            scope: Scope::parse(&self.repositories, &self.permissions, &self.fleet_repository)
                .map_err(|e| usage(&format!("{e:#}")))?,
            owner: crate::atomic::Owner::of(&self.owner)?,
        };
        issue(ctx, &opts).await
    }
}

fn usage(message: &str) -> crate::exit::UsageError {
    crate::exit::UsageError(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_list_parses_and_never_holds_what_deploys() {
        let list = allowed();
        assert_eq!(list.get("contents"), Some(&Level::Write));
        for never in ["actions", "workflows", "administration", "environments", "variables", "secrets"] {
            assert!(!list.contains_key(never), "{never} is on the allow-list");
        }
    }

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
        let err = installation_token("http://github.example.com", "1", "jwt", &Scope::default()).await.unwrap_err();
        assert!(format!("{err:#}").contains("plain HTTP"), "{err:#}");
    }
}
