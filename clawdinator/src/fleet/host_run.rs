//! One fleet command on one host: the host's one running instance, and a
//! run of one of the fleet's SSM documents on it (fixed command, checked
//! parameters) waited for to its end. Every per-host command goes through
//! here (switch, refresh-secrets, logs, restart).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use aws_config::retry::RetryConfig;
use aws_sdk_ec2::types::{Filter, InstanceStateName};
use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ssm::operation::send_command::{SendCommandError, SendCommandOutput};
use aws_sdk_ssm::types::{CommandFilter, CommandFilterKey, CommandInvocationStatus as Status};

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
    let command_id = send_once(aws, id, run).await?;
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

/// Send `run`'s command to `id` once. SendCommand takes no idempotency
/// token, so the SDK's retry of a request whose response was lost (carried
/// out, answer dropped or timed out) would run the command on the host a
/// second time. The SDK does not retry it here (a per-operation override);
/// after a failure that may have reached SSM or may pass when sent again
/// ([`worth_another_look`]), the host's commands are listed
/// (ListCommandInvocations by instance id, [`look`]) for this send's
/// comment, unique by its nonce: found, it is the command sent; not found
/// in [`LOOKS`] listings (or refused by a throttle), it is sent again,
/// within the configured attempts (the budget the SDK's retry layer would
/// have had). Returns the command id. What remains: a command SSM lists
/// later than the last look is sent twice; only the host could refuse
/// that (a nonce it remembers), which the documents do not do yet.
async fn send_once(aws: &Aws, id: &str, run: &HostRun<'_>) -> Result<String> {
    let ssm = aws.ssm();
    let comment = unique_comment(&run.comment);
    let retry = aws.config.retry_config().cloned().unwrap_or_else(RetryConfig::standard);
    // SSM compares with its own clock: an hour's margin for ours.
    let since = std::time::SystemTime::now() - Duration::from_secs(3600);
    let mut attempt = 1;
    loop {
        let err = match send(&ssm, id, run, &comment).await {
            Ok(sent) => {
                return sent
                    .command()
                    .and_then(|c| c.command_id())
                    .map(String::from)
                    .with_context(|| format!("SendCommand on {id} returned no command id"))
            }
            Err(err) => err,
        };
        if !worth_another_look(&err) {
            return Err(aws::error("SSM SendCommand", id, err));
        }
        run.cancel.sleep(&format!("sending `{}` to {id}", run.command), backoff(&retry, attempt)).await?;
        // A throttle is an answer: nothing was accepted, nothing to look for.
        let found = if throttled(&err) { Ok(None) } else { look(&ssm, id, &comment, since, run).await };
        match found {
            Ok(Some(command_id)) => return Ok(command_id),
            Ok(None) if attempt < retry.max_attempts() => attempt += 1,
            Ok(None) => {
                return Err(aws::error("SSM SendCommand", id, err).context(format!(
                    "{attempt} attempt(s), none among {id}'s commands yet: the last may still reach it"
                )))
            }
            Err(list) => {
                return Err(aws::error("SSM SendCommand", id, err).context(format!(
                    "not sent again: whether it reached {id} is unknown, listing its commands failed too ({list:#})"
                )))
            }
        }
    }
}

/// One SendCommand attempt, without the SDK's retries.
async fn send(
    ssm: &aws_sdk_ssm::Client,
    id: &str,
    run: &HostRun<'_>,
    comment: &str,
) -> Result<SendCommandOutput, SdkError<SendCommandError>> {
    let mut send = ssm.send_command().document_name(run.document).instance_ids(id).comment(comment);
    for (name, value) in &run.parameters {
        send = send.parameters(*name, vec![value.clone()]);
    }
    let once = aws_sdk_ssm::config::Builder::default().retry_config(RetryConfig::disabled());
    send.timeout_seconds(600).customize().config_override(once).send().await
}

/// SSM's limit on a command's comment.
const COMMENT_MAX: usize = 100;

