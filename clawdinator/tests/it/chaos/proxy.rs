//! The proxy itself, with the real SDK clients against the emulator: each
//! fault reaches the client as that service's error (so the SDK retries
//! it), no request is faulted twice in a row, draws follow the seed, and
//! delays apply per operation class.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use clawdinator::aws::{Aws, Settings, Timeouts};
use testkit::env::{env, Env};
use testkit::proxy::{Fault, Proxy, ProxyConfig};

fn every_request(fault: Fault) -> ProxyConfig {
    ProxyConfig { faults: vec![(fault, 1.0)], stall: Duration::from_secs(3), ..ProxyConfig::default() }
}

/// A client through `proxy`, with a read timeout of 1 s (under the stall's 3 s).
async fn through(proxy: &Proxy, max_attempts: u32) -> Aws {
    through_with(proxy, max_attempts, Timeouts { read: Duration::from_secs(1), ..Timeouts::default() }).await
}

async fn through_with(proxy: &Proxy, max_attempts: u32, timeouts: Timeouts) -> Aws {
    let mut settings = Settings::local(&proxy.endpoint());
    settings.max_attempts = max_attempts;
    settings.timeouts = timeouts;
    Aws::load(&settings).await.unwrap()
}

/// One call of each service the project uses: the error code it ended
/// with, if any (a service error's code, else the error's kind).
async fn calls(aws: &Aws) -> Vec<(&'static str, Result<(), String>)> {
    fn code<E: ProvideErrorMetadata, R>(
        r: Result<impl Sized, aws_sdk_s3::error::SdkError<E, R>>,
    ) -> Result<(), String> {
        r.map(|_| ()).map_err(|e| match e.as_service_error().and_then(|s| s.code()) {
            Some(code) => code.to_string(),
            None => "not a service error".to_string(),
        })
    }
    vec![
        ("s3", code(aws.s3().list_buckets().send().await)),
        ("ec2", code(aws.ec2().describe_images().owners("self").send().await)),
        ("ebs", code(aws.ebs().start_snapshot().volume_size(1).send().await)),
        ("secretsmanager", code(aws.secrets_manager().list_secrets().send().await)),
        ("ssm", code(aws.ssm().list_documents().send().await)),
        ("dynamodb", code(aws.dynamodb().list_tables().send().await)),
        ("sts", code(aws.sts().get_caller_identity().send().await)),
    ]
}

/// Each error kind, for every service: with retries the call succeeds
/// after exactly one fault (the SDK classified it as retryable); with a
/// single attempt the caller sees the service's own code for it.
#[tokio::test(flavor = "multi_thread")]
async fn each_fault_reaches_the_sdk_as_that_services_error_and_a_retry_succeeds() {
    let env = env().await;
    let expected = [
        (Fault::InternalError, ["InternalError", "InternalError", "InternalServerException", "InternalFailure"]),
        (Fault::Unavailable, ["SlowDown", "Unavailable", "ServiceUnavailableException", "ServiceUnavailable"]),
        (Fault::Throttling, ["SlowDown", "RequestLimitExceeded", "RequestThrottledException", "ThrottlingException"]),
    ];
    for (fault, [s3, ec2, ebs, json]) in expected {
        let proxy = Proxy::start(&env.emulator.endpoint(), every_request(fault)).unwrap();
        for (service, result) in calls(&through(&proxy, 3).await).await {
            assert_eq!(result, Ok(()), "{fault:?} on {service}: not retried");
        }
        assert_eq!(proxy.faults()[&fault], 7, "{fault:?}: one per call");
        let single = calls(&through(&proxy, 1).await).await;
        let sts = if fault == Fault::Throttling { "Throttling" } else { json };
        let want = [s3, ec2, ebs, json, json, json, sts];
        for ((service, result), code) in single.into_iter().zip(want) {
            assert_eq!(result, Err(code.to_string()), "{fault:?} on {service}");
        }
    }
    drop(env);
}

