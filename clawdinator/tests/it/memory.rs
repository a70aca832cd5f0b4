//! Shared memory: several writers at once (separate processes, as agents on
//! several hosts are) lose no update; edits are exact; locks are bounded;
//! nothing outside the memory root is touched.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use clawdinator::memory;

fn cli(root: &Path, args: &[&str], input: &str) -> (i32, String, String) {
    let mut child = testkit::env::offline_cli(env!("CARGO_BIN_EXE_clawdinator"))
        .arg("memory")
        .args(args)
        .arg("--root")
        .arg(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

/// 8 processes append 25 lines each to one daily note at once: all 200
/// lines are there, each whole, none lost.
#[test]
fn concurrent_writers_lose_no_update() {
    let root = tempfile::tempdir().unwrap();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let root = root.path().to_path_buf();
            std::thread::spawn(move || {
                for n in 0..25 {
                    let (code, _, err) =
                        cli(&root, &["append", "2026-11-21.md", "--wait", "60"], &format!("writer {w} line {n}\n"));
                    assert_eq!(code, 0, "{err}");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let (code, text, _) = cli(root.path(), &["read", "2026-11-21.md"], "");
    assert_eq!(code, 0);
    let mut lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 200, "{text}");
    lines.sort();
    lines.dedup();
    assert_eq!(lines.len(), 200, "a line was lost or doubled");
    for w in 0..8 {
        for n in 0..25 {
            assert!(lines.contains(&format!("writer {w} line {n}").as_str()));
        }
    }
}

#[test]
fn write_read_and_exact_edits() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    assert_eq!(cli(r, &["read", "ops.md"], ""), (0, String::new(), String::new()), "a missing file reads empty");
    assert_eq!(cli(r, &["write", "ops.md"], "deploys: manual\nrollback: manual\n").0, 0);
    let (code, _, err) =
        cli(r, &["edit", "ops.md", "--replace", "deploys: manual", "--with", "deploys: fleet deploy"], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(cli(r, &["read", "ops.md"], "").1, "deploys: fleet deploy\nrollback: manual\n");
    // Absent or ambiguous: refused, nothing changed.
    let (code, _, err) = cli(r, &["edit", "ops.md", "--replace", "nowhere", "--with", "x"], "");
    assert!(code == 1 && err.contains("not there"), "{err}");
    let (code, _, err) = cli(r, &["edit", "ops.md", "--replace", "deploy", "--with", "x"], "");
    assert!(code == 1 && err.contains("appears 2 times"), "{err}");
    assert_eq!(cli(r, &["read", "ops.md"], "").1, "deploys: fleet deploy\nrollback: manual\n");
    // Nested paths are created; the file is replaced whole, with its mode kept.
    assert_eq!(cli(r, &["write", "github/prs.md"], "one\n").0, 0);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(r.join("github/prs.md"), std::fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(cli(r, &["append", "github/prs.md"], "two").0, 0);
    assert_eq!(std::fs::read_to_string(r.join("github/prs.md")).unwrap(), "one\ntwo");
    assert_eq!(std::fs::metadata(r.join("github/prs.md")).unwrap().permissions().mode() & 0o777, 0o640);
}

#[test]
fn a_held_lock_bounds_the_wait() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("project.md");
    std::fs::write(&file, "goals\n").unwrap();
    let held = memory::lock(&file, true, Duration::from_secs(1)).unwrap();
    let (code, _, err) = cli(root.path(), &["read", "project.md", "--wait", "0.2"], "");
    assert!(code == 1 && err.contains("lock timeout"), "{err}");
    let (code, _, err) = cli(root.path(), &["write", "project.md", "--wait", "0.2"], "changed\n");
    assert!(code == 1 && err.contains("lock timeout"), "{err}");
    drop(held);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "goals\n");
    assert_eq!(cli(root.path(), &["read", "project.md"], "").1, "goals\n");
}

#[test]
fn nothing_outside_the_root_is_touched() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("x.md"), root.path().join("link.md")).unwrap();
    for path in ["../x.md", "/etc/passwd", "escape/x.md", "link.md", "a/../../x.md"] {
        let (code, _, err) = cli(root.path(), &["write", path], "overwrite\n");
        assert_eq!(code, 1, "{path}: {err}");
        assert!(err.contains("memory root") || err.contains("link"), "{path}: {err}");
    }
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "something was written outside the root");
    let inside = root.path().join("notes.md");
    assert!(memory::resolve(root.path(), &inside).is_ok(), "an absolute path under the root is fine");
}

/// On a host the program is `clawdinator`: the stages' commands under its
/// own name, and none of the developer commands or `--local`.
#[test]
fn the_host_binary_is_clawdinator() {
    let out = Command::new(env!("CARGO_BIN_EXE_clawdinator")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && help.contains("Usage: clawdinator") && help.contains("memory"), "{help}");
    let root = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clawdinator"))
        .args(["memory", "read", "index.md", "--root"])
        .arg(root.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for dev in ["pipeline", "bench", "--local"] {
        let out = Command::new(env!("CARGO_BIN_EXE_clawdinator")).arg(dev).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "the host binary takes `{dev}`");
        assert!(!help.contains(dev), "the host binary's help offers `{dev}`: {help}");
    }
}
