//! HashiCorp's own HCL parser, offline: npm's `@cdktn/hcl2json` is
//! hashicorp/hcl compiled to WebAssembly. Each `.tf` file becomes JSON
//! (blocks as lists of objects, expressions as `${…}` strings); a syntax
//! error comes back with the file, line and column.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;
use xshell::{cmd, Shell};

pub const PACKAGE: &str = "@cdktn/hcl2json";
pub const PACKAGE_VERSION: &str = "0.24.0";

/// Run by `node -e`: argv is [node, package dir, files…]; prints
/// {file: {ok: json} | {error: message}}.
const PARSE: &str = r#"
const { parse } = require(process.argv[1]);
const fs = require("fs");
(async () => {
  const out = {};
  for (const file of process.argv.slice(2)) {
    try { out[file] = { ok: await parse(file, fs.readFileSync(file, "utf8")) }; }
    catch (e) { out[file] = { error: String((e && e.message) || e) }; }
  }
  process.stdout.write(JSON.stringify(out));
})();
"#;

/// The `.tf` files of one directory (a root module; subdirectories are not part of it).
pub fn tf_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "tf"))
        .collect();
    files.sort();
    Ok(files)
}

/// Every file parsed; a file that does not parse is in the errors with the parser's message.
pub struct Parsed {
    pub files: BTreeMap<PathBuf, Value>,
    pub errors: Vec<String>,
}

pub fn parse(root: &Path, files: &[PathBuf]) -> Result<Parsed> {
    let package = crate::tools::npm_package(root, PACKAGE, PACKAGE_VERSION)?;
    let sh = Shell::new()?;
    let out = cmd!(sh, "node -e {PARSE} {package} {files...}").quiet().read().context("cannot run node")?;
    let results: BTreeMap<PathBuf, Value> = serde_json::from_str(&out).context("hcl2json's output is not JSON")?;
    let mut parsed = Parsed { files: BTreeMap::new(), errors: Vec::new() };
    for (file, result) in results {
        match result.get("ok") {
            Some(json) => {
                parsed.files.insert(file, json.clone());
            }
            None => parsed.errors.push(result["error"].as_str().unwrap_or("unknown parse error").to_string()),
        }
    }
    Ok(parsed)
}

/// The object literal after `start` (which is at a `{`): its text between the braces.
fn object_at(text: &str, start: usize) -> Option<&str> {
    let mut depth = 0usize;
    for (i, b) in text.bytes().enumerate().skip(start) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[start + 1..i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// The top-level keys of an object literal's body (`key = value` lines at depth 0).
fn object_keys(body: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut depth = 0i32;
    for line in body.lines() {
        if depth == 0 {
            if let Some((key, _)) = line.split_once('=') {
                let key = key.trim();
                if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    keys.insert(key.to_string());
                }
            }
        }
        for b in line.bytes() {
            match b {
                b'{' | b'[' | b'(' => depth += 1,
                b'}' | b']' | b')' => depth -= 1,
                _ => {}
            }
        }
    }
    keys
}

/// Each `templatefile("${path.module}/…", {…})` in `text`, in order: the
/// template's path (below the module) and the keys of the object it is passed.
pub fn templatefile_calls(text: &str) -> Vec<(String, BTreeSet<String>)> {
    const CALL: &str = "templatefile(\"${path.module}/";
    let mut calls = Vec::new();
    for (at, _) in text.match_indices(CALL) {
        let rest = &text[at + CALL.len()..];
        let Some((path, after)) = rest.split_once('"') else { continue };
        let offset = at + CALL.len() + path.len() + 1;
        let Some(brace) = after.find('{') else { continue };
        let keys = object_at(text, offset + brace).map(object_keys).unwrap_or_default();
        calls.push((path.to_string(), keys));
    }
    calls
}
