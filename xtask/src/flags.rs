//! Every command-line flag of `cargo xtask`, parsed in one place.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Take a NixOS flake to a running, self-bootstrapping fleet of EC2 hosts.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about, long_about = None)]
pub struct Xtask {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Clone, Default, Args)]
pub struct Global {
    /// AWS region (otherwise AWS_REGION, then the profile's region).
    #[arg(long, global = true, env = "AWS_REGION")]
    pub region: Option<String>,
    /// A file holding the region, read when --region and AWS_REGION are unset
    /// (on a host: /etc/clawdinator/region, written by the instance's user data).
    #[arg(long, global = true, env = "AWS_REGION_FILE")]
    pub region_file: Option<PathBuf>,
    /// AWS shared-config profile to take credentials and region from.
    #[arg(long, global = true, env = "AWS_PROFILE")]
    pub profile: Option<String>,
    /// More log output (repeat for more); RUST_LOG works too.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print one JSON document on stdout instead of human text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Run against a throwaway local AWS emulator (moto) instead of AWS.
    #[arg(long, global = true)]
    pub local: bool,
    /// Also write each audit record to this bucket (audit/…, never overwritten).
    #[arg(long, global = true, env = "CLAWDINATOR_AUDIT_BUCKET")]
    pub audit_bucket: Option<String>,
    /// The local audit log (default .clawdinators/audit.jsonl; under --local a throwaway one).
    #[arg(long, global = true, env = "CLAWDINATOR_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The fleet registry (nix/instances.json).
    #[command(subcommand)]
    Fleet(FleetCmd),
    /// Check every prerequisite and say which commands need it.
    Doctor(DoctorArgs),
    /// Secrets: check the age files every host needs.
    #[command(subcommand)]
    Secrets(SecretsCmd),
    /// Repository seeds: shallow clones shipped to every host.
    #[command(subcommand)]
    Seeds(SeedsCmd),
    /// Per-instance bootstrap bundles in S3: upload (CI) and fetch (host).
    #[command(subcommand)]
    Bootstrap(BootstrapCmd),
    /// Build the NixOS image (raw) and describe it in dist/image.json.
    #[command(name = "image-build")]
    ImageBuild(ImageBuildArgs),
    /// Publish a built image as a fleet AMI.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Fleet AMIs: the latest, the list, and pruning old ones.
    #[command(subcommand)]
    Ami(AmiCmd),
    /// The whole image pipeline: secrets check, seeds, bundles, image, publish, latest AMI.
    Pipeline(PipelineArgs),
    /// Mint a GitHub App installation token.
    #[command(name = "github-token")]
    GithubToken(GithubTokenArgs),
    /// Host side: shared memory files, read and changed under a lock, replaced whole.
    #[command(subcommand)]
    Memory(MemoryCmd),
    /// The audit trail of AWS changes: verify its chain, or print it.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Host side: snapshot an organisation's open pull requests and issues into shared memory.
    #[command(name = "github-sync")]
    GithubSync(GithubSyncArgs),
    /// Host side: the jobs of a host's own units (workspace, EFS tunnel, first switch).
    #[command(subcommand)]
    Host(HostCmd),
    /// Benchmarks against the old way on the same emulator (measures, never asserts).
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Run the whole test suite: Rust tests against the emulator plus the non-Rust checks.
    Test(TestArgs),
    /// The chat control API's Lambda package.
    #[command(name = "control-api", subcommand)]
    ControlApi(ControlApiCmd),
    /// Regenerate infra/opentofu/schema/aws-provider.json from the pinned npm provider package.
    #[command(name = "opentofu-schema")]
    OpentofuSchema,
}

#[derive(Debug, Subcommand)]
pub enum FleetCmd {
    /// Validate the registry and report every problem at once.
    Check(InstancesArg),
    /// The registry against EC2: instances, AMIs, revisions, SSM; drift by kind (exit 3 on drift).
    Status(FleetStatusArgs),
    /// Replace instances from the latest fleet AMI (or --ami), one at a time, canary first.
    Deploy(FleetDeployArgs),
    /// Switch running hosts to the flake at a git revision, canary first, rolling back a host that fails.
    Switch(FleetSwitchArgs),
    /// Host side: ask the control API (SigV4-signed with the instance role) for status or a deploy.
    Control(FleetControlArgs),
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
    #[arg(required = true, value_name = "all|NAME")]
    pub targets: Vec<String>,
    /// Deploy this AMI (checked: exists, available, a fleet AMI) instead of the latest.
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
    pub instances: InstancesArg,
}

