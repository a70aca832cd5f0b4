//! A root module as hcl2json gives it, and the checks that need no
//! provider: the provider schema (arguments, blocks, required ones),
//! references (every `var.`, `local.`, resource and data reference
//! resolves; every variable is used), and the project's own rules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::schema::{Block, ProviderSchema};

/// Arguments every resource and data block may have (OpenTofu's meta-arguments).
const META: &[&str] = &["count", "for_each", "depends_on", "provider", "lifecycle", "provisioner", "connection"];

/// One `resource` or `data` block.
pub struct Item<'a> {
    pub file: &'a Path,
    pub data: bool,
    pub kind: String,
    pub name: String,
    pub body: &'a Value,
}

impl Item<'_> {
    pub fn address(&self) -> String {
        format!("{}{}.{}", if self.data { "data." } else { "" }, self.kind, self.name)
    }
}

/// The declarations of a module, across its files.
pub struct Module<'a> {
    pub items: Vec<Item<'a>>,
    pub variables: BTreeMap<String, &'a Value>,
    pub locals: BTreeMap<String, &'a Value>,
    pub outputs: BTreeMap<String, &'a Value>,
    /// Everything outside `variable` blocks, for finding references.
    pub rest: Vec<&'a Value>,
}

fn first(v: &Value) -> &Value {
    v.as_array().and_then(|a| a.first()).unwrap_or(v)
}

impl<'a> Module<'a> {
    pub fn new(files: &'a BTreeMap<PathBuf, Value>) -> Module<'a> {
        let mut module = Module {
            items: vec![],
            variables: BTreeMap::new(),
            locals: BTreeMap::new(),
            outputs: BTreeMap::new(),
            rest: vec![],
        };
        for (file, json) in files {
            for (section, data) in [("resource", false), ("data", true)] {
                for (kind, named) in json[section].as_object().into_iter().flatten() {
                    for (name, body) in named.as_object().into_iter().flatten() {
                        let body = first(body);
                        module.items.push(Item { file, data, kind: kind.clone(), name: name.clone(), body });
                        module.rest.push(body);
                    }
                }
            }
            for (name, body) in json["variable"].as_object().into_iter().flatten() {
                module.variables.insert(name.clone(), first(body));
            }
            for block in json["locals"].as_array().into_iter().flatten() {
                for (name, value) in block.as_object().into_iter().flatten() {
                    module.locals.insert(name.clone(), value);
                    module.rest.push(value);
                }
            }
            for (name, body) in json["output"].as_object().into_iter().flatten() {
                module.outputs.insert(name.clone(), first(body));
                module.rest.push(first(body));
            }
            for section in ["provider", "terraform", "module"] {
                if let Some(v) = json.get(section) {
                    module.rest.push(v);
                }
            }
        }
        module
    }

    pub fn item(&self, kind: &str, name: &str) -> Option<&Item<'a>> {
        self.items.iter().find(|i| !i.data && i.kind == kind && i.name == name)
    }
}

// ------------------------------------------------------------- schema

/// One thing a check found, named by the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub check: &'static str,
    pub message: String,
}

impl Finding {
    pub fn new(check: &'static str, message: impl Into<String>) -> Finding {
        Finding { check, message: message.into() }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.check, self.message)
    }
}

/// Every resource and data block against the provider's schema.
pub fn check_schema(module: &Module, schema: &ProviderSchema, findings: &mut Vec<Finding>) {
    for item in &module.items {
        let at = format!("{}: {}", item.file.display(), item.address());
        if !schema.knows(item.data, &item.kind) {
            let what = if item.data { "data source" } else { "resource" };
            findings
                .push(Finding::new("schema", format!("{at}: unknown {what} type {} in the AWS provider", item.kind)));
            continue;
        }
        match schema.block(item.data, &item.kind) {
            Some(block) => check_block(&at, item.body, block, true, findings),
            None => findings.push(Finding::new(
                "schema",
                format!(
                    "{at}: {} is not in {} yet: regenerate it with `cargo xtask opentofu-schema`",
                    item.kind,
                    super::schema::EXTRACT
                ),
            )),
        }
    }
}

