"""The poisoning screens on a team table (numeric and categorical inputs, missing values,
string labels, an id and an email): a version 3 profile built, signed and verified;
each screen passes clean draws and blocks the attack it is meant for; a version 2
profile (numeric only) screens numeric data exactly as the version 3 one does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tasks.checks.poisoning import category_keys, encoded
from tasks.checks.profile import (
    ProfileError,
    build_and_sign_profile,
    build_profile,
    check_profile_integrity,
    profile_text,
    signature_path,
)
from tasks.common.gates import GateResult
from tasks.common.settings import ScreenConfig
from tasks.screen import poisoning_gates
from tasks.trust.signing import Signer
from tests.mixed_table import CATEGORICAL, NUMERIC, mixed_table

TARGET = "segment"
ROLES: dict[str, Any] = {"numeric": NUMERIC, "categorical": CATEGORICAL}
LIMITS = ScreenConfig()
MEASURE = {  # gate: (measured metric, its limit)
    "screen.label_distribution": ("max_shift", LIMITS.max_label_shift),
    "screen.missingness": ("shift", LIMITS.max_missing_shift),
    "screen.category_shares": ("shift", LIMITS.max_category_shift),
    "screen.label_noise": ("excess", LIMITS.max_label_noise_excess),
    "screen.duplicates": ("duplicate_rate", LIMITS.max_duplicate_rate),
    "screen.near_duplicates": ("excess", LIMITS.max_near_duplicate_rate),
    "screen.outliers": ("excess", LIMITS.max_outlier_rate_excess),
    "screen.backdoor": ("score", LIMITS.max_backdoor_score),
}

RELATIVE = {
    "screen.label_distribution",
    "screen.missingness",
    "screen.category_shares",
    "screen.backdoor",
}


def signed_roundtrip(profile: dict[str, Any]) -> dict[str, Any]:
    """The profile as the screen gets it: JSON text, then parsed."""
    return json.loads(profile_text(profile))


def with_island(frame: pd.DataFrame, *, seed: int) -> pd.DataFrame:
    """1.5% of rows in a rare region (any label): a category rare in the reference."""
    out = frame.copy()
    out.loc[out.sample(frac=0.015, random_state=seed).index, "region"] = "island"
    return out


@pytest.fixture(scope="module")
def profile() -> dict[str, Any]:
    built = build_profile(mixed_table(2000, seed=0), target=TARGET, **ROLES)
    return signed_roundtrip(built)


def screens(frame: pd.DataFrame, profile: dict[str, Any]) -> dict[str, GateResult]:
    return {g.name: g for g in poisoning_gates(frame, profile, limits=LIMITS)}


def failing(frame: pd.DataFrame, profile: dict[str, Any]) -> set[str]:
    return {n for n, g in screens(frame, profile).items() if not g.passed}


# --- the version 3 profile -------------------------------------------------------------------


def test_mixed_profile_build_sign_verify_roundtrip(tmp_path: Path) -> None:
    data = tmp_path / "customers.csv"
    mixed_table(500, seed=0).to_csv(data, index=False)
    signer = Signer(Ed25519PrivateKey.generate())
    out = tmp_path / "customers.profile.json"
    digest = build_and_sign_profile(
        data, target=TARGET, out=out, signer=signer, exclude=["customer_id", "email"], **ROLES
    )
    g, verified = check_profile_integrity(
        out.read_bytes(),
        signature_path(out).read_bytes(),
        keys={"owner": signer.public_key},
        expected_sha256=digest,
    )
    assert g.passed and g.metrics["version"] == 4 and verified["target"] == TARGET
    assert verified["inputs"] == ROLES and set(verified["features"]) == set(NUMERIC)
    assert set(verified["categorical"]) == set(CATEGORICAL)
    assert set(verified["missing_rates"]) == {*NUMERIC, *CATEGORICAL}
    region = verified["categorical"]["region"]
    assert set(region) == {"shares", "missing_rate", "tails"}
    assert region["missing_rate"] == verified["missing_rates"]["region"] > 0.02
    assert sum(region["shares"].values()) + region["missing_rate"] == pytest.approx(1.0)
    assert set(verified["categorical"]["channel_code"]["shares"]) == {"1", "2", "3"}  # codes
    swapped = {
        "inputs": (["income", "age", "balance", "tenure", "channel_code"], ["region", "plan"])
    }
    g, _ = check_profile_integrity(
        out.read_bytes(),
        signature_path(out).read_bytes(),
        keys={"owner": signer.public_key},
        expected_sha256=None,
        **swapped,
    )
    assert (
        not g.passed and "profiled as categorical, declared numeric: ['channel_code']" in g.detail
    )
    text = out.read_text()
    assert "@example.com" not in text and "100000" not in text  # no PII, no ids


def test_profile_records_rare_categories_with_their_labels() -> None:
    p = build_profile(with_island(mixed_table(2000, seed=0), seed=0), target=TARGET, **ROLES)
    tails = p["categorical"]["region"]["tails"]
    assert set(tails) == {"island"}  # the only category under 2%
    assert sum(tails["island"].values()) == pytest.approx(
        p["categorical"]["region"]["shares"]["island"]
    )
    assert p["categorical"]["plan"]["tails"] == {}


def test_profile_refuses_bad_declarations() -> None:
    frame = mixed_table(200, seed=0)
    with pytest.raises(ProfileError, match="not in the data"):
        build_profile(frame, target=TARGET, numeric=["income", "absent"], categorical=[])
    with pytest.raises(ProfileError, match="declared twice"):
        build_profile(frame, target=TARGET, numeric=["income"], categorical=["income"])
    with pytest.raises(ProfileError, match="distinct values"):  # over max_categories: an id
        build_profile(mixed_table(1001), target=TARGET, numeric=["age"], categorical=["email"])
    with pytest.raises(ValueError):  # text declared numeric (or left to the default)
        build_profile(frame, target=TARGET, numeric=["region"], categorical=[])


def test_encoding_of_categories() -> None:
    keys = category_keys(pd.Series([1.0, 2.0, np.nan, 3.0]))
    assert keys.tolist()[:2] == ["1", "2"] and pd.isna(keys[2])
    profile = {
        "features": {"n": {"median": 2.0, "mean": 1.0, "std": 2.0}},
        "categorical": {"c": {"shares": {"a": 0.5, "b": 0.5}}, "k": {"shares": {"1": 1.0}}},
        "params": {"category_weight": 0.5},
    }
    for text in (["a", "b", "z", None], pd.Series(["a", "b", "z", None], dtype="str")):
        frame = pd.DataFrame({"n": [1.0, np.nan, 5.0, 3.0], "c": text, "k": [1, 2, np.nan, 1.0]})
        z, dims = encoded(frame, profile)
        assert dims == 3
        assert z.tolist() == [  # n: (x - mean) / std, NaN as the median; unseen, missing: 0
            [0.0, 0.5, 0.0, 0.5],
            [0.5, 0.0, 0.5, 0.0],
            [2.0, 0.0, 0.0, 0.0],
            [1.0, 0.0, 0.0, 0.5],
        ]


def test_older_profiles_screen_what_they_can_and_ask_for_a_rebuild(bundled: pd.DataFrame) -> None:
    v4 = signed_roundtrip(build_profile(bundled, target="target"))
    v3 = {k: v for k, v in v4.items() if k != "conditional"} | {"version": 3}
    sample = bundled.sample(frac=0.9, random_state=3).reset_index(drop=True)
    old = {g.name: g for g in poisoning_gates(sample, v3, limits=LIMITS)}
    new = {g.name: g for g in poisoning_gates(sample, v4, limits=LIMITS)}
    for name in ("screen.missingness", "screen.backdoor"):
        assert not old[name].passed and "secure-pipeline profile" in old[name].detail
        assert new[name].passed
    for name in set(new) - {"screen.missingness", "screen.backdoor"}:
        assert old[name].model_dump() == new[name].model_dump(), name


# --- calibration -----------------------------------------------------------------------------


def test_twenty_clean_draws_pass_every_screen(profile: dict[str, Any]) -> None:
    """Independent draws (not subsets of the reference); the worst margin per screen
    (limit - measured) is printed (pytest -s) for the record."""
    worst = {name: float("inf") for name in MEASURE}
    for seed in range(1, 21):
        for name, g in screens(mixed_table(2000, seed=seed), profile).items():
            assert g.passed, (seed, g.summary())
            metric, limit = MEASURE[name]
            if name in RELATIVE:  # calibrated: the margin is in significance, not in effect
                worst[name] = min(worst[name], g.metrics.get("p_adjusted", 1.0) - LIMITS.alpha)
            else:
                worst[name] = min(worst[name], limit - g.metrics[metric])
    print("worst margin (limit - measured) over 20 clean draws:", json.dumps(worst))
    assert all(m > 0 for m in worst.values())


# --- detection -------------------------------------------------------------------------------


def test_label_flips_within_one_class_blocked(profile: dict[str, Any]) -> None:
    """10% of the rows flipped from one class (low) to another (medium)."""
    f = mixed_table(2000, seed=7)
    low = f.index[f[TARGET] == "low"]
    f.loc[low[: int(0.10 * len(f))], TARGET] = "medium"
    g = screens(f, profile)
    assert not g["screen.label_distribution"].passed  # first in the report
    assert not g["screen.label_noise"].passed and g["screen.label_noise"].metrics["excess"] > 0.08
    # the flipped rows also crowd the (bin, class) cells of their new class
    assert failing(f, profile) == {
        "screen.label_distribution",
        "screen.label_noise",
        "screen.backdoor",
    }


def test_balanced_flips_blocked_by_label_noise_alone(profile: dict[str, Any]) -> None:
    f = mixed_table(2000, seed=8)
    low, medium = (f.index[f[TARGET] == c][: int(0.05 * len(f))] for c in ("low", "medium"))
    f.loc[low, TARGET], f.loc[medium, TARGET] = "medium", "low"
    assert {"screen.label_noise"} <= failing(f, profile)
    assert "screen.label_distribution" not in failing(f, profile)  # the shares stay


def test_rare_category_backdoor_blocked() -> None:
    reference = with_island(mixed_table(2000, seed=0), seed=0)
    profile = signed_roundtrip(build_profile(reference, target=TARGET, **ROLES))
    clean = with_island(mixed_table(2000, seed=9), seed=9)
    assert failing(clean, profile) == set()
    rows = clean.sample(frac=0.06, random_state=9).index
    poisoned = clean.copy()
    poisoned.loc[rows, "region"], poisoned.loc[rows, TARGET] = "island", "high"
    g = screens(poisoned, profile)["screen.backdoor"]
    assert not g.passed and g.metrics["feature"] == "region"
    assert g.metrics["part"] == "category 'island'" and g.metrics["label"] == "high"
    assert g.metrics["score"] > 0.04 and g.threshold["max_backdoor_score"] == 0.01


def test_unseen_category_backdoor_blocked(profile: dict[str, Any]) -> None:
    f = mixed_table(2000, seed=10)
    rows = f.sample(frac=0.05, random_state=10).index
    f.loc[rows, "plan"], f.loc[rows, TARGET] = "gold", "low"
    g = screens(f, profile)["screen.backdoor"]
    assert not g.passed and g.metrics["feature"] == "plan"
    assert g.metrics["part"] == "unseen categories" and g.metrics["label"] == "low"
    assert "gold" not in json.dumps(g.metrics) + g.detail  # unseen values are never named


def test_unseen_categories_without_a_label_are_blocked_as_shares(profile: dict[str, Any]) -> None:
    f = mixed_table(2000, seed=11)
    f.loc[f.sample(frac=0.05, random_state=11).index, "plan"] = "gold"  # labels as they were
    g = screens(f, profile)["screen.category_shares"]
    assert not g.passed and g.metrics["category"] == "unseen categories"


def test_duplicate_floods_on_content_not_ids(profile: dict[str, Any]) -> None:
    f = mixed_table(2000, seed=12)
    copies = f.sample(n=300, random_state=12)
    copies["customer_id"] += 10_000_000  # new ids and emails, same content
    copies["email"] = [f"x{i}@example.com" for i in range(len(copies))]
    exact = pd.concat([f, copies], ignore_index=True)
    assert {"screen.duplicates", "screen.near_duplicates"} <= failing(exact, profile)
    jittered = copies.copy()
    jittered[NUMERIC] *= 1 + np.random.default_rng(12).normal(0, 1e-3, (len(copies), 4))
    flood = pd.concat([f, jittered], ignore_index=True)
    g = screens(flood, profile)
    assert g["screen.duplicates"].passed and not g["screen.near_duplicates"].passed


def test_numeric_outliers_blocked(profile: dict[str, Any]) -> None:
    f = mixed_table(2000, seed=13)
    f.loc[f.sample(frac=0.06, random_state=13).index, "balance"] *= 40
    g = screens(f, profile)["screen.outliers"]
    assert not g.passed and g.metrics["feature"] == "balance"
    assert g.metrics["features"] == len(NUMERIC)  # categories are never outliers


def test_near_twin_radius_shrinks_for_tables_larger_than_the_reference(
    profile: dict[str, Any],
) -> None:
    """25x the reference's rows pack clean rows closer (4 numeric inputs): with a fixed
    radius 8% of them would have a near twin; a jittered flood is still found."""
    big = mixed_table(50_000, seed=14)
    g = screens(big, profile)
    assert g["screen.near_duplicates"].passed and g["screen.near_duplicates"].metrics["sampled"]
    assert failing(big, profile) == set()
    fixed = {**profile, "params": {**profile["params"], "twin_radius_by_size": False}}
    assert not screens(big, fixed)["screen.near_duplicates"].passed  # what it would do
    copies = big.sample(n=20_000, random_state=14)
    copies[NUMERIC] *= 1 + np.random.default_rng(14).normal(0, 1e-3, (len(copies), 4))
    g = screens(pd.concat([big, copies], ignore_index=True), profile)
    assert not g["screen.near_duplicates"].passed and g["screen.duplicates"].passed
