"""evaluate.dp_audit: the one-run canary audit of a DP model's claimed epsilon.

The bound against closed forms and a brute-force reference; diffprivlib at epsilon 1
and 5 passes (its audited epsilon is printed with ``pytest -s``); the same audit on a
trainer without noise, or with far less noise than it claims, blocks; non-DP models
are not applicable; the cost is bounded in rows and canaries."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression

from tasks.checks.dp_audit import (
    DP_AUDIT,
    MAX_CELLS,
    _audit_rows,
    _otsu_split,
    audit_epsilon,
    check_dp_audit,
    same_trainer,
)
from tasks.checks.dp_bound import all_correct_bound, epsilon_lower_bound, p_value
from tasks.common.settings import ConfigError, EvaluateConfig, load_settings
from tasks.evaluate import evaluate_checks
from tests.conftest import BUNDLED_CSV
from tests.mixed_table import mixed_table
from tests.unit.test_probes import BUNDLED, MIXED, Split, fit_model

DP = "dp_logistic_regression"


@pytest.fixture(scope="module")
def bundled_eps1() -> Split:
    return fit_model(DP, pd.read_csv(BUNDLED_CSV), BUNDLED, dp_epsilon=1.0)


@pytest.fixture(scope="module")
def mixed_eps5() -> Split:
    return fit_model(DP, mixed_table(4000, seed=3), MIXED, dp_epsilon=5.0)


def _audit(split: Split, **kw: Any):
    pipeline, x_train, _, y_train, _ = split
    args: dict[str, Any] = {"estimator": DP, "seed": 42} | kw
    return check_dp_audit(pipeline=pipeline, x_train=x_train, y_train=y_train, **args)


def _show(label: str, result) -> None:
    m = result.metrics
    print(
        f"\n[dp audit] {label}: audited {m['epsilon_audited']} vs claimed "
        f"{m['epsilon_claimed']} ({m['audit_correct']}/{m['audit_guesses']} right, "
        f"{m['canaries']} canaries, {m['audit_rows']} rows, {m['audit_seconds']} s)"
    )


# -- the bound (Steinke, Nasr, Jagielski 2023) ----------------------------------------


def _p_value_loop(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """The theorem's p-value written as a plain loop (reference for the vectorised one)."""
    q = math.exp(eps) / (1 + math.exp(eps))
    tail = sum(binom.pmf(j, r, q) for j in range(v, r + 1))
    worst, below = 0.0, 0.0
    for i in range(1, v + 1):
        below += binom.pmf(v - i, r, q)
        worst = max(worst, below / i)
    return min(tail + 2 * m * delta * worst, 1.0)


def test_all_correct_guesses_give_the_closed_form_bound():
    for r in (10, 100, 1000):
        assert epsilon_lower_bound(r, r, r) == pytest.approx(all_correct_bound(r), abs=1e-9)
    # q^r = 0.05: r = 100 gives q = 0.970487, epsilon = log(q / (1 - q)) = 3.4930
    assert all_correct_bound(100) == pytest.approx(3.4930, abs=1e-4)
    assert all_correct_bound(1000) == pytest.approx(5.8, abs=0.01)
    # and the bisection sits where the p-value crosses 5%
    e = epsilon_lower_bound(500, 200, 170)
    assert p_value(500, 200, 170, e - 1e-6) < 0.05 <= p_value(500, 200, 170, e + 1e-6)


def test_chance_level_guesses_bound_nothing():
    assert epsilon_lower_bound(1000, 1000, 500) == 0.0
    assert epsilon_lower_bound(1000, 1000, 520) == 0.0  # within chance at 95%
    assert epsilon_lower_bound(1000, 0, 0) == 0.0  # every guess abstained
    assert p_value(10, 10, 10, 0.0) == pytest.approx(1 / 1024)  # a fair coin, 10 heads


def test_bound_grows_with_evidence_and_shrinks_with_delta_and_confidence():
    bounds = [epsilon_lower_bound(1000, 400, v) for v in (240, 280, 320, 360, 400)]
    assert bounds == sorted(bounds) and bounds[0] > 0
    assert epsilon_lower_bound(1000, 400, 360, delta=1e-5) < bounds[3]
    assert epsilon_lower_bound(1000, 400, 360, confidence=0.99) < bounds[3]


@pytest.mark.parametrize("delta", [0.0, 1e-6, 1e-4])
def test_p_value_matches_the_theorem_written_as_a_loop(delta):
    for m, r, v, eps in ((1000, 200, 150, 0.5), (100, 50, 50, 2.0), (500, 300, 170, 0.1)):
        assert p_value(m, r, v, eps, delta) == pytest.approx(_p_value_loop(m, r, v, eps, delta))


def test_the_bound_holds_for_a_truly_dp_mechanism():
    """Randomised response at epsilon 1 is exactly 1-DP: the chance that its bound
    exceeds 1 is at most 5% (summed exactly over every possible count of 200 guesses)."""
    q = math.exp(1) / (1 + math.exp(1))
    wrong = sum(binom.pmf(v, 200, q) for v in range(201) if epsilon_lower_bound(200, 200, v) > 1)
    assert 0.03 < wrong <= 0.05  # and not needlessly loose


def test_bad_counts_are_refused():
    with pytest.raises(ValueError):
        epsilon_lower_bound(10, 20, 5)
    with pytest.raises(ValueError):
        p_value(10, 5, 6, 1.0)


def test_guessing_rules_use_the_scores_only():
    included = np.array([True] * 6 + [False] * 6)
    scores = np.where(included, 5.0, 0.0)  # a trainer without noise: two clean groups
    assert _otsu_split(scores) == 6
    found = audit_epsilon(scores, included)
    assert (found["audit_correct"], found["audit_guesses"]) == (12, 12)
    assert _otsu_split(np.zeros(5)) == 0  # all equal: no split, every guess abstains


