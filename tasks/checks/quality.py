"""Gate ``evaluate.quality``: is the model useful, and no worse than the champion?

Threat: a useless or sabotaged model (flipped or shuffled labels, a broken feature),
or a silent regression against the model in service. The rules are relative to the
same test rows: skill over the better trivial baseline (`tasks.checks.baselines`)
and a paired accuracy difference against the verified champion; an absolute floor is
optional. The metrics run on integer class codes, on a seeded sample of
`QUALITY_ROWS` test rows beyond that many (every row when the sample could tip the
verdict), so the cost is flat in the table's size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline

from tasks.checks.baselines import paired_difference, skill, trivial_baselines
from tasks.checks.champion import NO_CHAMPION, Champion
from tasks.common.gates import GateResult, check

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
    baselines: Mapping[str, float] | None = None,
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
    # `baselines`: `trivial_baselines(y_train, y)` if the train stage made them (it
    # reads every label anyway; here they would grow the stage's cost with the rows).
    base = baselines or trivial_baselines(y if y_train is None else y_train, y)
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
