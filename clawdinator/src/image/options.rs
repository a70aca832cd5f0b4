//! What `image publish` is asked to do: shared by the EBS direct path
//! (`publish`) and the S3 + VM Import path (`import`), and the command that
//! asks it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use super::flags::{PublishArgs, Via};
use super::publish::{self, PublishReport};
use crate::audit::{Audited, Entry};
use crate::ctx::Ctx;
use crate::output;

/// Every choice of one publish, with [`PublishOptions::new`]'s defaults.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    pub image_json: PathBuf,
    pub via: Via,
    pub bucket: Option<String>,
    pub copy_to_regions: Vec<String>,
    pub kms_key: Option<String>,
    pub workers: usize,
    pub deprecate_after_days: Option<u64>,
    /// Upper bound of the VM Import wait.
    pub import_timeout: Duration,
    pub import_poll: Duration,
    /// Between two polls of a snapshot or AMI state.
    pub poll: Duration,
    /// Upper bound of each snapshot and AMI wait.
    pub wait_limit: Duration,
    pub keep_object: bool,
    /// Say what would be uploaded, registered and copied; write nothing.
    pub dry_run: bool,
    /// Upload (or reuse) the snapshot and stop: no wait, no AMI, no copies
    /// (what `coldsnap upload` does; a later publish registers it).
    pub snapshot_only: bool,
}

impl PublishOptions {
    pub fn new(image_json: PathBuf) -> Self {
        PublishOptions {
            image_json,
            via: Via::EbsDirect,
            bucket: None,
            copy_to_regions: vec![],
            kms_key: None,
            workers: 64,
            deprecate_after_days: None,
            import_timeout: Duration::from_secs(120 * 60),
            import_poll: Duration::from_secs(15),
            poll: Duration::from_millis(500),
            wait_limit: Duration::from_secs(3600),
            keep_object: false,
            dry_run: false,
            snapshot_only: false,
        }
    }
}

impl PublishArgs {
    /// What these flags ask of a publish; the bucket defaults to the context's.
    fn options(self, ctx: &Ctx) -> PublishOptions {
        PublishOptions {
            image_json: self.image,
            via: self.via,
            bucket: self.bucket.or_else(|| ctx.default_bucket().map(str::to_string)),
            copy_to_regions: self.copy_to_regions,
            kms_key: self.kms_key,
            workers: self.workers.into(),
            deprecate_after_days: self.deprecate_after,
            import_timeout: Duration::from_secs(self.timeout * 60),
            keep_object: self.keep_object,
            dry_run: self.dry_run,
            snapshot_only: self.snapshot_only,
            ..PublishOptions::new(PathBuf::new())
        }
    }

    /// `image publish`, audited: the snapshot, the AMI and its copies.
    pub(super) async fn run(self, ctx: &Ctx) -> Result<()> {
        let opts = self.options(ctx);
        let aws = ctx.aws().await?;
        let entry = Entry {
            command: "image publish",
            targets: vec![opts.image_json.display().to_string()],
            dry_run: opts.dry_run,
        };
        let report = entry.record(ctx, &aws, publish::publish(&aws, &opts, &ctx.out, &ctx.cancel)).await?;
        if !report.ami_id.is_empty() {
            output::github_output("ami_id", &report.ami_id)?;
        }
        ctx.out.emit(&report)
    }
}

/// What a publish made, as the audit trail lists it. (Here, beside the
/// command, while `publish` is being reworked; it belongs with the report.)
impl Audited for PublishReport {
    fn resources(&self) -> Vec<String> {
        self.snapshot_id
            .iter()
            .chain(std::iter::once(&self.ami_id).filter(|a| !a.is_empty()))
            .chain(self.copies.values())
            .cloned()
            .collect()
    }
}
