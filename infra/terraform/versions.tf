# The deployment stack of the secure pipeline on AWS: a KMS key, the model bucket (with
# its access-log bucket) and one IAM role per duty. README "Run it on AWS" shows how to
# create it and where its outputs go; tests/infra applies it to moto.
terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.60, < 6.0"
    }
  }
}

provider "aws" {
  region = var.region
  default_tags {
    tags = var.tags
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  root_arn   = "arn:${local.partition}:iam::${local.account_id}:root"
  bucket_arn = "arn:${local.partition}:s3:::${var.bucket_name}"

  # Key layout the pipeline writes (tasks/trust/release.py, tasks/trust/versions.py,
  # tasks/common/anchors.py); keep in step with the code.
  prefix          = trimsuffix(var.prefix, "/")
  releases        = "${local.bucket_arn}/${local.prefix}/*"
  champion        = "${local.bucket_arn}/${local.prefix}/*/champion.dsse.json"
  approvals       = "${local.bucket_arn}/${local.prefix}/*/approvals/*"
  anchors         = "${local.bucket_arn}/${trimsuffix(var.anchors_prefix, "/")}/*"
  datasets        = "${local.bucket_arn}/${trimsuffix(var.datasets_prefix, "/")}/*"
  every_object    = "${local.bucket_arn}/*"
  s3_via_service  = "s3.${var.region}.amazonaws.com"
  role_names      = ["trainer", "approver", "promoter", "auditor", "data-steward", "reader"]
  role_arn_prefix = "arn:${local.partition}:iam::${local.account_id}:role/${var.name}-"
}
