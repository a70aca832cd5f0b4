//! The project's own local AWS: moto server (with `moto_shim/`, the
//! project's shim, a Python package), provisioned into `.venv/` at the repository root, started on a free loopback port, always stopped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;

use crate::{repo_root, venv};

/// moto is pinned: its behaviour is part of what the tests assert against.
pub const MOTO_VERSION: &str = "5.2.5";

/// A running emulator. Dropping it stops the server, also while a panicking
/// test unwinds. The server is started by a keeper thread that lives exactly
/// as long as this value: `PR_SET_PDEATHSIG` fires when the *thread* that
/// forked the child exits, so forking from a pooled thread (tokio retires
/// idle blocking threads after 10 s) would kill the emulator mid-command,
/// while the keeper also takes it down if the process is killed outright.
pub struct Emulator {
    port: u16,
    pid: u32,
    /// Dropping this tells the keeper to kill and reap the server.
    stop: Option<mpsc::Sender<()>>,
    keeper: Option<std::thread::JoinHandle<()>>,
}

impl Emulator {
    /// Provision moto when missing, start it, and wait until it answers.
    pub fn start() -> Result<Emulator> {
        Self::start_with(&[])
    }

    /// Start with extra moto settings, e.g. `INITIAL_NO_AUTH_ACTION_COUNT`
    /// to make moto enforce IAM policies after the first N requests.
    pub fn start_with(settings: &[(&str, &str)]) -> Result<Emulator> {
        let python = ensure_installed()?;
        let settings: Vec<(String, String)> = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (started_tx, started_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let keeper = std::thread::Builder::new().name("emulator-keeper".into()).spawn(move || {
            let child = spawn_server(&python, &settings);
            let mut child = match child {
                Ok((child, port)) => {
                    let _ = started_tx.send(Ok((port, child.id())));
                    child
                }
                Err(err) => {
                    let _ = started_tx.send(Err(err));
                    return;
                }
            };
            // Until the Emulator is dropped (its sender closes).
            let _ = stop_rx.recv();
            let _ = child.kill();
            let _ = child.wait();
        })?;
        let (port, pid) = match started_rx.recv() {
            Ok(result) => result?,
            Err(_) => bail!("the emulator's keeper thread died while starting it"),
        };
        let emulator = Emulator { port, pid, stop: Some(stop_tx), keeper: Some(keeper) };
        emulator.wait_ready(Duration::from_secs(30))?;
        tracing::info!(endpoint = %emulator.endpoint(), pid, "emulator started");
        Ok(emulator)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn wait_ready(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            match http_get(self.port, "/moto-api/data.json") {
                Ok(status) if status < 500 => return Ok(()),
                _ if Instant::now() > deadline => {
                    bail!("the emulator on port {} did not answer within {limit:?}", self.port)
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Everything moto received, from its request recorder: what the SDK
    /// really sent, including parameters moto itself ignores.
    pub fn recorded_requests(&self) -> Result<Vec<serde_json::Value>> {
        let body = http_request(self.port, "GET", "/moto-api/recorder/download-recording")?;
        let mut entries: Vec<serde_json::Value> = body
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .context("moto's recording is not JSON lines")?;
        // Bodies moto received as bytes are recorded in base64; text ones
        // (query-protocol calls such as RegisterImage) are decoded back.
        for entry in &mut entries {
            if entry["body_encoded"] == true {
                let decoded =
                    entry["body"].as_str().and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
                if let Some(text) = decoded.and_then(|d| String::from_utf8(d).ok()) {
                    entry["body"] = serde_json::Value::String(text);
                    entry["body_encoded"] = serde_json::Value::Bool(false);
                }
            }
        }
        Ok(entries)
    }

    /// Test-only: make matching requests fail as AWS fails them (see the
    /// shim's docstring, `moto_shim/__init__.py`, for the rule fields). Rules add up until cleared.
    pub fn inject(&self, rules: serde_json::Value) -> Result<()> {
        http_request_body(self.port, "POST", "/_shim/faults", &rules.to_string())?;
        Ok(())
    }

    /// The injected rules with how often each matched (`seen`) and failed (`fired`).
    pub fn faults(&self) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(&http_request(self.port, "GET", "/_shim/faults")?)?)
    }

    pub fn clear_faults(&self) -> Result<()> {
        http_request(self.port, "DELETE", "/_shim/faults")?;
        Ok(())
    }

    /// Test-only shim settings, e.g. `{"snapshot_pending_polls": 3}`.
    pub fn settings(&self, settings: serde_json::Value) -> Result<()> {
        http_request_body(self.port, "POST", "/_shim/settings", &settings.to_string())?;
        Ok(())
    }

    /// Test-only: put an AMI into a state AWS can report (pending, failed, …).
    pub fn set_image_state(&self, image_id: &str, state: &str) -> Result<()> {
        let body = serde_json::json!({"image_id": image_id, "state": state}).to_string();
        http_request_body(self.port, "POST", "/_shim/image-state", &body)?;
        Ok(())
    }

    /// Test-only: one of the shim's named switches (`instance-health`,
    /// `ssm-agent`, `ssm-invocation`; see `moto_shim/__init__.py`).
    pub fn switch(&self, name: &str, body: serde_json::Value) -> Result<()> {
        http_request_body(self.port, "POST", &format!("/_shim/{name}"), &body.to_string())?;
        Ok(())
    }

    /// Start the shim's call log (clears an earlier one): what IAM
    /// authorises each request by, never a body of data.
    pub fn start_call_log(&self) -> Result<()> {
        http_request_body(self.port, "POST", "/_shim/calls", r#"{"on": true}"#)?;
        Ok(())
    }

    /// The calls logged since [`Emulator::start_call_log`], in order.
    pub fn calls(&self) -> Result<Vec<serde_json::Value>> {
        Ok(serde_json::from_str(&http_request(self.port, "GET", "/_shim/calls")?)?)
    }

    /// Start recording requests from now on (clears earlier recordings).
    pub fn start_recording(&self) -> Result<()> {
        http_request(self.port, "POST", "/moto-api/recorder/reset-recording")?;
        http_request(self.port, "POST", "/moto-api/recorder/start-recording")?;
        Ok(())
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
    }
}

/// Start moto with the shim and read the port it prints. Runs on the keeper
/// thread, which therefore is the child's parent thread.
fn spawn_server(python: &Path, settings: &[(String, String)]) -> Result<(Child, u16)> {
    // Holds moto's request recording, which it otherwise writes to the cwd;
    // kept for the server's lifetime by leaking it into the child's scope.
    let scratch = tempfile::Builder::new().prefix("clawdinator-emulator-").tempdir()?.keep();
    let mut command = server_command(python, settings, &scratch)?;
    #[cfg(target_os = "linux")]
    // SAFETY: runs in the forked child before exec; prctl is async-signal-safe
    // and only sets this child's parent-death signal.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = command.spawn().with_context(|| format!("cannot start the emulator with {}", python.display()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        // Keep the pipe open and drained for the server's lifetime, then
        // remove the recording directory.
        for _ in lines {}
        let _ = std::fs::remove_dir_all(&scratch);
    });
    let port = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Some(Ok(line))) => line
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse::<u16>().ok())
            .ok_or_else(|| anyhow!("the emulator printed `{line}` instead of its port")),
        _ => {
            Err(anyhow!("the emulator did not start within 60 s (set CLAWDINATOR_EMULATOR_LOG=FILE to see its output)"))
        }
    };
    match port {
        Ok(port) => Ok((child, port)),
        Err(err) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(err)
        }
    }
}

