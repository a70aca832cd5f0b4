//! `host first-switch`: a fresh instance, booted from the generic image,
//! becomes `nixosConfigurations.<its name>` from the repository copy its
//! bundle brought, once.
//!
//! Once a deployment is recorded (by this command or by a later `fleet
//! switch`), nothing here runs again: a reboot, or user data run again,
//! never takes a host back to the seed's revision (the old user data did,
//! undoing every deploy since).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::repo::DeployCopy;
use crate::registry::Registry;

/// What the host is running, as the last deployment left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub instance: String,
    /// The git revision of the flake the host switched to.
    pub revision: String,
    /// `first-boot`, `self-update` or `switch`.
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

/// What a switch on the host works with (first switch and self-update alike).
pub struct SwitchOptions {
    pub instance: String,
    /// The deploy copy: root's clone of the fleet's flake (see [`super::repo`]).
    pub flake: PathBuf,
    /// The only URL the copy fetches, and its branch.
    pub url: String,
    pub branch: String,
    pub record: PathBuf,
    pub dry_run: bool,
}

impl SwitchOptions {
    /// The deploy copy, once it and the record's place are root's alone.
    pub fn open(&self) -> Result<DeployCopy> {
        DeployCopy::open_for(&self.flake, &self.url, &self.branch, &self.record)
    }
}

/// What a switch on this host did (first switch, self-update, host switch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Switched,
    WouldSwitch,
    /// First switch: a deployment is recorded already.
    AlreadyDeployed,
    /// Self-update: the recorded revision is the repository's.
    UpToDate,
    /// Host switch: the host runs the revision already.
    AlreadyRunning,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FirstSwitchReport {
    pub outcome: Outcome,
    pub deployment: Deployment,
    pub command: Vec<String>,
}

impl std::fmt::Display for FirstSwitchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = &self.deployment;
        match self.outcome {
            Outcome::AlreadyDeployed => writeln!(
                f,
                "{} is already deployed (revision {}, {}): first switch skipped",
                d.instance, d.revision, d.source
            ),
            Outcome::WouldSwitch => writeln!(f, "would run: {}", self.command.join(" ")),
            _ => writeln!(f, "{} switched to revision {} and recorded it", d.instance, d.revision),
        }
    }
}

/// Switch once; see the module comment.
pub fn first_switch(opts: &SwitchOptions) -> Result<FirstSwitchReport> {
    if let Some(deployment) = read_record(&opts.record)? {
        return Ok(FirstSwitchReport { outcome: Outcome::AlreadyDeployed, deployment, command: vec![] });
    }
    let sh = xshell::Shell::new()?;
    let copy = opts.open()?;
    let revision = copy.head(&sh)?;
    check_flake(&sh, &copy, &revision, &opts.instance)?;
    let command = rebuild_command(&copy, &revision, &opts.instance);
    let deployment = Deployment {
        instance: opts.instance.clone(),
        revision,
        source: "first-boot".into(),
        at: crate::clock::unix_seconds(),
    };
    if opts.dry_run {
        return Ok(FirstSwitchReport { outcome: Outcome::WouldSwitch, deployment, command });
    }
    switch(&sh, &command).context("the first switch failed; the host stays on the image's configuration")?;
    write_record(&opts.record, &deployment)?;
    Ok(FirstSwitchReport { outcome: Outcome::Switched, deployment, command })
}

/// The revision is a flake whose registry names the instance.
fn check_flake(sh: &xshell::Shell, copy: &DeployCopy, rev: &str, instance: &str) -> Result<()> {
    copy.read_at(sh, rev, "flake.nix").with_context(|| {
        format!(
            "{} has no flake at {rev}: the repository copy did not arrive (see clawdinator-repo-seed.service)",
            copy.dir.display()
        )
    })?;
    let registry =
        Registry::parse(&copy.read_at(sh, rev, "nix/instances.json")?, &format!("{rev}:nix/instances.json"))?;
    registry.select(&[instance.to_string()])?;
    Ok(())
}

/// `nixos-rebuild switch` of the instance at exactly REV of the deploy copy,
/// with the committed lock (never an input's newer branch head).
fn rebuild_command(copy: &DeployCopy, rev: &str, instance: &str) -> Vec<String> {
    let target = format!("git+file://{}?rev={rev}#{instance}", copy.dir.display());
    ["nixos-rebuild", "switch", "--no-update-lock-file", "--flake", &target].map(str::to_string).to_vec()
}

fn switch(sh: &xshell::Shell, command: &[String]) -> Result<()> {
    let (program, args) = command.split_first().context("an empty command")?;
    crate::process::run_on_stderr(xshell::cmd!(sh, "{program} {args...}"))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SelfUpdateReport {
    pub outcome: Outcome,
    pub previous: Option<String>,
    pub revision: String,
}

impl std::fmt::Display for SelfUpdateReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let previous = self.previous.as_deref().unwrap_or("none recorded");
        match self.outcome {
            Outcome::UpToDate => writeln!(f, "already at {}: nothing to do", self.revision),
            Outcome::WouldSwitch => writeln!(f, "would switch from {previous} to {}", self.revision),
            _ => writeln!(f, "switched from {previous} to {} and recorded it", self.revision),
        }
    }
}

/// `selfUpdate`: fast-forward the repository copy, switch when the revision
/// differs from the recorded one, record it. A failed switch records nothing.
pub fn self_update(opts: &SwitchOptions) -> Result<SelfUpdateReport> {
    let sh = xshell::Shell::new()?;
    let copy = opts.open()?;
    if !opts.dry_run {
        copy.fetch(&sh).context("nothing was switched")?;
    }
    let revision = copy.published_tip(&sh)?;
    check_flake(&sh, &copy, &revision, &opts.instance)?;
    let previous = read_record(&opts.record)?.map(|d| d.revision);
    let outcome = if previous.as_deref() == Some(revision.as_str()) {
        Outcome::UpToDate
    } else if opts.dry_run {
        Outcome::WouldSwitch
    } else {
        switch(&sh, &rebuild_command(&copy, &revision, &opts.instance))
            .context("the update failed; the host stays as it was")?;
        let deployment = Deployment {
            instance: opts.instance.clone(),
            revision: revision.clone(),
            source: "self-update".into(),
            at: crate::clock::unix_seconds(),
        };
        write_record(&opts.record, &deployment)?;
        Outcome::Switched
    };
    Ok(SelfUpdateReport { outcome, previous, revision })
}
