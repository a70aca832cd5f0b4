//! The secrets stage: the age files every host needs (`files`), AWS Secrets
//! Manager seeding and host-side fetch (`manager`), and GitHub App tokens
//! (`github_token`).

pub mod files;
pub mod github_token;
pub mod host;
pub mod manager;

pub use files::{
    check, decrypt, encrypt, load_identities, CheckReport, Finding, Severity, Sources, Spec, AGE_KEY_NAME, DEFAULT_SPEC,
};

use anyhow::Result;

use crate::{flags, Ctx};

pub async fn run(ctx: &Ctx, cmd: flags::SecretsCmd) -> Result<()> {
    match cmd {
        flags::SecretsCmd::Seed(args) => manager::run_seed(ctx, args).await,
        flags::SecretsCmd::Fetch(args) => manager::run_fetch(ctx, args).await,
        flags::SecretsCmd::Check(args) => files::run_check(ctx, args).await,
        flags::SecretsCmd::Install(args) => {
            let opts = host::InstallOptions {
                from: args.from,
                identity: args.identity,
                dest: args.dest,
                owner: crate::atomic::Owner::named(args.owner.owner.as_deref(), args.owner.group.as_deref())?,
            };
            ctx.out.emit(&host::install(&opts)?)
        }
    }
}
