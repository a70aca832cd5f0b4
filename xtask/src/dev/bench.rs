//! `cargo xtask bench bootstrap|image`: this project's way and the old way
//! (and coldsnap) side by side, on the same inputs and the same emulator,
//! reported as ratios. Benchmarks measure; they never assert.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::aws::emulator::Emulator;
use crate::dev::fixtures;
use crate::{flags, project, Ctx};

const AWSCLI_VERSION: &str = "1.46.2";
const COLDSNAP_VERSION: &str = "0.12.0";
const MIB: u64 = 1 << 20;

/// One child process: wall time, peak resident memory, what it printed.
#[derive(Debug, Clone)]
pub struct Measured {
    pub secs: f64,
    pub max_rss_mib: f64,
    pub stdout: String,
}

/// Run to completion, measuring with `wait4` (the child's own peak RSS).
pub fn measure(command: &mut Command) -> Result<Measured> {
    let started = Instant::now();
    let mut child =
        command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().context("cannot start the benchmark child")?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let secs = started.elapsed().as_secs_f64();
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    std::mem::forget(child); // already reaped by wait4
    if rc < 0 {
        bail!("wait4 failed: {}", std::io::Error::last_os_error());
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("{:?} failed: {}", command, stderr.lines().rev().take(5).collect::<Vec<_>>().join(" | "));
    }
    Ok(Measured { secs, max_rss_mib: usage.ru_maxrss as f64 / 1024.0, stdout })
}

fn bench_dir(name: &str) -> Result<PathBuf> {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| project::root().join("target"));
    let dir = target.join("bench").join(name);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

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
    std::fs::write(dest.join(crate::bootstrap::seeds::SEEDS_FILE), serde_json::to_vec_pretty(&records)?)?;
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
    let registry = crate::fleet::Registry::load(&fleet.sources.registry)?;
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

