//! The host's own jobs, run by the units the NixOS module defines: the agent
//! workspace (`workspace`), the TLS tunnel to EFS (`efs`), and the first
//! switch of a fresh instance to its own configuration (`deploy`).
//! Each touches only files it owns.

pub mod deploy;
pub mod efs;
pub mod exec;
pub mod github_sync;
pub mod switch;
pub mod workspace;

use anyhow::Result;

use crate::atomic::Owner;
use crate::{flags, project, Ctx};

pub fn run(ctx: &Ctx, cmd: flags::HostCmd) -> Result<()> {
    match cmd {
        flags::HostCmd::WorkspaceSeed(args) => {
            let owner = Owner::named(args.owner.owner.as_deref(), args.owner.group.as_deref())?;
            let mut report = workspace::seed(&args.templates, &args.dest, args.tools_extra.as_deref(), owner)?;
            if let (Some(jobs), Some(store)) = (&args.cron_jobs, &args.cron_store) {
                report.cron_store = Some(workspace::install_cron_jobs(jobs, store, owner)?);
            }
            ctx.out.emit(&report)
        }
        flags::HostCmd::Switch(args) => {
            let opts = switch::SwitchOptions {
                instance: project::instance_name(args.instance, &args.instance_file)?,
                rev: args.rev,
                flake: args.flake,
                record: args.record,
                current_system: args.current_system,
                profile: args.system_profile,
                unit: args.unit,
                settle: std::time::Duration::from_secs(args.settle),
                dry_run: args.dry_run,
            };
            ctx.out.emit(&switch::switch(&opts)?)
        }
        flags::HostCmd::Exec(args) => {
            let vars = args.secret_env.iter().map(|s| s.parse()).collect::<Result<Vec<exec::SecretEnv>>>()?;
            exec::exec(&vars, &args.command)
        }
        flags::HostCmd::EfsStunnelConfig(args) => {
            let file_system_id = project::given_or_written(
                args.file_system_id,
                &args.file_system_id_file,
                "EFS file system id",
                "pass --file-system-id",
            )?;
            let region = ctx.region().ok_or_else(|| {
                crate::output::UsageError("no region: pass --region, set AWS_REGION, or pass --region-file".into())
            })?;
            let tunnel = efs::Tunnel { file_system_id, region, ca_file: args.ca_file, accept: args.accept };
            ctx.out.emit(&efs::write_config(&tunnel, &args.out)?)
        }
        flags::HostCmd::FirstSwitch(args) => ctx.out.emit(&deploy::first_switch(&switch_options(args)?)?),
        flags::HostCmd::SelfUpdate(args) => ctx.out.emit(&deploy::self_update(&switch_options(args)?)?),
    }
}

fn switch_options(args: flags::SwitchArgs) -> Result<deploy::SwitchOptions> {
    Ok(deploy::SwitchOptions {
        instance: project::instance_name(args.instance, &args.instance_file)?,
        flake: args.flake,
        record: args.record,
        dry_run: args.dry_run,
    })
}
