"""Privacy check of the evaluate stage: how much does the model leak membership?

Threat: membership inference (OWASP ML04) and, through it, model inversion. An
attacker who can query the model trains a classifier to tell the rows it was
trained on from rows it never saw. We run exactly that attack (ART's black-box
membership inference, random-forest attack model, fed with the model's predicted
probabilities and the true label) and measure its *advantage*: true-positive rate
on members minus false-positive rate on non-members, 0 for a model that leaks
nothing.

Rows: up to ``membership_samples`` members (training rows) and as many
non-members (test rows), drawn by a seeded generator, so the cost does not grow
with the dataset. Two folds: the attack is fitted on half of the members and half
of the non-members and scored on the other halves, then the halves swap, so every
sampled row is scored once. The advantage is pooled over both folds, with a 95%
confidence interval from the normal approximation of a difference of two
proportions: ``TPR - FPR +- 1.96 * sqrt(TPR(1-TPR)/m + FPR(1-FPR)/n)``. It covers the
sampling of the scored rows, not the randomness of the attack model.

The gate is calibrated for that sampling: it blocks when the advantage exceeds
``max_advantage`` by more than its own noise, i.e. when the one-sided 95% lower bound
``advantage - 1.645 * se`` is above it. On 1000 + 1000 rows that margin is about 0.03;
on a 234-row table (about 50 + 50 scored rows) it is about 0.15, where clean 80%
resamples of ggplot2's mpg measured advantages of 0.26-0.34 with nothing to find but
the table's size (the point estimate alone blocked 3 of 20 clean resamples).

Labels may be of any type: they are one-hot encoded by their index in the model's
``classes_`` (a label the model never saw encodes as no class).

Low false-positive rates (`tasks.checks.membership_lowfpr`): beside that average, an
offline LiRA attack with ``references`` reference models measures the share of members
an attacker singles out at 1% and 0.1% FPR, with exact intervals. The gate also blocks
when the Clopper-Pearson lower bound of the TPR at 1% FPR exceeds
``max_tpr_at_low_fpr``: a model can look harmless on average and still expose some of
its rows with near certainty. Either rule blocks.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd

from tasks.checks.membership_lowfpr import LowFprResult, lira_attack
from tasks.common.gates import GateResult, check

# ART at module load (see tasks.checks.adversarial), its import warnings hidden.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from art.attacks.inference.membership_inference import (
        MembershipInferenceBlackBox,
    )
    from art.estimators.classification import BlackBoxClassifier

MEMBERSHIP = "evaluate.membership_inference"
Z95 = 1.959964
Z_ONE_SIDED_95 = 1.644854
# Measured (README, membership at low false-positive rates): TPR at 1% FPR, CP lower
# bound, 0.24-0.46 for a memorising forest, at most 0.066 for the zoo's regularised models.
MAX_TPR_AT_LOW_FPR = 0.15
REFERENCES = 4
LOW_FPR, LOWER_FPR = 0.01, 0.001


def _onehot(classes: np.ndarray, y: pd.Series) -> np.ndarray:
    idx = pd.Index(classes).get_indexer(pd.Series(np.asarray(y, dtype=object)))
    out = np.zeros((len(idx), len(classes)), dtype=np.float32)
    known = idx >= 0
    out[np.flatnonzero(known), idx[known]] = 1.0
    return out


def _halves(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    return order[: n // 2], order[n // 2 :]


def _no_queries(_: np.ndarray) -> np.ndarray:  # the attack gets predictions, never rows
    raise RuntimeError("the membership attack must not query the model itself")


def check_membership_inference(
    *,
    pipeline: Any,
    x_train: pd.DataFrame,
    y_train: pd.Series,
    x_test: pd.DataFrame,
    y_test: pd.Series,
    max_advantage: float,
    samples: int,
    seed: int,
    max_tpr_at_low_fpr: float = MAX_TPR_AT_LOW_FPR,
    references: int = REFERENCES,
) -> GateResult:
    """The attack's advantage (TPR - FPR) must stay at or below `max_advantage`, and
    the low-FPR attack's TPR at 1% FPR (CP lower bound) at or below `max_tpr_at_low_fpr`.

    Args:
        pipeline: Any fitted classifier with ``predict_proba`` and ``classes_``.
        x_train, y_train: The training rows (members).
        x_test, y_test: Rows never trained on (non-members).
        max_advantage: The gate's threshold.
        samples: At most this many members and as many non-members.
        seed: Seeds the row sampling, the halves and the attack model.
        max_tpr_at_low_fpr: The low-FPR rule's threshold.
        references: Reference models of the low-FPR attack (even).

    Metrics: advantage, advantage_ci_low, advantage_ci_high, members, non_members, and
    the low-FPR attack's (`_low_fpr_metrics`): auc, tpr_at_1pct_fpr (+ _ci_low/_ci_high),
    tpr_at_01pct_fpr (+ _ci_low/_ci_high), exposed_records, roc_curve, lowfpr_members,
    lowfpr_non_members.
    """
    rng = np.random.default_rng(seed)
    n = min(samples, len(x_train), len(x_test))  # as many members as non-members
    members = np.sort(rng.choice(len(x_train), size=n, replace=False))
    others = np.sort(rng.choice(len(x_test), size=n, replace=False))
    if n < 10:
        return check(
            MEMBERSHIP,
            ok=False,
            metrics={"members": n, "non_members": n},
            threshold={"max_advantage": max_advantage, "max_tpr_at_low_fpr": max_tpr_at_low_fpr},
            detail="too few training or test rows to measure membership leakage; failing closed",
        )
    classes = np.asarray(pipeline.classes_)
    pm = np.asarray(pipeline.predict_proba(x_train.iloc[members]), dtype=np.float32)
    pn = np.asarray(pipeline.predict_proba(x_test.iloc[others]), dtype=np.float32)
    ym, yn = _onehot(classes, y_train.iloc[members]), _onehot(classes, y_test.iloc[others])
    # The estimator ART requires; with predictions supplied it is never queried.
    target = BlackBoxClassifier(
        _no_queries, input_shape=(x_train.shape[1],), nb_classes=len(classes)
    )
    true_pos = false_pos = 0
    m_a, m_b = _halves(n, rng)
    n_a, n_b = _halves(n, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fold, (m_fit, m_eval, n_fit, n_eval) in enumerate(
            ((m_a, m_b, n_a, n_b), (m_b, m_a, n_b, n_a))
        ):
            attack = MembershipInferenceBlackBox(target, attack_model_type="rf")
            attack.attack_model.set_params(random_state=seed + fold)
            attack.fit(y=ym[m_fit], test_y=yn[n_fit], pred=pm[m_fit], test_pred=pn[n_fit])
            true_pos += int(np.sum(attack.infer(None, ym[m_eval], pred=pm[m_eval])))
            false_pos += int(np.sum(attack.infer(None, yn[n_eval], pred=pn[n_eval])))
    tpr, fpr = true_pos / max(n, 1), false_pos / max(n, 1)
    advantage = tpr - fpr
    se = math.sqrt((tpr * (1 - tpr) + fpr * (1 - fpr)) / max(n, 1))
    half_width = Z95 * se
    lower = advantage - Z_ONE_SIDED_95 * se  # what the sample shows beyond its noise
    average_ok = lower <= max_advantage
    low = _low_fpr(pipeline, x_train, y_train, x_test, y_test, samples, references, seed)
    low_metrics = _low_fpr_metrics(low)
    low_ok = low_metrics["tpr_at_1pct_fpr_ci_low"] <= max_tpr_at_low_fpr
    reasons = []
    if not low_ok:
        rate, ci_low, ci_high = (
            low_metrics[k]
            for k in ("tpr_at_1pct_fpr", "tpr_at_1pct_fpr_ci_low", "tpr_at_1pct_fpr_ci_high")
        )
        reasons.append(
            f"offline LiRA ({references} reference models) singles out "
            f"{rate:.1%} of members at 1% FPR (95% CI {ci_low:.1%}-{ci_high:.1%}, "
            f"{low.members} members, {low.non_members} non-members): the lower bound exceeds "
            f"max_membership_tpr_at_low_fpr {max_tpr_at_low_fpr}: the model exposes individual "
            "training rows"
        )
    if not average_ok:
        reasons.append(
            f"the attack's advantage {advantage:.3f} (one-sided 95% lower bound "
            f"{lower:.3f}, {n} + {n} rows) exceeds {max_advantage}: the model leaks which "
            "rows it was trained on"
        )
    ok = average_ok and low_ok
    return check(
        MEMBERSHIP,
        ok=ok,
        metrics={
            "advantage": advantage,
            "advantage_ci_low": advantage - half_width,
            "advantage_ci_high": advantage + half_width,
            "advantage_lower_95": lower,
            "members": n,
            "non_members": n,
            **low_metrics,
        },
        threshold={"max_advantage": max_advantage, "max_tpr_at_low_fpr": max_tpr_at_low_fpr},
        detail="an attacker cannot tell training rows from others beyond the maximum, on "
        "average nor at 1% FPR"
        if ok
        else "; ".join(reasons) + ": regularise more (smaller model.params.C, larger "
        "min_samples_leaf, bootstrap), train with differential privacy, or collect more data",
    )


def _low_fpr(
    pipeline: Any,
    x_train: pd.DataFrame,
    y_train: pd.Series,
    x_test: pd.DataFrame,
    y_test: pd.Series,
    samples: int,
    references: int,
    seed: int,
) -> LowFprResult:
    """Offline LiRA on up to `samples` members and up to `samples` non-members (own seed:
    the average attack's rows above stay as they were)."""
    rng = np.random.default_rng([seed, 1])
    members = np.sort(rng.choice(len(x_train), size=min(samples, len(x_train)), replace=False))
    others = np.sort(rng.choice(len(x_test), size=min(samples, len(x_test)), replace=False))
    return lira_attack(
        pipeline=pipeline,
        x_members=x_train.iloc[members],
        y_members=y_train.iloc[members],
        x_others=x_test.iloc[others],
        y_others=y_test.iloc[others],
        references=references,
        seed=seed,
    )


def _low_fpr_metrics(low: LowFprResult) -> dict[str, Any]:
    """The contract's metrics of the low-FPR attack (counts and rates, never a row)."""
    out: dict[str, Any] = {"auc": low.auc()}
    for key, fpr in (("tpr_at_1pct_fpr", LOW_FPR), ("tpr_at_01pct_fpr", LOWER_FPR)):
        rate, ci_low, ci_high = low.tpr_at(fpr)
        out |= {key: rate, f"{key}_ci_low": ci_low, f"{key}_ci_high": ci_high}
    out |= {
        "exposed_records": low.exposed(),
        "lowfpr_members": low.members,
        "lowfpr_non_members": low.non_members,
        "roc_curve": low.curve(),
    }
    return out
