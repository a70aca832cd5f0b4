# CI without static keys: GitHub's OIDC provider, and a role only this
# repository's workflows on named refs or environments can assume.

resource "aws_iam_openid_connect_provider" "github" {
  count = var.create_github_oidc_provider ? 1 : 0

  url            = "https://token.actions.githubusercontent.com"
  client_id_list = ["sts.amazonaws.com"]
}

data "aws_iam_openid_connect_provider" "github" {
  count = var.create_github_oidc_provider ? 0 : 1

  url = "https://token.actions.githubusercontent.com"
}

locals {
  github_oidc_arn = var.create_github_oidc_provider ? aws_iam_openid_connect_provider.github[0].arn : data.aws_iam_openid_connect_provider.github[0].arn
  github_subjects = concat(
    [for ref in var.github_refs : "repo:${var.github_repository}:ref:${ref}"],
    [for env in var.github_environments : "repo:${var.github_repository}:environment:${env}"],
  )
}

data "aws_iam_policy_document" "ci_trust" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [local.github_oidc_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "token.actions.githubusercontent.com:aud"
      values   = ["sts.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "token.actions.githubusercontent.com:sub"
      values   = local.github_subjects
    }
  }
}

resource "aws_iam_role" "ci" {
  name               = "clawdinator-ci"
  assume_role_policy = data.aws_iam_policy_document.ci_trust.json
}

