//! GitHub Actions expressions evaluated by GitHub's own implementation
//! (`@actions/expressions`, the library of the Actions language services),
//! for what a workflow decides before any step runs: its concurrency group.

use anyhow::{Context, Result};
use serde_json::{json, Value};

pub const EXPRESSIONS: &str = "@actions/expressions";
pub const EXPRESSIONS_VERSION: &str = "0.3.61";

/// Run by `node --input-type=module`: argv [node, package dir]; stdin
/// {template, contexts}; prints the template with each `${{ … }}` replaced
/// by its value as a string, as GitHub interpolates it.
const EVALUATE: &str = r#"
import { pathToFileURL } from "node:url";
const { Lexer, Parser, Evaluator, data } = await import(pathToFileURL(process.argv[1] + "/dist/index.js"));
const toData = (v) => {
  if (v === null || v === undefined) return new data.Null();
  if (typeof v === "string") return new data.StringData(v);
  if (typeof v === "number") return new data.NumberData(v);
  if (typeof v === "boolean") return new data.BooleanData(v);
  const d = new data.Dictionary();
  for (const [k, x] of Object.entries(v)) d.add(k, toData(x));
  return d;
};
let input = "";
process.stdin.on("data", (d) => (input += d));
process.stdin.on("end", () => {
  const { template, contexts } = JSON.parse(input);
  const names = Object.keys(contexts);
  const context = toData(contexts);
  const out = template.replace(/\$\{\{(.*?)\}\}/gs, (_, expr) => {
    const lexed = new Lexer(expr.trim()).lex();
    const tree = new Parser(lexed.tokens, names, []).parse();
    return new Evaluator(tree, context).evaluate().coerceString();
  });
  process.stdout.write(JSON.stringify(out));
});
"#;

/// `template` with its expressions evaluated against `contexts`
/// (`{"github": {...}, "inputs": {...}, "vars": {...}}`).
pub fn interpolate(template: &str, contexts: &Value) -> Result<String> {
    use std::io::Write;
    let package = crate::npm::npm_package(&crate::repo_root(), EXPRESSIONS, EXPRESSIONS_VERSION)?;
    let mut child = std::process::Command::new("node")
        .args(["--input-type=module", "-e", EVALUATE])
        .arg(&package)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot run node (GitHub's expression evaluator needs Node.js)")?;
    let input = json!({ "template": template, "contexts": contexts }).to_string();
    child.stdin.take().expect("piped").write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "evaluating `{template}` failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).context("the evaluator's output is not JSON")
}
