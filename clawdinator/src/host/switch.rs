//! `host switch STORE_PATH`: the release lane's step on one host, run by
//! `fleet switch` through SSM, and the end of a first switch and a
//! self-update. The host builds nothing and evaluates nothing: it realises
//! a system CI built from the fleet's binary cache (nix refuses any path
//! not signed by a key in nix.conf's `trusted-public-keys`, and with
//! `max-jobs 0` it cannot build one instead), activates it
//! (`switch-to-configuration test`: nothing changes for the next boot),
//! checks health (the gateway active and not restarting for a settle
//! period, `/run/current-system` the new system), and only then makes it
//! the boot default. If a step after fetching fails, the previous system is
//! activated again (and made the boot default again if that step had
//! changed it): a broken release never leaves a broken host.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;
use xshell::{cmd, Shell};

use super::flags::{self, HostSwitchArgs};
use super::record::{self, Deployment};
use crate::ctx::Ctx;
use crate::release::manifest::check_system_path;
use crate::settings::{host_setting, instance_name};

/// Where nix fetches the system from.
pub struct NixStore {
    /// The fleet cache's store URL (`s3://BUCKET?region=R&priority=10`), added
    /// before nix.conf's substituters; None: nix.conf's only.
    pub cache: Option<String>,
    /// A store directory instead of the host's own (tests).
    pub root: Option<PathBuf>,
}

impl NixStore {
    /// The fleet cache in `region` (asked before cache.nixos.org, priority 40).
    pub fn new(cache_bucket: Option<String>, region: Option<String>, root: Option<PathBuf>) -> NixStore {
        let cache = cache_bucket.map(|b| match region {
            Some(r) => format!("s3://{b}?region={r}&priority=10"),
            None => format!("s3://{b}?priority=10"),
        });
        NixStore { cache, root }
    }

    /// Where a store path is on disk (in a store directory, under it).
    fn on_disk(&self, path: &str) -> PathBuf {
        match &self.root {
            Some(root) if path.starts_with("/nix/store/") => root.join(path.trim_start_matches('/')),
            _ => PathBuf::from(path),
        }
    }

    fn store_args(&self) -> Vec<String> {
        self.root.iter().flat_map(|r| ["--store".to_string(), r.display().to_string()]).collect()
    }
}

pub struct SwitchOptions {
    pub instance: String,
    /// The system's store path.
    pub system: String,
    /// The fleet revision, when a release manifest named it.
    pub revision: Option<String>,
    /// `switch`, `first-boot` or `self-update` (the record says which).
    pub source: &'static str,
    pub nix: NixStore,
    pub record: PathBuf,
    /// `/run/current-system`.
    pub current_system: PathBuf,
    /// `/nix/var/nix/profiles/system`.
    pub profile: PathBuf,
    /// The unit whose health decides (the gateway).
    pub unit: String,
    pub settle: Duration,
    pub dry_run: bool,
}

/// What a switch on this host did (host switch, first switch, self-update).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Switched,
    WouldSwitch,
    /// The host runs the system already.
    AlreadyRunning,
    /// First switch: a deployment is recorded already.
    AlreadyDeployed,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SwitchReport {
    pub instance: String,
    pub system: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub outcome: Outcome,
    pub previous: String,
}

impl std::fmt::Display for SwitchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rev = self.revision.as_deref().map(|r| format!(" (revision {r})")).unwrap_or_default();
        match self.outcome {
            Outcome::AlreadyRunning => writeln!(f, "{} already runs {}{rev}", self.instance, self.system),
            Outcome::AlreadyDeployed => writeln!(f, "{} is deployed already: first switch skipped", self.instance),
            Outcome::WouldSwitch => {
                writeln!(f, "would fetch, activate, check and make {}{rev} the boot default", self.system)
            }
            Outcome::Switched => writeln!(
                f,
                "{} runs {}{rev}, the boot default; the previous system was {}",
                self.instance, self.system, self.previous
            ),
        }
    }
}

/// The system `/run/current-system` points at.
fn running(current: &Path) -> Result<String> {
    let target = std::fs::read_link(current)
        .or_else(|_| std::fs::canonicalize(current))
        .with_context(|| format!("cannot resolve {}", current.display()))?;
    Ok(target.display().to_string())
}

pub fn switch(opts: &SwitchOptions) -> Result<SwitchReport> {
    check_system_path(&opts.system)?;
    crate::atomic::check_owned(&opts.record)?;
    let previous = running(&opts.current_system)?;
    let mut report = SwitchReport {
        instance: opts.instance.clone(),
        system: opts.system.clone(),
        revision: opts.revision.clone(),
        outcome: Outcome::WouldSwitch,
        previous: previous.clone(),
    };
    if previous == opts.system {
        report.outcome = Outcome::AlreadyRunning;
        return Ok(report);
    }
    if opts.dry_run {
        return Ok(report);
    }
    let sh = Shell::new()?;
    realise(&sh, opts).context("switch stopped at fetching the system; nothing changed")?;
    let mut boot_changed = false;
    if let Err(err) = activate_and_check(&sh, opts, &mut boot_changed) {
        let rollback = roll_back(&sh, opts, &previous, boot_changed);
        return Err(match rollback {
            Ok(()) => err.context(format!("rolled back: {previous} is active again")),
            Err(again) => err.context(format!("ROLLBACK FAILED too, the host needs a hand: {again:#}")),
        });
    }
    record::write(&opts.record, &deployment(opts))?;
    report.outcome = Outcome::Switched;
    Ok(report)
}

