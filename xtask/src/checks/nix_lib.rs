//! The `nix/lib` check of `cargo xtask test`: the fleet's pure Nix logic,
//! evaluated with `nix-instantiate --eval` (no nixpkgs, `--store dummy://`),
//! must agree with the Rust parsers: the same hosts from every valid
//! registry, a refusal for every invalid one, the same repositories and the
//! same secrets list.

use std::path::Path;

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use clawdinator::bootstrap::seeds;
use clawdinator::registry;
use testkit::fixtures;

/// Evaluate `expr` (a function of `root` and `file`) to JSON.
fn eval(sh: &Shell, root: &Path, expr: &str, file: &Path) -> Result<serde_json::Value, String> {
    let (root, file) = (root.display().to_string(), file.display().to_string());
    let lambda = format!("{{ root, file }}: let lib = import (/. + root + \"/nix/lib\"); path = /. + file; in {expr}");
    let out = cmd!(sh, "nix-instantiate --eval --strict --json --store dummy:// --argstr root {root} --argstr file {file} --expr {lambda}")
        .quiet()
        .ignore_status()
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// Registry texts the Rust parser accepts, and ones it refuses (what is wrong, text).
struct Registries {
    valid: Vec<String>,
    invalid: Vec<(String, String)>,
}

fn registries() -> Result<Registries> {
    let mut valid = vec![std::fs::read_to_string(testkit::repo_root().join(registry::DEFAULT_PATH))?];
    for count in [1, 3, 11, 30] {
        let map: serde_json::Map<String, serde_json::Value> =
            (1..=count).map(|n| (format!("clawdinator-{n}"), fixtures::instance_json(n))).collect();
        valid.push(serde_json::to_string(&map)?);
    }
    let base = |field: &str, value: serde_json::Value| {
        let mut map: serde_json::Map<String, serde_json::Value> =
            (1..=2).map(|n| (format!("clawdinator-{n}"), fixtures::instance_json(n))).collect();
        map["clawdinator-2"][field] = value;
        serde_json::Value::Object(map).to_string()
    };
    let s = |v: &str| serde_json::Value::String(v.into());
    let mut invalid = vec![
        ("the key and host differ".to_string(), base("host", s("clawdinator-3"))),
        ("a host with capitals".into(), base("host", s("Clawdinator-2"))),
        ("a malformed instance type".into(), base("instanceType", s("t3"))),
        ("a prefix outside bootstrap/".into(), base("bootstrapPrefix", s("other/clawdinator-2"))),
        ("a prefix with ..".into(), base("bootstrapPrefix", s("bootstrap/../x"))),
        ("a prefix with //".into(), base("bootstrapPrefix", s("bootstrap//x"))),
        ("a prefix ending in /".into(), base("bootstrapPrefix", s("bootstrap/x/"))),
        ("a prefix with whitespace".into(), base("bootstrapPrefix", s("bootstrap/x y"))),
        ("a shared prefix".into(), base("bootstrapPrefix", s("bootstrap/clawdinator-1"))),
        ("a prefix inside another".into(), base("bootstrapPrefix", s("bootstrap/clawdinator-1/x"))),
        ("a shared token".into(), base("discordTokenSecret", s("clawdinator-discord-token-1"))),
        ("a token outside the pattern".into(), base("discordTokenSecret", s("discord-token-2"))),
        ("a token with .age".into(), base("discordTokenSecret", s("clawdinator-discord-token-2.age"))),
        ("a field that is not a string".into(), base("instanceType", serde_json::json!(3))),
        ("an unknown field".into(), base("extra", s("x"))),
        ("an empty registry".into(), "{}".into()),
        ("not an object".into(), "[]".into()),
    ];
    let mut missing: serde_json::Value = serde_json::from_str(&base("host", s("clawdinator-2")))?;
    missing["clawdinator-2"].as_object_mut().expect("an object").remove("discordTokenSecret");
    invalid.push(("a missing field".into(), missing.to_string()));
    Ok(Registries { valid, invalid })
}

/// What `nix/lib/hosts.nix` makes of each instance, as JSON.
const HOSTS: &str = "builtins.mapAttrs (name: h: { extraModules = map baseNameOf h.extraModules; hostName = h.settings.networking.hostName; \
     inherit (h.settings.services.clawdinator) instanceName discordTokenFile; prefix = h.settings.services.clawdinator.bootstrap.s3Prefix; }) \
     (lib.hosts.fromRegistry { registryFile = path; hostsDir = dirOf path + \"/hosts\"; })";

/// The same, from the Rust registry parser and the host files beside the registry (`hosts/`).
fn expected_hosts(registry: registry::Registry, dir: &Path) -> serde_json::Value {
    let hosts = registry.instances.into_iter().map(|(name, i)| {
        let file = format!("{name}.nix");
        let own: Vec<&str> = if dir.join("hosts").join(&file).is_file() { vec![&file] } else { vec![] };
        let host = serde_json::json!({
            "extraModules": own,
            "hostName": name,
            "instanceName": name,
            "discordTokenFile": format!("/run/agenix/{}", i.discord_token_secret),
            "prefix": i.bootstrap_prefix,
        });
        (name, host)
    });
    serde_json::Value::Object(hosts.collect())
}

fn check_registries(sh: &Shell, root: &Path, dir: &Path) -> Result<usize> {
    let Registries { valid, invalid } = registries()?;
    let file = dir.join("instances.json");
    let expr = HOSTS;
    for text in &valid {
        std::fs::write(&file, text)?;
        let (rust, problems) = registry::check(&file, text);
        anyhow::ensure!(problems.is_empty(), "the Rust parser refuses a registry meant to be valid: {problems:?}");
        let rust = expected_hosts(rust.context("a valid registry")?, dir);
        let nix = eval(sh, root, expr, &file).map_err(|e| anyhow::anyhow!("nix/lib refuses a valid registry: {e}"))?;
        anyhow::ensure!(nix == rust, "nix/lib makes hosts {nix} where the Rust parser reads {rust}");
    }
    for (what, text) in &invalid {
        std::fs::write(&file, text)?;
        anyhow::ensure!(!registry::check(&file, text).1.is_empty(), "the Rust parser accepts {what}");
        match eval(sh, root, expr, &file) {
            Ok(hosts) => bail!("nix/lib accepts {what} (hosts {hosts}) where the Rust parser refuses it"),
            Err(e) if !e.contains(&file.display().to_string()) => {
                bail!("nix/lib refuses {what} without naming the file: {e}")
            }
            Err(_) => {}
        }
    }
    let missing = eval(sh, root, "lib.registry.hostFor path \"clawdinator-9\"", &root.join(registry::DEFAULT_PATH));
    match missing {
        Err(e) if e.contains("clawdinator-9") && e.contains(registry::DEFAULT_PATH) => {}
        other => bail!("looking up a missing host must name it and the registry, got {other:?}"),
    }
    check_host_files(sh, root, dir)?;
    Ok(valid.len() + invalid.len())
}

/// nix/hosts/<name>.nix is merged into its host; one for a name the
/// registry lacks fails evaluation, naming it and the registry.
fn check_host_files(sh: &Shell, root: &Path, dir: &Path) -> Result<()> {
    let hosts = dir.join("hosts");
    std::fs::create_dir_all(&hosts)?;
    let registry = root.join(registry::DEFAULT_PATH);
    let expr = |hosts: &Path| {
        format!(
            "builtins.mapAttrs (_: h: map toString h.extraModules) (lib.hosts.fromRegistry {{ registryFile = path; hostsDir = {}; }})",
            hosts.display()
        )
    };
    std::fs::write(hosts.join("clawdinator-2.nix"), "{ }\n")?;
    let merged = eval(sh, root, &expr(&hosts), &registry).map_err(|e| anyhow::anyhow!("{e}"))?;
    anyhow::ensure!(
        merged["clawdinator-2"][0].as_str().is_some_and(|p| p.ends_with("/hosts/clawdinator-2.nix"))
            && merged["clawdinator-1"] == serde_json::json!([]),
        "nix/hosts/clawdinator-2.nix is not merged into that host alone: {merged}"
    );
    std::fs::write(hosts.join("clawdinator-9.nix"), "{ }\n")?;
    match eval(sh, root, &expr(&hosts), &registry) {
        Err(e) if e.contains("clawdinator-9") && e.contains(registry::DEFAULT_PATH) => Ok(()),
        other => bail!("a host file for a name the registry lacks must fail naming both, got {other:?}"),
    }
}

fn check_repos(sh: &Shell, root: &Path, dir: &Path) -> Result<usize> {
    let shipped = std::fs::read_to_string(root.join(seeds::DEFAULT_LIST))?;
    let valid = [shipped, "a\thttps://x/a\n# c\n\nb\tfile:///b\tmain\r\n".to_string()];
    let invalid = ["a\n", "a\tu\tb\tc\n", ".a\tu\n", "a\tu\na\tv\n", "a b\tu\n", " a\tu\n", "SEEDS.json\tu\n"];
    let file = dir.join("repos.tsv");
    for text in &valid {
        std::fs::write(&file, text)?;
        let rust: Vec<(String, String, Option<String>)> =
            seeds::parse_list(&file, text)?.into_iter().map(|r| (r.name, r.url, r.branch)).collect();
        let nix = eval(sh, root, "lib.repos.load path", &file)
            .map_err(|e| anyhow::anyhow!("nix/lib refuses {text:?}: {e}"))?;
        let nix: Vec<(String, String, Option<String>)> = nix
            .as_array()
            .context("a list")?
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap_or("").into(),
                    r["url"].as_str().unwrap_or("").into(),
                    r["branch"].as_str().map(Into::into),
                )
            })
            .collect();
        anyhow::ensure!(nix == rust, "nix/lib reads {nix:?} where the Rust parser reads {rust:?}");
    }
    for text in invalid {
        std::fs::write(&file, text)?;
        anyhow::ensure!(seeds::parse_list(&file, text).is_err(), "the Rust parser accepts {text:?}");
        anyhow::ensure!(eval(sh, root, "lib.repos.load path", &file).is_err(), "nix/lib accepts {text:?}");
    }
    Ok(valid.len() + invalid.len())
}

