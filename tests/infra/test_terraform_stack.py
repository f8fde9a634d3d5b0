"""infra/terraform applied to moto, checked by behaviour: the deploy gate's posture check
and a KMS-wrapped release round trip run against what Terraform created.

moto stands in for AWS because this is AWS-only infrastructure. What moto does not
enforce (IAM and KMS policy evaluation, bucket-policy conditions, object-lock deletes,
SSE enforcement) is not tested here: README "Run it on AWS" lists it to check on AWS.
moto 5.2.5 applies the bucket policy to object reads and writes without the request's
context (a Deny with any condition denies: every PutObject got 403, measured), so the
object round trips run with the policy lifted (`policy_lifted`) and Terraform puts it
back. Run by ``make infra-check`` (and so by CI), not by ``make test``: it needs Terraform.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from tasks.checks.bucket_posture import bucket_posture, check_bucket_posture
from tasks.common.anchors import PREFIX as ANCHOR_PREFIX
from tasks.common.s3 import ObjectExists, get_bytes, put_immutable, s3_client
from tasks.common.settings import Settings, load_settings
from tasks.localstack.stack import s3_service
from tasks.trust import envelope
from tasks.trust import release as rel
from tests.infra.conftest import REGION, Stack

pytestmark = [pytest.mark.moto]

ROLES = {"trainer", "approver", "promoter", "auditor", "data-steward", "reader"}


@pytest.fixture(scope="module")
def outputs(stack: Stack) -> dict[str, Any]:
    return stack.outputs()


@pytest.fixture(scope="module")
def settings(outputs: dict[str, Any], stack: Stack, tmp_path_factory) -> Settings:
    """The pipeline's config filled in from the stack's outputs, as README "Run it on
    AWS" tells a user to (only the endpoint is moto's instead of AWS's)."""
    return load_settings(
        state_dir=tmp_path_factory.mktemp("state"),
        storage={
            "bucket": outputs["storage_bucket"],
            "kms_key_id": outputs["storage_kms_key_id"],
            "region": outputs["storage_region"],
            "prefix": outputs["storage_prefix"],
            "object_lock_days": outputs["storage_object_lock_days"],
            "endpoint_url": stack.url,
        },
    )


@pytest.fixture(scope="module")
def s3(settings: Settings):
    """The pipeline's own S3 client for an external endpoint (`s3_service`)."""
    with s3_service(settings) as endpoint:
        yield s3_client(endpoint)


@pytest.fixture(scope="module")
def policy_lifted(stack: Stack, s3, settings: Settings):
    """The bucket without its policy (moto would refuse every object request under it);
    afterwards Terraform puts it back and the deploy gate passes again."""
    bucket = settings.storage.bucket
    s3.delete_bucket_policy(Bucket=bucket)
    yield
    stack.apply("aws_s3_bucket_policy.models")
    restored = check_bucket_posture(bucket_posture(s3, bucket=bucket), sse=settings.sse)
    assert restored.passed, restored.detail


def test_outputs_fill_the_pipeline_config(outputs: dict[str, Any], settings: Settings) -> None:
    assert outputs["storage_kms_key_id"].startswith("arn:aws:kms:us-east-1:")
    assert settings.sse == "aws:kms"
    assert set(outputs["role_arns"]) == ROLES
    assert f'kms_key_id = "{outputs["storage_kms_key_id"]}"' in outputs["storage_toml"]


def test_deploy_gate_passes_on_the_stack(s3, settings: Settings) -> None:
    result = check_bucket_posture(
        bucket_posture(s3, bucket=settings.storage.bucket), sse=settings.sse
    )
    assert result.passed, result.detail
    measured = result.metrics  # the gate's measurement, as a run reports it
    assert measured["object_lock"] and measured["default_sse"] == "aws:kms"
    lock = bucket_posture(s3, bucket=settings.storage.bucket)["object_lock_retention"]
    assert (lock["Mode"], lock["Days"]) == ("GOVERNANCE", 30)


def test_sse_s3_is_not_the_posture_of_a_kms_stack(s3, settings: Settings) -> None:
    """A pipeline configured without the key (SSE-S3) is refused by the same gate."""
    posture = bucket_posture(s3, bucket=settings.storage.bucket)
    assert not check_bucket_posture(posture, sse="AES256").passed


@pytest.mark.usefixtures("policy_lifted")
def test_deploy_gate_refuses_the_bucket_without_its_policy(s3, settings: Settings) -> None:
    refused = check_bucket_posture(
        bucket_posture(s3, bucket=settings.storage.bucket), sse=settings.sse
    )
    assert not refused.passed
    assert "denies_unencrypted_put" in refused.detail
    assert "denies_insecure_transport" in refused.detail
    assert refused.metrics["object_lock"]  # only the policy is missing


