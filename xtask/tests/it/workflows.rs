//! The workflows run as tests: each job's `run:` steps in order, as a
//! GitHub runner runs them (bash -e, the workflow's, job's and step's
//! `env:`, `$GITHUB_ENV`, `$GITHUB_OUTPUT`, `$RUNNER_TEMP`), with the
//! repository variables and secrets of a fixture, against the emulator as
//! the CI role: its OIDC token comes from a loopback token endpoint, and
//! every call it makes is judged by the IAM simulator against the CI
//! policy OpenTofu applies. `uses:` steps stand for what they set up:
//! checkout is a copy of the repository's files (its seeds list pointing at
//! local repositories, committed), install-nix is a stand-in `nix` whose
//! `develop --command` runs the command (`cargo xtask` is the built xtask),
//! whose build of the hosts' systems gives store paths and whose `copy`
//! records (see [`NIX_STANDIN`]), and whose other `build` is the image
//! stand-in; `tofu` is the stand-in tofu.
//!
//! Some runs need no AWS: their `nix` and `cargo` only record what they were
//! asked (the order of a job's commands, and what reached them), and the
//! pin bump runs against a local origin. And no workflow may push main: a
//! scan of every `run:` script.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use testkit::env::{env, Env};
use testkit::iam::{judge, requests, Commands, Facts};
use testkit::policies::{self, World};

const REVISION: &str = "0123456789abcdef0123456789abcdef01234567";
/// The control API's deploy App, as GitHub names the actor of its dispatches.
const DEPLOY_APP: &str = "clawdinator-deploy[bot]";

/// A workflow file as JSON (PyYAML from the emulator's virtualenv).
fn load(root: &Path, name: &str) -> Value {
    let path = root.join(".github/workflows").join(name);
    let script = "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)";
    let out =
        std::process::Command::new(testkit::emulator::venv_python()).args(["-c", script]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What `${{ … }}` can read.
struct Context {
    vars: BTreeMap<String, String>,
    secrets: BTreeMap<String, String>,
    inputs: BTreeMap<String, String>,
    outputs: BTreeMap<String, String>,
    /// Who started the run (`github.triggering_actor`).
    actor: String,
    /// What started it (`github.event_name`) and which attempt this is
    /// (`github.run_attempt`: 2 and more are re-runs, started by a person).
    event: String,
    attempt: u32,
    /// The commit the run is for (`github.sha`).
    sha: String,
}

impl Context {
    fn value(&self, expr: &str) -> String {
        let (scope, name) = expr.split_once('.').unwrap_or((expr, ""));
        let from = |map: &BTreeMap<String, String>| map.get(name).cloned().unwrap_or_default();
        match scope {
            "vars" => from(&self.vars),
            "secrets" => from(&self.secrets),
            "inputs" => from(&self.inputs),
            "github" if name == "sha" => self.sha.clone(),
            "github" if name == "triggering_actor" => self.actor.clone(),
            "github" if name == "event_name" => self.event.clone(),
            "github" if name == "run_attempt" => self.attempt.to_string(),
            "github" if name == "token" => "ghs_workflow_token".into(),
            "github" if name == "repository" => "openclaw/clawdinators".into(),
            "steps" => self.outputs.get(name).cloned().unwrap_or_default(),
            _ => panic!("the test runner does not know the expression `{expr}`"),
        }
    }

    fn expand(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find("${{") {
            let end = rest[at..].find("}}").expect("a closed expression") + at;
            out.push_str(&rest[..at]);
            out.push_str(&self.value(rest[at + 3..end].trim()));
            rest = &rest[end + 2..];
        }
        out.push_str(rest);
        out
    }
}

/// `KEY=VALUE` lines (and `KEY<<DELIM` blocks) of a `$GITHUB_ENV` or `$GITHUB_OUTPUT` file.
fn key_values(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut found = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some((key, delim)) = line.split_once("<<") {
            let value: Vec<&str> = lines.by_ref().take_while(|l| *l != delim).collect();
            found.insert(key.to_string(), value.join("\n"));
        } else if let Some((key, value)) = line.split_once('=') {
            found.insert(key.to_string(), value.to_string());
        }
    }
    found
}

/// The runner's machine: the checkout, the tools on PATH, the environment
/// every job starts from.
struct Runner<'a> {
    checkout: PathBuf,
    temp: PathBuf,
    base: BTreeMap<String, String>,
    /// Where the CI calls go, if anywhere; each step marks the calls it made.
    emulator: Option<&'a testkit::emulator::Emulator>,
    steps: std::cell::RefCell<Commands>,
}

impl Runner<'_> {
    /// Run one job; Err names the failed step with its output.
    fn job(&self, workflow: &Value, job: &str, context: &mut Context) -> Result<Vec<String>, String> {
        let spec = &workflow["jobs"][job];
        let mut env = self.base.clone();
        for scope in [&workflow["env"], &spec["env"]] {
            for (k, v) in scope.as_object().into_iter().flatten() {
                env.insert(k.clone(), context.expand(v.as_str().unwrap_or("")));
            }
        }
        let mut ran = Vec::new();
        for (n, step) in spec["steps"].as_array().unwrap().iter().enumerate() {
            let Some(script) = step["run"].as_str() else { continue };
            let name = step["name"].as_str().map(String::from).unwrap_or(format!("step {n}"));
            let files = ["GITHUB_ENV", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"]
                .map(|f| self.temp.join(format!("{job}-{n}-{f}")));
            let mut command = std::process::Command::new("bash");
            command.args(["--noprofile", "--norc", "-eo", "pipefail", "-c", &context.expand(script)]);
            command.current_dir(&self.checkout).env_clear().envs(&env);
            for (k, v) in step["env"].as_object().into_iter().flatten() {
                command.env(k, context.expand(v.as_str().unwrap_or("")));
            }
            for (var, file) in ["GITHUB_ENV", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"].iter().zip(&files) {
                command.env(var, file);
            }
            let out = command.output().unwrap();
            if !out.status.success() {
                let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
                return Err(format!("job {job}, step `{name}` failed:\n{text}"));
            }
            let logged = self.emulator.and_then(|e| e.calls().ok()).map(|c| c.len()).unwrap_or(0);
            let workflow_name = workflow["name"].as_str().unwrap_or("?");
            self.steps.borrow_mut().ran(&format!("{workflow_name} / {job} / {name}"), logged);
            env.extend(key_values(&files[0]));
            if let Some(id) = step["id"].as_str() {
                for (k, v) in key_values(&files[1]) {
                    context.outputs.insert(format!("{id}.outputs.{k}"), v);
                }
            }
            ran.push(name);
        }
        Ok(ran)
    }
}

fn write_script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The checkout: the repository's tracked files, its seeds list pointing at a local repository.
fn check_out(root: &Path, dest: &Path) {
    let files = std::process::Command::new("git").args(["ls-files", "-z"]).current_dir(root).output().unwrap();
    for file in files.stdout.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let rel = Path::new(std::str::from_utf8(file).unwrap());
        let target = dest.join(rel);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(root.join(rel), target).unwrap();
    }
    let upstream = dest.join("../upstream/seed");
    let url = testkit::fixtures::git_repo(&upstream, &[("README.md", "seed\n")], "main").unwrap();
    std::fs::write(dest.join("clawdinator/repos.tsv"), format!("seed\t{url}\tmain\n")).unwrap();
}

/// The stand-in `nix` of the runs against the emulator. `develop …
/// --command X` runs X; `flake update` moves $PIN_FROM to $PIN_TO in
/// flake.lock; a `build --json` of hosts' toplevels (as `release build`
/// asks) prints a NixOS system's store path for each, the same for the
/// same revision and host; `copy` (the push to the cache) records its argv
/// and the signing key file its store URL names (a JSON line in
/// $NIX_COPY_LOG) and copies nothing; anything else goes to the image
/// stand-in ($IMAGE_NIX). `release build` itself runs for real.
const NIX_STANDIN: &str = r#"
import hashlib, json, os, re, subprocess, sys
args = sys.argv[1:]
if args[:1] == ["develop"]:
    at = args.index("--command")
    os.execvp(args[at + 1], args[at + 1:])
rest = list(args)
while rest[:1] == ["--extra-experimental-features"]:
    rest = rest[2:]
if rest[:2] == ["flake", "update"]:
    subprocess.run(["sed", "-i", "s/%s/%s/" % (os.environ["PIN_FROM"], os.environ["PIN_TO"]), "flake.lock"], check=True)
    sys.exit(0)
TOPLEVEL = re.compile(r'#nixosConfigurations\."([^"]+)"\.config\.system\.build\.toplevel$')
if rest[:1] == ["build"] and any(TOPLEVEL.search(a) for a in rest):
    built = []
    for installable in [a for a in rest if TOPLEVEL.search(a)]:
        name = TOPLEVEL.search(installable).group(1)
        digest = hashlib.sha256(installable.encode()).digest()
        path = "/nix/store/" + "".join("0123456789abcdfghijklmnpqrsvwxyz"[b % 32] for b in digest) + "-nixos-system-" + name + "-26.05"
        built.append({"drvPath": path + ".drv", "outputs": {"out": path}})
    print(json.dumps(built))
    sys.exit(0)
