//! `secrets check`, and the promise that no secret value reaches any output.

use clawdinator::secrets::{check, Severity};
use testkit::env::{canary_value, env, Env, CANARY};
use testkit::fixtures;

#[test]
fn a_complete_set_checks_clean_and_orphans_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = fixtures::sample_fleet(tmp.path(), 3, canary_value).unwrap();
    let (report, loaded) = check(&fleet.sources, true);
    assert!(report.ok, "{report}");
    assert_eq!((report.checked, report.decrypted), (8, 8));
    assert!(loaded.is_some());

    fixtures::write_secret(&fleet.sources.secrets_dir, "clawdinator-discord-token-9", b"x", &fleet.recipient).unwrap();
    let (report, _) = check(&fleet.sources, true);
    assert!(report.ok, "an orphan is a warning, not an error");
    assert_eq!(report.orphans, ["clawdinator-discord-token-9.age"]);
    assert!(report.findings.iter().any(|f| f.severity == Severity::Warning && f.message.contains("orphan")));
}

#[test]
fn every_problem_is_reported_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = fixtures::sample_fleet(tmp.path(), 2, canary_value).unwrap();
    let dir = &fleet.sources.secrets_dir;
    std::fs::remove_file(dir.join("clawdinator-telegram-bot-token.age")).unwrap();
    std::fs::remove_file(dir.join("clawdinator-discord-token-1.age")).unwrap();
    std::fs::write(dir.join("clawdinator-openai-api-key-peter-2.age"), "garbage").unwrap();
    let stranger = fixtures::write_identity(&tmp.path().join("stranger.key")).unwrap();
    fixtures::write_secret(dir, "clawdinator-anthropic-api-key", b"x", &stranger).unwrap();
    let (report, loaded) = check(&fleet.sources, true);
    assert!(!report.ok && loaded.is_none());
    let errors: Vec<String> =
        report.findings.iter().filter(|f| f.severity == Severity::Error).map(|f| f.to_string()).collect();
    assert_eq!(errors.len(), 4, "{errors:#?}");
    let all = errors.join("\n");
    assert!(all.contains("clawdinator-telegram-bot-token.age: missing: a common secret"), "{all}");
    assert!(
        all.contains("clawdinator-discord-token-1.age: missing: the Discord token of instance `clawdinator-1`"),
        "{all}"
    );
    assert!(all.contains("clawdinator-openai-api-key-peter-2.age: not a well-formed age file"), "{all}");
    assert!(all.contains("cannot decrypt") && all.contains("clawdinator-anthropic-api-key.age"), "{all}");
}

#[test]
fn without_an_identity_headers_are_still_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = fixtures::sample_fleet(tmp.path(), 1, canary_value).unwrap();
    std::fs::remove_file(&fleet.sources.age_key).unwrap();
    let (report, _) = check(&fleet.sources, false);
    assert!(report.ok, "{report}");
    assert_eq!(report.decrypted, 0);
    assert!(report.findings.iter().any(|f| f.message.contains("not decrypted")));
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The host binary against the emulator, at the most verbose log level:
/// its exit code and everything it printed.
fn run(env: &Env, args: &[&str]) -> (i32, String) {
    let out =
        env.cli(env!("CARGO_BIN_EXE_clawdinator")).arg("-vv").args(args).env("RUST_LOG", "trace").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

/// The canary plaintext and the identity's key material must never appear in
/// anything a command prints, at the most verbose log level, success or failure.
#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_any_output() {
    let env = env().await;
    let fleet = fixtures::sample_fleet(&env.path("src"), 2, canary_value).unwrap();
    let key_text = std::fs::read_to_string(&fleet.sources.age_key).unwrap();
    let key_line = key_text.lines().find(|l| l.starts_with("AGE-SECRET-KEY-")).unwrap().to_string();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let sources = fixtures::source_args(&fleet.sources);
    let mut runs = Vec::new();

    let mut args = vec!["secrets".to_string(), "check".into()];
    args.extend(sources.iter().cloned());
    runs.push(run(&env, &refs(&args)));
    for extra in [vec!["--dry-run"], vec![], vec!["--json"]] {
        let mut args = vec![
            "bootstrap".to_string(),
            "upload".into(),
            "--all".into(),
            "--bucket".into(),
            env.bucket.clone(),
            "--repo-seeds".into(),
            s(&fleet.seeds_dir),
        ];
        args.extend(sources.iter().cloned());
        args.extend(extra.iter().map(|e| e.to_string()));
        runs.push(run(&env, &refs(&args)));
    }
    let host = env.path("host");
    let fetch = [
        "bootstrap",
        "fetch",
        "--bucket",
        &env.bucket,
        "--prefix",
        "bootstrap/clawdinator-1",
        "--secrets-dir",
        &s(&host.join("secrets")),
        "--repo-seeds-dir",
        &s(&host.join("seeds")),
        "--age-key-path",
        &s(&host.join("key")),
        "--prefix-file",
        &s(&host.join("prefix")),
    ];
    runs.push(run(&env, &fetch));
    assert!(runs.iter().all(|(code, _)| *code == 0), "{runs:#?}");

    // Failure paths print errors too: an undecryptable file and a tampered archive.
    let stranger = fixtures::write_identity(&env.path("stranger.key")).unwrap();
    fixtures::write_secret(
        &fleet.sources.secrets_dir,
        "clawdinator-openai-api-key-peter-2",
        CANARY.as_bytes(),
        &stranger,
    )
    .unwrap();
    let mut args = vec!["secrets".to_string(), "check".into()];
    args.extend(sources.iter().cloned());
    let failed = run(&env, &refs(&args));
    assert_eq!(failed.0, 1);
    runs.push(failed);
    env.put("bootstrap/clawdinator-2/secrets.tar.zst", b"tampered".to_vec()).await;
    let mut fetch2 = fetch.to_vec();
    fetch2[5] = "bootstrap/clawdinator-2";
    let p2 = s(&env.path("host2/p"));
    fetch2[13] = &p2;
    let failed = run(&env, &fetch2);
    assert_eq!(failed.0, 1, "{}", failed.1);
    runs.push(failed);

    for (_, output) in &runs {
        assert!(!output.contains(CANARY), "secret value printed:\n{output}");
        assert!(!output.contains(&key_line), "age identity printed:\n{output}");
        assert!(!output.contains(&key_line[15..40]), "age identity printed:\n{output}");
    }
}
