"""Envelope encryption of model artifacts with the AWS Encryption SDK.

Each artifact gets its own data key, wrapped by a master key: locally a
256-bit raw AES key in a 0600 file (created on first use), in production a KMS
key (`storage.kms_key_id`). The encryption context binds the ciphertext to the
model's name, version and digest; it is authenticated, and decryption refuses
a ciphertext whose context differs from the one the caller expects.

Algorithm suite: AES-256-GCM with HKDF-SHA512 and key commitment, *without* the
SDK's ECDSA P-384 message signature. The signature would only prove that whoever
made the ciphertext held no more than a data key; here every release already binds
the ciphertext's sha256 and the plaintext's sha256 into a DSSE statement signed with
the pipeline's key, and both are checked before anything is decrypted or loaded
(`tasks.trust.release`). Measured on 64 MiB, the signing suite ran at 0.25-0.28 of
raw AES-GCM, this one at 0.6-0.7 (`make bench`). Decryption accepts both committing
suites, so releases made with the signing suite still verify.

Data is framed in 256 KiB frames and streamed in frame-sized reads: the SDK's
one-shot calls read 8 KiB lines and copy the rest of the frame on every line.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import aws_encryption_sdk
from aws_encryption_sdk import CommitmentPolicy
from aws_encryption_sdk.identifiers import Algorithm, EncryptionKeyType, WrappingAlgorithm
from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
from aws_encryption_sdk.key_providers.raw import RawMasterKeyProvider

from tasks.common.errors import PipelineError
from tasks.trust import keys

if TYPE_CHECKING:
    from tasks.common.settings import Settings

PROVIDER_ID = "secure-pipeline"
Purpose = Literal["encrypt", "decrypt"]
# The SDK logs a traceback of its own when a tampered stream fails to close;
# the failure is reported as EnvelopeError instead.
logging.getLogger("aws_encryption_sdk.streaming_client").setLevel(logging.CRITICAL)
# Key commitment on both sides: a ciphertext cannot decrypt to two plaintexts.
_CLIENT = aws_encryption_sdk.EncryptionSDKClient(
    commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
)
ALGORITHM = Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY
FRAME_LENGTH = 256 * 1024


class EnvelopeError(PipelineError, ValueError):
    """Decryption failed, or the ciphertext was made for another context."""


class LocalMasterKeys(RawMasterKeyProvider):
    """Local master keys by id. For encryption it holds the active key only (a retired
    key never wraps a new release); for decryption every key of the keyring, and the
    SDK picks the one each envelope names."""

    provider_id = PROVIDER_ID
    _keys: dict[bytes, bytes]

    @classmethod
    def of(cls, keys: dict[str, bytes]) -> LocalMasterKeys:
        provider = cls()  # the SDK's constructor only takes its own config fields
        provider._keys = {k.encode(): v for k, v in keys.items()}
        for key_id in provider._keys:
            provider.add_master_key(key_id)
        return provider

    def _get_raw_key(self, key_id: bytes) -> WrappingKey:
        if key_id not in self._keys:
            raise EnvelopeError(f"no master key {key_id.decode(errors='replace')} in the keyring")
        return WrappingKey(
            wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
            wrapping_key=self._keys[key_id],
            wrapping_key_type=EncryptionKeyType.SYMMETRIC,
        )


def local_master_key(keys_dir: Path, *, purpose: Purpose = "encrypt") -> LocalMasterKeys:
    """The local master keys of the keyring (never generated here: `tasks.trust.keys`):
    the active one to encrypt, all of them to decrypt.

    Raises:
        KeyFileError: the keyring or a key is missing.
    """
    active, found = keys.master_keys(keys_dir)
    return LocalMasterKeys.of(found if purpose == "decrypt" else {active: found[active]})


def kms_master_key(key_arn: str, *, region: str) -> Any:
    """A KMS master key provider restricted to exactly one key (production)."""
    import botocore.session  # only on the KMS path
    from aws_encryption_sdk import StrictAwsKmsMasterKeyProvider

    session = botocore.session.Session()
    session.set_config_variable("region", region)
    return StrictAwsKmsMasterKeyProvider(key_ids=[key_arn], botocore_session=session)


def key_provider(settings: Settings, *, purpose: Purpose = "encrypt") -> Any:
    """The master key of this deployment: the KMS key if configured, else the local ones."""
    if settings.storage.kms_key_id:
        return kms_master_key(settings.storage.kms_key_id, region=settings.storage.region)
    return local_master_key(settings.keys_dir, purpose=purpose)


def _read_all(stream: Any) -> bytes:
    out = io.BytesIO()
    while chunk := stream.read(FRAME_LENGTH):
        out.write(chunk)
    return out.getvalue()


def encrypt(plaintext: bytes, *, key_provider: Any, context: dict[str, str]) -> bytes:
    with _CLIENT.stream(
        mode="e",
        source=io.BytesIO(plaintext),
        key_provider=key_provider,
        encryption_context=context,
        algorithm=ALGORITHM,
        frame_length=FRAME_LENGTH,
    ) as stream:
        return _read_all(stream)


def decrypt(ciphertext: bytes, *, key_provider: Any, context: dict[str, str]) -> bytes:
    """Decrypt and check that every expected context pair is present and equal."""
    try:
        with _CLIENT.stream(
            mode="d", source=io.BytesIO(ciphertext), key_provider=key_provider
        ) as stream:
            plaintext = _read_all(stream)
            header = stream.header
    except Exception as exc:  # noqa: BLE001 - the SDK raises several families; all mean "no"
        raise EnvelopeError(f"decryption failed ({type(exc).__name__})") from None
    found = header.encryption_context
    wrong = sorted(k for k, v in context.items() if found.get(k) != v)
    if wrong:
        raise EnvelopeError(f"encryption context mismatch on {', '.join(wrong)}")
    return bytes(plaintext)
