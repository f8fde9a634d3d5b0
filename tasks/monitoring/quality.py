"""Is the champion still as accurate as it was held to be? Measured with labels,
estimated without.

Production labels often arrive late or never. With labels, the champion's accuracy on
the batch is measured and `monitor.quality` fails only when it is *significantly*
below the floor (one-sided exact binomial test at ``alpha``), so a small batch that
falls a little short by chance does not page anyone, while a real drop does.

Without labels, the accuracy is estimated from the model's own confidence: the mean
probability of the predicted class (confidence-based performance estimation, as
NannyML's CBPE). The estimate is right only when the probabilities are calibrated and
only the inputs' distribution moved (covariate shift: P(label | inputs) unchanged);
a change of what the inputs mean (concept drift) leaves it blind. It is therefore
reported, never a verdict: `monitor.quality` passes and says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from tasks.checks.poisoning import label_keys, profile_inputs
from tasks.common.errors import PipelineError
from tasks.common.gates import GateResult, check
from tasks.monitoring.types import QualityReport

GATE = "monitor.quality"
MEASURED = "accuracy on the batch's labelled rows (labels keyed: 1 and 1.0 are one)"
ESTIMATED = (
    "the mean probability of the predicted class (confidence-"
    "based, as NannyML's CBPE); assumes calibrated probabilities and that only the "
    "inputs' distribution shifted (P(label | inputs) unchanged)"
)
NO_PROBA = "no labels, and the model has no predict_proba: accuracy not estimated"


class QualityInputError(PipelineError, ValueError):
    """The batch cannot be scored (empty, or without an input the champion needs)."""


def _inputs(pipeline: Any, profile: Mapping[str, Any]) -> list[str]:
    """The columns the champion was fitted on (in order), else the profile's inputs."""
    names = getattr(pipeline, "feature_names_in_", None)
    if names is not None:
        return [str(c) for c in names]
    numeric, categorical = profile_inputs(profile)
    return [*numeric, *categorical]


def confidence_estimate(proba: np.ndarray) -> float:
    """Expected accuracy of calibrated class probabilities: the mean of each row's
    largest probability (the chance that its predicted class is right)."""
    p = np.asarray(proba, dtype=np.float64)
    return float(p.max(axis=1).mean()) if len(p) else float("nan")


def measure_quality(
    pipeline: Any,
    frame: pd.DataFrame,
    profile: Mapping[str, Any],
    *,
    floor: float,
    alpha: float,
) -> QualityReport:
    """The champion on a batch: its accuracy where labels are present, and the
    confidence-based estimate (see the module docstring).

    Args:
        pipeline: The champion (a fitted scikit-learn Pipeline over the input columns).
        frame: The batch after ingestion (inputs, maybe the label ``profile["target"]``).
        profile: The verified reference profile (its target; its inputs when the model
            does not record the columns it was fitted on).
        floor: The accuracy the champion is held to (recorded in the report).
        alpha: Unused here (the gate tests at it); accepted so the flow passes the
            monitoring settings in one place.

    Raises:
        QualityInputError: the batch is empty or lacks an input of the champion.
    """
    del alpha  # the significance level belongs to the gate (`quality_gate`)
    if not len(frame):
        raise QualityInputError("the batch is empty: no rows to measure the champion on")
    inputs = _inputs(pipeline, profile)
    absent = [c for c in inputs if c not in frame.columns]
    if absent:
        more = f" and {len(absent) - 10} more" if len(absent) > 10 else ""
        raise QualityInputError(
            f"the batch lacks the champion's input(s) {absent[:10]}{more}: the monitored "
            "source must carry every input the model was trained on"
        )
    x = frame[inputs]
    target = profile["target"]
    truth = frame[target] if target in frame.columns else None
    labelled = truth.notna().to_numpy() if truth is not None else np.zeros(len(frame), bool)
    estimate: float | None = None
    pred: np.ndarray | None = None
    if hasattr(pipeline, "predict_proba"):
        proba = np.asarray(pipeline.predict_proba(x))
        estimate = confidence_estimate(proba)
        if labelled.any():  # the predicted class, as predict() gives it, without a rerun
            pred = np.asarray(pipeline.classes_)[proba[labelled].argmax(axis=1)]
    elif labelled.any():
        pred = np.asarray(pipeline.predict(x[labelled]))
    accuracy: float | None = None
    if truth is not None and pred is not None:
        right = label_keys(pd.Series(pred)).to_numpy() == label_keys(truth[labelled]).to_numpy()
        accuracy = float(right.mean())
    if accuracy is not None:
        method = f"{MEASURED}: {int(labelled.sum())} of {len(frame)} rows labelled"
        if estimate is not None:
            method += f"; confidence-based estimate {estimate:.3f} ({ESTIMATED})"
    else:
        method = f"no labels; estimated as {ESTIMATED}" if estimate is not None else NO_PROBA
    return QualityReport(
        rows=int(labelled.sum()) if accuracy is not None else len(frame),
        labelled=accuracy is not None,
        accuracy=accuracy,
        estimated_accuracy=estimate,
        floor=floor,
        method=method,
    )


def quality_gate(q: QualityReport, alpha: float) -> GateResult:
    """`monitor.quality`: with labels, fails when the accuracy is significantly below the
    floor (one-sided exact binomial test at `alpha`); without labels, passes and reports
    the estimate, which is not a verdict."""
    threshold: dict[str, Any] = {"min_accuracy": q.floor, "alpha": alpha}
    if not q.labelled or q.accuracy is None:
        if q.estimated_accuracy is None:
            how = "none: the model gives no probabilities"
        else:
            how = (
                f"{q.estimated_accuracy:.3f}, confidence-based: right only for calibrated "
                "probabilities and inputs that shifted without changing what they mean"
            )
        return check(
            GATE,
            ok=True,
            metrics={"labelled": False, "rows": q.rows, "estimated_accuracy": q.estimated_accuracy},
            threshold=threshold,
            detail=(
                f"no labels in the batch: estimated accuracy {how} (floor {q.floor}); an "
                "estimate, not a verdict: label a sample of the batch to measure it"
            ),
        )
    right = round(q.accuracy * q.rows)
    p = float(binomtest(right, q.rows, q.floor, alternative="less").pvalue) if q.rows else 1.0
    ok = p > alpha
    metrics: dict[str, Any] = {
        "labelled": True,
        "rows": q.rows,
        "accuracy": q.accuracy,
        "p_value": p,
        "estimated_accuracy": q.estimated_accuracy,
    }
    words = (
        f"accuracy {q.accuracy:.3f} on {q.rows} labelled rows against the floor {q.floor} "
        f"(one-sided exact binomial p {p:.2g}"
    )
    if ok:
        detail = f"{words} > {alpha}: not significantly below the floor)"
    else:
        detail = (
            f"{words} <= {alpha}): the champion is significantly below its floor on this "
            "batch; check the batch's labels and drift, retrain on recent data "
            "(`secure-pipeline run`) or roll back"
        )
    return check(GATE, ok=ok, metrics=metrics, threshold=threshold, detail=detail)
