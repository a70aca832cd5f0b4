//! The fleet registry: every defect is reported, naming file, instance and field.

use std::path::Path;

use clawdinator::registry::{check, Problem, Registry};

const VALID: &str = r#"{
  "clawdinator-1": {"host": "clawdinator-1", "instanceType": "t3.large", "bootstrapPrefix": "bootstrap/clawdinator-1", "discordTokenSecret": "clawdinator-discord-token-1"},
  "clawdinator-2": {"host": "clawdinator-2", "instanceType": "t3.large", "bootstrapPrefix": "bootstrap/clawdinator-2", "discordTokenSecret": "clawdinator-discord-token-2"}
}"#;

fn problems(text: &str) -> Vec<Problem> {
    check(Path::new("nix/instances.json"), text).1
}

/// Replace one field of clawdinator-2 in the valid registry.
fn with_field(field: &str, value: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(VALID).unwrap();
    v["clawdinator-2"][field] = serde_json::Value::String(value.into());
    v.to_string()
}

/// Exactly one problem, at `instance`.`field`, whose text mentions `needle`.
fn assert_one(text: &str, instance: &str, field: Option<&str>, needle: &str) {
    let found = problems(text);
    assert_eq!(found.len(), 1, "expected one problem, got {found:#?}");
    let p = &found[0];
    assert_eq!(p.instance.as_deref(), Some(instance), "{p:?}");
    assert_eq!(p.field.as_deref(), field, "{p:?}");
    let shown = p.to_string();
    assert!(shown.contains("nix/instances.json"), "{shown}");
    assert!(shown.contains(&format!("`{instance}`")), "{shown}");
    if let Some(field) = field {
        assert!(shown.contains(&format!("`{field}`")), "{shown}");
    }
    assert!(shown.contains(needle), "`{needle}` not in: {shown}");
    assert!(shown.contains("fix:"), "{shown}");
}

#[test]
fn valid_registry_passes() {
    let (registry, found) = check(Path::new("x.json"), VALID);
    assert!(found.is_empty(), "{found:#?}");
    let registry = registry.unwrap();
    assert_eq!(registry.instances.len(), 2);
    assert_eq!(registry.instances["clawdinator-2"].token_file(), "clawdinator-discord-token-2.age");
}

/// The shipped registry passes the checks, and holds what the rest of the
/// fleet relies on whatever hosts it lists: each host named by its key,
/// its own bootstrap prefix and its own token secret.
#[test]
fn shipped_registry_is_valid() {
    let path = testkit::repo_root().join("nix/instances.json");
    let registry = Registry::load(&path).unwrap_or_else(|p| panic!("{p}"));
    assert!(!registry.instances.is_empty(), "the shipped registry lists no host");
    let mut prefixes = std::collections::BTreeSet::new();
    let mut tokens = std::collections::BTreeSet::new();
    for (name, instance) in &registry.instances {
        assert_eq!(&instance.host, name, "{name}: host differs from its key");
        assert_eq!(instance.bootstrap_prefix, format!("bootstrap/{name}"), "{name}");
        assert_eq!(instance.token_file(), format!("{}.age", instance.discord_token_secret), "{name}");
        assert!(prefixes.insert(&instance.bootstrap_prefix), "{name}: bootstrap prefix shared");
        assert!(tokens.insert(&instance.discord_token_secret), "{name}: Discord token shared");
    }
}

#[test]
fn invalid_json_gives_line_and_column() {
    let found = problems("{\n  \"clawdinator-1\": {\n    \"host\": \"clawdinator-1\",\n  }\n}");
    assert_eq!(found.len(), 1);
    let shown = found[0].to_string();
    assert!(shown.contains("invalid JSON at line 4, column 3"), "{shown}");
}

#[test]
fn unknown_field() {
    let mut v: serde_json::Value = serde_json::from_str(VALID).unwrap();
    v["clawdinator-2"]["instanceTyp"] = "t3.large".into();
    assert_one(&v.to_string(), "clawdinator-2", Some("instanceTyp"), "unknown field");
}

