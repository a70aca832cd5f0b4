//! The crate layout's promise, checked: what ships (the host binary, which
//! `nix/package.nix` builds, and the Lambda) carries no dev harness. The
//! dependency graph cargo resolves for them holds neither the test kit nor
//! xtask, and the built host and Lambda binaries hold none of the emulator
//! shim's text.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use xshell::{cmd, Shell};

/// The packages that ship, and the binary each becomes.
pub const SHIPPED: [(&str, &str); 2] = [("clawdinator", "clawdinator"), ("clawdinator-control-api", "bootstrap")];

/// The packages that must never be in a shipped package's normal graph.
pub const DEV_ONLY: [&str; 2] = ["clawdinator-testkit", "xtask"];

/// Text only the emulator shim has: a binary holding it carries the harness.
pub const SHIM_MARKERS: [&str; 2] = ["/_shim/faults", "snapshot_pending_polls"];

pub fn check(sh: &Shell, root: &Path) -> Result<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for (package, _) in SHIPPED {
        let tree = cmd!(sh, "{cargo} tree --offline --locked -e normal -p {package} --prefix none")
            .quiet()
            .read()
            .with_context(|| format!("cargo tree of {package}"))?;
        ensure_no_dev_package(package, &tree)?;
    }
    let nix = std::fs::read_to_string(root.join("nix/package.nix"))?;
    ensure!(
        nix.contains(r#"cargoBuildFlags = [ "--package" "clawdinator" "--bin" "clawdinator" ];"#),
        "nix/package.nix must build only the host binary (--package clawdinator --bin clawdinator)"
    );
    let mut checked = Vec::new();
    for (_, binary) in SHIPPED {
        for profile in ["debug", "release"] {
            let path = root.join("target").join(profile).join(binary);
            if path.exists() {
                ensure_no_shim_text(&path)?;
                checked.push(format!("{profile}/{binary}"));
            }
        }
    }
    ensure!(
        checked.iter().any(|c| c == "debug/clawdinator"),
        "target/debug/clawdinator is not built (cargo test builds it): nothing to check"
    );
    Ok(format!(
        "no dev crate in the graph of {}; no shim text in {}",
        SHIPPED.map(|s| s.0).join(", "),
        checked.join(", ")
    ))
}

fn ensure_no_dev_package(package: &str, tree: &str) -> Result<()> {
    let found: Vec<&str> = tree.lines().filter(|l| DEV_ONLY.iter().any(|d| l.starts_with(&format!("{d} v")))).collect();
    ensure!(found.is_empty(), "{package} depends on dev-only crates (normal dependencies): {}", found.join(", "));
    Ok(())
}

fn ensure_no_shim_text(binary: &PathBuf) -> Result<()> {
    let bytes = std::fs::read(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    for marker in SHIM_MARKERS {
        let found = bytes.windows(marker.len()).any(|w| w == marker.as_bytes());
        ensure!(!found, "{} holds the emulator shim's text {marker:?}: the dev harness ships", binary.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dev_crate_in_a_shipped_graph_is_refused() {
        let tree =
            "clawdinator v0.1.0 (/x/clawdinator)\nanyhow v1.0.0\nclawdinator-testkit v0.1.0 (/x/xtask/testkit)\n";
        let err = ensure_no_dev_package("clawdinator", tree).unwrap_err().to_string();
        assert!(err.contains("clawdinator-testkit"), "{err}");
        ensure_no_dev_package("clawdinator", "clawdinator v0.1.0\nanyhow v1.0.0\n").unwrap();
    }

    #[test]
    fn a_binary_with_the_shim_in_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("clawdinator");
        std::fs::write(&binary, b"\x7fELF...POST /_shim/faults...").unwrap();
        assert!(ensure_no_shim_text(&binary).is_err());
        std::fs::write(&binary, b"\x7fELF...clean...").unwrap();
        ensure_no_shim_text(&binary).unwrap();
    }

    #[test]
    fn the_shim_still_has_the_markers() {
        // Markers the shim lost would make the binary check pass vacuously.
        let package = testkit::repo_root().join("xtask/testkit/moto_shim");
        let files = crate::selftest::project_files(&package, ".py");
        assert!(files.len() > 1, "the shim package has no modules in {}", package.display());
        let shim: String = files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
        assert!(SHIM_MARKERS.iter().all(|m| shim.contains(m)), "update SHIM_MARKERS");
    }
}
