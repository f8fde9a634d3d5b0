"""Evaluate stage: attack the model before anything is released.

Five gates, all run and reported together: a quality floor (``evaluate.quality``: a
useless or sabotaged model), robustness to evasion (``evaluate.adversarial``, see
`tasks.checks.adversarial`), membership leakage (``evaluate.membership_inference``,
see `tasks.checks.privacy`), learned backdoors (``evaluate.backdoor_probe``) and the
cost of stealing the model by queries (``evaluate.extraction_risk``, both in
`tasks.checks.probes`). Every check is called through `run_check` under its module
name here (a check that raises blocks the run at its own gate). The quality gate
scores the predictions the train stage made once for its round-trip gate
(`TrainedModel.test_pred`, `test_proba`), on a seeded sample of `QUALITY_ROWS` test
rows beyond that many (every row when the sample could tip the verdict); every other
check works on a bounded number of rows, so the stage costs about the same for 100 thousand or
1 million rows (`make bench` measures it).
Metrics go to the model's MLflow run (numeric ones; text metrics stay in the gate
results and the report) and the verdicts to its registered version.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline

from tasks.checks.adversarial import ADVERSARIAL, attack_rows, check_adversarial
from tasks.checks.privacy import MEMBERSHIP, check_membership_inference
from tasks.checks.probes import (
    BACKDOOR,
    EXTRACTION,
    check_backdoor_probe,
    check_extraction_risk,
)
from tasks.common.context import RunContext, StageGates, stage_task
from tasks.common.gates import GateResult, check, run_check
from tasks.common.settings import EvaluateConfig
from tasks.common.tracking import ModelRegistry, mlflow_client
from tasks.train import TrainedModel

__all__ = [
    "ADVERSARIAL",
    "BACKDOOR",
    "EXTRACTION",
    "MEMBERSHIP",
    "QUALITY",
    "check_adversarial",
    "check_backdoor_probe",
    "check_extraction_risk",
    "check_membership_inference",
    "check_quality",
    "evaluate",
    "evaluate_checks",
    "evaluate_task",
]

# Above this many test rows the quality metrics are computed on a seeded sample of
# them: accuracy's standard error is then at most 0.0035 (0.0021 at 0.9). When the
# sample's 99.9% interval reaches the floor, every test row is scored, so the verdict
# is the whole test set's wherever the sample could tip it. ROC AUC (reported only)
# always uses the sample (standard error below 0.005 for an AUC of 0.9 or more).
QUALITY_ROWS = 20_000
AUC_ROWS = QUALITY_ROWS
Z_999 = 3.29  # two-sided 99.9% normal quantile

QUALITY = "evaluate.quality"


def _roc_auc(truth: np.ndarray, proba: np.ndarray, classes: int) -> float | None:
    """ROC AUC from class codes (one-vs-rest beyond 2 classes); None when the test
    labels do not allow one (a single class, or a class the model never saw: -1)."""
    try:
        if classes == 2:
            return float(roc_auc_score(truth == 1, proba[:, 1]))
        return float(roc_auc_score(truth, proba, multi_class="ovr", labels=list(range(classes))))
    except ValueError:
        return None


def _codes_of(classes: list[Any], labels: Any) -> np.ndarray:
    """Code i where a label equals ``classes[i]``, -1 elsewhere: one vectorised
    comparison per class (a hash lookup per label costs twice as much)."""
    values = labels if isinstance(labels, pd.Series) else np.asarray(labels)
    codes = np.full(len(values), -1, dtype=np.int64)
    for i, c in enumerate(classes):
        hit = values == c
        if isinstance(hit, pd.Series):
            hit = hit.to_numpy(dtype=bool, na_value=False)
        if np.shape(hit) == codes.shape:  # else no label can equal c (other types)
            codes[hit] = i
    return codes


def _class_codes(classes: list[Any], *labels: Any) -> list[np.ndarray]:
    """Each label as an integer code: code i is ``classes[i]``; every label the model
    never saw gets a code of its own from ``len(classes)`` on (exactly as the labels
    themselves would count in the metrics)."""
    coded = [_codes_of(classes, v) for v in labels]
    if any((c < 0).any() for c in coded):  # rare: factorize only those labels
        unseen = [
            pd.Series(v)[c < 0].to_numpy(dtype=object) for v, c in zip(labels, coded, strict=True)
        ]
        extra, _ = pd.factorize(np.concatenate(unseen))
        start = 0
        for c, u in zip(coded, unseen, strict=True):
            c[c < 0] = extra[start : start + len(u)] + len(classes)
            start += len(u)
    return coded


def _f1(truth: np.ndarray, guess: np.ndarray, *, binary: bool) -> float:
    """sklearn's F1 from one confusion matrix: of class 1 (binary), else the macro mean
    over the labels present in either array; 0 where a label has no support."""
    k = int(max(truth.max(initial=0), guess.max(initial=0))) + 1
    cm = np.bincount(truth * k + guess, minlength=k * k).reshape(k, k)
    support = cm.sum(axis=0) + cm.sum(axis=1)
    f1 = np.divide(2 * np.diag(cm), support, out=np.zeros(k), where=support > 0)
    if binary:
        if k > 2:  # as sklearn: a third label leaves no binary F1 (the gate fails closed)
            raise ValueError("Target is multiclass but average='binary'")
        return float(f1[1]) if k > 1 else 0.0
    return float(f1[support > 0].mean()) if support.any() else 0.0


def _accuracy_ci(acc: float, n: int, total: int) -> float:
    """Half-width of the 99.9% interval of a sample accuracy (finite population)."""
    fpc = np.sqrt((total - n) / (total - 1)) if total > 1 else 0.0
    return float(Z_999 * np.sqrt(max(acc * (1 - acc), 1e-12) / n) * fpc + 1 / n)


def check_quality(
    *,
    pipeline: Pipeline,
    x: pd.DataFrame,
    y: pd.Series,
    min_accuracy: float,
    pred: np.ndarray | None = None,
    proba: np.ndarray | None = None,
) -> GateResult:
    """Test accuracy must reach `min_accuracy`; f1 (binary: of the last class in
    ``classes_``; else macro) and ROC AUC are reported too. Labels of any type.

    `pred` and `proba` are the pipeline's predictions on `x` when already made (the
    train stage makes them once); the metrics run on integer class codes (on string
    labels, 7x faster than on the labels themselves; the same values). Up to
    `QUALITY_ROWS` test rows every row is scored; beyond, a seeded sample of that many
    (``accuracy_rows``, with ``accuracy_ci999``), unless its interval reaches the floor:
    then every row is scored again and decides."""
    pred = pipeline.predict(x) if pred is None else pred
    if proba is None and hasattr(pipeline, "predict_proba"):
        proba = np.asarray(pipeline.predict_proba(x))
    classes = list(pipeline.classes_)
    total = len(y)
    rows = np.arange(total)
    if total > QUALITY_ROWS:
        rows = np.sort(np.random.default_rng(0).choice(total, size=QUALITY_ROWS, replace=False))
    truth, guess = _class_codes(classes, y.iloc[rows], np.asarray(pred)[rows])
    accuracy = float(np.mean(truth == guess)) if len(rows) else 0.0
    ci = _accuracy_ci(accuracy, len(rows), total) if len(rows) < total else 0.0
    if len(rows) < total and abs(accuracy - min_accuracy) <= ci:  # the sample could tip it
        rows = np.arange(total)
        truth, guess = _class_codes(classes, y, pred)
        accuracy, ci = float(np.mean(truth == guess)), 0.0
    metrics: dict[str, Any] = {
        "accuracy": accuracy,
        "accuracy_rows": len(rows),
        "accuracy_ci999": round(ci, 5),
        "f1": _f1(truth, guess, binary=len(classes) == 2),
        "roc_auc": None,
        "rows": total,
    }
    if proba is not None:  # reported, not gated: on the sample (AUC_ROWS rows at most)
        known = np.where(truth < len(classes), truth, -1)
        auc_rows = np.arange(len(known))
        if len(known) > AUC_ROWS:
            auc_rows = np.sort(np.random.default_rng(0).choice(len(known), AUC_ROWS, replace=False))
        metrics["roc_auc"] = _roc_auc(known[auc_rows], proba[rows][auc_rows], len(classes))
        metrics["roc_auc_rows"] = len(auc_rows)
    ok = metrics["accuracy"] >= min_accuracy
    return check(
        QUALITY,
        metrics=metrics,
        threshold={"min_accuracy": min_accuracy},
        ok=ok,
        detail="test accuracy meets the floor"
        if ok
        else "test accuracy is below the floor: improve the data or the model, or "
        "lower evaluate.min_accuracy only with a documented reason",
    )


def _record(ctx: RunContext, model: TrainedModel, results: list[GateResult]) -> None:
    """Metrics to the model's MLflow run, verdicts to its registered version."""
    from mlflow.entities import Metric

    client = mlflow_client(ctx.settings)
    now = int(time.time() * 1000)
    metrics = [
        Metric(f"{r.name}.{k}", float(v), now, 0)
        for r in results
        for k, v in r.metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    ]
    client.log_batch(model.mlflow_run_id, metrics=metrics)
    attack = next((r.metrics.get("attack") for r in results if r.name == ADVERSARIAL), None)
    client.set_tag(model.mlflow_run_id, "evaluate.attack", attack or ctx.settings.evaluate.attack)
    ModelRegistry(client, model.name).record_gates(model.version, results)


