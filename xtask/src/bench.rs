//! `cargo xtask bench bootstrap|image` (and `switch`, in bench_switch.rs): this project's way and the old way
//! (and coldsnap) side by side, on the same inputs and the same emulator,
//! reported as ratios. Benchmarks measure; they never assert.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use clawdinator::ctx::Ctx;
use testkit::emulator::Emulator;
use testkit::fixtures;

use crate::flags;
use crate::measure::{bench_dir, fresh_emulator, measure, Measured, Report};

const AWSCLI_VERSION: &str = "1.46.2";
const COLDSNAP_VERSION: &str = "0.12.0";
const MIB: u64 = 1 << 20;

/// The old scripts' `aws` CLI, in its own venv (never the emulator's, whose
/// botocore it would change).
fn aws_cli() -> Result<PathBuf> {
    let venv = bench_dir("tools")?.join("venv");
    let aws = venv.join("bin/aws");
    if aws.exists() {
        return Ok(aws);
    }
    eprintln!("bench: installing awscli=={AWSCLI_VERSION} for the old way (once)");
    let sh = Shell::new()?;
    cmd!(sh, "python3 -m venv {venv}").quiet().run()?;
    let pip = venv.join("bin/pip");
    let spec = format!("awscli=={AWSCLI_VERSION}");
    cmd!(sh, "{pip} install --quiet --disable-pip-version-check {spec}").quiet().run()?;
    Ok(aws)
}

/// coldsnap, installed with cargo into the bench tools directory when absent.
fn coldsnap() -> Result<PathBuf> {
    let sh = Shell::new()?;
    if let Ok(path) = cmd!(sh, "sh -c 'command -v coldsnap'").quiet().ignore_stderr().read() {
        if !path.trim().is_empty() {
            return Ok(PathBuf::from(path.trim()));
        }
    }
    let root = bench_dir("tools")?;
    let bin = root.join("bin/coldsnap");
    if !bin.exists() {
        eprintln!("bench: cargo install coldsnap {COLDSNAP_VERSION} (once, several minutes)");
        let sh = Shell::new()?;
        cmd!(sh, "cargo install coldsnap --version {COLDSNAP_VERSION} --locked --root {root}").quiet().run()?;
    }
    Ok(bin)
}

/// Environment that points a child process at the emulator.
fn emulator_env(command: &mut Command, emulator: &Emulator) {
    command
        .env("AWS_ENDPOINT_URL", emulator.endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env_remove("AWS_PROFILE");
}

fn xtask_command(emulator: &Emulator) -> Result<Command> {
    let mut command = Command::new(std::env::current_exe()?);
    emulator_env(&mut command, emulator);
    Ok(command)
}

/// About 150 MB in about 10,000 files of real source text: the Rust sources
/// cargo already downloaded, the largest window of 10,000 files that fits.
fn real_source_seeds(dest: &Path) -> Result<(usize, u64)> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("no CARGO_HOME or HOME")?;
    let mut files = Vec::new();
    let mut stack = vec![home.join("registry/src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file()
                && matches!(path.extension().and_then(|e| e.to_str()), Some("rs" | "md" | "toml" | "c" | "h" | "txt"))
            {
                files.push((entry.metadata()?.len(), path));
            }
        }
    }
    files.sort_by(|a, b| b.cmp(a));
    const COUNT: usize = 10_000;
    const TARGET: u64 = 150_000_000;
    if files.len() < COUNT {
        bail!(
            "only {} source files under {}: build the project once so cargo downloads its crates",
            files.len(),
            home.display()
        );
    }
    let mut start = 0;
    let mut sum: u64 = files[..COUNT].iter().map(|f| f.0).sum();
    while sum > TARGET && start + COUNT < files.len() {
        sum = sum - files[start].0 + files[start + COUNT].0;
        start += 1;
    }
    let base = home.join("registry/src");
    for (_, path) in &files[start..start + COUNT] {
        let rel = path.strip_prefix(&base).unwrap_or(path);
        let to = dest.join("sources").join(rel);
        std::fs::create_dir_all(to.parent().expect("has a parent"))?;
        std::fs::copy(path, &to)?;
    }
    let records = serde_json::json!([{"name": "sources", "url": "file:///bench/sources", "branch": null, "commit": "0000000000000000000000000000000000000000"}]);
    std::fs::write(dest.join(clawdinator::bootstrap::seeds::SEEDS_FILE), serde_json::to_vec_pretty(&records)?)?;
    Ok((COUNT, sum))
}

