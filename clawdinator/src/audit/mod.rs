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
//! copies, and [`around`], which wraps a command that changes AWS),
//! `audited` (the one way a command is recorded: [`Audited`] on its
//! report, [`Entry::record`] around its work) and [`writers`] (who writes
//! where).

mod audited;
pub mod flags;
mod trail;
pub mod writers;

use anyhow::{bail, ensure, Context, Result};

use crate::ctx::Ctx;
use flags::AuditCmd;
use trail::{read_lines, LogReport, VerifyReport};

pub use audited::Audited;

pub use trail::{
    around, bucket_lines, hash, s3_key, targets, verify_copies, verify_lines, BucketChain, Chains, Entry, DEFAULT_LOG,
    GENESIS, PREFIX,
};
pub use trail::{Record, Trail};

/// Carry out one `audit` command.
pub async fn run(ctx: &Ctx, cmd: AuditCmd) -> Result<()> {
    let trail = Trail::of(ctx);
    match cmd {
        AuditCmd::Verify(args) => {
            let mut report = VerifyReport { local: None, bucket: None, chains: None };
            let local = if trail.log.exists() { Some(read_lines(&trail.log)?) } else { None };
            if let Some(lines) = &local {
                report.local = Some(verify_lines(&trail.log.display().to_string(), lines)?);
            }
            if let Some(bucket) = args.bucket.or(trail.bucket.clone()) {
                let aws = ctx.aws().await?;
                let copies = bucket_lines(&aws, &bucket).await?;
                let found = verify_copies(&format!("s3://{bucket}/audit/"), &copies)?;
                (report.bucket, report.chains) = (Some(found.records), Some(found.chains));
                if let Some(lines) = &local {
                    let missing = lines.iter().position(|l| !copies.contains(l));
                    if let Some(n) = missing {
                        bail!(
                            "{}: record {} has no identical copy in s3://{bucket}/audit/ (edited after it was written)",
                            trail.log.display(),
                            n + 1
                        );
                    }
                }
            }
            ensure!(
                report.local.is_some() || report.bucket.is_some(),
                "no audit log at {} and no --bucket to check",
                trail.log.display()
            );
            ctx.out.emit(&report)
        }
        AuditCmd::Log(args) => {
            let lines = match args.bucket {
                Some(bucket) => bucket_lines(&ctx.aws().await?, &bucket).await?,
                None => read_lines(&trail.log)?,
            };
            let mut records: Vec<Record> = lines
                .iter()
                .map(|l| serde_json::from_str(l))
                .collect::<Result<_, _>>()
                .context("the audit log holds a line that is not a record (audit verify says where)")?;
            records.sort_by(|a, b| a.time.cmp(&b.time));
            let shown: Vec<Record> =
                records.into_iter().filter(|r| args.since.as_deref().is_none_or(|s| r.time.as_str() >= s)).collect();
            ctx.out.emit(&LogReport(shown))
        }
    }
}
