//! `cargo xtask bench switch`: what a host pays to reach a new revision now
//! that CI builds once (realise a signed closure from the fleet's cache),
//! beside what it paid before (compile the host binary from source, as
//! every host did at every revision), and a fleet of hosts in waves
//! fetching the same closure. Real nix (root, as CI runs it), the
//! emulator's S3 as the cache (an http store, as in the cache test;
//! `--latency-ms` puts the delaying proxy in front of it);
//! measures, never asserts.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use xshell::{cmd, Shell};

use clawdinator::ctx::Ctx;

use crate::flags;
use crate::measure::{bench_dir, fresh_emulator, latency_note, measure, Measured, Report};

const CACHE: &str = "bench-cache";

/// A system-like closure: `paths` paths of random (incompressible) bytes,
/// `size_mib` in all, and a top path that refers to every one of them.
const CLOSURE: &str = r#"{ paths, mib }:
let
  part = i: derivation {
    name = "bench-part-${toString i}"; system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-c" "/bin/dd if=/dev/urandom of=$out bs=64K count=${toString (mib * 16)} status=none" ];
  };
  parts = builtins.genList part paths;
in derivation {
  name = "nixos-system-bench-host"; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" "/bin/mkdir -p $out/bin; echo ${toString parts} > $out/parts; printf '#!/bin/sh\\nexit 0\\n' > $out/bin/switch-to-configuration" ];
}
"#;

fn require_nix(sh: &Shell) -> Result<()> {
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    let nix = cmd!(sh, "nix-store --version").quiet().ignore_stderr().read().is_ok();
    ensure!(nix && root, "bench switch needs nix and root, as CI has them (apt-get install nix-bin)");
    Ok(())
}

/// The closure's top path (built once; nix keeps it for later runs).
fn build_closure(sh: &Shell, dir: &Path, paths: u32, size_mib: u32) -> Result<String> {
    let file = dir.join("closure.nix");
    std::fs::write(&file, CLOSURE)?;
    let mib = (size_mib / paths.max(1)).max(1).to_string();
    let paths = paths.to_string();
    let out = cmd!(sh, "nix-build --no-out-link {file} --arg paths {paths} --arg mib {mib} --option substituters ''")
        .quiet()
        .read()
        .context("building the bench closure")?;
    Ok(out.trim().to_string())
}

/// An empty cache bucket nix may read unsigned (its http store sends no SigV4).
fn cache_bucket(emulator: &testkit::emulator::Emulator) -> Result<()> {
    tokio::runtime::Handle::current().block_on(async {
        let s3 = clawdinator::aws::Aws::load(&clawdinator::aws::Settings::local(&emulator.endpoint())).await?.s3();
        s3.create_bucket()
            .bucket(CACHE)
            .send()
            .await
            .map_err(|e| clawdinator::aws::error("S3 CreateBucket", CACHE, e))?;
        let policy = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*",
            "Action": "s3:GetObject", "Resource": format!("arn:aws:s3:::{CACHE}/*")}]});
        s3.put_bucket_policy()
            .bucket(CACHE)
            .policy(policy.to_string())
            .send()
            .await
            .map_err(|e| clawdinator::aws::error("S3 PutBucketPolicy", CACHE, e))?;
        anyhow::Ok(())
    })
}

/// Bytes the cache holds (the NARs a host downloads, compressed).
fn cache_bytes(emulator: &testkit::emulator::Emulator) -> Result<i64> {
    tokio::runtime::Handle::current().block_on(async {
        let s3 = clawdinator::aws::Aws::load(&clawdinator::aws::Settings::local(&emulator.endpoint())).await?.s3();
        let out = s3
            .list_objects_v2()
            .bucket(CACHE)
            .prefix("nar/")
            .send()
            .await
            .map_err(|e| clawdinator::aws::error("S3 ListObjectsV2", CACHE, e))?;
        anyhow::Ok(out.contents().iter().filter_map(|o| o.size()).sum())
    })
}

/// `nix-store --realise` into a store of its own, as `host switch` runs it.
fn host_fetch(store: &Path, top: &str, url: &str, public: &str) -> Command {
    let mut c = Command::new("nix-store");
    c.args(["--realise", top, "--option", "max-jobs", "0", "--store"])
        .arg(store)
        // Each host looks every path up itself, as a host with its own narinfo cache does.
        .env(
            "NIX_CONFIG",
            format!(
                "substituters = {url}\ntrusted-public-keys = {public}\nnarinfo-cache-positive-ttl = 0\nnarinfo-cache-negative-ttl = 0\n"
            ),
        );
    c
}

/// `hosts` hosts, `parallel` at a time, each into a fresh store: the wall time of the whole fleet.
fn fleet_fetch(dir: &Path, hosts: u32, parallel: u32, top: &str, url: &str, public: &str) -> Result<(f64, f64)> {
    let started = std::time::Instant::now();
    let mut slowest: f64 = 0.0;
    let stores: Vec<PathBuf> = (0..hosts).map(|n| dir.join(format!("fleet/host-{n}"))).collect();
    for wave in stores.chunks(parallel.max(1) as usize) {
        let runs: Vec<_> = wave
            .iter()
            .map(|store| {
                let mut c = host_fetch(store, top, url, public);
                std::thread::spawn(move || measure(&mut c))
            })
            .collect();
        for run in runs {
            let m: Measured = run.join().map_err(|_| anyhow::anyhow!("a host fetch panicked"))??;
            slowest = slowest.max(m.secs);
        }
    }
    Ok((started.elapsed().as_secs_f64(), slowest))
}

