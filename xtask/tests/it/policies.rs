//! Every IAM policy OpenTofu applies, judged against the calls the commands
//! really make: each principal runs its commands in the emulator with its
//! own access key, the shim logs every call, and the IAM simulator decides
//! each call against that principal's policies rendered from
//! `infra/opentofu/aws/policies/` (testkit::policies, testkit::iam).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use testkit::env::{env, Env};
use testkit::iam::{judge, judge_with, requests_of, Commands, Decision, Facts, ResourcePolicies};
use testkit::policies::{self, Principal, World};

/// The access key of a session of the CI role, `clawdinator-ci`, as a
/// workflow gets one through OIDC: its caller is
/// `…:assumed-role/clawdinator-ci/…`, so its audit copies go where the CI
/// role's go (audit/ci/).
async fn ci_key(env: &Env) -> String {
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    // Another test on the same emulator may have made it already.
    let _ = env.aws.iam().create_role().role_name("clawdinator-ci").assume_role_policy_document(trust).send().await;
    let arn = "arn:aws:iam::123456789012:role/clawdinator-ci";
    let session = env.aws.sts().assume_role().role_arn(arn).role_session_name("github-actions").send().await.unwrap();
    session.credentials().unwrap().access_key_id().to_string()
}

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
    let ci_key = ci_key(&env).await;
    let ci_key = ci_key.as_str();

    let (args, sources, vars) = ci_inputs(&env, &reg);
    // An operator pushed the age files; CI pulls them first.
    let fleet_args: Vec<&str> = sources.iter().map(String::as_str).collect();
    let store =
        |verb, key| xtask_as(&env, key, &[&["secrets", verb, "--bucket", &env.bucket][..], &fleet_args].concat(), &[]);
    ok("secrets push", &store("push", "testing"));
    ok("secrets pull", &store("pull", ci_key));
    let vars: Vec<(&str, &Path)> = vars.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let audit = ["--json", "--audit-bucket", &env.bucket];
    let out = xtask_as(&env, ci_key, &[&audit[..], &["pipeline"], &args].concat(), &vars);
    ok("pipeline", &out);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ami = report["amiId"].as_str().unwrap().to_string();
    // A second image, published the other way; prune then has one to remove.
    let raw = env.path("ci/second.raw");
    testkit::fixtures::sample_raw_image(&raw, 4 << 20, &[(0, 1 << 20)], 7).unwrap();
    let image = testkit::fixtures::write_image_json(&env.path("ci/second"), &raw, "second").unwrap();
    let publish =
        ["image", "publish", "--via", "s3-import", "--image", image.to_str().unwrap(), "--bucket", &env.bucket];
    ok("image publish --via s3-import", &xtask_as(&env, ci_key, &[&audit[..], &publish].concat(), &[]));

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
    ok("fleet deploy", &xtask_as(&env, ci_key, &[&audit[..], &deploy].concat(), &deploy_env));
    // Again, for one: now a replacement (terminate, then launch).
    let again: Vec<&str> = deploy.iter().map(|a| if *a == "all" { "clawdinator-2" } else { a }).collect();
    ok("fleet deploy clawdinator-2", &xtask_as(&env, ci_key, &[&audit[..], &again].concat(), &deploy_env));
    // Exit 3: the hosts run the first AMI, not the newest (drift, reported).
    let status = xtask_as(&env, ci_key, &["--json", "fleet", "status", "--instances", reg_s], &[]);
    assert_eq!(status.status.code(), Some(3), "{}", String::from_utf8_lossy(&status.stderr));
    let rev = "0123456789abcdef0123456789abcdef01234567";
    // `release build`'s manifest of the revision, written with CI's key by
    // the very function it uses (the closures before it need a real nix),
    // twice: the second finds it written and keeps it.
    write_release(&env, ci_key, rev, &["clawdinator-1", "clawdinator-2"]).await;
    let bucket = PathBuf::from(&env.bucket);
    ok(
        "fleet switch",
        &xtask_as(
            &env,
            ci_key,
            &[&audit[..], &["fleet", "switch", rev, "--instances", reg_s]].concat(),
            &[("S3_BUCKET", bucket.as_path())],
        ),
    );
    let refresh = ["fleet", "refresh-secrets", "--instances", reg_s];
    ok("fleet refresh-secrets", &xtask_as(&env, ci_key, &[&audit[..], &refresh].concat(), &[]));
    // A third image makes the second one prunable (the first runs the hosts).
    let raw = env.path("ci/third.raw");
    testkit::fixtures::sample_raw_image(&raw, 4 << 20, &[(0, 1 << 20)], 8).unwrap();
    let image = testkit::fixtures::write_image_json(&env.path("ci/third"), &raw, "third").unwrap();
    let publish = ["image", "publish", "--image", image.to_str().unwrap()];
    ok("image publish", &xtask_as(&env, ci_key, &[&audit[..], &publish].concat(), &[]));
    ok(
        "image ami prune",
        &xtask_as(&env, ci_key, &["--json", "image", "ami", "prune", "--keep", "1", "--bucket", &env.bucket], &[]),
    );

    let ci = policies::ci(&testkit::repo_root(), &world).unwrap();
    let decisions = decisions(&env, &world, ci_key, &ci).await;
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
        // bootstrap upload keeps each instance's age identity in Secrets Manager.
        "secretsmanager:ListSecrets",
        "secretsmanager:CreateSecret",
    ] {
        assert!(actions.contains(needed), "{needed} was never judged: {actions:?}");
    }
}

