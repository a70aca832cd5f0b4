# The AWS side of the fleet. nix/instances.json is the single source of
# truth: one instance, role and instance profile per entry.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  instances = jsondecode(file("${path.module}/../../../nix/instances.json"))
  secrets   = jsondecode(file("${path.module}/../../../nix/secrets.json"))

  tags = merge(var.tags, { app = "clawdinator" })

  account   = data.aws_caller_identity.current.account_id
  partition = data.aws_partition.current.partition

  # The instances in registry order; each gets the next subnet in turn.
  instance_names = sort(keys(local.instances))
  subnet_of      = { for i, name in local.instance_names : name => var.subnet_ids[i % length(var.subnet_ids)] }

  # Secrets Manager ARNs end in "-" and six random characters.
  common_secret_arns = [
    for name in local.secrets.common :
    "arn:${local.partition}:secretsmanager:${var.aws_region}:${local.account}:secret:clawdinator/${name}-??????"
  ]
}