# Exactly what the image pipeline, the bundle upload, secrets seeding and
# fleet switch call (each action is one the xtask uses; see its iam.rs).
data "aws_iam_policy_document" "ci" {
  # checkov:skip=CKV_AWS_356:only the read-only ec2:Describe* (image, snapshot, instance and network lookups by the pipeline and tofu refresh) is on "*"; every write is scoped
  statement {
    sid     = "ImagesAndBundles"
    actions = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
    resources = [
      "${aws_s3_bucket.fleet.arn}/images/*",
      "${aws_s3_bucket.fleet.arn}/bootstrap/*",
    ]
  }

  # The audit trail: CI adds records (write-once, `If-None-Match: *`) and
  # may read them; it can never delete or replace one.
  statement {
    sid       = "AuditTrail"
    actions   = ["s3:PutObject", "s3:GetObject"]
    resources = ["${aws_s3_bucket.fleet.arn}/audit/*"]
  }

  statement {
    sid       = "ListImagesAndBundles"
    actions   = ["s3:ListBucket", "s3:ListBucketMultipartUploads"]
    resources = [aws_s3_bucket.fleet.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["images/*", "bootstrap/*", "audit/*"]
    }
  }

  statement {
    sid       = "EbsDirect"
    actions   = ["ebs:StartSnapshot", "ebs:PutSnapshotBlock", "ebs:CompleteSnapshot", "ebs:ListSnapshotBlocks"]
    resources = ["arn:${local.partition}:ec2:*::snapshot/*"]
  }

  # Any region: `image publish --copy-to-regions` registers copies there.
  statement {
    sid = "Images"
    actions = [
      "ec2:RegisterImage",
      "ec2:CopyImage",
      "ec2:DeregisterImage",
      "ec2:DeleteSnapshot",
      "ec2:CreateTags",
      "ec2:EnableImageDeprecation",
      "ec2:ImportSnapshot",
      "ec2:CancelImportTask",
    ]
    resources = [
      "arn:${local.partition}:ec2:*::image/*",
      "arn:${local.partition}:ec2:*::snapshot/*",
      "arn:${local.partition}:ec2:*:${local.account}:import-snapshot-task/*",
    ]
  }

  statement {
    sid       = "ReadOnly"
    actions   = ["ec2:Describe*", "ec2:GetEbsEncryptionByDefault"]
    resources = ["*"]
  }

  statement {
    sid       = "SwitchFleetHosts"
    actions   = ["ssm:SendCommand"]
    resources = ["arn:${local.partition}:ec2:${var.aws_region}:${local.account}:instance/*"]

    condition {
      test     = "StringEquals"
      variable = "ssm:resourceTag/app"
      values   = ["clawdinator"]
    }
  }

  statement {
    sid       = "RunShellScript"
    actions   = ["ssm:SendCommand"]
    resources = ["arn:${local.partition}:ssm:${var.aws_region}::document/AWS-RunShellScript"]
  }

  statement {
    sid       = "FollowCommands"
    actions   = ["ssm:GetCommandInvocation", "ssm:ListCommandInvocations", "ssm:DescribeInstanceInformation"]
    resources = ["*"]
  }

  statement {
    sid = "SeedSecrets"
    actions = [
      "secretsmanager:CreateSecret",
      "secretsmanager:PutSecretValue",
      "secretsmanager:DescribeSecret",
      "secretsmanager:GetSecretValue",
      "secretsmanager:RestoreSecret",
      "secretsmanager:TagResource",
      "secretsmanager:DeleteSecret",
    ]
    resources = ["arn:${local.partition}:secretsmanager:${var.aws_region}:${local.account}:secret:clawdinator/*"]
  }

  statement {
    sid       = "ListSecrets"
    actions   = ["secretsmanager:ListSecrets"]
    resources = ["*"]
  }

  # `cargo xtask fleet deploy` (tofu apply -replace) from the fleet-deploy
  # workflow: the state and its lock, reading what the plan refreshes, and
  # replacing fleet instances.
  statement {
    sid       = "TofuState"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${aws_s3_bucket.fleet.arn}/tfstate/*"]
  }

  statement {
    sid       = "TofuLock"
    actions   = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:DescribeTable", "dynamodb:DescribeContinuousBackups", "dynamodb:DescribeTimeToLive", "dynamodb:ListTagsOfResource"]
    resources = [aws_dynamodb_table.locks.arn]
  }

  statement {
    sid = "RefreshFleetResources"
    actions = [
      "s3:GetBucket*",
      "s3:GetLifecycleConfiguration",
      "s3:GetEncryptionConfiguration",
      "s3:GetAccelerateConfiguration",
      "s3:GetReplicationConfiguration",
      "iam:GetRole",
      "iam:GetRolePolicy",
      "iam:ListRolePolicies",
      "iam:ListAttachedRolePolicies",
      "iam:GetInstanceProfile",
      "iam:GetOpenIDConnectProvider",
      "elasticfilesystem:DescribeFileSystems",
      "elasticfilesystem:DescribeMountTargets",
      "elasticfilesystem:DescribeMountTargetSecurityGroups",
      "elasticfilesystem:DescribeBackupPolicy",
      "elasticfilesystem:DescribeFileSystemPolicy",
      "elasticfilesystem:DescribeLifecycleConfiguration",
    ]
    resources = [
      aws_s3_bucket.fleet.arn,
      aws_efs_file_system.memory.arn,
      "arn:${local.partition}:elasticfilesystem:${var.aws_region}:${local.account}:access-point/*",
      "arn:${local.partition}:iam::${local.account}:role/clawdinator-*",
      "arn:${local.partition}:iam::${local.account}:role/vmimport",
      "arn:${local.partition}:iam::${local.account}:instance-profile/clawdinator-*",
      "arn:${local.partition}:iam::${local.account}:oidc-provider/token.actions.githubusercontent.com",
    ]
  }

  statement {
    sid     = "LaunchFleetInstances"
    actions = ["ec2:RunInstances"]
    resources = [
      "arn:${local.partition}:ec2:${var.aws_region}:${local.account}:instance/*",
      "arn:${local.partition}:ec2:${var.aws_region}:${local.account}:volume/*",
      "arn:${local.partition}:ec2:${var.aws_region}:${local.account}:network-interface/*",
      "arn:${local.partition}:ec2:${var.aws_region}:${local.account}:subnet/*",
      "arn:${local.partition}:ec2:${var.aws_region}:${local.account}:security-group/${aws_security_group.instance.id}",
      "arn:${local.partition}:ec2:${var.aws_region}::image/*",
    ]
  }

  # Tags RunInstances applies at launch (the instance, its root volume):
  # EC2 authorises them as CreateTags with ec2:CreateAction = RunInstances.
  statement {
    sid     = "TagAtLaunch"
    actions = ["ec2:CreateTags"]
    resources = [
      "arn:${local.partition}:ec2:${var.aws_region}:${local.account}:instance/*",
      "arn:${local.partition}:ec2:${var.aws_region}:${local.account}:volume/*",
    ]

    condition {
      test     = "StringEquals"
      variable = "ec2:CreateAction"
      values   = ["RunInstances"]
    }
  }

  # `fleet switch` records on each fleet host the revision it switched to;
  # that tag and no other.
  statement {
    sid       = "TagSwitchedHosts"
    actions   = ["ec2:CreateTags"]
    resources = ["arn:${local.partition}:ec2:${var.aws_region}:${local.account}:instance/*"]

    condition {
      test     = "StringEquals"
      variable = "ec2:ResourceTag/app"
      values   = ["clawdinator"]
    }

    condition {
      test     = "ForAllValues:StringEquals"
      variable = "aws:TagKeys"
      values   = ["clawdinator:deployed-revision"]
    }
  }

  statement {
    sid       = "ReplaceFleetInstances"
    actions   = ["ec2:TerminateInstances", "ec2:ModifyInstanceAttribute", "ec2:MonitorInstances"]
    resources = ["arn:${local.partition}:ec2:${var.aws_region}:${local.account}:instance/*"]

    condition {
      test     = "StringEquals"
      variable = "ec2:ResourceTag/app"
      values   = ["clawdinator"]
    }
  }

  statement {
    sid       = "PassOnlyInstanceRoles"
    actions   = ["iam:PassRole"]
    resources = [for role in aws_iam_role.instance : role.arn]
  }
}

resource "aws_iam_role_policy" "ci" {
  name   = "clawdinator-ci"
  role   = aws_iam_role.ci.id
  policy = data.aws_iam_policy_document.ci.json
}
