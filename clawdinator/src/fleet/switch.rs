//! `fleet switch REV [NAME]…`: the release lane. Each host, in registry
//! order (the first alone, as the canary, then `--parallel` at a time),
//! runs `clawdinator host switch REV` through SSM (the `clawdinator-switch` document):
//! the host builds, activates, checks and rolls itself back on failure.
//! The first failed host stops the lane; hosts not yet switched are left
//! untouched. A switched instance is tagged with the revision.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use aws_sdk_ec2::types::Filter;
use serde::Serialize;

use super::status::TAG_DEPLOYED_REVISION;
use crate::aws::{self, Aws};
use crate::cancel::{Cancel, Poll, Wait};
use crate::output::Output;
use crate::registry::Registry;

/// The host-side command, as the SSM document `clawdinator-switch`
/// (infra/opentofu/aws/ssm/switch.json) runs it: SSM itself refuses a
/// revision that is not 40 hex digits, so nothing else reaches the shell.
pub fn host_command(rev: &str) -> String {
    format!("/run/current-system/sw/bin/clawdinator host switch {rev} --json")
}

/// The SSM document of the switch and its one parameter.
pub const SWITCH_DOCUMENT: &str = "clawdinator-switch";

pub struct SwitchOptions {
    pub rev: String,
    pub names: Vec<String>,
    pub parallel: usize,
    pub dry_run: bool,
    pub timeout: Duration,
    pub poll: Duration,
}

/// What the roll did to one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Switched,
    /// Tagged with the revision by an earlier run: not switched again.
    AlreadySwitched,
    Failed,
    /// An earlier wave failed.
    NotStarted,
    WouldSwitch,
    WouldFail,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let word = serde_json::to_value(self).map_err(|_| std::fmt::Error)?;
        f.pad(word.as_str().unwrap_or_default())
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostOutcome {
    pub name: String,
    pub instance_id: Option<String>,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SwitchReport {
    pub revision: String,
    pub command: String,
    pub waves: Vec<Vec<String>>,
    pub hosts: Vec<HostOutcome>,
}

impl std::fmt::Display for SwitchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "switch to {} ({})", self.revision, self.command)?;
        for (n, wave) in self.waves.iter().enumerate() {
            writeln!(f, "  wave {}{}: {}", n + 1, if n == 0 { " (canary)" } else { "" }, wave.join(", "))?;
        }
        for h in &self.hosts {
            let id = h.instance_id.as_deref().unwrap_or("-");
            writeln!(
                f,
                "  {:<16} {:<20} {}{}",
                h.name,
                id,
                h.outcome,
                if h.detail.is_empty() { String::new() } else { format!(": {}", h.detail) }
            )?;
        }
        Ok(())
    }
}

/// The canary alone, then waves of `parallel`.
pub fn waves(names: &[String], parallel: usize) -> Vec<Vec<String>> {
    let Some((canary, rest)) = names.split_first() else { return vec![] };
    std::iter::once(vec![canary.clone()]).chain(rest.chunks(parallel.max(1)).map(|c| c.to_vec())).collect()
}

/// The one running instance named `name` and the revision it was last
/// switched to; zero or several is an error naming them.
pub async fn running_instance(aws: &Aws, name: &str) -> Result<(String, Option<String>)> {
    let out = aws
        .ec2()
        .describe_instances()
        .filters(Filter::builder().name("tag:Name").values(name).build())
        .filters(Filter::builder().name("tag:app").values("clawdinator").build())
        .filters(Filter::builder().name("instance-state-name").values("running").build())
        .send()
        .await
        .map_err(|e| aws::error("EC2 DescribeInstances", name, e))?;
    let found: Vec<(String, Option<String>)> = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| {
            let revision = i.tags().iter().find(|t| t.key() == Some(TAG_DEPLOYED_REVISION)).and_then(|t| t.value());
            Some((i.instance_id()?.to_string(), revision.map(String::from)))
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("{name}: no running instance tagged Name={name}, app=clawdinator (fleet deploy {name} creates it)"),
        many => {
            let ids: Vec<&str> = many.iter().map(|(id, _)| id.as_str()).collect();
            bail!("{name}: {} running instances ({}); terminate the extra ones first", ids.len(), ids.join(", "))
        }
    }
}

/// One fleet command on a host through its SSM document (fixed command,
/// checked parameters): which, with what, how long it may take.
pub struct HostRun<'a> {
    pub document: &'static str,
    pub parameters: Vec<(&'static str, String)>,
    /// What the document runs, for messages.
    pub command: String,
    pub comment: String,
    pub timeout: Duration,
    pub poll: Duration,
    pub cancel: &'a Cancel,
    pub out: &'a Output,
}