#[derive(Debug, Args)]
pub struct FleetSwitchArgs {
    /// The full git revision to switch to.
    pub rev: String,
    /// Only these hosts (default: every instance of the registry).
    pub names: Vec<String>,
    /// Hosts switched at once after the canary (1-16).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub parallel: u16,
    /// Show the waves and the command; switch nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds one host may take (build, activation, health).
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
    #[command(flatten)]
    pub instances: InstancesArg,
}

#[derive(Debug, Clone, Args)]
pub struct InstancesArg {
    /// The fleet registry.
    #[arg(long = "instances", env = "INSTANCES_FILE", default_value = "nix/instances.json")]
    pub path: PathBuf,
}

/// Who owns the files a host-side command writes (names or ids).
#[derive(Debug, Clone, Args)]
pub struct FileOwner {
    /// Owner of the files written (name or uid).
    #[arg(long)]
    pub owner: Option<String>,
    /// Group of the files written (name or gid).
    #[arg(long)]
    pub group: Option<String>,
}

/// Which instances a command that writes works on: named, or all of them
/// said out loud (one of the two is required).
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct Selection {
    /// Only these instances (repeatable).
    #[arg(long)]
    pub instance: Vec<String>,
    /// Every instance of the registry.
    #[arg(long)]
    pub all: bool,
}

