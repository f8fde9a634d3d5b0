"""The deployment bucket of the embedded store: created and hardened by the admin
identity when the local stack starts (in AWS, the same posture comes from infra/).

Object Lock (hence versioning), default SSE-S3, a default retention, and a policy
denying unencrypted and plain-HTTP writes; the pipeline identity may read those
settings so that `tasks.checks.bucket_posture` can check them before every release.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from tasks.checks.bucket_posture import POSTURE_READ_ACTIONS, SSE_HEADER_KEY
from tasks.common.anchors import PREFIX as ANCHOR_PREFIX

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)


def _exists(client: S3Client, bucket: str) -> bool:
    """HEAD the bucket; any error (missing, denied, unreachable) is False."""
    try:
        client.head_bucket(Bucket=bucket)
    except (ClientError, BotoCoreError):
        return False
    return True


def deploy_bucket_policy(
    bucket: str,
    *,
    secure_transport: bool = True,
    posture_readers: Sequence[str] = (),
    not_anchor_writers: Sequence[str] = (),
) -> dict[str, Any]:
    """The deployment bucket's policy document.

    Args:
        bucket: Bucket name.
        secure_transport: Add the deny of every non-TLS request. Never set it on
            an endpoint served over plain http: it locks every identity out.
        posture_readers: Principal ARNs allowed to read the bucket's settings.
        not_anchor_writers: Principal ARNs denied writing audit anchors at all (the
            pipeline identity: anchors come from the auditor identity only).
    """
    objects = f"arn:aws:s3:::{bucket}/*"
    anchors = f"arn:aws:s3:::{bucket}/{ANCHOR_PREFIX}*"
    statements: list[dict[str, Any]] = [
        {
            # Measured on SeaweedFS: this deny refuses even a delete marker. Object lock
            # alone would not: it keeps versions, but a delete marker hides them.
            "Sid": "KeepAuditAnchors",
            "Effect": "Deny",
            "Principal": "*",
            "Action": [
                "s3:DeleteObject",
                "s3:DeleteObjectVersion",
                "s3:PutObjectRetention",
                "s3:PutObjectLegalHold",
                "s3:BypassGovernanceRetention",
            ],
            "Resource": anchors,
        },
        {
            "Sid": "DenyWrongEncryption",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "Resource": objects,
            "Condition": {"StringNotEquals": {SSE_HEADER_KEY: "AES256"}},
        },
        {
            "Sid": "DenyMissingEncryption",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "Resource": objects,
            "Condition": {"Null": {SSE_HEADER_KEY: "true"}},
        },
    ]
    if secure_transport:
        statements.append(
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [f"arn:aws:s3:::{bucket}", objects],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        )
    if not_anchor_writers:
        statements.append(
            {
                "Sid": "AnchorsByTheAuditorOnly",
                "Effect": "Deny",
                "Principal": {"AWS": list(not_anchor_writers)},
                "Action": "s3:PutObject",
                "Resource": anchors,
            }
        )
    if posture_readers:
        statements.append(
            {
                "Sid": "AllowPostureRead",
                "Effect": "Allow",
                "Principal": {"AWS": list(posture_readers)},
                "Action": list(POSTURE_READ_ACTIONS),
                "Resource": f"arn:aws:s3:::{bucket}",
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def ensure_deploy_bucket(
    client: S3Client,
    *,
    bucket: str,
    object_lock_days: int,
    posture_readers: Sequence[str] = (),
    not_anchor_writers: Sequence[str] = (),
) -> None:
    """Create or repair the deployment bucket (needs an admin identity). Idempotent.

    Object Lock (hence versioning), default SSE-S3, default GOVERNANCE retention of
    ``object_lock_days``, and the deny policy from `deploy_bucket_policy`. The
    insecure-transport deny is only applied when the client talks https.
    """
    if not _exists(client, bucket):
        kwargs: dict[str, Any] = {"Bucket": bucket, "ObjectLockEnabledForBucket": True}
        region = client.meta.region_name
        if region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        client.create_bucket(**kwargs)
        log.info("created bucket %s with object lock", bucket)
    client.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    client.put_object_lock_configuration(
        Bucket=bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": object_lock_days}},
        },
    )
    secure = client.meta.endpoint_url.lower().startswith("https://")
    if not secure:
        log.warning("endpoint is not https: bucket %s gets no insecure-transport deny", bucket)
    policy = deploy_bucket_policy(
        bucket,
        secure_transport=secure,
        posture_readers=posture_readers,
        not_anchor_writers=not_anchor_writers,
    )
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