def evaluate_checks(
    cfg: EvaluateConfig,
    *,
    pipeline: Pipeline,
    estimator: str,
    x_train: pd.DataFrame,
    y_train: pd.Series,
    x_test: pd.DataFrame,
    y_test: pd.Series,
    seed: int,
    test_pred: np.ndarray | None = None,
    test_proba: np.ndarray | None = None,
    reference: Mapping[str, Any] | None = None,
) -> list[GateResult]:
    """The five gates' results, in catalog order (no MLflow, nothing enforced).

    Each check is looked up in this module when called (tests replace them here) and
    runs through `run_check`, so one that raises is a failed gate, never a pass.
    `test_pred` / `test_proba`: the pipeline's predictions on `x_test`, if made.
    `reference`: the reference profile the screen stage verified (its label counts by
    value tell the backdoor probe a real effect from a trigger); None: the probe
    falls back to its benign controls.
    """
    x_att, y_att = attack_rows(x_test, y_test, samples=cfg.attack_samples, seed=seed)
    quality = run_check(
        QUALITY,
        check_quality,
        pipeline=pipeline,
        x=x_test,
        y=y_test,
        min_accuracy=cfg.min_accuracy,
        pred=test_pred,
        proba=test_proba,
    )
    adversarial = run_check(
        ADVERSARIAL,
        check_adversarial,
        pipeline=pipeline,
        estimator=estimator,
        x_train=x_train,
        x=x_att,
        y=y_att,
        config=cfg,
        seed=seed,
    )
    membership = run_check(
        MEMBERSHIP,
        check_membership_inference,
        pipeline=pipeline,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        max_advantage=cfg.max_membership_advantage,
        samples=cfg.membership_samples,
        seed=seed,
    )
    backdoor = run_check(
        BACKDOOR,
        check_backdoor_probe,
        pipeline=pipeline,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        max_flip=cfg.max_backdoor_flip,
        samples=cfg.backdoor_samples,
        seed=seed,
        reference=reference,
    )
    advantage = membership.metrics.get("advantage")
    extraction = run_check(
        EXTRACTION,
        check_extraction_risk,
        pipeline=pipeline,
        x_test=x_test,
        queries=cfg.extraction_queries,
        max_fidelity=cfg.max_extraction_fidelity,
        membership_advantage=advantage if isinstance(advantage, int | float) else None,
        seed=seed,
    )
    return [quality, adversarial, membership, backdoor, extraction]


