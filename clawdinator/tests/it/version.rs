//! `clawdinator version`: a host reads the build info its flake wrote; a
//! checkout reads flake.lock (follows resolved, as nix/lib does: the nix
//! lib check compares the two on the shipped lock). Each input's age is
//! counted in whole days from its locked commit.

fn version(dir: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = testkit::env::offline_cli(env!("CARGO_BIN_EXE_clawdinator"))
        .args(["--json", "version", "--build-info"])
        .arg(dir.join("build-info.json"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The revision the shipped lock pins for a root input, read from the lock
/// itself (the hourly pin bump changes it; the test must not).
fn locked_rev(input: &str) -> String {
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(testkit::repo_root().join("flake.lock")).unwrap()).unwrap();
    let root = lock["root"].as_str().unwrap();
    let node = lock["nodes"][root]["inputs"][input].as_str().unwrap();
    lock["nodes"][node]["locked"]["rev"].as_str().unwrap().to_string()
}

#[test]
fn a_host_shows_its_build_info_and_a_checkout_its_lock_with_ages() {
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    // A checkout: the shipped lock.
    std::fs::copy(testkit::repo_root().join("flake.lock"), dir.path().join("flake.lock")).unwrap();
    let report = version(dir.path(), &[]);
    assert!(report["source"].as_str().unwrap().ends_with("flake.lock"), "{report}");
    assert_eq!(report["revision"], "unknown", "not a git clone: {report}");
    assert_eq!(report["inputs"]["nix-openclaw"]["rev"], locked_rev("nix-openclaw"), "{report}");
    let nixpkgs = &report["inputs"]["nixpkgs"];
    assert_eq!(nixpkgs["rev"].as_str().unwrap().len(), 40, "follows not resolved: {report}");
    let expected_age = (now - nixpkgs["lastModified"].as_u64().unwrap()) / 86_400;
    assert!(nixpkgs["ageDays"].as_u64().unwrap().abs_diff(expected_age) <= 1, "{report}");

    // A host: its file wins.
    let built = serde_json::json!({
        "revision": "0123456789abcdef0123456789abcdef01234567",
        "inputs": {"nix-openclaw": {"rev": "fedcba9876543210fedcba9876543210fedcba98", "lastModified": now - 3 * 86_400}}
    });
    std::fs::write(dir.path().join("build-info.json"), built.to_string()).unwrap();
    let report = version(dir.path(), &[]);
    assert_eq!(report["revision"], "0123456789abcdef0123456789abcdef01234567");
    assert_eq!(report["inputs"]["nix-openclaw"]["rev"], "fedcba9876543210fedcba9876543210fedcba98");
    assert_eq!(report["inputs"]["nix-openclaw"]["ageDays"], 3);
    assert_eq!(report["version"], env!("CARGO_PKG_VERSION"));
}
