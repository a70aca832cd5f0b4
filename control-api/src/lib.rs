//! The chat control API: `status` and `deploy {target, ami?}` for the
//! agents and the operators, behind a Lambda function URL with AWS_IAM
//! auth. The caller is who IAM says signed the request (the request
//! context's `userArn`), never what the request body claims:
//!
//! - an instance role `clawdinator-instance-<name>` is that instance: it may
//!   deploy other named instances, never itself, never `all`;
//! - an operator (a configured ARN, or a role whose sessions they use) may
//!   deploy any target;
//! - anyone else is refused (403); a missing or malformed context is 401;
//!   an unknown target 400.
//!
//! A deploy dispatches the `fleet-deploy` workflow with the authenticated
//! caller, using a GitHub App installation token minted in process, in a
//! lane: `bot` for an instance, `operator` for an operator (the workflow
//! queues each lane apart, so no bot's run cancels an operator's).
//!
//! Before it is dispatched a deploy takes its cooldowns ([`cooldown`]): a
//! bot is answered 429 with `Retry-After` while its own or the target's is
//! in force; an operator is never held but holds the target. The order is
//! authorize, cooldown, dispatch; a dispatch that fails gives the cooldown
//! back; a cooldown table that cannot be reached is 503 and nothing is
//! dispatched.
//!
//! Every request goes to the fleet's audit trail in S3 twice: `started`
//! (who asked for what) before anything is done, and `finished` with the
//! answer. A request whose `started` record cannot be written is answered
//! 503 and nothing is done. Each container keeps its own chain
//! ([`clawdinator::audit::BucketChain`]); `audit verify --bucket` checks them all.

// What ships has no `unsafe`: system calls go through the library's crates.
#![forbid(unsafe_code)]

pub mod cooldown;

use anyhow::{Context, Result};
use clawdinator::audit::{BucketChain, Record};
use clawdinator::registry::Registry;
use cooldown::{Busy, Cooldowns, Grant};
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Deserialize;
use serde_json::{json, Value};

/// Who is calling, as IAM says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Operator(String),
    Instance(String),
}

/// A refusal: the HTTP status and the reason shown to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub u16, pub String);

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    Status,
    Deploy { target: String, ami: Option<String> },
}

pub struct Config {
    pub registry: Registry,
    /// Operator principals: IAM user or role ARNs.
    pub operators: Vec<String>,
    /// The fleet's account: an instance role of any other account is a stranger.
    pub account: String,
    /// Deploy cooldowns, in DynamoDB.
    pub cooldowns: Cooldowns,
}

/// The deploy workflow's queue a run waits in: a bot's run never cancels an operator's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Bot,
    Operator,
}

impl Lane {
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Bot => "bot",
            Lane::Operator => "operator",
        }
    }
}

/// The role name in an assumed-role session ARN
/// (`arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`).
fn assumed_role(arn: &str) -> Option<(&str, &str)> {
    let rest = arn.strip_prefix("arn:aws:sts::")?;
    let (account, path) = rest.split_once(":assumed-role/")?;
    let (role, _session) = path.split_once('/')?;
    Some((account, role))
}

/// The caller from the signed ARN.
pub fn caller(arn: Option<&str>, config: &Config) -> Result<Caller, Refusal> {
    let arn = arn.filter(|a| !a.is_empty()).ok_or_else(|| {
        Refusal(401, "no IAM caller in the request context: call the function URL signed (AWS_IAM)".into())
    })?;
    if !arn.starts_with("arn:aws") || arn.split(':').count() < 6 {
        return Err(Refusal(401, format!("\"{arn}\" is not an IAM principal ARN")));
    }
    if let Some((account, role)) = assumed_role(arn) {
        if let Some(name) = role.strip_prefix("clawdinator-instance-") {
            return if account != config.account {
                Err(Refusal(403, format!("{arn}: an instance role of account {account}, not of the fleet's")))
            } else if config.registry.instances.contains_key(name) {
                Ok(Caller::Instance(name.to_string()))
            } else {
                Err(Refusal(403, format!("{name} is not an instance of the fleet registry")))
            };
        }
        let role_arn = format!("arn:aws:iam::{account}:role/{role}");
        if config.operators.contains(&role_arn) {
            return Ok(Caller::Operator(arn.to_string()));
        }
    }
    if config.operators.iter().any(|o| o == arn) {
        return Ok(Caller::Operator(arn.to_string()));
    }
    Err(Refusal(403, format!("{arn} is neither a fleet instance nor an operator")))
}