if rest[:1] == ["copy"]:
    to = rest[rest.index("--to") + 1]
    key = dict(p.split("=", 1) for p in to.split("?", 1)[1].split("&")).get("secret-key", "")
    mode = oct(os.stat(key).st_mode & 0o777) if os.path.isfile(key) else None
    with open(os.environ["NIX_COPY_LOG"], "a") as log:
        log.write(json.dumps({"argv": args, "keyFile": key, "keyMode": mode}) + "\n")
    sys.exit(0)
os.execv(os.environ["IMAGE_NIX"], [os.environ["IMAGE_NIX"]] + args)
"#;

/// Tools on PATH: the stand-in nix ([`NIX_STANDIN`], the image stand-in
/// behind it), cargo (`cargo xtask` is the built binary) and tofu.
/// The stand-in cargo's `xtask control-api package`: the real one builds the
/// Lambda for another target with zig (the whole SDK compiled again, too
/// slow for a test; its quota checks are package.rs's unit tests); here it
/// leaves a zip where OpenTofu reads it and says so in $CONTROL_API_PACKAGED.
const CONTROL_API_PACKAGE: &str = "if [ \"$1 $2\" = \"control-api package\" ]; then mkdir -p dist && printf 'PK' > dist/control-api.zip && echo \"$PWD\" >> \"$CONTROL_API_PACKAGED\" && exit 0; fi\n";

fn tools(dir: &Path) -> (String, PathBuf) {
    let (nix_path, kvm) = testkit::env::stand_in_nix(&dir.join("nix"));
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    python_script(&bin.join("nix"), NIX_STANDIN);
    write_script(
        &bin.join("cargo"),
        &format!("#!/bin/sh\n[ \"$1\" = xtask ] || {{ echo \"stand-in cargo: only cargo xtask\" >&2; exit 2; }}\nshift\n{CONTROL_API_PACKAGE}exec {} \"$@\"\n", env!("CARGO_BIN_EXE_xtask")),
    );
    let tofu = testkit::env::stand_in_tofu(&dir.join("tofu"));
    (format!("{}:{}:{nix_path}", bin.display(), tofu.display()), kvm)
}

/// A Python script at `path` (the emulator's virtualenv runs it).
fn python_script(path: &Path, body: &str) -> PathBuf {
    let python = testkit::emulator::venv_python();
    write_script(path, &format!("#!{}\n{body}", python.display()));
    path.to_path_buf()
}

/// Commit the checkout's work tree (a repository from the first call on),
/// as a push to main would have it: the new HEAD, which the run is for.
fn commit(checkout: &Path, message: &str) -> String {
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git").args(args).current_dir(checkout).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    if !checkout.join(".git").exists() {
        git(&["init", "-q", "-b", "main"]);
    }
    git(&["add", "-A"]);
    git(&["-c", "user.name=o", "-c", "user.email=o@o", "commit", "-qm", message]);
    git(&["rev-parse", "HEAD"])
}

/// The account as an operator leaves it before CI runs: the age files
/// pushed, the GitHub App key in Secrets Manager, two running hosts.
async fn operator_setup(env: &Env, checkout: &Path, scratch: &Path) -> (String, testkit::fixtures::SampleFleet) {
    let registry = checkout.join("nix/instances.json");
    std::fs::create_dir_all(scratch).unwrap();
    let fleet = testkit::fixtures::sample_fleet_for(scratch, &registry, |n| format!("fixture value of {n}")).unwrap();
    let (private_pem, _) = testkit::fixtures::github_app_key().unwrap();
    let dir = &fleet.sources.secrets_dir;
    testkit::fixtures::write_secret(dir, "clawdinator-github-app.pem", private_pem.as_bytes(), &fleet.recipient)
        .unwrap();
    operator(env, &fleet, &["secrets", "push", "--bucket", &env.bucket]);
    operator(env, &fleet, &["secrets", "seed", "--all"]);
    (std::fs::read_to_string(&fleet.sources.age_key).unwrap(), fleet)
}

