//! `host exec`: start the gateway with its tokens in its environment.
//!
//! The gateway reads its Discord token and API keys from variables; the
//! values come from the 0400 files in /run/agenix and go straight into the
//! program this process becomes, never through a shell, a command line or
//! another file. An error names the variable and the file, never the value.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use zeroize::Zeroizing;

use super::flags::HostExecArgs;

/// One variable whose value is a file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretEnv {
    pub name: String,
    pub file: PathBuf,
}

impl std::str::FromStr for SecretEnv {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<SecretEnv> {
        let Some((name, file)) = s.split_once('=') else { bail!("--secret-env {s}: expected NAME=FILE") };
        let mut chars = name.chars();
        ensure!(
            chars.next().is_some_and(|c| c.is_ascii_uppercase() || c == '_')
                && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
            "--secret-env {s}: {name} is not a variable name (A-Z, 0-9, _)"
        );
        ensure!(!file.is_empty(), "--secret-env {s}: no file after =");
        Ok(SecretEnv { name: name.to_string(), file: file.into() })
    }
}

/// The variables' values, read from their files.
pub fn load(vars: &[SecretEnv]) -> Result<Vec<(String, Zeroizing<String>)>> {
    vars.iter()
        .map(|var| {
            let bytes = Zeroizing::new(
                std::fs::read(&var.file)
                    .with_context(|| format!("{}: cannot read {}", var.name, var.file.display()))?,
            );
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| anyhow::anyhow!("{}: {} is not UTF-8 text", var.name, var.file.display()))?;
            let value = Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_string());
            ensure!(
                !value.is_empty(),
                "{}: {} is empty (did clawdinator-secrets.service run?)",
                var.name,
                var.file.display()
            );
            ensure!(!value.contains('\0'), "{}: {} holds a NUL byte; a variable cannot", var.name, var.file.display());
            Ok((var.name.clone(), value))
        })
        .collect()
}

/// Become `command` with the secrets in its environment; returns only on failure.
pub fn exec(vars: &[SecretEnv], command: &[String]) -> Result<()> {
    let values = load(vars)?;
    let (program, args) = command.split_first().context("no program to run")?;
    let mut child = std::process::Command::new(program);
    child.args(args);
    for (name, value) in &values {
        child.env(name, value.as_str());
    }
    let err = child.exec();
    Err(err).with_context(|| format!("cannot run {program}"))
}

impl HostExecArgs {
    /// `host exec`: returns only on failure.
    pub fn run(self) -> Result<()> {
        let vars = self.secret_env.iter().map(|s| s.parse()).collect::<Result<Vec<SecretEnv>>>()?;
        exec(&vars, &self.command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_files_are_checked() {
        let ok: SecretEnv = "DISCORD_BOT_TOKEN=/run/agenix/clawdinator-discord-token-1".parse().unwrap();
        assert_eq!(ok.name, "DISCORD_BOT_TOKEN");
        for bad in ["DISCORD", "lower=/x", "1X=/x", "X-Y=/x", "X="] {
            assert!(bad.parse::<SecretEnv>().is_err(), "{bad}");
        }
    }

    #[test]
    fn an_empty_secret_is_refused_and_a_value_is_never_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let err = load(&[SecretEnv { name: "A".into(), file: empty }]).unwrap_err().to_string();
        assert!(err.contains("A:") && err.contains("is empty"), "{err}");
        let nul = dir.path().join("nul");
        std::fs::write(&nul, "CANARY-secret\0tail").unwrap();
        let err = load(&[SecretEnv { name: "B".into(), file: nul }]).unwrap_err().to_string();
        assert!(err.contains("NUL") && !err.contains("CANARY"), "{err}");
        let ok = dir.path().join("ok");
        std::fs::write(&ok, "value\r\n").unwrap();
        let values = load(&[SecretEnv { name: "C".into(), file: ok }]).unwrap();
        assert_eq!(values[0].1.as_str(), "value");
    }
}
