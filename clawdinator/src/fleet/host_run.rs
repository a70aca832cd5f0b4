//! One fleet command on one host: the host's one running instance, and a
//! run of one of the fleet's SSM documents on it (fixed command, checked
//! parameters) waited for to its end. Every per-host command goes through
//! here (switch, refresh-secrets, logs, restart).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use aws_sdk_ec2::types::{Filter, InstanceStateName};
use aws_sdk_ssm::types::CommandInvocationStatus as Status;

use super::status::TAG_DEPLOYED_REVISION;
use crate::aws::{self, Aws};
use crate::cancel::{Cancel, Poll, Wait};
use crate::output::Output;

/// A host's running instances: (instance id, the revision it was last switched to).
pub type Found = Vec<(String, Option<String>)>;

/// The fleet's running instances (tagged app=clawdinator) by their `Name`
/// tag, and those named `name` alone when given: one listing, paginated
/// (at most 1,000 a page: "Pagination in the Amazon EC2 API",
/// <https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-pagination.html>),
/// never a request per host.
pub async fn running_instances(aws: &Aws, name: Option<&str>) -> Result<BTreeMap<String, Found>> {
    let mut list = aws
        .ec2()
        .describe_instances()
        .filters(Filter::builder().name("tag:app").values("clawdinator").build())
        .filters(Filter::builder().name("instance-state-name").values(InstanceStateName::Running.as_str()).build())
        .max_results(1000);
    if let Some(name) = name {
        list = list.filters(Filter::builder().name("tag:Name").values(name).build());
    }
    let mut pages = list.into_paginator().send();
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws::error("EC2 DescribeInstances", name.unwrap_or("tag:app=clawdinator"), e))?;
        for i in page.reservations().iter().flat_map(|r| r.instances()) {
            let tag = |key: &str| i.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value());
            if let (Some(host), Some(id)) = (tag("Name"), i.instance_id()) {
                found
                    .entry(host.to_string())
                    .or_default()
                    .push((id.to_string(), tag(TAG_DEPLOYED_REVISION).map(String::from)));
            }
        }
    }
    Ok(found)
}

/// `name`'s one running instance among those `found`; zero or several is
/// an error naming them.
pub fn the_one(name: &str, found: Option<&Found>) -> Result<(String, Option<String>)> {
    match found.map(Vec::as_slice).unwrap_or_default() {
        [one] => Ok(one.clone()),
        [] => bail!("{name}: no running instance tagged Name={name}, app=clawdinator (fleet deploy {name} creates it)"),
        many => {
            let ids: Vec<&str> = many.iter().map(|(id, _)| id.as_str()).collect();
            bail!("{name}: {} running instances ({}); terminate the extra ones first", ids.len(), ids.join(", "))
        }
    }
}

/// The one running instance named `name` and the revision it was last
/// switched to; zero or several is an error naming them.
pub async fn running_instance(aws: &Aws, name: &str) -> Result<(String, Option<String>)> {
    the_one(name, running_instances(aws, Some(name)).await?.get(name))
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
            let status = inv.status().cloned().unwrap_or_else(|| Status::from(""));
            if matches!(status, Status::Pending | Status::InProgress | Status::Delayed | Status::Cancelling) {
                return Ok(Poll::Pending(status.to_string()));
            }
            let output = format!(
                "{}{}",
                inv.standard_output_content().unwrap_or_default(),
                inv.standard_error_content().unwrap_or_default()
            );
            Ok(Poll::Done((status, output)))
        })
        .await?;
    if status != Status::Success {
        bail!("{name} ({id}): `{}` ended {status}; its output:\n{}", run.command, output.trim_end());
    }
    Ok(output)
}