fn check_secrets(sh: &Shell, root: &Path) -> Result<()> {
    let file = root.join(clawdinator::secrets::DEFAULT_SPEC);
    let rust = clawdinator::secrets::Spec::load(&file)?;
    let nix = eval(sh, root, "(lib.secrets.load path).common", &file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let nix: Vec<String> = serde_json::from_value(nix)?;
    anyhow::ensure!(nix == rust.common, "nix/lib reads common secrets {nix:?} where Rust reads {:?}", rust.common);
    Ok(())
}

/// The build info a host gets (nix/lib) is what `clawdinator version` reads from the lock.
fn check_build_info(sh: &Shell, root: &Path) -> Result<()> {
    let file = root.join("flake.lock");
    let rust = clawdinator::build_info::BuildInfo::from_lock(&std::fs::read_to_string(&file)?, "r")?;
    let nix = eval(sh, root, "lib.buildInfo.fromLock { lockFile = path; revision = \"r\"; }", &file)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let nix: clawdinator::build_info::BuildInfo = serde_json::from_value(nix)?;
    anyhow::ensure!(nix == rust, "nix/lib's build info {nix:?} differs from the Rust reading {rust:?}");
    anyhow::ensure!(rust.inputs.values().all(|i| i.rev.is_some()), "an input of flake.lock has no revision: {rust:?}");
    Ok(())
}

/// Run every comparison; the summary on success.
pub fn check(sh: &Shell, root: &Path) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let registries = check_registries(sh, root, dir.path())?;
    let lists = check_repos(sh, root, dir.path())?;
    check_secrets(sh, root)?;
    check_build_info(sh, root)?;
    Ok(format!(
        "{registries} registries and {lists} repo lists read alike by nix/lib and the Rust parsers; the secrets list and the build info agree"
    ))
}
