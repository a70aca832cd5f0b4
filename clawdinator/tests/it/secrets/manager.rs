//! Secrets Manager seeding and the host-side fetch, against the emulator;
//! GitHub App tokens against a local HTTP server playing GitHub.

use std::os::unix::fs::PermissionsExt;

use clawdinator::secrets::manager::{self, FetchOptions, SeedAction, SeedOptions};
use testkit::env::{canary_value, env, Env, CANARY};
use testkit::fixtures::{self, SampleFleet};

fn opts(fleet: &SampleFleet) -> SeedOptions {
    SeedOptions { sources: fleet.sources.clone(), instances: vec![], dry_run: false, prune: false }
}

async fn versions(env: &Env, name: &str) -> usize {
    env.aws.secrets_manager().list_secret_version_ids().secret_id(name).send().await.unwrap().versions().len()
}

async fn value(env: &Env, name: &str) -> String {
    env.aws
        .secrets_manager()
        .get_secret_value()
        .secret_id(name)
        .send()
        .await
        .unwrap()
        .secret_string()
        .unwrap()
        .to_string()
}

async fn pending_deletion(env: &Env, name: &str) -> bool {
    let described = env.aws.secrets_manager().describe_secret().secret_id(name).send().await.unwrap();
    described.deleted_date().is_some()
}