impl Selection {
    /// The names chosen; empty means every instance.
    pub fn names(&self) -> Vec<String> {
        if self.all {
            Vec::new()
        } else {
            self.instance.clone()
        }
    }
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The age identity used to encrypt and bundle secrets.
    #[arg(long, env = "AGE_KEY_FILE", default_value = "nix/keys/clawdinator.agekey")]
    pub age_key: PathBuf,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Only run Rust tests whose name contains this (passed to `cargo test`).
    pub filter: Option<String>,
    /// Skip the non-Rust checks (Nix, HCL, workflow lint).
    #[arg(long, conflicts_with = "checks_only")]
    pub rust_only: bool,
    /// Only the non-Rust checks (quicker while editing Nix, HCL or workflows).
    #[arg(long)]
    pub checks_only: bool,
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

#[derive(Debug, Subcommand)]
pub enum SecretsCmd {
    /// Check that every needed secret exists, is an age file and decrypts.
    Check(SecretsArgs),
    /// Decrypt the age files and write them to AWS Secrets Manager (only what changed).
    Seed(SecretsSeedArgs),
    /// Host side: fetch this instance's secrets from Secrets Manager into DEST.
    Fetch(SecretsFetchArgs),
    /// Host side: decrypt the bundle's age files into DEST (the bundle mode).
    Install(SecretsInstallArgs),
}

#[derive(Debug, Args)]
pub struct SecretsInstallArgs {
    /// The bundle's secrets directory (see `bootstrap fetch --secrets-dir`).
    #[arg(long, default_value = "/var/lib/clawd/nix-secrets")]
    pub from: PathBuf,
    /// The fleet's age identity (see `bootstrap fetch --age-key-path`).
    #[arg(long, default_value = "/etc/agenix/keys/clawdinator.agekey")]
    pub identity: PathBuf,
    /// Where the secrets go (one file each, mode 0400).
    #[arg(long, default_value = "/run/agenix")]
    pub dest: PathBuf,
    #[command(flatten)]
    pub owner: FileOwner,
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
    #[command(flatten)]
    pub instances: InstancesArg,
    /// The list of secrets every host needs.
    #[arg(long, env = "SECRETS_SPEC", default_value = "nix/secrets.json")]
    pub spec: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum SeedsCmd {
    /// Shallow-clone (or update) every repository of the seeds list.
    Prepare(SeedsPrepareArgs),
    /// Host side: copy each seed repository that is missing from DEST (never touches one that exists).
    Install(SeedsInstallArgs),
}

#[derive(Debug, Args)]
pub struct SeedsInstallArgs {
    /// The fetched seeds (see `bootstrap fetch --repo-seeds-dir`).
    #[arg(long, default_value = "/var/lib/clawd/repo-seeds")]
    pub from: PathBuf,
    /// The agents' working clones.
    #[arg(long, default_value = "/var/lib/clawd/repos")]
    pub dest: PathBuf,
    #[command(flatten)]
    pub owner: FileOwner,
}

#[derive(Debug, Args)]
pub struct SeedsPrepareArgs {
    /// Where the clones go.
    #[arg(long, env = "REPO_SEEDS_DIR", default_value = "repo-seeds")]
    pub dest: PathBuf,
    /// The seeds list: name<TAB>url[<TAB>branch] per line.
    #[arg(long, default_value = "clawdinator/repos.tsv")]
    pub list: PathBuf,
    /// Write SEEDS.json and exit 0 even when some repositories failed.
    #[arg(long)]
    pub allow_partial: bool,
    /// Clones run at once (1-32).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub jobs: u16,
}

#[derive(Debug, Subcommand)]
pub enum BootstrapCmd {
    /// Build and upload every instance's bundle (secrets, repo seeds, manifest).
    Upload(BootstrapUploadArgs),
    /// Host side: download, verify and install this host's bundle.
    Fetch(BootstrapFetchArgs),
}

#[derive(Debug, Args)]
pub struct BootstrapUploadArgs {
    #[command(flatten)]
    pub secrets: SecretsArgs,
    /// The bucket the bundles go to.
    #[arg(long, env = "S3_BUCKET")]
    pub bucket: Option<String>,
    /// The prepared seeds directory (see `seeds prepare`).
    #[arg(long, env = "REPO_SEEDS_DIR", default_value = "repo-seeds")]
    pub repo_seeds: PathBuf,
    #[command(flatten)]
    pub select: Selection,
    /// Show what would be created, replaced or left unchanged; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// S3 requests in flight at once (1-128).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=128))]
    pub concurrency: u16,
}

#[derive(Debug, Args)]
pub struct BootstrapFetchArgs {
    /// The bucket holding the bundles (else the content of --bucket-file).
    #[arg(long, env = "S3_BUCKET")]
    pub bucket: Option<String>,
    /// A file naming the bucket, written at boot by the instance's user data.
    #[arg(long, default_value = "/etc/clawdinator/bucket")]
    pub bucket_file: PathBuf,
    /// This host's bootstrap prefix (--prefix-file, when present, wins).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Where the host reads its `*.age` files (0700): a link into the current generation.
    #[arg(long)]
    pub secrets_dir: PathBuf,
    /// Where the host reads its repository seeds: a link into the current generation.
    #[arg(long)]
    pub repo_seeds_dir: PathBuf,
    /// Where the host reads the age identity (0400): a link into the current generation.
    #[arg(long)]
    pub age_key_path: PathBuf,
    /// A file whose content, when present, is the prefix to use.
    #[arg(long, default_value = "/etc/clawdinator/bootstrap-prefix")]
    pub prefix_file: PathBuf,
    /// Where the bundle's generations live; the three paths above become links into it.
    #[arg(long, default_value = "/var/lib/clawd/bootstrap")]
    pub state_dir: PathBuf,
}

/// What image-build builds and where it writes (also the pipeline's).
#[derive(Debug, Clone, Args)]
pub struct BuildArgs {
    /// The flake configuration whose image to build (default: clawdinator-image, the fleet's generic image).
    #[arg(long)]
    pub host: Option<String>,
    /// Where image.json (and the nix out-link) go.
    #[arg(long, env = "OUT_DIR", default_value = "dist")]
    pub out: PathBuf,
    /// The directory holding the fleet's flake.nix.
    #[arg(long, default_value = ".")]
    pub flake: PathBuf,
}

#[derive(Debug, Args)]
pub struct ImageBuildArgs {
    #[command(flatten)]
    pub build: BuildArgs,
}

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Upload the image and register it as a tagged fleet AMI (idempotent by content).
    Publish(PublishArgs),
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The image description written by image-build.
    #[arg(long, default_value = "dist/image.json")]
    pub image: PathBuf,
    /// How the disk reaches EBS.
    #[arg(long, value_enum, default_value = "ebs-direct")]
    pub via: Via,
    /// Bucket for --via s3-import.
    #[arg(long, env = "S3_BUCKET")]
    pub bucket: Option<String>,
    /// Also copy the AMI to these regions (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub copy_to_regions: Vec<String>,
    /// Encrypt the snapshot with this KMS key (every block is then sent).
    #[arg(long)]
    pub kms_key: Option<String>,
    /// Blocks in flight at once for EBS direct (1-256); S3 parts use at most 8.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,
    /// Mark the AMI deprecated after this many days.
    #[arg(long)]
    pub deprecate_after: Option<u64>,
    /// Minutes to wait for VM Import (--via s3-import).
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Keep the uploaded S3 object after the import (--via s3-import).
    #[arg(long)]
    pub keep_object: bool,
    /// Say what would be uploaded, registered and copied; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Upload (or reuse) the snapshot and stop: no wait, no AMI (like `coldsnap upload`); a later publish registers it.
    #[arg(long, conflicts_with_all = ["copy_to_regions", "deprecate_after"])]
    pub snapshot_only: bool,
}

/// How `image publish` gets the disk into EBS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// EBS direct APIs: blocks straight into a snapshot (raw images only; no bucket).
    EbsDirect,
    /// Upload to S3, then VM Import's import-snapshot (raw, vhd or vmdk; needs the vmimport role).
    S3Import,
}

