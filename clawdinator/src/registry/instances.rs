//! The registry's entries, checked field by field and across entries.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

pub const DEFAULT_PATH: &str = "nix/instances.json";
pub const TOKEN_SECRET_PREFIX: &str = "clawdinator-discord-token-";
const FIELDS: [&str; 4] = ["host", "instanceType", "bootstrapPrefix", "discordTokenSecret"];

/// One host of the fleet, as the registry describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Instance {
    /// NixOS host name and EC2 `Name` tag; equals the registry key.
    pub host: String,
    pub instance_type: String,
    /// S3 prefix of this instance's bootstrap bundle.
    pub bootstrap_prefix: String,
    /// Name (without `.age`) of the one Discord token this instance may have.
    pub discord_token_secret: String,
}

impl Instance {
    /// File name of this instance's token in the secrets directory.
    pub fn token_file(&self) -> String {
        format!("{}.age", self.discord_token_secret)
    }
}

/// A validated registry: every instance passed every check.
#[derive(Debug, Clone)]
pub struct Registry {
    pub path: PathBuf,
    pub instances: BTreeMap<String, Instance>,
}

impl Registry {
    /// The registry a command's `--instances` names (a relative path from the checkout's root).
    pub fn given(arg: &crate::flags::InstancesArg) -> Result<Registry> {
        Ok(Registry::load(&crate::project::resolve(&arg.path))?)
    }

    /// Read and validate; every problem found is in the error.
    pub fn load(path: &Path) -> Result<Registry, Problems> {
        let shown = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) => {
                return Err(Problems(vec![Problem::file(
                    &shown,
                    format!("cannot read the registry: {err}"),
                    "create it (see README: the fleet registry) or pass --instances FILE",
                )]))
            }
        };
        Registry::parse(&text, &shown)
    }

    /// Validate registry text read from elsewhere (`shown` names where, e.g. `REV:nix/instances.json`).
    pub fn parse(text: &str, shown: &str) -> Result<Registry, Problems> {
        let (registry, problems) = check(Path::new(shown), text);
        match registry {
            Some(registry) if problems.is_empty() => Ok(registry),
            _ => Err(Problems(problems)),
        }
    }

    /// The instances named, in registry order; all of them when `names` is empty.
    pub fn select(&self, names: &[String]) -> Result<Vec<&Instance>> {
        if names.is_empty() {
            return Ok(self.instances.values().collect());
        }
        let mut out = Vec::new();
        for name in names {
            match self.instances.get(name) {
                Some(instance) => out.push(instance),
                None => bail!(
                    "instance `{name}` is not in {} (known: {})",
                    self.path.display(),
                    self.instances.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            }
        }
        Ok(out)
    }
}

/// One thing wrong with the registry, located as precisely as possible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub file: String,
    pub instance: Option<String>,
    pub field: Option<String>,
    pub message: String,
    pub fix: String,
}

impl Problem {
    fn file(file: &str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Problem { file: file.into(), instance: None, field: None, message: message.into(), fix: fix.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(instance) = &self.instance {
            write!(f, ": instance `{instance}`")?;
        }
        if let Some(field) = &self.field {
            write!(f, ", field `{field}`")?;
        }
        write!(f, ": {} (fix: {})", self.message, self.fix)
    }
}

/// All the problems of one registry, as an error.
#[derive(Debug, Clone)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.0.first().map(|p| p.file.as_str()).unwrap_or(DEFAULT_PATH);
        writeln!(f, "{} problem(s) in the fleet registry {file}:", self.0.len())?;
        for problem in &self.0 {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// The registry's entries in file order, duplicates kept (a JSON object with
/// a repeated key is legal to parsers that keep the last one, and would
/// silently drop a host).
struct Entries(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object keyed by instance name")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Value>()? {
                    entries.push((key, value));
                }
                Ok(Entries(entries))
            }
        }
        de.deserialize_map(EntriesVisitor)
    }
}

/// Validate registry text; returns the registry when it could be built at all
/// and every problem found (an empty list means valid).
pub fn check(path: &Path, text: &str) -> (Option<Registry>, Vec<Problem>) {
    let file = path.display().to_string();
    let entries = match serde_json::from_str::<Entries>(text) {
        Ok(Entries(entries)) => entries,
        Err(err) => {
            let what = if err.is_data() { "not a JSON object keyed by instance name" } else { "invalid JSON" };
            return (
                None,
                vec![Problem::file(
                    &file,
                    format!("{what} at line {}, column {}: {err}", err.line(), err.column()),
                    "make it a JSON object of instance name -> {host, instanceType, bootstrapPrefix, discordTokenSecret}",
                )],
            );
        }
    };
    let mut problems = Vec::new();
    if entries.is_empty() {
        problems.push(Problem::file(&file, "the registry is empty", "add at least one instance"));
    }
    let report = Reporter { file: &file };
    let mut seen_keys: HashMap<&str, usize> = HashMap::new();
    let mut checked = Vec::new();
    for (key, value) in &entries {
        *seen_keys.entry(key).or_default() += 1;
        if seen_keys[key.as_str()] == 2 {
            problems.push(report.at(key, None, "the key appears more than once", "keep one entry per instance"));
        }
        checked.push((key.as_str(), check_entry(&report, key, value, &mut problems)));
    }
    check_shared(&report, &checked, &mut problems);
    let instances =
        checked.into_iter().filter_map(|(key, fields)| Some((key.to_string(), fields.instance()?))).collect();
    (Some(Registry { path: path.to_path_buf(), instances }), problems)
}

