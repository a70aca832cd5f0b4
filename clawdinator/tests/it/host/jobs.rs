//! The host's own jobs: memory init, workspace seed, the EFS tunnel
//! configuration, the gateway's environment, logs and restarts (first
//! switch and self-update: `switch.rs`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use clawdinator::atomic::Owner;
use clawdinator::host::workspace;
use clawdinator::memory;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn host_cli() -> Command {
    testkit::env::offline_cli(env!("CARGO_BIN_EXE_clawdinator"))
}

#[test]
fn memory_init_adds_what_is_missing_and_keeps_what_agents_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let (root, templates) = (dir.path().join("memory"), dir.path().join("templates"));
    std::fs::create_dir(&root).unwrap();
    write(&templates.join("index.md"), "# index\n");
    write(&templates.join("ops.md"), "# ops\n");
    write(&templates.join("notes.txt"), "not a template\n");
    write(&root.join("ops.md"), "# ops, as the agents left it\n");

    let report = memory::init(&root, &templates, Owner::default()).unwrap();
    assert_eq!(report.created_dirs, ["daily", "discord", "pr-intent", "pr-intent/v1"]);
    assert_eq!(report.installed, ["index.md"]);
    assert_eq!(report.kept, ["ops.md"]);
    assert_eq!(std::fs::read_to_string(root.join("ops.md")).unwrap(), "# ops, as the agents left it\n");
    assert!(!root.join("notes.txt").exists());
    for d in [root.clone(), root.join("daily"), root.join("discord")] {
        assert_eq!(mode(&d), 0o2770, "{}", d.display());
    }

    // Every host runs it at boot: the second run changes nothing.
    std::fs::write(root.join("index.md"), "# index, edited\n").unwrap();
    let again = memory::init(&root, &templates, Owner::default()).unwrap();
    assert!(again.created_dirs.is_empty() && again.installed.is_empty(), "{again:?}");
    assert_eq!(std::fs::read_to_string(root.join("index.md")).unwrap(), "# index, edited\n");
}

#[test]
fn memory_init_without_the_mount_says_which_unit_to_look_at() {
    let dir = tempfile::tempdir().unwrap();
    let err = memory::init(&dir.path().join("memory"), dir.path(), Owner::default()).unwrap_err().to_string();
    assert!(err.contains("memory root") && err.contains("clawdinator-efs-stunnel.service"), "{err}");
}

#[test]
fn the_workspace_follows_the_templates_and_leaves_the_agents_files() {
    let dir = tempfile::tempdir().unwrap();
    let (templates, dest) = (dir.path().join("templates"), dir.path().join("workspace"));
    write(&templates.join("AGENTS.md"), "agents v1\n");
    write(&templates.join("TOOLS.md"), "tools\n");
    write(&templates.join("skills/fleet/SKILL.md"), "fleet v1\n");
    write(&templates.join("OLD.md"), "retired soon\n");
    let extra = dir.path().join("tools-extra.md");
    write(&extra, "## Installed toolchain\n");
    write(&dest.join("notes/today.md"), "the agent's own\n");

    let report = workspace::seed(&templates, &dest, Some(&extra), Owner::default()).unwrap();
    assert_eq!(report.written.len(), 4, "{report:?}");
    assert_eq!(std::fs::read_to_string(dest.join("TOOLS.md")).unwrap(), "tools\n\n## Installed toolchain\n");
    assert_eq!(std::fs::read_to_string(dest.join("skills/fleet/SKILL.md")).unwrap(), "fleet v1\n");

    // No change: nothing written. An agent's edit to a template is undone,
    // a retired template goes, the agent's own files stay.
    let again = workspace::seed(&templates, &dest, Some(&extra), Owner::default()).unwrap();
    assert!(again.written.is_empty() && again.removed.is_empty() && again.unchanged == 4, "{again:?}");
    std::fs::write(dest.join("AGENTS.md"), "edited by the agent\n").unwrap();
    std::fs::remove_file(templates.join("OLD.md")).unwrap();
    let third = workspace::seed(&templates, &dest, Some(&extra), Owner::default()).unwrap();
    assert_eq!(third.written, ["AGENTS.md"]);
    assert_eq!(third.removed, ["OLD.md"]);
    assert_eq!(std::fs::read_to_string(dest.join("AGENTS.md")).unwrap(), "agents v1\n");
    assert!(!dest.join("OLD.md").exists());
    assert_eq!(std::fs::read_to_string(dest.join("notes/today.md")).unwrap(), "the agent's own\n");
}

#[test]
fn a_tampered_workspace_state_file_cannot_remove_files_outside() {
    let dir = tempfile::tempdir().unwrap();
    let (templates, dest) = (dir.path().join("templates"), dir.path().join("workspace"));
    write(&templates.join("AGENTS.md"), "agents\n");
    let outside = dir.path().join("precious.md");
    write(&outside, "keep me\n");
    write(&dest.join(workspace::STATE_FILE), r#"["../precious.md", "/etc/hostname"]"#);
    workspace::seed(&templates, &dest, None, Owner::default()).unwrap();
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep me\n");
}

#[test]
fn the_efs_tunnel_learns_the_file_system_and_region_from_user_data() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc/clawdinator");
    write(&etc.join("efs-id"), "fs-0123456789abcdef0\n");
    write(&etc.join("region"), "eu-central-1\n");
    let out = dir.path().join("run/stunnel-efs.conf");
    let run = |etc: &Path| {
        host_cli()
            .args(["host", "efs-stunnel-config", "--ca-file", "/etc/ssl/certs/ca-bundle.crt"])
            .arg("--out")
            .arg(&out)
            .arg("--file-system-id-file")
            .arg(etc.join("efs-id"))
            .arg("--region-file")
            .arg(etc.join("region"))
            .output()
            .unwrap()
    };
    let done = run(&etc);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("connect = fs-0123456789abcdef0.efs.eu-central-1.amazonaws.com:2049"), "{text}");

    // Before user data wrote the id: a usage error naming the file.
    let missing = run(&dir.path().join("nowhere"));
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("no EFS file system id") && stderr.contains("nowhere/efs-id"), "{stderr}");
}

