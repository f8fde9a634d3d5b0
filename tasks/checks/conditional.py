"""What the trusted reference says about each input value: label counts by value.

A screen or probe that only knows the reference's overall statistics cannot tell a
real effect (large diamonds are mostly one cut) from a trigger (a value a poisoner
tied to one label). The reference profile therefore keeps, for every model input,
how many trusted rows of each class held each value:

    "conditional": {
        "classes": [label key, ...],                     # the column order of every count row
        "numeric": {column: {"edges": [e0, ..., eB],     # reference quantiles (`bin_edges`)
                             "counts": [[n per class] per bin],
                             "missing": [n per class],
                             "top_count": n}},                # rows holding the most
                                                              # repeated value (no value)
        "categorical": {column: {"counts": {category key: [n per class]},
                                 "missing": [n per class]}},
    }

Counts, not shares, so that every comparison can be calibrated for sample size (a
3-row bin says little; a 3000-row bin says a lot). Bins are equal-count (``BINS``
of them, the outermost split again at 0.5% and 1% of the rows at each end in a table
of 4000 rows or more; fewer when
the column has fewer distinct values); values are never stored,
only bin edges (reference quantiles) and category keys, as the rest of the profile.
Labels and categories are keyed as everywhere else (`label_key`: 1 and 1.0 are one).

`numeric_groups` and `categorical_groups` count new data the same way (rows beyond the
reference range get their own low/high groups, unseen categories one group per column),
so a screen compares like with like.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from tasks.checks.keys import label_keyed
from tasks.checks.poisoning import category_keys, feature_values, label_keys

BINS = 20  # equal-count bins per numeric input: 5% of the reference rows each
# ... and the outermost 1% at each end split again at these shares of the rows: a real
# effect at an input's extreme (hpc_data's jobs just after midnight: 34 of the 39
# earliest are class F) is as small as a trigger, and a 5% bin would dilute it.
TAIL_EDGES = (0.005, 0.01, 0.99, 0.995)
TAIL_MIN_ROWS = 20  # ... when the smallest such bin holds this many rows (4000-row tables)


def _class_index(labels: pd.Series, classes: list[str]) -> np.ndarray:
    return label_keyed(labels).positions(classes)  # -1: a class not in `classes`


def _count(groups: np.ndarray, cls: np.ndarray, n_groups: int, n_classes: int) -> np.ndarray:
    """(group, class) count matrix; rows with a negative group or class are left out."""
    ok = (groups >= 0) & (cls >= 0)
    flat = groups[ok] * n_classes + cls[ok]
    return np.bincount(flat, minlength=n_groups * n_classes).reshape(n_groups, n_classes)


def bin_edges(values: np.ndarray, bins: int = BINS) -> list[float]:
    """Equal-count bin edges of the finite `values` (reference values, distinct), the
    outermost bins split again at ``TAIL_EDGES`` when those bins hold ``TAIL_MIN_ROWS``.

    A column with at most `bins` distinct values (a year, a count) gets one bin per
    value: the edges are the smallest and largest value and the midpoints between.
    """
    finite = values[np.isfinite(values)]
    if not len(finite):
        return []
    distinct = np.unique(finite)
    if len(distinct) <= bins:
        mids = (distinct[:-1] + distinct[1:]) / 2
        edges = (
            np.concatenate([distinct[:1], mids, distinct[-1:]]) if len(distinct) > 1 else distinct
        )
    else:
        shares = np.linspace(0.0, 1.0, bins + 1)
        if TAIL_EDGES[0] * len(finite) >= TAIL_MIN_ROWS:  # else: too few rows to say more
            shares = np.union1d(shares, TAIL_EDGES)
        edges = np.unique(np.quantile(finite, shares, method="lower"))
    return [float(e) for e in edges]


def bin_index(edges: list[float] | np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bin of each value (0 .. len(edges) - 2; a value beyond the reference range falls
    in the outermost bin: see `outside`), -1 for a missing value. A column whose
    reference held one value has a single bin."""
    e = np.asarray(edges, dtype=np.float64)
    # The number of inner edges <= the value (searchsorted, side="right"), counted one
    # edge at a time in small integers: 8x faster than a binary search per value over
    # ~20 edges (1M rows x 16 inputs: 0.4 s of the screen).
    inner = e[1:-1]
    count = np.zeros(len(values), dtype=np.int8 if len(inner) < 128 else np.int64)
    for edge in inner:
        np.add(count, values >= edge, out=count, casting="unsafe")
    idx = count.astype(np.int64)
    idx[~np.isfinite(values)] = -1
    return idx