/// The old way's cost on a host: a release build of the host binary from a
/// clean target directory, measured once on this machine and kept.
fn source_build(dir: &Path, skip: bool) -> Result<Option<f64>> {
    let kept = dir.join("source-build-seconds");
    if let Ok(text) = std::fs::read_to_string(&kept) {
        return Ok(text.trim().parse().ok());
    }
    if skip {
        return Ok(None);
    }
    eprintln!("bench switch: measuring a release build of the host binary from source, once (about 15 minutes here)");
    let target = dir.join("source-target");
    let _ = std::fs::remove_dir_all(&target);
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args(["build", "--release", "--quiet", "-p", "clawdinator", "--target-dir"])
        .arg(&target)
        .current_dir(testkit::repo_root());
    let m = measure(&mut c)?;
    std::fs::write(&kept, format!("{}\n", m.secs))?;
    let _ = std::fs::remove_dir_all(&target);
    Ok(Some(m.secs))
}

pub fn run(ctx: &Ctx, args: &flags::BenchSwitch) -> Result<()> {
    let sh = Shell::new()?;
    require_nix(&sh)?;
    let dir = bench_dir("switch")?;
    let _ = std::fs::remove_dir_all(dir.join("fleet"));
    let (secret, public) = (dir.join("bench-cache.sec"), dir.join("bench-cache.pub"));
    if !secret.exists() {
        cmd!(sh, "nix-store --generate-binary-cache-key bench-cache-1 {secret} {public}").quiet().run()?;
    }
    let public = std::fs::read_to_string(&public)?.trim().to_string();
    let top = build_closure(&sh, &dir, args.paths, args.size_mib)?;
    let endpoint = fresh_emulator(args.endpoint.latency_ms)?;
    cache_bucket(&endpoint.emulator)?;
    let url = format!("{}/{CACHE}", endpoint.url());
    let to = format!("{url}?secret-key={}&compression=zstd", secret.display());
    let push =
        measure(Command::new("nix").args(["--extra-experimental-features", "nix-command", "copy", "--to", &to, &top]))?;
    let again =
        measure(Command::new("nix").args(["--extra-experimental-features", "nix-command", "copy", "--to", &to, &top]))?;
    let bytes = cache_bytes(&endpoint.emulator)?;
    let one = measure(&mut host_fetch(&dir.join("fleet/one"), &top, &url, &public))?;
    let (fleet, slowest) = fleet_fetch(&dir, args.hosts, args.parallel, &top, &url, &public)?;
    // 30 host stores of the closure each: gigabytes nobody needs afterwards.
    std::fs::remove_dir_all(dir.join("fleet"))?;
    let source = source_build(&dir, args.skip_source_build)?;
    report(ctx, args, &[push.secs, again.secs, one.secs, one.max_rss_mib, fleet, slowest], bytes, source)
}

fn report(ctx: &Ctx, args: &flags::BenchSwitch, t: &[f64; 6], bytes: i64, source: Option<f64>) -> Result<()> {
    let [push, again, one, one_rss, fleet, slowest] = *t;
    let mib = bytes as f64 / (1 << 20) as f64;
    let json = serde_json::json!({
        "latencyMs": args.endpoint.latency_ms,
        "closure": {"paths": args.paths + 1, "sizeMiB": args.size_mib, "cacheMiB": mib},
        "ciPushSecs": push, "ciPushAgainSecs": again,
        "hostFetchSecs": one, "hostFetchPeakRssMiB": one_rss, "hostFetchMiB": mib,
        "fleet": {"hosts": args.hosts, "parallel": args.parallel, "secs": fleet, "slowestHostSecs": slowest, "mib": mib * args.hosts as f64},
        "sourceBuildSecs": source, "sourceBuildOverHostFetch": source.map(|s| s / one),
    });
    let ratio = source
        .map(|s| format!("{:.0}x faster (target >= 20x)", s / one))
        .unwrap_or("n/a (no source build measured)".into());
    let human = format!(
        "bench switch (a closure of {} paths, {} MiB of random bytes; {mib:.0} MiB in the cache; {})\n\
         CI, once per revision: nix copy to the cache {push:.2} s; again (nothing sent) {again:.2} s\n\
         one host: fetch its system from the cache {one:.2} s, {mib:.0} MiB, peak {one_rss:.0} MiB; no compiler\n\
         the old way on one host: a release build of the host binary {}\n\
         host fetch vs source build: {ratio}\n\
         {} hosts, {} at a time: {fleet:.2} s in all (slowest host {slowest:.2} s), {:.0} MiB; the build work was done once\n",
        args.paths + 1,
        args.size_mib,
        latency_note(args.endpoint.latency_ms),
        source.map(|s| format!("{s:.0} s (measured once, kept in target/bench/switch)")).unwrap_or("not measured".into()),
        args.hosts,
        args.parallel,
        mib * args.hosts as f64,
    );
    ctx.out.emit(&Report { json, human })
}
