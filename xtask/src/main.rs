//! `cargo xtask`: the fleet's stage commands (as the host binary has them),
//! the image pipeline, and the developer commands. Never shipped: it carries
//! the test kit (`--local` runs against its emulator).
//!
//! Modules: `flags` (the command line's table of contents); the commands
//! `pipeline`, `doctor`, `selftest` (`test`), `bench`, `package` (`control-api
//! package`, with `lambda_smoke`) and `docs`; `checks`, the non-Rust checks
//! `test` runs (one module per thing checked); and `tools` (the pinned npm
//! and PyPI check tools).

mod bench;
mod bench_switch;
mod checks;
mod ci_settings;
mod docs;
mod doctor;
mod flags;
mod lambda_smoke;
mod measure;
mod package;
mod pipeline;
mod selftest;
mod tools;

use anyhow::{Context, Result};
use clap::Parser;
use clawdinator::ctx::Ctx;
use clawdinator::flags::Global;
use clawdinator::output::Output;
use testkit::emulator::{self, Emulator};

fn main() {
    clawdinator::exit::on_error(run(flags::Xtask::parse()));
}

fn run(cli: flags::Xtask) -> Result<()> {
    clawdinator::output::init_tracing(cli.global.verbose);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let ctx = context(cli.global, cli.local).await?;
        match cli.command {
            flags::Command::Stage(cmd) => clawdinator::cli::run(&ctx, cmd).await,
            flags::Command::Pipeline(cmd) => cmd.run(&ctx).await,
            flags::Command::ImageBuild(args) => {
                let cmd = clawdinator::cli::Command::Image(clawdinator::image::flags::ImageCmd::Build(args));
                clawdinator::cli::run(&ctx, cmd).await
            }
            flags::Command::Doctor(cmd) => cmd.run(&ctx).await,
            // These drive child processes and block; keep them off the async workers.
            flags::Command::Test(cmd) => tokio::task::block_in_place(|| cmd.run(&ctx)),
            flags::Command::Bench(cmd) => tokio::task::block_in_place(|| cmd.run(&ctx)),
            flags::Command::ControlApi(cmd) => tokio::task::block_in_place(|| cmd.run(&ctx)),
            flags::Command::OpentofuSchema => {
                let summary = tokio::task::block_in_place(|| checks::opentofu::regenerate(&testkit::repo_root()))?;
                ctx.out.note(summary);
                Ok(())
            }
            flags::Command::Docs(cmd) => tokio::task::block_in_place(|| cmd.run(&ctx)),
            flags::Command::PinUpdate(cmd) => tokio::task::block_in_place(|| cmd.run(&ctx)),
        }
    })
}

/// The command's context: real AWS, or with `--local` a throwaway emulator
/// (said before anything else) that lives as long as the context.
async fn context(global: Global, local: bool) -> Result<Ctx> {
    if !local {
        return Ctx::new(global).await;
    }
    let emulator = tokio::task::spawn_blocking(Emulator::start).await??;
    Output::new(global.json).note(format!(
        "--local: running against a throwaway in-memory AWS emulator (moto {}) at {}, dummy credentials, bucket {}; nothing reaches real AWS",
        emulator::MOTO_VERSION,
        emulator.endpoint(),
        clawdinator::ctx::LOCAL_BUCKET,
    ));
    Ctx::local(global, emulator.endpoint(), Box::new(emulator)).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// `--local` starts the emulator from a pooled thread; tokio retires idle
    /// blocking threads (here after 50 ms) and PR_SET_PDEATHSIG fires when the
    /// forking *thread* exits. The emulator must live as long as the context.
    #[test]
    fn a_local_context_outlives_the_blocking_pool() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_keep_alive(Duration::from_millis(50))
            .build()
            .unwrap();
        runtime.block_on(async {
            let global = clawdinator::flags::Global { json: true, ..Default::default() };
            let ctx = super::context(global, true).await.unwrap();
            // Twenty times the pool's keep-alive: the starting thread is gone.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let aws = ctx.aws().await.unwrap();
            let buckets =
                aws.s3().list_buckets().send().await.expect("the --local emulator died with its starting thread");
            assert_eq!(buckets.buckets().len(), 1);
        });
    }
}
