//! The control helper: an agent without AWS credentials asks through the
//! socket; the helper signs with its own (the instance role's) and forwards
//! only the checked fields. Bad, oversized, stalled or self-serving
//! requests are refused and never reach the API.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use super::control_client::{verifying_server, KEY_ID, SECRET};

struct Helper {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The helper as root runs it, with the instance role's credentials, for instance clawdinator-1.
fn helper(url: &str) -> Helper {
    let dir = tempfile::tempdir().unwrap();
    let (socket, instance) = (dir.path().join("control.sock"), dir.path().join("instance-name"));
    std::fs::write(&instance, "clawdinator-1\n").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_clawdinator"))
        .args(["--region", "eu-central-1", "fleet", "control-helper", "--url", url, "--socket"])
        .arg(&socket)
        .arg("--instance-file")
        .arg(&instance)
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT_URL")
        .spawn()
        .unwrap();
    let helper = Helper { child, socket, _dir: dir };
    for _ in 0..200 {
        if UnixStream::connect(&helper.socket).is_ok() {
            return helper;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the helper never listened on {}", helper.socket.display());
}

/// The agent's side: no AWS credentials at all, only the socket.
fn agent(socket: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_clawdinator"))
        .args(["--json", "fleet", "control"])
        .args(args)
        .arg("--socket")
        .arg(socket)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .output()
        .unwrap()
}

/// One raw exchange on the socket: what the helper answers to `bytes`.
fn raw(socket: &Path, bytes: &[u8]) -> serde_json::Value {
    let mut stream = UnixStream::connect(socket).unwrap();
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer:?}"))
}

#[test]
fn an_agent_without_credentials_deploys_another_instance_through_the_helper() {
    let (url, server) = verifying_server();
    let helper = helper(&url);
    let mode = std::fs::metadata(&helper.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "the socket is for root and the agents' group only");
    let out = agent(&helper.socket, &["deploy", "clawdinator-2", "--ami", "ami-0123456789abcdef0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (body, authorization) = server.join().unwrap();
    let sent: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        sent,
        serde_json::json!({"action": "deploy", "target": "clawdinator-2", "ami": "ami-0123456789abcdef0"})
    );
    assert!(authorization.starts_with(&format!("AWS4-HMAC-SHA256 Credential={KEY_ID}/")), "{authorization}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer, serde_json::json!({"ok": true}));
}

/// Attack: the agent sends the helper what the API should never see.
#[test]
fn bad_oversized_and_self_serving_requests_never_reach_the_api() {
    let (url, server) = verifying_server();
    let helper = helper(&url);
    let oversized = format!(r#"{{"action":"status","pad":"{}"}}"#, "x".repeat(4096));
    for (request, says) in [
        (oversized.as_str(), "at most 1024 bytes"),
        ("not json", "not a request"),
        (r#"{"action":"shell","command":"id"}"#, "not a request"),
        (r#"{"action":"status","caller":"maintainer"}"#, "not a request"),
        (r#"{"action":"deploy","target":"clawdinator-1"}"#, "may not deploy itself"),
        (r#"{"action":"deploy","target":"all"}"#, "may not deploy all"),
        (r#"{"action":"deploy","target":"../../x"}"#, "not an instance name"),
        (r#"{"action":"deploy","target":"clawdinator-2","ami":"ami-X; reboot"}"#, "not an AMI id"),
        (r#"{"action":"deploy","target":"clawdinator-2","ref":"evil-branch"}"#, "not a request"),
    ] {
        let answer = raw(&helper.socket, format!("{request}\n").as_bytes());
        assert_eq!(answer["ok"], false, "{request}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains(says), "{request}: {answer}");
    }
    // The client prints the helper's refusal.
    let out = agent(&helper.socket, &["deploy", "all"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the control helper refused") && stderr.contains("may not deploy all"), "{stderr}");
    // Nothing reached the API: the first request it sees is this one.
    assert_eq!(raw(&helper.socket, b"{\"action\":\"status\"}\n")["ok"], true);
    let (body, _) = server.join().unwrap();
    assert_eq!(body, r#"{"action":"status"}"#);
}

/// A client that connects and says nothing is dropped; the helper serves the next.
#[test]
fn a_stalled_client_is_dropped_and_the_next_is_served() {
    let (url, server) = verifying_server();
    let helper = helper(&url);
    let mut stalled = UnixStream::connect(&helper.socket).unwrap();
    let mut answer = String::new();
    stalled.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("no request within"), "{answer}");
    assert_eq!(raw(&helper.socket, b"{\"action\":\"status\"}\n")["ok"], true);
    server.join().unwrap();
}
