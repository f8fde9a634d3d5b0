"""evaluate: quality floor and ART evasion attack, recorded in a real MLflow store."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from tasks.checks.adversarial import ADVERSARIAL, attack_rows, check_adversarial
from tasks.common.context import Dataset, RunContext
from tasks.common.files import sha256_file
from tasks.common.gates import GateFailed
from tasks.common.settings import load_settings
from tasks.common.tracking import mlflow_client
from tasks.evaluate import QUALITY, evaluate
from tasks.train import TrainedModel, train

CSV = Path(__file__).resolve().parents[2] / "data" / "breast_cancer.csv"
pytestmark = pytest.mark.integration  # every test here reads or writes a real MLflow store


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[RunContext, TrainedModel]:
    """One registered model shared by the module (training costs ~2.5 s)."""
    settings = load_settings(state_dir=tmp_path_factory.mktemp("evaluate") / "state")
    ctx = RunContext(settings=settings, run_id="test-run")
    dataset = Dataset(
        frame=pd.read_csv(CSV),
        uri=str(CSV),
        sha256=sha256_file(CSV),
        format="csv",
        integrity="none",
        target="target",
    )
    model, _ = train(ctx, dataset, suite_sha256="0" * 64)
    return ctx, model


def with_evaluate(ctx: RunContext, **changes: Any) -> RunContext:
    s = ctx.settings
    evaluate_cfg = s.evaluate.model_copy(update=changes)
    return RunContext(settings=s.model_copy(update={"evaluate": evaluate_cfg}), run_id=ctx.run_id)


def test_defaults_pass_and_are_recorded(trained):
    ctx, model = trained
    metrics, results = evaluate(ctx, model)
    assert [(r.name, r.passed) for r in results] == [
        (QUALITY, True),
        (ADVERSARIAL, True),
        ("evaluate.membership_inference", True),
    ]
    assert metrics["accuracy"] >= 0.95 and metrics["roc_auc"] > 0.99 and metrics["f1"] > 0.95
    assert metrics["samples"] == len(model.x_test)  # 143 test rows < attack_samples=200
    assert metrics["clean_accuracy"] == metrics["accuracy"]
    assert 0.8 <= metrics["robust_accuracy"] < metrics["clean_accuracy"]
    assert metrics["max_perturbation_std"] == pytest.approx(0.1, abs=1e-5)
    quality, adversarial, membership = results
    assert membership.threshold == {"max_advantage": 0.25}
    assert quality.threshold == {"min_accuracy": 0.9}
    assert adversarial.threshold == {"min_robust_accuracy": 0.8}
    client = mlflow_client(ctx.settings)
    logged = client.get_run(model.mlflow_run_id).data.metrics
    assert logged["evaluate.quality.accuracy"] == metrics["accuracy"]
    assert logged["evaluate.adversarial.robust_accuracy"] == metrics["robust_accuracy"]
    tags = client.get_model_version(model.name, model.version).tags
    assert tags[QUALITY] == "passed" and tags[ADVERSARIAL] == "passed"
    assert evaluate(ctx, model)[0] == metrics  # deterministic


def test_quality_floor_blocks(trained):
    ctx, model = trained
    with pytest.raises(GateFailed) as err:
        evaluate(with_evaluate(ctx, min_accuracy=0.999), model)
    assert err.value.gate.name == QUALITY
    assert err.value.gate.metrics["accuracy"] < 0.999
    assert err.value.gate.threshold == {"min_accuracy": 0.999}
    tags = mlflow_client(ctx.settings).get_model_version(model.name, model.version).tags
    assert tags["gate_status"] == "blocked" and tags["blocked_by"] == QUALITY


def test_large_attack_blocks(trained):
    ctx, model = trained
    with pytest.raises(GateFailed) as err:
        evaluate(with_evaluate(ctx, attack_eps=1.0), model)
    gate = err.value.gate
    assert gate.name == ADVERSARIAL
    assert gate.metrics["robust_accuracy"] < 0.2  # measured 0.056
    assert gate.metrics["accuracy_drop"] > 0.7
    assert "below the floor" in gate.detail


# FGM robust accuracy on the bundled data, measured: 0.902 / 0.622 / 0.343 at eps 0.1/0.3/0.5.
@pytest.mark.parametrize(("eps", "expected"), [(0.1, 0.93), (0.3, 0.61), (0.5, 0.34)])
@pytest.mark.parametrize("attack", ["fgm", "pgd"])
def test_robust_accuracy_matches_stack_notes(trained, eps, expected, attack):
    ctx, model = trained
    cfg = ctx.settings.evaluate.model_copy(update={"attack": attack, "attack_eps": eps})
    result = check_adversarial(
        pipeline=model.pipeline, x_train=model.x_train, x=model.x_test, y=model.y_test, config=cfg
    )
    assert result.metrics["robust_accuracy"] == pytest.approx(expected, abs=0.05)
    assert result.metrics["max_perturbation_std"] <= eps * (1 + 1e-4) + 1e-6


@pytest.mark.parametrize(
    "estimator",
    [
        Pipeline([("scaler", StandardScaler()), ("model", DecisionTreeClassifier(random_state=0))]),
        RandomForestClassifier(n_estimators=5, random_state=0),
    ],
)
def test_model_without_gradients_fails_closed(trained, estimator):
    ctx, model = trained
    estimator.fit(model.x_train, model.y_train)
    other = dataclasses.replace(model, pipeline=estimator)
    with pytest.raises(GateFailed) as err:
        evaluate(ctx, other)
    gate = err.value.gate
    assert gate.name == ADVERSARIAL and not gate.passed
    assert "no attack configured for this model type" in gate.detail
    assert {r.name: r.passed for r in err.value.results}[QUALITY] is True


def test_attack_rows_are_a_seeded_subset(trained):
    _, model = trained
    a = attack_rows(model.x_test, model.y_test, samples=50, seed=42)
    b = attack_rows(model.x_test, model.y_test, samples=50, seed=42)
    assert len(a[0]) == 50 and list(a[0].index) == list(b[0].index)
    assert list(a[0].index) == list(a[1].index)
    assert attack_rows(model.x_test, model.y_test, samples=500, seed=42)[0] is model.x_test
