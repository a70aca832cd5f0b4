//! `cargo xtask bench bootstrap|image` (and `switch`, in bench_switch.rs): this project's way and the old way
//! (and coldsnap) side by side, on the same inputs and the same emulator,
//! reported as ratios. `--latency-ms` puts a proxy adding that delay to every
//! request in front of the emulator, for every side alike. Benchmarks
//! measure; they never assert.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use clawdinator::ctx::Ctx;
use serde_json::Value;
use testkit::fixtures;

use crate::flags;
use crate::measure::{bench_dir, fresh_emulator, latency_note, measure, Endpoint, Measured, Report};

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

/// Environment that points a child process at `url` (the emulator, or the proxy in front of it).
fn endpoint_env(command: &mut Command, url: &str) {
    command
        .env("AWS_ENDPOINT_URL", url)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env_remove("AWS_PROFILE");
}

fn xtask_command(url: &str) -> Result<Command> {
    let mut command = Command::new(std::env::current_exe()?);
    endpoint_env(&mut command, url);
    Ok(command)
}

/// Source text files cargo downloaded, largest first, with their sizes.
fn cargo_sources(home: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    let mut stack = vec![home.join("registry/src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let kind = entry.file_type()?;
            let text =
                matches!(path.extension().and_then(|e| e.to_str()), Some("rs" | "md" | "toml" | "c" | "h" | "txt"));
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() && text {
                files.push((entry.metadata()?.len(), path));
            }
        }
    }
    files.sort_by(|a, b| b.cmp(a));
    Ok(files)
}

/// The first window of `count` files (largest first) whose sizes add up to at most `target`.
fn window(files: &[(u64, PathBuf)], count: usize, target: u64) -> (usize, u64) {
    let mut start = 0;
    let mut sum: u64 = files[..count].iter().map(|f| f.0).sum();
    while sum > target && start + count < files.len() {
        sum = sum - files[start].0 + files[start + count].0;
        start += 1;
    }
    (start, sum)
}

