//! The local emulator harness and the shared AWS context.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use xtask::aws::emulator::Emulator;
use xtask::aws::{Aws, Settings, Timeouts};

fn alive(pid: u32) -> bool {
    // After the child is reaped its /proc entry is gone; a zombie would
    // still show, and count as leaked.
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread")]
async fn emulator_serves_s3_and_sts_then_stops() {
    let emulator = tokio::task::spawn_blocking(Emulator::start).await.unwrap().unwrap();
    let pid = emulator.pid();
    assert!(alive(pid));
    let aws = Aws::load(&Settings::local(&emulator.endpoint())).await.unwrap();

    let arn = aws.caller_arn().await.unwrap();
    assert!(arn.starts_with("arn:aws:sts::123456789012:"), "{arn}");

    let s3 = aws.s3();
    s3.create_bucket().bucket("round-trip").send().await.unwrap();
    let body: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    s3.put_object().bucket("round-trip").key("a/b.bin").body(body.clone().into()).send().await.unwrap();
    let got = s3.get_object().bucket("round-trip").key("a/b.bin").send().await.unwrap();
    let got = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(Sha256::digest(&got), Sha256::digest(&body));

    drop(emulator);
    assert!(!alive(pid), "emulator process {pid} survived its guard");
}

#[test]
fn no_emulator_left_after_a_panicking_test() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let emulator = Emulator::start().unwrap();
        tx.send(emulator.pid()).unwrap();
        panic!("a test failing while it holds the emulator");
    })
    .join();
    assert!(result.is_err());
    let pid = rx.recv().unwrap();
    assert!(!alive(pid), "emulator process {pid} leaked by a panicking test");
}

#[test]
fn each_emulator_is_fresh() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let a = Emulator::start().unwrap();
    let b = Emulator::start().unwrap();
    assert_ne!(a.port(), b.port());
    rt.block_on(async {
        let aws_a = Aws::load(&Settings::local(&a.endpoint())).await.unwrap();
        let aws_b = Aws::load(&Settings::local(&b.endpoint())).await.unwrap();
        aws_a.s3().create_bucket().bucket("only-in-a").send().await.unwrap();
        let listed = aws_b.s3().list_buckets().send().await.unwrap();
        assert!(listed.buckets().is_empty(), "{listed:?}");
    });
}

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

