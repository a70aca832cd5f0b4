//! `host first-switch`: a fresh instance, booted from the generic image,
//! becomes `nixosConfigurations.<its name>` from the repository copy its
//! bundle brought, once.
//!
//! Once a deployment is recorded (by this command or by a later `fleet
//! switch`), nothing here runs again: a reboot, or user data run again,
//! never takes a host back to the seed's revision (the old user data did,
//! undoing every deploy since).

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};

use crate::fleet::Registry;

/// What the host is running, as the last deployment left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub instance: String,
    /// The git revision of the flake the host switched to.
    pub revision: String,
    /// `first-boot` or `switch`.
    pub source: String,
    /// Seconds since the epoch.
    pub at: u64,
}

/// The recorded deployment, or None on a host never deployed.
pub fn read_record(path: &Path) -> Result<Option<Deployment>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
            format!("{} is not a deployment record; move it aside to deploy again", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Record a deployment (0644: hosts and operators read it).
pub fn write_record(path: &Path, deployment: &Deployment) -> Result<()> {
    crate::atomic::write(path, &serde_json::to_vec_pretty(deployment)?, 0o644)
}

pub struct FirstSwitch {
    pub instance: String,
    /// The repository copy (a flake with `nix/instances.json`).
    pub flake: PathBuf,
    pub record: PathBuf,
    pub dry_run: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FirstSwitchReport {
    /// `already-deployed`, `would-switch` or `switched`.
    pub outcome: &'static str,
    pub deployment: Deployment,
    pub command: Vec<String>,
}

impl std::fmt::Display for FirstSwitchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = &self.deployment;
        match self.outcome {
            "already-deployed" => writeln!(
                f,
                "{} is already deployed (revision {}, {}): first switch skipped",
                d.instance, d.revision, d.source
            ),
            "would-switch" => writeln!(f, "would run: {}", self.command.join(" ")),
            _ => writeln!(f, "{} switched to revision {} and recorded it", d.instance, d.revision),
        }
    }
}

/// Switch once; see the module comment.
pub fn first_switch(opts: &FirstSwitch) -> Result<FirstSwitchReport> {
    if let Some(deployment) = read_record(&opts.record)? {
        return Ok(FirstSwitchReport { outcome: "already-deployed", deployment, command: vec![] });
    }
    let registry_file = opts.flake.join("nix/instances.json");
    ensure!(
        opts.flake.join("flake.nix").is_file(),
        "{} has no flake.nix: the repository copy did not arrive (see clawdinator-repo-seed.service)",
        opts.flake.display()
    );
    let registry = Registry::load(&registry_file)?;
    registry.select(std::slice::from_ref(&opts.instance))?;
    let sh = xshell::Shell::new()?;
    let flake = &opts.flake;
    let revision = xshell::cmd!(sh, "git -C {flake} rev-parse HEAD")
        .quiet()
        .read()
        .with_context(|| format!("{} is not a git clone: cannot tell which revision it is", flake.display()))?;
    let target = format!("{}#{}", flake.display(), opts.instance);
    let command = vec!["nixos-rebuild".into(), "switch".into(), "--flake".into(), target.clone()];
    let deployment = Deployment { instance: opts.instance.clone(), revision, source: "first-boot".into(), at: now() };
    if opts.dry_run {
        return Ok(FirstSwitchReport { outcome: "would-switch", deployment, command });
    }
    xshell::cmd!(sh, "nixos-rebuild switch --flake {target}")
        .run()
        .with_context(|| format!("the first switch to {target} failed; the host stays on the image's configuration"))?;
    write_record(&opts.record, &deployment)?;
    Ok(FirstSwitchReport { outcome: "switched", deployment, command })
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
