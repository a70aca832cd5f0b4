//! Outside tools run as child processes.

use anyhow::{Context, Result};

/// Run a tool with everything it prints on our stderr (the journal, under
/// systemd), so that stdout holds only this command's report (`--json`).
pub fn run_on_stderr(cmd: xshell::Cmd<'_>) -> Result<()> {
    let shown = cmd.to_string();
    let mut command = std::process::Command::from(cmd);
    command.stdout(std::io::stderr());
    eprintln!("$ {shown}");
    let status = command.status().with_context(|| format!("cannot run {shown}"))?;
    anyhow::ensure!(status.success(), "{shown} failed ({status})");
    Ok(())
}
