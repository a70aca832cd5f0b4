# The fleet's binary cache: CI builds every host's system once per
# revision, signs the closure with the fleet's cache key and copies it here
# (`nix copy --to s3://…`); hosts substitute from it and never build.
#
# A bucket of its own, not a prefix of the fleet bucket: nix's S3 store
# writes nix-cache-info, <hash>.narinfo and nar/ at the top of its bucket,
# and every instance reads the whole cache, while each instance may read
# only its own bundle of the fleet bucket.

locals {
  # Unset, the cache is named after the fleet bucket, so that an existing
  # var file (CI's CLAWDINATOR_TFVARS) needs no new entry.
  cache_bucket_name = coalesce(var.cache_bucket_name, "${var.bucket_name}-cache")
}

resource "aws_s3_bucket" "cache" {
  # checkov:skip=CKV_AWS_18:access logs would need a second bucket; CloudTrail data events cover audits
  # checkov:skip=CKV_AWS_144:every path in it is rebuilt from the repository at its revision; no replica needed
  # checkov:skip=CKV2_AWS_62:nothing consumes bucket events
  # checkov:skip=CKV_AWS_145:SSE-S3 keeps the hosts' and CI's reads and writes free of KMS grants; a closure holds no plaintext secret (secrets are age-encrypted bundles)
  bucket = local.cache_bucket_name

  lifecycle {
    prevent_destroy = true

    precondition {
      condition     = length(local.cache_bucket_name) <= 63
      error_message = "bucket_name is too long to name the cache after it (<bucket_name>-cache); set cache_bucket_name."
    }
  }
}

resource "aws_s3_bucket_versioning" "cache" {
  bucket = aws_s3_bucket.cache.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "cache" {
  bucket = aws_s3_bucket.cache.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "cache" {
  bucket                  = aws_s3_bucket.cache.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# No rule ever expires a current object: any narinfo or NAR may be named by
# a release manifest that is kept (releases/ in the fleet bucket), and a
# host switching or rolling back to that release must find its whole
# closure. Age says nothing about whether a release still names a path, so
# pruning the cache is a separate, explicit step that reads the manifests;
# what it deletes becomes a noncurrent version, and only those expire here.
resource "aws_s3_bucket_lifecycle_configuration" "cache" {
  bucket = aws_s3_bucket.cache.id

  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  rule {
    id     = "expire-replaced-and-pruned"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = 30
    }
  }
}

resource "aws_s3_bucket_policy" "cache" {
  bucket = aws_s3_bucket.cache.id
  # Every request not made over TLS is refused. Nothing is granted here:
  # the CI role writes and the instance roles read by their own policies.
  policy = templatefile("${path.module}/policies/deny-without-tls.json.tftpl", {
    actions   = jsonencode(["s3:*"])
    resources = jsonencode([aws_s3_bucket.cache.arn, "${aws_s3_bucket.cache.arn}/*"])
  })

  depends_on = [aws_s3_bucket_public_access_block.cache]
}
