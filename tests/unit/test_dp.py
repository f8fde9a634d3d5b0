"""Differentially private training (diffprivlib): trains, logs its budget, round-trips
through the pinned allow-list, and is attacked for real by evaluate.adversarial."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression

import tasks.checks.evasion as adversarial_mod
import tasks.trust.modelio as modelio
from tasks.checks.adversarial import ADVERSARIAL, check_adversarial
from tasks.common.context import RunContext
from tasks.common.settings import ConfigError, EvaluateConfig, load_settings
from tasks.common.tracking import mlflow_client
from tasks.evaluate import BACKDOOR, DP_AUDIT, EXTRACTION, MEMBERSHIP, QUALITY, evaluate
from tasks.models import build_pipeline, build_preprocessor, model_params, resolve_data_norm
from tasks.train import ROUNDTRIP, TrainedModel, split, train
from tasks.trust.modelio import TRUSTED_PREPROCESSING, UntrustedModelError, load_model_file
from tests.conftest import bundled_dataset
from tests.mixed_table import mixed_table
from tests.unit.test_probes import MIXED, fit_model

CSV = Path(__file__).resolve().parents[2] / "data" / "breast_cancer.csv"
DP_ESTIMATOR = "dp_logistic_regression"
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


def _attack(ctx: RunContext, model: TrainedModel, config: EvaluateConfig | None = None):
    return check_adversarial(
        pipeline=model.pipeline,
        estimator=DP_ESTIMATOR,
        x_train=model.x_train,
        x=model.x_test,
        y=model.y_test,
        config=config or ctx.settings.evaluate,
        seed=42,
    )


@pytest.mark.integration
def test_dp_run_trains_logs_its_budget_and_registers(dp_trained):
    ctx, model = dp_trained
    assert _qualname(model.pipeline["model"]) == DP_CLASS
    assert isinstance(model.pipeline["prep"], ColumnTransformer)
    client = mlflow_client(ctx.settings)
    version = client.get_model_version(model.name, model.version)
    assert version.tags["gate_status"] == "candidate"
    assert version.tags["model_sha256"] == model.sha256
    params = client.get_run(model.mlflow_run_id).data.params
    assert params["estimator"] == DP_ESTIMATOR
    assert params["dp_epsilon"] == "5.0"
    # Unset dp_data_norm is derived before training (largest preprocessed training-row
    # norm), so the bound actually used is in the run and in the signed params.
    prep = build_preprocessor(ctx.settings.dataset, list(model.x_train.columns))
    rows = np.asarray(prep.fit_transform(model.x_train), dtype=np.float64)
    norm = float(np.linalg.norm(rows, axis=1).max())
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
    monkeypatch.setattr(modelio, "TRUSTED_TYPES", TRUSTED_PREPROCESSING)  # the plain pipeline's
    with pytest.raises(UntrustedModelError) as err:
        load_model_file(model.skops_path, expected_sha256=model.sha256)
    assert err.value.types == sorted(["diffprivlib.accountant.BudgetAccountant", DP_CLASS])


@pytest.mark.integration
def test_dp_model_is_attacked_for_real(dp_trained):
    ctx, model = dp_trained
    result = _attack(ctx, model)
    assert "does not model this pipeline" not in result.detail
    m = result.metrics
    assert m["attacks"] == "fgm+corner" and m["samples"] == len(model.x_test)
    assert m["max_perturbation_std"] == pytest.approx(0.1, abs=1e-5)
    assert m["clean_accuracy"] == pytest.approx(model.pipeline.score(model.x_test, model.y_test))
    assert m["robust_accuracy"] < m["clean_accuracy"]  # the attack moved predictions


@pytest.mark.integration
def test_dp_model_passes_evaluate_with_floors_lowered_knowingly(dp_trained):
    ctx, model = dp_trained
    s = ctx.settings
    # The exact worst case of the linear scores ("corner", beside FGM) leaves 0.30 of
    # these rows robust at eps 0.1 where FGM alone left 0.62 (saturated probabilities
    # give FGM zero gradients): at the default eps this model is blocked, rightly. The
    # budget is lowered knowingly too, to its safe range's edge (0.62 robust at 0.05).
    lowered = s.evaluate.model_copy(
        update={"min_accuracy": 0.5, "min_robust_accuracy": 0.5, "attack_eps": 0.05}
    )
    ctx = RunContext(settings=s.model_copy(update={"evaluate": lowered}), run_id=ctx.run_id)
    metrics, results = evaluate(ctx, model)
    assert {r.name: r.passed for r in results} == {
        QUALITY: True,
        ADVERSARIAL: True,
        MEMBERSHIP: True,
        BACKDOOR: True,
        EXTRACTION: True,
        DP_AUDIT: True,
    }
    assert "robust_accuracy" in metrics and "advantage" in metrics
    # diffprivlib at epsilon 5 is not contradicted by its canary audit, logged as a metric
    assert 0 <= metrics["epsilon_audited"] <= metrics["epsilon_claimed"] == 5.0
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
    result = _attack(ctx, model)
    assert not result.passed
    assert "does not model this pipeline" in result.detail


def test_square_reads_the_decision_function_of_a_saturated_dp_model():
    """DP coefficients are large: probabilities saturate to exact 0/1 and their argmax
    ties; the black box scores by the decision function's softmax and stays exact."""
    pipeline, x_train, x_test, _, y_test = fit_model(
        DP_ESTIMATOR, mixed_table(1500, seed=3), MIXED, dp_epsilon=5.0
    )
    z = pipeline["prep"].transform(x_test)
    proba_argmax = pipeline.classes_[pipeline["model"].predict_proba(z).argmax(1)]
    assert (proba_argmax != pipeline.predict(x_test)).any()  # why the decision function
    result = check_adversarial(
        pipeline=pipeline,
        estimator=DP_ESTIMATOR,
        x_train=x_train,
        x=x_test[:100],
        y=y_test[:100],
        config=EvaluateConfig(attack="square", attack_iterations=30),
        seed=42,
    )
    assert result.metrics["attack"] == "square"
    assert "does not model this pipeline" not in result.detail