/// `cargo xtask ARGS` as the operator (the test's own key), on the fleet's sources.
fn operator(env: &Env, fleet: &testkit::fixtures::SampleFleet, args: &[&str]) {
    let sources = testkit::fixtures::source_args(&fleet.sources);
    let out = env.cli(env!("CARGO_BIN_EXE_xtask")).args(args).args(&sources).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The operator's side of adding an instance: the registry entry (committed
/// to the checkout) and its token's age file, pushed.
fn add_instance(env: &Env, checkout: &Path, fleet: &testkit::fixtures::SampleFleet, n: usize) {
    let path = checkout.join("nix/instances.json");
    let mut registry: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    registry[format!("clawdinator-{n}")] = testkit::fixtures::instance_json(n);
    std::fs::write(&path, serde_json::to_string_pretty(&registry).unwrap()).unwrap();
    let token = format!("clawdinator-discord-token-{n}");
    testkit::fixtures::write_secret(&fleet.sources.secrets_dir, &token, b"a new bot's token", &fleet.recipient)
        .unwrap();
    // The fleet's sources name this very registry (the checkout's).
    assert_eq!(fleet.sources.registry, path);
    operator(env, fleet, &["secrets", "push", "--bucket", &env.bucket]);
}

/// Two running fleet hosts of the checkout's registry, on a fleet AMI: its id.
async fn running_hosts(env: &Env, checkout: &Path) -> String {
    use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
    let ec2 = env.aws.ec2();
    let volume = ec2.create_volume().availability_zone("us-east-1a").size(8).send().await.unwrap();
    let snap = ec2.create_snapshot().volume_id(volume.volume_id().unwrap()).send().await.unwrap();
    let ami = env.register_ami("clawdinator-nixos-old", snap.snapshot_id().unwrap(), "/dev/xvda").await;
    let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
    ec2.create_tags().resources(&ami).tags(tag("clawdinator", "true")).send().await.unwrap();
    let registry = clawdinator::registry::Registry::load(&checkout.join("nix/instances.json")).unwrap();
    for name in registry.instances.keys() {
        let tags = vec![tag("Name", name), tag("app", "clawdinator"), tag("clawdinator:instance", name)];
        let spec = TagSpecification::builder().resource_type(ResourceType::Instance).set_tags(Some(tags)).build();
        ec2.run_instances().image_id(&ami).min_count(1).max_count(1).tag_specifications(spec).send().await.unwrap();
    }
    ami
}

/// The AMI the running instance named `name` was launched from.
async fn running_ami(env: &Env, name: &str) -> String {
    use aws_sdk_ec2::types::Filter;
    let filters = [
        Filter::builder().name("tag:Name").values(name).build(),
        Filter::builder().name("instance-state-name").values("running").build(),
    ];
    let out = env.aws.ec2().describe_instances().set_filters(Some(filters.to_vec())).send().await.unwrap();
    let amis: Vec<String> =
        out.reservations().iter().flat_map(|r| r.instances()).filter_map(|i| i.image_id().map(String::from)).collect();
    assert_eq!(amis.len(), 1, "{name} runs as {amis:?}");
    amis[0].clone()
}

/// The runner's environment: the stand-in tools on PATH, the emulator,
/// GitHub's OIDC token endpoint and token API on loopback.
fn runner_env(env: &Env, temp: &Path) -> (BTreeMap<String, String>, Arc<Mutex<Vec<String>>>) {
    let (path, kvm) = tools(&env.path("tools"));
    let token = json!({"value": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXBvIn0.c2ln"});
    let (token_url, _) = testkit::loopback::answer_every_request(200, token);
    let minted = json!({"token": "ghs_standin", "expires_at": "2099-01-01T00:00:00Z"});
    let (github_url, github_seen) = testkit::loopback::answer_every_request(201, minted);
    let base = [
        ("PATH", path),
        ("HOME", env.path("home").display().to_string()),
        ("RUNNER_TEMP", temp.display().to_string()),
        ("AWS_ENDPOINT_URL", env.emulator.endpoint()),
        ("ACTIONS_ID_TOKEN_REQUEST_URL", format!("{token_url}/token?api-version=2.0")),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "runner-bearer".into()),
        ("GITHUB_API_URL", github_url),
        ("CLAWDINATOR_KVM_DEVICE", kvm.display().to_string()),
        ("FAKE_STORE", env.path("tools/nix/store").display().to_string()),
        ("FAKE_FEATURES", "nix-command flakes".into()),
        ("TOFU_LOG", env.path("tofu.log").display().to_string()),
        ("NIX_COPY_LOG", env.path("nix-copy.log").display().to_string()),
        ("IMAGE_NIX", env.path("tools/nix/bin/nix").display().to_string()),
        ("GITHUB_RUN_ID", "4242".into()),
        ("CONTROL_API_PACKAGED", env.path("control-api-packaged.log").display().to_string()),
        ("CLAWDINATOR_POLL_SECONDS", "0.05".into()),
    ];
    (base.into_iter().map(|(k, v)| (k.to_string(), v)).collect(), github_seen)
}

/// The cache's signing key in the fixture: a well-formed nix secret key
/// (`NAME:BASE64` of 64 bytes), searched for in every argv and environment.
const CACHE_KEY: &str =
    "clawdinator-cache-test-1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==";

/// The repository's variables, secrets and the deploy's inputs, as an operator set them.
fn settings(bucket: &str, age_key: &str) -> Context {
    let tfvars = json!({
        "aws_region": "us-east-1", "bucket_name": bucket, "vpc_id": "vpc-0123456789abcdef0",
        "subnet_ids": ["subnet-0123456789abcdef0"], "github_repository": "openclaw/clawdinators",
    });
    let strings = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Context {
        vars: strings(&[
            ("CLAWDINATOR_CI_ROLE_ARN", "arn:aws:iam::123456789012:role/clawdinator-ci"),
            ("AWS_REGION", "us-east-1"),
            ("S3_BUCKET", bucket),
            // As OpenTofu names it by default (testkit::policies::World).
            ("CLAWDINATOR_CACHE_BUCKET", &format!("{bucket}-cache")),
            ("CLAWDINATOR_APP_ID", "12345"),
            ("CLAWDINATOR_APP_INSTALLATION_ID", "678"),
            ("CLAWDINATOR_TFVARS", &tfvars.to_string()),
            ("CLAWDINATOR_DEPLOY_APP_LOGIN", DEPLOY_APP),
            ("CLAWDINATOR_OPERATORS", "alice bob"),
        ]),
        secrets: strings(&[("CLAWDINATOR_AGE_KEY", age_key.trim()), ("CLAWDINATOR_CACHE_KEY", CACHE_KEY)]),
        inputs: strings(&[("target", "clawdinator-2"), ("ami_override", ""), ("caller", "")]),
        outputs: BTreeMap::new(),
        actor: DEPLOY_APP.into(),
        // As GitHub starts release.yml; each test sets what it needs.
        event: "push".into(),
        attempt: 1,
        sha: REVISION.into(),
    }
}

/// Run the jobs of one workflow file of the checkout; a failure names the step.
fn run(runner: &Runner, context: &mut Context, file: &str, jobs: &[&str]) {
    let workflow = load(&runner.checkout, file);
    for job in jobs {
        if let Err(failure) = runner.job(&workflow, job, context) {
            panic!("{file}: {failure}");
        }
    }
}

/// Every call but the test's own (key `testing`) and the unsigned token
/// exchange was made as the CI role: each must be allowed by its policy.
async fn judge_ci_calls(env: &Env, steps: &Commands) {
    let (root, world) = (testkit::repo_root(), World::emulator(&env.bucket));
    let calls: Vec<Value> = env.emulator.calls().unwrap();
    let facts = Facts::gather(&env.aws, &calls).await;
    let ci = policies::ci(&root, &world).unwrap();
    let mut pairs = Vec::new();
    for (index, call) in
        calls.iter().enumerate().filter(|(_, c)| c["accessKey"] != "testing" && !c["accessKey"].is_null())
    {
        for mut request in requests(call, &world, &facts).unwrap() {
            request.call = format!("step `{}`: {}", steps.of(index), request.call);
            pairs.push((&ci, request));
        }
    }
    assert!(pairs.len() > 20, "too few CI calls: {}", pairs.len());
    let bucket_policy = policies::bucket_policy(&root, &world).unwrap();
    let decisions = judge(&world, &bucket_policy, &pairs).unwrap();
    let denied: Vec<String> = decisions.iter().filter(|d| !d.allowed).map(|d| d.to_string()).collect();
    assert!(denied.is_empty(), "the workflows make calls the CI role is denied:\n{}", denied.join("\n"));
}

/// image-build.yml, release.yml and fleet-deploy.yml each complete, in
/// order, on one account; then the journeys through them: a chat rollback
/// (fleet-deploy with `ami_override`) and adding an instance (a registry
/// entry pushed, the release bringing it up). `release build` runs for
/// real but for nix (built paths made up, copies recorded): image-build
/// and the first release write and keep one manifest, the second release
/// one naming the new instance too; the key reached nix as a 0600 file
/// named in the store URL. Every call CI makes is allowed by its policy,
/// and tofu got every variable it needs.
#[tokio::test(flavor = "multi_thread")]
async fn the_image_release_and_deploy_workflows_complete_as_the_ci_role() {
    let env = env().await;
    let checkout = env.path("work/clawdinators");
    check_out(&testkit::repo_root(), &checkout);
    let (age_key, fleet) = operator_setup(&env, &checkout, &env.path("operator")).await;
    let old_ami = running_hosts(&env, &checkout).await;
    env.tofu_backend(&env.bucket, "clawdinator-terraform-locks");
    let temp = env.path("runner-temp");
    std::fs::create_dir_all(&temp).unwrap();
    let (base, github_seen) = runner_env(&env, &temp);
    let runner =
        Runner { checkout: checkout.clone(), temp, base, emulator: Some(&env.emulator), steps: Default::default() };
    let mut context = settings(&env.bucket, &age_key);
    context.sha = commit(&checkout, "the fleet");
    let first = context.sha.clone();
    let hosts = || -> Vec<String> {
        let registry = clawdinator::registry::Registry::load(&checkout.join("nix/instances.json")).unwrap();
        let mut hosts: Vec<String> = registry.instances.values().map(|i| i.host.clone()).collect();
        hosts.sort();
        hosts
    };
    let first_hosts = hosts();
    env.emulator.start_call_log().unwrap();

    context.event = "schedule".into();
    run(&runner, &mut context, "image-build.yml", &["image", "prune"]);
    context.event = "push".into();
    run(&runner, &mut context, "release.yml", &["release"]);
    context.event = "workflow_dispatch".into();
    run(&runner, &mut context, "fleet-deploy.yml", &["deploy"]);
    let packaged = std::fs::read_to_string(env.path("control-api-packaged.log")).unwrap_or_default();
    assert_eq!(packaged.lines().count(), 2, "the release and the deploy each package the control API first");
    assert!(checkout.join("dist/control-api.zip").is_file(), "no zip where OpenTofu reads it");
    let new_ami = context.outputs.get("publish.outputs.ami_id").cloned().unwrap_or_default();
    assert!(new_ami.starts_with("ami-"), "no AMI published");
    assert_eq!(
        running_ami(&env, "clawdinator-2").await,
        new_ami,
        "the deploy did not move clawdinator-2 to the new AMI"
    );
    assert!(github_seen.lock().unwrap().iter().any(|l| l.starts_with("POST /app/installations/678/access_tokens")));

    // Rolled back by an operator, by hand, with the old AMI.
    context.inputs.insert("ami_override".into(), old_ami.clone());
    context.inputs.insert("caller".into(), "alice".into());
    context.actor = "alice".into();
    run(&runner, &mut context, "fleet-deploy.yml", &["deploy"]);
    assert_eq!(running_ami(&env, "clawdinator-2").await, old_ami, "the rollback did not bring back the old AMI");
    context.actor = DEPLOY_APP.into();

    // Adding an instance: the operator's commit and push, then the release
    // the push starts creates it (role, profile, instance) and switches it.
    add_instance(&env, &checkout, &fleet, 3);
    context.sha = commit(&checkout, "clawdinator-3");
    context.event = "push".into();
    run(&runner, &mut context, "release.yml", &["release"]);
    let role = env.aws.iam().get_role().role_name("clawdinator-instance-clawdinator-3").send().await.unwrap();
    let boundary = role.role().and_then(|r| r.permissions_boundary()).and_then(|b| b.permissions_boundary_arn());
    assert_eq!(boundary, Some(World::emulator(&env.bucket).instance_boundary_arn().as_str()));
    assert_eq!(running_ami(&env, "clawdinator-3").await, new_ami);
    assert!(
        env.keys().await.iter().any(|k| k.starts_with("bootstrap/clawdinator-3/")),
        "no bundle for the new instance"
    );

    assert!(!runner.temp.join("clawdinator.agekey").exists(), "the age identity outlived the job");
    assert!(!runner.temp.join("cache-signing.key").exists(), "the cache's signing key outlived the job");
    // Each release build pushed its systems to the cache bucket, signing
    // with the key file (0600 then, gone now); never the key's value.
    let copies: Vec<Value> = std::fs::read_to_string(env.path("nix-copy.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(copies.len(), 3, "image-build, then two releases: {copies:?}");
    let key_file = runner.temp.join("cache-signing.key").display().to_string();
    let store = format!("s3://{}-cache?region=us-east-1&secret-key={key_file}&compression=zstd", env.bucket);
    for copy in &copies {
        let argv: Vec<&str> = copy["argv"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        assert_eq!(argv.iter().position(|a| *a == "--to").map(|at| argv[at + 1]), Some(store.as_str()), "{copy}");
        assert_eq!((copy["keyFile"].as_str(), copy["keyMode"].as_str()), (Some(key_file.as_str()), Some("0o600")));
        assert!(!copy.to_string().contains(CACHE_KEY.split_once(':').unwrap().1), "the key's value reached nix");
    }
    // One manifest per revision; the second names the new instance too.
    let s3 = env.aws.s3();
    let names = |release: &clawdinator::release::manifest::Release| release.hosts.keys().cloned().collect::<Vec<_>>();
    let released = clawdinator::release::manifest::read(&s3, &env.bucket, &first).await.unwrap();
    assert_eq!(names(&released), first_hosts);
    let released = clawdinator::release::manifest::read(&s3, &env.bucket, &context.sha).await.unwrap();
    assert!(!first_hosts.contains(&"clawdinator-3".to_string()));
    assert_eq!(names(&released), hosts());
    assert!(
        released.cache.starts_with(&format!("s3://{}-cache", env.bucket)) && !released.cache.contains("secret-key")
    );
    tofu_got_every_variable(&env, &context);
    let steps = runner.steps.borrow().clone();
    judge_ci_calls(&env, &steps).await;
}

/// A stand-in `gh`: each call's argv as a JSON line in $GH_LOG; `pr list`
/// answers with $GH_OPEN_PR (the number of an open pull request, if any).
const GH_STANDIN: &str = r#"
import json, os, sys
with open(os.environ["GH_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\n")
if sys.argv[1:3] == ["pr", "list"] and os.environ.get("GH_OPEN_PR"):
    print(os.environ["GH_OPEN_PR"])
"#;

/// The freshness job, against a local origin: the stand-in nix moves
/// nix-openclaw's pin (as `nix flake update` would); the job checks the
/// lock, pushes it as one commit on top of main to the branch
/// bump/nix-openclaw, opens its pull request and starts CI on it; main is
/// never pushed. A newer head replaces the branch and updates the open
/// pull request; nothing new does nothing; a broken lock pushes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn the_pin_bump_pushes_a_branch_and_opens_a_pull_request_never_main() {
    let env = env().await;
    let checkout = env.path("work/clawdinators");
    check_out(&testkit::repo_root(), &checkout);
    let git = |dir: &Path, args: &[&str]| {
        let out = std::process::Command::new("git").args(args).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let origin = env.path("work/origin.git");
    git(&env.path("work"), &["init", "-q", "--bare", "-b", "main", origin.to_str().unwrap()]);
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "-A"],
        &["-c", "user.name=o", "-c", "user.email=o@o", "commit", "-qm", "seed"],
    ] {
        git(&checkout, args);
    }
    git(&checkout, &["remote", "add", "origin", origin.to_str().unwrap()]);
    git(&checkout, &["push", "-q", "origin", "HEAD:main"]);
    let main = git(&origin, &["rev-parse", "main"]);
    let temp = env.path("runner-temp");
    std::fs::create_dir_all(&temp).unwrap();
    let (mut base, _) = runner_env(&env, &temp);
    let gh_log = env.path("gh.log");
    python_script(&env.path("tools/bin/gh"), GH_STANDIN);
    base.insert("GH_LOG".into(), gh_log.display().to_string());
    let lock = std::fs::read_to_string(checkout.join("flake.lock")).unwrap();
    let from =
        clawdinator::build_info::BuildInfo::from_lock(&lock, "").unwrap().inputs["nix-openclaw"].rev.clone().unwrap();
    let gh_calls = || -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(&gh_log).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let branch = |what: &str| git(&origin, &["rev-parse", &format!("refs/heads/bump/nix-openclaw{what}")]);
    let workflow = load(&checkout, "bump-nix-openclaw.yml");
    // Each run starts from a fresh checkout of main, as a runner's does.
    let bump = |pin_from: &str, pin_to: &str, open_pr: &str, context: &mut Context| {
        let mut base = base.clone();
        base.insert("PIN_FROM".into(), pin_from.into());
        base.insert("PIN_TO".into(), pin_to.into());
        base.insert("GH_OPEN_PR".into(), open_pr.into());
        let runner =
            Runner { checkout: checkout.clone(), temp: temp.clone(), base, emulator: None, steps: Default::default() };
        context.outputs.clear();
        runner.job(&workflow, "bump", context)
    };
    let mut context = settings(&env.bucket, "AGE-SECRET-KEY-1UNUSED");
    context.event = "schedule".into();

    // A new head: the branch, one commit on top of main; its pull request opened; CI started on it.
    let to = "0123456789abcdef0123456789abcdef01234567";
    bump(&from, to, "", &mut context).unwrap();
    assert_eq!(git(&origin, &["rev-parse", "main"]), main, "the bump pushed main");
    let title = format!("Bump nix-openclaw {} -> {}", &from[..12], &to[..12]);
    assert_eq!(git(&origin, &["log", "-1", "--format=%s", "bump/nix-openclaw"]), title);
    assert_eq!(branch("^"), main, "the bump is not one commit on top of main");
    let pushed = git(&origin, &["show", "bump/nix-openclaw:flake.lock"]);
    assert!(pushed.contains(to) && !pushed.contains(&from), "the pushed lock is not the moved one");
    let calls = gh_calls();
    let verbs: Vec<String> = calls.iter().map(|c| c[..2].join(" ")).collect();
    assert_eq!(verbs, ["pr list", "pr create", "workflow run"], "{calls:?}");
    let create = &calls[1];
    let flag = |call: &[String], name: &str| call.iter().position(|a| a == name).map(|at| call[at + 1].clone());
    assert_eq!(flag(create, "--head").as_deref(), Some("bump/nix-openclaw"));
    assert_eq!(flag(create, "--base").as_deref(), Some("main"));
    assert_eq!(flag(create, "--title"), Some(title.clone()));
    assert_eq!(calls[2], ["workflow", "run", "ci.yml", "--ref", "bump/nix-openclaw"]);
    assert!(!calls.concat().iter().any(|a| a.contains("ghs_workflow_token")), "the token in gh's argv: {calls:?}");

    // Nothing new (the lock already moved): no push, no pull request.
    bump(&from, to, "", &mut context).unwrap();
    assert_eq!(gh_calls().len(), 3);
    assert_eq!(git(&origin, &["rev-list", "--count", "--all"]), "2");

    // A newer head while the pull request is open: the branch replaced (on
    // top of main again), the pull request brought up to date, not a second one.
    git(&checkout, &["reset", "-q", "--hard", &main]);
    let newer = "89abcdef0123456789abcdef0123456789abcdef";
    bump(&from, newer, "7", &mut context).unwrap();
    assert_eq!(git(&origin, &["rev-parse", "main"]), main, "the bump pushed main");
    assert_eq!(branch("^"), main);
    assert!(git(&origin, &["show", "bump/nix-openclaw:flake.lock"]).contains(newer));
    let calls = gh_calls();
    let verbs: Vec<String> = calls[3..].iter().map(|c| c[..2].join(" ")).collect();
    assert_eq!(verbs, ["pr list", "pr edit", "workflow run"], "{calls:?}");
    assert_eq!(calls[4][2], "7");
    assert_eq!(flag(&calls[4], "--title"), Some(format!("Bump nix-openclaw {} -> {}", &from[..12], &newer[..12])));

    // An update that breaks the lock: refused, the lock put back, nothing pushed.
    git(&checkout, &["reset", "-q", "--hard", &main]);
    let (before, tip) = (std::fs::read_to_string(checkout.join("flake.lock")).unwrap(), branch(""));
    let failure = bump(&from, "broken\\\"", "7", &mut context).unwrap_err();
    assert!(failure.contains("flake.lock is as it was"), "{failure}");
    assert_eq!(std::fs::read_to_string(checkout.join("flake.lock")).unwrap(), before);
    assert_eq!((git(&origin, &["rev-parse", "main"]), branch("")), (main, tip));
    assert_eq!(gh_calls().len(), 6);
}

/// Attack: someone with write access (or a bot's leaked token, if it could
/// dispatch) starts fleet-deploy by hand. The run stops at its first step,
/// before checkout, credentials or any AWS call.
#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_started_by_anyone_else_stops_before_touching_anything() {
    let env = env().await;
    let checkout = env.path("work/clawdinators");
    check_out(&testkit::repo_root(), &checkout);
    let temp = env.path("runner-temp");
    std::fs::create_dir_all(&temp).unwrap();
    let (base, github_seen) = runner_env(&env, &temp);
    let runner = Runner { checkout, temp, base, emulator: Some(&env.emulator), steps: Default::default() };
    env.emulator.start_call_log().unwrap();
    for actor in ["mallory", "clawdinator-bot[bot]", "alice bob", "*"] {
        let mut context = settings(&env.bucket, "AGE-SECRET-KEY-1UNUSED");
        context.actor = actor.into();
        let workflow = load(&runner.checkout, "fleet-deploy.yml");
        let failure = runner.job(&workflow, "deploy", &mut context).unwrap_err();
        assert!(
            failure.contains("Only the deploy App or an operator") && failure.contains("may not deploy"),
            "{failure}"
        );
    }
    assert!(env.emulator.calls().unwrap().is_empty(), "a refused run called AWS");
    assert!(github_seen.lock().unwrap().is_empty(), "a refused run called GitHub");
}

/// Run only the first step of `job` (the check of who started it), as the
/// runner would: its script with its env. Ok with its output, Err with it.
fn first_step(workflow: &Value, job: &str, context: &Context) -> Result<String, String> {
    let step = &workflow["jobs"][job]["steps"][0];
    let mut command = std::process::Command::new("bash");
    command.args(["--noprofile", "--norc", "-eo", "pipefail", "-c", &context.expand(step["run"].as_str().unwrap())]);
    command.env_clear().env("PATH", std::env::var("PATH").unwrap());
    for (k, v) in step["env"].as_object().into_iter().flatten() {
        command.env(k, context.expand(v.as_str().unwrap()));
    }
    let out = command.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// Every job that reaches the protected environment or may write to the
/// repository, in every workflow that can be dispatched or re-run.
fn guarded_jobs(root: &Path) -> Vec<(String, String, Value)> {
    let mut jobs = Vec::new();
    for entry in std::fs::read_dir(root.join(".github/workflows")).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().into_owned();
        let workflow = load(root, &file);
        for (name, job) in workflow["jobs"].as_object().unwrap() {
            let writes = job["permissions"].as_object().into_iter().flatten().any(|(_, level)| level == "write");
            if job["environment"].is_string() || writes {
                jobs.push((file.clone(), name.clone(), workflow.clone()));
            }
        }
    }
    jobs
}

/// Attack: someone with write access starts a release, an image build or
/// a pin bump by hand, or re-runs an old run (a re-run replays an old
/// revision with today's credentials, and its `triggering_actor` is who
/// pressed the button). Each such job stops at its first step; runs GitHub
/// starts (the push, the schedule) and operators' go ahead.
#[test]
fn every_job_that_reaches_the_fleet_checks_who_started_it() {
    let root = testkit::repo_root();
    let jobs = guarded_jobs(&root);
    let names: Vec<String> = jobs.iter().map(|(f, j, _)| format!("{f}/{j}")).collect();
    for expected in
        ["release.yml/release", "image-build.yml/image", "image-build.yml/prune", "bump-nix-openclaw.yml/bump"]
    {
        assert!(names.contains(&expected.to_string()), "{expected} is not among the guarded jobs {names:?}");
    }
    let mut context = settings("unused", "AGE-SECRET-KEY-1UNUSED");
    for (file, job, workflow) in &jobs {
        let first = workflow["jobs"][job]["steps"][0]["name"].as_str().unwrap_or_default();
        if file == "fleet-deploy.yml" {
            assert_eq!(first, "Only the deploy App or an operator may deploy");
            continue; // a_deploy_started_by_anyone_else_stops_before_touching_anything
        }
        assert_eq!(first, "Only an operator may start or re-run this by hand", "{file}/{job}: the first step");
        let cases: [(&str, u32, &str, bool); 8] = [
            ("push", 1, "mallory", true),
            ("schedule", 1, "mallory", true),
            ("push", 2, "mallory", false),
            ("schedule", 3, "clawdinator-bot[bot]", false),
            ("workflow_dispatch", 1, "mallory", false),
            ("workflow_dispatch", 1, "alice bob", false),
            ("workflow_dispatch", 1, "bob", true),
            ("push", 2, "alice", true),
        ];
        for (event, attempt, actor, allowed) in cases {
            (context.event, context.attempt, context.actor) = (event.into(), attempt, actor.into());
            let outcome = first_step(workflow, job, &context);
            assert_eq!(outcome.is_ok(), allowed, "{file}/{job}, {event} attempt {attempt} by {actor}: {outcome:?}");
            if let Err(text) = outcome {
                assert!(text.contains("may not start or re-run this workflow by hand"), "{text}");
            }
        }
    }
}

/// Attack: a bot asks for deploys in a loop, or anyone who may dispatch
/// queues a run, to cancel an operator's pending rollback. GitHub keeps one
/// pending run per concurrency group and cancels it when another joins; the
/// group, as GitHub's own evaluator computes it, never puts a bot's run or
/// a stranger's beside an operator's.
#[test]
fn no_bot_or_stranger_shares_a_concurrency_group_with_an_operators_deploy() {
    let workflow = load(&testkit::repo_root(), "fleet-deploy.yml");
    assert_eq!(workflow["concurrency"]["cancel-in-progress"], false);
    // PyYAML reads the key `on` as true.
    let lane =
        &workflow["on"].as_object().or(workflow["true"].as_object()).unwrap()["workflow_dispatch"]["inputs"]["lane"];
    assert_eq!((lane["type"].as_str(), lane["default"].as_str()), (Some("choice"), Some("operator")), "{lane}");
    let template = workflow["concurrency"]["group"].as_str().unwrap();
    let group = |actor: &str, lane: &str, target: &str| {
        let contexts = json!({"github": {"triggering_actor": actor}, "inputs": {"lane": lane, "target": target}});
        testkit::actions::interpolate(template, &contexts).unwrap()
    };
    let operators = [
        group("alice", "operator", "all"),
        group("bob", "operator", "clawdinator-2"),
        group(DEPLOY_APP, "operator", "clawdinator-2"),
    ];
    let others = [
        group(DEPLOY_APP, "bot", "clawdinator-2"),
        group(DEPLOY_APP, "bot", "clawdinator-1"),
        group(DEPLOY_APP, "bot", "all"),
        group("mallory", "operator", "clawdinator-2"),
        group("mallory", "bot", "clawdinator-2"),
        group("mallory", "", "all"),
    ];
    for operator in &operators {
        assert!(!others.contains(operator), "{operator} is shared with a bot's or a stranger's run: {others:?}");
    }
    assert_ne!(operators[0], operators[1], "one operator's run would cancel another's pending one");
    assert_ne!(others[0], others[1], "a bot's request for one target would cancel another target's");
}

/// The var file the deploy handed tofu sets every variable the module
/// needs: `doctor --ci` (the same check an operator runs) accepts it, and
/// every other setting of the fixture, but the cache key: the fixture's is
/// not the one hosts trust (nix/keys/fleet-cache.pub), which it must say.
fn tofu_got_every_variable(env: &Env, context: &Context) {
    let log = std::fs::read_to_string(env.path("tofu.log")).unwrap();
    let applies: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|c: &Value| c["args"].to_string().contains("\"apply\""))
        .collect();
    assert!(!applies.is_empty(), "no workflow ran tofu apply");
    for apply in applies {
        let tfvars = apply["varFile"].as_str().unwrap_or_else(|| panic!("tofu apply without -var-file: {apply}"));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["--json", "doctor", "--ci"])
            .current_dir(testkit::repo_root())
            .envs(context.vars.iter())
            .envs(context.secrets.iter())
            .env("CLAWDINATOR_TFVARS", tfvars)
            .output()
            .unwrap();
        let shown = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {shown}"));
        for check in report["checks"].as_array().unwrap() {
            if check["name"] == "CLAWDINATOR_CACHE_KEY" {
                assert!(check["detail"].as_str().unwrap().contains("hosts trust"), "{check}");
            } else {
                assert_eq!(check["status"], "ok", "{check}");
            }
        }
        assert!(!shown.contains(CACHE_KEY.split_once(':').unwrap().1), "doctor showed the cache key: {shown}");
    }
}

/// The protected environment is the only way to the CI role and the age
/// key: every job that can get an OIDC token or reads a secret runs in it,
/// and the CI role's trust, rendered with OpenTofu's defaults, names only
/// environment subjects (a ref subject matches a job a pushed branch adds).
#[test]
fn only_jobs_in_the_protected_environment_reach_the_ci_role_or_the_age_key() {
    let root = testkit::repo_root();
    let variables = std::fs::read_to_string(root.join("infra/opentofu/aws/variables.tf")).unwrap();
    let default_of = |name: &str| {
        let block = variables.split(&format!("variable \"{name}\"")).nth(1).unwrap();
        let line = block.lines().find(|l| l.trim_start().starts_with("default")).unwrap();
        serde_json::from_str::<Vec<String>>(line.split_once('=').unwrap().1.trim()).unwrap()
    };
    let (refs, environments) = (default_of("github_refs"), default_of("github_environments"));
    assert!(refs.is_empty(), "the CI role trusts refs by default: {refs:?}");
    assert_eq!(environments, ["fleet"]);
    let subjects: Vec<String> =
        environments.iter().map(|e| format!("repo:openclaw/clawdinators:environment:{e}")).collect();
    let world = World::emulator("clawdinator-fleet");
    let oidc = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com".to_string();
    let extra = [("github_oidc_arn", oidc), ("github_subjects", policies::json_list(&subjects))];
    let trust = policies::document(&root, "ci-trust", &world, &extra).unwrap();
    let allowed = &trust["Statement"][0]["Condition"]["StringEquals"]["token.actions.githubusercontent.com:sub"];
    assert!(allowed.as_array().unwrap().iter().all(|s| s.as_str().unwrap().contains(":environment:")), "{allowed}");

    let mut jobs = 0;
    for entry in std::fs::read_dir(root.join(".github/workflows")).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().into_owned();
        let workflow = load(&root, &file);
        for (name, job) in workflow["jobs"].as_object().unwrap() {
            let oidc = job["permissions"]["id-token"] == "write";
            let secrets = job.to_string().contains("secrets.");
            if oidc || secrets {
                jobs += 1;
                let environment = job["environment"].as_str().or(job["environment"]["name"].as_str());
                assert_eq!(environment, Some("fleet"), "{file}: job {name} reaches AWS or a secret outside `fleet`");
            }
        }
    }
    assert!(jobs >= 4, "only {jobs} jobs reach AWS: the scan is broken");
}

