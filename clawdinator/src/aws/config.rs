//! The one AWS configuration: the standard credential chain (or GitHub
//! OIDC in Actions), `AWS_ENDPOINT_URL`, explicit timeouts and a single
//! retry layer; the clients are built from it.

use std::time::Duration;

use anyhow::{Context, Result};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use super::error::error;
use super::github_oidc;

/// Explicit limits so that nothing waits forever on a stalled connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Longest wait for the next bytes of a response.
    pub read: Duration,
    /// One HTTP attempt, start to end.
    pub attempt: Duration,
    /// One operation, all retries included.
    pub operation: Duration,
}

/// The flags' defaults (`--connect-timeout` and the others).
impl Default for Timeouts {
    fn default() -> Self {
        Timeouts::from(&crate::flags::Timeouts::default())
    }
}

/// The global flags `--{connect,read,attempt,operation}-timeout` (or
/// `CLAWDINATOR_{CONNECT,READ,ATTEMPT,OPERATION}_TIMEOUT`), which clap
/// checked to be positive seconds a `Duration` holds.
impl From<&crate::flags::Timeouts> for Timeouts {
    fn from(flags: &crate::flags::Timeouts) -> Self {
        Timeouts {
            connect: Duration::from_secs_f64(flags.connect_timeout),
            read: Duration::from_secs_f64(flags.read_timeout),
            attempt: Duration::from_secs_f64(flags.attempt_timeout),
            operation: Duration::from_secs_f64(flags.operation_timeout),
        }
    }
}

/// How to reach AWS (or the emulator).
#[derive(Clone, Default)]
pub struct Settings {
    pub region: Option<String>,
    pub profile: Option<String>,
    /// Overrides `AWS_ENDPOINT_URL` (used for the local emulator).
    pub endpoint_url: Option<String>,
    /// Fixed credentials instead of the standard chain (the emulator's dummies).
    pub static_credentials: Option<(String, String)>,
    pub timeouts: Timeouts,
    /// Attempts per operation, the first included; the one retry layer.
    /// 0 means the default (3).
    pub max_attempts: u32,
}

/// Written by hand: the secret access key never reaches a log or a panic.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("region", &self.region)
            .field("profile", &self.profile)
            .field("endpoint_url", &self.endpoint_url)
            .field("static_credentials", &self.static_credentials.as_ref().map(|(id, _)| (id, "** redacted **")))
            .field("timeouts", &self.timeouts)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

impl Settings {
    /// Settings for the local emulator at `endpoint`: dummy credentials.
    pub fn local(endpoint: &str) -> Settings {
        Settings {
            region: Some("us-east-1".into()),
            endpoint_url: Some(endpoint.to_string()),
            static_credentials: Some(("testing".into(), "testing".into())),
            ..Settings::default()
        }
    }
}

/// A loaded AWS configuration and the clients built from it.
#[derive(Clone, Debug)]
pub struct Aws {
    pub config: SdkConfig,
    /// An endpoint override is in force: S3 must then use path-style URLs.
    custom_endpoint: bool,
    timeouts: Timeouts,
    /// In GitHub Actions: the OIDC token the role is assumed with.
    _oidc_token: Option<github_oidc::TokenFile>,
}

