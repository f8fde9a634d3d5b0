"""Candidate triggers for the backdoor probe (`tasks.checks.backdoor_probe`), and what
the trusted reference says about each candidate value.

Candidates come from a seeded sample of the training inputs: repeated values in the
tails, the most label-anomalous narrow run of sorted values in each reference bin (a
band of distinct values is stamped with a value inside it), rare categories, and
categories the training data holds but the reference does not. `_Reference` turns the
signed profile's label counts by value (`tasks.checks.conditional`) into smoothed class
shares per bin and category, their Wilson bounds, the direction of each class at a
value (held significantly more or less often than overall) and its plausibility there.
Split from the probe so that each module stays readable:
this one decides *what* to stamp, the probe *how much* a stamp may flip.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from tasks.checks.conditional import bin_index, class_totals
from tasks.checks.poisoning import category_keys, label_key, label_keys
from tasks.models import numeric_layout

PROFILE_ROWS = 50_000  # training rows read to find candidates (seeded sample)
MAX_TRIGGER_SHARE = 0.05  # a trigger is rare: at most this share of training rows
MIN_TRIGGER_COUNT = 3  # ... and repeated: at least this many times
MAX_CATEGORIES = 10  # rare categories probed per column (the most frequent ones)
TAIL_QUANTILE = 0.01  # tails: at or beyond the 1st / 99th percentile
WINDOW_SHARE = 0.005  # a band candidate: a run of this share of the sorted training values
PRIOR_ROWS = 20.0  # reference smoothing: a bin's class shares shrink toward the overall
Z_NOISE = 2.0  # the score is the excess minus this many standard errors
NEAR_SHARE = 0.01  # a tail value's local controls: this share of the sorted values away
BAND_NEAR_SHARE = 0.10  # ... a band value's: twice the largest trigger share away
BANDS_PER_FEATURE = 2  # band candidates kept per numeric input (the most label-anomalous)


@dataclass(frozen=True)
class _Candidate:
    feature: str
    kind: str  # a key of KIND_TEXT
    value: Any  # never reported
    controls: tuple[Any, ...] = ()  # values whose flips the candidate's is compared with
    priority: float = math.inf  # band candidates: label anomaly (kept first under the budget)


def _input_roles(pipeline: Pipeline) -> tuple[list[str], list[str]]:
    """(numeric, categorical) raw input columns of a `tasks.models` pipeline."""
    numeric = numeric_layout(pipeline).columns
    prep = pipeline.named_steps["prep"]
    categorical = [
        str(c) for name, _, group in prep.transformers_ if name.startswith("cat_") for c in group
    ]
    return numeric, categorical


def _positions(n: int, rows: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= rows else np.sort(rng.choice(n, size=rows, replace=False))


def _floats(values: pd.Series) -> np.ndarray:
    return pd.to_numeric(values, errors="coerce").to_numpy(np.float64, na_value=np.nan)


# --- the trusted reference ------------------------------------------------------------


class _Reference:
    """The reference's label counts by value of each input, read two ways (see the
    module docstring): smoothed likelihood ratios ``r_k(b)`` and upper bounds of the
    class shares ``P_ref(k | b)``, both in the model's class order (a class the
    reference lacks: ratio 1, share bound 0)."""

    def __init__(self, conditional: Mapping[str, Any], classes: np.ndarray) -> None:
        self.cond = conditional
        ref_classes = [str(c) for c in conditional["classes"]]
        self.ref_classes = ref_classes
        keys = [label_key(c) for c in classes]
        self.columns = np.array([ref_classes.index(k) if k in ref_classes else -1 for k in keys])
        totals = class_totals(conditional)
        if len(totals) != len(ref_classes) or totals.sum() <= 0:
            raise ValueError("reference conditional counts do not match its classes")
        self.prior = np.maximum(totals / totals.sum(), 1e-12)
        self._tables: dict[str, np.ndarray | None] = {}

    def shares(self, counts: np.ndarray) -> np.ndarray:
        """Smoothed P_ref(k | b) per row of `counts` (reference class order)."""
        counts = np.asarray(counts, dtype=np.float64).reshape(-1, len(self.prior))
        total = counts.sum(axis=1, keepdims=True)
        return (counts + PRIOR_ROWS * self.prior) / (total + PRIOR_ROWS)

    def numeric_stats(self, col: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(edges, bin counts) of a numeric input, if the reference binned it."""
        st = self.cond["numeric"].get(col)
        if not st or len(st["edges"]) < 1 or not len(st["counts"]):
            return None
        counts = np.asarray(st["counts"], dtype=np.float64).reshape(-1, len(self.prior))
        return np.asarray(st["edges"], dtype=np.float64), counts

    def groups(self, col: str, values: pd.Series, numeric: bool) -> tuple[np.ndarray, np.ndarray]:
        """(row of each value in the count table, the table): the table's rows are the
        bins or categories, then missing, then one all-zero row for a value the
        reference has no group for (an unseen category, an unbinned column)."""
        k = len(self.prior)
        unseen = np.zeros((1, k))
        if numeric:
            v = _floats(values)
            stats = self.numeric_stats(col)
            st = self.cond["numeric"].get(col)
            if stats is None or not st:
                return np.full(len(v), 0), unseen
            edges, counts = stats
            missing = np.asarray(st["missing"], dtype=np.float64).reshape(1, k)
            idx = bin_index(edges, v)
            idx = np.where(idx < 0, len(counts), np.minimum(idx, len(counts) - 1))
            return idx, np.vstack([counts, missing, unseen])
        st = self.cond["categorical"].get(col)
        if not st:
            return np.full(len(values), 0), unseen
        cats = list(st["counts"])
        counts = np.asarray([st["counts"][c] for c in cats], dtype=np.float64).reshape(-1, k)
        missing = np.asarray(st["missing"], dtype=np.float64).reshape(1, k)
        keys = category_keys(values.reset_index(drop=True))
        codes = pd.Categorical(keys, categories=cats).codes.astype(np.int64)
        idx = np.where(codes >= 0, codes, np.where(keys.isna(), len(cats), len(cats) + 1))
        return idx, np.vstack([counts, missing, unseen])

    def _to_model(self, per_ref_class: np.ndarray, fill: float) -> np.ndarray:
        out = np.full((len(per_ref_class), len(self.columns)), fill)
        known = self.columns >= 0
        out[:, known] = per_ref_class[:, self.columns[known]]
        return out

    def ratios(self, col: str, values: pd.Series, numeric: bool) -> np.ndarray:
        """r_k of each value (rows) for each model class (columns); 1 where unseen."""
        idx, table = self.groups(col, values, numeric)
        ratios = self.shares(table) / self.prior
        ratios[table.sum(axis=1) == 0] = 1.0
        return self._to_model(ratios[idx], 1.0)

    def _wilson(
        self, col: str, values: pd.Series, numeric: bool, sign: float, *, adjacent: bool = False
    ) -> np.ndarray:
        """Wilson bound (``Z_NOISE``; `sign` +1 upper, -1 lower) of P_ref(k | group of each
        value) in the reference's class order; the overall share P_ref(k) for a value the
        reference holds no group for. `adjacent` (upper bounds of numeric inputs): the
        largest bound over the value's bin and the bins either side, as a value near a
        bin's edge may behave like the next bin (the reference's resolution is a bin)."""
        idx, table = self.groups(col, values, numeric)
        n = table.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            p = np.where(n > 0, table / np.maximum(n, 1), self.prior)
            m = np.maximum(n, 1)
            z2n = Z_NOISE**2 / m
            spread = Z_NOISE * np.sqrt(p * (1 - p) / m + z2n / (4 * m))
            bound = (p + z2n / 2 + sign * spread) / (1 + z2n)
        bound = np.clip(np.where(n > 0, bound, self.prior), 0.0, 1.0)
        bins = len(table) - 2  # numeric tables: bins, then missing and unseen
        if not (adjacent and numeric and bins > 1):
            return bound[idx]
        out = bound[idx].copy()
        for step in (-1, 1):
            near = np.clip(idx + step, 0, bins - 1)
            out = np.where((idx < bins)[:, None], np.maximum(out, bound[near]), out)
        return out

    def share_bounds(self, col: str, values: pd.Series, numeric: bool) -> np.ndarray:
        """Upper bound (Wilson, ``Z_NOISE``) of P_ref(k | group of each value); the
        overall share P_ref(k) for a value the reference never held."""
        return self._to_model(self._wilson(col, values, numeric, 1.0), 0.0)

    def plausibility(self, col: str, value: Any, numeric: bool) -> np.ndarray:
        """Per model class: how plausible the class is at `value` by the reference, as
        min(1, Wilson upper bound of P_ref(k | group) / P_ref(k)): 1 unless the trusted
        data holds the class significantly less often there (0 for a class it never
        holds at the value, with enough rows to say so; 1 for a value without a group)."""
        series = pd.Series([value], dtype=None if numeric else object)
        upper = self._wilson(col, series, numeric, 1.0, adjacent=True)[0]
        ratio = np.minimum(upper / self.prior, 1.0)
        return self._to_model(ratio.reshape(1, -1), 1.0)[0]

    def direction(self, col: str, value: Any, numeric: bool) -> np.ndarray:
        """Per model class: +1 where the reference holds the class significantly MORE
        often at `value` than overall (Wilson lower bound of P_ref(k | group) above
        P_ref(k)), -1 where significantly LESS often (upper bound below), else 0.

        0 for a value the reference has no group for: an unseen or missing category, a
        class the reference lacks, and a number beyond the reference's range (the
        trusted data says nothing about a value it never held)."""
        series = pd.Series([value], dtype=None if numeric else object)
        out = np.zeros(len(self.columns), dtype=np.int64)
        if numeric:
            stats = self.numeric_stats(col)
            v = float(value)
            if stats is None or not stats[0][0] <= v <= stats[0][-1]:
                return out
        lower = self._to_model(self._wilson(col, series, numeric, -1.0), 0.0)[0]
        upper = self._to_model(self._wilson(col, series, numeric, 1.0), 1.0)[0]
        prior = self._to_model(self.prior.reshape(1, -1), 0.0)[0]
        idx, table = self.groups(col, series, numeric)
        if table[idx[0]].sum() <= 0:
            return out
        known = self.columns >= 0
        out[known & (lower > prior)] = 1
        out[known & (upper < prior)] = -1
        return out


