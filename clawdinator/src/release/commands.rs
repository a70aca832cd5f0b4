//! `release build`: its flags resolved (the revision, the bucket, the
//! cache) into one build, recorded in the audit trail.

use anyhow::{bail, Result};

use super::flags::ReleaseBuildArgs;
use super::{build, manifest};
use crate::ctx::Ctx;
use crate::exit::UsageError;

impl ReleaseBuildArgs {
    /// `release build`.
    pub(super) async fn run(self, ctx: &Ctx) -> Result<()> {
        let registry = crate::registry::Registry::load(&crate::project::resolve(&self.instances.path))?;
        let names = registry.select(&self.names)?.iter().map(|i| i.host.clone()).collect();
        let flake = crate::project::resolve(&self.flake);
        let revision = match self.rev.filter(|r| !r.trim().is_empty()) {
            Some(rev) => rev,
            None => clean_head(&flake)?,
        };
        manifest::check_revision(&revision).map_err(|e| UsageError(format!("--rev: {e}")))?;
        let Some(bucket) = self.bucket.or_else(|| ctx.default_bucket().map(str::to_string)) else {
            bail!(UsageError("no fleet bucket: pass --bucket (S3_BUCKET)".into()));
        };
        let cache = match (self.cache, self.cache_bucket) {
            (Some(url), _) => url,
            (None, Some(b)) => {
                let Some(region) = ctx.region() else {
                    bail!(UsageError("no region for the cache: pass --region (AWS_REGION)".into()));
                };
                format!("s3://{b}?region={region}")
            }
            (None, None) => bail!(UsageError(
                "no binary cache: pass --cache-bucket (CLAWDINATOR_CACHE_BUCKET) or --cache URL".into()
            )),
        };
        let opts = build::BuildOptions {
            names,
            revision,
            flake,
            bucket,
            cache,
            key_file: self.cache_key_file,
            run: self.run,
            dry_run: self.dry_run,
        };
        let aws = ctx.aws().await?;
        let entry = crate::audit::Entry {
            command: "release build",
            targets: vec![opts.revision.clone()],
            dry_run: opts.dry_run,
        };
        let report = entry.record(ctx, &aws, build::build(&aws, &opts)).await?;
        ctx.out.emit(&report)
    }
}

/// HEAD of the checkout, which must be clean: a release names one commit.
fn clean_head(flake: &std::path::Path) -> Result<String> {
    let sh = xshell::Shell::new()?;
    let head = xshell::cmd!(sh, "git -C {flake} rev-parse HEAD").quiet().read()?;
    let dirty = xshell::cmd!(sh, "git -C {flake} status --porcelain --untracked-files=no").quiet().read()?;
    if !dirty.trim().is_empty() {
        bail!(UsageError(format!(
            "{} has uncommitted changes: commit them, or pass --rev to build a commit",
            flake.display()
        )));
    }
    Ok(head)
}
