//! `cargo xtask test`: the README's test command. Rust unit and integration
//! tests (the latter against the emulator), then the non-Rust checks, each
//! either passed, failed, or skipped with the reason printed.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use xshell::{cmd, Shell};

use clawdinator::ctx::Ctx;
use testkit::emulator;

use crate::flags;

#[derive(Debug)]
pub enum Outcome {
    Passed(String),
    Skipped(String),
    Failed(String),
}

impl flags::Test {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let args = self;
        let root = testkit::repo_root();
        let sh = Shell::new()?;
        sh.change_dir(&root);
        if args.checks_only {
            ctx.out.note("skipped: the Rust tests (--checks-only)");
        } else {
            rust_tests(ctx, &sh, args.filter.clone())?;
        }

        if args.rust_only {
            ctx.out.note("skipped: non-Rust checks (--rust-only)");
            return ctx.out.emit(&TestReport { checks: vec![] });
        }
        let report = TestReport::record(ctx, checks(&sh, &root));
        report.tally(ctx)?;
        ctx.out.emit(&report)
    }
}

/// The non-Rust checks, in the order they are printed; all run before any
/// is printed.
fn checks(sh: &Shell, root: &Path) -> Vec<(&'static str, Outcome)> {
    vec![
        ("module graph", outcome(crate::checks::modgraph::check(root))),
        ("crate layout", outcome(crate::checks::layout::check(sh, root))),
        ("docs", docs(sh, root)),
        ("nix parse", nix_parse(sh, root)),
        ("flake lock", flake_lock(sh, root)),
        ("nix lib", nix_lib(sh, root)),
        ("nixos module", nix_module(sh, root)),
        ("metadata service", metadata_service(sh, root)),
        ("deadnix", deadnix(sh, root)),
        ("nix format", nix_format(sh, root)),
        ("opentofu", opentofu(sh, root)),
        ("workflows", workflow_lint(root)),
        ("shellcheck", shellcheck(sh, root)),
        ("ruff", ruff(sh, root)),
        ("dependencies", dependencies(sh, root)),
    ]
}

fn rust_tests(ctx: &Ctx, sh: &Shell, filter: Option<String>) -> Result<()> {
    // Provision once up front, so parallel tests do not all queue on the lock.
    emulator::ensure_installed()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut tests = std::process::Command::from(cmd!(sh, "{cargo} test --workspace --locked {filter...}"));
    if ctx.out.json {
        // stdout carries one JSON document; cargo's own output goes to stderr.
        use std::os::fd::AsFd;
        tests.stdout(std::io::stderr().as_fd().try_clone_to_owned()?);
    }
    let status = tests.status()?;
    anyhow::ensure!(status.success(), "cargo test failed ({status})");
    Ok(())
}

/// The non-Rust checks, for `--json` (the Rust tests passed if it is printed).
#[derive(serde::Serialize)]
struct TestReport {
    checks: Vec<CheckOutcome>,
}

impl TestReport {
    /// Each check's outcome, printed as it is recorded.
    fn record(ctx: &Ctx, checks: Vec<(&'static str, Outcome)>) -> Self {
        let mut report = TestReport { checks: Vec::new() };
        for (name, outcome) in checks {
            let (status, detail) = match outcome {
                Outcome::Passed(what) => (Status::Ok, what),
                Outcome::Skipped(why) => (Status::Skipped, why),
                Outcome::Failed(why) => (Status::Failed, why),
            };
            ctx.out.note(match status {
                Status::Ok => format!("check {name}: ok ({detail})"),
                Status::Skipped => format!("check {name}: SKIPPED because {detail}"),
                Status::Failed => format!("check {name}: FAILED: {detail}"),
            });
            report.checks.push(CheckOutcome { name, status, detail });
        }
        report
    }

    /// Print how many passed, were skipped and failed; Err naming the failed.
    fn tally(&self, ctx: &Ctx) -> Result<()> {
        let with = |s: Status| self.checks.iter().filter(move |c| c.status == s);
        ctx.out.note(format!(
            "non-Rust checks: ok {}, skipped {}, failed {}",
            with(Status::Ok).count(),
            with(Status::Skipped).count(),
            with(Status::Failed).count()
        ));
        let failed: Vec<&str> = with(Status::Failed).map(|c| c.name).collect();
        if !failed.is_empty() {
            bail!("non-Rust checks failed: {}", failed.join(", "));
        }
        Ok(())
    }
}

#[derive(serde::Serialize)]
struct CheckOutcome {
    name: &'static str,
    status: Status,
    detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Skipped,
    Failed,
}

impl std::fmt::Display for TestReport {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Ok(()) // every line was already said on stderr as it happened
    }
}