def outside(edges: list[float] | np.ndarray, values: np.ndarray) -> np.ndarray:
    """True where a finite value lies beyond the reference's smallest or largest value."""
    e = np.asarray(edges, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.isfinite(values) & ((values < e[0]) | (values > e[-1]))


def top_count(values: np.ndarray) -> int:
    """Rows holding the column's most repeated finite value (0 for none)."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return 0
    return int(pd.Series(finite).value_counts(sort=False).max())


def class_index(labels: pd.Series, classes: list[str]) -> np.ndarray:
    """Position of each row's label in `classes`; -1 for a class the reference lacks."""
    return _class_index(labels, classes)


def numeric_groups(
    edges: list[float] | np.ndarray, values: np.ndarray, cls: np.ndarray, n_classes: int
) -> dict[str, np.ndarray]:
    """New data counted as the reference's bins: ``bins`` (bin x class, rows inside the
    reference range), ``low`` / ``high`` (class counts beyond it), ``missing``."""
    e = np.asarray(edges, dtype=np.float64)
    n_bins = max(len(e) - 1, 1)
    idx = bin_index(e, values) if len(e) else np.full(len(values), -1)
    with np.errstate(invalid="ignore"):
        low = np.isfinite(values) & (values < e[0]) if len(e) else np.zeros(len(values), bool)
        high = np.isfinite(values) & (values > e[-1]) if len(e) else np.zeros(len(values), bool)
    inside = np.where(low | high, -1, idx)
    return {
        "bins": _count(inside, cls, n_bins, n_classes),
        "low": _count(np.where(low, 0, -1), cls, 1, n_classes)[0],
        "high": _count(np.where(high, 0, -1), cls, 1, n_classes)[0],
        "missing": _count(np.where(np.isfinite(values), -1, 0), cls, 1, n_classes)[0],
    }


def categorical_groups(
    codes: np.ndarray, missing: np.ndarray, cls: np.ndarray, n_categories: int, n_classes: int
) -> dict[str, np.ndarray]:
    """New data counted as the reference's categories: ``counts`` (category x class; codes
    index the reference's sorted category keys, -1: missing or unseen), ``unseen`` and
    ``missing`` (class counts)."""
    unseen = (codes < 0) & ~missing
    return {
        "counts": _count(codes, cls, n_categories, n_classes),
        "unseen": _count(np.where(unseen, 0, -1), cls, 1, n_classes)[0],
        "missing": _count(np.where(missing, 0, -1), cls, 1, n_classes)[0],
    }


def build_conditional(
    frame: pd.DataFrame,
    *,
    target: str,
    numeric: Iterable[str],
    categorical: Iterable[str],
    bins: int = BINS,
) -> dict[str, Any]:
    """The ``conditional`` section of a reference profile (see the module docstring)."""
    labels = frame[target]
    counts = label_keys(labels).value_counts()
    classes = sorted(str(k) for k in counts.index)
    cls = _class_index(labels, classes)
    k = len(classes)
    out: dict[str, Any] = {"classes": classes, "numeric": {}, "categorical": {}}
    for col in numeric:
        values = feature_values(frame, col)
        edges = bin_edges(values, bins)
        n_bins = max(len(edges) - 1, 1)
        idx = bin_index(edges, values) if edges else np.full(len(values), -1)
        out["numeric"][col] = {
            "edges": edges,
            "counts": _count(idx, cls, n_bins, k).tolist() if edges else [],
            "missing": _count(np.where(idx < 0, 0, -1), cls, 1, k)[0].tolist(),
            "top_count": top_count(values),
        }
    for col in categorical:
        keys = category_keys(frame[col])
        cats = sorted(str(c) for c in keys.dropna().unique())
        codes = pd.Categorical(keys, categories=cats).codes.astype(np.int64)
        table = _count(codes, cls, len(cats), k)
        out["categorical"][col] = {
            "counts": {c: table[i].tolist() for i, c in enumerate(cats)},
            "missing": _count(np.where(codes < 0, 0, -1), cls, 1, k)[0].tolist(),
        }
    return out


def class_totals(conditional: Mapping[str, Any]) -> np.ndarray:
    """Reference rows per class (in ``conditional["classes"]`` order)."""
    for section in ("numeric", "categorical"):
        for st in conditional[section].values():
            rows = st["counts"].values() if section == "categorical" else st["counts"]
            total = np.asarray(st["missing"], dtype=np.float64)
            for r in rows:
                total = total + np.asarray(r, dtype=np.float64)
            return total
    return np.zeros(len(conditional["classes"]))
