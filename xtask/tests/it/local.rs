//! Stage commands under `--local`: `cargo xtask` starts a throwaway emulator
//! and points the command at it.

use serde_json::{json, Value};

const REV: &str = "0123456789abcdef0123456789abcdef01234567";

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

#[test]
fn status_and_switch_dry_run_work_under_local() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
            .current_dir(testkit::repo_root())
            .args(args)
            .output()
            .unwrap()
    };
    let status = run(&["--local", "--json", "fleet", "status"]);
    assert_eq!(status.status.code(), Some(3), "{}", String::from_utf8_lossy(&status.stderr));
    assert_eq!(json_of(&status)["drift"].as_array().unwrap().len(), 3, "the three shipped instances are missing");
    let switch = run(&["--local", "--json", "fleet", "switch", REV, "--dry-run"]);
    assert!(switch.status.success(), "{}", String::from_utf8_lossy(&switch.stderr));
    let report = json_of(&switch);
    assert_eq!(report["waves"], json!([["clawdinator-1"], ["clawdinator-2"], ["clawdinator-babelfish"]]));
    assert_eq!(report["hosts"][0]["outcome"], "would-fail");
}

/// `cargo xtask` has the stages' commands (the same as the host binary's)
/// and its own: the pipeline, the developer commands and `--local`.
#[test]
fn xtask_takes_the_stage_commands_and_its_own() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && help.contains("Usage: cargo xtask"), "{help}");
    for command in ["image", "bootstrap", "secrets", "fleet", "host", "memory", "audit", "pipeline", "test", "--local"]
    {
        assert!(help.contains(command), "`cargo xtask --help` lacks {command}: {help}");
    }
}