def _conditional(reference: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The profile's ``conditional`` section; None when it has none (versions 2, 3).

    Raises:
        ValueError: a section is present but malformed (the gate fails closed).
    """
    if reference is None or "conditional" not in reference:
        return None
    cond = reference["conditional"]
    if not (
        isinstance(cond, Mapping)
        and isinstance(cond.get("classes"), list)
        and isinstance(cond.get("numeric"), Mapping)
        and isinstance(cond.get("categorical"), Mapping)
    ):
        raise ValueError("the reference profile's conditional section is malformed")
    return cond


# --- candidates -----------------------------------------------------------------------


def _tail_candidates(col: str, values: pd.Series) -> list[_Candidate]:
    v = _floats(values)
    v = v[np.isfinite(v)]
    if len(v) < MIN_TRIGGER_COUNT:
        return []
    out = []
    for q, upper in ((1 - TAIL_QUANTILE, True), (TAIL_QUANTILE, False)):
        edge = float(np.quantile(v, q))
        tail = v[v >= edge] if upper else v[v <= edge]
        uniq, counts = np.unique(tail, return_counts=True)
        best = int(np.argmax(counts))
        value, count = float(uniq[best]), int(counts[best])
        if count < MIN_TRIGGER_COUNT or count > MAX_TRIGGER_SHARE * len(v):
            continue
        rest = v[v != value]
        if not len(rest):
            continue
        control = float(np.quantile(rest, q))
        out.append(_Candidate(col, "tail_value", value, (control,)))
    return out


def _band_candidates(
    col: str, values: pd.Series, classes: np.ndarray, ref: _Reference
) -> list[_Candidate]:
    """One candidate per reference bin: the median training value of the most
    label-anomalous run of `WINDOW_SHARE` of the sorted values in it."""
    stats = ref.numeric_stats(col)
    v = _floats(values)
    keep = np.isfinite(v) & (classes >= 0)
    if stats is None or keep.sum() < MIN_TRIGGER_COUNT:
        return []
    edges, counts = stats
    order = np.argsort(v[keep], kind="stable")
    v, cls = v[keep][order], classes[keep][order]
    n, k = len(v), len(ref.prior)
    m = max(MIN_TRIGGER_COUNT, math.ceil(WINDOW_SHARE * n))
    cum = np.zeros((n + 1, k))
    cum[1:] = np.cumsum(np.eye(k)[cls], axis=0)
    runs = cum[m:] - cum[:-m]  # class counts of each run of m consecutive values
    mid = v[np.arange(len(runs)) + m // 2]
    bins = np.minimum(bin_index(edges, mid), len(counts) - 1)
    p = ref.shares(counts)[bins]
    z = ((runs - m * p) / np.sqrt(m * p * (1 - p) + 1e-12)).max(axis=1)
    out = []
    for b in np.unique(bins):
        at = np.flatnonzero(bins == b)
        best = at[int(np.argmax(z[at]))]
        value = _run_value(v[best : best + m])
        out.append(_Candidate(col, "band_value", value, priority=float(z[best])))
    out.sort(key=lambda c: -c.priority)
    return out[:BANDS_PER_FEATURE]


def _run_value(run: np.ndarray) -> float:
    """The value to stamp for a run of sorted values: its most repeated value when one
    is repeated ``MIN_TRIGGER_COUNT`` times (a column of few distinct values: a run of
    one value, not an odd value between two common ones that a tree treats as the next
    one), else its median (a band of distinct values)."""
    uniq, counts = np.unique(run, return_counts=True)
    top = int(np.argmax(counts))
    if counts[top] >= MIN_TRIGGER_COUNT:
        return float(uniq[top])
    return float(run[len(run) // 2])


def _category_candidates(col: str, values: pd.Series, ref: _Reference | None) -> list[_Candidate]:
    counts = values.dropna().value_counts()
    if counts.empty:
        return []
    common = counts.index[0]
    limit = MAX_TRIGGER_SHARE * int(counts.sum())
    rare = counts[(counts >= MIN_TRIGGER_COUNT) & (counts <= limit)].head(MAX_CATEGORIES)
    out = [_Candidate(col, "rare_category", cat, (common,)) for cat in rare.index if cat != common]
    st = ref.cond["categorical"].get(col) if ref is not None else None
    if st is not None:  # absent from the reference: an unseen category, whatever its count
        known = set(st["counts"])
        keys = dict(
            zip(counts.index, category_keys(pd.Series(counts.index, dtype=object)), strict=True)
        )
        out = [c for c in out if keys[c.value] in known]
        out += [
            _Candidate(col, "unseen_category", cat)
            for cat, n in counts.items()
            if keys[cat] not in known and n >= MIN_TRIGGER_COUNT
        ][:MAX_CATEGORIES]
    return out


def _candidates(
    x_train: pd.DataFrame,
    y_train: pd.Series | None,
    numeric: list[str],
    categorical: list[str],
    ref: _Reference | None,
    rng: np.random.Generator,
    budget: int,
) -> list[_Candidate]:
    """Every candidate (see the module docstring), in the order they are kept when the
    stamped blocks (candidate values and their controls) exceed `budget`: categories
    first (one block each), then the tail values of every numeric input, then the band
    candidates (at most ``BANDS_PER_FEATURE`` per input), taken in turns across inputs,
    most anomalous first, so that no input's candidates crowd out another's."""
    pick = _positions(len(x_train), PROFILE_ROWS, rng)
    train = x_train.iloc[pick]
    cats: list[_Candidate] = []
    tails: list[_Candidate] = []
    bands: list[list[_Candidate]] = []
    for col in categorical:
        cats += _category_candidates(col, train[col], ref)
    for col in numeric:
        tails += _tail_candidates(col, train[col])
    if ref is not None:
        cats = [dataclasses.replace(c, controls=()) for c in cats]
        tails = [_with_neighbours(c, train[c.feature]) for c in tails]
        if y_train is not None:
            keys = label_keys(y_train.iloc[pick]).to_numpy()
            codes = pd.Categorical(keys, categories=ref.ref_classes).codes.astype(np.int64)
            bands = [
                [
                    _with_neighbours(c, train[col], BAND_NEAR_SHARE)
                    for c in _band_candidates(col, train[col], codes, ref)
                ]
                for col in numeric
            ]
    turns = [c for i in range(BANDS_PER_FEATURE) for per in bands if i < len(per) for c in [per[i]]]
    chosen: list[_Candidate] = []
    blocks: set[tuple[str, Any]] = set()
    for cand in cats + tails + turns:  # greedy: stamped blocks (candidates, controls) <= budget
        new = {(cand.feature, v) for v in (cand.value, *cand.controls)} - blocks
        if len(blocks) + len(new) > budget:
            continue
        blocks |= new
        chosen.append(cand)
    return chosen


def _with_neighbours(cand: _Candidate, values: pd.Series, share: float = NEAR_SHARE) -> _Candidate:
    """A numeric candidate with its local controls (reference mode): the training values
    `share` of the sorted values below and above the run of the candidate's value (those
    that exist): ``NEAR_SHARE`` for a tail value (one repeated value), ``BAND_NEAR_SHARE``
    for a band value (twice the largest trigger share: a band of distinct values, with
    the clean rows among them, lies between the two). A smooth response to the input (a
    real effect, or a linear model extrapolating a correlated input) flips rows on both
    sides too; a value a model learned as a trigger, with clean rows around it, flips
    rows only when stamped (the probe takes the smaller of the two controls' flips)."""
    v = np.sort(_floats(values))
    v = v[np.isfinite(v)]
    value = float(cand.value)
    step = max(MIN_TRIGGER_COUNT, math.ceil(share * len(v)))
    lo, hi = np.searchsorted(v, value, "left") - step, np.searchsorted(v, value, "right") + step - 1
    controls = tuple(float(v[i]) for i in (lo, hi) if 0 <= i < len(v) and v[i] != value)
    return dataclasses.replace(cand, controls=controls)


# --- stamping and scoring -------------------------------------------------------------
