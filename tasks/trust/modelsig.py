"""OpenSSF model signing of a release directory (the `model-signing` library).

`sign_directory` writes ``model.sig`` into the directory: a Sigstore bundle (v0.3)
holding a DSSE envelope with an in-toto Statement whose predicate lists every file
of the directory and its sha256, signed with the pipeline's P-256 key. Anyone can
check a fetched release with the library's own command, without this project:

    model_signing verify key DIR --signature DIR/model.sig --public_key signing.pub

It fails when any byte of any file changes, when a file is added or removed. The
signature file itself is the one path left out of the manifest (the library records
that, so the verifier leaves it out too). Sign last: after every file is written.

AWS mode: model-signing 1.1.1 signs with a local key file, PKCS#11 or Sigstore, not
with a KMS key, so the release signature uses the local key in both modes (the data
key encryption is what KMS protects).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tasks.common.errors import PipelineError
from tasks.trust import keys

SIGNATURE = "model.sig"


class ModelSignatureError(PipelineError, ValueError):
    """The directory does not match its OpenSSF model signature."""


def _hashing() -> Any:
    from model_signing import hashing

    return hashing.Config().set_ignored_paths(paths=[SIGNATURE], ignore_git_paths=False)


def sign_directory(directory: Path, keys_dir: Path) -> Path:
    """Sign every file under `directory` with the active signing key; returns model.sig."""
    from model_signing import signing

    keys.require(keys_dir)  # the key file is the recorded one, and 0600
    out = directory / SIGNATURE
    config = signing.Config().set_hashing_config(_hashing())
    config.use_elliptic_key_signer(private_key=keys_dir / keys.FILES["signing"]).sign(
        directory, out
    )
    return out


def verify_directory(directory: Path, public_keys: Mapping[str, Any]) -> str:
    """The id of the pipeline key whose signature (model.sig) matches every file.

    Raises:
        ModelSignatureError: no P-256 key of the pipeline verifies the directory.
    """
    from model_signing import verifying

    candidates = {k: v for k, v in public_keys.items() if isinstance(v, ec.EllipticCurvePublicKey)}
    if not (directory / SIGNATURE).is_file():
        raise ModelSignatureError(f"no {SIGNATURE} in the release")
    last = "no P-256 key in the keyring"
    with tempfile.TemporaryDirectory() as tmp:
        for kid, key in candidates.items():
            pem = Path(tmp) / f"{kid[:16]}.pub"
            pem.write_bytes(
                key.public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
            try:
                verifying.Config().use_elliptic_key_verifier(public_key=pem).verify(
                    directory, directory / SIGNATURE
                )
            except Exception as exc:  # noqa: BLE001 - the library raises several kinds
                last = str(exc).splitlines()[0][:300]
                continue
            return kid
    raise ModelSignatureError(f"{SIGNATURE} does not verify: {last}")
