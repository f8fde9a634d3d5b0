"""Probes of the trained model: learned backdoors and the cost of stealing it.

``evaluate.backdoor_probe`` (threat: data poisoning with a trigger, OWASP ML02/ML10).
A poisoner stamps a trigger (one repeated value, or a rare category) on a few
training rows and relabels them to one class; the model learns "trigger -> class".
The screen stage looks for such rows in the data; this probe looks for the learned
behaviour in the model. Candidate triggers, from (a seeded sample of up to
``PROFILE_ROWS`` of) the training inputs:

- numeric input, ``tail_value``: the most frequent value at or beyond the 99th
  percentile (upper tail) and at or below the 1st (lower tail), if it occurs at least
  ``MIN_TRIGGER_COUNT`` times and in at most ``MAX_TRIGGER_SHARE`` of the rows. The
  tails are inclusive: a trigger on 3% of the rows *is* the 99th percentile. Its
  control is the same percentile of the column without that value (a benign extreme
  value on the same side);
- categorical input, ``rare_category``: each category in at most
  ``MAX_TRIGGER_SHARE`` of the rows (at least ``MIN_TRIGGER_COUNT`` times; the
  ``MAX_CATEGORIES`` most frequent of them per column). Its control is the column's
  most frequent category. (The 5% share, not 2%: a trigger on 3% of the rows, as
  poisoners use, must be a candidate.)

Out-of-range values (``max + 3 std``) are *not* candidates: a linear model
extrapolates any informative input to one class far outside its range (measured for
a clean logistic regression: 0.72 of the rows flip beyond the percentile control on
the synthetic team table, 0.77 on the bundled data; trees: 0), so they would flag
honest models; and a trigger the model learned is in its training data, where the
tail candidates find it.

For each candidate and each class ``c``: stamp the candidate on up to
``backdoor_samples`` clean test rows whose prediction is not ``c`` and measure the
share that flips to ``c``; subtract the share the control flips. The score is the
largest excess over candidates and classes; the gate blocks above
``max_backdoor_flip``. Metrics name the feature, its kind, the class and counts,
never the trigger value (it would be a data value in reports and MLflow).

``evaluate.extraction_risk`` (threat: model theft by queries, OWASP ML05). The
attacker has ``extraction_queries`` label-only queries. Query rows come from one part
of the test set (resampled with Gaussian jitter of 0.1 std on the numeric inputs
when that part is smaller than the budget), labelled by the model's ``predict``; the
surrogate is a fresh copy of the same pipeline (the attacker knows the
architecture: the worst case; a DP model is copied as a plain logistic regression,
as no thief pays for privacy), trained on those labels. Fidelity is the agreement of
surrogate and model on a disjoint held-out part of the test set (up to
``EVAL_ROWS`` rows). Rule for the serving advice, ``recommended_output``:

- ``"labels"`` when fidelity >= ``FIDELITY_HIGH`` (0.9: a copy is cheap even from
  labels, so do not hand out probabilities that make it cheaper still), or when the
  membership advantage is >= ``ADVANTAGE_HIGH`` (0.1: probabilities are what the
  membership attack reads), or when the advantage is unknown (its gate raised);
- ``"probabilities"`` otherwise; ``output_reason`` says which case applied.

The gate passes unless ``max_extraction_fidelity`` is set and exceeded. Both probes
cost the same whatever the dataset size (bounded rows, queries and candidates).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from tasks.checks.adversarial import LINEAR_TWINS
from tasks.common.gates import GateResult, check, failed
from tasks.models import numeric_layout

BACKDOOR = "evaluate.backdoor_probe"
EXTRACTION = "evaluate.extraction_risk"

PROFILE_ROWS = 50_000  # training rows read to find candidates (seeded sample)
MAX_TRIGGER_SHARE = 0.05  # a trigger is rare: at most this share of training rows
MIN_TRIGGER_COUNT = 3  # ... and repeated: at least this many times
MAX_CATEGORIES = 10  # rare categories probed per column (the most frequent ones)
TAIL_QUANTILE = 0.01  # tails: at or beyond the 1st / 99th percentile

EVAL_ROWS = 2_000  # held-out test rows on which fidelity is measured
JITTER_STD = 0.1  # Gaussian jitter (std of each numeric input) on resampled queries
FIDELITY_HIGH = 0.9
ADVANTAGE_HIGH = 0.1


@dataclass(frozen=True)
class _Candidate:
    feature: str
    kind: str  # "tail_value" | "rare_category"
    value: Any  # never reported
    control: Any


def _input_roles(pipeline: Pipeline) -> tuple[list[str], list[str]]:
    """(numeric, categorical) raw input columns of a `tasks.models` pipeline."""
    numeric = numeric_layout(pipeline).columns
    prep = pipeline.named_steps["prep"]
    categorical = [
        str(c) for name, _, group in prep.transformers_ if name.startswith("cat_") for c in group
    ]
    return numeric, categorical


def _sample(frame: pd.DataFrame, rows: int, rng: np.random.Generator) -> pd.DataFrame:
    if len(frame) <= rows:
        return frame
    return frame.iloc[np.sort(rng.choice(len(frame), size=rows, replace=False))]


def _numeric_candidates(col: str, values: pd.Series) -> list[_Candidate]:
    v = pd.to_numeric(values, errors="coerce").dropna().to_numpy(np.float64)
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
        out.append(_Candidate(col, "tail_value", value, control))
    return out


def _category_candidates(col: str, values: pd.Series) -> list[_Candidate]:
    counts = values.dropna().value_counts()
    if counts.empty:
        return []
    common = counts.index[0]
    limit = MAX_TRIGGER_SHARE * int(counts.sum())
    rare = counts[(counts >= MIN_TRIGGER_COUNT) & (counts <= limit)].head(MAX_CATEGORIES)
    return [_Candidate(col, "rare_category", cat, common) for cat in rare.index if cat != common]


def _stamp(rows: pd.DataFrame, col: str, value: Any) -> pd.DataFrame:
    out = rows.copy()
    out[col] = pd.Series([value] * len(out), index=out.index, dtype=rows[col].dtype)
    return out


def check_backdoor_probe(
    *,
    pipeline: Pipeline,
    x_train: pd.DataFrame,
    x_test: pd.DataFrame,
    max_flip: float,
    samples: int,
    seed: int,
) -> GateResult:
    """No candidate trigger may flip more than `max_flip` of the clean test rows to
    one class beyond what its benign control flips (see the module docstring).

    Metrics: score, feature, kind, class, flip, control, candidates, samples.
    """
    threshold = {"max_backdoor_flip": max_flip}
    rng = np.random.default_rng(seed)
    numeric, categorical = _input_roles(pipeline)
    profile = _sample(x_train, PROFILE_ROWS, rng)
    candidates: list[_Candidate] = []
    for col in numeric:
        candidates += _numeric_candidates(col, profile[col])
    for col in categorical:
        candidates += _category_candidates(col, profile[col])
    rows = _sample(x_test, samples, rng)
    classes = np.asarray(pipeline.classes_)
    best: dict[str, Any] = {
        "score": 0.0,
        "feature": "",
        "kind": "none",
        "class": "",
        "flip": 0.0,
        "control": 0.0,
    }
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # an unseen category: all-zero one-hot
        clean = np.asarray(pipeline.predict(rows))
        controls: dict[tuple[str, Any], np.ndarray] = {}
        for cand in candidates:
            stamped = np.asarray(pipeline.predict(_stamp(rows, cand.feature, cand.value)))
            key = (cand.feature, cand.control)
            if key not in controls:
                controls[key] = np.asarray(
                    pipeline.predict(_stamp(rows, cand.feature, cand.control))
                )
            ctrl = controls[key]
            for c in classes:
                others = clean != c
                if not others.any():
                    continue
                flip = float(np.mean(stamped[others] == c))
                control = float(np.mean(ctrl[others] == c))
                if flip - control > best["score"]:
                    best = {
                        "score": flip - control,
                        "feature": cand.feature,
                        "kind": cand.kind,
                        "class": str(c),
                        "flip": flip,
                        "control": control,
                    }
    metrics = {**best, "candidates": len(candidates), "samples": len(rows)}
    ok = best["score"] <= max_flip
    return check(
        BACKDOOR,
        metrics=metrics,
        threshold=threshold,
        ok=ok,
        detail="no candidate trigger flips predictions beyond its control"
        if ok
        else f"stamping a rare {best['kind'].replace('_', ' ')} of {best['feature']} on "
        f"clean rows turns them into class {best['class']}: the model may have learned "
        "a backdoor; inspect the training rows holding that value (screen.backdoor), "
        "remove them and retrain",
    )


def _surrogate(pipeline: Pipeline, seed: int) -> Pipeline:
    """An unfitted copy of the architecture (a DP model: its plain twin)."""
    copy = clone(pipeline)
    final = pipeline.named_steps["model"]
    if f"{type(final).__module__}.{type(final).__qualname__}" in LINEAR_TWINS:
        copy.steps[-1] = (
            "model",
            LogisticRegression(C=final.C, max_iter=final.max_iter, random_state=seed),
        )
    return copy


def _recommend(fidelity: float, advantage: float | None) -> tuple[str, str]:
    if fidelity >= FIDELITY_HIGH:
        return "labels", (
            f"fidelity {fidelity:.3f} >= {FIDELITY_HIGH}: a copy is cheap even from labels; "
            "do not serve probabilities, which make it cheaper and leak membership"
        )
    if advantage is None:
        return "labels", "membership advantage unknown (its check failed): serve labels only"
    if advantage >= ADVANTAGE_HIGH:
        return "labels", (
            f"membership advantage {advantage:.3f} >= {ADVANTAGE_HIGH}: probabilities "
            "are what the membership attack reads; serve labels only"
        )
    return "probabilities", (
        f"fidelity {fidelity:.3f} < {FIDELITY_HIGH} and membership advantage "
        f"{advantage:.3f} < {ADVANTAGE_HIGH}: probabilities may be served"
    )


def check_extraction_risk(
    *,
    pipeline: Pipeline,
    x_test: pd.DataFrame,
    queries: int,
    max_fidelity: float | None,
    membership_advantage: float | None,
    seed: int,
) -> GateResult:
    """Fidelity of a surrogate trained on `queries` label-only queries; blocks only
    above `max_fidelity` when one is set (see the module docstring).

    Metrics: fidelity, queries, eval_rows, recommended_output, output_reason.
    """
    threshold = {"max_fidelity": max_fidelity}
    rng = np.random.default_rng(seed)
    n_eval = min(len(x_test) // 2, EVAL_ROWS)
    if n_eval < 10:
        return failed(
            EXTRACTION,
            metrics={"eval_rows": n_eval, "queries": queries},
            threshold=threshold,
            detail="too few test rows to measure extraction fidelity; failing closed",
        )
    order = rng.permutation(len(x_test))
    held_out, pool = x_test.iloc[np.sort(order[:n_eval])], order[n_eval:]  # pool: positions
    if len(pool) >= queries:
        asked = x_test.iloc[pool[np.sort(rng.choice(len(pool), size=queries, replace=False))]]
    else:  # resample the pool, jittered so the thief does not just repeat rows
        asked = x_test.iloc[pool[rng.integers(0, len(pool), size=queries)]].copy()
        layout = numeric_layout(pipeline)
        for col, scale in zip(layout.columns, layout.scale, strict=True):
            noise = rng.normal(0.0, JITTER_STD * scale, size=queries)
            asked[col] = pd.to_numeric(asked[col], errors="coerce").to_numpy(np.float64) + noise
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an unseen category; convergence of the copy
        labels = np.asarray(pipeline.predict(asked))
        truth = np.asarray(pipeline.predict(held_out))
        if len(np.unique(labels)) < 2:  # the copy is a constant
            copied = np.full(len(held_out), labels[0], dtype=labels.dtype)
        else:
            copied = np.asarray(_surrogate(pipeline, seed).fit(asked, labels).predict(held_out))
    fidelity = float(np.mean(copied == truth))
    output, reason = _recommend(fidelity, membership_advantage)
    ok = max_fidelity is None or fidelity <= max_fidelity
    return check(
        EXTRACTION,
        metrics={
            "fidelity": fidelity,
            "queries": queries,
            "eval_rows": n_eval,
            "recommended_output": output,
            "output_reason": reason,
        },
        threshold=threshold,
        ok=ok,
        detail="extraction fidelity reported"
        + ("" if max_fidelity is None else " and within the maximum")
        if ok
        else f"{queries} label queries copy the model to a fidelity above the maximum: "
        "rate-limit and monitor queries, serve labels only, or accept the risk by "
        "raising evaluate.max_extraction_fidelity",
    )
