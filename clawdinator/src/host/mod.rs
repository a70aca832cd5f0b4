//! The host's own jobs, run by the units the NixOS module defines. Each
//! touches only files it owns.
//!
//! Modules: [`flags`] (the command line), [`workspace`] (the agent
//! workspace and cron store), `efs` (the TLS tunnel to EFS), `exec`
//! (the gateway with secrets in its environment), [`record`] (what the host
//! runs), `switch` (a signed system from the fleet cache, health-gated),
//! `updates` (first switch and self-update from the newest release),
//! `refresh` (secrets again after a
//! rotation), [`ops`] (a unit's logs and restart), [`publish`] (the
//! public PR-intent tree), `pi_auth` (the pi coding agent's credentials)
//! and [`github_sync`]
//! (open pull requests and issues into shared memory).

mod efs;
mod exec;
pub mod flags;
pub mod github_sync;
pub mod ops;
mod pi_auth;
pub mod publish;
pub mod record;
mod refresh;
mod switch;
mod updates;
pub mod workspace;

use anyhow::Result;

use crate::atomic::Owner;
use crate::ctx::Ctx;
use crate::exit::UsageError;
use crate::settings::{given_or_written, instance_name};
use flags::{Deployment, HostCmd, SwitchArgs};

/// Carry out one `host` command.
pub fn run(ctx: &Ctx, cmd: HostCmd) -> Result<()> {
    match cmd {
        HostCmd::WorkspaceSeed(args) => {
            let owner = Owner::named(args.owner.owner.as_deref(), args.owner.group.as_deref())?;
            let mut report = workspace::seed(&args.templates, &args.dest, args.tools_extra.as_deref(), owner)?;
            if let (Some(jobs), Some(store)) = (&args.cron_jobs, &args.cron_store) {
                report.cron_store = Some(workspace::install_cron_jobs(jobs, store, owner)?);
            }
            ctx.out.emit(&report)
        }
        HostCmd::Switch(args) => {
            let opts = switch_options(ctx, args.deployment, args.system, "switch")?;
            ctx.out.emit(&switch::switch(&opts)?)
        }
        HostCmd::Exec(args) => {
            let vars = args.secret_env.iter().map(|s| s.parse()).collect::<Result<Vec<exec::SecretEnv>>>()?;
            exec::exec(&vars, &args.command)
        }
        HostCmd::EfsStunnelConfig(args) => {
            let file_system_id = given_or_written(
                args.file_system_id,
                &args.file_system_id_file,
                "EFS file system id",
                "pass --file-system-id",
            )?;
            let region = ctx
                .region()
                .ok_or_else(|| UsageError("no region: pass --region, set AWS_REGION, or pass --region-file".into()))?;
            let tunnel = efs::Tunnel { file_system_id, region, ca_file: args.ca_file, accept: args.accept };
            ctx.out.emit(&efs::write_config(&tunnel, &args.out)?)
        }
        HostCmd::Logs(args) => {
            let j = args.journal;
            println!("{}", ops::logs(&j.unit, &j.since, j.lines)?);
            Ok(())
        }
        HostCmd::Restart(args) => ctx.out.emit(&ops::restart(&args.unit)?),
        HostCmd::PiAuth(args) => {
            ctx.out.emit(&pi_auth::write(&args.openai_key_file, &args.anthropic_key_file, &args.out)?)
        }
        HostCmd::PublishTree(args) => {
            let opts = publish::PublishOptions {
                from: args.from,
                bucket: args.bucket,
                prefix: args.prefix,
                dry_run: args.dry_run,
            };
            let work = async { publish::publish(&ctx.aws().await?, &opts).await };
            ctx.out.emit(&tokio::runtime::Handle::current().block_on(work)?)
        }
        HostCmd::RefreshSecrets(args) => ctx.out.emit(&refresh::refresh_secrets(&args.readers)?),
        HostCmd::FirstSwitch(args) => {
            let (bucket, opts) = release_options(ctx, args, "first-boot")?;
            let work = async { updates::first_switch(&ctx.aws().await?, &bucket, opts).await };
            ctx.out.emit(&tokio::runtime::Handle::current().block_on(work)?)
        }
        HostCmd::SelfUpdate(args) => {
            let (bucket, opts) = release_options(ctx, args, "self-update")?;
            let work = async { updates::self_update(&ctx.aws().await?, &bucket, opts).await };
            ctx.out.emit(&tokio::runtime::Handle::current().block_on(work)?)
        }
        HostCmd::GithubSync(args) => {
            let token = std::env::var("GITHUB_TOKEN").map_err(|_| {
                UsageError("no GitHub token: set GITHUB_TOKEN (hosts load /run/clawd/github-app.env)".into())
            })?;
            let sync = github_sync::sync(&args.api_url, &args.org, &token, &args.root);
            ctx.out.emit(&tokio::runtime::Handle::current().block_on(sync)?)
        }
    }
}

/// A switch to `system` as the flags and the host's written facts say.
fn switch_options(ctx: &Ctx, d: Deployment, system: String, source: &'static str) -> Result<switch::SwitchOptions> {
    // Hosts launched before user data named the cache take OpenTofu's default name, <bucket>-cache.
    let cache_bucket = d
        .cache_bucket
        .or_else(|| crate::settings::host_setting(&d.cache_bucket_file))
        .or_else(|| crate::settings::host_setting(std::path::Path::new(BUCKET_FILE)).map(|b| format!("{b}-cache")));
    let region = ctx.region().or_else(|| crate::settings::host_setting(std::path::Path::new(REGION_FILE)));
    Ok(switch::SwitchOptions {
        instance: instance_name(d.instance, &d.instance_file)?,
        system,
        revision: None,
        source,
        nix: switch::NixStore::new(cache_bucket, region, d.store),
        record: d.record,
        current_system: d.current_system,
        profile: d.system_profile,
        unit: d.unit,
        settle: std::time::Duration::from_secs(d.settle),
        dry_run: d.dry_run,
    })
}

/// Where the host's user data writes the fleet bucket's name.
const BUCKET_FILE: &str = "/etc/clawdinator/bucket";

/// Where the host's user data writes its region (SSM runs the switch without the units' environment).
const REGION_FILE: &str = "/etc/clawdinator/region";

/// First switch and self-update: the fleet bucket, and a switch whose system the newest release names.
fn release_options(ctx: &Ctx, args: SwitchArgs, source: &'static str) -> Result<(String, switch::SwitchOptions)> {
    let bucket = given_or_written(args.bucket, &args.bucket_file, "fleet bucket", "pass --bucket")?;
    Ok((bucket, switch_options(ctx, args.deployment, String::new(), source)?))
}
