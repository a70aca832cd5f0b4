//! Every IAM policy OpenTofu applies, judged against the calls the commands
//! really make: each principal runs its commands in the emulator with its
//! own access key, the shim logs every call, and the IAM simulator decides
//! each call against that principal's policies rendered from
//! `infra/opentofu/aws/policies/` (testkit::policies, testkit::iam).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use testkit::env::{env, Env};
use testkit::iam::{judge, requests_of, Commands, Decision, Facts};
use testkit::policies::{self, Principal, World};

const CI_KEY: &str = "AKIACLAWDINATORCI000";

/// An instance's key (`AKIA` + 16 characters, as AWS's are).
fn instance_key(n: usize) -> String {
    format!("AKIACLAWDINATORHOST{n}")
}

/// Which command made which logged call, per emulator (its endpoint).
static COMMANDS: std::sync::Mutex<BTreeMap<String, Commands>> = std::sync::Mutex::new(BTreeMap::new());

/// The command's words, without flags and their values: `fleet deploy all`.
fn label(args: &[&str]) -> String {
    let mut words = Vec::new();
    let mut skip = false;
    for arg in args {
        if std::mem::take(&mut skip) {
            continue;
        }
        match arg.strip_prefix("--") {
            Some(flag) => skip = !matches!(flag, "json" | "yes" | "dry-run" | "all"),
            None => words.push(*arg),
        }
    }
    words.join(" ")
}

/// `cargo xtask ARGS` against the emulator with `key` as its credentials;
/// the calls it made are marked as its own.
fn xtask_as(env: &Env, key: &str, args: &[&str], extra: &[(&str, &Path)]) -> Output {
    let out = xtask_unmarked(env, key, args, extra);
    let logged = env.emulator.calls().map(|c| c.len()).unwrap_or(0);
    COMMANDS
        .lock()
        .unwrap()
        .entry(env.emulator.endpoint())
        .or_default()
        .ran(&format!("cargo xtask {}", label(args)), logged);
    out
}

/// A fresh call log, and no command marked yet.
fn start_log(env: &Env) {
    env.emulator.start_call_log().unwrap();
    COMMANDS.lock().unwrap().remove(&env.emulator.endpoint());
}

