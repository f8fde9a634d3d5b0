"""Reproducible model files: same data, config and seed give the same .skops bytes.

Plain skops names objects and array files after memory addresses and stamps zip
entries with the clock; hist gradient boosting records the thread count. Each test
here fails without the matching fix (tasks/trust/modelio.py `canonical_skops`,
tasks/models.py `fit_pipeline`, tasks/mlflow_model.py `_skops_dump_through_modelio`).
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import skops.io as sio
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from tasks.common.context import RunContext
from tasks.common.errors import PipelineError
from tasks.common.files import sha256_bytes, sha256_file
from tasks.common.settings import ModelConfig, Settings
from tasks.mlflow_model import _skops_dump_through_modelio
from tasks.models import ESTIMATORS, fit_pipeline
from tasks.train import train
from tasks.trust.modelio import canonical_skops, dumps_model, load_model_bytes
from tests.conftest import bundled_dataset
from tests.mixed_table import CATEGORICAL, NUMERIC, mixed_config, mixed_table

COLUMNS = [*NUMERIC, *CATEGORICAL]
SMALL = {"random_forest": {"n_estimators": 5}, "hist_gradient_boosting": {"max_iter": 5}}
# Logistic regression (lbfgs) and boosting on 400 rows (no early stopping, all
# features) draw no random numbers: their seed changes nothing.
SEEDED = ("dp_logistic_regression", "random_forest")


@pytest.fixture(scope="module")
def table():
    frame = mixed_table(400)
    return frame[COLUMNS], frame["segment"]


def fitted_bytes(table, estimator: str, seed: int = 42) -> bytes:
    config = ModelConfig(name="m", estimator=estimator, seed=seed, dp_data_norm=5.0, params=SMALL)
    return dumps_model(fit_pipeline(config, mixed_config(), *table))


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_two_fits_with_the_same_seed_give_the_same_file(table, estimator):
    first, second = fitted_bytes(table, estimator), fitted_bytes(table, estimator)
    assert sha256_bytes(first) == sha256_bytes(second)
    model = load_model_bytes(first, expected_sha256=sha256_bytes(first))
    assert len(model.predict(table[0])) == len(table[0])


@pytest.mark.parametrize("estimator", SEEDED)
def test_another_seed_gives_another_file(table, estimator):
    """The seed reaches the estimator (for the DP model: its noise), so the digest
    tells a retraining with another seed apart."""
    assert sha256_bytes(fitted_bytes(table, estimator, seed=1)) != sha256_bytes(
        fitted_bytes(table, estimator, seed=2)
    )


def test_the_thread_count_does_not_reach_the_file(table):
    """Boosting records the OpenMP thread count at fit time; `fit_pipeline` drops it.
    (On a one-CPU machine both fits use one thread and the test proves less.)"""
    with threadpool_limits(limits=1, user_api="openmp"):
        one = fitted_bytes(table, "hist_gradient_boosting")
    with threadpool_limits(limits=2, user_api="openmp"):
        two = fitted_bytes(table, "hist_gradient_boosting")
    assert one == two


def test_canonical_form_ignores_entry_times_and_order(table):
    raw = sio.dumps(StandardScaler().fit(table[0][NUMERIC].fillna(0)))
    shuffled = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as src, zipfile.ZipFile(shuffled, "w") as dst:
        for info in reversed(src.infolist()):
            dst.writestr(zipfile.ZipInfo(info.filename, (2001, 2, 3, 4, 5, 6)), src.read(info))
    assert canonical_skops(shuffled.getvalue()) == canonical_skops(raw)
    with zipfile.ZipFile(io.BytesIO(canonical_skops(raw))) as canonical:
        assert {i.date_time for i in canonical.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert canonical.namelist()[-1] == "schema.json"


def test_shared_objects_stay_shared(table):
    """skops restores sharing by object number: renumbering must keep it one-to-one."""
    scaler = StandardScaler().fit(table[0][NUMERIC].fillna(0))
    scaler.copy_of_mean_ = scaler.mean_  # the same array object twice
    blob = dumps_model(scaler)
    loaded = load_model_bytes(blob, expected_sha256=sha256_bytes(blob))
    assert loaded.copy_of_mean_ is loaded.mean_
    np.testing.assert_array_equal(loaded.mean_, scaler.mean_)


def test_mlflow_not_calling_skops_dump_stops_the_stage():
    """If another MLflow version stops writing through skops.io.dump, the file would
    silently be plain skops again: the swap reports it, and restores skops."""
    original = sio.dump
    with pytest.raises(PipelineError, match="0 times"), _skops_dump_through_modelio():
        pass
    assert sio.dump is original


@pytest.mark.integration
def test_two_trainings_through_mlflow_log_the_same_file(settings: Settings):
    """The real train stage, twice (MLflow on SQLite in tmp): the logged, downloaded
    model.skops is `dumps_model` of the pipeline, and the same both times."""
    model = settings.model.model_copy(
        update={"estimator": "hist_gradient_boosting", "params": {"max_iter": 10}}
    )
    s = settings.model_copy(update={"model": model})
    trained = [
        train(RunContext(settings=s, run_id=f"run-{i}"), bundled_dataset(), suite_sha256="ab" * 32)[
            0
        ]
        for i in range(2)
    ]
    assert trained[0].mlflow_run_id != trained[1].mlflow_run_id
    assert trained[0].sha256 == trained[1].sha256 == sha256_file(trained[1].skops_path)
    assert trained[0].skops_path.read_bytes() == dumps_model(trained[0].pipeline)
