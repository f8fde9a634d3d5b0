"""The signed reference profile: build, sign, verify, and screen.profile_integrity."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tasks.checks.profile import (
    PROFILE_TYPE,
    ProfileError,
    build_and_sign_profile,
    build_profile,
    check_profile_integrity,
    load_signer_key,
    profile_text,
    signature_path,
    trusted_keys,
    verify_profile,
    write_profile,
)
from tasks.common.context import RunContext
from tasks.common.gates import GateFailed, GateResult
from tasks.screen import screen
from tasks.trust import keys
from tasks.trust.signing import Signer, key_id
from tests.conftest import BUNDLED_CSV, PROJECT_ROOT, as_dataset, variant

SIGNER_PUB = PROJECT_ROOT / "data" / "breast_cancer.profile-signer.pub"


def integrity(ctx: RunContext, bundled: pd.DataFrame) -> GateResult:
    """Run the screen; return its profile_integrity result (passed or not)."""
    try:
        _, results = screen(ctx, as_dataset(bundled))
    except GateFailed as exc:
        results = exc.results
    return next(r for r in results if r.name == "screen.profile_integrity")


def copy_bundled(ctx: RunContext, tmp_path: Path) -> Path:
    src = ctx.settings.dataset.reference_profile
    dst = tmp_path / "profile.json"
    dst.write_bytes(src.read_bytes())
    signature_path(dst).write_bytes(signature_path(src).read_bytes())
    return dst


# --- building --------------------------------------------------------------------------------


def local_signer(keys_dir: Path) -> Signer:
    keys.create(keys_dir)
    return Signer.local(keys_dir)


V3_ONLY = ("inputs", "categorical", "missing_rates")


def as_version_2(profile: dict[str, Any]) -> dict[str, Any]:
    """A numeric-only version 3 profile, as version 2 wrote it."""
    v2 = {k: v for k, v in profile.items() if k not in V3_ONLY}
    v2_params = ("k", "near_duplicate_rms", "outlier_z", "tail_quantiles", "base_cap", "query_cap")
    return {**v2, "version": 2, "params": {k: profile["params"][k] for k in v2_params}}


def test_bundled_profile_is_what_build_profile_writes(
    ctx: RunContext, bundled: pd.DataFrame
) -> None:
    """The bundled version 4 profile (signed offline by its data owner) is reproducible:
    exactly what build_profile writes for the bundled data."""
    built = build_profile(bundled, target="target")
    assert built["version"] == 4 and built["categorical"] == {}
    assert built["inputs"] == {"numeric": list(bundled.columns[:-1]), "categorical": []}
    assert set(built["missing_rates"]) == set(bundled.columns[:-1])
    text = profile_text(built)
    assert text == ctx.settings.dataset.reference_profile.read_text()
    assert built["conditional"]["classes"] == ["0", "1"]
    profile = json.loads(text)
    assert profile["rows"] == 569 and len(profile["features"]) == 30
    assert set(profile["label_shares"]) == {"0", "1"} and profile["duplicate_rate"] == 0.0
    assert 0.0 < profile["label_noise_rate"] < 0.1 and profile["near_duplicate_rate"] == 0.0
    assert set(profile["features"]["mean radius"]) == {
        "mean",
        "std",
        "median",
        "mad",
        "quantiles",
        "tail_low",
        "tail_high",
        "outlier_rate",
        "tails",
    }
    assert set(profile["features"]["mean radius"]["tails"]) == {"low", "high"}


def test_build_profile_tiny() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 3.0], "target": [0, 1, 1, 1]})
    profile = build_profile(frame, target="target")
    assert profile["label_shares"] == {"0": 0.25, "1": 0.75}
    assert profile["features"]["x"]["quantiles"]["q00"] == 1.0
    assert profile["features"]["x"]["quantiles"]["q100"] == 3.0
    assert profile["duplicate_rate"] == 0.25 and profile["columns"] == ["x", "target"]
    assert profile["near_duplicate_rate"] == 0.5  # both 3.0 rows have a twin


def test_build_profile_excludes_declared_columns() -> None:
    frame = pd.DataFrame(
        {"x": [1.0, 2.0, 3.0], "email": ["a@x", "b@x", "c@x"], "target": [0, 1, 1]}
    )
    with pytest.raises(ValueError):
        build_profile(frame, target="target")  # text is never profiled silently
    assert set(build_profile(frame, target="target", exclude=["email"])["features"]) == {"x"}


def test_build_and_sign_profile_csv_and_parquet(tmp_path: Path, bundled: pd.DataFrame) -> None:
    keys.create(tmp_path / "keys")
    signer = Signer.local(tmp_path / "keys")
    parquet = tmp_path / "data.bin"  # the format is sniffed, not taken from the name
    bundled.to_parquet(parquet)
    digest = build_and_sign_profile(
        parquet, target="target", out=tmp_path / "p.json", signer=signer
    )
    raw = (tmp_path / "p.json").read_bytes()
    profile, who = verify_profile(
        raw, signature_path(tmp_path / "p.json").read_bytes(), {"pipeline": signer.public_key}
    )
    assert who == "pipeline" and profile["rows"] == 569 and len(digest) == 64
    build_and_sign_profile(BUNDLED_CSV, target="target", out=tmp_path / "c.json", signer=signer)
    assert (tmp_path / "c.json").read_bytes() == raw


def test_build_and_sign_profile_refuses_pickle(tmp_path: Path, bundled: pd.DataFrame) -> None:
    data = tmp_path / "data.csv"
    data.write_bytes(pickle.dumps(bundled))
    with pytest.raises(ProfileError):
        build_and_sign_profile(
            data,
            target="target",
            out=tmp_path / "p.json",
            signer=Signer(Ed25519PrivateKey.generate()),
        )
    assert not (tmp_path / "p.json").exists()


# --- screen.profile_integrity ----------------------------------------------------------------


def test_bundled_profile_signed_by_the_data_owner(ctx: RunContext, bundled: pd.DataFrame) -> None:
    g = integrity(ctx, bundled)
    assert g.passed and g.metrics["signer"] == SIGNER_PUB.name and g.metrics["pin_matched"]
    assert g.metrics["signer_key_id"] == key_id(load_signer_key(SIGNER_PUB))[:16]


def test_tampered_profile_blocked(ctx: RunContext, bundled: pd.DataFrame, tmp_path: Path) -> None:
    path = copy_bundled(ctx, tmp_path)
    text = path.read_text()
    needle = '"label_noise_rate": 0.029876977152899824'
    assert needle in text
    path.write_text(text.replace(needle, '"label_noise_rate": 0.129876977152899824'))
    g = integrity(variant(ctx, reference_profile=path, reference_profile_sha256=None), bundled)
    assert not g.passed and g.metrics["signed"] is False and "edited after signing" in g.detail


def test_reformatted_profile_still_verifies(
    ctx: RunContext, bundled: pd.DataFrame, tmp_path: Path
) -> None:
    path = copy_bundled(ctx, tmp_path)
    path.write_text(json.dumps(json.loads(path.read_text())))  # same content, other layout
    assert integrity(
        variant(ctx, reference_profile=path, reference_profile_sha256=None), bundled
    ).passed


def test_unsigned_profile_blocked(ctx: RunContext, bundled: pd.DataFrame, tmp_path: Path) -> None:
    path = copy_bundled(ctx, tmp_path)
    signature_path(path).unlink()
    g = integrity(variant(ctx, reference_profile=path, reference_profile_sha256=None), bundled)
    assert not g.passed and g.metrics == {"readable": True, "signed": False}
    assert "signature" in g.detail


def test_missing_profile_blocked(ctx: RunContext, bundled: pd.DataFrame, tmp_path: Path) -> None:
    g = integrity(variant(ctx, reference_profile=tmp_path / "absent.json"), bundled)
    assert not g.passed and g.metrics["readable"] is False


def test_profile_signed_by_unknown_key_blocked(
    ctx: RunContext, bundled: pd.DataFrame, tmp_path: Path
) -> None:
    path = tmp_path / "profile.json"
    write_profile(
        build_profile(bundled, target="target"), path, signer=Signer(Ed25519PrivateKey.generate())
    )
    g = integrity(variant(ctx, reference_profile=path, reference_profile_sha256=None), bundled)
    assert not g.passed and "no valid signature by a trusted key" in g.detail


def test_profile_signed_by_local_pipeline_key_passes(
    ctx: RunContext, bundled: pd.DataFrame, tmp_path: Path
) -> None:
    path = tmp_path / "profile.json"
    build_and_sign_profile(
        BUNDLED_CSV, target="target", out=path, signer=local_signer(ctx.settings.keys_dir)
    )
    local = variant(ctx, reference_profile=path, reference_profile_sha256=None, profile_signers=[])
    g = integrity(local, bundled)
    assert g.passed and g.metrics["signer"] == "pipeline" and g.metrics["pin_matched"] is None
    _, results = screen(local, as_dataset(bundled))
    assert all(r.passed for r in results)


def test_pin_is_enforced_when_set(ctx: RunContext, bundled: pd.DataFrame) -> None:
    g = integrity(variant(ctx, reference_profile_sha256="0" * 64), bundled)
    assert not g.passed and g.metrics["signed"] is True and g.metrics["pin_matched"] is False


def test_profile_of_other_inputs_blocked(ctx: RunContext, bundled: pd.DataFrame) -> None:
    """A column the config no longer treats as an input, or one the profile never saw,
    would go unscreened: the profile must be rebuilt."""
    g = integrity(variant(ctx, ignored=["mean radius"]), bundled)
    assert not g.passed and g.metrics["signed"] and g.metrics["inputs_match"] is False
    assert "in the profile but not inputs: ['mean radius']" in g.detail
    assert integrity(ctx, bundled).metrics["inputs_match"] is True


def test_missing_signer_key_blocked(ctx: RunContext, bundled: pd.DataFrame, tmp_path: Path) -> None:
    g = integrity(variant(ctx, profile_signers=[tmp_path / "gone.pub"]), bundled)
    assert not g.passed and "gone.pub" in g.detail


def test_signature_of_another_type_or_profile_refused(bundled: pd.DataFrame) -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    keys = {"owner": signer.public_key}
    profile = build_profile(bundled.head(100), target="target")
    raw = profile_text(profile).encode()
    other = json.dumps(signer.sign(profile, payload_type="application/other")).encode()
    with pytest.raises(ProfileError):
        verify_profile(raw, other, keys)
    older = build_profile(bundled.head(99), target="target")
    swapped = json.dumps(signer.sign(older, payload_type=PROFILE_TYPE)).encode()
    with pytest.raises(ProfileError, match="edited after signing"):
        verify_profile(raw, swapped, keys)
    with pytest.raises(ProfileError):
        verify_profile(raw, b"not json", keys)
    good = json.dumps(signer.sign(profile, payload_type=PROFILE_TYPE)).encode()
    assert verify_profile(raw, good, keys) == (profile, "owner")


def test_old_profile_version_refused(bundled: pd.DataFrame) -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    profile = {**build_profile(bundled.head(50), target="target"), "version": 1}
    raw = profile_text(profile).encode()
    sig = json.dumps(signer.sign(profile, payload_type=PROFILE_TYPE)).encode()
    g, _ = check_profile_integrity(raw, sig, keys={"o": signer.public_key}, expected_sha256=None)
    assert not g.passed and "version" in g.detail


def test_trusted_keys(tmp_path: Path) -> None:
    assert trusted_keys(tmp_path / "keys", []) == {}  # no local key generated by verifying
    assert not (tmp_path / "keys").exists()
    keys.create(tmp_path / "keys")
    assert set(trusted_keys(tmp_path / "keys", [SIGNER_PUB])) == {"pipeline", SIGNER_PUB.name}
    bad = tmp_path / "rsa.pub"
    bad.write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
    with pytest.raises(ProfileError):
        trusted_keys(tmp_path / "keys", [bad])
