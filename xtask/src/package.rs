//! `cargo xtask control-api package`: the control API for Lambda's
//! `provided.al2023` runtime. Built with cargo-zigbuild against glibc 2.34
//! (the runtime's), checked so that no symbol needs a newer glibc, zipped
//! with the registry the function reads, and run once the way Lambda runs
//! it (`lambda_smoke`) before the zip is written. Tools install themselves into
//! `target/tools`: zig from PyPI's `ziglang` wheel, cargo-zigbuild from
//! crates.io.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use clawdinator::ctx::Ctx;
use serde::Serialize;
use xshell::{cmd, Shell};

use crate::flags;

/// The newest glibc `provided.al2023` has.
pub const GLIBC_LIMIT: (u32, u32) = (2, 34);
/// Lambda's quotas for a zip uploaded with the function (what OpenTofu's
/// `filename` does): 50 MB zipped, 250 MB unzipped ("Lambda quotas",
/// docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html).
pub const ZIPPED_LIMIT: u64 = 50 * 1024 * 1024;
pub const UNZIPPED_LIMIT: u64 = 250 * 1024 * 1024;
const TARGET: &str = "x86_64-unknown-linux-gnu.2.34";
const ZIGLANG: &str = "0.17.1";
const ZIGBUILD: &str = "0.24.1";

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PackageReport {
    pub zip: String,
    pub binary: String,
    pub newest_glibc: String,
    pub zip_bytes: u64,
    pub smoke: crate::lambda_smoke::Smoke,
}

impl std::fmt::Display for PackageReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} ({:.1} MB; bootstrap needs glibc {} at most; provided.al2023 has 2.34)",
            self.zip,
            self.zip_bytes as f64 / (1024.0 * 1024.0),
            self.newest_glibc
        )?;
        writeln!(
            f,
            "smoke: under a Lambda Runtime API, a status request answered {}, a self-deploy {}, {} audit records",
            self.smoke.status, self.smoke.self_deploy, self.smoke.audit_records
        )
    }
}

/// The GLIBC_x.y versions an ELF binary's dynamic symbols need (readelf).
pub fn glibc_versions(binary: &Path) -> Result<Vec<(u32, u32)>> {
    let sh = Shell::new()?;
    let text = cmd!(sh, "readelf --dyn-syms --wide {binary}").quiet().read().context("readelf (binutils) is needed")?;
    let mut versions: Vec<(u32, u32)> = text
        .split("GLIBC_")
        .skip(1)
        .filter_map(|rest| {
            let version: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
            let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
        })
        .collect();
    versions.sort();
    versions.dedup();
    Ok(versions)
}

/// Refuse a binary that needs a glibc newer than `limit`.
pub fn check_glibc(binary: &Path, limit: (u32, u32)) -> Result<(u32, u32)> {
    let versions = glibc_versions(binary)?;
    let newest = versions.last().copied().context("the binary names no GLIBC symbol version: not a glibc build?")?;
    ensure!(
        newest <= limit,
        "{} needs GLIBC_{}.{}, newer than the runtime's {}.{}: it would not start on provided.al2023",
        binary.display(),
        newest.0,
        newest.1,
        limit.0,
        limit.1
    );
    Ok(newest)
}

/// Refuse a package Lambda would refuse, before anything is uploaded.
pub fn check_size(zipped: u64, unzipped: u64) -> Result<()> {
    let mb = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    ensure!(zipped <= ZIPPED_LIMIT, "the zip is {:.1} MB; Lambda takes at most 50 MB uploaded directly", mb(zipped));
    ensure!(
        unzipped <= UNZIPPED_LIMIT,
        "the package unzips to {:.1} MB; Lambda takes at most 250 MB unzipped",
        mb(unzipped)
    );
    Ok(())
}

fn cargo_zigbuild(root: &Path) -> Result<PathBuf> {
    let bin = root.join("target/tools/bin/cargo-zigbuild");
    if !bin.exists() {
        eprintln!("tools: installing cargo-zigbuild {ZIGBUILD} from crates.io into target/tools (once)");
        let sh = Shell::new()?;
        let tools = root.join("target/tools");
        cmd!(sh, "cargo install --quiet --locked cargo-zigbuild --version {ZIGBUILD} --root {tools}").run()?;
    }
    Ok(bin)
}

