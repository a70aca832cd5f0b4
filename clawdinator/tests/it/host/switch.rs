//! `host switch REV` with stand-ins for nix, switch-to-configuration,
//! systemctl and nix-env that record their calls and fail where told: the
//! previous system is active (and the boot default) after every failure.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

fn write_exec(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A system "store path": its switch-to-configuration points the current
/// system (and, for boot, records it) at itself, failing when FAIL_AT says.
fn make_system(dir: &Path, rev: &str) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::write(dir.join("configurationRevision"), rev).unwrap();
    write_exec(
        &dir.join("bin/switch-to-configuration"),
        &format!(
            "#!/bin/sh\nself={}\necho \"switch-to-configuration $1 $self\" >> \"$LOG\"\n\
             if [ \"$1\" = test ]; then ln -sfn \"$self\" \"$CURRENT\"; fi\n\
             if [ \"$1\" = test ] && [ \"$FAIL_AT\" = activate ] && [ \"$self\" != \"$OLD\" ]; then echo 'a unit failed to start' >&2; exit 4; fi\n\
             if [ \"$1\" = boot ] && [ \"$FAIL_AT\" = boot ] && [ \"$self\" != \"$OLD\" ]; then echo 'cannot install the boot loader' >&2; exit 1; fi\n\
             exit 0\n",
            dir.display()
        ),
    );
}

const NIX: &str = r#"#!/bin/sh
# nix build --no-link --no-update-lock-file --print-out-paths git+file://FLAKE?rev=REV#nixosConfigurations.NAME.config.system.build.toplevel
echo "nix $*" >> "$LOG"
[ "$FAIL_AT" = build ] && { echo 'error: builder failed' >&2; exit 1; }
rev=$(echo "$5" | sed 's/.*rev=\([0-9a-f]*\)#.*/\1/')
out="$STORE/$rev-nixos-system"
mkdir -p "$out/bin"
if [ "$FAIL_AT" = revision ]; then printf 'somethingelse' > "$out/configurationRevision"; else printf '%s' "$rev" > "$out/configurationRevision"; fi
cp "$OLD/bin/switch-to-configuration" "$out/bin/switch-to-configuration"
sed -i "s|^self=.*|self=$out|" "$out/bin/switch-to-configuration"
echo "$out"
"#;

const SYSTEMCTL: &str = r#"#!/bin/sh
echo "systemctl $*" >> "$LOG"
case "$1" in
  is-active) if [ "$FAIL_AT" = health ]; then echo failed; exit 3; fi; echo active ;;
  show) if [ "$FAIL_AT" = restarts ]; then date +%s%N; else echo 0; fi ;;
esac
"#;

const NIX_ENV: &str = r#"#!/bin/sh
echo "nix-env $*" >> "$LOG"
[ "$FAIL_AT" = profile ] && [ "$4" != "$OLD" ] && { echo 'cannot set the profile' >&2; exit 1; }
ln -sfn "$4" "$2"
"#;

struct Host {
    dir: tempfile::TempDir,
    rev: String,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        let p = |rel: &str| dir.path().join(rel);
        // The fleet's repository with the revision to deploy; the host's copy predates it.
        let sh = xshell::Shell::new().unwrap();
        let origin = p("origin");
        std::fs::create_dir_all(&origin).unwrap();
        sh.change_dir(&origin);
        xshell::cmd!(sh, "git init -q -b main").run().unwrap();
        xshell::cmd!(sh, "git -c user.name=t -c user.email=t@t commit -q --allow-empty -m seed").run().unwrap();
        let copy = p("repos/clawdinators");
        xshell::cmd!(sh, "git clone -q {origin} {copy}").run().unwrap();
        xshell::cmd!(sh, "git -c user.name=t -c user.email=t@t commit -q --allow-empty -m release").run().unwrap();
        let rev = xshell::cmd!(sh, "git rev-parse HEAD").read().unwrap();
        // The running system and the boot profile both point at the old one.
        make_system(&p("store/old-nixos-system"), "0000000000000000000000000000000000000000");
        std::os::unix::fs::symlink(p("store/old-nixos-system"), p("current-system")).unwrap();
        std::os::unix::fs::symlink(p("store/old-nixos-system"), p("system-profile")).unwrap();
        write_exec(&p("bin/nix"), NIX);
        write_exec(&p("bin/systemctl"), SYSTEMCTL);
        write_exec(&p("bin/nix-env"), NIX_ENV);
        Host { dir, rev }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn switch(&self, fail_at: &str, rev: &str) -> Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_clawdinator"))
            .args(["host", "switch", rev, "--instance", "clawdinator-1", "--settle", "1", "--json", "--flake"])
            .arg(self.p("repos/clawdinators"))
            .arg("--url")
            .arg(self.p("origin"))
            .arg("--record")
            .arg(self.p("deployment.json"))
            .arg("--current-system")
            .arg(self.p("current-system"))
            .arg("--system-profile")
            .arg(self.p("system-profile"))
            .env("PATH", format!("{}:{}", self.p("bin").display(), std::env::var("PATH").unwrap()))
            .env("LOG", self.p("calls.log"))
            .env("STORE", self.p("store"))
            .env("CURRENT", self.p("current-system"))
            .env("OLD", self.p("store/old-nixos-system"))
            .env("FAIL_AT", fail_at)
            .output()
            .unwrap()
    }

    fn link(&self, rel: &str) -> PathBuf {
        std::fs::read_link(self.p(rel)).unwrap()
    }
}

