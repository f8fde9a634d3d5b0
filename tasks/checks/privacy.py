"""Privacy check of the evaluate stage: how much does the model leak membership?

Threat: membership inference (OWASP ML04) and, through it, model inversion. An
attacker who can query the model trains a classifier to tell the rows it was
trained on from rows it never saw. We run exactly that attack (ART's black-box
membership inference, random-forest attack model) and measure its *advantage*:
true-positive rate on members minus false-positive rate on non-members, 0 for
a model that leaks nothing. Two folds (attack trained on one half, measured on
the other, then swapped) halve the noise of the small evaluation sets.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from tasks.common.gates import GateResult, check

MEMBERSHIP = "evaluate.membership_inference"


def _halves(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    return order[: n // 2], order[n // 2 :]


def check_membership_inference(
    *,
    pipeline: Any,
    x_train: pd.DataFrame,
    y_train: pd.Series,
    x_test: pd.DataFrame,
    y_test: pd.Series,
    max_advantage: float,
    seed: int,
) -> GateResult:
    """The attack's advantage (TPR - FPR) must stay at or below `max_advantage`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "PyTorch not found", feature-name warnings
        from art.attacks.inference.membership_inference import MembershipInferenceBlackBox
        from art.estimators.classification import SklearnClassifier

        rng = np.random.default_rng(seed)
        n = min(len(x_train), len(x_test))  # as many members as non-members
        members = rng.choice(len(x_train), size=n, replace=False)
        xm, ym = x_train.to_numpy()[members], y_train.to_numpy()[members]
        xn, yn = x_test.to_numpy(), y_test.to_numpy()
        classifier = SklearnClassifier(model=pipeline)
        advantages = []
        for fold in range(2):
            m_fit, m_eval = _halves(n, rng)
            n_fit, n_eval = _halves(len(xn), rng)
            if fold:
                m_fit, m_eval, n_fit, n_eval = m_eval, m_fit, n_eval, n_fit
            attack = MembershipInferenceBlackBox(classifier, attack_model_type="rf")
            attack.attack_model.set_params(random_state=seed + fold)
            attack.fit(xm[m_fit], ym[m_fit], xn[n_fit], yn[n_fit])
            tpr = float(np.mean(attack.infer(xm[m_eval], ym[m_eval])))
            fpr = float(np.mean(attack.infer(xn[n_eval], yn[n_eval])))
            advantages.append(tpr - fpr)
    advantage = float(np.mean(advantages))
    ok = advantage <= max_advantage
    return check(
        MEMBERSHIP,
        ok=ok,
        metrics={"advantage": advantage, "members": n, "non_members": len(xn)},
        threshold={"max_advantage": max_advantage},
        detail="an attacker cannot tell training rows from others"
        if ok
        else "the model leaks which rows it was trained on: regularise more (smaller "
        "model.params.C), train with differential privacy, or collect more data",
    )
