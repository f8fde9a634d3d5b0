"""Probes of the trained model: learned backdoors and the cost of stealing it.

``evaluate.backdoor_probe`` lives in `tasks.checks.backdoor_probe` (re-exported here).

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

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from tasks.checks.adversarial import LINEAR_TWINS
from tasks.checks.backdoor_probe import BACKDOOR, check_backdoor_probe
from tasks.common.gates import GateResult, check, failed
from tasks.models import numeric_layout

EXTRACTION = "evaluate.extraction_risk"
__all__ = ["BACKDOOR", "EXTRACTION", "check_backdoor_probe", "check_extraction_risk"]

EVAL_ROWS = 2_000  # held-out test rows on which fidelity is measured
JITTER_STD = 0.1  # Gaussian jitter (std of each numeric input) on resampled queries
FIDELITY_HIGH = 0.9
ADVANTAGE_HIGH = 0.1


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
