//! `pipeline --local`, the README's first command, end to end.

use std::process::Command;

#[test]
fn pipeline_local_runs_every_stage_and_prints_the_ami() {
    let dir = tempfile::tempdir().unwrap();
    let github_output = dir.path().join("github-output");
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["--json", "--local", "pipeline"])
        .current_dir(testkit::repo_root())
        .env("GITHUB_OUTPUT", &github_output)
        .env("CLAWDINATOR_AUDIT_LOG", dir.path().join("audit.jsonl"))
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.lines().next().unwrap().starts_with("--local: running against a throwaway"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stages: Vec<&str> = report["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(
        stages,
        [
            "secrets check",
            "bootstrap seeds prepare",
            "bootstrap upload",
            "image build",
            "image publish",
            "image ami latest"
        ]
    );
    let ami = report["amiId"].as_str().unwrap();
    assert!(ami.starts_with("ami-"), "{ami}");
    assert_eq!(std::fs::read_to_string(&github_output).unwrap(), format!("ami_id={ami}\n"));
    let log = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let finished: serde_json::Value = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["command"] == "pipeline" && r["phase"] == "finished")
        .unwrap_or_else(|| panic!("no finished pipeline record in {log}"));
    assert_eq!(finished["resources"], serde_json::json!([ami]), "{finished}");
    for line in ["[1/6] secrets check", "[3/6] bootstrap upload", "[6/6] image ami latest"] {
        assert!(stderr.contains(line), "{line} missing from {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pipeline_stops_at_the_first_failed_stage_and_names_it() {
    let env = testkit::env::env().await;
    let out = env
        .cli(env!("CARGO_BIN_EXE_xtask"))
        .args(["pipeline", "--bucket", &env.bucket, "--secrets-dir"])
        .current_dir(testkit::repo_root())
        .arg(env.path("no-such-dir"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("pipeline stopped: stage `secrets check` failed"), "{stderr}");
    assert!(env.keys().await.is_empty());
}

#[test]
fn pipeline_local_dry_run_says_what_it_would_do() {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["--json", "--local", "pipeline", "--dry-run"])
        .current_dir(testkit::repo_root())
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("GITHUB_OUTPUT")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["amiId"], "");
    let stages = report["stages"].as_array().unwrap();
    assert!(stages[2]["summary"].as_str().unwrap().starts_with("dry run"), "{stages:?}");
    assert!(stages[4]["summary"].as_str().unwrap().starts_with("dry run: would send"), "{stages:?}");
    assert!(stages[5]["summary"].as_str().unwrap().starts_with("would be the new clawdinator-nixos-"), "{stages:?}");
}

/// Where nix and KVM are (here: the stand-in), `--local` builds the image and
/// publishes exactly what it built; the output is that AMI.
#[test]
fn pipeline_local_publishes_the_image_it_built() {
    let dir = tempfile::tempdir().unwrap();
    let (path, kvm) = testkit::env::stand_in_nix(dir.path());
    let github_output = dir.path().join("github-output");
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["--json", "--local", "pipeline", "--flake"])
        .arg(dir.path().join("flake"))
        .current_dir(testkit::repo_root())
        .env("PATH", path)
        .env("FAKE_STORE", dir.path().join("store"))
        .env("FAKE_FEATURES", "nix-command flakes")
        .env("CLAWDINATOR_KVM_DEVICE", kvm)
        .env("GITHUB_OUTPUT", &github_output)
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("building the image (stand-in)"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stages = report["stages"].as_array().unwrap();
    // The stand-in's image: 3 MiB of zeros with "NixOS root" at 1 MiB.
    let mut image = vec![0u8; 3 << 20];
    image[1 << 20..(1 << 20) + 10].copy_from_slice(b"NixOS root");
    let sha = clawdinator::digest::sha256_hex(&image);
    let built = stages[3]["summary"].as_str().unwrap();
    assert!(built.contains(&sha) && !built.starts_with("skipped"), "{stages:?}");
    let ami = report["amiId"].as_str().unwrap();
    let published = stages[4]["summary"].as_str().unwrap();
    assert!(published.starts_with(ami) && published.contains("512.00 KiB sent"), "{stages:?}");
    assert_eq!(std::fs::read_to_string(&github_output).unwrap(), format!("ami_id={ami}\n"));
}

/// The command lines users were promised keep working: `cargo xtask
/// image-build` is `image build`, with the same flags and the same image.
#[test]
fn image_build_and_image_dash_build_are_the_same_command() {
    let built = |words: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let (path, kvm) = testkit::env::stand_in_nix(dir.path());
        let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["--json"])
            .args(words)
            .arg("--flake")
            .arg(dir.path().join("flake"))
            .arg("--out")
            .arg(dir.path().join("dist"))
            .env("PATH", path)
            .env("FAKE_STORE", dir.path().join("store"))
            .env("FAKE_FEATURES", "nix-command flakes")
            .env("CLAWDINATOR_KVM_DEVICE", kvm)
            .output()
            .unwrap();
        assert!(out.status.success(), "{words:?}: {}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        report["sha256"].as_str().unwrap().to_string()
    };
    assert_eq!(built(&["image-build"]), built(&["image", "build"]));
    let help = Command::new(env!("CARGO_BIN_EXE_xtask")).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("image-build"), "not in --help");
}
