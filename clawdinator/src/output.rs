//! How commands talk to people and to CI: human text or one JSON document on
//! stdout, notes on stderr, ids in `GITHUB_OUTPUT`, logs through tracing.

use std::fmt::Display;
use std::io::Write;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// A mistake in how the command was called, found after parsing: the CLI
/// exits 2 for it, as clap does for its own.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// `fleet status` found drift: its report was printed; the CLI exits 3.
#[derive(Debug)]
pub struct DriftFound(pub usize);

impl std::fmt::Display for DriftFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} drift finding(s) between the registry and EC2", self.0)
    }
}

impl std::error::Error for DriftFound {}

/// The exit code for an error: 2 for usage errors, 3 for drift, 1 for everything else.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if err.chain().any(|e| e.is::<UsageError>()) {
        2
    } else if err.chain().any(|e| e.is::<DriftFound>()) {
        3
    } else {
        1
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    /// The command's result: exactly one JSON document with `--json`, the
    /// human rendering otherwise.
    pub fn emit<T: Serialize + Display>(&self, report: &T) -> Result<()> {
        let mut stdout = std::io::stdout().lock();
        if self.json {
            serde_json::to_writer_pretty(&mut stdout, report)?;
            writeln!(stdout)?;
        } else {
            write!(stdout, "{report}")?;
        }
        stdout.flush()?;
        Ok(())
    }

    /// A line for a person watching; kept off stdout so `--json` stays parseable.
    pub fn note(&self, line: impl Display) {
        eprintln!("{line}");
    }

    /// A progress bar on stderr; hidden in JSON mode and when stderr is not a
    /// terminal (indicatif's own check), so CI logs stay clean.
    fn bar(&self, len: u64, what: &str, style: ProgressStyle) -> ProgressBar {
        let bar = if self.json { ProgressBar::hidden() } else { ProgressBar::new(len) };
        bar.set_style(style.progress_chars("=> "));
        bar.set_message(what.to_string());
        bar
    }

    /// Bytes done, rate and ETA.
    pub fn progress(&self, len: u64, what: &str) -> ProgressBar {
        self.bar(len, what, style("{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"))
    }

    /// Bytes, as `progress`, and EBS blocks (512 KiB) per second.
    pub fn block_progress(&self, len: u64, what: &str) -> ProgressBar {
        let style = style("{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {blocks_per_sec} eta {eta}")
            .with_key("blocks_per_sec", |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} blocks/s", state.per_sec() / 524_288.0);
            });
        self.bar(len, what, style)
    }

    /// A spinner for a wait whose length is unknown; its message is the state.
    pub fn spinner(&self, what: &str) -> ProgressBar {
        let bar = if self.json { ProgressBar::hidden() } else { ProgressBar::new_spinner() };
        bar.set_style(style("{spinner} {msg} {elapsed}"));
        bar.set_message(what.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        bar
    }

    /// Items done (repositories, objects).
    pub fn counter(&self, len: u64, what: &str) -> ProgressBar {
        self.bar(len, what, style("{msg:>12} [{bar:30}] {pos}/{len} {elapsed}"))
    }
}

fn style(template: &'static str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("static template")
}

/// Append `key=value` to the file named by `GITHUB_OUTPUT`, when CI set one.
pub fn github_output(key: &str, value: &str) -> Result<()> {
    let Some(path) = std::env::var_os("GITHUB_OUTPUT") else { return Ok(()) };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot append to GITHUB_OUTPUT file {}", path.to_string_lossy()))?;
    writeln!(file, "{key}={value}")?;
    Ok(())
}

/// Logs go to stderr. `RUST_LOG` wins; otherwise `-v` raises the level.
pub fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info,aws_config=warn,aws_smithy_runtime=warn",
        2 => "debug,hyper=info,rustls=info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(verbose >= 2)
        .try_init();
}

/// The current time as RFC 3339 UTC (`2026-11-21T22:02:12Z`).
pub fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

/// A time as RFC 3339 UTC, to the second.
pub fn rfc3339(time: std::time::SystemTime) -> String {
    // Smithy's format adds a fraction when there is one: drop it first.
    let seconds = time.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    aws_smithy_types::DateTime::from_secs(seconds as i64)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}

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