/// The recording `nix`: `nix develop … --command X` runs X (the develop
/// flags in $STANDIN_DEVELOP); any other call is a JSON line in $STANDIN_LOG
/// with its argv and environment.
const RECORDING_NIX: &str = r#"
import json, os, sys
args = sys.argv[1:]
if args[:1] == ["develop"]:
    at = args.index("--command")
    os.environ["STANDIN_DEVELOP"] = " ".join(args[1:at])
    os.execvp(args[at + 1], args[at + 1:])
with open(os.environ["STANDIN_LOG"], "a") as log:
    log.write(json.dumps({"tool": "nix", "argv": args, "env": dict(os.environ)}) + "\n")
"#;

/// The recording `cargo`: each call a JSON line in $STANDIN_LOG with its
/// argv, its environment and the signing key file as it was then (mode,
/// content). It touches a `--env-file` (the seeds step reads it next).
const RECORDING_CARGO: &str = r#"
import json, os, sys
args = sys.argv[1:]
entry = {"tool": "cargo", "argv": args, "env": dict(os.environ)}
key = os.environ.get("CLAWDINATOR_CACHE_KEY_FILE", "")
if os.path.isfile(key):
    entry["keyFile"] = {"mode": oct(os.stat(key).st_mode & 0o777), "content": open(key).read()}
