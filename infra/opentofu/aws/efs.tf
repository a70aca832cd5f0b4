# Shared memory: an encrypted EFS file system the hosts mount at /memory
# through a TLS tunnel, reachable from the hosts only, backed up.

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

resource "aws_efs_file_system_policy" "memory" {
  file_system_id = aws_efs_file_system.memory.id
  # Every request not made over TLS is refused.
  policy = templatefile("${path.module}/policies/deny-without-tls.json.tftpl", {
    actions   = jsonencode(["*"])
    resources = jsonencode([aws_efs_file_system.memory.arn])
  })
}

resource "aws_efs_mount_target" "memory" {
  for_each = toset(var.subnet_ids)

  file_system_id  = aws_efs_file_system.memory.id
  subnet_id       = each.value
  security_groups = [aws_security_group.efs.id]
}
