# One instance per registry entry. The AMI and user data are read only
# when an instance is created: a newer ami_id never replaces a running
# instance; `cargo xtask fleet deploy NAME` replaces one explicitly
# (tofu apply -replace='aws_instance.clawdinator["NAME"]').

resource "aws_instance" "clawdinator" {
  for_each = local.instances

  ami                    = var.ami_id
  instance_type          = each.value.instanceType
  subnet_id              = local.subnet_of[each.key]
  vpc_security_group_ids = [aws_security_group.instance.id]
  iam_instance_profile   = aws_iam_instance_profile.instance[each.key].name
  monitoring             = true
  ebs_optimized          = true

  # Only what identifies the instance; nothing optional, so no feature
  # toggle can ever change it.
  user_data = templatefile("${path.module}/user-data.sh.tftpl", {
    instance_name    = each.key
    bucket           = aws_s3_bucket.fleet.id
    bootstrap_prefix = each.value.bootstrapPrefix
    cache_bucket     = aws_s3_bucket.cache.id
    region           = var.aws_region
    efs_id           = aws_efs_file_system.memory.id
  })

  root_block_device {
    volume_type = "gp3"
    volume_size = var.root_volume_size_gib
    encrypted   = true
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  tags = {
    Name                   = each.key
    app                    = "clawdinator"
    "clawdinator:instance" = each.key
  }

  lifecycle {
    ignore_changes = [ami, user_data]
  }

  depends_on = [aws_efs_mount_target.memory]
}
