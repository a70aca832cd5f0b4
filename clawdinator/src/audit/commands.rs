//! `audit verify` and `audit log`: the trail read back.

use anyhow::{bail, ensure, Context, Result};

use super::flags::{AuditLogArgs, AuditVerifyArgs};
use super::trail::{bucket_lines, read_lines, verify_copies, verify_lines, LogReport, Record, Trail, VerifyReport};
use crate::ctx::Ctx;

impl AuditVerifyArgs {
    /// `audit verify`: the local chain, the bucket's chains, and every local
    /// record's identical copy there.
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        let trail = Trail::of(ctx);
        let mut report = VerifyReport { local: None, bucket: None, chains: None };
        let local = if trail.log.exists() { Some(read_lines(&trail.log)?) } else { None };
        if let Some(lines) = &local {
            report.local = Some(verify_lines(&trail.log.display().to_string(), lines)?);
        }
        if let Some(bucket) = self.bucket.or(trail.bucket.clone()) {
            let copies = bucket_lines(&ctx.aws().await?, &bucket).await?;
            let found = verify_copies(&format!("s3://{bucket}/audit/"), &copies)?;
            (report.bucket, report.chains) = (Some(found.records), Some(found.chains));
            if let Some(n) = local.iter().flatten().position(|l| !copies.contains(l)) {
                bail!(
                    "{}: record {} has no identical copy in s3://{bucket}/audit/ (edited after it was written)",
                    trail.log.display(),
                    n + 1
                );
            }
        }
        ensure!(
            report.local.is_some() || report.bucket.is_some(),
            "no audit log at {} and no --bucket to check",
            trail.log.display()
        );
        ctx.out.emit(&report)
    }
}

impl AuditLogArgs {
    /// `audit log`: the records by time, the local log's or the bucket's.
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        let lines = match self.bucket {
            Some(bucket) => bucket_lines(&ctx.aws().await?, &bucket).await?,
            None => read_lines(&Trail::of(ctx).log)?,
        };
        let mut records: Vec<Record> = lines
            .iter()
            .map(|l| serde_json::from_str(l))
            .collect::<Result<_, _>>()
            .context("the audit log holds a line that is not a record (audit verify says where)")?;
        records.sort_by(|a, b| a.time.cmp(&b.time));
        let shown: Vec<Record> =
            records.into_iter().filter(|r| self.since.as_deref().is_none_or(|s| r.time.as_str() >= s)).collect();
        ctx.out.emit(&LogReport(shown))
    }
}
