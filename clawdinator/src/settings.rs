//! The facts an instance's user data wrote under `/etc/clawdinator` (its
//! name, bucket, prefix, region, EFS id): a generic image learns who it is
//! from them when a command line is silent.

use std::path::Path;

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
        .ok_or_else(|| crate::exit::UsageError(format!("no {what}: {how} or write it to {}", file.display())).into())
}

/// The instance a host-side command works for.
pub fn instance_name(flag: Option<String>, file: &Path) -> anyhow::Result<String> {
    given_or_written(flag, file, "instance name", "pass --instance")
}
