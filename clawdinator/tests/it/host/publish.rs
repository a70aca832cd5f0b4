//! `host publish-tree` against the emulator: the tree mirrored under its
//! prefix, changed files only, removed files deleted, links never followed,
//! nothing outside the prefix touched.

use std::collections::BTreeMap;

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
    assert_eq!(first["skipped"].as_array().unwrap().len(), 2, "{first}");
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

/// Attack: a file of the tree swapped for a link to a secret after the
/// walk. The read opens without following links: the secret is refused.
#[test]
fn a_file_swapped_for_a_link_is_never_read_through_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "do not publish").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret"), dir.path().join("memo.md")).unwrap();
    let err = clawdinator::host::publish::read_regular(&dir.path().join("memo.md")).unwrap_err();
    assert!(format!("{err:#}").contains("a link is never followed"), "{err:#}");
    std::fs::write(dir.path().join("plain.md"), "a memo").unwrap();
    assert_eq!(clawdinator::host::publish::read_regular(&dir.path().join("plain.md")).unwrap(), b"a memo");
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
