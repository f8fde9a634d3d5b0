"""Membership-inference gate: regularised models pass, memorisers are caught, on a
bounded sample, for labels of any type."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tasks.checks.privacy import MEMBERSHIP, check_membership_inference
from tests.conftest import BUNDLED_CSV
from tests.mixed_table import mixed_table
from tests.unit.test_probes import BUNDLED, MIXED, PARAMS, fit_model


def _attack(split, *, max_advantage: float = 0.25, samples: int = 1000, seed: int = 42):
    pipeline, x_train, x_test, y_train, y_test = split
    return check_membership_inference(
        pipeline=pipeline,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        max_advantage=max_advantage,
        samples=samples,
        seed=seed,
    )


@pytest.fixture(scope="module")
def bundled() -> pd.DataFrame:
    return pd.read_csv(BUNDLED_CSV)


def test_a_forest_without_bootstrap_is_blocked(bundled) -> None:
    """Every tree sees every training row: members get near-certain scores."""
    result = _attack(fit_model("random_forest", bundled, BUNDLED, params={"bootstrap": False}))
    assert result.name == MEMBERSHIP and not result.passed
    m = result.metrics
    assert m["advantage"] > 0.4  # measured 0.55
    assert m["advantage_ci_low"] > 0.25 and m["advantage_ci_low"] < m["advantage"]
    assert m["members"] == m["non_members"] == 143  # every test row, as many members
    assert result.threshold == {"max_advantage": 0.25, "max_tpr_at_low_fpr": 0.15}
    assert "leaks which rows" in result.detail


# Measured advantage on the bundled data: LR -0.04, forest 0.04, boosting -0.10, DP 0.0.
@pytest.mark.parametrize("estimator", list(PARAMS))
def test_regularised_models_pass(bundled, estimator) -> None:
    result = _attack(fit_model(estimator, bundled, BUNDLED))
    m = result.metrics
    assert result.passed and m["advantage"] < 0.2, result.summary()
    assert m["advantage_ci_low"] < m["advantage"] < m["advantage_ci_high"]
    assert m["advantage_ci_high"] - m["advantage_ci_low"] < 0.3  # 143 + 143 rows


def test_string_labels_and_three_classes() -> None:
    result = _attack(fit_model("logistic_regression", mixed_table(1500, seed=3), MIXED))
    assert result.passed and abs(result.metrics["advantage"]) < 0.15
    assert result.metrics["members"] == result.metrics["non_members"] == 375


def test_binary_string_labels(bundled) -> None:
    named = bundled.assign(target=np.where(bundled["target"] == 1, "benign", "malignant"))
    result = _attack(fit_model("random_forest", named, BUNDLED, params={"bootstrap": False}))
    assert not result.passed and result.metrics["advantage"] > 0.4


def test_the_sample_is_bounded(bundled) -> None:
    result = _attack(fit_model("logistic_regression", bundled, BUNDLED), samples=60)
    assert result.metrics["members"] == result.metrics["non_members"] == 60


def test_memorising_model_is_blocked() -> None:
    """1-NN on random labels memorises every training row: members are obvious. Any
    classifier with predict_proba is attacked (not only the zoo's pipelines)."""
    frame = pd.read_csv(BUNDLED_CSV)
    noise = pd.Series(np.random.default_rng(0).integers(0, 2, len(frame)))
    xtr, xte, ytr, yte = train_test_split(
        frame.drop(columns="target"), noise, test_size=0.25, random_state=42
    )
    model = make_pipeline(StandardScaler(), KNeighborsClassifier(1)).fit(xtr, ytr)
    result = _attack((model, xtr, xte, ytr, yte), max_advantage=0.2)
    assert not result.passed and result.metrics["advantage"] > 0.3
    assert result.threshold == {"max_advantage": 0.2, "max_tpr_at_low_fpr": 0.15}
