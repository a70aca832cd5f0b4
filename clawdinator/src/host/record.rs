//! The deployment record: what this host runs, as the last switch left it
//! (`/var/lib/clawdinator/deployment.json`, root's). A first switch does
//! nothing once it exists.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub instance: String,
    /// The system's store path.
    pub system: String,
    /// The fleet's git revision it was built from, when the release said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// `first-boot`, `self-update` or `switch`.
    pub source: String,
    /// Seconds since the epoch.
    pub at: u64,
}

/// The recorded deployment, or None on a host never deployed.
pub fn read(path: &Path) -> Result<Option<Deployment>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
            format!("{} is not a deployment record; move it aside to deploy again", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Record a deployment (0644: operators read it; only root writes its directory).
pub fn write(path: &Path, deployment: &Deployment) -> Result<()> {
    crate::atomic::write(path, &serde_json::to_vec_pretty(deployment)?, 0o644)
}