/// `releases/<rev>.json` naming a system for each of `hosts`, written once
/// with the CI role's `key` as `release build` writes it, then again.
async fn write_release(env: &Env, key: &str, rev: &str, hosts: &[&str]) {
    use clawdinator::release::manifest::{write_once, Release, Written};
    let settings = clawdinator::aws::Settings {
        static_credentials: Some((key.into(), "testing".into())),
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
        "clawdinator-ci/WriteItsOwnAuditRecords",
        "clawdinator-ci/CreateAgeIdentitiesTagged",
        "clawdinator-ci/FindAgeIdentities",
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
        let identity = format!("clawdinator/clawdinator-{target}/age-identity-");
        let read_identity = decisions.iter().any(|d| d.request.resource.contains(&identity));
        assert!(read_identity, "bootstrap fetch never read {identity}…: {decisions:?}");
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

/// Item 6 of issue 26: the public bucket as an unsigned reader meets it,
/// judged by the simulator. Allowed: the original readers' commands on
/// `v1/`, as the AWS CLI sends them (`aws s3 ls --no-sign-request
/// s3://<bucket>/v1/openclaw-openclaw/` lists with that prefix and the
/// delimiter `/`; `aws s3 sync --no-sign-request s3://<bucket>/v1/ …`
/// lists with the prefix `v1/` and no delimiter, then gets each key).
/// Denied (each an attack on the bucket): listing its root, without a
/// prefix, another prefix, or `v1` without its slash (it would match
/// `v10/` or `v1-private/`); reading outside `v1/`; any write; anything
/// over plain HTTP. Each statement of the policy, and the listing's
/// condition, is shown needed: without it some row goes the other way.
#[test]
fn the_public_bucket_shows_only_the_published_tree() {
    let (root, world) = (testkit::repo_root(), World::emulator("clawdinator-fleet"));
    let policy = policies::pr_intent_bucket_policy(&root, &world).unwrap();
    // The table can only try what it thinks of: no grant to the public may
    // name anything but the two reads.
    for s in policy["Statement"].as_array().unwrap().iter().filter(|s| s["Effect"] == "Allow") {
        let action = s["Action"].as_str().unwrap_or("a list of actions");
        assert!(matches!(action, "s3:GetObject" | "s3:ListBucket"), "the public may {action}: {s}");
    }
    let anyone = policies::anonymous();
    let (forbidden, needed) = public_reader_table(&world, &anyone);
    threat_table(&world, &forbidden, &needed);

    let resources = |policy: Value| ResourcePolicies {
        bucket: policies::bucket_policy(&root, &world).unwrap(),
        deploy_app_secret: policies::deploy_app_secret_policy(&root, &world).unwrap(),
        pr_intent_bucket: policy,
    };
    let statements = policy["Statement"].as_array().unwrap();
    let mut sabotaged: Vec<(String, Value)> = (0..statements.len())
        .map(|i| {
            let mut less = policy.clone();
            let removed = less["Statement"].as_array_mut().unwrap().remove(i);
            (format!("without {}", removed["Sid"]), less)
        })
        .collect();
    let mut unconditional = policy.clone();
    for s in unconditional["Statement"].as_array_mut().unwrap() {
        if s["Action"] == "s3:ListBucket" {
            s.as_object_mut().unwrap().remove("Condition");
        }
    }
    sabotaged.push(("the listing without its s3:prefix condition".into(), unconditional));
    for (what, broken) in sabotaged {
        let pairs: Vec<(&Principal, testkit::iam::Request)> =
            forbidden.iter().chain(&needed).map(|(p, (r, _))| (*p, r.clone())).collect();
        let verdicts = judge_with(&world, &resources(broken), &pairs).unwrap();
        let (f, n) = verdicts.split_at(forbidden.len());
        let flipped = f.iter().filter(|d| d.allowed).count() + n.iter().filter(|d| !d.allowed).count();
        assert!(flipped > 0, "{what}, every row is judged as before: the judge cannot fail");
    }
}

/// The publisher (an instance in pr_intent_publishers) mirrors `v1/` and
/// nothing else: the calls `host publish-tree` makes there are allowed; a
/// write or a listing anywhere else in the public bucket (the old
/// `pr-intent/` prefix, the root, a sibling of `v1/`) is denied. Each grant
/// it uses (its policy's two statements, the boundary's mirroring
/// statement) is shown needed: without it some call it makes is denied.
#[test]
fn a_publisher_mirrors_only_v1_and_needs_each_grant_it_has() {
    use serde_json::json;
    let root = testkit::repo_root();
    let world = World::emulator("clawdinator-fleet");
    let registry = clawdinator::registry::Registry::load(&root.join(clawdinator::registry::DEFAULT_PATH)).unwrap();
    let host = policies::instance(&root, &world, &registry.instances["clawdinator-1"], true).unwrap();
    let publisher = policies::pr_intent_publisher(&root, &world, host).unwrap();
    let public = world.pr_intent_bucket_arn();
    let memo = format!("{public}/v1/openclaw-openclaw/1234.txt");
    let p = &publisher;
    let needed = [
        (p, ask("s3:ListBucket", &public, json!({"s3:prefix": "v1/"}), "listing what it published")),
        (p, ask("s3:GetObject", &memo, json!({}), "HeadObject: is this memo's SHA-256 there already")),
        (p, ask("s3:PutObject", &memo, json!({}), "publishing a memo")),
        (p, ask("s3:DeleteObject", &memo, json!({}), "deleting a memo its tree lost")),
    ];
    let forbidden = [
        (
            p,
            ask(
                "s3:PutObject",
                &format!("{public}/pr-intent/v1/openclaw-openclaw/1.txt"),
                json!({}),
                "writing the old prefix",
            ),
        ),
        (p, ask("s3:PutObject", &format!("{public}/v1-private/x.txt"), json!({}), "writing a sibling of v1/")),
        (p, ask("s3:DeleteObject", &format!("{public}/private/x.txt"), json!({}), "deleting outside v1/")),
        (p, ask("s3:ListBucket", &public, json!({"s3:prefix": ""}), "listing the root")),
        (p, ask("s3:ListBucket", &public, json!({"s3:prefix": "pr-intent/"}), "listing the old prefix")),
        (p, ask("s3:PutBucketPolicy", &public, json!({}), "replacing the bucket's policy")),
    ];
    threat_table(&world, &forbidden, &needed);
    let drop = |doc: &mut Value, sid: &str| {
        let statements = doc["Statement"].as_array_mut().unwrap();
        let before = statements.len();
        statements.retain(|s| s["Sid"] != sid);
        assert_eq!(statements.len() + 1, before, "no statement {sid}");
    };
    let mut cut = Vec::new();
    for sid in ["MirrorThePublishedTree", "ListThePublishedTree"] {
        let mut less = publisher.clone();
        drop(&mut less.identity.iter_mut().find(|(n, _)| n == "clawdinator-pr-intent-publish").unwrap().1, sid);
        cut.push((format!("clawdinator-pr-intent-publish/{sid}"), less));
    }
    let mut less = publisher.clone();
    drop(less.boundary.as_mut().unwrap(), "MirrorThePublishedTree");
    cut.push(("the boundary's MirrorThePublishedTree".into(), less));
    // The publisher's grants stand on their own: judged with the bucket's
    // public statements gone (anyone may read v1/, the publisher too, so
    // with them a missing grant of its own would go unseen), every call it
    // makes is still allowed, and without any one grant some call is not.
    let mut private = policies::pr_intent_bucket_policy(&root, &world).unwrap();
    private["Statement"].as_array_mut().unwrap().retain(|s| s["Effect"] != "Allow");
    let resources = ResourcePolicies {
        bucket: policies::bucket_policy(&root, &world).unwrap(),
        deploy_app_secret: policies::deploy_app_secret_policy(&root, &world).unwrap(),
        pr_intent_bucket: private,
    };
    let denied_of = |who: &Principal| {
        let pairs: Vec<(&Principal, testkit::iam::Request)> =
            needed.iter().map(|(_, (r, _))| (who, r.clone())).collect();
        judge_with(&world, &resources, &pairs).unwrap().into_iter().filter(|d| !d.allowed).count()
    };
    assert_eq!(denied_of(&publisher), 0, "the publisher reads its own tree only because it is public");
    for (what, less) in &cut {
        assert!(denied_of(less) > 0, "without {what} every call of the publisher is still allowed");
    }
}

/// What an unsigned reader of the public bucket does (needed) and tries
/// (forbidden), as the AWS CLI sends it.
fn public_reader_table<'a>(world: &World, anyone: &'a Principal) -> (Vec<Row<'a>>, Vec<Row<'a>>) {
    use serde_json::json;
    let public = world.pr_intent_bucket_arn();
    let memo = format!("{public}/v1/openclaw-openclaw/1234.txt");
    let meta = format!("{public}/v1/openclaw-openclaw/1234.meta.json");
    let plain = json!({"aws:SecureTransport": "false"});
    let list = |context: Value, why| (anyone, ask("s3:ListBucket", &public, context, why));
    let needed = vec![
        list(
            json!({"s3:prefix": "v1/openclaw-openclaw/", "s3:delimiter": "/"}),
            "aws s3 ls s3://B/v1/openclaw-openclaw/",
        ),
        list(json!({"s3:prefix": "v1/", "s3:delimiter": "/"}), "aws s3 ls s3://B/v1/"),
        list(json!({"s3:prefix": "v1/"}), "aws s3 sync s3://B/v1/ (lists without a delimiter)"),
        (anyone, ask("s3:GetObject", &memo, json!({}), "aws s3 sync: a memo")),
        (anyone, ask("s3:GetObject", &meta, json!({}), "aws s3 sync: its meta record")),
    ];
    let forbidden = vec![
        list(json!({"s3:prefix": "", "s3:delimiter": "/"}), "aws s3 ls s3://B/ (the bucket's root)"),
        list(json!({}), "listing the whole bucket (no prefix)"),
        list(json!({"s3:prefix": "pr-intent/"}), "listing the old prefix"),
        list(json!({"s3:prefix": "v1", "s3:delimiter": "/"}), "listing v1 without its slash (v10/, v1-private/…)"),
        list(json!({"s3:prefix": "private/"}), "listing another prefix"),
        list(json!({"s3:prefix": "v1/", "aws:SecureTransport": "false"}), "listing v1/ over plain HTTP"),
        (anyone, ask("s3:ListBucketVersions", &public, json!({"s3:prefix": "v1/"}), "listing versions")),
        (
            anyone,
            ask(
                "s3:GetObject",
                &format!("{public}/pr-intent/v1/openclaw-openclaw/1.txt"),
                json!({}),
                "reading the old layout's leftovers",
            ),
        ),
        (anyone, ask("s3:GetObject", &format!("{public}/v1-private/notes.md"), json!({}), "reading a sibling of v1/")),
        (anyone, ask("s3:GetObject", &format!("{public}/private/notes.md"), json!({}), "reading outside v1/")),
        (anyone, ask("s3:GetObject", &memo, plain, "reading a memo over plain HTTP")),
        (anyone, ask("s3:PutObject", &memo, json!({}), "replacing a memo")),
        (anyone, ask("s3:PutObject", &format!("{public}/index.html"), json!({}), "writing a page at the root")),
        (anyone, ask("s3:DeleteObject", &memo, json!({}), "deleting a memo")),
        (anyone, ask("s3:PutBucketPolicy", &public, json!({}), "replacing the bucket's policy")),
        (anyone, ask("s3:GetBucketPolicy", &public, json!({}), "reading the bucket's policy")),
    ];
    (forbidden, needed)
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
    let tagged = json!({"iam:PermissionsBoundary": world.instance_boundary_arn(), "aws:RequestTag/app": "clawdinator"});
    let publisher = policies::pr_intent_publisher(&root, &world, host.clone()).unwrap();
    let public = world.pr_intent_bucket_arn();
    let forbidden = [
        (
            &host,
            ask(
                "s3:PutObject",
                &format!("{public}/v1/openclaw-openclaw/1.txt"),
                json!({}),
                "an instance that is no publisher writing the public tree",
            ),
        ),
        (
            &publisher,
            ask("s3:PutObject", &format!("{public}/index.html"), json!({}), "a publisher writing outside v1/"),
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
            ask("s3:ListBucket", &public, json!({"s3:prefix": "private/"}), "a publisher listing outside v1/"),
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
                &format!("{b}/audit/ci/2026/12/02/x.json"),
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
                tagged,
                "fleet deploy creating a new instance's role",
            ),
        ),
        (
            &ci,
            ask(
                "s3:PutObject",
                &format!("{b}/audit/ci/2026/12/02/x.json"),
                json!({"s3:if-none-match": "*"}),
                "CI's audit record, in its own prefix",
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
            ask("s3:PutObject", &format!("{public}/v1/openclaw-openclaw/1.txt"), json!({}), "publishing a file"),
        ),
        (
            &publisher,
            ask("s3:DeleteObject", &format!("{public}/v1/openclaw-openclaw/0.txt"), json!({}), "removing a file"),
        ),
        (&publisher, ask("s3:ListBucket", &public, json!({"s3:prefix": "v1/"}), "listing the published tree")),
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
    let admin = Principal::new("an account admin", &world.role_arn("admin"), vec![("admin".into(), everything)], None);

    let (b, c, public) = (world.bucket_arn(), world.cache_bucket_arn(), world.pr_intent_bucket_arn());
    let rev = "0123456789abcdef0123456789abcdef01234567";
    let release = format!("{b}/releases/{rev}.json");
    let narinfo = format!("{c}/0123456789abcdfghijklmnpqrsvwxyz.narinfo");
    let nar = format!("{c}/nar/0123456789abcdfghijklmnpqrsvwxyz0123456789abcdfghijk.nar.zst");
    let published = format!("{public}/v1/openclaw-openclaw/1.txt");
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

/// Everyone the second trust pass speaks of, as the policies OpenTofu
/// applies make them.
#[derive(Clone)]
struct Cast {
    ci: Principal,
    host: Principal,
    api: Principal,
    operator: Principal,
    /// An account administrator: `*` on `*`, no boundary.
    admin: Principal,
    /// A role leaked CI credentials could leave behind: named
    /// clawdinator-instance-*, inside the boundary (CreateRole demands it),
    /// with `*` on `*` as its own policy, used on a fleet instance.
    bounded: Principal,
    /// The same role assumed from elsewhere (its trust policy, which IAM
    /// cannot constrain, names another account).
    bounded_off: Principal,
    /// An instance role's own policies with credentials EC2 did not issue.
    host_off: Principal,
    resources: ResourcePolicies,
}

fn star() -> Value {
    serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
}

fn cast(world: &World) -> Cast {
    let root = testkit::repo_root();
    let registry = clawdinator::registry::Registry::load(&root.join(clawdinator::registry::DEFAULT_PATH)).unwrap();
    let host = policies::instance(&root, world, &registry.instances["clawdinator-1"], true).unwrap();
    let boundary = policies::instance_boundary(&root, world).unwrap();
    let everything = vec![("granted-by-ci".to_string(), star())];
    let evil = world.role_arn("clawdinator-instance-evil");
    let bounded = Principal::new("a role CI made, on an instance", &evil, everything, Some(boundary)).on_an_instance();
    Cast {
        ci: policies::ci(&root, world).unwrap(),
        api: policies::control_api(&root, world).unwrap(),
        operator: policies::operator(&root, world).unwrap(),
        admin: Principal::new("an account admin", &world.role_arn("admin"), vec![("admin".into(), star())], None),
        bounded_off: bounded.clone().off_any_instance("a role CI made, assumed from elsewhere"),
        host_off: host.clone().off_any_instance("an instance role's policies, credentials not from EC2"),
        bounded,
        host,
        resources: ResourcePolicies {
            bucket: policies::bucket_policy(&root, world).unwrap(),
            deploy_app_secret: policies::deploy_app_secret_policy(&root, world).unwrap(),
            pr_intent_bucket: policies::pr_intent_bucket_policy(&root, world).unwrap(),
        },
    }
}

/// What is wrong with a threat table under `cast`'s resource policies: each
/// forbidden row allowed, each needed row denied.
fn wrongs(world: &World, cast: &Cast, forbidden: &[Row], needed: &[Row]) -> Vec<String> {
    let pairs: Vec<(&Principal, testkit::iam::Request)> =
        forbidden.iter().chain(needed).map(|(p, (r, _))| (*p, r.clone())).collect();
    let verdicts = judge_with(world, &cast.resources, &pairs).unwrap();
    let (forbidden_verdicts, needed_verdicts) = verdicts.split_at(forbidden.len());
    let allowed = forbidden_verdicts.iter().filter(|d| d.allowed).map(|d| format!("allowed: {d}"));
    let denied = needed_verdicts.iter().filter(|d| !d.allowed).map(|d| format!("denied: {d}"));
    allowed.chain(denied).collect()
}

/// A threat table as a function of the cast: (forbidden, needed).
type Table = for<'a> fn(&'a Cast, &World) -> (Vec<Row<'a>>, Vec<Row<'a>>);

/// Which policy of the cast a statement is removed from.
#[derive(Clone, Copy)]
enum Doc {
    Boundary,
    Bucket,
    DeployAppSecret,
    Ci,
    Host,
    Api,
    Operator,
}

/// The cast with the statement `sid` removed from `doc` (the boundary from
/// every principal that has it); panics if there is no such statement.
fn without(cast: &Cast, doc: Doc, sid: &str) -> Cast {
    let mut less = cast.clone();
    let Cast { ci, host, api, operator, bounded, bounded_off, host_off, resources, .. } = &mut less;
    let targets: Vec<&mut Value> = match doc {
        Doc::Boundary => {
            [host, host_off, bounded, bounded_off].into_iter().map(|p| p.boundary.as_mut().unwrap()).collect()
        }
        Doc::Bucket => vec![&mut resources.bucket],
        Doc::DeployAppSecret => vec![&mut resources.deploy_app_secret],
        Doc::Ci => vec![&mut ci.identity[0].1],
        Doc::Host => vec![&mut host.identity[0].1],
        Doc::Api => vec![&mut api.identity[0].1],
        Doc::Operator => vec![&mut operator.identity[0].1],
    };
    let removed: usize = targets
        .into_iter()
        .map(|policy| {
            let statements = policy["Statement"].as_array_mut().unwrap();
            let before = statements.len();
            statements.retain(|s| s["Sid"] != sid);
            before - statements.len()
        })
        .sum();
    assert!(removed > 0, "no statement {sid} to remove");
    less
}

/// The table holds for the cast, and fails once any one of `statements`
/// is removed: no statement it names is there for nothing.
fn holds_and_each_statement_matters(world: &World, cast: &Cast, table: Table, statements: &[(Doc, &str)]) {
    let (forbidden, needed) = table(cast, world);
    let wrong = wrongs(world, cast, &forbidden, &needed);
    assert!(wrong.is_empty(), "the policies break the threat table:\n{}", wrong.join("\n"));
    for (doc, sid) in statements {
        let less = without(cast, *doc, sid);
        let (forbidden, needed) = table(&less, world);
        assert!(!wrongs(world, &less, &forbidden, &needed).is_empty(), "without {sid} the table still holds: untested");
    }
}

/// What every instance may read, and only from a fleet instance: `who`
/// asking for each.
fn fleet_reads<'a>(who: &'a Principal, world: &World) -> Vec<Row<'a>> {
    use serde_json::json;
    let (b, c, a) = (world.bucket_arn(), world.cache_bucket_arn(), &world.account);
    let public = world.pr_intent_bucket_arn();
    let secret = |n: &str| world.secret_arn(&format!("clawdinator/{n}"));
    let ssm = |kind: &str| format!("arn:aws:ssm:us-east-1:{a}:{kind}");
    vec![
        (who, ask("s3:GetObject", &format!("{b}/bootstrap/clawdinator-1/bundle.tar.zst"), json!({}), "its bundle")),
        (who, ask("s3:ListBucket", &b, json!({"s3:prefix": "bootstrap/clawdinator-1/"}), "listing its bundle")),
        (who, ask("s3:GetObject", &format!("{b}/releases/x.json"), json!({}), "a release manifest")),
        (who, ask("s3:GetObject", &format!("{c}/nix-cache-info"), json!({}), "the cache")),
        (who, ask("s3:ListBucket", &c, json!({}), "a narinfo the cache lacks is a 404")),
        (
            who,
            ask(
                "secretsmanager:GetSecretValue",
                &secret("clawdinator-anthropic-api-key"),
                json!({}),
                "a common secret",
            ),
        ),
        (who, ask("secretsmanager:DescribeSecret", &secret("clawdinator-1/discord-token"), json!({}), "its token")),
        (who, ask("secretsmanager:GetSecretValue", &secret("clawdinator-1/age-identity"), json!({}), "its identity")),
        (who, ask("ssm:GetParameter", &ssm("parameter/clawdinator/control-api-url"), json!({}), "the API's URL")),
        (
            who,
            ask(
                "lambda:InvokeFunctionUrl",
                &world.control_api_arn(),
                json!({"lambda:FunctionUrlAuthType": "AWS_IAM"}),
                "asking the control API",
            ),
        ),
        (who, ask("ssm:UpdateInstanceInformation", "*", json!({}), "the SSM agent")),
        (who, ask("ec2messages:GetMessages", "*", json!({}), "the SSM agent's commands")),
        (who, ask("ssm:GetDocument", &ssm("document/clawdinator-switch"), json!({}), "the fleet's document")),
        (who, ask("s3:PutObject", &format!("{public}/v1/openclaw-openclaw/1.txt"), json!({}), "publishing")),
    ]
}

