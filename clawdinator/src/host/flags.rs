//! `host …`: the jobs of a host's own units.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::flags::FileOwner;

/// The orchestrator's tree of skill version v1 (its files are
/// `<owner>-<repo>/<N>.txt` and `<N>.meta.json`).
pub const DEFAULT_FROM: &str = "/memory/pr-intent/v1";

/// Where the original fleet published v1, and the only prefix the public
/// bucket's policy lets anyone list and read.
pub const DEFAULT_PREFIX: &str = "v1/";

#[derive(Debug, Subcommand)]
pub enum HostCmd {
    /// Install the agent workspace templates; files the templates do not name are left alone.
    WorkspaceSeed(WorkspaceSeedArgs),
    /// Write the stunnel configuration that carries NFS to this host's EFS over TLS.
    EfsStunnelConfig(EfsStunnelConfigArgs),
    /// First boot: switch to this instance's system in the newest release, unless a deployment is recorded.
    FirstSwitch(SwitchArgs),
    /// Run a program (the gateway) with secrets from files in its environment, never on disk again.
    Exec(HostExecArgs),
    /// selfUpdate: switch to this instance's system in the newest release when it is not running it.
    SelfUpdate(SwitchArgs),
    /// The release lane on this host: fetch a signed system from the fleet cache, activate, check health, make it the boot default; roll back on failure.
    Switch(HostSwitchArgs),
    /// After a secret's rotation (fleet refresh-secrets): fetch the bundle again, install the secrets, restart their readers.
    #[command(name = "refresh-secrets")]
    RefreshSecrets(RefreshSecretsArgs),
    /// Snapshot an organisation's open pull requests and issues (every page, with the fields triage reads) into shared memory.
    #[command(name = "github-sync")]
    GithubSync(GithubSyncArgs),
    /// One of the fleet's units' journal (what `fleet logs` runs here).
    Logs(HostLogsArgs),
    /// Restart one of the fleet's units and check it is active again (what `fleet restart` runs here).
    Restart(HostRestartArgs),
    /// The pi coding agent's auth.json from the API key files (0600, written whole).
    #[command(name = "pi-auth")]
    PiAuth(PiAuthArgs),
    /// Mirror a public-safe tree of shared memory to a prefix of the public bucket (changed files only; removed files deleted).
    #[command(name = "publish-tree")]
    PublishTree(PublishTreeArgs),
}

#[derive(Debug, Args)]
pub struct PiAuthArgs {
    #[arg(long, default_value = "/run/agenix/clawdinator-openai-api-key-peter-2")]
    pub openai_key_file: PathBuf,
    #[arg(long, default_value = "/run/agenix/clawdinator-anthropic-api-key")]
    pub anthropic_key_file: PathBuf,
    /// Where pi reads its credentials.
    #[arg(long, default_value = "/var/lib/clawd/.pi/agent/auth.json")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct PublishTreeArgs {
    /// The tree to publish (links in it are never followed): one skill version's memos.
    #[arg(long, default_value = DEFAULT_FROM)]
    pub from: PathBuf,
    /// The public bucket.
    #[arg(long)]
    pub bucket: String,
    /// The key prefix mirrored (ends with /; everything under it that the tree lacks is deleted); the
    /// bucket policy makes only v1/ public.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    pub prefix: String,
    /// Say what would be uploaded and deleted; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct HostLogsArgs {
    #[command(flatten)]
    pub journal: crate::flags::JournalArgs,
}

#[derive(Debug, Args)]
pub struct HostRestartArgs {
    /// The unit: clawdinator (the gateway) or clawdinator-….
    #[arg(long, default_value = "clawdinator")]
    pub unit: String,
}

