"""The champion as a signed record in the bucket: ``<prefix>/<NAME>/champion.dsse.json``.

A DSSE statement (payload type `CHAMPION_TYPE`) signed by a promoter's key (with
``required_approvals = 0`` the trainer's key acts as promoter), written by the
store's promoter identity. The bucket is versioned and object-locked, so every
champion there ever was stays readable; each record names the one before it.

The record binds: the model name and version, the release record's URI, object
version and sha256, the approvals it rests on (each by S3 key, version and sha256),
the promoter's key id, the time and what moved it (deploy, promote, rollback).
The MLflow alias ``champion`` is only a view of it: `read` fails when the alias
names another version (an alias moved by hand).

Writes are conditional: a record replaces the one its promoter read (If-Match on
its ETag), or is the first (If-None-Match), so of two concurrent promotions one
wins and the other is told to retry (`ChampionMoved`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from tasks.common.errors import PipelineError
from tasks.common.files import sha256_bytes
from tasks.common.s3 import get_bytes
from tasks.common.settings import Settings
from tasks.governance import roles
from tasks.governance.approvals import Approval, Release, model_root
from tasks.trust.signing import SignatureError, Signer, canonical_json, verify

CHAMPION_TYPE = "application/vnd.secure-pipeline.champion+json"
SCHEMA = "secure-pipeline/champion/v1"
RECORD = "champion.dsse.json"


class ChampionMoved(PipelineError, RuntimeError):
    """Another promotion wrote the champion record after this one read it."""


class RecordError(PipelineError, ValueError):
    """The champion record is unreadable, not signed by a promoter, or disagrees
    with the registry's alias."""


@dataclass
class Current:
    """The champion record as stored now (None fields: no record yet)."""

    payload: dict[str, Any] | None = None
    etag: str | None = None
    version_id: str | None = None
    sha256: str | None = None
    signer: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def version(self) -> str | None:
        return str(self.payload["model"]["version"]) if self.payload else None

    @property
    def release_uri(self) -> str | None:
        return str(self.payload["release"]["uri"]) if self.payload else None


def record_key(settings: Settings, name: str) -> str:
    return f"{model_root(settings, name)}/{RECORD}"


def read(client: Any, settings: Settings, name: str) -> Current:
    """The current record, its signature checked against the promoters' keys.

    Raises:
        RecordError: the record exists but cannot be read or was not signed by a
            promoter (an identity that may write it is not the one that may sign it).
    """
    bucket, key = settings.storage.bucket, record_key(settings, name)
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return Current()
        raise RecordError(f"s3://{bucket}/{key} cannot be read ({exc})") from None
    vid = str(head.get("VersionId") or "null")
    raw = get_bytes(client, bucket=bucket, key=key, version_id=vid, max_bytes=1 << 20)
    try:
        envelope = json.loads(raw)
        payload = verify(envelope, public_key=roles.promoters(settings), payload_type=CHAMPION_TYPE)
    except (SignatureError, ValueError) as exc:
        raise RecordError(
            f"the champion record s3://{bucket}/{key} is not signed by a listed promoter "
            f"({exc}); find who wrote it (its version {vid})"
        ) from None
    if payload.get("schema") != SCHEMA or payload.get("model", {}).get("name") != name:
        raise RecordError(f"the champion record s3://{bucket}/{key} is not {name}'s")
    return Current(
        payload=payload,
        etag=str(head.get("ETag")),
        version_id=vid,
        sha256=sha256_bytes(raw),
        signer=str(envelope["signatures"][0]["keyid"]),
    )


def statement(
    release: Release,
    *,
    approvals: list[Approval],
    promoter: str,
    action: str,
    previous: Current,
    required: int,
) -> dict[str, Any]:
    """The record's payload."""
    return {
        "schema": SCHEMA,
        "model": {"name": release.name, "version": release.version},
        "release": {
            "uri": release.uri,
            "version_id": release.version_id,
            "sha256": release.sha256,
        },
        "waivers": [w["gate"] for w in release.waivers],
        "approvals": [a.ref() for a in sorted(approvals, key=lambda a: a.key_id)],
        "required_approvals": required,
        "promoter": promoter,
        "action": action,
        "promoted_at": datetime.now(UTC).isoformat(),
        "previous": None
        if previous.payload is None
        else {
            "version": previous.version,
            "record_version_id": previous.version_id,
            "record_sha256": previous.sha256,
        },
    }


def write(
    client: Any,
    settings: Settings,
    payload: dict[str, Any],
    signer: Signer,
    *,
    replaces: Current,
) -> str:
    """Store the signed record, only over the record `replaces` (or as the first).

    Returns:
        The record's new object version.

    Raises:
        ChampionMoved: the stored record is no longer the one read (another promotion).
    """
    body = canonical_json(signer.sign(payload, payload_type=CHAMPION_TYPE))
    kwargs: dict[str, Any] = {
        "Bucket": settings.storage.bucket,
        "Key": record_key(settings, payload["model"]["name"]),
        "Body": body,
        "ServerSideEncryption": settings.sse,
        "ContentType": "application/json",
    }
    if settings.storage.kms_key_id:
        kwargs["SSEKMSKeyId"] = settings.storage.kms_key_id
    if replaces.etag:
        kwargs["IfMatch"] = replaces.etag
    else:
        kwargs["IfNoneMatch"] = "*"
    try:
        resp = client.put_object(**kwargs)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
            raise ChampionMoved(
                "another promotion wrote the champion record after this one read it; "
                "nothing was changed by this one: check `verify models:/NAME@champion`, "
                "then retry if still wanted"
            ) from None
        raise
    return str(resp.get("VersionId") or "null")