/// Run a host command on one instance and wait for its end; its output on success.
pub async fn run_on_host(aws: &Aws, name: &str, id: &str, run: &HostRun<'_>) -> Result<String> {
    let ssm = aws.ssm();
    let mut send = ssm.send_command().document_name(run.document).instance_ids(id).comment(&run.comment);
    for (name, value) in &run.parameters {
        send = send.parameters(*name, vec![value.clone()]);
    }
    let sent = send.timeout_seconds(600).send().await.map_err(|e| aws::error("SSM SendCommand", id, e))?;
    let command_id =
        sent.command().and_then(|c| c.command_id()).context("SendCommand returned no command id")?.to_string();
    let wait = Wait {
        what: format!("{name}: {}", run.comment),
        every: run.poll,
        limit: run.timeout,
        raise: "raise it with --timeout",
        cancel: run.cancel,
        out: run.out,
    };
    let (status, output) = wait
        .until(|| async {
            let got = ssm.get_command_invocation().command_id(&command_id).instance_id(id).send().await;
            let inv = match got {
                Ok(inv) => inv,
                // "InvocationDoesNotExist" right after SendCommand: not registered yet.
                Err(e) if aws::error_code(&e) == Some("InvocationDoesNotExist") => {
                    return Ok(Poll::Pending("queued".into()))
                }
                Err(e) => return Err(aws::error("SSM GetCommandInvocation", id, e)),
            };
            let status = inv.status().map(|s| s.as_str().to_string()).unwrap_or_default();
            if matches!(status.as_str(), "Pending" | "InProgress" | "Delayed" | "Cancelling") {
                return Ok(Poll::Pending(status));
            }
            let output = format!(
                "{}{}",
                inv.standard_output_content().unwrap_or_default(),
                inv.standard_error_content().unwrap_or_default()
            );
            Ok(Poll::Done((status, output)))
        })
        .await?;
    if status != "Success" {
        bail!("{name} ({id}): `{}` ended {status}; its output:\n{}", run.command, output.trim_end());
    }
    Ok(output)
}

/// Switch one host, then tag it with the revision.
async fn switch_host(
    aws: &Aws,
    name: &str,
    id: &str,
    opts: &SwitchOptions,
    cancel: &Cancel,
    out: &Output,
) -> Result<String> {
    let run = HostRun {
        document: SWITCH_DOCUMENT,
        parameters: vec![("revision", opts.rev.clone())],
        command: host_command(&opts.rev),
        comment: format!("clawdinator fleet switch {}", &opts.rev[..12]),
        timeout: opts.timeout,
        poll: opts.poll,
        cancel,
        out,
    };
    let output = run_on_host(aws, name, id, &run).await?;
    aws.ec2()
        .create_tags()
        .resources(id)
        .tags(aws_sdk_ec2::types::Tag::builder().key(TAG_DEPLOYED_REVISION).value(&opts.rev).build())
        .send()
        .await
        .map_err(|e| aws::error("EC2 CreateTags", id, e))?;
    Ok(output)
}

/// The whole lane; stops at the first failed host.
pub async fn switch(
    aws: &Aws,
    registry: &Registry,
    opts: &SwitchOptions,
    cancel: &Cancel,
    out: &Output,
) -> Result<SwitchReport> {
    crate::host::switch::check_revision(&opts.rev)?;
    let names: Vec<String> = registry.select(&opts.names)?.iter().map(|i| i.host.clone()).collect();
    let mut report = SwitchReport {
        revision: opts.rev.clone(),
        command: host_command(&opts.rev),
        waves: waves(&names, opts.parallel),
        hosts: vec![],
    };
    // Every host resolves to one instance before any is touched.
    let mut resolved = Vec::new();
    let mut unresolved = Vec::new();
    for name in &names {
        match running_instance(aws, name).await {
            Ok(found) => resolved.push((name.clone(), found)),
            Err(e) => unresolved.push((name.clone(), format!("{e:#}"))),
        }
    }
    if opts.dry_run {
        for (name, (id, revision)) in &resolved {
            let outcome = if revision.as_deref() == Some(opts.rev.as_str()) {
                Outcome::AlreadySwitched
            } else {
                Outcome::WouldSwitch
            };
            report.hosts.push(HostOutcome {
                name: name.clone(),
                instance_id: Some(id.clone()),
                outcome,
                detail: String::new(),
            });
        }
        for (name, why) in unresolved {
            report.hosts.push(HostOutcome { name, instance_id: None, outcome: Outcome::WouldFail, detail: why });
        }
        return Ok(report);
    }
    if let Some((_, why)) = unresolved.first() {
        bail!("nothing was switched: {why}");
    }
    let found = |name: &str| resolved.iter().find(|(n, _)| n == name).map(|(_, f)| f.clone()).expect("resolved above");
    let id_of = |name: &str| found(name).0;
    let mut failure = None;
    for wave in report.waves.clone() {
        if failure.is_some() {
            report.hosts.extend(wave.iter().map(|n| HostOutcome {
                name: n.clone(),
                instance_id: Some(id_of(n)),
                outcome: Outcome::NotStarted,
                detail: String::new(),
            }));
            continue;
        }
        // A host already tagged with REV was switched by an earlier run: not again.
        let runs = wave.iter().map(|name| {
            let (id, revision) = found(name);
            let done = revision.as_deref() == Some(opts.rev.as_str());
            async move {
                let result =
                    if done { Ok(None) } else { switch_host(aws, name, &id, opts, cancel, out).await.map(Some) };
                (name.clone(), id.clone(), result)
            }
        });
        for (name, id, result) in futures::future::join_all(runs).await {
            let (outcome, detail) = match result {
                Ok(None) => (Outcome::AlreadySwitched, String::new()),
                Ok(Some(_)) => (Outcome::Switched, String::new()),
                Err(e) => {
                    failure.get_or_insert(format!("{e:#}"));
                    (Outcome::Failed, format!("{e:#}"))
                }
            };
            report.hosts.push(HostOutcome { name, instance_id: Some(id), outcome, detail });
        }
    }
    if let Some(why) = failure {
        out.emit(&report)?;
        bail!("fleet switch stopped: {why}");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canary_goes_alone_then_waves_of_parallel() {
        let names: Vec<String> = (1..=6).map(|n| format!("h{n}")).collect();
        assert_eq!(waves(&names, 2), vec![vec!["h1"], vec!["h2", "h3"], vec!["h4", "h5"], vec!["h6"]]);
        assert_eq!(waves(&names[..1], 4), vec![vec!["h1"]]);
        assert_eq!(waves(&names[..3], 1).len(), 3);
    }
}
