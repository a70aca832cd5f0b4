//! `host switch STORE_PATH`, `host first-switch` and `host self-update`
//! with stand-ins for nix-store (the fetch from the cache), the system's
//! switch-to-configuration, systemctl and nix-env that record their calls
//! and fail where told: the previous system is active (and the boot
//! default) after every failure. The real nix fetch, with its signature
//! checks, is in `cache.rs`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use testkit::env::{env, Env};

pub const OLD: &str = "/nix/store/0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-clawdinator-1-old";
pub const NEW: &str = "/nix/store/1bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-nixos-system-clawdinator-1-new";
const NEWER: &str = "/nix/store/2ccccccccccccccccccccccccccccccc-nixos-system-clawdinator-1-newer";

fn write_exec(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A system's switch-to-configuration: points the current system (and,
/// for boot, records it) at itself, failing when FAIL_AT says.
fn activation(system: &str) -> String {
    format!(
        "#!/bin/sh\nself={system}\necho \"switch-to-configuration $1 $self\" >> \"$LOG\"\n\
         if [ \"$1\" = test ]; then ln -sfn \"$self\" \"$CURRENT\"; fi\n\
         if [ \"$1\" = test ] && [ \"$FAIL_AT\" = activate ] && [ \"$self\" != \"$OLD\" ]; then echo 'a unit failed to start' >&2; exit 4; fi\n\
         if [ \"$1\" = boot ] && [ \"$FAIL_AT\" = boot ] && [ \"$self\" != \"$OLD\" ]; then echo 'cannot install the boot loader' >&2; exit 1; fi\n\
         exit 0\n"
    )
}

/// nix-store --realise PATH --option max-jobs 0 [--option extra-substituters URL] --store ROOT
const NIX_STORE: &str = r#"#!/bin/sh
echo "nix-store $*" >> "$LOG"
[ "$FAIL_AT" = fetch ] && { echo "error: path '$2' is not signed by any trusted key" >&2; exit 1; }
root=$(eval echo \${$#})
mkdir -p "$root$2/bin"
sed "s|^self=.*|self=$2|" "$root$OLD/bin/switch-to-configuration" > "$root$2/bin/switch-to-configuration"
chmod +x "$root$2/bin/switch-to-configuration"
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

/// A host: its store (a directory), the running system and the boot
/// profile both pointing at OLD, and the stand-ins.
pub struct Host {
    pub dir: tempfile::TempDir,
}

impl Host {
    pub fn new() -> Host {
        Host::with(true)
    }

    /// `stand_in_fetch`: false leaves nix-store to the real one (cache.rs).
    pub fn with(stand_in_fetch: bool) -> Host {
        let host = Host { dir: tempfile::tempdir().unwrap() };
        write_exec(&host.on_disk(OLD).join("bin/switch-to-configuration"), &activation(OLD));
        std::os::unix::fs::symlink(OLD, host.p("current-system")).unwrap();
        std::os::unix::fs::symlink(OLD, host.p("system-profile")).unwrap();
        if stand_in_fetch {
            write_exec(&host.p("bin/nix-store"), NIX_STORE);
        }
        write_exec(&host.p("bin/systemctl"), SYSTEMCTL);
        write_exec(&host.p("bin/nix-env"), NIX_ENV);
        host
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn on_disk(&self, path: &str) -> PathBuf {
        self.p("root").join(path.trim_start_matches('/'))
    }

    /// `clawdinator host <args>` on this host (as `cli` makes it), its paths and stand-ins.
    pub fn run(&self, mut cli: std::process::Command, args: &[&str], fail_at: &str) -> Output {
        cli.args(["--json", "host"])
            .args(args)
            .args(["--instance", "clawdinator-1", "--settle", "1", "--record"])
            .arg(self.p("deployment.json"))
            .arg("--current-system")
            .arg(self.p("current-system"))
            .arg("--system-profile")
            .arg(self.p("system-profile"))
            .arg("--store")
            .arg(self.p("root"))
            .env("PATH", format!("{}:{}", self.p("bin").display(), std::env::var("PATH").unwrap()))
            .env("LOG", self.p("calls.log"))
            .env("CURRENT", self.p("current-system"))
            .env("OLD", OLD)
            .env("FAIL_AT", fail_at)
            .output()
            .unwrap()
    }

    pub fn switch(&self, fail_at: &str, system: &str) -> Output {
        self.run(testkit::env::offline_cli(env!("CARGO_BIN_EXE_clawdinator")), &["switch", system], fail_at)
    }

    pub fn link(&self, rel: &str) -> String {
        std::fs::read_link(self.p(rel)).unwrap().display().to_string()
    }

    pub fn calls(&self) -> String {
        std::fs::read_to_string(self.p("calls.log")).unwrap_or_default()
    }

    pub fn record(&self) -> Option<clawdinator::host::record::Deployment> {
        clawdinator::host::record::read(&self.p("deployment.json")).unwrap()
    }
}

#[test]
fn a_healthy_system_becomes_the_boot_default_and_is_recorded() {
    let host = Host::new();
    let out = host.switch("", NEW);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(host.link("current-system"), NEW);
    assert_eq!(host.link("system-profile"), NEW);
    let record = host.record().unwrap();
    assert_eq!((record.system.as_str(), record.source.as_str()), (NEW, "switch"));
    let calls = host.calls();
    let at =
        |what: &str| calls.lines().position(|l| l.starts_with(what)).unwrap_or_else(|| panic!("no {what} in {calls}"));
    assert!(calls.contains(&format!("nix-store --realise {NEW} --option max-jobs 0")), "{calls}");
    assert!(at("nix-store --realise") < at("switch-to-configuration test"));
    assert!(at("switch-to-configuration test") < at("systemctl is-active"));
    assert!(
        at("systemctl is-active") < at("nix-env -p") && at("nix-env -p") < at("switch-to-configuration boot"),
        "{calls}"
    );
    // Nothing is built or evaluated on the host.
    assert!(!calls.contains("nix build") && !calls.contains("nixos-rebuild") && !calls.contains("git "), "{calls}");

    // Again: already running, nothing is fetched.
    std::fs::remove_file(host.p("calls.log")).unwrap();
    let again = host.switch("", NEW);
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(report["outcome"], "already-running");
    assert_eq!(host.calls(), "");
}

#[test]
fn every_failing_step_leaves_the_previous_system_active_and_booting() {
    for (step, says) in [
        ("fetch", "fetching the system; nothing changed"),
        ("activate", "activation"),
        ("health", "health check"),
        ("restarts", "restarted during the settle period"),
        ("profile", "boot default"),
        ("boot", "boot default"),
    ] {
        let host = Host::new();
        let out = host.switch(step, NEW);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{step}: {stderr}");
        assert!(stderr.contains(says), "{step}: {stderr}");
        assert_eq!(host.link("current-system"), OLD, "{step}: the new system stayed active");
        assert_eq!(host.link("system-profile"), OLD, "{step}: the new system stayed the boot default");
        assert!(host.record().is_none(), "{step}: a failed switch was recorded");
        assert_eq!(stderr.contains("rolled back"), step != "fetch", "{step}: {stderr}");
    }
}

/// Attack: CI (or anything that reaches the SSM document) hands the host
/// shell text or a path that is not a NixOS system in the store.
#[test]
fn anything_but_a_systems_store_path_is_refused_before_anything_runs() {
    let host = Host::new();
    for bad in [
        "main",
        "0123456789abcdef0123456789abcdef01234567",
        "$(reboot)",
        "/tmp/1bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-nixos-system-x",
        "/nix/store/1bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-hello-2.12",
        "/nix/store/1bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-nixos-system-x;reboot",
        "/nix/store/1bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-nixos-system-x/../../../etc/shadow",
    ] {
        let out = host.switch("", bad);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("is not a NixOS system's store path"), "{bad}");
    }
    assert_eq!(host.calls(), "", "something ran");
}

#[test]
fn the_fleet_cache_is_asked_first_when_the_host_knows_it() {
    let host = Host::new();
    let cli = testkit::env::offline_cli(env!("CARGO_BIN_EXE_clawdinator"));
    let out = host.run(cli, &["--region", "eu-west-1", "switch", NEW, "--cache-bucket", "fleet-cache"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected = "--option extra-substituters s3://fleet-cache?region=eu-west-1&priority=10";
    assert!(host.calls().contains(expected), "{}", host.calls());
}

/// Attack: a directory above the record is the agent's (it could rename
/// it and put its own record in its place).
#[test]
fn a_record_under_a_directory_others_can_write_is_refused() {
    let host = Host::new();
    std::fs::set_permissions(host.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = host.switch("", NEW);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("writable by others") && stderr.contains("root only runs what root owns"), "{stderr}");
    assert_eq!(host.calls(), "", "something ran");
}

// ------------------------------------------------- first switch, self-update

/// A release manifest for REV naming these hosts' systems, written as `release build` writes it.
pub async fn put_release(env: &Env, rev: &str, hosts: &[(&str, &str)]) {
    use clawdinator::release::manifest::{self, Release};
    let release = Release {
        revision: rev.to_string(),
        hosts: hosts.iter().map(|(name, system)| (name.to_string(), system.to_string())).collect(),
        nix_openclaw: None,
        cache: "s3://fleet-cache".into(),
        created_at: "2026-12-03T00:00:00Z".into(),
        run: "1".into(),
    };
    manifest::write_once(&env.aws.s3(), &env.bucket, &release).await.unwrap();
}

async fn release(env: &Env, rev: &str, system: &str) {
    put_release(env, rev, &[("clawdinator-1", system), ("clawdinator-2", NEWER)]).await;
    // S3's LastModified has one-second steps: the next release is newer.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
}

fn update(env: &Env, host: &Host, job: &str) -> (Output, serde_json::Value) {
    let cli = env.cli(env!("CARGO_BIN_EXE_clawdinator"));
    let out = host.run(cli, &[job, "--bucket", &env.bucket, "--cache-bucket", "fleet-cache"], "");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_default();
    (out, report)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_switch_takes_the_newest_release_once_and_self_update_follows_releases() {
    let env = env().await;
    let host = Host::new();
    let (out, _) = update(&env, &host, "first-switch");
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no release"), "{out:?}");
    assert!(host.record().is_none());

    release(&env, &"a".repeat(40), "/nix/store/3ddddddddddddddddddddddddddddddd-nixos-system-clawdinator-1-a").await;
    release(&env, &"b".repeat(40), NEW).await;
    let (out, report) = update(&env, &host, "first-switch");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!((report["outcome"].as_str(), report["system"].as_str()), (Some("switched"), Some(NEW)));
    let record = host.record().unwrap();
    assert_eq!((record.source.as_str(), record.revision), ("first-boot", Some("b".repeat(40))));

    // A reboot runs it again: nothing happens once a deployment is recorded.
    release(&env, &"c".repeat(40), NEWER).await;
    std::fs::remove_file(host.p("calls.log")).unwrap();
    let (_, report) = update(&env, &host, "first-switch");
    assert_eq!(report["outcome"], "already-deployed");
    assert_eq!(host.calls(), "");

    let (out, _) = update(&env, &host, "self-update");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(host.link("current-system"), NEWER);
    let (_, again) = update(&env, &host, "self-update");
    assert_eq!(again["outcome"], "already-running");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_without_this_host_is_named_and_nothing_switches() {
    let env = env().await;
    let host = Host::new();
    put_release(&env, &"d".repeat(40), &[("clawdinator-2", NEWER)]).await;
    let (out, _) = update(&env, &host, "first-switch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("names no system for clawdinator-1"), "{stderr}");
    assert_eq!(host.calls(), "");
    assert_eq!(host.link("current-system"), OLD);
}

/// A release is written once: the same systems again are kept; other
/// systems for the same revision are refused, and the first stays.
#[tokio::test(flavor = "multi_thread")]
async fn a_release_manifest_is_never_overwritten() {
    use clawdinator::release::manifest;
    let env = env().await;
    let rev = "e".repeat(40);
    put_release(&env, &rev, &[("clawdinator-1", NEW)]).await;
    let mut again = manifest::read(&env.aws.s3(), &env.bucket, &rev).await.unwrap();
    again.run = "2".into();
    let kept = manifest::write_once(&env.aws.s3(), &env.bucket, &again).await.unwrap();
    assert_eq!(kept, manifest::Written::Kept);
    again.hosts.insert("clawdinator-1".into(), NEWER.into());
    let refused = manifest::write_once(&env.aws.s3(), &env.bucket, &again).await.unwrap_err();
    assert!(format!("{refused:#}").contains("never overwritten"), "{refused:#}");
    let stored = manifest::read(&env.aws.s3(), &env.bucket, &rev).await.unwrap();
    assert_eq!((stored.hosts["clawdinator-1"].as_str(), stored.run.as_str()), (NEW, "1"));
}
