//! clawdinators: the library behind `cargo xtask`.
//!
//! One folder per stage of the fleet's life (image, bootstrap, secrets,
//! fleet), each with a typed API that tests call directly and a `run` that
//! the CLI calls after parsing flags; `aws` is how every stage reaches AWS,
//! `dev` holds the developer commands (doctor, test, bench).

pub mod atomic;
pub mod audit;
pub mod aws;
pub mod bootstrap;
pub mod cancel;
pub mod ctx;
pub mod dev;
pub mod flags;
pub mod fleet;
pub mod github;
pub mod host;
pub mod image;
pub mod memory;
pub mod output;
pub mod pipeline;
pub mod project;
pub mod secrets;

use anyhow::{Context, Result};

pub use ctx::{Ctx, LOCAL_BUCKET};

/// Both binaries' `main`: one program, two names (`cargo xtask` in a
/// checkout, `clawdinator` on a host); help and usage say the name it was
/// called by. Exits 1 on an error, 2 on a usage error.
pub fn main() {
    use clap::{CommandFactory, FromArgMatches};
    let called = std::env::args_os().next().map(std::path::PathBuf::from);
    let on_host = called.as_deref().and_then(|p| p.file_name()).is_some_and(|n| n == "clawdinator");
    let mut command = flags::Xtask::command();
    if on_host {
        command = command.name("clawdinator").bin_name("clawdinator");
    }
    let cli = flags::Xtask::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit());
    if let Err(err) = run(cli) {
        eprintln!("error: {err:#}");
        std::process::exit(output::exit_code(&err));
    }
}

/// The single entry point of the CLI, after parsing.
pub fn run(cli: flags::Xtask) -> Result<()> {
    output::init_tracing(cli.global.verbose);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let ctx = Ctx::new(cli.global).await?;
        match cli.command {
            flags::Command::Fleet(cmd) => fleet::run(&ctx, cmd).await,
            flags::Command::Doctor(args) => dev::doctor::run(&ctx, args).await,
            flags::Command::Secrets(cmd) => secrets::run(&ctx, cmd).await,
            flags::Command::Seeds(cmd) => bootstrap::seeds::run(&ctx, cmd),
            flags::Command::Bootstrap(cmd) => bootstrap::run(&ctx, cmd).await,
            flags::Command::ImageBuild(args) => image::build::run(&ctx, args),
            flags::Command::Image(flags::ImageCmd::Publish(args)) => image::publish::run(&ctx, args).await,
            flags::Command::Ami(cmd) => image::ami::run(&ctx, cmd).await,
            flags::Command::Pipeline(args) => pipeline::run(&ctx, args).await,
            flags::Command::Memory(cmd) => tokio::task::block_in_place(|| memory::run(&ctx, cmd)),
            flags::Command::Audit(cmd) => audit::run(&ctx, cmd).await,
            flags::Command::GithubSync(args) => {
                let token = std::env::var("GITHUB_TOKEN").map_err(|_| {
                    output::UsageError(
                        "no GitHub token: set GITHUB_TOKEN (hosts load /run/clawd/github-app.env)".into(),
                    )
                })?;
                ctx.out.emit(&host::github_sync::sync(&args.api_url, &args.org, &token, &args.root).await?)
            }
            flags::Command::Host(cmd) => tokio::task::block_in_place(|| host::run(&ctx, cmd)),
            flags::Command::GithubToken(args) => secrets::github_token::run(&ctx, args).await,
            // Benchmarks drive child processes and block; keep them off the async workers.
            flags::Command::Bench(cmd) => tokio::task::block_in_place(|| dev::bench::run(&ctx, cmd)),
            flags::Command::Test(args) => dev::selftest::run(&ctx, args),
            flags::Command::ControlApi(flags::ControlApiCmd::Package { out }) => {
                let root = project::root();
                let report = tokio::task::block_in_place(|| dev::package::package(&root, &project::resolve(&out)))?;
                ctx.out.emit(&report)
            }
            flags::Command::OpentofuSchema => {
                let summary = tokio::task::block_in_place(|| dev::opentofu::regenerate(&project::root()))?;
                ctx.out.note(summary);
                Ok(())
            }
        }
    })
}
