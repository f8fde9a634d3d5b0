"""Poisoning checks on small synthetic frames: each passes on a fresh clean draw and
fails on the attack it is meant for. Calibration on the bundled data is in test_screen.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from tasks.checks.poisoning import (
    check_label_noise,
    check_near_duplicates,
    check_outliers,
    duplicate_rate,
    label_shares,
    neighbour_stats,
    robust_z,
)
from tasks.checks.profile import build_profile
from tasks.checks.relative import check_backdoor, check_duplicates, check_label_distribution
from tasks.common.gates import run_check

FEATURES = ["x0", "x1", "x2", "x3"]
LIMITS = {"noise": 0.05, "near": 0.05, "outliers": 0.04, "backdoor": 0.01}
RELATIVE = {"alpha": 0.001, "min_relative": 0.25, "floor": 0.005}


def draw(n: int, seed: int) -> pd.DataFrame:
    """Two Gaussian classes, 4 features, shifted apart on x0 and x2."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.6).astype(int)
    x = rng.standard_normal((n, 4))
    x[:, 0] += 3.0 * y
    x[:, 2] -= 2.0 * y
    return pd.DataFrame(x, columns=FEATURES).assign(target=y)


@pytest.fixture(scope="module")
def profile() -> dict[str, Any]:
    return build_profile(draw(1000, seed=0), target="target")


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    return draw(1000, seed=1)  # an independent draw, not a subset of the reference


def gates(frame: pd.DataFrame, profile: dict[str, Any]) -> dict[str, Any]:
    nb = neighbour_stats(frame, profile)
    return {
        "noise": check_label_noise(nb, profile, max_excess=LIMITS["noise"]),
        "near": check_near_duplicates(nb, profile, max_rate=LIMITS["near"]),
        "outliers": check_outliers(frame, profile, max_excess=LIMITS["outliers"]),
        "backdoor": check_backdoor(
            frame, profile, max_score=LIMITS["backdoor"], alpha=0.001, min_relative=0.25
        ),
    }


def test_fresh_clean_draw_passes_every_check(profile: dict[str, Any], clean: pd.DataFrame) -> None:
    g = gates(clean, profile)
    assert all(r.passed for r in g.values()), {k: r.summary() for k, r in g.items()}


# --- screen.label_noise ----------------------------------------------------------------------


def test_label_flips_raise_label_noise(profile: dict[str, Any], clean: pd.DataFrame) -> None:
    flipped = clean.copy()
    ones = flipped.index[flipped["target"] == 1][:100]  # 10% of rows, one class
    flipped.loc[ones, "target"] = 0
    g = gates(flipped, profile)["noise"]
    assert not g.passed and g.metrics["excess"] > 0.07
    assert g.metrics["reference_rate"] == profile["label_noise_rate"]
    assert g.threshold == {"max_label_noise_excess": 0.05} and "label flipping" in g.detail


def test_balanced_flips_keep_shares_but_not_neighbours(
    profile: dict[str, Any], clean: pd.DataFrame
) -> None:
    flipped = clean.copy()
    ones = flipped.index[flipped["target"] == 1][:40]
    zeros = flipped.index[flipped["target"] == 0][:40]
    flipped.loc[ones, "target"], flipped.loc[zeros, "target"] = 0, 1
    assert check_label_distribution(flipped, profile, max_shift=0.05, **RELATIVE).passed
    assert not gates(flipped, profile)["noise"].passed


# --- screen.near_duplicates ------------------------------------------------------------------


def test_jittered_flood_is_near_duplicate(profile: dict[str, Any], clean: pd.DataFrame) -> None:
    rng = np.random.default_rng(2)
    copies = clean.sample(n=250, random_state=2)
    copies[FEATURES] += rng.normal(0, 1e-3, size=(250, 4))
    flood = pd.concat([clean, copies], ignore_index=True)
    assert check_duplicates(flood, profile, max_rate=0.02, alpha=0.001).passed  # no exact one
    g = gates(flood, profile)["near"]
    assert not g.passed and g.metrics["rate"] > 0.3 and g.metrics["sampled"] is False


