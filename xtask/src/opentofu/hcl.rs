//! HashiCorp's own HCL parser, offline: npm's `@cdktn/hcl2json` is
//! hashicorp/hcl compiled to WebAssembly. Each `.tf` file becomes JSON
//! (blocks as lists of objects, expressions as `${…}` strings); a syntax
//! error comes back with the file, line and column.

use std::collections::BTreeMap;
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
