//! `bootstrap …`: the per-instance bundles and the repository seeds they carry.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::flags::{FileOwner, GitTimeoutArg, Selection};
use crate::secrets::flags::SecretsArgs;

#[derive(Debug, Subcommand)]
pub enum BootstrapCmd {
    /// Build and upload every instance's bundle (secrets, repo seeds, manifest).
    Upload(BootstrapUploadArgs),
    /// Host side: download, verify and install this host's bundle.
    Fetch(BootstrapFetchArgs),
    /// Repository seeds: shallow clones shipped to every host.
    #[command(subcommand)]
    Seeds(SeedsCmd),
}

#[derive(Debug, Args)]
pub struct BootstrapUploadArgs {
    #[command(flatten)]
    pub secrets: SecretsArgs,
    /// The bucket the bundles go to.
    #[arg(long, env = "S3_BUCKET")]
    pub bucket: Option<String>,
    /// The prepared seeds directory (see `bootstrap seeds prepare`).
    #[arg(long, env = "REPO_SEEDS_DIR", default_value = "repo-seeds")]
    pub repo_seeds: PathBuf,
    #[command(flatten)]
    pub select: Selection,
    /// Show what would be created, replaced or left unchanged; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Give each selected instance a new age identity (Secrets Manager) and rebuild its bundle.
    ///
    /// With --all, every instance's. A host keeps opening the bundle it has:
    /// its manifest names the identity version it reads.
    #[arg(long)]
    pub rotate_identity: bool,
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
    #[arg(long, default_value = "/var/lib/clawdinator/bootstrap")]
    pub state_dir: PathBuf,
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
    #[arg(long, default_value = "/var/lib/clawdinator/repo-seeds")]
    pub from: PathBuf,
    /// The agents' working clones.
    #[arg(long, default_value = "/var/lib/clawd/repos")]
    pub dest: PathBuf,
    /// Install only this seed (repeatable; default: every seed).
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
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
    #[command(flatten)]
    pub git: GitTimeoutArg,
}
