//! `fleet deploy <all|NAME>…`: replace instances from the latest fleet AMI
//! (or a checked `--ami`), through OpenTofu, one at a time in registry
//! order (canary first): replace, wait until the new instance runs, passes
//! its EC2 status checks and has its SSM agent online, then the next. The
//! first failure stops the roll, named; the rest stay as they were.
//! Instances the registry has but EC2 lacks are created first.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use aws_sdk_ec2::types::{Filter, InstanceStateName, InstanceStatusSummary, SummaryStatus};
use serde::Serialize;
use xshell::{cmd, Shell};

use super::flags::FleetDeployArgs;
use super::status::{self, LiveInstance};
use crate::audit::Entry;
use crate::aws::{self, Aws};
use crate::cancel::{Cancel, Poll, Wait};
use crate::ctx::Ctx;
use crate::exit::UsageError;
use crate::output::Output;
use crate::registry::Registry;

/// OpenTofu's S3 backend settings (`tofu init -backend-config=…`).
#[derive(Debug, Clone)]
pub struct Backend {
    pub bucket: String,
    pub key: String,
    pub region: String,
    pub lock_table: String,
}

pub struct DeployOptions {
    pub targets: Vec<String>,
    /// Only create what the registry has and EC2 lacks.
    pub missing: bool,
    pub ami: Option<String>,
    pub caller: Option<String>,
    pub dry_run: bool,
    pub chdir: PathBuf,
    pub var_file: Option<PathBuf>,
    pub backend: Backend,
    pub healthy_timeout: Duration,
    pub poll: Duration,
}

/// The instance names a deploy works on, in registry order; refused when a
/// target is unknown or the caller is among them (`all` includes it).
pub fn targets(registry: &Registry, targets: &[String], caller: Option<&str>) -> Result<Vec<String>> {
    let usage = |m: String| anyhow::Error::from(UsageError(m));
    let all = targets.iter().any(|t| t == "all");
    if all && targets.len() > 1 {
        return Err(usage("`all` already means every instance: give `all` alone, or names".into()));
    }
    let names: Vec<String> = if all {
        registry.instances.keys().cloned().collect()
    } else {
        registry.select(targets).map_err(|e| usage(format!("{e:#}")))?.iter().map(|i| i.host.clone()).collect()
    };
    if let Some(caller) = caller.filter(|c| names.iter().any(|n| n == c)) {
        let how = if all { "`all` includes it" } else { "it is a target" };
        return Err(usage(format!(
            "refused: {caller} asked to deploy itself ({how}); an instance never replaces itself: another instance or a maintainer must ask"
        )));
    }
    Ok(names)
}

/// One `tofu` invocation, as run and as shown.
#[derive(Debug, Clone, Serialize)]
pub struct Invocation {
    pub args: Vec<String>,
    /// The instances it creates or replaces.
    pub instances: Vec<String>,
    pub replace: bool,
}

impl Invocation {
    pub fn shown(&self) -> String {
        std::iter::once("tofu").chain(self.args.iter().map(String::as_str)).collect::<Vec<_>>().join(" ")
    }
}

fn address(name: &str) -> String {
    format!("aws_instance.clawdinator[\"{name}\"]")
}

/// How long an apply waits for another deploy's hold on the state lock.
pub const APPLY_LOCK_TIMEOUT: &str = "30m";

/// The invocations a deploy runs, in order: init, one apply creating every
/// registry instance EC2 lacks (`registry`, desired state, whatever the
/// targets), then one replacing apply per existing target; none at all
/// when there is nothing to create or replace.
pub fn plan(
    opts: &DeployOptions,
    ami: &str,
    registry: &[String],
    names: &[String],
    live: &[LiveInstance],
) -> Vec<Invocation> {
    let chdir = format!("-chdir={}", opts.chdir.display());
    let b = &opts.backend;
    let mut init = vec![chdir.clone(), "init".into(), "-input=false".into()];
    init.extend(
        [("bucket", &b.bucket), ("key", &b.key), ("region", &b.region), ("dynamodb_table", &b.lock_table)]
            .map(|(k, v)| format!("-backend-config={k}={v}")),
    );
    // Deploys of different lanes (fleet-deploy.yml) may run at once: an
    // apply waits its turn at the state lock rather than failing on it.
    let mut apply = vec![chdir, "apply".into(), "-input=false".into(), "-auto-approve".into()];
    apply.extend([format!("-lock-timeout={APPLY_LOCK_TIMEOUT}"), format!("-var=ami_id={ami}")]);
    if let Some(file) = &opts.var_file {
        apply.push(format!("-var-file={}", file.display()));
    }
    let exists = |n: &String| live.iter().any(|i| i.name.as_ref() == Some(n));
    let missing: Vec<&String> = registry.iter().filter(|n| !exists(n)).collect();
    let existing: Vec<&String> = names.iter().filter(|n| exists(n)).collect();
    let mut applies = Vec::new();
    if !missing.is_empty() {
        let mut args = apply.clone();
        args.extend(missing.iter().map(|n| format!("-target={}", address(n))));
        applies.push(Invocation { args, instances: missing.iter().map(|n| n.to_string()).collect(), replace: false });
    }
    for name in existing {
        let mut args = apply.clone();
        args.push(format!("-replace={}", address(name)));
        applies.push(Invocation { args, instances: vec![name.clone()], replace: true });
    }
    // Nothing to create or replace: no tofu at all, not even init.
    if applies.is_empty() {
        return applies;
    }
    std::iter::once(Invocation { args: init, instances: vec![], replace: false }).chain(applies).collect()
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployReport {
    pub ami: String,
    pub dry_run: bool,
    pub invocations: Vec<Invocation>,
    /// Instance name -> the instance it runs now.
    pub deployed: Vec<(String, String)>,
}

impl crate::audit::Audited for DeployReport {
    /// Each replaced or created instance: `name=instance-id`.
    fn resources(&self) -> Vec<String> {
        self.deployed.iter().map(|(name, id)| format!("{name}={id}")).collect()
    }
}

impl std::fmt::Display for DeployReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.invocations.is_empty() {
            return writeln!(f, "nothing to create or replace: every registry instance exists in EC2");
        }
        if self.dry_run {
            writeln!(f, "would run, one at a time (ami_id = {}):", self.ami)?;
            return self.invocations.iter().try_for_each(|i| writeln!(f, "  {}", i.shown()));
        }
        for (name, id) in &self.deployed {
            writeln!(f, "{name}: {id} from {} is running, healthy and online in SSM", self.ami)?;
        }
        Ok(())
    }
}