/// Item 3: what leaked CI credentials can mint. A role CI creates inside
/// the boundary with `*` as its policy is denied every request signed with
/// credentials EC2 did not issue to an instance (a trust policy naming
/// another account buys nothing); on a fleet instance it reads only the
/// fleet's own objects, secrets, parameters and documents, and never the
/// deploy App's key, which nobody but the control API's role reads, not
/// even an account admin. Every boundary statement and the key's resource
/// policy are shown needed.
#[test]
fn a_role_ci_creates_is_worthless_off_an_instance_and_on_one_reads_only_the_fleets() {
    fn table<'a>(c: &'a Cast, world: &World) -> (Vec<Row<'a>>, Vec<Row<'a>>) {
        use serde_json::json;
        let (b, a) = (world.bucket_arn(), &world.account);
        let key = world.deploy_app_secret_arn();
        let other = format!("arn:aws:secretsmanager:us-east-1:{a}:secret:other-app/db-password-AbCdEf");
        let mut forbidden: Vec<Row> = fleet_reads(&c.bounded_off, world);
        forbidden.extend(fleet_reads(&c.host_off, world));
        let on = &c.bounded;
        forbidden.extend([
            (on, ask("secretsmanager:GetSecretValue", &key, json!({}), "reading the deploy App's key")),
            (on, ask("secretsmanager:PutSecretValue", &key, json!({}), "replacing the deploy App's key")),
            (on, ask("secretsmanager:GetSecretValue", &other, json!({}), "reading another app's secret")),
            (
                on,
                ask(
                    "secretsmanager:PutSecretValue",
                    &world.secret_arn("clawdinator/clawdinator-1/age-identity"),
                    json!({}),
                    "replacing an identity",
                ),
            ),
            (on, ask("s3:GetObject", &format!("{b}/age-secrets/x.age"), json!({}), "reading the age files")),
            (on, ask("s3:GetObject", &format!("{b}/tfstate/fleet.tfstate"), json!({}), "reading the state")),
            (on, ask("s3:GetObject", &format!("{b}/audit/ci/x.json"), json!({}), "reading the audit trail")),
            (on, ask("s3:GetObject", "arn:aws:s3:::other-app/data.db", json!({}), "reading another bucket")),
            (on, ask("s3:PutObject", &format!("{b}/bootstrap/clawdinator-2/x"), json!({}), "writing a bundle")),
            (
                on,
                ask(
                    "ssm:GetParameter",
                    &format!("arn:aws:ssm:us-east-1:{a}:parameter/other-app/db-password"),
                    json!({}),
                    "reading another app's parameter",
                ),
            ),
            (
                on,
                ask(
                    "ssm:GetDocument",
                    &format!("arn:aws:ssm:us-east-1:{a}:document/other-app-deploy"),
                    json!({}),
                    "reading another app's document",
                ),
            ),
            (
                on,
                ask(
                    "lambda:InvokeFunctionUrl",
                    &format!("arn:aws:lambda:us-east-1:{a}:function:other-app"),
                    json!({"lambda:FunctionUrlAuthType": "AWS_IAM"}),
                    "calling another function",
                ),
            ),
            (on, ask("iam:CreateRole", &world.role_arn("clawdinator-instance-x"), json!({}), "minting roles")),
            (on, ask("sts:AssumeRole", &world.role_arn("clawdinator-ci"), json!({}), "assuming another role")),
            (
                on,
                ask("dynamodb:PutItem", &world.cooldown_table_arn(), json!({}), "clearing the control API's cooldowns"),
            ),
            (&c.host, ask("secretsmanager:GetSecretValue", &key, json!({}), "an agent reading the deploy App's key")),
            (&c.admin, ask("secretsmanager:GetSecretValue", &key, json!({}), "an account admin reading it")),
            (&c.ci, ask("secretsmanager:GetSecretValue", &key, json!({}), "CI reading it")),
            (&c.operator, ask("secretsmanager:GetSecretValue", &key, json!({}), "an operator reading it")),
        ]);
        let mut needed = fleet_reads(&c.bounded, world);
        needed.push((&c.api, ask("secretsmanager:GetSecretValue", &key, json!({}), "the control API minting a token")));
        needed.push((&c.admin, ask("secretsmanager:PutSecretValue", &key, json!({}), "an admin rotating the key")));
        (forbidden, needed)
    }
    let world = World::emulator("clawdinator-fleet");
    let boundary = policies::instance_boundary(&testkit::repo_root(), &world).unwrap();
    let mut statements: Vec<(Doc, String)> = boundary["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (Doc::Boundary, s["Sid"].as_str().unwrap().to_string()))
        .collect();
    statements.push((Doc::DeployAppSecret, "OnlyTheControlApiReadsIt".into()));
    // The deploy App's key is denied in the boundary by name, not left to
    // its resource policy, which exists only while the control API is on:
    // without that policy a role CI made still cannot read it.
    let statements: Vec<(Doc, &str)> =
        statements.iter().map(|(d, s)| (*d, s.as_str())).filter(|(_, s)| *s != "NeverTheDeployAppsKey").collect();
    holds_and_each_statement_matters(&world, &cast(&world), table, &statements);
    fn without_the_keys_policy<'a>(c: &'a Cast, world: &World) -> (Vec<Row<'a>>, Vec<Row<'a>>) {
        let key = world.deploy_app_secret_arn();
        let read = |who, why| (who, ask("secretsmanager:GetSecretValue", &key, Value::Null, why));
        let forbidden = vec![read(&c.bounded, "a role CI made"), read(&c.host, "an agent")];
        (forbidden, vec![read(&c.api, "the control API")])
    }
    let mut off = cast(&world);
    off.resources.deploy_app_secret = Value::Null;
    holds_and_each_statement_matters(
        &world,
        &off,
        without_the_keys_policy,
        &[(Doc::Boundary, "NeverTheDeployAppsKey")],
    );
}

