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

use anyhow::{bail, Result};

use crate::ctx::Ctx;
use crate::exit::UsageError;
use crate::settings::instance_name;
use flags::{GithubTokenArgs, SecretsArgs, SecretsCmd, SecretsFetchArgs, SecretsSeedArgs, SecretsStoreArgs};

/// Carry out one `secrets` command.
pub async fn run(ctx: &Ctx, cmd: SecretsCmd) -> Result<()> {
    match cmd {
        SecretsCmd::Seed(args) => seed_manager(ctx, args).await,
        SecretsCmd::Push(args) => push(ctx, args).await,
        SecretsCmd::Pull(args) => {
            if args.dry_run {
                return Err(UsageError("secrets pull writes only local files; --dry-run is for push".into()).into());
            }
            let bucket = store_bucket(&args)?;
            let aws = ctx.aws().await?;
            ctx.out.emit(&store::pull(&aws, &Sources::from_flags(&args.secrets), &bucket).await?)
        }
        SecretsCmd::Fetch(args) => fetch_from_manager(ctx, args).await,
        SecretsCmd::Check(args) => check_files(ctx, args).await,
        SecretsCmd::Install(args) => {
            let opts = host::InstallOptions {
                from: args.from,
                identity: args.identity,
                dest: args.dest,
                owners: host::Owners {
                    owner: crate::atomic::Owner::named(args.owner.owner.as_deref(), args.owner.group.as_deref())?,
                    root_only: args.root_only,
                },
            };
            ctx.out.emit(&host::install(&opts)?)
        }
        SecretsCmd::GithubToken(args) => github_token(ctx, args).await,
    }
}

async fn check_files(ctx: &Ctx, args: SecretsArgs) -> Result<()> {
    let sources = Sources::from_flags(&args);
    let (report, _) = tokio::task::spawn_blocking(move || files::check(&sources, false)).await?;
    ctx.out.emit(&report)?;
    if !report.ok {
        bail!("secrets check found errors (see above)");
    }
    Ok(())
}

fn store_bucket(args: &SecretsStoreArgs) -> Result<String> {
    args.bucket.clone().ok_or_else(|| UsageError("no bucket: pass --bucket or set S3_BUCKET".into()).into())
}

async fn push(ctx: &Ctx, args: SecretsStoreArgs) -> Result<()> {
    let bucket = store_bucket(&args)?;
    let aws = ctx.aws().await?;
    let sources = Sources::from_flags(&args.secrets);
    let entry =
        crate::audit::Entry { command: "secrets push", targets: vec!["age-secrets".into()], dry_run: args.dry_run };
    let report = entry.record(ctx, &aws, store::push(&aws, &sources, &bucket, args.dry_run)).await?;
    ctx.out.emit(&report)
}

async fn seed_manager(ctx: &Ctx, args: SecretsSeedArgs) -> Result<()> {
    let opts = manager::SeedOptions {
        sources: Sources::from_flags(&args.secrets),
        instances: args.select.names(),
        dry_run: args.dry_run,
        prune: args.prune,
    };
    let aws = ctx.aws().await?;
    let entry = crate::audit::Entry::named("secrets seed", &opts.instances, opts.dry_run);
    let report = entry.record(ctx, &aws, manager::seed(&aws, &opts)).await?;
    ctx.out.emit(&report)
}

async fn fetch_from_manager(ctx: &Ctx, args: SecretsFetchArgs) -> Result<()> {
    let opts = manager::FetchOptions {
        instance: instance_name(args.instance, &args.instance_file)?,
        registry: args.instances.path,
        spec: args.spec,
        dest: args.dest,
        owner: args.owner.owner,
        group: args.owner.group,
        root_only: args.root_only,
    };
    let aws = ctx.aws().await?;
    ctx.out.emit(&manager::fetch(&aws, &opts).await?)
}

async fn github_token(ctx: &Ctx, args: GithubTokenArgs) -> Result<()> {
    let pem = match (args.pem, args.pem_secret) {
        (_, Some(secret)) => github_token::PemSource::Secret(secret),
        (Some(file), None) => github_token::PemSource::File(file),
        (None, None) => {
            bail!(usage("no GitHub App key: pass --pem FILE (or GITHUB_APP_PEM_FILE) or --pem-secret NAME"))
        }
    };
    let opts = github_token::TokenOptions {
        app_id: args.app_id.ok_or_else(|| usage("no app id: pass --app-id or set GITHUB_APP_ID"))?,
        installation_id: args
            .installation_id
            .ok_or_else(|| usage("no installation id: pass --installation-id or set GITHUB_APP_INSTALLATION_ID"))?,
        pem,
        api_url: args.api_url,
        env_file: args.env_file,
        gh_config_dir: args.gh_config_dir,
        scope: github_token::Scope::parse(&args.repositories, &args.permissions, &args.fleet_repository)
            .map_err(|e| usage(&format!("{e:#}")))?,
        owner: crate::atomic::Owner::named(args.owner.owner.as_deref(), args.owner.group.as_deref())?,
    };
    github_token::issue(ctx, &opts).await
}

fn usage(message: &str) -> UsageError {
    UsageError(message.into())
}