/// Project files with the given extension, outside build output and the venv.
pub fn project_files(root: &Path, ext: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                if !matches!(name.as_ref(), "target" | ".venv" | ".git" | "dist" | "repo-seeds" | "node_modules") {
                    walk(&path, ext, out);
                }
            } else if name.ends_with(ext) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, ext, &mut out);
    out.sort();
    out
}

fn have(sh: &Shell, program: &str) -> bool {
    cmd!(sh, "sh -c 'command -v \"$0\"' {program}").quiet().ignore_stdout().ignore_stderr().run().is_ok()
}

fn nix_parse(sh: &Shell, root: &Path) -> Outcome {
    let files = project_files(root, ".nix");
    if files.is_empty() {
        return Outcome::Skipped("the repository has no .nix files yet".into());
    }
    if !have(sh, "nix-instantiate") {
        return Outcome::Skipped("nix-instantiate is not installed (apt-get install nix-bin)".into());
    }
    for file in &files {
        if let Err(err) = cmd!(sh, "nix-instantiate --parse {file}").quiet().ignore_stdout().run() {
            return Outcome::Failed(format!("{}: {err}", file.display()));
        }
    }
    Outcome::Passed(format!("{} file(s) parse", files.len()))
}

/// flake.lock pins every input of flake.nix, and the workflows keep it.
fn flake_lock(sh: &Shell, root: &Path) -> Outcome {
    if !have(sh, "nix-instantiate") {
        return Outcome::Skipped("nix-instantiate is not installed (apt-get install nix-bin)".into());
    }
    outcome(crate::checks::flake_lock::check(sh, root))
}

/// `deadnix --fail` over every `.nix` file; first on a file with an unused
/// binding, which it must refuse, so a deadnix that passes everything fails
/// the check. `.ci/run` installs deadnix into target/tools.
fn deadnix(sh: &Shell, root: &Path) -> Outcome {
    let files = project_files(root, ".nix");
    if files.is_empty() {
        return Outcome::Skipped("the repository has no .nix files yet".into());
    }
    let Some(deadnix) = cargo_tool(sh, root, "deadnix") else {
        return Outcome::Skipped("deadnix is not installed (`cargo install --locked deadnix`; .ci/run does it)".into());
    };
    let Ok(dir) = tempfile::tempdir() else { return Outcome::Failed("cannot create a temporary directory".into()) };
    let bad = dir.path().join("unused.nix");
    if std::fs::write(&bad, "{ used, unused }: let dead = 1; in used\n").is_err() {
        return Outcome::Failed("cannot write the negative sample".into());
    }
    if cmd!(sh, "{deadnix} --fail {bad}").quiet().ignore_stdout().ignore_stderr().run().is_ok() {
        return Outcome::Failed(format!("{deadnix} accepted a file with unused bindings: it checks nothing"));
    }
    let count = files.len();
    match cmd!(sh, "{deadnix} --fail {files...}").quiet().run() {
        Ok(()) => Outcome::Passed(format!("{count} file(s), no unused bindings")),
        Err(err) => Outcome::Failed(err.to_string()),
    }
}

/// A tool `.ci/run` builds into target/tools with `cargo install`, else the
/// one on the PATH.
fn cargo_tool(sh: &Shell, root: &Path, name: &str) -> Option<String> {
    let local = root.join("target/tools/bin").join(name);
    if local.exists() {
        Some(local.display().to_string())
    } else {
        have(sh, name).then(|| name.to_string())
    }
}

/// The formatter the flake names (`nix fmt`), pinned in `.ci/run`.
const NIXPKGS_FMT_VERSION: &str = "1.3.0";