/// Connections dropped (before or after forwarding) and responses stalled
/// past the read timeout: retried to success; with one attempt, the caller
/// sees a failure that is not a service error.
#[tokio::test(flavor = "multi_thread")]
async fn dropped_and_stalled_connections_are_retried() {
    let env = env().await;
    for fault in [Fault::DropBeforeForward, Fault::DropAfterForward, Fault::Stall] {
        let proxy = Proxy::start(&env.emulator.endpoint(), every_request(fault)).unwrap();
        let key = format!("{fault:?}");
        let s3 = through(&proxy, 3).await.s3();
        s3.put_object().bucket(&env.bucket).key(&key).body(b"x".to_vec().into()).send().await.unwrap();
        assert_eq!(proxy.faults()[&fault], 1, "{fault:?}");
        let single = through(&proxy, 1).await.s3();
        let err = single.get_object().bucket(&env.bucket).key(&key).send().await.unwrap_err();
        assert!(err.as_service_error().is_none(), "{fault:?}: {err:?}");
        assert_eq!(proxy.faults()[&fault], 2, "{fault:?}");
    }
    // What was forwarded before its response was lost was done once per
    // attempt: the object is there.
    assert_eq!(env.get("DropAfterForward").await, b"x");
}

/// The same request is never faulted twice in a row, even at a rate of
/// one: fault, pass, fault, pass.
#[tokio::test(flavor = "multi_thread")]
async fn no_request_is_faulted_twice_in_a_row() {
    let env = env().await;
    let proxy = Proxy::start(&env.emulator.endpoint(), every_request(Fault::Throttling)).unwrap();
    let s3 = through(&proxy, 1).await.s3();
    let mut outcomes = Vec::new();
    for _ in 0..6 {
        outcomes.push(s3.head_bucket().bucket(&env.bucket).send().await.is_ok());
    }
    assert_eq!(outcomes, [false, true, false, true, false, true]);
    assert_eq!((proxy.faults()[&Fault::Throttling], proxy.requests()), (3, 6));
}

/// Which requests fail depends on the seed and the requests, not on when
/// they arrive: the same sequence twice gets the same faults.
#[tokio::test(flavor = "multi_thread")]
async fn faults_follow_the_seed() {
    let env = env().await;
    let run = |seed: u64| {
        let env = &env;
        async move {
            let config = ProxyConfig { faults: vec![(Fault::InternalError, 0.2)], seed, ..ProxyConfig::default() };
            let proxy = Proxy::start(&env.emulator.endpoint(), config).unwrap();
            let s3 = through(&proxy, 1).await.s3();
            let mut failed = Vec::new();
            for n in 0..60 {
                failed.push(
                    s3.head_object()
                        .bucket(&env.bucket)
                        .key(format!("k{n}"))
                        .send()
                        .await
                        .is_err_and(|e| e.raw_response().is_some_and(|r| r.status().as_u16() == 500)),
                );
            }
            failed
        }
    };
    let first = run(7).await;
    assert!(first.iter().any(|f| *f) && !first.iter().all(|f| *f), "{first:?}");
    assert_eq!(run(7).await, first);
    assert_ne!(run(8).await, first);
}

/// A delay set for one service holds its requests back: a request to
/// another service sent at the same time finishes first.
#[tokio::test(flavor = "multi_thread")]
async fn delays_apply_per_operation_class() {
    let env: Env = env().await;
    let config = ProxyConfig { delays: vec![("sts".into(), Duration::from_secs(3))], ..ProxyConfig::default() };
    let proxy = Proxy::start(&env.emulator.endpoint(), config).unwrap();
    let aws = through_with(&proxy, 1, Timeouts::default()).await;
    let order = Arc::new(Mutex::new(Vec::new()));
    let (slow, fast) = (order.clone(), order.clone());
    let (sts, s3) = (aws.sts(), aws.s3());
    let delayed = tokio::spawn(async move {
        sts.get_caller_identity().send().await.unwrap();
        slow.lock().unwrap().push("sts");
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    s3.list_buckets().send().await.unwrap();
    fast.lock().unwrap().push("s3");
    delayed.await.unwrap();
    assert_eq!(*order.lock().unwrap(), ["s3", "sts"]);
    assert_eq!((proxy.delayed(), proxy.requests()), (1, 2));
}
