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
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tasks.common.errors import PipelineError
from tasks.common.files import PUBLIC, sha256_bytes, write_atomic
from tasks.trust.keys import ensure_secret

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
        """Load the local signing key, generating it on first use."""
        fresh = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        raw = ensure_secret(keys_dir / "signing.ed25519", generate=fresh)
        signer = cls(Ed25519PrivateKey.from_private_bytes(raw))
        pub = keys_dir / "signing.pub"
        if not pub.exists():
            pem = signer.public_key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            write_atomic(pub, pem, mode=PUBLIC)
        return signer

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


def load_public_key(keys_dir: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key((keys_dir / "signing.pub").read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError("signing.pub is not an Ed25519 public key")
    return key


def verify(
    envelope: dict[str, Any], *, public_key: Ed25519PublicKey, payload_type: str
) -> dict[str, Any]:
    """Return the payload of `envelope` if our key signed it, else raise SignatureError."""
    try:
        if envelope["payloadType"] != payload_type:
            raise SignatureError(f"statement type {envelope['payloadType']!r} != {payload_type!r}")
        body = base64.b64decode(envelope["payload"], validate=True)
        wanted = key_id(public_key)
        sigs = [s for s in envelope["signatures"] if s.get("keyid") == wanted]
        if not sigs:
            raise SignatureError("statement is not signed by the pipeline's key")
        public_key.verify(base64.b64decode(sigs[0]["sig"], validate=True), _pae(payload_type, body))
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
