# The vmimport service role, and one role and instance profile per
# instance that can read only its own bundle and its own secrets.

data "aws_iam_policy_document" "vmimport_trust" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["vmie.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "sts:Externalid"
      values   = ["vmimport"]
    }
  }
}

resource "aws_iam_role" "vmimport" {
  name               = "vmimport"
  assume_role_policy = data.aws_iam_policy_document.vmimport_trust.json
}

data "aws_iam_policy_document" "vmimport" {
  statement {
    sid       = "ReadImages"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.fleet.arn}/images/*"]
  }

  statement {
    sid       = "FindImages"
    actions   = ["s3:GetBucketLocation", "s3:ListBucket"]
    resources = [aws_s3_bucket.fleet.arn]
  }

  statement {
    sid     = "MakeSnapshots"
    actions = ["ec2:ModifySnapshotAttribute", "ec2:CopySnapshot", "ec2:RegisterImage"]
    resources = [
      "arn:${local.partition}:ec2:${var.aws_region}::snapshot/*",
      "arn:${local.partition}:ec2:${var.aws_region}::image/*",
    ]
  }

  statement {
    sid       = "FindSnapshots"
    actions   = ["ec2:DescribeSnapshots", "ec2:DescribeImages", "ec2:DescribeImportSnapshotTasks"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "vmimport" {
  name   = "clawdinator-vmimport"
  role   = aws_iam_role.vmimport.id
  policy = data.aws_iam_policy_document.vmimport.json
}

data "aws_iam_policy_document" "instance_trust" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "instance" {
  for_each = local.instances

  name               = "clawdinator-instance-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.instance_trust.json
  tags               = { "clawdinator:instance" = each.key }
}

# The trailing slash: clawdinator-1 must not reach clawdinator-10's bundle.
data "aws_iam_policy_document" "instance" {
  for_each = local.instances

  statement {
    sid       = "OwnBundle"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.fleet.arn}/${each.value.bootstrapPrefix}/*"]
  }

  statement {
    sid       = "ListOwnBundle"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.fleet.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${each.value.bootstrapPrefix}/*"]
    }
  }

  statement {
    sid     = "CommonSecretsAndOwnToken"
    actions = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = concat(local.common_secret_arns, [
      "arn:${local.partition}:secretsmanager:${var.aws_region}:${local.account}:secret:clawdinator/${each.key}/discord-token-??????",
    ])
  }

  dynamic "statement" {
    for_each = var.enable_control_api ? [1] : []

    content {
      sid       = "CallTheControlApi"
      actions   = ["lambda:InvokeFunctionUrl"]
      resources = [aws_lambda_function.control_api[0].arn]
    }
  }
}

resource "aws_iam_role_policy" "instance" {
  for_each = local.instances

  name   = "clawdinator-instance"
  role   = aws_iam_role.instance[each.key].id
  policy = data.aws_iam_policy_document.instance[each.key].json
}

resource "aws_iam_role_policy_attachment" "instance_ssm" {
  for_each = local.instances

  role       = aws_iam_role.instance[each.key].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "instance" {
  for_each = local.instances

  name = "clawdinator-instance-${each.key}"
  role = aws_iam_role.instance[each.key].name
}
