"""Differentially private training (diffprivlib): trains, logs its budget, round-trips
through the pinned allow-list, and is attacked for real by evaluate.adversarial."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import tasks.checks.adversarial as adversarial_mod
import tasks.trust.modelio as modelio
from tasks.checks.adversarial import ADVERSARIAL, check_adversarial
from tasks.checks.privacy import MEMBERSHIP
from tasks.common.context import RunContext
from tasks.common.settings import ConfigError, load_settings
from tasks.common.tracking import mlflow_client
from tasks.evaluate import evaluate
from tasks.models import DP_ESTIMATOR, build_pipeline, model_params, resolve_data_norm
from tasks.train import ROUNDTRIP, TrainedModel, split, train
from tasks.trust.modelio import UntrustedModelError, load_model_file
from tests.conftest import bundled_dataset

CSV = Path(__file__).resolve().parents[2] / "data" / "breast_cancer.csv"
DP_CLASS = "diffprivlib.models.logistic_regression.LogisticRegression"


@pytest.fixture(scope="module")
def dp_trained(tmp_path_factory) -> tuple[RunContext, TrainedModel]:
    settings = load_settings(state_dir=tmp_path_factory.mktemp("dp") / "state")
    model_cfg = settings.model.model_copy(update={"estimator": DP_ESTIMATOR, "dp_epsilon": 5.0})
    ctx = RunContext(settings=settings.model_copy(update={"model": model_cfg}), run_id="dp-run")
    model, results = train(ctx, bundled_dataset(), suite_sha256="0" * 64)
    assert [(r.name, r.passed) for r in results] == [(ROUNDTRIP, True)]
    return ctx, model


def _qualname(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


@pytest.mark.integration
def test_dp_run_trains_logs_its_budget_and_registers(dp_trained):
    ctx, model = dp_trained
    assert _qualname(model.pipeline["model"]) == DP_CLASS
    assert isinstance(model.pipeline["scaler"], StandardScaler)
    client = mlflow_client(ctx.settings)
    version = client.get_model_version(model.name, model.version)
    assert version.tags["gate_status"] == "candidate"
    assert version.tags["model_sha256"] == model.sha256
    params = client.get_run(model.mlflow_run_id).data.params
    assert params["estimator"] == DP_ESTIMATOR
    assert params["dp_epsilon"] == "5.0"
    # Unset dp_data_norm is derived before training (largest scaled training-row norm),
    # so the bound actually used is in the run and in the signed params.
    scaled = StandardScaler().fit_transform(model.x_train.to_numpy(np.float64))
    norm = float(np.linalg.norm(scaled, axis=1).max())
    assert float(params["dp_data_norm"]) == pytest.approx(norm)
    assert model.params["dp_epsilon"] == 5.0 and model.params["dp_data_norm"] == norm
    assert model.pipeline["model"].data_norm == norm
    # The model records exactly its own spend, not the process's.
    assert model.pipeline["model"].accountant.spent_budget == [(5.0, 0)]
    model_dir = ctx.settings.state_dir / "runs" / "dp-run" / "model"
    assert "diffprivlib==0.6.6" in (model_dir / "requirements.txt").read_text()


@pytest.mark.integration
def test_dp_artifact_reloads_only_through_the_pinned_allow_list(dp_trained, monkeypatch):
    _, model = dp_trained
    loaded = load_model_file(model.skops_path, expected_sha256=model.sha256)
    assert _qualname(loaded["model"]) == DP_CLASS
    np.testing.assert_array_equal(
        loaded.predict(model.x_test), model.pipeline.predict(model.x_test)
    )
    monkeypatch.setattr(modelio, "TRUSTED_TYPES", ())  # the plain pipeline's needs
    with pytest.raises(UntrustedModelError) as err:
        load_model_file(model.skops_path, expected_sha256=model.sha256)
    assert err.value.types == sorted(["diffprivlib.accountant.BudgetAccountant", DP_CLASS])


@pytest.mark.integration
def test_dp_model_is_attacked_for_real(dp_trained):
    ctx, model = dp_trained
    result = check_adversarial(
        pipeline=model.pipeline,
        x_train=model.x_train,
        x=model.x_test,
        y=model.y_test,
        config=ctx.settings.evaluate,
    )
    assert "no attack configured" not in result.detail
    assert "does not model this pipeline" not in result.detail
    m = result.metrics
    assert m["attack"] == "fgm" and m["samples"] == len(model.x_test)
    assert m["max_perturbation_std"] == pytest.approx(0.1, abs=1e-5)
    assert m["clean_accuracy"] == pytest.approx(model.pipeline.score(model.x_test, model.y_test))
    assert m["robust_accuracy"] < m["clean_accuracy"]  # the attack moved predictions


@pytest.mark.integration
def test_dp_model_passes_evaluate_with_floors_lowered_knowingly(dp_trained):
    ctx, model = dp_trained
    s = ctx.settings
    lowered = s.evaluate.model_copy(update={"min_accuracy": 0.5, "min_robust_accuracy": 0.5})
    ctx = RunContext(settings=s.model_copy(update={"evaluate": lowered}), run_id=ctx.run_id)
    metrics, results = evaluate(ctx, model)
    assert {r.name: r.passed for r in results} == {
        "evaluate.quality": True,
        ADVERSARIAL: True,
        MEMBERSHIP: True,
    }
    assert "robust_accuracy" in metrics and "advantage" in metrics
    logged = mlflow_client(s).get_run(model.mlflow_run_id).data.metrics
    assert logged["evaluate.adversarial.robust_accuracy"] == metrics["robust_accuracy"]


@pytest.mark.integration
def test_a_twin_that_does_not_match_fails_closed(dp_trained, monkeypatch):
    ctx, model = dp_trained
    real = adversarial_mod._attack_target

    def skewed(final):
        twin = real(final)
        assert isinstance(twin, LogisticRegression) and _qualname(twin) != DP_CLASS
        twin.coef_, twin.intercept_ = -twin.coef_, -twin.intercept_  # flips every prediction
        return twin

    monkeypatch.setattr(adversarial_mod, "_attack_target", skewed)
    result = check_adversarial(
        pipeline=model.pipeline,
        x_train=model.x_train,
        x=model.x_test,
        y=model.y_test,
        config=ctx.settings.evaluate,
    )
    assert not result.passed
    assert "does not model this pipeline" in result.detail


def test_noise_is_real_and_seeded(settings):
    x_train, _, y_train, _ = split(bundled_dataset(), config=settings.model)

    def coef(epsilon: float) -> np.ndarray:
        cfg = settings.model.model_copy(
            update={"estimator": DP_ESTIMATOR, "dp_epsilon": epsilon, "dp_data_norm": 5.0}
        )
        return build_pipeline(cfg).fit(x_train, y_train)["model"].coef_

    np.testing.assert_array_equal(coef(0.5), coef(0.5))  # seeded: reproducible
    assert not np.allclose(coef(0.5), coef(5.0))
    plain = build_pipeline(settings.model).fit(x_train, y_train)["model"].coef_
    assert not np.allclose(coef(5.0), plain)


def test_plain_lr_is_unchanged(settings):
    cfg = settings.model
    assert cfg.estimator == "logistic_regression"
    assert type(build_pipeline(cfg)["model"]) is LogisticRegression
    assert set(model_params(cfg)) == {"estimator", "seed", "test_fraction", "C", "max_iter"}
    x_train = split(bundled_dataset(), config=cfg)[0]
    assert resolve_data_norm(cfg, x_train) is cfg


def test_dp_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("SECURE_PIPELINE_MODEL__ESTIMATOR", DP_ESTIMATOR)
    monkeypatch.setenv("SECURE_PIPELINE_MODEL__DP_EPSILON", "0.5")
    cfg = load_settings().model
    assert (cfg.estimator, cfg.dp_epsilon, cfg.dp_data_norm) == (DP_ESTIMATOR, 0.5, None)
    monkeypatch.setenv("SECURE_PIPELINE_MODEL__DP_EPSILON", "0")
    with pytest.raises(ConfigError, match="dp_epsilon"):
        load_settings()


def test_non_linear_models_keep_failing_closed(dp_trained):
    from sklearn.tree import DecisionTreeClassifier

    ctx, model = dp_trained
    tree = build_pipeline(ctx.settings.model)
    tree.steps[-1] = ("model", DecisionTreeClassifier(random_state=0))
    tree.fit(model.x_train, model.y_train)
    other = dataclasses.replace(model, pipeline=tree)
    result = check_adversarial(
        pipeline=other.pipeline,
        x_train=model.x_train,
        x=model.x_test,
        y=model.y_test,
        config=ctx.settings.evaluate,
    )
    assert not result.passed and "no attack configured" in result.detail
