"""Policy parsing for the deploy preflight gate, and argument checks that need no server."""

from __future__ import annotations

import copy

import pytest

from tasks.checks.bucket_posture import (
    policy_denies_insecure_transport,
    policy_denies_unencrypted_put,
)
from tasks.common.s3 import put_immutable
from tasks.localstack.bucket import deploy_bucket_policy

BUCKET = "models"


def test_generated_policy_passes_both_checks():
    policy = deploy_bucket_policy(BUCKET, posture_readers=["arn:aws:iam::1:user/p"])
    assert policy_denies_unencrypted_put(policy, BUCKET)
    assert policy_denies_insecure_transport(policy, BUCKET)
    assert not policy_denies_unencrypted_put(policy, "other-bucket")


def test_plain_http_policy_has_no_transport_deny():
    policy = deploy_bucket_policy(BUCKET, secure_transport=False)
    assert policy_denies_unencrypted_put(policy, BUCKET)
    assert not policy_denies_insecure_transport(policy, BUCKET)


def _single(statement_changes: dict) -> dict:
    st = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{BUCKET}/*",
        "Condition": {"StringNotEquals": {"s3:x-amz-server-side-encryption": "AES256"}},
    }
    st.update(statement_changes)
    return {"Version": "2012-10-17", "Statement": [st]}


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({}, True),
        ({"Action": ["s3:Put*"]}, True),
        ({"Action": "s3:*", "Resource": f"arn:aws:s3:::{BUCKET}*"}, True),
        ({"Principal": {"AWS": "*"}}, True),
        ({"Condition": {"Null": {"s3:x-amz-server-side-encryption": "true"}}}, True),
        ({"Condition": {"Null": {"s3:x-amz-server-side-encryption": True}}}, True),
        (
            {
                "Condition": {
                    "StringNotEquals": {"s3:x-amz-server-side-encryption": ["AES256", "aws:kms"]}
                }
            },
            True,
        ),
        # IfExists lets a request without the header through.
        (
            {
                "Condition": {
                    "StringNotEqualsIfExists": {"s3:x-amz-server-side-encryption": "AES256"}
                }
            },
            False,
        ),
        ({"Condition": {"StringNotEquals": {"s3:x-amz-server-side-encryption": "none"}}}, False),
        ({"Condition": {"StringNotEquals": {"s3:x-amz-server-side-encryption": []}}}, False),
        (
            {
                "Condition": {
                    "StringNotEquals": {"s3:x-amz-server-side-encryption": "AES256"},
                    "IpAddress": {"aws:SourceIp": "10.0.0.0/8"},
                }
            },
            False,
        ),
        ({"Effect": "Allow"}, False),
        ({"Principal": {"AWS": "arn:aws:iam::1:user/x"}}, False),
        ({"Action": "s3:GetObject"}, False),
        ({"Resource": "arn:aws:s3:::other/*"}, False),
        ({"Condition": {}}, False),
    ],
)
def test_unencrypted_put_deny_detection(changes, expected):
    assert policy_denies_unencrypted_put(_single(changes), BUCKET) is expected


def test_transport_deny_must_cover_bucket_and_objects():
    policy = deploy_bucket_policy(BUCKET)
    narrowed = copy.deepcopy(policy)
    narrowed["Statement"][-1]["Resource"] = f"arn:aws:s3:::{BUCKET}/*"
    assert not policy_denies_insecure_transport(narrowed, BUCKET)
    put_only = copy.deepcopy(policy)
    put_only["Statement"][-1]["Action"] = "s3:PutObject"
    assert not policy_denies_insecure_transport(put_only, BUCKET)
    as_bool = copy.deepcopy(policy)
    as_bool["Statement"][-1]["Condition"] = {"Bool": {"aws:SecureTransport": False}}
    assert policy_denies_insecure_transport(as_bool, BUCKET)
    inverted = copy.deepcopy(policy)
    inverted["Statement"][-1]["Condition"] = {"Bool": {"aws:SecureTransport": "true"}}
    assert not policy_denies_insecure_transport(inverted, BUCKET)


@pytest.mark.parametrize(
    "policy",
    [None, [], "text", {"Statement": "x"}, {"Statement": [1]}, {"Statement": {"Effect": "Deny"}}],
)
def test_malformed_policies_are_not_trusted(policy):
    assert policy_denies_unencrypted_put(policy, BUCKET) is False
    assert policy_denies_insecure_transport(policy, BUCKET) is False


@pytest.mark.parametrize("sse, kms", [("none", None), ("AES256", "key-id"), ("aws:kms:dsse", None)])
def test_put_immutable_rejects_bad_encryption_arguments(sse, kms):
    with pytest.raises(ValueError, match="server-side encryption"):
        put_immutable(None, bucket=BUCKET, key="k", body=b"", sse=sse, kms_key_id=kms)  # type: ignore[arg-type]