/// A server that accepts connections and never answers.
fn black_hole() -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let handle = std::thread::spawn(move || {
        let started = Instant::now();
        let mut held = Vec::new();
        // Bounded: the test needs it for seconds, not forever.
        while started.elapsed() < Duration::from_secs(60) {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nonblocking(true).ok();
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf);
                    held.push(stream);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    (port, handle)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_endpoint_fails_within_the_timeouts() {
    let (port, _server) = black_hole();
    let settings = Settings {
        timeouts: Timeouts {
            connect: Duration::from_secs(1),
            read: Duration::from_secs(1),
            attempt: Duration::from_secs(2),
            operation: Duration::from_secs(3),
        },
        max_attempts: 2,
        ..Settings::local(&format!("http://127.0.0.1:{port}"))
    };
    let aws = Aws::load(&settings).await.unwrap();
    // Behaviour, not speed: it must give up (its own timeouts total 3 s)
    // rather than hang; the 60 s bound only catches a hang.
    let err = tokio::time::timeout(Duration::from_secs(60), aws.caller_arn())
        .await
        .expect("the call hung past its timeouts")
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("STS GetCallerIdentity") && text.contains("timeout"), "{text}");
}

#[test]
fn cli_against_a_silent_endpoint_reports_a_timeout() {
    let (port, _server) = black_hole();
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

#[test]
fn vmimport_trust_policy_is_understood() {
    let doc = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Principal%22%3A%7B%22Service%22%3A%22vmie.amazonaws.com%22%7D%2C%22Action%22%3A%22sts%3AAssumeRole%22%7D%5D%7D";
    assert!(xtask::aws::iam::trusts_service(doc, "vmie.amazonaws.com"));
    assert!(!xtask::aws::iam::trusts_service(&doc.replace("vmie", "ec2"), "vmie.amazonaws.com"));
}

/// One SSM JSON-protocol call to the emulator. No SDK crate for SSM is
/// compiled yet (no command uses SSM); this exercises the shim's patch the
/// way an SDK would call it, signature header included.
fn ssm_call(emulator: &Emulator, target: &str, body: serde_json::Value) -> serde_json::Value {
    use std::io::Write;
    let body = body.to_string();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", emulator.port())).unwrap();
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: AmazonSSM.{target}\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20261120/us-east-1/ssm/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        emulator.port(),
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, payload) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{payload}");
    serde_json::from_str(payload).unwrap()
}

#[test]
fn the_shim_adds_ssm_list_command_invocations() {
    let emulator = Emulator::start().unwrap();
    let sent = ssm_call(
        &emulator,
        "SendCommand",
        serde_json::json!({"InstanceIds": ["i-0aaa", "i-0bbb"], "DocumentName": "AWS-RunShellScript", "Parameters": {"commands": ["nixos-rebuild switch"]}}),
    );
    let id = sent["Command"]["CommandId"].as_str().unwrap().to_string();
    let all = ssm_call(&emulator, "ListCommandInvocations", serde_json::json!({"CommandId": id}));
    let mut instances: Vec<&str> =
        all["CommandInvocations"].as_array().unwrap().iter().map(|i| i["InstanceId"].as_str().unwrap()).collect();
    instances.sort();
    assert_eq!(instances, ["i-0aaa", "i-0bbb"]);
    let one = ssm_call(
        &emulator,
        "ListCommandInvocations",
        serde_json::json!({"CommandId": id, "InstanceId": "i-0bbb", "Details": true}),
    );
    let invocations = one["CommandInvocations"].as_array().unwrap();
    assert_eq!(invocations.len(), 1);
    assert_eq!(invocations[0]["Status"], "Success");
    assert_eq!(invocations[0]["CommandPlugins"][0]["Name"], "aws:runShellScript");
}

/// `--local` starts the emulator from a pooled thread; tokio retires idle
/// blocking threads (here after 50 ms) and PR_SET_PDEATHSIG fires when the
/// forking *thread* exits. The emulator must live as long as the context.
#[test]
fn a_local_context_outlives_the_blocking_pool() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_keep_alive(Duration::from_millis(50))
        .build()
        .unwrap();
    runtime.block_on(async {
        let global = xtask::flags::Global { local: true, json: true, ..Default::default() };
        let ctx = xtask::Ctx::new(global).await.unwrap();
        // Twenty times the pool's keep-alive: the starting thread is gone.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let aws = ctx.aws().await.unwrap();
        let buckets = aws.s3().list_buckets().send().await.expect("the --local emulator died with its starting thread");
        assert_eq!(buckets.buckets().len(), 1);
    });
}

/// A server that answers GetObject with headers and 10 of 1000 bytes, then
/// goes silent with the connection open.
fn half_answer() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(4) {
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 8192];
            let _ = stream.read(&mut buf);
            use std::io::Write;
            let head = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: application/octet-stream\r\n\r\n";
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(b"0123456789");
            let _ = stream.flush();
            held.push(stream);
        }
        std::thread::sleep(Duration::from_secs(120));
    });
    port
}

/// A body that stalls midway fails within the read timeout; it does not hang.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_body_fails_within_the_read_timeout() {
    let port = half_answer();
    let settings = Settings {
        timeouts: Timeouts {
            connect: Duration::from_secs(1),
            read: Duration::from_secs(1),
            attempt: Duration::from_secs(300),
            operation: Duration::from_secs(300),
        },
        max_attempts: 1,
        ..Settings::local(&format!("http://127.0.0.1:{port}"))
    };
    let aws = Aws::load(&settings).await.unwrap();
    let s3 = aws.s3();
    let read = xtask::aws::s3::get_bytes(&s3, "bucket", "key", 1 << 20, aws.timeouts().read);
    let err = tokio::time::timeout(Duration::from_secs(60), read).await.expect("the stalled body hung").unwrap_err();
    assert!(format!("{err:#}").contains("stalled"), "{err:#}");
}
