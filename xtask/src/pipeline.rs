//! `cargo xtask pipeline`: the CI image pipeline in one command. With
//! `--local` it runs end to end on a fresh machine against the project's
//! emulator, with throwaway inputs it generates.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::bootstrap::seeds::{self, PrepareOptions};
use crate::bootstrap::{self, UploadOptions};
use crate::dev::fixtures;
use crate::image::ami;
use crate::image::build::{self, BuildOptions};
use crate::image::publish::{self, PublishOptions};
use crate::secrets::{self, Sources};
use crate::{flags, output, project, Ctx};

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
    bucket: String,
    /// Build with nix, or publish this prepared image description.
    image: ImagePlan,
}

enum ImagePlan {
    Build(BuildOptions),
    Prepared(PathBuf),
}

/// Why a real NixOS image cannot be built here, if it cannot.
fn why_no_nix_build(kvm: &Path) -> Option<String> {
    if let Some(why) = build::build_blocker(kvm) {
        return Some(why.split(':').next().unwrap_or_default().to_string());
    }
    (!project::root().join("flake.nix").exists()).then(|| "this checkout has no flake.nix".to_string())
}

/// Throwaway inputs: the shipped registry, a new identity and sample
/// secrets, two local git repositories as seeds, and an image.
fn local_inputs(ctx: &Ctx, dir: &Path, host: &str) -> Result<Inputs> {
    let registry = project::root().join(crate::fleet::DEFAULT_PATH);
    let fleet = fixtures::sample_fleet_for(dir, &registry, |name| format!("local sample value of {name}"))?;
    let mut list = String::from("# throwaway seeds for `pipeline --local`\n");
    for (name, file) in [("clawdinators-sample", "README.md"), ("openclaw-sample", "src/index.ts")] {
        let url = fixtures::git_repo(&dir.join("upstream").join(name), &[(file, &format!("{name}\n"))], "main")?;
        list.push_str(&format!("{name}\t{url}\tmain\n"));
    }
    let seeds_list = dir.join("repos.tsv");
    std::fs::write(&seeds_list, list)?;
    let kvm = PathBuf::from("/dev/kvm");
    let image = match why_no_nix_build(&kvm) {
        None => ImagePlan::Build(BuildOptions { host: host.into(), out: dir.join("dist"), kvm_device: kvm }),
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
        bucket: crate::LOCAL_BUCKET.into(),
        image,
    })
}

