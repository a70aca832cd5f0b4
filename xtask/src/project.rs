//! Where the repository is, and the default paths inside it.

use std::path::{Path, PathBuf};

/// The repository root. The xtask binary is always built from this checkout
/// (`cargo xtask` is `cargo run`), so the manifest directory is trustworthy.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the repository root")
        .to_path_buf()
}

/// Resolve a path given on the command line: absolute paths stay, relative
/// ones are taken from the current directory (as every CLI user expects).
pub fn resolve(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_path_buf())
    }
}

/// The checked-out revision of this repository, `-dirty` when the work tree
/// has uncommitted changes; None outside a git checkout.
pub fn git_revision() -> Option<String> {
    let sh = xshell::Shell::new().ok()?;
    sh.change_dir(root());
    let rev = xshell::cmd!(sh, "git rev-parse HEAD").quiet().ignore_stderr().read().ok()?;
    let dirty = !xshell::cmd!(sh, "git status --porcelain").quiet().ignore_stderr().read().ok()?.trim().is_empty();
    Some(if dirty { format!("{rev}-dirty") } else { rev })
}

/// A one-line fact the instance's user data wrote under /etc/clawdinator
/// (its name, bucket, prefix, region, EFS id): trimmed, None when the file
/// is missing or empty.
pub fn host_setting(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(text.trim().to_string()).filter(|s| !s.is_empty())
}

/// A fact the command line gives (`flag`), else what user data wrote in
/// `file`; neither is a usage error saying what is missing (`what`), how to
/// give it (`how`), and the file.
pub fn given_or_written(flag: Option<String>, file: &Path, what: &str, how: &str) -> anyhow::Result<String> {
    flag.or_else(|| host_setting(file))
        .ok_or_else(|| crate::output::UsageError(format!("no {what}: {how} or write it to {}", file.display())).into())
}

/// The instance a host-side command works for.
pub fn instance_name(flag: Option<String>, file: &Path) -> anyhow::Result<String> {
    given_or_written(flag, file, "instance name", "pass --instance")
}