/// About 150 MB in about 10,000 files of real source text: the Rust sources
/// cargo already downloaded, the largest window of 10,000 files that fits.
fn real_source_seeds(dest: &Path) -> Result<(usize, u64)> {
    const COUNT: usize = 10_000;
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("no CARGO_HOME or HOME")?;
    let files = cargo_sources(&home)?;
    if files.len() < COUNT {
        bail!(
            "only {} source files under {}: build the project once so cargo downloads its crates",
            files.len(),
            home.display()
        );
    }
    let (start, sum) = window(&files, COUNT, 150_000_000);
    let base = home.join("registry/src");
    for (_, path) in &files[start..start + COUNT] {
        let to = dest.join("sources").join(path.strip_prefix(&base).unwrap_or(path));
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
fn old_bootstrap_upload(fleet: &fixtures::SampleFleet, seeds: &Path, aws: &Path, endpoint: &str) -> Result<f64> {
    let bucket = "bench-old";
    let sh = Shell::new()?;
    for (k, v) in
        [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_DEFAULT_REGION", "us-east-1")]
    {
        sh.set_var(k, v);
    }
    let registry = clawdinator::registry::Registry::load(&fleet.sources.registry)?;
    let seeds_parent = seeds.parent().expect("seeds have a parent");
    let seeds_name = seeds.file_name().expect("seeds have a name");
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

/// `bootstrap upload --all` of `fleet` with `seeds`, as a child process.
fn our_bootstrap_upload(url: &str, fleet: &fixtures::SampleFleet, seeds: &Path) -> Result<(Measured, Value)> {
    let mut c = xtask_command(url)?;
    c.args(["--json", "bootstrap", "upload", "--all", "--bucket", "bench-new", "--repo-seeds"])
        .arg(seeds)
        .args(fixtures::source_args(&fleet.sources));
    let m = measure(&mut c)?;
    let report: Value = serde_json::from_str(&m.stdout)?;
    Ok((m, report))
}

/// This project's way on a fleet of `instances`: a cold upload and a re-run
/// with nothing changed, on an endpoint of its own.
struct FleetRun {
    instances: usize,
    cold: (Measured, Value),
    rerun: (Measured, Value),
    /// Requests the re-run made (counted by the proxy; 0 without one).
    rerun_requests: u64,
}

impl FleetRun {
    fn peak_mib(&self) -> f64 {
        self.cold.0.max_rss_mib.max(self.rerun.0.max_rss_mib)
    }

    fn json(&self) -> Value {
        serde_json::json!({"instances": self.instances, "coldSecs": self.cold.0.secs, "rerunSecs": self.rerun.0.secs,
            "coldCpuSecs": self.cold.0.cpu_secs, "rerunCpuSecs": self.rerun.0.cpu_secs, "peakRssMiB": self.peak_mib(), "coldBytesSent": self.cold.1["bytesSent"],
            "rerunBytesSent": self.rerun.1["bytesSent"], "rerunRequests": self.rerun_requests})
    }
}

/// A sample fleet of `instances` under `dir` (its own seeds dropped: every fleet uses the same real ones).
fn bench_fleet(dir: &Path, instances: usize) -> Result<fixtures::SampleFleet> {
    let fixture = dir.join(format!("fleet-{instances}"));
    if fixture.exists() {
        std::fs::remove_dir_all(&fixture)?;
    }
    let fleet = fixtures::sample_fleet(&fixture, instances, |name| format!("bench value of {name}"))?;
    std::fs::remove_dir_all(&fleet.seeds_dir)?;
    Ok(fleet)
}

fn run_ours(endpoint: &Endpoint, fleet: &fixtures::SampleFleet, seeds: &Path) -> Result<FleetRun> {
    let cold = our_bootstrap_upload(&endpoint.url(), fleet, seeds)?;
    let before = endpoint.requests();
    let rerun = our_bootstrap_upload(&endpoint.url(), fleet, seeds)?;
    let rerun_requests = endpoint.requests() - before;
    Ok(FleetRun { instances: fleet.instances.len(), cold, rerun, rerun_requests })
}

fn run_bootstrap(ctx: &Ctx, args: &flags::BenchBootstrap) -> Result<()> {
    let dir = bench_dir("bootstrap")?;
    let latency = args.endpoint.latency_ms;
    ctx.out.note(format!("bench bootstrap: fixture of {} instances in {}", args.instances, dir.display()));
    let fleet = bench_fleet(&dir, args.instances)?;
    let seeds = dir.join("seeds");
    let _ = std::fs::remove_dir_all(&seeds);
    let (files, bytes) = real_source_seeds(&seeds)?;
    ctx.out.note(format!("bench bootstrap: seeds {files} files, {:.1} MB of real source text", bytes as f64 / 1e6));
    let endpoint = Endpoint::start(latency)?;
    endpoint.create_buckets(&["bench-new", "bench-old"])?;
    let ours = run_ours(&endpoint, &fleet, &seeds)?;
    let scaled = match args.scale_to {
        Some(n) => {
            ctx.out.note(format!("bench bootstrap: this project's way on {n} instances, on an emulator of its own"));
            let big = bench_fleet(&dir, n)?;
            let endpoint = Endpoint::start(latency)?;
            endpoint.create_buckets(&["bench-new"])?;
            Some(run_ours(&endpoint, &big, &seeds)?)
        }
        None => None,
    };
    let old = match args.skip_old {
        true => None,
        false => {
            ctx.out.note("bench bootstrap: the old way (sequential tar --zstd + aws s3 cp per instance)...");
            let (aws, url) = (aws_cli()?, endpoint.url());
            let cold = old_bootstrap_upload(&fleet, &seeds, &aws, &url)?;
            Some((cold, old_bootstrap_upload(&fleet, &seeds, &aws, &url)?))
        }
    };
    ctx.out.emit(&bootstrap_report(latency, (files, bytes), &ours, scaled.as_ref(), old))
}

/// The bootstrap figures as JSON and as text, ratios measured in this one run.
fn bootstrap_report(
    latency: u64,
    (files, bytes): (usize, u64),
    ours: &FleetRun,
    scaled: Option<&FleetRun>,
    old: Option<(f64, f64)>,
) -> Report {
    let (cold, rerun) = (ours.cold.0.secs, ours.rerun.0.secs);
    let scale_ratio = scaled.map(|s| s.cold.0.secs / cold);
    let json = serde_json::json!({
        "latencyMs": latency, "seedFiles": files, "seedBytes": bytes,
        "new": ours.json(), "scaled": scaled.map(FleetRun::json),
        "old": old.map(|(c, r)| serde_json::json!({"coldSecs": c, "rerunSecs": r})),
        "coldSpeedup": old.map(|(c, _)| c / cold), "rerunSpeedup": old.map(|(_, r)| r / rerun),
        "scaledColdOverCold": scale_ratio,
    });
    let mut human =
        format!("bench bootstrap ({}; seeds {files} files / {:.1} MB)\n", latency_note(latency), bytes as f64 / 1e6);
    for run in std::iter::once(ours).chain(scaled) {
        human += &format!(
            "{:>4} instances: cold {:>7.2} s (cpu {:.2} s), sent {}; no-change re-run {:>5.2} s (cpu {:.2} s), sent {}, {} requests; peak {:.0} MiB\n",
            run.instances,
            run.cold.0.secs,
            run.cold.0.cpu_secs,
            run.cold.1["bytesSent"],
            run.rerun.0.secs,
            run.rerun.0.cpu_secs,
            run.rerun.1["bytesSent"],
            run.rerun_requests,
            run.peak_mib()
        );
    }
    if let (Some(s), Some(r)) = (scaled, scale_ratio) {
        human += &format!("cold {} / cold {}: {r:.2}x (target <= 3x)\n", s.instances, ours.instances);
    }
    match old {
        Some((c, r)) => {
            human += &format!(
                "old way, {} instances: cold {c:.2} s ({:.1}x ours, target >= 25x), re-run {r:.2} s ({:.0}x ours)\n",
                ours.instances,
                c / cold,
                r / rerun
            )
        }
        None => human += "old way: SKIPPED (--skip-old)\n",
    }
    Report { json, human }
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

/// `image publish` of `json` against `url`, with extra flags.
fn our_publish(url: &str, json: &Path, extra: &[&str]) -> Result<(Measured, Value)> {
    let mut c = xtask_command(url)?;
    c.args(["--json", "image", "publish", "--image"]).arg(json).args(extra);
    let m = measure(&mut c)?;
    let report: Value = serde_json::from_str(&m.stdout)?;
    Ok((m, report))
}

fn coldsnap_upload(bin: &Path, image: &Path, wait: bool, latency: u64) -> Result<Measured> {
    let endpoint = fresh_emulator(latency)?;
    let mut c = Command::new(bin);
    endpoint_env(&mut c, &endpoint.url());
    c.args(["upload", "--omit-zero-blocks", "--no-progress"]);
    if wait {
        c.arg("--wait");
    }
    measure(c.arg(image))
}

/// The old upload: `aws s3 cp` of the whole image.
fn old_s3_cp(image: &Path, latency: u64) -> Result<Measured> {
    let endpoint = fresh_emulator(latency)?;
    let mut c = Command::new(aws_cli()?);
    endpoint_env(&mut c, &endpoint.url());
    c.args(["--endpoint-url", &endpoint.url(), "s3", "cp", "--only-show-errors"])
        .arg(image)
        .arg("s3://bench-old/bench.raw");
    measure(&mut c)
}

/// What `bench image` measured.
struct ImageRun {
    data_blocks: u64,
    upload_only: (Measured, Value),
    full: (Measured, Value),
    again: (Measured, Value),
    /// coldsnap upload alone, and with `--wait`.
    coldsnap: Option<(Measured, Measured)>,
    old: Option<Measured>,
}

/// Each run on a fresh emulator, so none finds another's work: ours and
/// coldsnap's upload alone (both stop at CompleteSnapshot), then both with
/// their waits (ours also registers the AMI), then the old `aws s3 cp`.
fn run_image(ctx: &Ctx, args: &flags::BenchImage) -> Result<()> {
    let dir = bench_dir("image")?;
    let latency = args.endpoint.latency_ms;
    let image = dir.join("bench.raw");
    let size = args.size_gib * 1024 * MIB;
    scattered_image(&image, size, args.data_mib * MIB)?;
    let json = fixtures::write_image_json(&dir, &image, "bench")?;
    let data_blocks = clawdinator::image::snapshot::blocks_to_send(&std::fs::File::open(&image)?, size, false)?;
    let coldsnap = if args.skip_coldsnap { None } else { Some(coldsnap()?) };
    let upload_only = our_publish(&fresh_emulator(latency)?.url(), &json, &["--snapshot-only"])?;
    let full_endpoint = fresh_emulator(latency)?;
    let full = our_publish(&full_endpoint.url(), &json, &[])?;
    let again = our_publish(&full_endpoint.url(), &json, &[])?;
    let coldsnap = match &coldsnap {
        Some(bin) => {
            Some((coldsnap_upload(bin, &image, false, latency)?, coldsnap_upload(bin, &image, true, latency)?))
        }
        None => None,
    };
    let old = if args.skip_old { None } else { Some(old_s3_cp(&image, latency)?) };
    let run = ImageRun { data_blocks, upload_only, full, again, coldsnap, old };
    ctx.out.emit(&image_report(args, &run))
}

fn image_json(args: &flags::BenchImage, run: &ImageRun) -> Value {
    let ((upload, upload_report), (full, full_report)) = (&run.upload_only, &run.full);
    let vs = run.coldsnap.as_ref().map(|(u, w)| (upload.secs / u.secs, full.secs / w.secs));
    let peak = |m: &Measured| serde_json::json!({"secs": m.secs, "peakRssMiB": m.max_rss_mib});
    serde_json::json!({
        "latencyMs": args.endpoint.latency_ms, "imageBytes": args.size_gib << 30, "dataBytes": args.data_mib * MIB,
        "dataBlocks": run.data_blocks,
        "oursUploadOnly": {"secs": upload.secs, "bytesSent": upload_report["bytesSent"], "peakRssMiB": upload.max_rss_mib},
        "oursPublish": {"secs": full.secs, "bytesSent": full_report["bytesSent"], "peakRssMiB": full.max_rss_mib, "pollSecs": 0.5},
        "republish": {"secs": run.again.0.secs, "bytesSent": run.again.1["bytesSent"], "alreadyPublished": run.again.1["alreadyPublished"]},
        "coldsnapUploadOnly": run.coldsnap.as_ref().map(|(u, _)| peak(u)),
        "coldsnapWait": run.coldsnap.as_ref().map(|(_, w)| peak(w)),
        "oldS3Cp": run.old.as_ref().map(|m| serde_json::json!({"secs": m.secs})),
        "uploadOnlyVsColdsnap": vs.map(|v| v.0), "publishVsColdsnapWait": vs.map(|v| v.1),
        "speedupVsOld": run.old.as_ref().map(|m| m.secs / full.secs),
    })
}

fn image_report(args: &flags::BenchImage, run: &ImageRun) -> Report {
    let ((upload, _), (full, full_report)) = (&run.upload_only, &run.full);
    let cold = run.coldsnap.as_ref();
    let ratio = |r: Option<f64>| r.map(|r| format!("{r:.2}x")).unwrap_or_else(|| "n/a (coldsnap SKIPPED)".into());
    let secs = |m: Option<&Measured>| {
        m.map(|m| format!("{:.2} s, cpu {:.2} s, peak {:.0} MiB", m.secs, m.cpu_secs, m.max_rss_mib))
            .unwrap_or("SKIPPED (--skip-coldsnap)".into())
    };
    let bytes_sent = full_report["bytesSent"].as_u64().unwrap_or(0);
    let limit = (run.data_blocks + 1) * clawdinator::image::snapshot::BLOCK_SIZE;
    let old = match &run.old {
        Some(m) => format!("{:.2} s: ours is {:.1}x faster (target >= 15x)", m.secs, m.secs / full.secs),
        None => "SKIPPED (--skip-old)".into(),
    };
    let human = format!(
        "bench image ({} GiB raw, {} MiB data in {} blocks; {}), each run on a fresh emulator\n\
         upload alone (stops at CompleteSnapshot):\n\
         \x20 ours --snapshot-only:      {:>6.2} s, cpu {:.2} s, peak {:.0} MiB\n\
         \x20 coldsnap upload:           {}\n\
         \x20 ours / coldsnap:           {} (target <= 0.5x)\n\
         with waits:\n\
         \x20 ours publish (to an available AMI; polls every 0.5 s): {:.2} s, peak {:.0} MiB, sent {bytes_sent} bytes (limit {limit})\n\
         \x20 coldsnap upload --wait (its own waiter's defaults):    {}\n\
         \x20 ours / coldsnap:           {}\n\
         old aws s3 cp of the image: {old}\n\
         republish unchanged: {:.2} s, {} bytes (target < 2 s, 0 bytes)\n",
        args.size_gib,
        args.data_mib,
        run.data_blocks,
        latency_note(args.endpoint.latency_ms),
        upload.secs,
        upload.cpu_secs,
        upload.max_rss_mib,
        secs(cold.map(|c| &c.0)),
        ratio(cold.map(|c| upload.secs / c.0.secs)),
        full.secs,
        full.max_rss_mib,
        secs(cold.map(|c| &c.1)),
        ratio(cold.map(|c| full.secs / c.1.secs)),
        run.again.0.secs,
        run.again.1["bytesSent"],
    );
    Report { json: image_json(args, run), human }
}

impl flags::Bench {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        if cfg!(debug_assertions) {
            ctx.out.note("bench: this is a debug build of xtask; for representative numbers run `cargo run --release -p xtask -- bench …`");
        }
        match self {
            flags::Bench::Bootstrap(args) => run_bootstrap(ctx, &args),
            flags::Bench::Image(args) => run_image(ctx, &args),
            flags::Bench::Switch(args) => crate::bench_switch::run(ctx, &args),
        }
    }
}
