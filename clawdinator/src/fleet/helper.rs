//! `fleet control-helper`: the only way an agent reaches the control API.
//! The agents cannot reach the metadata service (the module denies it to
//! their units and, by user, in the firewall), so they hold no instance
//! role credentials. This root-owned service listens on a Unix socket the
//! agents' group may use, takes one small request per connection, checks
//! every field, and forwards only those fields, signed with the instance
//! role, through [`super::control::call`].
//!
//! The protocol: the client sends one JSON object on one line, at most
//! [`REQUEST_LIMIT`] bytes, `{"action":"status"}` or `{"action":"deploy",
//! "target":NAME,"ami":ID|null}`, nothing else; the helper answers one line,
//! `{"ok":true,"answer":…}` or `{"ok":false,"error":…}`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::control;
use super::flags::{ControlAction, FleetControlArgs, FleetControlHelperArgs};
use crate::aws::Aws;
use crate::ctx::Ctx;

/// A request is a few short fields; anything longer is refused unread.
pub const REQUEST_LIMIT: u64 = 1024;
/// An answer (the fleet status) is bounded too, for the client.
const ANSWER_LIMIT: u64 = 1 << 20;
/// A client that sends nothing is dropped after this.
const STALL: Duration = Duration::from_secs(5);

/// The only request shapes forwarded.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    Status,
    Deploy { target: String, ami: Option<String> },
}

impl Request {
    /// The body the control API receives: these fields and no others.
    pub fn body(&self) -> Value {
        match self {
            Request::Status => control::body("status", None, None),
            Request::Deploy { target, ami } => control::body("deploy", Some(target), ami.as_deref()),
        }
    }
}

/// Parse and check one request line; `me` is this host's instance.
pub fn parse(line: &[u8], me: Option<&str>) -> Result<Request> {
    ensure!(line.len() as u64 <= REQUEST_LIMIT, "a request is at most {REQUEST_LIMIT} bytes");
    let fields: serde_json::Map<String, Value> =
        serde_json::from_slice(line).map_err(|e| anyhow::anyhow!("not a request: {e}"))?;
    // Checked by hand: serde ignores unknown fields beside a tag with no fields.
    let allowed: &[&str] = match fields.get("action").and_then(Value::as_str) {
        Some("status") => &["action"],
        Some("deploy") => &["action", "target", "ami"],
        _ => bail!("not a request: \"action\" must be \"status\" or \"deploy\""),
    };
    if let Some(extra) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        bail!("not a request: no field {extra:?} is taken");
    }
    let request: Request =
        serde_json::from_value(Value::Object(fields)).map_err(|e| anyhow::anyhow!("not a request: {e}"))?;
    if let Request::Deploy { target, ami } = &request {
        ensure!(
            crate::registry::host_name_error(target).is_none() || target == "all",
            "target {target:?} is not an instance name"
        );
        control::refuse_self(me, target)?;
        if let Some(ami) = ami {
            let hex = ami.strip_prefix("ami-").unwrap_or_default();
            ensure!(
                (8..=17).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "ami {ami:?} is not an AMI id (ami- and 8 to 17 hex digits)"
            );
        }
    }
    Ok(request)
}

pub struct HelperOptions {
    pub socket: PathBuf,
    pub url: Option<String>,
    /// This host's instance (its own deploy, or `all`, is refused).
    pub instance: Option<String>,
}

/// Bind the socket (0660: root and the unit's group, the agents') and
/// serve connections one at a time until stopped.
pub async fn serve(aws: &Aws, opts: &HelperOptions) -> Result<()> {
    let listener = bind(&opts.socket)?;
    tracing::info!(socket = %opts.socket.display(), "control helper listening");
    loop {
        let (stream, _) = listener.accept().await.context("accepting a connection")?;
        handle(aws, opts, stream).await;
    }
}

fn bind(path: &Path) -> Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot replace {}", path.display())),
    }
    let listener = UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// One connection: one line within the limit and the stall time, checked,
/// forwarded, answered.
async fn handle(aws: &Aws, opts: &HelperOptions, stream: UnixStream) {
    let mut reader = BufReader::new(stream).take(REQUEST_LIMIT + 1);
    let mut line = Vec::new();
    let read = tokio::time::timeout(STALL, reader.read_until(b'\n', &mut line)).await;
    let stream = reader.into_inner().into_inner();
    let result = match read {
        Err(_) => Err(anyhow::anyhow!("no request within {STALL:?}")),
        Ok(Err(e)) => Err(anyhow::Error::from(e).context("reading the request")),
        Ok(Ok(_)) => {
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            match parse(&line, opts.instance.as_deref()) {
                Ok(request) => {
                    tracing::info!(?request, "forwarding to the control API");
                    control::call(aws, opts.url.clone(), &request.body()).await
                }
                Err(e) => Err(e),
            }
        }
    };
    if let Err(e) = &result {
        tracing::warn!("refused: {e:#}");
    }
    reply(stream, result).await;
}

async fn reply(mut stream: UnixStream, result: Result<Value>) {
    let line = match result {
        Ok(answer) => json!({"ok": true, "answer": answer}),
        Err(e) => json!({"ok": false, "error": format!("{e:#}")}),
    };
    let _ = stream.write_all(format!("{line}\n").as_bytes()).await;
}

/// Client side: ask through the helper's socket; its answer, or its refusal as an error.
pub async fn ask(socket: &Path, body: &Value) -> Result<Value> {
    let mut stream = UnixStream::connect(socket)
        .await
        .with_context(|| format!("cannot reach the control helper at {}", socket.display()))?;
    stream.write_all(format!("{body}\n").as_bytes()).await?;
    stream.shutdown().await?;
    let mut answer = Vec::new();
    stream.take(ANSWER_LIMIT).read_to_end(&mut answer).await?;
    let answer: Value = serde_json::from_slice(&answer).context("the control helper's answer is not JSON")?;
    match answer["ok"].as_bool() {
        Some(true) => Ok(answer["answer"].clone()),
        _ => bail!("the control helper refused: {}", answer["error"].as_str().unwrap_or("no reason given")),
    }
}

impl FleetControlHelperArgs {
    /// `fleet control-helper`: serve the socket until stopped.
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        let opts = HelperOptions {
            socket: self.socket,
            url: self.url,
            instance: crate::settings::host_setting(&self.instance_file),
        };
        serve(&ctx.aws().await?, &opts).await
    }
}

impl FleetControlArgs {
    /// `fleet control`: one request, through the helper's socket or signed here.
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        let me = crate::settings::host_setting(&self.instance_file);
        let (action, target, ami) = match &self.action {
            ControlAction::Status => ("status", None, None),
            ControlAction::Deploy { target, ami } => {
                control::refuse_self(me.as_deref(), target)?;
                ("deploy", Some(target.as_str()), ami.as_deref())
            }
        };
        let body = control::body(action, target, ami);
        let answer = match &self.socket {
            Some(socket) => ask(socket, &body).await?,
            None => control::call(&ctx.aws().await?, self.url.clone(), &body).await?,
        };
        ctx.out.emit(&ControlAnswer(answer))
    }
}

/// The control API's answer, printed as it came.
#[derive(serde::Serialize)]
#[serde(transparent)]
struct ControlAnswer(Value);

impl std::fmt::Display for ControlAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", serde_json::to_string_pretty(&self.0).unwrap_or_default())
    }
}
