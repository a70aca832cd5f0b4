//! Every IAM and resource policy of the fleet is a template under
//! `policies/`, so that the tests judge the very documents OpenTofu applies
//! (`testkit::policies` renders them; `xtask/tests/it/policies.rs` runs the
//! IAM simulator on them). Here: no policy is written any other way, and
//! each `templatefile` call passes exactly the keys its template uses.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Result;

use super::module::{Finding, Module};
use testkit::policies::template_variables;

/// The attributes that hold a policy document.
const POLICY_ATTRIBUTES: [&str; 2] = ["policy", "assume_role_policy"];

/// The object literal after `start` (which is at a `{`): its text between the braces.
fn object_at(text: &str, start: usize) -> Option<&str> {
    let mut depth = 0usize;
    for (i, b) in text.bytes().enumerate().skip(start) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[start + 1..i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// The top-level keys of an object literal's body (`key = value` lines at depth 0).
fn object_keys(body: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut depth = 0i32;
    for line in body.lines() {
        if depth == 0 {
            if let Some((key, _)) = line.split_once('=') {
                let key = key.trim();
                if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    keys.insert(key.to_string());
                }
            }
        }
        for b in line.bytes() {
            match b {
                b'{' | b'[' | b'(' => depth += 1,
                b'}' | b']' | b')' => depth -= 1,
                _ => {}
            }
        }
    }
    keys
}

/// Each `templatefile("${path.module}/policies/…", {…})` in `text`: the template's path and the keys passed.
pub fn policy_calls(text: &str) -> Vec<(String, BTreeSet<String>)> {
    const CALL: &str = "templatefile(\"${path.module}/";
    let mut calls = Vec::new();
    for (at, _) in text.match_indices(CALL) {
        let rest = &text[at + CALL.len()..];
        let Some((path, after)) = rest.split_once('"') else { continue };
        if !path.starts_with("policies/") {
            continue;
        }
        let offset = at + CALL.len() + path.len() + 1;
        let Some(brace) = after.find('{') else { continue };
        let keys = object_at(text, offset + brace).map(object_keys).unwrap_or_default();
        calls.push((path.to_string(), keys));
    }
    calls
}

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
        for (path, passed) in policy_calls(&std::fs::read_to_string(file)?) {
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
        let calls = policy_calls(text);
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert_eq!(calls[0].0, "policies/instance.json.tftpl");
        assert_eq!(calls[0].1, BTreeSet::from(["bucket_arn".to_string(), "secret_arns".to_string()]));
        assert!(calls[1].1.is_empty());
    }
}
