//! The fleet stage: the registry (`nix/instances.json`) against EC2.
//!
//! Modules: [`flags`] (the command line), [`status`] (drift between the
//! registry and EC2), `deploy` (replace instances from a fleet AMI, canary
//! first), `lane` (every per-host roll: canary, waves, stop at the first
//! failure), `host_run` (one SSM document on one host's instance),
//! `switch` (running hosts to a release's systems through SSM),
//! [`control`] (the host's signed client for the control API), [`helper`]
//! (the root service through which agents reach it), `ops` (a host's logs
//! and unit restarts through SSM) and `refresh` (secrets again on running
//! hosts).

pub mod control;
mod deploy;
pub mod flags;
pub mod helper;
mod host_run;
mod lane;
mod ops;
mod refresh;
pub mod status;
mod switch;

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::ctx::Ctx;
use crate::exit::{DriftFound, UsageError};
use crate::flags::InstancesArg;
use crate::registry::{self, Registry};
use flags::{ControlAction, FleetCmd};

fn load(args: &InstancesArg) -> Result<Registry> {
    Ok(Registry::load(&crate::project::resolve(&args.path))?)
}

/// `fleet deploy all` replaces every instance: asked on a terminal, refused without one unless --yes.
fn confirm_all(count: usize, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!(UsageError(format!(
            "`fleet deploy all` replaces all {count} instances: pass --yes (there is no terminal to ask on)"
        )));
    }
    eprint!("Replace all {count} instances, one at a time, canary first? Type yes to go on: ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        bail!("not confirmed; nothing was changed");
    }
    Ok(())
}

