//! What a host does with its secrets: write a set of them into a directory
//! it shares with others (`/run/agenix`), each 0400 through a temporary file
//! and a rename, and remove only what it wrote there before.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use zeroize::Zeroizing;

use super::flags::SecretsInstallArgs;
use crate::atomic::{self, Owner};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchReport {
    pub dest: String,
    pub written: Vec<String>,
    /// Written for root alone, not for the service user.
    pub root_only: Vec<String>,
    pub removed: Vec<String>,
}

/// Who owns each secret written: the service user, except the files root
/// keeps to itself (the bots' App key: only root's token unit reads it, so
/// an agent never holds a key that mints tokens).
#[derive(Debug, Clone, Default)]
pub struct Owners {
    pub owner: Owner,
    pub root_only: Vec<String>,
}

impl Owners {
    fn of(&self, file: &str) -> Owner {
        if self.root_only.iter().any(|n| n == file) {
            Owner::default()
        } else {
            self.owner
        }
    }
}

impl fmt::Display for FetchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for name in &self.written {
            writeln!(f, "wrote   {}/{name}", self.dest)?;
        }
        for name in &self.removed {
            writeln!(f, "removed {}/{name}", self.dest)?;
        }
        writeln!(f, "secrets: {} written, {} removed in {}", self.written.len(), self.removed.len(), self.dest)
    }
}

/// The file in `--dest` that lists what `secrets fetch` wrote there: the
/// only files a later run may remove (other secrets live in /run/agenix too).
pub const STATE_FILE: &str = ".clawdinator-secrets.json";

fn written_before(dest: &Path) -> Result<BTreeSet<String>> {
    match std::fs::read(dest.join(STATE_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not the list `secrets fetch` writes", dest.join(STATE_FILE).display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dest.join(STATE_FILE).display())),
    }
}

/// Write every (file name, value) into `dest` (0400, owned as `owners`
/// say), record the names, and remove those an earlier run wrote that are
/// no longer in the set. Nothing else in `dest` is touched.
pub fn write_set(dest: &Path, values: &[(String, Zeroizing<Vec<u8>>)], owners: &Owners) -> Result<FetchReport> {
    std::fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let before = written_before(dest)?;
    let mut report =
        FetchReport { dest: dest.display().to_string(), written: vec![], root_only: vec![], removed: vec![] };
    for (file, value) in values {
        atomic::write_owned(&dest.join(file), value, 0o400, owners.of(file))?;
        report.written.push(file.clone());
        if owners.root_only.contains(file) {
            report.root_only.push(file.clone());
        }
    }
    let now: BTreeSet<String> = values.iter().map(|(name, _)| name.clone()).collect();
    atomic::write(&dest.join(STATE_FILE), &serde_json::to_vec(&now)?, 0o600)?;
    for name in before.difference(&now) {
        match std::fs::remove_file(dest.join(name)) {
            Ok(()) => report.removed.push(name.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}/{name}", dest.display())),
        }
    }
    Ok(report)
}

/// Bundle mode: the instance's age files (from its bootstrap bundle),
/// decrypted with the fleet's identity, into `dest`.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// The bundle's secrets directory (`*.age`).
    pub from: std::path::PathBuf,
    /// The age identity (the bundle's `clawdinator.agekey`).
    pub identity: std::path::PathBuf,
    pub dest: std::path::PathBuf,
    pub owners: Owners,
}

/// Decrypt every `*.age` in `from` (all of them before anything is written:
/// one that fails leaves `dest` as it was) and write them as `write_set` does,
/// each under its name without `.age`.
pub fn install(opts: &InstallOptions) -> Result<FetchReport> {
    let identities = super::files::load_identities(&opts.identity)?;
    let mut names: Vec<String> = std::fs::read_dir(&opts.from)
        .with_context(|| format!("cannot read the bundle's secrets in {}", opts.from.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".age"))
        .collect();
    names.sort();
    if names.is_empty() {
        bail!("{} holds no .age file: was `bootstrap fetch` run?", opts.from.display());
    }
    let mut values = Vec::new();
    for name in names {
        let path = opts.from.join(&name);
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let value = super::files::decrypt(&path, &bytes, &identities, &opts.identity)?;
        values.push((name.trim_end_matches(".age").to_string(), value));
    }
    write_set(&opts.dest, &values, &opts.owners)
}

impl SecretsInstallArgs {
    /// `secrets install`: a host's secrets written whole.
    pub fn run(self, ctx: &crate::ctx::Ctx) -> Result<()> {
        let opts = InstallOptions {
            from: self.from,
            identity: self.identity,
            dest: self.dest,
            owners: Owners { owner: Owner::of(&self.owner)?, root_only: self.root_only },
        };
        ctx.out.emit(&install(&opts)?)
    }
}
