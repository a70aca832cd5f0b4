//! `audit …`: the audit trail of AWS changes.

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Check the chain of records (local, and S3 with --bucket) and name the first broken link.
    Verify(AuditVerifyArgs),
    /// Print the records.
    Log(AuditLogArgs),
}

#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    /// Also check the S3 copies in this bucket (default --audit-bucket).
    #[arg(long)]
    pub bucket: Option<String>,
}

#[derive(Debug, Args)]
pub struct AuditLogArgs {
    /// Only records at or after this time (RFC 3339, or a date like 2026-11-21).
    #[arg(long)]
    pub since: Option<String>,
    /// Print the S3 copies in this bucket instead of the local log: every
    /// writer's records, the control API's and CI runners' among them.
    #[arg(long)]
    pub bucket: Option<String>,
}
