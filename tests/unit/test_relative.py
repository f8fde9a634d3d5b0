"""The relative screens (tasks/checks/relative.py) and their comparison machinery
(tasks/checks/compare.py): a passing and a failing case per gate on tiny frames, the
issue-17 attacks on synthetic and bundled data, and clean resamples passing.

SCREEN_CALIBRATION_DRAWS=200 runs more clean resamples (default: a modest number)."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tasks.checks.compare import compare_counts, fisher_pvalues, holm_adjusted, material
from tasks.checks.conditional import build_conditional
from tasks.checks.profile import build_profile
from tasks.checks.relative import (
    Counts,
    check_backdoor,
    check_category_shares,
    check_duplicates,
    check_label_distribution,
    check_missingness,
)
from tests.conftest import PROJECT_ROOT
from tests.mixed_table import CATEGORICAL, NUMERIC, mixed_table

REL = {"alpha": 0.001, "min_relative": 0.25, "floor": 0.005}
DRAWS = int(os.environ.get("SCREEN_CALIBRATION_DRAWS", "20"))
BUNDLED = PROJECT_ROOT / "data" / "breast_cancer.csv"


def gates(frame: pd.DataFrame, profile: dict[str, Any]) -> dict[str, Any]:
    counts = Counts(frame, profile)
    cols = [*profile["inputs"]["numeric"], *profile["inputs"]["categorical"], profile["target"]]
    return {
        "label_distribution": check_label_distribution(counts, profile, max_shift=0.05, **REL),
        "missingness": check_missingness(counts, profile, max_shift=0.05, **REL),
        "category_shares": check_category_shares(counts, profile, max_shift=0.05, **REL),
        "duplicates": check_duplicates(frame[cols], profile, max_rate=0.02, alpha=0.001),
        "backdoor": check_backdoor(counts, profile, max_score=0.01, alpha=0.001, min_relative=0.25),
    }


def blocked(frame: pd.DataFrame, profile: dict[str, Any]) -> set[str]:
    return {k for k, g in gates(frame, profile).items() if not g.passed}


# --- compare.py ------------------------------------------------------------------------------


def test_fisher_matches_scipy() -> None:
    from scipy.stats import fisher_exact

    for x, n, x0, n0 in [(3, 20, 10, 25), (0, 100, 7, 90), (50, 60, 40, 80)]:
        _, p = fisher_exact([[x, n - x], [x0, n0 - x0]], alternative="greater")
        assert fisher_pvalues(x, n, x0, n0, alternative="greater")[0] == pytest.approx(p)
    assert fisher_pvalues(1, 0, 0, 10)[0] == 1.0  # no rows: no evidence


def test_holm_and_material() -> None:
    assert holm_adjusted([0.01, 0.04, 0.03]).tolist() == pytest.approx([0.03, 0.06, 0.06])
    # a 3% class losing 30% is material (relative); a 50% class moving 0.009 is not
    m = material([0.021, 0.509], [0.03, 0.5], floor=0.005, min_shift=0.05, min_relative=0.25)
    assert m.tolist() == [True, False]


def test_huge_tables_do_not_block_on_tiny_drift() -> None:
    c = compare_counts(505_000, 1_000_000, 500_000, 1_000_000, alpha=0.001, **_effects())
    assert c.significant[0] and not c.flagged[0]  # significant, but 0.005 of a 50% class


def _effects() -> dict[str, float]:
    return {"floor": 0.005, "min_shift": 0.05, "min_relative": 0.25}


# --- tiny frames: a pass and a fail per gate ---------------------------------------------------


def tiny(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1])
    x = rng.normal(0, 1, n) + (y == "b")
    colour = rng.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2])
    frame = pd.DataFrame({"x": x.round(3), "colour": colour, "y": y})
    frame.loc[rng.random(n) < 0.05, "x"] = np.nan
    return frame


def tiny_profile(frame: pd.DataFrame) -> dict[str, Any]:
    return build_profile(frame, target="y", numeric=["x"], categorical=["colour"])


@pytest.fixture(scope="module")
def tref() -> dict[str, Any]:
    return tiny_profile(tiny(4000, seed=0))


def test_tiny_clean_draw_passes(tref: dict[str, Any]) -> None:
    g = gates(tiny(1000, seed=1), tref)
    assert all(r.passed for r in g.values()), {k: r.summary() for k, r in g.items()}


def test_tiny_label_distribution_fails_on_small_class_drop(tref: dict[str, Any]) -> None:
    frame = tiny(4000, seed=2)
    c = frame.index[frame["y"] == "c"]
    frame.loc[c[: len(c) * 4 // 10], "y"] = "b"  # 40% of a 10% class
    g = gates(frame, tref)["label_distribution"]
    assert not g.passed and g.metrics["class"] == "c" and "'c'" in g.detail
    assert g.threshold["max_label_shift"] == 0.05 and g.metrics["p_adjusted"] <= 0.001


def test_tiny_missingness_fails_on_class_gaps(tref: dict[str, Any]) -> None:
    frame = tiny(4000, seed=3)
    c = frame.index[frame["y"] == "c"]
    frame.loc[c[: len(c) // 3], "x"] = np.nan  # a third of class c loses x
    g = gates(frame, tref)["missingness"]
    assert not g.passed and g.metrics["column"] == "x" and g.metrics["rows_of"] == "class 'c'"


def test_tiny_category_shares_fail_on_tripled_category(tref: dict[str, Any]) -> None:
    frame = tiny(4000, seed=4)
    frame.loc[frame.index[:800], "colour"] = "blue"
    g = gates(frame, tref)["category_shares"]
    assert not g.passed and g.metrics["column"] == "colour" and "blue" in g.metrics["category"]


def test_tiny_duplicates_relative_to_the_reference() -> None:
    base = tiny(400, seed=5)
    own = pd.concat([base, base.iloc[:20]], ignore_index=True)  # the reference repeats 4.8%
    p = tiny_profile(own)
    assert gates(own.sample(frac=0.8, random_state=1), p)["duplicates"].passed
    flood = pd.concat([own, own.iloc[:5].loc[np.repeat(own.index[:5], 12)]], ignore_index=True)
    g = gates(flood, p)["duplicates"]
    assert not g.passed and g.metrics["reference_rate"] == p["duplicate_rate"] > 20 / 420


def test_tiny_backdoor_fails_on_a_label_pure_band(tref: dict[str, Any]) -> None:
    frame = tiny(4000, seed=6)
    rows = frame.sample(n=120, random_state=6).index  # 3% of rows
    frame.loc[rows, "x"] = np.random.default_rng(6).uniform(0.40, 0.45, 120)
    frame.loc[rows, "y"] = "c"
    g = gates(frame, tref)["backdoor"]
    assert not g.passed and g.metrics["feature"] == "x" and g.metrics["label"] in ("c", "")
    assert "0.4" not in g.detail  # bins are named by index, never by value


def test_older_profiles_fail_closed_with_a_rebuild_hint(tref: dict[str, Any]) -> None:
    v3 = {k: v for k, v in tref.items() if k != "conditional"} | {"version": 3}
    g = gates(tiny(1000, seed=1), v3)
    for name in ("missingness", "backdoor"):
        assert not g[name].passed and "secure-pipeline profile" in g[name].detail
    assert g["label_distribution"].passed and g["category_shares"].passed


# --- the issue-17 attacks on the synthetic and the bundled tables -----------------------------


@pytest.fixture(scope="module")
def mixed() -> tuple[pd.DataFrame, dict[str, Any]]:
    frame = mixed_table(5000, seed=0)
    return frame, build_profile(
        frame, target="segment", numeric=NUMERIC, categorical=CATEGORICAL, exclude=["email"]
    )


def test_mixed_attacks_block(mixed: tuple[pd.DataFrame, dict[str, Any]]) -> None:
    frame, p = mixed
    rng = np.random.default_rng(0)
    n = len(frame)
    # an unseen category on 1.8% of rows, all one label
    bad = frame.copy()
    rows = rng.choice(n, int(0.018 * n), replace=False)
    bad.loc[rows, "region"], bad.loc[rows, "segment"] = "zz-unseen", "high"
    assert {"category_shares", "backdoor"} <= blocked(bad, p)
    # a rare-ish category tripled, labels untouched
    bad = frame.copy()
    west = bad.index[bad["region"] != "west"]
    bad.loc[rng.choice(west, int(0.2 * n), replace=False), "region"] = "west"
    assert "category_shares" in blocked(bad, p)
    # 12% of the largest class lose an imputed input
    bad = frame.copy()
    low = bad.index[(bad["segment"] == "low") & bad["balance"].notna()]
    bad.loc[rng.choice(low, int(0.12 * len(low)), replace=False), "balance"] = np.nan
    assert "missingness" in blocked(bad, p)


def test_mixed_clean_resamples_pass(mixed: tuple[pd.DataFrame, dict[str, Any]]) -> None:
    frame, p = mixed
    for s in range(DRAWS):
        assert not blocked(frame.sample(frac=0.8, random_state=s), p), s


@pytest.fixture(scope="module")
def bundled() -> tuple[pd.DataFrame, dict[str, Any]]:
    return pd.read_csv(BUNDLED), json.loads(BUNDLED.with_suffix(".profile.json").read_text())


def test_bundled_profile_is_version_4(bundled: tuple[pd.DataFrame, dict[str, Any]]) -> None:
    frame, p = bundled
    assert p["version"] == 4 and set(p["conditional"]["numeric"]) == set(frame) - {"target"}


def test_bundled_single_value_and_minority_flip_block(
    bundled: tuple[pd.DataFrame, dict[str, Any]],
) -> None:
    frame, p = bundled
    rng = np.random.default_rng(1)
    bad = frame.copy()
    rows = rng.choice(len(frame), 34, replace=False)  # 6%: one inside-range value, one label
    bad.loc[rows, "mean texture"] = frame["mean texture"].quantile(0.3)
    bad.loc[rows, "target"] = 0
    g = gates(bad, p)["backdoor"]
    assert not g.passed and g.metrics["feature"] == "mean texture"
    bad = frame.copy()
    zeros = bad.index[bad["target"] == 0]
    bad.loc[zeros[: len(zeros) * 3 // 10], "target"] = 1  # 30% of the smaller class
    assert "label_distribution" in blocked(bad, p)


def test_bundled_clean_resamples_pass(bundled: tuple[pd.DataFrame, dict[str, Any]]) -> None:
    frame, p = bundled
    for s in range(DRAWS):
        assert not blocked(frame.sample(frac=0.8, random_state=s), p), s
        boot = frame.sample(n=len(frame), replace=True, random_state=s)
        assert not blocked(boot, p) - {"duplicates"}, s  # a bootstrap repeats 37% of rows
        perm = np.random.default_rng(s).permutation(len(frame))
        half = build_profile(frame.iloc[perm[: len(frame) // 2]], target="target")
        assert not blocked(frame.iloc[perm[len(frame) // 2 :]], half), s


def test_conditional_top_count() -> None:
    frame = pd.DataFrame({"v": [1.0, 1.0, 2.0, np.nan], "y": [0, 1, 0, 1]})
    cond = build_conditional(frame, target="y", numeric=["v"], categorical=[])
    assert cond["numeric"]["v"]["top_count"] == 2
