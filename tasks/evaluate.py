"""Evaluate stage: attack the model before anything is released.

Six gates, all run and reported together: a quality floor (``evaluate.quality``: a
useless or sabotaged model), robustness to evasion (``evaluate.adversarial``, see
`tasks.checks.adversarial`), membership leakage (``evaluate.membership_inference``,
see `tasks.checks.privacy`), learned backdoors (``evaluate.backdoor_probe``) and the
cost of stealing the model by queries (``evaluate.extraction_risk``, both in
`tasks.checks.probes`) and, for a differentially private model, an audit of its claimed
epsilon by one extra training run with canaries (``evaluate.dp_audit``, see
`tasks.checks.dp_audit`). Every check is called through `run_check` under its module
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
from tasks.checks.baselines import paired_difference, skill, trivial_baselines
from tasks.checks.champion import NO_CHAMPION, Champion, load_champion
from tasks.checks.dp_audit import DP_AUDIT, check_dp_audit
from tasks.checks.privacy import MEMBERSHIP, check_membership_inference
from tasks.checks.probes import (
    BACKDOOR,
    EXTRACTION,
    check_backdoor_probe,
    check_extraction_risk,
)
from tasks.common.context import RunContext, StageGates, stage_task
from tasks.common.gates import GateResult, check, run_check
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
    min_skill: float = 0.2,
    max_regression: float = 0.02,
    min_accuracy: float | None = None,
    y_train: pd.Series | None = None,
    pred: np.ndarray | None = None,
    proba: np.ndarray | None = None,
    champion: Champion | None = None,
) -> GateResult:
    """Quality relative to baselines on the same test rows; labels of any type.

    Rules (all must hold):

    - skill over the better trivial baseline (the majority class of `y_train`, or
      guessing with its label shares; `tasks.checks.baselines`) reaches `min_skill`;
    - accuracy is no worse than the champion's on the same rows beyond
      `max_regression` (paired interval for the number of rows compared); none, or a
      champion with other inputs or classes: skipped, recorded with its reason; a
      champion that could not be verified: the gate fails closed;
    - when set, accuracy reaches the fixed floor `min_accuracy` (default: off).

    f1 (binary: of the last class in ``classes_``; else macro) and ROC AUC are
    reported. `pred` and `proba` are the pipeline's predictions on `x` when already
    made (the train stage makes them once); the metrics run on integer class codes (on
    string labels, 7x faster than on the labels themselves; the same values). Up to
    `QUALITY_ROWS` test rows every row is scored; beyond, a seeded sample of that many
    (``accuracy_rows``, with ``accuracy_ci999``), unless its interval reaches a
    threshold: then every row is scored again and decides. The champion predicts the
    sampled rows only (its paired interval is that sample's), so its cost is flat."""
    pred = pipeline.predict(x) if pred is None else pred
    if proba is None and hasattr(pipeline, "predict_proba"):
        proba = np.asarray(pipeline.predict_proba(x))
    champion = champion or NO_CHAMPION
    classes = list(pipeline.classes_)
    total = len(y)
    rows = np.arange(total)
    if total > QUALITY_ROWS:
        rows = np.sort(np.random.default_rng(0).choice(total, size=QUALITY_ROWS, replace=False))
    sample = rows
    base = trivial_baselines(y if y_train is None else y_train, y)
    truth, guess = _class_codes(classes, y.iloc[rows], np.asarray(pred)[rows])
    accuracy = float(np.mean(truth == guess)) if len(rows) else 0.0
    ci = _accuracy_ci(accuracy, len(rows), total) if len(rows) < total else 0.0
    near = abs(skill(accuracy, base["baseline"]) - min_skill) * (1 - base["baseline"]) <= ci
    if min_accuracy is not None:
        near = near or abs(accuracy - min_accuracy) <= ci
    if len(rows) < total and near:  # the sample could tip it
        rows = np.arange(total)
        truth, guess = _class_codes(classes, y, pred)
        accuracy, ci = float(np.mean(truth == guess)), 0.0
    measured_skill = skill(accuracy, base["baseline"])
    metrics: dict[str, Any] = {
        "accuracy": accuracy,
        "accuracy_rows": len(rows),
        "accuracy_ci999": round(ci, 5),
        "majority_accuracy": base["majority"],
        "stratified_accuracy": base["stratified"],
        "skill": measured_skill,
        "f1": _f1(truth, guess, binary=len(classes) == 2),
        "roc_auc": None,
        "rows": total,
        "champion": champion.label,
    }
    if proba is not None:  # reported, not gated: on the sample (AUC_ROWS rows at most)
        known = np.where(truth < len(classes), truth, -1)
        auc_rows = np.arange(len(known))
        if len(known) > AUC_ROWS:
            auc_rows = np.sort(np.random.default_rng(0).choice(len(known), AUC_ROWS, replace=False))
        metrics["roc_auc"] = _roc_auc(known[auc_rows], proba[rows][auc_rows], len(classes))
        metrics["roc_auc_rows"] = len(auc_rows)
    threshold: dict[str, Any] = {"min_skill": min_skill, "max_regression": max_regression}
    if min_accuracy is not None:
        threshold["min_accuracy"] = min_accuracy
    problems: list[str] = []
    if measured_skill < min_skill:
        problems.append(
            f"skill {measured_skill:.3f} over the trivial baseline ({base['baseline']:.3f}: "
            f"majority class {base['majority']:.3f}, label-share guessing "
            f"{base['stratified']:.3f}; accuracy {accuracy:.3f}) is below evaluate.min_skill"
            f" = {min_skill}: the model barely beats guessing; check the labels and the "
            "inputs (a flipped or shuffled target), or review min_skill against the value "
            "`init` measured (in the config)"
        )
    if min_accuracy is not None and accuracy < min_accuracy:
        problems.append(
            f"test accuracy {accuracy:.3f} is below the fixed floor evaluate.min_accuracy = "
            f"{min_accuracy}: improve the data or the model, or remove the floor and rely on "
            "min_skill"
        )
    if champion.status == "unverified":
        problems.append(
            f"the champion cannot be compared: {champion.reason}; failing closed: run "
            "`secure-pipeline verify models:/NAME@champion` and repair or re-release it"
        )
    elif champion.status == "none":
        metrics["champion_reason"] = champion.reason
    elif champion.pipeline is not None and len(sample):
        xs, ys = x.iloc[sample], y.iloc[sample]
        mine = np.asarray(pred)[sample] == ys.to_numpy()
        theirs = np.asarray(champion.pipeline.predict(xs)) == ys.to_numpy()
        diff, half = paired_difference(mine, theirs)
        champ_acc = float(np.mean(theirs))
        metrics |= {
            "champion_accuracy": champ_acc,
            "accuracy_vs_champion": diff,
            "accuracy_vs_champion_ci": round(half, 5),
            "champion_rows": len(sample),
        }
        if diff + half < -max_regression:
            problems.append(
                f"accuracy {float(np.mean(mine)):.3f} is below the champion's "
                f"({champion.label}) {champ_acc:.3f} on the same {len(sample)} test rows by "
                f"{-diff:.3f} (interval ±{half:.3f}), beyond evaluate.max_regression = "
                f"{max_regression}: find what changed (data, labels, parameters) before it "
                "replaces the champion"
            )
    ok = not problems
    detail = (
        "; ".join(problems)
        if problems
        else f"skill {measured_skill:.3f} over the trivial baseline meets {min_skill}"
        + ("; no regression against the champion" if champion.status == "loaded" else "")
    )
    return check(QUALITY, metrics=metrics, threshold=threshold, ok=ok, detail=detail)


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
) -> list[GateResult]:
    """The six gates' results, in catalog order (no MLflow, nothing enforced).

    Each check is looked up in this module when called (tests replace them here) and
    runs through `run_check`, so one that raises is a failed gate, never a pass.
    `test_pred` / `test_proba`: the pipeline's predictions on `x_test`, if made.
    `cfg` is the effective config of `estimator` (`EvaluateConfig.for_estimator` is
    applied here too); `champion`: the current champion (None: no comparison).
    `reference`: the reference profile the screen stage verified (its label counts by
    value tell the backdoor probe a real effect from a trigger); None: the probe
    falls back to its benign controls.
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
    champion = load_champion(ctx.settings, s3, candidate=model.pipeline)
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