/// The CI role may create instance roles only inside the boundary and
/// tagged as the fleet's, never change a role's trust, and pass them only
/// to EC2.
#[test]
fn ci_creates_instance_roles_only_bounded_and_tagged_and_passes_them_only_to_ec2() {
    fn table<'a>(c: &'a Cast, world: &World) -> (Vec<Row<'a>>, Vec<Row<'a>>) {
        use serde_json::json;
        let role = world.role_arn("clawdinator-instance-9");
        let boundary = world.instance_boundary_arn();
        let tagged =
            json!({"iam:PermissionsBoundary": boundary, "aws:RequestTag/app": "clawdinator", "aws:TagKeys": ["app"]});
        let ci = &c.ci;
        let forbidden = vec![
            (ci, ask("iam:CreateRole", &role, json!({"iam:PermissionsBoundary": boundary}), "an untagged role")),
            (
                ci,
                ask(
                    "iam:CreateRole",
                    &role,
                    json!({"iam:PermissionsBoundary": boundary, "aws:RequestTag/app": "other", "aws:TagKeys": ["app"]}),
                    "a role tagged as another app's",
                ),
            ),
            (ci, ask("iam:CreateRole", &role, json!({"aws:RequestTag/app": "clawdinator"}), "an unbounded role")),
            (ci, ask("iam:UpdateAssumeRolePolicy", &role, json!({}), "trusting another account later")),
            (ci, ask("iam:PutRolePermissionsBoundary", &role, json!({}), "changing the boundary")),
            (ci, ask("iam:CreatePolicyVersion", &boundary, json!({}), "widening the boundary itself")),
            (
                ci,
                ask(
                    "iam:PassRole",
                    &role,
                    json!({"iam:PassedToService": "lambda.amazonaws.com"}),
                    "handing a role to another service",
                ),
            ),
        ];
        let needed = vec![
            (ci, ask("iam:CreateRole", &role, tagged, "fleet deploy: a new instance's role")),
            (ci, ask("iam:PutRolePolicy", &role, json!({"iam:PermissionsBoundary": boundary}), "its policy")),
            (ci, ask("iam:PassRole", &role, json!({"iam:PassedToService": "ec2.amazonaws.com"}), "launching it")),
        ];
        (forbidden, needed)
    }
    let statements = [
        (Doc::Ci, "CreateInstanceRolesWithinTheBoundary"),
        (Doc::Ci, "InstanceRolePoliciesWithinTheBoundary"),
        (Doc::Ci, "PassOnlyInstanceRoles"),
    ];
    let world = World::emulator("clawdinator-fleet");
    holds_and_each_statement_matters(&world, &cast(&world), table, &statements);
}

