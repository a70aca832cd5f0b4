//! The AWS context's timeouts: a silent endpoint or a stalled body fails the
//! call within them instead of hanging (moved from xtask's tests: this is
//! the library's code).

use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;

use clawdinator::aws::{Aws, Settings, Timeouts};

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_endpoint_fails_within_the_timeouts() {
    let (port, _server) = testkit::loopback::silent_server();
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
fn vmimport_trust_policy_is_understood() {
    let doc = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Principal%22%3A%7B%22Service%22%3A%22vmie.amazonaws.com%22%7D%2C%22Action%22%3A%22sts%3AAssumeRole%22%7D%5D%7D";
    assert!(clawdinator::aws::iam::trusts_service(doc, "vmie.amazonaws.com"));
    assert!(!clawdinator::aws::iam::trusts_service(&doc.replace("vmie", "ec2"), "vmie.amazonaws.com"));
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
    let read = clawdinator::aws::s3::get_bytes(&s3, "bucket", "key", 1 << 20, aws.timeouts().read);
    let err = tokio::time::timeout(Duration::from_secs(60), read).await.expect("the stalled body hung").unwrap_err();
    assert!(format!("{err:#}").contains("stalled"), "{err:#}");
}