fn deployment(opts: &SwitchOptions) -> Deployment {
    Deployment {
        instance: opts.instance.clone(),
        system: opts.system.clone(),
        revision: opts.revision.clone(),
        source: opts.source.into(),
        at: crate::clock::unix_seconds(),
    }
}

/// Fetch the system's closure: substituted only (max-jobs 0: nothing is
/// built here), each path checked against nix.conf's trusted keys.
fn realise(sh: &Shell, opts: &SwitchOptions) -> Result<()> {
    let system = &opts.system;
    let store = opts.nix.store_args();
    let cache: Vec<String> =
        opts.nix.cache.iter().flat_map(|c| ["--option".into(), "extra-substituters".into(), c.clone()]).collect();
    crate::process::run_on_stderr(
        cmd!(sh, "nix-store --realise {system} --option max-jobs 0 {cache...} {store...}").quiet(),
    )
    .with_context(|| {
        format!("nix could not fetch a trusted {system} (is it in the fleet cache, signed by the fleet's key?)")
    })?;
    let activate = opts.nix.on_disk(system).join("bin/switch-to-configuration");
    ensure!(activate.exists(), "{system} is not a NixOS system: it has no bin/switch-to-configuration");
    Ok(())
}

fn activate_and_check(sh: &Shell, opts: &SwitchOptions, boot_changed: &mut bool) -> Result<()> {
    let activate = opts.nix.on_disk(&opts.system).join("bin/switch-to-configuration");
    crate::process::run_on_stderr(cmd!(sh, "{activate} test")).context("switch stopped at activation")?;
    healthy(sh, opts).context("switch stopped at the health check")?;
    *boot_changed = true;
    set_boot_default(sh, opts, &opts.system).context("switch stopped at making it the boot default")
}

/// The system profile points at `system`, and the boot loader boots it.
fn set_boot_default(sh: &Shell, opts: &SwitchOptions, system: &str) -> Result<()> {
    let profile = &opts.profile;
    let store = opts.nix.store_args();
    crate::process::run_on_stderr(cmd!(sh, "nix-env -p {profile} --set {system} {store...}"))?;
    let activate = opts.nix.on_disk(system).join("bin/switch-to-configuration");
    crate::process::run_on_stderr(cmd!(sh, "{activate} boot"))
}

/// The running system is the new one, and the unit is active and does not
/// restart for the settle period.
fn healthy(sh: &Shell, opts: &SwitchOptions) -> Result<()> {
    let now = running(&opts.current_system)?;
    ensure!(now == opts.system, "{} is {now}, not {}", opts.current_system.display(), opts.system);
    let unit = &opts.unit;
    let restarts = || cmd!(sh, "systemctl show -p NRestarts --value {unit}").quiet().read().unwrap_or_default();
    let first = restarts();
    let started = Instant::now();
    loop {
        let state = cmd!(sh, "systemctl is-active {unit}").quiet().ignore_status().read().unwrap_or_default();
        if state.trim() != "active" {
            bail!("{unit} is {} after the switch", state.trim());
        }
        if restarts() != first {
            bail!("{unit} restarted during the settle period");
        }
        if started.elapsed() >= opts.settle {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500).min(opts.settle));
    }
}

fn roll_back(sh: &Shell, opts: &SwitchOptions, previous: &str, boot_changed: bool) -> Result<()> {
    let activate = opts.nix.on_disk(previous).join("bin/switch-to-configuration");
    eprintln!("rolling back to {previous}");
    crate::process::run_on_stderr(cmd!(sh, "{activate} test"))?;
    if boot_changed {
        set_boot_default(sh, opts, previous)?;
    }
    Ok(())
}

impl HostSwitchArgs {
    /// `host switch SYSTEM`.
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        ctx.out.emit(&switch(&options(ctx, self.deployment, self.system, "switch")?)?)
    }
}

/// A switch to `system` as the flags and the host's written facts say.
pub fn options(ctx: &Ctx, d: flags::Deployment, system: String, source: &'static str) -> Result<SwitchOptions> {
    // Hosts launched before user data named the cache take OpenTofu's default name, <bucket>-cache.
    let cache_bucket = d
        .cache_bucket
        .or_else(|| host_setting(&d.cache_bucket_file))
        .or_else(|| host_setting(Path::new(BUCKET_FILE)).map(|b| format!("{b}-cache")));
    let region = ctx.region().or_else(|| host_setting(Path::new(REGION_FILE)));
    Ok(SwitchOptions {
        instance: instance_name(d.instance, &d.instance_file)?,
        system,
        revision: None,
        source,
        nix: NixStore::new(cache_bucket, region, d.store),
        record: d.record,
        current_system: d.current_system,
        profile: d.system_profile,
        unit: d.unit,
        settle: Duration::from_secs(d.settle),
        dry_run: d.dry_run,
    })
}

/// Where the host's user data writes the fleet bucket's name.
const BUCKET_FILE: &str = "/etc/clawdinator/bucket";

/// Where the host's user data writes its region (SSM runs the switch without the units' environment).
const REGION_FILE: &str = "/etc/clawdinator/region";
