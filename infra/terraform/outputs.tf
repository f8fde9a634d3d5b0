# The values the pipeline's config takes ([storage] of your config file, or
# SECURE_PIPELINE_STORAGE__* variables); `terraform output -raw storage_toml` prints them.

output "storage_bucket" {
  description = "storage.bucket"
  value       = aws_s3_bucket.models.bucket
}

output "storage_kms_key_id" {
  description = "storage.kms_key_id: the key ARN (the bucket policy refuses uploads under any other key)"
  value       = aws_kms_key.models.arn
}

output "storage_region" {
  description = "storage.region"
  value       = var.region
}

output "storage_prefix" {
  description = "storage.prefix"
  value       = local.prefix
}

output "storage_object_lock_days" {
  description = "storage.object_lock_days"
  value       = var.object_lock_days
}

output "role_arns" {
  description = "The role of each duty: assume it (an AWS profile with role_arn) for the commands of that duty"
  value       = { for k, r in aws_iam_role.duty : k => r.arn }
}

output "log_bucket" {
  description = "Where the model bucket's server access logs land"
  value       = aws_s3_bucket.logs.bucket
}

output "storage_toml" {
  description = "The [storage] section of the pipeline's config for this stack"
  value       = <<-EOT
    [storage]
    bucket = "${aws_s3_bucket.models.bucket}"
    prefix = "${local.prefix}"
    region = "${var.region}"
    kms_key_id = "${aws_kms_key.models.arn}"
    object_lock_days = ${var.object_lock_days}
    # endpoint_url unset would mean the embedded SeaweedFS: set the regional endpoint
    endpoint_url = "https://s3.${var.region}.amazonaws.com"
  EOT
}
