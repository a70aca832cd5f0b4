# The chat control API (off unless enable_control_api): a Lambda behind a
# function URL with AWS_IAM auth. Only the instance roles (their policy in
# iam.tf) and the operator group may invoke it; there is no resource
# policy for "*".

locals {
  # Named, not read from the function: the instance boundary names it
  # whether or not the control API is on.
  control_api_arn = "arn:${local.partition}:lambda:${var.aws_region}:${local.account}:function:clawdinator-control-api"
}

resource "aws_iam_role" "control_api" {
  count = var.enable_control_api ? 1 : 0

  name               = "clawdinator-control-api"
  assume_role_policy = templatefile("${path.module}/policies/service-trust.json.tftpl", {
    service = "lambda.amazonaws.com"
  })
}

resource "aws_iam_role_policy" "control_api" {
  count = var.enable_control_api ? 1 : 0

  name   = "clawdinator-control-api"
  role   = aws_iam_role.control_api[0].id
  policy = templatefile("${path.module}/policies/control-api.json.tftpl", {
    partition          = local.partition
    account            = local.account
    region             = var.aws_region
    bucket_arn         = aws_s3_bucket.fleet.arn
    cooldown_table_arn = aws_dynamodb_table.cooldown[0].arn
  })
}

# Who asked to deploy what, and until when they must wait: the control
# API's per-caller and per-target cooldowns must outlive a Lambda
# container, so they live here, written with conditions and aged out by
# DynamoDB's TTL on `expires` (epoch seconds). Only the control API's role
# reads or writes it.
resource "aws_dynamodb_table" "cooldown" {
  # checkov:skip=CKV_AWS_119:it holds caller and target names and expiry times only; AWS-owned encryption suffices
  count = var.enable_control_api ? 1 : 0

  name         = "clawdinator-control-api-cooldown"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "key"

  attribute {
    name = "key"
    type = "S"
  }

  ttl {
    attribute_name = "expires"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled = true
  }
}

# The deploy App's key (created by hand, before enable_control_api: the
# data source needs it) is read by the control API's role and nobody
# else, not even an administrator of the account, who may still replace
# or rotate it. The instance boundary denies it to every instance role too.
data "aws_secretsmanager_secret" "deploy_app" {
  count = var.enable_control_api ? 1 : 0

  name = "clawdinator/deploy-app.pem"
}

resource "aws_secretsmanager_secret_policy" "deploy_app" {
  count = var.enable_control_api ? 1 : 0

  secret_arn = data.aws_secretsmanager_secret.deploy_app[0].arn
  policy = templatefile("${path.module}/policies/deploy-app-secret.json.tftpl", {
    control_api_role_arn = aws_iam_role.control_api[0].arn
  })
}

resource "aws_cloudwatch_log_group" "control_api" {
  # checkov:skip=CKV_AWS_158:the log holds requests and decisions, no secret; the AWS-managed key suffices
  count = var.enable_control_api ? 1 : 0

  name              = "/aws/lambda/clawdinator-control-api"
  retention_in_days = 365
}

resource "aws_lambda_function" "control_api" {
  # checkov:skip=CKV_AWS_116:invoked synchronously through its URL; there is no event to dead-letter
  # checkov:skip=CKV_AWS_117:it calls only public AWS and GitHub endpoints; a VPC would add a NAT and nothing else
  # checkov:skip=CKV_AWS_173:its environment holds names and ARNs, no secret (the App key is read from Secrets Manager)
  # checkov:skip=CKV_AWS_272:the zip is built by CI from this repository; code signing needs a signing profile the fleet does not have
  count = var.enable_control_api ? 1 : 0

  function_name                  = "clawdinator-control-api"
  role                           = aws_iam_role.control_api[0].arn
  runtime                        = "provided.al2023"
  handler                        = "bootstrap"
  architectures                  = ["x86_64"]
  filename                       = var.control_api_zip
  source_code_hash               = filebase64sha256(var.control_api_zip)
  timeout                        = 30
  reserved_concurrent_executions = 5

  tracing_config {
    mode = "Active"
  }

  environment {
    variables = {
      CLAWDINATOR_AUDIT_BUCKET         = aws_s3_bucket.fleet.id
      CLAWDINATOR_ACCOUNT_ID           = local.account
      CLAWDINATOR_OPERATORS            = join(",", var.operator_arns)
      CLAWDINATOR_APP_ID               = var.deploy_app_id
      CLAWDINATOR_APP_INSTALLATION_ID  = var.deploy_app_installation_id
      CLAWDINATOR_APP_KEY_SECRET       = "clawdinator/deploy-app.pem"
      CLAWDINATOR_COOLDOWN_TABLE       = aws_dynamodb_table.cooldown[0].name
      GITHUB_REPOSITORY                = var.github_repository
    }
  }

  depends_on = [aws_cloudwatch_log_group.control_api]
}

resource "aws_lambda_function_url" "control_api" {
  count = var.enable_control_api ? 1 : 0

  function_name      = aws_lambda_function.control_api[0].function_name
  authorization_type = "AWS_IAM"
}

resource "aws_iam_group" "operators" {
  count = var.enable_control_api ? 1 : 0

  name = var.operator_group_name
}

resource "aws_iam_group_policy" "operators" {
  count = var.enable_control_api ? 1 : 0

  name   = "clawdinator-control-api"
  group  = aws_iam_group.operators[0].name
  policy = templatefile("${path.module}/policies/operators.json.tftpl", {
    control_api_arn = aws_lambda_function.control_api[0].arn
    bucket_arn      = aws_s3_bucket.fleet.arn
  })
}

resource "aws_ssm_parameter" "control_api_url" {
  # checkov:skip=CKV2_AWS_34:the URL is not a secret; callers still need IAM to invoke it
  count = var.enable_control_api ? 1 : 0

  name  = "/clawdinator/control-api-url"
  type  = "String"
  value = aws_lambda_function_url.control_api[0].function_url
}
