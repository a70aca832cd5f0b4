output "instances" {
  description = "Each instance by name: id, private IP, AMI it was created from, role."
  value = {
    for name, instance in aws_instance.clawdinator : name => {
      id         = instance.id
      private_ip = instance.private_ip
      ami        = instance.ami
      role_arn   = aws_iam_role.instance[name].arn
    }
  }
}

output "bucket" {
  description = "The fleet bucket (cargo xtask … --bucket, S3_BUCKET)."
  value       = aws_s3_bucket.fleet.id
}

output "cache_bucket" {
  description = "The fleet's binary cache (nix copy --to 's3://<it>?region=…'); hosts read its name from /etc/clawdinator/cache-bucket."
  value       = aws_s3_bucket.cache.id
}

output "efs_id" {
  description = "The shared-memory file system every instance's user data names."
  value       = aws_efs_file_system.memory.id
}

output "lock_table" {
  description = "The state lock table (-backend-config=dynamodb_table=…)."
  value       = aws_dynamodb_table.locks.name
}

output "ci_role_arn" {
  description = "The role GitHub workflows assume through OIDC (aws-actions/configure-aws-credentials role-to-assume)."
  value       = aws_iam_role.ci.arn
}

output "control_api_url" {
  description = "The control API's function URL (also in SSM /clawdinator/control-api-url), null when off."
  value       = var.enable_control_api ? aws_lambda_function_url.control_api[0].function_url : null
}

output "pr_intent_bucket_name" {
  description = "The public PR-intent bucket: aws s3 sync --no-sign-request s3://<it>/v1/ ./pr-intent/"
  value       = aws_s3_bucket.pr_intent.id
}