fn check_block(at: &str, body: &Value, block: &Block, top: bool, findings: &mut Vec<Finding>) {
    let Some(fields) = body.as_object() else { return };
    let mut present: BTreeSet<&str> = fields.keys().map(String::as_str).collect();
    for (name, value) in fields {
        if top && META.contains(&name.as_str()) {
            continue;
        }
        if name == "dynamic" {
            for (inner, generators) in value.as_object().into_iter().flatten() {
                match block.blocks.get(inner) {
                    Some(nested) => {
                        present.insert(inner);
                        for generator in generators.as_array().into_iter().flatten() {
                            for content in generator["content"].as_array().into_iter().flatten() {
                                check_block(&format!("{at}.{inner}"), content, nested, false, findings);
                            }
                        }
                    }
                    None => {
                        findings.push(Finding::new("schema", format!("{at}: dynamic \"{inner}\" is not a block here")))
                    }
                }
            }
        } else if let Some(nested) = block.blocks.get(name) {
            for instance in value.as_array().into_iter().flatten() {
                check_block(&format!("{at}.{name}"), instance, nested, false, findings);
            }
        } else if !block.arguments.contains_key(name) {
            findings.push(Finding::new("schema", format!("{at}: unknown argument or block \"{name}\"")));
        }
    }
    let missing = block
        .arguments
        .iter()
        .filter(|(_, required)| **required)
        .map(|(n, _)| n)
        .chain(block.blocks.iter().filter(|(_, b)| b.required).map(|(n, _)| n))
        .filter(|n| !present.contains(n.as_str()));
    for name in missing {
        findings.push(Finding::new("schema", format!("{at}: required \"{name}\" is missing")));
    }
}

// --------------------------------------------------------- references

/// Every reference in an expression string: its dotted parts (index
/// expressions skipped), e.g. `aws_iam_role.instance[each.key].arn` ->
/// [aws_iam_role, instance, arn].
pub fn traversals(text: &str) -> Vec<Vec<String>> {
    let chars: Vec<char> = text.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts = (chars[i].is_ascii_alphabetic() || chars[i] == '_')
            && (i == 0 || !(name_char(chars[i - 1]) || chars[i - 1] == '.'));
        if !starts {
            i += 1;
            continue;
        }
        let (parts, end, first_index) = reference_at(&chars, i);
        if parts.len() >= 2 {
            found.push(parts);
        }
        // References inside an index are scanned after this one.
        i = first_index.unwrap_or(end);
    }
    found
}

/// A character of an HCL name.
fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// The reference beginning at `start`: its dotted parts, where it ends,
/// and where the inside of its first index begins (if it has one).
fn reference_at(chars: &[char], start: usize) -> (Vec<String>, usize, Option<usize>) {
    let mut parts = Vec::new();
    let mut first_index = None;
    let mut i = start;
    loop {
        let begin = i;
        while i < chars.len() && name_char(chars[i]) {
            i += 1;
        }
        parts.push(chars[begin..i].iter().collect::<String>());
        while i < chars.len() && chars[i] == '[' {
            first_index.get_or_insert(i + 1);
            i = past_index(chars, i);
        }
        if i + 1 < chars.len() && chars[i] == '.' && (chars[i + 1].is_ascii_alphabetic() || chars[i + 1] == '_') {
            i += 1;
        } else {
            break;
        }
    }
    (parts, i, first_index)
}

/// Where the index opening with the `[` at `open` ends (nested brackets
/// matched; the end of the text if it never closes).
fn past_index(chars: &[char], open: usize) -> usize {
    let mut depth = 0;
    let mut i = open;
    while i < chars.len() {
        depth += match chars[i] {
            '[' => 1,
            ']' => -1,
            _ => 0,
        };
        i += 1;
        if depth == 0 {
            break;
        }
    }
    i
}

