//! `cargo xtask doctor`: every prerequisite, which commands need it, and how
//! to get it. Exits 0: it reports, it does not judge; `--ci` (the settings
//! the workflows need) exits 1 when one is missing, so a job stops first.

use std::fmt;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use clawdinator::aws;
use clawdinator::ctx::Ctx;
use testkit::emulator;

use crate::flags;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Missing,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    pub needed_by: &'static str,
    /// How to get it; empty when nothing needs doing.
    pub fix: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            let mark = match c.status {
                Status::Ok => " ok ",
                Status::Warn => "warn",
                Status::Missing => "MISS",
            };
            write!(f, "[{mark}] {:<18} {} (needed by: {})", c.name, c.detail, c.needed_by)?;
            if !c.fix.is_empty() {
                write!(f, "\n       {:<18} fix: {}", "", c.fix)?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

fn check(name: &'static str, needed_by: &'static str, result: Result<String, (Status, String, String)>) -> Check {
    match result {
        Ok(detail) => Check { name, status: Status::Ok, detail, needed_by, fix: String::new() },
        Err((status, detail, fix)) => Check { name, status, detail, needed_by, fix },
    }
}

fn missing(detail: impl Into<String>, fix: impl Into<String>) -> (Status, String, String) {
    (Status::Missing, detail.into(), fix.into())
}

/// First line of `program args…`, or None when it cannot run.
fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let sh = xshell::Shell::new().ok()?;
    let out = xshell::cmd!(sh, "{program} {args...}").quiet().ignore_stderr().read().ok()?;
    Some(out.lines().next().unwrap_or_default().trim().to_string())
}

pub fn check_nix() -> Check {
    let result = match clawdinator::image::build::nix_features() {
        None => Err(missing(
            "nix not found",
            "run `nix develop` from a Nix install (https://nixos.org/download), or on Debian `apt-get install nix-bin`",
        )),
        Some((version, features)) if features.split_whitespace().any(|f| f == "flakes") => {
            Ok(format!("{version}, flakes enabled"))
        }
        Some((version, _)) => Err((
            Status::Warn,
            format!("{version}, flakes not enabled"),
            "add `experimental-features = nix-command flakes` to ~/.config/nix/nix.conf".into(),
        )),
    };
    check("nix", "image build", result)
}

pub fn check_kvm() -> Check {
    let result = if !Path::new("/dev/kvm").exists() {
        Err(missing(
            "/dev/kvm not found",
            "build images on a host with KVM (bare metal or nested virtualisation), or let CI build them",
        ))
    } else if std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_err() {
        Err(missing("/dev/kvm exists but is not read-writable by this user", "add yourself to the `kvm` group"))
    } else {
        Ok("/dev/kvm usable".into())
    };
    check("kvm", "image build", result)
}

pub fn check_tool(name: &'static str, args: &[&str], needed_by: &'static str, fix: &str) -> Check {
    let result = first_line(name, args).ok_or_else(|| missing(format!("{name} not found"), fix));
    check(name, needed_by, result)
}

pub fn check_age_identity(path: &Path) -> Check {
    use std::os::unix::fs::PermissionsExt;
    let result = match clawdinator::secrets::load_identities(path) {
        Err(err) if !path.exists() => Err(missing(
            format!("{err:#}"),
            "write the fleet's age identity there (CI writes it from a secret), or pass --age-key / AGE_KEY_FILE",
        )),
        Err(err) => Err(missing(format!("{err:#}"), "generate one with `age-keygen -o FILE`")),
        Ok(ids) => match std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0) {
            mode if mode & 0o077 != 0 => Err((
                Status::Warn,
                format!("{} is readable by others (mode {mode:o})", path.display()),
                format!("chmod 600 {}", path.display()),
            )),
            _ => Ok(format!("{} ({} identity)", path.display(), ids.len())),
        },
    };
    check("age identity", "secrets check, bootstrap upload, secrets seed", result)
}