/// The old `upload-bootstrap.sh`, step for step: per instance, in turn,
/// copy the secrets but other instances' tokens, `tar --zstd` the secrets
/// and the whole seeds directory, `aws s3 cp` both.
fn old_bootstrap_upload(fleet: &fixtures::SampleFleet, bucket: &str, aws: &Path, emulator: &Emulator) -> Result<f64> {
    let sh = Shell::new()?;
    let endpoint = emulator.endpoint();
    for (k, v) in
        [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_DEFAULT_REGION", "us-east-1")]
    {
        sh.set_var(k, v);
    }
    let registry = clawdinator::registry::Registry::load(&fleet.sources.registry)?;
    let seeds_parent = fleet.seeds_dir.parent().expect("seeds have a parent");
    let seeds_name = fleet.seeds_dir.file_name().expect("seeds have a name");
    let started = Instant::now();
    for instance in registry.instances.values() {
        let tmp = tempfile::tempdir()?;
        let t = tmp.path();
        let secrets = t.join("secrets");
        std::fs::create_dir(&secrets)?;
        for entry in std::fs::read_dir(&fleet.sources.secrets_dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("clawdinator-discord-token-") && name != instance.token_file() {
                continue;
            }
            let from = entry.path();
            cmd!(sh, "cp {from} {secrets}/").quiet().run()?;
        }
        let key = &fleet.sources.age_key;
        cmd!(sh, "cp {key} {t}/clawdinator.agekey").quiet().run()?;
        cmd!(sh, "tar --zstd -cf {t}/secrets.tar.zst -C {t} clawdinator.agekey secrets").quiet().run()?;
        cmd!(sh, "tar --zstd -cf {t}/repo-seeds.tar.zst -C {seeds_parent} {seeds_name}").quiet().run()?;
        let prefix = &instance.bootstrap_prefix;
        for archive in ["secrets.tar.zst", "repo-seeds.tar.zst"] {
            let url = format!("s3://{bucket}/{prefix}/{archive}");
            cmd!(sh, "{aws} --endpoint-url {endpoint} s3 cp --only-show-errors {t}/{archive} {url}").quiet().run()?;
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

fn run_bootstrap(ctx: &Ctx, args: &flags::BenchBootstrap) -> Result<()> {
    let dir = bench_dir("bootstrap")?;
    let fixture = dir.join(format!("fleet-{}", args.instances));
    if fixture.exists() {
        std::fs::remove_dir_all(&fixture)?;
    }
    ctx.out.note(format!("bench bootstrap: fixture of {} instances in {}", args.instances, fixture.display()));
    let fleet = fixtures::sample_fleet(&fixture, args.instances, |name| format!("bench value of {name}"))?;
    std::fs::remove_dir_all(&fleet.seeds_dir)?;
    let (files, bytes) = real_source_seeds(&fleet.seeds_dir)?;
    ctx.out.note(format!("bench bootstrap: seeds {files} files, {:.1} MB of real source text", bytes as f64 / 1e6));
    let aws = aws_cli()?;
    let emulator = Emulator::start()?;
    tokio::runtime::Handle::current().block_on(async {
        let s3 = clawdinator::aws::Aws::load(&clawdinator::aws::Settings::local(&emulator.endpoint())).await?.s3();
        for bucket in ["bench-new", "bench-old"] {
            s3.create_bucket()
                .bucket(bucket)
                .send()
                .await
                .map_err(|e| clawdinator::aws::error("S3 CreateBucket", bucket, e))?;
        }
        anyhow::Ok(())
    })?;

    let upload = |emulator: &Emulator| -> Result<(Measured, serde_json::Value)> {
        let mut c = xtask_command(emulator)?;
        c.args(["--json", "bootstrap", "upload", "--all", "--bucket", "bench-new", "--repo-seeds"])
            .arg(&fleet.seeds_dir)
            .arg("--instances")
            .arg(&fleet.sources.registry)
            .arg("--spec")
            .arg(&fleet.sources.spec)
            .arg("--secrets-dir")
            .arg(&fleet.sources.secrets_dir)
            .arg("--age-key")
            .arg(&fleet.sources.age_key);
        let m = measure(&mut c)?;
        let report: serde_json::Value = serde_json::from_str(&m.stdout)?;
        Ok((m, report))
    };
    let (cold, cold_report) = upload(&emulator)?;
    let (rerun, rerun_report) = upload(&emulator)?;
    ctx.out.note("bench bootstrap: the old way (sequential tar --zstd + aws s3 cp per instance)...");
    let old_cold = old_bootstrap_upload(&fleet, "bench-old", &aws, &emulator)?;
    let old_rerun = old_bootstrap_upload(&fleet, "bench-old", &aws, &emulator)?;

    let report = serde_json::json!({
        "instances": args.instances,
        "seedFiles": files,
        "seedBytes": bytes,
        "new": {"coldSecs": cold.secs, "rerunSecs": rerun.secs, "peakRssMiB": cold.max_rss_mib.max(rerun.max_rss_mib),
                "coldBytesSent": cold_report["bytesSent"], "rerunBytesSent": rerun_report["bytesSent"]},
        "old": {"coldSecs": old_cold, "rerunSecs": old_rerun},
        "coldSpeedup": old_cold / cold.secs,
        "rerunSpeedup": old_rerun / rerun.secs,
    });
    ctx.out.emit(&Report {
        json: report,
        human: format!(
            "bench bootstrap ({} instances, seeds {files} files / {:.1} MB)\n\
             cold upload:    new {:>7.2} s   old {:>7.2} s   {:>6.1}x faster (target >= 25x)\n\
             no-change rerun: new {:>6.2} s   old {:>7.2} s   {:>6.1}x faster; new sent {} bytes (target < 0.5 s, 0 bytes)\n\
             peak memory (new): {:.0} MiB (target < 200 MiB)\n\
             bytes sent cold (new): {}\n",
            args.instances,
            bytes as f64 / 1e6,
            cold.secs,
            old_cold,
            old_cold / cold.secs,
            rerun.secs,
            old_rerun,
            old_rerun / rerun.secs,
            rerun_report["bytesSent"],
            cold.max_rss_mib.max(rerun.max_rss_mib),
            cold_report["bytesSent"],
        ),
    })
}

/// A raw image of `size` with `data` bytes of random data in 64 scattered,
/// unaligned chunks.
fn scattered_image(path: &Path, size: u64, data: u64) -> Result<()> {
    let chunks = 64;
    let chunk = data / chunks;
    let stride = size / chunks;
    let ranges: Vec<(u64, u64)> = (0..chunks).map(|i| (i * stride + (i * 7919 % 97) * 4096 + 4096, chunk)).collect();
    fixtures::sample_raw_image(path, size, &ranges, 7)
}

/// `image publish` of `json` on `emulator`, with extra flags.
fn our_publish(emulator: &Emulator, json: &Path, extra: &[&str]) -> Result<(Measured, serde_json::Value)> {
    let mut c = xtask_command(emulator)?;
    c.args(["--json", "image", "publish", "--image"]).arg(json).args(extra);
    let m = measure(&mut c)?;
    let report: serde_json::Value = serde_json::from_str(&m.stdout)?;
    Ok((m, report))
}

fn coldsnap_upload(bin: &Path, image: &Path, wait: bool) -> Result<Measured> {
    let emulator = fresh_emulator()?;
    let mut c = Command::new(bin);
    emulator_env(&mut c, &emulator);
    c.args(["upload", "--omit-zero-blocks", "--no-progress"]);
    if wait {
        c.arg("--wait");
    }
    measure(c.arg(image))
}

/// Each run on a fresh emulator, so none finds another's work: ours and
/// coldsnap's upload alone (both stop at CompleteSnapshot), then both with
/// their waits (ours also registers the AMI), then the old `aws s3 cp`.
fn run_image(ctx: &Ctx, args: &flags::BenchImage) -> Result<()> {
    let dir = bench_dir("image")?;
    let image = dir.join("bench.raw");
    let size = args.size_gib * 1024 * MIB;
    let data = args.data_mib * MIB;
    scattered_image(&image, size, data)?;
    let json = fixtures::write_image_json(&dir, &image, "bench")?;
    let data_blocks = clawdinator::image::snapshot::blocks_to_send(&std::fs::File::open(&image)?, size, false)?;
    let aws = aws_cli()?;
    let coldsnap = if args.skip_coldsnap { None } else { Some(coldsnap()?) };

    let (upload_only, upload_report) = our_publish(&fresh_emulator()?, &json, &["--snapshot-only"])?;
    let full_emulator = fresh_emulator()?;
    let (full, full_report) = our_publish(&full_emulator, &json, &[])?;
    let (again, again_report) = our_publish(&full_emulator, &json, &[])?;
    let cold = match &coldsnap {
        Some(bin) => Some((coldsnap_upload(bin, &image, false)?, coldsnap_upload(bin, &image, true)?)),
        None => {
            ctx.out.note("bench image: coldsnap SKIPPED because --skip-coldsnap was given");
            None
        }
    };
    let old_emulator = fresh_emulator()?;
    let mut c = Command::new(&aws);
    emulator_env(&mut c, &old_emulator);
    c.args(["--endpoint-url", &old_emulator.endpoint(), "s3", "cp", "--only-show-errors"])
        .arg(&image)
        .arg("s3://bench-old/bench.raw");
    let old = measure(&mut c)?;

    let bytes_sent = full_report["bytesSent"].as_u64().unwrap_or(0);
    let limit = (data_blocks + 1) * clawdinator::image::snapshot::BLOCK_SIZE;
    let vs_coldsnap = cold.as_ref().map(|(u, w)| (upload_only.secs / u.secs, full.secs / w.secs));
    let report = serde_json::json!({
        "imageBytes": size, "dataBytes": data, "dataBlocks": data_blocks,
        "oursUploadOnly": {"secs": upload_only.secs, "bytesSent": upload_report["bytesSent"], "peakRssMiB": upload_only.max_rss_mib},
        "oursPublish": {"secs": full.secs, "bytesSent": bytes_sent, "peakRssMiB": full.max_rss_mib, "pollSecs": 0.5},
        "republish": {"secs": again.secs, "bytesSent": again_report["bytesSent"], "alreadyPublished": again_report["alreadyPublished"]},
        "coldsnapUploadOnly": cold.as_ref().map(|(u, _)| serde_json::json!({"secs": u.secs, "peakRssMiB": u.max_rss_mib})),
        "coldsnapWait": cold.as_ref().map(|(_, w)| serde_json::json!({"secs": w.secs, "peakRssMiB": w.max_rss_mib})),
        "oldS3Cp": {"secs": old.secs},
        "uploadOnlyVsColdsnap": vs_coldsnap.map(|v| v.0),
        "publishVsColdsnapWait": vs_coldsnap.map(|v| v.1),
        "speedupVsOld": old.secs / full.secs,
    });
    let ratio = |r: Option<f64>| r.map(|r| format!("{r:.2}x")).unwrap_or_else(|| "n/a (coldsnap skipped)".into());
    let secs = |m: Option<&Measured>| {
        m.map(|m| format!("{:.2} s, peak {:.0} MiB", m.secs, m.max_rss_mib)).unwrap_or("skipped".into())
    };
    let human = format!(
        "bench image ({} GiB raw, {} MiB data in {data_blocks} blocks), each run on a fresh emulator\n\
         upload alone (stops at CompleteSnapshot):\n\
         \x20 ours --snapshot-only:      {:>6.2} s, peak {:.0} MiB\n\
         \x20 coldsnap upload:           {}\n\
         \x20 ours / coldsnap:           {} (target <= 0.5x)\n\
         with waits:\n\
         \x20 ours publish (to an available AMI; polls every 0.5 s): {:.2} s, sent {bytes_sent} bytes (limit {limit})\n\
         \x20 coldsnap upload --wait (its own waiter's defaults):    {}\n\
         \x20 ours / coldsnap:           {}\n\
         old aws s3 cp of the image: {:.2} s: ours is {:.1}x faster (target >= 15x)\n\
         republish unchanged: {:.2} s, {} bytes (target < 2 s, 0 bytes)\n",
        args.size_gib,
        args.data_mib,
        upload_only.secs,
        upload_only.max_rss_mib,
        secs(cold.as_ref().map(|c| &c.0)),
        ratio(vs_coldsnap.map(|v| v.0)),
        full.secs,
        secs(cold.as_ref().map(|c| &c.1)),
        ratio(vs_coldsnap.map(|v| v.1)),
        old.secs,
        old.secs / full.secs,
        again.secs,
        again_report["bytesSent"],
    );
    ctx.out.emit(&Report { json: report, human })
}

impl flags::Bench {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let cmd = self;
        if cfg!(debug_assertions) {
            ctx.out.note("bench: this is a debug build of xtask; for representative numbers run `cargo run --release -p xtask -- bench …`");
        }
        match cmd {
            flags::Bench::Bootstrap(args) => run_bootstrap(ctx, &args),
            flags::Bench::Image(args) => run_image(ctx, &args),
            flags::Bench::Switch(args) => crate::bench_switch::run(ctx, &args),
        }
    }
}