#[test]
fn missing_field() {
    let mut v: serde_json::Value = serde_json::from_str(VALID).unwrap();
    v["clawdinator-2"].as_object_mut().unwrap().remove("discordTokenSecret");
    assert_one(&v.to_string(), "clawdinator-2", Some("discordTokenSecret"), "missing field");
}

#[test]
fn field_of_wrong_type() {
    let mut v: serde_json::Value = serde_json::from_str(VALID).unwrap();
    v["clawdinator-2"]["instanceType"] = 3.into();
    assert_one(&v.to_string(), "clawdinator-2", Some("instanceType"), "must be a string");
}

#[test]
fn key_differs_from_host() {
    assert_one(&with_field("host", "clawdinator-3"), "clawdinator-2", Some("host"), "but the key is");
}

#[test]
fn host_with_bad_characters() {
    let text = VALID.replace("\"clawdinator-2\"", "\"Clawdinator_2\"");
    let found = problems(&text);
    assert!(
        found.iter().any(|p| p.instance.as_deref() == Some("Clawdinator_2")
            && p.field.as_deref() == Some("host")
            && p.message.contains("a-z, 0-9")),
        "{found:#?}"
    );
}

#[test]
fn host_too_long() {
    let long = "c".repeat(64);
    let text = VALID.replace("\"clawdinator-2\"", &format!("\"{long}\""));
    let found = problems(&text);
    assert!(
        found.iter().any(|p| p.instance.as_deref() == Some(long.as_str())
            && p.field.as_deref() == Some("host")
            && p.message.contains("1 to 63")),
        "{found:#?}"
    );
}

#[test]
fn duplicate_hosts() {
    // Same key twice: a plain JSON parser would silently keep the last one.
    let text = r#"{
      "clawdinator-1": {"host": "clawdinator-1", "instanceType": "t3.large", "bootstrapPrefix": "bootstrap/a", "discordTokenSecret": "clawdinator-discord-token-1"},
      "clawdinator-1": {"host": "clawdinator-1", "instanceType": "t3.large", "bootstrapPrefix": "bootstrap/b", "discordTokenSecret": "clawdinator-discord-token-2"}
    }"#;
    let found = problems(text);
    assert!(
        found.iter().any(|p| p.instance.as_deref() == Some("clawdinator-1") && p.message.contains("more than once")),
        "{found:#?}"
    );
}

#[test]
fn prefix_not_under_bootstrap() {
    assert_one(
        &with_field("bootstrapPrefix", "boot/clawdinator-2"),
        "clawdinator-2",
        Some("bootstrapPrefix"),
        "under bootstrap/",
    );
}

#[test]
fn prefix_with_dot_dot() {
    assert_one(&with_field("bootstrapPrefix", "bootstrap/../etc"), "clawdinator-2", Some("bootstrapPrefix"), "..");
}

#[test]
fn prefix_with_double_slash() {
    assert_one(
        &with_field("bootstrapPrefix", "bootstrap//clawdinator-2"),
        "clawdinator-2",
        Some("bootstrapPrefix"),
        "//",
    );
}

#[test]
fn prefix_with_leading_slash() {
    assert_one(
        &with_field("bootstrapPrefix", "/bootstrap/clawdinator-2"),
        "clawdinator-2",
        Some("bootstrapPrefix"),
        "start with /",
    );
}

#[test]
fn prefix_with_whitespace() {
    assert_one(
        &with_field("bootstrapPrefix", "bootstrap/claw dinator-2"),
        "clawdinator-2",
        Some("bootstrapPrefix"),
        "whitespace",
    );
}

#[test]
fn shared_prefix() {
    assert_one(
        &with_field("bootstrapPrefix", "bootstrap/clawdinator-1"),
        "clawdinator-2",
        Some("bootstrapPrefix"),
        "also the prefix of instance `clawdinator-1`",
    );
}

#[test]
fn shared_token_secret() {
    assert_one(
        &with_field("discordTokenSecret", "clawdinator-discord-token-1"),
        "clawdinator-2",
        Some("discordTokenSecret"),
        "also the token of instance `clawdinator-1`",
    );
}

