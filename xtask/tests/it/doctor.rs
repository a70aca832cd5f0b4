//! `doctor` against the emulator and against an endpoint that never answers.

use std::time::{Duration, Instant};

/// The child's output; killed (and the test failed) if it outlives `bound`.
fn wait_bounded(mut child: std::process::Child, bound: Duration) -> std::process::Output {
    let deadline = Instant::now() + bound;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the command hung past {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn cli_against_a_silent_endpoint_reports_a_timeout() {
    let (port, _server) = testkit::loopback::silent_server();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["--json", "--region", "us-east-1", "doctor", "--age-key", "/nonexistent"])
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("CLAWDINATOR_READ_TIMEOUT", "1")
        .env("CLAWDINATOR_ATTEMPT_TIMEOUT", "1.5")
        .env("CLAWDINATOR_OPERATION_TIMEOUT", "2")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Only a hang (the timeouts total a few seconds) reaches this bound.
    let out = wait_bounded(child, Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(0), "doctor reports, it does not fail");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let creds = report["checks"].as_array().unwrap().iter().find(|c| c["name"] == "aws credentials").unwrap();
    assert_eq!(creds["status"], "missing");
    assert!(creds["detail"].as_str().unwrap().contains("timeout"), "{creds}");
}

#[test]
fn doctor_json_shape_and_local_sts() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["--json", "--local", "doctor", "--age-key", "/nonexistent/key"])
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.lines().next().unwrap_or_default().starts_with("--local: running against a throwaway"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    let checks = report["checks"].as_array().unwrap();
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    for want in
        ["nix", "kvm", "git", "tofu", "aws credentials", "region", "vmimport role", "age identity", "local emulator"]
    {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for c in checks {
        assert!(["ok", "warn", "missing"].contains(&c["status"].as_str().unwrap()), "{c}");
        assert!(!c["needed_by"].as_str().unwrap().is_empty(), "{c}");
        assert!(!c["detail"].as_str().unwrap().is_empty(), "{c}");
        if c["status"] != "ok" {
            assert!(!c["fix"].as_str().unwrap().is_empty(), "a problem without a fix: {c}");
        }
    }
    let by_name = |n: &str| checks.iter().find(|c| c["name"] == n).unwrap();
    // --local: GetCallerIdentity answered by the emulator.
    assert_eq!(by_name("aws credentials")["status"], "ok");
    assert!(by_name("aws credentials")["detail"].as_str().unwrap().contains("arn:aws:sts::123456789012:"));
    assert_eq!(by_name("region")["detail"], "us-east-1");
    assert_eq!(by_name("age identity")["status"], "missing");
    assert!(by_name("age identity")["detail"].as_str().unwrap().contains("/nonexistent/key"));
    assert_eq!(by_name("local emulator")["status"], "ok");
}
