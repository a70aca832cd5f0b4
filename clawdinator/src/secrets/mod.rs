//! The secrets stage.
//!
//! Modules: [`flags`] (the command line), `files` (the age files every
//! host needs, and checking them), [`manager`] (AWS Secrets Manager:
//! seeding, and a host's fetch), `store` (the age files' copy in S3 that
//! CI pulls), [`host`] (a host's secrets written whole,
//! 0400) and [`github_token`] (GitHub App installation tokens).

mod files;
pub mod flags;
pub mod github_token;
pub mod host;
pub mod manager;
mod store;

pub use files::{
    check, decrypt, encrypt, load_identities, CheckReport, Finding, Severity, Sources, Spec, AGE_KEY_NAME, DEFAULT_SPEC,
};

use anyhow::Result;

use crate::ctx::Ctx;
use flags::SecretsCmd;

/// Carry out one `secrets` command.
pub async fn run(ctx: &Ctx, cmd: SecretsCmd) -> Result<()> {
    match cmd {
        SecretsCmd::Check(args) => args.check(ctx).await,
        SecretsCmd::Seed(args) => args.run(ctx).await,
        SecretsCmd::Push(args) => args.push(ctx).await,
        SecretsCmd::Pull(args) => args.pull(ctx).await,
        SecretsCmd::Fetch(args) => args.run(ctx).await,
        SecretsCmd::Install(args) => args.run(ctx),
        SecretsCmd::GithubToken(args) => args.run(ctx).await,
    }
}