fn strings<'v>(value: &'v Value, out: &mut Vec<&'v str>) {
    match value {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Value::Object(o) => o.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// Every reference resolves; every declared variable is used.
pub fn check_references(module: &Module, schema: &ProviderSchema, findings: &mut Vec<Finding>) {
    let mut texts = Vec::new();
    module.rest.iter().for_each(|v| strings(v, &mut texts));
    let mut used_vars = BTreeSet::new();
    let declared: BTreeSet<String> = module.items.iter().map(|i| i.address()).collect();
    for parts in texts.iter().flat_map(|t| traversals(t)) {
        let (root, second) = (parts[0].as_str(), parts[1].as_str());
        match root {
            "var" => {
                used_vars.insert(second.to_string());
                if !module.variables.contains_key(second) {
                    findings.push(Finding::new(
                        "references",
                        format!("var.{second} is used but no variable \"{second}\" is declared"),
                    ));
                }
            }
            "local" if !module.locals.contains_key(second) => findings.push(Finding::new(
                "references",
                format!("local.{second} is used but no local \"{second}\" is defined"),
            )),
            "data" if parts.len() >= 3 => check_item_ref(module, schema, &declared, true, &parts[1..], findings),
            kind if schema.knows(false, kind) => check_item_ref(module, schema, &declared, false, &parts, findings),
            _ => {}
        }
    }
    for name in module.variables.keys().filter(|n| !used_vars.contains(*n)) {
        findings.push(Finding::new("references", format!("variable \"{name}\" is declared but never used")));
    }
}

fn check_item_ref(
    module: &Module,
    schema: &ProviderSchema,
    declared: &BTreeSet<String>,
    data: bool,
    parts: &[String],
    findings: &mut Vec<Finding>,
) {
    let address = format!("{}{}.{}", if data { "data." } else { "" }, parts[0], parts[1]);
    if !declared.contains(&address) {
        findings.push(Finding::new("references", format!("{address} is referenced but not declared")));
        return;
    }
    let (Some(attribute), Some(block)) = (parts.get(2), schema.block(data, &parts[0])) else { return };
    let known = block.arguments.contains_key(attribute)
        || block.blocks.contains_key(attribute)
        || block.attributes.contains(attribute);
    if !known && module.items.iter().any(|i| i.address() == address) {
        findings.push(Finding::new(
            "references",
            format!("{address}.{attribute}: {} has no attribute \"{attribute}\"", parts[0]),
        ));
    }
}

// ---------------------------------------------------- the project's rules

/// Every bucket is encrypted and private: each `aws_s3_bucket` has a
/// server-side encryption configuration and a public access block naming it.
pub fn check_buckets(module: &Module, findings: &mut Vec<Finding>) {
    for bucket in module.items.iter().filter(|i| !i.data && i.kind == "aws_s3_bucket") {
        let reference = format!("aws_s3_bucket.{}.", bucket.name);
        for companion in ["aws_s3_bucket_server_side_encryption_configuration", "aws_s3_bucket_public_access_block"] {
            let found = module
                .items
                .iter()
                .any(|i| i.kind == companion && i.body["bucket"].as_str().is_some_and(|b| b.contains(&reference)));
            if !found {
                findings.push(Finding::new(
                    "rules",
                    format!(
                        "{}: {} has no {companion}: every bucket is encrypted and private",
                        bucket.file.display(),
                        bucket.address()
                    ),
                ));
            }
        }
    }
}

/// Every lifecycle rule of a configuration: its `rule` blocks, and the
/// content of its `dynamic "rule"` blocks with their `for_each`.
fn lifecycle_rules<'a>(item: &Item<'a>) -> Vec<(&'a Value, Option<String>)> {
    let plain = item.body["rule"].as_array().into_iter().flatten().map(|r| (r, None));
    let dynamic = item.body["dynamic"]["rule"].as_array().into_iter().flatten().map(|d| {
        let each = d["for_each"].as_str().unwrap_or_default().to_string();
        (&d["content"][0], Some(each))
    });
    plain.chain(dynamic).collect()
}

/// The `aws_s3_bucket` resource a companion resource's `bucket` names, if any.
fn bucket_named<'m>(module: &'m Module, companion: &Item) -> Option<&'m Item<'m>> {
    let bucket = companion.body["bucket"].as_str()?;
    module
        .items
        .iter()
        .find(|b| !b.data && b.kind == "aws_s3_bucket" && bucket.contains(&format!("aws_s3_bucket.{}.", b.name)))
}

