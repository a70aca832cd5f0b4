//! `memory …`: the shared memory files on a host.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::flags::FileOwner;

#[derive(Debug, Subcommand)]
pub enum MemoryCmd {
    /// Print a memory file (under a shared lock; empty when it does not exist).
    Read(MemoryFileArgs),
    /// Replace a memory file with standard input.
    Write(MemoryFileArgs),
    /// Add standard input at the end of a memory file (daily notes).
    Append(MemoryFileArgs),
    /// Replace one exact occurrence of a text in a memory file.
    Edit(MemoryEditArgs),
    /// Prepare the shared memory root: its directories, and each template it lacks.
    Init(MemoryInitArgs),
}

#[derive(Debug, Args)]
pub struct MemoryInitArgs {
    /// The shared memory directory (the EFS mount).
    #[arg(long, env = "CLAWDINATOR_MEMORY_DIR", default_value = "/memory")]
    pub root: PathBuf,
    /// The memory templates (this repository's memory/); a file the root already has is never replaced.
    #[arg(long)]
    pub templates: PathBuf,
    #[command(flatten)]
    pub owner: FileOwner,
}

#[derive(Debug, Args)]
pub struct MemoryFileArgs {
    /// The file: relative to --root, or an absolute path under it.
    pub path: PathBuf,
    /// The shared memory directory; nothing outside it is touched.
    #[arg(long, env = "CLAWDINATOR_MEMORY_DIR", default_value = "/memory")]
    pub root: PathBuf,
    /// Seconds to wait for the lock before giving up (0-3600).
    #[arg(long, default_value_t = 5.0, value_parser = lock_wait)]
    pub wait: f64,
}

fn lock_wait(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(secs) if (0.0..=3600.0).contains(&secs) => Ok(secs),
        _ => Err(format!("{s} is not a number of seconds from 0 to 3600")),
    }
}

#[derive(Debug, Args)]
pub struct MemoryEditArgs {
    #[command(flatten)]
    pub file: MemoryFileArgs,
    /// The exact text to replace; it must appear once.
    #[arg(long)]
    pub replace: String,
    /// What to put in its place.
    #[arg(long)]
    pub with: String,
}
