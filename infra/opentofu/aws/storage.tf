# The bucket (images/, bootstrap/, releases/, audit/) and the state lock
# table; the binary cache has a bucket of its own (cache.tf).

resource "aws_s3_bucket" "fleet" {
  # checkov:skip=CKV_AWS_18:access logs would need a second bucket; CloudTrail data events cover audits
  # checkov:skip=CKV_AWS_144:images and bundles are rebuilt from the repository; no replica needed
  # checkov:skip=CKV2_AWS_62:nothing consumes bucket events
  # checkov:skip=CKV_AWS_145:SSE-S3 keeps VM Import and EBS direct free of KMS grants; objects hold no plaintext secret (bundles are age-encrypted)
  bucket = var.bucket_name

  lifecycle {
    prevent_destroy = true
  }
}

resource "aws_s3_bucket_versioning" "fleet" {
  bucket = aws_s3_bucket.fleet.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "fleet" {
  bucket = aws_s3_bucket.fleet.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "fleet" {
  bucket                  = aws_s3_bucket.fleet.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_lifecycle_configuration" "fleet" {
  bucket = aws_s3_bucket.fleet.id

  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 2
    }
  }

  # Replaced images, bundles, age files and states go after 30 days; no
  # rule ever expires anything under audit/ or releases/.
  dynamic "rule" {
    for_each = toset(["images/", "bootstrap/", "age-secrets/", "tfstate/"])

    content {
      id     = "expire-replaced-${trimsuffix(rule.value, "/")}"
      status = "Enabled"

      filter {
        prefix = rule.value
      }

      noncurrent_version_expiration {
        noncurrent_days = 30
      }
    }
  }
}

resource "aws_s3_bucket_policy" "fleet" {
  bucket = aws_s3_bucket.fleet.id
  # Every request not made over TLS is refused; audit records and release
  # manifests are written once (If-None-Match: *, whoever writes) and never
  # deleted: a host trusts a manifest under releases/ to name what CI built
  # for that revision, so nobody may swap or remove one.
  #
  # Each writer of the audit trail has its prefix, and only that writer
  # may write there (audit/control-api/: the control API's role;
  # audit/ci/: the CI role; audit/operators/: whoever else the operators'
  # policy lets write): a record in another writer's prefix cannot have
  # been written by anyone but that writer, whatever their own policy says.
  # The dated layout from before (audit/<yyyy>/…) is kept and closed.
  # Roles are named by ARN, not referenced: the condition holds whether or
  # not the control API exists.
  policy = templatefile("${path.module}/policies/bucket.json.tftpl", {
    bucket_arn           = aws_s3_bucket.fleet.arn
    ci_role_arn          = "arn:${local.partition}:iam::${local.account}:role/clawdinator-ci"
    control_api_role_arn = "arn:${local.partition}:iam::${local.account}:role/clawdinator-control-api"
  })

  depends_on = [aws_s3_bucket_public_access_block.fleet]
}

resource "aws_dynamodb_table" "locks" {
  # checkov:skip=CKV_AWS_119:the lock table holds lock ids and state digests only; AWS-owned encryption suffices
  name         = var.lock_table_name
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "LockID"

  attribute {
    name = "LockID"
    type = "S"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled = true
  }
}
