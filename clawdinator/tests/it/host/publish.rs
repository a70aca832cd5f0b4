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
