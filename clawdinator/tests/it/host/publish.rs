//! `host publish-tree` against the emulator: the tree mirrored under its
//! prefix, changed files only, removed files deleted, links never followed,
//! nothing outside the prefix touched; and the published keys where the
//! original fleet's readers find them, judged by the IAM simulator.

use std::collections::BTreeMap;

use std::path::Path;

use clawdinator::host::publish::read_regular;
use testkit::env::{env, Env};

fn publish(env: &Env, from: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let out = env
        .cli(env!("CARGO_BIN_EXE_clawdinator"))
        .args(["--json", "host", "publish-tree", "--bucket", &env.bucket, "--from"])
        .arg(from)
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn actions(report: &serde_json::Value) -> BTreeMap<String, String> {
    let objects = report["objects"].as_object().unwrap();
    objects.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect()
}

fn puts(env: &Env) -> usize {
    env.emulator.calls().unwrap().iter().filter(|c| c["operation"] == "PutObject").count()
}

/// The orchestrator's tree of skill version v1, as it writes it in shared
/// memory (`pr-intent/v1/openclaw-openclaw/<N>.txt` and `.meta.json`).
fn v1_tree(env: &Env) -> std::path::PathBuf {
    let tree = env.path("memory/pr-intent/v1");
    std::fs::create_dir_all(tree.join("openclaw-openclaw")).unwrap();
    tree
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tree_is_mirrored_changed_files_only_and_links_left_out() {
    let env = env().await;
    let tree = v1_tree(&env);
    std::fs::write(tree.join("index.json"), "{\"prs\": 2}\n").unwrap();
    std::fs::write(tree.join("openclaw-openclaw/101.txt"), "intent of 101\n").unwrap();
    // Attack: links out of the tree, to a secret and to a directory.
    std::fs::write(env.path("secret"), "do not publish").unwrap();
    std::os::unix::fs::symlink(env.path("secret"), tree.join("leak.md")).unwrap();
    std::os::unix::fs::symlink(env.path("."), tree.join("everything")).unwrap();
    env.put("other/keep.txt", b"not ours".to_vec()).await;

    env.emulator.start_call_log().unwrap();
    let first = publish(&env, &tree, &[]);
    assert_eq!(
        actions(&first),
        BTreeMap::from([
            ("v1/index.json".to_string(), "uploaded".to_string()),
            ("v1/openclaw-openclaw/101.txt".to_string(), "uploaded".to_string()),
        ])
    );
    let skipped: Vec<&str> = first["skipped"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert_eq!(skipped.len(), 2, "{first}");
    assert!(skipped[0].ends_with("/everything") && skipped[1].ends_with("/leak.md"), "the report names each: {first}");
    assert!(!env.keys().await.iter().any(|k| k.contains("leak") || k.contains("everything")));

    // Again: nothing sent.
    env.emulator.start_call_log().unwrap();
    let again = publish(&env, &tree, &[]);
    assert!(actions(&again).values().all(|a| a == "unchanged"), "{again}");
    assert_eq!(puts(&env), 0, "an unchanged file was sent again");

    // Edited, removed, added; a dry run first writes nothing.
    std::fs::write(tree.join("openclaw-openclaw/101.txt"), "intent of 101, revised\n").unwrap();
    std::fs::remove_file(tree.join("index.json")).unwrap();
    std::fs::write(tree.join("openclaw-openclaw/102.txt"), "intent of 102\n").unwrap();
    env.emulator.start_call_log().unwrap();
    let dry = publish(&env, &tree, &["--dry-run"]);
    assert_eq!(actions(&dry)["v1/index.json"], "would-delete");
    assert_eq!(puts(&env), 0, "a dry run wrote");
    let next = publish(&env, &tree, &[]);
    assert_eq!(
        actions(&next),
        BTreeMap::from([
            ("v1/index.json".to_string(), "deleted".to_string()),
            ("v1/openclaw-openclaw/101.txt".to_string(), "uploaded".to_string()),
            ("v1/openclaw-openclaw/102.txt".to_string(), "uploaded".to_string()),
        ])
    );
    assert_eq!(env.get("v1/openclaw-openclaw/101.txt").await, b"intent of 101, revised\n");
    assert_eq!(
        env.keys().await,
        ["other/keep.txt", "v1/openclaw-openclaw/101.txt", "v1/openclaw-openclaw/102.txt"],
        "something outside the prefix changed, or a removed file stayed"
    );
}

#[test]
fn a_prefix_that_could_mirror_the_whole_bucket_is_refused() {
    for bad in ["", "/", "v1", "/v1/", "../v1/"] {
        assert!(clawdinator::host::publish::check_prefix(bad).is_err(), "{bad:?}");
    }
    clawdinator::host::publish::check_prefix(clawdinator::host::publish::DEFAULT_PREFIX).unwrap();
}

/// A root-only file, like the secrets in /run/agenix.
fn root_only_secret(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let secret = dir.join("secret");
    std::fs::write(&secret, "do not publish").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o400)).unwrap();
    secret
}

/// Attack: a file of the tree swapped for a link to a root-only secret after
/// the walk, or a directory on its path swapped for a link out of the tree.
/// The read opens without following a link at any level: the secret is
/// refused, never read.
#[test]
fn a_file_swapped_for_a_link_is_never_read_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let secret = root_only_secret(dir.path());
    std::os::unix::fs::symlink(&secret, dir.path().join("memo.md")).unwrap();
    assert_eq!(read_regular(&dir.path().join("memo.md")).unwrap(), None, "read through a link");
    std::os::unix::fs::symlink(dir.path(), dir.path().join("subdir")).unwrap();
    let err = read_regular(&dir.path().join("subdir/secret")).unwrap_err();
    assert!(format!("{err:#}").contains("a link is never followed"), "{err:#}");
    std::fs::write(dir.path().join("plain.md"), "a memo").unwrap();
    assert_eq!(read_regular(&dir.path().join("plain.md")).unwrap().as_deref(), Some(&b"a memo"[..]));
}

