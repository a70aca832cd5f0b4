//! `fleet refresh-secrets [NAME]…`: a rotated secret reaches running hosts
//! without replacing them. Each named host (registry order, one at a time,
//! the first as the canary) runs the fixed command `clawdinator host
//! refresh-secrets` through SSM: it fetches its bundle again, installs the
//! secrets and restarts the units that read them. The first failure stops
//! the rest, which are left as they were.

use std::time::Duration;

use anyhow::{bail, Result};
use serde::Serialize;

use super::switch::{run_on_host, running_instance, HostRun};
use crate::aws::Aws;
use crate::cancel::Cancel;
use crate::output::Output;
use crate::registry::Registry;

/// The host-side command, from the system the module installed; nothing
/// but this fixed text reaches the host's shell.
pub const HOST_COMMAND: &str = "/run/current-system/sw/bin/clawdinator host refresh-secrets --json";
/// The SSM document that runs it (infra/opentofu/aws/ssm/refresh-secrets.json).
pub const DOCUMENT: &str = "clawdinator-refresh-secrets";

pub struct RefreshOptions {
    pub names: Vec<String>,
    pub dry_run: bool,
    pub timeout: Duration,
    pub poll: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Refreshed,
    Failed,
    NotStarted,
    WouldRefresh,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostRefresh {
    pub name: String,
    pub instance_id: String,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct RefreshReport {
    pub command: &'static str,
    pub hosts: Vec<HostRefresh>,
}

impl std::fmt::Display for RefreshReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "refresh secrets ({})", self.command)?;
        for h in &self.hosts {
            let detail = if h.detail.is_empty() { String::new() } else { format!(": {}", h.detail) };
            writeln!(f, "  {:<16} {:<20} {:?}{detail}", h.name, h.instance_id, h.outcome)?;
        }
        Ok(())
    }
}

/// Every named host resolves to one running instance before any is touched.
pub async fn refresh_secrets(
    aws: &Aws,
    registry: &Registry,
    opts: &RefreshOptions,
    cancel: &Cancel,
    out: &Output,
) -> Result<RefreshReport> {
    let names: Vec<String> = registry.select(&opts.names)?.iter().map(|i| i.host.clone()).collect();
    let mut hosts = Vec::new();
    for name in &names {
        let (id, _) = running_instance(aws, name).await.map_err(|e| e.context("nothing was refreshed"))?;
        let outcome = if opts.dry_run { Outcome::WouldRefresh } else { Outcome::NotStarted };
        hosts.push(HostRefresh { name: name.clone(), instance_id: id, outcome, detail: String::new() });
    }
    let mut report = RefreshReport { command: HOST_COMMAND, hosts };
    if opts.dry_run {
        return Ok(report);
    }
    for host in &mut report.hosts {
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
        match run_on_host(aws, &host.name, &host.instance_id, &run).await {
            Ok(_) => host.outcome = Outcome::Refreshed,
            Err(e) => {
                host.outcome = Outcome::Failed;
                host.detail = format!("{e:#}");
                let why = host.detail.clone();
                out.emit(&report)?;
                bail!("fleet refresh-secrets stopped: {why}");
            }
        }
    }
    Ok(report)
}