/// Item 2: each instance's age identity is a secret only that instance's
/// role reads; the CI role creates (tagged), replaces, tags, describes and
/// deletes identities but never reads one; the operators' group grants
/// nothing on them (an operator who uploads bundles does it as CI does, or
/// with an administrator's credentials, which the account has anyway).
#[test]
fn only_its_instance_reads_an_age_identity_and_ci_manages_them_unread() {
    fn table<'a>(c: &'a Cast, world: &World) -> (Vec<Row<'a>>, Vec<Row<'a>>) {
        use serde_json::json;
        let identity = |n: &str| world.secret_arn(&format!("clawdinator/{n}/age-identity"));
        let version = json!({"secretsmanager:VersionId": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"});
        let tag = json!({"aws:RequestTag/app": "clawdinator", "aws:TagKeys": ["app", "clawdinator:instance"]});
        let (ci, host) = (&c.ci, &c.host);
        let forbidden = vec![
            (host, ask("secretsmanager:GetSecretValue", &identity("clawdinator-2"), version.clone(), "another's")),
            (host, ask("secretsmanager:GetSecretValue", &identity("clawdinator-10"), json!({}), "a longer name's")),
            (host, ask("secretsmanager:PutSecretValue", &identity("clawdinator-1"), json!({}), "replacing its own")),
            (host, ask("secretsmanager:DeleteSecret", &identity("clawdinator-1"), json!({}), "deleting its own")),
            (ci, ask("secretsmanager:GetSecretValue", &identity("clawdinator-1"), json!({}), "CI reading one")),
            (ci, ask("secretsmanager:GetSecretValue", &identity("clawdinator-2"), version.clone(), "CI, a version")),
            (ci, ask("secretsmanager:CreateSecret", &identity("clawdinator-9"), json!({}), "CI, an untagged one")),
            (
                ci,
                ask(
                    "secretsmanager:CreateSecret",
                    &world.secret_arn("clawdinator/clawdinator-9/discord-token"),
                    tag.clone(),
                    "CI creating a secret that is no identity",
                ),
            ),
            (
                ci,
                ask(
                    "secretsmanager:PutSecretValue",
                    &world.secret_arn("clawdinator/clawdinator-anthropic-api-key"),
                    json!({}),
                    "CI replacing a bot's secret",
                ),
            ),
            (
                ci,
                ask("secretsmanager:PutSecretValue", &world.deploy_app_secret_arn(), json!({}), "CI replacing the key"),
            ),
            (
                ci,
                ask(
                    "secretsmanager:DeleteSecret",
                    &world.secret_arn("clawdinator/clawdinator-1/discord-token"),
                    json!({}),
                    "CI deleting a token",
                ),
            ),
            (&c.operator, ask("secretsmanager:GetSecretValue", &identity("clawdinator-1"), json!({}), "an operator")),
        ];
        let needed = vec![
            (host, ask("secretsmanager:GetSecretValue", &identity("clawdinator-1"), version, "bootstrap fetch")),
            (ci, ask("secretsmanager:ListSecrets", "*", json!({}), "bootstrap upload: which exist")),
            (ci, ask("secretsmanager:CreateSecret", &identity("clawdinator-9"), tag.clone(), "a new instance's")),
            (ci, ask("secretsmanager:TagResource", &identity("clawdinator-9"), tag, "tagged at creation")),
            (ci, ask("secretsmanager:PutSecretValue", &identity("clawdinator-1"), json!({}), "rotating one")),
            (ci, ask("secretsmanager:DescribeSecret", &identity("clawdinator-1"), json!({}), "its versions")),
            (ci, ask("secretsmanager:DeleteSecret", &identity("clawdinator-9"), json!({}), "a failed upload's")),
        ];
        (forbidden, needed)
    }
    let statements = [
        (Doc::Host, "OwnAgeIdentity"),
        (Doc::Ci, "FindAgeIdentities"),
        (Doc::Ci, "CreateAgeIdentitiesTagged"),
        (Doc::Ci, "ManageAgeIdentitiesWithoutReading"),
    ];
    let world = World::emulator("clawdinator-fleet");
    holds_and_each_statement_matters(&world, &cast(&world), table, &statements);
}

/// Item 5: each writer of the audit trail writes only its own prefix
/// (audit/control-api/ the control API's role, audit/ci/ the CI role,
/// audit/operators/ the operators), and nobody the dated layout of old
/// copies; the bucket policy holds it even against an account admin.
#[test]
fn each_audit_writer_writes_only_its_own_prefix() {
    fn table<'a>(c: &'a Cast, world: &World) -> (Vec<Row<'a>>, Vec<Row<'a>>) {
        use serde_json::json;
        let at = |prefix: &str| format!("{}/audit/{prefix}2026/12/03/20261203T101500Z-ab12.json", world.bucket_arn());
        let once = || json!({"s3:if-none-match": "*"});
        let put = |who, prefix: &str, why| (who, ask("s3:PutObject", &at(prefix), once(), why));
        let forbidden = vec![
            put(&c.ci, "control-api/", "CI forging a control API record"),
            put(&c.ci, "operators/", "CI writing as an operator"),
            put(&c.ci, "", "CI writing into the old dated layout"),
            put(&c.api, "ci/", "the control API writing as CI"),
            put(&c.api, "operators/", "the control API writing as an operator"),
            put(&c.operator, "ci/", "an operator writing as CI"),
            put(&c.operator, "control-api/", "an operator writing as the control API"),
            put(&c.admin, "ci/", "an admin writing as CI"),
            put(&c.admin, "control-api/", "an admin writing as the control API"),
            put(&c.admin, "", "an admin writing into the old dated layout"),
            put(&c.bounded, "operators/", "a role CI made writing as an operator"),
            put(&c.host, "operators/", "an agent writing the audit trail"),
        ];
        let needed = vec![
            put(&c.ci, "ci/", "CI's record"),
            put(&c.api, "control-api/", "the control API's record"),
            put(&c.operator, "operators/", "an operator's record"),
            put(&c.admin, "operators/", "an admin (an operator) writing an operator's record"),
            (&c.ci, ask("s3:GetObject", &at("control-api/"), json!({}), "CI reading the trail (audit verify)")),
        ];
        (forbidden, needed)
    }
    let statements = [
        (Doc::Bucket, "OnlyTheControlApiWritesItsRecords"),
        (Doc::Bucket, "OnlyCiWritesCiRecords"),
        (Doc::Bucket, "TheDatedLayoutIsClosed"),
        (Doc::Ci, "WriteItsOwnAuditRecords"),
        (Doc::Ci, "ReadTheAuditTrail"),
        (Doc::Api, "AuditTrail"),
        (Doc::Operator, "WriteOperatorsAuditRecords"),
    ];
    let world = World::emulator("clawdinator-fleet");
    holds_and_each_statement_matters(&world, &cast(&world), table, &statements);
}

