# The KMS key: wraps each release's data key (AWS Encryption SDK, encryption context
# purpose = secure-pipeline-model) and encrypts every object at rest (SSE-KMS, bucket keys).
# Its policy names each role and what it may do with the key: no IAM policy can add to it
# (the account root only administers the key, it is not given kms:Decrypt).

locals {
  envelope_context = { "kms:EncryptionContext:purpose" = "secure-pipeline-model" }
  key_admins       = length(var.key_admin_arns) > 0 ? var.key_admin_arns : [local.root_arn]

  # Per role: what it may do through S3 (SSE-KMS of its reads and writes) and directly
  # (the envelope of a release: the trainer makes data keys, whoever verifies unwraps them).
  kms_via_s3 = {
    trainer        = ["kms:GenerateDataKey", "kms:Decrypt"]
    approver       = ["kms:GenerateDataKey", "kms:Decrypt"]
    promoter       = ["kms:GenerateDataKey", "kms:Decrypt"]
    auditor        = ["kms:GenerateDataKey", "kms:Decrypt"]
    "data-steward" = ["kms:GenerateDataKey", "kms:Decrypt"]
    reader         = ["kms:Decrypt"]
  }
  kms_envelope = {
    trainer  = ["kms:GenerateDataKey", "kms:Encrypt", "kms:Decrypt"]
    approver = ["kms:Decrypt"]
    promoter = ["kms:Decrypt"]
    reader   = ["kms:Decrypt"]
  }
}

resource "aws_kms_key" "models" {
  description             = "${var.name}: model release envelopes and SSE-KMS of ${var.bucket_name}"
  enable_key_rotation     = true
  rotation_period_in_days = 365
  deletion_window_in_days = var.kms_deletion_window_days
  key_usage               = "ENCRYPT_DECRYPT"
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      [{
        Sid       = "KeyAdministrationNotUse"
        Effect    = "Allow"
        Principal = { AWS = local.key_admins }
        Action = [
          "kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*",
          "kms:Update*", "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*",
          "kms:TagResource", "kms:UntagResource", "kms:ScheduleKeyDeletion",
          "kms:CancelKeyDeletion", "kms:RotateKeyOnDemand",
        ]
        Resource = "*"
      }],
      [for role, actions in local.kms_via_s3 : {
        Sid       = "${replace(title(replace(role, "-", " ")), " ", "")}ThroughS3"
        Effect    = "Allow"
        Principal = { AWS = "${local.role_arn_prefix}${role}" }
        Action    = concat(actions, ["kms:DescribeKey"])
        Resource  = "*"
        Condition = {
          StringEquals = {
            "kms:ViaService"    = local.s3_via_service
            "kms:CallerAccount" = local.account_id
          }
        }
      }],
      [for role, actions in local.kms_envelope : {
        Sid       = "${replace(title(replace(role, "-", " ")), " ", "")}ReleaseEnvelope"
        Effect    = "Allow"
        Principal = { AWS = "${local.role_arn_prefix}${role}" }
        Action    = actions
        Resource  = "*"
        Condition = { StringEquals = local.envelope_context }
      }],
    )
  })
  # The roles must exist before a key policy may name them.
  depends_on = [aws_iam_role.duty]
}

resource "aws_kms_alias" "models" {
  name          = "alias/${var.name}-models"
  target_key_id = aws_kms_key.models.key_id
}
