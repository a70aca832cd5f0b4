//! The release stage: every host's system built once per revision by CI,
//! signed into the fleet's binary cache, and named in a write-once manifest
//! that `fleet switch` and the hosts read. Hosts never build.
//!
//! Modules: [`flags`] (the command line), `commands` (`release build`'s
//! run: its flags to a build), `build` (one nix build, one nix copy, the
//! manifest) and [`manifest`] (`releases/<rev>.json`: written once, read by
//! revision or newest first).

mod build;
mod commands;
pub mod flags;
pub mod manifest;

use anyhow::Result;

use crate::ctx::Ctx;
use flags::ReleaseCmd;

/// Carry out one `release` command.
pub async fn run(ctx: &Ctx, cmd: ReleaseCmd) -> Result<()> {
    match cmd {
        ReleaseCmd::Build(args) => args.run(ctx).await,
    }
}
