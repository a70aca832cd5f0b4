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

resource "aws_iam_role" "ci" {
  name               = "clawdinator-ci"
  assume_role_policy = templatefile("${path.module}/policies/ci-trust.json.tftpl", {
    github_oidc_arn = local.github_oidc_arn
    github_subjects = jsonencode(local.github_subjects)
  })
}

# Exactly what the image pipeline, the bundle upload, secrets pull and
# seeding, fleet switch and fleet deploy (through tofu) call: the policy
# is a template so that `cargo xtask test` judges the very document
# applied here against every call those commands make (docs/security.md).
#
# The cache: `nix copy --to s3://…` reads nix-cache-info and each narinfo
# (GetObject, HEAD; ListBucket so that an absent one is a 404), then puts
# nar/…, the narinfo and nix-cache-info with one PutObject each. It uploads
# in parts only with `multipart-upload=true`, which the fleet does not set
# (a compressed NAR stays far below PutObject's 5 GiB), so no multipart
# action is granted; nor any delete: pruning the cache is an operator's
# step. Release manifests are put only with If-None-Match: * (the bucket
# policy also refuses any other put and every delete under releases/).
# Objects put with their tags (app=clawdinator: images, bundles, manifests)
# need s3:PutObjectTagging beside s3:PutObject.
#
# `bootstrap upload` keeps each instance's age identity in Secrets Manager
# (clawdinator/<instance>/age-identity): CI creates (tagged app=clawdinator),
# replaces, tags, describes and deletes them but may never read one; only
# that instance's role reads it. CI writes its audit copies under
# audit/ci/ only. It creates instance roles only inside the instance
# boundary and tagged app=clawdinator; what trust policy such a role gets
# IAM cannot constrain, which is why the boundary refuses any credentials
# EC2 did not issue to an instance (iam.tf).
resource "aws_iam_role_policy" "ci" {
  name   = "clawdinator-ci"
  role   = aws_iam_role.ci.id
  policy = templatefile("${path.module}/policies/ci.json.tftpl", {
    partition                  = local.partition
    account                    = local.account
    region                     = var.aws_region
    bucket_arn                 = aws_s3_bucket.fleet.arn
    cache_bucket_arn           = aws_s3_bucket.cache.arn
    lock_table_arn             = aws_dynamodb_table.locks.arn
    memory_arn                 = aws_efs_file_system.memory.arn
    instance_security_group_id = aws_security_group.instance.id
    instance_boundary_arn      = aws_iam_policy.instance_boundary.arn
  })
}
