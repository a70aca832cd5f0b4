# The hosts' security group: no ingress unless allowed_ssh_cidrs names ranges,
# HTTPS out, and NFS to the shared-memory file system (efs.tf).

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
