"""Membership inference at low false-positive rates (offline LiRA): a memorising forest
is blocked with a message that says what to do, the zoo's regularised models pass,
labels of any type work, the references are fitted on bounded rows, and the metrics
carry counts and the ROC curve only, never a row."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.ensemble import RandomForestClassifier

from tasks.checks.membership_lowfpr import LowFprResult, true_positives_at
from tasks.checks.privacy import MAX_TPR_AT_LOW_FPR, MEMBERSHIP, check_membership_inference
from tasks.common.catalog import SAFE_RANGES
from tasks.common.sections import EvaluateConfig
from tests.conftest import BUNDLED_CSV
from tests.mixed_table import mixed_table
from tests.unit.test_probes import BUNDLED, MIXED, PARAMS, fit_model

CONTRACT_KEYS = {
    "auc",
    "tpr_at_1pct_fpr",
    "tpr_at_1pct_fpr_ci_low",
    "tpr_at_1pct_fpr_ci_high",
    "tpr_at_01pct_fpr",
    "tpr_at_01pct_fpr_ci_low",
    "tpr_at_01pct_fpr_ci_high",
    "exposed_records",
    "advantage",
    "roc_curve",
}


def _attack(split, *, max_advantage: float = 1.0, samples: int = 1000, references: int = 4):
    """The gate with the average rule switched off (1.0): only the low-FPR rule decides."""
    pipeline, x_train, x_test, y_train, y_test = split
    return check_membership_inference(
        pipeline=pipeline,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        max_advantage=max_advantage,
        samples=samples,
        seed=42,
        max_tpr_at_low_fpr=MAX_TPR_AT_LOW_FPR,
        references=references,
    )


@pytest.fixture(scope="module")
def bundled() -> pd.DataFrame:
    return pd.read_csv(BUNDLED_CSV)


def test_a_memorising_forest_is_blocked_at_low_fpr(bundled) -> None:
    """Measured: TPR at 1% FPR 0.33 (95% CI 0.28-0.38) on 426 members, 143 non-members."""
    result = _attack(fit_model("random_forest", bundled, BUNDLED, params={"bootstrap": False}))
    m = result.metrics
    assert result.name == MEMBERSHIP and not result.passed
    assert m["tpr_at_1pct_fpr_ci_low"] > 0.2 > MAX_TPR_AT_LOW_FPR
    assert m["tpr_at_1pct_fpr_ci_low"] < m["tpr_at_1pct_fpr"] < m["tpr_at_1pct_fpr_ci_high"]
    assert m["lowfpr_members"] == 426 and m["lowfpr_non_members"] == 143  # all test rows
    assert result.threshold["max_tpr_at_low_fpr"] == MAX_TPR_AT_LOW_FPR
    summary = result.summary()
    assert summary.startswith(f"{MEMBERSHIP} BLOCKED")
    pct = f"{m['tpr_at_1pct_fpr']:.1%}"
    assert f"{pct} of members at 1% FPR (95% CI {m['tpr_at_1pct_fpr_ci_low']:.1%}-" in summary
    assert "max_membership_tpr_at_low_fpr 0.15" in summary
    assert "regularise more" in summary and "differential privacy" in summary
    assert "advantage" not in result.detail  # the average rule was off: not named


# Measured CP lower bounds of TPR at 1% FPR, bundled data: LR 0.013, DP LR 0.0,
# forest 0.031, boosting 0.040 (threshold 0.15).
@pytest.mark.parametrize("estimator", list(PARAMS))
def test_regularised_models_pass(bundled, estimator) -> None:
    result = _attack(fit_model(estimator, bundled, BUNDLED))
    m = result.metrics
    assert result.passed, result.summary()
    assert m["tpr_at_1pct_fpr_ci_low"] < 0.1  # margin to 0.15
    assert 0.3 < m["auc"] < 0.75


def test_string_labels_and_three_classes() -> None:
    frame = mixed_table(1500, seed=3)
    forest = fit_model(
        "random_forest", frame, MIXED, params={"bootstrap": False, "n_estimators": 30}
    )
    memoriser = _attack(forest, samples=375)
    assert not memoriser.passed and memoriser.metrics["tpr_at_1pct_fpr_ci_low"] > 0.2
    assert memoriser.metrics["exposed_records"] > 30  # individually significant members
    linear = _attack(fit_model("logistic_regression", frame, MIXED), samples=375)
    assert linear.passed and linear.metrics["exposed_records"] == 0, linear.summary()
    assert linear.metrics["lowfpr_members"] == linear.metrics["lowfpr_non_members"] == 375


class _CountingForest(RandomForestClassifier):
    """A forest that records how many rows each fit (its references' too) saw."""

    fits: ClassVar[list[int]] = []

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> _CountingForest:
        _CountingForest.fits.append(len(X))
        return super().fit(X, y, sample_weight=sample_weight)


def test_references_are_fitted_on_bounded_rows() -> None:
    frame = mixed_table(3000, seed=1)
    x, y = frame[["income", "age", "tenure"]].fillna(0), frame["segment"]
    x_train, x_test, y_train, y_test = x.iloc[:2400], x.iloc[2400:], y.iloc[:2400], y.iloc[2400:]
    model = _CountingForest(n_estimators=10, random_state=0).fit(x_train, y_train)
    _CountingForest.fits.clear()
    result = _attack((model, x_train, x_test, y_train, y_test), samples=150, references=6)
    assert _CountingForest.fits == [150] * 6  # half of 150 + 150 scored rows, 6 references
    assert result.metrics["lowfpr_members"] == result.metrics["lowfpr_non_members"] == 150


def test_metrics_hold_counts_and_the_curve_only(bundled) -> None:
    result = _attack(fit_model("logistic_regression", bundled, BUNDLED))
    m = result.metrics
    assert set(m) >= CONTRACT_KEYS
    for key, value in m.items():
        if key == "roc_curve":
            continue
        assert isinstance(value, int | float) and not isinstance(value, bool), key
    assert isinstance(m["exposed_records"], int)
    curve = m["roc_curve"]
    assert 2 <= len(curve) <= 64
    assert all(len(p) == 2 and all(isinstance(v, float) for v in p) for p in curve)
    assert all(round(v, 4) == v for p in curve for v in p)
    xs, ys = [p[0] for p in curve], [p[1] for p in curve]
    assert xs[0] == 0.001 and xs[-1] == 1.0 and xs == sorted(xs)
    assert ys == sorted(ys) and ys[-1] == 1.0 and all(0 <= v <= 1 for v in ys)
    assert xs[31] < 0.04  # spread on a log axis, not a linear one


def test_tpr_at_a_false_positive_rate_counts_strictly_above_the_threshold() -> None:
    others = np.arange(100, dtype=float)  # 0..99
    members = np.array([99.0, 99.5, 98.5, 50.0])
    assert true_positives_at(members, others, 0.01) == 3  # one non-member (99) allowed
    assert true_positives_at(members, others, 0.0) == 1  # above every non-member
    low = LowFprResult(member_scores=np.full(200, 1000.0), non_member_scores=others)
    rate, ci_low, ci_high = low.tpr_at(0.001)
    assert rate == 1.0 and ci_high == 1.0 and 0.98 < ci_low < 0.99  # exact: 0.025^(1/200)
    assert low.exposed() == 200 and low.auc() == 1.0


def test_config_keys_and_safe_ranges() -> None:
    cfg = EvaluateConfig()
    assert cfg.max_membership_tpr_at_low_fpr == MAX_TPR_AT_LOW_FPR
    assert cfg.membership_references == 4
    with pytest.raises(ValidationError, match="multiple of 2"):
        EvaluateConfig(membership_references=5)
    ranges = {r.setting: r for r in SAFE_RANGES}
    assert not ranges["evaluate.max_membership_tpr_at_low_fpr"].allows(0.5)
    assert not ranges["evaluate.membership_references"].allows(2)
    assert ranges["evaluate.membership_references"].allows(cfg.membership_references)


def test_the_log_line_names_the_curve_without_its_points(bundled) -> None:
    result = _attack(fit_model("logistic_regression", bundled, BUNDLED), samples=100)
    assert "roc_curve=<64 points>" in result.summary()
    assert "[[" not in result.summary()
