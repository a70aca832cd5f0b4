# Security groups and the shared-memory file system.

resource "aws_security_group" "instance" {
  name        = "clawdinator-instance"
  description = "clawdinator hosts: no ingress unless allowed_ssh_cidrs names ranges"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "ssh" {
  for_each = toset(var.allowed_ssh_cidrs)

  security_group_id = aws_security_group.instance.id
  description       = "SSH from ${each.value} (allowed_ssh_cidrs)"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
}

resource "aws_vpc_security_group_egress_rule" "instance_https" {
  security_group_id = aws_security_group.instance.id
  description       = "HTTPS out: S3, SSM, Secrets Manager, GitHub, Discord, model APIs (DNS, IMDS and time need no rule)"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "instance_efs" {
  security_group_id            = aws_security_group.instance.id
  description                  = "NFS over TLS to the fleet's EFS"
  referenced_security_group_id = aws_security_group.efs.id
  ip_protocol                  = "tcp"
  from_port                    = 2049
  to_port                      = 2049
}

resource "aws_security_group" "efs" {
  name        = "clawdinator-efs"
  description = "clawdinator shared memory: NFS from the hosts only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "efs_from_instances" {
  security_group_id            = aws_security_group.efs.id
  description                  = "NFS from clawdinator hosts"
  referenced_security_group_id = aws_security_group.instance.id
  ip_protocol                  = "tcp"
  from_port                    = 2049
  to_port                      = 2049
}

resource "aws_efs_file_system" "memory" {
  # checkov:skip=CKV_AWS_184:encrypted with the AWS-managed EFS key; a customer key adds nothing the hosts' TLS tunnel does not
  creation_token = "clawdinator-memory"
  encrypted      = true

  tags = { Name = "clawdinator-memory" }
}

resource "aws_efs_backup_policy" "memory" {
  file_system_id = aws_efs_file_system.memory.id

  backup_policy {
    status = "ENABLED"
  }
}

data "aws_iam_policy_document" "memory" {
  statement {
    sid       = "DenyWithoutTLS"
    effect    = "Deny"
    actions   = ["*"]
    resources = [aws_efs_file_system.memory.arn]

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

resource "aws_efs_file_system_policy" "memory" {
  file_system_id = aws_efs_file_system.memory.id
  policy         = data.aws_iam_policy_document.memory.json
}

resource "aws_efs_mount_target" "memory" {
  for_each = toset(var.subnet_ids)

  file_system_id  = aws_efs_file_system.memory.id
  subnet_id       = each.value
  security_groups = [aws_security_group.efs.id]
}
