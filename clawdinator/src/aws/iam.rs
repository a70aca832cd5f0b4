//! IAM, read-only: policy documents as IAM returns them, and what they allow.

use anyhow::Result;
use serde_json::Value;

use super::config::Aws;
use super::error::error;

/// Decode `%XX` escapes (IAM returns policy documents URL-encoded); a `%`
/// not followed by two hex digits stays as it is.
pub fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// The statements of a policy document, URL-encoded or not; a single
/// statement object counts as a list of one. None when it is not JSON.
pub fn statements(document: &str) -> Option<Vec<Value>> {
    let decoded = if document.trim_start().starts_with('{') { document.to_string() } else { percent_decode(document) };
    let policy: Value = serde_json::from_str(&decoded).ok()?;
    Some(match &policy["Statement"] {
        Value::Array(items) => items.clone(),
        single => vec![single.clone()],
    })
}

/// A string or a list of strings, as IAM allows for Action, Resource, Service.
fn as_list(v: &Value) -> Vec<&str> {
    match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    }
}

/// Does a trust policy allow `service` (e.g. `vmie.amazonaws.com`) to assume the role?
pub fn trusts_service(document: &str, service: &str) -> bool {
    statements(document)
        .unwrap_or_default()
        .iter()
        .any(|s| s["Effect"] == "Allow" && as_list(&s["Principal"]["Service"]).contains(&service))
}

/// Does any statement allow s3:GetObject on objects of `bucket`?
pub fn allows_read(document: &str, bucket: &str) -> bool {
    let objects = [format!("arn:aws:s3:::{bucket}/*"), format!("arn:aws:s3:::{bucket}*")];
    statements(document).unwrap_or_default().iter().any(|s| {
        s["Effect"] == "Allow"
            && as_list(&s["Action"]).iter().any(|a| matches!(*a, "s3:GetObject" | "s3:Get*" | "s3:*" | "*"))
            && as_list(&s["Resource"])
                .iter()
                .any(|r| *r == "*" || *r == "arn:aws:s3:::*" || objects.iter().any(|o| o == r))
    })
}

/// Every policy document of a role: inline and attached (default versions).
pub async fn role_policy_documents(aws: &Aws, role: &str) -> Result<Vec<String>> {
    let iam = aws.iam();
    let mut documents = Vec::new();
    let inline =
        iam.list_role_policies().role_name(role).send().await.map_err(|e| error("IAM ListRolePolicies", role, e))?;
    for name in inline.policy_names() {
        let p = iam
            .get_role_policy()
            .role_name(role)
            .policy_name(name)
            .send()
            .await
            .map_err(|e| error("IAM GetRolePolicy", name, e))?;
        documents.push(p.policy_document);
    }
    let attached = iam
        .list_attached_role_policies()
        .role_name(role)
        .send()
        .await
        .map_err(|e| error("IAM ListAttachedRolePolicies", role, e))?;
    for policy in attached.attached_policies() {
        let arn = policy.policy_arn().unwrap_or_default();
        let p = iam.get_policy().policy_arn(arn).send().await.map_err(|e| error("IAM GetPolicy", arn, e))?;
        let version = p.policy.and_then(|p| p.default_version_id).unwrap_or_default();
        let v = iam
            .get_policy_version()
            .policy_arn(arn)
            .version_id(&version)
            .send()
            .await
            .map_err(|e| error("IAM GetPolicyVersion", arn, e))?;
        documents.extend(v.policy_version.and_then(|v| v.document));
    }
    Ok(documents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_access_is_recognised_in_the_forms_iam_returns() {
        let doc = r#"{"Statement":[{"Effect":"Allow","Action":["s3:GetObject","s3:ListBucket"],"Resource":["arn:aws:s3:::b","arn:aws:s3:::b/*"]}]}"#;
        assert!(allows_read(doc, "b"));
        assert!(!allows_read(doc, "other"));
        let encoded = doc.replace('{', "%7B").replace('}', "%7D").replace('"', "%22").replace(':', "%3A");
        assert!(allows_read(&encoded, "b"));
        assert!(!allows_read(&doc.replace("Allow", "Deny"), "b"));
        assert!(!allows_read(&doc.replace("s3:GetObject", "s3:PutObject"), "b"));
    }

    /// A `%` whose next two bytes are not both ASCII (here `a` and the first
    /// byte of `é`) is kept as it is, not sliced through a character.
    #[test]
    fn a_broken_escape_before_a_multibyte_character_is_kept() {
        assert_eq!(percent_decode("%a\u{e9}"), "%a\u{e9}");
        assert_eq!(percent_decode("x%\u{e9}%41"), "x%\u{e9}A");
        assert_eq!(percent_decode("%7B%22a%22%7D%2"), "{\"a\"}%2");
    }

    #[test]
    fn trust_is_recognised_as_string_or_list() {
        let one = r#"{"Statement":{"Effect":"Allow","Principal":{"Service":"vmie.amazonaws.com"}}}"#;
        let many =
            r#"{"Statement":[{"Effect":"Allow","Principal":{"Service":["ec2.amazonaws.com","vmie.amazonaws.com"]}}]}"#;
        assert!(trusts_service(one, "vmie.amazonaws.com") && trusts_service(many, "vmie.amazonaws.com"));
        assert!(!trusts_service(&one.replace("Allow", "Deny"), "vmie.amazonaws.com"));
        assert!(!trusts_service("not json", "vmie.amazonaws.com"));
    }
}
