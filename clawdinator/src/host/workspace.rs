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

use super::flags::WorkspaceSeedArgs;
use crate::atomic::{self, Owner};
use crate::ctx::Ctx;

impl WorkspaceSeedArgs {
    /// `host workspace-seed`, and the cron jobs into the gateway's store.
    pub(super) fn run(self, ctx: &Ctx) -> Result<()> {
        let owner = Owner::of(&self.owner)?;
        let mut report = seed(&self.templates, &self.dest, self.tools_extra.as_deref(), owner)?;
        if let (Some(jobs), Some(store)) = (&self.cron_jobs, &self.cron_store) {
            report.cron_store = Some(install_cron_jobs(jobs, store, owner)?);
        }
        ctx.out.emit(&report)
    }
}

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
    /// The cron store: what the merge with the shipped jobs did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron_store: Option<CronReport>,
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
        if let Some(cron) = &self.cron_store {
            write!(f, "{cron}")?;
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

/// What the cron merge did to the gateway's store.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CronReport {
    pub store: String,
    /// `created`, `merged` (written) or `unchanged` (not written).
    pub state: &'static str,
    /// Shipped jobs added or changed in the store, by id.
    pub updated: Vec<String>,
    /// Jobs the fleet shipped before and no longer ships, removed.
    pub removed: Vec<String>,
    /// Jobs made from chat (not shipped), kept as they were.
    pub kept: usize,
    /// An unreadable store moved aside (its name), instead of lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set_aside: Option<String>,
}

impl std::fmt::Display for CronReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "cron jobs {}: {}", self.store, self.state)?;
        for id in &self.updated {
            writeln!(f, "  updated {id} (shipped)")?;
        }
        for id in &self.removed {
            writeln!(f, "  removed {id} (no longer shipped)")?;
        }
        writeln!(f, "  {} job(s) made from chat kept", self.kept)?;
        if let Some(aside) = &self.set_aside {
            writeln!(f, "  the unreadable store was moved to {aside}")?;
        }
        Ok(())
    }
}

/// The fields of a stored job that are the gateway's own bookkeeping:
/// never shipped, always kept from the store.
pub const RUN_STATE: &[&str] = &["state", "createdAtMs", "updatedAtMs"];

type Job = serde_json::Map<String, serde_json::Value>;

/// The record of the jobs the last merge shipped, beside the store: how a
/// job the fleet stopped shipping is told from one made from chat.
pub fn shipped_record(store: &Path) -> PathBuf {
    let name = store.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    store.with_file_name(format!(".{name}.shipped"))
}

/// The fleet's cron jobs merged into the gateway's cron store (openclaw's
/// `{"version": 1, "jobs": [{"id": …, …, "state": {…}}]}`): a shipped job
/// replaces the stored job of its id, which keeps its run state; a job made
/// from chat stays as it is; a job shipped before and no longer shipped is
/// removed. Written whole, mode and owner kept, and only when it changes.
pub fn install_cron_jobs(jobs: &Path, store: &Path, owner: Owner) -> Result<CronReport> {
    let shipped = shipped_jobs(jobs)?;
    let record = shipped_record(store);
    let before = read_record(&record);
    let mut report = CronReport {
        store: store.display().to_string(),
        state: "unchanged",
        updated: vec![],
        removed: vec![],
        kept: 0,
        set_aside: None,
    };
    let (old, created) = match read_store(store, &mut report)? {
        Some(old) => (old, false),
        None => (serde_json::json!({"version": shipped.0, "jobs": []}), true),
    };
    let merged = merge(&old, &shipped.1, &before, &mut report);
    let (mode, owner) = keep_mode_and_owner(store, owner);
    if created || merged != old {
        report.state = if created { "created" } else { "merged" };
        let mut text = serde_json::to_vec_pretty(&merged)?;
        text.push(b'\n');
        atomic::write_owned(store, &text, mode, owner)?;
    }
    let now: serde_json::Value =
        shipped.1.iter().map(|j| (id_of(j).to_string(), j.clone().into())).collect::<Job>().into();
    if before != now {
        atomic::write_owned(&record, &serde_json::to_vec_pretty(&now)?, mode, owner)?;
    }
    Ok(report)
}

fn id_of(job: &Job) -> &str {
    job.get("id").and_then(|v| v.as_str()).unwrap_or_default()
}

