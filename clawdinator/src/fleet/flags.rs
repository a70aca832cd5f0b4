//! `fleet …`: the registry against EC2, deploys, switches and the control API client.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::flags::InstancesArg;

#[derive(Debug, Subcommand)]
pub enum FleetCmd {
    /// Validate the registry and report every problem at once.
    Check(FleetCheckArgs),
    /// The registry against EC2: instances, AMIs, revisions, SSM; drift by kind (exit 3 on drift).
    Status(FleetStatusArgs),
    /// Replace instances from the latest fleet AMI (or --ami), one at a time, canary first.
    Deploy(FleetDeployArgs),
    /// Switch running hosts to a release (the systems CI built for a revision), canary first, rolling back a host that fails.
    Switch(FleetSwitchArgs),
    /// After a secret's rotation: running hosts fetch their bundle again, install the secrets and restart their readers.
    #[command(name = "refresh-secrets")]
    RefreshSecrets(FleetRefreshArgs),
    /// A host's unit journal, through SSM (SSH is off).
    Logs(FleetLogsArgs),
    /// Restart a unit on a host through SSM and check it comes back active.
    Restart(FleetRestartArgs),
    /// Host side, root: the control helper, the agents' only way to the control API (a Unix socket; see `fleet control --socket`).
    #[command(name = "control-helper")]
    ControlHelper(FleetControlHelperArgs),
    /// Host side: ask the control API (SigV4-signed with the instance role) for status or a deploy.
    Control(FleetControlArgs),
}

#[derive(Debug, Args)]
pub struct FleetCheckArgs {
    #[command(flatten)]
    pub instances: InstancesArg,
}

/// How often a command that waits on AWS asks again.
#[derive(Debug, Args)]
pub struct PollArg {
    /// Seconds between two polls of AWS while waiting (0.05-60).
    #[arg(long = "poll-seconds", env = "CLAWDINATOR_POLL_SECONDS", default_value = "5", value_name = "SECONDS", value_parser = poll_seconds)]
    pub poll: Duration,
}

/// A poll interval in seconds, fractions allowed; kept within 0.05-60.
fn poll_seconds(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() => Ok(Duration::from_secs_f64(secs.clamp(0.05, 60.0))),
        _ => Err(format!("{text:?} is not a number of seconds")),
    }
}

#[derive(Debug, Args)]
pub struct FleetRefreshArgs {
    /// Only these hosts (default: every instance of the registry).
    pub names: Vec<String>,
    /// Name the hosts and the command; run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds one host may take.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    #[command(flatten)]
    pub poll: PollArg,
    #[command(flatten)]
    pub instances: InstancesArg,
}

#[derive(Debug, Args)]
pub struct FleetLogsArgs {
    /// The host: an instance name of the registry.
    pub name: String,
    #[command(flatten)]
    pub journal: crate::flags::JournalArgs,
    /// Seconds to wait for the host.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    #[command(flatten)]
    pub poll: PollArg,
    #[command(flatten)]
    pub instances: InstancesArg,
}

#[derive(Debug, Args)]
pub struct FleetRestartArgs {
    /// The host: an instance name of the registry.
    pub name: String,
    /// The unit: clawdinator (the gateway) or clawdinator-….
    #[arg(long, default_value = "clawdinator")]
    pub unit: String,
    /// Name the host, instance and unit; restart nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds to wait for the host.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    #[command(flatten)]
    pub poll: PollArg,
    #[command(flatten)]
    pub instances: InstancesArg,
}

