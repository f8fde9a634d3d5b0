"""Poisoning screens: pure functions of a DataFrame and the trusted reference profile.

Each check compares one statistic of the data with the same statistic measured on
the trusted reference (stored in its signed profile, see `tasks.checks.profile`), so
that what is normal for this dataset is never flagged, only what moved:

* label_noise: share of rows whose label disagrees with most of their k nearest
  neighbours (flips that keep the class shares still land in the wrong place);
* near_duplicates: rows with a twin within a tiny distance (a flood of lightly
  jittered copies evades exact deduplication; exact repeats: `duplicate_rate`);
* outliers: per numeric feature, share of rows with a robust z-score above 3.5;

The count-based screens (label_distribution, missingness, category_shares, duplicates,
backdoor) are calibrated comparisons with the reference's counts: see
`tasks.checks.relative`. This module keeps the statistics the profile stores for them.

Neighbours are found in one encoded space: numeric inputs in reference std units
(a missing value at the reference median), categorical inputs one-hot over the
reference's categories (a missing or unseen one is all zeros), scaled so that one
changed category weighs like one std. A version 2 profile has numeric inputs only
and is screened exactly as before. Metrics name features and counts, never values.

Three screens that share the encoding, the neighbour statistics and
the label keys, and the profile builder (tasks.checks.profile) uses the same
statistics, so they stay together rather than being split across modules that
import each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from tasks.checks.keys import MISSING_LABEL as MISSING_LABEL  # re-exported: many import it here
from tasks.checks.keys import FrameKeys
from tasks.checks.keys import label_key as label_key
from tasks.checks.keys import label_keys as label_keys
from tasks.checks.twins import _without_self, nearest_other
from tasks.common.gates import GateResult, check

# Defaults written into a new profile's "params"; checks read them back from the profile.
PARAMS: dict[str, Any] = {
    "k": 5,  # neighbours for the label-noise vote
    "near_duplicate_rms": 0.05,  # twin radius, RMS per feature in reference std units
    "outlier_z": 3.5,  # robust z-score (median/MAD) beyond which a value is an outlier
    "tail_quantiles": [0.01, 0.99],  # backdoor tails: strictly beyond these reference quantiles
    "base_cap": 20_000,  # over this many rows the label vote runs on a random sample
    "query_cap": 1_000,  # ... and near-twins are looked up for this many sampled rows
    # Version 3 (categorical inputs):
    "rare_share": 0.02,  # a category under this reference share is a backdoor candidate
    "category_weight": 0.7071067811865476,  # one-hot value: a changed category = 1 std
    "max_categories": 1_000,  # per column; more is an id or free text, not a category
    # More rows than the reference packs clean rows closer: the twin radius shrinks by
    # (reference rows / rows) ** (1 / numeric inputs), so clean twins stay as rare
    # (a jittered copy is far closer still). Version 2 profiles keep a fixed radius.
    "twin_radius_by_size": True,
}
UNSEEN = "unseen category"  # backdoor "tail" of categories absent from the reference
RARE = "rare category"


def label_shares(labels: pd.Series) -> dict[str, float]:
    """Share of each class (missing labels count as their own class)."""
    counts = label_keys(labels).value_counts()
    return {str(k): float(v) / len(labels) for k, v in counts.items()}


def duplicate_rate(frame: pd.DataFrame) -> float:
    """Share of rows that exactly repeat an earlier row (all columns, label included).

    Rows are hashed first and only rows whose hash repeats are compared exactly
    (15x faster than comparing all rows at 1M rows; the result is the same).
    """
    if not len(frame):
        return 0.0
    candidates = pd.util.hash_pandas_object(frame, index=False).duplicated(keep=False)
    return float(frame[candidates.to_numpy()].duplicated(keep="first").sum()) / len(frame)


def category_keys(values: pd.Series) -> pd.Series:
    """Categories as profile keys (as `label_key`: 1 and 1.0 are one); missing stays NaN."""
    mapping = {v: label_key(v) for v in values.dropna().unique()}
    return values.map(mapping).astype(object)


def profile_inputs(profile: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The (numeric, categorical) inputs a profile describes (version 2: numeric only)."""
    if "inputs" in profile:
        return list(profile["inputs"]["numeric"]), list(profile["inputs"]["categorical"])
    return list(profile["features"]), []


