"""Calibration of the evaluate gates: clean data must pass every one of them, for every
estimator of the zoo, with the DEFAULT thresholds and budgets.

N clean resamples of the synthetic team table (seeds 1000..1000+N-1) per estimator,
trained with the bundled config's parameters; each must pass all six gates (the DP
audit applies to the DP model only). The worst margin per gate (how far the worst
resample stayed from its threshold) is printed (``pytest -s``), so a threshold that
is too tight shows before it blocks honest runs.

    ZOO_RESAMPLES=20 .venv/bin/python -m pytest tests/unit/test_zoo_calibration.py -s

N defaults to 6 draws per estimator (the suite's share); the calibration itself is
measured with ``ZOO_RESAMPLES=20``.

Exception, a documented choice: the DP model (epsilon 5) trains on 50 000 rows
instead of 1 500: diffprivlib's noise shrinks as 1 / (rows * epsilon). (It needed
``evaluate.min_accuracy`` lowered to 0.75 under the former fixed floors; the default
relative rules, skill and accuracy drop, need no change.)
Measured at epsilon 5: accuracy 0.69-0.74 at 1 500 rows (3 seeds; below even the
lowered floor); over 20 resamples at 20 000 rows, accuracy 0.87-0.96 but robust
accuracy down to 0.765 (one resample blocked at the default 0.80 floor); at 50 000
rows, accuracy 0.88-0.95 and robust accuracy at least 0.825. The evaluate gates cost the same at
any size; only training grows.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from tasks.common.settings import EvaluateConfig, load_settings
from tasks.evaluate import evaluate_checks
from tests.mixed_table import mixed_table
from tests.unit.test_probes import MIXED, fit_model

RESAMPLES = int(os.environ.get("ZOO_RESAMPLES", "6"))
ROWS = 1_500
DP_ROWS = 50_000
ESTIMATORS = [
    "logistic_regression",
    "dp_logistic_regression",
    "random_forest",
    "hist_gradient_boosting",
]


def _margins(results: list[Any], cfg: EvaluateConfig) -> dict[str, float]:
    """How far each gate stayed on the passing side of its threshold (fidelity: the
    value itself, as it has no threshold by default)."""
    m = {r.name: r.metrics for r in results}
    return {
        "quality": m["evaluate.quality"]["skill"] - cfg.min_skill,
        "adversarial": cfg.max_robust_drop - m["evaluate.adversarial"]["accuracy_drop"],
        "membership": cfg.max_membership_advantage
        - m["evaluate.membership_inference"]["advantage"],
        "membership_low_fpr": cfg.max_membership_tpr_at_low_fpr
        - m["evaluate.membership_inference"]["tpr_at_1pct_fpr_ci_low"],
        "backdoor": cfg.max_backdoor_flip - m["evaluate.backdoor_probe"]["score"],
        "fidelity": m["evaluate.extraction_risk"]["fidelity"],
    }


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_clean_resamples_pass_every_evaluate_gate(estimator: str) -> None:
    params = load_settings().model.params.get(estimator)
    assert isinstance(params, dict)
    dp = estimator == "dp_logistic_regression"
    cfg = EvaluateConfig()  # relative rules: the DP model needs no lowered floor
    worst: dict[str, float] = {}
    blocked: list[str] = []
    for i in range(RESAMPLES):
        frame = mixed_table(DP_ROWS if dp else ROWS, seed=1000 + i)
        pipeline, x_train, x_test, y_train, y_test = fit_model(
            estimator, frame, MIXED, params=dict(params), dp_epsilon=5.0
        )
        results = evaluate_checks(
            cfg,
            pipeline=pipeline,
            estimator=estimator,
            x_train=x_train,
            y_train=y_train,
            x_test=x_test,
            y_test=y_test,
            seed=42,
        )
        blocked += [f"seed {1000 + i}: {r.summary()}" for r in results if not r.passed]
        for gate, margin in _margins(results, cfg).items():
            pick = max if gate == "fidelity" else min
            worst[gate] = pick(worst.get(gate, margin), margin)
    line = ", ".join(
        f"{g} {v:+.3f}" if g != "fidelity" else f"max fidelity {v:.3f}" for g, v in worst.items()
    )
    print(f"\n[zoo calibration] {estimator} (N={RESAMPLES}) worst margins: {line}")
    assert not blocked, "\n".join(blocked)
