//! The host binary's command line, as a table of contents: one subcommand
//! per stage, each defined in the stage's own `flags.rs` and carried out by
//! the stage's `run`. `cargo xtask` takes the same subcommands and adds its
//! own (the pipeline and the developer commands).

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::ctx::Ctx;
use crate::exit;
use crate::flags::Global;
use crate::{audit, bootstrap, fleet, host, image, memory, release, secrets};

/// The fleet's commands, as hosts and operators run them.
#[derive(Debug, Parser)]
#[command(name = "clawdinator", bin_name = "clawdinator", version, about, long_about = None)]
pub struct Clawdinator {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// The stages, in the order of the fleet's life.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the NixOS image, publish it as a fleet AMI, and list or prune fleet AMIs.
    #[command(subcommand)]
    Image(image::flags::ImageCmd),
    /// Every host's system built once per revision, signed into the fleet's binary cache, named in releases/<rev>.json.
    #[command(subcommand)]
    Release(release::flags::ReleaseCmd),
    /// Per-instance bootstrap bundles in S3 (upload on CI, fetch on a host) and the repository seeds in them.
    #[command(subcommand)]
    Bootstrap(bootstrap::flags::BootstrapCmd),
    /// Secrets: the age files, Secrets Manager, a host's secrets, GitHub App tokens.
    #[command(subcommand)]
    Secrets(secrets::flags::SecretsCmd),
    /// The fleet registry (nix/instances.json) against EC2: status, deploys, switches, the control API.
    #[command(subcommand)]
    Fleet(fleet::flags::FleetCmd),
    /// Host side: the jobs of a host's own units (workspace, EFS tunnel, switches, GitHub snapshot).
    #[command(subcommand)]
    Host(host::flags::HostCmd),
    /// Host side: shared memory files, read and changed under a lock, replaced whole.
    #[command(subcommand)]
    Memory(memory::flags::MemoryCmd),
    /// The audit trail of AWS changes: verify its chain, or print it.
    #[command(subcommand)]
    Audit(audit::flags::AuditCmd),
    /// What this host or checkout was built from: its revision and each flake input's, with their ages.
    Version(crate::flags::VersionArgs),
}

/// Carry out one stage command.
pub async fn run(ctx: &Ctx, command: Command) -> Result<()> {
    match command {
        Command::Image(cmd) => image::run(ctx, cmd).await,
        Command::Release(cmd) => release::run(ctx, cmd).await,
        Command::Bootstrap(cmd) => bootstrap::run(ctx, cmd).await,
        Command::Secrets(cmd) => secrets::run(ctx, cmd).await,
        Command::Fleet(cmd) => fleet::run(ctx, cmd).await,
        // Host jobs and memory files block on locks, files and child processes.
        Command::Host(cmd) => tokio::task::block_in_place(|| host::run(ctx, cmd)),
        Command::Memory(cmd) => tokio::task::block_in_place(|| memory::run(ctx, cmd)),
        Command::Audit(cmd) => audit::run(ctx, cmd).await,
        Command::Version(args) => {
            let lock = crate::project::resolve(&args.lock);
            ctx.out.emit(&crate::build_info::report(&args.build_info, &lock)?)
        }
    }
}

/// The host binary's `main`: parse, run, and exit 1 on an error, 2 on a
/// usage error, 3 on drift.
pub fn main() {
    let cli = Clawdinator::parse();
    exit::on_error(run_parsed(cli));
}

fn run_parsed(cli: Clawdinator) -> Result<()> {
    crate::output::init_tracing(cli.global.verbose);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let ctx = Ctx::new(cli.global).await?;
        run(&ctx, cli.command).await
    })
}
