//! The flake's inputs are pinned: `flake.lock` locks every input
//! `flake.nix` declares (a `follows` input as exactly that path, a URL input
//! as a node whose `original` is that URL), every node it reaches is locked
//! with a revision and a narHash, and every `nix` a workflow runs keeps the
//! lock as it is (`--no-update-lock-file`). `flake.nix`'s inputs are read by
//! evaluating it (`nix-instantiate`), not by reading its text.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use clawdinator::build_info::resolve;
use serde_json::Value;
use xshell::{cmd, Shell};

/// `flake.nix`'s `inputs`, evaluated.
fn inputs(sh: &Shell, root: &Path) -> Result<Value> {
    let flake = root.join("flake.nix");
    let expr = format!("(import {}).inputs", flake.display());
    let out = cmd!(sh, "nix-instantiate --eval --strict --json --store dummy:// --expr {expr}").quiet().read()?;
    serde_json::from_str(&out).context("flake.nix's inputs are not JSON")
}

/// `github:OWNER/REPO[/REF]` as a lock's `original`.
fn original_of(url: &str) -> Result<Value> {
    let rest = url.strip_prefix("github:").with_context(|| format!("only github: inputs are checked, not {url}"))?;
    let mut parts = rest.splitn(3, '/');
    let (owner, repo) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut original = serde_json::json!({"type": "github", "owner": owner, "repo": repo});
    if let Some(r#ref) = parts.next() {
        original["ref"] = Value::from(r#ref);
    }
    Ok(original)
}

/// The lock against the evaluated inputs; a summary on success.
pub fn check_lock(inputs: &Value, lock: &Value) -> Result<String> {
    let root = &lock["nodes"][lock["root"].as_str().context("flake.lock has no root")?];
    let declared = inputs.as_object().context("flake.nix's inputs are not an attribute set")?;
    let locked = root["inputs"].as_object().context("flake.lock's root has no inputs")?;
    let mut names: Vec<&String> = declared.keys().collect();
    let mut lock_names: Vec<&String> = locked.keys().collect();
    names.sort();
    lock_names.sort();
    ensure!(names == lock_names, "flake.nix declares {names:?} but flake.lock's root locks {lock_names:?}");
    for (name, input) in declared {
        match (input["follows"].as_str(), input["url"].as_str()) {
            (Some(follows), _) => {
                let path: Vec<Value> = follows.split('/').map(Value::from).collect();
                ensure!(
                    locked[name] == Value::Array(path),
                    "{name} follows {follows}, but the lock has {}",
                    locked[name]
                );
            }
            (None, Some(url)) => {
                let node = resolve(lock, &locked[name])?;
                let original = &lock["nodes"][node]["original"];
                ensure!(
                    *original == original_of(url)?,
                    "{name} is {url}, but its locked node's original is {original}"
                );
            }
            _ => bail!("{name}: neither a url nor follows"),
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut todo: Vec<&str> = locked.values().map(|r| resolve(lock, r)).collect::<Result<_>>()?;
    while let Some(node) = todo.pop() {
        if !seen.insert(node.to_string()) {
            continue;
        }
        let entry = &lock["nodes"][node];
        let pinned = entry["locked"]["rev"].is_string() && entry["locked"]["narHash"].is_string();
        ensure!(pinned, "flake.lock node {node} is not locked to a revision and narHash");
        for reference in entry["inputs"].as_object().into_iter().flatten().map(|(_, r)| r) {
            todo.push(resolve(lock, reference)?);
        }
    }
    Ok(format!("{} input(s) locked, {} node(s) pinned", declared.len(), seen.len()))
}

/// Every `nix develop|build|flake` a workflow runs keeps the lock.
fn check_workflows(root: &Path) -> Result<usize> {
    let mut lines = 0;
    for entry in std::fs::read_dir(root.join(crate::checks::workflows::DIR))? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)?;
        for line in text.lines().filter(|l| ["nix develop", "nix build", "nix flake"].iter().any(|c| l.contains(c))) {
            ensure!(
                line.contains("--no-update-lock-file"),
                "{}: `{}` may rewrite flake.lock: add --no-update-lock-file",
                path.display(),
                line.trim()
            );
            lines += 1;
        }
    }
    Ok(lines)
}

/// What `pin-update` moved.
#[derive(Debug, serde::Serialize)]
pub struct PinReport {
    pub input: String,
    pub changed: bool,
    pub from: Option<String>,
    pub to: Option<String>,
}

impl std::fmt::Display for PinReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = |r: &Option<String>| r.as_deref().map(|r| r[..r.len().min(12)].to_string()).unwrap_or("?".into());
        if self.changed {
            writeln!(f, "{}: {} -> {}", self.input, short(&self.from), short(&self.to))
        } else {
            writeln!(f, "{}: already at its branch's head ({})", self.input, short(&self.from))
        }
    }
}

