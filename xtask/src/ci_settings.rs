//! The repository variables and secrets the workflows read: one table,
//! which `doctor --ci` checks in the current environment, the workflow
//! check holds the workflows to (every `vars.X` and `secrets.X` is listed,
//! every listed one is used), and docs/ci.md lists.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Variable,
    Secret,
}

pub struct Setting {
    pub name: &'static str,
    pub kind: Kind,
    pub what: &'static str,
}

pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "CLAWDINATOR_CI_ROLE_ARN",
        kind: Kind::Variable,
        what: "the CI role (OpenTofu output ci_role_arn)",
    },
    Setting { name: "AWS_REGION", kind: Kind::Variable, what: "the fleet's region" },
    Setting { name: "S3_BUCKET", kind: Kind::Variable, what: "the fleet bucket (OpenTofu output bucket)" },
    Setting { name: "CLAWDINATOR_APP_ID", kind: Kind::Variable, what: "the bots' GitHub App's id (reads the seeds)" },
    Setting {
        name: "CLAWDINATOR_APP_INSTALLATION_ID",
        kind: Kind::Variable,
        what: "the bots' GitHub App's installation id",
    },
    Setting {
        name: "CLAWDINATOR_DEPLOY_APP_LOGIN",
        kind: Kind::Variable,
        what: "the deploy App's bot login (e.g. clawdinator-deploy[bot]): the control API's dispatches come as it",
    },
    Setting {
        name: "CLAWDINATOR_OPERATORS",
        kind: Kind::Variable,
        what: "the GitHub logins, space-separated, that may start fleet-deploy by hand",
    },
    Setting {
        name: "CLAWDINATOR_TFVARS",
        kind: Kind::Variable,
        what: "the fleet's OpenTofu variables as tfvars JSON (every variable without a default but ami_id)",
    },
    Setting { name: "CLAWDINATOR_AGE_KEY", kind: Kind::Secret, what: "the fleet's age identity" },
];

/// The `vars.X` and `secrets.X` a workflow text reads (GitHub's own token aside).
pub fn referenced(text: &str) -> BTreeSet<(Kind, String)> {
    let mut found = BTreeSet::new();
    for (prefix, kind) in [("vars.", Kind::Variable), ("secrets.", Kind::Secret)] {
        for (at, _) in text.match_indices(prefix) {
            // `tfvars.json` is a file name, not `vars.json`.
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                continue;
            }
            let name: String =
                text[at + prefix.len()..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() && name != "GITHUB_TOKEN" {
                found.insert((kind, name));
            }
        }
    }
    found
}

/// The OpenTofu variables CI must provide: those without a default, but
/// `ami_id`, which `fleet deploy` passes itself.
pub fn required_tofu_variables(root: &Path) -> Result<Vec<String>> {
    let dir = root.join(crate::opentofu::ROOT_MODULE);
    let parsed = crate::opentofu::hcl::parse(root, &crate::opentofu::hcl::tf_files(&dir)?)?;
    let module = crate::opentofu::module::Module::new(&parsed.files);
    Ok(module
        .variables
        .iter()
        .filter(|(name, body)| body.get("default").is_none() && name.as_str() != "ami_id")
        .map(|(name, _)| name.clone())
        .collect())
}

/// What is wrong with a tfvars JSON text: the required variables it lacks.
pub fn tfvars_problems(text: &str, required: &[String]) -> Result<Vec<String>> {
    let value: serde_json::Value = serde_json::from_str(text).context("not JSON")?;
    let object = value.as_object().context("not a JSON object of variables")?;
    Ok(required.iter().filter(|name| !object.contains_key(name.as_str())).cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_found_and_github_token_is_not_a_setting() {
        let found =
            referenced("a: ${{ vars.S3_BUCKET }} fleet.tfvars.json\nb: ${{ secrets.CLAWDINATOR_AGE_KEY }} ${{ secrets.GITHUB_TOKEN }}");
        let expected: BTreeSet<(Kind, String)> =
            [(Kind::Variable, "S3_BUCKET".to_string()), (Kind::Secret, "CLAWDINATOR_AGE_KEY".to_string())].into();
        assert_eq!(found, expected);
    }

    #[test]
    fn tfvars_name_what_they_lack() {
        let required = vec!["vpc_id".to_string(), "bucket_name".to_string()];
        assert_eq!(tfvars_problems(r#"{"vpc_id": "vpc-1"}"#, &required).unwrap(), ["bucket_name"]);
        assert!(tfvars_problems("[1]", &required).is_err());
    }
}
