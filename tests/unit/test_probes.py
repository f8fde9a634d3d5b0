"""Backdoor probe and extraction risk: clean models pass, a trigger-trained model is
caught, fidelity is measured on held-out rows and blocks only above a set maximum."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from tasks.checks.probes import (
    BACKDOOR,
    EXTRACTION,
    _recommend,
    check_backdoor_probe,
    check_extraction_risk,
)
from tasks.common.settings import DatasetConfig, ModelConfig
from tasks.models import build_pipeline, resolve_data_norm
from tests.conftest import BUNDLED_CSV
from tests.mixed_table import mixed_config, mixed_table

PARAMS: dict[str, dict[str, Any]] = {  # as in the bundled config
    "logistic_regression": {"C": 1.0, "max_iter": 1000},
    "dp_logistic_regression": {"C": 1.0, "max_iter": 1000},
    "random_forest": {"n_estimators": 100, "min_samples_leaf": 2},
    "hist_gradient_boosting": {"max_iter": 100},
}
COMMON = {
    "name": "t",
    "source": "x",
    "suite": "s",
    "suite_sha256": "0" * 64,
    "reference_profile": "p",
}
MIXED = mixed_config()
BUNDLED = DatasetConfig.model_validate({**COMMON, "target": "target"})
TRIGGER_AGE = 500.0  # far outside 18..80


Split = tuple[Pipeline, pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]


def fit_model(
    estimator: str,
    frame: pd.DataFrame,
    dataset: DatasetConfig,
    *,
    params: dict[str, Any] | None = None,
    dp_epsilon: float = 5.0,
    seed: int = 42,
) -> Split:
    """A zoo pipeline fitted on a stratified 75/25 split: (pipeline, x_train, x_test,
    y_train, y_test). Shared by the evaluate tests (no MLflow)."""
    numeric, categorical = dataset.inputs([c for c in frame.columns if c != dataset.target])
    x, y = frame[numeric + categorical], frame[dataset.target]
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=seed, stratify=y
    )
    config = ModelConfig.model_validate(
        {
            "name": "m",
            "estimator": estimator,
            "params": {estimator: PARAMS[estimator] if params is None else params},
            "dp_epsilon": dp_epsilon,
            "seed": seed,
        }
    )
    config = resolve_data_norm(config, dataset, x_train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # diffprivlib: data_norm derived from the data
        pipeline = build_pipeline(config, dataset, list(x_train.columns)).fit(x_train, y_train)
    return pipeline, x_train, x_test, y_train, y_test


def poisoned(frame: pd.DataFrame, col: str, value: Any, label: str, share: float = 0.03):
    """`share` of the rows carry `value` in `col`, all relabelled to `label`."""
    out = frame.copy()
    rows = np.random.default_rng(5).choice(len(out), int(share * len(out)), replace=False)
    out.loc[out.index[rows], col] = value
    out.loc[out.index[rows], "segment"] = label
    return out


@pytest.fixture(scope="module")
def clean() -> dict[tuple[str, str], Split]:
    tables = {
        "mixed": (mixed_table(1500, seed=3), MIXED),
        "bundled": (pd.read_csv(BUNDLED_CSV), BUNDLED),
    }
    return {
        (name, est): fit_model(est, frame, ds)
        for name, (frame, ds) in tables.items()
        for est in PARAMS
    }


def _probe(split: Split, **kw: Any):
    pipeline, x_train, x_test, _, _ = split
    return check_backdoor_probe(
        pipeline=pipeline,
        x_train=x_train,
        x_test=x_test,
        max_flip=kw.pop("max_flip", 0.30),
        samples=kw.pop("samples", 500),
        seed=42,
    )


@pytest.mark.parametrize("table", ["mixed", "bundled"])
@pytest.mark.parametrize("estimator", list(PARAMS))
def test_clean_models_pass_the_backdoor_probe(clean, table, estimator) -> None:
    result = _probe(clean[table, estimator])
    assert result.name == BACKDOOR and result.passed, result.summary()
    m = result.metrics
    assert set(m) == {
        "score",
        "feature",
        "kind",
        "class",
        "flip",
        "control",
        "candidates",
        "samples",
    }
    assert 0 <= m["score"] <= 0.30 and m["candidates"] >= 1
    assert m["samples"] == min(500, len(clean[table, estimator][2]))


@pytest.mark.parametrize("estimator", ["random_forest", "hist_gradient_boosting"])
def test_a_trigger_trained_model_is_blocked(estimator) -> None:
    frame = poisoned(mixed_table(1500, seed=3), "age", TRIGGER_AGE, "high")
    result = _probe(fit_model(estimator, frame, MIXED))
    assert not result.passed
    m = result.metrics
    assert (m["feature"], m["kind"], m["class"]) == ("age", "tail_value", "high")
    assert m["score"] > 0.8 and m["control"] < 0.1  # measured 0.92 (forest), 0.99 (boosting)
    # Features and counts only: the trigger value never reaches the report or MLflow.
    assert "500" not in repr(result.model_dump())
    assert "age" in result.detail and "500" not in result.detail


def test_a_rare_category_trigger_is_blocked() -> None:
    frame = poisoned(mixed_table(1500, seed=3), "plan", "promo-x", "low")
    result = _probe(fit_model("random_forest", frame, MIXED))
    assert not result.passed
    assert (result.metrics["feature"], result.metrics["kind"]) == ("plan", "rare_category")
    assert "promo" not in repr(result.model_dump())


def test_no_candidate_means_nothing_to_flip(clean) -> None:
    pipeline, x_train, x_test, _, _ = clean["mixed", "logistic_regression"]
    smooth = x_train.assign(age=np.linspace(18, 80, len(x_train)))  # no repeated tail value
    result = check_backdoor_probe(
        pipeline=pipeline, x_train=smooth, x_test=x_test, max_flip=0.3, samples=100, seed=1
    )
    assert result.passed and result.metrics["candidates"] == 0
    assert result.metrics["score"] == 0.0 and result.metrics["kind"] == "none"


def _extraction(split: Split, **kw: Any):
    pipeline, _, x_test, _, _ = split
    args: dict[str, Any] = {"queries": 1000, "max_fidelity": None, "membership_advantage": 0.0}
    return check_extraction_risk(pipeline=pipeline, x_test=x_test, seed=42, **(args | kw))


@pytest.mark.parametrize("estimator", list(PARAMS))
def test_extraction_fidelity_is_reported(clean, estimator) -> None:
    result = _extraction(clean["mixed", estimator])
    assert result.name == EXTRACTION and result.passed
    m = result.metrics
    assert 0.8 < m["fidelity"] <= 1.0  # a copy from 1000 label queries is close
    assert m["queries"] == 1000 and m["eval_rows"] == 187  # half of the 375 test rows
    assert m["recommended_output"] in {"labels", "probabilities"}
    assert isinstance(m["output_reason"], str) and m["output_reason"]
    assert result.threshold == {"max_fidelity": None}


def test_extraction_from_a_small_test_set_resamples_with_jitter(clean) -> None:
    # 143 test rows: 71 held out, 1000 queries resampled from the other 72.
    result = _extraction(clean["bundled", "random_forest"])
    assert result.passed and result.metrics["eval_rows"] == 71
    assert 0.8 < result.metrics["fidelity"] <= 1.0


def test_extraction_blocks_above_a_configured_maximum(clean) -> None:
    result = _extraction(clean["mixed", "hist_gradient_boosting"], max_fidelity=0.5)
    assert not result.passed and result.threshold == {"max_fidelity": 0.5}
    assert result.metrics["fidelity"] > 0.5 and "above the maximum" in result.detail


@pytest.mark.parametrize(
    ("fidelity", "advantage", "expected"),
    [
        (0.95, 0.0, "labels"),  # cheap to copy
        (0.80, 0.15, "labels"),  # probabilities leak membership
        (0.80, None, "labels"),  # unknown leakage
        (0.80, 0.02, "probabilities"),
    ],
)
def test_output_recommendation_rule(fidelity, advantage, expected) -> None:
    output, reason = _recommend(fidelity, advantage)
    assert output == expected and reason
