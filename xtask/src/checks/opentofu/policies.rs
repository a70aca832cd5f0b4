//! Every IAM and resource policy of the fleet is a template under
//! `policies/`, so that the tests judge the very documents OpenTofu applies
//! (`testkit::policies` renders them; `xtask/tests/it/policies.rs` runs the
//! IAM simulator on them). Here: no policy is written any other way, and
//! each `templatefile` call passes exactly the keys its template uses.

use std::path::Path;

use anyhow::Result;

use super::hcl::templatefile_calls;
use super::module::{Finding, Module};
use testkit::policies::template_variables;

/// The attributes that hold a policy document.
const POLICY_ATTRIBUTES: [&str; 2] = ["policy", "assume_role_policy"];

pub fn check(dir: &Path, files: &[std::path::PathBuf], module: &Module, findings: &mut Vec<Finding>) -> Result<()> {
    let mut fail = |m: String| findings.push(Finding::new("policies", m));
    for item in &module.items {
        if item.data && item.kind == "aws_iam_policy_document" {
            fail(format!("{}: write the policy as a template under policies/, not an aws_iam_policy_document (the tests judge only templates)", item.address()));
        }
        for attribute in POLICY_ATTRIBUTES {
            let Some(value) = item.body.get(attribute).and_then(|v| v.as_str()) else { continue };
            if !value.starts_with("${templatefile(\"${path.module}/policies/") {
                fail(format!("{}.{attribute} must be templatefile(\"${{path.module}}/policies/….json.tftpl\", {{…}}), not {value:.80}", item.address()));
            }
        }
    }
    for file in files {
        let calls = templatefile_calls(&std::fs::read_to_string(file)?);
        for (path, passed) in calls.into_iter().filter(|(path, _)| path.starts_with("policies/")) {
            let Ok(template) = std::fs::read_to_string(dir.join(&path)) else {
                fail(format!("{}: {path} does not exist", file.display()));
                continue;
            };
            let used = template_variables(&template);
            if used != passed {
                fail(format!("{}: {path} uses {used:?} but the call passes {passed:?}", file.display()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn template_variables_skip_escapes() {
        let found = template_variables("a='${name}' b=$${HOME} c=\"${ region }\"");
        assert_eq!(found, BTreeSet::from(["name".to_string(), "region".to_string()]));
    }

    #[test]
    fn calls_give_their_template_and_top_level_keys() {
        let text = r#"
  policy = templatefile("${path.module}/policies/instance.json.tftpl", {
    bucket_arn = aws_s3_bucket.fleet.arn
    secret_arns = jsonencode(concat(local.common, [
      "arn:${local.partition}:x",
    ]))
  })
  user_data = templatefile("${path.module}/user-data.sh.tftpl", { a = 1 })
  other = templatefile("${path.module}/policies/vmimport-trust.json.tftpl", {})
"#;
        let calls = templatefile_calls(text);
        assert_eq!(calls.len(), 3, "{calls:?}");
        assert_eq!(calls[0].0, "policies/instance.json.tftpl");
        assert_eq!(calls[0].1, BTreeSet::from(["bucket_arn".to_string(), "secret_arns".to_string()]));
        assert_eq!(calls[1], ("user-data.sh.tftpl".to_string(), BTreeSet::from(["a".to_string()])));
        assert!(calls[2].1.is_empty());
        assert!(templatefile_calls("${file(\"x\")}").is_empty());
    }
}
