//! The image stage: build the NixOS image, publish it as a fleet AMI (EBS
//! direct or S3 + VM Import), and select or prune fleet AMIs.
//!
//! Modules: [`flags`] (the command line), [`build`] (the raw image and its
//! description, `image.json`), [`snapshot`] (EBS direct: an uploader and a
//! waiter, after coldsnap), `import` (S3 + VM Import), [`publish`]
//! (snapshot to tagged AMI, idempotent by content; `options` says
//! what it is asked) and [`ami`] (fleet AMIs:
//! tags, the latest, the list, pruning). Each command's `run` is on its
//! flags, beside its code: `image build` in `build`, `image publish` in
//! `publish`, `image ami …` in `ami`.

pub mod ami;
pub mod build;
pub mod flags;
mod import;
mod options;
pub mod publish;
pub mod snapshot;

use anyhow::Result;

use crate::ctx::Ctx;
use flags::ImageCmd;

pub use build::ImageManifest;
pub use flags::Via;
pub use options::PublishOptions;

/// Carry out one `image` command: each runs beside its code.
pub async fn run(ctx: &Ctx, cmd: ImageCmd) -> Result<()> {
    match cmd {
        // A nix build blocks for minutes: keep it off the async workers.
        ImageCmd::Build(args) => tokio::task::block_in_place(|| args.run(ctx)),
        ImageCmd::Publish(args) => args.run(ctx).await,
        ImageCmd::Ami(cmd) => cmd.run(ctx).await,
    }
}