# -- the gate on real trainers ---------------------------------------------------------


def test_dp_logistic_regression_at_epsilon_1_passes(bundled_eps1):
    result = _audit(bundled_eps1)
    _show("diffprivlib epsilon 1, bundled data", result)
    m = result.metrics
    assert result.name == DP_AUDIT and result.passed, result.summary()
    assert m["applies"] is True and m["epsilon_claimed"] == 1.0
    assert 0 <= m["epsilon_audited"] <= 1.0
    assert m["canaries"] == 1000 and 0 < m["audit_guesses"] <= 1000
    assert m["delta"] == 0.0  # diffprivlib's LogisticRegression: pure epsilon-DP
    assert 5.0 < m["epsilon_max_detectable"] < 6.0
    assert "not contradicted" in result.detail
    assert _audit(bundled_eps1).metrics["epsilon_audited"] == m["epsilon_audited"]  # seeded


def test_dp_logistic_regression_at_epsilon_5_passes_on_three_classes(mixed_eps5):
    result = _audit(mixed_eps5)
    _show("diffprivlib epsilon 5, mixed 3-class table", result)
    assert result.passed and result.metrics["epsilon_audited"] <= 5.0


def _noiseless(fitted: BaseEstimator) -> BaseEstimator:
    """The broken trainer: the same regularised logistic regression, no noise at all."""
    return LogisticRegression(C=fitted.C, max_iter=fitted.max_iter, tol=fitted.tol)


@pytest.mark.parametrize("split", ["bundled_eps1", "mixed_eps5"])
def test_a_trainer_without_noise_is_blocked(split, request):
    result = _audit(request.getfixturevalue(split), trainer=_noiseless)
    _show(f"no noise, claimed as {split}", result)
    m = result.metrics
    assert not result.passed
    assert m["epsilon_audited"] > m["epsilon_claimed"]
    assert m["audit_correct"] == m["audit_guesses"] == 1000  # every canary seen
    assert m["epsilon_audited"] == pytest.approx(5.38, abs=0.01)
    for part in (DP_AUDIT, "exceeds the claimed model.dp_epsilon", "1000 canaries", "broken"):
        assert part in result.detail
    assert f"{m['audit_correct']} of {m['audit_guesses']} guesses right" in result.detail


def test_a_dp_trainer_spending_far_more_than_it_claims_is_blocked(bundled_eps1):
    """diffprivlib itself, its noise set for epsilon 10 000 while 1 is claimed."""

    def overspending(fitted: BaseEstimator) -> BaseEstimator:
        return same_trainer(fitted).set_params(epsilon=10_000.0)

    result = _audit(bundled_eps1, trainer=overspending)
    _show("diffprivlib at epsilon 10 000 claimed as 1", result)
    assert not result.passed and result.metrics["epsilon_audited"] > 2.0


def test_non_dp_models_have_nothing_to_audit():
    pipeline, x_train, _, y_train, _ = fit_model(
        "logistic_regression", pd.read_csv(BUNDLED_CSV), BUNDLED
    )
    result = check_dp_audit(
        pipeline=pipeline, estimator="logistic_regression", x_train=x_train, y_train=y_train
    )
    assert result.passed and result.metrics == {"applies": False}
    assert "not a DP model" in result.detail


# -- cost and configuration ------------------------------------------------------------


def test_cost_is_bounded_in_rows_and_canaries(mixed_eps5):
    pipeline, x_train, _, y_train, _ = mixed_eps5
    big_x = pd.concat([x_train] * 10, ignore_index=True)  # 30 000 rows
    big_y = pd.concat([y_train] * 10, ignore_index=True)
    started = time.perf_counter()
    result = check_dp_audit(
        pipeline=pipeline, estimator=DP, x_train=big_x, y_train=big_y, canaries=500, rows=2000
    )
    assert time.perf_counter() - started < 30
    assert result.passed
    assert (result.metrics["audit_rows"], result.metrics["canaries"]) == (2000, 500)
    # wide tables: fewer rows, never more than MAX_CELLS cells in the audit run
    n = _audit_rows(10**6, 10**6, width=3000, canaries=1000)
    assert (n + 1000) * (3000 + 1000) <= MAX_CELLS + 4000 and n > 0


def test_evaluate_runs_the_audit_with_the_configured_budget(mixed_eps5):
    pipeline, x_train, x_test, y_train, y_test = mixed_eps5
    cfg = EvaluateConfig(dp_audit_canaries=600, dp_audit_rows=1500)
    results = evaluate_checks(
        cfg,
        pipeline=pipeline,
        estimator=DP,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        seed=42,
    )
    audit = results[-1]
    assert audit.name == DP_AUDIT and audit.passed, audit.summary()
    assert (audit.metrics["canaries"], audit.metrics["audit_rows"]) == (600, 1500)


def test_fewer_canaries_than_safe_need_a_waiver(tmp_path):
    weak = r"evaluate\.dp_audit_canaries = 100 .*evaluate\.dp_audit"
    with pytest.raises(ConfigError, match=weak):
        load_settings(state_dir=tmp_path, evaluate={"dp_audit_canaries": 100})
    waived = load_settings(
        state_dir=tmp_path,
        evaluate={"dp_audit_canaries": 100},
        waivers={"evaluate.dp_audit": "a smoke test of the DP setup, reviewed"},
    )
    assert [w["setting"] for w in waived.active_waivers] == ["evaluate.dp_audit_canaries"]
    assert load_settings(state_dir=tmp_path).evaluate.dp_audit_canaries == 1000
