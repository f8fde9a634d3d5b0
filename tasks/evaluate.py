"""Evaluate stage: attack the model before anything is released.

Six gates, all run and reported together:

- ``evaluate.quality``: a useless, sabotaged or regressed model (`tasks.checks.quality`);
- ``evaluate.adversarial``: evasion, the strongest attack beside a certified lower
  bound (`tasks.checks.adversarial`);
- ``evaluate.membership_inference``: membership leakage, on average and at low
  false-positive rates (`tasks.checks.privacy`);
- ``evaluate.backdoor_probe``: learned backdoors, and ``evaluate.extraction_risk``: the
  cost of stealing the model by queries (both in `tasks.checks.probes`);
- ``evaluate.dp_audit``: for a differentially private model, an audit of its claimed
  epsilon by one extra training run with canaries (`tasks.checks.dp_audit`).

Every check is called through `run_check` under its module name here (a check that
raises blocks the run at its own gate). The quality gate scores the predictions the
train stage made once for its round-trip gate (`TrainedModel.test_pred`,
`test_proba`), on a bounded sample of test rows; every other check works on a bounded
number of rows, so the stage costs about the same for 100 thousand or 1 million rows
(`make bench` measures it). Metrics go to the model's MLflow run (numeric ones; text
metrics and curves stay in the gate results, the report and the security page) and
the verdicts to its registered version.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from tasks.checks.adversarial import ADVERSARIAL, attack_rows, check_adversarial
from tasks.checks.champion import Champion, load_champion
from tasks.checks.dp_audit import DP_AUDIT, check_dp_audit
from tasks.checks.privacy import MEMBERSHIP, check_membership_inference
from tasks.checks.probes import (
    BACKDOOR,
    EXTRACTION,
    check_backdoor_probe,
    check_extraction_risk,
)
from tasks.checks.quality import QUALITY, check_quality
from tasks.checks.reference_models import ReferenceModel, load_reference_model, model_inputs
from tasks.common.context import RunContext, StageGates, stage_task
from tasks.common.gates import GateResult, run_check, timed
from tasks.common.registry import ModelRegistry
from tasks.common.settings import EvaluateConfig
from tasks.common.tracking import mlflow_client
from tasks.train import TrainedModel

__all__ = [
    "ADVERSARIAL",
    "BACKDOOR",
    "DP_AUDIT",
    "EXTRACTION",
    "MEMBERSHIP",
    "QUALITY",
    "check_adversarial",
    "check_backdoor_probe",
    "check_dp_audit",
    "check_extraction_risk",
    "check_membership_inference",
    "check_quality",
    "evaluate",
    "evaluate_checks",
    "evaluate_task",
]


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
    champion: Champion | None = None,
    reference: Mapping[str, Any] | None = None,
    input_ranges: Mapping[str, tuple[float, float]] | None = None,
    baselines: Mapping[str, float] | None = None,
    reference_model: ReferenceModel | None = None,
) -> list[GateResult]:
    """The six gates' results, in catalog order (no MLflow, nothing enforced).

    Each check is looked up in this module when called (tests replace them here) and
    runs through `run_check`, so one that raises is a failed gate, never a pass.
    `test_pred` / `test_proba`: the pipeline's predictions on `x_test`, if made.
    `cfg` is the effective config of `estimator` (`EvaluateConfig.for_estimator` is
    applied here too); `champion`: the current champion (None: no comparison).
    `reference`: the reference profile the screen stage verified (its label counts by
    value tell the backdoor probe a real effect from a trigger); None: the probe
    falls back to its benign controls; `reference_model`: the estimator trained on the
    trusted table, as the profile lists it (`tasks.checks.reference_models`).
    `input_ranges` / `baselines`: what the train stage made of every training row
    (`TrainedModel`); None: read here.
    """
    cfg = cfg.for_estimator(estimator)
    x_att, y_att = attack_rows(x_test, y_test, samples=cfg.attack_samples, seed=seed)
    quality = run_check(
        QUALITY,
        check_quality,
        pipeline=pipeline,
        x=x_test,
        y=y_test,
        min_skill=cfg.min_skill,
        max_regression=cfg.max_regression,
        min_accuracy=cfg.min_accuracy,
        y_train=y_train,
        pred=test_pred,
        proba=test_proba,
        champion=champion,
        baselines=baselines,
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
        champion=champion,
        ranges=input_ranges,
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
        max_tpr_at_low_fpr=cfg.max_membership_tpr_at_low_fpr,
        references=cfg.membership_references,
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
        reference_model=reference_model,
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
    dp_audit = run_check(
        DP_AUDIT,
        check_dp_audit,
        pipeline=pipeline,
        estimator=estimator,
        x_train=x_train,
        y_train=y_train,
        canaries=cfg.dp_audit_canaries,
        rows=cfg.dp_audit_rows,
        seed=seed,
    )
    return [quality, adversarial, membership, backdoor, extraction, dp_audit]


def evaluate(
    ctx: RunContext,
    model: TrainedModel,
    s3: Any = None,
    reference: Mapping[str, Any] | None = None,
) -> tuple[dict[str, float], list[GateResult]]:
    """Run the six evaluate gates on the trained model; record them in MLflow.

    Args:
        ctx: Run settings, identity and audit trail.
        model: The trained, registered model.
        s3: The run's S3 client, to fetch the champion's release (None: the configured
            endpoint is opened if there is a champion).
        reference: The reference profile as the screen stage verified it (never
            re-read from its file here); None: the backdoor probe's fallback.

    Returns:
        The numeric metrics of every gate (keys without the gate prefix; on a name two
        gates share, e.g. ``samples``, the earlier gate's value) and the results.

    Raises:
        GateFailed: a gate failed; the version is tagged ``gate_status=blocked``.
    """
    gates = StageGates(ctx)
    estimator = str(model.params.get("estimator", ctx.settings.model.estimator))
    with timed("evaluate.champion"):  # fetched, verified, scored: not a gate of its own
        champion = load_champion(ctx.settings, s3, candidate=model.pipeline)
    with timed("evaluate.reference_model"):  # read and verified; the probe judges it
        trusted = load_reference_model(
            reference,
            directory=ctx.settings.dataset.reference_profile.parent,
            estimator=estimator,
            params=ctx.settings.model.model_copy(update={"estimator": estimator}).estimator_params,
            inputs=model_inputs(ctx.settings.dataset, list(model.x_train.columns)),
        )
    results = evaluate_checks(
        ctx.settings.evaluate,
        pipeline=model.pipeline,
        estimator=estimator,
        x_train=model.x_train,
        y_train=model.y_train,
        x_test=model.x_test,
        y_test=model.y_test,
        seed=ctx.settings.model.seed,
        test_pred=model.test_pred,
        test_proba=model.test_proba,
        champion=champion,
        reference=reference,
        input_ranges=model.input_ranges,
        baselines=model.baselines,
        reference_model=trusted,
    )
    with timed("evaluate.mlflow"):
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