/// Attack: a file of the tree swapped for a FIFO after the walk. Opening a
/// FIFO for reading waits for a writer, forever: the read opens without
/// blocking and refuses what is not a regular file. Run with a time limit
/// (a hang fails the test instead of stalling the suite).
#[test]
fn a_file_swapped_for_a_fifo_is_refused_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("memo.md");
    rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o666), 0)
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || tx.send(read_regular(&path).map_err(|e| format!("{e:#}"))));
    let verdict = rx.recv_timeout(std::time::Duration::from_secs(20));
    if verdict.is_err() {
        // Release the reader stuck in open(2) so the test process can end.
        let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
        panic!("reading a FIFO hung");
    }
    assert_eq!(verdict.unwrap(), Ok(None), "a FIFO was read");
}

/// The same attacks against the running command: while publish-tree runs
/// again and again, a file of the tree keeps being swapped for a FIFO, a
/// link to a root-only secret and back. No run hangs (each is timed out by
/// the harness), none fails, the secret is never published, and a run that
/// refused the file names it in its report.
#[tokio::test(flavor = "multi_thread")]
async fn publish_tree_survives_a_file_swapped_while_it_runs() {
    let env = env().await;
    let tree = v1_tree(&env);
    std::fs::write(tree.join("index.json"), "{}\n").unwrap();
    let secret = root_only_secret(&env.path("."));
    let swaps = env.path("swaps");
    std::fs::create_dir_all(&swaps).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (stop, tree, swaps) = (stop.clone(), tree.clone(), swaps.clone());
        std::thread::spawn(move || {
            let memo = tree.join("memo.md");
            for n in 0.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let next = swaps.join(format!("next-{n}"));
                match n % 3 {
                    0 => std::fs::write(&next, "# a memo\n").unwrap(),
                    1 => rustix::fs::mknodat(
                        rustix::fs::CWD,
                        &next,
                        rustix::fs::FileType::Fifo,
                        rustix::fs::Mode::from_raw_mode(0o666),
                        0,
                    )
                    .unwrap(),
                    _ => std::os::unix::fs::symlink(&secret, &next).unwrap(),
                }
                std::fs::rename(&next, &memo).unwrap();
            }
        })
    };
    let mut named = 0;
    for run in 0..12 {
        let mut cli = tokio::process::Command::from(env.cli(env!("CARGO_BIN_EXE_clawdinator")));
        cli.args(["--json", "host", "publish-tree", "--bucket", &env.bucket, "--from"]).arg(&tree).kill_on_drop(true);
        let out = tokio::time::timeout(std::time::Duration::from_secs(120), cli.output()).await;
        let Ok(out) = out else {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            panic!("run {run}: publish-tree hung on a swapped file");
        };
        let out = out.unwrap();
        assert!(out.status.success(), "run {run}: {}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let skipped = report["skipped"].as_array().unwrap();
        let action = report["objects"]["v1/memo.md"].as_str().unwrap_or("absent");
        let published = matches!(action, "uploaded" | "unchanged");
        let refused = skipped.iter().any(|p| p.as_str().unwrap().ends_with("/memo.md"));
        assert!(!(published && refused), "run {run}: {report}");
        named += usize::from(refused);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    swapper.join().unwrap();
    for key in env.keys().await {
        assert_ne!(env.get(&key).await, b"do not publish", "{key}: the secret was published");
    }
    eprintln!("{named} of 12 runs found memo.md swapped for a FIFO or a link and named it");
}

/// S3 fails after the first upload: the run fails naming the object; the
/// re-run sends only what is missing and deletes nothing twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_publish_failing_midway_is_finished_by_a_rerun() {
    let env = env().await;
    let tree = v1_tree(&env);
    for n in 1..=3 {
        std::fs::write(tree.join(format!("pr-{n}.md")), format!("# intent {n}\n")).unwrap();
    }
    env.emulator
        .inject(serde_json::json!({"operation": "PutObject", "after": 1, "times": -1, "status": 500, "code": "InternalError"}))
        .unwrap();
    let out = env
        .cli(env!("CARGO_BIN_EXE_clawdinator"))
        .args(["host", "publish-tree", "--bucket", &env.bucket, "--from"])
        .arg(&tree)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("PutObject") && stderr.contains("v1/pr-2.md"), "{stderr}");
    assert_eq!(env.keys().await, ["v1/pr-1.md"]);
    env.emulator.clear_faults().unwrap();
    env.emulator.start_call_log().unwrap();
    let rerun = actions(&publish(&env, &tree, &[]));
    assert_eq!(rerun["v1/pr-1.md"], "unchanged");
    assert_eq!((rerun["v1/pr-2.md"].as_str(), rerun["v1/pr-3.md"].as_str()), ("uploaded", "uploaded"));
    assert_eq!(puts(&env), 2, "the re-run sent a file twice");
    assert_eq!(env.keys().await, ["v1/pr-1.md", "v1/pr-2.md", "v1/pr-3.md"]);
}

