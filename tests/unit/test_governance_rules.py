"""Role keys made with openssl, the [governance] settings, and the two-person rule's
arithmetic (`approvals.needed`, `promotion.shortfall`), without a store."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tasks.common.settings import GovernanceConfig, load_settings
from tasks.governance import approvals, promotion, roles
from tasks.trust.signing import key_id

P256 = ("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _make(tmp: Path, name: str, *gen: str, mode: int = 0o600) -> Path:
    pem = tmp / f"{name}.pem"
    _openssl(*gen, "-out", str(pem))
    pem.chmod(mode)
    if "rsa" not in name:
        _openssl("pkey", "-in", str(pem), "-pubout", "-out", str(tmp / f"{name}.pub"))
    return pem


def test_pkcs8_and_sec1_keys_load_with_the_id_of_their_public_half(tmp_path: Path) -> None:
    pkcs8 = _make(tmp_path, "pkcs8", *P256)
    sec1 = _make(tmp_path, "sec1", "ecparam", "-name", "prime256v1", "-genkey", "-noout")
    assert b"BEGIN PRIVATE KEY" in pkcs8.read_bytes()
    assert b"BEGIN EC PRIVATE KEY" in sec1.read_bytes()
    for pem in (pkcs8, sec1):
        signer = roles.load_private_key(pem)
        assert signer.key_id == key_id(roles.load_public_key(pem.with_suffix(".pub")))
    listed = roles.listed([pkcs8.with_suffix(".pub"), sec1.with_suffix(".pub")] * 2)
    assert len(listed) == 2  # a key listed twice counts once


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (
            lambda t: _make(
                t, "p384", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"
            ),
            "curve secp384r1",
        ),
        (
            lambda t: _make(
                t, "rsa", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"
            ),
            "RSA",
        ),
        (lambda t: _make(t, "ed", "genpkey", "-algorithm", "ED25519"), "Ed25519"),
        (lambda t: _make(t, "open", *P256, mode=0o644), "has mode 644"),
        (lambda t: _make(t, "pub", *P256).with_suffix(".pub"), "holds a public key"),
        (
            lambda t: _written(
                t, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
            ),
            "is not a PEM private key",
        ),
        (lambda t: t / "missing.pem", "No such file"),
    ],
)
def test_a_wrong_private_key_is_a_usage_error_naming_file_and_cause(
    tmp_path: Path, make: Any, says: str
) -> None:
    path = make(tmp_path)
    with pytest.raises(roles.RoleKeyError, match=says) as err:
        roles.load_private_key(path)
    assert str(path) in str(err.value)


def test_a_listed_key_must_be_a_p256_public_key(tmp_path: Path) -> None:
    pem = _make(tmp_path, "k", *P256)
    with pytest.raises(roles.RoleKeyError, match="holds a private key"):
        roles.load_public_key(pem)
    p384 = _make(
        tmp_path, "p384", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"
    )
    with pytest.raises(roles.RoleKeyError, match="secp384r1"):
        roles.load_public_key(p384.with_suffix(".pub"))


def _written(tmp: Path, body: bytes) -> Path:
    path = tmp / "bad.pem"
    path.write_bytes(body)
    path.chmod(0o600)
    return path


def test_governance_settings_refuse_a_rule_nobody_can_meet(tmp_path: Path) -> None:
    assert load_settings().governance.required_approvals == 0  # the bundled config
    with pytest.raises(ValidationError, match="lists 1 key"):
        GovernanceConfig(
            required_approvals=2, approvers=[tmp_path / "a.pub"] * 2, promoters=[tmp_path / "p.pub"]
        )
    with pytest.raises(ValidationError, match=r"needs governance\.promoters"):
        GovernanceConfig(required_approvals=1, approvers=[tmp_path / "a.pub"])
    with pytest.raises(ValidationError):
        GovernanceConfig(required_approvals=-1)
    governed = load_settings(Path("data/breast_cancer.governed.toml").resolve())
    assert governed.governance.required_approvals == 2
    assert governed.governance.approvers[0].is_absolute()


def test_pinned_signers_are_the_trainer_not_the_state_keyring(tmp_path: Path) -> None:
    """With ``[trust] signers`` the trainer (never an approver; a promoter only while no
    approval is required) is the pinned keys: a key listed in the keyring is not."""
    from tasks.common.settings import TrustConfig
    from tasks.trust import keys

    settings = load_settings(state_dir=tmp_path / "state")
    keys.ensure_keys(settings.keys_dir, had_runs=lambda: False)
    ring = set(roles.trainer_keys(settings))
    assert len(ring) == 1  # unpinned: the keyring's key
    _make(tmp_path, "pinned", *P256)
    pinned = settings.model_copy(update={"trust": TrustConfig(signers=[tmp_path / "pinned.pub"])})
    assert set(roles.trainer_keys(pinned)) == {
        key_id(roles.load_public_key(tmp_path / "pinned.pub"))
    }
    assert set(roles.promoters(pinned)) == set(roles.trainer_keys(pinned))  # required = 0
    assert not ring & set(roles.promoters(pinned))


def _release(waivers: list[dict[str, Any]]) -> approvals.Release:
    return approvals.Release(
        name="m",
        version="3",
        uri="s3://b/models/m/3/release.dsse.json",
        sha256="ab" * 32,
        version_id="v",
        waivers=waivers,
        signers={"t" * 64},
        verified=None,  # type: ignore[arg-type]
    )


def test_a_waiver_always_needs_one_approval() -> None:
    waiver = {
        "gate": "evaluate.quality",
        "setting": "evaluate.min_accuracy",
        "value": 0.5,
        "safe": ">= 0.75",
        "reason": "pilot",
    }
    settings = load_settings()
    assert approvals.needed(settings, _release([])) == 0
    assert approvals.needed(settings, _release([waiver])) == 1
    none = approvals.Found(refused=["key 0123: self-approval"])
    missing = promotion.shortfall(settings, _release([waiver]), none)
    assert missing is not None and "0 of 1" in missing and "never self-granted" in missing
    assert "self-approval" in missing and "secure-pipeline approve models:/m/3" in missing
    one = approvals.Found(valid=[approvals.Approval("k" * 64, "x", "v", "s", "ok", "t")])
    assert promotion.shortfall(settings, _release([waiver]), one) is None
