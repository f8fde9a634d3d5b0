"""Signed statements in the DSSE envelope format (as used by in-toto/SLSA).

The payload is canonical JSON; the signature covers DSSE's pre-authentication
encoding, so neither the payload type nor the body can be swapped. The key is
Ed25519, generated locally on first use (0600); verification only ever trusts
the public key the pipeline holds, never a key shipped with the statement.
Written by hand (about 60 lines) because the DSSE libraries pull in far more
than this needs.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tasks.common.errors import PipelineError
from tasks.common.files import sha256_bytes
from tasks.trust import keys

PROVENANCE_TYPE = "application/vnd.secure-pipeline.provenance+json"
RELEASE_TYPE = "application/vnd.secure-pipeline.release+json"


class SignatureError(PipelineError, ValueError):
    """A statement is malformed, of the wrong type, or not signed by our key."""


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _pae(payload_type: str, body: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


class Signer:
    """The pipeline's signing key (Ed25519) and its public half."""

    def __init__(self, private_key: Ed25519PrivateKey):
        self._key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(self.public_key)

    @classmethod
    def local(cls, keys_dir: Path) -> Signer:
        """The active local signing key (never generated here: see `tasks.trust.keys`).

        Raises:
            KeyFileError: the keyring or the key is missing.
        """
        raw = keys.active_secret(keys_dir, "signing")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def sign(self, payload: dict[str, Any], *, payload_type: str) -> dict[str, Any]:
        body = canonical_json(payload)
        sig = self._key.sign(_pae(payload_type, body))
        return {
            "payloadType": payload_type,
            "payload": base64.b64encode(body).decode(),
            "signatures": [{"keyid": self.key_id, "sig": base64.b64encode(sig).decode()}],
        }


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return sha256_bytes(raw)


def _load_pem(pem: bytes, name: str) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{name} is not an Ed25519 public key")
    return key


def load_public_key(keys_dir: Path) -> Ed25519PublicKey:
    """The active signing key's public half."""
    return _load_pem((keys_dir / keys.PUBLIC_KEY).read_bytes(), keys.PUBLIC_KEY)


def trusted_keys(keys_dir: Path) -> dict[str, Ed25519PublicKey]:
    """Every public key of the pipeline, active and retired, by key id: a release
    signed before a rotation still verifies; a key the keyring never held does not."""
    return {kid: _load_pem(pem, kid[:16]) for kid, pem in keys.public_keys_pem(keys_dir).items()}


def verify(
    envelope: dict[str, Any],
    *,
    public_key: Ed25519PublicKey | Mapping[str, Ed25519PublicKey],
    payload_type: str,
) -> dict[str, Any]:
    """Return the payload of `envelope` if one of our keys signed it, else raise
    SignatureError. `public_key` is one key or the keyring's keys by id."""
    candidates = (
        {key_id(public_key): public_key}
        if isinstance(public_key, Ed25519PublicKey)
        else dict(public_key)
    )
    try:
        if envelope["payloadType"] != payload_type:
            raise SignatureError(f"statement type {envelope['payloadType']!r} != {payload_type!r}")
        body = base64.b64decode(envelope["payload"], validate=True)
        sigs = [s for s in envelope["signatures"] if s.get("keyid") in candidates]
        if not sigs:
            found = ", ".join(str(s.get("keyid", "?"))[:16] for s in envelope["signatures"])
            raise SignatureError(
                f"statement is not signed by a key of the pipeline (signed by: {found or 'none'})"
            )
        candidates[sigs[0]["keyid"]].verify(
            base64.b64decode(sigs[0]["sig"], validate=True), _pae(payload_type, body)
        )
        payload = json.loads(body)
    except InvalidSignature:
        raise SignatureError("signature does not verify: the statement was altered") from None
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, SignatureError):
            raise
        raise SignatureError(f"malformed signed statement ({type(exc).__name__})") from None
    if not isinstance(payload, dict):
        raise SignatureError("signed payload is not a JSON object")
    return payload