/// Item 4: only the control API's role reads and writes its cooldowns (a
/// bot that could write the table could clear its own cooldown); a
/// transaction is judged item by item, as AWS authorises it.
#[test]
fn only_the_control_api_writes_its_cooldowns() {
    fn table<'a>(c: &'a Cast, world: &World) -> (Vec<Row<'a>>, Vec<Row<'a>>) {
        use serde_json::json;
        let t = world.cooldown_table_arn();
        let in_a_transaction = || json!({"dynamodb:EnclosingOperation": "TransactWriteItems"});
        let forbidden = vec![
            (&c.host, ask("dynamodb:PutItem", &t, json!({}), "an agent clearing its cooldown")),
            (&c.host, ask("dynamodb:UpdateItem", &t, json!({}), "an agent moving its cooldown")),
            (&c.host, ask("dynamodb:DeleteItem", &t, json!({}), "an agent deleting its cooldown")),
            (&c.bounded, ask("dynamodb:PutItem", &t, json!({}), "a role CI made clearing cooldowns")),
            (&c.ci, ask("dynamodb:PutItem", &t, json!({}), "CI writing the cooldowns")),
            (&c.ci, ask("dynamodb:DeleteItem", &t, json!({}), "CI deleting a cooldown")),
            (&c.operator, ask("dynamodb:PutItem", &t, json!({}), "an operator's group writing the cooldowns")),
            (&c.api, ask("dynamodb:DeleteTable", &t, json!({}), "the control API dropping the table")),
            (&c.api, ask("dynamodb:Scan", &t, json!({}), "the control API reading every caller")),
        ];
        let needed = vec![
            (&c.api, ask("dynamodb:GetItem", &t, json!({}), "when may this caller deploy")),
            (&c.api, ask("dynamodb:PutItem", &t, in_a_transaction(), "the caller's cooldown, in a transaction")),
            (&c.api, ask("dynamodb:UpdateItem", &t, in_a_transaction(), "the target's cooldown, in a transaction")),
            (&c.api, ask("dynamodb:ConditionCheckItem", &t, in_a_transaction(), "a condition in a transaction")),
        ];
        (forbidden, needed)
    }
    let world = World::emulator("clawdinator-fleet");
    holds_and_each_statement_matters(&world, &cast(&world), table, &[(Doc::Api, "Cooldowns")]);
    // The judge's own mapping: a logged TransactWriteItems becomes one
    // request per item, each with the operation it holds.
    let items: Vec<Value> = ["Put", "Update", "ConditionCheck"]
        .iter()
        .map(|kind| serde_json::json!({ *kind: {"TableName": policies::COOLDOWN_TABLE, "Key": {"key": {"S": "x"}}} }))
        .collect();
    let call =
        serde_json::json!({"service": "dynamodb", "operation": "TransactWriteItems", "json": {"TransactItems": items}});
    let requests = testkit::iam::requests(&call, &world, &Facts::default()).unwrap();
    let actions: Vec<&str> = requests.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem"]);
    assert!(requests.iter().all(|r| r.resource == world.cooldown_table_arn()), "{requests:?}");
}

