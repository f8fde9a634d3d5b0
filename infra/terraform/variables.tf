variable "name" {
  description = "Name prefix of every resource (roles are NAME-trainer, NAME-reader, ...)."
  type        = string
  default     = "secure-pipeline" # FORK: one stack per environment, e.g. secure-pipeline-prod
}

variable "region" {
  description = "AWS region of the stack (storage.region in the pipeline's config)."
  type        = string
  default     = "us-east-1" # FORK: your region
}

variable "bucket_name" {
  description = "The model bucket (storage.bucket). Globally unique."
  type        = string
  default     = "secure-models" # FORK: a globally unique name, e.g. ORG-secure-models-prod
}

variable "log_bucket_name" {
  description = "The bucket receiving the model bucket's server access logs; null: BUCKET-logs."
  type        = string
  default     = null
}

variable "prefix" {
  description = "Key prefix of releases, approvals and champion records (storage.prefix)."
  type        = string
  default     = "models"
}

variable "anchors_prefix" {
  description = "Key prefix of the audit anchors (tasks/common/anchors.py PREFIX)."
  type        = string
  default     = "audit-anchors"
}

variable "datasets_prefix" {
  description = "Key prefix where the data steward publishes datasets and their .sha256 sidecars (list s3://BUCKET/PREFIX/ in dataset.allowed_sources)."
  type        = string
  default     = "datasets" # FORK: or keep datasets in a bucket of their own
}

variable "object_lock_days" {
  description = "Default GOVERNANCE retention of every object version (storage.object_lock_days; anchors are COMPLIANCE-locked that long by the pipeline)."
  type        = number
  default     = 30 # FORK: your retention policy
  validation {
    condition     = var.object_lock_days > 0
    error_message = "object_lock_days must be positive."
  }
}

variable "log_retention_days" {
  description = "Days the access logs are kept."
  type        = number
  default     = 365 # FORK: your log retention policy
}

variable "kms_deletion_window_days" {
  description = "Waiting period before a scheduled deletion of the KMS key takes effect."
  type        = number
  default     = 30
}

variable "key_admin_arns" {
  description = "Principals that administer the KMS key (never use it); empty: the account root, i.e. IAM policies decide."
  type        = list(string)
  default     = [] # FORK: your security team's admin role
}

variable "role_principals" {
  description = "Who may assume each role, by duty (trainer, approver, promoter, auditor, data-steward, reader); a missing duty: the account root (IAM policies then decide). Give each duty its own people or workload identity."
  type        = map(list(string))
  default     = {} # FORK: e.g. { trainer = ["arn:aws:iam::ACCOUNT:role/ci-runner"] }
}

variable "require_mfa_for_people" {
  description = "Require MFA to assume the approver, promoter and data-steward roles (people, not workloads)."
  type        = bool
  default     = true
}

variable "force_destroy" {
  description = "Let `terraform destroy` empty the buckets (never in production: locked versions still refuse deletion)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = { project = "secure-pipeline" } # FORK: your cost and owner tags
}

variable "trainer_may_promote" {
  description = "Let the trainer write the champion record: only for governance.required_approvals = 0 (the trainer then also promotes). false: the promoter alone moves the champion."
  type        = bool
  default     = false # FORK: true only while required_approvals = 0
}

variable "trainer_writes_anchors" {
  description = "Let the trainer append audit anchors: on AWS a run anchors its audit head with the run's own credentials (tasks/localstack/stack.py anchor_endpoint). Anchors stay append-only and undeletable either way."
  type        = bool
  default     = true # FORK: false once runs anchor through the auditor role
}
