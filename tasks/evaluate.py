"""Evaluate stage: attack the model before anything is released.

Three gates, all reported together: a quality floor (``evaluate.quality``: a useless
or sabotaged model), robustness to evasion (``evaluate.adversarial``, see
`tasks.checks.adversarial`) and membership leakage (``evaluate.membership_inference``,
see `tasks.checks.privacy`). Metrics go to the model's MLflow run and the verdicts to
its registered version.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.pipeline import Pipeline

from tasks.checks.adversarial import ADVERSARIAL, attack_rows, check_adversarial
from tasks.checks.privacy import MEMBERSHIP, check_membership_inference
from tasks.common.context import RunContext, StageGates, stage_task
from tasks.common.gates import GateResult, check, run_check
from tasks.common.tracking import ModelRegistry, mlflow_client
from tasks.train import TrainedModel

log = logging.getLogger(__name__)

QUALITY = "evaluate.quality"


def check_quality(
    *, pipeline: Pipeline, x: pd.DataFrame, y: pd.Series, min_accuracy: float
) -> GateResult:
    """Test accuracy must reach `min_accuracy`; f1 and ROC AUC are reported too."""
    pred = pipeline.predict(x)
    classes = list(pipeline.classes_)
    binary = len(classes) == 2
    metrics: dict[str, Any] = {
        "accuracy": float(accuracy_score(y, pred)),
        "f1": float(
            f1_score(
                y,
                pred,
                average="binary" if binary else "macro",
                pos_label=classes[-1] if binary else 1,
            )
        ),
        "roc_auc": None,
        "rows": len(x),
    }
    if hasattr(pipeline, "predict_proba"):
        proba = pipeline.predict_proba(x)
        metrics["roc_auc"] = float(
            roc_auc_score(y, proba[:, 1])
            if binary
            else roc_auc_score(y, proba, multi_class="ovr", labels=classes)
        )
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
    client.set_tag(model.mlflow_run_id, "evaluate.attack", ctx.settings.evaluate.attack)
    ModelRegistry(client, model.name).record_gates(model.version, results)


def evaluate(ctx: RunContext, model: TrainedModel) -> tuple[dict[str, float], list[GateResult]]:
    """Check test quality, adversarial robustness and membership leakage; record in MLflow.

    Args:
        ctx: Run settings, identity and audit trail.
        model: The trained, registered model.

    Returns:
        Numeric metrics of both gates (keys without the gate prefix) and the results.

    Raises:
        GateFailed: a gate failed; the version is tagged ``gate_status=blocked``.
    """
    cfg = ctx.settings.evaluate
    gates = StageGates(ctx)
    x_att, y_att = attack_rows(
        model.x_test, model.y_test, samples=cfg.attack_samples, seed=ctx.settings.model.seed
    )
    results = [
        run_check(
            QUALITY,
            check_quality,
            pipeline=model.pipeline,
            x=model.x_test,
            y=model.y_test,
            min_accuracy=cfg.min_accuracy,
        ),
        run_check(
            ADVERSARIAL,
            check_adversarial,
            pipeline=model.pipeline,
            x_train=model.x_train,
            x=x_att,
            y=y_att,
            config=cfg,
        ),
        run_check(
            MEMBERSHIP,
            check_membership_inference,
            pipeline=model.pipeline,
            x_train=model.x_train,
            y_train=model.y_train,
            x_test=model.x_test,
            y_test=model.y_test,
            max_advantage=cfg.max_membership_advantage,
            seed=ctx.settings.model.seed,
        ),
    ]
    _record(ctx, model, results)
    for r in results:
        log.info("%s", r.summary())
    gates.enforce(*results)
    out = {
        k: float(v)
        for r in results
        for k, v in r.metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    return out, gates.results


# The Prefect task is the pure function itself, with the options every stage needs.
evaluate_task = stage_task("evaluate")(evaluate)
