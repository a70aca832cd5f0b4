//! Check tools the project installs for itself into `target/tools/` on
//! first use, pinned: npm packages (`target/tools/npm`) and Python tools,
//! each in its own virtualenv (`target/tools/<name>`). A fresh machine needs
//! only node/npm and python3 with venv.

use std::path::{Path, PathBuf};

use anyhow::Result;

pub use testkit::npm::npm_package;

/// The path of `bin` from the PyPI package `package==version`, installed
/// into its own virtualenv `target/tools/<venv>` if needed.
pub fn pip_tool(root: &Path, venv: &str, package: &str, version: &str, bin: &str) -> Result<PathBuf> {
    let dir = root.join("target/tools").join(venv);
    testkit::venv::python_venv(&dir, &format!("{package}=={version}"))?;
    Ok(dir.join("bin").join(bin))
}