#[derive(Debug, Args)]
pub struct RefreshSecretsArgs {
    /// The units that read secrets, restarted if they run (repeatable).
    #[arg(long = "reader", default_values = ["clawdinator.service", "clawdinator-github-app-token.service"])]
    pub readers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct WorkspaceSeedArgs {
    /// The workspace templates (this repository's clawdinator/workspace).
    #[arg(long)]
    pub templates: PathBuf,
    /// The agent's workspace.
    #[arg(long, default_value = "/var/lib/clawd/workspace")]
    pub dest: PathBuf,
    /// A file added at the end of TOOLS.md (the toolchain list the module writes).
    #[arg(long)]
    pub tools_extra: Option<PathBuf>,
    /// The fleet's cron jobs (clawdinator/cron-jobs.json), merged into the gateway's cron store by id (jobs made from chat and all run state kept).
    #[arg(long, requires = "cron_store")]
    pub cron_jobs: Option<PathBuf>,
    /// The gateway's cron store (its config's cron.store).
    #[arg(long, requires = "cron_jobs")]
    pub cron_store: Option<PathBuf>,
    #[command(flatten)]
    pub owner: FileOwner,
}

#[derive(Debug, Args)]
pub struct EfsStunnelConfigArgs {
    /// The EFS file system id (else the content of --file-system-id-file).
    #[arg(long)]
    pub file_system_id: Option<String>,
    /// A file naming the EFS file system, written at boot by the instance's user data.
    #[arg(long, default_value = "/etc/clawdinator/efs-id")]
    pub file_system_id_file: PathBuf,
    /// Where the configuration goes.
    #[arg(long)]
    pub out: PathBuf,
    /// The CA bundle that verifies the EFS endpoint's certificate.
    #[arg(long)]
    pub ca_file: PathBuf,
    /// The local address NFS connects to.
    #[arg(long, default_value = "127.0.0.1:2049")]
    pub accept: String,
}

/// What every switch on a host works with: who it is, the fleet's cache,
/// and where the system and the deployment record are.
#[derive(Debug, Args)]
pub struct Deployment {
    /// This host's instance name (else the content of --instance-file).
    #[arg(long)]
    pub instance: Option<String>,
    /// A file naming this host's instance, written at boot by its user data.
    #[arg(long, default_value = "/etc/clawdinator/instance-name")]
    pub instance_file: PathBuf,
    /// The fleet's binary cache bucket (else the content of --cache-bucket-file); none: nix.conf's substituters only.
    #[arg(long)]
    pub cache_bucket: Option<String>,
    /// A file naming the cache bucket, written at boot by the instance's user data.
    #[arg(long, default_value = "/etc/clawdinator/cache-bucket")]
    pub cache_bucket_file: PathBuf,
    /// The nix store to realise the system in, as a directory (tests); default: the host's own.
    #[arg(long, hide = true)]
    pub store: Option<PathBuf>,
    /// The deployment record: what the host runs (a first switch does nothing once it exists).
    #[arg(long, default_value = "/var/lib/clawdinator/deployment.json")]
    pub record: PathBuf,
    #[arg(long, default_value = "/run/current-system")]
    pub current_system: PathBuf,
    #[arg(long, default_value = "/nix/var/nix/profiles/system")]
    pub system_profile: PathBuf,
    /// The unit that must be active and stable after the switch.
    #[arg(long, default_value = "clawdinator")]
    pub unit: String,
    /// Seconds the unit must stay active without restarting (1-3600).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub settle: u64,
    /// Say what would happen; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// First switch and self-update: this host's system from the newest release.
#[derive(Debug, Args)]
pub struct SwitchArgs {
    #[command(flatten)]
    pub deployment: Deployment,
    /// The fleet bucket, whose releases/ name each host's system (else the content of --bucket-file).
    #[arg(long)]
    pub bucket: Option<String>,
    /// A file naming the fleet bucket, written at boot by the instance's user data.
    #[arg(long, default_value = "/etc/clawdinator/bucket")]
    pub bucket_file: PathBuf,
}

#[derive(Debug, Args)]
pub struct HostExecArgs {
    /// NAME=FILE: the variable NAME gets FILE's content (trailing newline dropped; repeatable).
    #[arg(long = "secret-env", value_name = "NAME=FILE")]
    pub secret_env: Vec<String>,
    /// The program and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "PROGRAM")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct HostSwitchArgs {
    /// The system's store path (/nix/store/<hash>-nixos-system-<name>), as the release manifest names it.
    pub system: String,
    #[command(flatten)]
    pub deployment: Deployment,
}

#[derive(Debug, Args)]
pub struct GithubSyncArgs {
    /// The GitHub organisation.
    #[arg(long)]
    pub org: String,
    /// The shared memory directory; the snapshot goes to github/prs.md and github/issues.md in it.
    #[arg(long, env = "CLAWDINATOR_MEMORY_DIR", default_value = "/memory")]
    pub root: PathBuf,
    /// GitHub API base URL (GitHub Enterprise: https://HOST/api/v3).
    #[arg(long, default_value = "https://api.github.com")]
    pub api_url: String,
}