/// May this caller do this?
pub fn authorize(caller: &Caller, action: &Action, registry: &Registry) -> Result<(), Refusal> {
    let Action::Deploy { target, .. } = action else { return Ok(()) };
    if target != "all" && !registry.instances.contains_key(target) {
        return Err(Refusal(
            400,
            format!(
                "unknown target {target}: all, or one of {}",
                registry.instances.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    match caller {
        Caller::Operator(_) => Ok(()),
        Caller::Instance(me) if target == "all" => {
            Err(Refusal(403, format!("{me} may not deploy all: that would replace itself; ask a maintainer")))
        }
        Caller::Instance(me) if target == me => {
            Err(Refusal(403, format!("{me} may not deploy itself; another instance or a maintainer must ask")))
        }
        Caller::Instance(_) => Ok(()),
    }
}

/// What the API does once a request is allowed.
pub trait Fleet {
    fn status(&self) -> impl std::future::Future<Output = Result<Value>> + Send;
    fn dispatch(
        &self,
        target: &str,
        ami: Option<&str>,
        caller: &str,
        lane: Lane,
    ) -> impl std::future::Future<Output = Result<()>> + Send;
}

/// The `fleet-deploy` workflow on GitHub.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub api_url: String,
    pub repo: String,
    pub workflow: String,
    pub git_ref: String,
}

impl Workflow {
    /// The deploy App's token: dispatching workflows of this one repository, nothing else.
    pub fn dispatch_scope(&self) -> clawdinator::secrets::github_token::Scope {
        let name = self.repo.rsplit('/').next().unwrap_or(&self.repo);
        clawdinator::secrets::github_token::Scope {
            repositories: vec![name.to_string()],
            permissions: [("actions".to_string(), "write".to_string())].into(),
        }
    }

    /// `POST /repos/{repo}/actions/workflows/{workflow}/dispatches` with the inputs.
    pub async fn dispatch(&self, token: &str, target: &str, ami: Option<&str>, caller: &str, lane: Lane) -> Result<()> {
        let url = format!(
            "{}/repos/{}/actions/workflows/{}/dispatches",
            self.api_url.trim_end_matches('/'),
            self.repo,
            self.workflow
        );
        let inputs =
            json!({"target": target, "ami_override": ami.unwrap_or(""), "caller": caller, "lane": lane.as_str()});
        let body = json!({"ref": self.git_ref, "inputs": inputs});
        let (status, answer) =
            clawdinator::github::call_with_body(hyper::Method::POST, &url, token, Some(&body)).await?;
        anyhow::ensure!(
            status.as_u16() == 204 || status.is_success(),
            "GitHub answered {status} to the dispatch: {}",
            clawdinator::github::message(&answer)
        );
        Ok(())
    }
}

/// The answer; a 429 says in `Retry-After` (RFC 9110 §10.2.3) how many seconds to wait.
fn reply(status: u16, body: Value) -> Response<Body> {
    let mut response = Response::builder().status(status).header("content-type", "application/json");
    if let Some(seconds) = body["retryAfter"].as_i64().filter(|_| status == 429) {
        response = response.header("retry-after", seconds.to_string());
    }
    response.body(Body::Text(body.to_string())).expect("a valid response")
}

/// The signed caller's ARN from a function URL request.
pub fn caller_arn(request: &Request) -> Option<String> {
    match request.request_context_ref()? {
        lambda_http::request::RequestContext::ApiGatewayV2(ctx) => {
            ctx.authorizer.as_ref()?.iam.as_ref()?.user_arn.clone()
        }
    }
}

/// Where every request and decision is recorded: the fleet's audit bucket.
pub struct Audit {
    pub aws: clawdinator::aws::Aws,
    pub chain: BucketChain,
}

impl Audit {
    /// One record of a request: who signed it (as IAM says) and what it asked.
    fn record(arn: Option<&str>, asked: Option<&Action>, phase: &str, result: Option<String>) -> Record {
        let (args, targets) = match asked {
            Some(Action::Status) => (vec!["status".to_string()], vec![]),
            Some(Action::Deploy { target, ami }) => {
                let mut args = vec!["deploy".to_string(), target.clone()];
                args.extend(ami.iter().flat_map(|ami| ["--ami".to_string(), ami.clone()]));
                (args, vec![target.clone()])
            }
            None => (vec!["(a body that is not an action)".to_string()], vec![]),
        };
        Record {
            time: clawdinator::clock::now_precise(),
            caller: arn.unwrap_or("(unsigned)").to_string(),
            command: "control-api".into(),
            args,
            targets,
            phase: phase.into(),
            result,
            resources: vec![],
            prev: String::new(),
        }
    }

    async fn append(&self, record: Record) -> Result<String> {
        self.chain.append(&self.aws, record).await
    }
}

/// One request, start to answer: recorded before anything is done, then
/// decided and done, then the answer recorded.
pub async fn handle(config: &Config, fleet: &impl Fleet, audit: &Audit, request: Request) -> Response<Body> {
    let arn = caller_arn(&request);
    // Parsed once: the records say what was asked, the decision needs it too.
    let parsed: Result<Action, serde_json::Error> = serde_json::from_slice(request.body().as_ref());
    let asked = parsed.as_ref().ok();
    let started = Audit::record(arn.as_deref(), asked, "started", None);
    if let Err(err) = audit.append(started).await {
        let reason = format!("the audit trail cannot be written, so nothing was done: {err:#}");
        eprintln!("{}", json!({"audit": "control-api", "caller": arn, "status": 503, "error": reason}));
        return reply(503, json!({ "error": reason }));
    }
    let (status, mut body) = answer(config, fleet, arn.as_deref(), &parsed).await;
    let result = match body["error"].as_str() {
        Some(reason) => format!("{status}: {reason}"),
        None => format!("{status}: ok"),
    };
    let finished = Audit::record(arn.as_deref(), asked, "finished", Some(result));
    if let Err(err) = audit.append(finished).await {
        // What was done is done: the caller learns it, and that the record is missing.
        body["auditWarning"] = json!(format!("the answer could not be recorded in the audit trail: {err:#}"));
    }
    println!("{}", json!({"audit": "control-api", "caller": arn, "status": status, "answer": body}));
    reply(status, body)
}

/// Decide, and do what is allowed: the status and the JSON answer.
async fn answer(
    config: &Config,
    fleet: &impl Fleet,
    arn: Option<&str>,
    parsed: &Result<Action, serde_json::Error>,
) -> (u16, Value) {
    match decide(config, arn, parsed) {
        Err(Refusal(status, reason)) => (status, json!({"error": reason})),
        Ok((_, Action::Status)) => match fleet.status().await {
            Ok(status) => (200, status),
            Err(e) => (502, json!({"error": format!("fleet status failed: {e:#}")})),
        },
        Ok((caller, Action::Deploy { target, ami })) => deploy(config, fleet, &caller, &target, ami.as_deref()).await,
    }
}

/// An allowed deploy: its cooldowns first, then the dispatch in the caller's lane.
async fn deploy(config: &Config, fleet: &impl Fleet, caller: &Caller, target: &str, ami: Option<&str>) -> (u16, Value) {
    let (who, lane) = match caller {
        Caller::Instance(name) => (name.as_str(), Lane::Bot),
        Caller::Operator(arn) => (arn.as_str(), Lane::Operator),
    };
    let grant = match take_cooldowns(config, caller, target).await {
        Ok(Ok(grant)) => grant,
        Ok(Err(busy)) => return too_soon(who, target, &busy),
        Err(e) => {
            let table = &config.cooldowns.table;
            let reason = format!(
                "the deploy cooldowns (DynamoDB table {table}) cannot be checked, so nothing was dispatched: {e:#}"
            );
            return (503, json!({ "error": reason }));
        }
    };
    match fleet.dispatch(target, ami, who, lane).await {
        Ok(()) => (202, json!({"dispatched": "fleet-deploy", "target": target, "caller": who, "lane": lane.as_str()})),
        Err(e) => {
            // A run that never started must not lock the next attempt out.
            let released = match config.cooldowns.release(&grant).await {
                Ok(()) => "its cooldown was released, so asking again may work".to_string(),
                Err(r) => format!("{r:#}"),
            };
            (502, json!({"error": format!("the deploy could not be dispatched ({released}): {e:#}")}))
        }
    }
}

/// A bot takes its own cooldown and the target's; an operator is not held
/// but sets the cooldown of each instance it deploys.
async fn take_cooldowns(config: &Config, caller: &Caller, target: &str) -> Result<Result<Grant, Busy>> {
    match caller {
        Caller::Instance(me) => config.cooldowns.take_for_bot(me, target).await,
        Caller::Operator(arn) => {
            let targets: Vec<String> = match target {
                "all" => config.registry.instances.keys().cloned().collect(),
                one => vec![one.to_string()],
            };
            config.cooldowns.take_for_operator(&targets, arn).await.map(Ok)
        }
    }
}

/// 429: which cooldown holds the deploy, and when to ask again.
fn too_soon(who: &str, target: &str, busy: &Busy) -> (u16, Value) {
    let until = clawdinator::clock::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(busy.until as u64));
    let why = match busy.cooldown {
        "caller" => format!("{who} asked for a deploy less than its cooldown ago"),
        _ if busy.holder.starts_with("arn:") => {
            format!("{target} was deployed by an operator less than its cooldown ago")
        }
        _ => format!("{target} was deployed at {}'s request less than its cooldown ago", busy.holder),
    };
    let error = format!("{why}: the {} cooldown ends at {until}; ask again in {} s", busy.cooldown, busy.retry_after);
    (429, json!({"error": error, "cooldown": busy.cooldown, "until": until, "retryAfter": busy.retry_after}))
}

/// Who asks (401 or 403 first), then whether the body is an action (400), then whether it is allowed.
fn decide(
    config: &Config,
    arn: Option<&str>,
    parsed: &Result<Action, serde_json::Error>,
) -> Result<(Caller, Action), Refusal> {
    let caller = caller(arn, config)?;
    let action = parsed.as_ref().map_err(|e| {
        Refusal(400, format!("expected {{\"action\": \"status\"}} or {{\"action\": \"deploy\", \"target\": …}}: {e}"))
    })?;
    let action = action.clone();
    authorize(&caller, &action, &config.registry)?;
    Ok((caller, action))
}

/// The live fleet: status from EC2 and SSM, deploys through GitHub with an
/// installation token minted from the App key in Secrets Manager.
pub struct Live {
    pub aws: clawdinator::aws::Aws,
    pub registry: Registry,
    pub workflow: Workflow,
    pub app_id: String,
    pub installation_id: String,
    pub pem_secret: String,
}

impl Fleet for Live {
    async fn status(&self) -> Result<Value> {
        let report = clawdinator::fleet::status::status(&self.aws, &self.registry, None).await?;
        Ok(serde_json::to_value(&report)?)
    }

    async fn dispatch(&self, target: &str, ami: Option<&str>, caller: &str, lane: Lane) -> Result<()> {
        let token = clawdinator::secrets::github_token::mint(
            &self.aws,
            &self.app_id,
            &self.installation_id,
            &self.pem_secret,
            &self.workflow.api_url,
            &self.workflow.dispatch_scope(),
        )
        .await
        .context("cannot mint a GitHub App installation token")?;
        self.workflow.dispatch(&token, target, ami, caller, lane).await
    }
}
