//! `host first-switch` and `host self-update`: this host's system from the
//! newest release manifest in the fleet bucket, switched to as `host
//! switch` does (fetched from the cache, health-gated, rolled back on
//! failure). A fresh instance, booted from the generic image, becomes
//! itself once; once a deployment is recorded (by either, or by `fleet
//! switch`), a first switch never runs again, so a reboot never takes a
//! host back to an older release.

use anyhow::{Context, Result};

use super::flags::SwitchArgs;
use super::record;
use super::switch::{self, Outcome, SwitchOptions, SwitchReport};
use crate::aws::Aws;
use crate::ctx::Ctx;
use crate::release::manifest;
use crate::settings::given_or_written;

/// This host's system in the newest release, into `opts` (system, revision).
async fn newest_system(aws: &Aws, bucket: &str, opts: &mut SwitchOptions) -> Result<()> {
    let release = manifest::newest(&aws.s3(), bucket).await?;
    opts.system = release.system_of(&opts.instance)?.to_string();
    opts.revision = Some(release.revision);
    Ok(())
}

/// Switch once; see the module comment.
pub async fn first_switch(aws: &Aws, bucket: &str, mut opts: SwitchOptions) -> Result<SwitchReport> {
    crate::atomic::check_owned(&opts.record)?;
    if let Some(d) = record::read(&opts.record)? {
        let outcome = Outcome::AlreadyDeployed;
        return Ok(SwitchReport {
            instance: d.instance,
            system: d.system,
            revision: d.revision,
            outcome,
            previous: String::new(),
        });
    }
    newest_system(aws, bucket, &mut opts).await?;
    // Host commands run off the async workers (cli.rs): blocking here is fine.
    switch::switch(&opts).context("the first switch failed; the host stays on the image's system")
}

/// Switch to the newest release's system unless the host runs it.
pub async fn self_update(aws: &Aws, bucket: &str, mut opts: SwitchOptions) -> Result<SwitchReport> {
    newest_system(aws, bucket, &mut opts).await?;
    switch::switch(&opts).context("the update failed; the host stays as it was")
}

impl SwitchArgs {
    /// `host first-switch`.
    pub fn first_switch(self, ctx: &Ctx) -> Result<()> {
        let (bucket, opts) = self.options(ctx, "first-boot")?;
        let work = async { first_switch(&ctx.aws().await?, &bucket, opts).await };
        ctx.out.emit(&tokio::runtime::Handle::current().block_on(work)?)
    }

    /// `host self-update`.
    pub fn self_update(self, ctx: &Ctx) -> Result<()> {
        let (bucket, opts) = self.options(ctx, "self-update")?;
        let work = async { self_update(&ctx.aws().await?, &bucket, opts).await };
        ctx.out.emit(&tokio::runtime::Handle::current().block_on(work)?)
    }

    /// The fleet bucket, and a switch whose system the newest release names.
    fn options(self, ctx: &Ctx, source: &'static str) -> Result<(String, SwitchOptions)> {
        let bucket = given_or_written(self.bucket, &self.bucket_file, "fleet bucket", "pass --bucket")?;
        Ok((bucket, switch::options(ctx, self.deployment, String::new(), source)?))
    }
}
