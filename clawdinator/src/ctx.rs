//! What every command gets besides its own flags: output, cancellation and
//! AWS (a local endpoint when `cargo xtask --local` hands one over).

use anyhow::Result;

use crate::aws;
use crate::cancel::Cancel;
use crate::exit::UsageError;
use crate::flags::Global;
use crate::output::Output;

/// The bucket a local run creates in its throwaway emulator.
pub const LOCAL_BUCKET: &str = "clawdinator-local";

/// Everything a command needs besides its own flags.
pub struct Ctx {
    pub global: Global,
    pub out: Output,
    /// Ctrl-C or SIGTERM: one cancellation for the whole command.
    pub cancel: Cancel,
    local: Option<Local>,
}

/// A throwaway local AWS the caller started (`cargo xtask --local`).
struct Local {
    endpoint: String,
    /// Keeps the caller's emulator running as long as the context lives.
    _server: Box<dyn Send + Sync>,
    /// A throwaway directory (the audit log goes there).
    scratch: tempfile::TempDir,
}

impl Ctx {
    /// AWS through the standard chain, as the flags say.
    pub async fn new(global: Global) -> Result<Ctx> {
        let out = Output::new(global.json);
        Ok(Ctx { global, out, cancel: Cancel::on_signals(), local: None })
    }

    /// AWS at a local `endpoint` with dummy credentials, kept running by
    /// `server`; creates [`LOCAL_BUCKET`] there.
    pub async fn local(global: Global, endpoint: String, server: Box<dyn Send + Sync>) -> Result<Ctx> {
        let mut ctx = Ctx::new(global).await?;
        ctx.local = Some(Local { endpoint, _server: server, scratch: tempfile::tempdir()? });
        let aws = ctx.aws().await?;
        aws.s3()
            .create_bucket()
            .bucket(LOCAL_BUCKET)
            .send()
            .await
            .map_err(|e| aws::error("S3 CreateBucket", LOCAL_BUCKET, e))?;
        Ok(ctx)
    }

    /// AWS as the flags say: the local endpoint when there is one, otherwise
    /// the standard chain with `--region`/`--profile`/`AWS_ENDPOINT_URL`.
    pub async fn aws(&self) -> Result<aws::Aws> {
        let settings = match &self.local {
            Some(local) => aws::Settings {
                timeouts: aws::Timeouts::from(&self.global.timeouts),
                ..aws::Settings::local(&local.endpoint)
            },
            None => aws::Settings {
                region: self.region(),
                profile: self.global.profile.clone(),
                timeouts: aws::Timeouts::from(&self.global.timeouts),
                ..aws::Settings::default()
            },
        };
        aws::Aws::load(&settings).await
    }

    /// The region the flags say: `--region`/`AWS_REGION`, else the content of
    /// `--region-file`; None leaves it to the SDK's chain (profile, then IMDS).
    pub fn region(&self) -> Option<String> {
        self.global
            .region
            .clone()
            .or_else(|| self.global.region_file.as_deref().and_then(crate::settings::host_setting))
    }

    /// The bucket to use when none was given: the local one in a local run.
    pub fn default_bucket(&self) -> Option<&'static str> {
        self.local.as_ref().map(|_| LOCAL_BUCKET)
    }

    /// The bucket a command works on: the one `given` (its `--bucket`), else
    /// the local one in a local run, else a usage error saying `missing`.
    pub fn bucket(&self, given: Option<String>, missing: &str) -> Result<String> {
        match given.or_else(|| self.default_bucket().map(str::to_string)) {
            Some(bucket) => Ok(bucket),
            None => Err(UsageError(missing.into()).into()),
        }
    }

    /// The throwaway directory of a local run.
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        self.local.as_ref().map(|l| l.scratch.path())
    }

    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }
}