/// An S3 client that signs nothing, as `aws s3 … --no-sign-request` sends.
async fn unsigned_s3(env: &Env) -> aws_sdk_s3::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .no_credentials()
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(env.emulator.endpoint())
        .load()
        .await;
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&config).force_path_style(true).build())
}

/// The simulator's decisions on every logged call since the last
/// `start_call_log`, each made by `who` (the policies OpenTofu gives the
/// public bucket, the fleet's instances and their boundary).
fn judged(env: &Env, who: &testkit::policies::Principal) -> Vec<testkit::iam::Decision> {
    let (root, world) = (testkit::repo_root(), testkit::policies::World::emulator(&env.bucket));
    let calls = env.emulator.calls().unwrap();
    let facts = testkit::iam::Facts::default();
    let requests: Vec<_> =
        calls.iter().flat_map(|call| testkit::iam::requests(call, &world, &facts).unwrap()).map(|r| (who, r)).collect();
    assert!(!requests.is_empty(), "no call was logged");
    let bucket_policy = testkit::policies::bucket_policy(&root, &world).unwrap();
    testkit::iam::judge(&world, &bucket_policy, &requests).unwrap()
}

/// The keys of a listing, sorted.
fn listed(out: &aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output) -> Vec<String> {
    let mut keys: Vec<String> = out.contents().iter().filter_map(|o| o.key().map(str::to_string)).collect();
    keys.sort();
    keys
}