/// One logged call of `service` `operation` with every field the judge
/// reads filled in: a bucket and key, an instance, a snapshot, a role, a
/// table, a secret.
fn any_call(service: &str, operation: &str) -> Value {
    let path = if service == "ebs" { "/snapshots/snap-1/blocks/1" } else { "/fleet/key" };
    serde_json::json!({
        "service": service,
        "operation": operation,
        "path": path,
        "query": "",
        "headers": {"x-amz-copy-source": "/fleet/source"},
        "form": {
            "SnapshotId": "snap-1", "ImageId": "ami-1", "ImportTaskId": "import-snap-1",
            "InstanceId": "i-1", "InstanceId.1": "i-1", "ResourceId.1": "i-1",
            "RoleName": "role", "InstanceProfileName": "profile",
            "PolicyArn": "arn:aws:iam::123456789012:policy/policy",
        },
        "json": {
            "TableName": "table", "SecretId": "secret", "Name": "/clawdinator/name",
            "DocumentName": "AWS-RunShellScript", "InstanceIds": ["i-1"],
            "TransactItems": [{"Put": {"TableName": "table"}}],
        },
    })
}

/// One source for each fact: the library's table of IAM actions (named in
/// the message of a denial) and the judge (what the policies must grant)
/// agree on every operation the library calls: the judge asks IAM for
/// exactly the actions the message names.
#[test]
fn the_judge_asks_for_the_actions_a_denial_message_names() {
    let world = World::emulator("fleet");
    let facts =
        Facts { secret_arns: BTreeMap::from([("secret".to_string(), world.secret_arn("secret"))]), ..Facts::default() };
    let mut disagree = Vec::new();
    for (operation, message) in clawdinator::aws::actions::ACTIONS {
        let (service, name) = operation.rsplit_once(' ').expect("`Service Operation`");
        // The call log names an S3 call by its method and path: a GET of
        // a bucket is ListObjects there, whichever version it is.
        let name = if *operation == "S3 ListObjectsV2" { "ListObjects" } else { name };
        let call = any_call(&service.replace(' ', "").to_lowercase(), name);
        let asked: BTreeSet<String> = match testkit::iam::requests(&call, &world, &facts) {
            Ok(requests) => requests.into_iter().map(|r| r.action).collect(),
            Err(err) => {
                disagree.push(format!("{operation}: the judge knows no mapping ({err:#})"));
                continue;
            }
        };
        let words = message.split(|c: char| !(c.is_ascii_alphanumeric() || c == ':'));
        let named: BTreeSet<String> = words.filter(|w| w.contains(':')).map(str::to_string).collect();
        // AWS never denies GetCallerIdentity, so the judge asks for nothing.
        let never_denied = asked.is_empty() && *operation == "STS GetCallerIdentity";
        if asked != named && !never_denied {
            disagree.push(format!("{operation}: the message names {named:?}, the judge asks for {asked:?}"));
        }
    }
    assert!(clawdinator::aws::actions::ACTIONS.len() > 50, "the table lost operations");
    assert!(disagree.is_empty(), "the two tables disagree:\n{}", disagree.join("\n"));
}
