//! IAM, read-only: policy documents as IAM returns them, what they allow,
//! and which IAM action each operation this project calls needs (for the
//! hint in access-denied errors).

use anyhow::Result;
use serde_json::Value;

use super::{error, Aws};

/// Decode `%XX` escapes (IAM returns policy documents URL-encoded).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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

/// The IAM action(s) an operation needs, as the Service Authorization
/// Reference names them. S3's object-level operations do not map one to one
/// (HeadObject is authorised as s3:GetObject, the multipart calls as
/// s3:PutObject, …). None for an operation not in the table: a test checks
/// that every operation the project names is in it.
pub fn action_for(operation: &str) -> Option<&'static str> {
    Some(match operation {
        "S3 HeadObject" | "S3 GetObject" => "s3:GetObject",
        "S3 PutObject" | "S3 CreateMultipartUpload" | "S3 UploadPart" | "S3 CompleteMultipartUpload" => "s3:PutObject",
        "S3 CopyObject" => "s3:GetObject on the source and s3:PutObject on the target",
        "S3 DeleteObject" => "s3:DeleteObject",
        "S3 ListParts" => "s3:ListMultipartUploadParts",
        "S3 ListMultipartUploads" => "s3:ListBucketMultipartUploads",
        "S3 AbortMultipartUpload" => "s3:AbortMultipartUpload",
        "S3 CreateBucket" => "s3:CreateBucket",
        "S3 ListObjectsV2" => "s3:ListBucket",
        "EBS StartSnapshot" => "ebs:StartSnapshot",
        "EBS PutSnapshotBlock" => "ebs:PutSnapshotBlock",
        "EBS CompleteSnapshot" => "ebs:CompleteSnapshot",
        "EBS ListSnapshotBlocks" => "ebs:ListSnapshotBlocks",
        "EC2 CreateTags" => "ec2:CreateTags",
        "EC2 DeleteSnapshot" => "ec2:DeleteSnapshot",
        "EC2 DescribeSnapshots" => "ec2:DescribeSnapshots",
        "EC2 DescribeImages" => "ec2:DescribeImages",
        "EC2 DescribeInstances" => "ec2:DescribeInstances",
        "EC2 DescribeLaunchTemplates" => "ec2:DescribeLaunchTemplates",
        "EC2 DescribeLaunchTemplateVersions" => "ec2:DescribeLaunchTemplateVersions",
        "EC2 RegisterImage" => "ec2:RegisterImage",
        "EC2 DeregisterImage" => "ec2:DeregisterImage",
        "EC2 CopyImage" => "ec2:CopyImage",
        "EC2 EnableImageDeprecation" => "ec2:EnableImageDeprecation",
        "EC2 ImportSnapshot" => "ec2:ImportSnapshot",
        "EC2 DescribeImportSnapshotTasks" => "ec2:DescribeImportSnapshotTasks",
        "EC2 CancelImportTask" => "ec2:CancelImportTask",
        "EC2 GetEbsEncryptionByDefault" => "ec2:GetEbsEncryptionByDefault",
        "IAM GetRole" => "iam:GetRole",
        "IAM ListRolePolicies" => "iam:ListRolePolicies",
        "IAM GetRolePolicy" => "iam:GetRolePolicy",
        "IAM ListAttachedRolePolicies" => "iam:ListAttachedRolePolicies",
        "IAM GetPolicy" => "iam:GetPolicy",
        "IAM GetPolicyVersion" => "iam:GetPolicyVersion",
        "STS GetCallerIdentity" => "sts:GetCallerIdentity",
        "Secrets Manager CreateSecret" => "secretsmanager:CreateSecret",
        "Secrets Manager DescribeSecret" => "secretsmanager:DescribeSecret",
        "Secrets Manager GetSecretValue" => "secretsmanager:GetSecretValue",
        "Secrets Manager PutSecretValue" => "secretsmanager:PutSecretValue",
        "Secrets Manager RestoreSecret" => "secretsmanager:RestoreSecret",
        "Secrets Manager TagResource" => "secretsmanager:TagResource",
        "Secrets Manager DeleteSecret" => "secretsmanager:DeleteSecret",
        "Secrets Manager ListSecrets" => "secretsmanager:ListSecrets",
        "EC2 DescribeInstanceStatus" => "ec2:DescribeInstanceStatus",
        "SSM DescribeInstanceInformation" => "ssm:DescribeInstanceInformation",
        "SSM SendCommand" => "ssm:SendCommand",
        "SSM GetParameter" => "ssm:GetParameter",
        "SSM GetCommandInvocation" => "ssm:GetCommandInvocation",
        _ => return None,
    })
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

    #[test]
    fn trust_is_recognised_as_string_or_list() {
        let one = r#"{"Statement":{"Effect":"Allow","Principal":{"Service":"vmie.amazonaws.com"}}}"#;
        let many =
            r#"{"Statement":[{"Effect":"Allow","Principal":{"Service":["ec2.amazonaws.com","vmie.amazonaws.com"]}}]}"#;
        assert!(trusts_service(one, "vmie.amazonaws.com") && trusts_service(many, "vmie.amazonaws.com"));
        assert!(!trusts_service(&one.replace("Allow", "Deny"), "vmie.amazonaws.com"));
        assert!(!trusts_service("not json", "vmie.amazonaws.com"));
    }

    /// Every operation named in an `aws::error(…)` call anywhere in the
    /// crate has its real IAM action in the table.
    #[test]
    fn every_operation_used_has_its_iam_action() {
        let mut missing = Vec::new();
        let mut seen = 0;
        let mut dirs = vec![crate::project::root().join("xtask/src")];
        let mut files = Vec::new();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                match path.extension().and_then(|e| e.to_str()) {
                    _ if path.is_dir() => dirs.push(path),
                    Some("rs") => files.push(path),
                    _ => {}
                }
            }
        }
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (i, _) in text.match_indices("error(\"") {
                let rest = &text[i + 7..];
                let operation = &rest[..rest.find('"').unwrap()];
                if operation.contains(' ')
                    && operation.split(' ').next_back().is_some_and(|a| a.starts_with(char::is_uppercase))
                {
                    seen += 1;
                    if action_for(operation).is_none() {
                        missing.push(format!("{operation} ({})", file.display()));
                    }
                }
            }
        }
        assert!(seen > 30, "the scan found only {seen} operations");
        assert!(missing.is_empty(), "no IAM action for: {missing:#?}");
        for fake in ["s3:HeadObject", "s3:ListParts", "s3:UploadPart"] {
            let all: Vec<&str> =
                ["S3 HeadObject", "S3 ListParts", "S3 UploadPart"].iter().filter_map(|o| action_for(o)).collect();
            assert!(!all.contains(&fake), "{fake} is not an IAM action");
        }
    }
}