#[test]
fn secrets_fetch_without_an_instance_name_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = host_cli()
        .args(["secrets", "fetch", "--instance-file"])
        .arg(dir.path().join("instance-name"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no instance name"), "{out:?}");
}

#[test]
fn host_exec_hands_secrets_to_the_program_and_nowhere_else() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("clawdinator-discord-token-1");
    write(&token, "CANARY-discord-token\n");
    let seen = dir.path().join("seen");
    let out = host_cli()
        .args(["host", "exec", "--secret-env"])
        .arg(format!("DISCORD_BOT_TOKEN={}", token.display()))
        .args(["--", "sh", "-c", "printf %s \"$DISCORD_BOT_TOKEN\" > \"$0\""])
        .arg(&seen)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), "CANARY-discord-token");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("CANARY")
            && !String::from_utf8_lossy(&out.stderr).contains("CANARY")
    );

    // A missing token stops the start with the variable and the file named.
    let missing = host_cli()
        .args(["host", "exec", "--secret-env"])
        .arg(format!("OPENAI_API_KEY={}", dir.path().join("absent").display()))
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("OPENAI_API_KEY") && stderr.contains("absent"), "{stderr}");
}

/// What `fleet logs` and `fleet restart` run on a host: journalctl and
/// systemctl with the checked values as arguments (no shell), a restart
/// that leaves the unit inactive an error.
#[test]
fn host_logs_and_restart_hand_checked_values_to_journalctl_and_systemctl() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (tool, script) in [
        ("journalctl", "#!/bin/sh\nprintf '%s\\n' \"$*\" >> \"$LOG\"\necho 'a journal line'\n"),
        (
            "systemctl",
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> \"$LOG\"\n[ \"$1\" = is-active ] && echo \"$STATE\"\nexit 0\n",
        ),
    ] {
        std::fs::write(bin.join(tool), script).unwrap();
        std::fs::set_permissions(bin.join(tool), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let log = dir.path().join("calls.log");
    let host = |args: &[&str], state: &str| {
        host_cli()
            .args(args)
            .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()))
            .env("LOG", &log)
            .env("STATE", state)
            .output()
            .unwrap()
    };
    let out = host(&["host", "logs", "--unit", "clawdinator-bootstrap", "--since", "2h", "--lines", "20"], "active");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a journal line\n");
    let out = host(&["host", "restart", "--unit", "clawdinator"], "active");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = host(&["host", "restart"], "failed");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("clawdinator is failed after the restart"));
    let calls = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        [
            "--no-pager --output short-iso --unit clawdinator-bootstrap --since -2h --lines 20",
            "restart clawdinator",
            "is-active clawdinator",
            "restart clawdinator",
            "is-active clawdinator",
        ]
    );
    for bad in [&["host", "logs", "--unit", "sshd"][..], &["host", "restart", "--unit", "clawdinator;id"]] {
        let out = host(bad, "active");
        assert_eq!(out.status.code(), Some(1), "{bad:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("not a unit of the fleet"), "{bad:?}");
    }
    assert_eq!(std::fs::read_to_string(&log).unwrap(), calls, "a refused value reached a tool");
}

/// The pi coding agent's credentials: both keys, 0600, written whole; no
/// value on any output; a missing or empty key named, nothing written.
#[test]
fn pi_auth_writes_both_keys_whole_and_names_a_missing_one() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (openai, anthropic, out) =
        (dir.path().join("openai"), dir.path().join("anthropic"), dir.path().join(".pi/agent/auth.json"));
    std::fs::write(&openai, "sk-openai-CANARY\n").unwrap();
    std::fs::write(&anthropic, "sk-ant-CANARY").unwrap();
    let run = || {
        host_cli()
            .args(["host", "pi-auth", "--openai-key-file"])
            .arg(&openai)
            .arg("--anthropic-key-file")
            .arg(&anthropic)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let ok = run();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let printed = format!("{}{}", String::from_utf8_lossy(&ok.stdout), String::from_utf8_lossy(&ok.stderr));
    assert!(!printed.contains("CANARY"), "a key reached the output: {printed}");
    let auth: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(
        auth,
        serde_json::json!({"openai": {"type": "api_key", "key": "sk-openai-CANARY"}, "anthropic": {"type": "api_key", "key": "sk-ant-CANARY"}})
    );
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);

    std::fs::remove_file(&out).unwrap();
    std::fs::write(&anthropic, "  \n").unwrap();
    let empty = run();
    assert_eq!(empty.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&empty.stderr).contains(&format!("{} is empty", anthropic.display())));
    std::fs::remove_file(&openai).unwrap();
    let missing = run();
    assert!(String::from_utf8_lossy(&missing.stderr).contains(&openai.display().to_string()));
    assert!(!out.exists(), "a failed run wrote auth.json");
}
