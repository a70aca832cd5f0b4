//! `cargo xtask`'s command line, as a table of contents: the fleet's stage
//! commands (the same as the host binary's, defined beside each stage in
//! `clawdinator`), the image pipeline, and the developer commands. Each
//! command's `run` lives beside it (`impl flags::X { fn run }`). Like every
//! flags file, this one depends on no code of the project's: the workflow
//! check parses the workflows' `cargo xtask` lines against it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use clawdinator::flags::{GitTimeoutArg, Global};
use clawdinator::image::flags::BuildArgs;
use clawdinator::secrets::flags::SecretsArgs;

/// Take a NixOS flake to a running, self-bootstrapping fleet of EC2 hosts.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about, long_about = None)]
pub struct Xtask {
    #[command(flatten)]
    pub global: Global,
    /// Run against a throwaway local AWS emulator (moto) instead of AWS; the
    /// audit log goes to a throwaway directory too.
    #[arg(long, global = true)]
    pub local: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(flatten)]
    Stage(clawdinator::cli::Command),
    /// The whole image pipeline: secrets check, seeds, bundles, image, publish, latest AMI.
    Pipeline(Pipeline),
    /// `image build` under the name the project promised its users (the same command, the same flags).
    #[command(name = "image-build")]
    ImageBuild(BuildArgs),
    /// Check every prerequisite and say which commands need it.
    Doctor(Doctor),
    /// Run the whole test suite: Rust tests against the emulator plus the non-Rust checks.
    Test(Test),
    /// Benchmarks against the old way on the same emulator (measures, never asserts).
    #[command(subcommand)]
    Bench(Bench),
    /// The chat control API's Lambda package.
    #[command(name = "control-api", subcommand)]
    ControlApi(ControlApi),
    /// Regenerate infra/opentofu/schema/aws-provider.json from the pinned npm provider package.
    #[command(name = "opentofu-schema")]
    OpentofuSchema,
    /// Regenerate docs/commands.md (from clap) and docs/module-options.md (from the NixOS module).
    Docs(Docs),
    /// Move one flake input's pin to its branch's head (nix flake update), check the lock, say what moved.
    #[command(name = "pin-update")]
    PinUpdate(PinUpdate),
}

#[derive(Debug, Args)]
pub struct PinUpdate {
    /// The flake input (a name in flake.nix's inputs).
    #[arg(default_value = "nix-openclaw")]
    pub input: String,
    /// Also write changed=, from= and to= lines to this file (a workflow step's $GITHUB_OUTPUT).
    #[arg(long)]
    pub github_output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct Pipeline {
    #[command(flatten)]
    pub secrets: SecretsArgs,
    /// The seeds list.
    #[arg(long, default_value = "clawdinator/repos.tsv")]
    pub list: PathBuf,
    /// Where the seeds are prepared.
    #[arg(long, env = "REPO_SEEDS_DIR", default_value = "repo-seeds")]
    pub repo_seeds: PathBuf,
    #[command(flatten)]
    pub git: GitTimeoutArg,
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
pub struct Doctor {
    /// The age identity used to encrypt and bundle secrets.
    #[arg(long, env = "AGE_KEY_FILE", default_value = "nix/keys/clawdinator.agekey")]
    pub age_key: PathBuf,
    /// Check instead the repository variables and secrets the workflows need, in this
    /// environment (exits 1 naming any that is missing).
    #[arg(long)]
    pub ci: bool,
}

#[derive(Debug, Args)]
pub struct Test {
    /// Only run Rust tests whose name contains this (passed to `cargo test`).
    pub filter: Option<String>,
    /// Skip the non-Rust checks (Nix, HCL, workflow lint).
    #[arg(long, conflicts_with = "checks_only")]
    pub rust_only: bool,
    /// Only the non-Rust checks (quicker while editing Nix, HCL or workflows).
    #[arg(long)]
    pub checks_only: bool,
}

#[derive(Debug, Subcommand)]
pub enum Bench {
    /// bootstrap upload vs the old per-instance tar + aws s3 cp loop.
    Bootstrap(BenchBootstrap),
    /// image publish vs coldsnap and the old aws s3 cp.
    Image(BenchImage),
    /// A host reaching a revision from the fleet cache vs building the host binary from source; a fleet in waves.
    Switch(BenchSwitch),
}

/// Where every side of a benchmark sends its AWS requests.
#[derive(Debug, Args)]
pub struct BenchEndpoint {
    /// Milliseconds added to every request by a proxy in front of the emulator (AWS answers in tens; 0: none).
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
}

#[derive(Debug, Args)]
pub struct BenchSwitch {
    /// Store paths in the closure (besides its top).
    #[arg(long, default_value_t = 64)]
    pub paths: u32,
    /// Random (incompressible) bytes in the closure, in MiB.
    #[arg(long, default_value_t = 256)]
    pub size_mib: u32,
    /// Hosts fetching the same closure.
    #[arg(long, default_value_t = 30)]
    pub hosts: u32,
    /// Hosts fetching at once.
    #[arg(long, default_value_t = 8)]
    pub parallel: u32,
    /// Leave out the one-time release build of the host binary (unless an earlier run kept its time).
    #[arg(long)]
    pub skip_source_build: bool,
    #[command(flatten)]
    pub endpoint: BenchEndpoint,
}

#[derive(Debug, Args)]
pub struct BenchBootstrap {
    /// Instances in the fleet; the old way runs on this one.
    #[arg(long, default_value_t = 30)]
    pub instances: usize,
    /// Also run this project's way on a fleet of this many instances (say 300), on an emulator of its own.
    #[arg(long)]
    pub scale_to: Option<usize>,
    /// Leave the old way out (it takes about two seconds per instance, twice).
    #[arg(long)]
    pub skip_old: bool,
    #[command(flatten)]
    pub endpoint: BenchEndpoint,
}

#[derive(Debug, Args)]
pub struct BenchImage {
    /// Size of the raw image.
    #[arg(long, default_value_t = 1)]
    pub size_gib: u64,
    /// Random data scattered through it.
    #[arg(long, default_value_t = 64)]
    pub data_mib: u64,
    /// Leave coldsnap out (it is cargo-installed on first use otherwise).
    #[arg(long)]
    pub skip_coldsnap: bool,
    /// Leave the old `aws s3 cp` of the whole image out.
    #[arg(long)]
    pub skip_old: bool,
    #[command(flatten)]
    pub endpoint: BenchEndpoint,
}

#[derive(Debug, Subcommand)]
pub enum ControlApi {
    /// Build `bootstrap` for provided.al2023 (glibc 2.34), check its glibc symbols, zip it with the registry.
    Package {
        /// Where the zip goes (OpenTofu's control_api_zip).
        #[arg(long, default_value = "dist/control-api.zip")]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct Docs {
    /// Only check that the committed copies are current (what `cargo xtask test` does).
    #[arg(long)]
    pub check: bool,
}