/// `comment` with a nonce of this send: how [`sent_before`] tells it from
/// every other command on the host.
fn unique_comment(comment: &str) -> String {
    let mut bytes = [0u8; 8];
    // 8 bytes from the kernel's pool never block and are never cut short.
    let filled = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty())
        .unwrap_or_else(|e| panic!("getrandom failed: {e}"));
    assert_eq!(filled, bytes.len(), "getrandom gave {filled} of {} bytes", bytes.len());
    let nonce = format!(" #{}", hex::encode(bytes));
    let room = COMMENT_MAX - nonce.len();
    let base: String = comment.chars().take(room).collect();
    format!("{base}{nonce}")
}

/// How many times the host's commands are listed, `--poll-seconds` apart,
/// before a command SSM may have accepted is sent again: SSM's listings are
/// eventually consistent (an invocation can show a while after SendCommand
/// was carried out), so one empty listing is no proof it was not.
const LOOKS: u32 = 6;

/// [`sent_before`], up to [`LOOKS`] times, `run.poll` apart.
async fn look(
    ssm: &aws_sdk_ssm::Client,
    id: &str,
    comment: &str,
    since: std::time::SystemTime,
    run: &HostRun<'_>,
) -> Result<Option<String>> {
    for look in 1..=LOOKS {
        let found =
            sent_before(ssm, id, comment, since).await.map_err(|e| aws::error("SSM ListCommandInvocations", id, e))?;
        if found.is_some() {
            return Ok(found);
        }
        if look < LOOKS {
            run.cancel.sleep(&format!("looking for `{}` on {id}", run.command), run.poll).await?;
        }
    }
    Ok(None)
}

/// The id of the command on `id` with `comment`, sent after `since`;
/// `None` when SSM lists none.
async fn sent_before(
    ssm: &aws_sdk_ssm::Client,
    id: &str,
    comment: &str,
    since: std::time::SystemTime,
) -> Result<Option<String>, SdkError<aws_sdk_ssm::operation::list_command_invocations::ListCommandInvocationsError>> {
    let after = aws_smithy_types::DateTime::from(since);
    let after = aws_smithy_types::DateTime::from_secs(after.secs())
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .expect("a time after 1970 formats");
    let filter = CommandFilter::builder()
        .key(CommandFilterKey::InvokedAfter)
        .value(after)
        .build()
        .expect("key and value are set");
    let mut pages = ssm.list_command_invocations().instance_id(id).filters(filter).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page?;
        let mine = page.command_invocations().iter().find(|c| c.comment() == Some(comment));
        if let Some(command_id) = mine.and_then(|c| c.command_id()) {
            return Ok(Some(command_id.to_string()));
        }
    }
    Ok(None)
}

/// Throttling error codes, as the SDKs' standard retry mode lists them
/// ("Retry behavior", AWS SDKs and Tools Reference Guide,
/// <https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html>).
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "LimitExceededException",
];

/// Whether a failed SendCommand may have been carried out, or may pass
/// when sent again: no complete answer (a timeout, a dropped connection),
/// a throttle or a server error, the failures the SDK's standard retry
/// mode retries. Any other answer (a refused instance, a bad parameter)
/// is final.
/// SSM refused the send for its rate (429 or a throttling code): it was not carried out.
fn throttled(err: &SdkError<SendCommandError>) -> bool {
    match err {
        SdkError::ServiceError(service) => {
            service.raw().status().as_u16() == 429
                || service.err().code().is_some_and(|code| THROTTLING.contains(&code))
        }
        _ => false,
    }
}

fn worth_another_look(err: &SdkError<SendCommandError>) -> bool {
    aws::may_have_been_carried_out(err) || throttled(err)
}

/// The pause before looking for attempt `attempt`'s command: the retry
/// configuration's initial backoff doubled each attempt, up to its maximum,
/// with up to half again at random (hosts run in parallel).
fn backoff(retry: &RetryConfig, attempt: u32) -> Duration {
    let mut byte = [0u8; 1];
    let jitter = match rustix::rand::getrandom(&mut byte, rustix::rand::GetRandomFlags::empty()) {
        Ok(1) => f64::from(byte[0]) / 255.0 / 2.0,
        _ => 0.0,
    };
    let base = retry.initial_backoff().saturating_mul(1 << attempt.saturating_sub(1).min(10));
    base.mul_f64(1.0 + jitter).min(retry.max_backoff())
}