async fn listed(env: &Env) -> Vec<String> {
    let out = env.aws.secrets_manager().list_secrets().send().await.unwrap();
    let mut names: Vec<String> = out.secret_list().iter().filter_map(|s| s.name().map(str::to_string)).collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_creates_then_reseeding_changes_nothing() {
    let env = env().await;
    let fleet = fixtures::sample_fleet(&env.path("src"), 2, canary_value).unwrap();
    let report = manager::seed(&env.aws, &opts(&fleet)).await.unwrap();
    assert_eq!(report.secrets.len(), 7);
    assert!(report.secrets.iter().all(|r| r.action == SeedAction::Create), "{report}");
    assert_eq!(
        value(&env, "clawdinator/clawdinator-anthropic-api-key").await,
        canary_value("clawdinator-anthropic-api-key")
    );
    assert_eq!(
        value(&env, "clawdinator/clawdinator-2/discord-token").await,
        canary_value("clawdinator-discord-token-2")
    );

    // Names and tags: per-instance secrets carry their instance.
    let sm = env.aws.secrets_manager();
    let token = sm.describe_secret().secret_id("clawdinator/clawdinator-2/discord-token").send().await.unwrap();
    let tags: Vec<_> = token.tags().iter().map(|t| (t.key().unwrap(), t.value().unwrap())).collect();
    assert!(
        tags.contains(&("app", "clawdinator")) && tags.contains(&("clawdinator:instance", "clawdinator-2")),
        "{tags:?}"
    );
    let common = sm.describe_secret().secret_id("clawdinator/clawdinator-openai-api-key-peter-2").send().await.unwrap();
    assert!(common.tags().iter().all(|t| t.key() != Some("clawdinator:instance")));

    let again = manager::seed(&env.aws, &opts(&fleet)).await.unwrap();
    assert!(again.secrets.iter().all(|r| r.action == SeedAction::Unchanged), "{again}");
    for name in listed(&env).await {
        assert_eq!(versions(&env, &name).await, 1, "{name} got a new version");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn changing_one_file_makes_exactly_one_new_version() {
    let env = env().await;
    let fleet = fixtures::sample_fleet(&env.path("src"), 2, canary_value).unwrap();
    manager::seed(&env.aws, &opts(&fleet)).await.unwrap();
    fixtures::write_secret(&fleet.sources.secrets_dir, "clawdinator-discord-token-2", b"rotated", &fleet.recipient)
        .unwrap();
    let report = manager::seed(&env.aws, &opts(&fleet)).await.unwrap();
    let changed: Vec<_> =
        report.secrets.iter().filter(|r| r.action != SeedAction::Unchanged).map(|r| r.name.as_str()).collect();
    assert_eq!(changed, ["clawdinator/clawdinator-2/discord-token"]);
    assert_eq!(report.secrets.iter().find(|r| r.name == changed[0]).unwrap().action, SeedAction::Update);
    assert_eq!(versions(&env, "clawdinator/clawdinator-2/discord-token").await, 2);
    assert_eq!(versions(&env, "clawdinator/clawdinator-1/discord-token").await, 1);
    assert_eq!(value(&env, "clawdinator/clawdinator-2/discord-token").await, "rotated");
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_writes_nothing() {
    let env = env().await;
    let fleet = fixtures::sample_fleet(&env.path("src"), 2, canary_value).unwrap();
    let mut o = opts(&fleet);
    o.dry_run = true;
    let report = manager::seed(&env.aws, &o).await.unwrap();
    assert!(report.secrets.iter().all(|r| r.action == SeedAction::Create));
    assert!(listed(&env).await.is_empty());
    assert!(report.to_string().contains("would create"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_pending_deletion_is_restored() {
    let env = env().await;
    let fleet = fixtures::sample_fleet(&env.path("src"), 1, canary_value).unwrap();
    manager::seed(&env.aws, &opts(&fleet)).await.unwrap();
    let sm = env.aws.secrets_manager();
    sm.delete_secret()
        .secret_id("clawdinator/clawdinator-openai-api-key-peter-2")
        .recovery_window_in_days(7)
        .send()
        .await
        .unwrap();
    let report = manager::seed(&env.aws, &opts(&fleet)).await.unwrap();
    let row = report.secrets.iter().find(|r| r.name == "clawdinator/clawdinator-openai-api-key-peter-2").unwrap();
    assert_eq!(row.action, SeedAction::Restore);
    assert!(!pending_deletion(&env, "clawdinator/clawdinator-openai-api-key-peter-2").await);
    assert_eq!(
        value(&env, "clawdinator/clawdinator-openai-api-key-peter-2").await,
        canary_value("clawdinator-openai-api-key-peter-2")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn orphans_are_listed_and_deleted_only_with_prune() {
    let env = env().await;
    let fleet = fixtures::sample_fleet(&env.path("src"), 1, canary_value).unwrap();
    let sm = env.aws.secrets_manager();
    let tag = aws_sdk_secretsmanager::types::Tag::builder().key("app").value("clawdinator").build();
    sm.create_secret()
        .name("clawdinator/clawdinator-9/discord-token")
        .secret_string("old")
        .tags(tag)
        .send()
        .await
        .unwrap();
    sm.create_secret().name("someone-elses/secret").secret_string("x").send().await.unwrap();
    let report = manager::seed(&env.aws, &opts(&fleet)).await.unwrap();
    assert_eq!(report.orphans, ["clawdinator/clawdinator-9/discord-token"]);
    assert!(report.pruned.is_empty());
    assert!(!pending_deletion(&env, "clawdinator/clawdinator-9/discord-token").await);

    let mut o = opts(&fleet);
    o.prune = true;
    let report = manager::seed(&env.aws, &o).await.unwrap();
    assert_eq!(report.pruned, ["clawdinator/clawdinator-9/discord-token"]);
    assert!(pending_deletion(&env, "clawdinator/clawdinator-9/discord-token").await);
    assert!(!pending_deletion(&env, "someone-elses/secret").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_identity_fails_before_anything_is_written() {
    let env = env().await;
    let fleet = fixtures::sample_fleet(&env.path("src"), 1, canary_value).unwrap();
    std::fs::remove_file(&fleet.sources.age_key).unwrap();
    fixtures::write_identity(&fleet.sources.age_key).unwrap();
    let err = manager::seed(&env.aws, &opts(&fleet)).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("cannot decrypt")
            && text.contains(&format!("with the identity in {}", fleet.sources.age_key.display())),
        "{text}"
    );
    assert!(!text.contains(CANARY));
    assert!(listed(&env).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn access_denied_names_the_secret_and_the_action() {
    // moto enforces IAM after the first three requests: a user allowed only
    // to list secrets, so the first read of a secret is denied.
    let emulator = tokio::task::spawn_blocking(|| {
        testkit::emulator::Emulator::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "3")])
    })
    .await
    .unwrap()
    .unwrap();
    let admin = clawdinator::aws::Aws::load(&clawdinator::aws::Settings::local(&emulator.endpoint())).await.unwrap();
    let iam = admin.iam();
    iam.create_user().user_name("ci").send().await.unwrap();
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["secretsmanager:ListSecrets"],"Resource":"*"}]}"#;
    iam.put_user_policy().user_name("ci").policy_name("read-only").policy_document(policy).send().await.unwrap();
    let key = iam.create_access_key().user_name("ci").send().await.unwrap().access_key.unwrap();
    let settings = clawdinator::aws::Settings {
        static_credentials: Some((key.access_key_id().to_string(), key.secret_access_key().to_string())),
        ..clawdinator::aws::Settings::local(&emulator.endpoint())
    };
    let ci = clawdinator::aws::Aws::load(&settings).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fleet = fixtures::sample_fleet(dir.path(), 1, canary_value).unwrap();
    let err = manager::seed(&ci, &opts(&fleet)).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("AccessDenied"), "{text}");
    assert!(text.contains("clawdinator/clawdinator-"), "names the secret: {text}");
    assert!(text.contains("secretsmanager:DescribeSecret"), "names the IAM action: {text}");
    assert!(!text.contains(CANARY));
    // The user may list: nothing was created.
    let listed = ci.secrets_manager().list_secrets().send().await.unwrap();
    assert!(listed.secret_list().is_empty(), "something was written");
}

fn fetch_opts(fleet: &SampleFleet, instance: &str, dest: &std::path::Path) -> FetchOptions {
    FetchOptions {
        instance: instance.into(),
        registry: fleet.sources.registry.clone(),
        spec: fleet.sources.spec.clone(),
        dest: dest.to_path_buf(),
        owner: Some("root".into()),
        group: Some("0".into()),
        root_only: vec![],
    }
}

fn listing(dest: &std::path::Path) -> Vec<String> {
    let mut got: Vec<String> =
        std::fs::read_dir(dest).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    got.sort();
    got
}

/// The instance's set, 0400; files it did not write (other secrets share
/// /run/agenix) are never touched; what an earlier run wrote and is no
/// longer wanted is removed.
#[tokio::test(flavor = "multi_thread")]
async fn fetch_writes_the_instances_set_and_removes_only_its_own_leftovers() {
    let env = env().await;
    let fleet = fixtures::sample_fleet(&env.path("src"), 3, canary_value).unwrap();
    manager::seed(&env.aws, &opts(&fleet)).await.unwrap();
    let dest = env.path("run/agenix");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(dest.join("someone-elses-secret"), "theirs").unwrap();
    let report = manager::fetch(&env.aws, &fetch_opts(&fleet, "clawdinator-2", &dest)).await.unwrap();
    assert!(report.removed.is_empty(), "{:?}", report.removed);
    let spec = clawdinator::secrets::Spec::load(&fleet.sources.spec).unwrap();
    let mut want: Vec<String> = spec.common.clone();
    want.push("clawdinator-discord-token-2".into());
    want.sort();
    for name in &want {
        let path = dest.join(name);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o400, "{name}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), canary_value(name), "{name}");
    }
    let mut all = want.clone();
    all.extend([clawdinator::secrets::host::STATE_FILE.to_string(), "someone-elses-secret".to_string()]);
    all.sort();
    assert_eq!(listing(&dest), all);

    // The host becomes clawdinator-3: token 2 was this command's, so it goes.
    let report = manager::fetch(&env.aws, &fetch_opts(&fleet, "clawdinator-3", &dest)).await.unwrap();
    assert_eq!(report.removed, ["clawdinator-discord-token-2"]);
    assert!(dest.join("clawdinator-discord-token-3").exists() && dest.join("someone-elses-secret").exists());
    assert_eq!(std::fs::read_to_string(dest.join("someone-elses-secret")).unwrap(), "theirs");
}

// ------------------------------------------------------------ GitHub tokens

/// A one-request-at-a-time HTTP server playing GitHub's access_tokens
/// endpoint; it verifies the JWT with the app's public key.
async fn fake_github(
    public_pem: String,
    app_id: &'static str,
    answer_status: u16,
) -> (String, tokio::task::JoinHandle<Vec<String>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = tokio::spawn(async move {
        let mut seen = Vec::new();
        let (mut stream, _) =
            tokio::time::timeout(std::time::Duration::from_secs(30), listener.accept()).await.unwrap().unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let complete = |buf: &[u8]| {
            let text = String::from_utf8_lossy(buf);
            let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            body.len() >= length
        };
        while !complete(&buf) {
            let n = stream.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let request = String::from_utf8_lossy(&buf).into_owned();
        seen.push(request.lines().next().unwrap_or_default().to_string());
        let body = request.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        let jwt = request
            .lines()
            .find_map(|l| l.strip_prefix("Authorization: Bearer ").or_else(|| l.strip_prefix("authorization: Bearer ")))
            .unwrap_or_default()
            .trim()
            .to_string();
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(public_pem.as_bytes()).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_required_spec_claims(&["iat", "exp", "iss"]);
        validation.set_issuer(&[app_id]);
        let verdict = match jsonwebtoken::decode::<clawdinator::secrets::github_token::Claims>(&jwt, &key, &validation)
        {
            Ok(data) => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
                let c = data.claims;
                if c.exp - c.iat == 600 && c.iat.abs_diff(now - 60) <= 5 {
                    "valid".to_string()
                } else {
                    format!("bad claims {c:?}")
                }
            }
            Err(e) => format!("invalid: {e}"),
        };
        seen.push(verdict.clone());
        seen.push(body);
        let (status, body) = if answer_status == 201 && verdict == "valid" {
            (201, r#"{"token":"ghs_minted_by_the_fake","expires_at":"2099-01-01T00:00:00Z"}"#.to_string())
        } else {
            (
                answer_status.max(401),
                r#"{"message":"A JSON web token could not be decoded","documentation_url":"https://docs.github.com"}"#
                    .to_string(),
            )
        };
        let response = format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        stream.write_all(response.as_bytes()).await.unwrap();
        seen
    });
    (url, handle)
}

/// The flags every GitHub token test passes: app 12345, installation 678.
fn app_args(pem: &std::path::Path, url: &str) -> Vec<String> {
    [
        "--app-id",
        "12345",
        "--installation-id",
        "678",
        "--pem",
        pem.to_str().unwrap(),
        "--api-url",
        url,
        "--permission",
        "contents=read",
    ]
    .map(str::to_string)
    .to_vec()
}

fn github_token<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clawdinator"))
        .args(["-vv", "secrets", "github-token"])
        .args(args)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn github_token_is_minted_with_a_valid_jwt() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = testkit::fixtures::github_app_key().unwrap();
    let pem_file = dir.path().join("app.pem");
    std::fs::write(&pem_file, &private).unwrap();

    let (url, server) = fake_github(public.clone(), "12345", 201).await;
    let (code, stdout, stderr) = github_token(&app_args(&pem_file, &url));
    let seen = server.await.unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(seen[0], "POST /app/installations/678/access_tokens HTTP/1.1");
    assert_eq!(seen[1], "valid");
    assert_eq!(stdout, "ghs_minted_by_the_fake\n", "only the token on stdout");
    let key_body = private.lines().nth(1).unwrap();
    assert!(!stderr.contains(key_body) && !stderr.contains("eyJ"), "key or JWT leaked: {stderr}");

    // --json: one JSON document, the token in it.
    let (url, server) = fake_github(public.clone(), "12345", 201).await;
    let mut args = app_args(&pem_file, &url);
    args.push("--json".into());
    let (code, stdout, stderr) = github_token(&args);
    server.await.unwrap();
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["token"], "ghs_minted_by_the_fake");

    // --env-file: the host timer's form, 0600.
    let (url, server) = fake_github(public.clone(), "12345", 201).await;
    let env_file = dir.path().join("gh/token.env");
    let mut args = app_args(&pem_file, &url);
    args.extend(["--env-file".to_string(), env_file.to_str().unwrap().to_string()]);
    let (code, stdout, stderr) = github_token(&args);
    server.await.unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.is_empty() && !stderr.contains("ghs_minted"), "{stdout}{stderr}");
    assert_eq!(
        std::fs::read_to_string(&env_file).unwrap(),
        "GITHUB_TOKEN=ghs_minted_by_the_fake\nGH_TOKEN=ghs_minted_by_the_fake\n"
    );
    assert_eq!(std::fs::metadata(&env_file).unwrap().permissions().mode() & 0o777, 0o600);
}

/// The bots' token request names its repositories and permissions on the
/// wire, and root hands the env file to the agents' user.
#[tokio::test(flavor = "multi_thread")]
async fn a_bot_token_is_narrowed_in_the_request_and_handed_to_the_agent() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = testkit::fixtures::github_app_key().unwrap();
    let pem_file = dir.path().join("app.pem");
    std::fs::write(&pem_file, &private).unwrap();
    let (url, server) = fake_github(public, "12345", 201).await;
    let env_file = dir.path().join("github-app.env");
    let mut args = app_args(&pem_file, &url);
    args.extend(
        ["--repository", "openclaw", "--repository", "clawhub", "--permission", "contents=write"].map(String::from),
    );
    args.extend(["--permission", "pull_requests=write", "--env-file", env_file.to_str().unwrap()].map(String::from));
    let gh = dir.path().join("gh");
    args.extend(["--gh-config-dir".to_string(), gh.display().to_string()]);
    let as_root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    if as_root {
        args.extend(["--owner", "65534", "--group", "65534"].map(String::from));
    } else {
        eprintln!("not root: the env file cannot be handed to another user here; its owner is not checked");
    }
    let (code, _, stderr) = github_token(&args);
    let seen = server.await.unwrap();
    assert_eq!(code, 0, "{stderr}");
    let body: serde_json::Value = serde_json::from_str(&seen[2]).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"repositories": ["openclaw", "clawhub"], "permissions": {"contents": "write", "pull_requests": "write"}})
    );
    // gh and git read the token from files on every call (a refresh reaches a running gateway).
    let hosts = std::fs::read_to_string(gh.join("hosts.yml")).unwrap();
    assert!(hosts.starts_with("github.com:\n    oauth_token: ghs_minted_by_the_fake\n"), "{hosts}");
    assert_eq!(std::fs::read_to_string(gh.join("token")).unwrap(), "ghs_minted_by_the_fake\n");
    for file in [env_file.clone(), gh.join("hosts.yml"), gh.join("token")] {
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{}", file.display());
        if as_root {
            assert_eq!(meta.uid(), 65534, "{}", file.display());
        }
    }
}