if "--env-file" in args:
    open(args[args.index("--env-file") + 1], "a").close()
with open(os.environ["STANDIN_LOG"], "a") as log:
    log.write(json.dumps(entry) + "\n")
"#;

/// The fixture's fleet bucket in the recorded runs.
const RECORDED_BUCKET: &str = "clawdinator-fleet";

/// One job run with the recording stand-ins: what each was asked, in order.
struct Recorded {
    calls: Vec<Value>,
    temp: PathBuf,
    _dir: tempfile::TempDir,
}

impl Recorded {
    /// Run `job` of the repository's `file` with the fixture's settings; no AWS, no nix.
    fn run(file: &str, job: &str) -> Recorded {
        let dir = tempfile::tempdir().unwrap();
        let (bin, temp, checkout) =
            (dir.path().join("bin"), dir.path().join("runner-temp"), dir.path().join("checkout"));
        for d in [&bin, &temp, &checkout] {
            std::fs::create_dir_all(d).unwrap();
        }
        python_script(&bin.join("nix"), RECORDING_NIX);
        python_script(&bin.join("cargo"), RECORDING_CARGO);
        let log = dir.path().join("calls.jsonl");
        let base = [
            ("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap())),
            ("HOME", dir.path().display().to_string()),
            ("RUNNER_TEMP", temp.display().to_string()),
            ("STANDIN_LOG", log.display().to_string()),
            ("GITHUB_RUN_ID", "4242".into()),
        ];
        let base = base.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let runner = Runner { checkout, temp: temp.clone(), base, emulator: None, steps: Default::default() };
        let mut context = settings(RECORDED_BUCKET, "AGE-SECRET-KEY-1RECORDED");
        let workflow = load(&testkit::repo_root(), file);
        runner.job(&workflow, job, &mut context).unwrap_or_else(|failure| panic!("{file}: {failure}"));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        Recorded { calls: text.lines().map(|l| serde_json::from_str(l).unwrap()).collect(), temp, _dir: dir }
    }

    fn argv(call: &Value) -> String {
        call["argv"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect::<Vec<_>>().join(" ")
    }

    /// The `cargo xtask …` command lines, in order.
    fn xtask(&self) -> Vec<String> {
        self.calls.iter().filter(|c| c["tool"] == "cargo").map(Self::argv).collect()
    }

    /// The one cargo call whose command line is `line`.
    fn call(&self, line: &str) -> &Value {
        let found: Vec<&Value> = self.calls.iter().filter(|c| c["tool"] == "cargo" && Self::argv(c) == line).collect();
        assert_eq!(found.len(), 1, "`{line}` ran {} times: {:?}", found.len(), self.xtask());
        found[0]
    }

    /// Every command ran inside `nix develop --no-update-lock-file`, and
    /// nix was asked nothing else.
    fn all_in_the_dev_shell(&self) {
        for call in &self.calls {
            assert_eq!(call["tool"], "cargo", "nix was asked `nix {}`", Self::argv(call));
            let develop =
                call["env"]["STANDIN_DEVELOP"].as_str().unwrap_or_else(|| panic!("{call}: not in nix develop"));
            assert!(
                develop.split(' ').any(|f| f == "--no-update-lock-file"),
                "`{}` in `nix develop {develop}`",
                Self::argv(call)
            );
        }
    }

    /// The cache's signing key reached `release build` as a 0600 file
    /// holding exactly the secret, named by CLAWDINATOR_CACHE_KEY_FILE, and
    /// nothing else while it existed; its value is in no argv and no
    /// environment of any call, and the file is gone when the job ends.
    fn the_key_only_as_a_file(&self) {
        let build = self.call("xtask release build");
        let path = self.temp.join("cache-signing.key");
        assert_eq!(build["env"]["CLAWDINATOR_CACHE_KEY_FILE"], path.display().to_string());
        assert_eq!(build["keyFile"], json!({"mode": "0o600", "content": CACHE_KEY}));
        let holders: Vec<String> = self.calls.iter().filter(|c| !c["keyFile"].is_null()).map(Self::argv).collect();
        assert_eq!(holders, ["xtask release build"], "the key file outlived the build");
        let payload = CACHE_KEY.split_once(':').unwrap().1;
        for call in &self.calls {
            let seen = format!("{} {}", call["argv"], call["env"]);
            assert!(!seen.contains(payload), "the cache key's value reached `{}`", Self::argv(call));
        }
        assert!(!path.exists(), "the signing key outlived the job");
    }
}

/// A job that runs `release build` checks out the whole history: nix
/// refuses `git+file://…?rev=` from a shallow clone, actions/checkout's default.
fn checks_out_the_whole_history(file: &str, job: &str) {
    let workflow = load(&testkit::repo_root(), file);
    let steps = workflow["jobs"][job]["steps"].as_array().unwrap();
    let checkout =
        steps.iter().find(|s| s["uses"].as_str().is_some_and(|u| u.starts_with("actions/checkout@"))).unwrap();
    assert_eq!(checkout["with"]["fetch-depth"], 0, "{file}, job {job}: a shallow checkout");
}

/// The release lane's order, with stand-ins that record (no AWS, no nix):
/// `release build` first (every registry host: no names), then the
/// bundles, the control API's zip (OpenTofu uploads it), the new instances
/// (`fleet deploy --missing`) and the switch at
/// the pushed revision. Within `release build`, build → sign and push →
/// releases/<rev>.json is that command's own order, tested where it is
/// defined with nix and an HTTP store; running it here would need both, so
/// this test holds its command line and environment: the revision, the
/// fleet and cache buckets, and the key as a file path only.
#[test]
fn the_release_builds_every_host_and_writes_its_manifest_before_any_host_is_created_or_switched() {
    let run = Recorded::run("release.yml", "release");
    let switch = format!("xtask fleet switch {REVISION}");
    assert_eq!(
        run.xtask(),
        [
            "xtask release build",
            "xtask secrets pull",
            "xtask bootstrap seeds prepare",
            "xtask bootstrap upload --all",
            "xtask control-api package",
            "xtask fleet deploy --missing",
            switch.as_str(),
        ]
    );
    run.all_in_the_dev_shell();
    let build = &run.call("xtask release build")["env"];
    let cache_bucket = format!("{RECORDED_BUCKET}-cache");
    for (name, value) in [
        ("REVISION", REVISION),
        ("S3_BUCKET", RECORDED_BUCKET),
        ("CLAWDINATOR_CACHE_BUCKET", cache_bucket.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("GITHUB_RUN_ID", "4242"),
    ] {
        assert_eq!(build[name], value, "release build's {name}");
    }
    assert!(build["CLAWDINATOR_CACHE_URL"].is_null(), "CI's cache is the bucket, not a URL");
    // The switch reads releases/$REVISION.json from the same bucket.
    assert_eq!(run.call(&switch)["env"]["S3_BUCKET"], RECORDED_BUCKET);
    run.the_key_only_as_a_file();
    checks_out_the_whole_history("release.yml", "release");
    let workflow = load(&testkit::repo_root(), "release.yml");
    assert_eq!(workflow["concurrency"], json!({"group": "release", "cancel-in-progress": false}));
}

/// image-build.yml builds its revision's systems into the cache (and its
/// manifest) before it builds the image, so a host booted from the newest
/// AMI finds its system there; the key as in the release.
#[test]
fn the_image_build_puts_its_revisions_systems_in_the_cache_before_the_image() {
    let run = Recorded::run("image-build.yml", "image");
    let xtask = run.xtask();
    let at = |line: &str| xtask.iter().position(|l| l == line).unwrap_or_else(|| panic!("no `{line}` in {xtask:?}"));
    assert_eq!(at("xtask release build"), 0, "{xtask:?}");
    assert!(at("xtask release build") < at("xtask image build") && at("xtask image build") < at("xtask image publish"));
    run.all_in_the_dev_shell();
    let build = &run.call("xtask release build")["env"];
    assert_eq!((build["REVISION"].as_str(), build["S3_BUCKET"].as_str()), (Some(REVISION), Some(RECORDED_BUCKET)));
    assert_eq!(build["CLAWDINATOR_CACHE_BUCKET"], format!("{RECORDED_BUCKET}-cache"));
    run.the_key_only_as_a_file();
    checks_out_the_whole_history("image-build.yml", "image");
}

/// The simple commands of a shell script, each as its words (quotes
/// removed, `$VARS` as written): continuation lines are joined; newlines,
/// `;`, `&`, `|`, parentheses and backquotes end a command; `#` at a word's
/// start comments out the rest of its line.
fn shell_commands(script: &str) -> Vec<Vec<String>> {
    let (mut commands, mut words, mut word, mut in_word) = (Vec::new(), Vec::new(), String::new(), false);
    let mut chars = script.chars().peekable();
    let end_word = |words: &mut Vec<String>, word: &mut String, in_word: &mut bool| {
        if std::mem::take(in_word) {
            words.push(std::mem::take(word));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('\n') | None => {}
                Some(next) => {
                    word.push(next);
                    in_word = true;
                }
            },
            '\'' => {
                in_word = true;
                word.extend(chars.by_ref().take_while(|c| *c != '\''));
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some('\n') | None => {}
                            Some(next) if "\"\\$`".contains(next) => word.push(next),
                            Some(next) => word.extend(['\\', next]),
                        },
                        _ => word.push(c),
                    }
                }
            }
            '#' if !in_word => while chars.next_if(|c| *c != '\n').is_some() {},
            ' ' | '\t' => end_word(&mut words, &mut word, &mut in_word),
            '\n' | ';' | '&' | '|' | '(' | ')' | '`' => {
                end_word(&mut words, &mut word, &mut in_word);
                if !words.is_empty() {
                    commands.push(std::mem::take(&mut words));
                }
            }
            _ => {
                word.push(c);
                in_word = true;
            }
        }
    }
    end_word(&mut words, &mut word, &mut in_word);
    if !words.is_empty() {
        commands.push(words);
    }
    commands
}

