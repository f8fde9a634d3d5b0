"""S3 client factory and the deployment-bucket helpers.

The same code talks to the embedded SeaweedFS and to AWS S3: SigV4, path-style
addressing, TLS verified against the endpoint's CA. Writes are conditional
(``If-None-Match: *``) and carry a SHA-256 checksum, so a release can never
overwrite another one and a corrupted upload is refused by the server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from contextlib import suppress
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from tasks.common.stack import S3Endpoint

log = logging.getLogger(__name__)

SSE_HEADER_KEY = "s3:x-amz-server-side-encryption"
SSE_ALGORITHMS = ("AES256", "aws:kms")
# Read-only bucket settings a non-admin identity needs for the posture gate.
POSTURE_READ_ACTIONS = (
    "s3:GetEncryptionConfiguration",
    "s3:GetBucketObjectLockConfiguration",
    "s3:GetBucketVersioning",
    "s3:GetBucketPolicy",
)


class ObjectExists(Exception):
    """The key already exists; immutable writes never overwrite."""


class ObjectTooLarge(ValueError):
    """The object is larger than the caller accepts."""


def s3_client(endpoint: S3Endpoint) -> S3Client:
    """Build a boto3 S3 client for an endpoint.

    Args:
        endpoint: Where to connect; ``None`` keys mean boto3's default chain.

    Returns:
        A client using SigV4, path-style addressing and ``verify=ca_bundle``.
    """
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint.url,
        region_name=endpoint.region,
        aws_access_key_id=endpoint.access_key,
        aws_secret_access_key=endpoint.secret_key,
        verify=str(endpoint.ca_bundle) if endpoint.ca_bundle else True,
        config=config,
    )


def deploy_bucket_policy(
    bucket: str, *, secure_transport: bool = True, posture_readers: Sequence[str] = ()
) -> dict[str, Any]:
    """The deployment bucket's policy document.

    Args:
        bucket: Bucket name.
        secure_transport: Add the deny of every non-TLS request. Never set it on
            an endpoint served over plain http: it locks every identity out.
        posture_readers: Principal ARNs allowed to read the bucket's settings.
    """
    objects = f"arn:aws:s3:::{bucket}/*"
    statements: list[dict[str, Any]] = [
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
    client: S3Client, *, bucket: str, object_lock_days: int, posture_readers: Sequence[str] = ()
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
    policy = deploy_bucket_policy(bucket, secure_transport=secure, posture_readers=posture_readers)
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))


def bucket_posture(client: S3Client, *, bucket: str) -> dict[str, Any]:
    """Measure the bucket settings the deploy preflight gate checks.

    Every read that fails (missing config, access denied, network) reports the
    unsafe value; this function never raises.
    """
    posture: dict[str, Any] = {
        "exists": _exists(client, bucket),
        "versioning": None,
        "object_lock": False,
        "object_lock_retention": None,
        "default_sse": None,
        "denies_unencrypted_put": False,
        "denies_insecure_transport": False,
    }
    if not posture["exists"]:
        return posture
    with suppress(ClientError, BotoCoreError):
        posture["versioning"] = client.get_bucket_versioning(Bucket=bucket).get("Status")
    try:
        lock = client.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
        posture["object_lock"] = lock.get("ObjectLockEnabled") == "Enabled"
        posture["object_lock_retention"] = lock.get("Rule", {}).get("DefaultRetention")
    except (ClientError, BotoCoreError, KeyError):
        pass
    try:
        rules = client.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"][
            "Rules"
        ]
        posture["default_sse"] = rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"]
    except (ClientError, BotoCoreError, KeyError, IndexError):
        pass
    try:
        policy = json.loads(client.get_bucket_policy(Bucket=bucket)["Policy"])
    except (ClientError, BotoCoreError, KeyError, ValueError):
        return posture
    posture["denies_unencrypted_put"] = policy_denies_unencrypted_put(policy, bucket)
    posture["denies_insecure_transport"] = policy_denies_insecure_transport(policy, bucket)
    return posture


def policy_denies_unencrypted_put(policy: Any, bucket: str) -> bool:
    """True if an unconditional-principal Deny refuses PutObject without SSE."""
    for cond in _deny_conditions(policy, "s3:PutObject", f"arn:aws:s3:::{bucket}/key"):
        if len(cond) != 1:
            continue  # an extra condition narrows the deny
        op, values = next(iter(cond.items()))
        values = {k.lower(): v for k, v in values.items()} if isinstance(values, dict) else {}
        if set(values) != {SSE_HEADER_KEY}:
            continue
        wanted = _as_list(values[SSE_HEADER_KEY])
        if op == "Null" and wanted == ["true"]:
            return True
        # Without IfExists a missing header also matches: the deny covers both cases.
        if op == "StringNotEquals" and wanted and set(wanted) <= set(SSE_ALGORITHMS):
            return True
    return False


def policy_denies_insecure_transport(policy: Any, bucket: str) -> bool:
    """True if an unconditional-principal Deny refuses every non-TLS request."""
    for resource in (f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/key"):
        found = False
        for cond in _deny_conditions(policy, "s3:GetObject", resource, require_all=True):
            values = cond.get("Bool") if len(cond) == 1 else None
            values = {k.lower(): v for k, v in values.items()} if isinstance(values, dict) else {}
            if set(values) == {"aws:securetransport"}:
                found = found or _as_list(values["aws:securetransport"]) == ["false"]
        if not found:
            return False
    return True


def _deny_conditions(
    policy: Any, action: str, resource: str, *, require_all: bool = False
) -> Iterable[dict[str, Any]]:
    """Conditions of Deny statements for every principal covering action and resource."""
    statements = policy.get("Statement", []) if isinstance(policy, dict) else []
    for st in statements if isinstance(statements, list) else [statements]:
        if not isinstance(st, dict) or st.get("Effect") != "Deny" or "NotAction" in st:
            continue
        if st.get("Principal") not in ("*", {"AWS": "*"}) or "NotResource" in st:
            continue
        actions = [a.lower() for a in _as_list(st.get("Action"))]
        wanted = ["s3:*", "*"] if require_all else [action.lower()]
        if not any(fnmatchcase(w, a) for a in actions for w in wanted):
            continue
        if any(fnmatchcase(resource, r) for r in _as_list(st.get("Resource"))):
            cond = st.get("Condition")
            yield cond if isinstance(cond, dict) else {}


def _as_list(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return [str(v).lower() if isinstance(v, bool) else str(v) for v in items if v is not None]


def _exists(client: S3Client, bucket: str) -> bool:
    try:
        client.head_bucket(Bucket=bucket)
    except (ClientError, BotoCoreError):
        return False
    return True


def put_immutable(
    client: S3Client,
    *,
    bucket: str,
    key: str,
    body: bytes,
    sse: str = "AES256",
    kms_key_id: str | None = None,
    metadata: dict[str, str] | None = None,
) -> str:
    """Write an object that must not exist yet, encrypted and checksummed.

    Raises:
        ObjectExists: the key already exists (the stored object is untouched).
        ValueError: unknown ``sse``, or a KMS key without ``aws:kms``.

    Returns:
        The new object's VersionId (``"null"`` on an unversioned bucket).
    """
    if sse not in SSE_ALGORITHMS or (kms_key_id and sse != "aws:kms"):
        raise ValueError(f"unsupported server-side encryption {sse!r} (key only with aws:kms)")
    kwargs: dict[str, Any] = {
        "Bucket": bucket,
        "Key": key,
        "Body": body,
        "ServerSideEncryption": sse,
        "ChecksumSHA256": base64.b64encode(hashlib.sha256(body).digest()).decode(),
        "IfNoneMatch": "*",
        "Metadata": metadata or {},
    }
    if kms_key_id:
        kwargs["SSEKMSKeyId"] = kms_key_id
    try:
        resp = client.put_object(**kwargs)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "PreconditionFailed":
            raise ObjectExists(key) from None
        raise
    return resp.get("VersionId") or "null"


def get_bytes(
    client: S3Client,
    *,
    bucket: str,
    key: str,
    version_id: str | None = None,
    max_bytes: int = 2**30,
) -> bytes:
    """Read a whole object, refusing one larger than ``max_bytes``.

    Raises:
        ObjectTooLarge: the object is larger than ``max_bytes``.
    """
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, "ChecksumMode": "ENABLED"}
    if version_id:
        kwargs["VersionId"] = version_id
    resp = client.get_object(**kwargs)
    body = resp["Body"]
    try:
        if resp.get("ContentLength", 0) > max_bytes:
            raise ObjectTooLarge(
                f"s3://{bucket}/{key} is {resp['ContentLength']} bytes, "
                f"more than the {max_bytes} allowed"
            )
        data = body.read(max_bytes + 1)  # never trust the header alone
    finally:
        body.close()
    if len(data) > max_bytes:
        raise ObjectTooLarge(f"s3://{bucket}/{key} is larger than the {max_bytes} bytes allowed")
    return data