/// Attack: a token that could deploy (dispatch or change workflows, or push
/// to the fleet's own repository) is refused before any request: the key is
/// never read (exit 2, a usage error).
#[test]
fn a_token_that_could_deploy_is_never_asked_for() {
    let base = ["--app-id", "1", "--installation-id", "2", "--pem", "/nonexistent", "--api-url", "http://127.0.0.1:9"];
    for (extra, says) in [
        (&["--permission", "actions=write"][..], "actions is not on the allow-list"),
        (&["--permission", "actions=read"][..], "actions is not on the allow-list"),
        (&["--permission", "workflows=write"][..], "workflows is not on the allow-list"),
        (&["--permission", "Administration=write"][..], "administration is not on the allow-list"),
        (&["--permission", "contents=write"][..], "contents=write on clawdinators"),
        (&["--permission", "contents=write", "--repository", "clawdinators"][..], "contents=write on clawdinators"),
        (
            &["--permission", "contents=write", "--repository", "OpenClaw/Clawdinators"][..],
            "contents=write on clawdinators",
        ),
        (&["--permission", "contents=admin"][..], "read or write"),
        (&["--repository", "openclaw"][..], "--permission"),
    ] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let (code, _, stderr) = github_token(&args);
        assert_eq!(code, 2, "{extra:?}: {stderr}");
        assert!(stderr.contains(says), "{extra:?}: {stderr}");
    }
}