fn xtask_unmarked(env: &Env, key: &str, args: &[&str], extra: &[(&str, &Path)]) -> Output {
    let mut command = env.cli(env!("CARGO_BIN_EXE_xtask"));
    command
        .env("AWS_ACCESS_KEY_ID", key)
        .env("CLAWDINATOR_POLL_SECONDS", "0.05")
        .env_remove("CLAWDINATOR_CALLER")
        .current_dir(testkit::repo_root())
        .args(args)
        .stdin(std::process::Stdio::null());
    for (k, v) in extra {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn ok(what: &str, out: &Output) {
    assert!(out.status.success(), "{what} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// The registry of the test (`n` instances) at `<dir>/nix/instances.json`.
fn registry(env: &Env, n: usize) -> PathBuf {
    let path = env.path("nix/instances.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    testkit::fixtures::write_registry(&path, n).unwrap();
    path
}

/// The decisions on every call made with `key`, as `principal`.
async fn decisions(env: &Env, world: &World, key: &str, principal: &Principal) -> Vec<Decision> {
    let calls = env.emulator.calls().unwrap();
    let facts = Facts::gather(&env.aws, &calls).await;
    let commands = COMMANDS.lock().unwrap().get(&env.emulator.endpoint()).cloned().unwrap_or_default();
    let requests = requests_of(&calls, key, &commands, world, &facts).unwrap();
    assert!(!requests.is_empty(), "no call was made with {key}");
    let bucket_policy = policies::bucket_policy(&testkit::repo_root(), world).unwrap();
    let pairs: Vec<(&Principal, _)> = requests.into_iter().map(|r| (principal, r)).collect();
    judge(world, &bucket_policy, &pairs).unwrap()
}

fn denied(decisions: &[Decision]) -> Vec<String> {
    decisions.iter().filter(|d| !d.allowed).map(|d| d.to_string()).collect()
}

/// The CI role's inputs: a sample fleet's secrets, one seed repository and
/// the stand-in nix; returns the pipeline's arguments, the flags naming the
/// fleet's sources (which begin them) and the environment.
type CiInputs = (Vec<String>, Vec<String>, Vec<(&'static str, PathBuf)>);

fn ci_inputs(env: &Env, reg: &Path) -> CiInputs {
    let dir = env.path("ci");
    std::fs::create_dir_all(&dir).unwrap();
    let fleet = testkit::fixtures::sample_fleet_for(&dir, reg, |n| format!("value of {n}")).unwrap();
    let url = testkit::fixtures::git_repo(&dir.join("upstream/seed"), &[("README.md", "seed\n")], "main").unwrap();
    std::fs::write(dir.join("repos.tsv"), format!("seed\t{url}\tmain\n")).unwrap();
    let (path, kvm) = testkit::env::stand_in_nix(&dir);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let sources = testkit::fixtures::source_args(&fleet.sources);
    let mut args = sources.clone();
    args.extend(
        [
            "--bucket",
            &env.bucket,
            "--list",
            &s(&dir.join("repos.tsv")),
            "--repo-seeds",
            &s(&dir.join("repo-seeds")),
            "--flake",
            &s(&dir.join("flake")),
            "--out",
            &s(&dir.join("dist")),
        ]
        .map(String::from),
    );
    let vars = vec![
        ("PATH", PathBuf::from(path)),
        ("FAKE_STORE", dir.join("store")),
        ("FAKE_FEATURES", PathBuf::from("nix-command flakes")),
        ("CLAWDINATOR_KVM_DEVICE", kvm),
    ];
    (args, sources, vars)
}

/// The CI role runs the whole image pipeline, publishes both ways, prunes,
/// and deploys (creating each instance with its role and profile through
/// the stand-in tofu), reads status, writes a release manifest once and
/// switches to it: every call is allowed.
#[tokio::test(flavor = "multi_thread")]
async fn the_ci_role_may_make_every_call_of_the_pipeline_and_the_fleet_commands() {
    let env = env().await;
    env.vmimport_role(&env.bucket).await;
    env.tofu_backend(&env.bucket, "clawdinator-terraform-locks");
    let reg = registry(&env, 2);
    let group = env.aws.ec2().create_security_group().group_name("clawdinator").description("hosts").send().await;
    let world =
        World { instance_security_group: group.unwrap().group_id().unwrap().into(), ..World::emulator(&env.bucket) };
    start_log(&env);

    let (args, sources, vars) = ci_inputs(&env, &reg);
    // An operator pushed the age files; CI pulls them first.
    let fleet_args: Vec<&str> = sources.iter().map(String::as_str).collect();
    let store =
        |verb, key| xtask_as(&env, key, &[&["secrets", verb, "--bucket", &env.bucket][..], &fleet_args].concat(), &[]);
    ok("secrets push", &store("push", "testing"));
    ok("secrets pull", &store("pull", CI_KEY));
    let vars: Vec<(&str, &Path)> = vars.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let audit = ["--json", "--audit-bucket", &env.bucket];
    let out = xtask_as(&env, CI_KEY, &[&audit[..], &["pipeline"], &args].concat(), &vars);
    ok("pipeline", &out);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ami = report["amiId"].as_str().unwrap().to_string();
    // A second image, published the other way; prune then has one to remove.
    let raw = env.path("ci/second.raw");
    testkit::fixtures::sample_raw_image(&raw, 4 << 20, &[(0, 1 << 20)], 7).unwrap();
    let image = testkit::fixtures::write_image_json(&env.path("ci/second"), &raw, "second").unwrap();
    let publish =
        ["image", "publish", "--via", "s3-import", "--image", image.to_str().unwrap(), "--bucket", &env.bucket];
    ok("image publish --via s3-import", &xtask_as(&env, CI_KEY, &[&audit[..], &publish].concat(), &[]));

    let reg_s = reg.to_str().unwrap();
    let module = env.path("infra/opentofu/aws");
    std::fs::create_dir_all(&module).unwrap();
    let bin = testkit::env::stand_in_tofu(env.dir.path());
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let sg = PathBuf::from(&world.instance_security_group);
    let log = env.path("tofu.log");
    let deploy_env = [("PATH", Path::new(&path)), ("TOFU_LOG", log.as_path()), ("TOFU_SECURITY_GROUP", sg.as_path())];
    let deploy = [
        "fleet",
        "deploy",
        "all",
        "--instances",
        reg_s,
        "--chdir",
        module.to_str().unwrap(),
        "--backend-bucket",
        &env.bucket,
        "--backend-region",
        "us-east-1",
        "--healthy-timeout",
        "20",
        "--ami",
        &ami,
        "--yes",
    ];
    ok("fleet deploy", &xtask_as(&env, CI_KEY, &[&audit[..], &deploy].concat(), &deploy_env));
    // Again, for one: now a replacement (terminate, then launch).
    let again: Vec<&str> = deploy.iter().map(|a| if *a == "all" { "clawdinator-2" } else { a }).collect();
    ok("fleet deploy clawdinator-2", &xtask_as(&env, CI_KEY, &[&audit[..], &again].concat(), &deploy_env));
    // Exit 3: the hosts run the first AMI, not the newest (drift, reported).
    let status = xtask_as(&env, CI_KEY, &["--json", "fleet", "status", "--instances", reg_s], &[]);
    assert_eq!(status.status.code(), Some(3), "{}", String::from_utf8_lossy(&status.stderr));
    let rev = "0123456789abcdef0123456789abcdef01234567";
    // `release build`'s manifest of the revision, written with CI's key by
    // the very function it uses (the closures before it need a real nix),
    // twice: the second finds it written and keeps it.
    write_release(&env, rev, &["clawdinator-1", "clawdinator-2"]).await;
    let bucket = PathBuf::from(&env.bucket);
    ok(
        "fleet switch",
        &xtask_as(
            &env,
            CI_KEY,
            &[&audit[..], &["fleet", "switch", rev, "--instances", reg_s]].concat(),
            &[("S3_BUCKET", bucket.as_path())],
        ),
    );
    let refresh = ["fleet", "refresh-secrets", "--instances", reg_s];
    ok("fleet refresh-secrets", &xtask_as(&env, CI_KEY, &[&audit[..], &refresh].concat(), &[]));
    // A third image makes the second one prunable (the first runs the hosts).
    let raw = env.path("ci/third.raw");
    testkit::fixtures::sample_raw_image(&raw, 4 << 20, &[(0, 1 << 20)], 8).unwrap();
    let image = testkit::fixtures::write_image_json(&env.path("ci/third"), &raw, "third").unwrap();
    let publish = ["image", "publish", "--image", image.to_str().unwrap()];
    ok("image publish", &xtask_as(&env, CI_KEY, &[&audit[..], &publish].concat(), &[]));
    ok("image ami prune", &xtask_as(&env, CI_KEY, &["--json", "image", "ami", "prune", "--keep", "1"], &[]));

    let ci = policies::ci(&testkit::repo_root(), &world).unwrap();
    let decisions = decisions(&env, &world, CI_KEY, &ci).await;
    let denied = denied(&decisions);
    assert!(denied.is_empty(), "the CI role is denied calls its commands make:\n{}", denied.join("\n"));
    let actions: std::collections::BTreeSet<&str> = decisions.iter().map(|d| d.request.action.as_str()).collect();
    sabotage(&world, &ci, &decisions);
    for needed in [
        "ec2:DeregisterImage",
        "ec2:ImportSnapshot",
        "ebs:PutSnapshotBlock",
        "ec2:RegisterImage",
        "ec2:RunInstances",
        "iam:CreateRole",
        "iam:PassRole",
        "ssm:SendCommand",
        "s3:PutObject",
    ] {
        assert!(actions.contains(needed), "{needed} was never judged: {actions:?}");
    }
}

/// `releases/<rev>.json` naming a system for each of `hosts`, written once
/// with the CI role's key as `release build` writes it, then again.
async fn write_release(env: &Env, rev: &str, hosts: &[&str]) {
    use clawdinator::release::manifest::{write_once, Release, Written};
    let settings = clawdinator::aws::Settings {
        static_credentials: Some((CI_KEY.into(), "testing".into())),
        ..clawdinator::aws::Settings::local(&env.emulator.endpoint())
    };
    let as_ci = clawdinator::aws::Aws::load(&settings).await.unwrap();
    let system = |name: &str| format!("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-{name}");
    let release = Release {
        revision: rev.into(),
        hosts: hosts.iter().map(|h| (h.to_string(), system(h))).collect(),
        nix_openclaw: None,
        cache: format!("s3://{}-cache", env.bucket),
        created_at: "2026-01-02T03:04:05Z".into(),
        run: "local".into(),
    };
    assert_eq!(write_once(&as_ci.s3(), &env.bucket, &release).await.unwrap(), Written::Created);
    assert_eq!(write_once(&as_ci.s3(), &env.bucket, &release).await.unwrap(), Written::Kept);
    let logged = env.emulator.calls().map(|c| c.len()).unwrap_or(0);
    COMMANDS.lock().unwrap().entry(env.emulator.endpoint()).or_default().ran("release build (its manifest)", logged);
}

/// Each statement of the principal's policies removed in turn: the calls
/// that still pass must not all pass, for every statement some call needs.
/// Proves the judge fails when a needed grant goes missing.
fn sabotage(world: &World, principal: &Principal, decisions: &[Decision]) {
    let bucket_policy = policies::bucket_policy(&testkit::repo_root(), world).unwrap();
    let mut broken = Vec::new();
    for (p, (name, policy)) in principal.identity.iter().enumerate() {
        for (i, statement) in policy["Statement"].as_array().unwrap().iter().enumerate() {
            let mut less = principal.clone();
            less.identity[p].1["Statement"].as_array_mut().unwrap().remove(i);
            let sid = statement["Sid"].as_str().unwrap_or("?").to_string();
            broken.push((format!("{name}/{sid}"), less));
        }
    }
    let mut pairs = Vec::new();
    for (_, less) in &broken {
        pairs.extend(decisions.iter().map(|d| (less, d.request.clone())));
    }
    let verdicts = judge(world, &bucket_policy, &pairs).unwrap();
    let needed: Vec<&str> = broken
        .iter()
        .zip(verdicts.chunks(decisions.len()))
        .filter(|(_, v)| v.iter().any(|d| !d.allowed))
        .map(|((sid, _), _)| sid.as_str())
        .collect();
    let unused: Vec<&str> = broken.iter().map(|(sid, _)| sid.as_str()).filter(|s| !needed.contains(s)).collect();
    eprintln!("{}: statements these calls need: {needed:?}; not exercised here: {unused:?}", principal.name);
    for sid in [
        "clawdinator-ci/EbsDirect",
        "clawdinator-ci/LaunchFleetInstances",
        "clawdinator-ci/PassOnlyInstanceRoles",
        "clawdinator-ci/WriteReleasesOnce",
        "clawdinator-ci/TagReleases",
        "clawdinator-ci/ReadReleases",
    ] {
        if principal.name == "ci" {
            assert!(needed.contains(&sid), "removing {sid} denied nothing: the judge cannot fail");
        }
    }
    assert!(!needed.is_empty(), "no statement of {} was needed: the judge cannot fail", principal.name);
}

/// An instance's role reads its own bundle and its own secrets; the same
/// commands aimed at another instance's prefix and token are denied.
#[tokio::test(flavor = "multi_thread")]
async fn an_instance_role_reads_its_own_bundle_and_secrets_and_nothing_of_another() {
    let env = env().await;
    let reg = registry(&env, 2);
    let world = World::emulator(&env.bucket);
    std::fs::create_dir_all(env.path("src")).unwrap();
    let fleet = testkit::fixtures::sample_fleet_for(&env.path("src"), &reg, testkit::env::canary_value);
    let fleet = fleet.unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let sources = testkit::fixtures::source_args(&fleet.sources);
    let sources: Vec<&str> = sources.iter().map(String::as_str).collect();
    let seeds = s(&fleet.seeds_dir);
    let upload =
        [&["bootstrap", "upload", "--all", "--bucket", &env.bucket, "--repo-seeds", &seeds][..], &sources].concat();
    ok("bootstrap upload", &xtask_as(&env, "testing", &upload, &[]));
    ok("secrets seed", &xtask_as(&env, "testing", &[&["secrets", "seed", "--all"], &sources[..]].concat(), &[]));

    let (api_url, _) = testkit::loopback::answer_every_request(200, serde_json::json!({"instances": []}));
    let parameter = env.aws.ssm().put_parameter().name("/clawdinator/control-api-url").value(api_url);
    parameter.r#type(aws_sdk_ssm::types::ParameterType::String).send().await.unwrap();
    let root = testkit::repo_root();
    let host1 = policies::instance(
        &root,
        &world,
        &clawdinator::registry::Registry::load(&reg).unwrap().instances["clawdinator-1"],
        true,
    )
    .unwrap();
    let key = instance_key(1);
    for (target, expect_allowed) in [(1, true), (2, false)] {
        start_log(&env);
        let host = env.path(&format!("host{target}"));
        let fetch = [
            "bootstrap",
            "fetch",
            "--bucket",
            &env.bucket,
            "--prefix",
            &format!("bootstrap/clawdinator-{target}"),
            "--secrets-dir",
            &s(&host.join("secrets")),
            "--repo-seeds-dir",
            &s(&host.join("seeds")),
            "--age-key-path",
            &s(&host.join("agekey")),
            "--state-dir",
            &s(&host.join("state")),
        ];
        ok("bootstrap fetch", &xtask_as(&env, &key, &fetch, &[]));
        let secrets =
            ["secrets", "fetch", "--instance", &format!("clawdinator-{target}"), "--dest", &s(&host.join("run"))];
        ok("secrets fetch", &xtask_as(&env, &key, &secrets, &[]));
        if target == 1 {
            // The bot asks the control API, found through its SSM parameter.
            let instance_file = host.join("instance-name");
            std::fs::write(&instance_file, "clawdinator-1\n").unwrap();
            let control = ["fleet", "control", "status", "--instance-file", &s(&instance_file)];
            ok("fleet control status", &xtask_as(&env, &key, &control, &[]));
        }
        let decisions = decisions(&env, &world, &key, &host1).await;
        if expect_allowed {
            let denied = denied(&decisions);
            assert!(denied.is_empty(), "clawdinator-1 is denied its own:\n{}", denied.join("\n"));
            sabotage(&world, &host1, &decisions);
        } else {
            let foreign: Vec<&Decision> = decisions
                .iter()
                .filter(|d| {
                    d.request.resource.contains("clawdinator-2")
                        || d.request.context.values().any(|v| v.to_string().contains("clawdinator-2"))
                })
                .collect();
            assert!(foreign.len() >= 2, "the run touched too little of clawdinator-2: {decisions:?}");
            let allowed: Vec<String> = foreign.iter().filter(|d| d.allowed).map(|d| d.to_string()).collect();
            assert!(allowed.is_empty(), "clawdinator-1 may read clawdinator-2's:\n{}", allowed.join("\n"));
        }
    }
}

/// One request the threat model speaks of, as AWS would judge it.
fn ask(action: &str, resource: &str, context: Value, why: &'static str) -> (testkit::iam::Request, &'static str) {
    let context = context.as_object().cloned().unwrap_or_default().into_iter().collect();
    (testkit::iam::Request { action: action.into(), resource: resource.into(), context, call: why.into() }, why)
}

/// The public bucket's policy: anyone may read and list the published tree
/// and nothing else of the bucket, and never without TLS.
#[test]
fn the_public_bucket_shows_only_the_published_tree() {
    let (root, world) = (testkit::repo_root(), World::emulator("clawdinator-fleet"));
    let extra = [("pr_intent_bucket_arn", world.pr_intent_bucket_arn())];
    let policy = policies::document(&root, "pr-intent-public", &world, &extra).unwrap();
    let statements = policy["Statement"].as_array().unwrap();
    let arn = world.pr_intent_bucket_arn();
    for s in statements.iter().filter(|s| s["Effect"] == "Allow") {
        assert_eq!(s["Principal"], "*", "{s}");
        match s["Action"].as_str().unwrap() {
            "s3:GetObject" => assert_eq!(s["Resource"], format!("{arn}/pr-intent/*")),
            "s3:ListBucket" => assert_eq!(
                s["Condition"]["StringLike"]["s3:prefix"],
                serde_json::json!(["pr-intent/", "pr-intent/*"]),
                "listing is not limited to the tree: {s}"
            ),
            other => panic!("the public may {other}: {s}"),
        }
    }
    assert_eq!(statements.iter().filter(|s| s["Effect"] == "Allow").count(), 2);
    assert!(statements
        .iter()
        .any(|s| s["Effect"] == "Deny" && s["Condition"]["Bool"]["aws:SecureTransport"] == "false"));
}

/// What the threat model forbids each principal (a compromised agent on an
/// instance, a pushed branch with the CI role, the control API's code),
/// each as the request AWS would judge: every one is denied by the policies
/// OpenTofu applies, while the grants they need beside it are allowed.
#[test]
fn what_the_threat_model_forbids_is_denied_and_what_each_needs_is_not() {
    use serde_json::json;
    let root = testkit::repo_root();
    let world = World::emulator("clawdinator-fleet");
    let registry = clawdinator::registry::Registry::load(&root.join(clawdinator::registry::DEFAULT_PATH)).unwrap();
    let ci = policies::ci(&root, &world).unwrap();
    let host = policies::instance(&root, &world, &registry.instances["clawdinator-1"], true).unwrap();
    let api = policies::control_api(&root, &world).unwrap();
    let (b, a) = (world.bucket_arn(), &world.account);
    let role = |n: &str| world.role_arn(n);
    let instance = format!("arn:aws:ec2:us-east-1:{a}:instance/i-0123456789abcdef0");
    let secret = |n: &str| format!("arn:aws:secretsmanager:us-east-1:{a}:secret:clawdinator/{n}-AbCdEf");
    let boundary = json!({"iam:PermissionsBoundary": world.instance_boundary_arn()});
    let publisher = policies::pr_intent_publisher(&root, &world, host.clone()).unwrap();
    let public = world.pr_intent_bucket_arn();
    let forbidden = [
        (
            &host,
            ask(
                "s3:PutObject",
                &format!("{public}/pr-intent/x.md"),
                json!({}),
                "an instance that is no publisher writing the public tree",
            ),
        ),
        (
            &publisher,
            ask("s3:PutObject", &format!("{public}/index.html"), json!({}), "a publisher writing outside pr-intent/"),
        ),
        (
            &publisher,
            ask(
                "s3:PutObject",
                &format!("{b}/bootstrap/clawdinator-2/manifest.json"),
                json!({}),
                "a publisher writing the fleet bucket",
            ),
        ),
        (
            &publisher,
            ask("s3:ListBucket", &public, json!({"s3:prefix": "private/"}), "a publisher listing outside pr-intent/"),
        ),
        (
            &ci,
            ask(
                "iam:CreateRole",
                &role("clawdinator-instance-9"),
                json!({}),
                "CI creating an instance role without the boundary",
            ),
        ),
        (
            &ci,
            ask(
                "iam:CreateRole",
                &role("clawdinator-admin"),
                boundary.clone(),
                "CI creating a role outside clawdinator-instance-*",
            ),
        ),
        (&ci, ask("iam:PutRolePolicy", &role("clawdinator-ci"), json!({}), "CI widening its own policy")),
        (
            &ci,
            ask(
                "secretsmanager:GetSecretValue",
                &secret("deploy-app.pem"),
                json!({}),
                "CI reading the deploy App's key",
            ),
        ),
        (
            &host,
            ask(
                "secretsmanager:GetSecretValue",
                &secret("deploy-app.pem"),
                json!({}),
                "an agent reading the deploy App's key",
            ),
        ),
        (
            &ci,
            ask(
                "iam:DeleteRolePermissionsBoundary",
                &role("clawdinator-instance-1"),
                boundary.clone(),
                "CI lifting an instance role's boundary",
            ),
        ),
        (
            &ci,
            ask(
                "iam:PassRole",
                &role("clawdinator-ci"),
                json!({"iam:PassedToService": "ec2.amazonaws.com"}),
                "CI handing its own role to an instance",
            ),
        ),
        (
            &ci,
            ask(
                "iam:PassRole",
                &role("clawdinator-instance-1"),
                json!({"iam:PassedToService": "lambda.amazonaws.com"}),
                "CI handing an instance role to another service",
            ),
        ),
        (
            &ci,
            ask(
                "iam:PassRole",
                &role("clawdinator-instance-1"),
                json!({}),
                "CI passing an instance role to no named service",
            ),
        ),
        (&ci, ask("s3:DeleteObject", &format!("{b}/audit/ci/0001.json"), json!({}), "CI deleting an audit record")),
        (
            &ci,
            ask(
                "ssm:SendCommand",
                &format!("arn:aws:ssm:us-east-1:{a}:document/AWS-RunShellScript"),
                json!({}),
                "CI running any shell command as root on a host",
            ),
        ),
        (
            &ci,
            ask(
                "iam:AttachRolePolicy",
                &role("clawdinator-instance-1"),
                json!({"iam:PolicyARN": "arn:aws:iam::aws:policy/AdministratorAccess", "iam:PermissionsBoundary": world.instance_boundary_arn()}),
                "CI attaching a managed policy to an instance role",
            ),
        ),
        (
            &host,
            ask(
                "ssm:GetParameter",
                &format!("arn:aws:ssm:us-east-1:{a}:parameter/other-app/db-password"),
                json!({}),
                "an agent reading the account's other SSM parameters",
            ),
        ),
        (
            &ci,
            ask(
                "s3:DeleteObjectVersion",
                &format!("{b}/audit/2026/12/02/x.json"),
                json!({}),
                "CI deleting an audit record's version",
            ),
        ),
        (
            &ci,
            ask(
                "s3:PutObject",
                &format!("{b}/audit/2026/12/02/x.json"),
                json!({}),
                "CI overwriting an audit record (no If-None-Match)",
            ),
        ),
        (
            &ci,
            ask(
                "s3:PutObject",
                &format!("{b}/audit/control-api/x.json"),
                json!({"s3:if-none-match": "*"}),
                "CI writing into the control API's chain",
            ),
        ),
        (
            &ci,
            ask(
                "s3:PutObject",
                &format!("{b}/age-secrets/clawdinator-openai-api-key-peter-2.age"),
                json!({}),
                "CI replacing an age file it reads",
            ),
        ),
        (
            &ci,
            ask(
                "ec2:TerminateInstances",
                &instance,
                json!({"ec2:ResourceTag/app": "other"}),
                "CI terminating an instance that is not the fleet's",
            ),
        ),
        (
            &ci,
            ask(
                "ssm:SendCommand",
                &instance,
                json!({"ssm:resourceTag/app": "other"}),
                "CI running commands on another app's instance",
            ),
        ),
        (
            &ci,
            ask(
                "ec2:CreateTags",
                &instance,
                json!({"ec2:ResourceTag/app": "clawdinator", "aws:TagKeys": ["app"]}),
                "CI retagging a host out of the fleet",
            ),
        ),
        (
            &host,
            ask(
                "s3:GetObject",
                &format!("{b}/bootstrap/clawdinator-2/bundle.tar.zst"),
                json!({}),
                "an agent reading another instance's bundle",
            ),
        ),
        (
            &host,
            ask(
                "s3:GetObject",
                &format!("{b}/bootstrap/clawdinator-10/bundle.tar.zst"),
                json!({}),
                "an agent reading a bundle whose prefix extends its own",
            ),
        ),
        (
            &host,
            ask(
                "s3:ListBucket",
                &b,
                json!({"s3:prefix": "bootstrap/clawdinator-2/"}),
                "an agent listing another instance's bundle",
            ),
        ),
        (
            &host,
            ask(
                "s3:GetObject",
                &format!("{b}/age-secrets/clawdinator-discord-token-2.age"),
                json!({}),
                "an agent reading the age files",
            ),
        ),
        (
            &host,
            ask(
                "secretsmanager:GetSecretValue",
                &secret("clawdinator-2/discord-token"),
                json!({}),
                "an agent reading another instance's token",
            ),
        ),
        (
            &host,
            ask("s3:PutObject", &format!("{b}/audit/host/0001.json"), json!({}), "an agent writing the audit trail"),
        ),
        (
            &host,
            ask("s3:DeleteObject", &format!("{b}/audit/ci/0001.json"), json!({}), "an agent deleting an audit record"),
        ),
        (
            &host,
            ask(
                "ssm:SendCommand",
                &instance,
                json!({"ssm:resourceTag/app": "clawdinator"}),
                "an agent running commands on other hosts",
            ),
        ),
        (
            &host,
            ask(
                "ec2:RunInstances",
                &format!("arn:aws:ec2:us-east-1:{a}:instance/*"),
                json!({}),
                "an agent launching instances",
            ),
        ),
        (
            &host,
            ask(
                "iam:PassRole",
                &role("clawdinator-instance-2"),
                json!({"iam:PassedToService": "ec2.amazonaws.com"}),
                "an agent passing a role",
            ),
        ),
        (
            &host,
            ask(
                "lambda:InvokeFunctionUrl",
                &world.control_api_arn(),
                json!({"lambda:FunctionUrlAuthType": "NONE"}),
                "an agent calling the API through an unauthenticated URL",
            ),
        ),
        (
            &api,
            ask(
                "s3:GetObject",
                &format!("{b}/audit/control-api/0001.json"),
                json!({}),
                "the control API reading the audit trail",
            ),
        ),
        (
            &api,
            ask(
                "s3:PutObject",
                &format!("{b}/audit/ci/0001.json"),
                json!({}),
                "the control API writing another chain's records",
            ),
        ),
        (
            &api,
            ask(
                "secretsmanager:GetSecretValue",
                &secret("clawdinator-anthropic-api-key"),
                json!({}),
                "the control API reading a bot's secret",
            ),
        ),
        (
            &api,
            ask(
                "ec2:TerminateInstances",
                &instance,
                json!({"ec2:ResourceTag/app": "clawdinator"}),
                "the control API replacing hosts itself",
            ),
        ),
        (
            &api,
            ask(
                "ssm:SendCommand",
                &instance,
                json!({"ssm:resourceTag/app": "clawdinator"}),
                "the control API running commands on hosts",
            ),
        ),
    ];
    let needed = [
        (
            &host,
            ask(
                "lambda:InvokeFunctionUrl",
                &world.control_api_arn(),
                json!({"lambda:FunctionUrlAuthType": "AWS_IAM"}),
                "fleet control: the bot asks the API",
            ),
        ),
        (
            &host,
            ask(
                "s3:GetObject",
                &format!("{b}/bootstrap/clawdinator-1/bundle.tar.zst"),
                json!({}),
                "bootstrap fetch of its own bundle",
            ),
        ),
        (
            &ci,
            ask(
                "iam:CreateRole",
                &role("clawdinator-instance-9"),
                boundary,
                "fleet deploy creating a new instance's role",
            ),
        ),
        (
            &ci,
            ask(
                "s3:PutObject",
                &format!("{b}/audit/2026/12/02/x.json"),
                json!({"s3:if-none-match": "*"}),
                "CI's audit record",
            ),
        ),
        (
            &api,
            ask(
                "s3:PutObject",
                &format!("{b}/audit/control-api/0001.json"),
                json!({"s3:if-none-match": "*"}),
                "the control API's audit record",
            ),
        ),
        (
            &publisher,
            ask("s3:PutObject", &format!("{public}/pr-intent/2026-12/pr-1.md"), json!({}), "publishing a file"),
        ),
        (
            &publisher,
            ask("s3:DeleteObject", &format!("{public}/pr-intent/2026-12/pr-0.md"), json!({}), "removing a file"),
        ),
        (&publisher, ask("s3:ListBucket", &public, json!({"s3:prefix": "pr-intent/"}), "listing the published tree")),
    ];
    threat_table(&world, &forbidden, &needed);
}

/// One row of a threat table: who asks, and the request with why.
type Row<'a> = (&'a Principal, (testkit::iam::Request, &'static str));

/// The simulator's decisions on `rows`, with every bucket's policy.
fn judged(world: &World, rows: &[Row]) -> Vec<Decision> {
    let bucket_policy = policies::bucket_policy(&testkit::repo_root(), world).unwrap();
    let pairs: Vec<(&Principal, testkit::iam::Request)> = rows.iter().map(|(p, (r, _))| (*p, r.clone())).collect();
    judge(world, &bucket_policy, &pairs).unwrap()
}

/// Every `forbidden` row denied, every `needed` row allowed.
fn threat_table(world: &World, forbidden: &[Row], needed: &[Row]) {
    let allowed: Vec<String> = judged(world, forbidden).iter().filter(|d| d.allowed).map(|d| d.to_string()).collect();
    assert!(allowed.is_empty(), "the policies allow what the threat model forbids:\n{}", allowed.join("\n"));
    let denied: Vec<String> = judged(world, needed).iter().filter(|d| !d.allowed).map(|d| d.to_string()).collect();
    assert!(denied.is_empty(), "the policies deny what the fleet needs:\n{}", denied.join("\n"));
}

/// Closures, not clones: CI pushes signed closures to the cache bucket and
/// writes each release manifest once; hosts only read both. Denied: a host
/// (even with a role CI widened within the boundary) writing the cache or
/// a manifest, CI replacing or deleting a manifest or deleting from the
/// cache, anyone unsigned reading the cache. Allowed: what `nix copy`, the
/// manifest writer and a host's switch call. Each grant these rows need
/// is shown needed: without it, some allowed row is denied.
#[test]
fn only_ci_writes_the_cache_and_each_release_once_and_hosts_only_read_them() {
    use serde_json::json;
    let root = testkit::repo_root();
    let world = World::emulator("clawdinator-fleet");
    let registry = clawdinator::registry::Registry::load(&root.join(clawdinator::registry::DEFAULT_PATH)).unwrap();
    let ci = policies::ci(&root, &world).unwrap();
    let host = policies::instance(&root, &world, &registry.instances["clawdinator-1"], true).unwrap();
    let publisher = policies::pr_intent_publisher(&root, &world, host.clone()).unwrap();
    let api = policies::control_api(&root, &world).unwrap();
    let anyone = policies::anonymous();
    // What CI could make of an instance role: any inline policy, always
    // inside the boundary (iam:CreateRole and PutRolePolicy require it).
    let mut widened = host.clone();
    widened.name = "an instance role CI widened".into();
    let everything =
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]});
    widened.identity.push(("granted-by-ci".into(), everything.clone()));
    // Whoever else may write the bucket (an operator, an admin): the bucket
    // policy alone keeps a manifest written once.
    let admin = Principal {
        name: "an account admin".into(),
        arn: world.role_arn("admin"),
        identity: vec![("admin".into(), everything)],
        boundary: None,
    };

    let (b, c, public) = (world.bucket_arn(), world.cache_bucket_arn(), world.pr_intent_bucket_arn());
    let rev = "0123456789abcdef0123456789abcdef01234567";
    let release = format!("{b}/releases/{rev}.json");
    let narinfo = format!("{c}/0123456789abcdfghijklmnpqrsvwxyz.narinfo");
    let nar = format!("{c}/nar/0123456789abcdfghijklmnpqrsvwxyz0123456789abcdfghijk.nar.zst");
    let published = format!("{public}/pr-intent/2026-12/pr-1.md");
    let once = || json!({"s3:if-none-match": "*"});
    let forbidden = [
        (&host, ask("s3:PutObject", &narinfo, json!({}), "a host pushing a narinfo into the cache")),
        (&host, ask("s3:PutObject", &nar, once(), "a host pushing a NAR into the cache")),
        (&host, ask("s3:DeleteObject", &narinfo, json!({}), "a host deleting a path from the cache")),
        (&host, ask("s3:PutObject", &format!("{b}/releases/x.json"), once(), "a host writing a release manifest")),
        (&host, ask("s3:DeleteObject", &release, json!({}), "a host deleting a release manifest")),
        (&host, ask("s3:ListBucket", &b, json!({"s3:prefix": "bootstrap/"}), "a host listing others' bundles")),
        (&widened, ask("s3:PutObject", &narinfo, json!({}), "an instance role CI widened writing the cache")),
        (&widened, ask("s3:PutObject", &release, once(), "an instance role CI widened writing a release")),
        (&publisher, ask("s3:PutObject", &narinfo, json!({}), "a publisher writing the cache")),
        (&api, ask("s3:PutObject", &narinfo, json!({}), "the control API writing the cache")),
        (&api, ask("s3:PutObject", &release, once(), "the control API writing a release manifest")),
        (&ci, ask("s3:DeleteObject", &release, json!({}), "CI deleting a release manifest")),
        (&ci, ask("s3:DeleteObjectVersion", &release, json!({}), "CI deleting a release manifest's version")),
        (&ci, ask("s3:PutObject", &release, json!({}), "CI replacing a release manifest (no If-None-Match)")),
        (&admin, ask("s3:PutObject", &release, json!({}), "an admin replacing a release manifest")),
        (&admin, ask("s3:DeleteObject", &release, json!({}), "an admin deleting a release manifest")),
        (&admin, ask("s3:DeleteObjectVersion", &release, json!({}), "an admin deleting a release's version")),
        (&ci, ask("s3:DeleteObject", &narinfo, json!({}), "CI deleting a path from the cache")),
        (&ci, ask("s3:DeleteObjectVersion", &nar, json!({}), "CI deleting a NAR's version from the cache")),
        (&anyone, ask("s3:GetObject", &narinfo, json!({}), "anyone reading the cache unsigned")),
        (&anyone, ask("s3:ListBucket", &c, json!({}), "anyone listing the cache unsigned")),
        (&anyone, ask("s3:GetObject", &release, json!({}), "anyone reading a release manifest unsigned")),
    ];
    let needed = [
        (&host, ask("s3:GetObject", &format!("{c}/nix-cache-info"), json!({}), "a host opening the cache")),
        (&host, ask("s3:GetObject", &narinfo, json!({}), "a host substituting: the narinfo")),
        (&host, ask("s3:GetObject", &nar, json!({}), "a host substituting: the NAR")),
        (&host, ask("s3:ListBucket", &c, json!({}), "a narinfo the cache lacks is a 404, not a 403")),
        (&host, ask("s3:ListBucket", &b, json!({"s3:prefix": "releases/"}), "a host finding the newest release")),
        (&host, ask("s3:GetObject", &release, json!({}), "a host reading a release manifest")),
        (&ci, ask("s3:GetObject", &narinfo, json!({}), "nix copy: is the path there already")),
        (&ci, ask("s3:ListBucket", &c, json!({}), "nix copy: a missing narinfo is a 404")),
        (&ci, ask("s3:PutObject", &nar, json!({}), "nix copy: the NAR")),
        (&ci, ask("s3:PutObject", &narinfo, json!({}), "nix copy: the signed narinfo")),
        (&ci, ask("s3:PutObject", &release, once(), "CI writing a release manifest once")),
        (&ci, ask("s3:GetObject", &release, json!({}), "CI reading a release manifest")),
        (&ci, ask("s3:ListBucket", &b, json!({"s3:prefix": "releases/"}), "CI listing the releases")),
        (&ci, ask("s3:GetBucketPolicy", &c, json!({}), "fleet deploy: tofu refreshing the cache bucket")),
        (&admin, ask("s3:PutObject", &release, once(), "an admin writing a new release manifest")),
        // The same judge lets an unsigned request in where a bucket policy
        // says so: the cache's denial above is not the judge's blindness.
        (&anyone, ask("s3:GetObject", &published, json!({}), "anyone reading the public tree")),
    ];
    threat_table(&world, &forbidden, &needed);

    for (principal, sids) in [
        (&host, ["ReadReleases", "ListReleases", "SubstituteFromTheCache", "MissingNarinfoIsNotFound"].as_slice()),
        (&ci, ["PushClosures", "ListTheCache", "WriteReleasesOnce", "ReadReleases", "ListWhatCiReads"].as_slice()),
    ] {
        let rows: Vec<&Row> = needed.iter().filter(|(p, _)| std::ptr::eq(*p, principal)).collect();
        for sid in sids {
            let mut less = (*principal).clone();
            let statements = less.identity[0].1["Statement"].as_array_mut().unwrap();
            let before = statements.len();
            statements.retain(|s| s["Sid"] != *sid);
            assert_eq!(statements.len() + 1, before, "{} has no statement {sid}", principal.name);
            let pairs: Vec<Row> = rows.iter().map(|(_, r)| (&less, r.clone())).collect();
            let denied = judged(&world, &pairs).iter().filter(|d| !d.allowed).count();
            assert!(denied > 0, "{}: without {sid} every row above is still allowed", principal.name);
        }
    }
}
