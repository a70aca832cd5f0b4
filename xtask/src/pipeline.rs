//! `cargo xtask pipeline`: the CI image pipeline in one command. With
//! `--local` it runs end to end on a fresh machine against the project's
//! emulator, with throwaway inputs it generates.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use clawdinator::aws::Aws;
use clawdinator::bootstrap::seeds::{self, PrepareOptions};
use clawdinator::bootstrap::{self, UploadOptions};
use clawdinator::ctx::Ctx;
use clawdinator::image::build::{self, BuildOptions};
use clawdinator::image::publish;
use clawdinator::image::PublishOptions;
use clawdinator::image::{ami, ImageManifest};
use clawdinator::output;
use clawdinator::secrets::{self, Sources};
use testkit::fixtures;

use crate::flags;

#[derive(Debug, Clone, Serialize)]
pub struct StageResult {
    pub stage: &'static str,
    pub summary: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineReport {
    pub local: bool,
    pub stages: Vec<StageResult>,
    pub ami_id: String,
}

/// What the pipeline made, as the audit trail lists it: the AMI.
impl clawdinator::audit::Audited for PipelineReport {
    fn resources(&self) -> Vec<String> {
        vec![self.ami_id.clone()]
    }
}

impl fmt::Display for PipelineReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.ami_id)
    }
}

/// The inputs a pipeline run works from.
struct Inputs {
    sources: Sources,
    seeds_list: PathBuf,
    seeds_dir: PathBuf,
    /// The longest one git operation of the seeds may take.
    git_timeout: std::time::Duration,
    bucket: String,
    /// Build with nix, or publish this prepared image description.
    image: ImagePlan,
}

enum ImagePlan {
    Build(BuildOptions),
    Prepared(PathBuf),
}

/// Why a real NixOS image cannot be built here, if it cannot.
fn why_no_nix_build(flake: &Path, kvm: &Path) -> Option<String> {
    if let Some(why) = build::build_blocker(kvm) {
        return Some(why.split(':').next().unwrap_or_default().to_string());
    }
    (!flake.join("flake.nix").exists()).then(|| format!("{} has no flake.nix", flake.display()))
}

/// Throwaway inputs: the shipped registry, a new identity and sample
/// secrets, two local git repositories as seeds, and an image (built by nix
/// when it can be, a small sample disk otherwise).
fn local_inputs(ctx: &Ctx, dir: &Path, build: BuildOptions, git_timeout: std::time::Duration) -> Result<Inputs> {
    let registry = testkit::repo_root().join(clawdinator::registry::DEFAULT_PATH);
    let fleet = fixtures::sample_fleet_for(dir, &registry, |name| format!("local sample value of {name}"))?;
    let mut list = String::from("# throwaway seeds for `pipeline --local`\n");
    for (name, file) in [("clawdinators-sample", "README.md"), ("openclaw-sample", "src/index.ts")] {
        let url = fixtures::git_repo(&dir.join("upstream").join(name), &[(file, &format!("{name}\n"))], "main")?;
        list.push_str(&format!("{name}\t{url}\tmain\n"));
    }
    let seeds_list = dir.join("repos.tsv");
    std::fs::write(&seeds_list, list)?;
    let image = match why_no_nix_build(&build.flake, &build.kvm_device) {
        None => ImagePlan::Build(BuildOptions { out: dir.join("dist"), ..build }),
        Some(why) => {
            ctx.out.note(format!(
                "--local: {why}, so a small sample raw disk image (64 MiB, sparse) is published instead of a NixOS image"
            ));
            let image = dir.join("sample-disk.raw");
            const MIB: u64 = 1 << 20;
            fixtures::sample_raw_image(
                &image,
                64 * MIB,
                &[(MIB, 2 * MIB), (17 * MIB, 512 * 1024), (40 * MIB, MIB)],
                42,
            )?;
            ImagePlan::Prepared(fixtures::write_image_json(&dir.join("dist"), &image, "local-sample")?)
        }
    };
    Ok(Inputs {
        sources: fleet.sources,
        seeds_list,
        seeds_dir: dir.join("repo-seeds"),
        git_timeout,
        bucket: clawdinator::ctx::LOCAL_BUCKET.into(),
        image,
    })
}

/// Where the pipeline is, stage by stage: one line each on stderr as it goes.
struct Progress<'a> {
    ctx: &'a Ctx,
    stages: Vec<StageResult>,
}

impl Progress<'_> {
    fn done(&mut self, stage: &'static str, summary: String) {
        self.ctx.out.note(format!("[{}/6] {stage}: {summary}", self.stages.len() + 1));
        self.stages.push(StageResult { stage, summary });
    }
}

/// The error of a stage, naming it.
fn failed(stage: &'static str) -> impl Fn(anyhow::Error) -> anyhow::Error {
    move |e| e.context(format!("pipeline stopped: stage `{stage}` failed"))
}

fn inputs(ctx: &Ctx, args: &flags::Pipeline, scratch: &Path) -> Result<Inputs> {
    if ctx.is_local() {
        return local_inputs(ctx, scratch, args.build.options(), args.git.git_timeout);
    }
    let bucket = args
        .bucket
        .clone()
        .ok_or_else(|| clawdinator::exit::UsageError("no bucket: pass --bucket or set S3_BUCKET".into()))?;
    Ok(Inputs {
        sources: Sources::from_flags(&args.secrets),
        seeds_list: args.list.clone(),
        seeds_dir: args.repo_seeds.clone(),
        git_timeout: args.git.git_timeout,
        bucket,
        image: ImagePlan::Build(args.build.options()),
    })
}

