//! `image …`: build the NixOS image, publish it as a fleet AMI, and the fleet's AMIs.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Build the NixOS image (raw) and describe it in dist/image.json.
    Build(BuildArgs),
    /// Upload the image and register it as a tagged fleet AMI (idempotent by content).
    Publish(PublishArgs),
    /// Fleet AMIs: the latest, the list, and pruning old ones.
    #[command(subcommand)]
    Ami(AmiCmd),
}

/// What `image build` builds and where it writes (also the pipeline's).
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
    /// The KVM device the build's VM needs, where KVM is exposed under another name.
    #[arg(long, env = "CLAWDINATOR_KVM_DEVICE", default_value = "/dev/kvm")]
    pub kvm_device: PathBuf,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The image description written by `image build`.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
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
    /// The fleet bucket, whose release manifests (releases/) say which AMIs a rollback may need.
    #[arg(long, env = "S3_BUCKET")]
    pub bucket: String,
    /// Keep every AMI built for one of this many newest releases.
    #[arg(long, default_value_t = 5)]
    pub keep_releases: usize,
    /// List what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}