/// Wait until `name` runs as a new instance (not one of `old`) that passes
/// its status checks and has its SSM agent online.
async fn healthy(
    aws: &Aws,
    name: &str,
    old: &[String],
    opts: &DeployOptions,
    cancel: &Cancel,
    out: &Output,
) -> Result<String> {
    let wait = Wait {
        what: format!("{name} to be healthy"),
        every: opts.poll,
        limit: opts.healthy_timeout,
        raise: "raise it with --healthy-timeout",
        cancel,
        out,
    };
    wait.until(|| health(aws, name, old)).await
}

/// One look at the new instance: running, its status checks, its SSM agent.
async fn health(aws: &Aws, name: &str, old: &[String]) -> Result<Poll<String>> {
    let id = match new_instance(aws, name, old).await? {
        Poll::Done(id) => id,
        pending => return Ok(pending),
    };
    if let Some(pending) = status_checks(aws, name, &id).await? {
        return Ok(Poll::Pending(pending));
    }
    if status::ssm_online(aws, std::slice::from_ref(&id)).await?.contains(&id) {
        Ok(Poll::Done(id))
    } else {
        Ok(Poll::Pending(format!("{id} SSM agent not online")))
    }
}

/// The running instance named `name` that is none of `old`.
async fn new_instance(aws: &Aws, name: &str, old: &[String]) -> Result<Poll<String>> {
    let states = [InstanceStateName::Pending, InstanceStateName::Running];
    let found = aws
        .ec2()
        .describe_instances()
        .filters(Filter::builder().name("tag:Name").values(name).build())
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .set_values(Some(states.map(|s| s.to_string()).to_vec()))
                .build(),
        )
        .send()
        .await
        .map_err(|e| aws::error("EC2 DescribeInstances", name, e))?;
    let mut instances = found.reservations().iter().flat_map(|r| r.instances());
    let Some(instance) = instances.find(|i| i.instance_id().is_some_and(|id| !old.iter().any(|o| o == id))) else {
        return Ok(Poll::Pending("no new instance yet".into()));
    };
    let id = instance.instance_id().unwrap_or_default().to_string();
    match instance.state().and_then(|s| s.name()) {
        Some(InstanceStateName::Running) => Ok(Poll::Done(id)),
        _ => Ok(Poll::Pending(format!("{id} pending"))),
    }
}

/// None once both EC2 status checks pass; what they say while they do not
/// yet; an error once either is impaired.
async fn status_checks(aws: &Aws, name: &str, id: &str) -> Result<Option<String>> {
    let statuses = aws
        .ec2()
        .describe_instance_status()
        .instance_ids(id)
        .send()
        .await
        .map_err(|e| aws::error("EC2 DescribeInstanceStatus", id, e))?;
    let of = |x: Option<&InstanceStatusSummary>| x.and_then(|s| s.status()).cloned();
    let checks = statuses.instance_statuses().first().map(|s| (of(s.instance_status()), of(s.system_status())));
    let shown = |s: &Option<SummaryStatus>| s.as_ref().map(|s| s.as_str()).unwrap_or_default().to_string();
    match checks {
        Some((Some(SummaryStatus::Ok), Some(SummaryStatus::Ok))) => Ok(None),
        Some((i, s)) if [&i, &s].contains(&&Some(SummaryStatus::Impaired)) => {
            anyhow::bail!("{name} ({id}) fails its EC2 status checks (instance {}, system {})", shown(&i), shown(&s))
        }
        Some((i, s)) => Ok(Some(format!("{id} status checks {:?}", Some((shown(&i), shown(&s)))))),
        None => Ok(Some(format!("{id} status checks None"))),
    }
}