#[derive(Debug, Args)]
pub struct FleetControlArgs {
    #[command(subcommand)]
    pub action: ControlAction,
    /// The function URL (default: SSM parameter /clawdinator/control-api-url).
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// This host's instance name (a deploy of it, or of `all`, is refused here).
    #[arg(long, global = true, default_value = "/etc/clawdinator/instance-name")]
    pub instance_file: PathBuf,
    /// Ask through the control helper's socket instead of signing here (agents hold no AWS credentials).
    #[arg(long, global = true, env = "CLAWDINATOR_CONTROL_SOCKET", conflicts_with = "url")]
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FleetControlHelperArgs {
    /// The socket to listen on (made 0660; its directory's group may connect).
    #[arg(long, default_value = "/run/clawdinator-control/control.sock")]
    pub socket: PathBuf,
    /// The function URL (default: SSM parameter /clawdinator/control-api-url).
    #[arg(long)]
    pub url: Option<String>,
    /// This host's instance name (a deploy of it, or of `all`, is refused).
    #[arg(long, default_value = "/etc/clawdinator/instance-name")]
    pub instance_file: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum ControlAction {
    /// The fleet status, as the API sees it.
    Status,
    /// Ask for a deploy of another instance (the API decides by IAM identity).
    Deploy {
        /// An instance name of the registry.
        target: String,
        /// A fleet AMI to deploy instead of the latest (rollback).
        #[arg(long)]
        ami: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct FleetStatusArgs {
    #[command(flatten)]
    pub instances: InstancesArg,
    /// The revision the fleet should run (default: the one most instances run).
    #[arg(long)]
    pub revision: Option<String>,
}

#[derive(Debug, Args)]
pub struct FleetDeployArgs {
    /// `all`, or instance names of the registry.
    #[arg(required_unless_present = "missing", value_name = "all|NAME")]
    pub targets: Vec<String>,
    /// Only create the registry instances EC2 lacks (a new registry entry); replace none.
    /// Runs no tofu at all when none is missing.
    #[arg(long, conflicts_with = "targets")]
    pub missing: bool,
    /// Deploy this AMI (checked: exists, available, a fleet AMI) instead of the latest; empty
    /// means the latest (a workflow input left blank).
    #[arg(long, env = "AMI_OVERRIDE")]
    pub ami: Option<String>,
    /// Who asks (an instance name for a bot): an instance never deploys itself.
    #[arg(long, env = "CLAWDINATOR_CALLER")]
    pub caller: Option<String>,
    /// Do not ask before deploying `all`.
    #[arg(long)]
    pub yes: bool,
    /// Print each tofu invocation and the variables it sets; run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The OpenTofu root module.
    #[arg(long, default_value = "infra/opentofu/aws")]
    pub chdir: PathBuf,
    /// A .tfvars file with the fleet's variables (VPC, subnets, bucket, …).
    #[arg(long, env = "TF_VAR_FILE")]
    pub var_file: Option<PathBuf>,
    /// The state bucket.
    #[arg(long, env = "TF_BACKEND_BUCKET")]
    pub backend_bucket: Option<String>,
    /// The state object's key.
    #[arg(long, env = "TF_BACKEND_KEY", default_value = "tfstate/fleet.tfstate")]
    pub backend_key: String,
    /// The state bucket's region.
    #[arg(long, env = "TF_BACKEND_REGION")]
    pub backend_region: Option<String>,
    /// The state lock table.
    #[arg(long, env = "TF_BACKEND_LOCK_TABLE", default_value = "clawdinator-terraform-locks")]
    pub lock_table: String,
    /// Seconds to wait for each new instance to be running, pass its status checks and have SSM online.
    #[arg(long, default_value_t = 900)]
    pub healthy_timeout: u64,
    #[command(flatten)]
    pub poll: PollArg,
    #[command(flatten)]
    pub instances: InstancesArg,
}

#[derive(Debug, Args)]
pub struct FleetSwitchArgs {
    /// The full git revision to switch to (its release manifest names each host's system).
    pub rev: String,
    /// Only these hosts (default: every instance of the registry).
    pub names: Vec<String>,
    /// The fleet bucket, where releases/<rev>.json is.
    #[arg(long, env = "S3_BUCKET")]
    pub bucket: Option<String>,
    /// Hosts switched at once after the canary (1-16).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub parallel: u16,
    /// Show the waves and the command; switch nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds one host may take (fetch, activation, health).
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
    #[command(flatten)]
    pub poll: PollArg,
    #[command(flatten)]
    pub instances: InstancesArg,
}