/// `python -m moto_shim` with the emulator's environment; the recording goes to `scratch`.
fn server_command(python: &Path, settings: &[(String, String)], scratch: &Path) -> Result<Command> {
    let mut command = Command::new(python);
    command
        .args(["-m", "moto_shim"])
        // The package is found on PYTHONPATH; PYTHONSAFEPATH keeps the cwd
        // off sys.path, as running a script kept it off, and no __pycache__
        // is left in the source tree.
        .env("PYTHONPATH", Path::new(env!("CARGO_MANIFEST_DIR")))
        .env("PYTHONSAFEPATH", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        // The recorder stays off until a test starts it (start_recording):
        // recording every body (each 512 KiB block, base64, under a lock)
        // made the emulator the bottleneck of every upload.
        .env_remove("MOTO_ENABLE_RECORDING")
        // No preloaded public AMIs and their ~1300 snapshots: an empty account, as a new one is.
        .env("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
        .env("MOTO_RECORDER_FILEPATH", scratch.join("recording"))
        // The emulator must never pick up the caller's real AWS settings.
        .env_remove("AWS_ENDPOINT_URL")
        .envs(settings.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_target()?);
    Ok(command)
}

fn log_target() -> Result<Stdio> {
    Ok(match std::env::var_os("CLAWDINATOR_EMULATOR_LOG") {
        Some(path) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("cannot open CLAWDINATOR_EMULATOR_LOG {}", Path::new(&path).display()))?,
        ),
        None => Stdio::null(),
    })
}

/// The venv's python, with moto at the pinned version.
pub fn venv_python() -> PathBuf {
    repo_root().join(".venv/bin/python")
}

/// Installed moto version in the project venv, if any.
pub fn installed_version() -> Option<String> {
    let python = venv_python();
    let out = Command::new(&python)
        .args(["-c", "import importlib.metadata as m; print(m.version('moto'))"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Create `.venv/` and install the pinned moto when it is not there yet
/// (serialized: parallel tests all get here at once).
pub fn ensure_installed() -> Result<PathBuf> {
    let python = venv::python_venv(&repo_root().join(".venv"), &format!("moto[server]=={MOTO_VERSION}"))?;
    match installed_version() {
        Some(v) if v == MOTO_VERSION => Ok(python),
        other => bail!("after installing, .venv has moto {other:?}, expected {MOTO_VERSION}"),
    }
}

fn http_get(port: u16, path: &str) -> std::io::Result<u16> {
    let response = raw_http(port, "GET", path, "")?;
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status"))
}

fn http_request(port: u16, method: &str, path: &str) -> Result<String> {
    http_request_body(port, method, path, "")
}

fn http_request_body(port: u16, method: &str, path: &str, body: &str) -> Result<String> {
    let response = raw_http(port, method, path, body).with_context(|| format!("emulator {method} {path}"))?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if !head.starts_with("HTTP/1.1 2") && !head.starts_with("HTTP/1.0 2") {
        bail!("emulator {method} {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_string())
}

/// A minimal HTTP/1.0 exchange for the emulator's own control API (moto-api),
/// which is not an AWS service and has no SDK.
fn raw_http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}
