# The one policy that refuses every request not made over TLS, for each
# store that takes a resource policy: the fleet's bucket and the shared
# memory file system.

locals {
  tls_only = {
    fleet_bucket = {
      actions   = ["s3:*"]
      resources = [aws_s3_bucket.fleet.arn, "${aws_s3_bucket.fleet.arn}/*"]
    }
    memory = {
      actions   = ["*"]
      resources = [aws_efs_file_system.memory.arn]
    }
  }
}

data "aws_iam_policy_document" "deny_without_tls" {
  for_each = local.tls_only

  statement {
    sid       = "DenyWithoutTLS"
    effect    = "Deny"
    actions   = each.value.actions
    resources = each.value.resources

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}