pub fn check_emulator() -> Check {
    let result = match emulator::installed_version() {
        Some(v) if v == emulator::MOTO_VERSION => Ok(format!("moto {v} in .venv/")),
        Some(v) => Err((Status::Warn, format!("moto {v} in .venv/, pinned {}", emulator::MOTO_VERSION), "it is reinstalled automatically on the next --local or `cargo xtask test`".into())),
        None => Err((Status::Warn, "not provisioned yet".into(), "installed automatically into .venv/ on the first --local or `cargo xtask test` (needs python3 with venv and pip)".into())),
    };
    check("local emulator", "--local, cargo xtask test", result)
}

pub async fn check_aws(aws: &aws::Aws) -> Vec<Check> {
    let region = match aws.region() {
        Some(r) => check("region", "every AWS command", Ok(r.to_string())),
        None => check(
            "region",
            "every AWS command",
            Err(missing("no region configured", "pass --region or set AWS_REGION")),
        ),
    };
    let credentials = match aws.caller_arn().await {
        Ok(arn) => check("aws credentials", "every AWS command", Ok(format!("caller {arn}"))),
        Err(err) => check(
            "aws credentials",
            "every AWS command",
            Err(missing(format!("{err:#}"), "configure credentials (aws configure, AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), or use --local")),
        ),
    };
    let vmimport = match aws.iam().get_role().role_name("vmimport").send().await {
        Ok(out) => {
            let doc = out.role.and_then(|r| r.assume_role_policy_document).unwrap_or_default();
            if aws::iam::trusts_service(&doc, "vmie.amazonaws.com") {
                Ok("role vmimport exists and trusts vmie.amazonaws.com".to_string())
            } else {
                Err(missing(
                    "role vmimport does not trust vmie.amazonaws.com",
                    "apply infra/opentofu/aws, which creates the role with the right trust policy",
                ))
            }
        }
        Err(err) => Err(missing(
            format!("{:#}", aws::error("IAM GetRole", "vmimport", err)),
            "apply infra/opentofu/aws, which creates the vmimport role (only the s3-import publish path needs it)",
        )),
    };
    vec![region, credentials, check("vmimport role", "image publish --via s3-import", vmimport)]
}

/// `doctor --ci`: each setting in the current environment (as the
/// workflows set it, or exported by an operator), the tfvars checked
/// against the module's variables.
pub fn ci_checks(root: &Path) -> Result<Vec<Check>> {
    let required = crate::checks::opentofu::required_tofu_variables(root)?;
    let trusted = std::fs::read_to_string(root.join(TRUSTED_CACHE_KEY)).ok().map(|k| k.trim().to_string());
    Ok(ci_checks_of(&required, trusted.as_deref(), |name| std::env::var(name).ok()))
}

/// The public half of the cache key hosts trust (the module's default of
/// `services.clawdinator.fleetCache.publicKey`).
const TRUSTED_CACHE_KEY: &str = "nix/keys/fleet-cache.pub";

