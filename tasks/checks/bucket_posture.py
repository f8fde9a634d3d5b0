"""Deploy preflight (``deploy.bucket_posture``): is the bucket fit to hold a release?

Threat: weak storage (a bucket without versioning lets a release be overwritten,
without object lock an insider deletes it, without a deny policy a client uploads
unencrypted or over plain HTTP). `bucket_posture` measures the settings with the
pipeline's own (read-only for settings) identity; `check_bucket_posture` is the gate.
The policy the embedded store is set up with is `tasks.localstack.bucket`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from contextlib import suppress
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from tasks.common.errors import StoreUnreachable
from tasks.common.gates import GateResult, check
from tasks.common.s3 import SSE_ALGORITHMS

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SSE_HEADER_KEY = "s3:x-amz-server-side-encryption"


# Read-only bucket settings a non-admin identity needs for the posture gate.
POSTURE_READ_ACTIONS = (
    "s3:GetEncryptionConfiguration",
    "s3:GetBucketObjectLockConfiguration",
    "s3:GetBucketVersioning",
    "s3:GetBucketPolicy",
)


def bucket_posture(client: S3Client, *, bucket: str) -> dict[str, Any]:
    """Measure the bucket settings the deploy preflight gate checks.

    A setting the store refuses to show (missing, access denied) reports the unsafe
    value. A store that does not answer is not measured at all: that is a failure of
    the run, never a made-up posture.

    Raises:
        StoreUnreachable: the endpoint did not answer (connection, timeout, TLS).
    """

    def read(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except ClientError:
            return None
        except BotoCoreError as exc:
            raise StoreUnreachable(
                f"the object store at {client.meta.endpoint_url} did not answer "
                f"({type(exc).__name__}), so the bucket's posture was not measured: check "
                "that it runs (`secure-pipeline local status`) or storage.endpoint_url"
            ) from None

    posture: dict[str, Any] = {
        "exists": read(lambda: client.head_bucket(Bucket=bucket)) is not None,
        "versioning": None,
        "object_lock": False,
        "object_lock_retention": None,
        "default_sse": None,
        "denies_unencrypted_put": False,
        "denies_insecure_transport": False,
    }
    if not posture["exists"]:
        return posture
    versioning = read(lambda: client.get_bucket_versioning(Bucket=bucket)) or {}
    posture["versioning"] = versioning.get("Status")
    lock = (read(lambda: client.get_object_lock_configuration(Bucket=bucket)) or {}).get(
        "ObjectLockConfiguration", {}
    )
    posture["object_lock"] = lock.get("ObjectLockEnabled") == "Enabled"
    posture["object_lock_retention"] = lock.get("Rule", {}).get("DefaultRetention")
    encryption = read(lambda: client.get_bucket_encryption(Bucket=bucket)) or {}
    with suppress(KeyError, IndexError, TypeError):
        rules = encryption["ServerSideEncryptionConfiguration"]["Rules"]
        posture["default_sse"] = rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"]
    try:
        policy = json.loads((read(lambda: client.get_bucket_policy(Bucket=bucket)) or {})["Policy"])
    except (KeyError, ValueError, TypeError):
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


def check_bucket_posture(posture: dict[str, Any], *, sse: str) -> GateResult:
    """The bucket must be versioned, object-locked, encrypted by default and
    refuse unencrypted or plain-http writes before we put a model in it."""
    wanted = {
        "exists": True,
        "versioning": "Enabled",
        "object_lock": True,
        "default_sse": sse,
        "denies_unencrypted_put": True,
        "denies_insecure_transport": True,
    }
    wrong = [k for k, v in wanted.items() if posture.get(k) != v]
    return check(
        "deploy.bucket_posture",
        ok=not wrong,
        metrics={k: posture.get(k) for k in wanted},
        threshold=wanted,
        detail=f"fix the bucket settings: {', '.join(wrong)} "
        "(the posture the embedded store gets: tasks/localstack/bucket.py)"
        if wrong
        else "",
    )