/// Where a push's refspec can land: on main, or on what only the run
/// decides (a variable, a pattern, the checked-out branch).
fn refspec_lands_on_main(spec: &str) -> Option<String> {
    let bare = spec.trim_start_matches('+');
    let dst = match bare.split_once(':') {
        Some((_, dst)) if !dst.is_empty() => dst,
        Some((src, _)) => src,
        None => bare,
    };
    if dst.contains(['$', '*', '`']) {
        return Some(format!("`{spec}`: its destination is decided at run time (it may be main)"));
    }
    match dst.strip_prefix("refs/heads/").or(dst.strip_prefix("heads/")).unwrap_or(dst) {
        "main" => Some(format!("`{spec}` lands on main")),
        "HEAD" | "@" => Some(format!("`{spec}` pushes the checked-out branch: main, on a checkout of main")),
        _ => None,
    }
}

/// `git ARGS`: whether it can land a commit on main.
fn git_lands_on_main(args: &[String]) -> Option<String> {
    let mut args = args.iter();
    let command = loop {
        let arg = args.next()?;
        if ["-c", "-C", "--git-dir", "--work-tree", "--namespace", "--config-env"].contains(&arg.as_str()) {
            args.next();
        } else if !arg.starts_with('-') {
            break arg;
        }
    };
    if command.contains('$') {
        return Some("git with its command decided at run time (it may push main)".into());
    }
    if command != "push" {
        return None;
    }
    let (mut positional, mut repository_flag) = (Vec::new(), false);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--" => positional.extend(args.by_ref().cloned()),
            "--all" | "--branches" | "--mirror" => {
                return Some(format!("`git push {arg}` pushes every branch, main too"))
            }
            "--repo" => {
                repository_flag = true;
                args.next();
            }
            "-o" | "--push-option" | "--receive-pack" | "--exec" => {
                args.next();
            }
            a if a.starts_with("--repo=") => repository_flag = true,
            a if a.starts_with('-') => {}
            _ => positional.push(arg.clone()),
        }
    }
    // The first word is the repository (with --repo it may be one as well).
    let refspecs = if repository_flag { &positional[..] } else { positional.get(1..).unwrap_or(&[]) };
    if refspecs.is_empty() || (repository_flag && positional.len() == 1) {
        return Some("a push without a refspec pushes the checked-out branch: main, on a checkout of main".into());
    }
    refspecs.iter().find_map(|spec| refspec_lands_on_main(spec))
}

