"""`check_anchors` against a real SeaweedFS: it reads anchor versions, so a delete
marker or a second version is evidence, and a missing or shorter log fails.

The deployment bucket's policy refuses delete markers on anchors outright (tested end
to end); this bucket has no such policy, so the reader's own defence is tested."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.common.anchors import anchor_head, check_anchors
from tasks.common.audit import AuditLog
from tasks.common.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def anchored(admin_s3, s3_settings: Settings, tmp_path: Path):
    bucket = f"anchors-{tmp_path.name[-20:].lower().replace('_', '-')}".strip("-")
    admin_s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    settings = s3_settings.model_copy(
        update={
            "state_dir": tmp_path / "state",
            "storage": s3_settings.storage.model_copy(update={"bucket": bucket}),
        }
    )
    log = AuditLog(settings.audit_path)
    for i in range(3):
        log.append("gate", n=i)
    key = anchor_head(settings, admin_s3, run_id="r1")
    log.append("gate", n=3)
    anchor_head(settings, admin_s3, run_id="r2")
    return settings, bucket, key


def test_matching_anchors_pass(anchored, admin_s3) -> None:
    settings, _, _ = anchored
    ok, detail = check_anchors(settings, admin_s3)
    assert ok and "2 anchored heads match" in detail


def test_a_delete_marker_is_evidence(anchored, admin_s3) -> None:
    settings, bucket, key = anchored
    admin_s3.delete_object(Bucket=bucket, Key=key)  # hides the version, deletes nothing
    ok, detail = check_anchors(settings, admin_s3)
    assert not ok and "hidden by delete markers" in detail


def test_a_second_version_is_evidence(anchored, admin_s3) -> None:
    settings, bucket, key = anchored
    admin_s3.put_object(Bucket=bucket, Key=key, Body=b"{}", ServerSideEncryption="AES256")
    ok, detail = check_anchors(settings, admin_s3)
    assert not ok and "second version" in detail


def test_a_missing_empty_or_short_log_fails(anchored, admin_s3) -> None:
    settings, _, _ = anchored
    lines = settings.audit_path.read_text().splitlines(keepends=True)
    settings.audit_path.write_text("".join(lines[:3]))  # still a valid chain: shorter
    ok, detail = check_anchors(settings, admin_s3)
    assert not ok and "truncated" in detail
    settings.audit_path.write_text("")
    assert "missing or empty" in check_anchors(settings, admin_s3)[1]
    settings.audit_path.unlink()
    ok, detail = check_anchors(settings, admin_s3)
    assert not ok and "missing or empty" in detail


def test_an_anchor_without_the_compliance_lock_is_evidence(anchored, admin_s3) -> None:
    """Every anchor is written compliance-locked: one that is not (written by hand with
    the auditor's credentials) after the first locked one fails verification."""
    import json

    settings, bucket, _ = anchored
    status = AuditLog(settings.audit_path).verify()
    seq = status.entries - 1
    admin_s3.put_object(
        Bucket=bucket,
        Key=f"audit-anchors/{seq + 1:010d}-{'0' * 64}.json",
        Body=json.dumps({"seq": seq + 1, "hash": "0" * 64, "run_id": "x", "intact": True}),
        ServerSideEncryption="AES256",
    )
    ok, detail = check_anchors(settings, admin_s3)
    assert not ok and "lack the compliance lock" in detail
