# The model bucket: versioned and object-locked from creation (object lock cannot be
# turned on later), SSE-KMS with bucket keys by default, no public access, and a policy
# that refuses plain HTTP, uploads without SSE-KMS or under another key, deletion of any
# release or anchor, and writes outside each role's duty (tasks/localstack/bucket.py is
# the same policy on the embedded store). tasks/checks/bucket_posture.py checks it before
# every release.

resource "aws_s3_bucket" "models" {
  #checkov:skip=CKV_AWS_144:Cross-region replication needs a second object-locked bucket in another region; a single-region template leaves it to the fork (README "Run it on AWS")
  #checkov:skip=CKV2_AWS_62:Nothing consumes event notifications: `secure-pipeline monitor` and `audit verify` read the bucket and its version histories themselves
  bucket              = var.bucket_name
  object_lock_enabled = true
  force_destroy       = var.force_destroy
}

resource "aws_s3_bucket_ownership_controls" "models" {
  bucket = aws_s3_bucket.models.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "models" {
  bucket                  = aws_s3_bucket.models.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "models" {
  bucket = aws_s3_bucket.models.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_object_lock_configuration" "models" {
  bucket = aws_s3_bucket.models.id
  rule {
    default_retention {
      mode = "GOVERNANCE"
      days = var.object_lock_days
    }
  }
  depends_on = [aws_s3_bucket_versioning.models]
}

resource "aws_s3_bucket_server_side_encryption_configuration" "models" {
  bucket = aws_s3_bucket.models.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.models.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_logging" "models" {
  bucket        = aws_s3_bucket.models.id
  target_bucket = aws_s3_bucket.logs.id
  target_prefix = local.log_prefix
  # Log delivery is refused until the target bucket's policy lets the logging service write.
  depends_on = [aws_s3_bucket_policy.logs]
}

resource "aws_s3_bucket_lifecycle_configuration" "models" {
  bucket = aws_s3_bucket.models.id
  # Versions are never expired: every release, approval, champion record and anchor stays
  # readable (the object lock keeps them at least object_lock_days anyway).
  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
  depends_on = [aws_s3_bucket_versioning.models]
}

locals {
  log_prefix = "s3-access/${var.bucket_name}/"
  # Who may write what, beyond IAM: the bucket policy repeats each duty as a Deny, so a
  # broad IAM grant elsewhere in the account (an admin's s3:*) still cannot write there.
  trainer_arn     = "${local.role_arn_prefix}trainer"
  anchor_writers  = concat(["${local.role_arn_prefix}auditor"], var.trainer_writes_anchors ? [local.trainer_arn] : [])
  champion_owners = concat(["${local.role_arn_prefix}promoter"], var.trainer_may_promote ? [local.trainer_arn] : [])
  keep = [ # what nobody may do to a release, a champion record, an approval or an anchor
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:PutObjectLegalHold",
    "s3:BypassGovernanceRetention",
  ]
}

resource "aws_s3_bucket_policy" "models" {
  bucket = aws_s3_bucket.models.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "DenyInsecureTransport"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:*"
        Resource  = [local.bucket_arn, local.every_object]
        Condition = { Bool = { "aws:SecureTransport" = "false" } }
      },
      {
        Sid       = "DenyWrongEncryption"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:PutObject"
        Resource  = local.every_object
        Condition = { StringNotEquals = { "s3:x-amz-server-side-encryption" = "aws:kms" } }
      },
      {
        Sid       = "DenyMissingEncryption"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:PutObject"
        Resource  = local.every_object
        Condition = { Null = { "s3:x-amz-server-side-encryption" = "true" } }
      },
      {
        Sid       = "DenyWrongKmsKey"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:PutObject"
        Resource  = local.every_object
        Condition = {
          StringNotEqualsIfExists = {
            "s3:x-amz-server-side-encryption-aws-kms-key-id" = aws_kms_key.models.arn
          }
        }
      },
      {
        Sid       = "KeepReleasesAndAnchors"
        Effect    = "Deny"
        Principal = "*"
        Action    = local.keep
        Resource  = [local.releases, local.anchors]
      },
      {
        Sid       = "NoRetentionChangesOnReleases"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:PutObjectRetention"
        Resource  = local.releases
      },
      {
        Sid       = "AnchorsByTheAuditorOnly"
        Effect    = "Deny"
        Principal = "*"
        Action    = ["s3:PutObject", "s3:PutObjectRetention"]
        Resource  = local.anchors
        Condition = { ArnNotEquals = { "aws:PrincipalArn" = local.anchor_writers } }
      },
      {
        # Append-only: an anchor is written once (If-None-Match), never over another.
        Sid       = "AnchorsWrittenOnce"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:PutObject"
        Resource  = local.anchors
        Condition = { Null = { "s3:if-none-match" = "true" } }
      },
      {
        # The trainer writes every release object once (If-None-Match): no new version
        # over a published release.
        Sid       = "TrainerWritesOnce"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:PutObject"
        Resource  = local.releases
        Condition = {
          ArnEquals = { "aws:PrincipalArn" = local.trainer_arn }
          Null      = { "s3:if-none-match" = "true" }
        }
      },
      {
        Sid       = "ChampionByThePromoterOnly"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:PutObject"
        Resource  = local.champion
        Condition = { ArnNotEquals = { "aws:PrincipalArn" = local.champion_owners } }
      },
      {
        Sid       = "ApprovalsByTheApproverOnly"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:PutObject"
        Resource  = local.approvals
        Condition = { ArnNotEquals = { "aws:PrincipalArn" = "${local.role_arn_prefix}approver" } }
      },
    ]
  })
  depends_on = [aws_s3_bucket_public_access_block.models]
}

# --- The access-log bucket ------------------------------------------------------------

resource "aws_s3_bucket" "logs" {
  #checkov:skip=CKV_AWS_18:This is the access-log target; logging it into itself would loop and into another bucket only moves the question
  #checkov:skip=CKV_AWS_144:Cross-region replication of access logs is left to the fork, as for the model bucket
  #checkov:skip=CKV2_AWS_62:Nothing consumes event notifications of access logs
  #checkov:skip=CKV_AWS_145:S3 server access logging delivers only to a target bucket with SSE-S3 (AES256) default encryption, not SSE-KMS
  bucket        = coalesce(var.log_bucket_name, "${var.bucket_name}-logs")
  force_destroy = var.force_destroy
}

resource "aws_s3_bucket_ownership_controls" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "logs" {
  bucket                  = aws_s3_bucket.logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "logs" {
  bucket = aws_s3_bucket.logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    id     = "expire-access-logs"
    status = "Enabled"
    filter {}
    expiration {
      days = var.log_retention_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
  depends_on = [aws_s3_bucket_versioning.logs]
}

resource "aws_s3_bucket_policy" "logs" {
  bucket = aws_s3_bucket.logs.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "S3ServerAccessLogDelivery"
        Effect    = "Allow"
        Principal = { Service = "logging.s3.amazonaws.com" }
        Action    = "s3:PutObject"
        Resource  = "${aws_s3_bucket.logs.arn}/${local.log_prefix}*"
        Condition = {
          ArnLike      = { "aws:SourceArn" = local.bucket_arn }
          StringEquals = { "aws:SourceAccount" = local.account_id }
        }
      },
      {
        Sid       = "DenyInsecureTransport"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:*"
        Resource  = [aws_s3_bucket.logs.arn, "${aws_s3_bucket.logs.arn}/*"]
        Condition = { Bool = { "aws:SecureTransport" = "false" } }
      },
    ]
  })
  depends_on = [aws_s3_bucket_public_access_block.logs]
}
