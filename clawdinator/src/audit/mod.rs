//! The audit trail: every command that changes AWS appends records to
//! `.clawdinators/audit.jsonl`, one JSON line each, each carrying the
//! SHA-256 of the line before it: a `started` record before it changes
//! anything (if that cannot be written, the command stops there) and a
//! `finished` one with the result and the resources it made or removed.
//! With `--audit-bucket` each record is also written to S3 under its
//! writer's prefix (`audit/ci/`, `audit/operators/`, `audit/control-api/`:
//! [`writers`]) as `<yyyy>/<mm>/<dd>/<timestamp>-<hash>.json` with
//! `If-None-Match: *`, so no record there is ever overwritten, and a record
//! outside its writer's prefix fails verification. `audit verify` walks the chain
//! and names the first broken link.
//!
//! The bucket holds many chains: every operator's log, every CI runner's
//! (each starts afresh) and every control API container ([`BucketChain`])
//! begins its own at [`GENESIS`]. So the S3 copies are checked as a set of
//! chains ([`verify_copies`]): every record's predecessor is there, and no
//! record has two successors.
//!
//! Modules: [`flags`] (the command line), `trail` (records, chains,
//! copies, and `around`, which `Entry::record` wraps),
//! `audited` (the one way a command is recorded: [`Audited`] on its
//! report, [`Entry::record`] around its work), [`writers`] (who writes
//! where) and `commands` (`audit verify` and `audit log`).

mod audited;
mod commands;
pub mod flags;
mod trail;
pub mod writers;

use anyhow::Result;

use crate::ctx::Ctx;
use flags::AuditCmd;

pub use audited::Audited;
pub use trail::{
    bucket_lines, hash, s3_key, targets, verify_copies, verify_lines, BucketChain, Chains, Entry, DEFAULT_LOG, GENESIS,
    PREFIX,
};
pub use trail::{Record, Trail};

/// Carry out one `audit` command.
pub async fn run(ctx: &Ctx, cmd: AuditCmd) -> Result<()> {
    match cmd {
        AuditCmd::Verify(args) => args.run(ctx).await,
        AuditCmd::Log(args) => args.run(ctx).await,
    }
}
