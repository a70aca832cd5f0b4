//! The fleet's secrets: the declarative list (`nix/secrets.json`, also read by
//! the NixOS module), the age identity, and `cargo xtask secrets check`.
//!
//! Plaintext only ever lives in `Zeroizing` buffers in memory.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::flags::SecretsArgs;
use crate::registry::{self, Registry};

pub const DEFAULT_SPEC: &str = "nix/secrets.json";
pub const AGE_KEY_NAME: &str = "clawdinator.agekey";

/// Which secrets a host needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// Every instance gets these (file names without `.age`).
    pub common: Vec<String>,
    /// Per-instance Discord tokens are named with this prefix.
    pub instance_token_prefix: String,
    #[serde(rename = "_comment", default, skip_serializing)]
    pub comment: Option<String>,
}

impl Spec {
    pub fn load(path: &Path) -> Result<Spec> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the secrets list {}", path.display()))?;
        let spec: Spec =
            serde_json::from_str(&text).with_context(|| format!("{} is not a valid secrets list", path.display()))?;
        if spec.instance_token_prefix != registry::TOKEN_SECRET_PREFIX {
            bail!(
                "{}: instanceTokenPrefix is {:?} but the fleet registry requires {:?}",
                path.display(),
                spec.instance_token_prefix,
                registry::TOKEN_SECRET_PREFIX
            );
        }
        for name in &spec.common {
            if name.starts_with(&spec.instance_token_prefix) || name.contains('/') || name.ends_with(".age") {
                bail!(
                    "{}: common secret {name:?} must be a plain name without .age that is not a Discord token",
                    path.display()
                );
            }
        }
        Ok(spec)
    }

    /// The file names one instance must receive: every common secret and its own token.
    pub fn files_for(&self, instance: &registry::Instance) -> Vec<String> {
        let mut files: Vec<String> = self.common.iter().map(|n| format!("{n}.age")).collect();
        files.push(instance.token_file());
        files.sort();
        files
    }

    pub fn is_token_file(&self, file: &str) -> bool {
        file.starts_with(&self.instance_token_prefix) && file.ends_with(".age")
    }
}

/// The X25519 identities in an age identity file (`age-keygen` format).
pub fn load_identities(path: &Path) -> Result<Vec<age::x25519::Identity>> {
    let text = Zeroizing::new(std::fs::read_to_string(path).with_context(|| {
        format!("cannot read the age identity {} (pass --age-key or AGE_KEY_FILE)", path.display())
    })?);
    let mut identities = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // The parse error could echo key material; say only where it is.
        match line.parse::<age::x25519::Identity>() {
            Ok(identity) => identities.push(identity),
            Err(_) => bail!("{} line {}: not an age X25519 identity (AGE-SECRET-KEY-1…)", path.display(), n + 1),
        }
    }
    if identities.is_empty() {
        bail!("{} holds no age identity", path.display());
    }
    Ok(identities)
}

/// Is this an age file at all? Parses the header only; needs no key.
pub fn check_header(bytes: &[u8]) -> Result<()> {
    age::Decryptor::new(bytes).map(|_| ()).map_err(|e| anyhow::anyhow!("not a well-formed age file: {e}"))
}

/// Decrypt in memory. The error names the file and the key file, never content.
pub fn decrypt(
    file: &Path,
    bytes: &[u8],
    identities: &[age::x25519::Identity],
    key_file: &Path,
) -> Result<Zeroizing<Vec<u8>>> {
    let decryptor = age::Decryptor::new(bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a well-formed age file: {e}", file.display()))?;
    let mut reader = decryptor.decrypt(identities.iter().map(|i| i as &dyn age::Identity)).map_err(|_| {
        anyhow::anyhow!("cannot decrypt {} with the identity in {}", file.display(), key_file.display())
    })?;
    let mut plain = Zeroizing::new(Vec::new());
    reader.read_to_end(&mut plain).map_err(|_| {
        anyhow::anyhow!(
            "cannot decrypt {} with the identity in {}: the payload is corrupt",
            file.display(),
            key_file.display()
        )
    })?;
    Ok(plain)
}

/// Encrypt to the identities' recipients (tests, benchmarks and `--local` fixtures).
pub fn encrypt(plain: &[u8], recipients: &[age::x25519::Recipient]) -> Result<Vec<u8>> {
    use std::io::Write;
    let encryptor = age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))?;
    let mut out = Vec::new();
    let mut writer = encryptor.wrap_output(&mut out)?;
    writer.write_all(plain)?;
    writer.finish()?;
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// The file, secret or instance concerned.
    pub subject: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{label}: {}: {}", self.subject, self.message)
    }
}

/// What `secrets check` found; `ok` when there is no error.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub secrets_dir: String,
    pub checked: usize,
    pub decrypted: usize,
    pub orphans: Vec<String>,
    pub findings: Vec<Finding>,
    pub ok: bool,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            writeln!(f, "{finding}")?;
        }
        let verdict = if self.ok { "ok" } else { "FAILED" };
        writeln!(
            f,
            "secrets check {verdict}: {} file(s) in {}, {} decrypted, {} orphan token(s), {} error(s)",
            self.checked,
            self.secrets_dir,
            self.decrypted,
            self.orphans.len(),
            self.findings.iter().filter(|f| f.severity == Severity::Error).count()
        )
    }
}

/// Where the secrets come from.
#[derive(Debug, Clone)]
pub struct Sources {
    pub registry: PathBuf,
    pub spec: PathBuf,
    pub secrets_dir: PathBuf,
    pub age_key: PathBuf,
}

