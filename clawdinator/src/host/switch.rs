//! `host switch REV`: the release lane's step on one host, run by `fleet
//! switch` through SSM. Build this host's configuration at REV, activate it
//! (`switch-to-configuration test`: nothing changes for the next boot), check
//! health (the gateway active and not restarting for a settle period, and
//! the running system's `configurationRevision` equal to REV), and only then
//! make it the boot default. If any step after the build fails, the
//! previous system is activated again (and made the boot default again if
//! that step had changed it): a broken revision never leaves a broken host.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;
use xshell::{cmd, Shell};

use super::deploy::{self, Deployment, Outcome};
use super::repo::DeployCopy;

pub struct SwitchOptions {
    pub instance: String,
    pub rev: String,
    /// The deploy copy (root's clone of the fleet's flake), its only URL and branch.
    pub flake: PathBuf,
    pub url: String,
    pub branch: String,
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

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SwitchReport {
    pub instance: String,
    pub revision: String,
    pub outcome: Outcome,
    pub system: Option<String>,
    pub previous: String,
}

impl std::fmt::Display for SwitchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.outcome {
            Outcome::AlreadyRunning => writeln!(f, "{} already runs {}", self.instance, self.revision),
            Outcome::WouldSwitch => {
                writeln!(f, "would build, activate, check and make {} the boot default", self.revision)
            }
            _ => writeln!(
                f,
                "{} runs {} ({}), the boot default; the previous system was {}",
                self.instance,
                self.revision,
                self.system.as_deref().unwrap_or("?"),
                self.previous
            ),
        }
    }
}

/// A full git revision: 40 lowercase hex digits (nothing a shell or a flake URL could read otherwise).
pub fn check_revision(rev: &str) -> Result<()> {
    ensure!(
        rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "\"{rev}\" is not a full git revision (40 lowercase hex digits)"
    );
    Ok(())
}

/// The revision a system was built from, from its `configurationRevision` file.
fn running_revision(system: &Path) -> Option<String> {
    std::fs::read_to_string(system.join("configurationRevision")).ok().map(|s| s.trim().to_string())
}

pub fn switch(opts: &SwitchOptions) -> Result<SwitchReport> {
    check_revision(&opts.rev)?;
    let previous = std::fs::canonicalize(&opts.current_system)
        .with_context(|| format!("cannot resolve {}", opts.current_system.display()))?;
    let mut report = SwitchReport {
        instance: opts.instance.clone(),
        revision: opts.rev.clone(),
        outcome: Outcome::WouldSwitch,
        system: None,
        previous: previous.display().to_string(),
    };
    if running_revision(&previous).as_deref() == Some(opts.rev.as_str()) {
        report.outcome = Outcome::AlreadyRunning;
        return Ok(report);
    }
    let sh = Shell::new()?;
    let copy = DeployCopy::open_for(&opts.flake, &opts.url, &opts.branch, &opts.record)?;
    if opts.dry_run {
        return Ok(report);
    }
    published(&sh, &copy, &opts.rev)?;
    let new = build(&sh, &copy, opts).context("switch stopped at build; nothing was activated")?;
    let mut boot_changed = false;
    let result = activate_and_check(&sh, opts, &new, &mut boot_changed);
    if let Err(err) = result {
        let rollback = roll_back(&sh, opts, &previous, boot_changed);
        return Err(match rollback {
            Ok(()) => err.context(format!("rolled back: {} is active again", previous.display())),
            Err(again) => err.context(format!("ROLLBACK FAILED too, the host needs a hand: {again:#}")),
        });
    }
    let deployment = Deployment {
        instance: opts.instance.clone(),
        revision: opts.rev.clone(),
        source: "switch".into(),
        at: crate::clock::unix_seconds(),
    };
    deploy::write_record(&opts.record, &deployment)?;
    report.outcome = Outcome::Switched;
    report.system = Some(new.display().to_string());
    Ok(report)
}

/// REV is on the published branch: fetched now if the copy lacks it, a
/// local commit refused either way.
fn published(sh: &Shell, copy: &DeployCopy, rev: &str) -> Result<()> {
    if copy.require_published(sh, rev).is_err() {
        copy.fetch(sh).context("switch stopped before build; nothing changed")?;
    }
    copy.require_published(sh, rev).context("switch refused; nothing changed")
}

/// Build this host's system at REV of the deploy copy, with the committed lock.
fn build(sh: &Shell, copy: &DeployCopy, opts: &SwitchOptions) -> Result<PathBuf> {
    let installable = format!(
        "git+file://{}?rev={}#nixosConfigurations.{}.config.system.build.toplevel",
        copy.dir.display(),
        opts.rev,
        opts.instance
    );
    let out = cmd!(sh, "nix build --no-link --no-update-lock-file --print-out-paths {installable}")
        .read()
        .with_context(|| format!("nix build {installable}"))?;
    let path = PathBuf::from(out.lines().last().unwrap_or_default().trim());
    ensure!(
        path.join("bin/switch-to-configuration").exists(),
        "nix build gave {}, which is not a NixOS system",
        path.display()
    );
    Ok(path)
}

fn activate_and_check(sh: &Shell, opts: &SwitchOptions, new: &Path, boot_changed: &mut bool) -> Result<()> {
    let activate = new.join("bin/switch-to-configuration");
    crate::process::run_on_stderr(cmd!(sh, "{activate} test")).context("switch stopped at activation")?;
    healthy(sh, opts).context("switch stopped at the health check")?;
    let profile = &opts.profile;
    *boot_changed = true;
    crate::process::run_on_stderr(cmd!(sh, "nix-env -p {profile} --set {new}"))
        .and_then(|()| crate::process::run_on_stderr(cmd!(sh, "{activate} boot")))
        .context("switch stopped at making it the boot default")
}

/// The unit is active and does not restart for the settle period, and the
/// running system is REV.
fn healthy(sh: &Shell, opts: &SwitchOptions) -> Result<()> {
    let running = running_revision(&opts.current_system);
    ensure!(
        running.as_deref() == Some(opts.rev.as_str()),
        "{}/configurationRevision is {running:?}, not {}",
        opts.current_system.display(),
        opts.rev
    );
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

fn roll_back(sh: &Shell, opts: &SwitchOptions, previous: &Path, boot_changed: bool) -> Result<()> {
    let activate = previous.join("bin/switch-to-configuration");
    eprintln!("rolling back to {}", previous.display());
    crate::process::run_on_stderr(cmd!(sh, "{activate} test"))?;
    if boot_changed {
        let profile = &opts.profile;
        crate::process::run_on_stderr(cmd!(sh, "nix-env -p {profile} --set {previous}"))?;
        crate::process::run_on_stderr(cmd!(sh, "{activate} boot"))?;
    }
    Ok(())
}
