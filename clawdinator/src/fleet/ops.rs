//! `fleet logs NAME` and `fleet restart NAME`: a host's unit journal and a
//! unit restart for operators, with SSH off. Each runs its SSM document
//! (`clawdinator-logs`, `clawdinator-restart`), which runs one fixed host
//! command; the unit and the time span are checked here, by SSM against
//! the document's pattern, and on the host again.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use super::flags::{FleetLogsArgs, FleetRestartArgs};
use super::host_run::{run_on_host, running_instance, HostRun};
use crate::audit::Entry;
use crate::aws::Aws;
use crate::cancel::Cancel;
use crate::ctx::Ctx;
use crate::host::ops::{check_since, check_unit};
use crate::output::Output;
use crate::registry::Registry;

pub const LOGS_DOCUMENT: &str = "clawdinator-logs";
pub const RESTART_DOCUMENT: &str = "clawdinator-restart";

pub struct OpsOptions {
    pub name: String,
    pub unit: String,
    pub timeout: Duration,
    pub poll: Duration,
}

impl OpsOptions {
    pub fn new(name: String, unit: String, timeout_seconds: u64, poll: Duration) -> OpsOptions {
        OpsOptions { name, unit, timeout: Duration::from_secs(timeout_seconds), poll }
    }

    /// `document` (`clawdinator-<verb>`) with these parameters on the host, within this run's limits.
    fn host_run<'a>(
        &self,
        document: &'static str,
        parameters: Vec<(&'static str, String)>,
        command: String,
        cancel: &'a Cancel,
        out: &'a Output,
    ) -> HostRun<'a> {
        let verb = document.trim_start_matches("clawdinator-");
        let comment = format!("clawdinator fleet {verb} {}", self.unit);
        HostRun { document, parameters, command, comment, timeout: self.timeout, poll: self.poll, cancel, out }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpsReport {
    pub name: String,
    pub instance_id: String,
    pub unit: String,
    /// What the host printed (the journal, or the restart's report).
    pub output: String,
    /// `fleet restart --dry-run`: nothing was sent.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

impl crate::audit::Audited for OpsReport {
    fn resources(&self) -> Vec<String> {
        vec![self.instance_id.clone()]
    }
}

impl std::fmt::Display for OpsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.dry_run {
            return writeln!(f, "would restart {} on {} ({})", self.unit, self.name, self.instance_id);
        }
        write!(f, "{}", self.output)?;
        if !self.output.ends_with('\n') && !self.output.is_empty() {
            writeln!(f)?;
        }
        Ok(())
    }
}

/// The one running instance of a registry name, and the run's frame.
async fn target(aws: &Aws, registry: &Registry, opts: &OpsOptions) -> Result<String> {
    check_unit(&opts.unit).map_err(|e| crate::exit::UsageError(format!("{e:#}")))?;
    let name = registry.select(std::slice::from_ref(&opts.name))?[0].host.clone();
    Ok(running_instance(aws, &name).await?.0)
}

pub async fn logs(
    aws: &Aws,
    registry: &Registry,
    opts: &OpsOptions,
    since: &str,
    lines: u32,
    cancel: &Cancel,
    out: &Output,
) -> Result<OpsReport> {
    check_since(since).map_err(|e| crate::exit::UsageError(format!("{e:#}")))?;
    let id = target(aws, registry, opts).await?;
    let parameters = vec![("unit", opts.unit.clone()), ("since", since.to_string()), ("lines", lines.to_string())];
    let command = format!("clawdinator host logs --unit {} --since {since} --lines {lines}", opts.unit);
    let run = opts.host_run(LOGS_DOCUMENT, parameters, command, cancel, out);
    let output = run_on_host(aws, &opts.name, &id, &run).await?;
    Ok(OpsReport { name: opts.name.clone(), instance_id: id, unit: opts.unit.clone(), output, dry_run: false })
}

pub async fn restart(
    aws: &Aws,
    registry: &Registry,
    opts: &OpsOptions,
    dry_run: bool,
    cancel: &Cancel,
    out: &Output,
) -> Result<OpsReport> {
    let id = target(aws, registry, opts).await?;
    let mut report = OpsReport {
        name: opts.name.clone(),
        instance_id: id.clone(),
        unit: opts.unit.clone(),
        output: String::new(),
        dry_run,
    };
    if dry_run {
        return Ok(report);
    }
    let command = format!("clawdinator host restart --unit {}", opts.unit);
    let run = opts.host_run(RESTART_DOCUMENT, vec![("unit", opts.unit.clone())], command, cancel, out);
    report.output = run_on_host(aws, &opts.name, &id, &run).await?;
    Ok(report)
}

impl FleetLogsArgs {
    /// `fleet logs`: a host's unit journal.
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        let registry = Registry::given(&self.instances)?;
        let j = self.journal;
        let opts = OpsOptions::new(self.name, j.unit, self.timeout, self.poll.poll);
        let aws = ctx.aws().await?;
        ctx.out.emit(&logs(&aws, &registry, &opts, &j.since, j.lines, &ctx.cancel, &ctx.out).await?)
    }
}

impl FleetRestartArgs {
    /// `fleet restart`: a unit on a host, recorded in the audit trail.
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        let registry = Registry::given(&self.instances)?;
        let opts = OpsOptions::new(self.name, self.unit, self.timeout, self.poll.poll);
        let aws = ctx.aws().await?;
        let entry = Entry::named("fleet restart", std::slice::from_ref(&opts.name), self.dry_run);
        let work = restart(&aws, &registry, &opts, self.dry_run, &ctx.cancel, &ctx.out);
        ctx.out.emit(&entry.record(ctx, &aws, work).await?)
    }
}
