//! The NixOS module check of `cargo xtask test`: `nix/tests/module.nix`
//! evaluates the module with nixpkgs' real `lib.evalModules` (from
//! `NIXPKGS_LIB`, a nixpkgs `lib/`; nothing is fetched), checks units,
//! ordering, hardening and assertions there, and hands back every command
//! line the units run, which must parse against this CLI. Then the same
//! harness runs on sabotaged copies of the module and must fail each time:
//! a harness that passes everything checks nothing.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use xshell::{cmd, Shell};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Harness {
    failures: Vec<String>,
    cases: usize,
    commands: Vec<String>,
    bin: String,
    flake_hosts: std::collections::BTreeMap<String, Option<String>>,
    options: Vec<OptionDoc>,
    gateway_configs: std::collections::BTreeMap<String, serde_json::Value>,
}

/// A generated file: its path below the checkout and its text.
pub type GeneratedFile = (String, String);

/// Where each host's rendered gateway configuration is kept for review.
pub const GOLDEN_DIR: &str = "nix/gateway/golden";

#[derive(Debug, serde::Deserialize)]
/// One option of the module, as `lib.optionAttrSetToDocList` gives it.
pub struct OptionDoc {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub description: String,
    pub default: Option<String>,
}

/// Changes to the module that the harness must catch, one at a time: the
/// module's file, the sabotage, and the text it replaces.
const SABOTAGE: &[(&str, &str, &str, &str)] = &[
    ("lib.nix", "a unit loses NoNewPrivileges", "NoNewPrivileges = true;", "NoNewPrivileges = false;"),
    (
        "gateway.nix",
        "the gateway no longer requires its secrets",
        "requires = [ \"clawdinator-secrets.service\" \"firewall.service\" ];",
        "requires = [ \"firewall.service\" ];",
    ),
    (
        "gateway.nix",
        "the gateway runs without the firewall",
        "requires = [ \"clawdinator-secrets.service\" \"firewall.service\" ];",
        "requires = [ \"clawdinator-secrets.service\" ];",
    ),
    (
        "base.nix",
        "an assertion never fires",
        "assertion = !cfg.ssh.enable || cfg.ssh.authorizedKeys != [ ];",
        "assertion = true;",
    ),
    (
        "instance-role.nix",
        "the metadata service is refused only to the agents' user again (nixbld builders get through)",
        "${tool} -w -A ${chain} -d ${address} -j REJECT",
        "${tool} -w -A ${chain} -d ${address} -m owner --uid-owner ${cfg.user} -j REJECT",
    ),
    (
        "lib.nix",
        "the publisher's stop no longer takes its cgroup's rule back",
        "while ${tool} -w -D ${metadataChain} ${unitRule address unit} 2>/dev/null; do :; done\n      if",
        "if",
    ),
    ("cache.nix", "the nix daemon serves every user", "allowed-users = [ \"root\" ];", "allowed-users = [ \"*\" ];"),
    ("public-tree.nix", "the publisher has no start timeout", "TimeoutStartSec = \"5min\";", ""),
];

/// The module's folder: one file per concern.
const MODULE: &str = "nix/modules/clawdinator";

fn evaluate(sh: &Shell, root: &Path, nixpkgs_lib: &Path) -> Result<Harness> {
    let harness = root.join("nix/tests/module.nix");
    let out =
        cmd!(sh, "nix-instantiate --eval --strict --json --store dummy:// {harness} --arg nixpkgsLib {nixpkgs_lib}")
            .quiet()
            .ignore_status()
            .output()?;
    ensure!(out.status.success(), "{} does not evaluate:\n{}", harness.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).context("the harness's result is not the JSON it should be")
}

/// Words of a systemd command line as `lib.escapeShellArg` quotes them.
fn words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quoted, mut started) = (Vec::new(), String::new(), false, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => (quoted, started) = (!quoted, true),
            '\\' if !quoted => word.extend(chars.next()),
            c if c.is_whitespace() && !quoted => {
                if started || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            c => word.push(c),
        }
    }
    if started || !word.is_empty() {
        words.push(word);
    }
    words
}

/// Every host-binary command the units run parses against the CLI.
fn check_commands(harness: &Harness) -> Result<()> {
    ensure!(
        harness.commands.len() >= 8,
        "only {} command lines came back: the harness lost some",
        harness.commands.len()
    );
    let mut wrong = Vec::new();
    for line in &harness.commands {
        let mut argv = words(line);
        ensure!(argv.first() == Some(&harness.bin), "{line}: does not start with the host binary");
        argv[0] = "clawdinator".into();
        if let Err(err) = <clawdinator::cli::Clawdinator as clap::Parser>::try_parse_from(&argv) {
            wrong.push(format!("{line}\n    {}", err.to_string().lines().next().unwrap_or_default()));
        }
    }
    ensure!(wrong.is_empty(), "unit commands the CLI does not take:\n  {}", wrong.join("\n  "));
    Ok(())
}

/// The flake makes one host per registry entry, named and configured from
/// it, plus the image.
fn check_flake_hosts(harness: &Harness, root: &Path) -> Result<()> {
    let registry = clawdinator::registry::Registry::load(&root.join(clawdinator::registry::DEFAULT_PATH))?;
    let mut expected: std::collections::BTreeMap<String, Option<String>> =
        registry.instances.keys().map(|n| (n.clone(), Some(n.clone()))).collect();
    expected.insert(clawdinator::image::build::IMAGE_HOST.into(), None);
    ensure!(
        harness.flake_hosts == expected,
        "flake.nix's nixosConfigurations are {:?}; the registry and the image make {expected:?}",
        harness.flake_hosts
    );
    Ok(())
}