/// The settings as `value` gives them; `required`: the OpenTofu variables
/// a tfvars value must set; `trusted`: the cache key hosts trust. A
/// secret's value is never shown: the cache key shows its public half.
fn ci_checks_of(required: &[String], trusted: Option<&str>, value: impl Fn(&str) -> Option<String>) -> Vec<Check> {
    use crate::ci_settings::{bucket_name_problem, cache_key_public_half, tfvars_problems, Kind, SETTINGS};
    let mut checks = Vec::new();
    for setting in SETTINGS {
        let kind = match setting.kind {
            Kind::Variable => "repository variable",
            Kind::Secret => "repository secret",
        };
        let fix = format!("set the {kind} {} ({}); export it here to check", setting.name, setting.what);
        let (status, detail, fix) = match value(setting.name) {
            None => (Status::Missing, format!("{} is not set", setting.name), fix),
            Some(v) if v.trim().is_empty() => (Status::Missing, format!("{} is empty", setting.name), fix),
            Some(v) if setting.name == "CLAWDINATOR_TFVARS" => match tfvars_problems(&v, required) {
                Ok(lacking) if lacking.is_empty() => {
                    (Status::Ok, format!("sets all {} required variables", required.len()), String::new())
                }
                Ok(lacking) => (
                    Status::Missing,
                    format!("lacks {}", lacking.join(", ")),
                    format!("add them to {} (see infra/opentofu/aws/variables.tf)", setting.name),
                ),
                Err(e) => (
                    Status::Missing,
                    format!("{e:#}"),
                    format!("{} must be the tfvars as one JSON object", setting.name),
                ),
            },
            Some(v) if setting.name == "CLAWDINATOR_CACHE_BUCKET" => match bucket_name_problem(&v) {
                None => (Status::Ok, v, String::new()),
                Some(problem) => (Status::Missing, problem, fix),
            },
            Some(v) if setting.name == "CLAWDINATOR_CACHE_KEY" => match (cache_key_public_half(&v), trusted) {
                (Ok((_, public)), Some(trusted)) if public != trusted => (
                    Status::Missing,
                    format!(
                        "signs as {public}, but hosts trust {trusted} ({TRUSTED_CACHE_KEY}): they would refuse every closure"
                    ),
                    format!("set {} to the key {TRUSTED_CACHE_KEY} is the public half of, or commit this key's public half there", setting.name),
                ),
                (Ok((_, public)), _) => (Status::Ok, format!("set; signs as {public}"), String::new()),
                (Err(problem), _) => (Status::Missing, format!("{} {problem}", setting.name), fix),
            },
            Some(_) if setting.kind == Kind::Secret => (Status::Ok, "set".into(), String::new()),
            Some(v) => (Status::Ok, v, String::new()),
        };
        checks.push(Check { name: setting.name, status, detail, needed_by: "CI workflows", fix });
    }
    checks
}

pub async fn report(ctx: &Ctx, args: &flags::Doctor) -> Result<Report> {
    let local_checks = tokio::task::spawn_blocking({
        let age_key = args.age_key.clone();
        move || {
            vec![
                check_nix(),
                check_kvm(),
                check_tool(
                    "git",
                    &["--version"],
                    "bootstrap seeds prepare, image build",
                    "apt-get install git, or `nix develop`",
                ),
                check_tool(
                    "tofu",
                    &["version"],
                    "infrastructure (infra/opentofu/aws)",
                    "`nix develop` provides it, or https://opentofu.org/docs/intro/install/",
                ),
                check_age_identity(&age_key),
                check_emulator(),
            ]
        }
    })
    .await?;
    let mut checks = local_checks;
    let aws = ctx.aws().await?;
    checks.extend(check_aws(&aws).await);
    Ok(Report { checks })
}

impl flags::Doctor {
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        let args = self;
        if args.ci {
            let report = Report { checks: ci_checks(&testkit::repo_root())? };
            ctx.out.emit(&report)?;
            let missing: Vec<&str> =
                report.checks.iter().filter(|c| c.status == Status::Missing).map(|c| c.name).collect();
            anyhow::ensure!(missing.is_empty(), "missing for CI: {}", missing.join(", "));
            return Ok(());
        }
        let report = report(ctx, &args).await?;
        ctx.out.emit(&report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The public half of [`CACHE_KEY`], as hosts would trust it.
    const TRUSTED: &str = "clawdinator-cache-test-1:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

    /// A 64-byte nix secret key (bytes 0..64); its public half is bytes 32..64.
    const CACHE_KEY: &str = "clawdinator-cache-test-1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==";

    fn checks(set: &[(&str, &str)]) -> Vec<Check> {
        let set: std::collections::BTreeMap<String, String> =
            set.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ci_checks_of(&["vpc_id".to_string()], Some(TRUSTED), |name| set.get(name).cloned())
    }

    fn of<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no check of {name}"))
    }

