//! What every command gets besides its own flags: output, and AWS (the
//! emulator under `--local`).

use anyhow::Result;

use crate::aws::{self, emulator};
use crate::cancel::Cancel;
use crate::{flags, output};

/// The bucket `--local` creates in the throwaway emulator.
pub const LOCAL_BUCKET: &str = "clawdinator-local";

/// Everything a command needs besides its own flags.
pub struct Ctx {
    pub global: flags::Global,
    pub out: output::Output,
    /// Ctrl-C or SIGTERM: one cancellation for the whole command.
    pub cancel: Cancel,
    local: Option<emulator::Emulator>,
    /// Under `--local`: a throwaway directory (the audit log goes there).
    scratch: Option<tempfile::TempDir>,
}

impl Ctx {
    /// With `--local`, starts the emulator first and says so before anything else.
    pub async fn new(global: flags::Global) -> Result<Ctx> {
        let out = output::Output::new(global.json);
        let mut ctx = Ctx { global, out, cancel: Cancel::on_signals(), local: None, scratch: None };
        if ctx.global.local {
            let emulator = tokio::task::spawn_blocking(emulator::Emulator::start).await??;
            ctx.out.note(format!(
                "--local: running against a throwaway in-memory AWS emulator (moto {}) at {}, dummy credentials, bucket {LOCAL_BUCKET}; nothing reaches real AWS",
                emulator::MOTO_VERSION,
                emulator.endpoint()
            ));
            ctx.local = Some(emulator);
            ctx.scratch = Some(tempfile::tempdir()?);
            let aws = ctx.aws().await?;
            aws.s3()
                .create_bucket()
                .bucket(LOCAL_BUCKET)
                .send()
                .await
                .map_err(|e| aws::error("S3 CreateBucket", LOCAL_BUCKET, e))?;
        }
        Ok(ctx)
    }

    /// AWS as the flags say: the emulator under `--local`, otherwise the
    /// standard chain with `--region`/`--profile`/`AWS_ENDPOINT_URL`.
    pub async fn aws(&self) -> Result<aws::Aws> {
        let settings = match &self.local {
            Some(emulator) => {
                aws::Settings { timeouts: aws::Timeouts::from_env()?, ..aws::Settings::local(&emulator.endpoint()) }
            }
            None => aws::Settings {
                region: self.region(),
                profile: self.global.profile.clone(),
                timeouts: aws::Timeouts::from_env()?,
                ..aws::Settings::default()
            },
        };
        aws::Aws::load(&settings).await
    }

    /// The region the flags say: `--region`/`AWS_REGION`, else the content of
    /// `--region-file`; None leaves it to the SDK's chain (profile, then IMDS).
    pub fn region(&self) -> Option<String> {
        self.global.region.clone().or_else(|| self.global.region_file.as_deref().and_then(crate::project::host_setting))
    }

    /// The bucket to use when none was given: the emulator's under `--local`.
    pub fn default_bucket(&self) -> Option<&'static str> {
        self.local.as_ref().map(|_| LOCAL_BUCKET)
    }

    /// The throwaway directory of a `--local` run.
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        self.scratch.as_ref().map(|d| d.path())
    }

    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }
}
