"""The pipeline's keys: created once, never silently replaced, rotated on request.

Locally the signing key (ECDSA P-256, PKCS#8 PEM: the curve OpenSSF model signing and
DSSE verifiers accept), the master key that wraps every release's data key
(AES-256) and the pseudonymisation key (HMAC) are files under ``<state>/keys/``, 0600,
created with O_EXCL; in production the master key is KMS. Like ssh, a key file that
group or others can read is refused.

``keyring.json`` records which keys exist (their ids) and which are retired. Keys are
created only by `create` (``secure-pipeline keys init``, or the first run of a state
directory that has never had keys). Afterwards a missing key file refuses every
command that needs it: a regenerated key would make every earlier release
undecryptable or unverifiable, and nothing would say so. `rotate` retires the active
signing or master key (kept under ``retired/`` so earlier releases still verify and
decrypt) and creates a new one; every signature and envelope names its key id.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tasks.common.errors import PipelineError
from tasks.common.files import PUBLIC, sha256_bytes, write_atomic, write_json, write_new

Kind = Literal["signing", "master", "pii"]
ROTATABLE: tuple[Kind, ...] = ("signing", "master")
FILES: dict[Kind, str] = {
    "signing": "signing.p256.pem",
    "master": "master.aes256",
    "pii": "pii-hmac.key",
}
PUBLIC_KEY = "signing.pub"
KEYRING = "keyring.json"
# Before model signing, the signing key was Ed25519 (32 raw bytes). Such a key is never
# used to sign again; `keys rotate signing` retires it (it still verifies what it signed).
LEGACY_SIGNING = "signing.ed25519"


class KeyFileError(PipelineError, RuntimeError):
    """A key file is missing, unreadable or too widely readable."""


def read_secret(path: Path) -> bytes:
    """Read a key file, refusing one that group or others may read or write."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} is missing") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"key file {path} has mode {stat.S_IMODE(mode):o}; run `chmod 600 {path}`"
        )
    return path.read_bytes()


def public_key_id(public: Any) -> str:
    """A signing public key's id, the ``keyid`` of every DSSE signature: sha256 of the
    raw key for Ed25519 (earlier keys), of the DER SubjectPublicKeyInfo for P-256."""
    if isinstance(public, Ed25519PublicKey):
        der = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        der = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return sha256_bytes(der)


