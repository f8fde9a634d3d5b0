"""What each role's S3 identity may do on the embedded store, against a real SeaweedFS:
every denial of the bucket policy (`tasks.localstack.bucket.role_statements`) tried as
that identity, and the compliance lock that keeps audit anchors from the admin."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from tasks.common.s3 import put_immutable, s3_client
from tasks.localstack import identities
from tasks.localstack.bucket import policy_drift
from tasks.localstack.seaweedfs import expected_policy

pytestmark = pytest.mark.integration

# Where each kind of object lives (the prefix is the bundled config's "models").
PLACES = {
    "anchor": "audit-anchors/{u}",
    "champion": "models/m-{u}/champion.dsse.json",
    "approval": "models/m-{u}/approvals/d/k.dsse.json",
    "release": "models/m-{u}/1/model.sig",
}
# Who may write where: everything else is denied by the policy (or the identity).
WRITERS = {
    "anchor": {"auditor"},
    "champion": {"promoter"},
    "approval": {"approver"},
    "release": {"pipeline", "admin"},  # admin: bucket set-up may test writes
}


@pytest.fixture(scope="module")
def as_role(s3_settings, s3_endpoint):
    return {
        role: s3_client(identities.endpoint_at(s3_settings, s3_endpoint.url, identity=role))
        for role in identities.IDENTITIES
    }


def _put(client, bucket: str, key: str, **kw):
    return client.put_object(
        Bucket=bucket, Key=key, Body=b"{}", ServerSideEncryption="AES256", **kw
    )


def _denied(call) -> bool:
    try:
        call()
    except ClientError as exc:
        return exc.response["Error"]["Code"] == "AccessDenied"
    return False


@pytest.mark.parametrize("role", identities.IDENTITIES)
def test_each_identity_writes_only_where_its_duty_is(as_role, bucket, role) -> None:
    client = as_role[role]
    for place, pattern in PLACES.items():
        key = pattern.format(u=uuid.uuid4().hex)
        denied = _denied(lambda c=client, k=key: _put(c, bucket, k))
        assert denied == (role not in WRITERS[place]), (role, place, denied)


@pytest.mark.parametrize("role", identities.IDENTITIES)
def test_nobody_deletes_hides_or_relocks_a_release(as_role, bucket, role) -> None:
    key = f"models/m-{uuid.uuid4().hex}/1/model.skops.enc"
    version = put_immutable(as_role["pipeline"], bucket=bucket, key=key, body=b"release")
    client = as_role[role]
    assert _denied(lambda: client.delete_object(Bucket=bucket, Key=key))  # a delete marker
    assert _denied(lambda: client.delete_object(Bucket=bucket, Key=key, VersionId=version))
    until = datetime.now(UTC) + timedelta(seconds=5)
    assert _denied(
        lambda: client.put_object_retention(
            Bucket=bucket,
            Key=key,
            VersionId=version,
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until},
            BypassGovernanceRetention=True,
        )
    )
    listed = as_role["reader"].list_object_versions(Bucket=bucket, Prefix=key)
    assert [v["VersionId"] for v in listed["Versions"]] == [version]
    assert not listed.get("DeleteMarkers")


def test_an_anchor_is_compliance_locked_even_against_the_admin(as_role, bucket) -> None:
    """The attack: with the admin identity, drop the anchor rules and delete every anchor
    version. A COMPLIANCE lock outlives the policy (measured: the admin bypasses
    governance retention even under a Deny of s3:BypassGovernanceRetention)."""
    admin, key = as_role["admin"], f"audit-anchors/{uuid.uuid4().hex}"
    version = put_immutable(
        as_role["auditor"], bucket=bucket, key=key, body=b"{}", compliance_days=1
    )
    mode = as_role["reader"].get_object_retention(Bucket=bucket, Key=key, VersionId=version)
    assert mode["Retention"]["Mode"] == "COMPLIANCE"
    policy = admin.get_bucket_policy(Bucket=bucket)["Policy"]
    admin.delete_bucket_policy(Bucket=bucket)
    try:
        assert _denied(
            lambda: admin.delete_object(
                Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=True
            )
        )
        until = datetime.now(UTC) + timedelta(seconds=1)
        assert _denied(
            lambda: admin.put_object_retention(
                Bucket=bucket,
                Key=key,
                VersionId=version,
                Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until},
                BypassGovernanceRetention=True,
            )
        )
    finally:
        admin.put_bucket_policy(Bucket=bucket, Policy=policy)
    assert as_role["reader"].head_object(Bucket=bucket, Key=key, VersionId=version)


def test_the_auditor_cannot_shorten_an_anchors_lock(as_role, bucket) -> None:
    key = f"audit-anchors/{uuid.uuid4().hex}"
    auditor = as_role["auditor"]
    version = put_immutable(auditor, bucket=bucket, key=key, body=b"{}", compliance_days=1)
    until = datetime.now(UTC) + timedelta(seconds=1)
    assert _denied(
        lambda: auditor.put_object_retention(
            Bucket=bucket,
            Key=key,
            VersionId=version,
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until},
        )
    )


def test_a_dropped_rule_is_policy_drift(s3_settings, s3_endpoint, as_role, bucket) -> None:
    admin, reader = as_role["admin"], as_role["reader"]
    expected = expected_policy(s3_settings, s3_endpoint.url)
    assert policy_drift(reader, bucket=bucket, expected=expected) == []
    live = json.loads(admin.get_bucket_policy(Bucket=bucket)["Policy"])
    weakened = [st for st in live["Statement"] if st.get("Sid") != "KeepReleases"]
    admin.put_bucket_policy(Bucket=bucket, Policy=json.dumps({**live, "Statement": weakened}))
    try:
        assert policy_drift(reader, bucket=bucket, expected=expected) == ["KeepReleases is missing"]
    finally:
        admin.put_bucket_policy(Bucket=bucket, Policy=json.dumps(live))
    assert policy_drift(reader, bucket=bucket, expected=expected) == []


def test_what_the_store_cannot_refuse_as_the_readme_says(as_role, bucket) -> None:
    """The two gaps the README states, measured: the admin bypasses governance retention
    despite the Deny of s3:BypassGovernanceRetention, and a new version over a release
    object is accepted (the version-history check of `verify` is what catches it)."""
    admin, trainer = as_role["admin"], as_role["pipeline"]
    key = f"models/m-{uuid.uuid4().hex}/1/report.json"
    first = put_immutable(trainer, bucket=bucket, key=key, body=b"signed")
    second = _put(trainer, bucket, key)["VersionId"]  # no If-None-Match: a new version
    assert second != first
    policy = admin.get_bucket_policy(Bucket=bucket)["Policy"]
    only_bypass = [  # KeepReleases narrowed to the one action that should stop the admin
        {**st, "Action": ["s3:BypassGovernanceRetention"]} if st["Sid"] == "KeepReleases" else st
        for st in json.loads(policy)["Statement"]
    ]
    narrowed = {**json.loads(policy), "Statement": only_bypass}
    admin.put_bucket_policy(Bucket=bucket, Policy=json.dumps(narrowed))
    try:
        admin.delete_object(
            Bucket=bucket, Key=key, VersionId=second, BypassGovernanceRetention=True
        )
    finally:
        admin.put_bucket_policy(Bucket=bucket, Policy=policy)
    listed = as_role["reader"].list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
    assert [v["VersionId"] for v in listed] == [first]