def test_near_duplicates_under_sampling(profile: dict[str, Any], clean: pd.DataFrame) -> None:
    small = {**profile, "params": {**profile["params"], "base_cap": 300, "query_cap": 200}}
    nb = neighbour_stats(clean, small, seed=3)
    assert nb.sampled and nb.vote_rows == 300 and nb.twin_queries == 200
    assert check_near_duplicates(nb, small, max_rate=0.05).passed
    flood = pd.concat([clean, clean.sample(n=600, random_state=3)], ignore_index=True)
    nb = neighbour_stats(flood, small, seed=3)  # twins found among ALL rows, not the sample
    assert not check_near_duplicates(nb, small, max_rate=0.05).passed
    assert nb.near_duplicate_rate > 0.5


def test_many_exact_duplicates_do_not_break_the_vote() -> None:
    frame = pd.DataFrame(
        {"x0": [0.0] * 12 + [5.0, 6.0, 7.0, 8.0, 9.0, 10.0], "target": [1] * 12 + [0] * 6}
    )
    p = build_profile(frame, target="target")  # self is not always among 0-distance ties
    assert p["near_duplicate_rate"] == pytest.approx(12 / 18)
    assert p["label_noise_rate"] == 0.0


# --- screen.outliers -------------------------------------------------------------------------


def test_injected_extremes_are_outliers(profile: dict[str, Any], clean: pd.DataFrame) -> None:
    bad = clean.copy()
    bad.loc[bad.index[:60], "x3"] = 40.0
    g = gates(bad, profile)["outliers"]
    assert not g.passed and g.metrics["feature"] == "x3"
    assert g.metrics["excess"] == pytest.approx(0.06, abs=0.01)
    assert "40" not in str(g.metrics)  # no data values, only rates and names


def test_robust_z_with_zero_mad() -> None:
    stats = {"median": 1.0, "mad": 0.0, "std": 2.0}
    assert robust_z(np.array([1.0, 5.0]), stats).tolist() == [0.0, 2.0]
    assert robust_z(np.array([1.0, 1.5]), {**stats, "std": 0.0})[1] > 1e6


# --- screen.backdoor -------------------------------------------------------------------------


def test_backdoor_trigger_detected(profile: dict[str, Any], clean: pd.DataFrame) -> None:
    bad = clean.copy()
    rows = bad.sample(n=60, random_state=4).index  # 6% of rows
    bad.loc[rows, "x1"] = profile["features"]["x1"]["tail_high"] + 0.2  # rare, not absurd
    bad.loc[rows, "target"] = 0
    g = gates(bad, profile)
    assert g["outliers"].passed  # the trigger is not extreme enough to be an outlier
    b = g["backdoor"]
    assert not b.passed and b.metrics["feature"] == "x1" and b.metrics["label"] in ("0", "")
    assert b.metrics["score"] > 0.04 and b.metrics["p_adjusted"] <= 0.001
    assert "backdoor" in b.detail and "x1" in b.detail


# --- screen.label_distribution and screen.duplicates -----------------------------------------


def test_label_keys_are_type_independent() -> None:
    assert label_shares(pd.Series([1.0, 0.0])) == label_shares(pd.Series([1, 0]))


def test_duplicate_rate_matches_exact_comparison() -> None:
    rng = np.random.default_rng(6)
    frame = pd.DataFrame(rng.integers(0, 3, size=(500, 3)).astype(float), columns=list("abc"))
    frame.loc[::7, "a"] = np.nan
    frame.loc[::11, "b"] = -0.0
    assert duplicate_rate(frame) == frame.duplicated().sum() / len(frame)
    assert duplicate_rate(frame.head(0)) == 0.0


def test_checks_fail_closed_on_missing_feature(
    profile: dict[str, Any], clean: pd.DataFrame
) -> None:
    broken = clean.drop(columns=["x2"])
    for g in (
        run_check("screen.outliers", check_outliers, broken, profile, max_excess=0.5),
        run_check(
            "screen.backdoor",
            check_backdoor,
            broken,
            profile,
            max_score=0.5,
            alpha=0.001,
            min_relative=0.25,
        ),
    ):
        assert not g.passed and "KeyError" in g.detail
    with pytest.raises(KeyError):
        neighbour_stats(broken, profile)