/// The harness fails on each sabotaged copy of the module.
fn check_sabotage(sh: &Shell, root: &Path, nixpkgs_lib: &Path) -> Result<()> {
    for (file, what, from, to) in SABOTAGE {
        let path = format!("{MODULE}/{file}");
        let module = std::fs::read_to_string(root.join(&path)).with_context(|| format!("cannot read {path}"))?;
        ensure!(
            module.contains(from),
            "the sabotage \"{what}\" no longer applies to {path}: update SABOTAGE in nix_module.rs"
        );
        let copy = tempfile::tempdir()?;
        let into = copy.path();
        for part in ["nix", "clawdinator", "memory", "flake.nix", "flake.lock"].map(|p| root.join(p)) {
            cmd!(sh, "cp -r {part} {into}").quiet().run()?;
        }
        std::fs::write(copy.path().join(&path), module.replacen(from, to, 1))?;
        let harness = evaluate(sh, copy.path(), nixpkgs_lib)?;
        if harness.failures.is_empty() {
            bail!("the module harness passes a module where {what}: it does not check that");
        }
    }
    Ok(())
}

/// nixpkgs' `lib/`: `NIXPKGS_LIB`, else the copy provided beside the
/// repository for machines without network (`../shared/vendor/nixpkgs-lib/lib`).
pub fn nixpkgs_lib() -> Option<PathBuf> {
    let beside = testkit::repo_root().join("../shared/vendor/nixpkgs-lib/lib");
    std::env::var_os("NIXPKGS_LIB").map(PathBuf::from).or_else(|| beside.is_dir().then_some(beside))
}

fn checked_lib(nixpkgs_lib: &Path) -> Result<()> {
    ensure!(
        nixpkgs_lib.join("default.nix").is_file() && nixpkgs_lib.join("modules.nix").is_file(),
        "NIXPKGS_LIB={} is not a nixpkgs lib/ directory (it needs default.nix and modules.nix)",
        nixpkgs_lib.display()
    );
    Ok(())
}

/// The module's options, for docs/module-options.md.
pub fn options(sh: &Shell, root: &Path, nixpkgs_lib: &Path) -> Result<Vec<OptionDoc>> {
    checked_lib(nixpkgs_lib)?;
    Ok(evaluate(sh, root, nixpkgs_lib)?.options)
}

/// What `cargo xtask docs` writes from one evaluation: the module's
/// options, and each host's gateway golden file (path, text).
pub fn generated(sh: &Shell, root: &Path, nixpkgs_lib: &Path) -> Result<(Vec<OptionDoc>, Vec<GeneratedFile>)> {
    checked_lib(nixpkgs_lib)?;
    let harness = evaluate(sh, root, nixpkgs_lib)?;
    let goldens = goldens(&harness)?;
    Ok((harness.options, goldens))
}

/// Each host's gateway configuration as the module hands it to the
/// gateway, rendered as the golden file's text: (path, text).
fn goldens(harness: &Harness) -> Result<Vec<GeneratedFile>> {
    let mut files = Vec::new();
    for (name, config) in &harness.gateway_configs {
        files.push((format!("{GOLDEN_DIR}/{name}.json"), format!("{}\n", serde_json::to_string_pretty(config)?)));
    }
    Ok(files)
}

/// Every host's gateway configuration is its committed golden file, and no
/// golden file is left for a host that is gone: a change shows in review.
fn check_goldens(harness: &Harness, root: &Path) -> Result<usize> {
    let files = goldens(harness)?;
    for (path, text) in &files {
        let committed = std::fs::read_to_string(root.join(path)).unwrap_or_default();
        ensure!(committed == *text, "{path} is not the configuration the module renders now: run `cargo xtask docs`, review the change, commit it");
    }
    let dir = root.join(GOLDEN_DIR);
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let path = format!("{GOLDEN_DIR}/{name}");
        ensure!(files.iter().any(|(p, _)| *p == path), "{path} is for no host of the registry: remove it");
    }
    Ok(files.len())
}

/// Run the harness; Ok(None) when there is no nixpkgs lib (the caller says SKIPPED).
pub fn check(sh: &Shell, root: &Path) -> Result<Option<String>> {
    let Some(nixpkgs_lib) = nixpkgs_lib() else { return Ok(None) };
    let nixpkgs_lib = nixpkgs_lib.as_path();
    checked_lib(nixpkgs_lib)?;
    let harness = evaluate(sh, root, nixpkgs_lib)?;
    ensure!(harness.failures.is_empty(), "the module does not do what it must:\n  {}", harness.failures.join("\n  "));
    check_commands(&harness)?;
    check_flake_hosts(&harness, root)?;
    let goldens = check_goldens(&harness, root)?;
    check_sabotage(sh, root, nixpkgs_lib)?;
    Ok(Some(format!(
        "{} configurations evaluated with lib.evalModules, {} unit commands parse, {goldens} gateway configurations match their golden files, {} sabotaged modules caught",
        harness.cases,
        harness.commands.len(),
        SABOTAGE.len()
    )))
}

#[cfg(test)]
mod tests {
    #[test]
    fn systemd_words_as_escape_shell_arg_quotes_them() {
        assert_eq!(
            super::words("/bin/x host exec --secret-env 'A=/run/a b' -- '' 'it'\\''s'"),
            ["/bin/x", "host", "exec", "--secret-env", "A=/run/a b", "--", "", "it's"]
        );
    }
}
