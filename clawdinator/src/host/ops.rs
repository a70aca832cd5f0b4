//! `host logs` and `host restart`: what `fleet logs` and `fleet restart`
//! run on a host through their SSM documents. SSM has checked each
//! parameter against the document's pattern already; these check again
//! (the documents are not the only way a root shell could call them) and
//! hand the values to journalctl and systemctl as arguments, never to a
//! shell.

use anyhow::{ensure, Context, Result};
use serde::Serialize;
use xshell::{cmd, Shell};

use super::flags::{HostLogsArgs, HostRestartArgs};
use crate::ctx::Ctx;

/// A unit of the fleet: `clawdinator`, `clawdinator-<words>`, with an
/// optional `.service` or `.timer` (the documents' allowedPattern).
pub fn check_unit(unit: &str) -> Result<()> {
    let base = unit.strip_suffix(".service").or_else(|| unit.strip_suffix(".timer")).unwrap_or(unit);
    let words = base.strip_prefix("clawdinator").map(|rest| rest.split('-').skip(1).collect::<Vec<_>>());
    let ok = match (base == "clawdinator", words) {
        (true, _) => true,
        (false, Some(words)) => {
            base.starts_with("clawdinator-")
                && words
                    .iter()
                    .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        }
        _ => false,
    };
    ensure!(ok, "{unit:?} is not a unit of the fleet (clawdinator or clawdinator-…)");
    Ok(())
}

/// A time span journalctl takes after `-`: a number and s, min, h or d.
pub fn check_since(since: &str) -> Result<()> {
    let digits = since.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &since[digits.len()..];
    ensure!(
        (1..=4).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && matches!(unit, "s" | "min" | "h" | "d"),
        "{since:?} is not a time span (a number and s, min, h or d, e.g. 2h)"
    );
    Ok(())
}

/// The unit's journal since `since` ago, at most `lines` lines, as text.
pub fn logs(unit: &str, since: &str, lines: u32) -> Result<String> {
    check_unit(unit)?;
    check_since(since)?;
    let sh = Shell::new()?;
    let (since, lines) = (format!("-{since}"), lines.to_string());
    cmd!(sh, "journalctl --no-pager --output short-iso --unit {unit} --since {since} --lines {lines}")
        .quiet()
        .read()
        .with_context(|| format!("journalctl could not read {unit}'s journal"))
}

#[derive(Debug, Serialize)]
pub struct RestartReport {
    pub unit: String,
    /// `systemctl is-active` after the restart.
    pub state: String,
}

impl std::fmt::Display for RestartReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} restarted: {}", self.unit, self.state)
    }
}

/// Restart the unit; an error unless it is active again afterwards.
pub fn restart(unit: &str) -> Result<RestartReport> {
    check_unit(unit)?;
    let sh = Shell::new()?;
    crate::process::run_on_stderr(cmd!(sh, "systemctl restart {unit}"))?;
    let state = cmd!(sh, "systemctl is-active {unit}").quiet().ignore_status().read().unwrap_or_default();
    let report = RestartReport { unit: unit.to_string(), state: state.trim().to_string() };
    ensure!(report.state == "active", "{unit} is {} after the restart: see `fleet logs … --unit {unit}`", report.state);
    Ok(report)
}

impl HostLogsArgs {
    /// `host logs`: the journal as it is, not a report.
    pub fn run(self) -> Result<()> {
        let j = self.journal;
        println!("{}", logs(&j.unit, &j.since, j.lines)?);
        Ok(())
    }
}

impl HostRestartArgs {
    /// `host restart`.
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        ctx.out.emit(&restart(&self.unit)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_fleets_units_and_plain_spans_pass() {
        for good in
            ["clawdinator", "clawdinator-bootstrap", "clawdinator-github-app-token.timer", "clawdinator.service"]
        {
            check_unit(good).unwrap();
        }
        for bad in [
            "sshd",
            "clawdinatorx",
            "clawdinator-",
            "clawdinator--x",
            "clawdinator-X",
            "clawdinator;reboot",
            "../clawdinator",
        ] {
            assert!(check_unit(bad).is_err(), "{bad}");
        }
        for good in ["30s", "15min", "2h", "7d"] {
            check_since(good).unwrap();
        }
        for bad in ["", "h", "2", "2w", "12345h", "-2h", "2h;id"] {
            assert!(check_since(bad).is_err(), "{bad}");
        }
    }
}
