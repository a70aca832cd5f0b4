//! `host publish-tree` against the emulator: the tree mirrored under its
//! prefix, changed files only, removed files deleted, links never followed,
//! nothing outside the prefix touched.

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

#[tokio::test(flavor = "multi_thread")]
async fn the_tree_is_mirrored_changed_files_only_and_links_left_out() {
    let env = env().await;
    let tree = env.path("memory/pr-intent");
    std::fs::create_dir_all(tree.join("2026-12")).unwrap();
    std::fs::write(tree.join("index.json"), "{\"prs\": 2}\n").unwrap();
    std::fs::write(tree.join("2026-12/pr-101.md"), "# intent of 101\n").unwrap();
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
            ("pr-intent/2026-12/pr-101.md".to_string(), "uploaded".to_string()),
            ("pr-intent/index.json".to_string(), "uploaded".to_string()),
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
    std::fs::write(tree.join("2026-12/pr-101.md"), "# intent of 101, revised\n").unwrap();
    std::fs::remove_file(tree.join("index.json")).unwrap();
    std::fs::write(tree.join("2026-12/pr-102.md"), "# intent of 102\n").unwrap();
    env.emulator.start_call_log().unwrap();
    let dry = publish(&env, &tree, &["--dry-run"]);
    assert_eq!(actions(&dry)["pr-intent/index.json"], "would-delete");
    assert_eq!(puts(&env), 0, "a dry run wrote");
    let next = publish(&env, &tree, &[]);
    assert_eq!(
        actions(&next),
        BTreeMap::from([
            ("pr-intent/2026-12/pr-101.md".to_string(), "uploaded".to_string()),
            ("pr-intent/2026-12/pr-102.md".to_string(), "uploaded".to_string()),
            ("pr-intent/index.json".to_string(), "deleted".to_string()),
        ])
    );
    assert_eq!(env.get("pr-intent/2026-12/pr-101.md").await, b"# intent of 101, revised\n");
    assert_eq!(
        env.keys().await,
        ["other/keep.txt", "pr-intent/2026-12/pr-101.md", "pr-intent/2026-12/pr-102.md"],
        "something outside the prefix changed, or a removed file stayed"
    );
}

#[test]
fn a_prefix_that_could_mirror_the_whole_bucket_is_refused() {
    for bad in ["", "/", "pr-intent", "/pr-intent/", "../pr-intent/"] {
        assert!(clawdinator::host::publish::check_prefix(bad).is_err(), "{bad:?}");
    }
    clawdinator::host::publish::check_prefix("pr-intent/").unwrap();
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
    let tree = env.path("memory/pr-intent");
    std::fs::create_dir_all(&tree).unwrap();
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
        let action = report["objects"]["pr-intent/memo.md"].as_str().unwrap_or("absent");
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
    let tree = env.path("memory/pr-intent");
    std::fs::create_dir_all(&tree).unwrap();
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
    assert!(stderr.contains("PutObject") && stderr.contains("pr-intent/pr-2.md"), "{stderr}");
    assert_eq!(env.keys().await, ["pr-intent/pr-1.md"]);
    env.emulator.clear_faults().unwrap();
    env.emulator.start_call_log().unwrap();
    let rerun = actions(&publish(&env, &tree, &[]));
    assert_eq!(rerun["pr-intent/pr-1.md"], "unchanged");
    assert_eq!((rerun["pr-intent/pr-2.md"].as_str(), rerun["pr-intent/pr-3.md"].as_str()), ("uploaded", "uploaded"));
    assert_eq!(puts(&env), 2, "the re-run sent a file twice");
    assert_eq!(env.keys().await, ["pr-intent/pr-1.md", "pr-intent/pr-2.md", "pr-intent/pr-3.md"]);
}
