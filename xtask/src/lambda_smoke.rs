//! The packaged `bootstrap`, run the way Lambda runs it before the zip is
//! written: a loopback Lambda Runtime API (`/2018-06-01/runtime/invocation/
//! next` and `…/response`, as "Using the Lambda runtime API for custom
//! runtimes" documents them) hands it two function URL events, and the local
//! emulator is its AWS. A bot's status request must answer 200 and its
//! self-deploy 403, and both must be in the audit trail.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use testkit::loopback::{function_url_event, read_http_request};

const AUDIT_BUCKET: &str = "clawdinator-smoke-audit";

#[derive(Debug, Serialize)]
pub struct Smoke {
    pub status: u16,
    pub self_deploy: u16,
    pub audit_records: usize,
}

/// The Runtime API: hands out `events` one by one, collects the responses.
fn runtime_api(events: Vec<Value>) -> Result<(String, Arc<Mutex<Vec<Value>>>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?.to_string();
    let answers = Arc::new(Mutex::new(Vec::new()));
    let collected = answers.clone();
    std::thread::spawn(move || {
        let mut events = events.into_iter().enumerate();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let Ok(request) = read_http_request(&mut stream) else { continue };
            let reply = if request.target() == ("GET", "/2018-06-01/runtime/invocation/next") {
                let Some((n, event)) = events.next() else {
                    // Nothing more to do: the function waits here until it is killed.
                    std::thread::sleep(Duration::from_secs(60));
                    continue;
                };
                let body = event.to_string();
                format!(
                    "HTTP/1.1 200 OK\r\nLambda-Runtime-Aws-Request-Id: smoke-{n}\r\nLambda-Runtime-Deadline-Ms: {}\r\nLambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:123456789012:function:clawdinator-control-api\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() + 30_000,
                    body.len()
                )
            } else {
                let answer =
                    serde_json::from_slice(&request.body).unwrap_or_else(|_| json!({"unreadable": request.line}));
                collected.lock().unwrap_or_else(|e| e.into_inner()).push(answer);
                "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n".to_string()
            };
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    Ok((address, answers))
}

/// Run `dir/bootstrap` (with `dir/instances.json`) as Lambda would.
pub async fn smoke(dir: &Path) -> Result<Smoke> {
    let registry = clawdinator::registry::Registry::load(&dir.join("instances.json"))?;
    let bot = registry.instances.keys().next().context("the registry names no instance")?.clone();
    let emulator = testkit::emulator::Emulator::start()?;
    let aws = clawdinator::aws::Aws::load(&clawdinator::aws::Settings::local(&emulator.endpoint())).await?;
    aws.s3().create_bucket().bucket(AUDIT_BUCKET).send().await.context("smoke: cannot create its audit bucket")?;
    let arn = format!("arn:aws:sts::123456789012:assumed-role/clawdinator-instance-{bot}/i-0123456789abcdef0");
    let events = vec![
        function_url_event(Some(&arn), &json!({"action": "status"})),
        function_url_event(Some(&arn), &json!({"action": "deploy", "target": bot})),
    ];
    let (api, answers) = runtime_api(events)?;
    let function = bootstrap(dir, &api, &emulator.endpoint())?;
    let got = two_answers(function, &answers).await?;
    let status = |n: usize| got[n]["statusCode"].as_u64().unwrap_or(0) as u16;
    ensure!(status(0) == 200, "smoke: a status request got {}: {}", status(0), got[0]);
    let refusal = got[1]["body"].as_str().unwrap_or_default();
    ensure!(
        status(1) == 403 && refusal.contains("may not deploy itself"),
        "smoke: a self-deploy was not refused: {}",
        got[1]
    );
    let records = clawdinator::audit::bucket_lines(&aws, AUDIT_BUCKET).await?;
    clawdinator::audit::verify_copies("smoke", &records)?;
    ensure!(records.len() == 4, "smoke: {} audit records for 2 requests, not 4", records.len());
    Ok(Smoke { status: status(0), self_deploy: status(1), audit_records: records.len() })
}

/// Start `dir/bootstrap` with the environment Lambda gives a function,
/// the Runtime API at `api` and the emulator at `endpoint` as its AWS.
fn bootstrap(dir: &Path, api: &str, endpoint: &str) -> Result<std::process::Child> {
    std::process::Command::new(dir.join("bootstrap"))
        .current_dir(dir)
        .env("AWS_LAMBDA_RUNTIME_API", api)
        .env("AWS_ENDPOINT_URL", endpoint)
        .envs([
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_LAMBDA_FUNCTION_NAME", "clawdinator-control-api"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "smoke"),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/clawdinator-control-api"),
            ("CLAWDINATOR_AUDIT_BUCKET", AUDIT_BUCKET),
            // Required at start-up; status and a refused deploy never reach the table.
            ("CLAWDINATOR_COOLDOWN_TABLE", "clawdinator-control-api-cooldown"),
            ("GITHUB_REPOSITORY", "openclaw/clawdinators"),
            ("CLAWDINATOR_APP_ID", "1"),
            ("CLAWDINATOR_APP_INSTALLATION_ID", "1"),
            ("CLAWDINATOR_OPERATORS", ""),
            ("CLAWDINATOR_ACCOUNT_ID", "123456789012"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("smoke: cannot start the packaged bootstrap")
}

/// The function's two answers, once it has given them (or exited, or a
/// minute passed: then Err with what it said); the function is killed.
async fn two_answers(mut function: std::process::Child, answers: &Mutex<Vec<Value>>) -> Result<Vec<Value>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let answered = || answers.lock().map(|a| a.len()).unwrap_or(0);
    while answered() < 2 && Instant::now() < deadline && function.try_wait()?.is_none() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let exited = function.try_wait()?;
    let _ = function.kill();
    let output = function.wait_with_output()?;
    let got: Vec<Value> = answers.lock().map(|a| a.clone()).unwrap_or_default();
    if got.len() < 2 {
        bail!(
            "smoke: the packaged bootstrap answered {} of 2 requests ({}); it said: {}",
            got.len(),
            exited.map(|s| format!("it exited: {s}")).unwrap_or_else(|| "it hung".into()),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_bootstrap_that_never_answers_fails_the_smoke_with_what_it_said() {
        let dir = tempfile::tempdir().unwrap();
        testkit::fixtures::write_registry(&dir.path().join("instances.json"), 2).unwrap();
        let bootstrap = dir.path().join("bootstrap");
        std::fs::write(&bootstrap, "#!/bin/sh\necho 'the function environment lacks CLAWDINATOR_X' >&2\nexit 3\n")
            .unwrap();
        std::fs::set_permissions(&bootstrap, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = format!("{:#}", smoke(dir.path()).await.unwrap_err());
        assert!(err.contains("answered 0 of 2 requests"), "{err}");
        assert!(err.contains("exit status: 3") && err.contains("lacks CLAWDINATOR_X"), "{err}");
    }
}