/// Stages 1-3: secrets check, bootstrap seeds prepare, bootstrap upload.
async fn bundles(aws: &Aws, inputs: &Inputs, dry_run: bool, progress: &mut Progress<'_>) -> Result<()> {
    let out = &progress.ctx.out;
    let (report, _) = secrets::check(&inputs.sources, true);
    if !report.ok {
        let errors: Vec<String> = report.findings.iter().map(|f| f.to_string()).collect();
        return Err(failed("secrets check")(anyhow::anyhow!("{}", errors.join("; "))));
    }
    progress.done("secrets check", format!("{} secret file(s) present and decrypting", report.decrypted));

    let prepare = PrepareOptions {
        list: inputs.seeds_list.clone(),
        dest: inputs.seeds_dir.clone(),
        jobs: 4,
        allow_partial: false,
        github_token: std::env::var("GITHUB_TOKEN").ok(),
        git_timeout: inputs.git_timeout,
    };
    let prepared = seeds::prepare(&prepare, out).map_err(failed("bootstrap seeds prepare"))?;
    if !prepared.failed.is_empty() {
        let names: Vec<_> = prepared.failed.iter().map(|f| format!("{}: {}", f.name, f.error)).collect();
        return Err(failed("bootstrap seeds prepare")(anyhow::anyhow!("{}", names.join("; "))));
    }
    progress.done("bootstrap seeds prepare", format!("{} repo(s) at their branch tips", prepared.repos.len()));

    let upload = UploadOptions {
        sources: inputs.sources.clone(),
        seeds_dir: inputs.seeds_dir.clone(),
        bucket: inputs.bucket.clone(),
        instances: vec![],
        dry_run,
        concurrency: 32,
        source_revision: clawdinator::project::git_revision(),
    };
    let uploaded = bootstrap::upload(aws, &upload, out).await.map_err(failed("bootstrap upload"))?;
    let lead = if dry_run { "dry run, would be: " } else { "" };
    progress.done(
        "bootstrap upload",
        format!(
            "{lead}{} uploaded, {} copied, {} unchanged, {} sent to s3://{}",
            uploaded.uploaded,
            uploaded.copied,
            uploaded.unchanged,
            indicatif::HumanBytes(uploaded.bytes_sent),
            inputs.bucket
        ),
    );
    Ok(())
}

/// Stage 4: the image this run publishes, and where it is described.
async fn image(inputs: &Inputs, progress: &mut Progress<'_>) -> Result<(ImageManifest, PathBuf)> {
    match &inputs.image {
        ImagePlan::Build(opts) => {
            let opts = opts.clone();
            let json = build::image_json(&opts.out);
            let built =
                tokio::task::spawn_blocking(move || build::build(&opts)).await?.map_err(failed("image build"))?;
            progress.done("image build", built.to_string().trim().to_string());
            Ok((built, json))
        }
        ImagePlan::Prepared(json) => {
            let m = ImageManifest::load(json).map_err(failed("image build"))?;
            progress.done("image build", format!("skipped, sample {}", m.to_string().trim()));
            Ok((m, json.clone()))
        }
    }
}

impl flags::Pipeline {
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        let args = self;
        let scratch = clawdinator::atomic::private_workdir()?;
        let inputs = inputs(ctx, &args, scratch.path())?;
        let aws = ctx.aws().await?;
        let entry =
            clawdinator::audit::Entry { command: "pipeline", targets: vec!["all".into()], dry_run: args.dry_run };
        let report = entry.record(ctx, &aws, stages(ctx, &aws, &inputs, args.dry_run)).await?;
        drop(scratch);
        ctx.out.emit(&report)
    }
}

async fn stages(ctx: &Ctx, aws: &Aws, inputs: &Inputs, dry_run: bool) -> Result<PipelineReport> {
    let mut progress = Progress { ctx, stages: Vec::new() };
    bundles(aws, inputs, dry_run, &mut progress).await?;
    let (built, json) = image(inputs, &mut progress).await?;

    // Stage 5: publish exactly what stage 4 handed over.
    let mut publish_opts = PublishOptions::new(json);
    publish_opts.bucket = Some(inputs.bucket.clone());
    publish_opts.dry_run = dry_run;
    let published = publish::publish_image(aws, &built, &publish_opts, &ctx.out, &ctx.cancel)
        .await
        .map_err(failed("image publish"))?;
    let ami_id = published.ami_id.clone();
    if dry_run {
        progress.done("image publish", published.to_string().trim().replace('\n', "; "));
        let latest = if ami_id.is_empty() { format!("would be the new {}", published.name) } else { ami_id.clone() };
        progress.done("image ami latest", latest);
        return Ok(PipelineReport { local: ctx.is_local(), stages: progress.stages, ami_id });
    }
    let summary = if published.already_published {
        format!("{ami_id} already published; nothing sent")
    } else {
        let snapshot = published.snapshot_id.as_deref().unwrap_or("-");
        format!("{ami_id} from {snapshot} ({} sent)", indicatif::HumanBytes(published.bytes_sent))
    };
    progress.done("image publish", summary);

    // Stage 6: what `image ami latest` now selects; the output is the AMI this run published.
    let latest = ami::latest(&aws.ec2(), None).await.map_err(failed("image ami latest"))?;
    let latest_id = latest.image_id().unwrap_or_default();
    let note = if latest_id == ami_id { String::new() } else { format!("; a newer fleet AMI {latest_id} exists") };
    progress.done("image ami latest", format!("{ami_id} ({}){note}", published.name));
    output::github_output("ami_id", &ami_id)?;
    Ok(PipelineReport { local: ctx.is_local(), stages: progress.stages, ami_id })
}
