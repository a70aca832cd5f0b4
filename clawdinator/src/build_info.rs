//! `clawdinator version`: what this host (or checkout) was built from. On a
//! host, the flake wrote `/etc/clawdinator/build-info.json` (nix/lib's
//! `buildInfo.fromLock`); in a checkout the same is read from `flake.lock`.
//! Each input is shown with its locked revision and how many days old its
//! commit is, so a stale pin shows at a glance.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Input {
    pub rev: Option<String>,
    /// The locked commit's time, seconds since the epoch.
    pub last_modified: Option<u64>,
}

/// The file's shape (nix/lib/build-info.nix writes the same).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfo {
    pub revision: String,
    pub inputs: BTreeMap<String, Input>,
}

impl BuildInfo {
    /// The root inputs of a flake.lock text, follows resolved, as nix/lib does.
    pub fn from_lock(text: &str, revision: &str) -> Result<BuildInfo> {
        let lock: Value = serde_json::from_str(text).context("flake.lock is not JSON")?;
        let root = lock["root"].as_str().context("flake.lock has no root")?;
        let mut inputs = BTreeMap::new();
        // A flake without inputs locks a root without an `inputs` key: no pins.
        let none = serde_json::Map::new();
        let root_inputs = match &lock["nodes"][root]["inputs"] {
            Value::Null => &none,
            inputs => inputs.as_object().context("flake.lock's root inputs are not an object")?,
        };
        for (name, reference) in root_inputs {
            let locked = &lock["nodes"][resolve(&lock, reference)?]["locked"];
            let input =
                Input { rev: locked["rev"].as_str().map(String::from), last_modified: locked["lastModified"].as_u64() };
            inputs.insert(name.clone(), input);
        }
        Ok(BuildInfo { revision: revision.to_string(), inputs })
    }

    pub fn load(path: &Path) -> Result<BuildInfo> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not build info", path.display()))
    }
}

/// The node a flake.lock input reference names: a node name, or a follows
/// path from the root (each step may itself follow).
pub fn resolve<'a>(lock: &'a Value, reference: &'a Value) -> Result<&'a str> {
    match reference {
        Value::String(name) => Ok(name),
        Value::Array(path) => {
            let mut node = lock["root"].as_str().context("the lock has no root")?;
            for step in path {
                let step = step.as_str().context("a follows path of non-strings")?;
                let next = &lock["nodes"][node]["inputs"][step];
                anyhow::ensure!(!next.is_null(), "the follows path {path:?} breaks at {node}.{step}");
                node = resolve(lock, next)?;
            }
            Ok(node)
        }
        other => anyhow::bail!("an input reference {other} is neither a node nor a path"),
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionReport {
    /// The host binary's own version.
    pub version: &'static str,
    pub source: String,
    pub revision: String,
    pub inputs: BTreeMap<String, InputAge>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InputAge {
    pub rev: Option<String>,
    pub last_modified: Option<u64>,
    /// Whole days between the locked commit and now.
    pub age_days: Option<u64>,
}

impl VersionReport {
    pub fn new(info: BuildInfo, source: String, now: u64) -> VersionReport {
        let inputs = info
            .inputs
            .into_iter()
            .map(|(name, i)| {
                let age_days = i.last_modified.map(|t| now.saturating_sub(t) / 86_400);
                (name, InputAge { rev: i.rev, last_modified: i.last_modified, age_days })
            })
            .collect();
        VersionReport { version: env!("CARGO_PKG_VERSION"), source, revision: info.revision, inputs }
    }
}

impl std::fmt::Display for VersionReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "clawdinator {} at {} ({})", self.version, self.revision, self.source)?;
        for (name, i) in &self.inputs {
            let rev = i.rev.as_deref().map(|r| &r[..r.len().min(12)]).unwrap_or("unlocked");
            let age = i.age_days.map(|d| format!("{d} days old")).unwrap_or_else(|| "age unknown".into());
            writeln!(f, "  {name:<14} {rev}  {age}")?;
        }
        Ok(())
    }
}

/// The host's file when it exists, else the checkout's flake.lock.
pub fn report(build_info: &Path, lock: &Path) -> Result<VersionReport> {
    let now = crate::clock::unix_seconds();
    if build_info.exists() {
        return Ok(VersionReport::new(BuildInfo::load(build_info)?, build_info.display().to_string(), now));
    }
    let text = std::fs::read_to_string(lock).with_context(|| {
        format!("neither {} nor {} exists: not a host, not a checkout", build_info.display(), lock.display())
    })?;
    let dir = lock.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let sh = xshell::Shell::new()?;
    let revision = xshell::cmd!(sh, "git -C {dir} rev-parse HEAD")
        .quiet()
        .ignore_stderr()
        .read()
        .unwrap_or_else(|_| "unknown".into());
    Ok(VersionReport::new(BuildInfo::from_lock(&text, &revision)?, lock.display().to_string(), now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flake_without_inputs_pins_nothing_and_a_malformed_root_is_refused() {
        let none = BuildInfo::from_lock(r#"{"nodes":{"root":{}},"root":"root","version":7}"#, "r").unwrap();
        assert!(none.inputs.is_empty());
        let bad = r#"{"nodes":{"root":{"inputs":["x"]}},"root":"root","version":7}"#;
        assert!(BuildInfo::from_lock(bad, "r").is_err());
    }
}