/// Item 6 of issue 26, end to end. The orchestrator's tree, published with
/// publish-tree's defaults to the public bucket, lands at the original
/// fleet's keys (`v1/openclaw-openclaw/<N>.txt`, `.meta.json`), and every
/// call publish-tree made is allowed to a publisher (its policy inside the
/// instance boundary). The readers' commands, sent unsigned as the AWS CLI
/// sends them (`aws s3 ls --no-sign-request s3://B/v1/openclaw-openclaw/`:
/// prefix and delimiter `/`; `aws s3 sync --no-sign-request s3://B/v1/ …`:
/// prefix `v1/`, then a GET per key), find exactly those files and are
/// allowed by the bucket's policy. Attack: the same unsigned reader listing
/// the root, the old `pr-intent/` prefix or `v1` without its slash,
/// reading what another prefix holds, replacing or deleting a memo: each
/// call is denied.
#[tokio::test(flavor = "multi_thread")]
async fn the_original_readers_commands_find_the_memos_and_nothing_else() {
    let env = env().await;
    let public = "openclaw-pr-intent";
    let s3 = env.aws.s3();
    s3.create_bucket().bucket(public).send().await.unwrap();
    // The emulator lets an unsigned GET through only where the bucket's
    // policy allows it: it gets the grants of OpenTofu's policy
    // (aws_s3_bucket_policy.pr_intent), without its TLS-only Deny, whose
    // condition it cannot evaluate (it would deny every call). The
    // simulator judges every call below against the whole policy.
    let (root, world) = (testkit::repo_root(), testkit::policies::World::emulator(&env.bucket));
    let mut grants = testkit::policies::pr_intent_bucket_policy(&root, &world).unwrap();
    grants["Statement"].as_array_mut().unwrap().retain(|s| s["Effect"] == "Allow");
    s3.put_bucket_policy().bucket(public).policy(grants.to_string()).send().await.unwrap();
    for (key, text) in [("pr-intent/v1/openclaw-openclaw/1.txt", "the old layout"), ("private/notes.md", "private")] {
        s3.put_object().bucket(public).key(key).body(text.as_bytes().to_vec().into()).send().await.unwrap();
    }
    let tree = v1_tree(&env);
    std::fs::write(tree.join("openclaw-openclaw/1234.txt"), "intent of 1234\n").unwrap();
    std::fs::write(tree.join("openclaw-openclaw/1234.meta.json"), "{\"pr\": 1234, \"error\": null}\n").unwrap();
    std::fs::write(tree.join("openclaw-openclaw/1235.txt"), "intent of 1235, soon gone\n").unwrap();

    // The publisher: a first run uploads, the second finds them there, the
    // third deletes what the tree lost.
    env.emulator.start_call_log().unwrap();
    let run = |env: &Env| {
        let out = env
            .cli(env!("CARGO_BIN_EXE_clawdinator"))
            .args(["--json", "host", "publish-tree", "--bucket", public, "--from"])
            .arg(&tree)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    run(&env);
    run(&env);
    std::fs::remove_file(tree.join("openclaw-openclaw/1235.txt")).unwrap();
    run(&env);
    let registry = clawdinator::registry::Registry::load(&root.join(clawdinator::registry::DEFAULT_PATH)).unwrap();
    let host = testkit::policies::instance(&root, &world, &registry.instances["clawdinator-1"], true).unwrap();
    let publisher = testkit::policies::pr_intent_publisher(&root, &world, host).unwrap();
    let decisions = judged(&env, &publisher);
    let denied: Vec<String> = decisions.iter().filter(|d| !d.allowed).map(|d| d.to_string()).collect();
    assert!(denied.is_empty(), "the publisher is denied calls publish-tree makes:\n{}", denied.join("\n"));
    let made: std::collections::BTreeSet<&str> = decisions.iter().map(|d| d.request.action.as_str()).collect();
    for action in ["s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject"] {
        assert!(made.contains(action), "publish-tree never needed {action}: {made:?}");
    }

    // The readers.
    let reader = unsigned_s3(&env).await;
    env.emulator.start_call_log().unwrap();
    let ls = reader.list_objects_v2().bucket(public).prefix("v1/openclaw-openclaw/").delimiter("/").send();
    let published = ["v1/openclaw-openclaw/1234.meta.json", "v1/openclaw-openclaw/1234.txt"];
    assert_eq!(listed(&ls.await.unwrap()), published, "not the original's layout");
    let sync = reader.list_objects_v2().bucket(public).prefix("v1/").send().await.unwrap();
    assert_eq!(listed(&sync), published);
    for key in listed(&sync) {
        let out = reader.get_object().bucket(public).key(&key).send().await.unwrap();
        let local = tree.join(key.strip_prefix("v1/").unwrap());
        assert_eq!(out.body.collect().await.unwrap().into_bytes().to_vec(), std::fs::read(local).unwrap(), "{key}");
    }
    let calls = env.emulator.calls().unwrap();
    assert!(calls.iter().all(|c| c["accessKey"].is_null()), "the reader signed a call: {calls:#?}");
    let anyone = testkit::policies::anonymous();
    let decisions = judged(&env, &anyone);
    let denied: Vec<String> = decisions.iter().filter(|d| !d.allowed).map(|d| d.to_string()).collect();
    assert!(denied.is_empty(), "the readers' commands are denied:\n{}", denied.join("\n"));

    // The attacks, each one call (the emulator enforces no policy: the
    // simulator judges what AWS would do with each).
    env.emulator.start_call_log().unwrap();
    let list = |prefix: Option<&str>, delimiter: Option<&str>| {
        reader
            .list_objects_v2()
            .bucket(public)
            .set_prefix(prefix.map(Into::into))
            .set_delimiter(delimiter.map(Into::into))
    };
    let _ = list(Some(""), Some("/")).send().await;
    let _ = list(None, None).send().await;
    let _ = list(Some("pr-intent/"), None).send().await;
    let _ = list(Some("v1"), Some("/")).send().await;
    let _ = reader.get_object().bucket(public).key("pr-intent/v1/openclaw-openclaw/1.txt").send().await;
    let _ = reader.get_object().bucket(public).key("private/notes.md").send().await;
    let _ = reader.put_object().bucket(public).key(published[1]).body(b"defaced".to_vec().into()).send().await;
    let _ = reader.delete_object().bucket(public).key(published[0]).send().await;
    let decisions = judged(&env, &anyone);
    assert_eq!(decisions.len(), 8, "an attack made no call, or more than one: {decisions:#?}");
    let allowed: Vec<String> = decisions.iter().filter(|d| d.allowed).map(|d| d.to_string()).collect();
    assert!(allowed.is_empty(), "an unsigned reader may:\n{}", allowed.join("\n"));
}
