//! Pinned npm packages in `target/tools/npm` of the checkout, installed on
//! first use (the HCL parser, the IAM simulator).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

/// The directory of an npm package pinned at `version`, installed if needed.
pub fn npm_package(root: &Path, name: &str, version: &str) -> Result<PathBuf> {
    let prefix = root.join("target/tools/npm");
    let dir = prefix.join("node_modules").join(name);
    let installed = |dir: &Path| -> Option<String> {
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("package.json")).ok()?).ok()?;
        manifest["version"].as_str().map(str::to_string)
    };
    if installed(&dir).as_deref() == Some(version) {
        return Ok(dir);
    }
    eprintln!("tools: installing {name}@{version} from npm into target/tools/npm (once)");
    std::fs::create_dir_all(&prefix)?;
    let sh = Shell::new()?;
    let spec = format!("{name}@{version}");
    cmd!(sh, "npm install --prefix {prefix} --no-audit --no-fund --no-save --loglevel=error {spec}")
        .quiet()
        .run()
        .with_context(|| format!("cannot install {spec} (npm needs node and the npm registry)"))?;
    match installed(&dir) {
        Some(v) if v == version => Ok(dir),
        other => bail!("after installing, {} has version {other:?}, expected {version}", dir.display()),
    }
}
