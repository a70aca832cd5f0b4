//! The IAM action(s) each AWS operation the project calls needs: named in
//! the message of a denial ([`super::error`]), and checked against the test
//! kit's policy judge, which asks IAM for the same actions.

/// The IAM action(s) each operation the project calls needs, as the Service
/// Authorization Reference names them, for the messages of denials. S3's
/// object-level operations do not map one to one (HeadObject is authorised
/// as s3:GetObject, the multipart calls as s3:PutObject, …). The tests check
/// that every operation the project names is here, and that the test kit's
/// policy judge asks IAM for the same actions.
pub const ACTIONS: &[(&str, &str)] = &[
    ("S3 HeadObject", "s3:GetObject"),
    ("S3 GetObject", "s3:GetObject"),
    ("S3 PutObject", "s3:PutObject"),
    ("S3 CreateMultipartUpload", "s3:PutObject"),
    ("S3 UploadPart", "s3:PutObject"),
    ("S3 CompleteMultipartUpload", "s3:PutObject"),
    ("S3 CopyObject", "s3:GetObject on the source and s3:PutObject on the target"),
    ("S3 DeleteObject", "s3:DeleteObject"),
    ("S3 ListParts", "s3:ListMultipartUploadParts"),
    ("S3 ListMultipartUploads", "s3:ListBucketMultipartUploads"),
    ("S3 AbortMultipartUpload", "s3:AbortMultipartUpload"),
    ("S3 CreateBucket", "s3:CreateBucket"),
    ("S3 ListObjectsV2", "s3:ListBucket"),
    ("DynamoDB TransactWriteItems", "dynamodb:PutItem (each put of the transaction)"),
    ("DynamoDB GetItem", "dynamodb:GetItem"),
    ("DynamoDB PutItem", "dynamodb:PutItem"),
    ("DynamoDB UpdateItem", "dynamodb:UpdateItem"),
    ("EBS StartSnapshot", "ebs:StartSnapshot"),
    ("EBS PutSnapshotBlock", "ebs:PutSnapshotBlock"),
    ("EBS CompleteSnapshot", "ebs:CompleteSnapshot"),
    ("EBS ListSnapshotBlocks", "ebs:ListSnapshotBlocks"),
    ("EC2 CreateTags", "ec2:CreateTags"),
    ("EC2 DeleteSnapshot", "ec2:DeleteSnapshot"),
    ("EC2 DescribeSnapshots", "ec2:DescribeSnapshots"),
    ("EC2 DescribeImages", "ec2:DescribeImages"),
    ("EC2 DescribeInstances", "ec2:DescribeInstances"),
    ("EC2 DescribeLaunchTemplates", "ec2:DescribeLaunchTemplates"),
    ("EC2 DescribeLaunchTemplateVersions", "ec2:DescribeLaunchTemplateVersions"),
    ("EC2 RegisterImage", "ec2:RegisterImage"),
    ("EC2 DeregisterImage", "ec2:DeregisterImage"),
    ("EC2 CopyImage", "ec2:CopyImage"),
    ("EC2 EnableImageDeprecation", "ec2:EnableImageDeprecation"),
    ("EC2 ImportSnapshot", "ec2:ImportSnapshot"),
    ("EC2 DescribeImportSnapshotTasks", "ec2:DescribeImportSnapshotTasks"),
    ("EC2 CancelImportTask", "ec2:CancelImportTask"),
    ("EC2 GetEbsEncryptionByDefault", "ec2:GetEbsEncryptionByDefault"),
    ("IAM GetRole", "iam:GetRole"),
    ("IAM ListRolePolicies", "iam:ListRolePolicies"),
    ("IAM GetRolePolicy", "iam:GetRolePolicy"),
    ("IAM ListAttachedRolePolicies", "iam:ListAttachedRolePolicies"),
    ("IAM GetPolicy", "iam:GetPolicy"),
    ("IAM GetPolicyVersion", "iam:GetPolicyVersion"),
    ("STS GetCallerIdentity", "sts:GetCallerIdentity"),
    ("Secrets Manager CreateSecret", "secretsmanager:CreateSecret"),
    ("Secrets Manager DescribeSecret", "secretsmanager:DescribeSecret"),
    ("Secrets Manager GetSecretValue", "secretsmanager:GetSecretValue"),
    ("Secrets Manager PutSecretValue", "secretsmanager:PutSecretValue"),
    ("Secrets Manager RestoreSecret", "secretsmanager:RestoreSecret"),
    ("Secrets Manager TagResource", "secretsmanager:TagResource"),
    ("Secrets Manager DeleteSecret", "secretsmanager:DeleteSecret"),
    ("Secrets Manager ListSecrets", "secretsmanager:ListSecrets"),
    ("EC2 DescribeInstanceStatus", "ec2:DescribeInstanceStatus"),
    ("SSM DescribeInstanceInformation", "ssm:DescribeInstanceInformation"),
    ("SSM SendCommand", "ssm:SendCommand"),
    ("SSM GetParameter", "ssm:GetParameter"),
    ("SSM GetCommandInvocation", "ssm:GetCommandInvocation"),
    ("SSM ListCommandInvocations", "ssm:ListCommandInvocations"),
];

/// The IAM action(s) `operation` (e.g. `S3 HeadObject`) needs; None for an
/// operation not in [`ACTIONS`].
pub fn action_for(operation: &str) -> Option<&'static str> {
    ACTIONS.iter().find(|(op, _)| *op == operation).map(|(_, action)| *action)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation named in an `aws::error(…)` call anywhere in the
    /// crate has its real IAM action in the table.
    #[test]
    fn every_operation_used_has_its_iam_action() {
        let mut missing = Vec::new();
        let mut seen = 0;
        let mut dirs = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
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