impl Aws {
    pub async fn load(settings: &Settings) -> Result<Aws> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(settings.timeouts.connect)
                    .read_timeout(settings.timeouts.read)
                    .operation_attempt_timeout(settings.timeouts.attempt)
                    .operation_timeout(settings.timeouts.operation)
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(if settings.max_attempts == 0 {
                3
            } else {
                settings.max_attempts
            }));
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(profile) = &settings.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(endpoint) = &settings.endpoint_url {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some((id, secret)) = &settings.static_credentials {
            loader = loader.credentials_provider(aws_sdk_sts::config::Credentials::new(
                id,
                secret,
                None,
                None,
                "clawdinator-static",
            ));
        }
        let mut config = loader.load().await;
        let mut oidc_token = None;
        if let (None, Some(request)) = (&settings.static_credentials, github_oidc::Request::from_env()?) {
            let file = github_oidc::token_file(&request).await?;
            let provider = github_oidc::provider(&request, &file, config.region().cloned());
            config = config
                .into_builder()
                .credentials_provider(aws_sdk_sts::config::SharedCredentialsProvider::new(provider))
                .build();
            oidc_token = Some(file);
        }
        let custom_endpoint = config.endpoint_url().is_some();
        Ok(Aws { config, custom_endpoint, timeouts: settings.timeouts, _oidc_token: oidc_token })
    }

    /// The same configuration with other credentials (an assumed role's).
    pub fn with_credentials(&self, credentials: aws_credential_types::Credentials) -> Aws {
        Aws {
            config: self
                .config
                .to_builder()
                .credentials_provider(aws_sdk_sts::config::SharedCredentialsProvider::new(credentials))
                .build(),
            custom_endpoint: self.custom_endpoint,
            _oidc_token: self._oidc_token.clone(),
            timeouts: self.timeouts,
        }
    }

    /// The same configuration in another region (AMI copies).
    pub fn with_region(&self, region: &str) -> Aws {
        Aws {
            config: self.config.to_builder().region(Region::new(region.to_string())).build(),
            custom_endpoint: self.custom_endpoint,
            _oidc_token: self._oidc_token.clone(),
            timeouts: self.timeouts,
        }
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    pub fn region(&self) -> Option<&str> {
        self.config.region().map(|r| r.as_ref())
    }

    pub fn endpoint_url(&self) -> Option<&str> {
        self.config.endpoint_url()
    }

    pub fn s3(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::from(&self.config).force_path_style(self.custom_endpoint).build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    pub fn sts(&self) -> aws_sdk_sts::Client {
        aws_sdk_sts::Client::new(&self.config)
    }

    pub fn iam(&self) -> aws_sdk_iam::Client {
        aws_sdk_iam::Client::new(&self.config)
    }

    pub fn ec2(&self) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.config)
    }

    /// EBS direct calls move one 512 KiB block each: a stalled one should
    /// fail over in seconds, not minutes (coldsnap learned this from hung
    /// uploads): read 12 s, attempt 20 s, unless configured tighter.
    pub fn ebs(&self) -> aws_sdk_ebs::Client {
        let t = self.timeouts;
        let conf = aws_sdk_ebs::config::Builder::from(&self.config)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(t.connect)
                    .read_timeout(t.read.min(Duration::from_secs(12)))
                    .operation_attempt_timeout(t.attempt.min(Duration::from_secs(20)))
                    .operation_timeout(t.operation)
                    .build(),
            )
            .build();
        aws_sdk_ebs::Client::from_conf(conf)
    }

    pub fn secrets_manager(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.config)
    }

    pub fn ssm(&self) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&self.config)
    }

    /// The control API's deploy cooldowns live in a DynamoDB table.
    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.config)
    }

    /// The environment a child AWS tool (tofu) needs to act as this very
    /// identity: the current credentials (fresh: an assumed role's are
    /// refreshed by the provider) and the region. Values for a child's
    /// environment only, never for argv or output.
    pub async fn child_environment(&self) -> Result<Vec<(&'static str, String)>> {
        use aws_credential_types::provider::ProvideCredentials;
        let provider = self.config.credentials_provider().context("no AWS credentials are configured")?;
        let credentials = provider.provide_credentials().await.context("cannot resolve AWS credentials for tofu")?;
        let mut env = vec![
            ("AWS_ACCESS_KEY_ID", credentials.access_key_id().to_string()),
            ("AWS_SECRET_ACCESS_KEY", credentials.secret_access_key().to_string()),
        ];
        if let Some(token) = credentials.session_token() {
            env.push(("AWS_SESSION_TOKEN", token.to_string()));
        }
        if let Some(region) = self.region() {
            env.push(("AWS_REGION", region.to_string()));
        }
        Ok(env)
    }

    /// The caller's ARN (STS GetCallerIdentity): proves credentials work.
    pub async fn caller_arn(&self) -> Result<String> {
        let out = self.sts().get_caller_identity().send().await.map_err(|e| error("STS GetCallerIdentity", "", e))?;
        Ok(out.arn.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        global: crate::flags::Global,
    }

    fn parse(args: &[&str]) -> Result<Timeouts, clap::Error> {
        let cli = Cli::try_parse_from([&["clawdinator"], args].concat())?;
        Ok(Timeouts::from(&cli.global.timeouts))
    }

    /// Each flag sets its own limit, in seconds, fractions allowed.
    #[test]
    fn each_timeout_flag_sets_its_own_limit() {
        let flags =
            ["--connect-timeout", "1", "--read-timeout", "2.5", "--attempt-timeout", "3", "--operation-timeout", "4"];
        let t = parse(&flags).unwrap();
        let secs = Duration::from_secs_f64;
        assert_eq!(t, Timeouts { connect: secs(1.0), read: secs(2.5), attempt: secs(3.0), operation: secs(4.0) });
        let only_read = parse(&["--read-timeout", "7"]).unwrap();
        assert_eq!(only_read, Timeouts { read: secs(7.0), ..Timeouts::default() });
    }

    /// Zero, negative, not a number, infinite or beyond a `Duration`: a
    /// usage error naming the value, never a panic.
    #[test]
    fn a_timeout_that_is_not_positive_seconds_is_refused() {
        for bad in ["0", "-1", "x", "NaN", "inf", "1e300"] {
            let err =
                parse(&[&format!("--connect-timeout={bad}")]).err().unwrap_or_else(|| panic!("{bad} was accepted"));
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        }
    }
}