fn run_bootstrap(ctx: &Ctx, args: &flags::BenchBootstrapArgs) -> Result<()> {
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
        let s3 = crate::aws::Aws::load(&crate::aws::Settings::local(&emulator.endpoint())).await?.s3();
        for bucket in ["bench-new", "bench-old"] {
            s3.create_bucket()
                .bucket(bucket)
                .send()
                .await
                .map_err(|e| crate::aws::error("S3 CreateBucket", bucket, e))?;
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
             cold upload:    new {:>7.2} s   old {:>7.2} s   {:>6.1}x faster (target >= 10x)\n\
             no-change rerun: new {:>6.2} s   old {:>7.2} s   {:>6.1}x faster; new sent {} bytes (target < 1 s, 0 bytes)\n\
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

fn run_image(ctx: &Ctx, args: &flags::BenchImageArgs) -> Result<()> {
    let dir = bench_dir("image")?;
    let image = dir.join("bench.raw");
    let size = args.size_gib * 1024 * MIB;
    let data = args.data_mib * MIB;
    scattered_image(&image, size, data)?;
    let json = fixtures::write_image_json(&dir, &image, "bench")?;
    let data_blocks = {
        let file = std::fs::File::open(&image)?;
        crate::image::snapshot::candidate_blocks(&file, size, false).len() as u64
    };
    let aws = aws_cli()?;
    let coldsnap = if args.skip_coldsnap { None } else { Some(coldsnap()?) };
    let emulator = Emulator::start()?;
    tokio::runtime::Handle::current().block_on(async {
        let s3 = crate::aws::Aws::load(&crate::aws::Settings::local(&emulator.endpoint())).await?.s3();
        s3.create_bucket()
            .bucket("bench-old")
            .send()
            .await
            .map_err(|e| crate::aws::error("S3 CreateBucket", "bench-old", e))?;
        anyhow::Ok(())
    })?;

    let publish = || -> Result<(Measured, serde_json::Value)> {
        let mut c = xtask_command(&emulator)?;
        c.args(["--json", "image", "publish", "--image"]).arg(&json);
        let m = measure(&mut c)?;
        let report: serde_json::Value = serde_json::from_str(&m.stdout)?;
        Ok((m, report))
    };
    let (ours, ours_report) = publish()?;
    let (again, again_report) = publish()?;
    let cold = match &coldsnap {
        Some(bin) => {
            let mut c = Command::new(bin);
            emulator_env(&mut c, &emulator);
            // --wait: ours also waits for `completed` (and registers an AMI on top).
            c.args(["upload", "--omit-zero-blocks", "--wait", "--no-progress"]).arg(&image);
            Some(measure(&mut c)?)
        }
        None => {
            ctx.out.note("bench image: coldsnap SKIPPED because --skip-coldsnap was given");
            None
        }
    };
    let mut c = Command::new(&aws);
    emulator_env(&mut c, &emulator);
    c.args(["--endpoint-url", &emulator.endpoint(), "s3", "cp", "--only-show-errors"])
        .arg(&image)
        .arg("s3://bench-old/bench.raw");
    let old = measure(&mut c)?;

    let bytes_sent = ours_report["bytesSent"].as_u64().unwrap_or(0);
    let limit = (data_blocks + 1) * crate::image::snapshot::BLOCK_SIZE;
    let coldsnap_ratio = cold.as_ref().map(|c| ours.secs / c.secs);
    let report = serde_json::json!({
        "imageBytes": size, "dataBytes": data, "dataBlocks": data_blocks,
        "ours": {"secs": ours.secs, "bytesSent": bytes_sent, "peakRssMiB": ours.max_rss_mib},
        "republish": {"secs": again.secs, "bytesSent": again_report["bytesSent"], "alreadyPublished": again_report["alreadyPublished"]},
        "coldsnap": cold.as_ref().map(|c| serde_json::json!({"secs": c.secs, "peakRssMiB": c.max_rss_mib})),
        "oldS3Cp": {"secs": old.secs},
        "timeVsColdsnap": coldsnap_ratio,
        "speedupVsOld": old.secs / ours.secs,
    });
    let human = format!(
        "bench image ({} GiB raw, {} MiB data in {data_blocks} blocks)\n\
         ours (EBS direct):  {:>7.2} s  sent {} bytes (limit: data blocks + 1 = {limit})  peak {:.0} MiB\n\
         coldsnap --omit-zero-blocks: {}\n\
         old aws s3 cp:      {:>7.2} s  ({:.1}x slower than ours; target >= 10x)\n\
         time vs coldsnap:   {} (target <= 1.0)\n\
         republish unchanged: {:.2} s, {} bytes (target < 2 s, 0 bytes)\n",
        args.size_gib,
        args.data_mib,
        ours.secs,
        bytes_sent,
        ours.max_rss_mib,
        cold.as_ref()
            .map(|c| format!("{:.2} s  peak {:.0} MiB", c.secs, c.max_rss_mib))
            .unwrap_or_else(|| "skipped".into()),
        old.secs,
        old.secs / ours.secs,
        coldsnap_ratio.map(|r| format!("{r:.2}x")).unwrap_or_else(|| "n/a".into()),
        again.secs,
        again_report["bytesSent"],
    );
    ctx.out.emit(&Report { json: report, human })
}

struct Report {
    json: serde_json::Value,
    human: String,
}

impl serde::Serialize for Report {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.json.serialize(s)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.human)
    }
}

pub fn run(ctx: &Ctx, cmd: flags::BenchCmd) -> Result<()> {
    if cfg!(debug_assertions) {
        ctx.out.note("bench: this is a debug build of xtask; for representative numbers run `cargo run --release -p xtask -- bench …`");
    }
    match cmd {
        flags::BenchCmd::Bootstrap(args) => run_bootstrap(ctx, &args),
        flags::BenchCmd::Image(args) => run_image(ctx, &args),
    }
}
