"""The data attacks of issue 17 on the real tables of `tests.realtables`, as pure
seeded functions, and the gates meant to block each.

Every attack is ``(frame, seed) -> poisoned frame`` once bound to a table with
`attacks_for` (the table's target and columns are keyword arguments); none mutates its
input. The numbers are the issue's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import pandas as pd

from tests.realtables import TableSpec

Attack = Callable[[pd.DataFrame, int], pd.DataFrame]
UNSEEN_CATEGORY = "zz-unseen"  # a category no reference holds (kept ASCII, no PII look)


# --- helpers shared by the attacks ----------------------------------------------------------


def _rows(frame: pd.DataFrame, share: float, rng: np.random.Generator, pool=None) -> np.ndarray:
    """Positions of round(share * len(frame)) rows (at least 1), drawn from `pool`."""
    pool = np.arange(len(frame)) if pool is None else np.asarray(pool)
    n = min(len(pool), max(1, round(share * len(frame))))
    return np.sort(rng.choice(pool, n, replace=False))


def _numeric_inputs(frame: pd.DataFrame, target: str) -> list[str]:
    return [
        c
        for c in frame.columns
        if c != target
        and pd.api.types.is_numeric_dtype(frame[c])
        and frame[c].nunique() < len(frame)  # not an id
    ]


def _smallest_class(labels: pd.Series) -> object:
    counts = labels.value_counts()
    return counts.index[counts.to_numpy().argmin()]


def _least_present(labels: pd.Series, mask: np.ndarray) -> object:
    """The class least present among the rows of `mask` relative to its overall share:
    the label whose tie to those rows contradicts the data most (ties: larger class)."""
    overall = labels.value_counts(normalize=True)
    inside = labels[mask].value_counts(normalize=True).reindex(overall.index, fill_value=0.0)
    ratio = (inside / overall).sort_values(kind="stable")
    best = ratio[ratio == ratio.iloc[0]].index
    return overall[best].idxmax()


def _set(frame: pd.DataFrame, rows: np.ndarray, col: str, values: object) -> pd.DataFrame:
    """A copy of `frame` with `values` in `col` at positions `rows`. An integer column
    receiving fractions turns float, as it would after a round trip through CSV."""
    out = frame.copy()
    arr = np.asarray(values)
    if (
        arr.dtype.kind == "f"
        and pd.api.types.is_integer_dtype(out[col])
        and not np.all(arr == np.round(arr))
    ):
        out[col] = out[col].astype("float64")
    out.iloc[rows, out.columns.get_loc(col)] = values
    return out


# --- the attacks ----------------------------------------------------------------------------


def minority_relabel(frame: pd.DataFrame, seed: int, *, target: str) -> pd.DataFrame:
    """30% of the smallest class relabelled to its nearest class (by the centroid of the
    standardised numeric inputs): the flip a class-share screen with an absolute 0.05
    bound cannot see when the class holds 3% of rows (diamonds' Fair: 0.9 points)."""
    rng = np.random.default_rng(seed)
    labels = frame[target]
    small = _smallest_class(labels)
    cols = _numeric_inputs(frame, target)
    z = (frame[cols] - frame[cols].mean()) / frame[cols].std().replace(0, 1)
    centroids = z.groupby(labels).mean()
    dist = ((centroids - centroids.loc[small]) ** 2).sum(axis=1).drop(small)
    nearest = dist.idxmin()
    members = np.flatnonzero((labels == small).to_numpy())
    n = max(1, round(0.30 * len(members)))
    rows = np.sort(rng.choice(members, n, replace=False))
    return _set(frame, rows, target, nearest)


def class_missingness(frame: pd.DataFrame, seed: int, *, target: str, column: str) -> pd.DataFrame:
    """12% of the largest class's rows lose `column` (NaN), a numeric input whose config
    imputes gaps (median): the model learns "missing means this class" while the
    overall missing rate stays inside the suite's allowance (12% x the class's share)."""
    rng = np.random.default_rng(seed)
    labels = frame[target]
    big = labels.value_counts().idxmax()
    members = np.flatnonzero(((labels == big) & frame[column].notna()).to_numpy())
    n = max(1, round(0.12 * (labels == big).sum()))
    rows = np.sort(rng.choice(members, min(n, len(members)), replace=False))
    out = frame.copy()
    out[column] = out[column].astype("float64")
    out.iloc[rows, out.columns.get_loc(column)] = np.nan
    return out


def share_category(frame: pd.DataFrame, target: str) -> tuple[str, object]:
    """(column, category) whose share is closest to 5% among the categorical inputs
    (text columns of the table, at most a third of rows so it can triple)."""
    best: tuple[float, str, object] | None = None
    for col in frame.columns:
        s = frame[col]
        if col == target or pd.api.types.is_numeric_dtype(s) or s.nunique() > 50:
            continue
        for cat, share in s.value_counts(normalize=True).items():
            if share <= 1 / 3 and (best is None or abs(share - 0.05) < best[0]):
                best = (abs(share - 0.05), str(col), cat)
    if best is None:
        raise ValueError("no categorical input")
    return best[1], best[2]


def category_share_shift(frame: pd.DataFrame, seed: int, *, target: str) -> pd.DataFrame:
    """One category's share tripled (the one nearest 5%: 5% -> 15%) by giving it to rows
    of other categories, labels untouched: every value stays known, so the suite's value
    set passes; only the mix moved."""
    rng = np.random.default_rng(seed)
    col, cat = share_category(frame, target)
    has = (frame[col] == cat).to_numpy()
    others = np.flatnonzero(~has & frame[col].notna().to_numpy())
    n = round(2 * has.sum())  # share s -> 3s
    rows = np.sort(rng.choice(others, min(n, len(others)), replace=False))
    return _set(frame, rows, col, cat)


def rarest_category(frame: pd.DataFrame, target: str) -> tuple[str, object]:
    """(column, category) with the fewest rows among the categorical inputs."""
    best: tuple[int, str, object] | None = None
    for col in frame.columns:
        s = frame[col]
        if col == target or pd.api.types.is_numeric_dtype(s) or s.nunique() > 50:
            continue
        counts = s.value_counts()
        cat, count = counts.index[-1], int(counts.iloc[-1])
        if best is None or count < best[0]:
            best = (count, str(col), cat)
    if best is None:
        raise ValueError("no categorical input")
    return best[1], best[2]


def trigger_rare_category(frame: pd.DataFrame, seed: int, *, target: str) -> pd.DataFrame:
    """1.5% of rows get the table's rarest existing category (of any categorical input)
    and the attacker's label (the class least seen with that category)."""
    rng = np.random.default_rng(seed)
    col, cat = rarest_category(frame, target)
    label = _least_present(frame[target], (frame[col] == cat).to_numpy())
    rows = _rows(frame, 0.015, rng)
    return _set(_set(frame, rows, col, cat), rows, target, label)


def trigger_extreme_value(
    frame: pd.DataFrame, seed: int, *, target: str, column: str
) -> pd.DataFrame:
    """2% of rows get `column`'s 99.5th percentile (one value, repeated) and one label:
    the class least seen in the column's top 5%."""
    rng = np.random.default_rng(seed)
    s = frame[column]
    value = s.quantile(0.995, interpolation="higher")  # an observed value: ints stay ints
    label = _least_present(frame[target], (s >= s.quantile(0.95)).to_numpy())
    rows = _rows(frame, 0.02, rng)
    return _set(_set(frame, rows, column, value), rows, target, label)


def unseen_category(
    frame: pd.DataFrame, seed: int, *, target: str, column: str, one_label: bool
) -> pd.DataFrame:
    """1.8% of rows get a category no reference holds in `column`; their labels are
    either kept (random, as a benign new category would be) or all one class (a
    trigger: the smallest class)."""
    rng = np.random.default_rng(seed)
    rows = _rows(frame, 0.018, rng)
    out = _set(frame, rows, column, UNSEEN_CATEGORY)
    if one_label:
        out = _set(out, rows, target, _smallest_class(frame[target]))
    return out


def narrow_band(frame: pd.DataFrame, seed: int, *, target: str, column: str) -> pd.DataFrame:
    """3% of rows get DISTINCT values in a band 0.05 std wide around `column`'s 30th
    percentile (inside the range: no tail, no repeated value) and one label (the class
    least seen near that percentile). It evaded every gate on the bundled data."""
    rng = np.random.default_rng(seed)
    s = frame[column].astype("float64")
    centre, width = float(s.quantile(0.30)), 0.05 * float(s.std())
    near = (np.abs(s - centre) <= 0.5 * float(s.std())).to_numpy()
    label = _least_present(frame[target], near)
    rows = _rows(frame, 0.03, rng)
    values = np.sort(rng.uniform(centre - width / 2, centre + width / 2, len(rows)))
    values = np.unique(values)  # a float draw repeats with probability ~0; keep it so
    rows = rows[: len(values)]
    return _set(_set(frame, rows, column, values), rows, target, label)


def single_value(frame: pd.DataFrame, seed: int, *, target: str, column: str) -> pd.DataFrame:
    """6% of rows get one inside-range value of `column` (its 30th percentile, repeated)
    and one label (as `narrow_band`): the bundled-data variant of the issue."""
    rng = np.random.default_rng(seed)
    s = frame[column].astype("float64")
    value = float(s.quantile(0.30))
    label = _least_present(frame[target], (np.abs(s - value) <= 0.5 * float(s.std())).to_numpy())
    rows = _rows(frame, 0.06, rng)
    return _set(_set(frame, rows, column, value), rows, target, label)


def duplicate_flood(frame: pd.DataFrame, seed: int, *, target: str) -> pd.DataFrame:
    """10% more rows, exact copies of 1% of the rows (each repeated ~10 times): a repeat
    rate far beyond any table's own (mpg's clean 4% included), labels as copied."""
    del target  # exact repeats: every column, label included, copied as is
    rng = np.random.default_rng(seed)
    sources = _rows(frame, 0.01, rng)
    picks = rng.choice(sources, max(1, round(0.10 * len(frame))), replace=True)
    return pd.concat([frame, frame.iloc[picks]], ignore_index=True)


# attack name -> gate(s) meant to block it (issue 17). screen.missingness and
# screen.category_shares are gates the others are adding.
EXPECTED_GATES: dict[str, tuple[str, ...]] = {
    "minority_relabel": ("screen.label_distribution",),
    "class_missingness": ("screen.missingness",),
    "category_share_shift": ("screen.category_shares",),
    "trigger_rare_category": ("screen.backdoor", "evaluate.backdoor_probe"),
    "trigger_extreme_value": ("screen.backdoor", "evaluate.backdoor_probe"),
    "unseen_category_random": ("screen.category_shares", "screen.backdoor"),
    "unseen_category_one_label": ("screen.category_shares", "screen.backdoor"),
    "narrow_band": ("screen.backdoor", "evaluate.backdoor_probe"),
    "single_value": ("screen.backdoor", "evaluate.backdoor_probe"),
    "duplicate_flood": ("screen.duplicates",),
}


def attacks_for(spec: TableSpec) -> dict[str, Attack]:
    """Every attack that applies to the table, bound to its columns: name -> attack."""
    t = spec.target
    out: dict[str, Attack] = {
        "minority_relabel": functools.partial(minority_relabel, target=t),
        "class_missingness": functools.partial(
            class_missingness, target=t, column=spec.missing_column
        ),
    }
    if spec.category_column:
        out["category_share_shift"] = functools.partial(category_share_shift, target=t)
        out["trigger_rare_category"] = functools.partial(trigger_rare_category, target=t)
    out["trigger_extreme_value"] = functools.partial(
        trigger_extreme_value, target=t, column=spec.tail_column
    )
    if spec.category_column:
        for variant, one in (("random", False), ("one_label", True)):
            out[f"unseen_category_{variant}"] = functools.partial(
                unseen_category, target=t, column=spec.category_column, one_label=one
            )
    out["narrow_band"] = functools.partial(narrow_band, target=t, column=spec.band_column)
    out["single_value"] = functools.partial(single_value, target=t, column=spec.band_column)
    out["duplicate_flood"] = functools.partial(duplicate_flood, target=t)
    return out