impl Sources {
    pub fn from_flags(args: &SecretsArgs) -> Sources {
        Sources {
            registry: args.instances.path.clone(),
            spec: args.spec.clone(),
            secrets_dir: args.secrets_dir.clone(),
            age_key: args.age_key.clone(),
        }
    }
}

/// The findings of one check, gathered as it goes.
#[derive(Default)]
struct Findings(Vec<Finding>);

impl Findings {
    fn add(&mut self, severity: Severity, subject: impl fmt::Display, message: impl Into<String>) {
        self.0.push(Finding { severity, subject: subject.to_string(), message: message.into() });
    }

    fn error(&mut self, subject: impl fmt::Display, message: impl Into<String>) {
        self.add(Severity::Error, subject, message);
    }

    fn ok(&self) -> bool {
        !self.0.iter().any(|f| f.severity == Severity::Error)
    }
}

/// The `*.age` files in the secrets directory.
fn present_files(sources: &Sources, findings: &mut Findings) -> BTreeSet<String> {
    match std::fs::read_dir(&sources.secrets_dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".age"))
            .collect(),
        Err(e) => {
            let message = format!("cannot read the secrets directory: {e} (pass --secrets-dir or SECRETS_DIR)");
            findings.error(sources.secrets_dir.display(), message);
            BTreeSet::new()
        }
    }
}

/// The files the fleet needs; each one missing is an error, each token no
/// instance uses is an orphan (a warning). Returns (wanted, orphans).
fn wanted_files(
    sources: &Sources,
    registry: &Registry,
    spec: &Spec,
    present: &BTreeSet<String>,
    findings: &mut Findings,
) -> (BTreeSet<String>, Vec<String>) {
    let mut wanted: BTreeSet<String> = spec.common.iter().map(|n| format!("{n}.age")).collect();
    wanted.extend(registry.instances.values().map(|i| i.token_file()));
    for file in wanted.iter().filter(|f| !present.contains(*f)) {
        let who = registry
            .instances
            .values()
            .find(|i| &i.token_file() == file)
            .map(|i| format!("the Discord token of instance `{}`", i.host))
            .unwrap_or_else(|| "a common secret every instance needs".into());
        findings.error(sources.secrets_dir.join(file).display(), format!("missing: {who}"));
    }
    let orphans: Vec<String> =
        present.iter().filter(|f| spec.is_token_file(f) && !wanted.contains(*f)).cloned().collect();
    for file in &orphans {
        let message = "orphan: no instance in the registry uses this token";
        findings.add(Severity::Warning, sources.secrets_dir.join(file).display(), message);
    }
    (wanted, orphans)
}

/// Read one file: a well-formed age file that decrypts (when there is an
/// identity). Returns whether it was decrypted.
fn check_file(
    path: &Path,
    identities: Option<&[age::x25519::Identity]>,
    key_file: &Path,
    findings: &mut Findings,
) -> bool {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            findings.error(path.display(), format!("cannot read: {e}"));
            return false;
        }
    };
    if let Err(e) = check_header(&bytes) {
        findings.error(path.display(), format!("{e:#}"));
        return false;
    }
    let Some(ids) = identities else { return false };
    match decrypt(path, &bytes, ids, key_file) {
        Ok(_) => true,
        Err(e) => {
            findings.error(path.display(), format!("{e:#}"));
            false
        }
    }
}

/// Check everything a bundle or a seed needs, reporting all problems at
/// once. `require_identity`: the identity must be present (a bundle ships it).
pub fn check(sources: &Sources, require_identity: bool) -> (CheckReport, Option<(Registry, Spec)>) {
    let mut findings = Findings::default();
    let registry = Registry::load(&sources.registry)
        .map_err(|problems| problems.0.iter().for_each(|p| findings.error(sources.registry.display(), p.to_string())))
        .ok();
    let spec = Spec::load(&sources.spec).map_err(|e| findings.error(sources.spec.display(), format!("{e:#}"))).ok();
    let identities = match load_identities(&sources.age_key) {
        Ok(ids) => Some(ids),
        Err(e) if require_identity => {
            findings.error(sources.age_key.display(), format!("{e:#}"));
            None
        }
        Err(_) => None,
    };
    let present = present_files(sources, &mut findings);
    let (wanted, orphans) = match (&registry, &spec) {
        (Some(registry), Some(spec)) => wanted_files(sources, registry, spec, &present, &mut findings),
        _ => (BTreeSet::new(), Vec::new()),
    };
    let to_check: Vec<&String> = present.iter().filter(|f| wanted.is_empty() || wanted.contains(*f)).collect();
    let decrypted = to_check
        .iter()
        .filter(|f| check_file(&sources.secrets_dir.join(f), identities.as_deref(), &sources.age_key, &mut findings))
        .count();
    if identities.is_none() && !require_identity {
        let message = "no age identity: files were checked for well-formed headers but not decrypted";
        findings.add(Severity::Warning, sources.age_key.display(), message);
    }
    let ok = findings.ok();
    let secrets_dir = sources.secrets_dir.display().to_string();
    let report = CheckReport { secrets_dir, checked: to_check.len(), decrypted, orphans, findings: findings.0, ok };
    let loaded = match (registry, spec) {
        (Some(r), Some(s)) if ok => Some((r, s)),
        _ => None,
    };
    (report, loaded)
}

impl SecretsArgs {
    /// `secrets check`: every problem of the age files, at once.
    pub async fn check(self, ctx: &crate::ctx::Ctx) -> Result<()> {
        let sources = Sources::from_flags(&self);
        let (report, _) = tokio::task::spawn_blocking(move || check(&sources, false)).await?;
        ctx.out.emit(&report)?;
        if !report.ok {
            bail!("secrets check found errors (see above)");
        }
        Ok(())
    }
}
