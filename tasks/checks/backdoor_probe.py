"""``evaluate.backdoor_probe``: did the model learn a trigger (OWASP ML02/ML10)?

A poisoner stamps a trigger (one repeated value, a narrow band of distinct values, a
rare category) on a few training rows and relabels them to one class; the model
learns "trigger -> class". The screen stage looks for such rows in the data; this
probe looks for the learned behaviour in the model: it stamps each candidate value
on clean test rows and measures the share flipped to one class.

A real effect flips rows too (large diamonds are mostly one cut), so the flip is
compared with what the TRUSTED data says about the value: the signed reference
profile's label counts by input value (``profile["conditional"]``, version 4, see
`tasks.checks.conditional`), with ``b`` the value's reference bin (5% of the rows) or
category. Among the test rows not predicted ``c``, the excess is the share the model
flips to ``c`` minus the largest justified share of these:

- the likelihood-ratio share: for a row with the model's own clean class probabilities
  ``q`` whose value is ``u``, stamping ``v`` may move class ``k``'s odds by
  ``r_k(v) / r_k(u)``, with ``r_k(b) = P_ref(k | b) / P_ref(k)`` smoothed toward 1 by a
  prior worth ``PRIOR_ROWS`` reference rows (1 for a category the reference never saw);
- the reach: the share that brings the stamped rows' ``c`` predictions up to the
  Wilson upper bound of ``P_ref(c | b)``;
- the direction: the whole flip when the reference holds ``c`` significantly MORE often
  at ``b`` than overall (Wilson lower bound above ``P_ref(c)``, for a value inside the
  reference's range). A share averaged over a 5% bin cannot bound the effect at the
  bin's far end (diamonds' cut is decided by `depth` and `table` within a bin), and a
  model that follows the trusted data's own direction learned no trigger from it;
- the local controls: the smaller flip at the training values ``NEAR_SHARE`` (a tail
  value) or ``BAND_NEAR_SHARE`` (a band value) of the sorted values below and above the
  candidate. A smooth response (a linear model, a real trend) moves both sides; a
  learned trigger, with clean rows around it, flips rows only at its own value;
- the null: the median flip over the input's other stamped values. Stamping one of
  several tied inputs (one of a diamond's three dimensions) moves rows at every value;
  a trigger does so only at its own;
- the trusted model: the flip of the same estimator trained on the trusted table
  (`tasks.checks.reference_models`, when the signed profile lists one), stamped on the
  same rows. A real effect, however it arises from the inputs together, moves a clean
  model too; a trigger exists only in a model trained on it. It is not weighted: the
  model is trusted as the profile is.

The controls and the null are weighted by how plausible ``c`` is at the value by the
reference (``min(1, upper bound of P_ref(c | b or the bins either side) / P_ref(c))``):
where the trusted data says ``c`` almost never occurs (the class a poisoner ties to a
value is the one least seen there), a response that is smooth or input-wide justifies
nothing. The score is the excess's lower bound (minus ``Z_NOISE`` standard errors, so a
handful of stamped rows cannot block on noise), the largest over candidates and classes.
The gate blocks above ``max_backdoor_flip``.

Candidates, from a seeded sample of up to ``PROFILE_ROWS`` training rows:

- ``tail_value`` (numeric): the most frequent value at or beyond the 99th
  percentile and at or below the 1st, if repeated ``MIN_TRIGGER_COUNT`` times and in
  at most ``MAX_TRIGGER_SHARE`` of the rows (a trigger on 3% of the rows *is* the
  99th percentile: the tails are inclusive);
- ``band_value`` (numeric, with a reference): per reference bin, the median of the run
  of ``WINDOW_SHARE`` of the sorted training values (at least ``MIN_TRIGGER_COUNT``)
  whose labels are the most anomalous against the bin's (binomial z of the most
  over-represented class); the ``BANDS_PER_FEATURE`` most anomalous per input. A band
  of distinct values tied to one label is such a run, so a value inside it is stamped;
- ``rare_category``: each category in at most ``MAX_TRIGGER_SHARE`` of the rows
  (at least ``MIN_TRIGGER_COUNT`` times; the ``MAX_CATEGORIES`` most frequent per
  column);
- ``unseen_category`` (with a reference): a category in the training data (at least
  ``MIN_TRIGGER_COUNT`` times) that the reference never held.

Out-of-range values are not candidates: a linear model extrapolates any informative
input to one class far outside its range, and a trigger the model learned is in its
training data. Cost is flat in the dataset size: at most ``MAX_STAMPED_ROWS``
stamped rows in all, predicted in one call: ``backdoor_samples`` rows per stamped value,
fewer (down to ``MIN_BLOCK_ROWS``) when there are many candidates; beyond that budget,
candidates are dropped in reverse of the order categories, tail values, band values
(taken in turns across inputs), so that one input's candidates never crowd out
another's.

Without a ``conditional`` section (profile versions 2 and 3, or no profile handed
over) the probe falls back to tail values and rare categories scored against a
benign control (the same percentile without the value; the most frequent category)
and reports ``reference: "none"``.

Metrics name the feature, its kind, the class, the flip, the justified (or control)
flip and counts, never the candidate value (a data value in reports and MLflow).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from tasks.checks.reference_models import ReferenceModel
from tasks.checks.trigger_candidates import (
    Z_NOISE,
    _candidates,
    _conditional,
    _floats,
    _input_roles,
    _positions,
    _Reference,
)
from tasks.common.gates import GateResult, check

BACKDOOR = "evaluate.backdoor_probe"

MAX_STAMPED_ROWS = 16_000  # stamped rows per probe, all candidates and controls together
MIN_BLOCK_ROWS = 200  # fewest clean rows stamped per value when many values are candidates

KIND_TEXT = {
    "tail_value": "a repeated extreme value",
    "band_value": "a value from a label-anomalous band",
    "rare_category": "a rare category",
    "unseen_category": "a category absent from the reference",
}


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


def _justified(
    *,
    naive: float,
    bound: float,
    kept: int,
    n: int,
    n_o: int,
    control: float,
    null: float,
    with_trend: bool,
    flip: float,
    trusted_flip: float = 0.0,
) -> float:
    """The flip share (among the `n_o` rows not predicted c) the reference justifies:
    the largest of the likelihood-ratio share (`naive`), the share that brings the
    stamped rows' c predictions up to the reference's bound on c's share at the value
    (`bound` of `n` rows, `kept` of them already c), the flips at the value's local
    controls (`control`, zero when the reference holds c significantly less often at
    the value), the feature's null (`null`: the median flip at its other stamped
    values), the flip of the reference model trained on the trusted table at the same
    stamp (`trusted_flip`), and the whole flip when the reference holds c significantly
    more often at the value than overall (`with_trend`: the model follows the trusted
    data's own direction; a share averaged over a 5% bin cannot bound it at the bin's
    far end)."""
    reach = min(max((bound * n - kept) / n_o, 0.0), 1.0)
    return max(naive, reach, control, null, trusted_flip, flip if with_trend else 0.0)


def _model_flip(stamped: np.ndarray, clean: np.ndarray, c: int) -> float:
    """The share of the rows a model does not predict as class `c` that it predicts as
    `c` once stamped (0 when it predicts every row as `c`)."""
    others = clean != c
    return float(np.mean(stamped[others] == c)) if others.any() else 0.0


def _null(blocks: list[np.ndarray], others: np.ndarray, c: int) -> float:
    """The median share of the `others` rows flipped to class `c` over the feature's
    other stamped values (0 with fewer than two): what stamping this input at all does,
    e.g. an input stamped apart from the inputs it is tied to (one of a diamond's three
    dimensions) moves rows at every value, a trigger only at its own."""
    if len(blocks) < 2:
        return 0.0
    return float(np.median([np.mean(b[others] == c) for b in blocks]))


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
    reference_model: ReferenceModel | None = None,
) -> GateResult:
    """No candidate trigger may flip more than `max_flip` of the clean test rows to
    one class beyond what the trusted reference justifies (see the module docstring).

    Args:
        reference: The verified reference profile; its ``conditional`` section (version
            4) is what justifies a flip. Without one: the benign-control score.
        y_train: Training labels (band candidates need them).
        reference_model: The same estimator trained on the trusted table, as the
            verified profile lists it (`tasks.checks.reference_models`): its flip at
            each stamped value is one more justified share. One the profile lists but
            that cannot be used fails the gate.

    Metrics: score, excess, feature, kind, class, flip, justified (with no reference:
    the control's flip), rows (test rows of another class), candidates, samples,
    reference ("conditional" or "none"), reference_model ("used", "none" or "refused").
    """
    threshold = {"max_backdoor_flip": max_flip}
    if reference_model is not None and reference_model.problem:
        return check(
            BACKDOOR,
            metrics={"reference_model": "refused"},
            threshold=threshold,
            ok=False,
            detail=f"the reference model of {reference_model.estimator}: "
            f"{reference_model.problem}; restore it or rebuild it with `secure-pipeline "
            "refresh`",
        )
    clean_model = reference_model.pipeline if reference_model is not None else None
    rng = np.random.default_rng(seed)
    numeric, categorical = _input_roles(pipeline)
    classes = np.asarray(pipeline.classes_)
    cond = _conditional(reference)
    ref = _Reference(cond, classes) if cond is not None else None
    if ref is not None and not hasattr(pipeline, "predict_proba"):
        ref = None  # no probabilities to justify: the control score
    rows = x_test.iloc[_positions(len(x_test), samples, rng)]
    floor = max(1, min(len(rows), MIN_BLOCK_ROWS))
    candidates = _candidates(
        x_train, y_train, numeric, categorical, ref, rng, MAX_STAMPED_ROWS // floor
    )
    blocks_wanted = len({(c.feature, v) for c in candidates for v in (c.value, *c.controls)})
    per_block = max(floor, MAX_STAMPED_ROWS // max(blocks_wanted, 1))
    if per_block < len(rows):  # many candidates: fewer rows each, the same stamped total
        rows = rows.iloc[np.sort(rng.choice(len(rows), per_block, replace=False))]
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
        trusted: tuple[np.ndarray, np.ndarray] | None = None  # the reference model's
        if keys:
            stamped_rows = _stamped(rows, keys, nums)
            if ref is not None:
                stamped = np.asarray(pipeline.predict_proba(stamped_rows)).argmax(axis=1)
            else:
                stamped = _codes(classes, pipeline.predict(stamped_rows))
            blocks = stamped.reshape(len(keys), n)
            if clean_model is not None and ref is not None:  # clean and stamped predictions
                trusted = (
                    _codes(classes, clean_model.predict(rows)),
                    _codes(classes, clean_model.predict(stamped_rows)).reshape(len(keys), n),
                )
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
                sign = ref.direction(cand.feature, cand.value, is_num)
                plausible = ref.plausibility(cand.feature, cand.value, is_num)
                near = set(cand.controls) | {cand.value}
                null = [
                    blocks[i] for (f, v), i in block.items() if f == cand.feature and v not in near
                ]
            for c in range(len(classes)):
                others = clean != c
                n_o = int(others.sum())
                if not n_o:
                    continue
                flip = float(np.mean(flipped[others] == c))
                each = [float(np.mean(b[others] == c)) for b in controls]
                if ref is not None:
                    control = min(each, default=0.0)  # a smooth response moves both sides
                    justified = _justified(
                        naive=float(np.mean(naive[others] == c)),
                        bound=float(bound[c]),
                        kept=int(np.count_nonzero(flipped[~others] == c)),
                        n=n,
                        n_o=n_o,
                        control=control * plausible[c],
                        null=_null(null, others, c) * plausible[c],
                        with_trend=bool(sign[c] > 0),
                        flip=flip,
                        trusted_flip=_model_flip(
                            trusted[1][block[cand.feature, cand.value]], trusted[0], c
                        )
                        if trusted is not None
                        else 0.0,
                    )
                    excess = flip - justified
                    score = excess - Z_NOISE * math.sqrt(flip * (1 - flip) / n_o)
                else:
                    justified = float(np.mean(each)) if each else 0.0
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
        "reference_model": "used" if trusted is not None else "none",
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
