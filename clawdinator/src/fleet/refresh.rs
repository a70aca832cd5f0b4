//! `fleet refresh-secrets [NAME]…`: a rotated secret reaches running hosts
//! without replacing them. Each named host, through the fleet lane (one at
//! a time, the first as the canary, stopping at the first failure), runs
//! the fixed command `clawdinator host refresh-secrets` through SSM: it
//! fetches its bundle again, installs the secrets and restarts the units
//! that read them.

use std::time::Duration;

use anyhow::Result;

use super::flags::FleetRefreshArgs;
use super::host_run::{run_on_host, HostRun};
use super::lane::{self, LaneReport, Target, Verb};
use crate::audit::Entry;
use crate::aws::Aws;
use crate::cancel::Cancel;
use crate::ctx::Ctx;
use crate::output::Output;
use crate::registry::Registry;

/// The host-side command, from the system the module installed; nothing
/// but this fixed text reaches the host's shell.
pub const HOST_COMMAND: &str = "/run/current-system/sw/bin/clawdinator host refresh-secrets --json";
/// The SSM document that runs it (infra/opentofu/aws/ssm/refresh-secrets.json).
pub const DOCUMENT: &str = "clawdinator-refresh-secrets";

const VERB: Verb = Verb { name: "refresh-secrets", done: "refreshed", already: "refreshed", would: "would-refresh" };

pub struct RefreshOptions {
    pub names: Vec<String>,
    pub dry_run: bool,
    pub timeout: Duration,
    pub poll: Duration,
}

/// Every named host resolves to one running instance before any is touched.
pub async fn refresh_secrets(
    aws: &Aws,
    registry: &Registry,
    opts: &RefreshOptions,
    cancel: &Cancel,
    out: &Output,
) -> Result<LaneReport> {
    let names: Vec<String> = registry.select(&opts.names)?.iter().map(|i| i.host.clone()).collect();
    let mut targets = Vec::new();
    for (name, found) in lane::resolve(aws, &names).await {
        let (instance_id, _) = found.map_err(|e| e.context("nothing was refreshed"))?;
        targets.push(Target { name, instance_id, system: None, already: false });
    }
    let report = LaneReport {
        command: HOST_COMMAND.into(),
        revision: None,
        waves: lane::waves(&names, 1),
        hosts: vec![],
        done: VERB.done,
    };
    if opts.dry_run {
        return Ok(lane::plan(report, &VERB, &targets, vec![]));
    }
    lane::roll(report, &VERB, &targets, |t| async move {
        let run = HostRun {
            document: DOCUMENT,
            parameters: vec![],
            command: HOST_COMMAND.into(),
            comment: "clawdinator fleet refresh-secrets".into(),
            timeout: opts.timeout,
            poll: opts.poll,
            cancel,
            out,
        };
        run_on_host(aws, &t.name, &t.instance_id, &run).await.map(|_| ())
    })
    .await
}

impl FleetRefreshArgs {
    /// `fleet refresh-secrets`: the secrets lane, recorded in the audit trail.
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        let registry = Registry::given(&self.instances)?;
        let opts = RefreshOptions {
            names: self.names,
            dry_run: self.dry_run,
            timeout: Duration::from_secs(self.timeout),
            poll: self.poll.poll,
        };
        let aws = ctx.aws().await?;
        let entry = Entry::named("fleet refresh-secrets", &opts.names, opts.dry_run);
        let work = refresh_secrets(&aws, &registry, &opts, &ctx.cancel, &ctx.out);
        lane::emit(ctx, entry.record(ctx, &aws, work).await)
    }
}
