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
from tasks.trust.versions import APPROVALS, CHAMPION_RECORD

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


def role_arn(role: str) -> str:
    """The principal ARN of an embedded-store identity (SeaweedFS's default account)."""
    return f"arn:aws:iam::000000000000:user/{role}"


# Which identity may write where (the embedded store's roles; `role_statements`).
ROLES = ("admin", "pipeline", "auditor", "approver", "promoter", "reader")
KEEP = [  # what nobody may do to a release, a champion record, an approval or an anchor
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:PutObjectLegalHold",
    "s3:BypassGovernanceRetention",
]


def role_statements(bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Deny rules that give each role of the embedded store only its duty.

    Measured on SeaweedFS 4.48 (tests/integration/test_roles_store.py): per-principal
    Deny, ``NotResource`` and wildcards inside a key pattern are enforced; a Deny of
    ``s3:BypassGovernanceRetention`` is not (the admin can still delete a governance-
    locked version), which is why anchors are written compliance-locked; the
    ``s3:if-none-match`` condition key is not supported, so a new version over a
    release object cannot be refused here: `tasks.trust.versions` detects it.
    """
    root = f"arn:aws:s3:::{bucket}/"
    base = root + (prefix.strip("/") + "/" if prefix.strip("/") else "")
    anchors, releases = f"{root}{ANCHOR_PREFIX}*", f"{base}*"
    champion, approvals = f"{base}*/{CHAMPION_RECORD}", f"{base}*/{APPROVALS}/*"

    def others(*allowed: str) -> dict[str, list[str]]:
        return {"AWS": [role_arn(r) for r in ROLES if r not in allowed]}

    def deny(sid: str, who: Any, action: Any, **where: Any) -> dict[str, Any]:
        return {"Sid": sid, "Effect": "Deny", "Principal": who, "Action": action, **where}

    return [
        # Measured: this deny refuses even a delete marker (object lock alone would not).
        deny("KeepAuditAnchors", "*", KEEP, Resource=anchors),
        deny("KeepReleases", "*", KEEP, Resource=releases),
        deny(
            "RetentionOfAnchorsByTheAuditorOnly",
            others("auditor"),
            "s3:PutObjectRetention",
            Resource=anchors,
        ),
        deny("NoRetentionChangesOnReleases", "*", "s3:PutObjectRetention", Resource=releases),
        deny("AnchorsByTheAuditorOnly", others("auditor"), "s3:PutObject", Resource=anchors),
        deny("ChampionByThePromoterOnly", others("promoter"), "s3:PutObject", Resource=champion),
        deny("ApprovalsByTheApproverOnly", others("approver"), "s3:PutObject", Resource=approvals),
        deny(
            "AuditorWritesAnchorsOnly",
            {"AWS": [role_arn("auditor")]},
            "s3:PutObject",
            NotResource=anchors,
        ),
        deny(
            "ApproverWritesApprovalsOnly",
            {"AWS": [role_arn("approver")]},
            "s3:PutObject",
            NotResource=approvals,
        ),
        deny(
            "PromoterWritesTheChampionOnly",
            {"AWS": [role_arn("promoter")]},
            "s3:PutObject",
            NotResource=champion,
        ),
        deny("ReaderOnlyReads", {"AWS": [role_arn("reader")]}, "s3:PutObject", Resource=f"{root}*"),
    ]


def deploy_bucket_policy(
    bucket: str,
    *,
    secure_transport: bool = True,
    posture_readers: Sequence[str] = (),
    not_anchor_writers: Sequence[str] = (),
    prefix: str | None = None,
) -> dict[str, Any]:
    """The deployment bucket's policy document.

    Args:
        bucket: Bucket name.
        secure_transport: Add the deny of every non-TLS request. Never set it on
            an endpoint served over plain http: it locks every identity out.
        posture_readers: Principal ARNs allowed to read the bucket's settings.
        not_anchor_writers: Principal ARNs denied writing audit anchors at all (external
            S3 without roles; the embedded store's roles get `role_statements`).
        prefix: The releases' prefix: give each embedded-store role only its duty
            (`role_statements`). None: external S3, one set of credentials.
    """
    objects = f"arn:aws:s3:::{bucket}/*"
    anchors = f"arn:aws:s3:::{bucket}/{ANCHOR_PREFIX}*"
    statements: list[dict[str, Any]] = []
    if prefix is not None:
        statements += role_statements(bucket, prefix)
    else:
        statements.append(
            {
                # Measured on SeaweedFS: this deny refuses even a delete marker.
                "Sid": "KeepAuditAnchors",
                "Effect": "Deny",
                "Principal": "*",
                "Action": [*KEEP, "s3:PutObjectRetention"],
                "Resource": anchors,
            }
        )
    statements += [
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
                "Sid": "AnchorsNotByThesePrincipals",
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
    prefix: str | None = None,
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
        prefix=prefix,
    )
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))


def _normal(statement: dict[str, Any]) -> str:
    """A statement with every string-or-list field as a sorted list (stores reformat)."""

    def norm(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: norm(v) for k, v in sorted(value.items())}
        if isinstance(value, list | str):
            return sorted(value) if isinstance(value, list) else [value]
        return value

    return json.dumps(norm(statement), sort_keys=True)


def policy_drift(client: S3Client, *, bucket: str, expected: dict[str, Any]) -> list[str]:
    """Statements of `expected` that the bucket's live policy lacks or has changed (by
    Sid), and statements it has that `expected` does not: a weakened policy.

    An admin can drop a rule and restore it afterwards; this sees only the present
    state (what the admin can still do is in the README's security model).
    """
    try:
        live = json.loads(client.get_bucket_policy(Bucket=bucket)["Policy"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchBucketPolicy":
            return ["the bucket has no policy at all"]
        return [f"the bucket policy cannot be read ({exc.response.get('Error', {}).get('Code')})"]
    except (BotoCoreError, ValueError, KeyError) as exc:
        return [f"the bucket policy cannot be read ({type(exc).__name__})"]
    have = {st.get("Sid"): _normal(st) for st in live.get("Statement", [])}
    want = {st["Sid"]: _normal(st) for st in expected["Statement"]}
    problems = [f"{sid} is missing" for sid in want if sid not in have]
    problems += [f"{sid} was changed" for sid in want if sid in have and have[sid] != want[sid]]
    problems += [f"{sid} was added" for sid in have if sid not in want]
    return problems
