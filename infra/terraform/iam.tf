# One IAM role per duty of README "Roles and approvals". Each may read what its duty
# needs and write only its own keys; the KMS key policy (kms.tf) and the bucket policy
# (s3.tf) repeat the same split, so a grant elsewhere in the account does not widen it.

locals {
  people = ["approver", "promoter", "data-steward"] # humans: MFA to assume, when required

  read_objects = ["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectRetention"]
  # Every role reads the bucket's settings (the deploy gate and `audit verify` compare
  # them) and lists object versions (release and anchor histories are checked).
  bucket_read = {
    Sid    = "ReadBucketSettingsAndList"
    Effect = "Allow"
    Action = [
      "s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketVersioning",
      "s3:GetBucketObjectLockConfiguration", "s3:GetEncryptionConfiguration",
      "s3:GetBucketPolicy",
    ]
    Resource = local.bucket_arn
  }
  read_releases = {
    Sid      = "ReadReleasesAndAnchors"
    Effect   = "Allow"
    Action   = local.read_objects
    Resource = [local.releases, local.anchors]
  }
  write_anchors = {
    Sid      = "AppendAuditAnchors"
    Effect   = "Allow"
    Action   = ["s3:PutObject", "s3:PutObjectRetention"]
    Resource = local.anchors
  }

  duty_statements = {
    trainer = concat(
      [local.bucket_read, local.read_releases,
        {
          Sid      = "ReadDatasets"
          Effect   = "Allow"
          Action   = local.read_objects
          Resource = local.datasets
        },
        {
          # models/* includes champion records and approvals: the bucket policy refuses
          # those to the trainer (ChampionByThePromoterOnly, ApprovalsByTheApproverOnly).
          Sid      = "PublishReleases"
          Effect   = "Allow"
          Action   = "s3:PutObject"
          Resource = local.releases
      }],
      var.trainer_writes_anchors ? [local.write_anchors] : [],
    )
    approver = [local.bucket_read, local.read_releases, {
      Sid      = "WriteApprovals"
      Effect   = "Allow"
      Action   = "s3:PutObject"
      Resource = local.approvals
    }]
    promoter = [local.bucket_read, local.read_releases, {
      Sid      = "WriteChampionRecord"
      Effect   = "Allow"
      Action   = "s3:PutObject"
      Resource = local.champion
    }]
    auditor = [local.bucket_read, local.read_releases, local.write_anchors]
    "data-steward" = [local.bucket_read, {
      Sid      = "PublishDatasets"
      Effect   = "Allow"
      Action   = concat(local.read_objects, ["s3:PutObject"])
      Resource = local.datasets
    }]
    reader = [local.bucket_read, local.read_releases]
  }
}

data "aws_iam_policy_document" "assume" {
  for_each = toset(local.role_names)
  statement {
    sid     = "AssumeAs${replace(title(replace(each.key, "-", " ")), " ", "")}"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]
    principals {
      type        = "AWS"
      identifiers = lookup(var.role_principals, each.key, [local.root_arn])
    }
    dynamic "condition" {
      for_each = var.require_mfa_for_people && contains(local.people, each.key) ? [1] : []
      content {
        test     = "Bool"
        variable = "aws:MultiFactorAuthPresent"
        values   = ["true"]
      }
    }
  }
}

resource "aws_iam_role" "duty" {
  for_each             = toset(local.role_names)
  name                 = "${var.name}-${each.key}"
  description          = "secure-pipeline ${each.key}: README \"Roles and approvals\""
  assume_role_policy   = data.aws_iam_policy_document.assume[each.key].json
  max_session_duration = 3600
}

resource "aws_iam_role_policy" "duty" {
  for_each = aws_iam_role.duty
  name     = "${each.key}-duty"
  role     = each.value.id
  policy   = jsonencode({ Version = "2012-10-17", Statement = local.duty_statements[each.key] })
}
