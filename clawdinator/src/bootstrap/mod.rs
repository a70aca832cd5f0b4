//! Per-instance bootstrap bundles: `bootstrap upload` (operator/CI side),
//! `bootstrap fetch` (host side, run by the NixOS bootstrap service), and
//! `bootstrap seeds` (the repository seeds the bundles carry).
//!
//! Under `s3://BUCKET/<bootstrapPrefix>/` each instance gets:
//! - `secrets.tar.zst`: `secrets/*.age` only (ciphertext), every common
//!   secret and only this instance's Discord token, encrypted to the
//!   instance's own age identity, which lives in Secrets Manager as
//!   `clawdinator/<instance>/age-identity` (readable by that instance's
//!   role alone), never in the bucket;
//! - `repo-seeds.tar.zst`: the seeds directory, built once for the fleet and
//!   placed under every prefix by server-side copy;
//! - `manifest.json`: what the archives hold and their SHA-256, written last.
//!
//! Modules: [`flags`] (the command line), `manifest` (the wire format),
//! `archive` (reproducible tar + zstd, guarded unpacking), `identity` (each
//! instance's identity in Secrets Manager), `upload`, `fetch`, [`seeds`]
//! (shallow clones: prepare on CI, install on a host) and `commands` (each
//! command from its flags to its options).

mod archive;
mod commands;
mod fetch;
pub mod flags;
mod identity;
mod manifest;
pub mod seeds;
mod upload;

use anyhow::Result;

use crate::ctx::Ctx;
use flags::{BootstrapCmd, SeedsCmd};

pub use fetch::{fetch, FetchOptions, FetchReport};
pub use identity::{version_for, IdentityAction, IdentityRow, TAG_RECIPIENT};
pub use manifest::{ArchiveInfo, Manifest, MANIFEST, SECRETS_ARCHIVE, SEEDS_ARCHIVE};
pub use upload::{upload, upload_rotating, Action, ObjectPlan, UploadOptions, UploadReport};

/// Carry out one `bootstrap` command: each command's `run` is in `commands`.
pub async fn run(ctx: &Ctx, cmd: BootstrapCmd) -> Result<()> {
    match cmd {
        BootstrapCmd::Upload(args) => args.run(ctx).await,
        BootstrapCmd::Fetch(args) => args.run(ctx).await,
        BootstrapCmd::Seeds(SeedsCmd::Install(args)) => args.run(ctx),
        BootstrapCmd::Seeds(SeedsCmd::Prepare(args)) => args.run(ctx),
    }
}
