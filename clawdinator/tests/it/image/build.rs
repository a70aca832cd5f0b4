//! `image-build` with a stand-in `nix` on PATH that checks its arguments and
//! writes the output tree nixpkgs' amazon image produces. The real build
//! needs nix and KVM and is not run here.

use std::path::Path;
use std::process::Command;

use testkit::env::stand_in_nix;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn image_build(dir: &Path, path: &str, features: &str, kvm: &Path) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_clawdinator"))
        .args(["--json", "image", "build", "--out"])
        .arg(dir.join("dist"))
        .arg("--flake")
        .arg(dir.join("flake"))
        .env("PATH", path)
        .env("FAKE_STORE", dir.join("store"))
        .env("FAKE_FEATURES", features)
        .env("CLAWDINATOR_KVM_DEVICE", kvm)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn setup() -> (tempfile::TempDir, String, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (path, kvm) = stand_in_nix(dir.path());
    (dir, path, kvm)
}

#[test]
fn image_build_describes_what_nix_built() {
    let (dir, path, kvm) = setup();
    let run = image_build(dir.path(), &path, "nix-command flakes", &kvm);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("building the image (stand-in)"), "nix's output is streamed: {}", run.stderr);
    let args = std::fs::read_to_string(dir.path().join("store/args")).unwrap();
    assert!(args.contains("--print-out-paths") && args.contains("--print-build-logs"), "{args}");
    assert!(args.contains(&format!("--out-link {}", dir.path().join("dist/result").display())), "{args}");

    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("dist/image.json")).unwrap()).unwrap();
    assert_eq!(report, written);
    let manifest = clawdinator::image::ImageManifest::load(&dir.path().join("dist/image.json")).unwrap();
    assert_eq!(manifest.format, "raw");
    assert_eq!(manifest.boot_mode, "legacy-bios");
    assert_eq!(manifest.architecture, "x86_64");
    assert_eq!(manifest.logical_bytes, 3 * 1024 * 1024);
    assert_eq!(manifest.label, "25.05.20250101.abcdef0");
    assert!(manifest.store_path.ends_with("-nixos-amazon-image-25.05"));
    let (sha, _) = clawdinator::digest::sha256_file(&manifest.path).unwrap();
    assert_eq!(manifest.sha256, sha);
    assert_eq!(manifest.block_sha256, Some(clawdinator::image::snapshot::block_digest(&manifest.path).unwrap()));
    let head = Command::new("git").args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"]).output().unwrap();
    assert_eq!(manifest.source_revision.as_deref(), Some(String::from_utf8_lossy(&head.stdout).trim()));
}

#[test]
fn image_build_says_what_is_missing() {
    let (dir, path, kvm) = setup();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let run = image_build(dir.path(), empty.to_str().unwrap(), "nix-command flakes", &kvm);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("nix is not installed") && run.stderr.contains("nix develop"), "{}", run.stderr);

    let run = image_build(dir.path(), &path, "nix-command", &kvm);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("flakes disabled") && run.stderr.contains("experimental-features"), "{}", run.stderr);

    let run = image_build(dir.path(), &path, "nix-command flakes", Path::new("/nonexistent/kvm"));
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("needs KVM"), "{}", run.stderr);
    assert!(!dir.path().join("dist/image.json").exists());
}
