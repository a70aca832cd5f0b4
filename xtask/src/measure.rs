//! What every benchmark shares: a child process measured for wall time
//! and peak memory, the benchmarks' scratch directory, a fresh emulator
//! (behind a proxy adding AWS-like latency when asked),
//! and a report that prints as text or JSON. Benchmarks measure; they
//! never assert.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use testkit::emulator::Emulator;
use testkit::proxy::{Proxy, ProxyConfig};

/// One child process: wall time, peak resident memory, what it printed.
#[derive(Debug, Clone)]
pub struct Measured {
    pub secs: f64,
    /// CPU time the child itself used (user + system): its own work, as
    /// opposed to waiting on the endpoint.
    pub cpu_secs: f64,
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
    // SAFETY: wait4 on our own child, not yet reaped (Child::wait was never
    // called), writing only into `status` and `usage`, which we own.
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
    let cpu = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu_secs = cpu(usage.ru_utime) + cpu(usage.ru_stime);
    Ok(Measured { secs, cpu_secs, max_rss_mib: usage.ru_maxrss as f64 / 1024.0, stdout })
}

pub fn bench_dir(name: &str) -> Result<PathBuf> {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| testkit::repo_root().join("target"));
    let dir = target.join("bench").join(name);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Where a benchmark's children send their AWS requests: a fresh emulator,
/// behind a proxy that adds a fixed delay to every request when one is asked
/// (AWS answers in tens of milliseconds; loopback in a few). Every side of a
/// comparison goes through the same one.
pub struct Endpoint {
    pub emulator: Emulator,
    proxy: Option<Proxy>,
}

impl Endpoint {
    /// A fresh emulator (its start is not measured); `latency_ms` > 0 puts
    /// the proxy in front of it.
    pub fn start(latency_ms: u64) -> Result<Endpoint> {
        let emulator = Emulator::start()?;
        let proxy = match latency_ms {
            0 => None,
            ms => Some(Proxy::start(&emulator.endpoint(), ProxyConfig::latency(Duration::from_millis(ms)))?),
        };
        Ok(Endpoint { emulator, proxy })
    }

    /// The URL children are given (`AWS_ENDPOINT_URL`, `--endpoint-url`).
    pub fn url(&self) -> String {
        self.proxy.as_ref().map_or_else(|| self.emulator.endpoint(), Proxy::endpoint)
    }

    /// Requests that went through the proxy (0 without one).
    pub fn requests(&self) -> u64 {
        self.proxy.as_ref().map_or(0, Proxy::requests)
    }

    /// Create buckets straight on the emulator (set-up, not measured, no delay).
    pub fn create_buckets(&self, buckets: &[&str]) -> Result<()> {
        tokio::runtime::Handle::current().block_on(async {
            let settings = clawdinator::aws::Settings::local(&self.emulator.endpoint());
            let s3 = clawdinator::aws::Aws::load(&settings).await?.s3();
            for bucket in buckets {
                s3.create_bucket()
                    .bucket(*bucket)
                    .send()
                    .await
                    .map_err(|e| clawdinator::aws::error("S3 CreateBucket", bucket, e))?;
            }
            anyhow::Ok(())
        })
    }
}

/// A fresh endpoint with the bucket the old way uses.
pub fn fresh_emulator(latency_ms: u64) -> Result<Endpoint> {
    let endpoint = Endpoint::start(latency_ms)?;
    endpoint.create_buckets(&["bench-old"])?;
    Ok(endpoint)
}

/// How the endpoint was set, for a report's first line.
pub fn latency_note(latency_ms: u64) -> String {
    match latency_ms {
        0 => "emulator on loopback, no added latency".into(),
        ms => format!("{ms} ms added to every request by a proxy in front of the emulator"),
    }
}

pub struct Report {
    pub json: serde_json::Value,
    pub human: String,
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