/// Carry out one `fleet` command.
pub async fn run(ctx: &Ctx, cmd: FleetCmd) -> Result<()> {
    match cmd {
        FleetCmd::Check(args) => {
            let report = registry::check_file(&crate::project::resolve(&args.path), &args.path.display().to_string());
            ctx.out.emit(&report)?;
            if !report.ok {
                bail!("the fleet registry {} is not valid", args.path.display());
            }
            Ok(())
        }
        FleetCmd::Status(args) => {
            if let Some(rev) = &args.revision {
                crate::release::manifest::check_revision(rev).map_err(|e| UsageError(format!("--revision: {e}")))?;
            }
            let registry = load(&args.instances)?;
            let aws = ctx.aws().await?;
            let report = status::status(&aws, &registry, args.revision).await?;
            ctx.out.emit(&report)?;
            if !report.drift.is_empty() {
                bail!(DriftFound(report.drift.len()));
            }
            Ok(())
        }
        FleetCmd::Deploy(mut args) => {
            // Workflow inputs left blank arrive as empty variables: not given.
            args.ami = args.ami.filter(|a| !a.trim().is_empty());
            args.caller = args.caller.filter(|c| !c.trim().is_empty());
            let registry = load(&args.instances)?;
            let names = match args.missing {
                true => vec![],
                false => deploy::targets(&registry, &args.targets, args.caller.as_deref())?,
            };
            if args.targets.iter().any(|t| t == "all") && !args.dry_run {
                confirm_all(names.len(), args.yes)?;
            }
            let bucket = args.backend_bucket.clone().or_else(|| ctx.default_bucket().map(str::to_string));
            let region = args
                .backend_region
                .clone()
                .or_else(|| ctx.region())
                .or_else(|| ctx.is_local().then(|| "us-east-1".into()));
            let (Some(bucket), Some(region)) = (bucket, region) else {
                bail!(UsageError("no state backend: pass --backend-bucket and --backend-region (or TF_BACKEND_BUCKET, TF_BACKEND_REGION)".into()));
            };
            let opts = deploy::DeployOptions {
                targets: args.targets,
                missing: args.missing,
                ami: args.ami,
                caller: args.caller,
                dry_run: args.dry_run,
                chdir: args.chdir,
                var_file: args.var_file,
                backend: deploy::Backend { bucket, key: args.backend_key, region, lock_table: args.lock_table },
                healthy_timeout: Duration::from_secs(args.healthy_timeout),
                poll: poll_interval(),
            };
            let aws = ctx.aws().await?;
            let targets = if args.missing { vec!["missing".to_string()] } else { names };
            let entry = crate::audit::Entry { command: "fleet deploy", targets, dry_run: opts.dry_run };
            let report = entry.record(ctx, &aws, deploy::deploy(&aws, &registry, &opts, &ctx.cancel, &ctx.out)).await?;
            ctx.out.emit(&report)
        }
        FleetCmd::Control(args) => {
            let me = crate::settings::host_setting(&args.instance_file);
            let (action, target, ami) = match &args.action {
                ControlAction::Status => ("status", None, None),
                ControlAction::Deploy { target, ami } => {
                    control::refuse_self(me.as_deref(), target)?;
                    ("deploy", Some(target.as_str()), ami.as_deref())
                }
            };
            let body = control::body(action, target, ami);
            let answer = match &args.socket {
                Some(socket) => helper::ask(socket, &body).await?,
                None => control::call(&ctx.aws().await?, args.url.clone(), &body).await?,
            };
            ctx.out.emit(&ControlAnswer(answer))
        }
        FleetCmd::ControlHelper(args) => {
            let opts = helper::HelperOptions {
                socket: args.socket,
                url: args.url,
                instance: crate::settings::host_setting(&args.instance_file),
            };
            helper::serve(&ctx.aws().await?, &opts).await
        }
        FleetCmd::RefreshSecrets(args) => {
            let registry = load(&args.instances)?;
            let opts = refresh::RefreshOptions {
                names: args.names,
                dry_run: args.dry_run,
                timeout: Duration::from_secs(args.timeout),
                poll: poll_interval(),
            };
            let aws = ctx.aws().await?;
            let entry = crate::audit::Entry::named("fleet refresh-secrets", &opts.names, opts.dry_run);
            let report =
                entry.record(ctx, &aws, refresh::refresh_secrets(&aws, &registry, &opts, &ctx.cancel, &ctx.out)).await;
            emit_lane(ctx, report)
        }
        FleetCmd::Logs(args) => {
            let registry = load(&args.instances)?;
            let j = args.journal;
            let opts = ops::OpsOptions::new(args.name, j.unit, args.timeout, poll_interval());
            let aws = ctx.aws().await?;
            ctx.out.emit(&ops::logs(&aws, &registry, &opts, &j.since, j.lines, &ctx.cancel, &ctx.out).await?)
        }
        FleetCmd::Restart(args) => {
            let registry = load(&args.instances)?;
            let opts = ops::OpsOptions::new(args.name, args.unit, args.timeout, poll_interval());
            let aws = ctx.aws().await?;
            let entry = crate::audit::Entry::named("fleet restart", std::slice::from_ref(&opts.name), args.dry_run);
            let report = entry
                .record(ctx, &aws, ops::restart(&aws, &registry, &opts, args.dry_run, &ctx.cancel, &ctx.out))
                .await?;
            ctx.out.emit(&report)
        }
        FleetCmd::Switch(args) => {
            let registry = load(&args.instances)?;
            let Some(bucket) = args.bucket.or_else(|| ctx.default_bucket().map(str::to_string)) else {
                bail!(UsageError("no fleet bucket (where releases/<rev>.json is): pass --bucket (S3_BUCKET)".into()));
            };
            let opts = switch::SwitchOptions {
                rev: args.rev,
                names: args.names,
                bucket,
                parallel: args.parallel.into(),
                dry_run: args.dry_run,
                timeout: Duration::from_secs(args.timeout),
                poll: poll_interval(),
            };
            let aws = ctx.aws().await?;
            let entry = crate::audit::Entry::named("fleet switch", &opts.names, opts.dry_run);
            let report = entry.record(ctx, &aws, switch::switch(&aws, &registry, &opts, &ctx.cancel, &ctx.out)).await;
            emit_lane(ctx, report)
        }
    }
}

/// A lane's report is printed here alone: also when it stopped, before its error.
fn emit_lane(ctx: &Ctx, result: Result<lane::LaneReport>) -> Result<()> {
    match result {
        Ok(report) => ctx.out.emit(&report),
        Err(e) => {
            if let Some(stopped) = e.downcast_ref::<lane::Stopped>() {
                ctx.out.emit(&stopped.report)?;
            }
            Err(e)
        }
    }
}

/// How often deploy and switch poll AWS (CLAWDINATOR_POLL_SECONDS; tests poll fast).
fn poll_interval() -> Duration {
    let secs = std::env::var("CLAWDINATOR_POLL_SECONDS").ok().and_then(|s| s.parse::<f64>().ok()).unwrap_or(5.0);
    Duration::from_secs_f64(secs.clamp(0.05, 60.0))
}

/// The control API's answer, printed as it came.
#[derive(serde::Serialize)]
#[serde(transparent)]
struct ControlAnswer(serde_json::Value);

impl std::fmt::Display for ControlAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", serde_json::to_string_pretty(&self.0).unwrap_or_default())
    }
}