/// One tofu run as the caller's own identity: tofu gets the credentials
/// this command resolved (in CI, the role it assumed through GitHub OIDC,
/// which tofu could not assume itself) in its environment, and no profile.
fn tofu(invocation: &Invocation, credentials: &[(&'static str, String)]) -> Result<()> {
    let sh = Shell::new()?;
    sh.set_var("TF_IN_AUTOMATION", "1");
    let args = &invocation.args;
    let command = cmd!(sh, "tofu {args...}").env_remove("AWS_PROFILE").envs(credentials.iter().map(|(k, v)| (k, v)));
    crate::process::run_on_stderr(command)
}

/// Run the plan; see the module comment.
pub async fn deploy(
    aws: &Aws,
    registry: &Registry,
    opts: &DeployOptions,
    cancel: &Cancel,
    out: &Output,
) -> Result<DeployReport> {
    let names = match opts.missing {
        true => vec![],
        false => targets(registry, &opts.targets, opts.caller.as_deref())?,
    };
    let image = crate::image::ami::latest(&aws.ec2(), opts.ami.as_deref()).await?;
    let ami = image.image_id().context("the AMI has no id")?.to_string();
    let live = status::live_instances(aws).await?;
    let everyone: Vec<String> = registry.instances.keys().cloned().collect();
    let plan = plan(opts, &ami, &everyone, &names, &live);
    let mut report = DeployReport { ami, dry_run: opts.dry_run, invocations: plan.clone(), deployed: vec![] };
    if opts.dry_run {
        return Ok(report);
    }
    for invocation in &plan {
        let old: Vec<String> = live
            .iter()
            .filter(|i| i.name.as_ref().is_some_and(|n| invocation.instances.contains(n)))
            .map(|i| i.id.clone())
            .collect();
        let credentials = aws.child_environment().await?;
        tokio::task::block_in_place(|| tofu(invocation, &credentials)).with_context(|| {
            format!("`{}` failed; the instances after it were left as they are", invocation.shown())
        })?;
        for name in &invocation.instances {
            let id = healthy(aws, name, &old, opts, cancel, out).await.with_context(|| {
                format!("{name} is not healthy after the deploy; the instances after it were left as they are")
            })?;
            report.deployed.push((name.clone(), id));
        }
    }
    Ok(report)
}

impl FleetDeployArgs {
    /// `fleet deploy`: the targets, asked for `all`, then the deploy,
    /// recorded in the audit trail.
    pub async fn run(mut self, ctx: &Ctx) -> Result<()> {
        // Workflow inputs left blank arrive as empty variables: not given.
        self.ami = self.ami.filter(|a| !a.trim().is_empty());
        self.caller = self.caller.filter(|c| !c.trim().is_empty());
        let registry = Registry::given(&self.instances)?;
        let names = match self.missing {
            true => vec![],
            false => targets(&registry, &self.targets, self.caller.as_deref())?,
        };
        if self.targets.iter().any(|t| t == "all") && !self.dry_run {
            confirm_all(names.len(), self.yes)?;
        }
        let opts = self.options(ctx)?;
        let aws = ctx.aws().await?;
        let targets = if opts.missing { vec!["missing".to_string()] } else { names };
        let entry = Entry { command: "fleet deploy", targets, dry_run: opts.dry_run };
        let report = entry.record(ctx, &aws, deploy(&aws, &registry, &opts, &ctx.cancel, &ctx.out)).await?;
        ctx.out.emit(&report)
    }

    fn options(self, ctx: &Ctx) -> Result<DeployOptions> {
        Ok(DeployOptions {
            backend: backend(&self, ctx)?,
            targets: self.targets,
            missing: self.missing,
            ami: self.ami,
            caller: self.caller,
            dry_run: self.dry_run,
            chdir: self.chdir,
            var_file: self.var_file,
            healthy_timeout: Duration::from_secs(self.healthy_timeout),
            poll: self.poll.poll,
        })
    }
}

/// OpenTofu's state backend as the flags say; a local run has its own bucket and region.
fn backend(args: &FleetDeployArgs, ctx: &Ctx) -> Result<Backend> {
    let bucket = args.backend_bucket.clone().or_else(|| ctx.default_bucket().map(str::to_string));
    let region =
        args.backend_region.clone().or_else(|| ctx.region()).or_else(|| ctx.is_local().then(|| "us-east-1".into()));
    let (Some(bucket), Some(region)) = (bucket, region) else {
        bail!(UsageError(
            "no state backend: pass --backend-bucket and --backend-region (or TF_BACKEND_BUCKET, TF_BACKEND_REGION)"
                .into()
        ));
    };
    Ok(Backend { bucket, key: args.backend_key.clone(), region, lock_table: args.lock_table.clone() })
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
