"""Which public keys a consumer (`verify`, `fetch`) trusts, and whether it takes waivers.

The state directory is the trainer's: whoever holds it can replace ``keys/signing.pub``
or list a key of their own as "retired" in ``keyring.json``. So when public keys are
pinned somewhere the trainer cannot write, releases are checked against those only:

1. ``--trusted-keys PEM [PEM ...]``: the reader's own copy of the trainer's keys;
2. ``[trust] signers`` in the config (a file reviewed like code);
3. neither (the bundled single-machine default): the state directory's keyring, and
   the output says that the trust root is the state directory.

A consumer may also refuse releases that carry a waiver (``--no-waivers``, or
``[trust] refuse_waivers = true`` as the default of every consumer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.common.settings import ConfigError, Settings
from tasks.trust import keys
from tasks.trust.signing import PublicKey, SignatureError, key_id, load_public_pem, trusted_keys


@dataclass(frozen=True)
class TrustRoot:
    keys: dict[str, PublicKey]  # key id -> key
    source: str  # "--trusted-keys", "[trust] signers" or "state directory"
    detail: str  # one sentence for the output

    @property
    def signer(self) -> str:
        """How a signature check names the key that matched."""
        if self.source == "state directory":
            return "the pipeline's key (from the state directory's keyring)"
        return f"a key pinned by {self.source}"


def load_pinned(paths: Sequence[Path], *, where: str) -> dict[str, PublicKey]:
    """Public keys from PEM files, by key id.

    Raises:
        ConfigError: a file is missing, unreadable or not a P-256 / Ed25519 public key.
    """
    found: dict[str, PublicKey] = {}
    for path in paths:
        try:
            key = load_public_pem(Path(path).read_bytes(), str(path))
        except OSError as exc:
            raise ConfigError(f"{where}: {path} cannot be read ({exc.strerror})") from None
        except SignatureError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        found[key_id(key)] = key
    return found


def trust_root(settings: Settings, trusted_keys_arg: Sequence[str] | None = None) -> TrustRoot:
    """The keys this consumer verifies releases with (see the module docstring).

    Raises:
        ConfigError: a pinned key is unusable, or (no pins) the state directory has no
            keys directory or no ``signing.pub`` (nothing was ever signed here).
    """
    if trusted_keys_arg:
        paths = [Path(p).expanduser() for p in trusted_keys_arg]
        pinned = load_pinned(paths, where="--trusted-keys")
        return TrustRoot(
            pinned,
            "--trusted-keys",
            f"trust root: {len(pinned)} key(s) given with --trusted-keys (the state "
            "directory's keyring is not consulted)",
        )
    if settings.trust.signers:
        pinned = load_pinned(settings.trust.signers, where="[trust] signers")
        return TrustRoot(
            pinned,
            "[trust] signers",
            f"trust root: {len(pinned)} key(s) pinned in the config's [trust] signers (the "
            "state directory's keyring is not consulted)",
        )
    kd = settings.keys_dir
    if not kd.is_dir():
        raise ConfigError(
            f"no keys directory at {kd}: keys were never set up here (`secure-pipeline keys "
            "init`, or a first run); to check another's release give the trainer's public key "
            "with --trusted-keys"
        )
    if not (kd / keys.PUBLIC_KEY).is_file():
        raise ConfigError(
            f"{kd / keys.PUBLIC_KEY} is missing: restore the keys directory from your backup, "
            "or give the trainer's public key with --trusted-keys"
        )
    try:
        found = trusted_keys(kd)
    except (keys.KeyFileError, SignatureError, OSError) as exc:
        raise ConfigError(f"the keys under {kd} cannot be used: {exc}") from None
    return TrustRoot(
        found,
        "state directory",
        f"trust root: the state directory's keyring ({kd}); whoever can write it can change "
        "what verifies. Pin the trainer's keys with [trust] signers or --trusted-keys",
    )


def waivers_of(provenance: dict[str, Any]) -> list[dict[str, Any]]:
    """The waivers a release's signed provenance records."""
    from tasks.trust import provenance as slsa

    return list(slsa.internal(provenance).get("waivers", [])) if provenance else []


def waiver_check(provenance: dict[str, Any]) -> tuple[str, bool, str]:
    """`release.waivers` for a consumer that refuses waived releases."""
    waived = waivers_of(provenance)
    if not waived:
        return "release.waivers", True, "no waivers in the signed provenance"
    names = ", ".join(f"{w['gate']} ({w['setting']} = {w['value']})" for w in waived)
    return (
        "release.waivers",
        False,
        f"the release was made with {len(waived)} waiver(s): {names}; this consumer refuses "
        "waived releases (--no-waivers or [trust] refuse_waivers): retrain without them",
    )