def test_noise_is_real_and_seeded(settings):
    ds = settings.dataset
    x_train, _, y_train, _ = split(bundled_dataset(), config=settings.model, columns=ds)
    cols = list(x_train.columns)

    def coef(epsilon: float) -> np.ndarray:
        cfg = settings.model.model_copy(
            update={"estimator": DP_ESTIMATOR, "dp_epsilon": epsilon, "dp_data_norm": 5.0}
        )
        return build_pipeline(cfg, ds, cols).fit(x_train, y_train)["model"].coef_

    np.testing.assert_array_equal(coef(0.5), coef(0.5))  # seeded: reproducible
    assert not np.allclose(coef(0.5), coef(5.0))
    plain = build_pipeline(settings.model, ds, cols).fit(x_train, y_train)["model"].coef_
    assert not np.allclose(coef(5.0), plain)


def test_plain_lr_is_unchanged(settings):
    cfg, ds = settings.model, settings.dataset
    assert cfg.estimator == "logistic_regression"
    x_train = split(bundled_dataset(), config=cfg, columns=ds)[0]
    assert type(build_pipeline(cfg, ds, list(x_train.columns))["model"]) is LogisticRegression
    assert set(model_params(cfg)) == {"estimator", "seed", "test_fraction", "C", "max_iter"}
    assert resolve_data_norm(cfg, ds, x_train) is cfg


def test_dp_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("SECURE_PIPELINE_MODEL__ESTIMATOR", DP_ESTIMATOR)
    monkeypatch.setenv("SECURE_PIPELINE_MODEL__DP_EPSILON", "0.5")
    cfg = load_settings().model
    assert (cfg.estimator, cfg.dp_epsilon, cfg.dp_data_norm) == (DP_ESTIMATOR, 0.5, None)
    monkeypatch.setenv("SECURE_PIPELINE_MODEL__DP_EPSILON", "0")
    with pytest.raises(ConfigError, match="dp_epsilon"):
        load_settings()