#[test]
fn a_healthy_revision_becomes_the_boot_default_and_is_recorded() {
    let host = Host::new();
    let out = host.switch("", &host.rev);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let new = host.p(&format!("store/{}-nixos-system", host.rev));
    assert_eq!(host.link("current-system"), new);
    assert_eq!(host.link("system-profile"), new);
    let record = clawdinator::host::deploy::read_record(&host.p("deployment.json")).unwrap().unwrap();
    assert_eq!((record.revision.as_str(), record.source.as_str()), (host.rev.as_str(), "switch"));
    let calls = std::fs::read_to_string(host.p("calls.log")).unwrap();
    let at =
        |what: &str| calls.lines().position(|l| l.starts_with(what)).unwrap_or_else(|| panic!("no {what} in {calls}"));
    assert!(
        at("nix build") < at("switch-to-configuration test")
            && at("switch-to-configuration test") < at("systemctl is-active")
    );
    assert!(
        at("systemctl is-active") < at("nix-env -p") && at("nix-env -p") < at("switch-to-configuration boot"),
        "{calls}"
    );

    // Again: already running, nothing is built.
    let again = host.switch("", &host.rev);
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(report["outcome"], "already-running");
}

#[test]
fn every_failing_step_leaves_the_previous_system_active_and_booting() {
    for (step, says) in [
        ("build", "build"),
        ("activate", "activation"),
        ("health", "health check"),
        ("restarts", "restarted during the settle period"),
        ("revision", "configurationRevision"),
        ("profile", "boot default"),
        ("boot", "boot default"),
    ] {
        let host = Host::new();
        let out = host.switch(step, &host.rev);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{step}: {stderr}");
        assert!(stderr.contains(says), "{step}: {stderr}");
        let old = host.p("store/old-nixos-system");
        assert_eq!(host.link("current-system"), old, "{step}: the new system stayed active");
        assert_eq!(host.link("system-profile"), old, "{step}: the new system stayed the boot default");
        assert!(!host.p("deployment.json").exists(), "{step}: a failed switch was recorded");
        if step != "build" {
            assert!(stderr.contains("rolled back"), "{step}: {stderr}");
        }
    }
}

#[test]
fn a_revision_that_is_not_a_full_hash_is_refused_before_anything_runs() {
    let host = Host::new();
    for bad in ["main", "abc123", "0123456789abcdef0123456789abcdef0123456X", "$(reboot)"] {
        let out = host.switch("", bad);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("not a full git revision"), "{bad}");
    }
    assert!(!host.p("calls.log").exists(), "something ran");
}

fn commit_on_the_host(host: &Host) -> String {
    let sh = xshell::Shell::new().unwrap();
    sh.change_dir(host.p("repos/clawdinators"));
    xshell::cmd!(sh, "git -c user.name=agent -c user.email=a@a commit -q --allow-empty -m mine").run().unwrap();
    xshell::cmd!(sh, "git rev-parse HEAD").read().unwrap()
}

/// Attack: the agent commits in the copy and asks for its own revision.
#[test]
fn a_commit_made_on_the_host_is_refused() {
    let host = Host::new();
    let local = commit_on_the_host(&host);
    let out = host.switch("", &local);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not reachable from") && stderr.contains("only published revisions"), "{stderr}");
    let calls = std::fs::read_to_string(host.p("calls.log")).unwrap_or_default();
    assert!(!calls.contains("nix build"), "built a local commit: {calls}");
    assert!(!host.p("deployment.json").exists());
    // The published revision still deploys from the same copy.
    assert!(host.switch("", &host.rev).status.success());
}

/// Attack: configuration in the copy that makes git run a command as root
/// (fsmonitor, a URL rewrite to `ext::`, an include); and an `ext::` origin.
#[test]
fn git_config_in_the_copy_runs_nothing() {
    for (key, value, refused) in [
        ("core.fsmonitor", "touch MARKER", true),
        ("url.ext::sh -c touch% MARKER #.insteadOf", "ORIGIN", true),
        ("include.path", "../../evil.config", true),
        ("remote.origin.url", "ext::sh -c touch% MARKER", false),
    ] {
        let host = Host::new();
        let marker = host.p("marker");
        let value = value.replace("MARKER", &marker.display().to_string());
        let value = value.replace("ORIGIN", &host.p("origin").display().to_string());
        let key = key.replace("MARKER", &marker.display().to_string());
        let config = host.p("repos/clawdinators/.git/config");
        let sh = xshell::Shell::new().unwrap();
        xshell::cmd!(sh, "git config --file {config} {key} {value}").run().unwrap();
        std::fs::write(host.p("repos/evil.config"), format!("[core]\n\tfsmonitor = touch {}\n", marker.display()))
            .unwrap();
        let out = host.switch("", &host.rev);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!marker.exists(), "{key}: git ran the copy's command ({stderr})");
        if refused {
            assert_eq!(out.status.code(), Some(1), "{key}: {stderr}");
            assert!(stderr.contains(&key.to_ascii_lowercase()[..8]) && stderr.contains("refused"), "{key}: {stderr}");
        } else {
            // The configured URL is fetched, never the remote the copy names.
            assert!(out.status.success(), "{key}: {stderr}");
        }
    }
}

/// Attack: a directory above the copy or the record is the agent's (it
/// could rename it and put its own copy or record in its place).
#[test]
fn a_copy_or_record_under_a_directory_others_can_write_is_refused() {
    for dir in ["repos", ""] {
        let host = Host::new();
        let writable = host.p(dir);
        std::fs::set_permissions(&writable, std::fs::Permissions::from_mode(0o777)).unwrap();
        let out = host.switch("", &host.rev);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{dir}: {stderr}");
        assert!(stderr.contains("writable by others") && stderr.contains("root only runs what root owns"), "{stderr}");
        assert!(!host.p("calls.log").exists(), "{dir}: something ran");
    }
}
