//! `fleet switch REV [NAME]…`: the release lane. The revision's manifest
//! (`releases/REV.json`, written by `release build`) names each host's
//! system; each host, through the fleet lane (canary, then waves of
//! `--parallel`, stopping at the first failure), runs `clawdinator host
//! switch STORE_PATH` through SSM (the `clawdinator-switch` document): it
//! fetches the signed system from the fleet's cache, activates, checks and
//! rolls itself back on failure. A switched instance is tagged with the
//! revision, and a host tagged with it already is not switched again.

use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::flags::FleetSwitchArgs;
use super::host_run::{run_on_host, HostRun};
use super::lane::{self, LaneReport, Target, Verb};
use super::status::TAG_DEPLOYED_REVISION;
use crate::audit::Entry;
use crate::aws::{self, Aws};
use crate::cancel::Cancel;
use crate::ctx::Ctx;
use crate::output::Output;
use crate::registry::Registry;
use crate::release::manifest;

/// The host-side command, as the SSM document `clawdinator-switch`
/// (infra/opentofu/aws/ssm/switch.json) runs it: SSM itself refuses a
/// parameter that is not a NixOS system's store path, so nothing else
/// reaches the shell.
pub const HOST_COMMAND: &str = "/run/current-system/sw/bin/clawdinator host switch {{ system }} --json";

/// The SSM document of the switch and its one parameter.
pub const SWITCH_DOCUMENT: &str = "clawdinator-switch";

const VERB: Verb = Verb { name: "switch", done: "switched", already: "already-switched", would: "would-switch" };

pub struct SwitchOptions {
    pub rev: String,
    pub names: Vec<String>,
    /// The fleet bucket, where the release manifests are.
    pub bucket: String,
    pub parallel: usize,
    pub dry_run: bool,
    pub timeout: Duration,
    pub poll: Duration,
}

/// Switch one host to its system, then tag it with the revision.
async fn switch_host(aws: &Aws, t: &Target, opts: &SwitchOptions, cancel: &Cancel, out: &Output) -> Result<()> {
    let system = t.system.clone().context("a target without a system")?;
    let run = HostRun {
        document: SWITCH_DOCUMENT,
        command: HOST_COMMAND.replace("{{ system }}", &system),
        parameters: vec![("system", system)],
        comment: format!("clawdinator fleet switch {}", &opts.rev[..12]),
        timeout: opts.timeout,
        poll: opts.poll,
        cancel,
        out,
    };
    run_on_host(aws, &t.name, &t.instance_id, &run).await?;
    aws.ec2()
        .create_tags()
        .resources(&t.instance_id)
        .tags(aws_sdk_ec2::types::Tag::builder().key(TAG_DEPLOYED_REVISION).value(&opts.rev).build())
        .send()
        .await
        .map_err(|e| aws::error("EC2 CreateTags", &t.instance_id, e))?;
    Ok(())
}

/// The release's hosts, each resolved to its instance and its system.
async fn targets(
    aws: &Aws,
    names: &[String],
    release: &manifest::Release,
) -> Result<(Vec<Target>, Vec<(String, String)>)> {
    let mut targets = Vec::new();
    let mut unresolved = Vec::new();
    for (name, found) in lane::resolve(aws, names).await {
        let system = release.system_of(&name)?.to_string();
        match found {
            Ok((id, tagged)) => {
                let already = tagged.as_deref() == Some(release.revision.as_str());
                targets.push(Target { name, instance_id: id, system: Some(system), already });
            }
            Err(e) => unresolved.push((name, format!("{e:#}"))),
        }
    }
    Ok((targets, unresolved))
}

/// The whole lane; stops at the first failed host ([`lane::Stopped`]).
pub async fn switch(
    aws: &Aws,
    registry: &Registry,
    opts: &SwitchOptions,
    cancel: &Cancel,
    out: &Output,
) -> Result<LaneReport> {
    manifest::check_revision(&opts.rev)?;
    let names: Vec<String> = registry.select(&opts.names)?.iter().map(|i| i.host.clone()).collect();
    let report = LaneReport {
        command: HOST_COMMAND.into(),
        revision: Some(opts.rev.clone()),
        waves: lane::waves(&names, opts.parallel),
        hosts: vec![],
        done: VERB.done,
    };
    let release = match manifest::read(&aws.s3(), &opts.bucket, &opts.rev).await {
        Ok(release) => release,
        // A dry run says what stops the switch, for every host.
        Err(e) if opts.dry_run => {
            let why = format!("{e:#}");
            return Ok(lane::plan(report, &VERB, &[], names.iter().map(|n| (n.clone(), why.clone())).collect()));
        }
        Err(e) => return Err(e),
    };
    let (targets, unresolved) = targets(aws, &names, &release).await?;
    if opts.dry_run {
        return Ok(lane::plan(report, &VERB, &targets, unresolved));
    }
    if let Some((_, why)) = unresolved.first() {
        bail!("nothing was switched: {why}");
    }
    lane::roll(report, &VERB, &targets, |t| async move { switch_host(aws, &t, opts, cancel, out).await }).await
}

impl FleetSwitchArgs {
    /// `fleet switch`: the release lane, recorded in the audit trail.
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        let registry = Registry::given(&self.instances)?;
        let opts = SwitchOptions {
            rev: self.rev,
            names: self.names,
            bucket: ctx
                .bucket(self.bucket, "no fleet bucket (where releases/<rev>.json is): pass --bucket (S3_BUCKET)")?,
            parallel: self.parallel.into(),
            dry_run: self.dry_run,
            timeout: Duration::from_secs(self.timeout),
            poll: self.poll.poll,
        };
        let aws = ctx.aws().await?;
        let entry = Entry::named("fleet switch", &opts.names, opts.dry_run);
        lane::emit(ctx, entry.record(ctx, &aws, switch(&aws, &registry, &opts, &ctx.cancel, &ctx.out)).await)
    }
}