/// Locates problems in one registry file.
struct Reporter<'a> {
    file: &'a str,
}

impl Reporter<'_> {
    fn at(&self, instance: &str, field: Option<&str>, message: impl Into<String>, fix: impl Into<String>) -> Problem {
        Problem {
            file: self.file.to_string(),
            instance: Some(instance.to_string()),
            field: field.map(str::to_string),
            message: message.into(),
            fix: fix.into(),
        }
    }
}

/// The fields of one entry that are present and strings.
#[derive(Default)]
struct Fields {
    host: Option<String>,
    instance_type: Option<String>,
    prefix: Option<String>,
    token: Option<String>,
}

impl Fields {
    fn instance(self) -> Option<Instance> {
        Some(Instance {
            host: self.host?,
            instance_type: self.instance_type?,
            bootstrap_prefix: self.prefix?,
            discord_token_secret: self.token?,
        })
    }
}

/// One string field: a problem when it is missing or not a string.
fn string_field(
    report: &Reporter,
    key: &str,
    object: &serde_json::Map<String, Value>,
    name: &str,
    example: String,
    problems: &mut Vec<Problem>,
) -> Option<String> {
    match object.get(name) {
        None => {
            problems.push(report.at(key, Some(name), "missing field", format!("add \"{name}\": \"{example}\"")));
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            let message = format!("must be a string, found {other}");
            problems.push(report.at(key, Some(name), message, format!("set it to \"{example}\"")));
            None
        }
    }
}

/// Everything about one entry that does not depend on the others.
fn check_entry(report: &Reporter, key: &str, value: &Value, problems: &mut Vec<Problem>) -> Fields {
    let Some(object) = value.as_object() else {
        let fix = format!("make it an object with fields {}", FIELDS.join(", "));
        problems.push(report.at(key, None, "the entry is not a JSON object", fix));
        return Fields::default();
    };
    for name in object.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
        let fix = format!("remove it; the allowed fields are {}", FIELDS.join(", "));
        problems.push(report.at(key, Some(name), "unknown field", fix));
    }
    let fields = Fields {
        host: string_field(report, key, object, "host", key.to_string(), problems),
        instance_type: string_field(report, key, object, "instanceType", "t3.large".into(), problems),
        prefix: string_field(report, key, object, "bootstrapPrefix", format!("bootstrap/{key}"), problems),
        token: string_field(report, key, object, "discordTokenSecret", format!("{TOKEN_SECRET_PREFIX}N"), problems),
    };
    check_host(report, key, fields.host.as_deref(), problems);
    check_values(report, key, &fields, problems);
    fields
}

/// The host: the entry's key, and a valid host name.
fn check_host(report: &Reporter, key: &str, host: Option<&str>, problems: &mut Vec<Problem>) {
    let Some(host) = host else { return };
    if host != key {
        let message = format!("is \"{host}\" but the key is \"{key}\"");
        problems.push(report.at(key, Some("host"), message, "make the key and host equal"));
    }
    if let Some(why) = host_name_error(host) {
        let message = format!("\"{host}\" {why}");
        problems.push(report.at(key, Some("host"), message, "use 1-63 characters of a-z, 0-9 and -"));
    }
}

/// The instance type, the bootstrap prefix and the token secret, each of its form.
fn check_values(report: &Reporter, key: &str, fields: &Fields, problems: &mut Vec<Problem>) {
    if let Some(t) = fields.instance_type.as_ref().filter(|t| !valid_instance_type(t)) {
        let message = format!("\"{t}\" is not an EC2 instance type of the form family.size");
        problems.push(report.at(key, Some("instanceType"), message, "use e.g. \"t3.large\""));
    }
    if let Some((p, why)) = fields.prefix.as_ref().and_then(|p| Some((p, prefix_error(p)?))) {
        let message = format!("\"{p}\" {why}");
        problems.push(report.at(key, Some("bootstrapPrefix"), message, format!("use \"bootstrap/{key}\"")));
    }
    if let Some((s, why)) = fields.token.as_ref().and_then(|s| Some((s, token_secret_error(s)?))) {
        let fix = format!("use \"{TOKEN_SECRET_PREFIX}<n>\" (the file name without .age)");
        problems.push(report.at(key, Some("discordTokenSecret"), format!("\"{s}\" {why}"), fix));
    }
}

