"""The data steward's signature on the expectation suite (the governed mode).

The suite decides what data passes `validate`; a trainer who may rebuild it from a
poisoned table and re-pin ``dataset.suite_sha256`` in the config can make every
expectation hold. With ``[trust] signers`` configured (trust roots pinned, the
governed mode) the suite must therefore also carry ``<suite>.sig``: a DSSE envelope
whose payload is the suite itself, signed by a key listed in
``dataset.profile_signers`` (the data steward, who also signs the reference
profile). The trainer's own key never counts there. Unpinned (the bundled
single-machine default), the sha256 pin alone guards the suite, as before.

The steward signs with ``secure-pipeline suite DATA --out SUITE --key STEWARD.pem``
(or ``profile ... --key``): the same DSSE helpers as the profile's signature.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks.common.files import PUBLIC, read_capped, write_atomic
from tasks.common.settings import Settings
from tasks.trust.signing import PublicKey, SignatureError, Signer, verify

SUITE_TYPE = "application/vnd.secure-pipeline.suite+json"


class SuiteSignatureError(ValueError):
    """The suite's signature is missing, malformed, by an untrusted key, or stale."""


def signature_path(suite_path: Path) -> Path:
    """Where a suite's signature sits: ``<suite>.sig`` beside it."""
    return suite_path.with_name(suite_path.name + ".sig")


def sign_suite(suite_path: Path, signer: Signer) -> Path:
    """Sign the suite file as written (its parsed content is the payload); write
    ``<suite>.sig`` and return its path."""
    content = json.loads(suite_path.read_text(encoding="utf-8"))
    envelope = signer.sign(content, payload_type=SUITE_TYPE)
    out = signature_path(suite_path)
    write_atomic(out, json.dumps(envelope, indent=2) + "\n", mode=PUBLIC)
    return out


def verify_suite(raw: bytes, sig_raw: bytes | None, keys: Mapping[str, PublicKey]) -> str:
    """The name of the trusted key that signed exactly this suite.

    Args:
        raw: The suite file's bytes.
        sig_raw: ``<suite>.sig``'s bytes; None when there is none.
        keys: The data steward's keys by name (``dataset.profile_signers``).

    Raises:
        SuiteSignatureError: no signature, not a DSSE envelope, no valid signature by
            a listed key, or the file differs from what was signed.
    """
    if sig_raw is None:
        raise SuiteSignatureError("the suite has no signature file (SUITE.sig)")
    try:
        envelope: Any = json.loads(sig_raw)
        content = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise SuiteSignatureError("the suite or its signature is not valid JSON") from None
    if not isinstance(envelope, dict):
        raise SuiteSignatureError("the suite's signature file is not a DSSE envelope")
    for name, key in keys.items():
        try:
            payload = verify(envelope, public_key=key, payload_type=SUITE_TYPE)
        except SignatureError:
            continue
        if payload != content:
            raise SuiteSignatureError(
                f"the suite differs from what {name} signed: it was edited after signing"
            )
        return name
    raise SuiteSignatureError(
        "no valid signature by a dataset.profile_signers key (the trainer's key does not "
        "count when [trust] signers is set)"
    )


def steward_arguments(settings: Settings, *, max_bytes: int) -> dict[str, Any]:
    """The suite-signature arguments of `tasks.validate.check_suite_integrity`: none
    when trust roots are unpinned (the sha256 pin alone); with ``[trust] signers``, the
    data steward's keys (``dataset.profile_signers``, never the trainer's) and the
    bytes of ``<suite>.sig`` (None when it is missing or unreadable)."""
    # FORK: to require signed suites without pinned trust roots, change this test.
    if not settings.trust.signers:
        return {}
    from tasks.checks.profile import ProfileError, trusted_keys

    try:
        sig_raw: bytes | None = read_capped(
            signature_path(settings.dataset.suite), max_bytes=max_bytes, follow_symlinks=True
        )
    except OSError:
        sig_raw = None
    try:
        keys = trusted_keys(settings.keys_dir, settings.dataset.profile_signers, trainer=False)
    except ProfileError as exc:
        return {"sig_raw": sig_raw, "key_error": str(exc)}
    return {"sig_raw": sig_raw, "steward_keys": keys}
