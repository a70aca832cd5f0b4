//! Each `bootstrap` command from its flags to its options, then its work
//! (in `upload`, `fetch` and `seeds`).

use anyhow::{bail, Context, Result};

use super::fetch::{fetch, FetchOptions};
use super::flags::{BootstrapFetchArgs, BootstrapUploadArgs, SeedsInstallArgs, SeedsPrepareArgs};
use super::identity::IdentityAction;
use super::seeds;
use super::upload::{upload_rotating, Action, UploadOptions, UploadReport};
use crate::audit::{Audited, Entry};
use crate::ctx::Ctx;
use crate::exit::UsageError;
use crate::secrets::Sources;
use crate::settings::{given_or_written, host_setting};

impl BootstrapUploadArgs {
    /// `bootstrap upload`, recorded in the audit trail.
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        let opts = UploadOptions {
            sources: Sources::from_flags(&self.secrets),
            seeds_dir: self.repo_seeds,
            bucket: ctx.bucket(self.bucket, "no bucket: pass --bucket or set S3_BUCKET")?,
            instances: self.select.names(),
            dry_run: self.dry_run,
            concurrency: self.concurrency.into(),
            source_revision: crate::project::git_revision(),
        };
        let aws = ctx.aws().await?;
        let entry = Entry::named("bootstrap upload", &opts.instances, opts.dry_run);
        let work = async {
            ctx.cancel
                .guard("uploading bundles", upload_rotating(&aws, &opts, self.rotate_identity, &ctx.out))
                .await
                .context("the temporary bundle directory was removed; re-run to finish (objects already sent and identities already created are kept and used: nothing is sent or created twice)")
        };
        ctx.out.emit(&entry.record(ctx, &aws, work).await?)
    }
}

impl Audited for UploadReport {
    /// The identities created or rotated in Secrets Manager, and the objects sent or copied.
    fn resources(&self) -> Vec<String> {
        let identities = self.identities.iter().filter(|i| i.action != IdentityAction::Keep).map(|i| {
            let what = if i.action == IdentityAction::Create { "created" } else { "rotated" };
            format!("secretsmanager:{} ({what})", i.secret)
        });
        let objects = self.objects.iter().filter(|o| o.action != Action::Unchanged);
        identities.chain(objects.map(|o| format!("s3://{}/{}", self.bucket, o.key))).collect()
    }
}

impl BootstrapFetchArgs {
    /// `bootstrap fetch`: a generic image learns who it is at boot: what the
    /// command line does not say, the files user data wrote under
    /// /etc/clawdinator do.
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        let bucket = given_or_written(self.bucket, &self.bucket_file, "bucket", "pass --bucket, set S3_BUCKET,")?;
        // A prefix on the command line is the configuration's word; the
        // file is what user data says when the configuration is silent.
        let (prefix, prefix_file) = match self.prefix {
            Some(prefix) => (prefix, None),
            None => {
                let Some(prefix) = host_setting(&self.prefix_file) else {
                    let file = self.prefix_file.display();
                    bail!(UsageError(format!("no bootstrap prefix: pass --prefix or write it to {file}")));
                };
                (prefix, Some(self.prefix_file))
            }
        };
        let opts = FetchOptions {
            bucket,
            prefix,
            prefix_file,
            secrets_dir: self.secrets_dir,
            seeds_dir: self.repo_seeds_dir,
            age_key_path: self.age_key_path,
            state_dir: self.state_dir,
        };
        ctx.out.emit(&fetch(&ctx.aws().await?, &opts).await?)
    }
}

impl SeedsInstallArgs {
    /// `bootstrap seeds install`.
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let owner = crate::atomic::Owner::of(&self.owner)?;
        ctx.out.emit(&seeds::install(&self.from, &self.dest, &self.only, owner)?)
    }
}

impl SeedsPrepareArgs {
    /// `bootstrap seeds prepare`: a failed repository fails the command unless --allow-partial.
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let opts = seeds::PrepareOptions {
            list: self.list,
            dest: self.dest,
            jobs: self.jobs.into(),
            allow_partial: self.allow_partial,
            github_token: std::env::var("GITHUB_TOKEN").ok(),
            git_timeout: self.git.git_timeout,
        };
        let report = seeds::prepare(&opts, &ctx.out)?;
        ctx.out.emit(&report)?;
        if !report.failed.is_empty() && !opts.allow_partial {
            let names: Vec<_> = report.failed.iter().map(|f| f.name.as_str()).collect();
            bail!(
                "{} repo(s) failed: {} (use --allow-partial to continue without them)",
                names.len(),
                names.join(", ")
            );
        }
        Ok(())
    }
}