/// Whether the bucket may hold audit records: unless the module gives it a
/// policy (a template under `dir`) that says nothing of `audit/`, it may.
/// The audit writers name the fleet bucket, whose policy protects them; a
/// bucket whose own policy does not holds none (the cache, the public tree).
fn may_hold_audit_records(module: &Module, dir: &Path, bucket: Option<&Item>) -> bool {
    let Some(bucket) = bucket else { return true };
    let reference = format!("aws_s3_bucket.{}.", bucket.name);
    let policy = module.items.iter().find(|i| {
        i.kind == "aws_s3_bucket_policy" && i.body["bucket"].as_str().is_some_and(|b| b.contains(&reference))
    });
    let text = policy.and_then(|p| p.body["policy"].as_str()).unwrap_or_default();
    match super::hcl::templatefile_calls(text).first() {
        Some((path, _)) => std::fs::read_to_string(dir.join(path)).map_or(true, |t| t.contains("audit/")),
        None => true,
    }
}

/// No lifecycle rule expires anything under `audit/`: on a bucket that may
/// hold audit records, a rule that expires (current or old versions) names
/// a prefix, literal, outside `audit/`.
pub fn check_audit_lifecycle(module: &Module, dir: &Path, findings: &mut Vec<Finding>) {
    let expires =
        |rule: &Value| rule.get("expiration").is_some() || rule.get("noncurrent_version_expiration").is_some();
    let prefix_of = |rule: &Value| rule["filter"][0]["prefix"].as_str().map(str::to_string);
    for item in module.items.iter().filter(|i| i.kind == "aws_s3_bucket_lifecycle_configuration") {
        if !may_hold_audit_records(module, dir, bucket_named(module, item)) {
            continue;
        }
        let mut fail = |what: String| {
            findings.push(Finding::new(
                "rules",
                format!(
                    "{}: {}: {what}: audit records' versions must never expire",
                    item.file.display(),
                    item.address()
                ),
            ))
        };
        for (rule, each) in lifecycle_rules(item).into_iter().filter(|(r, _)| expires(r)) {
            match each {
                None => match prefix_of(rule) {
                    Some(p) if !p.is_empty() && !p.starts_with("audit") && !p.contains("${") => {}
                    other => fail(format!("rule {} expires with prefix {other:?}", rule["id"])),
                },
                Some(each) => {
                    let literal = each.contains("[\"") && !each.contains("var.") && !each.contains("local.");
                    if !literal || each.contains("audit") || prefix_of(rule).is_none() {
                        fail(format!("a dynamic rule expires over {each}"));
                    }
                }
            }
        }
    }
}

/// No lifecycle rule expires a current object, on any bucket: what is
/// current may be named by something kept (a release manifest names cache
/// paths, a host boots from its bundle, an AMI imports from its image), and
/// age says nothing of that. The commands that know what is still named
/// remove objects (image prune, a cache prune); lifecycle expires only the
/// old versions they leave, incomplete uploads and, at most, delete markers
/// with nothing behind them.
pub fn check_current_objects_kept(module: &Module, findings: &mut Vec<Finding>) {
    for item in module.items.iter().filter(|i| i.kind == "aws_s3_bucket_lifecycle_configuration") {
        for (rule, _) in lifecycle_rules(item) {
            let expirations = rule["expiration"].as_array().into_iter().flatten();
            let ages = expirations.filter(|e| e.get("days").is_some() || e.get("date").is_some());
            if ages.count() > 0 {
                findings.push(Finding::new(
                    "rules",
                    format!(
                        "{}: {}: rule {} expires current objects: only old versions may expire",
                        item.file.display(),
                        item.address(),
                        rule["id"]
                    ),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::traversals;

    #[test]
    fn references_are_found_with_indexes_skipped() {
        let found = traversals(
            "${aws_iam_role.instance[each.key].arn}/x ${var.a} arn:${local.partition}:s3 ${data.aws_x.y[0].z}",
        );
        let found: Vec<String> = found.iter().map(|p| p.join(".")).collect();
        assert_eq!(found, ["aws_iam_role.instance.arn", "each.key", "var.a", "local.partition", "data.aws_x.y.z"]);
        assert!(traversals("aws_region must be a region; s3:GetObject").is_empty());
    }
}
