//! `host workspace-seed`: the agent workspace (`/var/lib/clawd/workspace`)
//! from this repository's `clawdinator/workspace` templates, before the
//! gateway starts.
//!
//! The templates are declarative: a file they name is written as they say
//! (an agent's edit to it does not survive a restart; durable notes belong
//! in shared memory). Everything else in the workspace is the agent's and is
//! never touched. A file this command wrote earlier that the templates no
//! longer name is removed: it knows which ones from its state file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::atomic::{self, Owner};

/// The files the last seed wrote, relative to the workspace.
pub const STATE_FILE: &str = ".clawdinator-workspace.json";

/// The template that gets the module's toolchain list appended.
const TOOLS: &str = "TOOLS.md";

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedReport {
    pub dest: String,
    pub written: Vec<String>,
    pub unchanged: usize,
    pub removed: Vec<String>,
    /// The cron store, and whether it was written (`written`) or already right (`unchanged`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron_store: Option<(String, &'static str)>,
}

impl std::fmt::Display for SeedReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "workspace {}", self.dest)?;
        for name in &self.written {
            writeln!(f, "  wrote   {name}")?;
        }
        for name in &self.removed {
            writeln!(f, "  removed {name} (no longer a template)")?;
        }
        writeln!(f, "  {} template(s) already up to date", self.unchanged)?;
        if let Some((path, state)) = &self.cron_store {
            writeln!(f, "cron jobs {path}: {state}")?;
        }
        Ok(())
    }
}

/// Write every template into `dest`; see the module comment for what is kept.
pub fn seed(templates: &Path, dest: &Path, tools_extra: Option<&Path>, owner: Owner) -> Result<SeedReport> {
    let names = template_files(templates)?;
    let extra =
        tools_extra.map(|p| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))).transpose()?;
    std::fs::create_dir_all(dest).with_context(|| format!("cannot create the workspace {}", dest.display()))?;
    let mut report = SeedReport {
        dest: dest.display().to_string(),
        written: vec![],
        unchanged: 0,
        removed: vec![],
        cron_store: None,
    };
    for name in &names {
        let mut text = std::fs::read(templates.join(name))?;
        if let (Some(extra), true) = (&extra, name == Path::new(TOOLS)) {
            text.push(b'\n');
            text.extend_from_slice(extra);
        }
        let target = dest.join(name);
        if !target.is_symlink() && std::fs::read(&target).is_ok_and(|old| old == text) {
            report.unchanged += 1;
            continue;
        }
        atomic::write_owned(&target, &text, 0o644, owner)?;
        report.written.push(name.display().to_string());
    }
    let state = dest.join(STATE_FILE);
    for old in previous(&state)?.difference(&names) {
        let target = dest.join(old);
        if target.is_file() && !target.is_symlink() {
            std::fs::remove_file(&target).with_context(|| format!("cannot remove {}", target.display()))?;
            report.removed.push(old.display().to_string());
        }
    }
    atomic::write_owned(&state, &serde_json::to_vec_pretty(&names)?, 0o644, owner)?;
    Ok(report)
}

/// The fleet's cron jobs become the gateway's cron store, like a template:
/// declared in the repository, written when they differ.
pub fn install_cron_jobs(jobs: &Path, store: &Path, owner: Owner) -> Result<(String, &'static str)> {
    let text = std::fs::read(jobs).with_context(|| format!("cannot read the cron jobs {}", jobs.display()))?;
    serde_json::from_slice::<serde_json::Value>(&text)
        .with_context(|| format!("{} is not JSON: the gateway would not start its cron", jobs.display()))?;
    let state = if std::fs::read(store).is_ok_and(|old| old == text) {
        "unchanged"
    } else {
        atomic::write_owned(store, &text, 0o644, owner)?;
        "written"
    };
    Ok((store.display().to_string(), state))
}

/// The regular files under `templates`, relative to it.
fn template_files(templates: &Path) -> Result<BTreeSet<PathBuf>> {
    let mut found = BTreeSet::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = templates.join(&rel);
        let entries = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot read the workspace templates {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let path = rel.join(entry.file_name());
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                found.insert(path);
            } else {
                bail!("{} is not a regular file: templates are plain files", templates.join(&path).display());
            }
        }
    }
    Ok(found)
}

/// What the last seed wrote; nothing when it never ran. Names that would
/// leave the workspace are ignored: the state file is not trusted to say so.
fn previous(state: &Path) -> Result<BTreeSet<PathBuf>> {
    let Ok(bytes) = std::fs::read(state) else { return Ok(BTreeSet::new()) };
    let names: BTreeSet<PathBuf> =
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not a list of files", state.display()))?;
    Ok(names.into_iter().filter(|p| p.components().all(|c| matches!(c, std::path::Component::Normal(_)))).collect())
}
