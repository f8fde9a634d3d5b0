"""train: deterministic fit, real MLflow run and registry (SQLite in tmp), round-trip gate."""

from __future__ import annotations

import math
import os
from pathlib import Path

import mlflow
import numpy as np
import pytest

from tasks.common.context import RunContext
from tasks.common.files import sha256_file
from tasks.common.gates import run_check
from tasks.common.settings import load_settings
from tasks.common.tracking import configure_mlflow, mlflow_client, redact_uri
from tasks.models import build_pipeline
from tasks.train import ROUNDTRIP, TrainedModel, check_artifact_roundtrip, split, train
from tests.conftest import bundled_dataset

CSV = Path(__file__).resolve().parents[2] / "data" / "breast_cancer.csv"
SUITE_SHA = "ab" * 32
MODEL_FILES = {
    "MLmodel",
    "conda.yaml",
    "model.skops",
    "python_env.yaml",
    "requirements.txt",
    "input_example.json",
    "serving_input_example.json",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[RunContext, TrainedModel]:
    settings = load_settings(state_dir=tmp_path_factory.mktemp("train") / "state")
    ctx = RunContext(settings=settings, run_id="test-run")
    model, results = train(ctx, bundled_dataset(), suite_sha256=SUITE_SHA)
    assert [(r.name, r.passed) for r in results] == [(ROUNDTRIP, True)]
    return ctx, model


def test_split_and_fit_are_deterministic(ctx):
    ds = bundled_dataset()
    s = ctx.settings
    a, b = (
        split(ds, config=s.model, columns=s.dataset),
        split(ds, config=s.model, columns=s.dataset),
    )
    assert list(a[1].index) == list(b[1].index)
    assert len(a[1]) == math.ceil(0.25 * ds.rows)  # scikit-learn rounds the test share up
    assert abs(a[3].mean() - ds.frame["target"].mean()) < 0.01  # stratified
    cols = list(a[0].columns)
    coef = [
        build_pipeline(s.model, s.dataset, cols).fit(a[0], a[2])["model"].coef_ for _ in range(2)
    ]
    np.testing.assert_array_equal(coef[0], coef[1])


@pytest.mark.integration
def test_configure_mlflow_uses_the_state_dir_not_the_environment(ctx, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    s = ctx.settings
    assert os.environ["MLFLOW_TRACKING_URI"] != s.tracking_uri  # conftest's session store
    exp_id = configure_mlflow(s)
    assert configure_mlflow(s) == exp_id
    assert mlflow.get_tracking_uri() == s.tracking_uri
    assert (s.state_dir / "mlflow.db").is_file()
    experiment = mlflow_client(s).get_experiment(exp_id)
    assert experiment.artifact_location == s.artifact_root
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.integration
def test_registered_version_has_params_and_tags(trained):
    ctx, model = trained
    client = mlflow_client(ctx.settings)
    version = client.get_model_version(model.name, model.version)
    assert model.model_uri == f"models:/breast-cancer-classifier/{model.version}"
    assert version.run_id == model.mlflow_run_id
    assert version.tags["gate_status"] == "candidate"
    assert version.tags["model_sha256"] == model.sha256
    run = client.get_run(model.mlflow_run_id)
    assert run.info.run_name.startswith("breast_cancer-breast-cancer-classifier-")
    assert run.info.experiment_id == configure_mlflow(ctx.settings)
    assert run.data.tags["prefect.flow_run_id"] == "test-run"
    assert run.data.tags["model_sha256"] == model.sha256
    params = run.data.params
    assert {k: params[k] for k in ("C", "max_iter", "seed", "test_fraction", "estimator")} == {
        "C": "1.0",
        "max_iter": "1000",
        "seed": "42",
        "test_fraction": "0.25",
        "estimator": "logistic_regression",
    }
    assert params["dataset.sha256"] == sha256_file(CSV)
    assert params["dataset.rows"] == "569"
    assert params["suite_sha256"] == SUITE_SHA
    assert run.data.metrics["train_accuracy"] > 0.95
    [dataset_input] = run.inputs.dataset_inputs
    assert {t.key: t.value for t in dataset_input.tags}["sha256"] == sha256_file(CSV)


@pytest.mark.integration
def test_logged_files_are_hashed_and_match_the_store(trained):
    ctx, model = trained
    model_dir = ctx.settings.state_dir / "runs" / "test-run" / "model"
    assert model.skops_path == model_dir / "model.skops"
    assert set(model.files) == MODEL_FILES
    assert all(sha256_file(model_dir / rel) == digest for rel, digest in model.files.items())
    assert model.sha256 == model.files["model.skops"] == sha256_file(model.skops_path)
    [stored] = list((ctx.settings.state_dir / "mlartifacts").rglob("model.skops"))
    assert sha256_file(stored) == model.sha256
    requirements = (model_dir / "requirements.txt").read_text()
    assert "scikit-learn==1.7.2" in requirements and "skops==0.16.0" in requirements
    assert "serialization_format: skops" in (model_dir / "MLmodel").read_text()


@pytest.mark.integration
def test_tampered_download_fails_the_round_trip_gate(trained, tmp_path):
    _, model = trained
    tampered = tmp_path / "model.skops"
    blob = bytearray(model.skops_path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    tampered.write_bytes(bytes(blob))
    result = run_check(
        ROUNDTRIP,
        check_artifact_roundtrip,
        pipeline=model.pipeline,
        skops_path=tampered,
        expected_sha256=model.sha256,
        x=model.x_test,
    )
    assert not result.passed
    assert "ModelIntegrityError" in result.detail
    # The untouched file passes the same check.
    assert run_check(
        ROUNDTRIP,
        check_artifact_roundtrip,
        pipeline=model.pipeline,
        skops_path=model.skops_path,
        expected_sha256=model.sha256,
        x=model.x_test,
    ).passed


@pytest.mark.integration
def test_artifact_of_another_model_fails_the_round_trip_gate(trained):
    ctx, model = trained
    s = ctx.settings
    weak = s.model.model_copy(update={"params": {"logistic_regression": {"C": 0.0005}}})
    other = build_pipeline(weak, s.dataset, list(model.x_train.columns))
    other.fit(model.x_train, model.y_train)
    result = check_artifact_roundtrip(
        pipeline=other, skops_path=model.skops_path, expected_sha256=model.sha256, x=model.x_test
    )
    assert not result.passed
    assert result.metrics["mismatches"] > 0
    assert result.threshold == {"max_mismatches": 0}


def test_redact_uri_drops_credentials_and_signatures():
    assert (
        redact_uri("https://u:secret@host:8443/d.csv?X-Amz-Signature=abc")
        == "https://host:8443/d.csv"
    )
    assert redact_uri("/data/d.csv") == "/data/d.csv"
    assert redact_uri("s3://bucket/key.parquet") == "s3://bucket/key.parquet"
