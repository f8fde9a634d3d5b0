"""How clients reach the embedded SeaweedFS and who they may be.

One S3 identity per role, each generated on first use in its own 0600 file
(`tasks.localstack.credentials`): ``admin`` only sets the bucket up; ``pipeline`` (the
trainer) cannot weaken it, nor delete, hide or re-lock a release; ``auditor`` writes
the audit anchors; ``approver`` writes approvals, ``promoter`` the champion record,
``reader`` only reads (the bucket policy of `tasks.localstack.bucket` narrows each).
The server's own secrets (JWT keys closing filer and volume HTTP, the key that
encrypts stored objects) are in their own file. The state dir's TLS certificate is
also the gRPC mutual-TLS identity of every component. Secrets reach ``weed``
through its environment, never its argv.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tasks.common.files import write_atomic
from tasks.common.s3 import S3Endpoint
from tasks.common.settings import Settings
from tasks.localstack import credentials
from tasks.localstack.tls import ensure_tls, tls_files

log = logging.getLogger(__name__)

PIPELINE_ARN = "arn:aws:iam::000000000000:user/pipeline"  # SeaweedFS's default account
# The S3 identity of each role: "pipeline" is the trainer's. The governance roles
# (approver, promoter) and the read-only reader have their own, so that no role's
# credentials are another's.
IDENTITIES = credentials.ROLES
ADMIN_ACTIONS = ["Admin", "Read", "Write", "List", "Tagging"]
# No Admin: cannot create/delete buckets, change policy, encryption, lock or retention.
PIPELINE_ACTIONS = [
    "Read",
    "Write",
    "List",
    "GetObjectRetention",
    "GetObjectLegalHold",
    "GetBucketObjectLockConfiguration",
]
# Writes the audit anchors, COMPLIANCE-locked (hence PutObjectRetention, which the bucket
# policy denies on anchors to every other identity), and reads them back; the policy
# denies every identity deleting or hiding them, and every other one writing them.
AUDITOR_ACTIONS = ["Read", "Write", "List", "PutObjectRetention", "GetObjectRetention"]
APPROVER_ACTIONS = ["Read", "Write", "List"]  # writes approvals only (bucket policy)
PROMOTER_ACTIONS = ["Read", "Write", "List"]  # writes the champion record only
READER_ACTIONS = ["Read", "List", "GetObjectRetention", "GetObjectLegalHold"]


def endpoint_at(settings: Settings, url: str, *, identity: str = "pipeline") -> S3Endpoint:
    """The embedded server at ``url``, as ``identity`` (one of `IDENTITIES`)."""
    keys = credentials.role_keys(settings, identity)
    return S3Endpoint(
        url=url,
        region=settings.storage.region,
        ca_bundle=tls_files(settings.state_dir).ca,
        access_key=keys["access_key"],
        secret_key=keys["secret_key"],
    )


def healthy(endpoint: S3Endpoint) -> bool:
    """An authenticated S3 call over verified TLS succeeds."""
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        connect_timeout=1,
        read_timeout=3,
        retries={"max_attempts": 1},
    )
    client = boto3.client(
        "s3",
        endpoint_url=endpoint.url,
        region_name=endpoint.region,
        aws_access_key_id=endpoint.access_key,
        aws_secret_access_key=endpoint.secret_key,
        verify=str(endpoint.ca_bundle),
        config=config,
    )
    try:
        client.list_buckets()
    except (BotoCoreError, ClientError, OSError):
        return False
    return True


def write_identities(settings: Settings) -> Path:
    """Write the S3 identities file ``weed`` reads (``-s3.config``), 0600.

    Returns:
        Its path, ``<state>/s3/identities.json``.
    """
    creds = credentials.all_role_keys(settings)
    path = settings.state_dir / "s3" / "identities.json"
    write_atomic(
        path,
        json.dumps(
            {
                "identities": [
                    _identity("admin", creds["admin"], ADMIN_ACTIONS),
                    _identity("pipeline", creds["pipeline"], PIPELINE_ACTIONS),
                    _identity("auditor", creds["auditor"], AUDITOR_ACTIONS),
                    _identity("approver", creds["approver"], APPROVER_ACTIONS),
                    _identity("promoter", creds["promoter"], PROMOTER_ACTIONS),
                    _identity("reader", creds["reader"], READER_ACTIONS),
                ]
            }
        ).encode(),
    )
    return path


def _identity(name: str, keys: dict[str, str], actions: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "actions": actions,
        "credentials": [{"accessKey": keys["access_key"], "secretKey": keys["secret_key"]}],
    }


def weed_secrets(settings: Settings) -> dict[str, str]:
    """The ``WEED_*`` environment of a SeaweedFS server.

    JWT keys close filer and volume HTTP; the state dir's cert is the gRPC mTLS identity.
    """
    service = credentials.service_secrets(settings)
    tls = ensure_tls(settings.state_dir)
    env = {
        "WEED_JWT_SIGNING_KEY": service["jwt_volume_write"],
        "WEED_JWT_SIGNING_READ_KEY": service["jwt_volume_read"],
        "WEED_JWT_FILER_SIGNING_KEY": service["jwt_filer_write"],
        "WEED_JWT_FILER_SIGNING_READ_KEY": service["jwt_filer_read"],
        "WEED_S3_SSE_KEY": service["sse_key"],  # else the KEK is generated and kept in the filer
        "WEED_ACCESS_UI": "false",
        "WEED_FILER_EXPOSE_DIRECTORY_METADATA_ENABLED": "false",
        "WEED_GRPC_CA": str(tls.ca),
    }
    for comp in ("MASTER", "VOLUME", "FILER", "S3", "ADMIN", "WORKER", "CLIENT"):
        env[f"WEED_GRPC_{comp}_CERT"], env[f"WEED_GRPC_{comp}_KEY"] = str(tls.cert), str(tls.key)
    return env
