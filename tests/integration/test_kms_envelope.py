"""The production key path (AWS KMS) of the envelope encryption.

moto stands in for KMS here because KMS is an AWS-only service: moto checks
the encryption context and the key id, which is what this path relies on. It
does not enforce key state or policies (measured with moto 5.2.5), so those are not tested.
"""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest

from tasks.trust import envelope

pytestmark = [pytest.mark.integration, pytest.mark.moto]


@pytest.fixture(scope="module")
def kms_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def kms_env(kms_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", kms_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    kms = boto3.client("kms", region_name="us-east-1", endpoint_url=kms_endpoint)
    return str(kms.create_key(Description="secure-pipeline test")["KeyMetadata"]["Arn"])


def test_kms_round_trip_binds_context(kms_env: str) -> None:
    provider = envelope.kms_master_key(kms_env, region="us-east-1")
    context = {"model_name": "m", "model_version": "3", "model_sha256": "ab" * 32}
    blob = envelope.encrypt(b"model" * 1000, key_provider=provider, context=context)
    assert envelope.decrypt(blob, key_provider=provider, context=context) == b"model" * 1000
    with pytest.raises(envelope.EnvelopeError, match="model_version"):
        envelope.decrypt(blob, key_provider=provider, context={**context, "model_version": "4"})


def test_kms_provider_is_strict_about_the_key(kms_env: str, kms_endpoint: str) -> None:
    """A ciphertext made under one KMS key does not decrypt with a provider for another."""
    other = boto3.client("kms", region_name="us-east-1", endpoint_url=kms_endpoint).create_key()
    blob = envelope.encrypt(
        b"x", key_provider=envelope.kms_master_key(kms_env, region="us-east-1"), context={"a": "1"}
    )
    wrong = envelope.kms_master_key(other["KeyMetadata"]["Arn"], region="us-east-1")
    with pytest.raises(envelope.EnvelopeError):
        envelope.decrypt(blob, key_provider=wrong, context={"a": "1"})