/// The shipped file: its version and its jobs, each with a unique string
/// id and none of the gateway's run state.
fn shipped_jobs(jobs: &Path) -> Result<(serde_json::Value, Vec<Job>)> {
    let text = std::fs::read(jobs).with_context(|| format!("cannot read the cron jobs {}", jobs.display()))?;
    let file: serde_json::Value = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not JSON: the gateway would not start its cron", jobs.display()))?;
    let list = file["jobs"].as_array().with_context(|| format!("{}: no \"jobs\" list", jobs.display()))?;
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for job in list {
        let job = job.as_object().with_context(|| format!("{}: a job is not an object", jobs.display()))?;
        let id = job.get("id").and_then(|v| v.as_str()).filter(|id| !id.is_empty());
        let id =
            id.with_context(|| format!("{}: every job needs a string \"id\" (the merge keys on it)", jobs.display()))?;
        anyhow::ensure!(seen.insert(id.to_string()), "{}: the id {id} is shipped twice", jobs.display());
        if let Some(field) = RUN_STATE.iter().find(|f| job.contains_key(**f)) {
            bail!("{}: job {id} ships \"{field}\", which is the gateway's run state: remove it", jobs.display());
        }
        out.push(job.clone());
    }
    Ok((file.get("version").cloned().unwrap_or(1.into()), out))
}

/// The ids and definitions the last merge shipped; none when there is no
/// record (a first merge, or one from before records: nothing is removed).
fn read_record(record: &Path) -> serde_json::Value {
    std::fs::read(record)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter(|v| v.is_object())
        .unwrap_or_else(|| serde_json::json!({}))
}

/// The store as the gateway left it; none when there is none. A store that
/// is not a cron store is moved aside (named in the report), never lost.
fn read_store(store: &Path, report: &mut CronReport) -> Result<Option<serde_json::Value>> {
    let bytes = match std::fs::read(store) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read the cron store {}", store.display())),
    };
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v) if v["jobs"].as_array().is_some_and(|j| j.iter().all(|j| j.is_object())) => Ok(Some(v)),
        _ => {
            let aside = store.with_extension("json.unreadable");
            std::fs::rename(store, &aside).with_context(|| format!("cannot move {} aside", store.display()))?;
            report.set_aside = Some(aside.display().to_string());
            Ok(None)
        }
    }
}

/// The new store: `old`'s jobs in their order, shipped ones updated,
/// retired ones dropped, new shipped ones at the end.
fn merge(
    old: &serde_json::Value,
    shipped: &[Job],
    before: &serde_json::Value,
    report: &mut CronReport,
) -> serde_json::Value {
    let mut jobs: Vec<serde_json::Value> = Vec::new();
    let mut placed = BTreeSet::new();
    for stored in old["jobs"].as_array().into_iter().flatten().filter_map(|j| j.as_object()) {
        let id = id_of(stored);
        match shipped.iter().find(|s| id_of(s) == id && !id.is_empty()) {
            Some(new) if placed.insert(id.to_string()) => {
                let job = update(stored, new, before.get(id).and_then(|v| v.as_object()));
                if &job != stored {
                    report.updated.push(id.to_string());
                }
                jobs.push(job.into());
            }
            Some(_) => report.removed.push(format!("{id} (a second copy)")),
            None if before.get(id).is_some() => report.removed.push(id.to_string()),
            None => {
                report.kept += 1;
                jobs.push(stored.clone().into());
            }
        }
    }
    for new in shipped.iter().filter(|s| !placed.contains(id_of(s))) {
        report.updated.push(id_of(new).to_string());
        jobs.push(new.clone().into());
    }
    let mut store = old.clone();
    store["jobs"] = jobs.into();
    store
}

/// A shipped job over its stored copy: every shipped field as shipped, a
/// field the fleet shipped before and no longer does dropped, the rest
/// (run state, what the gateway adds) kept. A changed schedule drops the
/// next run time the old one set, so the gateway computes it afresh.
fn update(stored: &Job, shipped: &Job, before: Option<&Job>) -> Job {
    let mut job = stored.clone();
    for retired in before.into_iter().flat_map(|b| b.keys()).filter(|k| !shipped.contains_key(*k)) {
        if !RUN_STATE.contains(&retired.as_str()) {
            job.remove(retired);
        }
    }
    if stored.get("schedule") != shipped.get("schedule") {
        if let Some(state) = job.get_mut("state").and_then(|s| s.as_object_mut()) {
            state.remove("nextRunAtMs");
        }
    }
    job.extend(shipped.iter().map(|(k, v)| (k.clone(), v.clone())));
    job
}

/// The store's mode and owner, kept across a rewrite; a new store is 0600
/// (a job's payload is the agents' business) and owned as told.
fn keep_mode_and_owner(store: &Path, owner: Owner) -> (u32, Owner) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(store) else { return (0o600, owner) };
    if owner != Owner::default() {
        return (meta.mode() & 0o7777, owner);
    }
    // Only ids that differ from ours: chown to oneself is a no-op, and a
    // group we are not in is one we could not set anyway.
    let (uid, gid) = (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw());
    let kept = Owner { uid: (meta.uid() != uid).then_some(meta.uid()), gid: (meta.gid() != gid).then_some(meta.gid()) };
    (meta.mode() & 0o7777, kept)
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
