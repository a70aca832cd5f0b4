//! Shared memory on a host (`/memory`, EFS shared by every instance):
//! `memory read|write|append|edit`, the agents' replacements for the old
//! `memory-*.sh` helpers. Several agents on several hosts write at once:
//!
//! - every change happens under an exclusive lock on a sidecar file
//!   (`.<name>.lock` beside the file: locking the file itself would be lost
//!   when it is replaced), readers take a shared lock; `flock` on NFSv4
//!   (EFS) is carried to the server as a byte-range lock, so it holds
//!   across hosts;
//! - a file is replaced whole (temporary file, then rename): a reader sees
//!   the old content or the new, never a part;
//! - waiting for a lock is bounded (`--wait`, 5 s like the old helpers);
//! - an edit is an exact text replacement, not a shell command;
//! - only files under the memory root are touched.
//!
//! Modules: [`flags`] (the command line) and `files` (resolve, lock, read,
//! replace, append, edit, and `memory init`).

mod files;
pub mod flags;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::ctx::Ctx;
use flags::{MemoryCmd, MemoryFileArgs};

pub use files::{append, edit, init, lock, read, resolve, write, InitReport, Lock, DIRS};

fn stdin() -> Result<Vec<u8>> {
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input).context("cannot read standard input")?;
    Ok(input)
}

/// The file and the lock wait a command names.
fn target(args: &MemoryFileArgs) -> Result<(PathBuf, Duration)> {
    Ok((resolve(&args.root, &args.path)?, Duration::from_secs_f64(args.wait)))
}

/// Carry out one `memory` command.
pub fn run(ctx: &Ctx, cmd: MemoryCmd) -> Result<()> {
    match cmd {
        MemoryCmd::Init(args) => {
            let owner = crate::atomic::Owner::of(&args.owner)?;
            ctx.out.emit(&init(&args.root, &args.templates, owner)?)
        }
        MemoryCmd::Read(args) => {
            let (file, wait) = target(&args)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&read(&file, wait)?)?;
            Ok(out.flush()?)
        }
        MemoryCmd::Write(args) => {
            let (file, wait) = target(&args)?;
            write(&file, &stdin()?, wait)
        }
        MemoryCmd::Append(args) => {
            let (file, wait) = target(&args)?;
            append(&file, &stdin()?, wait)
        }
        MemoryCmd::Edit(args) => {
            let (file, wait) = target(&args.file)?;
            edit(&file, &args.replace, &args.with, wait)
        }
    }
}
