//! `secrets …`: the age files, Secrets Manager, a host's secrets and GitHub App tokens.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::flags::{FileOwner, InstancesArg, Selection};

#[derive(Debug, Subcommand)]
pub enum SecretsCmd {
    /// Check that every needed secret exists, is an age file and decrypts.
    Check(SecretsArgs),
    /// Decrypt the age files and write them to AWS Secrets Manager (only what changed).
    Seed(SecretsSeedArgs),
    /// Upload the age files that changed to s3://BUCKET/age-secrets/ (each checked to decrypt first).
    Push(SecretsStoreArgs),
    /// CI: download and verify every needed age file from s3://BUCKET/age-secrets/ into --secrets-dir.
    Pull(SecretsStoreArgs),
    /// Host side: fetch this instance's secrets from Secrets Manager into DEST.
    Fetch(SecretsFetchArgs),
    /// Host side: decrypt the bundle's age files into DEST (the bundle mode).
    Install(SecretsInstallArgs),
    /// Mint a GitHub App installation token.
    #[command(name = "github-token")]
    GithubToken(GithubTokenArgs),
}

/// Where the secrets and the lists that name them are.
#[derive(Debug, Clone, Args)]
pub struct SecretsArgs {
    #[command(flatten)]
    pub instances: InstancesArg,
    /// The list of secrets every host needs (also read by the NixOS module).
    #[arg(long, env = "SECRETS_SPEC", default_value = "nix/secrets.json")]
    pub spec: PathBuf,
    /// Directory of `*.age` files.
    #[arg(long, env = "SECRETS_DIR", default_value = "nix/age-secrets")]
    pub secrets_dir: PathBuf,
    /// The fleet's age identity (private key).
    #[arg(long, env = "AGE_KEY_FILE", default_value = "nix/keys/clawdinator.agekey")]
    pub age_key: PathBuf,
}

#[derive(Debug, Args)]
pub struct SecretsStoreArgs {
    #[command(flatten)]
    pub secrets: SecretsArgs,
    /// The fleet bucket holding age-secrets/.
    #[arg(long, env = "S3_BUCKET")]
    pub bucket: Option<String>,
    /// push: say which files would be uploaded; upload nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct SecretsInstallArgs {
    /// The bundle's secrets directory (see `bootstrap fetch --secrets-dir`).
    #[arg(long, default_value = "/var/lib/clawdinator/nix-secrets")]
    pub from: PathBuf,
    /// The fleet's age identity (see `bootstrap fetch --age-key-path`).
    #[arg(long, default_value = "/var/lib/clawdinator/clawdinator.agekey")]
    pub identity: PathBuf,
    /// Where the secrets go (one file each, mode 0400).
    #[arg(long, default_value = "/run/agenix")]
    pub dest: PathBuf,
    #[command(flatten)]
    pub owner: FileOwner,
    /// This secret's file stays root's, not the owner's (repeatable; the bots' App key).
    #[arg(long = "root-only", value_name = "FILE")]
    pub root_only: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SecretsSeedArgs {
    #[command(flatten)]
    pub secrets: SecretsArgs,
    #[command(flatten)]
    pub select: Selection,
    /// Print create, update or unchanged for each secret; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete managed secrets that no longer exist locally.
    #[arg(long)]
    pub prune: bool,
}

#[derive(Debug, Args)]
pub struct SecretsFetchArgs {
    /// This host's instance name (else the content of --instance-file).
    #[arg(long)]
    pub instance: Option<String>,
    /// A file naming this host's instance, written at boot by its user data.
    #[arg(long, default_value = "/etc/clawdinator/instance-name")]
    pub instance_file: PathBuf,
    /// Where the secrets go (one file each, mode 0400).
    #[arg(long, default_value = "/run/agenix")]
    pub dest: PathBuf,
    #[command(flatten)]
    pub owner: FileOwner,
    /// This secret's file stays root's, not the owner's (repeatable; the bots' App key).
    #[arg(long = "root-only", value_name = "FILE")]
    pub root_only: Vec<String>,
    #[command(flatten)]
    pub instances: InstancesArg,
    /// The list of secrets every host needs.
    #[arg(long, env = "SECRETS_SPEC", default_value = "nix/secrets.json")]
    pub spec: PathBuf,
}

#[derive(Debug, Args)]
pub struct GithubTokenArgs {
    #[arg(long, env = "GITHUB_APP_ID")]
    pub app_id: Option<String>,
    #[arg(long, env = "GITHUB_APP_INSTALLATION_ID")]
    pub installation_id: Option<String>,
    /// The app's private key (PEM).
    #[arg(long, env = "GITHUB_APP_PEM_FILE")]
    pub pem: Option<PathBuf>,
    /// Read the private key from this Secrets Manager secret instead.
    #[arg(long)]
    pub pem_secret: Option<String>,
    /// GitHub API base URL (GitHub Enterprise: https://HOST/api/v3; Actions runners set GITHUB_API_URL).
    #[arg(long, env = "GITHUB_API_URL", default_value = "https://api.github.com")]
    pub api_url: String,
    /// Write GITHUB_TOKEN=… and GH_TOKEN=… here (mode 0600) instead of printing the token.
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    /// Also keep the token where gh and git read it on every call: DIR/hosts.yml (GH_CONFIG_DIR) and DIR/token, 0600.
    #[arg(long, value_name = "DIR", requires = "env_file")]
    pub gh_config_dir: Option<PathBuf>,
    /// The token covers only this repository of the installation (repeatable; none: every repository).
    #[arg(long = "repository", value_name = "NAME")]
    pub repositories: Vec<String>,
    /// NAME=LEVEL: a permission the token gets (repeatable, at least one; only the allow-list clawdinator/github-permissions.json).
    #[arg(long = "permission", value_name = "NAME=LEVEL", required = true)]
    pub permissions: Vec<String>,
    /// This fleet's own repository: a token never gets contents=write on it.
    #[arg(long, default_value = "clawdinators")]
    pub fleet_repository: String,
    #[command(flatten)]
    pub owner: crate::flags::FileOwner,
}