def content_columns(profile: Mapping[str, Any]) -> list[str]:
    """The columns the screens read: the inputs and the label (never ids or PII)."""
    numeric, categorical = profile_inputs(profile)
    return [*numeric, *categorical, profile["target"]]


def feature_values(frame: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(frame[column], errors="raise").to_numpy(dtype="float64", na_value=np.nan)


def robust_z(values: np.ndarray, stats: Mapping[str, Any]) -> np.ndarray:
    """|x - median| / (1.4826 MAD); a zero MAD falls back to the std, then to 1e-12."""
    scale = 1.4826 * stats["mad"] or stats["std"] or 1e-12
    with np.errstate(invalid="ignore"):
        return np.abs(values - stats["median"]) / scale


def outlier_rate(values: np.ndarray, stats: Mapping[str, Any], *, z: float) -> float:
    """Share of rows (NaN counts as not an outlier) whose robust z-score exceeds `z`."""
    return float(np.count_nonzero(robust_z(values, stats) > z)) / len(values)


def tail_masks(values: np.ndarray, stats: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Rows strictly beyond the reference's low and high tail quantiles."""
    return {"low": values < stats["tail_low"], "high": values > stats["tail_high"]}


def tail_label_shares(mask: np.ndarray, labels: pd.Series) -> dict[str, float]:
    """For one tail: each label's count among tail rows, as a share of ALL rows."""
    counts = labels[mask].value_counts()
    return {str(k): float(v) / len(labels) for k, v in counts.items()}


def _codes(
    frame: pd.DataFrame, profile: Mapping[str, Any], keys: FrameKeys | None
) -> dict[str, np.ndarray]:
    """Each categorical input's code in its sorted reference categories (-1: missing or
    unseen), from `keys` when the caller already converted the frame's columns."""
    keys = keys or FrameKeys(frame)
    cats = profile.get("categorical", {})
    return {col: keys.codes(col, sorted(st["shares"])) for col, st in cats.items()}


def encoded(
    frame: pd.DataFrame,
    profile: Mapping[str, Any],
    *,
    keys: FrameKeys | None = None,
    codes: Mapping[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, int]:
    """The neighbour space of the profile's inputs, and its number of input columns.

    Numeric inputs in reference std units (NaN becomes the reference median), then for
    each categorical input a one-hot block over its reference categories, weighted by
    ``category_weight`` (a missing or unseen category is all zeros: one coordinate away
    from every known one). A few whole-column operations, not many small ones: beside
    validation, each NumPy call gives up the GIL and waits up to the switch interval to
    get it back (32k-row blocks cost 0.9 s at 1M rows there, 0.4 s alone). The numeric
    inputs are scaled in place as rows of their own (contiguous) and written into the
    matrix in one transposed copy. `keys`: the frame's converted columns, if made."""
    features = profile["features"]
    categorical = {c: sorted(st["shares"]) for c, st in profile.get("categorical", {}).items()}
    by_col = codes if codes is not None else _codes(frame, profile, keys)
    codes_ = [by_col[col] for col in categorical]
    offsets = np.cumsum([len(features), *(len(c) for c in categorical.values())])[:-1]
    weight = profile["params"].get("category_weight", 1.0)
    z = np.zeros((len(frame), len(features) + sum(len(c) for c in categorical.values())))
    if features:
        values = np.empty((len(features), len(frame)))
        for j, col in enumerate(features):
            values[j] = feature_values(frame, col)
        stats = [(st["median"], st["mean"], st["std"] or 1.0) for st in features.values()]
        median, mean, std = (
            np.array(s, dtype=np.float64)[:, None] for s in zip(*stats, strict=True)
        )
        np.copyto(values, np.broadcast_to(median, values.shape), where=np.isnan(values))
        values -= mean
        values /= std
        z[:, : len(features)] = values.T
        del values
    for offset, code in zip(offsets, codes_, strict=True):
        hit = np.flatnonzero(code >= 0)
        z[hit, offset + code[hit]] = weight
    return z, len(features) + len(categorical)


@dataclass(frozen=True)
class NeighbourStats:
    label_noise_rate: float
    near_duplicate_rate: float
    vote_rows: int  # rows whose neighbour vote was counted
    twin_queries: int  # rows whose nearest twin was looked up
    sampled: bool


def twin_radius(profile: Mapping[str, Any], *, rows: int, dims: int) -> float:
    """Distance within which a row is a near twin (see ``twin_radius_by_size``)."""
    p = profile["params"]
    radius = float(p["near_duplicate_rms"] * np.sqrt(max(dims, 1)))
    numeric = len(profile["features"])
    if p.get("twin_radius_by_size") and numeric and rows > profile["rows"] > 0:
        radius *= (profile["rows"] / rows) ** (1 / numeric)
    return radius


def neighbour_stats(
    frame: pd.DataFrame,
    profile: Mapping[str, Any],
    *,
    seed: int = 0,
    keys: FrameKeys | None = None,
) -> NeighbourStats:
    """Leave-one-out k-NN label disagreement and near-twin rate, in reference std units.

    Up to ``base_cap`` rows everything is exact. Above it, the label vote runs on a
    random ``base_cap``-row sample (so the neighbour density matches a reference of
    the same size) and near twins are looked up for ``query_cap`` random rows among
    ALL rows (a flood is found wherever its copies are), within the query's group of
    equal categories when the twin radius allows it (`tasks.checks.twins`: same result
    as searching all rows). `keys`: the frame's converted columns (`FrameKeys`, shared
    with the count screens), made here if not given.
    """
    p = profile["params"]
    keys = keys or FrameKeys(frame)
    codes = _codes(frame, profile, keys)
    z, dims = encoded(frame, profile, codes=codes)
    labels = keys.labels(profile["target"]).codes  # equal codes <=> equal label keys
    n = len(z)
    if n < 2:
        raise ValueError("need at least two rows")
    radius = twin_radius(profile, rows=n, dims=dims)
    rng = np.random.default_rng(seed)
    sampled = n > p["base_cap"]
    base = np.sort(rng.choice(n, p["base_cap"], replace=False)) if sampled else np.arange(n)
    k = min(p["k"], len(base) - 1)
    nn = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(z[base])
    dist, idx = nn.kneighbors(z[base])
    idx, dist = _without_self(idx, dist, np.arange(len(base)), k)
    agree = (labels[base][idx] == labels[base][:, None]).sum(axis=1)
    noise = float(np.count_nonzero(agree < k / 2)) / len(base)
    if sampled:
        queries = np.sort(rng.choice(n, min(p["query_cap"], n), replace=False))
        nearest = nearest_other(
            z,
            queries,
            codes=list(codes.values()),
            numeric=len(profile["features"]),
            radius=radius,
            category_weight=p.get("category_weight", 1.0),
        )
        dist = nearest[:, None]
    else:
        queries = base
    near = float(np.count_nonzero(dist[:, 0] <= radius)) / len(queries)
    return NeighbourStats(
        label_noise_rate=noise,
        near_duplicate_rate=near,
        vote_rows=len(base),
        twin_queries=len(queries),
        sampled=sampled,
    )


# --- checks: each returns one named gate ---------------------------------------------------


def _sampling(stats: NeighbourStats) -> dict[str, Any]:
    return {
        "sampled": stats.sampled,
        "vote_rows": stats.vote_rows,
        "twin_queries": stats.twin_queries,
    }


Z_LABEL_NOISE = 2.326  # one-sided 99% normal quantile


def expected_label_noise(profile: Mapping[str, Any], *, rows: int | None) -> float:
    """The reference's label-noise rate at `rows` rows (see `check_label_noise`)."""
    full, n_full = float(profile["label_noise_rate"]), int(profile["rows"])
    half = profile.get("label_noise_half")
    if not half or rows is None or rows >= n_full or half["rows"] >= n_full:
        return full
    n_half, r_half = int(half["rows"]), float(half["rate"])
    at = (np.log(max(rows, n_half)) - np.log(n_half)) / (np.log(n_full) - np.log(n_half))
    return max(full, r_half + at * (full - r_half))


def check_label_noise(
    stats: NeighbourStats,
    profile: Mapping[str, Any],
    *,
    max_excess: float,
    rows: int | None = None,
) -> GateResult:
    """`screen.label_noise`: k-NN disagreement rate - reference rate <= max_excess.

    `rows` is the number of rows screened. Fewer rows than the reference means sparser
    neighbourhoods, where clean labels disagree more often (a clean 80% sample of a
    234-row table measured 0.07-0.14 above the whole table's rate): when the profile
    also holds the rate of a seeded half of the reference (``label_noise_half``), the
    reference rate is interpolated in log(rows) between the half and the whole (never
    extrapolated below half the reference, never lowered). The excess must also exceed
    the rate's own binomial noise on the voting rows (one-sided 99%, ``noise_99``).
    """
    ref = expected_label_noise(profile, rows=rows)
    excess = stats.label_noise_rate - ref
    # The vote rate is a binomial share of `vote_rows` rows: only what lies beyond its
    # one-sided 99% noise counts (0.003 on 20k vote rows, 0.08 on 190).
    noise = Z_LABEL_NOISE * float(np.sqrt(max(ref * (1 - ref), 1e-12) / max(stats.vote_rows, 1)))
    ok = excess - noise <= max_excess
    return check(
        "screen.label_noise",
        ok=ok,
        metrics={
            "rate": stats.label_noise_rate,
            "reference_rate": ref,
            "excess": excess,
            "noise_99": noise,
            "rows": rows if rows is not None else -1,
            "k": profile["params"]["k"],
            **_sampling(stats),
        },
        threshold={"max_label_noise_excess": max_excess},
        detail=""
        if ok
        else "more rows disagree with their neighbours' label than in "
        "the reference: possible label flipping; audit the labels",
    )


def check_near_duplicates(
    stats: NeighbourStats, profile: Mapping[str, Any], *, max_rate: float
) -> GateResult:
    """`screen.near_duplicates`: share of rows with a near twin - reference share <= max_rate."""
    ref = float(profile["near_duplicate_rate"])
    excess = stats.near_duplicate_rate - ref
    ok = excess <= max_rate
    return check(
        "screen.near_duplicates",
        ok=ok,
        metrics={
            "rate": stats.near_duplicate_rate,
            "reference_rate": ref,
            "excess": excess,
            **_sampling(stats),
        },
        threshold={
            "max_near_duplicate_rate": max_rate,
            "radius_rms_std": profile["params"]["near_duplicate_rms"],
        },
        detail=""
        if ok
        else "many rows have an almost identical twin: possible flood "
        "of jittered copies; find where the rows came from",
    )


def check_outliers(
    frame: pd.DataFrame, profile: Mapping[str, Any], *, max_excess: float
) -> GateResult:
    """`screen.outliers`: worst feature's robust-z outlier rate - its reference rate."""
    z = profile["params"]["outlier_z"]
    worst, excess, rate = "", -1.0, 0.0
    for col, st in profile["features"].items():
        r = outlier_rate(feature_values(frame, col), st, z=z)
        if r - st["outlier_rate"] > excess:
            worst, excess, rate = col, r - st["outlier_rate"], r
    ok = excess <= max_excess
    ref = profile["features"][worst]["outlier_rate"] if worst else 0.0
    return check(
        "screen.outliers",
        ok=ok,
        metrics={
            "feature": worst,
            "rate": rate,
            "reference_rate": ref,
            "excess": excess,
            "features": len(profile["features"]),
        },
        threshold={"max_outlier_rate_excess": max_excess, "robust_z": z},
        detail=""
        if ok
        else f"feature {worst!r} has far more outliers than the "
        "reference: possible injected rows or a unit change",
    )