pub async fn run(ctx: &Ctx, args: flags::PipelineArgs) -> Result<()> {
    let scratch = bootstrap::private_workdir()?;
    // --local always works from the shipped registry, wherever it runs from.
    let registry = if ctx.is_local() {
        project::root().join(crate::fleet::DEFAULT_PATH)
    } else {
        args.secrets.instances.path.clone()
    };
    let host = match &args.host {
        Some(h) => h.clone(),
        None => {
            crate::fleet::Registry::load(&registry)?.instances.into_keys().next().context("the registry is empty")?
        }
    };
    let inputs = if ctx.is_local() {
        local_inputs(ctx, scratch.path(), &host)?
    } else {
        Inputs {
            sources: Sources::from_flags(&args.secrets),
            seeds_list: args.list.clone(),
            seeds_dir: args.repo_seeds.clone(),
            bucket: args.bucket.clone().context("no bucket: pass --bucket or set S3_BUCKET")?,
            image: ImagePlan::Build(BuildOptions { host, out: args.out.clone(), kvm_device: "/dev/kvm".into() }),
        }
    };
    let aws = ctx.aws().await?;
    let mut stages = Vec::new();
    let mut done = |stage: &'static str, summary: String| {
        ctx.out.note(format!("[{:>1}/6] {stage}: {summary}", stages.len() + 1));
        stages.push(StageResult { stage, summary });
    };
    let failed =
        |stage: &'static str| move |e: anyhow::Error| e.context(format!("pipeline stopped: stage `{stage}` failed"));

    let (report, _) = secrets::check(&inputs.sources, true);
    if !report.ok {
        let errors: Vec<String> = report.findings.iter().map(|f| f.to_string()).collect();
        return Err(failed("secrets check")(anyhow::anyhow!("{}", errors.join("; "))));
    }
    done("secrets check", format!("{} secret file(s) present and decrypting", report.decrypted));

    let prepare = PrepareOptions {
        list: inputs.seeds_list.clone(),
        dest: inputs.seeds_dir.clone(),
        jobs: 4,
        allow_partial: false,
        github_token: std::env::var("GITHUB_TOKEN").ok(),
    };
    let prepared = seeds::prepare(&prepare, &ctx.out).map_err(failed("seeds prepare"))?;
    if !prepared.failed.is_empty() {
        let names: Vec<_> = prepared.failed.iter().map(|f| format!("{}: {}", f.name, f.error)).collect();
        return Err(failed("seeds prepare")(anyhow::anyhow!("{}", names.join("; "))));
    }
    done("seeds prepare", format!("{} repo(s) at their branch tips", prepared.repos.len()));

    let upload = UploadOptions {
        sources: inputs.sources.clone(),
        seeds_dir: inputs.seeds_dir.clone(),
        bucket: inputs.bucket.clone(),
        instances: vec![],
        dry_run: args.dry_run,
        concurrency: 16,
        source_revision: project::git_revision(),
    };
    let uploaded = bootstrap::upload(&aws, &upload, &ctx.out).await.map_err(failed("bootstrap upload"))?;
    done(
        "bootstrap upload",
        format!(
            "{}{} uploaded, {} copied, {} unchanged, {} sent to s3://{}",
            if args.dry_run { "dry run, would be: " } else { "" },
            uploaded.uploaded,
            uploaded.copied,
            uploaded.unchanged,
            indicatif::HumanBytes(uploaded.bytes_sent),
            inputs.bucket
        ),
    );

    let image_json = match &inputs.image {
        ImagePlan::Build(opts) => {
            let opts = opts.clone();
            let built =
                tokio::task::spawn_blocking(move || build::build(&opts)).await?.map_err(failed("image-build"))?;
            done("image-build", built.to_string().trim().to_string());
            args.out.join("image.json")
        }
        ImagePlan::Prepared(json) => {
            let m = crate::image::ImageManifest::load(json).map_err(failed("image-build"))?;
            done("image-build", format!("skipped, sample {}", m.to_string().trim()));
            json.clone()
        }
    };

    let mut publish_opts = PublishOptions::new(image_json);
    publish_opts.bucket = Some(inputs.bucket.clone());
    publish_opts.dry_run = args.dry_run;
    let cancel = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let published = publish::publish(&aws, &publish_opts, &ctx.out, cancel).await.map_err(failed("image publish"))?;
    if args.dry_run {
        done("image publish", published.to_string().trim().replace('\n', "; "));
        let ami_id = published.ami_id.clone();
        done(
            "ami latest",
            if ami_id.is_empty() { format!("would be the new {}", published.name) } else { ami_id.clone() },
        );
        drop(scratch);
        return ctx.out.emit(&PipelineReport { local: ctx.is_local(), stages, ami_id });
    }
    done(
        "image publish",
        if published.already_published {
            format!("{} already published; nothing sent", published.ami_id)
        } else {
            format!(
                "{} from {} ({} sent)",
                published.ami_id,
                published.snapshot_id.as_deref().unwrap_or("-"),
                indicatif::HumanBytes(published.bytes_sent)
            )
        },
    );

    let latest = ami::latest(&aws.ec2(), None).await.map_err(failed("ami latest"))?;
    let ami_id = latest.image_id().unwrap_or_default().to_string();
    done("ami latest", format!("{ami_id} ({})", latest.name().unwrap_or_default()));
    output::github_output("ami_id", &ami_id)?;
    drop(scratch);
    ctx.out.emit(&PipelineReport { local: ctx.is_local(), stages, ami_id })
}
