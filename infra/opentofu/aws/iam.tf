# The vmimport service role, and one role and instance profile per
# instance that can read only its own bundle and its own secrets. Every
# policy is a template under policies/, the same document the tests judge.

resource "aws_iam_role" "vmimport" {
  name               = "vmimport"
  assume_role_policy = templatefile("${path.module}/policies/vmimport-trust.json.tftpl", {})
}

resource "aws_iam_role_policy" "vmimport" {
  name = "clawdinator-vmimport"
  role = aws_iam_role.vmimport.id
  policy = templatefile("${path.module}/policies/vmimport.json.tftpl", {
    partition  = local.partition
    region     = var.aws_region
    bucket_arn = aws_s3_bucket.fleet.arn
  })
}

# The most any instance role can ever do, whoever creates it: the CI role
# may create clawdinator-instance-* roles only with this boundary, and
# IAM cannot constrain the trust policy it gives them. So the boundary
# names only the fleet's own reads (its buckets' bundle, release and cache
# objects, clawdinator/* secrets but never the deploy App's key, the
# fleet's parameters and documents, the control API) and the public tree,
# and refuses every request signed with credentials that EC2 did not issue
# to an instance (aws:ec2InstanceSourceVPC absent): a role that trusts
# another account is worth nothing there. Requests an AWS service makes on
# a call's behalf (aws:ViaAWSService) were already judged as that call.
resource "aws_iam_policy" "instance_boundary" {
  name        = "clawdinator-instance-boundary"
  description = "Permissions boundary of every clawdinator instance role"
  policy = templatefile("${path.module}/policies/instance-boundary.json.tftpl", {
    partition            = local.partition
    account              = local.account
    region               = var.aws_region
    bucket_arn           = aws_s3_bucket.fleet.arn
    cache_bucket_arn     = aws_s3_bucket.cache.arn
    pr_intent_bucket_arn = local.pr_intent_bucket_arn
    control_api_arn      = local.control_api_arn
  })
}

resource "aws_iam_role" "instance" {
  for_each = local.instances

  name                 = "clawdinator-instance-${each.key}"
  permissions_boundary = aws_iam_policy.instance_boundary.arn
  assume_role_policy = templatefile("${path.module}/policies/service-trust.json.tftpl", {
    service = "ec2.amazonaws.com"
  })
  tags = { "clawdinator:instance" = each.key }
}

# The trailing slash of the prefix: clawdinator-1 must not reach
# clawdinator-10's bundle. The SSM agent's actions are listed in the policy
# rather than attached as AmazonSSMManagedInstanceCore, which would let
# every bot read every SSM parameter of the account.
#
# Root's units switch to a release CI built: they list and read the
# manifests under releases/ of the fleet bucket and substitute the closure
# from the cache bucket, reading, never writing (the boundary denies every
# write outside the public tree). s3:ListBucket on the cache is what makes
# S3 answer 404 rather than 403 for a narinfo the cache lacks: nix takes a
# 404 (NoSuchKey) for "not in this cache" and, in some versions, fails on
# a 403. Listing shows only names of objects the role may read anyway.
resource "aws_iam_role_policy" "instance" {
  for_each = local.instances

  name = "clawdinator-instance"
  role = aws_iam_role.instance[each.key].id
  policy = templatefile("${path.module}/policies/instance.json.tftpl", {
    bucket_arn       = aws_s3_bucket.fleet.arn
    cache_bucket_arn = aws_s3_bucket.cache.arn
    bootstrap_prefix = each.value.bootstrapPrefix
    secret_arns = jsonencode(concat(local.common_secret_arns, [
      "arn:${local.partition}:secretsmanager:${var.aws_region}:${local.account}:secret:clawdinator/${each.key}/discord-token-??????",
    ]))
    # The key that opens this instance's bundle; `bootstrap upload`
    # creates it and nobody else may read it (the CI role manages it
    # without reading it). The slash after the name keeps clawdinator-1
    # out of clawdinator-10's.
    age_identity_arn = "arn:${local.partition}:secretsmanager:${var.aws_region}:${local.account}:secret:clawdinator/${each.key}/age-identity-??????"
  })
}

resource "aws_iam_role_policy" "instance_control_api" {
  for_each = var.enable_control_api ? local.instances : {}

  name = "clawdinator-instance-control-api"
  role = aws_iam_role.instance[each.key].id
  policy = templatefile("${path.module}/policies/instance-control-api.json.tftpl", {
    partition       = local.partition
    account         = local.account
    region          = var.aws_region
    control_api_arn = aws_lambda_function.control_api[0].arn
  })
}

resource "aws_iam_instance_profile" "instance" {
  for_each = local.instances

  name = "clawdinator-instance-${each.key}"
  role = aws_iam_role.instance[each.key].name
}