/// `nixpkgs-fmt --check` over every `.nix` file; first on a badly formatted
/// sample, which it must refuse, so a formatter that passes everything fails
/// the check.
fn nix_format(sh: &Shell, root: &Path) -> Outcome {
    let files = project_files(root, ".nix");
    let Some(fmt) = cargo_tool(sh, root, "nixpkgs-fmt") else {
        return Outcome::Skipped(format!(
            "nixpkgs-fmt is not installed (`cargo install --locked nixpkgs-fmt --version {NIXPKGS_FMT_VERSION}`; .ci/run does it)"
        ));
    };
    let Ok(dir) = tempfile::tempdir() else { return Outcome::Failed("cannot create a temporary directory".into()) };
    let bad = dir.path().join("unformatted.nix");
    if std::fs::write(&bad, "{a,b}:let x=a;in   x\n").is_err() {
        return Outcome::Failed("cannot write the negative sample".into());
    }
    if cmd!(sh, "{fmt} --check {bad}").quiet().ignore_stdout().ignore_stderr().run().is_ok() {
        return Outcome::Failed(format!("{fmt} accepted an unformatted file: it checks nothing"));
    }
    let count = files.len();
    match cmd!(sh, "{fmt} --check {files...}").quiet().run() {
        Ok(()) => {
            Outcome::Passed(format!("{count} file(s) as `nix fmt` (nixpkgs-fmt {NIXPKGS_FMT_VERSION}) leaves them"))
        }
        Err(err) => Outcome::Failed(format!("{err}: run `nix fmt` (or {fmt}) on the files it names")),
    }
}

/// nix/lib evaluated without nixpkgs agrees with the Rust parsers.
fn nix_lib(sh: &Shell, root: &Path) -> Outcome {
    if !have(sh, "nix-instantiate") {
        return Outcome::Skipped("nix-instantiate is not installed (apt-get install nix-bin)".into());
    }
    match crate::checks::nix_lib::check(sh, root) {
        Ok(summary) => Outcome::Passed(summary),
        Err(err) => Outcome::Failed(format!("{err:#}")),
    }
}

/// infra/opentofu/aws: HCL, provider schema, references, registry, user
/// data, checkov; and the broken fixtures caught.
fn opentofu(sh: &Shell, root: &Path) -> Outcome {
    if !have(sh, "node") || !have(sh, "npm") {
        return Outcome::Skipped("node and npm are not installed (apt-get install nodejs npm): HashiCorp's HCL parser runs as WebAssembly under node".into());
    }
    match crate::checks::opentofu::check(root) {
        Ok(summary) => Outcome::Passed(summary),
        Err(err) => Outcome::Failed(format!("{err:#}")),
    }
}

fn outcome(result: Result<String>) -> Outcome {
    match result {
        Ok(summary) => Outcome::Passed(summary),
        Err(err) => Outcome::Failed(format!("{err:#}")),
    }
}

/// The generated references are current and no doc line is too long; the
/// module options part needs nixpkgs' lib (and nix-instantiate).
fn docs(sh: &Shell, root: &Path) -> Outcome {
    use crate::docs;
    if let Err(err) = docs::ensure_current(root, docs::COMMANDS, &docs::commands()) {
        return Outcome::Failed(format!("{err:#}"));
    }
    let lines = match docs::check_line_lengths(root) {
        Ok(files) => format!(
            "{files} docs within {} characters a line, the README within {} lines",
            docs::MAX_LINE,
            docs::README_MAX_LINES
        ),
        Err(err) => return Outcome::Failed(format!("{err:#}")),
    };
    let (Some(lib), true) = (crate::checks::nix_module::nixpkgs_lib(), have(sh, "nix-instantiate")) else {
        return Outcome::Skipped(format!(
            "{} is current and {lines}, but {} was not compared: it needs nix-instantiate and NIXPKGS_LIB",
            docs::COMMANDS,
            docs::MODULE_OPTIONS
        ));
    };
    let current =
        docs::module_options(sh, root, &lib).and_then(|text| docs::ensure_current(root, docs::MODULE_OPTIONS, &text));
    match current {
        Ok(()) => Outcome::Passed(format!("{} and {} are current; {lines}", docs::COMMANDS, docs::MODULE_OPTIONS)),
        Err(err) => Outcome::Failed(format!("{err:#}")),
    }
}