/// `gh ARGS`: whether it can land a commit on main (a merge, a ref or a
/// file written through the API).
fn gh_lands_on_main(args: &[String]) -> Option<String> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    if let Some(word) = words.iter().find(|w| w.contains("heads/main")) {
        return Some(format!("`{word}` names main's ref"));
    }
    let mut rest = words.iter().copied();
    let mut command = Vec::new();
    while let Some(word) = rest.next() {
        match word {
            "-R" | "--repo" => {
                rest.next();
            }
            w if w.starts_with('-') => {}
            w => {
                command.push(w);
                if command.len() == 2 || command == ["api"] {
                    break;
                }
            }
        }
    }
    match command[..] {
        ["pr", "merge"] => return Some("`gh pr merge` lands a pull request on its base, main".into()),
        ["repo", "sync"] => return Some("`gh repo sync` moves a branch of the repository (its default, main)".into()),
        ["api"] => {}
        _ => return None,
    }
    let (mut endpoint, mut writes) = (None, false);
    let rest: Vec<&str> = rest.collect();
    let mut at = 0;
    while at < rest.len() {
        let word = rest[at];
        let value = rest.get(at + 1).copied().unwrap_or_default();
        match word {
            "-X" | "--method" => {
                writes |= !value.eq_ignore_ascii_case("GET");
                at += 1;
            }
            "-f" | "-F" | "--field" | "--raw-field" | "--input" => {
                writes = true;
                at += 1;
            }
            "-H" | "--header" | "-q" | "--jq" | "-t" | "--template" | "--hostname" | "--cache" | "-p" | "--preview" => {
                at += 1
            }
            w if w.starts_with("-X") || w.starts_with("--method=") => {
                writes |= !w.trim_start_matches("-X").trim_start_matches("--method=").eq_ignore_ascii_case("GET")
            }
            w if w.starts_with('-') => writes |= w.starts_with("--field=") || w.starts_with("--raw-field="),
            w => {
                endpoint.get_or_insert(w);
            }
        }
        at += 1;
    }
    let endpoint = endpoint.unwrap_or_default();
    if endpoint.contains("/merge") {
        Some(format!("`gh api {endpoint}` merges into a branch (main, by default)"))
    } else if writes && endpoint.contains("/contents/") {
        Some(format!("`gh api {endpoint}` writes a file: a commit on the default branch, main"))
    } else if writes && endpoint.contains("/git/refs") && rest.iter().any(|w| w.contains('$')) {
        Some(format!("`gh api {endpoint}` moves a ref decided at run time (it may be main)"))
    } else {
        None
    }
}