def evaluate(
    ctx: RunContext, model: TrainedModel, reference: Mapping[str, Any] | None = None
) -> tuple[dict[str, float], list[GateResult]]:
    """Run the five evaluate gates on the trained model; record them in MLflow.

    Args:
        ctx: Run settings, identity and audit trail.
        model: The trained, registered model.
        reference: The reference profile as the screen stage verified it (never
            re-read from its file here); None: the backdoor probe's fallback.

    Returns:
        The numeric metrics of every gate (keys without the gate prefix; on a name two
        gates share, e.g. ``samples``, the earlier gate's value) and the results.

    Raises:
        GateFailed: a gate failed; the version is tagged ``gate_status=blocked``.
    """
    gates = StageGates(ctx)
    results = evaluate_checks(
        ctx.settings.evaluate,
        pipeline=model.pipeline,
        estimator=str(model.params.get("estimator", ctx.settings.model.estimator)),
        x_train=model.x_train,
        y_train=model.y_train,
        x_test=model.x_test,
        y_test=model.y_test,
        seed=ctx.settings.model.seed,
        test_pred=model.test_pred,
        test_proba=model.test_proba,
        reference=reference,
    )
    _record(ctx, model, results)
    gates.enforce(*results)  # logs each gate's line to the run log
    out: dict[str, float] = {}
    for r in results:
        for k, v in r.metrics.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                out.setdefault(k, float(v))
    return out, gates.results


# The Prefect task is the pure function itself, with the options every stage needs.
evaluate_task = stage_task("evaluate")(evaluate)
