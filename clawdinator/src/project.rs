//! Paths as a command line gives them, and the revision of the checkout a
//! command runs in (operator and CI side).

use std::path::{Path, PathBuf};

/// Resolve a path given on the command line: absolute paths stay, relative
/// ones are taken from the current directory (as every CLI user expects).
pub fn resolve(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_path_buf())
    }
}

/// The revision of the git checkout around the current directory, `-dirty`
/// when its work tree has uncommitted changes; None outside a checkout.
pub fn git_revision() -> Option<String> {
    let sh = xshell::Shell::new().ok()?;
    let rev = xshell::cmd!(sh, "git rev-parse HEAD").quiet().ignore_stderr().read().ok()?;
    let dirty = !xshell::cmd!(sh, "git status --porcelain").quiet().ignore_stderr().read().ok()?.trim().is_empty();
    Some(if dirty { format!("{rev}-dirty") } else { rev })
}