#[derive(Debug, Subcommand)]
pub enum AmiCmd {
    /// The newest fleet AMI (or a checked override, for rollbacks).
    Latest(AmiLatestArgs),
    /// Every fleet AMI with its digest, revision and the instances using it.
    List,
    /// Deregister old fleet AMIs and delete their snapshots.
    Prune(AmiPruneArgs),
}

#[derive(Debug, Args)]
pub struct AmiLatestArgs {
    /// Use this AMI instead, after checking it exists and is a fleet AMI.
    #[arg(long = "override", env = "AMI_OVERRIDE")]
    pub r#override: Option<String>,
}

#[derive(Debug, Args)]
pub struct AmiPruneArgs {
    /// Keep this many newest available AMIs (the latest available one is always kept).
    #[arg(long)]
    pub keep: usize,
    /// Only remove AMIs older than this many days.
    #[arg(long)]
    pub older_than: Option<u64>,
    /// Also delete fleet snapshots that no AMI uses (listed either way).
    #[arg(long)]
    pub orphans: bool,
    /// List what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct PipelineArgs {
    #[command(flatten)]
    pub secrets: SecretsArgs,
    /// The seeds list.
    #[arg(long, default_value = "clawdinator/repos.tsv")]
    pub list: PathBuf,
    /// Where the seeds are prepared.
    #[arg(long, env = "REPO_SEEDS_DIR", default_value = "repo-seeds")]
    pub repo_seeds: PathBuf,
    /// The bucket for bundles (and the s3-import path).
    #[arg(long, env = "S3_BUCKET")]
    pub bucket: Option<String>,
    #[command(flatten)]
    pub build: BuildArgs,
    /// Check, prepare and build, but only say what would be uploaded and registered.
    #[arg(long)]
    pub dry_run: bool,
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
    /// GitHub API base URL (GitHub Enterprise: https://HOST/api/v3).
    #[arg(long, default_value = "https://api.github.com")]
    pub api_url: String,
    /// Write GITHUB_TOKEN=… and GH_TOKEN=… here (mode 0600) instead of printing the token.
    #[arg(long)]
    pub env_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ControlApiCmd {
    /// Build `bootstrap` for provided.al2023 (glibc 2.34), check its glibc symbols, zip it with the registry.
    Package {
        /// Where the zip goes (OpenTofu's control_api_zip).
        #[arg(long, default_value = "dist/control-api.zip")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Check the chain of records (local, and S3 with --bucket) and name the first broken link.
    Verify(AuditVerifyArgs),
    /// Print the records.
    Log(AuditLogArgs),
}

#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    /// Also check the S3 copies in this bucket (default --audit-bucket).
    #[arg(long)]
    pub bucket: Option<String>,
}

#[derive(Debug, Args)]
pub struct AuditLogArgs {
    /// Only records at or after this time (RFC 3339, or a date like 2026-11-21).
    #[arg(long)]
    pub since: Option<String>,
    /// Print the S3 copies in this bucket instead of the local log: every
    /// writer's records, the control API's and CI runners' among them.
    #[arg(long)]
    pub bucket: Option<String>,
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

#[derive(Debug, Subcommand)]
pub enum MemoryCmd {
    /// Print a memory file (under a shared lock; empty when it does not exist).
    Read(MemoryFileArgs),
    /// Replace a memory file with standard input.
    Write(MemoryFileArgs),
    /// Add standard input at the end of a memory file (daily notes).
    Append(MemoryFileArgs),
    /// Replace one exact occurrence of a text in a memory file.
    Edit(MemoryEditArgs),
    /// Prepare the shared memory root: its directories, and each template it lacks.
    Init(MemoryInitArgs),
}

#[derive(Debug, Args)]
pub struct MemoryInitArgs {
    /// The shared memory directory (the EFS mount).
    #[arg(long, env = "CLAWDINATOR_MEMORY_DIR", default_value = "/memory")]
    pub root: PathBuf,
    /// The memory templates (this repository's memory/); a file the root already has is never replaced.
    #[arg(long)]
    pub templates: PathBuf,
    #[command(flatten)]
    pub owner: FileOwner,
}

#[derive(Debug, Subcommand)]
pub enum HostCmd {
    /// Install the agent workspace templates; files the templates do not name are left alone.
    WorkspaceSeed(WorkspaceSeedArgs),
    /// Write the stunnel configuration that carries NFS to this host's EFS over TLS.
    EfsStunnelConfig(EfsStunnelConfigArgs),
    /// First boot: switch to this instance's configuration, unless a deployment is recorded.
    FirstSwitch(SwitchArgs),
    /// Run a program (the gateway) with secrets from files in its environment, never on disk again.
    Exec(HostExecArgs),
    /// selfUpdate: fast-forward the repository copy and switch when its revision changed.
    SelfUpdate(SwitchArgs),
    /// The release lane on this host: build REV, activate, check health, make it the boot default; roll back on failure.
    Switch(HostSwitchArgs),
}

#[derive(Debug, Args)]
pub struct HostSwitchArgs {
    /// The full git revision (40 hex digits) to switch to.
    pub rev: String,
    /// This host's instance name (else the content of --instance-file).
    #[arg(long)]
    pub instance: Option<String>,
    #[arg(long, default_value = "/etc/clawdinator/instance-name")]
    pub instance_file: PathBuf,
    /// The repository copy (a git clone of the fleet's flake).
    #[arg(long, default_value = "/var/lib/clawd/repos/clawdinators")]
    pub flake: PathBuf,
    #[arg(long, default_value = "/var/lib/clawd/deployment.json")]
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
    /// The fleet's cron jobs (clawdinator/cron-jobs.json), installed as the gateway's cron store.
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

#[derive(Debug, Args)]
pub struct SwitchArgs {
    /// This host's instance name (else the content of --instance-file).
    #[arg(long)]
    pub instance: Option<String>,
    /// A file naming this host's instance, written at boot by its user data.
    #[arg(long, default_value = "/etc/clawdinator/instance-name")]
    pub instance_file: PathBuf,
    /// The repository copy the host received in its bundle (a flake).
    #[arg(long, default_value = "/var/lib/clawd/repos/clawdinators")]
    pub flake: PathBuf,
    /// The deployment record: what the host runs (a first switch does nothing once it exists).
    #[arg(long, default_value = "/var/lib/clawd/deployment.json")]
    pub record: PathBuf,
    /// Show what would run; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct MemoryFileArgs {
    /// The file: relative to --root, or an absolute path under it.
    pub path: PathBuf,
    /// The shared memory directory; nothing outside it is touched.
    #[arg(long, env = "CLAWDINATOR_MEMORY_DIR", default_value = "/memory")]
    pub root: PathBuf,
    /// Seconds to wait for the lock before giving up (0-3600).
    #[arg(long, default_value_t = 5.0, value_parser = lock_wait)]
    pub wait: f64,
}

fn lock_wait(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(secs) if (0.0..=3600.0).contains(&secs) => Ok(secs),
        _ => Err(format!("{s} is not a number of seconds from 0 to 3600")),
    }
}

#[derive(Debug, Args)]
pub struct MemoryEditArgs {
    #[command(flatten)]
    pub file: MemoryFileArgs,
    /// The exact text to replace; it must appear once.
    #[arg(long)]
    pub replace: String,
    /// What to put in its place.
    #[arg(long)]
    pub with: String,
}

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// bootstrap upload vs the old per-instance tar + aws s3 cp loop.
    Bootstrap(BenchBootstrapArgs),
    /// image publish vs coldsnap and the old aws s3 cp.
    Image(BenchImageArgs),
}

#[derive(Debug, Args)]
pub struct BenchBootstrapArgs {
    #[arg(long, default_value_t = 30)]
    pub instances: usize,
}

#[derive(Debug, Args)]
pub struct BenchImageArgs {
    /// Size of the raw image.
    #[arg(long, default_value_t = 1)]
    pub size_gib: u64,
    /// Random data scattered through it.
    #[arg(long, default_value_t = 64)]
    pub data_mib: u64,
    /// Leave coldsnap out (it is cargo-installed on first use otherwise).
    #[arg(long)]
    pub skip_coldsnap: bool,
}
