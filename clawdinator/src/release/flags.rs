//! `release …`: every host's system built once per revision, signed into
//! the fleet's binary cache, and named in a write-once release manifest.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::flags::InstancesArg;

#[derive(Debug, Subcommand)]
pub enum ReleaseCmd {
    /// Build every registry host's system in one nix build, sign and copy the closures to the fleet's cache, write releases/<rev>.json.
    Build(ReleaseBuildArgs),
}

#[derive(Debug, Args)]
pub struct ReleaseBuildArgs {
    /// Only these hosts (default: every instance of the registry).
    pub names: Vec<String>,
    /// The full git revision built (default: HEAD of --flake, which must be clean).
    #[arg(long, env = "REVISION")]
    pub rev: Option<String>,
    /// The fleet's flake: a git checkout.
    #[arg(long, default_value = ".")]
    pub flake: PathBuf,
    /// The fleet bucket: the manifest goes to releases/<rev>.json in it.
    #[arg(long, env = "S3_BUCKET")]
    pub bucket: Option<String>,
    /// The fleet's binary cache bucket (the store is s3://BUCKET?region=REGION).
    #[arg(long, env = "CLAWDINATOR_CACHE_BUCKET")]
    pub cache_bucket: Option<String>,
    /// The cache as a nix store URL, instead of --cache-bucket (an http:// store in tests).
    #[arg(long, env = "CLAWDINATOR_CACHE_URL", conflicts_with = "cache_bucket")]
    pub cache: Option<String>,
    /// The cache's nix signing key (secret): a file, 0600 or 0400, never the value.
    #[arg(long, env = "CLAWDINATOR_CACHE_KEY_FILE")]
    pub cache_key_file: Option<PathBuf>,
    /// Which run built it (recorded in the manifest).
    #[arg(long, env = "GITHUB_RUN_ID", default_value = "local")]
    pub run: String,
    /// Evaluate and say what would be built, copied and written; build and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub instances: InstancesArg,
}
