//! `image-build` with a stand-in `nix` on PATH that checks its arguments and
//! writes the output tree nixpkgs' amazon image produces. The real build
//! needs nix and KVM and is not run here.

use std::path::Path;
use std::process::Command;

const FAKE_NIX: &str = r#"#!/bin/sh
case "$1" in
  --version) echo "nix (Nix) 2.24.9" ;;
  config) echo "$FAKE_FEATURES" ;;
  build)
    echo "$@" > "$FAKE_STORE/args"
    [ "$2" = ".#nixosConfigurations.clawdinator-1.config.system.build.images.amazon" ] || { echo "unexpected installable $2" >&2; exit 1; }
    out="$FAKE_STORE/0123456789abcdfghijklmnpqrsvwxyz-nixos-amazon-image-25.05"
    mkdir -p "$out/nix-support"
    img="$out/nixos-amazon-image-25.05.20250101.abcdef0-x86_64-linux.raw"
    head -c 3145728 /dev/zero > "$img"
    printf 'NixOS root' | dd of="$img" bs=1 seek=1048576 conv=notrunc 2>/dev/null
    cat > "$out/nix-support/image-info.json" <<JSON
{"label": "25.05.20250101.abcdef0", "system": "x86_64-linux", "boot_mode": "legacy-bios", "logical_bytes": "3145728", "file": "$img"}
JSON
    shift 2
    while [ $# -gt 0 ]; do [ "$1" = "--out-link" ] && ln -sfn "$out" "$2"; shift; done
    echo "building the image (stand-in)" >&2
    echo "$out"
    ;;
  *) echo "unexpected nix call: $*" >&2; exit 1 ;;
esac
"#;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn image_build(dir: &Path, path: &str, features: &str, kvm: &Path) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["--json", "image-build", "--host", "clawdinator-1", "--out"])
        .arg(dir.join("dist"))
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
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(dir.path().join("store")).unwrap();
    std::fs::write(bin.join("nix"), FAKE_NIX).unwrap();
    std::fs::set_permissions(bin.join("nix"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let kvm = dir.path().join("kvm");
    std::fs::write(&kvm, "").unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
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
    let manifest = xtask::image::ImageManifest::load(&dir.path().join("dist/image.json")).unwrap();
    assert_eq!(manifest.format, "raw");
    assert_eq!(manifest.boot_mode, "legacy-bios");
    assert_eq!(manifest.architecture, "x86_64");
    assert_eq!(manifest.logical_bytes, 3 * 1024 * 1024);
    assert_eq!(manifest.label, "25.05.20250101.abcdef0");
    assert!(manifest.store_path.ends_with("-nixos-amazon-image-25.05"));
    let (sha, _) = xtask::bootstrap::archive::sha256_file(&manifest.path).unwrap();
    assert_eq!(manifest.sha256, sha);
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
