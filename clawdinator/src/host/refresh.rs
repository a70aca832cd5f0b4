//! `host refresh-secrets`: the host side of `fleet refresh-secrets`, run as
//! root through SSM. The units the module defines do the work, with the
//! command lines and paths the module gave them: the bundle is fetched
//! again (`clawdinator-bootstrap`, when this host uses bundles), the
//! secrets are installed again (`clawdinator-secrets`, which replaces every
//! file and removes the ones no longer listed), then the units that read
//! secrets are restarted if they run.

use anyhow::{Context, Result};
use serde::Serialize;
use xshell::{cmd, Shell};

use super::flags::RefreshSecretsArgs;
use crate::ctx::Ctx;

pub const BOOTSTRAP_UNIT: &str = "clawdinator-bootstrap.service";
pub const SECRETS_UNIT: &str = "clawdinator-secrets.service";

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshReport {
    /// The oneshots run again, in order.
    pub reran: Vec<String>,
    /// The readers restarted (those not running are left stopped).
    pub restarted: Vec<String>,
}

impl std::fmt::Display for RefreshReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "ran again: {}", self.reran.join(", "))?;
        writeln!(f, "restarted (if running): {}", self.restarted.join(", "))
    }
}

fn loaded(sh: &Shell, unit: &str) -> bool {
    let state = cmd!(sh, "systemctl show -p LoadState --value {unit}").quiet().ignore_status().read();
    state.is_ok_and(|s| s.trim() == "loaded")
}

pub fn refresh_secrets(readers: &[String]) -> Result<RefreshReport> {
    let sh = Shell::new()?;
    let mut reran = Vec::new();
    for unit in [BOOTSTRAP_UNIT, SECRETS_UNIT] {
        if unit == BOOTSTRAP_UNIT && !loaded(&sh, unit) {
            continue; // secrets come from Secrets Manager on this host
        }
        cmd!(sh, "systemctl restart {unit}").quiet().run().with_context(|| {
            format!(
                "{unit} failed: the secrets may be unchanged (journalctl -u {unit}); the readers were not restarted"
            )
        })?;
        reran.push(unit.to_string());
    }
    cmd!(sh, "systemctl try-restart {readers...}").quiet().run().context("restarting the units that read secrets")?;
    Ok(RefreshReport { reran, restarted: readers.to_vec() })
}

impl RefreshSecretsArgs {
    /// `host refresh-secrets`.
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        ctx.out.emit(&refresh_secrets(&self.readers)?)
    }
}
