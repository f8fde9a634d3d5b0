"""``evaluate.backdoor_probe``: did the model learn a trigger (OWASP ML02/ML10)?

A poisoner stamps a trigger (one repeated value, a narrow band of distinct values, a
rare category) on a few training rows and relabels them to one class; the model
learns "trigger -> class". The screen stage looks for such rows in the data; this
probe looks for the learned behaviour in the model: it stamps each candidate value
on clean test rows and measures the share flipped to one class.

A real effect flips rows too (large diamonds are mostly one cut), so the flip is
compared with what the TRUSTED data says about the value: the signed reference
profile's label counts by input value (``profile["conditional"]``, version 4, see
`tasks.checks.conditional`). For a row with the model's own clean class
probabilities ``q`` whose value of the feature is ``u``, stamping ``v`` is justified
to move class ``k``'s odds by the reference's likelihood ratio ``r_k(v) / r_k(u)``,
with ``r_k(b) = P_ref(k | b) / P_ref(k)`` (``b``: the value's reference bin or
category), smoothed toward 1 by a prior worth ``PRIOR_ROWS`` reference rows, and 1
for a category the reference never saw. The justified prediction is
``argmax_k q_k r_k(v) / r_k(u)``. Among the test rows not predicted ``c``, the
excess is the share the model flips to ``c`` minus the share the reference
justifies flipping to ``c``; the score is its lower bound (minus ``Z_NOISE``
standard errors of the paired per-row difference, so a handful of stamped rows
cannot block on noise), the largest over candidates and classes. The gate blocks
above ``max_backdoor_flip``. No benign control is subtracted: a control value is
itself an extreme or common value, and a model that flips rows to the trigger's
class at the control too (boosting at the 99th percentile) would mask the trigger.

Candidates, from a seeded sample of up to ``PROFILE_ROWS`` training rows:

- ``tail_value`` (numeric): the most frequent value at or beyond the 99th
  percentile and at or below the 1st, if repeated ``MIN_TRIGGER_COUNT`` times and in
  at most ``MAX_TRIGGER_SHARE`` of the rows (a trigger on 3% of the rows *is* the
  99th percentile: the tails are inclusive);
- ``band_value`` (numeric, with a reference): one per reference bin: the median of
  the run of ``WINDOW_SHARE`` of the sorted training values (at least
  ``MIN_TRIGGER_COUNT``) whose labels are the most anomalous against the reference
  bin's (binomial z of the most over-represented class). A band of distinct values
  tied to one label is such a run, so a value inside the band is stamped;
- ``rare_category``: each category in at most ``MAX_TRIGGER_SHARE`` of the rows
  (at least ``MIN_TRIGGER_COUNT`` times; the ``MAX_CATEGORIES`` most frequent per
  column);
- ``unseen_category`` (with a reference): a category in the training data (at least
  ``MIN_TRIGGER_COUNT`` times) that the reference never held.

Out-of-range values are not candidates: a linear model extrapolates any informative
input to one class far outside its range, and a trigger the model learned is in its
training data. Cost is flat in the dataset size: at most ``MAX_STAMPED_ROWS``
stamped rows in all (``backdoor_samples`` rows per candidate; band candidates beyond
the budget are dropped, least anomalous first), predicted in one call.

Without a ``conditional`` section (profile versions 2 and 3, or no profile handed
over) the probe falls back to tail values and rare categories scored against a
benign control (the same percentile without the value; the most frequent category)
and reports ``reference: "none"``.

Metrics name the feature, its kind, the class, the flip, the justified (or control)
flip and counts, never the candidate value (a data value in reports and MLflow).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from tasks.checks.conditional import bin_index, class_totals
from tasks.checks.poisoning import category_keys, label_key, label_keys
from tasks.common.gates import GateResult, check
from tasks.models import numeric_layout

BACKDOOR = "evaluate.backdoor_probe"

PROFILE_ROWS = 50_000  # training rows read to find candidates (seeded sample)
MAX_TRIGGER_SHARE = 0.05  # a trigger is rare: at most this share of training rows
MIN_TRIGGER_COUNT = 3  # ... and repeated: at least this many times
MAX_CATEGORIES = 10  # rare categories probed per column (the most frequent ones)
TAIL_QUANTILE = 0.01  # tails: at or beyond the 1st / 99th percentile
WINDOW_SHARE = 0.005  # a band candidate: a run of this share of the sorted training values
PRIOR_ROWS = 20.0  # reference smoothing: a bin's class shares shrink toward the overall
MAX_STAMPED_ROWS = 16_000  # stamped rows per probe, all candidates and controls together
Z_NOISE = 2.0  # the score is the excess minus this many standard errors
NEIGHBOUR_BINS = 2  # local controls: reference bins this far below and above a value

KIND_TEXT = {
    "tail_value": "a repeated extreme value",
    "band_value": "a value from a label-anomalous band",
    "rare_category": "a rare category",
    "unseen_category": "a category absent from the reference",
}


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

    def share_bounds(self, col: str, values: pd.Series, numeric: bool) -> np.ndarray:
        """Upper bound (Wilson, ``Z_NOISE``) of P_ref(k | group of each value); the
        overall share P_ref(k) for a value the reference never held."""
        idx, table = self.groups(col, values, numeric)
        n = table.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            p = np.where(n > 0, table / np.maximum(n, 1), self.prior)
            m = np.maximum(n, 1)
            z2n = Z_NOISE**2 / m
            spread = Z_NOISE * np.sqrt(p * (1 - p) / m + z2n / (4 * m))
            upper = (p + z2n / 2 + spread) / (1 + z2n)
        upper = np.where(n > 0, upper, self.prior)
        return self._to_model(np.clip(upper[idx], 0.0, 1.0), 0.0)


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
        out.append(_Candidate(col, "band_value", float(mid[best]), priority=float(z[best])))
    return out


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
    """Every candidate (see the module docstring), band candidates cut to `budget`."""
    pick = _positions(len(x_train), PROFILE_ROWS, rng)
    train = x_train.iloc[pick]
    fixed: list[_Candidate] = []
    bands: list[_Candidate] = []
    for col in numeric:
        fixed += _tail_candidates(col, train[col])
    for col in categorical:
        fixed += _category_candidates(col, train[col], ref)
    if ref is not None and y_train is not None:
        keys = label_keys(y_train.iloc[pick]).to_numpy()
        codes = pd.Categorical(keys, categories=ref.ref_classes).codes.astype(np.int64)
        for col in numeric:
            bands += _band_candidates(col, train[col], codes, ref)
        fixed = [
            _with_neighbours(c, train[c.feature], ref)
            if c.feature in numeric
            else dataclasses.replace(c, controls=())
            for c in fixed
        ]
        bands = [_with_neighbours(c, train[c.feature], ref) for c in bands]
    bands.sort(key=lambda c: -c.priority)
    chosen: list[_Candidate] = []
    blocks: set[tuple[str, Any]] = set()
    for cand in fixed + bands:  # greedy: stamped blocks (candidates and controls) <= budget
        new = {(cand.feature, v) for v in (cand.value, *cand.controls)} - blocks
        if len(blocks) + len(new) > budget:
            continue
        blocks |= new
        chosen.append(cand)
    return chosen


def _with_neighbours(cand: _Candidate, values: pd.Series, ref: _Reference) -> _Candidate:
    """A numeric candidate with its local controls (reference mode): the median training
    value of the reference bins ``NEIGHBOUR_BINS`` below and above the candidate's
    (those that exist). A smooth response to the input (a real effect, or a linear
    model extrapolating a correlated input) flips rows there too; a learned trigger
    does not reach that far."""
    stats = ref.numeric_stats(cand.feature)
    if stats is None:
        return dataclasses.replace(cand, controls=())
    edges, counts = stats
    v = _floats(values)
    v = v[np.isfinite(v)]
    bins = np.minimum(bin_index(edges, v), len(counts) - 1)
    b = int(np.minimum(bin_index(edges, np.array([float(cand.value)])), len(counts) - 1)[0])
    controls = []
    for other in (b - NEIGHBOUR_BINS, b + NEIGHBOUR_BINS):
        held = v[bins == other]
        if 0 <= other < len(counts) and len(held):
            controls.append(float(np.median(held)))
    return dataclasses.replace(cand, controls=tuple(controls))


# --- stamping and scoring -------------------------------------------------------------


def _stamped(rows: pd.DataFrame, cands: list[tuple[str, Any]], numeric: set[str]) -> pd.DataFrame:
    """`rows` repeated once per (feature, value), each block with that value stamped.

    A numeric input is stamped as float64 whatever its dtype (a trigger or control
    between two integers is no integer; the pipeline scales floats anyway); a
    categorical one keeps its dtype when every value fits it, else becomes object.
    """
    n = len(rows)
    big = rows.iloc[np.tile(np.arange(n), len(cands))].reset_index(drop=True)
    by_feature: dict[str, list[int]] = {}
    for j, (feature, _) in enumerate(cands):
        by_feature.setdefault(feature, []).append(j)
    for col, blocks in by_feature.items():
        if col in numeric:
            arr: np.ndarray = _floats(big[col]).copy()
        else:
            arr = big[col].to_numpy(dtype=object, copy=True)
        for j in blocks:
            arr[j * n : (j + 1) * n] = cands[j][1]
        if col in numeric:
            big[col] = arr
            continue
        try:
            typed = pd.Series(arr, dtype=rows[col].dtype)
            fits = bool((typed.astype(object).to_numpy() == arr).all())
        except (TypeError, ValueError):
            fits = False
        big[col] = typed if fits else pd.Series(arr, dtype=object)
    return big


JUSTIFY = "both"  # measurement switch: "naive", "share" or "both"


def _justified(*, naive: float, bound: float, kept: int, n: int, n_o: int, control: float) -> float:
    """The flip share (among the `n_o` rows not predicted c) the reference justifies:
    the larger of the likelihood-ratio share (`naive`) and the share that brings the
    stamped rows' c predictions up to the reference's bound on c's share at the value
    (`bound` of `n` rows, `kept` of them already c)."""
    reach = min(max((bound * n - kept) / n_o, 0.0), 1.0)
    if JUSTIFY == "naive":
        return max(naive, control)
    if JUSTIFY == "share":
        return max(reach, control)
    if JUSTIFY == "nocontrol":
        return max(naive, reach)
    return max(naive, reach, control)


def check_backdoor_probe(
    *,
    pipeline: Pipeline,
    x_train: pd.DataFrame,
    x_test: pd.DataFrame,
    max_flip: float,
    samples: int,
    seed: int,
    y_train: pd.Series | None = None,
    reference: Mapping[str, Any] | None = None,
) -> GateResult:
    """No candidate trigger may flip more than `max_flip` of the clean test rows to
    one class beyond what the trusted reference justifies (see the module docstring).

    Args:
        reference: The verified reference profile; its ``conditional`` section (version
            4) is what justifies a flip. Without one: the benign-control score.
        y_train: Training labels (band candidates need them).

    Metrics: score, excess, feature, kind, class, flip, justified (with no reference:
    the control's flip), rows (test rows of another class), candidates, samples,
    reference ("conditional" or "none").
    """
    threshold = {"max_backdoor_flip": max_flip}
    rng = np.random.default_rng(seed)
    numeric, categorical = _input_roles(pipeline)
    classes = np.asarray(pipeline.classes_)
    cond = _conditional(reference)
    ref = _Reference(cond, classes) if cond is not None else None
    if ref is not None and not hasattr(pipeline, "predict_proba"):
        ref = None  # no probabilities to justify: the control score
    rows = x_test.iloc[_positions(len(x_test), samples, rng)]
    budget = max(1, MAX_STAMPED_ROWS // max(len(rows), 1))
    candidates = _candidates(x_train, y_train, numeric, categorical, ref, rng, budget)
    best: dict[str, Any] = {
        "score": 0.0,
        "excess": 0.0,
        "feature": "",
        "kind": "none",
        "class": "",
        "flip": 0.0,
        "justified": 0.0,
        "rows": 0,
    }
    n = len(rows)
    nums = set(numeric)
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # an unseen category: all-zero one-hot
        if ref is not None:
            q = np.asarray(pipeline.predict_proba(rows), dtype=np.float64)
            clean = q.argmax(axis=1)
        else:
            clean = _codes(classes, pipeline.predict(rows))
        keys = list({(c.feature, v): None for c in candidates for v in (c.value, *c.controls)})
        block = {key: i for i, key in enumerate(keys)}
        if keys:
            stamped_rows = _stamped(rows, keys, nums)
            if ref is not None:
                stamped = np.asarray(pipeline.predict_proba(stamped_rows)).argmax(axis=1)
            else:
                stamped = _codes(classes, pipeline.predict(stamped_rows))
            blocks = stamped.reshape(len(keys), n)
        own: dict[str, np.ndarray] = {}
        for cand in candidates:
            flipped = blocks[block[cand.feature, cand.value]]
            controls = [blocks[block[cand.feature, v]] for v in cand.controls]
            if ref is not None:
                is_num = cand.feature in nums
                if cand.feature not in own:
                    own[cand.feature] = ref.ratios(cand.feature, rows[cand.feature], is_num)
                value = pd.Series([cand.value], dtype=None if is_num else object)
                moved = ref.ratios(cand.feature, value, is_num)
                naive = (q * moved / own[cand.feature]).argmax(axis=1)
                bound = ref.share_bounds(cand.feature, value, is_num)[0]
            for c in range(len(classes)):
                others = clean != c
                n_o = int(others.sum())
                if not n_o:
                    continue
                flip = float(np.mean(flipped[others] == c))
                control = (
                    float(np.mean([np.mean(b[others] == c) for b in controls])) if controls else 0.0
                )
                if ref is not None:
                    justified = _justified(
                        naive=float(np.mean(naive[others] == c)),
                        bound=float(bound[c]),
                        kept=int(np.count_nonzero(flipped[~others] == c)),
                        n=n,
                        n_o=n_o,
                        control=control,
                    )
                    excess = flip - justified
                    score = excess - Z_NOISE * math.sqrt(flip * (1 - flip) / n_o)
                else:
                    justified = control
                    excess = score = flip - justified
                if score > best["score"]:
                    best = {
                        "score": score,
                        "excess": excess,
                        "feature": cand.feature,
                        "kind": cand.kind,
                        "class": str(classes[c]),
                        "flip": flip,
                        "justified": justified,
                        "rows": n_o,
                    }
    metrics = {
        **best,
        "candidates": len(candidates),
        "samples": n,
        "reference": "conditional" if ref is not None else "none",
    }
    ok = best["score"] <= max_flip
    basis = "the trusted reference justifies" if ref is not None else "its benign control flips"
    return check(
        BACKDOOR,
        metrics=metrics,
        threshold=threshold,
        ok=ok,
        detail=f"no candidate trigger flips predictions beyond what {basis}"
        if ok
        else f"stamping {KIND_TEXT.get(best['kind'], best['kind'])} of {best['feature']} on "
        f"{best['rows']} clean rows turns {best['flip']:.2f} of them into class "
        f"{best['class']}, {best['score']:.2f} beyond what {basis} ({best['justified']:.2f}; "
        f"maximum {max_flip}): the model may have learned a backdoor; inspect the training "
        f"rows of {best['feature']} that screen.backdoor points to, remove them and retrain",
    )


def _codes(classes: np.ndarray, labels: Any) -> np.ndarray:
    """Index of each predicted label in `classes` (-1: none)."""
    labels = np.asarray(labels)
    out = np.full(len(labels), -1, dtype=np.int64)
    for i, c in enumerate(classes):
        out[labels == c] = i
    return out