/// What must differ between instances: host, prefix (and no prefix inside
/// another: an instance's IAM scope `<prefix>/*` would cover the other's
/// bundle), and the Discord token (fleet size equals the token pool).
fn check_shared(report: &Reporter, checked: &[(&str, Fields)], problems: &mut Vec<Problem>) {
    let mut hosts: HashMap<&str, &str> = HashMap::new();
    let mut prefixes: HashMap<&str, &str> = HashMap::new();
    let mut tokens: HashMap<&str, &str> = HashMap::new();
    for (key, fields) in checked {
        if let Some(host) = fields.host.as_deref() {
            if let Some(other) = hosts.insert(host, key).filter(|other| other != key) {
                let message = format!("\"{host}\" is also the host of instance `{other}`");
                problems.push(report.at(key, Some("host"), message, "give every instance its own host name"));
            }
        }
        if let Some(p) = fields.prefix.as_deref() {
            if let Some(other) = prefixes.insert(p, key) {
                let message = format!("\"{p}\" is also the prefix of instance `{other}`");
                let fix = format!("give every instance its own prefix, e.g. \"bootstrap/{key}\"");
                problems.push(report.at(key, Some("bootstrapPrefix"), message, fix));
            }
        }
        if let Some(s) = fields.token.as_deref() {
            if let Some(other) = tokens.insert(s, key) {
                let message = format!(
                    "\"{s}\" is also the token of instance `{other}`: each instance needs its own Discord token"
                );
                problems.push(report.at(
                    key,
                    Some("discordTokenSecret"),
                    message,
                    "add a token secret for this instance",
                ));
            }
        }
    }
    for (key, fields) in checked {
        let Some(p) = fields.prefix.as_deref() else { continue };
        for (outer, other) in prefixes.iter().filter(|(outer, _)| p.starts_with(&format!("{outer}/"))) {
            let message = format!(
                "\"{p}\" lies inside \"{outer}\", the prefix of instance `{other}`: its IAM scope ({outer}/*) would cover this instance's bundle"
            );
            problems.push(report.at(
                key,
                Some("bootstrapPrefix"),
                message,
                format!("use a prefix beside it, e.g. \"bootstrap/{key}\""),
            ));
        }
    }
}

/// Why `host` is not an instance (and host) name, if it is not.
pub fn host_name_error(host: &str) -> Option<&'static str> {
    if host.is_empty() || host.len() > 63 {
        Some("must be 1 to 63 characters long")
    } else if !host.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        Some("may only contain a-z, 0-9 and -")
    } else if host.starts_with('-') || host.ends_with('-') {
        Some("may not start or end with -")
    } else {
        None
    }
}

fn valid_instance_type(t: &str) -> bool {
    let Some((family, size)) = t.split_once('.') else { return false };
    family.starts_with(|c: char| c.is_ascii_lowercase())
        && family.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !size.is_empty()
        && size.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Why a bootstrap prefix is unusable, if it is.
pub fn prefix_error(p: &str) -> Option<&'static str> {
    if p.starts_with('/') {
        Some("may not start with /")
    } else if p.chars().any(char::is_whitespace) {
        Some("may not contain whitespace")
    } else if p.split('/').any(|part| part == "..") || p.contains("..") {
        Some("may not contain ..")
    } else if p.contains("//") {
        Some("may not contain //")
    } else if !p.starts_with("bootstrap/") || p.len() == "bootstrap/".len() {
        Some("must be a path under bootstrap/")
    } else if p.ends_with('/') {
        Some("may not end with /")
    } else {
        None
    }
}

fn token_secret_error(s: &str) -> Option<&'static str> {
    let Some(rest) = s.strip_prefix(TOKEN_SECRET_PREFIX) else {
        return Some("does not match clawdinator-discord-token-*");
    };
    if s.ends_with(".age") {
        Some("must be the name without .age")
    } else if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        Some("needs a suffix of letters, digits, - or _ after clawdinator-discord-token-")
    } else {
        None
    }
}

/// A registry checked: its instances, or every problem found.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    file: String,
    pub ok: bool,
    instances: Vec<String>,
    problems: Vec<Problem>,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ok {
            writeln!(f, "ok: {} instance(s) in {}: {}", self.instances.len(), self.file, self.instances.join(", "))
        } else {
            write!(f, "{}", Problems(self.problems.clone()))
        }
    }
}

/// What `fleet check` reports for the registry at `path` (shown as `shown`).
pub fn check_file(path: &Path, shown: &str) -> CheckReport {
    let file = shown.to_string();
    match Registry::load(path) {
        Ok(registry) => {
            CheckReport { file, ok: true, instances: registry.instances.into_keys().collect(), problems: vec![] }
        }
        Err(Problems(problems)) => CheckReport { file, ok: false, instances: vec![], problems },
    }
}
