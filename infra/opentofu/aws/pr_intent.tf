# The public PR-intent dataset, where the original fleet's readers found it:
# `v1/<owner>-<repo>/<N>.txt` and `<N>.meta.json` at the top of the bucket
# (`aws s3 ls|sync --no-sign-request s3://<bucket>/v1/...`). Anyone may list
# and read under v1/ and nothing else (the bucket policy names no other
# prefix; listing the root is denied), and only the instances in
# var.pr_intent_publishers may mirror their tree there (`host publish-tree`).
# Every other instance role, and the boundary of all of them, can write
# nowhere else.

locals {
  pr_intent_bucket_arn = "arn:${local.partition}:s3:::${var.pr_intent_bucket_name}"
}

resource "aws_s3_bucket" "pr_intent" {
  # checkov:skip=CKV_AWS_18:public, rebuilt from shared memory at every run; access logs would need a second bucket
  # checkov:skip=CKV_AWS_144:the data is a public mirror of shared memory; no replica needed
  # checkov:skip=CKV2_AWS_62:nothing consumes its events
  # checkov:skip=CKV_AWS_145:public data; KMS would only stop anonymous readers
  # checkov:skip=CKV2_AWS_6:it is public on purpose (list and read under v1/ only); ACLs stay blocked below
  # checkov:skip=CKV_AWS_21:a mirror: the next run rewrites it; old versions would keep deleted files public
  # checkov:skip=CKV2_AWS_61:a mirror deletes what its tree lost; nothing ages out
  bucket = var.pr_intent_bucket_name
  tags   = local.tags

  lifecycle {
    prevent_destroy = true
  }
}

# The bucket policy may make it public; ACLs may not.
resource "aws_s3_bucket_public_access_block" "pr_intent" {
  # checkov:skip=CKV_AWS_54:the bucket policy grants anonymous list and read of v1/ on purpose
  # checkov:skip=CKV_AWS_56:the bucket policy grants anonymous list and read of v1/ on purpose
  bucket                  = aws_s3_bucket.pr_intent.id
  block_public_acls       = true
  ignore_public_acls      = true
  block_public_policy     = false
  restrict_public_buckets = false
}

resource "aws_s3_bucket_ownership_controls" "pr_intent" {
  bucket = aws_s3_bucket.pr_intent.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "pr_intent" {
  bucket = aws_s3_bucket.pr_intent.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_policy" "pr_intent" {
  bucket = aws_s3_bucket.pr_intent.id
  policy = templatefile("${path.module}/policies/pr-intent-public.json.tftpl", {
    pr_intent_bucket_arn = aws_s3_bucket.pr_intent.arn
  })
  depends_on = [aws_s3_bucket_public_access_block.pr_intent]
}

resource "aws_iam_policy" "pr_intent_publish" {
  name = "clawdinator-pr-intent-publish"
  # Still says pr-intent/, the prefix it once granted (it now grants v1/,
  # see the template): the provider replaces a policy whose description
  # changes, and deleting one still attached to the publishers' roles fails.
  description = "Mirror a tree under pr-intent/ of the public PR-intent bucket"
  policy = templatefile("${path.module}/policies/pr-intent-publish.json.tftpl", {
    pr_intent_bucket_arn = aws_s3_bucket.pr_intent.arn
  })
}

resource "aws_iam_role_policy_attachment" "pr_intent_publish" {
  for_each = toset([for name in var.pr_intent_publishers : name if contains(keys(local.instances), name)])

  role       = aws_iam_role.instance[each.key].name
  policy_arn = aws_iam_policy.pr_intent_publish.arn
}