@pytest.mark.usefixtures("policy_lifted")
def test_kms_wrapped_release_round_trip(s3, settings: Settings, outputs: dict[str, Any]) -> None:
    """Encrypt under the stack's key, upload as the deploy stage does, check what S3 holds,
    fetch and decrypt: the release path of `tasks.deploy.publish` and `verify`."""
    st = settings.storage
    model = b"model bytes " * 4096
    context = rel.encryption_context(name="m", version="1", sha256="ab" * 32)
    ciphertext = envelope.encrypt(
        model, key_provider=envelope.key_provider(settings), context=context
    )
    key = f"{rel.release_prefix(st.prefix, 'm', '1')}/{rel.ARTIFACT}"
    version = put_immutable(
        s3, bucket=st.bucket, key=key, body=ciphertext, sse=settings.sse, kms_key_id=st.kms_key_id
    )

    head = s3.head_object(Bucket=st.bucket, Key=key, VersionId=version)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == outputs["storage_kms_key_id"]
    assert head["ObjectLockMode"] == "GOVERNANCE"  # the bucket's default retention
    with pytest.raises(ObjectExists):  # a release object is written once
        put_immutable(s3, bucket=st.bucket, key=key, body=b"other", sse="aws:kms")

    fetched = get_bytes(s3, bucket=st.bucket, key=key, version_id=version)
    decrypt = envelope.key_provider(settings, purpose="decrypt")
    assert envelope.decrypt(fetched, key_provider=decrypt, context=context) == model
    with pytest.raises(envelope.EnvelopeError):  # bound to the release it was made for
        envelope.decrypt(fetched, key_provider=decrypt, context={**context, "model_version": "2"})


@pytest.mark.usefixtures("policy_lifted")
def test_anchor_is_compliance_locked(s3, settings: Settings) -> None:
    st = settings.storage
    key = f"{ANCHOR_PREFIX}0000000000-test.json"
    version = put_immutable(
        s3,
        bucket=st.bucket,
        key=key,
        body=b"{}",
        sse=settings.sse,
        kms_key_id=st.kms_key_id,
        compliance_days=st.object_lock_days,
    )
    # (HEAD, not GetObjectRetention: moto 5.2.5 answers that with a 500 on a versioned key)
    head = s3.head_object(Bucket=st.bucket, Key=key, VersionId=version)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ServerSideEncryption"] == "aws:kms"


def test_kms_key_rotates_and_names_each_role(outputs: dict[str, Any]) -> None:
    kms = boto3.client("kms", region_name=REGION)
    key = outputs["storage_kms_key_id"]
    assert kms.get_key_rotation_status(KeyId=key)["KeyRotationEnabled"]
    policy = json.loads(kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"])
    grantees = {
        st["Principal"]["AWS"]
        for st in policy["Statement"]
        if "kms:Decrypt" in st["Action"] or "kms:GenerateDataKey" in st["Action"]
    }
    assert grantees == set(outputs["role_arns"].values())
    root = [st for st in policy["Statement"] if st["Sid"] == "KeyAdministrationNotUse"]
    assert not {"kms:Decrypt", "kms:Encrypt", "kms:*"} & set(root[0]["Action"])


def _role_writes(role: str) -> set[str]:
    """The object ARN patterns a role's inline policy lets it PutObject to."""
    iam = boto3.client("iam", region_name=REGION)
    name = f"secure-pipeline-{role}"
    doc = iam.get_role_policy(RoleName=name, PolicyName=f"{role}-duty")["PolicyDocument"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    writes: set[str] = set()
    for st in doc["Statement"]:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        if st["Effect"] == "Allow" and "s3:PutObject" in actions:
            resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            writes |= {r.split(":::", 1)[1].split("/", 1)[1] for r in resources}
    return writes


@pytest.mark.usefixtures("stack")
def test_each_role_writes_only_its_duty() -> None:
    """The roles as IAM stores them (moto does not evaluate them: see the README)."""
    assert _role_writes("reader") == set()
    assert _role_writes("approver") == {"models/*/approvals/*"}
    assert _role_writes("promoter") == {"models/*/champion.dsse.json"}
    assert _role_writes("auditor") == {"audit-anchors/*"}
    assert _role_writes("data-steward") == {"datasets/*"}
    assert _role_writes("trainer") == {"models/*", "audit-anchors/*"}


def test_override_leaves_the_configuration_unchanged(stack: Stack) -> None:
    """Only the override file differs from infra/terraform: the tested stack is the real one."""
    source = Path(__file__).resolve().parents[2] / "infra" / "terraform"
    for tf in source.glob("*.tf"):
        assert (stack.workdir / tf.name).read_text() == tf.read_text()
    extra = {p.name for p in stack.workdir.glob("*.tf")} - {p.name for p in source.glob("*.tf")}
    assert extra == {"moto_override.tf"}
