"""Anchor the audit chain in the object-locked bucket.

A hash chain shows an edited line, but an insider who can write the log file
could rewrite the whole chain from the edit onwards. So at the end of every
run the chain's head (sequence number and hash) is written to the deployment
bucket, where object lock keeps it for the retention period and the pipeline's
identity cannot delete it. `check_anchors` then requires every anchored head
to still be in the local chain: a rewritten or truncated log no longer matches.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from tasks.common.audit import AuditLog
from tasks.common.s3 import ObjectExists, get_bytes, put_immutable
from tasks.common.settings import Settings

PREFIX = "audit-anchors/"


def bucket_has_history(settings: Settings, client: Any) -> bool:
    """Whether the bucket holds anchors or releases (any version, delete markers too)."""
    for prefix in (PREFIX, settings.storage.prefix.strip("/") + "/"):
        page = client.list_object_versions(Bucket=settings.storage.bucket, Prefix=prefix, MaxKeys=1)
        if page.get("Versions") or page.get("DeleteMarkers"):
            return True
    return False


def anchor_head(settings: Settings, client: Any, *, run_id: str) -> str:
    """Write the current head of the chain to the bucket; return the object key."""
    status = AuditLog(settings.audit_path).verify()
    seq = status.entries - 1
    key = f"{PREFIX}{seq:010d}-{status.head}.json"
    body = json.dumps(
        {"seq": seq, "hash": status.head, "run_id": run_id, "intact": status.intact}, sort_keys=True
    ).encode()
    sse = settings.sse
    with contextlib.suppress(ObjectExists):  # the same head twice: nothing new to say
        put_immutable(
            client,
            bucket=settings.storage.bucket,
            key=key,
            body=body,
            sse=sse,
            kms_key_id=settings.storage.kms_key_id,
        )
    return key


def check_anchors(settings: Settings, client: Any) -> tuple[bool, str]:
    """Every anchored head must match the local chain at its sequence number."""
    heads: dict[int, str] = {}
    with AuditLog(settings.audit_path).path.open(encoding="utf-8") as fh:
        for line in fh:
            entry = json.loads(line)
            heads[int(entry["seq"])] = str(entry["hash"])
    paginator = client.get_paginator("list_objects_v2")
    anchors = 0
    for page in paginator.paginate(Bucket=settings.storage.bucket, Prefix=PREFIX):
        for obj in page.get("Contents", []):
            anchor = json.loads(
                get_bytes(client, bucket=settings.storage.bucket, key=obj["Key"], max_bytes=4096)
            )
            anchors += 1
            if heads.get(int(anchor["seq"])) != anchor["hash"]:
                return False, (
                    f"entry {anchor['seq']} no longer matches the head anchored in "
                    f"the bucket by run {anchor['run_id']}: the log was rewritten "
                    "or truncated"
                )
    return True, f"{anchors} anchored heads match"