def load_signing_key(raw: bytes) -> Any:
    """The private key in a signing key file: P-256 PEM, or a legacy raw Ed25519 key."""
    if len(raw) == 32:
        return Ed25519PrivateKey.from_private_bytes(raw)
    key = serialization.load_pem_private_key(raw, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise KeyFileError("the signing key is not an ECDSA P-256 key")
    return key


def signing_key_id(private_raw: bytes) -> str:
    return public_key_id(load_signing_key(private_raw).public_key())


def master_key_id(key: bytes) -> str:
    """The id an envelope names its wrapping key by (a digest, not the key)."""
    return "local-master-" + sha256_bytes(b"secure-pipeline master key id\0" + key)[:16]


def _key_id(kind: Kind, raw: bytes) -> str:
    if kind == "signing":
        return signing_key_id(raw)
    return master_key_id(raw) if kind == "master" else "pii-" + sha256_bytes(raw)[:16]


def _generate(kind: Kind) -> bytes:
    if kind == "signing":
        return ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    return secrets.token_bytes(32)


def _public_pem(private_raw: bytes) -> bytes:
    return (
        load_signing_key(private_raw)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def key_ids(ring: dict[str, Any]) -> dict[str, str]:
    """The active key id of each kind (what the audit log and `keys status` show)."""
    return {kind: str(ring[kind]["active"]) for kind in FILES}


def load_keyring(keys_dir: Path) -> dict[str, Any]:
    """The keyring record.

    Raises:
        KeyFileError: it is missing (and keys exist) or damaged.
    """
    path = keys_dir / KEYRING
    try:
        ring: dict[str, Any] = json.loads(path.read_text())
        for kind in FILES:
            str(ring[kind]["active"])
    except FileNotFoundError:
        raise KeyFileError(
            f"{path} is missing: keys were never set up here (`secure-pipeline keys init`), or "
            "the record was removed; restore the keys directory from your backup"
        ) from None
    except (ValueError, KeyError, TypeError):
        raise KeyFileError(f"{path} is damaged; restore it from your backup") from None
    return ring


def has_keys(keys_dir: Path) -> bool:
    """Any sign that keys were set up here: the keyring record or any key file."""
    names = [KEYRING, PUBLIC_KEY, LEGACY_SIGNING, *FILES.values(), "retired"]
    return any((keys_dir / n).exists() for n in names)


def create(keys_dir: Path) -> dict[str, Any]:
    """Create every key and the keyring record (first setup only).

    Raises:
        KeyFileError: keys, or the record of keys, exist already.
    """
    if has_keys(keys_dir):
        raise KeyFileError(f"{keys_dir} already holds keys; rotate them with `keys rotate`")
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ring: dict[str, Any] = {"version": 1, "created_at": datetime.now(UTC).isoformat()}
    for kind, name in FILES.items():
        raw = _generate(kind)
        write_new(keys_dir / name, raw)
        ring[kind] = {"active": _key_id(kind, raw), "retired": []}
        if kind == "signing":
            write_atomic(keys_dir / PUBLIC_KEY, _public_pem(raw), mode=PUBLIC)
    write_json(keys_dir / KEYRING, ring)
    return ring


def require(keys_dir: Path) -> dict[str, Any]:
    """The keyring, after checking that every active key it records is on disk.

    Raises:
        KeyFileError: a key is missing, too widely readable, or not the recorded one.
    """
    ring = load_keyring(keys_dir)
    if not (keys_dir / PUBLIC_KEY).is_file():
        raise KeyFileError(
            f"{keys_dir / PUBLIC_KEY} is missing: restore the keys directory from your backup "
            "(releases are verified against it; it is never re-derived silently)"
        )
    for kind, name in FILES.items():
        path = keys_dir / name
        if kind == "signing" and not path.exists() and (keys_dir / LEGACY_SIGNING).exists():
            raise KeyFileError(
                f"the signing key under {keys_dir} is Ed25519, from an earlier version; run "
                "`secure-pipeline keys rotate signing` to move to a P-256 key (what it signed "
                "still verifies)"
            )
        if not path.exists():
            raise KeyFileError(
                f"the {kind} key {ring[kind]['active'][:24]} is missing ({path}): restore it "
                "from your backup; a new key would make earlier releases unreadable, so none "
                "is created (a deliberate fresh start: a new state directory)"
            )
        if _key_id(kind, read_secret(path)) != ring[kind]["active"]:
            raise KeyFileError(f"{path} is not the {kind} key the keyring records; restore it")
    return ring


def active_secret(keys_dir: Path, kind: Kind) -> bytes:
    """The active key of `kind`, checked against the keyring."""
    require(keys_dir)
    return read_secret(keys_dir / FILES[kind])


def retired_path(keys_dir: Path, kind: Kind, key_id: str) -> Path:
    suffix = "pub" if kind == "signing" else "aes256"
    return keys_dir / "retired" / f"{kind}-{key_id}.{suffix}"


def public_keys_pem(keys_dir: Path) -> dict[str, bytes]:
    """Every signing public key the pipeline trusts, active and retired, by key id."""
    ring = require(keys_dir)
    found = {ring["signing"]["active"]: (keys_dir / PUBLIC_KEY).read_bytes()}
    for old in ring["signing"]["retired"]:
        found[old] = retired_path(keys_dir, "signing", old).read_bytes()
    return found


def master_keys(keys_dir: Path) -> tuple[str, dict[str, bytes]]:
    """(active key id, every master key by id, retired ones included)."""
    ring = require(keys_dir)
    active = ring["master"]["active"]
    found = {active: read_secret(keys_dir / FILES["master"])}
    for old in ring["master"]["retired"]:
        found[old] = read_secret(retired_path(keys_dir, "master", old))
    return active, found


def rotate(keys_dir: Path, kind: Kind) -> tuple[str, str]:
    """Retire the active `kind` key (kept for verification or decryption) and create
    a new one. Returns (old id, new id).

    Raises:
        KeyFileError: the keyring is incomplete, or `kind` cannot be rotated.
    """
    if kind not in ROTATABLE:
        raise KeyFileError(f"the {kind} key cannot be rotated (pseudonyms would change)")
    legacy = keys_dir / LEGACY_SIGNING
    if kind == "signing" and legacy.exists() and not (keys_dir / FILES[kind]).exists():
        os.replace(legacy, keys_dir / FILES[kind])  # checked below as the recorded key
    ring = require(keys_dir)
    old, active = ring[kind]["active"], keys_dir / FILES[kind]
    keep = retired_path(keys_dir, kind, old)
    keep.parent.mkdir(exist_ok=True, mode=0o700)
    if kind == "signing":
        write_atomic(keep, (keys_dir / PUBLIC_KEY).read_bytes(), mode=PUBLIC)
    else:
        shutil.copy2(active, keep)
    raw = _generate(kind)
    write_atomic(active, raw)
    if kind == "signing":
        write_atomic(keys_dir / PUBLIC_KEY, _public_pem(raw), mode=PUBLIC)
    ring[kind] = {"active": _key_id(kind, raw), "retired": [*ring[kind]["retired"], old]}
    write_json(keys_dir / KEYRING, ring)
    return old, ring[kind]["active"]


def ensure_keys(keys_dir: Path, *, had_runs: Callable[[], bool]) -> tuple[dict[str, Any], bool]:
    """The keyring, created only if this state directory never had keys nor runs.

    Args:
        keys_dir: ``<state>/keys``.
        had_runs: Whether there is evidence of earlier runs (audit entries, anchors or
            releases in the bucket): then missing keys were lost or removed, never new.

    Returns:
        The keyring, and whether it was created now.

    Raises:
        KeyFileError: keys are missing although keys or runs existed before.
    """
    keys_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = os.open(keys_dir.parent / "keys.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent first runs: one creates, all use it
        if has_keys(keys_dir):
            return require(keys_dir), False
        if had_runs():
            raise KeyFileError(
                f"no keys under {keys_dir}, but this state directory or its bucket has earlier "
                "runs: the keys were removed. Restore the keys directory from your backup "
                "(new keys would leave every earlier release unverifiable)"
            )
        return create(keys_dir), True
    finally:
        os.close(lock)