    #[test]
    fn the_cache_settings_are_checked_and_the_key_never_shown() {
        let all =
            checks(&[("CLAWDINATOR_CACHE_BUCKET", "clawdinator-fleet-cache"), ("CLAWDINATOR_CACHE_KEY", CACHE_KEY)]);
        let (bucket, key) = (of(&all, "CLAWDINATOR_CACHE_BUCKET"), of(&all, "CLAWDINATOR_CACHE_KEY"));
        assert_eq!((bucket.status, bucket.detail.as_str()), (Status::Ok, "clawdinator-fleet-cache"));
        assert_eq!(key.status, Status::Ok);
        assert_eq!(key.detail, format!("set; signs as {TRUSTED}"));
        let shown = format!("{}", Report { checks: all.clone() });
        assert!(!shown.contains("AAECAwQF"), "the secret key is shown:\n{shown}");

        let none = checks(&[]);
        for name in ["CLAWDINATOR_CACHE_BUCKET", "CLAWDINATOR_CACHE_KEY"] {
            let check = of(&none, name);
            assert_eq!(check.status, Status::Missing, "{name}");
            assert!(check.detail.contains("is not set") && check.fix.contains(name), "{name}: {check:?}");
        }

        let wrong = checks(&[
            ("CLAWDINATOR_CACHE_BUCKET", "s3://clawdinator-fleet-cache"),
            ("CLAWDINATOR_CACHE_KEY", "clawdinator-cache-test-1:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="),
        ]);
        let (bucket, key) = (of(&wrong, "CLAWDINATOR_CACHE_BUCKET"), of(&wrong, "CLAWDINATOR_CACHE_KEY"));
        assert_eq!(bucket.status, Status::Missing);
        assert!(bucket.detail.contains("not a bucket name"), "{bucket:?}");
        assert_eq!(key.status, Status::Missing);
        assert!(key.detail.contains("a public key") && !key.detail.contains("ICEi"), "{key:?}");

        // A well-formed key whose public half is not the one hosts trust.
        let other =
            ci_checks_of(&[], Some("clawdinator-fleet-cache-1:SgoWQ4vj/sHL7xGR1AfYsPFq5cQQOhVSgNaM3X6N55o="), |n| {
                (n == "CLAWDINATOR_CACHE_KEY").then(|| CACHE_KEY.to_string())
            });
        let key = of(&other, "CLAWDINATOR_CACHE_KEY");
        assert_eq!(key.status, Status::Missing);
        assert!(
            key.detail.contains("hosts trust clawdinator-fleet-cache-1:") && key.detail.contains(TRUSTED),
            "{key:?}"
        );
        assert!(!key.detail.contains("AAECAwQF"), "{key:?}");
    }

    #[test]
    fn the_key_hosts_trust_is_a_public_key() {
        let trusted = std::fs::read_to_string(testkit::repo_root().join(TRUSTED_CACHE_KEY)).unwrap();
        let (name, public) = trusted.trim().split_once(':').unwrap();
        assert!(!name.is_empty() && public.len() == 44 && public.ends_with('='), "{trusted}");
    }

    #[test]
    fn every_listed_setting_is_checked_and_no_secret_value_is_shown() {
        let all: Vec<(&str, &str)> = crate::ci_settings::SETTINGS
            .iter()
            .map(|s| match s.name {
                "CLAWDINATOR_TFVARS" => (s.name, r#"{"vpc_id": "vpc-1"}"#),
                "CLAWDINATOR_CACHE_KEY" => (s.name, CACHE_KEY),
                "CLAWDINATOR_CACHE_BUCKET" => (s.name, "clawdinator-fleet-cache"),
                _ => (s.name, "canary-value-of-a-setting"),
            })
            .collect();
        let checks = checks(&all);
        assert_eq!(checks.len(), crate::ci_settings::SETTINGS.len());
        for check in &checks {
            assert_eq!(check.status, Status::Ok, "{check:?}");
        }
        for secret in crate::ci_settings::SETTINGS.iter().filter(|s| s.kind == crate::ci_settings::Kind::Secret) {
            let detail = &of(&checks, secret.name).detail;
            assert!(!detail.contains("canary-value") && !detail.contains("AAECAwQF"), "{}: {detail}", secret.name);
        }
    }
}
