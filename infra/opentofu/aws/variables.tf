variable "aws_region" {
  description = "The region of the fleet (bucket, EFS, instances)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]+$", var.aws_region))
    error_message = "aws_region must be an AWS region name such as eu-central-1."
  }
}

variable "bucket_name" {
  description = "The bucket for images (images/) and bootstrap bundles (bootstrap/)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name)) && !strcontains(var.bucket_name, "..")
    error_message = "bucket_name must be a valid S3 bucket name: 3-63 lowercase letters, digits, dots and hyphens."
  }
}

variable "cache_bucket_name" {
  description = "The fleet's binary cache: the closures CI builds and signs, which hosts substitute (nix's S3 store, the whole bucket). Empty (the default): <bucket_name>-cache."
  type        = string
  default     = ""

  validation {
    condition     = var.cache_bucket_name == "" || (can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.cache_bucket_name)) && !strcontains(var.cache_bucket_name, ".."))
    error_message = "cache_bucket_name must be empty or a valid S3 bucket name: 3-63 lowercase letters, digits, dots and hyphens."
  }
}

variable "lock_table_name" {
  description = "The DynamoDB table OpenTofu's S3 backend locks the state with."
  type        = string
  default     = "clawdinator-terraform-locks"

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]{3,255}$", var.lock_table_name))
    error_message = "lock_table_name must be 3-255 letters, digits, _, . or -."
  }
}

variable "ami_id" {
  description = "The AMI new instances boot (cargo xtask image ami latest). Changing it never replaces an existing instance: `cargo xtask fleet deploy` replaces instances one at a time."
  type        = string

  validation {
    condition     = can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must be an AMI id such as ami-0123456789abcdef0."
  }
}

variable "root_volume_size_gib" {
  description = "Root volume size of every instance (gp3, encrypted)."
  type        = number
  default     = 40

  validation {
    condition     = var.root_volume_size_gib >= 20 && var.root_volume_size_gib <= 16384
    error_message = "root_volume_size_gib must be between 20 and 16384."
  }
}

variable "vpc_id" {
  description = "The VPC the instances and the EFS mount targets live in."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]{8,17}$", var.vpc_id))
    error_message = "vpc_id must be a VPC id such as vpc-0123456789abcdef0."
  }
}

variable "subnet_ids" {
  description = "Subnets for instances (spread in registry order) and one EFS mount target each."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) > 0 && alltrue([for s in var.subnet_ids : can(regex("^subnet-[0-9a-f]{8,17}$", s))])
    error_message = "subnet_ids must name at least one subnet, each like subnet-0123456789abcdef0."
  }
}

variable "allowed_ssh_cidrs" {
  description = "CIDR ranges allowed to reach port 22. Empty (the default): no ingress at all; SSM Session Manager is the way in."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.allowed_ssh_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0" && c != "::/0"])
    error_message = "allowed_ssh_cidrs must be CIDR ranges, never 0.0.0.0/0 or ::/0."
  }
}

variable "github_repository" {
  description = "owner/name of the repository whose workflows may assume the CI role."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository must be owner/name."
  }
}

variable "github_refs" {
  description = "Git refs whose workflows may assume the CI role. None by default: a ref subject matches any job on that ref, even one a pushed workflow file adds; only the protected environment may."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for r in var.github_refs : startswith(r, "refs/")])
    error_message = "github_refs must be full refs such as refs/heads/main."
  }
}

variable "github_environments" {
  description = "GitHub environments whose jobs may assume the CI role: `fleet`, protected (deployments from the default branch only, reviewers as you wish), holding the CLAWDINATOR_AGE_KEY secret."
  type        = list(string)
  default     = ["fleet"]
}

variable "create_github_oidc_provider" {
  description = "Create the account's GitHub Actions OIDC provider (false when the account already has one)."
  type        = bool
  default     = true
}

variable "enable_control_api" {
  description = "Deploy the chat control API (a Lambda behind an AWS_IAM function URL), through which the bots ask for each other's deploys. On by default; it needs control_api_zip, the deploy App (deploy_app_id, deploy_app_installation_id) and its key clawdinator/deploy-app.pem in Secrets Manager. false: no control API, and the bots cannot deploy."
  type        = bool
  default     = true
}

variable "control_api_zip" {
  description = "The control API package, as `cargo xtask control-api package` writes it by default (dist/control-api.zip of the checkout; relative paths are from this directory, where tofu runs). Read when enable_control_api."
  type        = string
  default     = "../../../dist/control-api.zip"

  validation {
    condition     = endswith(var.control_api_zip, ".zip")
    error_message = "control_api_zip must be the path of a .zip file (cargo xtask control-api package --out FILE.zip)."
  }
}

variable "operator_group_name" {
  description = "The IAM group of humans who may call the control API."
  type        = string
  default     = "clawdinator-operators"

  validation {
    condition     = can(regex("^[A-Za-z0-9+=,.@_-]{1,128}$", var.operator_group_name))
    error_message = "operator_group_name must be a valid IAM group name."
  }
}

variable "operator_arns" {
  description = "IAM users or roles the control API treats as operators (they may deploy any target); put the same users in operator_group_name."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.operator_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:(user|role)/", a))])
    error_message = "operator_arns must be IAM user or role ARNs."
  }
}

variable "deploy_app_id" {
  description = "The deploy App: the only GitHub App that may dispatch fleet-deploy.yml (actions: write on this repository alone). The control API mints its tokens; its key is clawdinator/deploy-app.pem in Secrets Manager, which only the control API's role may read. Never the bots' App."
  type        = string
  default     = ""
}

variable "deploy_app_installation_id" {
  description = "The deploy App's installation id on this repository."
  type        = string
  default     = ""
}

variable "pr_intent_bucket_name" {
  description = "The public PR-intent bucket (anonymous read and list under v1/ only); the publishers' hosts name it too (services.clawdinator.publicTree.bucket)."
  type        = string
  default     = "openclaw-pr-intent"
}

variable "pr_intent_publishers" {
  description = "The instances that mirror their PR-intent tree to the public bucket (host publish-tree)."
  type        = list(string)
  default     = ["clawdinator-1"]
}

variable "tags" {
  description = "Extra tags on every resource."
  type        = map(string)
  default     = {}
}
