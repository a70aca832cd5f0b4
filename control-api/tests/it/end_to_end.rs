//! Chat deploys end to end, in process: the host's client
//! (`clawdinator::fleet::control::call`) signs with credentials the emulator's
//! STS issued; a loopback function URL does what Lambda's `AWS_IAM` auth
//! does (recomputes the SigV4 signature, asks STS who signed, puts that ARN
//! in the request context) and runs the handler with the live fleet: fleet
//! status from the emulator's EC2 and SSM, an installation token minted from
//! the App key in the emulator's Secrets Manager, the dispatch to a loopback
//! GitHub, the records in the emulator's S3. Only IAM identity decides.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::common::{config, cooldown_table, event, github_failing_when, Dispatches, COOLDOWN_TABLE, MINTED};
use aws_credential_types::Credentials;
use clawdinator::aws::{Aws, Settings};
use clawdinator_control_api::cooldown::Cooldowns;
use clawdinator_control_api::{handle, Audit, Config, Live, Workflow};
use serde_json::{json, Value};
use testkit::emulator::Emulator;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const AUDIT_BUCKET: &str = "clawdinator-audit";
const APP_KEY_SECRET: &str = "clawdinator/deploy-app.pem";
/// The function's own access key: its calls are told apart from the test's.
const FUNCTION_KEY: &str = "AKIACLAWDINATORAPI00";

/// Who may sign: access key id -> credentials (AWS knows every secret).
type Signers = Arc<Mutex<HashMap<String, Credentials>>>;

struct Fleet {
    emulator: Emulator,
    aws: Aws,
    url: String,
    signers: Signers,
    github: Dispatches,
    /// GitHub answers dispatches 500 while set.
    github_failing: Arc<std::sync::atomic::AtomicBool>,
    public_key: String,
}

impl Fleet {
    async fn start() -> Fleet {
        let emulator = Emulator::start().unwrap();
        let aws = Aws::load(&Settings::local(&emulator.endpoint())).await.unwrap();
        aws.s3().create_bucket().bucket(AUDIT_BUCKET).send().await.unwrap();
        let (private, public_key) = testkit::fixtures::github_app_key().unwrap();
        aws.secrets_manager().create_secret().name(APP_KEY_SECRET).secret_string(private).send().await.unwrap();
        cooldown_table(&aws).await;
        let github_failing = Arc::<std::sync::atomic::AtomicBool>::default();
        let (github_url, github) = github_failing_when(github_failing.clone());
        let function = Settings {
            static_credentials: Some((FUNCTION_KEY.into(), "testing".into())),
            ..Settings::local(&emulator.endpoint())
        };
        let function = Aws::load(&function).await.unwrap();
        let config = config(Cooldowns::new(&function, COOLDOWN_TABLE));
        let live = Live {
            aws: function.clone(),
            registry: config.registry.clone(),
            workflow: Workflow {
                api_url: github_url.clone(),
                repo: "openclaw/clawdinators".into(),
                workflow: "fleet-deploy.yml".into(),
                git_ref: "main".into(),
            },
            app_id: "12345".into(),
            installation_id: "678".into(),
            pem_secret: APP_KEY_SECRET.into(),
        };
        let audit = Audit { aws: function, chain: clawdinator::audit::BucketChain::new(AUDIT_BUCKET, "control-api") };
        let api = Arc::new((config, live, audit));
        let signers: Signers = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let (front_aws, front_signers, base) = (aws.clone(), signers.clone(), url.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                serve(stream, &base, &front_aws, &front_signers, &api).await;
            }
        });
        Fleet { emulator, aws, url, signers, github, github_failing, public_key }
    }

    /// Credentials of `clawdinator-instance-<name>`, as the instance role gives them.
    async fn instance(&self, name: &str) -> Credentials {
        let role = format!("clawdinator-instance-{name}");
        let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
        let created = self.aws.iam().create_role().role_name(&role).assume_role_policy_document(trust).send().await;
        let arn = created.unwrap().role.unwrap().arn;
        let out = self.aws.sts().assume_role().role_arn(arn).role_session_name("i-0123456789abcdef0").send().await;
        let c = out.unwrap().credentials.unwrap();
        self.signer(Credentials::new(c.access_key_id, c.secret_access_key, Some(c.session_token), None, "role"))
    }

    /// An IAM user's access key.
    async fn user(&self, name: &str) -> Credentials {
        self.aws.iam().create_user().user_name(name).send().await.unwrap();
        let key = self.aws.iam().create_access_key().user_name(name).send().await.unwrap().access_key.unwrap();
        self.signer(Credentials::new(key.access_key_id, key.secret_access_key, None, None, "user"))
    }

    fn signer(&self, credentials: Credentials) -> Credentials {
        self.signers.lock().unwrap().insert(credentials.access_key_id().to_string(), credentials.clone());
        credentials
    }

    /// The client, as a host runs it, signing with `credentials`.
    async fn ask(&self, credentials: Credentials, payload: Value) -> anyhow::Result<Value> {
        clawdinator::fleet::control::call(&self.aws.with_credentials(credentials), Some(self.url.clone()), &payload)
            .await
    }

    fn github(&self) -> Vec<(String, String, Value)> {
        std::mem::take(&mut *self.github.lock().unwrap())
    }

    async fn audit(&self) -> Vec<Value> {
        crate::common::audit_records(&self.aws, AUDIT_BUCKET).await.0
    }
}

