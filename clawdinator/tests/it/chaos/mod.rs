//! Chaos: the commands against an endpoint that fails as AWS does
//! (`testkit::proxy` in front of the emulator, 5% of requests failing and
//! 1% of connections dropped, seeded). Each run either finishes by retrying
//! or fails naming what failed, one re-run finishes the work, and then the
//! end state is checked in the emulator itself (not through the proxy).
//!
//! Helpers for other chaos tests: [`chaos`] / [`chaos_with`] (emulator, bucket and proxy),
//! [`Chaos::cli`] / [`Chaos::aws`] (a CLI or an SDK configuration through
//! the proxy), [`Chaos::run_until_done`] (run, then at most one re-run),
//! [`Chaos::report`] (print the faults survived), and the end-state checks
//! [`no_orphans`], [`one_ami_per_digest`], [`secret_versions`],
//! [`audit_verifies`].

mod fleet;
mod proxy;
mod runs;
mod secrets;

use std::collections::BTreeMap;
use std::time::Duration;

use clawdinator::aws::{Aws, Settings, Timeouts};
use clawdinator::image::ami;
use testkit::env::{env, Env};
use testkit::proxy::{Proxy, ProxyConfig};

/// The clients' read timeout through the proxy: a stalled response (held
/// [`STALL`]) costs this much, and a real answer from the emulator on
/// loopback is never this slow.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
pub const STALL: Duration = Duration::from_secs(4);

pub struct Chaos {
    pub env: Env,
    pub proxy: Proxy,
}

/// A fresh emulator (with its bucket) behind a proxy with
/// [`ProxyConfig::chaos`]`(seed)`.
pub async fn chaos(seed: u64) -> Chaos {
    chaos_with(ProxyConfig { stall: STALL, ..ProxyConfig::chaos(seed) }).await
}

/// A fresh emulator (with its bucket) behind a proxy with `config`.
pub async fn chaos_with(config: ProxyConfig) -> Chaos {
    let env = env().await;
    let proxy = Proxy::start(&env.emulator.endpoint(), config).unwrap();
    Chaos { env, proxy }
}

impl Chaos {
    /// `program` through the proxy, with the tighter read timeout.
    pub fn cli(&self, program: &str) -> std::process::Command {
        let mut command = self.env.cli(program);
        command
            .env("AWS_ENDPOINT_URL", self.proxy.endpoint())
            .env("CLAWDINATOR_READ_TIMEOUT", READ_TIMEOUT.as_secs().to_string())
            .stdin(std::process::Stdio::null());
        command
    }

    /// An SDK configuration through the proxy, for runs driven through the library.
    pub async fn aws(&self) -> Aws {
        let mut settings = Settings::local(&self.proxy.endpoint());
        settings.timeouts = Timeouts { read: READ_TIMEOUT, ..Timeouts::default() };
        Aws::load(&settings).await.unwrap()
    }

    /// Run the clawdinator CLI with `args` through the proxy; when it fails,
    /// its error must name what failed, and one re-run must succeed.
    /// Returns the successful run's stdout and how many runs it took.
    pub fn run_until_done(&self, args: &[String], vars: &[(&str, &str)]) -> (String, usize) {
        for run in 1..=2 {
            let mut command = self.cli(env!("CARGO_BIN_EXE_clawdinator"));
            let out = command.args(args).envs(vars.iter().copied()).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                return (String::from_utf8_lossy(&out.stdout).into_owned(), run);
            }
            assert!(run == 1, "the re-run of {args:?} failed too:\n{stderr}");
            assert!(stderr.contains(" failed"), "{args:?} failed without naming what failed:\n{stderr}");
            eprintln!("chaos: {args:?} failed once, naming: {}", stderr.lines().last().unwrap_or_default());
        }
        unreachable!()
    }

    /// Print what the proxy injected (`cargo test -- --nocapture` shows it)
    /// and return the total.
    pub fn report(&self, name: &str) -> u64 {
        let faults = self.proxy.faults();
        let total = self.proxy.injected();
        eprintln!("chaos {name}: survived {total} faults in {} requests: {faults:?}", self.proxy.requests());
        total
    }
}

/// Nothing left behind: no multipart upload in `bucket`, and every object
/// key in it is one of `keys`; every snapshot of this account is the root
/// of one of its AMIs.
pub async fn no_orphans(env: &Env, bucket: &str, keys: &[String]) {
    let s3 = env.aws.s3();
    let uploads = s3.list_multipart_uploads().bucket(bucket).send().await.unwrap();
    assert!(uploads.uploads().is_empty(), "multipart uploads left in {bucket}: {:?}", uploads.uploads());
    let listed = s3.list_objects_v2().bucket(bucket).send().await.unwrap();
    let mut found: Vec<String> = listed.contents().iter().filter_map(|o| o.key().map(str::to_string)).collect();
    found.sort();
    let mut want = keys.to_vec();
    want.sort();
    assert_eq!(found, want, "the objects in {bucket}");
    let ec2 = env.aws.ec2();
    let images = ec2.describe_images().owners("self").send().await.unwrap();
    let roots: Vec<&str> = images
        .images()
        .iter()
        .flat_map(|i| i.block_device_mappings())
        .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()))
        .collect();
    let snapshots = ec2.describe_snapshots().owner_ids("self").send().await.unwrap();
    for snapshot in snapshots.snapshots() {
        let id = snapshot.snapshot_id().unwrap_or_default();
        assert!(roots.contains(&id), "snapshot {id} is no AMI's root: orphaned");
    }
}

/// Exactly one AMI for each image digest (`clawdinator:image-sha256`), each
/// with the fleet's tags; returns digest -> AMI id.
pub async fn one_ami_per_digest(env: &Env) -> BTreeMap<String, String> {
    let images = env.aws.ec2().describe_images().owners("self").send().await.unwrap();
    let mut by_digest = BTreeMap::new();
    for image in images.images() {
        let id = image.image_id().unwrap_or_default().to_string();
        let digest = ami::tag(image, ami::TAG_SHA256).unwrap_or_else(|| panic!("{id} has no digest tag"));
        assert_eq!(ami::tag(image, ami::TAG_FLEET), Some("true"), "{id}");
        assert_eq!(ami::tag(image, ami::TAG_APP), Some("clawdinator"), "{id}");
        assert_eq!(ami::tag(image, "Name"), image.name(), "{id}");
        let before = by_digest.insert(digest.to_string(), id.clone());
        assert!(before.is_none(), "two AMIs for image {digest}: {before:?} and {id}");
    }
    by_digest
}

/// Every secret by name with its number of versions.
pub async fn secret_versions(env: &Env) -> BTreeMap<String, usize> {
    let sm = env.aws.secrets_manager();
    let listed = sm.list_secrets().send().await.unwrap();
    let mut out = BTreeMap::new();
    for secret in listed.secret_list() {
        let name = secret.name().unwrap_or_default();
        let versions = sm.list_secret_version_ids().secret_id(name).send().await.unwrap();
        out.insert(name.to_string(), versions.versions().len());
    }
    out
}

/// `audit verify` on the test's audit log (and its S3 copies, with
/// `CLAWDINATOR_AUDIT_BUCKET` among `vars`) passes.
pub fn audit_verifies(env: &Env, vars: &[(&str, &str)]) {
    let mut command = env.cli(env!("CARGO_BIN_EXE_clawdinator"));
    let out = command.args(["audit", "verify"]).envs(vars.iter().copied()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "audit verify: {stderr}{}", String::from_utf8_lossy(&out.stdout));
}
