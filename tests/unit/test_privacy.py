"""Membership-inference gate: a regularised model passes, a memoriser is caught."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tasks.checks.privacy import check_membership_inference
from tests.conftest import BUNDLED_CSV


def _split(labels: pd.Series | None = None) -> tuple[pd.DataFrame, ...]:
    frame = pd.read_csv(BUNDLED_CSV)
    y = frame["target"] if labels is None else labels
    return tuple(train_test_split(frame.drop(columns="target"), y, test_size=0.25, random_state=42))


def test_logistic_regression_leaks_little() -> None:
    xtr, xte, ytr, yte = _split()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(xtr, ytr)
    result = check_membership_inference(
        pipeline=model, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte, max_advantage=0.2, seed=42
    )
    assert result.passed and abs(result.metrics["advantage"]) < 0.15


def test_memorising_model_is_blocked() -> None:
    """1-NN on random labels memorises every training row: members are obvious."""
    noise = pd.Series(np.random.default_rng(0).integers(0, 2, 569))
    xtr, xte, ytr, yte = _split(noise)
    model = make_pipeline(StandardScaler(), KNeighborsClassifier(1)).fit(xtr, ytr)
    result = check_membership_inference(
        pipeline=model, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte, max_advantage=0.2, seed=42
    )
    assert not result.passed and result.metrics["advantage"] > 0.3
    assert result.threshold == {"max_advantage": 0.2}
