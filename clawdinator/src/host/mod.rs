//! The host's own jobs, run by the units the NixOS module defines. Each
//! touches only files it owns.
//!
//! Modules: [`flags`] (the command line), [`workspace`] (the agent
//! workspace and cron store), `efs` (the TLS tunnel to EFS), `exec`
//! (the gateway with secrets in its environment), [`deploy`] (first switch
//! and self-update), `repo` (the deploy copy root builds from), `switch`
//! (the release lane on this host), `refresh` (secrets again after a
//! rotation), [`ops`] (a unit's logs and restart), [`publish`] (the
//! public PR-intent tree), `pi_auth` (the pi coding agent's credentials)
//! and [`github_sync`]
//! (open pull requests and issues into shared memory).

pub mod deploy;
mod efs;
mod exec;
pub mod flags;
pub mod github_sync;
pub mod ops;
mod pi_auth;
pub mod publish;
mod refresh;
mod repo;
pub(crate) mod switch;
pub mod workspace;

use anyhow::Result;

use crate::atomic::Owner;
use crate::ctx::Ctx;
use crate::exit::UsageError;
use crate::settings::{given_or_written, instance_name};
use flags::{HostCmd, SwitchArgs};

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
            let d = args.deployment;
            let opts = switch::SwitchOptions {
                instance: instance_name(d.instance, &d.instance_file)?,
                rev: args.rev,
                flake: d.flake,
                url: d.url,
                branch: d.branch,
                record: d.record,
                current_system: args.current_system,
                profile: args.system_profile,
                unit: args.unit,
                settle: std::time::Duration::from_secs(args.settle),
                dry_run: args.dry_run,
            };
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
        HostCmd::FirstSwitch(args) => ctx.out.emit(&deploy::first_switch(&switch_options(args)?)?),
        HostCmd::SelfUpdate(args) => ctx.out.emit(&deploy::self_update(&switch_options(args)?)?),
        HostCmd::GithubSync(args) => {
            let token = std::env::var("GITHUB_TOKEN").map_err(|_| {
                UsageError("no GitHub token: set GITHUB_TOKEN (hosts load /run/clawd/github-app.env)".into())
            })?;
            let sync = github_sync::sync(&args.api_url, &args.org, &token, &args.root);
            ctx.out.emit(&tokio::runtime::Handle::current().block_on(sync)?)
        }
    }
}

fn switch_options(args: SwitchArgs) -> Result<deploy::SwitchOptions> {
    let d = args.deployment;
    Ok(deploy::SwitchOptions {
        instance: instance_name(d.instance, &d.instance_file)?,
        flake: d.flake,
        url: d.url,
        branch: d.branch,
        record: d.record,
        dry_run: args.dry_run,
    })
}