/// One request to the function URL. As `AWS_IAM` auth does: a signature
/// that does not match (or an unknown key) is 403 and the function never
/// runs; otherwise the signer's ARN (STS GetCallerIdentity with its
/// credentials) goes into the request context.
async fn serve(
    mut stream: tokio::net::TcpStream,
    base: &str,
    aws: &Aws,
    signers: &Signers,
    api: &(Config, Live, Audit),
) {
    let (head, body) = read_request(&mut stream).await;
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
            .unwrap_or_default()
            .to_string()
    };
    let authorization = header("authorization");
    let key_id = authorization.split("Credential=").nth(1).and_then(|c| c.split('/').next()).unwrap_or_default();
    let credentials = signers.lock().unwrap().get(key_id).cloned();
    let expected = credentials
        .clone()
        .map(|c| testkit::fixtures::sigv4_authorization(base, &body, &header("x-amz-date"), c, "us-east-1").unwrap());
    let (status, answer) = match (credentials, expected) {
        (Some(credentials), Some(expected)) if expected == authorization => {
            let arn = aws.with_credentials(credentials).caller_arn().await.unwrap();
            let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let response = handle(&api.0, &api.1, &api.2, event(Some(&arn), payload)).await;
            (response.status().as_u16(), String::from_utf8_lossy(response.body().as_ref()).into_owned())
        }
        _ => (
            403,
            r#"{"Message":"The request signature we calculated does not match the signature you provided."}"#
                .to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
    stream.write_all(response.as_bytes()).await.unwrap();
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> (String, Vec<u8>) {
    let mut data = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk).await.unwrap();
        data.extend_from_slice(&chunk[..n]);
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap_or(0);
            if data.len() >= end + 4 + length || n == 0 {
                return (head, data[end + 4..].to_vec());
            }
        }
        if n == 0 {
            return (String::from_utf8_lossy(&data).into_owned(), vec![]);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_asks_for_another_instance_and_the_deploy_is_dispatched_as_it() {
    let fleet = Fleet::start().await;
    let bot = fleet.instance("clawdinator-1").await;
    let answer = fleet
        .ask(
            bot,
            json!({"action": "deploy", "target": "clawdinator-2", "ami": "ami-0123456789abcdef0", "caller": "alice"}),
        )
        .await
        .unwrap();
    assert_eq!(
        answer,
        json!({"dispatched": "fleet-deploy", "target": "clawdinator-2", "caller": "clawdinator-1", "lane": "bot"})
    );

    // The token was minted with a JWT the App's public key verifies, then used.
    let github = fleet.github();
    assert_eq!(github.len(), 2, "{github:?}");
    assert_eq!(github[0].0, "/app/installations/678/access_tokens");
    // The deploy App's token may dispatch workflows of this repository, nothing more.
    assert_eq!(github[0].2, json!({"repositories": ["clawdinators"], "permissions": {"actions": "write"}}));
    let jwt = github[0].1.strip_prefix("Bearer ").unwrap();
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(fleet.public_key.as_bytes()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&["12345"]);
    jsonwebtoken::decode::<Value>(jwt, &key, &validation).unwrap();
    assert_eq!(github[1].0, "/repos/openclaw/clawdinators/actions/workflows/fleet-deploy.yml/dispatches");
    assert_eq!(github[1].1, format!("Bearer {MINTED}"));
    assert_eq!(
        github[1].2["inputs"],
        json!({"target": "clawdinator-2", "ami_override": "ami-0123456789abcdef0", "caller": "clawdinator-1", "lane": "bot"})
    );

    // The audit trail names the signer as STS does, not as the body claims.
    let records = fleet.audit().await;
    assert_eq!(records.len(), 2);
    let caller = records[0]["caller"].as_str().unwrap();
    assert!(caller.contains(":assumed-role/clawdinator-instance-clawdinator-1/"), "{caller}");
    assert_eq!(records[1]["result"], "202: ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_that_skips_the_clients_check_is_still_refused_by_its_identity() {
    let fleet = Fleet::start().await;
    let bot = fleet.instance("clawdinator-2").await;
    for target in ["clawdinator-2", "all"] {
        let err = fleet.ask(bot.clone(), json!({"action": "deploy", "target": target})).await.unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("refused (403") && err.contains("clawdinator-2 may not deploy"), "{err}");
    }
    assert!(fleet.github().is_empty(), "a refused deploy reached GitHub");
    // A key the function URL does not know is stopped before the function.
    let stranger = Credentials::new("AKIASTRANGER", "not-a-real-secret", None, None, "stranger");
    let err = format!("{:#}", fleet.ask(stranger, json!({"action": "status"})).await.unwrap_err());
    assert!(err.contains("refused (403") && err.contains("lambda:InvokeFunctionUrl"), "{err}");
    assert_eq!(fleet.audit().await.len(), 4, "the unsigned request never reached the function");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_deploys_all_and_a_bot_reads_the_live_status() {
    let fleet = Fleet::start().await;
    let alice = fleet.user("alice").await;
    let answer = fleet.ask(alice, json!({"action": "deploy", "target": "all"})).await.unwrap();
    assert_eq!(answer["caller"], "arn:aws:iam::123456789012:user/alice");
    assert_eq!(fleet.github()[1].2["inputs"]["target"], "all");

    // Status comes from the emulator's EC2: no instance runs yet.
    let bot = fleet.instance("clawdinator-3").await;
    let status = fleet.ask(bot, json!({"action": "status"})).await.unwrap();
    let text = status.to_string();
    assert!(text.contains("clawdinator-1") && text.contains("clawdinator-3"), "{text}");
    assert!(fleet.github().is_empty());
    // A user no one named an operator: refused by identity.
    let mallory = fleet.user("mallory").await;
    let err = format!("{:#}", fleet.ask(mallory, json!({"action": "status"})).await.unwrap_err());
    assert!(err.contains("neither a fleet instance nor an operator"), "{err}");
}

/// Every AWS call the function made while it answered a status and a
/// deploy is allowed by the control API role's policy as OpenTofu applies
/// it (judged by the IAM simulator), and the role needs each statement.
#[tokio::test(flavor = "multi_thread")]
async fn the_control_api_role_may_make_every_call_the_function_makes() {
    let fleet = Fleet::start().await;
    let bot = fleet.instance("clawdinator-1").await;
    fleet.emulator.start_call_log().unwrap();
    fleet.ask(bot.clone(), json!({"action": "status"})).await.unwrap();
    fleet.ask(bot, json!({"action": "deploy", "target": "clawdinator-2"})).await.unwrap();
    // The cooldowns' other calls: the read behind a 429, an operator's put,
    // and the release after a dispatch GitHub refused.
    let other = fleet.instance("clawdinator-3").await;
    let held = fleet.ask(other, json!({"action": "deploy", "target": "clawdinator-2"})).await.unwrap_err();
    assert!(format!("{held:#}").contains("refused (429"), "{held:#}");
    let alice = fleet.user("alice").await;
    fleet.ask(alice.clone(), json!({"action": "deploy", "target": "clawdinator-3"})).await.unwrap();
    fleet.github_failing.store(true, std::sync::atomic::Ordering::SeqCst);
    let failed = fleet.ask(alice, json!({"action": "deploy", "target": "clawdinator-1"})).await.unwrap_err();
    assert!(format!("{failed:#}").contains("its cooldown was released"), "{failed:#}");
    let calls = fleet.emulator.calls().unwrap();
    let world = testkit::policies::World::emulator(AUDIT_BUCKET);
    let facts = testkit::iam::Facts::gather(&fleet.aws, &calls).await;
    let commands = testkit::iam::Commands(vec![("the control API function".into(), usize::MAX)]);
    let requests = testkit::iam::requests_of(&calls, FUNCTION_KEY, &commands, &world, &facts).unwrap();
    let actions: std::collections::BTreeSet<&str> = requests.iter().map(|r| r.action.as_str()).collect();
    for needed in [
        "ec2:DescribeInstances",
        "secretsmanager:GetSecretValue",
        "s3:PutObject",
        "dynamodb:PutItem",
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
    ] {
        assert!(actions.contains(needed), "{needed} was never called: {actions:?}");
    }
    let role = testkit::policies::control_api(&testkit::repo_root(), &world).unwrap();
    let bucket_policy = testkit::policies::bucket_policy(&testkit::repo_root(), &world).unwrap();
    let pairs: Vec<_> = requests.into_iter().map(|r| (&role, r)).collect();
    let decisions = testkit::iam::judge(&world, &bucket_policy, &pairs).unwrap();
    let denied: Vec<String> = decisions.iter().filter(|d| !d.allowed).map(|d| d.to_string()).collect();
    assert!(denied.is_empty(), "the control API is denied calls it makes:\n{}", denied.join("\n"));
}
