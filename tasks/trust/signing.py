"""Signed statements in the DSSE envelope format (as used by in-toto/SLSA).

The payload is canonical JSON; the signature covers DSSE's pre-authentication
encoding, so neither the payload type nor the body can be swapped. The pipeline
signs with ECDSA P-256 / SHA-256 (DER signatures, as DSSE and Sigstore tools expect;
the key is created once, 0600, see `tasks.trust.keys`); Ed25519 signatures still
verify (keys of earlier versions, and profile signers that use them). Verification
only ever trusts the public keys the pipeline holds, never a key shipped with the
statement. The envelope is plain DSSE (any DSSE verifier checks it with the public
key); the ~40 lines here are written by hand because the format is that small.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tasks.common.errors import PipelineError
from tasks.trust import keys

PROVENANCE_TYPE = "application/vnd.secure-pipeline.provenance+json"  # before SLSA
IN_TOTO_TYPE = "application/vnd.in-toto+json"  # an in-toto Statement (SLSA provenance)
RELEASE_TYPE = "application/vnd.secure-pipeline.release+json"
PublicKey = Ed25519PublicKey | ec.EllipticCurvePublicKey
PrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey


class SignatureError(PipelineError, ValueError):
    """A statement is malformed, of the wrong type, or not signed by our key."""


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _pae(payload_type: str, body: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


class Signer:
    """A signing key (the pipeline's: P-256) and its public half."""

    def __init__(self, private_key: PrivateKey):
        self._key = private_key
        self.public_key: PublicKey = private_key.public_key()
        self.key_id = key_id(self.public_key)

    @classmethod
    def local(cls, keys_dir: Path) -> Signer:
        """The active local signing key (never generated here: see `tasks.trust.keys`).

        Raises:
            KeyFileError: the keyring or the key is missing.
        """
        return cls(keys.load_signing_key(keys.active_secret(keys_dir, "signing")))

    def sign(self, payload: dict[str, Any], *, payload_type: str) -> dict[str, Any]:
        body = canonical_json(payload)
        if isinstance(self._key, Ed25519PrivateKey):
            sig = self._key.sign(_pae(payload_type, body))
        else:
            sig = self._key.sign(_pae(payload_type, body), ec.ECDSA(hashes.SHA256()))
        return {
            "payloadType": payload_type,
            "payload": base64.b64encode(body).decode(),
            "signatures": [{"keyid": self.key_id, "sig": base64.b64encode(sig).decode()}],
        }


def key_id(public_key: PublicKey) -> str:
    return keys.public_key_id(public_key)


def load_public_pem(pem: bytes, name: str) -> PublicKey:
    """A PEM public key the pipeline can verify with: P-256 or Ed25519."""
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise SignatureError(f"{name} is not a PEM public key") from None
    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1":
        return key
    raise SignatureError(f"{name} is neither an ECDSA P-256 nor an Ed25519 public key")


def load_public_key(keys_dir: Path) -> PublicKey:
    """The active signing key's public half."""
    return load_public_pem((keys_dir / keys.PUBLIC_KEY).read_bytes(), keys.PUBLIC_KEY)


def trusted_keys(keys_dir: Path) -> dict[str, PublicKey]:
    """Every public key of the pipeline, active and retired, by key id: a release
    signed before a rotation still verifies; a key the keyring never held does not."""
    return {
        kid: load_public_pem(pem, kid[:16]) for kid, pem in keys.public_keys_pem(keys_dir).items()
    }


def _check(public: PublicKey, sig: bytes, message: bytes) -> None:
    if isinstance(public, Ed25519PublicKey):
        public.verify(sig, message)
    else:
        public.verify(sig, message, ec.ECDSA(hashes.SHA256()))


def verify(
    envelope: dict[str, Any],
    *,
    public_key: PublicKey | Mapping[str, PublicKey],
    payload_type: str,
) -> dict[str, Any]:
    """Return the payload of `envelope` if one of our keys signed it, else raise
    SignatureError. `public_key` is one key or the keyring's keys by id."""
    candidates = (
        {key_id(public_key): public_key} if isinstance(public_key, PublicKey) else dict(public_key)
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
        _check(
            candidates[sigs[0]["keyid"]],
            base64.b64decode(sigs[0]["sig"], validate=True),
            _pae(payload_type, body),
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
