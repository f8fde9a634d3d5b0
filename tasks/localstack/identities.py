"""How clients reach the embedded SeaweedFS, who they may be, and the server's secrets.

Two S3 identities are generated on first use and kept in
``<state>/s3/credentials.json`` (0600): ``admin`` sets the bucket up;
``pipeline``, which every command gets, cannot weaken it; ``auditor`` writes the
audit anchors, which the bucket policy lets nobody delete, hide or overwrite (and the
pipeline identity not even write). The same file holds
the JWT signing keys that close filer and volume HTTP and the key that encrypts
stored objects, so losing it loses the data. The state dir's TLS certificate is
also the gRPC mutual-TLS identity of every component. Secrets reach ``weed``
through its environment, never its argv.
"""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tasks.common.files import write_atomic
from tasks.common.s3 import S3Endpoint
from tasks.common.settings import Settings
from tasks.localstack.processes import StackError
from tasks.localstack.tls import ensure_tls, tls_files

log = logging.getLogger(__name__)

PIPELINE_ARN = "arn:aws:iam::000000000000:user/pipeline"  # SeaweedFS's default account
# The S3 identity of each role: "pipeline" is the trainer's. The governance roles
# (approver, promoter) and the read-only reader have their own, so that no role's
# credentials are another's.
IDENTITIES = ("admin", "pipeline", "auditor", "approver", "promoter", "reader")
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
# Writes the audit anchors (and reads them back); the bucket policy denies every
# identity deleting, hiding or re-versioning them, and the pipeline identity writing them.
AUDITOR_ACTIONS = ["Read", "Write", "List"]
APPROVER_ACTIONS = ["Read", "Write", "List"]  # writes approvals only (bucket policy)
PROMOTER_ACTIONS = ["Read", "Write", "List"]  # writes the champion record only
READER_ACTIONS = ["Read", "List", "GetObjectRetention", "GetObjectLegalHold"]
SERVICE_SECRETS = (
    "jwt_volume_write",
    "jwt_volume_read",
    "jwt_filer_write",
    "jwt_filer_read",
    "sse_key",
)


def endpoint_at(settings: Settings, url: str, *, identity: str = "pipeline") -> S3Endpoint:
    """The embedded server at ``url``, as ``identity`` (one of `IDENTITIES`)."""
    keys = credentials(settings)[identity]
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


def credentials(settings: Settings) -> dict[str, Any]:
    """Load or create ``<state>/s3/credentials.json`` (0600).

    Returns:
        ``{IDENTITY: {"access_key", "secret_key"}, "service": {SERVICE_SECRETS}}``.

    Raises:
        StackError: the file exists but is damaged; it is never silently replaced (an
            identity added by a newer version is added, nothing else changes).
    """
    path = settings.state_dir / "s3" / "credentials.json"
    if path.is_file():
        if path.stat().st_mode & 0o077:
            log.warning("%s was readable by others; restricting it to 0600", path)
            path.chmod(0o600)
        try:
            creds: dict[str, Any] = json.loads(path.read_text())
            added = [n for n in IDENTITIES if n not in creds]  # made by an older version
            for name in added:
                creds[name] = _new_identity()
            if added:
                write_atomic(path, json.dumps(creds, indent=2).encode())
            ok = all(
                isinstance(creds[n][k], str)
                for n, k in (
                    *((n, k) for n in IDENTITIES for k in ("access_key", "secret_key")),
                    *(("service", k) for k in SERVICE_SECRETS),
                )
            )
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise StackError(
                f"{path} is damaged. Restore it from a backup: it holds the key "
                "of the stored objects' encryption"
            )
        return creds
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    creds = {name: _new_identity() for name in IDENTITIES}
    creds["service"] = {k: secrets.token_hex(32) for k in SERVICE_SECRETS}
    write_atomic(path, json.dumps(creds, indent=2).encode())
    log.info("generated S3 credentials in %s", path)
    return creds


def _new_identity() -> dict[str, str]:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    return {
        "access_key": "SP" + "".join(secrets.choice(alphabet) for _ in range(18)),
        "secret_key": secrets.token_urlsafe(30),
    }


def write_identities(settings: Settings) -> Path:
    """Write the S3 identities file ``weed`` reads (``-s3.config``), 0600.

    Returns:
        Its path, ``<state>/s3/identities.json``.
    """
    creds = credentials(settings)
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
    service = credentials(settings)["service"]
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
