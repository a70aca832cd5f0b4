//! What `image publish` is asked to do: shared by the EBS direct path
//! (`publish`) and the S3 + VM Import path (`import`).

use std::path::PathBuf;
use std::time::Duration;

use super::flags::Via;

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