#[test]
fn token_secret_pattern() {
    assert_one(
        &with_field("discordTokenSecret", "discord-token-2"),
        "clawdinator-2",
        Some("discordTokenSecret"),
        "clawdinator-discord-token-*",
    );
    assert_one(
        &with_field("discordTokenSecret", "clawdinator-discord-token-2.age"),
        "clawdinator-2",
        Some("discordTokenSecret"),
        "without .age",
    );
}

#[test]
fn malformed_instance_type() {
    for bad in ["t3large", "t3.", ".large", "T3.large", "t3.large.x"] {
        assert_one(&with_field("instanceType", bad), "clawdinator-2", Some("instanceType"), "family.size");
    }
    for good in ["m7i-flex.large", "c6gn.16xlarge", "u-6tb1.metal"] {
        assert!(problems(&with_field("instanceType", good)).is_empty(), "{good}");
    }
}

#[test]
fn empty_registry() {
    let found = problems("{}");
    assert_eq!(found.len(), 1);
    assert!(found[0].to_string().contains("the registry is empty"), "{}", found[0]);
}

#[test]
fn every_problem_is_reported_at_once() {
    let mut v: serde_json::Value = serde_json::from_str(VALID).unwrap();
    v["clawdinator-1"]["instanceType"] = "bad".into();
    v["clawdinator-2"]["bootstrapPrefix"] = "/x".into();
    v["clawdinator-2"]["discordTokenSecret"] = "nope".into();
    let found = problems(&v.to_string());
    assert_eq!(found.len(), 3, "{found:#?}");
}

#[test]
fn fleet_check_cli_exit_codes_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    let bad = dir.path().join("bad.json");
    std::fs::write(&good, VALID).unwrap();
    std::fs::write(&bad, with_field("host", "other")).unwrap();
    let host = env!("CARGO_BIN_EXE_clawdinator");

    let out =
        std::process::Command::new(host).args(["--json", "fleet", "check", "--instances"]).arg(&good).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["instances"], serde_json::json!(["clawdinator-1", "clawdinator-2"]));

    let out =
        std::process::Command::new(host).args(["--json", "fleet", "check", "--instances"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["problems"][0]["instance"], "clawdinator-2");
    assert_eq!(report["problems"][0]["field"], "host");

    // Usage errors exit 2.
    let out = std::process::Command::new(host).args(["fleet", "chek"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// An instance's IAM scope is `<prefix>/*`: a prefix inside another would
/// let the outer instance read the inner one's bundle.
#[test]
fn nested_prefix() {
    assert_one(
        &with_field("bootstrapPrefix", "bootstrap/clawdinator-1/inner"),
        "clawdinator-2",
        Some("bootstrapPrefix"),
        "lies inside \"bootstrap/clawdinator-1\", the prefix of instance `clawdinator-1`: its IAM scope",
    );
    // A common start that is not a path prefix is fine: bootstrap/clawdinator-1 and -10.
    let text = with_field("bootstrapPrefix", "bootstrap/clawdinator-10");
    assert!(problems(&text).is_empty(), "{:?}", problems(&text));
}

fn cli(args: &[&str]) -> (i32, String) {
    let out = testkit::env::offline_cli(env!("CARGO_BIN_EXE_clawdinator")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Usage errors exit 2, whether clap or the command finds them, and a
/// parsed flag always does something.
#[test]
fn usage_errors_exit_2() {
    for (args, needle) in [
        (&["secrets", "seed"][..], "--instance"),
        (&["bootstrap", "upload", "--instance", "a", "--all"], "cannot be used with"),
        (&["image", "publish", "--workers", "0"], "--workers"),
        (&["image", "publish", "--workers", "1000"], "--workers"),
        (&["bootstrap", "upload", "--all", "--concurrency", "0"], "--concurrency"),
        (&["bootstrap", "upload", "--all"], "no bucket"),
        (&["secrets", "github-token", "--pem", "/nonexistent", "--permission", "contents=read"], "no app id"),
        (
            &["secrets", "github-token", "--app-id", "1", "--installation-id", "2", "--permission", "contents=read"],
            "no GitHub App key",
        ),
    ] {
        let (code, stderr) = cli(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