/// .github/workflows: actionlint, zizmor, check-jsonschema, and the cargo xtask lines.
fn workflow_lint(root: &Path) -> Outcome {
    match crate::checks::workflows::check(root) {
        Ok(summary) => Outcome::Passed(summary),
        Err(err) => Outcome::Failed(format!("{err:#}")),
    }
}

/// The module under nixpkgs' real lib.evalModules (NIXPKGS_LIB).
fn nix_module(sh: &Shell, root: &Path) -> Outcome {
    if !have(sh, "nix-instantiate") {
        return Outcome::Skipped("nix-instantiate is not installed (apt-get install nix-bin)".into());
    }
    match crate::checks::nix_module::check(sh, root) {
        Ok(Some(summary)) => Outcome::Passed(summary),
        Ok(None) => Outcome::Skipped(
            "no nixpkgs lib: set NIXPKGS_LIB to a nixpkgs lib/ (or provide ../shared/vendor/nixpkgs-lib/lib beside the repository) to evaluate the module with lib.evalModules".into(),
        ),
        Err(err) => Outcome::Failed(format!("{err:#}")),
    }
}

/// The module's metadata rules and nix daemon users, performed on a real
/// kernel (root and Debian's iptables; otherwise skipped, saying why).
fn metadata_service(sh: &Shell, root: &Path) -> Outcome {
    match crate::checks::imds::check(sh, root) {
        Ok(crate::checks::imds::Tested::Passed(summary)) => Outcome::Passed(summary),
        Ok(crate::checks::imds::Tested::Skipped(why)) => Outcome::Skipped(why),
        Err(err) => Outcome::Failed(format!("{err:#}")),
    }
}

/// The ruff release the project's Python is linted with.
const RUFF_VERSION: &str = "0.17.5";

/// ruff (pinned; its default rules, no configuration file) over every `.py`
/// file; first on a file with an unused import, which it must refuse, so a
/// ruff that passes everything fails the check. Installed from PyPI into
/// target/tools/ruff on first use.
fn ruff(sh: &Shell, root: &Path) -> Outcome {
    let files = project_files(root, ".py");
    if files.is_empty() {
        return Outcome::Skipped("the repository has no .py files".into());
    }
    let ruff = match crate::tools::pip_tool(root, "ruff", "ruff", RUFF_VERSION, "ruff") {
        Ok(ruff) => ruff,
        Err(err) => return Outcome::Skipped(format!("ruff {RUFF_VERSION} could not be installed: {err:#}")),
    };
    let lint = |files: &[PathBuf]| cmd!(sh, "{ruff} check --no-cache --isolated --quiet {files...}").quiet();
    let Ok(dir) = tempfile::tempdir() else { return Outcome::Failed("cannot create a temporary directory".into()) };
    let bad = dir.path().join("unused.py");
    if std::fs::write(&bad, "import os\n").is_err() {
        return Outcome::Failed("cannot write the negative sample".into());
    }
    if lint(&[bad]).ignore_stdout().ignore_stderr().run().is_ok() {
        return Outcome::Failed(format!("{} accepted a file with an unused import: it checks nothing", ruff.display()));
    }
    match lint(&files).run() {
        Ok(()) => Outcome::Passed(format!("{} file(s) pass ruff {RUFF_VERSION}", files.len())),
        Err(_) => Outcome::Failed(format!(
            "ruff {RUFF_VERSION} found the problems printed above, each with its file and line (`{} check --isolated --fix FILE` fixes the ones marked [*])",
            ruff.display()
        )),
    }
}

fn shellcheck(sh: &Shell, root: &Path) -> Outcome {
    let mut files = project_files(root, ".sh");
    files.push(root.join(".ci/run"));
    files.retain(|f| f.exists());
    if !have(sh, "shellcheck") {
        return Outcome::Skipped("shellcheck is not installed (apt-get install shellcheck)".into());
    }
    let count = files.len();
    match cmd!(sh, "shellcheck {files...}").quiet().run() {
        Ok(()) => Outcome::Passed(format!("{count} script(s)")),
        Err(err) => Outcome::Failed(err.to_string()),
    }
}