/// Build, check and zip; returns where the zip is.
pub fn package(root: &Path, out: &Path) -> Result<PackageReport> {
    let python = crate::tools::pip_tool(root, "ziglang", "ziglang", ZIGLANG, "python")?;
    let zigbuild = cargo_zigbuild(root)?;
    let sh = Shell::new()?;
    let binary = build(&sh, root, &python, &zigbuild)?;
    let newest = check_glibc(&binary, GLIBC_LIMIT)?;
    let staging = stage(&sh, root, &binary)?;
    let smoke = zip_checked(&sh, &python, staging.path(), out)?;
    Ok(PackageReport {
        zip: out.display().to_string(),
        binary: binary.display().to_string(),
        newest_glibc: format!("{}.{}", newest.0, newest.1),
        zip_bytes: std::fs::metadata(out)?.len(),
        smoke,
    })
}

/// Build `bootstrap` with cargo-zigbuild against the runtime's glibc; where
/// the binary is.
fn build(sh: &Shell, root: &Path, python: &Path, zigbuild: &Path) -> Result<PathBuf> {
    sh.change_dir(root);
    // cargo-zigbuild runs `python3 -m ziglang` when no zig is on PATH.
    let path =
        format!("{}:{}", python.parent().expect("a venv bin").display(), std::env::var("PATH").unwrap_or_default());
    sh.set_var("PATH", path);
    cmd!(sh, "{zigbuild} zigbuild --release --locked -p clawdinator-control-api --bin bootstrap --target {TARGET}")
        .run()?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let binary = target_dir.join("x86_64-unknown-linux-gnu/release/bootstrap");
    ensure!(binary.exists(), "the build left no {}", binary.display());
    Ok(binary)
}

/// A directory holding what the zip holds: the stripped `bootstrap` and
/// the registry (`instances.json`).
fn stage(sh: &Shell, root: &Path, binary: &Path) -> Result<tempfile::TempDir> {
    let staging = tempfile::tempdir()?;
    let bootstrap = staging.path().join("bootstrap");
    std::fs::copy(binary, &bootstrap)?;
    // The release profile keeps line tables for backtraces; in the function
    // they would only make the package too big for Lambda.
    cmd!(sh, "strip --strip-all {bootstrap}").quiet().run().context("strip (binutils) is needed")?;
    std::fs::copy(root.join(clawdinator::registry::DEFAULT_PATH), staging.path().join("instances.json"))?;
    Ok(staging)
}

/// Zip `staging` beside `out`, check its size and smoke-run it; only then
/// is it moved to `out` (on failure no zip is left).
fn zip_checked(sh: &Shell, python: &Path, staging: &Path, out: &Path) -> Result<crate::lambda_smoke::Smoke> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let partial = out.with_extension("zip.partial");
    sh.change_dir(staging);
    cmd!(sh, "{python} -m zipfile -c {partial} bootstrap instances.json").quiet().run()?;
    let unzipped =
        std::fs::metadata(staging.join("bootstrap"))?.len() + std::fs::metadata(staging.join("instances.json"))?.len();
    let checked = check_size(std::fs::metadata(&partial)?.len(), unzipped).and_then(|()| {
        eprintln!("smoke: running the packaged bootstrap under a loopback Lambda Runtime API and the local emulator");
        tokio::runtime::Handle::current().block_on(crate::lambda_smoke::smoke(staging))
    });
    let smoke = match checked {
        Ok(smoke) => smoke,
        Err(err) => {
            let _ = std::fs::remove_file(&partial);
            return Err(err.context(format!("no zip was written to {}", out.display())));
        }
    };
    std::fs::rename(&partial, out)?;
    if !out.exists() {
        bail!("no zip at {}", out.display());
    }
    Ok(smoke)
}

impl flags::ControlApi {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        match self {
            flags::ControlApi::Package { out } => {
                ctx.out.emit(&package(&testkit::repo_root(), &clawdinator::project::resolve(&out))?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_needing_a_newer_glibc_is_refused() {
        // This very test binary was linked against the build machine's glibc.
        let me = std::env::current_exe().unwrap();
        let newest = *glibc_versions(&me).unwrap().last().unwrap();
        assert!(check_glibc(&me, newest).is_ok());
        let err = check_glibc(&me, (2, 0)).unwrap_err().to_string();
        assert!(err.contains("newer than the runtime's 2.0"), "{err}");
    }

    #[test]
    fn a_package_over_lambdas_quotas_is_refused() {
        assert!(check_size(ZIPPED_LIMIT, UNZIPPED_LIMIT).is_ok());
        // What the unstripped build came to: 65 MB zipped, 416 MB unzipped.
        let err = check_size(65 << 20, 416 << 20).unwrap_err().to_string();
        assert!(err.contains("at most 50 MB"), "{err}");
        let err = check_size(40 << 20, 416 << 20).unwrap_err().to_string();
        assert!(err.contains("at most 250 MB unzipped"), "{err}");
    }
}