fn pinned(root: &Path, input: &str) -> Result<Option<String>> {
    let info = clawdinator::build_info::BuildInfo::from_lock(&std::fs::read_to_string(root.join("flake.lock"))?, "")?;
    let found = info.inputs.get(input).with_context(|| format!("flake.lock has no input {input:?} at its root"))?;
    Ok(found.rev.clone())
}

impl crate::flags::PinUpdate {
    /// `nix flake update INPUT`, then the lock must still pass the check; a
    /// lock that does not is put back as it was.
    pub fn run(self, ctx: &clawdinator::ctx::Ctx) -> Result<()> {
        // The checkout it runs in (a workflow's), not the one it was built from.
        let (sh, root) = (Shell::new()?, std::env::current_dir()?);
        ensure!(
            root.join("flake.nix").is_file(),
            "{} has no flake.nix: run pin-update at the checkout's root",
            root.display()
        );
        let before = std::fs::read(root.join("flake.lock")).context("no flake.lock")?;
        let from = pinned(&root, &self.input)?;
        let input = &self.input;
        let updated =
            cmd!(sh, "nix flake update {input}").run().map_err(anyhow::Error::from).and_then(|()| check(&sh, &root));
        if let Err(e) = updated {
            std::fs::write(root.join("flake.lock"), &before)?;
            return Err(e.context("flake.lock is as it was"));
        }
        let to = pinned(&root, input)?;
        let report = PinReport { input: self.input.clone(), changed: from != to, from, to };
        if let Some(path) = &self.github_output {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new().append(true).create(true).open(path)?;
            let rev = |r: &Option<String>| r.clone().unwrap_or_default();
            writeln!(file, "changed={}\nfrom={}\nto={}", report.changed, rev(&report.from), rev(&report.to))?;
        }
        ctx.out.emit(&report)
    }
}

pub fn check(sh: &Shell, root: &Path) -> Result<String> {
    let lock: Value = serde_json::from_slice(&std::fs::read(root.join("flake.lock")).context("no flake.lock")?)
        .context("flake.lock is not JSON")?;
    let summary = check_lock(&inputs(sh, root)?, &lock)?;
    let lines = check_workflows(root)?;
    Ok(format!("{summary}; {lines} workflow nix line(s) keep the lock"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lock() -> Value {
        let pinned = |owner: &str, repo: &str| {
            json!({"locked": {"rev": "0123", "narHash": "sha256-x", "owner": owner, "repo": repo, "type": "github"},
                   "original": {"owner": owner, "repo": repo, "type": "github"}})
        };
        let mut openclaw = pinned("openclaw", "nix-openclaw");
        openclaw["inputs"] = json!({"nixpkgs": "nixpkgs_3"});
        json!({"root": "root", "version": 7, "nodes": {
            "root": {"inputs": {"nix-openclaw": "nix-openclaw", "nixpkgs": ["nix-openclaw", "nixpkgs"]}},
            "nix-openclaw": openclaw,
            "nixpkgs_3": pinned("NixOS", "nixpkgs"),
        }})
    }

    fn inputs() -> Value {
        json!({"nix-openclaw": {"url": "github:openclaw/nix-openclaw"}, "nixpkgs": {"follows": "nix-openclaw/nixpkgs"}})
    }

    #[test]
    fn a_lock_that_matches_passes_and_each_break_is_named() {
        assert!(check_lock(&inputs(), &lock()).is_ok());
        let mut unpinned = lock();
        unpinned["nodes"]["nixpkgs_3"]["locked"].as_object_mut().unwrap().remove("narHash");
        assert!(format!("{:#}", check_lock(&inputs(), &unpinned).unwrap_err()).contains("nixpkgs_3 is not locked"));
        let mut other = inputs();
        other["nixpkgs"] = json!({"url": "github:NixOS/nixpkgs/nixos-26.05"});
        assert!(format!("{:#}", check_lock(&other, &lock()).unwrap_err()).contains("nixpkgs is github:NixOS"));
        let mut extra = inputs();
        extra["agenix"] = json!({"url": "github:ryantm/agenix"});
        assert!(format!("{:#}", check_lock(&extra, &lock()).unwrap_err()).contains("declares"));
    }

    #[test]
    fn a_workflow_that_may_rewrite_the_lock_is_named() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(crate::checks::workflows::DIR);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ok.yml"), "run: nix develop --no-update-lock-file --command true\n").unwrap();
        assert_eq!(check_workflows(root.path()).unwrap(), 1);
        std::fs::write(dir.join("bad.yml"), "run: nix flake check --no-build\n").unwrap();
        let err = format!("{:#}", check_workflows(root.path()).unwrap_err());
        assert!(err.contains("bad.yml") && err.contains("--no-update-lock-file"), "{err}");
    }
}