/// cargo-machete, pinned in `.ci/run`.
const MACHETE_VERSION: &str = "0.9.2";

/// No unused dependency (cargo-machete, first on a sample crate with one,
/// which it must report), and no feature drift (see [`feature_drift`]).
fn dependencies(sh: &Shell, root: &Path) -> Outcome {
    let Some(machete) = cargo_tool(sh, root, "cargo-machete") else {
        return Outcome::Skipped(format!(
            "cargo-machete is not installed (`cargo install --locked cargo-machete --version {MACHETE_VERSION}`; .ci/run does it)"
        ));
    };
    let checked = machete_catches_a_sample(sh, &machete).and_then(|()| {
        // --with-metadata: the test kit's library is `testkit`, not its package's name.
        let out = cmd!(sh, "{machete} --with-metadata").quiet().ignore_status().output()?;
        anyhow::ensure!(
            out.status.success(),
            "cargo-machete found unused dependencies: remove each from its Cargo.toml, or list it under \
             [package.metadata.cargo-machete] ignored saying why:\n{}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
        feature_drift(sh)
    });
    match checked {
        Ok(count) => Outcome::Passed(format!(
            "no unused dependency (cargo-machete); `cargo xtask` and `cargo build -p clawdinator` build no \
             dependency with other features than the tests' {count}"
        )),
        Err(err) => Outcome::Failed(format!("{err:#}")),
    }
}

/// A cargo-machete that passes a crate with an unused dependency checks nothing.
fn machete_catches_a_sample(sh: &Shell, machete: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let manifest =
        "[package]\nname = \"sample\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nserde = \"1\"\n";
    std::fs::write(dir.path().join("Cargo.toml"), manifest)?;
    std::fs::create_dir(dir.path().join("src"))?;
    std::fs::write(dir.path().join("src/lib.rs"), "pub fn unused_serde() {}\n")?;
    let sample = dir.path();
    let out = cmd!(sh, "{machete} {sample}").quiet().ignore_status().output()?;
    let reported = String::from_utf8_lossy(&out.stdout).contains("serde");
    anyhow::ensure!(
        !out.status.success() && reported,
        "{machete} passed a crate whose dependency serde is unused: it checks nothing"
    );
    Ok(())
}

/// Feature drift: a dependency that `cargo xtask` (a build of the xtask
/// package) or `cargo build -p clawdinator` resolves with other features
/// than the workspace's test build is compiled twice. Every (package,
/// features) those builds have must be one the tests' build has too; the
/// workspace's own packages are left out. The count of the tests' is returned.
fn feature_drift(sh: &Shell) -> Result<usize> {
    let tested = resolved(sh, &["--workspace", "-e", "normal,build,dev"])?;
    let mut drift = Vec::new();
    for package in ["xtask", "clawdinator"] {
        for line in resolved(sh, &["-p", package, "-e", "normal,build"])?.difference(&tested) {
            drift.push(format!("`cargo build -p {package}` resolves {line}"));
        }
    }
    anyhow::ensure!(
        drift.is_empty(),
        "feature drift, each such dependency is compiled twice:\n  {}\nname the features the tests' build gives it \
         in the root Cargo.toml's [workspace.dependencies] (as its comment says)",
        drift.join("\n  ")
    );
    Ok(tested.len())
}

/// `cargo tree`'s packages with their features (`name vX [f,…]`), for `args`.
fn resolved(sh: &Shell, args: &[&str]) -> Result<std::collections::BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let format = "{p} [{f}]";
    let text = cmd!(sh, "{cargo} tree --locked --prefix none -f {format} {args...}").quiet().read()?;
    let lines = text.lines().map(|l| l.trim_end_matches(" (*)").replace(" (proc-macro)", ""));
    // A workspace package is shown with its path: `clawdinator v0.1.0 (/…)`.
    Ok(lines.filter(|l| !l.is_empty() && !l.contains(" (/")).collect())
}
