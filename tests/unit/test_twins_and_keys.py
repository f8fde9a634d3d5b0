"""The near-twin search by categorical group (tasks/checks/twins.py) against the brute
search over all rows it replaced, and the one-per-column key conversion
(tasks/checks/keys.py) against the per-value conversion it replaced, across dtypes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import NearestNeighbors

from tasks.checks import twins
from tasks.checks.conditional import bin_index
from tasks.checks.counts import Counts
from tasks.checks.keys import MISSING_LABEL, FrameKeys, category_codes, label_key, label_keys
from tasks.checks.poisoning import (
    NeighbourStats,
    category_keys,
    encoded,
    neighbour_stats,
    twin_radius,
)
from tasks.checks.profile import build_profile

NUMERIC = ["a", "b", "c"]


def brute_neighbour_stats(
    frame: pd.DataFrame, profile: dict[str, Any], *, seed: int
) -> NeighbourStats:
    """`neighbour_stats` as it was before the grouped search: the brute search over all
    rows, and label keys converted per value (`Series.map`)."""
    p = profile["params"]
    z, dims = encoded(frame, profile)
    target = frame[profile["target"]]
    mapping = {v: label_key(v) for v in target.dropna().unique()}
    labels = target.map(mapping).fillna(MISSING_LABEL).astype(str).to_numpy()
    n = len(z)
    radius = twin_radius(profile, rows=n, dims=dims)
    rng = np.random.default_rng(seed)
    sampled = n > p["base_cap"]
    base = np.sort(rng.choice(n, p["base_cap"], replace=False)) if sampled else np.arange(n)
    k = min(p["k"], len(base) - 1)
    dist, idx = (
        NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(z[base]).kneighbors(z[base])
    )
    idx, dist = twins._without_self(idx, dist, np.arange(len(base)), k)
    agree = (labels[base][idx] == labels[base][:, None]).sum(axis=1)
    noise = float(np.count_nonzero(agree < k / 2)) / len(base)
    queries = base
    if sampled:
        queries = np.sort(rng.choice(n, min(p["query_cap"], n), replace=False))
        qdist, qidx = (
            NearestNeighbors(n_neighbors=2, algorithm="brute").fit(z).kneighbors(z[queries])
        )
        _, dist = twins._without_self(qidx, qdist, queries, 1)
    near = float(np.count_nonzero(dist[:, 0] <= radius)) / len(queries)
    return NeighbourStats(noise, near, len(base), len(queries), sampled)


def table(rows: int, *, seed: int, categorical: bool = True) -> pd.DataFrame:
    """Clean rows, then copies at several distances: exact duplicates, jittered copies
    (some within the twin radius, some beyond), copies with one category changed,
    and rows with a missing or (for the reference) unseen category."""
    rng = np.random.default_rng(seed)
    y = rng.choice(["x", "y", "z"], rows)
    frame = pd.DataFrame(rng.standard_normal((rows, 3)), columns=NUMERIC)
    if categorical:
        frame["colour"] = rng.choice(["red", "green", "blue"], rows)
        frame["size"] = rng.choice([1, 2], rows)
    frame["label"] = y
    parts = [frame]
    for scale in (0.0, 0.002, 0.02, 0.08):  # 0: exact duplicates
        copy = frame.sample(n=rows // 10, random_state=int(scale * 1000) + seed).copy()
        copy[NUMERIC] += rng.normal(0, scale, size=(len(copy), 3))
        parts.append(copy)
    if categorical:
        moved = frame.sample(n=rows // 10, random_state=seed + 7).copy()
        moved["colour"] = np.where(moved["colour"] == "red", "blue", "red")
        gaps = frame.sample(n=rows // 10, random_state=seed + 8).copy()
        gaps.loc[gaps.index[::2], "colour"] = None
        gaps.loc[gaps.index[1::2], "colour"] = "violet"  # unseen by the reference
        gaps.loc[gaps.index[::3], "size"] = np.nan
        parts += [moved, gaps]
    return pd.concat(parts, ignore_index=True).sample(frac=1.0, random_state=seed)


def profile_of(frame: pd.DataFrame, **params: Any) -> dict[str, Any]:
    cats = [c for c in ("colour", "size") if c in frame.columns]
    clean = frame[frame.get("colour", pd.Series("red", index=frame.index)) != "violet"]
    p = build_profile(clean.head(400), target="label", numeric=NUMERIC, categorical=cats)
    return {**p, "params": {**p["params"], "base_cap": 300, "query_cap": 500, **params}}


@pytest.mark.parametrize(
    ("seed", "categorical", "params"),
    [
        (1, True, {}),
        (2, True, {"near_duplicate_rms": 0.03}),
        (3, False, {}),  # no categorical input: the brute search
        (4, True, {"category_weight": 0.05}),  # radius above the weight: the brute search
    ],
)
def test_grouped_search_gives_the_brute_result(
    seed: int, categorical: bool, params: dict[str, Any]
) -> None:
    frame = table(1200, seed=seed, categorical=categorical)
    profile = profile_of(frame, **params)
    z, dims = encoded(frame, profile)
    grouped = twin_radius(profile, rows=len(z), dims=dims) < profile["params"]["category_weight"]
    assert (grouped and categorical) == ("category_weight" not in params and categorical)
    for s in (seed, seed + 10):
        new = neighbour_stats(frame, profile, seed=s)
        assert new == brute_neighbour_stats(frame, profile, seed=s)
        assert new.sampled and 0 < new.near_duplicate_rate < 1  # twins found, not all rows


def test_the_radius_decides_which_search_runs() -> None:
    """With rows one category apart and a radius above the weight, only the brute search
    finds them: the fallback matters; below the weight, grouping is exact."""
    frame = table(1200, seed=5)
    profile = profile_of(frame, category_weight=0.05)
    z, dims = encoded(frame, profile)
    radius = twin_radius(profile, rows=len(z), dims=dims)
    assert radius >= 0.05
    codes = [
        FrameKeys(frame).codes(c, sorted(profile["categorical"][c]["shares"]))
        for c in ("colour", "size")
    ]
    queries = np.arange(0, len(z), 3)
    brute = twins.brute_nearest_other(z, queries)
    grouped = twins.grouped_nearest_other(z[:, :3], queries, twins.code_groups(codes, len(z)))
    assert ((grouped <= radius) != (brute <= radius)).any()  # grouping would miss twins
    # Below the weight: a twin within it is always in the group, at the same distance.
    # (a row exactly w away, known vs missing category, comes out as w - 5e-16)
    inside = brute < 0.05 * (1 - twins.MARGIN)
    assert inside.sum() > 50 and (np.abs(brute - 0.05) < 1e-12).sum() > 10
    np.testing.assert_allclose(grouped[inside], brute[inside], atol=1e-6)
    assert (grouped[~inside] >= 0.05 * (1 - twins.MARGIN)).all()


def test_one_huge_group_is_searched_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(9)
    z = np.round(rng.standard_normal((3000, 4)), 2)  # rounding makes exact duplicates
    queries = np.sort(rng.choice(3000, 200, replace=False))
    monkeypatch.setattr(twins, "CHUNK_CELLS", 200 * 97)  # chunks of 97 rows
    grouped = twins.grouped_nearest_other(z, queries, np.zeros(3000, dtype=np.int64))
    np.testing.assert_allclose(grouped, twins.brute_nearest_other(z, queries), atol=1e-6)
    alone = twins.grouped_nearest_other(z, queries[:3], np.arange(3000))  # a group each
    assert np.isinf(alone).all()


def test_code_groups_stay_exact_beyond_the_integer_range() -> None:
    rng = np.random.default_rng(4)
    codes = [rng.integers(-1, 999, 5000) for _ in range(9)]  # 1000 ** 9 overflows int64
    codes[3] = codes[2].copy()
    groups = twins.code_groups(codes, 5000)
    tuples = pd.Series(list(zip(*codes, strict=True)))
    assert groups.min() >= 0
    assert (pd.factorize(tuples)[0] == pd.factorize(groups)[0]).all()


# --- keys: one conversion per column, same keys in every dtype ----------------------------


def old_category_codes(values: pd.Series, categories: list[str]) -> np.ndarray:
    keys = values if isinstance(values.dtype, pd.StringDtype) else category_keys(values)
    return np.asarray(pd.Index(categories).get_indexer(keys))


def old_label_keys(labels: pd.Series) -> pd.Series:
    mapping = {v: label_key(v) for v in labels.dropna().unique()}
    return labels.map(mapping).fillna(MISSING_LABEL).astype(str)


TEXT = ["red", None, "blue", "violet", np.nan, "red", pd.NA, "blue"]
VARIANTS = {
    "object": pd.Series(TEXT, dtype=object),
    "str": pd.Series(TEXT, dtype="str"),
    "string": pd.Series(TEXT, dtype="string"),
    "category": pd.Series(TEXT, dtype="category"),
    "int": pd.Series([1, 2, 2, 3, 1, 1, 9, 2]),
    "Int64": pd.Series([1, None, 2, 3, 1, pd.NA, 9, 2], dtype="Int64"),
    "string python": pd.Series(TEXT, dtype="string[python]"),
    "bool": pd.Series([True, False, True, True]),
    "float": pd.Series([1.0, np.nan, 2.0, 3.0, 1.0, None, 9.5, 2.0]),
    "mixed": pd.Series([1, 1.0, "1", None, 2.0, True, "a", np.nan], dtype=object),
    "empty": pd.Series([], dtype="str"),
    "all missing": pd.Series([None, np.nan], dtype=object),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_keys_match_the_per_value_conversion(name: str) -> None:
    values = VARIANTS[name].set_axis(range(10, 10 + len(VARIANTS[name])))
    categories = ["1", "2", "blue", "red", "zzz"]
    expected = old_category_codes(values, categories)
    assert category_codes(values, categories).tolist() == expected.tolist()
    keys = FrameKeys(pd.DataFrame({"c": values}))
    assert keys.codes("c", categories).tolist() == expected.tolist()
    assert keys.missing("c").tolist() == values.isna().tolist()
    # (the per-value conversion failed on a categorical label column with gaps)
    old = old_label_keys(values.astype(object) if name == "category" else values)
    new = label_keys(values)
    assert new.tolist() == old.tolist() and new.index.equals(old.index)
    assert str(new.dtype) == str(old.dtype) or name == "category"
    labelled = keys.labels("c")
    assert (labelled.codes >= 0).all()
    assert labelled.keys[labelled.codes].tolist() == old.tolist()


def test_counts_match_the_per_value_conversion() -> None:
    frame = table(600, seed=6)
    frame["label"] = frame["label"].astype("str").where(frame.index % 17 != 0, None)
    profile = build_profile(
        frame.dropna(subset=["label"]).head(300),
        target="label",
        numeric=NUMERIC,
        categorical=["colour", "size"],
    )
    counts = Counts(frame, profile)
    old = old_label_keys(frame["label"])
    assert counts.labels.tolist() == old.tolist()
    assert counts.label_counts == {str(k): int(v) for k, v in old.value_counts().items()}
    assert MISSING_LABEL in counts.label_counts
    classes = counts.classes
    assert counts.cls.tolist() == pd.Categorical(old, categories=classes).codes.tolist()
    cats = sorted(profile["conditional"]["categorical"]["colour"]["counts"])
    codes, missing = counts.codes("colour", cats)
    assert codes.tolist() == old_category_codes(frame["colour"], cats).tolist()
    assert missing.tolist() == frame["colour"].isna().tolist()


def test_bin_index_matches_a_binary_search() -> None:
    """`bin_index` counts edges one at a time; it gives the binary search's bins."""
    rng = np.random.default_rng(3)
    for _ in range(100):
        edges = np.unique(rng.choice(np.round(rng.standard_normal(30), 1), rng.integers(1, 25)))
        values = np.round(rng.standard_normal(400), 1)  # many values equal to an edge
        values[::7], values[::11], values[::13] = np.nan, np.inf, -np.inf
        inner = edges[1:-1]
        expected = np.searchsorted(inner, values, side="right")
        expected[~np.isfinite(values)] = -1
        assert bin_index(edges, values).tolist() == expected.tolist()
