//! How commands talk to people and to CI: human text or one JSON document on
//! stdout, notes and progress on stderr, ids in `GITHUB_OUTPUT`, logs
//! through tracing.

use std::fmt::Display;
use std::io::Write;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

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
