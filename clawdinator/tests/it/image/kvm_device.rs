//! `image build --kvm-device`: the KVM device is a command-line setting
//! (CLAWDINATOR_KVM_DEVICE its environment default), not a hidden read.

use std::path::Path;
use std::process::{Command, Output};

use testkit::env::stand_in_nix;

/// `image build` with the stand-in nix, the device from the environment
/// and, if given, from the flag.
fn build(dir: &Path, path: &str, env_device: &Path, flag: Option<&Path>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_clawdinator"));
    command.args(["--json", "image", "build", "--out"]).arg(dir.join("dist")).arg("--flake").arg(dir.join("flake"));
    if let Some(device) = flag {
        command.arg("--kvm-device").arg(device);
    }
    command
        .env("PATH", path)
        .env("FAKE_STORE", dir.join("store"))
        .env("FAKE_FEATURES", "nix-command flakes")
        .env("CLAWDINATOR_KVM_DEVICE", env_device)
        .output()
        .unwrap()
}

#[test]
fn the_kvm_device_flag_wins_over_its_environment_variable() {
    let dir = tempfile::tempdir().unwrap();
    let (path, kvm) = stand_in_nix(dir.path());
    let missing = dir.path().join("no-kvm-here");

    let run = build(dir.path(), &path, &missing, Some(&kvm));
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));

    std::fs::remove_file(dir.path().join("dist/image.json")).unwrap();
    let run = build(dir.path(), &path, &kvm, Some(&missing));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{} not found", missing.display())), "names the device: {stderr}");
    assert!(!dir.path().join("dist/image.json").exists());
}

#[test]
fn image_build_help_shows_the_kvm_device_and_its_variable() {
    let help = Command::new(env!("CARGO_BIN_EXE_clawdinator")).args(["image", "build", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    let line = text.lines().find(|l| l.contains("--kvm-device")).unwrap_or_else(|| panic!("no --kvm-device: {text}"));
    assert!(line.contains("CLAWDINATOR_KVM_DEVICE") && line.contains("/dev/kvm"), "{line}");
}