/// Every command of a `run:` script that can land a commit on main, with why.
fn pushes_main(script: &str) -> Vec<String> {
    let mut found = Vec::new();
    for words in shell_commands(script) {
        // A script inside a word (`bash -c "…"`, `eval "…"`, "$(…)") is read too.
        for word in words.iter().filter(|w| w.contains(|c: char| c.is_whitespace() || ";&|()`".contains(c))) {
            found.extend(pushes_main(word));
        }
        let line = words.join(" ");
        for (at, word) in words.iter().enumerate() {
            let why = match word.rsplit('/').next().unwrap_or(word) {
                "git" => git_lands_on_main(&words[at + 1..]),
                "gh" => gh_lands_on_main(&words[at + 1..]),
                _ if word.contains("/git/refs/heads/main") => Some("GitHub's ref API for main".into()),
                _ => None,
            };
            if let Some(why) = why {
                found.push(format!("`{line}`: {why}"));
                break;
            }
        }
    }
    found
}

/// The actions a job whose token can push may use: checkout (keeping no
/// credentials) and install-nix. Any other could push main with the token.
const ACTIONS_IN_A_JOB_THAT_CAN_PUSH: &[&str] = &["actions/checkout@", "cachix/install-nix-action@"];

/// Every way a job of `workflow` can land a commit on main: its scripts,
/// and in a job whose token may write contents, any other action, or a
/// checkout that leaves the token in `.git/config` for a later push.
fn job_pushes_main(workflow: &Value, job: &Value) -> Vec<String> {
    let permissions = if job.get("permissions").is_some() { &job["permissions"] } else { &workflow["permissions"] };
    let can_push = match permissions {
        // Unset: the repository's default, which may be write.
        Value::Null => true,
        Value::String(all) => all == "write-all",
        _ => permissions["contents"] == "write",
    };
    let mut found = Vec::new();
    if let Some(uses) = job["uses"].as_str() {
        found.push(format!("`uses: {uses}`: a called workflow, with this job's token"));
    }
    for step in job["steps"].as_array().into_iter().flatten() {
        found.extend(pushes_main(step["run"].as_str().unwrap_or_default()));
        let Some(uses) = step["uses"].as_str() else { continue };
        if !can_push {
            continue;
        }
        if !ACTIONS_IN_A_JOB_THAT_CAN_PUSH.iter().any(|a| uses.starts_with(a)) {
            found.push(format!("`uses: {uses}` in a job whose token can push"));
        } else if uses.starts_with("actions/checkout@") && step["with"]["persist-credentials"] != false {
            found.push(format!("`uses: {uses}` keeps the token in .git/config, for any later `git push`"));
        }
    }
    found
}

/// Attack: a workflow (one a branch adds, or the bump) pushes main,
/// bypassing review. No workflow in `.github/workflows/` has a command
/// that can land on main: the pin bump pushes its own branch by a refspec
/// naming it in full and opens a pull request.
#[test]
fn no_workflow_pushes_main() {
    let root = testkit::repo_root();
    let (mut jobs, mut findings) = (0, Vec::new());
    for entry in std::fs::read_dir(root.join(".github/workflows")).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().into_owned();
        let workflow = load(&root, &file);
        for (name, job) in workflow["jobs"].as_object().unwrap() {
            jobs += 1;
            findings.extend(job_pushes_main(&workflow, job).into_iter().map(|f| format!("{file}, job {name}: {f}")));
        }
    }
    assert!(jobs >= 6, "only {jobs} jobs: the scan is broken");
    assert!(findings.is_empty(), "workflows that can push main:\n{}", findings.join("\n"));
    // The one push there is, is seen (and passes): the scan reads the scripts.
    let bump = load(&root, "bump-nix-openclaw.yml");
    let pushes: Vec<Vec<String>> = bump["jobs"]["bump"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| shell_commands(s["run"].as_str().unwrap_or_default()))
        .filter(|w| w.len() > 1 && w[0] == "git" && w[1] == "push")
        .collect();
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    assert_eq!(pushes[0].last().map(String::as_str), Some("HEAD:refs/heads/bump/nix-openclaw"));
}

/// The check behind `no_workflow_pushes_main` catches every form of
/// pushing main, and passes pushes and calls that cannot land there.
#[test]
fn the_push_check_catches_every_form_of_pushing_main() {
    let lands_on_main = [
        "git push origin main",
        "git push origin HEAD:main",
        "git push origin HEAD:refs/heads/main",
        "git push origin heads/main",
        "git push --force origin +HEAD:refs/heads/main",
        "git push origin :main",
        "git push origin --delete main",
        "git push",
        "git push origin",
        "git push --tags origin",
        "git push origin HEAD",
        "git push origin @",
        "git push --all origin",
        "git push --mirror origin",
        "git push --repo=origin",
        "git push origin \"HEAD:$BRANCH\"",
        "git push origin \"$REF\"",
        "git push origin 'refs/heads/*:refs/heads/*'",
        "git -C repo -c http.extraheader=x push origin main",
        "GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=k git push origin HEAD:main",
        "git commit -qm bump && git push origin HEAD:main",
        "/usr/bin/git push origin main",
        "nix develop --command git push origin main",
        "sudo -u runner git push origin main",
        "bash -c \"git push origin main\"",
        "eval 'git push origin HEAD:main'",
        "echo \"$(git push origin HEAD:main)\"",
        "out=`git push origin main`",
        "git push \\\n  origin HEAD:main",
        "if true; then\n  git push origin main\nfi",
        "push() { git \"$@\"; }\npush push origin main",
        "gh api -X PATCH repos/o/r/git/refs/heads/main -f sha=abc",
        "gh api repos/o/r/git/refs -f ref=refs/heads/main -f sha=abc",
        "gh api --method PATCH \"repos/o/r/git/refs/heads/$BRANCH\" -f sha=abc",
        "gh api repos/o/r/merges -f base=main -f head=bump",
        "gh api -X PUT repos/o/r/pulls/7/merge",
        "gh api -X PUT repos/o/r/contents/flake.lock -f message=m -f content=x",
        "gh pr merge 7 --squash",
        "gh -R o/r pr merge --auto 7",
        "gh repo sync",
        "curl -X PATCH https://api.github.com/repos/o/r/git/refs/heads/main",
    ];
    for script in lands_on_main {
        assert!(!pushes_main(script).is_empty(), "not caught: {script}");
    }
    let cannot = [
        "git push --force-with-lease=\"refs/heads/bump/nix-openclaw:$lease\" origin HEAD:refs/heads/bump/nix-openclaw",
        "git push origin bump/nix-openclaw",
        "git push origin HEAD:refs/heads/maintenance",
        "git push origin HEAD:refs/heads/bump/main-pin",
        "git fetch origin main",
        "git ls-remote origin refs/heads/main",
        "git checkout main && git pull --ff-only origin main",
        "git commit -m 'Merged to main, it starts the release'",
        "gh pr create --head bump/nix-openclaw --base main --title t --body b",
        "gh pr list --head bump/nix-openclaw --base main --state open",
        "gh pr edit 7 --title t",
        "gh workflow run ci.yml --ref bump/nix-openclaw",
        "gh api repos/o/r/contents/flake.lock",
        "gh api repos/o/r/git/refs -f ref=refs/heads/bump/nix-openclaw -f sha=abc",
        "echo 'do not push main' # git push origin main",
        "sudo apt-get install -y git",
    ];
    for script in cannot {
        assert_eq!(pushes_main(script), Vec::<String>::new(), "{script}");
    }

    // A job whose token can push: only checkout (keeping no token) and install-nix.
    let workflow = json!({"permissions": {"contents": "read"}, "jobs": {}});
    let job = |permissions: Value, steps: &[Value]| json!({"permissions": permissions, "steps": steps});
    let checkout = json!({"uses": "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1", "with": {"persist-credentials": false}});
    let keeps_token = json!({"uses": "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1"});
    let pusher = json!({"uses": "stefanzweifel/git-auto-commit-action@v5"});
    let write = json!({"contents": "write"});
    assert_eq!(job_pushes_main(&workflow, &job(write.clone(), std::slice::from_ref(&checkout))), Vec::<String>::new());
    assert_eq!(job_pushes_main(&workflow, &job(write.clone(), &[checkout.clone(), pusher.clone()])).len(), 1);
    assert_eq!(job_pushes_main(&workflow, &job(json!("write-all"), std::slice::from_ref(&keeps_token))).len(), 1);
    assert_eq!(job_pushes_main(&workflow, &job(json!({"contents": "read"}), &[keeps_token, pusher.clone()])).len(), 0);
    let unset = json!({"jobs": {}});
    assert_eq!(job_pushes_main(&unset, &json!({"steps": [pusher]})).len(), 1, "no permissions: the default may write");
    let run = json!({"steps": [{"run": "git push origin HEAD:main"}]});
    assert_eq!(job_pushes_main(&workflow, &run).len(), 1);
}
