"""Anchor the audit chain in the object-locked bucket.

A hash chain shows an edited line, but an insider who can write the log file could
rewrite the whole chain from the edit onwards, or delete it. So at the end of every
run the chain's head (sequence number and hash) is written to the deployment bucket
by an identity of its own (the embedded store's ``auditor``), under a bucket policy
that denies every identity deleting, hiding (delete markers) or re-locking anchors and
every other identity writing them. Each anchor is written COMPLIANCE-locked for
``storage.object_lock_days``: until then no identity, the admin included and even with
the policy dropped, can delete that version (measured on SeaweedFS). `check_anchors`
reads anchor *versions*: a delete marker, a second version, an anchor without the
compliance lock, an anchored head missing from the chain, or a missing, empty or
shorter log all fail verification.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

from tasks.common.audit import AuditLog
from tasks.common.s3 import ObjectExists, ObjectTooLarge, get_bytes, put_immutable
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
            compliance_days=settings.storage.object_lock_days,
        )
    return key


def check_anchors(settings: Settings, client: Any) -> tuple[bool, str]:
    """The local chain against every anchor *version* in the bucket.

    Fails when an anchor was hidden by a delete marker or given a second version, when
    an anchored head is no longer in the chain (rewritten or truncated), and when the
    log is missing, empty or shorter than the newest anchor although anchors exist.
    """
    bucket = settings.storage.bucket
    versions: list[dict[str, Any]] = []
    markers: list[dict[str, Any]] = []
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=PREFIX):
        versions += page.get("Versions", [])
        markers += page.get("DeleteMarkers", [])
    if markers:
        first = min(markers, key=lambda m: m["LastModified"])
        return False, (
            f"{len(markers)} audit anchor(s) were hidden by delete markers (first "
            f"{first['Key'].removeprefix(PREFIX)} at {first['LastModified']:%Y-%m-%d %H:%M} "
            "UTC): someone with bucket access tried to erase the audit trail"
        )
    per_key: dict[str, int] = {}
    for v in versions:
        per_key[v["Key"]] = per_key.get(v["Key"], 0) + 1
    rewritten = sorted(k.removeprefix(PREFIX) for k, n in per_key.items() if n > 1)
    if rewritten:
        return False, f"audit anchor(s) given a second version: {', '.join(rewritten[:3])}"
    weak = _unlocked_after_upgrade(client, bucket, versions)
    if weak:
        return False, (
            f"{len(weak)} audit anchor(s) lack the compliance lock every anchor gets (first "
            f"{weak[0].removeprefix(PREFIX)}): the pipeline did not write them (someone with "
            "the auditor's credentials did)"
        )
    heads = _local_heads(settings)
    anchors = []
    for v in versions:
        anchor = _read_anchor(client, bucket, v)
        if anchor is None:
            return False, (
                f"audit anchor {v['Key'].removeprefix(PREFIX)} is malformed: the pipeline did "
                "not write it (someone with the auditor's credentials did)"
            )
        anchors.append(anchor)
    if not anchors:
        return True, "no anchors in the bucket yet" + _unanchored(heads, None)
    newest = max(int(a["seq"]) for a in anchors)
    if not heads:
        return False, (
            f"the audit log is missing or empty, but {len(anchors)} anchors up to entry "
            f"{newest} exist: the log was deleted; restore it from a backup"
        )
    if max(heads) < newest:
        return False, (
            f"the audit log ends at entry {max(heads)}, but the bucket anchors entry {newest}: "
            "the log was truncated"
        )
    for anchor in sorted(anchors, key=lambda a: int(a["seq"])):
        if heads.get(int(anchor["seq"])) != anchor["hash"]:
            return False, (
                f"entry {anchor['seq']} no longer matches the head anchored in the bucket by "
                f"run {anchor['run_id']}: the log was rewritten or truncated"
            )
    return True, f"{len(anchors)} anchored heads match (newest: entry {newest})" + _unanchored(
        heads, newest
    )


def _unanchored(heads: dict[int, str], newest: int | None) -> str:
    """What the anchors do not cover yet: the entries written after the newest one.

    They are no tampering (commands such as `keys rotate` append without anchoring, and
    a run anchors at its end), but until the next run anchors them an insider who can
    write the log could rewrite them unseen, so the operator is told how many."""
    after = sorted(seq for seq in heads if newest is None or seq > newest)
    if not after:
        return ""
    span = f"entry {after[0]}" if len(after) == 1 else f"entries {after[0]}-{after[-1]}"
    count = f"{len(after)} entr{'y' if len(after) == 1 else 'ies'}"
    where = "after it " if newest is not None else ""
    return (
        f"; {count} {where}({span}) not anchored yet: the next run anchors them (or an "
        "anchor failed: see audit.anchor_failed in the log)"
    )


def _unlocked_after_upgrade(client: Any, bucket: str, versions: list[dict[str, Any]]) -> list[str]:
    """Anchors written without a COMPLIANCE lock since the first one that has it.

    Anchors are compliance-locked (no identity, the admin included, can delete them
    before the retention ends: measured on SeaweedFS, where a Deny of
    ``s3:BypassGovernanceRetention`` does not stop the admin). Anchors of earlier
    versions, only governance-locked, are accepted if they predate the first locked one.
    """
    modes = {}
    for v in versions:
        try:
            got = client.get_object_retention(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
            modes[v["VersionId"]] = got.get("Retention", {}).get("Mode")
        except Exception:  # noqa: BLE001 - no retention readable: not locked
            modes[v["VersionId"]] = None
    locked = [v["LastModified"] for v in versions if modes[v["VersionId"]] == "COMPLIANCE"]
    if not locked:
        return []
    since = min(locked)
    return sorted(
        v["Key"]
        for v in versions
        if modes[v["VersionId"]] != "COMPLIANCE" and v["LastModified"] >= since
    )


def _read_anchor(client: Any, bucket: str, version: dict[str, Any]) -> dict[str, Any] | None:
    """One anchor version, or None if it is not an anchor the pipeline writes."""
    try:
        raw = get_bytes(
            client,
            bucket=bucket,
            key=version["Key"],
            version_id=version["VersionId"],
            max_bytes=4096,
        )
        anchor = json.loads(raw)
        ok = isinstance(anchor["seq"], int) and re.fullmatch(r"[0-9a-f]{64}", anchor["hash"])
        expected = f"{PREFIX}{anchor['seq']:010d}-{anchor['hash']}.json"
    except (ValueError, KeyError, TypeError, ObjectTooLarge):
        return None
    return anchor if ok and version["Key"] == expected else None


def _local_heads(settings: Settings) -> dict[int, str]:
    """Entry number -> hash of the local log (empty if it is missing)."""
    heads: dict[int, str] = {}
    try:
        with settings.audit_path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    entry = json.loads(line)
                    heads[int(entry["seq"])] = str(entry["hash"])
    except FileNotFoundError:
        pass
    return heads
