"""The S3 client: one factory for the embedded SeaweedFS and for AWS S3, and the two
object operations every stage uses.

SigV4, path-style addressing, TLS verified against the endpoint's CA. Writes are
conditional (``If-None-Match: *``) and carry a SHA-256 checksum, so a release can
never overwrite another one and a corrupted upload is refused by the server; reads
are capped. The bucket's own posture is checked in `tasks.checks.bucket_posture`.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from tasks.common.errors import PipelineError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SSE_ALGORITHMS = ("AES256", "aws:kms")


@dataclass(frozen=True)
class S3Endpoint:
    """Where and how to reach S3."""

    url: str  # e.g. https://127.0.0.1:PORT
    region: str
    ca_bundle: Path | None  # CA to verify TLS; None = system trust (real AWS)
    access_key: str | None  # None = boto3's default credential chain (real AWS)
    secret_key: str | None = field(repr=False)  # never in logs, tracebacks, pickled errors


class ObjectExists(Exception):
    """The key already exists; immutable writes never overwrite."""


class ObjectTooLarge(PipelineError, ValueError):
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


def put_immutable(
    client: S3Client,
    *,
    bucket: str,
    key: str,
    body: bytes,
    sse: str = "AES256",
    kms_key_id: str | None = None,
    metadata: dict[str, str] | None = None,
    compliance_days: int | None = None,
) -> str:
    """Write an object that must not exist yet, encrypted and checksummed; with
    `compliance_days`, locked in COMPLIANCE mode for that long (no identity, the
    admin included, can delete that version or shorten its lock before then).

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
        # With the algorithm named (x-amz-sdk-checksum-algorithm), as S3 requires of every
        # upload to a bucket with an object lock retention (default or per object).
        "ChecksumAlgorithm": "SHA256",
        "ChecksumSHA256": base64.b64encode(hashlib.sha256(body).digest()).decode(),
        "IfNoneMatch": "*",
        "Metadata": metadata or {},
    }
    if kms_key_id:
        kwargs["SSEKMSKeyId"] = kms_key_id
    if compliance_days is not None:
        kwargs["ObjectLockMode"] = "COMPLIANCE"
        kwargs["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(days=compliance_days)
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