/// Attack: every permission that is not on the allow-list, however spelled,
/// is refused by name, saying where the list lives; an allowed one above
/// its level too. Each of these would let a bot token loosen the protected
/// environment, change the fleet's variables or secrets, add a webhook,
/// run or change workflows, or act on the organisation.
#[test]
fn only_the_permissions_the_agents_need_are_granted() {
    use clawdinator::secrets::github_token::Scope;
    let parse = |p: &str| Scope::parse(&["openclaw".to_string()], &[p.to_string()], "clawdinators");
    let refused = [
        "administration",
        "environments",
        "variables",
        "secrets",
        "repository_hooks",
        "organization_hooks",
        "workflows",
        "actions",
        "deployments",
        "pages",
        "packages",
        "security_events",
        "secret_scanning_alerts",
        "vulnerability_alerts",
        "repository_projects",
        "single_file",
        "members",
        "organization_administration",
        "organization_secrets",
        "organization_self_hosted_runners",
        "organization_custom_roles",
        "organization_user_blocking",
        "organization_plan",
        "team_discussions",
        "frobnicate",
    ];
    for name in refused {
        for spelled in [name.to_string(), name.to_ascii_uppercase()] {
            for level in ["read", "write"] {
                let p = format!("{spelled}={level}");
                let err = format!("{:#}", parse(&p).unwrap_err());
                assert!(err.contains(&format!("{name} is not on the allow-list")), "{p}: {err}");
                assert!(err.contains("clawdinator/github-permissions.json"), "{p}: {err}");
            }
        }
    }
    // Allowed, but only as far as the agents need.
    for p in ["checks=write", "statuses=write", "metadata=write"] {
        let err = format!("{:#}", parse(p).unwrap_err());
        assert!(err.contains("only up to read"), "{p}: {err}");
    }
    // What the hosts' timer and CI ask for passes, in GitHub's spelling.
    let scope = Scope::parse(
        &["openclaw".to_string()],
        &["Contents=write", "issues=write", "pull_requests=write", "checks=read", "statuses=read", "metadata=read"]
            .map(String::from),
        "clawdinators",
    )
    .unwrap();
    assert_eq!(scope.permissions.get("contents").map(String::as_str), Some("write"), "{scope:?}");
    assert_eq!(scope.permissions.len(), 6, "{scope:?}");
}

