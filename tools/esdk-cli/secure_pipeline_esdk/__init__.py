"""The `secure-pipeline` master key provider for the public ``aws-encryption-cli``: it
decrypts releases made with the pipeline's local raw AES-256 master keys, without the
pipeline installed. (With a KMS key, use the CLI's own ``provider=aws-kms``.)

Install it beside the CLI, in a venv of its own (the CLI needs aws-encryption-sdk 3.x)::

    python3 -m venv esdk-cli
    esdk-cli/bin/pip install --require-hashes --no-deps -r tools/esdk-cli/requirements.lock
    esdk-cli/bin/pip install --no-deps --no-build-isolation ./tools/esdk-cli

Decrypt (``key=``: the master key id, ``local-master-<16 hex>``, as ``secure-pipeline keys
status`` shows it; repeat ``key=`` for retired ones; ``keys-dir=``: ``<state>/keys``)::

    esdk-cli/bin/aws-encryption-cli --decrypt --input model.skops.enc --output model.skops \\
      --wrapping-keys provider=secure-pipeline key=local-master-0123456789abcdef \\
        keys-dir=.secure-pipeline/keys \\
      --commitment-policy require-encrypt-require-decrypt \\
      --encryption-context model_name=NAME model_version=VERSION model_sha256=SHA256 \\
        purpose=secure-pipeline-model \\
      --metadata-output metadata.json

The CLI calls ``provider(key_ids=[...], **{"keys-dir": [DIR]})`` (each other NAME=VALUE of
``--wrapping-keys`` becomes a keyword with a list of values), then ``add_master_key(id)``
for each ``key=``; only those keys unwrap. The active key is ``<keys-dir>/master.aes256``,
a retired one ``<keys-dir>/retired/master-<id>.aes256``; a key file that group or others
may read, or whose id is not the requested one, is refused. Mind that the CLI exits 0 when
the context differs: it then deletes the output and writes ``"skipped": true`` to the
metadata, so check that the output exists. Write plaintext under ``umask 077``.
"""

from __future__ import annotations

import hashlib
import re
import stat
from pathlib import Path

from aws_encryption_sdk.identifiers import EncryptionKeyType, WrappingAlgorithm
from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
from aws_encryption_sdk.key_providers.raw import RawMasterKeyProvider

KEY_ID = re.compile(r"local-master-[0-9a-f]{16}")


def master_key_id(key: bytes) -> str:
    """The id the pipeline names a master key by (tasks.trust.keys.master_key_id)."""
    digest = hashlib.sha256(b"secure-pipeline master key id\0" + key).hexdigest()
    return "local-master-" + digest[:16]


class SecurePipelineKeys(RawMasterKeyProvider):
    provider_id = "secure-pipeline"
    keys_dir: Path

    def _get_raw_key(self, key_id: bytes) -> WrappingKey:
        name = key_id.decode()
        if not KEY_ID.fullmatch(name):
            raise ValueError(f"not a secure-pipeline master key id: {name!r}")
        retired = self.keys_dir / "retired" / f"master-{name}.aes256"
        for path in (retired, self.keys_dir / "master.aes256"):
            if not path.exists():
                continue
            if (mode := path.stat().st_mode) & (stat.S_IRWXG | stat.S_IRWXO):
                raise PermissionError(f"{path} has mode {stat.S_IMODE(mode):o}: chmod 600 {path}")
            if master_key_id(key := path.read_bytes()) == name:
                return WrappingKey(
                    wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
                    wrapping_key=key,
                    wrapping_key_type=EncryptionKeyType.SYMMETRIC,
                )
        raise LookupError(f"no master key {name} under {self.keys_dir}")


def provider(key_ids: list[str] | None = None, **options: list[str]) -> SecurePipelineKeys:
    """The CLI's entry point; the CLI adds the `key=` ids itself afterwards."""
    keys_dir = options.pop("keys-dir", [])
    if len(keys_dir) != 1 or options:
        raise ValueError("give exactly one keys-dir=<state>/keys and no other option")
    keys = SecurePipelineKeys()  # the SDK's constructor only takes its own config fields
    keys.keys_dir = Path(keys_dir[0]).expanduser()
    return keys
