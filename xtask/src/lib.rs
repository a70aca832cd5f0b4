//! clawdinators: the library behind `cargo xtask`.
//!
//! One module per stage of the fleet's life; each exposes a typed API that
//! tests call directly and a `run` that the CLI calls after parsing flags.

pub mod ami;
pub mod archive;
pub mod aws;
pub mod bench;
pub mod bootstrap;
pub mod doctor;
pub mod emulator;
pub mod fixtures;
pub mod flags;
pub mod fleet;
pub mod github;
pub mod image;
pub mod output;
pub mod pipeline;
pub mod project;
pub mod publish;
pub mod s3;
pub mod secrets;
pub mod secrets_manager;
pub mod seeds;
pub mod selftest;
pub mod snapshot;

use anyhow::{Context, Result};

/// The bucket `--local` creates in the throwaway emulator.
pub const LOCAL_BUCKET: &str = "clawdinator-local";

/// Everything a command needs besides its own flags.
pub struct Ctx {
    pub global: flags::Global,
    pub out: output::Output,
    local: Option<emulator::Emulator>,
}

impl Ctx {
    /// With `--local`, starts the emulator first and says so before anything else.
    pub async fn new(global: flags::Global) -> Result<Ctx> {
        let out = output::Output::new(global.json);
        let mut ctx = Ctx { global, out, local: None };
        if ctx.global.local {
            let emulator = tokio::task::spawn_blocking(emulator::Emulator::start).await??;
            ctx.out.note(format!(
                "--local: running against a throwaway in-memory AWS emulator (moto {}) at {}, dummy credentials, bucket {LOCAL_BUCKET}; nothing reaches real AWS",
                emulator::MOTO_VERSION,
                emulator.endpoint()
            ));
            ctx.local = Some(emulator);
            let aws = ctx.aws().await?;
            aws.s3()
                .create_bucket()
                .bucket(LOCAL_BUCKET)
                .send()
                .await
                .map_err(|e| aws::error("S3 CreateBucket", LOCAL_BUCKET, e))?;
        }
        Ok(ctx)
    }

    /// AWS as the flags say: the emulator under `--local`, otherwise the
    /// standard chain with `--region`/`--profile`/`AWS_ENDPOINT_URL`.
    pub async fn aws(&self) -> Result<aws::Aws> {
        let settings = match &self.local {
            Some(emulator) => {
                aws::Settings { timeouts: aws::Timeouts::from_env()?, ..aws::Settings::local(&emulator.endpoint()) }
            }
            None => aws::Settings {
                region: self.global.region.clone(),
                profile: self.global.profile.clone(),
                timeouts: aws::Timeouts::from_env()?,
                ..aws::Settings::default()
            },
        };
        aws::Aws::load(&settings).await
    }

    /// The bucket to use when none was given: the emulator's under `--local`.
    pub fn default_bucket(&self) -> Option<&'static str> {
        self.local.as_ref().map(|_| LOCAL_BUCKET)
    }

    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }
}

/// The single entry point of the CLI: one call from `main`.
pub fn run(cli: flags::Xtask) -> Result<()> {
    output::init_tracing(cli.global.verbose);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let ctx = Ctx::new(cli.global).await?;
        match cli.command {
            flags::Command::Fleet(cmd) => fleet::run(&ctx, cmd),
            flags::Command::Doctor(args) => doctor::run(&ctx, args).await,
            flags::Command::Secrets(cmd) => secrets::run(&ctx, cmd).await,
            flags::Command::Seeds(cmd) => seeds::run(&ctx, cmd),
            flags::Command::Bootstrap(cmd) => bootstrap::run(&ctx, cmd).await,
            flags::Command::ImageBuild(args) => image::run(&ctx, args),
            flags::Command::Image(flags::ImageCmd::Publish(args)) => publish::run(&ctx, args).await,
            flags::Command::Ami(cmd) => ami::run(&ctx, cmd).await,
            flags::Command::Pipeline(args) => pipeline::run(&ctx, args).await,
            flags::Command::GithubToken(args) => github::run(&ctx, args).await,
            // Benchmarks drive child processes and block; keep them off the async workers.
            flags::Command::Bench(cmd) => tokio::task::block_in_place(|| bench::run(&ctx, cmd)),
            flags::Command::Test(args) => selftest::run(&ctx, args),
        }
    })
}