/// Attack: the fleet's own repository named in another case, or with its
/// owner, is still the fleet's own: GitHub compares names case-insensitively.
#[test]
fn the_fleet_repository_is_recognised_however_it_is_cased() {
    use clawdinator::secrets::github_token::Scope;
    let write = ["contents=write".to_string()];
    for (repository, fleet) in [
        ("Clawdinators", "clawdinators"),
        ("CLAWDINATORS", "clawdinators"),
        ("OpenClaw/Clawdinators", "clawdinators"),
        ("clawdinators", "OpenClaw/Clawdinators"),
        ("openclaw/clawdinators", "OpenClaw/ClawDinators"),
    ] {
        let err = Scope::parse(&["openclaw".to_string(), repository.to_string()], &write, fleet).unwrap_err();
        assert!(format!("{err:#}").contains("this fleet's own repository"), "{repository} vs {fleet}: {err:#}");
    }
    // Another repository with a similar name is not the fleet's.
    Scope::parse(&["clawdinators-docs".to_string()], &write, "OpenClaw/Clawdinators").unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn github_errors_show_status_and_message_never_the_jwt_or_key() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = testkit::fixtures::github_app_key().unwrap();
    let pem_file = dir.path().join("app.pem");
    std::fs::write(&pem_file, &private).unwrap();
    let (url, server) = fake_github(public, "12345", 401).await;
    let (code, stdout, stderr) = github_token(&app_args(&pem_file, &url));
    server.await.unwrap();
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("GitHub answered 401") && stderr.contains("A JSON web token could not be decoded"),
        "{stderr}"
    );
    assert!(!stderr.contains(private.lines().nth(1).unwrap()) && !stderr.contains("eyJ"), "{stderr}");

    // A key that is not a PEM: a clear error, not its content.
    std::fs::write(&pem_file, format!("{CANARY}\n")).unwrap();
    let (code, _, stderr) = github_token(&[
        "--app-id",
        "1",
        "--installation-id",
        "2",
        "--pem",
        pem_file.to_str().unwrap(),
        "--api-url",
        "http://127.0.0.1:9",
        "--permission",
        "contents=read",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("not an RSA private key") && !stderr.contains(CANARY), "{stderr}");
}

