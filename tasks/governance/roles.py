"""The keys of the governance roles: approvers and promoters.

Each person holds an ECDSA P-256 private key in a PEM file (PKCS#8 from ``openssl
genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256``, or SEC1 from ``openssl
ecparam -name prime256v1 -genkey``), 0600 like every key of the project; the config
lists the public halves (``openssl pkey -in KEY -pubout``) by path in
``[governance] approvers`` and ``promoters``. A key is named by its key id: the
sha256 of its DER SubjectPublicKeyInfo, the ``keyid`` of every DSSE signature it
makes (`tasks.trust.signing`), so an approval names its signer without any name a
person could choose.

Anything that is not a P-256 key (another curve, RSA, Ed25519, a public key where a
private one is needed, an encrypted or damaged file) is refused with the file and
the cause: `RoleKeyError`, a configuration error (exit 2).
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tasks.common.settings import ConfigError, Settings
from tasks.trust import keys
from tasks.trust.signing import PublicKey, Signer, key_id, trusted_keys

CURVE = "secp256r1"  # P-256, prime256v1
MAKE_KEY = "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out KEY.pem"


class RoleKeyError(ConfigError):
    """A role's key file is missing, unreadable, or not an ECDSA P-256 key."""


def _kind(key: object) -> str:
    """What a parsed key is, in words, for the refusal."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return f"an EC key on curve {key.curve.name}"
    return (
        f"a {type(key).__name__.lstrip('_').replace('PrivateKey', '').replace('PublicKey', '')} key"
    )


def load_private_key(path: Path | str) -> Signer:
    """A role's signer from its private key file (PKCS#8 or SEC1 PEM, P-256, 0600).

    Raises:
        RoleKeyError: missing, group/world-readable, encrypted, malformed, a public key,
            or not P-256.
    """
    path = Path(path).expanduser()
    try:
        head = path.read_bytes()[:4096]
    except OSError as exc:
        raise RoleKeyError(f"key file {path} cannot be read ({exc.strerror})") from None
    if b"PUBLIC KEY-----" in head and b"PRIVATE KEY-----" not in head:
        raise RoleKeyError(
            f"key file {path} holds a public key; --key needs the private key (the public "
            "half is what the config lists)"
        )
    try:
        pem = keys.read_secret(path)  # 0600, like every key of the project
    except keys.KeyFileError as exc:
        raise RoleKeyError(str(exc)) from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise RoleKeyError(
            f"key file {path} is encrypted; give an unencrypted P-256 key (0600)"
        ) from None
    except (ValueError, Exception) as exc:  # noqa: BLE001 - every parser failure says the same
        raise RoleKeyError(
            f"key file {path} is not a PEM private key ({type(exc).__name__}); make one with "
            f"`{MAKE_KEY}`"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != CURVE:
        raise RoleKeyError(
            f"key file {path} is {_kind(key)}; role keys are ECDSA P-256 (prime256v1): `{MAKE_KEY}`"
        )
    return Signer(key)


def load_public_key(path: Path | str) -> PublicKey:
    """A listed role's public key (PEM SubjectPublicKeyInfo, P-256).

    Raises:
        RoleKeyError: missing, malformed, a private key, or not P-256.
    """
    path = Path(path).expanduser()
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise RoleKeyError(f"public key file {path} cannot be read ({exc.strerror})") from None
    if b"PRIVATE KEY-----" in pem:
        raise RoleKeyError(
            f"public key file {path} holds a private key: list only the public half "
            f"(`openssl pkey -in KEY.pem -pubout -out {path.name}`) and keep the private key "
            "with its holder"
        )
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, Exception) as exc:  # noqa: BLE001
        raise RoleKeyError(
            f"public key file {path} is not a PEM public key ({type(exc).__name__})"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != CURVE:
        raise RoleKeyError(f"public key file {path} is {_kind(key)}; role keys are ECDSA P-256")
    return key


def listed(paths: list[Path]) -> dict[str, PublicKey]:
    """The listed public keys by key id (a key listed twice counts once)."""
    return {key_id(k): k for k in (load_public_key(p) for p in paths)}


def approvers(settings: Settings) -> dict[str, PublicKey]:
    """``governance.approvers`` by key id."""
    return listed(settings.governance.approvers)


def promoters(settings: Settings) -> dict[str, PublicKey]:
    """Who may sign the champion record: ``governance.promoters``, and with
    ``required_approvals = 0`` also the trainer (the pipeline's keys), as before roles."""
    found = listed(settings.governance.promoters)
    if settings.governance.required_approvals == 0:
        found.update(trainer_keys(settings))
    return found


def trainer_keys(settings: Settings) -> dict[str, PublicKey]:
    """The trainer's keys: never an approver, and never a promoter once approvals are
    required (with ``required_approvals = 0`` they are the promoters besides the list).

    When ``[trust] signers`` pins the trainer's public keys, those pins are the trainer,
    never the state directory's keyring: the keyring is the trainer's own to edit, and
    a key added there as "retired" must not become a promoter, nor a key removed from it
    stop counting as the trainer. Unpinned (the bundled single-machine default), the
    keyring, active and retired keys.

    Raises:
        ConfigError: a pinned key is missing or unusable.
    """
    if settings.trust.signers:
        from tasks.trust.roots import load_pinned

        return load_pinned(settings.trust.signers, where="[trust] signers")
    if not keys.has_keys(settings.keys_dir):
        return {}
    return dict(trusted_keys(settings.keys_dir))


def short(kid: str) -> str:
    """A key id as people read it (16 hex characters)."""
    return kid[:16]
