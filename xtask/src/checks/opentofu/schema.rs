//! The AWS provider's schema, as far as the OpenTofu check needs it: every
//! resource and data source type name, and for the types this project's
//! `.tf` files (and the check's fixtures) use, their arguments (required or
//! not), nested blocks and referenceable attributes.
//!
//! No `tofu` binary and no provider plugin can be fetched here, so the
//! schema comes from npm's `@cdktf/provider-aws` (generated from the
//! provider's own schema): its `.jsii` describes every resource as a class
//! with a config struct. `cargo xtask opentofu-schema` extracts the part
//! needed into `infra/opentofu/schema/aws-provider.json` (committed; the
//! package is 130 MB).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The npm package and version the extract comes from.
pub const PACKAGE: &str = "@cdktf/provider-aws";
pub const PACKAGE_VERSION: &str = "21.22.1";
/// Where the extract lives, from the repository root.
pub const EXTRACT: &str = "infra/opentofu/schema/aws-provider.json";

/// One block of a resource: its arguments (name -> required), nested
/// blocks, and attributes it exports (for references).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Block {
    pub arguments: BTreeMap<String, bool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub blocks: BTreeMap<String, Block>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub attributes: BTreeSet<String>,
    /// A nested block that must appear at least once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderSchema {
    pub generated_by: String,
    pub provider_version: String,
    pub resource_types: BTreeSet<String>,
    pub data_types: BTreeSet<String>,
    pub resources: BTreeMap<String, Block>,
    pub data_sources: BTreeMap<String, Block>,
}

impl ProviderSchema {
    pub fn load(root: &Path) -> Result<ProviderSchema> {
        let path = root.join(EXTRACT);
        let text = std::fs::read(&path)
            .with_context(|| format!("cannot read {} (regenerate: cargo xtask opentofu-schema)", path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("{} is not the schema extract", path.display()))
    }

    /// The block of a resource (`data` false) or data source type, when extracted.
    pub fn block(&self, data: bool, kind: &str) -> Option<&Block> {
        if data {
            self.data_sources.get(kind)
        } else {
            self.resources.get(kind)
        }
    }

    pub fn knows(&self, data: bool, kind: &str) -> bool {
        if data {
            self.data_types.contains(kind)
        } else {
            self.resource_types.contains(kind)
        }
    }
}

/// `someName` -> `some_name` (cdktf's names are the provider's in camel case).
pub fn snake(camel: &str) -> String {
    let mut out = String::new();
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The provider's own name of a property, from its doc link
/// (`…/s3_bucket#bucket S3Bucket#bucket}`), else from its cdktf name.
fn property_name(property: &Value) -> String {
    let summary = property["docs"]["summary"].as_str().unwrap_or_default();
    let anchored = summary.rsplit_once('#').and_then(|(before, after)| {
        let name = after.trim_end_matches(['}', '.']);
        let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        (ok && before.contains(' ')).then(|| name.to_string())
    });
    anchored.unwrap_or_else(|| snake(property["name"].as_str().unwrap_or_default()))
}

/// The struct (a nested block) a property's type names, directly, as a
/// list, or in a union with IResolvable.
fn block_type<'a>(types: &'a serde_json::Map<String, Value>, ty: &Value) -> Option<&'a Value> {
    if let Some(fqn) = ty["fqn"].as_str() {
        return types.get(fqn).filter(|t| t["datatype"] == true);
    }
    if let Some(element) = ty.get("collection").map(|c| &c["elementtype"]) {
        return block_type(types, element);
    }
    ty["union"]["types"].as_array()?.iter().find_map(|t| block_type(types, t))
}

fn struct_block(types: &serde_json::Map<String, Value>, ty: &Value, depth: usize) -> Block {
    let mut block = Block::default();
    for property in ty["properties"].as_array().into_iter().flatten() {
        let name = property_name(property);
        let required = property["optional"] != true;
        match block_type(types, &property["type"]).filter(|_| depth < 12) {
            Some(nested) => {
                let mut nested = struct_block(types, nested, depth + 1);
                nested.required = required;
                block.blocks.insert(name, nested);
            }
            None => {
                block.arguments.insert(name, required);
            }
        }
    }
    block
}

/// (data source?, type name) of a cdktf resource or data source class.
fn class_type(class: &Value) -> Option<(bool, String)> {
    let data = match class["base"].as_str()? {
        "cdktf.TerraformResource" => false,
        "cdktf.TerraformDataSource" => true,
        _ => return None,
    };
    let summary = class["docs"]["summary"].as_str()?;
    let name = summary.rsplit_once(' ')?.1.trim_end_matches(['}', '.']);
    name.starts_with("aws_").then(|| (data, name.to_string()))
}

/// Extract every type name and, for the `wanted` types (data, name), their blocks.
pub fn extract(jsii: &Value, wanted: &BTreeSet<(bool, String)>) -> Result<ProviderSchema> {
    let types = jsii["types"].as_object().context("the .jsii has no types")?;
    let provider_version = provider_version_from_docs(types).unwrap_or_default();
    let mut schema = ProviderSchema {
        generated_by: format!("cargo xtask opentofu-schema, from npm {PACKAGE}@{PACKAGE_VERSION}"),
        provider_version,
        resource_types: BTreeSet::new(),
        data_types: BTreeSet::new(),
        resources: BTreeMap::new(),
        data_sources: BTreeMap::new(),
    };
    for class in types.values() {
        let Some((data, name)) = class_type(class) else { continue };
        if data { &mut schema.data_types } else { &mut schema.resource_types }.insert(name.clone());
        if !wanted.contains(&(data, name.clone())) {
            continue;
        }
        let config = class["initializer"]["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "config"))
            .and_then(|p| p["type"]["fqn"].as_str())
            .and_then(|fqn| types.get(fqn))
            .with_context(|| format!("{name}: no config struct in the .jsii"))?;
        let mut block = struct_block(types, config, 0);
        block.attributes = class["properties"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["static"] != true)
            .filter_map(|p| p["name"].as_str())
            .filter(|n| !n.ends_with("Input"))
            .map(snake)
            .chain(["id".to_string()])
            .collect();
        if data { &mut schema.data_sources } else { &mut schema.resources }.insert(name, block);
    }
    Ok(schema)
}

/// The provider version the docs links name (`…/providers/hashicorp/aws/6.25.0/docs/…`).
fn provider_version_from_docs(types: &serde_json::Map<String, Value>) -> Option<String> {
    types.values().find_map(|t| {
        let summary = t["docs"]["summary"].as_str()?;
        let rest = summary.split("/providers/hashicorp/aws/").nth(1)?;
        Some(rest.split('/').next()?.to_string())
    })
}