/// Every command of Secrets Manager seeding and fetching, at trace level,
/// success and failure: the canary never shows.
#[tokio::test(flavor = "multi_thread")]
async fn no_secret_value_in_seed_or_fetch_output() {
    let env = env().await;
    let fleet = fixtures::sample_fleet(&env.path("src"), 2, canary_value).unwrap();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let base = ["--instances".to_string(), s(&fleet.sources.registry), "--spec".into(), s(&fleet.sources.spec)];
    let sources =
        ["--secrets-dir".to_string(), s(&fleet.sources.secrets_dir), "--age-key".into(), s(&fleet.sources.age_key)];
    let run = |args: Vec<String>| {
        let out = env
            .cli(env!("CARGO_BIN_EXE_clawdinator"))
            .arg("-vv")
            .args(&args)
            .env("RUST_LOG", "trace")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let seed = |extra: &[&str]| {
        let mut a = vec!["secrets".to_string(), "seed".into(), "--all".into()];
        a.extend(base.iter().cloned());
        a.extend(sources.iter().cloned());
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let mut outputs = vec![run(seed(&["--dry-run"])), run(seed(&[])), run(seed(&["--json"]))];
    let mut fetch = vec![
        "secrets".to_string(),
        "fetch".into(),
        "--instance".into(),
        "clawdinator-1".into(),
        "--dest".into(),
        s(&env.path("agenix")),
    ];
    fetch.extend(base.iter().cloned());
    outputs.push(run(fetch.clone()));
    assert!(outputs.iter().all(|(c, _)| *c == 0), "{outputs:#?}");
    // Failures: a wrong identity, and a fetch for a secret that is gone.
    let stranger = fixtures::write_identity(&env.path("stranger.key")).unwrap();
    fixtures::write_secret(
        &fleet.sources.secrets_dir,
        "clawdinator-openai-api-key-peter-2",
        CANARY.as_bytes(),
        &stranger,
    )
    .unwrap();
    let failed = run(seed(&[]));
    assert_eq!(failed.0, 1);
    outputs.push(failed);
    env.aws
        .secrets_manager()
        .delete_secret()
        .secret_id("clawdinator/clawdinator-1/discord-token")
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();
    let failed = run(fetch);
    assert_eq!(failed.0, 1, "{}", failed.1);
    outputs.push(failed);
    for (_, text) in &outputs {
        assert!(!text.contains(CANARY), "a secret value was printed:\n{text}");
    }
}
