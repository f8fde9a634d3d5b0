"""Envelope encryption of model artifacts with the AWS Encryption SDK.

Each artifact gets its own data key, wrapped by a master key: locally a
256-bit raw AES key in a 0600 file (created on first use), in production a KMS
key (`storage.kms_key_id`). The encryption context binds the ciphertext to the
model's name, version and digest; it is authenticated, and decryption refuses
a ciphertext whose context differs from the one the caller expects.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aws_encryption_sdk
from aws_encryption_sdk import CommitmentPolicy
from aws_encryption_sdk.identifiers import EncryptionKeyType, WrappingAlgorithm
from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
from aws_encryption_sdk.key_providers.raw import RawMasterKey

from tasks.common.errors import PipelineError
from tasks.trust.keys import ensure_secret

if TYPE_CHECKING:
    from tasks.common.settings import Settings

PROVIDER_ID = "secure-pipeline"
LOCAL_KEY_ID = b"local-master-v1"
# The SDK logs a traceback of its own when a tampered stream fails to close;
# the failure is reported as EnvelopeError instead.
logging.getLogger("aws_encryption_sdk.streaming_client").setLevel(logging.CRITICAL)
# Key commitment on both sides: a ciphertext cannot decrypt to two plaintexts.
_CLIENT = aws_encryption_sdk.EncryptionSDKClient(
    commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
)


class EnvelopeError(PipelineError, ValueError):
    """Decryption failed, or the ciphertext was made for another context."""


def local_master_key(keys_dir: Path) -> RawMasterKey:
    """The local wrapping key (32 random bytes, 0600), generated on first use."""
    key = ensure_secret(keys_dir / "master.aes256", generate=secrets.token_bytes(32))
    return RawMasterKey(
        provider_id=PROVIDER_ID,
        key_id=LOCAL_KEY_ID,
        wrapping_key=WrappingKey(
            wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
            wrapping_key=key,
            wrapping_key_type=EncryptionKeyType.SYMMETRIC,
        ),
    )


def kms_master_key(key_arn: str, *, region: str) -> Any:
    """A KMS master key provider restricted to exactly one key (production)."""
    import botocore.session  # only on the KMS path
    from aws_encryption_sdk import StrictAwsKmsMasterKeyProvider

    session = botocore.session.Session()
    session.set_config_variable("region", region)
    return StrictAwsKmsMasterKeyProvider(key_ids=[key_arn], botocore_session=session)


def key_provider(settings: Settings) -> Any:
    """The master key of this deployment: the KMS key if configured, else the local file."""
    if settings.storage.kms_key_id:
        return kms_master_key(settings.storage.kms_key_id, region=settings.storage.region)
    return local_master_key(settings.keys_dir)


def encrypt(plaintext: bytes, *, key_provider: Any, context: dict[str, str]) -> bytes:
    ciphertext, _header = _CLIENT.encrypt(
        source=plaintext, key_provider=key_provider, encryption_context=context
    )
    return bytes(ciphertext)


def decrypt(ciphertext: bytes, *, key_provider: Any, context: dict[str, str]) -> bytes:
    """Decrypt and check that every expected context pair is present and equal."""
    try:
        plaintext, header = _CLIENT.decrypt(source=ciphertext, key_provider=key_provider)
    except Exception as exc:  # noqa: BLE001 - the SDK raises several families; all mean "no"
        raise EnvelopeError(f"decryption failed ({type(exc).__name__})") from None
    found = header.encryption_context
    wrong = sorted(k for k, v in context.items() if found.get(k) != v)
    if wrong:
        raise EnvelopeError(f"encryption context mismatch on {', '.join(wrong)}")
    return bytes(plaintext)
